//! Throughput of the vDPDK path: one guest (guest-pmd over vfio-user) and host-mux on the
//! in-memory pair backend. Guest->wire (TX) and wire->guest (RX) Mpps at the given frame sizes,
//! batch 32; the guest side and the mux poller run pinned to different CPUs. Runs are
//! interleaved (TX and RX, all sizes, then again) and the median is reported.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use guest_pmd::VdpdkPort;
use host_mux::{BackendConfig, ClusterConfig, HostMux, MuxConfig, PollMode, VmConfig};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue, TxQueue};

/// Measure guest TX and RX Mpps through host-mux on the pair backend.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
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
}

const BURST: usize = 32;
const WIRE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const GUEST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);

struct Rig {
    g_rx: Box<dyn RxQueue>,
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
            eprintln!("vdpdk-bench: frame size {s} outside 60..=1514");
            std::process::exit(2);
        }
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.guest_cpu >= ncpu || args.mux_cpu >= ncpu {
        eprintln!("vdpdk-bench: this machine has CPUs 0..{}", ncpu - 1);
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("vdpdk-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> vdpdk_core::Result<()> {
    let sock = args.dir.join("bench.sock");
    let cfg = MuxConfig {
        idle_polls: 1 << 20,
        pool_size: 16384,
        clusters: vec![ClusterConfig {
            cpus: vec![args.mux_cpu],
            mode: PollMode::Combined,
        }],
        ..MuxConfig::new(
            BackendConfig::Pair,
            vec![VmConfig {
                name: "bench".into(),
                socket: sock.clone(),
                mac: GUEST_MAC,
                rx_queues: 1,
                tx_queues: 1,
                cluster: 0,
            }],
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
    let mut rig = Rig {
        g_rx,
        g_tx,
        g_pool,
        w_rx,
        w_tx,
        w_pool,
        buf: Vec::with_capacity(BURST * 2),
    };

    println!(
        "vdpdk-bench: 1 guest, pair backend, batch {BURST}, guest CPU {}, mux CPU {}, {} x {:.1}s",
        args.guest_cpu, args.mux_cpu, args.repeats, args.secs
    );
    let dur = Duration::from_secs_f64(args.secs);
    let mut results: Vec<(&str, usize, Vec<f64>)> = Vec::new();
    for &size in &args.sizes {
        results.push(("tx", size, Vec::new()));
        results.push(("rx", size, Vec::new()));
    }
    for rep in 0..args.repeats {
        for r in results.iter_mut() {
            let mpps = run_one(&mut rig, r.0 == "tx", r.1, dur);
            eprintln!("  run {}: {} {:>4} B: {mpps:.2} Mpps", rep + 1, r.0, r.1);
            r.2.push(mpps);
        }
    }
    println!(
        "{:<28} {:>6} {:>12} {:>10} {:>10}",
        "direction", "bytes", "median Mpps", "min", "max"
    );
    for (dir, size, v) in &mut results {
        v.sort_by(|a, b| a.total_cmp(b));
        let med = v[v.len() / 2];
        let name = if *dir == "tx" {
            "guest TX -> wire"
        } else {
            "wire -> guest RX"
        };
        println!(
            "{name:<28} {size:>6} {med:>12.2} {:>10.2} {:>10.2}   ({:.2} Gbit/s)",
            v[0],
            v[v.len() - 1],
            med * 1e6 * (*size as f64 + 20.0) * 8.0 / 1e9
        );
        if args.json {
            println!(
                "{{\"direction\":\"{dir}\",\"size\":{size},\"median_mpps\":{med:.3},\"runs\":{v:?}}}"
            );
        }
    }
    let g = &mux.guests()[0];
    eprintln!("host view: {:?}", g.stats);
    drop(rig);
    drop(port);
    mux.shutdown();
    Ok(())
}

fn fill(pool: &Mempool, out: &mut Vec<Mbuf>, tmpl: &[u8]) {
    let need = BURST - out.len();
    let start = out.len();
    pool.alloc_bulk(out, need);
    for m in &mut out[start..] {
        m.copy_from(tmpl).expect("template fits");
    }
}

/// One side sends as fast as it can while the other receives: guest -> wire when `tx`, wire ->
/// guest otherwise. Returns the Mpps that arrived.
fn run_one(r: &mut Rig, tx: bool, size: usize, dur: Duration) -> f64 {
    let tmpl = if tx {
        udp_frame(WIRE_MAC, GUEST_MAC, 1, size)
    } else {
        udp_frame(GUEST_MAC, WIRE_MAC, 1, size)
    };
    let mut pending: Vec<Mbuf> = Vec::with_capacity(BURST);
    let mut measure = |d: Duration| {
        let (pool, txq, rxq) = if tx {
            (&r.g_pool, &mut r.g_tx, &mut r.w_rx)
        } else {
            (&r.w_pool, &mut r.w_tx, &mut r.g_rx)
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
        Mempool::free_bulk(&mut r.buf);
    }
}
