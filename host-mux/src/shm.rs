//! A memfd-backed region shared with the guest (the data BAR), accessed only through raw
//! pointers: the guest can write any byte at any time.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use vdpdk_core::DmaMemory;

pub struct SharedRegion {
    mem: DmaMemory,
}

impl SharedRegion {
    pub fn new(name: &str, len: usize) -> std::io::Result<SharedRegion> {
        // Never hugepages: the BAR is small and must be exactly `len` for the guest's mmap.
        let mem = DmaMemory::alloc_with(name, len, false).map_err(std::io::Error::other)?;
        Ok(SharedRegion { mem })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.mem.fd()
    }
    pub fn raw_fd(&self) -> i32 {
        self.mem.fd().as_raw_fd()
    }
    pub fn len(&self) -> usize {
        self.mem.len()
    }
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    fn check(&self, off: usize, n: usize) -> bool {
        off.checked_add(n).is_some_and(|e| e <= self.mem.len())
    }

    /// Copies bytes out (volatile: the guest may be writing them).
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
    pub fn clear(&self) {
        // SAFETY: the whole mapping.
        unsafe { std::ptr::write_bytes(self.mem.as_ptr(), 0, self.mem.len()) };
    }

    /// A 32-bit flag word shared with the guest (4-byte aligned offsets only).
    pub fn flag(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && self.check(off, 4),
            "flag offset {off}"
        );
        // SAFETY: aligned and in bounds; an atomic is the one kind of reference that tolerates
        // concurrent writes by the guest.
        unsafe { AtomicU32::from_ptr(self.mem.as_ptr().add(off).cast()) }
    }

    pub fn load_flag(&self, off: usize) -> u32 {
        self.flag(off).load(Ordering::SeqCst)
    }
}
