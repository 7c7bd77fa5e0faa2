//! host-mux: serve one vDPDK device per VM over vfio-user, multiplexed onto one NIC backend.

fn main() {
    host_mux::cli::main()
}
