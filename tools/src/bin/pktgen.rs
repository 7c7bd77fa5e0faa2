//! Packet generator and reflector (the MoonGen role) on any port.
//!
//! `gen` sends timestamped UDP frames at a fixed or maximum rate and measures what comes back
//! (loss, Mpps, latency histogram); `--sweep` searches the highest rate with < 1% loss.
//! `reflect` returns every frame with source and destination MAC swapped.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::write_udp_frame;
use vdpdk_core::{EthDev, MacAddr, Mbuf, Mempool, RxQueue, TxQueue};
use vdpdk_tools::{open_port, Histogram};

/// Generate timestamped traffic and measure it, or reflect it, on any vdpdk-rs port.
///
/// Ports: vdpdk:SOCKET (a VM slot of host-mux), tap:IFNAME, ice:SOCKET, ice-pci:BDF.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send frames and measure the ones that come back.
    Gen {
        /// Port to use (vdpdk:SOCKET, tap:IFNAME, ice:SOCKET, ice-pci:BDF).
        #[arg(long)]
        port: String,
        /// Destination MAC of the frames (the reflector's side).
        #[arg(long, default_value = "02:00:00:00:00:fe")]
        dst: String,
        /// Frame size in bytes.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(64..=1518))]
        size: u16,
        /// Frames per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seconds of traffic (per step with --sweep).
        #[arg(long, default_value_t = 2.0)]
        duration: f64,
        /// Search the highest rate with less than 1% loss (binary search, 7 steps).
        #[arg(long)]
        sweep: bool,
        /// Print the result as JSON (one object per line) too.
        #[arg(long)]
        json: bool,
    },
    /// Return every frame with source and destination MAC swapped.
    Reflect {
        #[arg(long)]
        port: String,
        /// Seconds to run (0 = until killed).
        #[arg(long, default_value_t = 0.0)]
        duration: f64,
    },
}

struct Io {
    _port: Box<dyn EthDev>,
    rx: Box<dyn RxQueue>,
    tx: Box<dyn TxQueue>,
    pool: Mempool,
    src: MacAddr,
}

fn open(spec: &str) -> vdpdk_core::Result<Io> {
    let mut port = open_port(spec)?;
    let src = port.info().mac;
    let pool = Mempool::new("pktgen", 8192, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (rx, tx) = start_single_queue(&mut *port, &pool, 1024, false)?;
    Ok(Io {
        _port: port,
        rx,
        tx,
        pool,
        src,
    })
}

/// One measurement at `rate` (0 = max).
struct Run {
    sent: u64,
    received: u64,
    secs: f64,
    hist: Histogram,
}

impl Run {
    fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            1.0 - self.received as f64 / self.sent as f64
        }
    }
}

fn measure(
    io: &mut Io,
    dst: MacAddr,
    size: usize,
    rate: u64,
    dur: Duration,
    progress: bool,
) -> Run {
    let t0 = Instant::now();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut hist = Histogram::default();
    let (mut batch, mut rxb): (Vec<Mbuf>, Vec<Mbuf>) =
        (Vec::with_capacity(32), Vec::with_capacity(32));
    let mut next_report = Duration::from_secs(1);
    while t0.elapsed() < dur {
        let due = if rate == 0 {
            u64::MAX
        } else {
            (t0.elapsed().as_secs_f64() * rate as f64) as u64
        };
        if sent < due {
            let want = (due - sent).min(32) as usize;
            io.pool.alloc_bulk(&mut batch, want);
            let now = t0.elapsed().as_nanos() as u64;
            for (k, m) in batch.iter_mut().enumerate() {
                let f = m.append(size).expect("buffer fits the frame");
                write_udp_frame(f, dst, io.src, sent + k as u64);
                f[50..58].copy_from_slice(&now.to_be_bytes());
            }
            sent += io.tx.tx_burst(&mut batch) as u64;
            Mempool::free_bulk(&mut batch);
        }
        received += drain(io, &mut rxb, &mut hist, t0);
        if progress && t0.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            eprintln!(
                "  [{:>4.1}s] sent {sent}, back {received}",
                t0.elapsed().as_secs_f64()
            );
        }
    }
    // Let the last frames come back.
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        received += drain(io, &mut rxb, &mut hist, t0);
    }
    Run {
        sent,
        received,
        secs: dur.as_secs_f64(),
        hist,
    }
}

/// Receives returned frames (addressed to us) and records their latency.
fn drain(io: &mut Io, rxb: &mut Vec<Mbuf>, hist: &mut Histogram, t0: Instant) -> u64 {
    let mut n = 0;
    while io.rx.rx_burst(rxb, 32) > 0 {
        let now = t0.elapsed().as_nanos() as u64;
        for m in rxb.iter() {
            let d = m.data();
            if d.len() >= 58 && d[0..6] == io.src.0 {
                let ts = u64::from_be_bytes(d[50..58].try_into().expect("8 bytes"));
                hist.record(now.saturating_sub(ts));
                n += 1;
            }
        }
        Mempool::free_bulk(rxb);
    }
    n
}

fn report(label: &str, rate: u64, size: usize, r: &Run, json: bool) {
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "{label:<8} rate {:>10} pps  sent {:>10}  back {:>10}  loss {:>6.2}%  {:>6.3} Mpps  \
         p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  max {:>8.1} us",
        if rate == 0 {
            "max".to_string()
        } else {
            rate.to_string()
        },
        r.sent,
        r.received,
        r.loss() * 100.0,
        r.received as f64 / r.secs / 1e6,
        us(r.hist.quantile(0.5)),
        us(r.hist.quantile(0.99)),
        us(r.hist.quantile(0.999)),
        us(r.hist.max_ns())
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "label": label, "rate_pps": rate, "size": size, "sent": r.sent,
                "received": r.received, "loss": r.loss(),
                "mpps": r.received as f64 / r.secs / 1e6,
                "latency_ns": {"p50": r.hist.quantile(0.5), "p99": r.hist.quantile(0.99),
                               "p999": r.hist.quantile(0.999), "max": r.hist.max_ns()}
            })
        );
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("vdpdk-pktgen: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> vdpdk_core::Result<()> {
    match args.cmd {
        Cmd::Gen {
            port,
            dst,
            size,
            rate,
            duration,
            sweep,
            json,
        } => {
            if !(duration > 0.0 && duration <= 3600.0) {
                return Err(vdpdk_core::Error::InvalidArg(
                    "--duration must be in (0, 3600]".into(),
                ));
            }
            let dst: MacAddr = dst.parse()?;
            let mut io = open(&port)?;
            let dur = Duration::from_secs_f64(duration);
            let size = size as usize;
            if !sweep {
                let r = measure(&mut io, dst, size, rate, dur, true);
                report("result", rate, size, &r, json);
                return Ok(());
            }
            // Sweep: the max rate bounds the search; bisect toward the highest rate with
            // less than 1% loss.
            let top = measure(&mut io, dst, size, 0, dur, false);
            report("max", 0, size, &top, json);
            let mut hi = ((top.sent as f64 / top.secs) * 1.1) as u64;
            let mut lo = 0u64;
            let mut best: Option<(u64, Run)> = None;
            for step in 0..7 {
                let r_rate = ((lo + hi) / 2).max(1000);
                let r = measure(&mut io, dst, size, r_rate, dur, false);
                report(&format!("step {}", step + 1), r_rate, size, &r, json);
                if r.loss() < 0.01 {
                    lo = r_rate;
                    best = Some((r_rate, r));
                } else {
                    hi = r_rate;
                }
            }
            match best {
                Some((rate, r)) => {
                    println!(
                        "sweep: highest rate with < 1% loss: {rate} pps ({:.3} Mpps)",
                        rate as f64 / 1e6
                    );
                    report("best", rate, size, &r, json);
                }
                None => println!("sweep: no tested rate had < 1% loss"),
            }
            Ok(())
        }
        Cmd::Reflect { port, duration } => {
            let mut io = open(&port)?;
            let t0 = Instant::now();
            let mut n = 0u64;
            let mut next = Duration::from_secs(1);
            let (mut buf, mut pending): (Vec<Mbuf>, Vec<Mbuf>) = (Vec::new(), Vec::new());
            while duration == 0.0 || t0.elapsed().as_secs_f64() < duration {
                if !pending.is_empty() {
                    io.tx.tx_burst(&mut pending);
                    continue;
                }
                if io.rx.rx_burst(&mut buf, 32) == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                } else {
                    for m in &mut buf {
                        let d = m.data_mut();
                        let (a, b) = d.split_at_mut(6);
                        a.swap_with_slice(&mut b[..6]);
                    }
                    n += buf.len() as u64;
                    io.tx.tx_burst(&mut buf);
                    pending.append(&mut buf);
                }
                if t0.elapsed() >= next {
                    next += Duration::from_secs(1);
                    eprintln!("reflected {n}");
                }
            }
            println!("reflected {n} frames");
            Ok(())
        }
    }
}
