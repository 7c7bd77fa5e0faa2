//! `vdpdk-guestctl`: drive a port from line commands on stdin (see tools/src/guestctl.rs).

use clap::Parser;

fn main() {
    let args = vdpdk_tools::guestctl::Args::parse();
    std::process::exit(vdpdk_tools::guestctl::run(&args));
}
