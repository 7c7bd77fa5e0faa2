//! `vdpdk-demo`, the main job on an embedded default: host-mux on the in-memory pair backend,
//! guests attached over real vfio-user sockets, a paced traffic source on the wire, a live
//! per-guest stats table, and at the end an account of every frame: it came back, or a counter
//! names where and why it was dropped, or it was still queued when the guests stopped.
//!
//! The parts: `guest` (the echoing guests), `traffic` (the wire: generator, checker,
//! draining), `ledger` (the counters and the account of every frame).

mod guest;
mod ledger;
mod traffic;

use std::path::PathBuf;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mempool};

use crate::{out, outln};
use guest::Guest;
use ledger::EchoCheck;
use traffic::{Traffic, Wire};

/// The tool's name in its error messages.
pub const TOOL: &str = "vdpdk-demo";

/// Run host-mux with guests on an in-memory wire, show live per-guest stats, and account for
/// every frame.
///
/// A generator on the wire offers UDP frames to each guest's MAC at a fixed rate (every 64th
/// is a broadcast, which every guest answers); each guest echoes them back through host-mux
/// and the wire checks each echo. At the end every frame is accounted for: it came back, or a
/// counter of host-mux or of a port names why it was dropped (listed, not a failure: a starved
/// guest's full RX ring drops frames, as a NIC would), or it was still queued when the guests
/// stopped. When the machine cannot offer the asked rate the summary says so.
///
/// Exit status: 0 every frame accounted for, 1 a frame unaccounted for (or a failure), 2 a bad
/// argument.
#[derive(Parser, Debug)]
#[command(name = "vdpdk-demo", version)]
pub struct Args {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Number of guests (each its own vfio-user socket and MAC).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub guests: u8,
    /// Frames per second offered to each guest (0 = as fast as possible).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub rate: u64,
    /// Frame size in bytes (60..=1514).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(60..=1514))]
    pub size: u16,
    /// Directory for the vfio-user sockets.
    #[arg(long, default_value = "/tmp/vdpdk-demo")]
    pub dir: PathBuf,
}

const WIRE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
/// Descriptors of each guest's RX and TX ring.
const GUEST_RING: u16 = 2048;
/// Descriptors of the wire's receive ring (frames coming back from host-mux).
const WIRE_RING: u16 = 4096;
/// Largest ring of the in-memory wire (bounds host-mux's backend RX ring).
const WIRE_DEPTH: usize = 8192;
const MUX_POOL: u32 = 16384;
const BURST: usize = 32;
/// Every 64th frame is a broadcast.
const BCAST_EVERY: u64 = 64;
/// Offered below this share of the asked rate, the summary says the machine fell short.
const RATE_SHORTFALL: f64 = 0.98;

fn guest_mac(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, i + 1])
}

/// Whether frame `seq` is a broadcast.
fn is_broadcast(seq: u64) -> bool {
    seq % BCAST_EVERY == BCAST_EVERY - 1
}

/// Broadcasts among the first `n` frames.
fn broadcasts(n: u64) -> u64 {
    n / BCAST_EVERY
}

/// The guest unicast frame `seq` goes to (round robin over the unicast frames).
fn unicast_guest(seq: u64, guests: u64) -> u64 {
    (seq - broadcasts(seq)) % guests
}

/// Echoes the first `n` frames ask for: one per unicast frame, one per guest per broadcast.
fn echoes(n: u64, guests: u64) -> u64 {
    n - broadcasts(n) + broadcasts(n) * guests
}

/// host-mux on the pair backend with one VM (one queue pair, one socket in `args.dir`) per
/// guest.
fn mux_config(args: &Args) -> MuxConfig {
    MuxConfig {
        idle_polls: 1024,
        pool_size: MUX_POOL,
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
    }
}

/// Runs the demo. Returns `Ok(true)` when every frame is accounted for, `Ok(false)` when one is
/// not (the summary says which), `Err` on a failure to run.
pub fn run(args: &Args) -> vdpdk_core::Result<bool> {
    let n = args.guests as u64;
    let cfg = mux_config(args);
    let (mux_end, wire_port) =
        vdpdk_pair::pair(MacAddr([2, 0, 0, 0, 0, 0xfd]), WIRE_MAC, 1, WIRE_DEPTH);
    // One frame template per guest, then the broadcast one.
    let templates: Vec<Vec<u8>> = (0..args.guests)
        .map(guest_mac)
        .chain([MacAddr::BROADCAST])
        .map(|dst| udp_frame(dst, WIRE_MAC, 0, args.size as usize))
        .collect();
    // The wire: generator + checker, started before host-mux can send to it.
    let pool = Mempool::new("wire", 8192, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let mut wire = Wire::start(wire_port, &pool, EchoCheck::new(n, &templates[0]))?;
    let mux = HostMux::start(&cfg, Box::new(mux_end)).map_err(|e| {
        vdpdk_core::Error::Device(format!(
            "starting host-mux with its sockets in {}: {e}",
            args.dir.display()
        ))
    })?;
    outln!(
        "host-mux serving {} guests on an in-memory wire; sockets in {}",
        args.guests,
        args.dir.display()
    );

    let phase = Arc::new(AtomicU8::new(guest::RUN));
    let mut guests = guest::spawn(&cfg, &phase)?;
    // Traffic starts once every guest's device runs (frames before would find no guest).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mux.guests().iter().all(|g| g.running) {
        if guests.iter().any(Guest::ended) || Instant::now() >= deadline {
            return Err(guest::stop(&phase, &mut guests).unwrap_or_else(|| {
                vdpdk_core::Error::Device("the guests did not start within 30 s".into())
            }));
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    let traffic = traffic::generate(args, &mux, &pool, &templates, &mut wire, &guests)?;
    if traffic.failed_guest {
        return Err(guest::stop(&phase, &mut guests)
            .unwrap_or_else(|| vdpdk_core::Error::Device("a guest stopped early".into())));
    }
    let drain_t0 = Instant::now();
    let ledger = traffic::drain(&mux, &mut wire, &phase, &mut guests, n)?;
    report(&mux, &traffic, wire.sent, n, drain_t0);
    ledger.print();
    mux.shutdown();
    let _ = std::fs::remove_dir(&args.dir);
    Ok(ledger.ok())
}

/// The final table and the rate line (the account itself is `Ledger::print`).
fn report(mux: &HostMux, t: &Traffic, sent: u64, n: u64, drain_t0: Instant) {
    outln!("\nfinal:");
    out!("{}", host_mux::stats_table(&mux.guests()));
    let offered = sent as f64 / t.secs;
    outln!(
        "\n{:.1} s of traffic: offered {sent} frames, {offered:.0}/s ({} broadcasts, answered by \
         each of the {n} guests); {:.1} s more to drain and stop the guests",
        t.secs,
        broadcasts(sent),
        drain_t0.elapsed().as_secs_f64()
    );
    if t.asked > 0 && offered < t.asked as f64 * RATE_SHORTFALL {
        outln!(
            "asked {} frames/s, offered {offered:.0}/s: the machine could not keep up \
             (frames not sent in time: {:.0} while the generator was not running, {:.0} while \
             host-mux's end of the wire was full)",
            t.asked,
            t.late,
            t.wire_full
        );
    }
}
