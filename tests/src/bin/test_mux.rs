//! host-mux's own command line under a name the integration tests of this package can find
//! (cargo only exposes binaries of the test's own package).
fn main() {
    host_mux::cli::main()
}
