//! Throughput of the vDPDK path: one guest (guest-pmd over vfio-user) and host-mux on the
//! in-memory pair backend. Guest->wire (TX), wire->guest (RX) and guest->guest (G2G: to a second
//! guest's MAC, switched inside host-mux) Mpps at the given frame sizes, batch 32; the guest
//! side and the mux poller run pinned to different CPUs. Runs are interleaved (every
//! direction, all sizes, then again) and the median is reported.
//!
//! `--wire` picks host-mux's backend: `pair` (default), an in-memory wire whose far end the
//! bench thread drives on the guest's CPU, or `null`, a NIC that consumes and produces on the
//! poller's CPU at no cost (as the E810's DMA costs the host nothing), so that two actors
//! share the two CPUs, as memif's two testpmd processes do.
//!
//! With `--guests 1,2,4,16,64` it measures scaling instead: N guests on one poller, aggregate
//! Mpps each way at the first frame size, and fairness as each guest's share of the traffic
//! relative to an equal share (1.00 = perfectly fair).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use guest_pmd::VdpdkPort;
use host_mux::{BackendConfig, ClusterConfig, HostMux, MuxConfig, PollMode, VmConfig};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue, TxQueue};
use vdpdk_tools::{die, outln, EXIT_FAILURE, EXIT_USAGE};

mod cycles;
mod scale;
mod wire;

use cycles::StepClock;

use wire::Wire;

const TOOL: &str = "vdpdk-bench";

/// Measure guest TX and RX Mpps through host-mux on the pair backend.
#[derive(Parser, Debug)]
#[command(name = "vdpdk-bench", version)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    secs: f64,
    /// Measurements per (direction, size); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeats: u32,
    /// Frame sizes in bytes, comma separated (60..=1514 each).
    #[arg(long, value_delimiter = ',', default_value = "64,1500")]
    sizes: Vec<usize>,
    /// CPU for the guest (and the wire end it drives).
    #[arg(long, default_value_t = 0)]
    guest_cpu: usize,
    /// CPU for the host-mux poller.
    #[arg(long, default_value_t = 1)]
    mux_cpu: usize,
    /// Directory for the vfio-user socket.
    #[arg(long, default_value = "/tmp/vdpdk-bench")]
    dir: PathBuf,
    /// Also print results as one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Scaling mode: guest counts to measure, comma separated (1..=200 each).
    #[arg(long, value_delimiter = ',')]
    guests: Vec<usize>,
    /// Directions to measure, comma separated: tx (guest -> wire), rx (wire -> guest), g2g
    /// (guest -> guest), g2g-fwd (guest <-> guest, each forwarding what it receives; neither
    /// g2g in scaling mode). One at a time is what a profiler wants.
    #[arg(long, value_delimiter = ',', default_value = "tx,rx,g2g,g2g-fwd")]
    directions: Vec<Direction>,
    /// host-mux's backend: `pair` (its far end driven by the bench thread, on the guest's
    /// CPU) or `null` (frees what is sent, produces what is received, on the poller's CPU).
    #[arg(long, value_enum, default_value_t = WireKind::Pair)]
    wire: WireKind,
    /// Zero-copy (host-mux's `zero_copy_tx` and `zero_copy_rx`, with `hw_steering`): TX
    /// frames of 1024 B and more go to the wire from guest memory, behind a host copy of
    /// their headers; the wire's RX queue of the receiving guest writes frames straight into
    /// that guest's buffers. (Scaling mode: TX only, 64 guests need more RX queues than the
    /// null wire has.)
    #[arg(long)]
    zero_copy: bool,
    /// g2g-fwd: bursts of 32 frames each guest sends to start the circling (as memif's
    /// anchor primes its endpoints with testpmd's `start tx_first 16`; up to 32, a ring's worth).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=32))]
    prime_bursts: u16,
    /// After each run, print where the guest thread's time went: the share spent in steps
    /// that moved frames (the rest waited for the poller) and nanoseconds per frame in each
    /// phase (making frames, tx_burst, rx_burst, freeing). Costs a few ns per frame.
    #[arg(long)]
    cycles: bool,
}

/// What stands for the wire behind host-mux.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireKind {
    /// vdpdk-pair: an in-memory wire, its far end driven on the guest's CPU.
    Pair,
    /// vdpdk-null: consumes and produces frames on the poller's CPU, like a NIC's DMA.
    Null,
}

/// A direction of traffic through host-mux.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Guest TX -> host-mux -> wire.
    Tx,
    /// Wire -> host-mux -> guest RX.
    Rx,
    /// Guest TX -> host-mux -> the second guest's RX.
    G2g,
    /// Guest -> guest with frames circling both ways: each guest forwards what it receives
    /// out of the other's TX queue (testpmd's `io` forwarding), primed with `--prime-bursts`
    /// bursts each way: the workload of memif's switched anchor in
    /// `scripts/bench-vs-memif.sh`.
    G2gFwd,
}

impl Direction {
    fn key(self) -> &'static str {
        match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
            Direction::G2g => "g2g",
            Direction::G2gFwd => "g2g-fwd",
        }
    }
}

pub(crate) const BURST: usize = 32;
const WIRE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const GUEST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
/// The second guest, the G2G direction's receiver.
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 2]);

struct Rig {
    g_rx: Box<dyn RxQueue>,
    /// The second guest's queues.
    p_rx: Box<dyn RxQueue>,
    p_tx: Box<dyn TxQueue>,
    g_tx: Box<dyn TxQueue>,
    g_pool: Mempool,
    p_pool: Mempool,
    /// g2g-fwd: bursts each guest sends to start the circling.
    prime_bursts: u16,
    wire: Wire,
    buf: Vec<Mbuf>,
}

fn main() {
    let args = Args::parse();
    for &s in &args.sizes {
        if !(60..=1514).contains(&s) {
            die(
                TOOL,
                EXIT_USAGE,
                format!("frame size {s} outside 60..=1514"),
            );
        }
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.guest_cpu >= ncpu || args.mux_cpu >= ncpu {
        die(
            TOOL,
            EXIT_USAGE,
            format!("this machine has CPUs 0..{}", ncpu - 1),
        );
    }
    if args.guests.iter().any(|&n| !(1..=200).contains(&n)) {
        die(TOOL, EXIT_USAGE, "--guests values must be in 1..=200");
    }
    let res = if args.guests.is_empty() {
        run(&args)
    } else {
        scale::scale(&args)
    };
    if let Err(e) = res {
        die(TOOL, EXIT_FAILURE, e);
    }
}

fn run(args: &Args) -> vdpdk_core::Result<()> {
    let sock = args.dir.join("bench.sock");
    let peer_sock = args.dir.join("peer.sock");
    let cfg = MuxConfig {
        idle_polls: 1 << 20,
        pool_size: 16384,
        clusters: vec![ClusterConfig {
            cpus: vec![args.mux_cpu],
            mode: PollMode::Combined,
        }],
        zero_copy_tx: args.zero_copy,
        zero_copy_rx: args.zero_copy,
        hw_steering: args.zero_copy,
        ..MuxConfig::new(
            BackendConfig::Pair,
            vec![
                VmConfig {
                    name: "bench".into(),
                    socket: sock.clone(),
                    mac: GUEST_MAC,
                    rx_queues: 1,
                    tx_queues: 1,
                    cluster: 0,
                },
                VmConfig {
                    name: "peer".into(),
                    socket: peer_sock.clone(),
                    mac: PEER_MAC,
                    rx_queues: 1,
                    tx_queues: 1,
                    cluster: 0,
                },
            ],
        )
    };
    let (backend, wire) = Wire::new(args.wire, WIRE_MAC)?;
    let mux = HostMux::start(&cfg, backend)?;
    host_mux::pin_current_thread(args.guest_cpu)?;

    let mut port = VdpdkPort::connect(&sock)?;
    let g_pool = Mempool::new("bench-guest", 16384, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (g_rx, g_tx) = start_single_queue(&mut port, &g_pool, 1024, false)?;
    let mut peer = VdpdkPort::connect(&peer_sock)?;
    // A pool of its own, as a second VM has (its queues keep it): one shared pool would hand
    // the receiver's buffers, just written by host-mux, to the sender, a cross-core fetch per
    // frame that two VMs never pay.
    let p_pool = Mempool::new("bench-peer", 16384, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (p_rx, p_tx) = start_single_queue(&mut peer, &p_pool, 1024, false)?;
    let mut rig = Rig {
        g_rx,
        p_rx,
        p_tx,
        g_tx,
        g_pool,
        p_pool,
        prime_bursts: args.prime_bursts,
        wire,
        buf: Vec::with_capacity(BURST * 2),
    };

    outln!(
        "vdpdk-bench: 2 guests, {:?} wire{}, batch {BURST}, guest CPU {}, mux CPU {}, {} x {:.1}s",
        args.wire,
        if args.zero_copy {
            ", zero-copy TX and RX"
        } else {
            ""
        },
        args.guest_cpu,
        args.mux_cpu,
        args.repeats,
        args.secs
    );
    let dur = Duration::from_secs_f64(args.secs);
    let mut results: Vec<(&str, usize, Vec<f64>)> = Vec::new();
    for &size in &args.sizes {
        for d in &args.directions {
            results.push((d.key(), size, Vec::new()));
        }
    }
    for rep in 0..args.repeats {
        for r in results.iter_mut() {
            // The poller's idle share counts rounds, not time (an idle round is short), so it
            // only hints at which side binds; `--cycles` measures the guest's waiting.
            let (mpps, idle, clock) = run_one(&mut rig, &mux, r.0, r.1, dur, args.cycles);
            eprintln!(
                "  run {}: {} {:>4} B: {mpps:.2} Mpps (poller rounds that found nothing: {:.0}%)",
                rep + 1,
                r.0,
                r.1,
                idle * 100.0
            );
            if let Some(line) = clock.summary() {
                eprintln!("    {line}");
            }
            r.2.push(mpps);
        }
    }
    print_results(&mut results, args.json);
    let g = &mux.guests()[0];
    eprintln!("host view: {:?}", g.stats);
    drop(rig);
    drop(port);
    drop(peer);
    mux.shutdown();
    Ok(())
}

/// The table of medians (and the JSON lines `scripts/bench-vs-memif.sh` reads).
fn print_results(results: &mut [(&str, usize, Vec<f64>)], json: bool) {
    outln!(
        "{:<28} {:>6} {:>12} {:>10} {:>10}",
        "direction",
        "bytes",
        "median Mpps",
        "min",
        "max"
    );
    for (dir, size, v) in results.iter_mut() {
        v.sort_by(|a, b| a.total_cmp(b));
        let med = v[v.len() / 2];
        let name = match *dir {
            "tx" => "guest TX -> wire",
            "rx" => "wire -> guest RX",
            "g2g" => "guest -> guest (switched)",
            _ => "guest <-> guest (forwarding)",
        };
        outln!(
            "{name:<28} {size:>6} {med:>12.2} {:>10.2} {:>10.2}   ({:.2} Gbit/s)",
            v[0],
            v[v.len() - 1],
            med * 1e6 * (*size as f64 + 20.0) * 8.0 / 1e9
        );
        if json {
            outln!(
                "{{\"direction\":\"{dir}\",\"size\":{size},\"median_mpps\":{med:.3},\"runs\":{v:?}}}"
            );
        }
    }
}

/// The pollers' rounds and empty rounds at one moment.
#[derive(Clone, Copy)]
pub(crate) struct Rounds(u64, u64);

impl Rounds {
    pub(crate) fn now(mux: &HostMux) -> Rounds {
        let (r, e) = mux
            .pollers()
            .iter()
            .fold((0, 0), |(r, e), p| (r + p.rounds, e + p.empty_rounds));
        Rounds(r, e)
    }

    /// The share of the rounds since `self` that found nothing (taken over the timed window
    /// only: the idle rounds of a drain or a warm-up would swamp it).
    pub(crate) fn idle_since(self, mux: &HostMux) -> f64 {
        let now = Rounds::now(mux);
        (now.1 - self.1) as f64 / (now.0 - self.0).max(1) as f64
    }
}

/// Bytes of the template the guest writes into each frame: its Ethernet, IPv4 and UDP
/// headers. The payload is whatever the buffer held, as testpmd's `txonly` (memif's sender in
/// `bench-vs-memif.sh`) writes only the headers of the frames it sends.
const WRITTEN: usize = 42;

/// Tops `out` up to a burst of frames like `tmpl` (headers written, see [`WRITTEN`]).
pub(crate) fn fill(pool: &Mempool, out: &mut Vec<Mbuf>, tmpl: &[u8]) {
    let need = BURST - out.len();
    let start = out.len();
    pool.alloc_bulk(out, need);
    let hdr = WRITTEN.min(tmpl.len());
    for m in &mut out[start..] {
        m.set_len(tmpl.len()).expect("template fits");
        m.data_mut()[..hdr].copy_from_slice(&tmpl[..hdr]);
    }
}

/// Runs `step` for a 200 ms warm-up and then for `dur`; returns the Mpps that arrived (what
/// the steps counted plus what the wire counted itself, `sunk`) and the share of the poller's
/// rounds in the timed window that found nothing. `clock` times the steps of the timed
/// window.
fn pump(
    mux: &HostMux,
    dur: Duration,
    clock: &mut StepClock,
    mut step: impl FnMut(&mut StepClock) -> u64,
    sunk: impl Fn() -> u64,
) -> (f64, f64) {
    let mut measure = |d: Duration, clock: &mut StepClock| {
        clock.reset();
        let (t0, sunk0, rounds) = (Instant::now(), sunk(), Rounds::now(mux));
        let mut got = 0u64;
        while t0.elapsed() < d {
            for _ in 0..64 {
                got += step(clock);
            }
        }
        let got = got + sunk() - sunk0;
        let mpps = got as f64 / t0.elapsed().as_secs_f64() / 1e6;
        (mpps, rounds.idle_since(mux))
    };
    measure(Duration::from_millis(200), clock);
    measure(dur, clock)
}

/// One side sends as fast as it can while the other receives: guest -> wire ("tx"), wire ->
/// guest ("rx") or guest -> the second guest ("g2g"). Returns the Mpps that arrived, the
/// poller's idle share and the guest thread's step clock (`cycles`: on).
fn run_one(
    r: &mut Rig,
    mux: &HostMux,
    dir: &str,
    size: usize,
    dur: Duration,
    cycles: bool,
) -> (f64, f64, StepClock) {
    if dir == "g2g-fwd" {
        return run_forwarding(r, mux, size, dur, cycles);
    }
    let mut pending: Vec<Mbuf> = Vec::with_capacity(BURST);
    let Rig {
        g_rx,
        p_rx,
        g_tx,
        g_pool,
        wire,
        buf,
        ..
    } = r;
    let res = match dir {
        "tx" => {
            let tmpl = udp_frame(WIRE_MAC, GUEST_MAC, 1, size);
            let sunk = match wire {
                Wire::Null(w) => Some(w.clone()),
                Wire::Pair { .. } => None,
            };
            let mut clock = StepClock::new(cycles, ["make", "tx_burst", "wire", ""]);
            let step = |c: &mut StepClock| {
                c.begin();
                fill(g_pool, &mut pending, &tmpl);
                let offered = pending.len();
                c.lap(0);
                g_tx.tx_burst(&mut pending);
                c.lap(1);
                let n = wire.take(buf) as u64;
                c.lap(2);
                let sent = (offered - pending.len()) as u64;
                c.end(sent > 0, sent);
                n
            };
            let sunk = || sunk.as_ref().map_or(0, |w| w.sunk().0);
            let (mpps, idle) = pump(mux, dur, &mut clock, step, sunk);
            (mpps, idle, clock)
        }
        "rx" => {
            let tmpl = [udp_frame(GUEST_MAC, WIRE_MAC, 1, size)];
            wire.start_source(&tmpl);
            let mut next = 0;
            let mut clock = StepClock::new(cycles, ["wire", "rx_burst", "free", ""]);
            let step = |c: &mut StepClock| {
                c.begin();
                wire.offer(&mut pending, &tmpl, &mut next);
                c.lap(0);
                let n = g_rx.rx_burst(buf, BURST) as u64;
                c.lap(1);
                Mempool::free_bulk(buf);
                c.lap(2);
                c.end(n > 0, n);
                n
            };
            let (mpps, idle) = pump(mux, dur, &mut clock, step, || 0);
            r.wire.stop_source();
            (mpps, idle, clock)
        }
        _ => {
            let tmpl = udp_frame(PEER_MAC, GUEST_MAC, 1, size);
            let mut clock = StepClock::new(cycles, ["make", "tx_burst", "rx_burst", "free"]);
            let step = |c: &mut StepClock| {
                c.begin();
                fill(g_pool, &mut pending, &tmpl);
                let offered = pending.len();
                c.lap(0);
                g_tx.tx_burst(&mut pending);
                let sent = offered - pending.len();
                c.lap(1);
                let n = p_rx.rx_burst(buf, BURST) as u64;
                c.lap(2);
                Mempool::free_bulk(buf);
                c.lap(3);
                // Counted per frame received; a step that only sent did work all the same.
                c.end(sent > 0 || n > 0, n);
                n
            };
            let (mpps, idle) = pump(mux, dur, &mut clock, step, || 0);
            (mpps, idle, clock)
        }
    };
    Mempool::free_bulk(&mut pending);
    drain(r);
    res
}

/// `g2g-fwd`: both guests send `--prime-bursts` bursts of `size`-byte frames to each other,
/// then each forwards what it receives out of the other's TX queue, unchanged (a frame from
/// the bench guest to the peer goes back out of the bench guest to the peer, and the same the
/// other way), as testpmd's `io` forwarding does between two ports. Frames a full TX ring
/// leaves behind wait for the next step (none is dropped, so as many keep circling). Returns
/// what `run_one` does; the Mpps is the frames both guests received.
fn run_forwarding(
    r: &mut Rig,
    mux: &HostMux,
    size: usize,
    dur: Duration,
    cycles: bool,
) -> (f64, f64, StepClock) {
    let (mut to_peer, mut to_guest) = (Vec::with_capacity(BURST), Vec::with_capacity(BURST));
    let (a, b) = (
        udp_frame(PEER_MAC, GUEST_MAC, 1, size),
        udp_frame(GUEST_MAC, PEER_MAC, 1, size),
    );
    for _ in 0..r.prime_bursts {
        fill(&r.g_pool, &mut to_peer, &a);
        r.g_tx.tx_burst(&mut to_peer);
        fill(&r.p_pool, &mut to_guest, &b);
        r.p_tx.tx_burst(&mut to_guest);
    }
    let Rig {
        g_rx,
        p_rx,
        g_tx,
        p_tx,
        ..
    } = r;
    let mut clock = StepClock::new(cycles, ["rx_burst", "tx_burst", "", ""]);
    let step = |c: &mut StepClock| {
        c.begin();
        // The peer's arrivals go back out of the bench guest (to the peer), and the reverse.
        let (room_a, room_b) = (
            BURST.saturating_sub(to_peer.len()),
            BURST.saturating_sub(to_guest.len()),
        );
        let n = p_rx.rx_burst(&mut to_peer, room_a) + g_rx.rx_burst(&mut to_guest, room_b);
        c.lap(0);
        g_tx.tx_burst(&mut to_peer);
        p_tx.tx_burst(&mut to_guest);
        c.lap(1);
        c.end(n > 0, n as u64);
        n as u64
    };
    let (mpps, idle) = pump(mux, dur, &mut clock, step, || 0);
    Mempool::free_bulk(&mut to_peer);
    Mempool::free_bulk(&mut to_guest);
    drain(r);
    (mpps, idle, clock)
}

fn drain(r: &mut Rig) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(50) {
        r.wire.take(&mut r.buf);
        r.g_rx.rx_burst(&mut r.buf, BURST);
        r.p_rx.rx_burst(&mut r.buf, BURST);
        Mempool::free_bulk(&mut r.buf);
    }
}
