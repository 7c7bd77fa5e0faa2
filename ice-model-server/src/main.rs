//! Serves a software E810 on a vfio-user socket, so the ice driver (or anything speaking
//! vfio-user) can drive it from another process exactly as it would drive a real card.
//!
//! Clients are served one after another, each finding the card as at power-on. A stale socket
//! file (its server was killed) is replaced; a live one is refused. SIGINT, SIGTERM and SIGHUP
//! end the server, and the socket file goes with it.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ice_model::pci::Wire;
use ice_model::{E810Model, ModelConfig};
use ice_model_server::{bind_socket, serve_listener, DatagramCable, SocketFile};
use vdpdk_core::MacAddr;

/// Serve a software Intel E810 over vfio-user.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// vfio-user socket to listen on. A stale socket file there (nobody listening) is
    /// replaced; the file is removed when the server ends.
    #[arg(long)]
    socket: PathBuf,
    /// The card's LAN MAC address.
    #[arg(long, default_value = "00:1b:21:e8:10:00")]
    mac: String,
    /// Queues per direction the card offers.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=2048))]
    queues: u32,
    /// Cable this card to another: bind this datagram socket for frames arriving...
    #[arg(long, requires = "wire_peer")]
    wire_local: Option<PathBuf>,
    /// ...and send transmitted frames to the other card's datagram socket.
    #[arg(long, requires = "wire_local")]
    wire_peer: Option<PathBuf>,
    /// Cable the card to a Linux TAP interface of this name (created if missing), so the
    /// Linux stack and tools see its traffic.
    #[arg(long, conflicts_with_all = ["wire_local", "wire_peer"])]
    wire_tap: Option<String>,
}

/// No cable plugged in: what the card transmits is lost.
struct Unplugged;

impl Wire for Unplugged {
    fn transmit(&self, _frame: &[u8]) {}
}

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Blocks the stop signals in this thread and every thread it starts later, so that only
/// `sigwait` in the stop thread receives them.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data that sigemptyset initialises; the calls only read and
    // write the local set and this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        assert_eq!(rc, 0, "pthread_sigmask");
        set
    }
}

/// Waits for a stop signal, removes the socket file and ends the process.
fn stop_on_signal(set: libc::sigset_t, socket: Arc<SocketFile>) {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` was initialised by sigemptyset/sigaddset; sigwait writes one int.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        log::error!("sigwait failed ({rc}): stop signals are not handled");
        return;
    }
    let name = match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "SIGHUP",
    };
    socket.remove();
    log::info!("{name}: stopped, {} removed", socket.path().display());
    std::process::exit(0);
}

/// A bad cable argument: said, the socket file removed, exit 2.
fn fail(socket: &SocketFile, what: String) -> ! {
    eprintln!("ice-model-server: {what}");
    socket.remove();
    std::process::exit(2);
}

fn main() {
    // Before any thread starts, so all of them inherit the mask.
    let stop_set = block_stop_signals();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,ice_model_server=info"),
    )
    .init();
    let args = Args::parse();
    let mac: MacAddr = match args.mac.parse() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ice-model-server: --mac: {e}");
            std::process::exit(2);
        }
    };
    let (listener, socket) = match bind_socket(&args.socket) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ice-model-server: --socket {e}");
            std::process::exit(1);
        }
    };
    let socket = Arc::new(socket);
    let stop_socket = socket.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("stop-signals".into())
        .spawn(move || stop_on_signal(stop_set, stop_socket))
    {
        eprintln!("ice-model-server: starting the signal thread: {e}");
        std::process::exit(1);
    }
    let model = E810Model::new(ModelConfig {
        mac,
        num_queues: args.queues,
        ..Default::default()
    })
    .into_shared();
    let wire: Arc<dyn Wire> = match (&args.wire_local, &args.wire_peer, &args.wire_tap) {
        (Some(l), Some(p), _) => match DatagramCable::connect(model.clone(), l, p) {
            Ok(c) => c,
            Err(e) => fail(&socket, format!("--wire-local {}: {e}", l.display())),
        },
        (_, _, Some(ifname)) => {
            let tap = vdpdk_tap::TapPort::open(ifname, None)
                .unwrap_or_else(|e| fail(&socket, format!("--wire-tap {ifname}: {e}")));
            ice_model::cable::EthDevCable::connect(model.clone(), Box::new(tap))
                .unwrap_or_else(|e| fail(&socket, format!("--wire-tap {ifname}: {e}")))
        }
        _ => Arc::new(Unplugged),
    };
    eprintln!("ice-model-server: E810 model on {}", args.socket.display());
    if let Err(e) = serve_listener(model, listener, Some(wire)) {
        log::error!("{}: {e}", args.socket.display());
        socket.remove();
        std::process::exit(1);
    }
}
