//! Serves a software E810 on a vfio-user socket, so the ice driver (or anything speaking
//! vfio-user) can drive it from another process exactly as it would drive a real card.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ice_driver::model::{E810Model, ModelConfig};
use parking_lot::Mutex;
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
    eprintln!("ice-model-server: E810 model on {}", args.socket.display());
    if let Err(e) = ice_driver::model::server::serve(Arc::new(Mutex::new(model)), &args.socket) {
        eprintln!("ice-model-server: {e}");
        std::process::exit(1);
    }
}
