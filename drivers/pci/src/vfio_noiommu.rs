//! [`PciDevice`] for a driver inside a VM that has no virtual IOMMU: the kernel's vfio-pci in
//! no-IOMMU mode (`vfio.enable_unsafe_noiommu_mode=1`). BARs are mapped (or trapped) through the
//! vfio device fd and MSI-X vectors are routed to eventfds exactly as with an IOMMU, but the
//! device sees guest-physical addresses, so opening one switches the process to physical DMA
//! addressing ([`vdpdk_core::dma::use_physical_addresses`]).
//!
//! rust-vmm's vfio-ioctls only accepts type1 IOMMU containers, so the handful of container,
//! group and device ioctls are issued here directly. Numbers and structures are from Linux
//! `include/uapi/linux/vfio.h` (VFIO_TYPE ';', VFIO_BASE 100), via the vfio-bindings crate.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vdpdk_core::{DmaMemory, Error, Result};
use vfio_bindings::bindings::vfio::*;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ptr, ioctl_with_val};
use vmm_sys_util::ioctl_io_nr;

use crate::{MappedBar, PciDevice};

const VFIO_TYPE: u32 = b';' as u32;
const VFIO_BASE: u32 = 100;
ioctl_io_nr!(VFIO_GET_API_VERSION, VFIO_TYPE, VFIO_BASE);
ioctl_io_nr!(VFIO_CHECK_EXTENSION, VFIO_TYPE, VFIO_BASE + 1);
ioctl_io_nr!(VFIO_SET_IOMMU, VFIO_TYPE, VFIO_BASE + 2);
ioctl_io_nr!(VFIO_GROUP_GET_STATUS, VFIO_TYPE, VFIO_BASE + 3);
ioctl_io_nr!(VFIO_GROUP_SET_CONTAINER, VFIO_TYPE, VFIO_BASE + 4);
ioctl_io_nr!(VFIO_GROUP_GET_DEVICE_FD, VFIO_TYPE, VFIO_BASE + 6);
ioctl_io_nr!(VFIO_DEVICE_GET_REGION_INFO, VFIO_TYPE, VFIO_BASE + 8);
ioctl_io_nr!(VFIO_DEVICE_SET_IRQS, VFIO_TYPE, VFIO_BASE + 10);
ioctl_io_nr!(VFIO_DEVICE_RESET, VFIO_TYPE, VFIO_BASE + 11);

#[derive(Clone, Copy, Default)]
struct Region {
    offset: u64,
    size: u64,
    flags: u32,
}

/// A PCI function bound to vfio-pci in no-IOMMU mode.
pub struct NoIommuVfioPci {
    bdf: String,
    /// Held open: the container and group must outlive the device fd's use.
    _container: File,
    _group: File,
    device: File,
    regions: Vec<Region>,
}

fn err(bdf: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!(
        "{bdf}: {what}: {e} (is vfio loaded with enable_unsafe_noiommu_mode=1 and the device \
         bound to vfio-pci? see docs/VM.md)"
    ))
}

fn os_err(bdf: &str, what: &str) -> Error {
    err(bdf, what, std::io::Error::last_os_error())
}

/// The PCI functions in this system with the given ids, as bus addresses ("0000:00:03.0"),
/// sorted. Reads sysfs only.
pub fn find_pci_devices(vendor: u16, device: u16) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/bus/pci/devices")? {
        let e = e?;
        let id = |f: &str| {
            std::fs::read_to_string(e.path().join(f))
                .ok()
                .and_then(|s| u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        };
        if id("vendor") == Some(vendor) && id("device") == Some(device) {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found.sort();
    Ok(found)
}

impl NoIommuVfioPci {
    /// Opens the PCI function `bdf` (e.g. "0000:00:03.0"), which must be bound to vfio-pci.
    pub fn open(bdf: &str) -> Result<NoIommuVfioPci> {
        let sys = PathBuf::from("/sys/bus/pci/devices").join(bdf);
        if !sys.exists() {
            return Err(Error::InvalidArg(format!(
                "no PCI device {bdf} (looked at {})",
                sys.display()
            )));
        }
        let group_path = group_node(&sys).map_err(|e| err(bdf, "finding its vfio group", e))?;
        let rw = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
        let container =
            rw(Path::new("/dev/vfio/vfio")).map_err(|e| err(bdf, "opening /dev/vfio/vfio", e))?;
        // SAFETY: argument-less ioctl on our container fd.
        if unsafe { vmm_sys_util::ioctl::ioctl(&container, VFIO_GET_API_VERSION()) }
            != VFIO_API_VERSION as i32
        {
            return Err(err(bdf, "vfio API version", "unexpected"));
        }
        // SAFETY: ioctl with a plain integer argument on our container fd.
        let has = unsafe {
            ioctl_with_val(
                &container,
                VFIO_CHECK_EXTENSION(),
                VFIO_NOIOMMU_IOMMU.into(),
            )
        };
        if has != 1 {
            return Err(err(bdf, "vfio no-IOMMU mode", "not enabled"));
        }
        let group = rw(&group_path)
            .map_err(|e| err(bdf, &format!("opening {}", group_path.display()), e))?;
        let mut status = vfio_group_status {
            argsz: std::mem::size_of::<vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: the kernel writes a vfio_group_status, which `status` is.
        if unsafe { ioctl_with_mut_ref(&group, VFIO_GROUP_GET_STATUS(), &mut status) } < 0 {
            return Err(os_err(bdf, "group status"));
        }
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(err(bdf, "its vfio group", "is not viable"));
        }
        let cfd: RawFd = container.as_raw_fd();
        // SAFETY: the kernel reads one int (the container fd) through the pointer.
        if unsafe { ioctl_with_ptr(&group, VFIO_GROUP_SET_CONTAINER(), &cfd) } < 0 {
            return Err(os_err(bdf, "attaching the group to the container"));
        }
        // SAFETY: ioctl with a plain integer argument on our container fd.
        if unsafe { ioctl_with_val(&container, VFIO_SET_IOMMU(), VFIO_NOIOMMU_IOMMU.into()) } < 0 {
            return Err(os_err(bdf, "selecting the no-IOMMU backend"));
        }
        let name = CString::new(bdf).map_err(|_| Error::InvalidArg("bdf contains NUL".into()))?;
        // SAFETY: the kernel reads a NUL-terminated string; returns a new fd or -1.
        let fd = unsafe { ioctl_with_ptr(&group, VFIO_GROUP_GET_DEVICE_FD(), name.as_ptr()) };
        if fd < 0 {
            return Err(os_err(bdf, "getting the device fd"));
        }
        // SAFETY: fd is a fresh file descriptor the kernel gave us.
        let device = unsafe { File::from_raw_fd(fd) };
        let mut regions = Vec::new();
        for index in 0..VFIO_PCI_NUM_REGIONS {
            let mut info = vfio_region_info {
                argsz: std::mem::size_of::<vfio_region_info>() as u32,
                index,
                ..Default::default()
            };
            // SAFETY: the kernel fills a vfio_region_info (argsz bounds what it writes).
            let r =
                unsafe { ioctl_with_mut_ref(&device, VFIO_DEVICE_GET_REGION_INFO(), &mut info) };
            regions.push(if r < 0 {
                Region::default() // absent (e.g. the VGA region)
            } else {
                Region {
                    offset: info.offset,
                    size: info.size,
                    flags: info.flags,
                }
            });
        }
        vdpdk_core::dma::use_physical_addresses();
        let dev = NoIommuVfioPci {
            bdf: bdf.to_string(),
            _container: container,
            _group: group,
            device,
            regions,
        };
        crate::enable_bus_master(&dev)?;
        Ok(dev)
    }

    fn region(&self, index: u32, off: u64, len: usize) -> Result<&Region> {
        let r = self
            .regions
            .get(index as usize)
            .filter(|r| r.size > 0)
            .ok_or_else(|| Error::InvalidArg(format!("{}: region {index} absent", self.bdf)))?;
        if off.checked_add(len as u64).is_none_or(|end| end > r.size) {
            return Err(Error::InvalidArg(format!(
                "{}: access at {off:#x}+{len} outside region {index} ({} bytes)",
                self.bdf, r.size
            )));
        }
        Ok(r)
    }

    fn read(&self, index: u32, off: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.region(index, off, buf.len())?;
        self.device
            .read_exact_at(buf, r.offset + off)
            .map_err(|e| err(&self.bdf, "region read", e))
    }

    fn write(&self, index: u32, off: u64, data: &[u8]) -> Result<()> {
        let r = self.region(index, off, data.len())?;
        self.device
            .write_all_at(data, r.offset + off)
            .map_err(|e| err(&self.bdf, "region write", e))
    }
}

/// /dev/vfio/noiommu-N for the device's IOMMU group N.
fn group_node(sys: &Path) -> std::io::Result<PathBuf> {
    let link = std::fs::read_link(sys.join("iommu_group"))?;
    let n = link
        .file_name()
        .ok_or_else(|| std::io::Error::other("iommu_group link has no name"))?;
    let node = PathBuf::from("/dev/vfio").join(format!("noiommu-{}", n.to_string_lossy()));
    if node.exists() {
        Ok(node)
    } else {
        Err(std::io::Error::other(format!(
            "{} does not exist",
            node.display()
        )))
    }
}

impl PciDevice for NoIommuVfioPci {
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.read(VFIO_PCI_CONFIG_REGION_INDEX, off, buf)
    }
    fn config_write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.write(VFIO_PCI_CONFIG_REGION_INDEX, off, data)
    }
    fn bar_read32(&self, bar: u8, off: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(crate::bar_region_index(bar)?, off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn bar_write32(&self, bar: u8, off: u64, val: u32) -> Result<()> {
        self.write(crate::bar_region_index(bar)?, off, &val.to_le_bytes())
    }
    fn map_bar(&self, bar: u8) -> Result<MappedBar> {
        let idx = crate::bar_region_index(bar)?;
        let r = *self.region(idx, 0, 0)?;
        if r.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(Error::Unsupported(format!(
                "{}: BAR {bar} is not mappable",
                self.bdf
            )));
        }
        MappedBar::map_device_region(self.device.as_raw_fd(), r.offset, r.size as usize)
            .map_err(|e| err(&self.bdf, "mmap of a BAR", e))
    }
    /// Nothing to map without an IOMMU; the memory must carry physical addresses.
    fn dma_map(&self, mem: &DmaMemory) -> Result<()> {
        if !mem.is_physical() {
            return Err(Error::InvalidArg(format!(
                "{}: DMA memory allocated before the device was opened has virtual addresses; \
                 open the device first (it switches DMA memory to physical addresses)",
                self.bdf
            )));
        }
        Ok(())
    }
    fn dma_unmap(&self, _iova: u64, _len: u64) -> Result<()> {
        Ok(())
    }
    fn set_msix_eventfds(&self, fds: &[RawFd]) -> Result<()> {
        // struct vfio_irq_set { argsz, flags, index, start, count; u8 data[] }: five u32s,
        // then one s32 eventfd per vector.
        let data = if fds.is_empty() {
            VFIO_IRQ_SET_DATA_NONE
        } else {
            VFIO_IRQ_SET_DATA_EVENTFD
        };
        let mut set: Vec<u32> = vec![
            (5 + fds.len() as u32) * 4,
            data | VFIO_IRQ_SET_ACTION_TRIGGER,
            VFIO_PCI_MSIX_IRQ_INDEX,
            0,
            fds.len() as u32,
        ];
        set.extend(fds.iter().map(|&fd| fd as u32));
        // SAFETY: `set` is a complete vfio_irq_set of argsz bytes; the kernel only reads it.
        if unsafe { ioctl_with_ptr(&self.device, VFIO_DEVICE_SET_IRQS(), set.as_ptr()) } < 0 {
            return Err(os_err(&self.bdf, "routing MSI-X vectors"));
        }
        Ok(())
    }
    fn reset(&self) -> Result<()> {
        // SAFETY: argument-less ioctl on our device fd.
        if unsafe { vmm_sys_util::ioctl::ioctl(&self.device, VFIO_DEVICE_RESET()) } < 0 {
            return Err(os_err(&self.bdf, "device reset"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_a_clear_error() {
        let e = NoIommuVfioPci::open("0000:ff:1f.7")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("0000:ff:1f.7"), "{e}");
    }

    #[test]
    fn find_lists_nothing_for_absent_ids() {
        // 0xffff is never a valid vendor id.
        assert!(find_pci_devices(0xffff, 0xffff).unwrap().is_empty());
    }
}
