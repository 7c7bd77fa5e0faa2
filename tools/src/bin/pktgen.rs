//! Packet generator and reflector (the MoonGen role) on any port.
//!
//! `gen` sends timestamped UDP frames at a fixed or maximum rate and measures what comes back
//! (loss, Mpps, latency histogram); `--sweep` searches the highest rate with < 1% loss.
//! `reflect` returns every frame with source and destination MAC swapped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::write_udp_frame;
use vdpdk_core::{EthDev, MacAddr, Mbuf, Mempool, PortStats, RxQueue, TxQueue};
use vdpdk_tools::{die, open_port, outln, port_spec, Histogram, EXIT_FAILURE, EXIT_USAGE};

const TOOL: &str = "vdpdk-pktgen";

/// Generate timestamped traffic and measure it, or reflect it, on any vdpdk-rs port.
///
/// Ports: vdpdk:SOCKET (a VM slot of host-mux), vdpdk-vm:BDF|auto (inside a VM), tap:IFNAME,
/// ice:SOCKET, ice-pci:BDF.
///
/// `gen` accounts for every frame it sent: returned, dropped where a counter names the reason
/// (the port's own drop counters and, on a vDPDK port, host-mux's counters for this VM), or
/// unaccounted. When it cannot send at the asked rate it says so, with the rate it offered.
#[derive(Parser, Debug)]
#[command(name = "vdpdk-pktgen", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send frames and measure the ones that come back.
    Gen {
        /// Port to use (vdpdk:SOCKET, vdpdk-vm:BDF|auto, tap:IFNAME, ice:SOCKET, ice-pci:BDF).
        #[arg(long, value_parser = port_spec)]
        port: String,
        /// Destination MAC of the frames (the reflector's side).
        #[arg(long, default_value = "02:00:00:00:00:fe")]
        dst: MacAddr,
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
        /// Port to use (vdpdk:SOCKET, vdpdk-vm:BDF|auto, tap:IFNAME, ice:SOCKET, ice-pci:BDF).
        #[arg(long, value_parser = port_spec)]
        port: String,
        /// Seconds to run (0 = until killed).
        #[arg(long, default_value_t = 0.0)]
        duration: f64,
    },
}

struct Io {
    port: Box<dyn EthDev>,
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
        port,
        rx,
        tx,
        pool,
        src,
    })
}

/// Where in a frame the generator keeps its send time and the run it belongs to.
const TS_AT: usize = 50;
const RUN_AT: usize = 58;

/// Drop counters that can explain a frame that did not come back: the port's own (missed,
/// errors, no buffer) and, on a vDPDK port, host-mux's per-VM drop counters (`host_rx_*` and
/// `host_tx_*` other than packets and bytes) instead of the port's TX errors.
fn drop_counters(port: &dyn EthDev) -> BTreeMap<String, u64> {
    let PortStats {
        imissed,
        ierrors,
        oerrors,
        rx_nombuf,
        ..
    } = port.stats();
    let mut m: BTreeMap<String, u64> = [
        ("rx_missed", imissed),
        ("rx_errors", ierrors),
        ("tx_errors", oerrors),
        ("rx_nombuf", rx_nombuf),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut host = false;
    for (name, v) in port.xstats() {
        let Some(n) = name.strip_prefix("host_") else {
            continue;
        };
        host = true;
        let drop = (n.starts_with("rx_") || n.starts_with("tx_"))
            && !matches!(n, "rx_packets" | "rx_bytes" | "tx_packets" | "tx_bytes");
        if drop {
            m.insert(name, v);
        }
    }
    if host {
        // A vDPDK port counts the TX descriptors host-mux refused among its own TX errors,
        // which host-mux's counters above name already: count them once.
        m.remove("tx_errors");
    }
    m
}

/// How each counter grew from `before` to `after` (only those that did).
fn grown(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, &v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|&(_, d)| d > 0)
        .collect()
}

/// One measurement at `rate` (0 = max).
struct Run {
    /// Frames the port accepted.
    sent: u64,
    /// Frames of this run that came back.
    received: u64,
    /// Drop counters that grew during the run, by name.
    drops: BTreeMap<String, u64>,
    /// Frames of an earlier run that came back late (not counted as received).
    stale: u64,
    secs: f64,
    /// Frames the pacing had to skip because the generator was not running in time or the
    /// port was full (a capped token bucket never sends a catch-up burst).
    skipped: u64,
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
    fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }
    /// Frames sent that neither came back nor were counted as dropped.
    fn unaccounted(&self) -> u64 {
        self.sent.saturating_sub(self.received + self.dropped())
    }
    fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.secs
    }
    /// Whether the asked rate was offered (98% of it; None at max rate).
    fn rate_reached(&self, rate: u64) -> Option<bool> {
        (rate > 0).then(|| self.offered_pps() >= rate as f64 * 0.98)
    }
}

/// Sends at `rate` (0 = max) for `dur`, then waits until every frame sent came back or was
/// counted as dropped (or nothing moved for a second).
fn measure(
    io: &mut Io,
    run_id: u32,
    dst: MacAddr,
    size: usize,
    rate: u64,
    dur: Duration,
    progress: bool,
) -> Run {
    let before = drop_counters(&*io.port);
    let t0 = Instant::now();
    let mut r = Run {
        sent: 0,
        received: 0,
        drops: BTreeMap::new(),
        stale: 0,
        secs: dur.as_secs_f64(),
        skipped: 0,
        hist: Histogram::default(),
    };
    let (mut batch, mut rxb): (Vec<Mbuf>, Vec<Mbuf>) =
        (Vec::with_capacity(32), Vec::with_capacity(32));
    let mut next_report = Duration::from_secs(1);
    // A token bucket against the clock: `tokens` frames may go now. It holds at most 5 ms of
    // traffic (at least one burst), so a stall of the generator turns into at most a short
    // catch-up burst; what it could not send in time is counted as skipped.
    let cap = (rate as f64 * 0.005).max(32.0);
    let mut tokens = 0.0f64;
    let mut last = t0;
    while t0.elapsed() < dur {
        let want = if rate == 0 {
            32
        } else {
            let now = Instant::now();
            tokens += now.duration_since(last).as_secs_f64() * rate as f64;
            last = now;
            if tokens > cap {
                r.skipped += (tokens - cap) as u64;
                tokens = cap;
            }
            (tokens as usize).min(32)
        };
        if want > 0 {
            io.pool.alloc_bulk(&mut batch, want);
            let now = t0.elapsed().as_nanos() as u64;
            for (k, m) in batch.iter_mut().enumerate() {
                let f = m.append(size).expect("buffer fits the frame");
                write_udp_frame(f, dst, io.src, r.sent + k as u64);
                f[TS_AT..TS_AT + 8].copy_from_slice(&now.to_be_bytes());
                f[RUN_AT..RUN_AT + 4].copy_from_slice(&run_id.to_be_bytes());
            }
            let n = io.tx.tx_burst(&mut batch);
            r.sent += n as u64;
            tokens -= n as f64;
            Mempool::free_bulk(&mut batch);
        }
        let got = drain(io, run_id, &mut rxb, &mut r, t0);
        if progress && t0.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            eprintln!(
                "  [{:>4.1}s] sent {}, back {}",
                t0.elapsed().as_secs_f64(),
                r.sent,
                r.received
            );
        }
        if rate > 0 && got == 0 && tokens < 1.0 {
            // Nothing to do until the next token: sleep for about one burst's worth.
            let wait = (32.0 / rate as f64).min(0.001);
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
    // Let the last frames come back: until each one sent is back or counted as dropped, or
    // nothing has moved for a second.
    let mut last_move = Instant::now();
    let mut last_seen = (r.received, 0u64);
    loop {
        if drain(io, run_id, &mut rxb, &mut r, t0) == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        r.drops = grown(&before, &drop_counters(&*io.port));
        let seen = (r.received, r.dropped());
        if seen.0 + seen.1 >= r.sent {
            break;
        }
        if seen != last_seen {
            last_seen = seen;
            last_move = Instant::now();
        } else if last_move.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    r
}

/// Receives returned frames (addressed to us): those of this run are counted and their
/// latency recorded. Returns how many frames arrived.
fn drain(io: &mut Io, run_id: u32, rxb: &mut Vec<Mbuf>, r: &mut Run, t0: Instant) -> u64 {
    let mut n = 0;
    while io.rx.rx_burst(rxb, 32) > 0 {
        let now = t0.elapsed().as_nanos() as u64;
        for m in rxb.iter() {
            let d = m.data();
            n += 1;
            if d.len() < RUN_AT + 4 || d[0..6] != io.src.0 {
                continue;
            }
            if d[RUN_AT..RUN_AT + 4] != run_id.to_be_bytes() {
                r.stale += 1;
                continue;
            }
            let ts = u64::from_be_bytes(d[TS_AT..TS_AT + 8].try_into().expect("8 bytes"));
            r.hist.record(now.saturating_sub(ts));
            r.received += 1;
        }
        Mempool::free_bulk(rxb);
    }
    n
}

fn report(label: &str, rate: u64, size: usize, r: &Run, json: bool) {
    let us = |ns: u64| ns as f64 / 1000.0;
    outln!(
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
    if r.rate_reached(rate) == Some(false) {
        outln!(
            "         asked {rate} frames/s, offered {:.0}/s: the machine could not keep up \
             ({} frames skipped)",
            r.offered_pps(),
            r.skipped
        );
    }
    if r.received < r.sent {
        let drops: Vec<String> = r.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        outln!(
            "         not back: {} dropped where counted{}{}, {} unaccounted",
            r.dropped(),
            if drops.is_empty() { "" } else { " (" },
            if drops.is_empty() {
                String::new()
            } else {
                drops.join(", ") + ")"
            },
            r.unaccounted()
        );
    }
    if r.stale > 0 {
        outln!("         {} late frames of an earlier run ignored", r.stale);
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "label": label, "rate_pps": rate, "size": size, "sent": r.sent,
                "received": r.received, "loss": r.loss(),
                "mpps": r.received as f64 / r.secs / 1e6,
                "offered_pps": r.offered_pps(), "rate_reached": r.rate_reached(rate),
                "skipped": r.skipped, "dropped": r.dropped(), "drops": r.drops,
                "unaccounted": r.unaccounted(), "stale": r.stale,
                "latency_ns": {"p50": r.hist.quantile(0.5), "p99": r.hist.quantile(0.99),
                               "p999": r.hist.quantile(0.999), "max": r.hist.max_ns()}
            })
        );
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        die(TOOL, EXIT_FAILURE, e);
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
                die(TOOL, EXIT_USAGE, "--duration must be in (0, 3600]");
            }
            let mut io = open(&port)?;
            let dur = Duration::from_secs_f64(duration);
            let size = size as usize;
            if !sweep {
                let r = measure(&mut io, 0, dst, size, rate, dur, true);
                report("result", rate, size, &r, json);
                return Ok(());
            }
            // Sweep: the max rate bounds the search; bisect toward the highest rate with
            // less than 1% loss.
            let top = measure(&mut io, 0, dst, size, 0, dur, false);
            report("max", 0, size, &top, json);
            let mut hi = ((top.sent as f64 / top.secs) * 1.1) as u64;
            let mut lo = 0u64;
            let mut best: Option<(u64, Run)> = None;
            for step in 0..7 {
                let r_rate = ((lo + hi) / 2).max(1000);
                let r = measure(&mut io, step + 1, dst, size, r_rate, dur, false);
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
                    outln!(
                        "sweep: highest rate with < 1% loss: {rate} pps ({:.3} Mpps)",
                        rate as f64 / 1e6
                    );
                    report("best", rate, size, &r, json);
                }
                None => outln!("sweep: no tested rate had < 1% loss"),
            }
            Ok(())
        }
        Cmd::Reflect { port, duration } => {
            if !(duration >= 0.0 && duration.is_finite()) {
                die(
                    TOOL,
                    EXIT_USAGE,
                    "--duration must be a non-negative number of seconds",
                );
            }
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
            outln!("reflected {n} frames");
            Ok(())
        }
    }
}
