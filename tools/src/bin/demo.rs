//! The main job on an embedded default: host-mux on the in-memory pair backend, two guests
//! attached over real vfio-user sockets, a traffic source on the wire, a live per-guest stats
//! table, and a clean exit with a check that every frame came back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use guest_pmd::VdpdkPort;
use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{EthDev, MacAddr, Mbuf, Mempool};

/// Run host-mux with two guests on an in-memory wire and show live per-guest stats.
///
/// A generator on the wire sends UDP frames to each guest's MAC (plus broadcasts); each guest
/// swaps the MACs and sends them back through host-mux; the wire counts what returns.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Number of guests (each its own vfio-user socket and MAC).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    guests: u8,
    /// Frames per second offered to each guest (0 = as fast as possible).
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Frame size in bytes (60..=1514).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(60..=1514))]
    size: u16,
    /// Directory for the vfio-user sockets.
    #[arg(long, default_value = "/tmp/vdpdk-demo")]
    dir: PathBuf,
}

const WIRE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);

fn guest_mac(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, i + 1])
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("vdpdk-demo: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> vdpdk_core::Result<()> {
    let cfg = MuxConfig {
        idle_polls: 1024,
        pool_size: 16384,
        ..MuxConfig::new(
            BackendConfig::Pair,
            (0..args.guests)
                .map(|i| VmConfig {
                    name: format!("vm{i}"),
                    socket: args.dir.join(format!("vm{i}.sock")),
                    mac: guest_mac(i),
                    rx_queues: 1,
                    tx_queues: 1,
                    cluster: 0,
                })
                .collect(),
        )
    };
    let (mux_end, mut wire) = vdpdk_pair::pair(MacAddr([2, 0, 0, 0, 0, 0xfd]), WIRE_MAC, 1, 8192);
    let mux = HostMux::start(&cfg, Box::new(mux_end))?;
    println!(
        "host-mux serving {} guests on an in-memory wire; sockets in {}",
        args.guests,
        args.dir.display()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut guests = Vec::new();
    for vm in &cfg.vms {
        let (sock, stop) = (vm.socket.clone(), stop.clone());
        guests.push(std::thread::spawn(move || guest_echo(&sock, stop)));
    }
    std::thread::sleep(Duration::from_millis(300));

    // The wire: generator + counter.
    let pool = Mempool::new("wire", 8192, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (mut rx, mut tx) = start_single_queue(&mut wire, &pool, 1024, false)?;
    let macs: Vec<MacAddr> = cfg.vms.iter().map(|v| v.mac).collect();
    let (mut sent, mut back) = (0u64, 0u64);
    let mut batch: Vec<Mbuf> = Vec::with_capacity(32);
    let mut rbuf = Vec::with_capacity(32);
    let t0 = Instant::now();
    let mut next_print = Duration::from_secs(1);
    let total_rate = args.rate * args.guests as u64;
    while t0.elapsed() < Duration::from_secs(args.duration) {
        let due = if total_rate == 0 {
            u64::MAX
        } else {
            (t0.elapsed().as_secs_f64() * total_rate as f64) as u64
        };
        while sent < due && batch.len() < 32 {
            let Some(mut m) = pool.alloc() else { break };
            // Every 64th frame is a broadcast (every guest answers it).
            let dst = if sent % 64 == 63 {
                MacAddr::BROADCAST
            } else {
                macs[(sent % macs.len() as u64) as usize]
            };
            m.copy_from(&udp_frame(dst, WIRE_MAC, sent, args.size as usize))?;
            batch.push(m);
            sent += 1;
        }
        tx.tx_burst(&mut batch);
        while rx.rx_burst(&mut rbuf, 32) > 0 {
            back += rbuf.len() as u64;
            Mempool::free_bulk(&mut rbuf);
        }
        if t0.elapsed() >= next_print {
            next_print += Duration::from_secs(1);
            println!(
                "\n[{:>2}s] wire: sent {sent}, came back {back}",
                t0.elapsed().as_secs()
            );
            print!("{}", host_mux::stats_table(&mux.guests()));
        }
        if batch.is_empty() && sent >= due {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    // Let the last frames return, then stop everything.
    let drain_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < drain_until {
        if rx.rx_burst(&mut rbuf, 32) > 0 {
            back += rbuf.len() as u64;
            Mempool::free_bulk(&mut rbuf);
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for g in guests {
        let _ = g.join();
    }
    let snap = mux.guests();
    println!("\nfinal:");
    print!("{}", host_mux::stats_table(&snap));
    let bcast = sent / 64;
    let expected = sent - bcast + bcast * args.guests as u64;
    println!(
        "wire sent {sent} frames ({bcast} broadcast), expected {expected} echoes, got {back}: {}",
        if back == expected {
            "all frames accounted for"
        } else {
            "LOSS"
        }
    );
    mux.shutdown();
    let _ = std::fs::remove_dir(&args.dir);
    if back != expected {
        return Err(vdpdk_core::Error::Device(format!(
            "{} frames lost",
            expected as i64 - back as i64
        )));
    }
    Ok(())
}

/// A guest: attach over vfio-user, echo every frame back with MACs swapped.
fn guest_echo(sock: &Path, stop: Arc<AtomicBool>) -> vdpdk_core::Result<()> {
    let mut port = VdpdkPort::connect(sock)?;
    let pool = Mempool::new("guest", 8192, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (mut rx, mut tx) = start_single_queue(&mut port, &pool, 1024, false)?;
    let mut buf: Vec<Mbuf> = Vec::with_capacity(32);
    while !stop.load(Ordering::Relaxed) {
        if rx.rx_burst(&mut buf, 32) == 0 && buf.is_empty() {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        for m in &mut buf {
            let d = m.data_mut();
            let (a, b) = d.split_at_mut(6);
            a.swap_with_slice(&mut b[..6]);
        }
        tx.tx_burst(&mut buf);
    }
    drop(rx);
    drop(tx);
    port.stop()
}
