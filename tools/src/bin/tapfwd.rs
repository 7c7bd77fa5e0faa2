//! `vdpdk-tapfwd`: exposes a port to the kernel as a TAP interface (see tools/src/tapfwd.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use vdpdk_tools::tapfwd::{run, FwdStats, TsoMode};
use vdpdk_tools::{die, open_port, outln, port_spec, EXIT_FAILURE, EXIT_USAGE};

const TOOL: &str = "vdpdk-tapfwd";

/// Expose a port (e.g. a vDPDK guest port) as a Linux TAP interface with the port's MAC and MTU,
/// so the kernel's stack and tools (ping, iperf3, ssh) run over it. The kernel's checksum and
/// TSO work is passed along through virtio-net headers: TCP super-frames go to the port's TSO
/// when it has one (a vDPDK port does), the rest is finished here.
///
/// Ports: vdpdk:SOCKET, vdpdk-vm:BDF|auto, tap:IFNAME, ice:SOCKET, ice-pci:BDF.
#[derive(Parser, Debug)]
#[command(name = "vdpdk-tapfwd", version)]
struct Args {
    /// The port to expose.
    #[arg(long, value_parser = port_spec)]
    port: String,
    /// Name of the TAP interface to create.
    #[arg(long, default_value = "vdpdk-tap0")]
    ifname: String,
    /// Seconds to run (0 = until Ctrl-C).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Print the counters every N seconds (0 = only at the end).
    #[arg(long, default_value_t = 0.0)]
    stats_interval: f64,
    /// Cut the kernel's TCP super-frames here even when the port offers TSO.
    #[arg(long)]
    software_tso: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() {
    let args = Args::parse();
    for (v, name) in [
        (args.duration, "--duration"),
        (args.stats_interval, "--stats-interval"),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            die(
                TOOL,
                EXIT_USAGE,
                format!("{name} must be a non-negative number of seconds"),
            );
        }
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut port = open_port(&args.port).unwrap_or_else(|e| die(TOOL, EXIT_FAILURE, e));
    let stats = FwdStats::default();
    let start = Instant::now();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = Instant::now();
            while !STOP.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if args.duration > 0.0 && start.elapsed().as_secs_f64() >= args.duration {
                    STOP.store(true, Ordering::Relaxed);
                }
                if args.stats_interval > 0.0 && last.elapsed().as_secs_f64() >= args.stats_interval
                {
                    outln!("[{:6.1} s] {}", start.elapsed().as_secs_f64(), stats.line());
                    last = Instant::now();
                }
            }
        });
        let tso = if args.software_tso {
            TsoMode::Software
        } else {
            TsoMode::Port
        };
        run(&mut *port, &args.ifname, tso, &STOP, &stats, |tap| {
            outln!(
                "{} is up on {} (MAC {}, MTU {}), ready",
                tap.ifname(),
                args.port,
                port_mac(tap),
                tap.mtu()
            );
        })
        .inspect_err(|_| STOP.store(true, Ordering::Relaxed))
    });
    if let Err(e) = r {
        die(TOOL, EXIT_FAILURE, e);
    }
    outln!(
        "done after {:.1} s: {}",
        start.elapsed().as_secs_f64(),
        stats.line()
    );
}

fn port_mac(tap: &vdpdk_tap::TapInterface) -> String {
    tap.mac()
        .map(|m| m.to_string())
        .unwrap_or_else(|e| e.to_string())
}
