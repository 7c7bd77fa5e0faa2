//! How the model reaches "host memory": the driver's DMA maps, mapped into this process from
//! the fds they arrive with (in-process and over vfio-user alike).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

struct Region {
    iova: u64,
    len: u64,
    ptr: NonNull<u8>,
}

// SAFETY: a Region owns its mapping; accesses go through raw pointers.
unsafe impl Send for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping of exactly len bytes.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len as usize) };
    }
}

/// The device's view of host memory by IOVA.
#[derive(Default)]
pub struct DmaSpace {
    regions: Vec<Region>,
}

impl DmaSpace {
    /// Maps `len` bytes of `fd` at `offset` to be reached at `iova`.
    pub fn map(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u64,
        iova: u64,
        len: u64,
    ) -> std::io::Result<()> {
        if len == 0 || iova.checked_add(len).is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "bad DMA range",
            ));
        }
        // SAFETY: mapping a received fd; the kernel checks offset/len; result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // A new map replaces whatever overlapped it (a driver that died without unmapping
        // leaves stale maps behind; the IOVAs it used may be handed out again).
        self.regions
            .retain(|r| !(iova < r.iova + r.len && r.iova < iova + len));
        self.regions.push(Region {
            iova,
            len,
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
        });
        Ok(())
    }

    /// Drops every mapping wholly inside `[iova, iova + len)`.
    pub fn unmap(&mut self, iova: u64, len: u64) {
        self.regions
            .retain(|r| !(r.iova >= iova && r.iova + r.len <= iova.saturating_add(len)));
    }

    /// Drops every mapping.
    pub fn clear(&mut self) {
        self.regions.clear();
    }

    fn find(&self, iova: u64, len: usize) -> Option<*mut u8> {
        let end = iova.checked_add(len as u64)?;
        self.regions.iter().find_map(|r| {
            (iova >= r.iova && end <= r.iova + r.len).then(|| {
                // SAFETY: inside the mapping (checked).
                unsafe { r.ptr.as_ptr().add((iova - r.iova) as usize) }
            })
        })
    }

    /// Reads device-visible memory; false when the range is not mapped (a DMA fault).
    pub fn read(&self, iova: u64, out: &mut [u8]) -> bool {
        match self.find(iova, out.len()) {
            // SAFETY: range checked by find; the driver may race us, we only copy bytes.
            Some(p) => unsafe {
                std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len());
                true
            },
            None => false,
        }
    }

    /// Writes device-visible memory; false when the range is not mapped (a DMA fault).
    pub fn write(&self, iova: u64, data: &[u8]) -> bool {
        match self.find(iova, data.len()) {
            // SAFETY: range checked by find.
            Some(p) => unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
                true
            },
            None => false,
        }
    }
}
