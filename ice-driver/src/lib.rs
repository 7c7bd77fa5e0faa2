//! # ice-driver
//!
//! An Intel E810 ("ice") PF driver over the [`vdpdk_pci::PciDevice`] layer. Its tests drive
//! it against the software E810 of the `ice-model` crate, which shares no code with it.
//!
//! [`IceDevice`] brings the PF up over the admin queue (reset, version and capabilities, switch
//! configuration, MAC, link), downloads the DDP package, builds the PF VSI and the scheduler
//! branch, and sets up LAN queues ([`IceRxQueue`], [`IceTxQueue`]) and Flow Director filters.
//! [`IcePort`] wraps it in the `vdpdk_core::EthDev` face host-mux and the tools use.
//!
//! Sources are cited in brackets: \[AQC\] DPDK `base/ice_adminq_cmd.h`, \[CMN\]
//! `base/ice_common.c`, \[HWA\] `base/ice_hw_autogen.h`, \[DDP\] `base/ice_ddp.c`, \[LTR\]
//! `ice_lan_tx_rx.h`, \[SCH\] `base/ice_sched.c`, \[SW\] `base/ice_switch.c`
//! (shared/reference/e810-facts.md).

#![warn(missing_docs)]

mod adminq;
mod ctx;
pub mod ddp;
mod dev;
mod port;
mod regs;
mod rxq;
mod stats;
mod txq;

use std::sync::Arc;

use vdpdk_pci::{MappedBar, PciDevice};

pub use dev::{IceDevice, IceInfo, LinkInfo};
pub use port::{DdpSource, IcePort};
pub use rxq::{IceRxQueue, RxFrameLimits};
pub use stats::{Counter32, HwCounters};
pub use txq::IceTxQueue;

/// Intel's PCI vendor id (DPDK `base/ice_devids.h` `ICE_INTEL_VENDOR_ID`).
pub const INTEL_VENDOR_ID: u16 = 0x8086;
/// Device ids the driver accepts: E810-C 0x1591/2/3 and E810-XXV 0x1599/A/B
/// (DPDK `base/ice_devids.h`).
pub const E810_DEVICE_IDS: [u16; 6] = [0x1591, 0x1592, 0x1593, 0x1599, 0x159A, 0x159B];

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IceError {
    /// Bring-up cannot go on (global reset in progress, blank NVM, recovery mode, DDP refused).
    #[error("initialisation failed: {0}")]
    Init(String),
    /// The device did not answer in time (admin command, PF reset, FD programming status).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The device was reset under the driver; probe it again.
    #[error("device reset: {0}")]
    Reset(String),
    /// The firmware answered something the formats do not allow.
    #[error("firmware misbehaved: {0}")]
    Firmware(String),
    /// An admin command completed with an error (`retval` is an \[AQC\] `ice_aq_err`).
    #[error("admin command {opcode:#06x} failed: {} (retval {retval})", adminq::aq_err_name(*retval))]
    Admin {
        /// The command's opcode.
        opcode: u16,
        /// The firmware's error code.
        retval: u16,
    },
    /// The caller asked for something out of range (queue, vector, ring size, filter).
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    /// The device or the driver cannot do this (safe mode, a profile conflict, other ids).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An error of the PCI or memory layer.
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
pub(crate) struct Regs {
    dev: Arc<dyn PciDevice>,
    mapped: Option<MappedBar>,
}

impl Regs {
    /// Maps BAR0 if the transport allows it.
    pub(crate) fn new(dev: Arc<dyn PciDevice>) -> Regs {
        let mapped = dev.map_bar(0).ok();
        Regs { dev, mapped }
    }

    /// Reads the 32-bit register at byte offset `off` of BAR0.
    pub(crate) fn read(&self, off: u64) -> Result<u32, IceError> {
        match &self.mapped {
            Some(b) if b.at(off as usize, 4).is_some() => Ok(b.read32(off as usize)),
            _ => Ok(self.dev.bar_read32(0, off)?),
        }
    }

    /// Writes the 32-bit register at byte offset `off` of BAR0.
    pub(crate) fn write(&self, off: u64, v: u32) -> Result<(), IceError> {
        match &self.mapped {
            Some(b) if b.at(off as usize, 4).is_some() => {
                b.write32(off as usize, v);
                Ok(())
            }
            _ => Ok(self.dev.bar_write32(0, off, v)?),
        }
    }

    /// The PCI device behind BAR0.
    pub(crate) fn device(&self) -> &Arc<dyn PciDevice> {
        &self.dev
    }
}
