//! One frame in flight: the guest sends one frame (guest-pmd over vfio-user), host-mux (one
//! combined poller, pinned) moves it to the in-memory wire, the wire end reflects it (MACs
//! swapped) from the same thread that drives the guest, host-mux moves it back, the guest
//! receives it. Every leg is busy-polled, nothing sleeps. Prints p50/p99/p99.9/max of the round
//! trip and of each leg (guest TX -> wire, wire -> guest RX), in microseconds.
//!
//! With WIRE `reflector` the far end is host-mux's own backend instead, the reflector the
//! host-mux binary runs on its pair backend: it swaps the MACs inside the poller's TX burst,
//! so the round trip crosses between the CPUs twice (guest -> poller -> guest), as a memif
//! client's round trip through a macswap server does; only the round trip is printed then.
//!
//! Usage: vdpdk-latency-probe [SAMPLES] [SIZE] [GUEST_CPU] [MUX_CPU] [DIR] [WIRE]
//! (defaults 200000 64 0 1 /tmp/vdpdk-latency-probe pair; WIRE is pair or reflector)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use guest_pmd::VdpdkPort;
use host_mux::{BackendConfig, ClusterConfig, HostMux, MuxConfig, PollMode, VmConfig};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue, TxQueue};

const WIRE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const GUEST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    match std::env::args().nth(i) {
        None => default,
        Some(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("vdpdk-latency-probe: bad argument {i}: {s}");
            std::process::exit(2)
        }),
    }
}

fn pct(v: &[u64], q: f64) -> f64 {
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

fn main() {
    let samples: usize = arg(1, 200_000);
    let size: usize = arg(2, 64);
    let guest_cpu: usize = arg(3, 0);
    let mux_cpu: usize = arg(4, 1);
    let dir: PathBuf = arg(5, PathBuf::from("/tmp/vdpdk-latency-probe"));
    let wire: String = arg(6, "pair".to_string());
    if !(60..=1514).contains(&size) || samples == 0 || !["pair", "reflector"].contains(&&*wire) {
        eprintln!(
            "vdpdk-latency-probe: size must be 60..=1514, samples > 0, WIRE pair or reflector"
        );
        std::process::exit(2);
    }
    if let Err(e) = run(samples, size, guest_cpu, mux_cpu, dir, wire == "reflector") {
        eprintln!("vdpdk-latency-probe: {e}");
        std::process::exit(1);
    }
}

fn run(
    samples: usize,
    size: usize,
    guest_cpu: usize,
    mux_cpu: usize,
    dir: PathBuf,
    reflector: bool,
) -> vdpdk_core::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("probe.sock");
    let cfg = MuxConfig {
        idle_polls: 1 << 20,
        pool_size: 16384,
        clusters: vec![ClusterConfig {
            cpus: vec![mux_cpu],
            mode: PollMode::Combined,
        }],
        ..MuxConfig::new(
            BackendConfig::Pair,
            vec![VmConfig {
                name: "probe".into(),
                socket: sock.clone(),
                mac: GUEST_MAC,
                rx_queues: 1,
                tx_queues: 1,
                cluster: 0,
            }],
        )
    };
    let mux_mac = MacAddr([2, 0, 0, 0, 0, 0xfd]);
    if reflector {
        let mux = HostMux::start(&cfg, Box::new(vdpdk_pair::reflector(mux_mac, 1, 4096)))?;
        host_mux::pin_current_thread(guest_cpu)?;
        let r = reflected(samples, size, guest_cpu, mux_cpu, &sock);
        mux.shutdown();
        return r;
    }
    let (mux_end, mut wire) = vdpdk_pair::pair(mux_mac, WIRE_MAC, 1, 4096);
    let mux = HostMux::start(&cfg, Box::new(mux_end))?;
    host_mux::pin_current_thread(guest_cpu)?;
    let mut port = VdpdkPort::connect(&sock)?;
    let g_pool = Mempool::new("probe-guest", 4096, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (mut g_rx, mut g_tx) = start_single_queue(&mut port, &g_pool, 1024, false)?;
    let w_pool = Mempool::new("probe-wire", 4096, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (mut w_rx, mut w_tx) = start_single_queue(&mut wire, &w_pool, 1024, false)?;

    let tmpl = udp_frame(WIRE_MAC, GUEST_MAC, 1, size);
    let mut out: Vec<Mbuf> = Vec::with_capacity(1);
    let mut buf: Vec<Mbuf> = Vec::with_capacity(32);
    let warmup = (samples / 10).max(1000);
    let (mut rtt, mut tx_leg, mut rx_leg) = (
        Vec::with_capacity(samples),
        Vec::with_capacity(samples),
        Vec::with_capacity(samples),
    );
    let mut lost = 0u64;
    let limit = Duration::from_millis(200);
    let t_start = Instant::now();
    for i in 0..warmup + samples {
        let t0 = send_one(&g_pool, &mut *g_tx, &mut out, &tmpl, limit)?;
        // The wire end: wait for the frame, swap its MACs, send it back.
        let got = wait_burst(&mut *w_rx, &mut buf, t0, limit);
        if !got {
            lost += 1;
            continue;
        }
        let t1 = Instant::now();
        for m in buf.iter_mut() {
            let d = m.data_mut();
            let mut dst = [0u8; 6];
            dst.copy_from_slice(&d[0..6]);
            d.copy_within(6..12, 0);
            d[6..12].copy_from_slice(&dst);
        }
        let n = buf.len();
        let t2 = Instant::now();
        let mut sent = 0;
        while sent < n {
            sent += w_tx.tx_burst(&mut buf);
            if t2.elapsed() > limit {
                break;
            }
        }
        Mempool::free_bulk(&mut buf);
        let back = wait_burst(&mut *g_rx, &mut buf, t2, limit);
        let t3 = Instant::now();
        Mempool::free_bulk(&mut buf);
        if !back {
            lost += 1;
            continue;
        }
        if i >= warmup {
            tx_leg.push((t1 - t0).as_nanos() as u64);
            rx_leg.push((t3 - t2).as_nanos() as u64);
            rtt.push((t3 - t0).as_nanos() as u64);
        }
    }
    report(
        size,
        guest_cpu,
        mux_cpu,
        warmup,
        lost,
        t_start,
        &mut [
            ("round trip (guest->wire->guest)", &mut rtt),
            ("leg guest TX -> wire", &mut tx_leg),
            ("leg wire -> guest RX", &mut rx_leg),
        ],
    );
    drop((g_rx, g_tx, w_rx, w_tx));
    drop(port);
    mux.shutdown();
    Ok(())
}

/// The round trip through host-mux's reflector backend: the guest sends, the poller hands the
/// frame to the reflector (MACs swapped in its TX burst), takes it back from the reflector's
/// RX at its next round and delivers it to the guest.
fn reflected(
    samples: usize,
    size: usize,
    guest_cpu: usize,
    mux_cpu: usize,
    sock: &std::path::Path,
) -> vdpdk_core::Result<()> {
    let mut port = VdpdkPort::connect(sock)?;
    let g_pool = Mempool::new("probe-guest", 4096, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (mut g_rx, mut g_tx) = start_single_queue(&mut port, &g_pool, 1024, false)?;
    let tmpl = udp_frame(WIRE_MAC, GUEST_MAC, 1, size);
    let mut out: Vec<Mbuf> = Vec::with_capacity(1);
    let mut buf: Vec<Mbuf> = Vec::with_capacity(32);
    let warmup = (samples / 10).max(1000);
    let mut rtt = Vec::with_capacity(samples);
    let mut lost = 0u64;
    let limit = Duration::from_millis(200);
    let t_start = Instant::now();
    for i in 0..warmup + samples {
        let t0 = send_one(&g_pool, &mut *g_tx, &mut out, &tmpl, limit)?;
        let back = wait_burst(&mut *g_rx, &mut buf, t0, limit);
        let t1 = Instant::now();
        Mempool::free_bulk(&mut buf);
        if !back {
            lost += 1;
            continue;
        }
        if i >= warmup {
            rtt.push((t1 - t0).as_nanos() as u64);
        }
    }
    report(
        size,
        guest_cpu,
        mux_cpu,
        warmup,
        lost,
        t_start,
        &mut [("round trip (guest->reflector->guest)", &mut rtt)],
    );
    Ok(())
}

/// Prints the header line and p50/p99/p99.9/max of each series, in microseconds.
fn report(
    size: usize,
    guest_cpu: usize,
    mux_cpu: usize,
    warmup: usize,
    lost: u64,
    t_start: Instant,
    series: &mut [(&str, &mut Vec<u64>)],
) {
    let secs = t_start.elapsed().as_secs_f64();
    println!(
        "vdpdk-latency-probe: {size} B, one frame in flight, guest CPU {guest_cpu}, mux CPU {mux_cpu}, \
         {} samples (after {warmup} warm-up) in {secs:.1} s, {lost} lost",
        series[0].1.len()
    );
    println!(
        "{:<38} {:>9} {:>9} {:>9} {:>9}",
        "us", "p50", "p99", "p99.9", "max"
    );
    for (name, v) in series.iter_mut() {
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        println!(
            "{name:<38} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 0.999),
            *v.last().unwrap() as f64 / 1000.0
        );
    }
}

/// Takes a guest buffer, fills it with `tmpl` and posts it, retrying while the ring is full;
/// returns when it was posted (the start of the round trip).
fn send_one(
    pool: &Mempool,
    tx: &mut dyn TxQueue,
    out: &mut Vec<Mbuf>,
    tmpl: &[u8],
    limit: Duration,
) -> vdpdk_core::Result<Instant> {
    pool.alloc_bulk(out, 1);
    if out.is_empty() {
        return Err(std::io::Error::other("guest pool empty").into());
    }
    out[0].copy_from(tmpl)?;
    let t0 = Instant::now();
    while tx.tx_burst(out) == 0 {
        if t0.elapsed() > limit {
            return Err(std::io::Error::other("guest TX ring stays full").into());
        }
    }
    Ok(t0)
}

/// Polls `rx` until it returns frames (true) or `limit` has passed since `since` (false).
fn wait_burst(rx: &mut dyn RxQueue, buf: &mut Vec<Mbuf>, since: Instant, limit: Duration) -> bool {
    loop {
        if rx.rx_burst(buf, 32) > 0 {
            return true;
        }
        if since.elapsed() > limit {
            return false;
        }
    }
}
