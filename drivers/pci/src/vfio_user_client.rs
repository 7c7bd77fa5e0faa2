//! [`PciDevice`] over a vfio-user socket (rust-vmm `vfio_user::Client`): the device server runs
//! in another process (host-mux, or the E810 model) exactly like hardware behind a socket.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::ptr::NonNull;

use parking_lot::Mutex;
use vdpdk_core::{DmaMemory, Error, Result};
use vfio_bindings::bindings::vfio::*;
use vfio_user::Client;

use crate::{MappedBar, PciDevice};

/// A PCI device served by a vfio-user server over a Unix socket (host-mux, the E810 model);
/// DMA memory is shared with the server as memfds.
pub struct VfioUserPci {
    client: Mutex<Client>,
}

fn dev_err(what: &str, e: vfio_user::Error) -> Error {
    Error::Device(format!("vfio-user {what}: {e}"))
}

impl VfioUserPci {
    /// Connects to a vfio-user server and reads its region list.
    pub fn connect(path: &Path) -> Result<VfioUserPci> {
        let client = Client::new(path)
            .map_err(|e| Error::Device(format!("connecting to {}: {e}", path.display())))?;
        Ok(VfioUserPci {
            client: Mutex::new(client),
        })
    }
}

impl PciDevice for VfioUserPci {
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.client
            .lock()
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, off, buf)
            .map_err(|e| dev_err("config read", e))
    }

    fn config_write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.client
            .lock()
            .region_write(VFIO_PCI_CONFIG_REGION_INDEX, off, data)
            .map_err(|e| dev_err("config write", e))
    }

    fn bar_read32(&self, bar: u8, off: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.client
            .lock()
            .region_read(crate::bar_region_index(bar)?, off, &mut b)
            .map_err(|e| dev_err("BAR read", e))?;
        Ok(u32::from_le_bytes(b))
    }

    fn bar_write32(&self, bar: u8, off: u64, val: u32) -> Result<()> {
        self.client
            .lock()
            .region_write(crate::bar_region_index(bar)?, off, &val.to_le_bytes())
            .map_err(|e| dev_err("BAR write", e))
    }

    fn map_bar(&self, bar: u8) -> Result<MappedBar> {
        let client = self.client.lock();
        let idx = crate::bar_region_index(bar)?;
        let region = client
            .region(idx)
            .ok_or_else(|| Error::Device(format!("device has no BAR {bar}")))?;
        if region.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(Error::Unsupported(format!("BAR {bar} is not mappable")));
        }
        let fo = region
            .file_offset
            .as_ref()
            .ok_or_else(|| Error::Device(format!("server sent no fd for mappable BAR {bar}")))?;
        let len = region.size as usize;
        // SAFETY: mapping the region fd the server handed us, with the size it declared;
        // the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fo.file().as_raw_fd(),
                fo.start() as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| Error::Device("mmap null".into()))?;
        // SAFETY: ptr/len is the mapping we just created; MappedBar unmaps it on drop.
        Ok(unsafe { MappedBar::new(ptr, len, true) })
    }

    fn dma_map(&self, mem: &DmaMemory) -> Result<()> {
        self.client
            .lock()
            .dma_map(0, mem.iova_base(), mem.len() as u64, mem.fd().as_raw_fd())
            .map_err(|e| dev_err("DMA map", e))
    }

    fn dma_map_external(&self, r: &vdpdk_core::ExternalRegion<'_>, iova: u64) -> Result<()> {
        self.client
            .lock()
            .dma_map(r.offset, iova, r.len, r.fd.as_raw_fd())
            .map_err(|e| dev_err("DMA map", e))
    }

    fn dma_unmap(&self, iova: u64, len: u64) -> Result<()> {
        self.client
            .lock()
            .dma_unmap(iova, len)
            .map_err(|e| dev_err("DMA unmap", e))
    }

    fn set_msix_eventfds(&self, fds: &[RawFd]) -> Result<()> {
        let flags = if fds.is_empty() {
            VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER
        } else {
            VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER
        };
        self.client
            .lock()
            .set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, flags, 0, fds.len() as u32, fds)
            .map_err(|e| dev_err("SET_IRQS", e))
    }

    fn reset(&self) -> Result<()> {
        self.client.lock().reset().map_err(|e| dev_err("reset", e))
    }
}

impl Drop for VfioUserPci {
    fn drop(&mut self) {
        let _ = self.client.lock().shutdown();
    }
}
