//! DMA-able memory: a memfd mapping that can be shared with another process (vfio-user DMA_MAP
//! sends its fd) and, when the system has hugepages reserved, backed by them.
//!
//! Two address modes, like DPDK's `--iova-mode`:
//! - virtual (default): the IOVA of a byte is its virtual address; an IOMMU or a vfio-user
//!   server maps it (process guests, kernel vfio with type1).
//! - physical ([`use_physical_addresses`]): inside a VM without a vIOMMU the device sees
//!   guest-physical addresses, so every allocation is made of hugepages arranged so that the
//!   mapping is contiguous both virtually and physically, and its IOVA is the physical address.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, Result};

const HUGEPAGE_SIZE: usize = 2 << 20;
const PAGE_SIZE: usize = 4096;

static PHYSICAL: AtomicBool = AtomicBool::new(false);

/// Switches this process to physical addressing: every later [`DmaMemory`] is hugepage-backed,
/// physically contiguous and addressed by its physical address. Transports for a device that
/// sees physical memory (vfio no-IOMMU inside a VM) call it before any memory is allocated.
pub fn use_physical_addresses() {
    PHYSICAL.store(true, Ordering::Relaxed);
}

/// Whether [`use_physical_addresses`] is in effect.
pub fn physical_addresses() -> bool {
    PHYSICAL.load(Ordering::Relaxed)
}

/// A shared, file-backed mapping used for packet buffers and descriptor rings.
///
/// The IOVA of byte `off` is `iova_base + off`. Process guests use the virtual address as IOVA
/// (like vfio type1 with VA = IOVA); the in-VM transport sets a guest-physical base.
pub struct DmaMemory {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
    hugepages: bool,
    /// The IOVA is a physical address (see [`use_physical_addresses`]).
    physical: bool,
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
    /// In physical mode hugepages are always used (see the module docs).
    pub fn alloc_with(name: &str, len: usize, try_hugepages: bool) -> Result<Self> {
        if len == 0 {
            return Err(Error::InvalidArg("DMA memory of 0 bytes".into()));
        }
        if physical_addresses() {
            return Self::alloc_physical(name, len);
        }
        if try_hugepages {
            let hlen = len.div_ceil(HUGEPAGE_SIZE) * HUGEPAGE_SIZE;
            if let Ok(m) = Self::map_memfd(name, hlen, libc::MFD_HUGETLB) {
                return Ok(m);
            }
        }
        Self::map_memfd(name, len.div_ceil(PAGE_SIZE) * PAGE_SIZE, 0)
    }

    fn create_memfd(name: &str, len: usize, extra_flags: libc::c_uint) -> Result<OwnedFd> {
        let cname = std::ffi::CString::new(format!("vdpdk-{name}"))
            .map_err(|_| Error::InvalidArg("memory name contains NUL".into()))?;
        // SAFETY: cname is a valid C string; memfd_create has no other memory arguments.
        let raw = unsafe {
            libc::memfd_create(
                cname.as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | extra_flags,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // The fd is handed to another process (a vfio-user peer maps it). Sealing the size
        // means neither side can shrink the file under the other's mapping, which would turn
        // the next access into SIGBUS and kill that process; host-mux refuses unsealed memory.
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: plain fcntl on our fd.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(fd)
    }

    /// Hugepages laid out in physical order: fault every page in, learn each one's physical
    /// address from /proc/self/pagemap, then map them again, sorted, into one virtual range.
    /// Pages reserved early (at boot or right after) are physically consecutive; if these are
    /// not, the allocation fails rather than hand the device a buffer that crosses a gap.
    fn alloc_physical(name: &str, len: usize) -> Result<Self> {
        let len = len.div_ceil(HUGEPAGE_SIZE) * HUGEPAGE_SIZE;
        let fd = Self::create_memfd(name, len, libc::MFD_HUGETLB).map_err(|e| {
            Error::NoMem(format!(
                "{len} bytes of hugepages for '{name}': {e} (reserve 2 MiB hugepages: \
                 echo N > /proc/sys/vm/nr_hugepages)"
            ))
        })?;
        let first = map_shared(&fd, None, len, 0).map_err(|e| {
            Error::NoMem(format!(
                "{len} bytes of hugepages for '{name}': {e} (too few free hugepages?)"
            ))
        })?;
        let pages = len / HUGEPAGE_SIZE;
        let phys: Result<Vec<u64>> = (0..pages)
            // SAFETY: each address lies inside the mapping just made (and populated).
            .map(|i| physical_address(unsafe { first.as_ptr().add(i * HUGEPAGE_SIZE) }))
            .collect();
        // SAFETY: unmapping the temporary mapping; the pages stay allocated in the memfd.
        unsafe { libc::munmap(first.as_ptr().cast(), len) };
        let phys = phys?;
        let mut order: Vec<usize> = (0..pages).collect();
        order.sort_by_key(|&i| phys[i]);
        for w in order.windows(2) {
            if phys[w[1]] != phys[w[0]] + HUGEPAGE_SIZE as u64 {
                return Err(Error::NoMem(format!(
                    "the {pages} hugepages for '{name}' are not physically contiguous \
                     ({:#x} then {:#x}); reserve hugepages early, e.g. at boot",
                    phys[w[0]], phys[w[1]]
                )));
            }
        }
        // Reserve one virtual range, then place each page at its physical rank inside it.
        // SAFETY: an anonymous PROT_NONE reservation; result checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        let base = base.cast::<u8>();
        for (rank, &page) in order.iter().enumerate() {
            // SAFETY: rank * HUGEPAGE_SIZE < len: the target lies inside our reservation.
            let at = NonNull::new(unsafe { base.add(rank * HUGEPAGE_SIZE) }).expect("non-null");
            if let Err(e) = map_shared(&fd, Some(at), HUGEPAGE_SIZE, page * HUGEPAGE_SIZE) {
                // SAFETY: releasing our own reservation (and whatever was placed in it).
                unsafe { libc::munmap(base.cast(), len) };
                return Err(e);
            }
        }
        Ok(DmaMemory {
            ptr: NonNull::new(base).expect("mmap does not return null"),
            len,
            fd,
            hugepages: true,
            physical: true,
            iova_base: phys[order[0]],
        })
    }

    fn map_memfd(name: &str, len: usize, extra_flags: libc::c_uint) -> Result<Self> {
        let fd = Self::create_memfd(name, len, extra_flags)?;
        let ptr = map_shared(&fd, None, len, 0)?;
        Ok(DmaMemory {
            ptr,
            len,
            fd,
            hugepages: extra_flags & libc::MFD_HUGETLB != 0,
            physical: false,
            iova_base: ptr.as_ptr() as u64,
        })
    }

    /// Pointer to the first byte of the mapping in this process.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the mapping has no bytes (never, for memory from `alloc`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether the memory comes from hugepages (`MFD_HUGETLB`).
    pub fn is_hugepage_backed(&self) -> bool {
        self.hugepages
    }
    /// Whether the IOVAs are physical addresses (allocated in physical mode).
    pub fn is_physical(&self) -> bool {
        self.physical
    }
    /// The memfd behind the mapping, to share it with another process or a device.
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

/// Maps `len` bytes of `fd` from `offset`, read-write, shared and populated; at `at` (replacing
/// what is there, which must be a reservation of ours) or wherever the kernel picks.
fn map_shared(
    fd: &OwnedFd,
    at: Option<NonNull<u8>>,
    len: usize,
    offset: usize,
) -> Result<NonNull<u8>> {
    let (addr, fixed) = match at {
        Some(a) => (a.as_ptr().cast(), libc::MAP_FIXED),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: maps a file we own; with MAP_FIXED the caller guarantees `at..at+len` is its own
    // reservation, so nothing else is replaced. The result is checked below.
    let p = unsafe {
        libc::mmap(
            addr,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE | fixed,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().into());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| Error::NoMem("mmap returned null".into()))
}

/// The physical address behind a mapped, present virtual address (Linux pagemap: one 64-bit
/// entry per 4 KiB page, bit 63 = present, bits 0-54 = page frame number; the frame number
/// reads as 0 without CAP_SYS_ADMIN). Source: Documentation/admin-guide/mm/pagemap.rst.
fn physical_address(va: *const u8) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap")?;
    let va = va as u64;
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, (va / PAGE_SIZE as u64) * 8)?;
    let e = u64::from_le_bytes(e);
    let pfn = e & ((1 << 55) - 1);
    if e >> 63 == 0 {
        return Err(Error::Device(format!("page at {va:#x} is not present")));
    }
    if pfn == 0 {
        return Err(Error::Refused(
            "/proc/self/pagemap hides physical addresses (physical mode needs CAP_SYS_ADMIN)"
                .into(),
        ));
    }
    Ok(pfn * PAGE_SIZE as u64 + va % PAGE_SIZE as u64)
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

/// Asks the CPU to start fetching the cache line at `p` so that a read soon after finds it
/// close (DPDK's `rte_prefetch0`): data another core just wrote costs a cross-core transfer,
/// and issuing those for a whole burst first lets them overlap. Only a hint: any address is
/// fine, nothing is read into the program.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults, whatever the address, and has no visible effect.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Like [`prefetch`], for a line about to be written (DPDK's `rte_prefetch0_write`,
/// `PREFETCHW`): the line comes in owned, so the store after it does not wait for the other
/// core's copy to be invalidated. A CPU without PREFETCHW treats it as a no-op.
#[inline(always)]
pub fn prefetch_write(p: *const u8) {
    // (Written out: `_mm_prefetch` with `_MM_HINT_ET0` becomes PREFETCHT0 unless the whole
    // build targets CPUs with PRFCHW.)
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address, reads nothing into the program,
    // writes nothing and leaves the flags alone.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Memory a port does not own that its device should reach by DMA: a guest's, mapped into
/// this process from `fd` (zero-copy RX and TX hand its buffers to the NIC in place).
#[derive(Clone, Copy, Debug)]
pub struct ExternalRegion<'a> {
    /// The file the memory is in (a guest's memfd).
    pub fd: std::os::fd::BorrowedFd<'a>,
    /// Where in `fd` it starts.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// Where it is mapped in this process.
    pub host: std::ptr::NonNull<u8>,
}

/// Maps memory a port does not own into its device's DMA address space
/// (`EthDev::external_dma`). The device reaches each region at IOVA = its address in this
/// process, as the port's own buffers are in the virtual IOVA mode: every mapping of the
/// process has its own range, so guests' memory never collides with each other's or the
/// port's.
pub trait ExternalDma: Send + Sync {
    /// Makes `r` reachable by the device at IOVA `r.host as u64`.
    fn map(&self, r: &ExternalRegion<'_>) -> crate::Result<()>;
    /// Takes back a region `map` mapped (`len` bytes from `iova`). The caller makes sure
    /// nothing posted to the device points into it any more.
    fn unmap(&self, iova: u64, len: u64) -> crate::Result<()>;
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
    fn memory_size_is_sealed() {
        let m = DmaMemory::alloc_with("s", 8192, false).unwrap();
        let fd = m.fd().as_raw_fd();
        // SAFETY: fcntl/ftruncate on our own fd.
        let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
        assert_ne!(seals & libc::F_SEAL_SHRINK, 0);
        assert_ne!(seals & libc::F_SEAL_GROW, 0);
        // SAFETY: as above.
        assert_ne!(
            unsafe { libc::ftruncate(fd, 4096) },
            0,
            "a sealed file cannot shrink"
        );
    }

    #[test]
    fn zero_length_is_refused() {
        assert!(matches!(
            DmaMemory::alloc("z", 0),
            Err(Error::InvalidArg(_))
        ));
    }
}
