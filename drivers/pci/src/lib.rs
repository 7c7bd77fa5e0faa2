//! PCI access for drivers: the [`PciDevice`] trait (config space, BARs, DMA map, MSI-X eventfds,
//! reset) and its backends. A driver written against the trait runs unchanged on a device behind
//! a vfio-user socket ([`VfioUserPci`]), behind kernel vfio ([`KernelVfioPci`]), or inside a VM
//! without a virtual IOMMU ([`NoIommuVfioPci`]).

#![warn(missing_docs)]

mod vfio_kernel;
mod vfio_noiommu;
mod vfio_user_client;

use std::os::fd::RawFd;
use std::ptr::NonNull;

use vdpdk_core::{DmaMemory, Result};

pub use vfio_kernel::KernelVfioPci;
pub use vfio_noiommu::{find_pci_devices, NoIommuVfioPci};
pub use vfio_user_client::VfioUserPci;

/// The vfio region index of BAR `bar` (0..=5).
pub fn bar_region_index(bar: u8) -> Result<u32> {
    if bar > 5 {
        return Err(vdpdk_core::Error::InvalidArg(format!(
            "BAR {bar} does not exist"
        )));
    }
    Ok(vfio_bindings::bindings::vfio::VFIO_PCI_BAR0_REGION_INDEX + bar as u32)
}

/// PCI command register and its memory-space and bus-master bits (PCI Local Bus spec 3.0,
/// 6.2.2).
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

/// Turns on memory decoding and bus mastering, as a driver does at probe. vfio leaves bus
/// mastering to its user, and without it a device may neither DMA nor signal MSI-X (QEMU drops
/// MSI writes from a function whose bus-master bit is clear).
pub fn enable_bus_master(dev: &dyn PciDevice) -> Result<()> {
    let mut cmd = [0u8; 2];
    dev.config_read(PCI_COMMAND, &mut cmd)?;
    let cmd = u16::from_le_bytes(cmd) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    dev.config_write(PCI_COMMAND, &cmd.to_le_bytes())
}

/// Region tables for vfio-user PCI device servers (host-mux's vDPDK device, the E810 model).
pub mod server {
    use vfio_bindings::bindings::vfio::*;
    use vfio_user::ServerRegion;

    /// A region description with no capabilities and no fd.
    pub fn region(index: u32, size: u64, flags: u32) -> ServerRegion {
        ServerRegion {
            region_info: vfio_region_info {
                argsz: std::mem::size_of::<vfio_region_info>() as u32,
                flags,
                index,
                cap_offset: 0,
                size,
                offset: 0,
            },
            sparse_areas: Vec::new(),
            mmap_fd: None,
        }
    }

    /// Every PCI region index, all absent (size 0), ready to fill in.
    pub fn empty_regions() -> Vec<ServerRegion> {
        (0..VFIO_PCI_NUM_REGIONS).map(|i| region(i, 0, 0)).collect()
    }

    /// Region flags of a plain read/write BAR.
    pub const RW: u32 = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
}

/// Access to one PCI function. Methods take `&self` (implementations lock internally) so queues
/// on several threads can share the device for their rare slow-path accesses (kicks).
pub trait PciDevice: Send + Sync {
    /// Reads `buf.len()` bytes of configuration space at `off`.
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `data` into configuration space at `off`.
    fn config_write(&self, off: u64, data: &[u8]) -> Result<()>;
    /// A 32-bit access to a BAR that is not (or cannot be) mapped: a trapped register.
    fn bar_read32(&self, bar: u8, off: u64) -> Result<u32>;
    /// A 32-bit write to a trapped register (see `bar_read32`).
    fn bar_write32(&self, bar: u8, off: u64, val: u32) -> Result<()>;
    /// Maps a BAR into this process. Fails for BARs the device only traps.
    fn map_bar(&self, bar: u8) -> Result<MappedBar>;
    /// Makes `mem` reachable by the device at its IOVAs (`mem.iova_base()` onwards).
    fn dma_map(&self, mem: &DmaMemory) -> Result<()>;
    /// Takes back a range mapped by `dma_map` (the whole mapping: `len` bytes from `iova`).
    fn dma_unmap(&self, iova: u64, len: u64) -> Result<()>;
    /// Makes memory this process did not allocate (a guest's, from `r.fd`) reachable by the
    /// device at `iova`; `dma_unmap` takes it back. Unsupported where the device needs
    /// physical addresses (no IOMMU).
    fn dma_map_external(&self, r: &vdpdk_core::ExternalRegion<'_>, iova: u64) -> Result<()> {
        let _ = (r, iova);
        Err(vdpdk_core::Error::Unsupported(
            "DMA maps of memory this process did not allocate".into(),
        ))
    }
    /// Routes MSI-X vectors `0..fds.len()` to these eventfds (empty slice: disable).
    fn set_msix_eventfds(&self, fds: &[RawFd]) -> Result<()>;
    /// Function-level reset of the device.
    fn reset(&self) -> Result<()>;

    /// Vendor and device id from config space.
    fn ids(&self) -> Result<(u16, u16)> {
        let mut b = [0u8; 4];
        self.config_read(0, &mut b)?;
        Ok((
            u16::from_le_bytes([b[0], b[1]]),
            u16::from_le_bytes([b[2], b[3]]),
        ))
    }
}

/// A BAR mapped into this process. The memory is shared with the device, so it is only
/// accessed through raw pointers (volatile or atomic), never through references.
pub struct MappedBar {
    ptr: NonNull<u8>,
    len: usize,
    unmap: bool,
}

// SAFETY: a MappedBar is an address range; all accesses are volatile/atomic.
unsafe impl Send for MappedBar {}
// SAFETY: see Send.
unsafe impl Sync for MappedBar {}

impl MappedBar {
    /// # Safety
    /// `ptr` must be the start of a `len`-byte mapping that stays valid until this value drops;
    /// with `unmap` it must come from `mmap` and is unmapped on drop.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize, unmap: bool) -> MappedBar {
        MappedBar { ptr, len, unmap }
    }
    /// Start of the mapping; access it only through raw volatile or atomic operations.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the mapping is zero bytes long.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Pointer to `off`, checked to leave `size` bytes in the BAR.
    pub fn at(&self, off: usize, size: usize) -> Option<*mut u8> {
        (off.checked_add(size)? <= self.len).then(|| {
            // SAFETY: off + size <= len, so the pointer stays inside the mapping.
            unsafe { self.ptr.as_ptr().add(off) }
        })
    }
    /// Volatile 32-bit read at byte offset `off`. Panics if `off + 4` is past the end.
    pub fn read32(&self, off: usize) -> u32 {
        let p = self.at(off, 4).expect("BAR offset out of range");
        // SAFETY: in bounds (checked above); volatile because the device may change it.
        unsafe { p.cast::<u32>().read_volatile() }
    }
    /// Volatile 32-bit write at byte offset `off`. Panics if `off + 4` is past the end.
    pub fn write32(&self, off: usize, v: u32) {
        let p = self.at(off, 4).expect("BAR offset out of range");
        // SAFETY: in bounds (checked above).
        unsafe { p.cast::<u32>().write_volatile(v) }
    }
}

impl MappedBar {
    /// Maps `len` bytes of a vfio device fd at `offset` (a region vfio reported as mappable).
    pub fn map_device_region(fd: RawFd, offset: u64, len: usize) -> std::io::Result<MappedBar> {
        // SAFETY: a fresh shared mapping of the caller's device fd; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| std::io::Error::other("mmap null"))?;
        // SAFETY: ptr/len is the mapping just created; MappedBar unmaps it on drop.
        Ok(unsafe { MappedBar::new(ptr, len, true) })
    }
}

impl Drop for MappedBar {
    fn drop(&mut self) {
        if self.unmap {
            // SAFETY: constructor contract: ptr/len are our own mmap.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}
