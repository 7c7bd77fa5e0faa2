//! How the model reaches "host memory": the driver's DMA maps, mapped into this process from
//! the fds they arrive with (in-process and over vfio-user alike).

use std::collections::BTreeMap;
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

/// The device's view of host memory by IOVA: regions by start address. A buffer may span
/// regions that are contiguous in IOVA, as a guest's IOMMU maps pages one at a time and a
/// driver's buffer crosses a page boundary where it likes (the card sees one IOVA space).
#[derive(Default)]
pub struct DmaSpace {
    regions: BTreeMap<u64, Region>,
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
        let Some(end) = iova.checked_add(len).filter(|_| len > 0) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "bad DMA range",
            ));
        };
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
        let overlapping: Vec<u64> = self
            .regions
            .range(..end)
            .rev()
            .take_while(|(_, r)| r.iova + r.len > iova)
            .map(|(&start, _)| start)
            .collect();
        for start in overlapping {
            self.regions.remove(&start);
        }
        self.regions.insert(
            iova,
            Region {
                iova,
                len,
                ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            },
        );
        Ok(())
    }

    /// Drops every mapping wholly inside `[iova, iova + len)`.
    pub fn unmap(&mut self, iova: u64, len: u64) {
        // A range query, not a scan: a guest IOMMU unmaps page by page, thousands of times
        // over a map of thousands of pages.
        let end = iova.saturating_add(len);
        let inside: Vec<u64> = self
            .regions
            .range(iova..end)
            .filter(|(_, r)| r.iova + r.len <= end)
            .map(|(&start, _)| start)
            .collect();
        for start in inside {
            self.regions.remove(&start);
        }
    }

    /// Drops every mapping.
    pub fn clear(&mut self) {
        self.regions.clear();
    }

    /// The host address of `iova` and how many bytes from there the region holds.
    fn piece(&self, iova: u64) -> Option<(*mut u8, u64)> {
        let (_, r) = self.regions.range(..=iova).next_back()?;
        let off = iova - r.iova;
        // SAFETY: off < len (checked first), so the pointer stays inside the mapping.
        (off < r.len).then(|| (unsafe { r.ptr.as_ptr().add(off as usize) }, r.len - off))
    }

    /// Calls `f(host, at, n)` for each piece of `[iova, iova + len)` (`n` bytes at offset `at`
    /// of the range), after checking every byte is mapped; false (and no call) if not.
    fn each_piece(&self, iova: u64, len: usize, mut f: impl FnMut(*mut u8, usize, usize)) -> bool {
        if iova.checked_add(len as u64).is_none() {
            return false;
        }
        let walk = |f: &mut dyn FnMut(*mut u8, usize, usize)| {
            let mut at = 0;
            while at < len {
                let Some((p, room)) = self.piece(iova + at as u64) else {
                    return false;
                };
                let n = (len - at).min(room as usize);
                f(p, at, n);
                at += n;
            }
            true
        };
        walk(&mut |_, _, _| {}) && walk(&mut f)
    }

    /// Reads device-visible memory; false when any of the range is not mapped (a DMA fault,
    /// nothing is read).
    pub fn read(&self, iova: u64, out: &mut [u8]) -> bool {
        let dst = out.as_mut_ptr();
        self.each_piece(iova, out.len(), |p, at, n| {
            // SAFETY: the piece lies inside a mapping (each_piece checked it) and `out` holds
            // n bytes at `at`; the driver may race us, we only copy bytes.
            unsafe { std::ptr::copy_nonoverlapping(p, dst.add(at), n) }
        })
    }

    /// Writes device-visible memory; false when any of the range is not mapped (a DMA fault,
    /// nothing is written).
    pub fn write(&self, iova: u64, data: &[u8]) -> bool {
        self.each_piece(iova, data.len(), |p, at, n| {
            // SAFETY: the piece lies inside a mapping (each_piece checked it); `data` holds n
            // bytes at `at`.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(at), p, n) }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    use super::DmaSpace;

    /// A memfd of `pages` 4 KiB pages.
    fn memfd(pages: u64) -> OwnedFd {
        // SAFETY: a fresh memfd (checked), owned from here on.
        let fd = unsafe { libc::memfd_create(c"dma-test".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: fd is the fresh memfd above.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sizing our own memfd.
        assert_eq!(
            unsafe { libc::ftruncate(fd.as_fd().as_raw_fd(), (pages * 4096) as i64) },
            0
        );
        fd
    }

    use std::os::fd::AsRawFd;

    #[test]
    fn a_buffer_spans_pages_mapped_one_at_a_time() {
        // As a guest IOMMU maps them: IOVA pages in order, from pages of the file in reverse.
        let fd = memfd(2);
        let mut dma = DmaSpace::default();
        let iova = 0xff21_a000;
        dma.map(fd.as_fd(), 4096, iova, 4096).unwrap();
        dma.map(fd.as_fd(), 0, iova + 4096, 4096).unwrap();
        let data: Vec<u8> = (0..1448u32).map(|i| i as u8).collect();
        assert!(
            dma.write(iova + 0xb50, &data),
            "a write across the page boundary"
        );
        let mut back = vec![0; data.len()];
        assert!(dma.read(iova + 0xb50, &mut back));
        assert_eq!(back, data);
        // The bytes landed in the file where each page's map put them.
        let mut second = [0u8; 4];
        assert!(dma.read(iova + 4096, &mut second));
        assert_eq!(second, data[4096 - 0xb50..][..4]);
        // A hole, an end past the last page, or a range that wraps: a fault, nothing copied.
        assert!(!dma.read(iova + 4096 + 4000, &mut back));
        assert!(!dma.read(u64::MAX - 8, &mut back));
        dma.unmap(iova + 4096, 4096);
        assert!(!dma.write(iova + 0xb50, &data), "the second page is gone");
        assert!(
            dma.read(iova + 0xb50, &mut back[..100]),
            "the first is still there"
        );
    }

    #[test]
    fn a_new_map_replaces_the_ones_it_overlaps() {
        let fd = memfd(4);
        let mut dma = DmaSpace::default();
        dma.map(fd.as_fd(), 0, 0x10000, 4096).unwrap();
        dma.map(fd.as_fd(), 4096, 0x11000, 4096).unwrap();
        dma.map(fd.as_fd(), 8192, 0x10800, 8192).unwrap();
        assert_eq!(dma.regions.len(), 1, "both old maps overlapped the new one");
        assert!(
            !dma.read(0x10000, &mut [0; 8]),
            "the head of the first map went with it"
        );
    }
}
