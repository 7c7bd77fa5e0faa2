//! DMA-able memory: a memfd mapping that can be shared with another process (vfio-user DMA_MAP
//! sends its fd) and, when the system has hugepages reserved, backed by them.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::{Error, Result};

const HUGEPAGE_SIZE: usize = 2 << 20;
const PAGE_SIZE: usize = 4096;

/// A shared, file-backed mapping used for packet buffers and descriptor rings.
///
/// The IOVA of byte `off` is `iova_base + off`. Process guests use the virtual address as IOVA
/// (like vfio type1 with VA = IOVA); the in-VM transport sets a guest-physical base.
pub struct DmaMemory {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
    hugepages: bool,
    iova_base: u64,
}

// SAFETY: DmaMemory owns its mapping; access to the bytes goes through raw pointers whose users
// synchronise themselves (rings use atomics, buffers are owned by exactly one Mbuf).
unsafe impl Send for DmaMemory {}
// SAFETY: see Send; &DmaMemory only hands out raw pointers and immutable metadata.
unsafe impl Sync for DmaMemory {}

impl DmaMemory {
    /// Allocates `len` bytes, zeroed, on hugepages when available, otherwise on normal pages.
    pub fn alloc(name: &str, len: usize) -> Result<Self> {
        Self::alloc_with(name, len, true)
    }

    /// Like [`DmaMemory::alloc`], with hugepages only tried when `try_hugepages` is set.
    pub fn alloc_with(name: &str, len: usize, try_hugepages: bool) -> Result<Self> {
        if len == 0 {
            return Err(Error::InvalidArg("DMA memory of 0 bytes".into()));
        }
        if try_hugepages {
            let hlen = len.div_ceil(HUGEPAGE_SIZE) * HUGEPAGE_SIZE;
            if let Ok(m) = Self::map_memfd(name, hlen, libc::MFD_HUGETLB) {
                return Ok(m);
            }
        }
        Self::map_memfd(name, len.div_ceil(PAGE_SIZE) * PAGE_SIZE, 0)
    }

    fn map_memfd(name: &str, len: usize, extra_flags: libc::c_uint) -> Result<Self> {
        let cname = std::ffi::CString::new(format!("vdpdk-{name}"))
            .map_err(|_| Error::InvalidArg("memory name contains NUL".into()))?;
        // SAFETY: cname is a valid C string; memfd_create has no other memory arguments.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | extra_flags) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: mapping a file we own with the length we just set; result checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| Error::NoMem("mmap null".into()))?;
        Ok(DmaMemory {
            ptr,
            len,
            fd,
            hugepages: extra_flags & libc::MFD_HUGETLB != 0,
            iova_base: p as u64,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn is_hugepage_backed(&self) -> bool {
        self.hugepages
    }
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    /// IOVA of the first byte.
    pub fn iova_base(&self) -> u64 {
        self.iova_base
    }
    /// Sets the IOVA of the first byte (the transport decides the address space).
    pub fn set_iova_base(&mut self, iova: u64) {
        self.iova_base = iova;
    }
    /// IOVA of byte `off`.
    pub fn iova(&self, off: usize) -> u64 {
        self.iova_base + off as u64
    }
}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from our successful mmap and nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Debug for DmaMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaMemory")
            .field("len", &self.len)
            .field("hugepages", &self.hugepages)
            .field("iova_base", &format_args!("{:#x}", self.iova_base))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_is_zeroed_and_shared_through_fd() {
        let m = DmaMemory::alloc("t", 10_000).unwrap();
        assert!(m.len() >= 10_000);
        // SAFETY: in bounds of our mapping.
        unsafe { m.as_ptr().add(5000).write(0xAB) };
        let mut b = [0u8; 1];
        // SAFETY: pread into a local buffer from our fd.
        let n = unsafe { libc::pread(m.fd().as_raw_fd(), b.as_mut_ptr().cast(), 1, 5000) };
        assert_eq!(n, 1);
        assert_eq!(b[0], 0xAB);
        // SAFETY: in bounds; fresh memfd pages are zero.
        assert_eq!(unsafe { m.as_ptr().add(4999).read() }, 0);
    }

    #[test]
    fn zero_length_is_refused() {
        assert!(matches!(
            DmaMemory::alloc("z", 0),
            Err(Error::InvalidArg(_))
        ));
    }
}
