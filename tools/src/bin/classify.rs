//! `vdpdk-classify`: sorts received frames into four classes by EtherType, either in the device
//! (`--mode hw`: one flow rule per class steers it to its own RX queue; queue 0 keeps the rest)
//! or in software (`--mode sw`: one queue, the app reads each EtherType). Prints per-class
//! counts and the rate, so the two modes can be compared on the same input.

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use vdpdk_core::{DevConfig, EthDev, FlowItem, FlowRule, Mbuf, Mempool, RxQueue};
use vdpdk_tools::{die, open_port, outln, port_spec, EXIT_FAILURE, EXIT_USAGE};

const TOOL: &str = "vdpdk-classify";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Device flow rules, one RX queue per class.
    Hw,
    /// One RX queue, classification in the app.
    Sw,
}

/// Classify frames by EtherType into four classes, by device flow rules or in software.
///
/// Ports: vdpdk:SOCKET, vdpdk-vm:BDF|auto, tap:IFNAME, ice:SOCKET, ice-pci:BDF. In hw mode
/// the port needs 5 RX queues (a host-mux VM: `rx_queues = 5`).
#[derive(Parser, Debug)]
#[command(name = "vdpdk-classify", version)]
struct Args {
    /// The port to classify on.
    #[arg(long, value_parser = port_spec)]
    port: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// The four class EtherTypes, hex (default IPv4, IPv6, ARP, 88b5).
    #[arg(long = "class", num_args = 4, value_parser = parse_ethertype,
          default_values = ["0800", "86dd", "0806", "88b5"])]
    classes: Vec<u16>,
    /// Stop after this many frames (0 = no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Seconds to run (0 = until --count).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Print running counts every second.
    #[arg(long)]
    progress: bool,
    /// Print the result as one JSON object too.
    #[arg(long)]
    json: bool,
}

fn parse_ethertype(s: &str) -> Result<u16, String> {
    let h = s.trim_start_matches("0x");
    u16::from_str_radix(h, 16)
        .ok()
        .filter(|&v| v >= 0x0600)
        .ok_or_else(|| format!("'{s}' is not an EtherType (hex, 0600..ffff)"))
}

/// Counts: index 0..4 = the classes, 4 = anything else.
type Counts = [u64; 5];

fn main() {
    let args = Args::parse();
    let mut seen = args.classes.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != 4 {
        die(TOOL, EXIT_USAGE, "the four --class EtherTypes must differ");
    }
    if !(args.duration >= 0.0 && args.duration.is_finite())
        || (args.count == 0 && args.duration == 0.0)
    {
        die(
            TOOL,
            EXIT_USAGE,
            "give --count and/or a positive --duration",
        );
    }
    let mut port = open_port(&args.port).unwrap_or_else(|e| fail(&e));
    let nrx = if args.mode == Mode::Hw { 5 } else { 1 };
    let info = port.info();
    if info.max_rx_queues < nrx {
        die(
            TOOL,
            EXIT_FAILURE,
            format!(
                "hw mode needs {nrx} RX queues, {} offers {}",
                args.port, info.max_rx_queues
            ),
        );
    }
    let pool =
        Mempool::new("classify", 8192, vdpdk_core::DEFAULT_BUF_SIZE).unwrap_or_else(|e| fail(&e));
    let mut rxqs = start(&mut *port, nrx, &pool).unwrap_or_else(|e| fail(&e));
    if args.mode == Mode::Hw {
        for (i, &t) in args.classes.iter().enumerate() {
            let rule = FlowRule::to_queue(vec![FlowItem::eth_type(t)], i as u16 + 1);
            if let Err(e) = port
                .flow_validate(&rule)
                .and_then(|_| port.flow_create(&rule).map(|_| ()))
            {
                die(
                    TOOL,
                    EXIT_FAILURE,
                    format!(
                        "{} cannot steer EtherType {t:04x} to queue {}: {e}",
                        args.port,
                        i + 1
                    ),
                );
            }
        }
    }
    outln!(
        "classifying on {} in {:?} mode: classes {}, ready",
        args.port,
        args.mode,
        args.classes
            .iter()
            .map(|t| format!("{t:04x}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (counts, first, last) = run(&args, &mut rxqs);
    let total: u64 = counts.iter().sum();
    let secs = last
        .zip(first)
        .map_or(0.0, |(l, f)| l.duration_since(f).as_secs_f64());
    let mpps = if secs > 0.0 {
        total as f64 / secs / 1e6
    } else {
        0.0
    };
    outln!("class      ethertype     frames");
    for (i, &t) in args.classes.iter().enumerate() {
        outln!("{i:<10} {t:04x}     {:>12}", counts[i]);
    }
    outln!("other      -        {:>12}", counts[4]);
    outln!(
        "total {total} frames, {mpps:.3} Mpps over {secs:.3} s ({:?} mode)",
        args.mode
    );
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "mode": format!("{:?}", args.mode).to_lowercase(),
                "classes": args.classes.iter().map(|t| format!("{t:04x}")).collect::<Vec<_>>(),
                "counts": &counts[..4],
                "other": counts[4],
                "total": total,
                "seconds": secs,
                "mpps": mpps,
            })
        );
    }
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    die(TOOL, EXIT_FAILURE, e)
}

fn start(
    port: &mut dyn EthDev,
    nrx: u16,
    pool: &Mempool,
) -> vdpdk_core::Result<Vec<Box<dyn RxQueue>>> {
    port.configure(&DevConfig {
        nb_rx_queues: nrx,
        nb_tx_queues: 1,
        ..Default::default()
    })?;
    for q in 0..nrx {
        port.rx_queue_setup(q, 1024, pool)?;
    }
    port.tx_queue_setup(0, 256)?;
    port.start()?;
    (0..nrx).map(|q| port.take_rx_queue(q)).collect()
}

/// Receives until the count or the deadline; returns the counts and the first/last arrival.
fn run(args: &Args, rxqs: &mut [Box<dyn RxQueue>]) -> (Counts, Option<Instant>, Option<Instant>) {
    let mut counts: Counts = [0; 5];
    let (mut first, mut last) = (None, None);
    let start = Instant::now();
    let deadline = (args.duration > 0.0).then(|| start + Duration::from_secs_f64(args.duration));
    let mut burst: Vec<Mbuf> = Vec::with_capacity(32);
    let mut next_progress = start + Duration::from_secs(1);
    let total = |c: &Counts| c.iter().sum::<u64>();
    while (args.count == 0 || total(&counts) < args.count)
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        let mut got = 0;
        for (q, rx) in rxqs.iter_mut().enumerate() {
            let n = rx.rx_burst(&mut burst, 32);
            if n == 0 {
                continue;
            }
            got += n;
            match args.mode {
                // The device already sorted them: queue q holds class q-1, queue 0 the rest.
                Mode::Hw => counts[if q == 0 { 4 } else { q - 1 }] += n as u64,
                Mode::Sw => {
                    for m in &burst {
                        counts[class_of(m.data(), &args.classes)] += 1;
                    }
                }
            }
            burst.clear();
        }
        if got > 0 {
            let now = Instant::now();
            first.get_or_insert(now);
            last = Some(now);
        } else {
            std::thread::sleep(Duration::from_micros(20));
        }
        if args.progress && Instant::now() >= next_progress {
            outln!(
                "[{:5.1} s] {} frames {:?}",
                start.elapsed().as_secs_f64(),
                total(&counts),
                counts
            );
            next_progress += Duration::from_secs(1);
        }
    }
    (counts, first, last)
}

/// The class of a frame by its EtherType (4 = none of them).
fn class_of(frame: &[u8], classes: &[u16]) -> usize {
    let Some(t) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return 4;
    };
    classes.iter().position(|&c| c == t).unwrap_or(4)
}
