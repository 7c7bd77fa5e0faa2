//! The host-mux command line (the `host-mux` binary is `cli::main`; tests run the same code
//! under another binary name).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{BackendConfig, HostMux, MuxConfig};
use clap::Parser;
use vdpdk_core::{EthDev, MacAddr};

/// Serve vDPDK paravirtual NICs to VMs (QEMU `vfio-user-pci`) and process guests, multiplexed
/// onto one NIC.
///
/// Each `[[vm]]` of the config gets its own vfio-user socket and MAC; frames from the NIC are
/// steered to a VM by destination MAC (broadcast to all) and then by the VM's own flow rules.
/// Start a VM with:
///   qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on
///     -machine q35,memory-backend=mem
///     -device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/run/vdpdk/vm1.sock"}}'
#[derive(Parser, Debug)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Args {
    /// TOML config: [backend] kind = "tap" (ifname = ...) or "pair", [mux], [[cluster]] and
    /// [[vm]] entries. See configs/pair.toml and README.md for every key.
    #[arg(short, long, required_unless_present = "stats")]
    config: Option<PathBuf>,
    /// Print the live stats of a running host-mux (its mux.stats_socket) as JSON and exit.
    #[arg(long, value_name = "SOCKET", conflicts_with = "config")]
    stats: Option<PathBuf>,
    /// Print a per-VM stats table every N seconds (0 = never).
    #[arg(long, default_value_t = 2)]
    stats_interval: u64,
    /// Exit after N seconds (0 = run until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics, ADDR an IP and port such as
    /// 127.0.0.1:9473 (port 0: a free port, logged at start). Overrides mux.metrics_listen.
    #[arg(long, value_name = "ADDR", value_parser = crate::config::parse_listen, conflicts_with = "stats")]
    metrics_listen: Option<SocketAddr>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Writes to stdout; a reader that went away (`host-mux --stats SOCK | head`) ends the
/// process quietly instead of with a panic. Other write errors are ignored: stats output is
/// not worth dying for.
fn write_stdout(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Parses the command line and runs host-mux (exits the process on errors).
pub fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if let Some(sock) = &args.stats {
        match crate::query_stats(sock) {
            Ok(v) => {
                write_stdout(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&v).expect("JSON value")
                ));
                return;
            }
            Err(e) => {
                eprintln!("host-mux: error: {e}");
                std::process::exit(1);
            }
        }
    }
    let path = args
        .config
        .clone()
        .expect("clap requires --config without --stats");
    let mut cfg = match MuxConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("host-mux: error: bad config {}: {e}", path.display());
            std::process::exit(2);
        }
    };
    if let Some(addr) = args.metrics_listen {
        cfg.metrics_listen = Some(addr);
    }
    if let Err(e) = run(&cfg, &args) {
        eprintln!("host-mux: error: {e}");
        std::process::exit(1);
    }
}

fn run(cfg: &MuxConfig, args: &Args) -> vdpdk_core::Result<()> {
    // SAFETY: installing a handler that only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let backend: Box<dyn EthDev> = match &cfg.backend {
        BackendConfig::Tap { ifname } => Box::new(vdpdk_tap::TapPort::open(ifname, None)?),
        BackendConfig::Ice {
            access,
            ddp,
            rx_itr_us,
        } => {
            let pci: std::sync::Arc<dyn vdpdk_pci::PciDevice> = match access {
                crate::config::IceAccess::Pci(bdf) => {
                    std::sync::Arc::new(vdpdk_pci::KernelVfioPci::open(bdf)?)
                }
                crate::config::IceAccess::VfioUser(sock) => {
                    std::sync::Arc::new(vdpdk_pci::VfioUserPci::connect(sock)?)
                }
            };
            let src = ddp
                .clone()
                .map_or(ice_driver::DdpSource::Default, ice_driver::DdpSource::File);
            let mut port = ice_driver::IcePort::open_with(pci, src)?;
            port.set_rx_itr(*rx_itr_us)?;
            Box::new(port)
        }
        // An in-memory wire whose far end echoes (MACs swapped), with no thread of its own.
        BackendConfig::Pair => Box::new(vdpdk_pair::reflector(
            MacAddr([2, 0, 0, 0, 0, 0xfd]),
            1,
            4096,
        )),
    };
    let mux = HostMux::start(cfg, backend)?;
    let t0 = Instant::now();
    let mut last = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if args.duration > 0 && t0.elapsed() >= Duration::from_secs(args.duration) {
            break;
        }
        if args.stats_interval > 0 && last.elapsed() >= Duration::from_secs(args.stats_interval) {
            last = Instant::now();
            write_stdout(&crate::stats_table(&mux.guests()));
        }
    }
    log::info!("shutting down");
    mux.shutdown();
    Ok(())
}
