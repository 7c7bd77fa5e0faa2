//! `vdpdk-demo`: host-mux with guests on an in-memory wire, live per-guest stats, and an
//! account of every frame (see tools/src/demo/).

use clap::Parser;
use vdpdk_tools::demo::{run, Args, TOOL};
use vdpdk_tools::{die, EXIT_FAILURE};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(EXIT_FAILURE),
        Err(e) => die(TOOL, EXIT_FAILURE, e),
    }
}
