//! Serves a software E810 on a vfio-user socket, so the ice driver (or anything speaking
//! vfio-user) can drive it from another process exactly as it would drive a real card.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ice_driver::model::{E810Model, ModelConfig};
use vdpdk_core::MacAddr;

/// Serve a software Intel E810 over vfio-user.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// vfio-user socket to listen on (must not exist).
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

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let mac: MacAddr = match args.mac.parse() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ice-model-server: --mac: {e}");
            std::process::exit(2);
        }
    };
    let model = E810Model::new(ModelConfig {
        mac,
        num_queues: args.queues,
        ..Default::default()
    });
    let model = model.into_shared();
    let wire: Option<Arc<dyn ice_driver::model::pci::Wire>> =
        match (&args.wire_local, &args.wire_peer) {
            (Some(l), Some(p)) => {
                match ice_driver::model::server::DatagramCable::connect(model.clone(), l, p) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        eprintln!("ice-model-server: --wire-local {}: {e}", l.display());
                        std::process::exit(2);
                    }
                }
            }
            _ => None,
        };
    eprintln!("ice-model-server: E810 model on {}", args.socket.display());
    if let Err(e) = ice_driver::model::server::serve_with_wire(model, &args.socket, wire) {
        eprintln!("ice-model-server: {e}");
        std::process::exit(1);
    }
}
