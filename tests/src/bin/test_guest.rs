//! The guest process of the integration tests: `vdpdk-guestctl` (tools/src/guestctl.rs) on a
//! host-mux socket.
//!
//! usage: vdpdk-test-guest SOCKET \[RXQ\] \[TXQ\] \[RING\]   (RING: RX/TX descriptors, default 2048)

use vdpdk_tools::guestctl::{run, Args};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 2 {
        eprintln!("usage: vdpdk-test-guest SOCKET [RXQ] [TXQ] [RING]");
        std::process::exit(2);
    }
    let num = |i: usize, default: u16| a.get(i).map_or(default, |s| s.parse().expect("a number"));
    std::process::exit(run(&Args {
        port: format!("vdpdk:{}", a[1]),
        rxq: num(2, 1),
        txq: num(3, 1),
        ring: num(4, 2048),
    }));
}
