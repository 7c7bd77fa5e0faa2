//! [`PciDevice`] over the kernel's vfio-pci driver (rust-vmm `vfio-ioctls`): the path a real
//! E810 takes once it is bound to vfio-pci (docs/E810.md). DMA memory is mapped into the
//! device's IOMMU domain at its IOVA (our process's virtual address by default).

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use vdpdk_core::{DmaMemory, Error, Result};
use vfio_bindings::bindings::vfio::*;
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
use vmm_sys_util::eventfd::EventFd;

use crate::{MappedBar, PciDevice};

/// A PCI function bound to the kernel's vfio-pci driver, in a type1 IOMMU container (a real
/// NIC on the host, or a device behind a VM's virtual IOMMU).
pub struct KernelVfioPci {
    bdf: String,
    container: Arc<VfioContainer>,
    device: VfioDevice,
}

fn hint(bdf: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!(
        "{bdf}: {what}: {e} (is the device bound to vfio-pci and its IOMMU group viable? \
         see docs/E810.md)"
    ))
}

impl KernelVfioPci {
    /// Opens the PCI function `bdf` (e.g. "0000:3b:00.0") through /dev/vfio.
    pub fn open(bdf: &str) -> Result<KernelVfioPci> {
        let path = PathBuf::from("/sys/bus/pci/devices").join(bdf);
        if !path.exists() {
            return Err(Error::InvalidArg(format!(
                "no PCI device {bdf} (looked at {})",
                path.display()
            )));
        }
        let container =
            Arc::new(VfioContainer::new(None).map_err(|e| hint(bdf, "opening /dev/vfio/vfio", e))?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device =
            VfioDevice::new(&path, ops, false).map_err(|e| hint(bdf, "opening the device", e))?;
        let dev = KernelVfioPci {
            bdf: bdf.to_string(),
            container,
            device,
        };
        crate::enable_bus_master(&dev)?;
        Ok(dev)
    }
}

impl PciDevice for KernelVfioPci {
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.device
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, buf, off);
        Ok(())
    }
    fn config_write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.device
            .region_write(VFIO_PCI_CONFIG_REGION_INDEX, data, off);
        Ok(())
    }
    fn bar_read32(&self, bar: u8, off: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.device
            .region_read(crate::bar_region_index(bar)?, &mut b, off);
        Ok(u32::from_le_bytes(b))
    }
    fn bar_write32(&self, bar: u8, off: u64, val: u32) -> Result<()> {
        self.device
            .region_write(crate::bar_region_index(bar)?, &val.to_le_bytes(), off);
        Ok(())
    }
    fn map_bar(&self, bar: u8) -> Result<MappedBar> {
        let idx = crate::bar_region_index(bar)?;
        if self.device.get_region_flags(idx) & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(Error::Unsupported(format!(
                "{}: BAR {bar} is not mappable",
                self.bdf
            )));
        }
        MappedBar::map_device_region(
            self.device.as_raw_fd(),
            self.device.get_region_offset(idx),
            self.device.get_region_size(idx) as usize,
        )
        .map_err(|e| hint(&self.bdf, "mmap of a BAR", e))
    }
    fn dma_map(&self, mem: &DmaMemory) -> Result<()> {
        // SAFETY: the memory is a live mapping owned by `mem`; the driver accesses it only
        // through raw pointers (volatile/atomic) and unmaps it from the device before freeing.
        unsafe {
            self.container
                .vfio_dma_map(mem.iova_base(), mem.len(), mem.as_ptr())
        }
        .map_err(|e| hint(&self.bdf, "IOMMU DMA map", e))
    }
    fn dma_map_external(&self, r: &vdpdk_core::ExternalRegion<'_>, iova: u64) -> Result<()> {
        // SAFETY: `r.host` is a live mapping of `r.len` bytes its owner keeps until it unmaps
        // the range here first (ExternalDma's contract); the IOMMU pins its pages meanwhile.
        unsafe {
            self.container
                .vfio_dma_map(iova, r.len as usize, r.host.as_ptr())
        }
        .map_err(|e| hint(&self.bdf, "IOMMU DMA map", e))
    }
    fn dma_unmap(&self, iova: u64, len: u64) -> Result<()> {
        self.container
            .vfio_dma_unmap(iova, len as usize)
            .map_err(|e| hint(&self.bdf, "IOMMU DMA unmap", e))
    }
    fn set_msix_eventfds(&self, fds: &[RawFd]) -> Result<()> {
        if fds.is_empty() {
            return self
                .device
                .disable_msix()
                .map_err(|e| hint(&self.bdf, "disabling MSI-X", e));
        }
        // Borrow the caller's eventfds without taking ownership.
        let evs: Vec<std::mem::ManuallyDrop<EventFd>> = fds
            .iter()
            // SAFETY: each fd is an open eventfd owned by the caller; ManuallyDrop keeps us
            // from closing it.
            .map(|&fd| std::mem::ManuallyDrop::new(unsafe { EventFd::from_raw_fd(fd) }))
            .collect();
        let refs: Vec<&EventFd> = evs.iter().map(|e| &**e).collect();
        self.device
            .enable_msix(refs)
            .map_err(|e| hint(&self.bdf, "enabling MSI-X", e))
    }
    fn reset(&self) -> Result<()> {
        self.device.reset();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_a_clear_error() {
        let e = KernelVfioPci::open("0000:ff:1f.7")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("0000:ff:1f.7"), "{e}");
    }
}
