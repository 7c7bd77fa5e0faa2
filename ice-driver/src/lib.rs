//! # ice-driver
//!
//! An Intel E810 ("ice") PF driver over the [`vdpdk_pci::PciDevice`] layer. Its tests drive
//! it against the software E810 of the `ice-model` crate, which shares no code with it.
//!
//! Status: bring-up through the admin queue (PF reset, queue setup, version and capability
//! discovery, switch configuration, MAC read, MAC config, link events and link up). LAN queues,
//! Flow Director, offloads and the ethdev traits follow (see issue #3's progress notes).

pub mod adminq;
pub mod ctx;
pub mod ddp;
pub mod dev;
pub mod fdir;
pub mod fdprof;
pub mod port;
pub mod regs;
pub mod rxq;
pub mod stats;
pub mod txq;

use std::sync::Arc;

use vdpdk_pci::{MappedBar, PciDevice};

pub use dev::{IceDevice, IceInfo};
pub use port::{DdpSource, IcePort};

/// Intel's PCI vendor id (DPDK `base/ice_devids.h` `ICE_INTEL_VENDOR_ID`).
pub const INTEL_VENDOR_ID: u16 = 0x8086;
/// Device ids the driver accepts: E810-C 0x1591/2/3 and E810-XXV 0x1599/A/B
/// (DPDK `base/ice_devids.h`).
pub const E810_DEVICE_IDS: [u16; 6] = [0x1591, 0x1592, 0x1593, 0x1599, 0x159A, 0x159B];

#[derive(Debug, thiserror::Error)]
pub enum IceError {
    #[error("initialisation failed: {0}")]
    Init(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("device reset: {0}")]
    Reset(String),
    #[error("firmware misbehaved: {0}")]
    Firmware(String),
    #[error("admin command {opcode:#06x} failed: {} (retval {retval})", adminq::aq_err_name(*retval))]
    Admin { opcode: u16, retval: u16 },
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Core(#[from] vdpdk_core::Error),
}

impl From<IceError> for vdpdk_core::Error {
    fn from(e: IceError) -> Self {
        match e {
            IceError::Core(c) => c,
            IceError::InvalidArg(m) => vdpdk_core::Error::InvalidArg(m),
            IceError::Unsupported(m) => vdpdk_core::Error::Unsupported(m),
            other => vdpdk_core::Error::Device(other.to_string()),
        }
    }
}

/// BAR0 register access: through a mapping when the transport allows one (kernel vfio), as
/// trapped accesses otherwise (vfio-user, the in-process model).
pub struct Regs {
    dev: Arc<dyn PciDevice>,
    mapped: Option<MappedBar>,
}

impl Regs {
    pub fn new(dev: Arc<dyn PciDevice>) -> Regs {
        let mapped = dev.map_bar(0).ok();
        Regs { dev, mapped }
    }

    pub fn read(&self, off: u64) -> Result<u32, IceError> {
        match &self.mapped {
            Some(b) if b.at(off as usize, 4).is_some() => Ok(b.read32(off as usize)),
            _ => Ok(self.dev.bar_read32(0, off)?),
        }
    }

    pub fn write(&self, off: u64, v: u32) -> Result<(), IceError> {
        match &self.mapped {
            Some(b) if b.at(off as usize, 4).is_some() => {
                b.write32(off as usize, v);
                Ok(())
            }
            _ => Ok(self.dev.bar_write32(0, off, v)?),
        }
    }

    pub fn device(&self) -> &Arc<dyn PciDevice> {
        &self.dev
    }
}
