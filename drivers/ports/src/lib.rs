//! Opens a port from a command-line spec, so every program (the tools, the examples, your NF)
//! runs unchanged on any backend: a vDPDK guest of host-mux, a vDPDK device inside a VM, a
//! Linux TAP interface, or an Intel E810 (behind vfio-user or bound to vfio-pci).
//!
//! ```no_run
//! let mut port = vdpdk_ports::open_port("vdpdk:/tmp/vdpdk/vm1.sock")?;
//! println!("{}", port.info().driver);
//! # Ok::<(), vdpdk_core::Error>(())
//! ```
//!
//! A new backend is a crate under `drivers/` whose port implements `EthDev` around a
//! `vdpdk_core::skeleton::PortSkeleton` (drivers/tap is the smallest one to copy), plus a kind
//! here: in [`PORT_KINDS`], [`open_port`] and the usage text of a bad spec.

#![warn(missing_docs)]

use std::path::Path;
use std::sync::Arc;

use vdpdk_core::{Error, EthDev, Result};

/// The port kinds [`open_port`] knows, as written before the `:` of a spec.
pub const PORT_KINDS: [&str; 5] = ["vdpdk", "vdpdk-vm", "tap", "ice", "ice-pci"];

/// Opens a port from a spec:
/// - `vdpdk:/path/vm.sock` — a vDPDK device served by host-mux (guest-pmd, process transport)
/// - `vdpdk-vm:0000:00:03.0` or `vdpdk-vm:auto` — a vDPDK device inside a VM, bound to vfio-pci
///   in no-IOMMU mode (guest-pmd, in-VM transport; DMA memory becomes guest-physical)
/// - `tap:IFNAME` — a Linux TAP interface (created if missing)
/// - `ice:/path/e810.sock` — an E810 behind a vfio-user socket (e.g. ice-model-server)
/// - `ice-pci:0000:3b:00.0` — an E810 bound to vfio-pci
///
/// A malformed spec is `Error::InvalidArg`; tools check the form first with [`port_spec`] (a
/// clap value parser), so a bad spec is refused as a bad argument (exit 2) before anything opens.
pub fn open_port(spec: &str) -> Result<Box<dyn EthDev>> {
    let (kind, arg) = split_spec(spec).ok_or_else(|| Error::InvalidArg(bad_spec(spec)))?;
    Ok(match kind {
        "vdpdk" => Box::new(guest_pmd::VdpdkPort::connect(Path::new(arg))?),
        "vdpdk-vm" => Box::new(guest_pmd::VdpdkPort::open_in_vm(
            (arg != "auto").then_some(arg),
        )?),
        "tap" => Box::new(vdpdk_tap::TapPort::open(arg, None)?),
        "ice" => Box::new(ice_driver::IcePort::open(Arc::new(
            vdpdk_pci::VfioUserPci::connect(Path::new(arg))?,
        ))?),
        "ice-pci" => Box::new(ice_driver::IcePort::open(Arc::new(
            vdpdk_pci::KernelVfioPci::open(arg)?,
        ))?),
        _ => unreachable!("split_spec accepts only PORT_KINDS"),
    })
}

/// Checks the form of a port spec (a known kind, `:`, a non-empty argument) without opening
/// anything. Use it as the clap value parser of every `--port`, so a malformed spec is a bad
/// argument (clap's message, exit 2) in every tool.
pub fn port_spec(spec: &str) -> std::result::Result<String, String> {
    split_spec(spec)
        .map(|_| spec.to_string())
        .ok_or_else(|| bad_spec(spec))
}

fn split_spec(spec: &str) -> Option<(&str, &str)> {
    let (kind, arg) = spec.split_once(':')?;
    (PORT_KINDS.contains(&kind) && !arg.is_empty()).then_some((kind, arg))
}

fn bad_spec(spec: &str) -> String {
    format!(
        "port '{spec}': expected vdpdk:SOCKET, vdpdk-vm:BDF (or vdpdk-vm:auto), tap:IFNAME, \
         ice:SOCKET or ice-pci:BDF"
    )
}
