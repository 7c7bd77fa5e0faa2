//! Throughput of the vDPDK path: one guest (guest-pmd over vfio-user) and host-mux on the
//! in-memory pair backend. Guest->wire (TX), wire->guest (RX) and guest->guest (G2G: to a second
//! guest's MAC, switched inside host-mux) Mpps at the given frame sizes, batch 32; the guest
//! side and the mux poller run pinned to different CPUs. Runs are interleaved (every
//! direction, all sizes, then again) and the median is reported.
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
    /// (guest -> guest; not in scaling mode). One at a time is what a profiler wants.
    #[arg(long, value_delimiter = ',', default_value = "tx,rx,g2g")]
    directions: Vec<Direction>,
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
}

impl Direction {
    fn key(self) -> &'static str {
        match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
            Direction::G2g => "g2g",
        }
    }
}

const BURST: usize = 32;
const WIRE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const GUEST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
/// The second guest, the G2G direction's receiver.
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 2]);

struct Rig {
    g_rx: Box<dyn RxQueue>,
    /// The second guest's RX queue (its TX queue is kept alive in `_p_tx`).
    p_rx: Box<dyn RxQueue>,
    _p_tx: Box<dyn TxQueue>,
    g_tx: Box<dyn TxQueue>,
    g_pool: Mempool,
    w_rx: Box<dyn RxQueue>,
    w_tx: Box<dyn TxQueue>,
    w_pool: Mempool,
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
        scale(&args)
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
    let (mux_end, mut wire) = vdpdk_pair::pair(MacAddr([2, 0, 0, 0, 0, 0xfd]), WIRE_MAC, 1, 4096);
    let mux = HostMux::start(&cfg, Box::new(mux_end))?;
    host_mux::pin_current_thread(args.guest_cpu)?;

    let mut port = VdpdkPort::connect(&sock)?;
    let g_pool = Mempool::new("bench-guest", 16384, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (g_rx, g_tx) = start_single_queue(&mut port, &g_pool, 1024, false)?;
    let w_pool = Mempool::new("bench-wire", 16384, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (w_rx, w_tx) = start_single_queue(&mut wire, &w_pool, 1024, false)?;
    let mut peer = VdpdkPort::connect(&peer_sock)?;
    let (p_rx, p_tx) = start_single_queue(&mut peer, &g_pool, 1024, false)?;
    let mut rig = Rig {
        g_rx,
        p_rx,
        _p_tx: p_tx,
        g_tx,
        g_pool,
        w_rx,
        w_tx,
        w_pool,
        buf: Vec::with_capacity(BURST * 2),
    };

    outln!(
        "vdpdk-bench: 2 guests, pair backend, batch {BURST}, guest CPU {}, mux CPU {}, {} x {:.1}s",
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
            let before = poller_rounds(&mux);
            let mpps = run_one(&mut rig, r.0, r.1, dur);
            let (rounds, empty) = poller_rounds(&mux);
            // A poller that often finds nothing to do waits for the guest's side, not the
            // other way round: the figure says which side a change should speed up.
            let idle = (empty - before.1) as f64 / (rounds - before.0).max(1) as f64;
            eprintln!(
                "  run {}: {} {:>4} B: {mpps:.2} Mpps (poller rounds that found nothing: {:.0}%)",
                rep + 1,
                r.0,
                r.1,
                idle * 100.0
            );
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
            _ => "guest -> guest (switched)",
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

/// The poller's rounds and empty rounds so far.
fn poller_rounds(mux: &HostMux) -> (u64, u64) {
    mux.pollers()
        .iter()
        .fold((0, 0), |(r, e), p| (r + p.rounds, e + p.empty_rounds))
}

fn fill(pool: &Mempool, out: &mut Vec<Mbuf>, tmpl: &[u8]) {
    let need = BURST - out.len();
    let start = out.len();
    pool.alloc_bulk(out, need);
    for m in &mut out[start..] {
        m.copy_from(tmpl).expect("template fits");
    }
}

/// One side sends as fast as it can while the other receives: guest -> wire ("tx"), wire ->
/// guest ("rx") or guest -> the second guest ("g2g"). Returns the Mpps that arrived.
fn run_one(r: &mut Rig, dir: &str, size: usize, dur: Duration) -> f64 {
    let tmpl = match dir {
        "tx" => udp_frame(WIRE_MAC, GUEST_MAC, 1, size),
        "rx" => udp_frame(GUEST_MAC, WIRE_MAC, 1, size),
        _ => udp_frame(PEER_MAC, GUEST_MAC, 1, size),
    };
    let mut pending: Vec<Mbuf> = Vec::with_capacity(BURST);
    let mut measure = |d: Duration| {
        let (pool, txq, rxq) = match dir {
            "tx" => (&r.g_pool, &mut r.g_tx, &mut r.w_rx),
            "rx" => (&r.w_pool, &mut r.w_tx, &mut r.g_rx),
            _ => (&r.g_pool, &mut r.g_tx, &mut r.p_rx),
        };
        let t0 = Instant::now();
        let mut got = 0u64;
        while t0.elapsed() < d {
            for _ in 0..64 {
                fill(pool, &mut pending, &tmpl);
                txq.tx_burst(&mut pending);
                got += rxq.rx_burst(&mut r.buf, BURST) as u64;
                Mempool::free_bulk(&mut r.buf);
            }
        }
        got as f64 / t0.elapsed().as_secs_f64() / 1e6
    };
    measure(Duration::from_millis(200));
    let mpps = measure(dur);
    Mempool::free_bulk(&mut pending);
    drain(r);
    mpps
}

fn drain(r: &mut Rig) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(50) {
        r.w_rx.rx_burst(&mut r.buf, BURST);
        r.g_rx.rx_burst(&mut r.buf, BURST);
        r.p_rx.rx_burst(&mut r.buf, BURST);
        Mempool::free_bulk(&mut r.buf);
    }
}

fn scale_guest_mac(i: usize) -> MacAddr {
    MacAddr([2, 0, 0, 1, (i >> 8) as u8, i as u8])
}

/// Scaling mode: for each guest count, aggregate Mpps and per-guest shares, both directions.
fn scale(args: &Args) -> vdpdk_core::Result<()> {
    let size = args.sizes[0];
    outln!(
        "vdpdk-bench scaling: {size} B frames, one combined poller on CPU {}, guests driven from CPU {}, {} x {:.1}s",
        args.mux_cpu, args.guest_cpu, args.repeats, args.secs
    );
    outln!(
        "{:>6} {:<18} {:>12} {:>10} {:>10}",
        "guests",
        "direction",
        "median Mpps",
        "min share",
        "max share"
    );
    host_mux::pin_current_thread(args.guest_cpu)?;
    for &n in &args.guests {
        let vms = (0..n)
            .map(|i| VmConfig {
                name: format!("g{i}"),
                socket: args.dir.join(format!("g{i}.sock")),
                mac: scale_guest_mac(i),
                rx_queues: 1,
                tx_queues: 1,
                cluster: 0,
            })
            .collect();
        let cfg = MuxConfig {
            idle_polls: 1 << 20,
            pool_size: 32768,
            clusters: vec![ClusterConfig {
                cpus: vec![args.mux_cpu],
                mode: PollMode::Combined,
            }],
            ..MuxConfig::new(BackendConfig::Pair, vms)
        };
        let (mux_end, mut wire) =
            vdpdk_pair::pair(MacAddr([2, 0, 0, 0, 0, 0xfd]), WIRE_MAC, 1, 4096);
        let mux = HostMux::start(&cfg, Box::new(mux_end))?;
        let w_pool = Mempool::new("scale-wire", 16384, vdpdk_core::DEFAULT_BUF_SIZE)?;
        let (mut w_rx, mut w_tx) = start_single_queue(&mut wire, &w_pool, 1024, false)?;
        let mut ports = Vec::new();
        let mut queues = Vec::new();
        for vm in &cfg.vms {
            let mut port = VdpdkPort::connect(&vm.socket)?;
            let pool = Mempool::new("scale-guest", 1024, vdpdk_core::DEFAULT_BUF_SIZE)?;
            let (rx, tx) = start_single_queue(&mut port, &pool, 256, false)?;
            ports.push(port);
            queues.push((rx, tx, pool));
        }
        let dirs = [
            (Direction::Rx, "wire -> guests"),
            (Direction::Tx, "guests -> wire"),
        ];
        for (_, dir) in dirs
            .into_iter()
            .filter(|(d, _)| args.directions.contains(d))
        {
            let mut runs: Vec<(f64, Vec<u64>)> = Vec::new();
            for rep in 0..args.repeats {
                let before = poller_rounds(&mux);
                let r = if dir.starts_with("wire") {
                    scale_rx(&mut queues, &w_pool, &mut *w_tx, size, args.secs)
                } else {
                    scale_tx(&mut queues, &mut *w_rx, size, args.secs)
                };
                let (rounds, empty) = poller_rounds(&mux);
                eprintln!(
                    "  run {}: {n} guests, {dir}: {:.2} Mpps (poller rounds that found nothing: {:.0}%)",
                    rep + 1,
                    r.0,
                    (empty - before.1) as f64 / (rounds - before.0).max(1) as f64 * 100.0
                );
                runs.push(r);
            }
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (mpps, counts) = &runs[runs.len() / 2];
            let fair = counts.iter().sum::<u64>() as f64 / n as f64;
            let share = |c: u64| if fair > 0.0 { c as f64 / fair } else { 0.0 };
            let min = share(*counts.iter().min().unwrap());
            let max = share(*counts.iter().max().unwrap());
            outln!("{n:>6} {dir:<18} {mpps:>12.2} {min:>10.2} {max:>10.2}");
            if args.json {
                outln!(
                    "{{\"guests\":{n},\"direction\":\"{dir}\",\"size\":{size},\"median_mpps\":{mpps:.3},\"min_share\":{min:.3},\"max_share\":{max:.3}}}"
                );
            }
        }
        drop(queues);
        drop(ports);
        mux.shutdown();
    }
    Ok(())
}

type GuestQueues = (Box<dyn RxQueue>, Box<dyn TxQueue>, Mempool);

/// The wire offers frames round-robin to every guest's MAC; every guest polls. Returns
/// (Mpps received by all guests, per-guest counts).
fn scale_rx(
    guests: &mut [GuestQueues],
    w_pool: &Mempool,
    w_tx: &mut dyn TxQueue,
    size: usize,
    secs: f64,
) -> (f64, Vec<u64>) {
    let n = guests.len();
    let tmpls: Vec<Vec<u8>> = (0..n)
        .map(|i| udp_frame(scale_guest_mac(i), WIRE_MAC, 1, size))
        .collect();
    let mut counts = vec![0u64; n];
    let (mut pending, mut buf): (Vec<Mbuf>, Vec<Mbuf>) = (Vec::new(), Vec::new());
    let mut next = 0usize;
    let t0 = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    while t0.elapsed() < dur {
        let start = pending.len();
        w_pool.alloc_bulk(&mut pending, BURST - start);
        for m in &mut pending[start..] {
            m.copy_from(&tmpls[next]).expect("fits");
            next = (next + 1) % n;
        }
        w_tx.tx_burst(&mut pending);
        for (i, g) in guests.iter_mut().enumerate() {
            counts[i] += g.0.rx_burst(&mut buf, BURST) as u64;
            Mempool::free_bulk(&mut buf);
        }
    }
    let el = t0.elapsed().as_secs_f64();
    Mempool::free_bulk(&mut pending);
    settle(guests, None);
    (counts.iter().sum::<u64>() as f64 / el / 1e6, counts)
}

/// Every guest offers a burst in turn; the wire counts per source. Returns (Mpps on the wire,
/// per-guest counts).
fn scale_tx(
    guests: &mut [GuestQueues],
    w_rx: &mut dyn RxQueue,
    size: usize,
    secs: f64,
) -> (f64, Vec<u64>) {
    let n = guests.len();
    let tmpls: Vec<Vec<u8>> = (0..n)
        .map(|i| udp_frame(WIRE_MAC, scale_guest_mac(i), 1, size))
        .collect();
    let mut counts = vec![0u64; n];
    let (mut pending, mut buf): (Vec<Mbuf>, Vec<Mbuf>) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    while t0.elapsed() < dur {
        for (i, g) in guests.iter_mut().enumerate() {
            g.2.alloc_bulk(&mut pending, BURST);
            for m in &mut pending {
                m.copy_from(&tmpls[i]).expect("fits");
            }
            g.1.tx_burst(&mut pending);
            Mempool::free_bulk(&mut pending);
            while w_rx.rx_burst(&mut buf, BURST) > 0 {
                for m in &buf {
                    let src = (m.data()[10] as usize) << 8 | m.data()[11] as usize;
                    if src < n {
                        counts[src] += 1;
                    }
                }
                Mempool::free_bulk(&mut buf);
            }
        }
    }
    let el = t0.elapsed().as_secs_f64();
    settle(guests, Some(w_rx));
    (counts.iter().sum::<u64>() as f64 / el / 1e6, counts)
}

/// Drains what is still in flight so the next measurement starts clean.
fn settle(guests: &mut [GuestQueues], mut w_rx: Option<&mut dyn RxQueue>) {
    let mut buf = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(50) {
        for g in guests.iter_mut() {
            g.0.rx_burst(&mut buf, BURST);
            Mempool::free_bulk(&mut buf);
        }
        if let Some(w) = w_rx.as_deref_mut() {
            w.rx_burst(&mut buf, BURST);
            Mempool::free_bulk(&mut buf);
        }
    }
}
