//! A memfd-backed region shared with the guest (the data BAR), accessed only through raw
//! pointers: the guest can write any byte at any time.

use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU32;

use vdpdk_core::DmaMemory;

/// A sealed memfd both host-mux and the guest map. Offsets are bytes from its start; every
/// access is bounds-checked.
pub struct SharedRegion {
    mem: DmaMemory,
}

impl SharedRegion {
    /// A zeroed region of `len` bytes, its memfd named `name` (seen in /proc/PID/maps).
    pub fn new(name: &str, len: usize) -> std::io::Result<SharedRegion> {
        // Never hugepages: the BAR is small and must be exactly `len` for the guest's mmap.
        let mem = DmaMemory::alloc_with(name, len, false).map_err(std::io::Error::other)?;
        Ok(SharedRegion { mem })
    }

    /// The memfd, for the guest's mmap of the BAR (host-mux keeps ownership).
    pub(crate) fn raw_fd(&self) -> i32 {
        self.mem.fd().as_raw_fd()
    }
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.mem.len()
    }
    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    fn check(&self, off: usize, n: usize) -> bool {
        off.checked_add(n).is_some_and(|e| e <= self.mem.len())
    }

    /// Copies `out.len()` bytes at `off` out (volatile: the guest may be writing them); false,
    /// copying nothing, when they are not all inside the region.
    pub fn read(&self, off: usize, out: &mut [u8]) -> bool {
        if !self.check(off, out.len()) {
            return false;
        }
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: in bounds (checked); byte reads of shared memory.
            *b = unsafe { self.mem.as_ptr().add(off + i).read_volatile() };
        }
        true
    }

    /// Copies `data` in at `off`; false, copying nothing, when it does not fit.
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        if !self.check(off, data.len()) {
            return false;
        }
        for (i, b) in data.iter().enumerate() {
            // SAFETY: in bounds (checked).
            unsafe { self.mem.as_ptr().add(off + i).write_volatile(*b) };
        }
        true
    }

    /// Zeroes the whole region (a new guest starts from a clean device).
    pub(crate) fn clear(&self) {
        // SAFETY: the whole mapping.
        unsafe { std::ptr::write_bytes(self.mem.as_ptr(), 0, self.mem.len()) };
    }

    /// A 32-bit flag word shared with the guest (4-byte aligned offsets only).
    pub(crate) fn flag(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && self.check(off, 4),
            "flag offset {off}"
        );
        // SAFETY: aligned and in bounds; an atomic is the one kind of reference that tolerates
        // concurrent writes by the guest.
        unsafe { AtomicU32::from_ptr(self.mem.as_ptr().add(off).cast()) }
    }
}
