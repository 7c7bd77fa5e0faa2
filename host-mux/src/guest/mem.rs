//! A guest's DMA map as host-mux sees it, and the one place that reads and writes guest memory.
//!
//! [`GuestMem`] holds the regions a VMM mapped (DMA_MAP), sorted by IOVA. [`GuestMem::slice`]
//! validates an (IOVA, length) a guest named (wholly inside one region, writable when asked)
//! and returns a [`GuestSlice`], whose `read_slice`/`write_slice` copy bytes in and out with
//! every offset checked, in the manner of rust-vmm's vm-memory. A refusal is a
//! [`GuestMemError`] that keeps its cause. No Rust reference to guest memory is ever formed:
//! the guest may write any byte at any time.

use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vdpdk_core::{ExternalDma, ExternalRegion};

/// One DMA_MAP'ed range of guest memory, mapped into this process.
pub struct DmaRegion {
    /// First guest IOVA of the range.
    pub iova: u64,
    /// Length in bytes (non-zero; `iova + len` does not wrap).
    pub len: u64,
    /// The VMM allowed device writes (only such regions take RX buffers and rings).
    pub writable: bool,
    ptr: NonNull<u8>,
    map_len: usize,
    /// Mapped for the backend NIC too (zero-copy to a NIC behind an IOMMU), at IOVA = `ptr`:
    /// taken back from it before the memory is unmapped here.
    nic: Option<Arc<dyn ExternalDma>>,
}

// SAFETY: the mapping is owned by this value; accesses go through raw pointers.
unsafe impl Send for DmaRegion {}
// SAFETY: &DmaRegion only exposes the address (via translate) and immutable metadata; who may
// touch the bytes is governed by the guest locks.
unsafe impl Sync for DmaRegion {}

impl DmaRegion {
    /// Maps `len` bytes of `fd` at `offset` (the guest's DMA_MAP request).
    ///
    /// The file must be sealed against shrinking (F_SEAL_SHRINK, as memfds from QEMU's
    /// `memory-backend-memfd` and from guest-pmd are) and hold the whole range: a file that
    /// could shrink under the mapping would turn the next access into SIGBUS for the whole
    /// process, so an unsealed one is refused rather than trusted.
    ///
    /// With `nic`, the memory is also mapped for the backend NIC ([`DmaRegion::device_iova`]).
    pub fn map(
        fd: &File,
        offset: u64,
        iova: u64,
        len: u64,
        writable: bool,
        nic: Option<&Arc<dyn ExternalDma>>,
    ) -> std::io::Result<Self> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        if len == 0 || iova.checked_add(len).is_none() || len > isize::MAX as u64 {
            return Err(invalid("DMA range is empty or wraps".into()));
        }
        check_file_holds(fd, offset, len).map_err(invalid)?;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: mapping a received fd; the kernel validates offset/len against the file and
        // the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut r = DmaRegion {
            iova,
            len,
            writable,
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            map_len: len as usize,
            nic: None,
        };
        if let Some(nic) = nic {
            let ext = ExternalRegion {
                fd: fd.as_fd(),
                offset,
                len,
                host: r.ptr,
            };
            nic.map(&ext)
                .map_err(|e| std::io::Error::other(format!("mapping it for the NIC: {e}")))?;
            r.nic = Some(nic.clone());
        }
        Ok(r)
    }

    /// The address the backend's device reaches guest IOVA `iova` (inside this region) at:
    /// its address here when mapped for a NIC, else the guest IOVA itself (software backends
    /// reach it by host address).
    #[inline]
    pub fn device_iova(&self, iova: u64) -> u64 {
        match self.nic {
            Some(_) => self.ptr.as_ptr() as u64 + (iova - self.iova),
            None => iova,
        }
    }

    fn overlaps(&self, iova: u64, len: u64) -> bool {
        iova < self.iova + self.len && self.iova < iova.saturating_add(len)
    }
}

/// Refuses a file that could shrink under a mapping of `offset..offset+len` (no F_SEAL_SHRINK)
/// or that does not reach that far.
fn check_file_holds(fd: &File, offset: u64, len: u64) -> Result<(), String> {
    // SAFETY: F_GET_SEALS only reads the fd's seals.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
        return Err(
            "the memory file is not sealed against shrinking (F_SEAL_SHRINK); \
                    share guest RAM as a sealed memfd (QEMU: memory-backend-memfd, seal=on, \
                    the default)"
                .into(),
        );
    }
    let size = fd
        .metadata()
        .map_err(|e| format!("cannot stat the memory file: {e}"))?
        .len();
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(format!(
            "range {offset:#x}+{len:#x} runs past the end of its {size:#x}-byte file"
        )),
    }
}

/// When set, unmapped guest memory is replaced by an inaccessible reservation instead of being
/// returned to the system, so any use after unmap faults at once instead of silently reaching
/// whatever the kernel maps there next (a test aid: address space is not reused).
pub(crate) static GUARD_UNMAPPED: AtomicBool = AtomicBool::new(false);

impl Drop for DmaRegion {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr().cast();
        if let Some(nic) = self.nic.take() {
            // The NIC first: until it lets go, the memory stays mapped here (whatever still
            // pointed into it was taken back from the NIC before the last pin went).
            if let Err(e) = nic.unmap(p as u64, self.len) {
                log::error!(
                    "guest memory {:#x}+{:#x} stays mapped: the NIC did not unmap it: {e}",
                    self.iova,
                    self.len
                );
                return;
            }
        }
        if GUARD_UNMAPPED.load(Ordering::Relaxed) {
            // SAFETY: replaces our own mapping (same range) with a PROT_NONE one; nothing uses
            // the range any more (pollers only translate under the guest locks).
            let r = unsafe {
                libc::mmap(
                    p,
                    self.map_len,
                    libc::PROT_NONE,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if r != libc::MAP_FAILED {
                return;
            }
        }
        // SAFETY: ptr/map_len are our mmap; the owner guarantees no pointer into it is used
        // after this (pollers only translate under the guest locks).
        unsafe { libc::munmap(p, self.map_len) };
    }
}

/// The guest's DMA address space as the host sees it: regions sorted by IOVA, so a lookup
/// costs O(log n) however many maps a guest makes. Cloning shares the regions.
#[derive(Default, Clone)]
pub struct GuestMem {
    regions: Vec<Arc<DmaRegion>>,
    bytes: u64,
}

impl GuestMem {
    /// Index of the first region that ends after `iova`: a linear scan over the few regions
    /// a guest normally has (cheaper per frame than a binary search's branches), a binary
    /// search beyond that, so a guest with thousands of maps slows only itself.
    #[inline(always)]
    fn first_ending_after(&self, iova: u64) -> usize {
        const LINEAR: usize = 8;
        if self.regions.len() <= LINEAR {
            return self
                .regions
                .iter()
                .position(|r| r.iova + r.len > iova)
                .unwrap_or(self.regions.len());
        }
        self.regions.partition_point(|r| r.iova + r.len <= iova)
    }

    /// Adds a region; refuses overlaps with existing ones.
    pub fn add(&mut self, r: Arc<DmaRegion>) -> Result<(), String> {
        let i = self.first_ending_after(r.iova);
        if self
            .regions
            .get(i)
            .is_some_and(|x| x.overlaps(r.iova, r.len))
        {
            return Err(format!(
                "DMA map {:#x}+{:#x} overlaps an existing mapping",
                r.iova, r.len
            ));
        }
        self.bytes += r.len;
        self.regions.insert(i, r);
        Ok(())
    }

    /// Removes every region inside `[iova, iova+len)`; returns how many. A range that cuts a
    /// region in two is refused and changes nothing (as the kernel's VFIO type1 v2 IOMMU
    /// refuses to bisect a mapping): acknowledging it while keeping the whole region would
    /// leave the host writing into memory the guest believes unmapped.
    pub fn remove(&mut self, iova: u64, len: u64) -> Result<usize, String> {
        let end = iova.saturating_add(len);
        let from = self.first_ending_after(iova);
        let to = from + self.regions[from..].partition_point(|r| r.iova < end);
        if let Some(r) = self.regions[from..to]
            .iter()
            .find(|r| r.iova < iova || r.iova + r.len > end)
        {
            return Err(format!(
                "unmap {iova:#x}+{len:#x} would split the mapping {:#x}+{:#x}",
                r.iova, r.len
            ));
        }
        self.bytes -= self.regions[from..to].iter().map(|r| r.len).sum::<u64>();
        self.regions.drain(from..to);
        Ok(to - from)
    }

    /// Forgets every region (each is unmapped once no other map shares it).
    pub fn clear(&mut self) {
        self.regions.clear();
        self.bytes = 0;
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }
    /// Whether no region is mapped.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
    /// Bytes mapped in all regions.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Host pointer for `[iova, iova+len)` if it lies wholly in one region (and that region is
    /// writable when `write` is asked). The pointer is valid while the caller holds the guest
    /// lock that protects this map.
    #[inline]
    pub fn translate(&self, iova: u64, len: u64, write: bool) -> Option<*mut u8> {
        if len == 0 {
            return None;
        }
        let end = iova.checked_add(len)?;
        let r = self.regions.get(self.first_ending_after(iova))?;
        if iova < r.iova || end > r.iova + r.len || (write && !r.writable) {
            return None;
        }
        // SAFETY: iova - r.iova + len <= r.len, so the offset is inside the mapping.
        Some(unsafe { r.ptr.as_ptr().add((iova - r.iova) as usize) })
    }

    /// The region holding all of `[iova, iova+len)`, shared: holding it keeps the memory
    /// mapped in this process after the guest unmaps it (for a look at a ring without the
    /// guest lock, see `datapath::peek`).
    pub fn region_holding(&self, iova: u64, len: u64) -> Option<Arc<DmaRegion>> {
        let end = iova.checked_add(len)?;
        let r = self.regions.get(self.first_ending_after(iova))?;
        (iova >= r.iova && end <= r.iova + r.len).then(|| r.clone())
    }

    /// `[iova, iova+len)` to lend to a backend (zero-copy TX): the region holding all of it,
    /// which keeps it mapped while held, and its host address. The bytes are the guest's to
    /// change meanwhile: whoever reads them treats them as untrusted and never forms a Rust
    /// reference to them (`Mbuf::copy_to`, `Mbuf::data_addr`).
    #[inline]
    pub fn lend(&self, iova: u64, len: u64) -> Option<(&Arc<DmaRegion>, NonNull<u8>)> {
        let end = iova.checked_add(len)?;
        let r = self.regions.get(self.first_ending_after(iova))?;
        if iova < r.iova || end > r.iova + r.len {
            return None;
        }
        // SAFETY: [iova, iova+len) lies inside r's mapping (checked just above).
        let ptr = unsafe { r.ptr.add((iova - r.iova) as usize) };
        Some((r, ptr))
    }

    /// [`GuestMem::lend`] for a buffer a device will write (zero-copy RX): None unless the
    /// region holding it is writable.
    #[inline]
    pub fn lend_writable(&self, iova: u64, len: u64) -> Option<(&Arc<DmaRegion>, NonNull<u8>)> {
        self.lend(iova, len).filter(|(r, _)| r.writable)
    }

    /// `[iova, iova+len)` as a [`GuestSlice`] when it lies wholly in one region (and that
    /// region is writable when `write` is asked); otherwise the reason it does not.
    #[inline]
    pub fn slice(&self, iova: u64, len: u64, write: bool) -> Result<GuestSlice<'_>, GuestMemError> {
        let err = |fault| GuestMemError { iova, len, fault };
        if len == 0 {
            return Err(err(MemFault::Empty));
        }
        let end = iova.checked_add(len).ok_or(err(MemFault::Wraps))?;
        let Some(r) = self.regions.get(self.first_ending_after(iova)) else {
            return Err(err(MemFault::Unmapped));
        };
        if iova < r.iova || end > r.iova + r.len {
            return Err(err(MemFault::Unmapped));
        }
        if write && !r.writable {
            return Err(err(MemFault::ReadOnly));
        }
        Ok(GuestSlice {
            // SAFETY: iova - r.iova + len <= r.len, so the offset is inside the mapping.
            ptr: unsafe { r.ptr.add((iova - r.iova) as usize) },
            len: len as usize,
            iova,
            writable: write,
            _map: PhantomData,
        })
    }
}

/// Why a guest memory access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemFault {
    /// A zero-length range.
    Empty,
    /// The range runs past the end of the 64-bit IOVA space.
    Wraps,
    /// The range is not wholly inside one DMA region.
    Unmapped,
    /// A write into a region the VMM mapped read-only.
    ReadOnly,
    /// An access past the end of an already validated [`GuestSlice`] (a host bug, refused
    /// rather than done).
    OutsideSlice,
}

/// A refused guest memory access: the guest range it named and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMemError {
    /// First IOVA of the refused range.
    pub iova: u64,
    /// Length of the refused range in bytes.
    pub len: u64,
    /// Why it was refused.
    pub fault: MemFault,
}

impl std::fmt::Display for GuestMemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.fault {
            MemFault::Empty => "an empty range",
            MemFault::Wraps => "wraps around the IOVA space",
            MemFault::Unmapped => "not inside the guest's DMA map",
            MemFault::ReadOnly => "mapped read-only",
            MemFault::OutsideSlice => "outside the validated range",
        };
        write!(f, "guest memory {:#x}+{:#x}: {why}", self.iova, self.len)
    }
}

impl std::error::Error for GuestMemError {}

/// A range of guest memory that [`GuestMem::slice`] validated: wholly inside one DMA region,
/// and writable when it was asked for writing. It borrows the map, so it cannot outlive the
/// guest lock that guards the map (and so the mapping).
#[derive(Clone, Copy, Debug)]
pub struct GuestSlice<'m> {
    ptr: NonNull<u8>,
    len: usize,
    iova: u64,
    writable: bool,
    _map: PhantomData<&'m GuestMem>,
}

impl GuestSlice<'_> {
    /// Length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The guest IOVA of the slice's first byte.
    #[inline(always)]
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Whether the slice is empty (never, for a validated one).
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The refusal of `n` bytes at `offset`, or None when they lie inside the slice.
    #[inline(always)]
    fn check(&self, offset: usize, n: usize) -> Result<(), GuestMemError> {
        if offset <= self.len && n <= self.len - offset {
            return Ok(());
        }
        Err(GuestMemError {
            iova: self.iova.wrapping_add(offset as u64),
            len: n as u64,
            fault: MemFault::OutsideSlice,
        })
    }

    /// Starts fetching the slice's first cache line (see [`vdpdk_core::dma::prefetch`]): a
    /// frame the guest just wrote sits in the other core's cache, and waiting for it was a
    /// quarter of the poller's time on 64 B guest TX.
    #[inline(always)]
    pub fn prefetch(&self) {
        vdpdk_core::dma::prefetch(self.ptr.as_ptr());
    }

    /// Copies `dst.len()` bytes starting `offset` bytes into the slice out of guest memory.
    /// The guest may be writing them meanwhile: the copy gets some mix of old and new bytes,
    /// which the caller must treat as untrusted.
    #[inline(always)]
    pub fn read_slice(&self, offset: usize, dst: &mut [u8]) -> Result<(), GuestMemError> {
        self.check(offset, dst.len())?;
        // SAFETY: offset..offset+dst.len() lies inside the slice (checked), which lies in one
        // mapped DMA region that stays mapped while the map is borrowed; dst is host memory
        // and cannot overlap guest memory. Plain byte copy, no reference to guest memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    /// `N` bytes starting `offset` bytes into the slice, read once (unaligned).
    #[inline(always)]
    pub fn read_array<const N: usize>(&self, offset: usize) -> Result<[u8; N], GuestMemError> {
        self.check(offset, N)?;
        // SAFETY: as in read_slice; an unaligned read of plain bytes.
        Ok(unsafe {
            self.ptr
                .as_ptr()
                .add(offset)
                .cast::<[u8; N]>()
                .read_unaligned()
        })
    }

    /// Copies `src` into guest memory starting `offset` bytes into the slice; refused unless
    /// the slice was validated for writing.
    #[inline(always)]
    pub fn write_slice(&self, offset: usize, src: &[u8]) -> Result<(), GuestMemError> {
        if !self.writable {
            return Err(GuestMemError {
                iova: self.iova,
                len: self.len as u64,
                fault: MemFault::ReadOnly,
            });
        }
        self.check(offset, src.len())?;
        // SAFETY: offset..offset+src.len() lies inside the slice (checked), in one writable
        // mapped DMA region that stays mapped while the map is borrowed; src is host memory.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    /// Copies `len` bytes from `src_offset` into `src` to `offset` into this slice: guest
    /// memory to guest memory (one guest's frame into another's buffer), bytes only, never
    /// looked at. Refused unless this slice was validated for writing.
    #[inline(always)]
    pub fn copy_within_guests(
        &self,
        offset: usize,
        src: &GuestSlice<'_>,
        src_offset: usize,
        len: usize,
    ) -> Result<(), GuestMemError> {
        if !self.writable {
            return Err(GuestMemError {
                iova: self.iova,
                len: self.len as u64,
                fault: MemFault::ReadOnly,
            });
        }
        self.check(offset, len)?;
        src.check(src_offset, len)?;
        // SAFETY: both ranges lie inside their slices (checked), each in one mapped DMA region
        // that stays mapped while its map is borrowed, the destination writable. Each guest's
        // regions are its own mappings, but nothing here proves the two ranges apart, so
        // `copy` (memmove, correct for overlapping ranges). The same pages mapped for two
        // guests could only garble bytes those guests share; they are moved, never read as
        // values. No reference to guest memory is formed.
        unsafe {
            std::ptr::copy(
                src.ptr.as_ptr().add(src_offset),
                self.ptr.as_ptr().add(offset),
                len,
            )
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::fd::{AsFd, OwnedFd};

    fn region(iova: u64, len: u64, writable: bool) -> DmaRegion {
        let m = vdpdk_core::DmaMemory::alloc_with("t", len as usize, false).unwrap();
        let fd: OwnedFd = m.fd().as_fd().try_clone_to_owned().unwrap();
        DmaRegion::map(&File::from(fd), 0, iova, len, writable, None).unwrap()
    }

    proptest! {
        /// Descriptor validation: an (IOVA, length) a guest puts in a descriptor translates only
        /// when it lies wholly inside one mapping, whatever the values (including wrap-arounds).
        #[test]
        fn translate_accepts_exactly_the_contained_ranges(
            iova in prop_oneof![any::<u64>(), 0x10000u64..0x14000, (u64::MAX - 0x2000)..=u64::MAX],
            len in prop_oneof![any::<u64>(), 0u64..0x3000],
            write in any::<bool>(),
        ) {
            let mut mem = GuestMem::default();
            mem.add(Arc::new(region(0x10000, 0x2000, true))).unwrap();
            mem.add(Arc::new(region(0x20000, 0x1000, false))).unwrap();
            let inside = |base: u64, size: u64| {
                len > 0
                    && iova.checked_add(len).is_some_and(|end| iova >= base && end <= base + size)
            };
            let expect = inside(0x10000, 0x2000) || (!write && inside(0x20000, 0x1000));
            let got = mem.translate(iova, len, write);
            prop_assert_eq!(got.is_some(), expect);
        }
    }

    #[test]
    fn overlapping_maps_are_refused_and_partial_unmaps_change_nothing() {
        let mut mem = GuestMem::default();
        mem.add(Arc::new(region(0x10000, 0x2000, true))).unwrap();
        mem.add(Arc::new(region(0x30000, 0x1000, true))).unwrap();
        assert!(mem.add(Arc::new(region(0x11000, 0x2000, true))).is_err());
        assert!(mem.add(Arc::new(region(0xf000, 0x2000, true))).is_err());
        // Half of the first region, or a range that clips the second: refused, nothing gone.
        assert!(mem.remove(0x10000, 0x1000).is_err());
        assert!(mem.remove(0x11000, 0x20000).is_err());
        assert_eq!(mem.len(), 2);
        assert!(mem.translate(0x11000, 0x100, true).is_some());
        assert_eq!(mem.remove(0x10000, 0x2000), Ok(1));
        assert!(mem.translate(0x11000, 0x100, true).is_none());
        assert_eq!(mem.bytes(), 0x1000);
        assert_eq!(mem.remove(0, u64::MAX), Ok(1));
        assert!(mem.is_empty());
    }

    #[test]
    fn lookup_stays_exact_with_many_regions() {
        let mut mem = GuestMem::default();
        // Inserted out of order; every page maps to its own region.
        for i in (0..200u64).rev() {
            mem.add(Arc::new(region(0x100000 + i * 0x2000, 0x1000, true)))
                .unwrap();
        }
        for i in 0..200u64 {
            let base = 0x100000 + i * 0x2000;
            assert!(mem.translate(base, 0x1000, true).is_some());
            assert!(mem.translate(base + 0x1000, 1, false).is_none(), "the gap");
            assert!(
                mem.translate(base + 0x800, 0x1000, false).is_none(),
                "straddles"
            );
        }
    }

    #[test]
    fn unsealed_or_short_files_are_refused() {
        // A memfd without seals could be truncated under the mapping (SIGBUS).
        // SAFETY: memfd_create with a static C string; the fd is checked and owned.
        let raw = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh fd we own.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        f.set_len(0x4000).unwrap();
        let e = DmaRegion::map(&f, 0, 0x1000, 0x1000, true, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
        // A sealed file, but the range runs past its end.
        let m = vdpdk_core::DmaMemory::alloc_with("short", 0x1000, false).unwrap();
        let fd: OwnedFd = m.fd().as_fd().try_clone_to_owned().unwrap();
        let f = File::from(fd);
        let e = DmaRegion::map(&f, 0, 0x1000, 0x100000, true, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("past the end"), "{e}");
        let e = DmaRegion::map(&f, u64::MAX - 0xfff, 0x1000, 0x1000, true, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("past the end"), "{e}");
        assert!(DmaRegion::map(&f, 0, 0x1000, 0x1000, true, None).is_ok());
    }

    #[test]
    fn slices_copy_within_their_range_and_refusals_keep_their_cause() {
        let mut mem = GuestMem::default();
        mem.add(Arc::new(region(0x10000, 0x2000, true))).unwrap();
        mem.add(Arc::new(region(0x20000, 0x1000, false))).unwrap();
        let fault = |iova, len, write| mem.slice(iova, len, write).unwrap_err().fault;
        assert_eq!(fault(0x10000, 0, false), MemFault::Empty);
        assert_eq!(fault(u64::MAX, 2, false), MemFault::Wraps);
        assert_eq!(fault(0x11f00, 0x200, false), MemFault::Unmapped);
        assert_eq!(fault(0x30000, 1, false), MemFault::Unmapped);
        assert_eq!(fault(0x20000, 0x10, true), MemFault::ReadOnly);
        let e = mem.slice(0x11f00, 0x200, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "guest memory 0x11f00+0x200: not inside the guest's DMA map"
        );
        let s = mem.slice(0x10100, 0x100, true).unwrap();
        assert_eq!(s.len(), 0x100);
        s.write_slice(0x10, b"vdpdk").unwrap();
        let mut out = [0u8; 5];
        mem.slice(0x10110, 5, false)
            .unwrap()
            .read_slice(0, &mut out)
            .unwrap();
        assert_eq!(&out, b"vdpdk");
        assert_eq!(s.read_array::<2>(0x11).unwrap(), *b"dp");
        // Past the validated range: refused, nothing copied.
        let e = s.write_slice(0xfc, b"vdpdk").unwrap_err();
        assert_eq!(
            (e.iova, e.len, e.fault),
            (0x101fc, 5, MemFault::OutsideSlice)
        );
        assert!(s.read_slice(usize::MAX, &mut out).is_err());
        assert!(s.read_array::<4>(0xfd).is_err());
        // A slice validated for reading is not written through.
        let ro = mem.slice(0x10100, 0x100, false).unwrap();
        assert_eq!(
            ro.write_slice(0, b"x").unwrap_err().fault,
            MemFault::ReadOnly
        );
        // Guest to guest (another slice of another map in use): inside both ranges only.
        let mut other = GuestMem::default();
        other.add(Arc::new(region(0x40000, 0x1000, true))).unwrap();
        let dst = other.slice(0x40000, 0x20, true).unwrap();
        dst.copy_within_guests(1, &ro, 0x10, 5).unwrap();
        assert_eq!(dst.read_array::<7>(0).unwrap(), *b"\0vdpdk\0");
        let refused = |r: Result<(), GuestMemError>| r.unwrap_err().fault;
        assert_eq!(
            refused(dst.copy_within_guests(0x1c, &ro, 0, 5)),
            MemFault::OutsideSlice
        );
        assert_eq!(
            refused(dst.copy_within_guests(0, &ro, 0xfe, 5)),
            MemFault::OutsideSlice
        );
        assert_eq!(
            refused(ro.copy_within_guests(0, &dst, 0, 1)),
            MemFault::ReadOnly
        );
    }
}
