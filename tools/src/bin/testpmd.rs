//! `vdpdk-testpmd`: DPDK testpmd's forwarding modes and port statistics on any vdpdk-rs port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use vdpdk_core::{DevConfig, EthDev, FlowHandle, MacAddr, Mempool};
use vdpdk_tools::testpmd::{
    forward, parse_flow, parse_rx_offloads, parse_tx_offloads, FwdCounters, FwdMode, Lane,
    TxTemplate,
};
use vdpdk_tools::{die as exit_with, open_port, outln, port_spec, EXIT_FAILURE, EXIT_USAGE};

/// testpmd-like forwarding on vdpdk-rs ports: io, macswap, rxonly, txonly, flowgen, with
/// periodic port statistics (Mpps, Gbit/s, drops) and flow rules in testpmd's syntax.
///
/// Ports: vdpdk:SOCKET, vdpdk-vm:BDF|auto, tap:IFNAME, ice:SOCKET, ice-pci:BDF.
#[derive(Parser, Debug)]
#[command(name = "vdpdk-testpmd", version)]
struct Args {
    /// A port; give it twice for io forwarding between two ports.
    #[arg(long = "port", required = true, num_args = 1, value_parser = port_spec)]
    ports: Vec<String>,
    #[arg(long, value_enum, default_value = "io")]
    forward_mode: FwdMode,
    /// RX queues per port (io/macswap: queue q forwards to TX queue q).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    rxq: u16,
    /// TX queues per port.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    txq: u16,
    /// RX descriptors per queue.
    #[arg(long, default_value_t = 1024)]
    rxd: u16,
    /// TX descriptors per queue.
    #[arg(long, default_value_t = 1024)]
    txd: u16,
    /// Packets per burst.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=512))]
    burst: u16,
    /// Packet buffers in the pool.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(256..))]
    mbufs: u32,
    /// Bytes per packet buffer, headroom included (frames larger than one buffer need
    /// --rx-offloads scatter).
    #[arg(long, default_value_t = vdpdk_core::DEFAULT_BUF_SIZE,
          value_parser = clap::value_parser!(u16).range(256..))]
    mbuf_size: u16,
    /// Port MTU (0 = the device's default).
    #[arg(long, default_value_t = 0)]
    mtu: u16,
    /// RX offloads to enable, DPDK names (e.g. ipv4_cksum,udp_cksum,scatter).
    #[arg(long, default_value = "")]
    rx_offloads: String,
    /// TX offloads to enable, DPDK names (e.g. ipv4_cksum,tcp_cksum,tcp_tso).
    #[arg(long, default_value = "")]
    tx_offloads: String,
    /// A flow rule for the first port, in testpmd syntax after `flow create 0 ingress`, e.g.
    /// "pattern eth type is 0x88b5 / end actions queue index 1 / end". Repeatable.
    #[arg(long = "flow")]
    flows: Vec<String>,
    /// txonly/flowgen: frame size in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(60..=1518))]
    txpkts: u16,
    /// txonly/flowgen: destination MAC.
    #[arg(long, default_value = "02:00:00:00:00:fe")]
    eth_peer: MacAddr,
    /// flowgen: number of flows.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    flows_count: u32,
    /// Print port statistics every N seconds (0 = only at the end).
    #[arg(long, default_value_t = 1.0)]
    stats_period: f64,
    /// Seconds to forward (0 = until Ctrl-C).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Print the final statistics as JSON too.
    #[arg(long)]
    json: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

const TOOL: &str = "vdpdk-testpmd";

/// A bad argument: exit 2.
fn die(msg: impl std::fmt::Display) -> ! {
    exit_with(TOOL, EXIT_USAGE, msg)
}

fn main() {
    let a = Args::parse();
    let (conf, rules) = check_args(&a);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let mut ports: Vec<Box<dyn EthDev>> = a
        .ports
        .iter()
        .map(|p| open_port(p).unwrap_or_else(|e| fail(format!("{p}: {e}"))))
        .collect();
    // After opening: in a VM without IOMMU, pool memory must be created after the device.
    let pool = Mempool::new("testpmd", a.mbufs, a.mbuf_size).unwrap_or_else(|e| fail(e));
    start_ports(&a, &conf, &pool, &mut ports);
    let mut handles: Vec<FlowHandle> = Vec::new();
    for (rule, text) in rules.iter().zip(&a.flows) {
        let r = ports[0]
            .flow_validate(rule)
            .and_then(|_| ports[0].flow_create(rule));
        match r {
            Ok(h) => {
                outln!("Flow rule #{} created: {text}", h.0);
                handles.push(h);
            }
            Err(e) => fail(format!("port 0 refuses --flow \"{text}\": {e}")),
        }
    }
    let mut lanes = make_lanes(&a, &mut ports);
    let n = ports.len();
    let counters: Vec<FwdCounters> = (0..n).map(|_| FwdCounters::default()).collect();
    let secs = forward_until_stopped(&a, &ports, &mut lanes, &pool, &counters);
    outln!("Stopping forwarding after {secs:.1} s. Totals:");
    let mut json = Vec::new();
    for (p, port) in ports.iter().enumerate() {
        show(p, &**port, &counters[p], (0, 0, 0, 0), secs);
        let c = &counters[p];
        let g = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
        let ps = port.stats();
        json.push(serde_json::json!({
            "port": p, "rx_packets": g(&c.rx), "rx_bytes": g(&c.rx_bytes),
            "tx_packets": g(&c.tx), "tx_bytes": g(&c.tx_bytes), "tx_dropped": g(&c.tx_dropped),
            "rx_missed": ps.imissed, "rx_nombuf": ps.rx_nombuf, "rx_errors": ps.ierrors,
            "rx_mpps": g(&c.rx) as f64 / secs / 1e6, "tx_mpps": g(&c.tx) as f64 / secs / 1e6,
        }));
    }
    drop(lanes);
    for h in handles {
        let _ = ports[0].flow_destroy(h);
    }
    for p in &mut ports {
        let _ = p.stop();
    }
    if a.json {
        outln!(
            "{}",
            serde_json::json!({ "mode": format!("{:?}", a.forward_mode).to_lowercase(), "seconds": secs, "ports": json })
        );
    }
}

/// Checks the arguments clap cannot (exit 2 on a bad one); returns the port configuration
/// and the parsed flow rules.
fn check_args(a: &Args) -> (DevConfig, Vec<vdpdk_core::FlowRule>) {
    if a.ports.len() > 2 {
        die("at most two --port");
    }
    if matches!(a.forward_mode, FwdMode::Io | FwdMode::Macswap) && a.txq < a.rxq {
        die("io and macswap forward RX queue q to TX queue q: give --txq >= --rxq");
    }
    for (v, n) in [
        (a.stats_period, "--stats-period"),
        (a.duration, "--duration"),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            die(format!("{n} must be a non-negative number of seconds"));
        }
    }
    let rx_offloads = parse_rx_offloads(&a.rx_offloads).unwrap_or_else(|e| die(e));
    let tx_offloads = parse_tx_offloads(&a.tx_offloads).unwrap_or_else(|e| die(e));
    let rules = a
        .flows
        .iter()
        .map(|f| parse_flow(f).unwrap_or_else(|e| die(format!("--flow \"{f}\": {e}"))))
        .collect();
    let conf = DevConfig {
        nb_rx_queues: a.rxq,
        nb_tx_queues: a.txq,
        rx_offloads,
        tx_offloads,
        rx_intr: false,
        mtu: a.mtu,
    };
    (conf, rules)
}

/// Configures and starts every port (exit 1 on a failure).
fn start_ports(a: &Args, conf: &DevConfig, pool: &Mempool, ports: &mut [Box<dyn EthDev>]) {
    for (pi, port) in ports.iter_mut().enumerate() {
        let info = port.info();
        let mut setup = || -> vdpdk_core::Result<()> {
            port.configure(conf)?;
            for q in 0..a.rxq {
                port.rx_queue_setup(q, a.rxd, pool)?;
            }
            for q in 0..a.txq {
                port.tx_queue_setup(q, a.txd)?;
            }
            port.start()
        };
        setup().unwrap_or_else(|e| fail(format!("port {pi} ({}): {e}", a.ports[pi])));
        outln!(
            "Port {pi}: {} MAC {} driver {} rxq {} txq {} link {}",
            a.ports[pi],
            info.mac,
            info.driver,
            a.rxq,
            a.txq,
            if port.link().up { "up" } else { "down" }
        );
    }
}

/// Takes every queue and pairs them into lanes: RX queue q of port p feeds TX queue q of the
/// peer port (itself if alone).
fn make_lanes(a: &Args, ports: &mut [Box<dyn EthDev>]) -> Vec<Lane> {
    let mut lanes = Vec::new();
    let n = ports.len();
    let mut txqs: Vec<Vec<Option<Box<dyn vdpdk_core::TxQueue>>>> = ports
        .iter_mut()
        .map(|p| {
            (0..a.txq)
                .map(|q| Some(p.take_tx_queue(q).unwrap_or_else(|e| fail(e))))
                .collect()
        })
        .collect();
    let mut rxqs: Vec<Vec<Box<dyn vdpdk_core::RxQueue>>> = ports
        .iter_mut()
        .map(|p| {
            (0..a.rxq)
                .map(|q| p.take_rx_queue(q).unwrap_or_else(|e| fail(e)))
                .collect()
        })
        .collect();
    for p in 0..n {
        let peer = if a.forward_mode == FwdMode::Io {
            (p + 1) % n
        } else {
            p
        };
        match a.forward_mode {
            FwdMode::Txonly | FwdMode::Flowgen => {
                for tx in txqs[p].iter_mut().filter_map(Option::take) {
                    lanes.push(Lane {
                        rx: None,
                        rx_port: p,
                        tx,
                        tx_port: p,
                    });
                }
            }
            FwdMode::Rxonly => {
                for rx in rxqs[p].drain(..) {
                    lanes.push(Lane {
                        rx: Some(rx),
                        rx_port: p,
                        tx: Box::new(Discard),
                        tx_port: p,
                    });
                }
            }
            FwdMode::Io | FwdMode::Macswap => {
                for (q, rx) in rxqs[p].drain(..).enumerate() {
                    let tx = txqs[peer][q].take().expect("txq >= rxq was checked");
                    lanes.push(Lane {
                        rx: Some(rx),
                        rx_port: p,
                        tx,
                        tx_port: peer,
                    });
                }
            }
        }
    }
    lanes
}

/// Forwards on a thread of its own while this one prints the periodic statistics, until
/// Ctrl-C or `--duration`; returns the seconds forwarded.
fn forward_until_stopped(
    a: &Args,
    ports: &[Box<dyn EthDev>],
    lanes: &mut [Lane],
    pool: &Mempool,
    counters: &[FwdCounters],
) -> f64 {
    let n = ports.len();
    let tmpl = TxTemplate {
        src: ports[0].info().mac,
        dst: a.eth_peer,
        size: a.txpkts as usize,
        flows: a.flows_count,
    };
    outln!(
        "Start {:?} forwarding on {} port(s), {} lane(s), burst {}; Ctrl-C to stop",
        a.forward_mode,
        n,
        lanes.len(),
        a.burst
    );
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            forward(
                a.forward_mode,
                lanes,
                a.burst as usize,
                pool,
                tmpl,
                counters,
                &STOP,
            )
        });
        // Should this thread panic (say stdout went away), stop the forwarder so the scope
        // can end instead of spinning forever.
        let _stop_on_unwind = StopOnDrop;
        let mut last = vec![(0u64, 0u64, 0u64, 0u64); n];
        let mut last_t = Instant::now();
        while !STOP.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            if a.duration > 0.0 && start.elapsed().as_secs_f64() >= a.duration {
                STOP.store(true, Ordering::Relaxed);
            }
            if a.stats_period > 0.0 && last_t.elapsed().as_secs_f64() >= a.stats_period {
                let dt = last_t.elapsed().as_secs_f64();
                for (p, port) in ports.iter().enumerate() {
                    last[p] = show(p, &**port, &counters[p], last[p], dt);
                }
                last_t = Instant::now();
            }
        }
    });
    start.elapsed().as_secs_f64()
}

/// A failure at run time: exit 1.
fn fail(msg: impl std::fmt::Display) -> ! {
    exit_with(TOOL, EXIT_FAILURE, msg)
}

struct StopOnDrop;
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        STOP.store(true, Ordering::Relaxed);
    }
}

/// A TX queue that frees everything (for RX queues without a TX partner).
struct Discard;
impl vdpdk_core::TxQueue for Discard {
    fn tx_burst(&mut self, pkts: &mut Vec<vdpdk_core::Mbuf>) -> usize {
        let n = pkts.len();
        pkts.clear();
        n
    }
}

/// Prints testpmd's port block for the interval since `last`; returns the new baseline.
fn show(
    p: usize,
    port: &dyn EthDev,
    c: &FwdCounters,
    last: (u64, u64, u64, u64),
    dt: f64,
) -> (u64, u64, u64, u64) {
    let g = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
    let now = (g(&c.rx), g(&c.rx_bytes), g(&c.tx), g(&c.tx_bytes));
    let s = port.stats();
    let rate = |a: u64, b: u64| (a - b) as f64 / dt.max(1e-9);
    outln!("  ######################## NIC statistics for port {p} ########################");
    outln!(
        "  RX-packets: {:<12} RX-missed: {:<10} RX-bytes:  {}",
        now.0,
        s.imissed,
        now.1
    );
    outln!("  RX-errors:  {:<12} RX-nombuf: {}", s.ierrors, s.rx_nombuf);
    outln!(
        "  TX-packets: {:<12} TX-dropped: {:<9} TX-bytes:  {}",
        now.2,
        g(&c.tx_dropped),
        now.3
    );
    outln!(
        "  Throughput: Rx-pps: {:>12.0} ({:.3} Mpps)  Rx-bps: {:>14.0} ({:.3} Gbit/s)",
        rate(now.0, last.0),
        rate(now.0, last.0) / 1e6,
        rate(now.1, last.1) * 8.0,
        rate(now.1, last.1) * 8.0 / 1e9
    );
    outln!(
        "              Tx-pps: {:>12.0} ({:.3} Mpps)  Tx-bps: {:>14.0} ({:.3} Gbit/s)",
        rate(now.2, last.2),
        rate(now.2, last.2) / 1e6,
        rate(now.3, last.3) * 8.0,
        rate(now.3, last.3) * 8.0 / 1e9
    );
    outln!("  ############################################################################");
    now
}
