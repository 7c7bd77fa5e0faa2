//! The one shared memory region the client creates and hands to the server: two rings
//! (client -> server "C2S" first, then server -> client "S2C") and the packet buffers behind
//! them, laid out as DPDK's own client does (rte_eth_memif.c `memif_region_init_shm`,
//! `memif_get_ring`, `memif_init_rings`: copy mode, one region, region 0).

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicU16;

use crate::proto::{
    ring_bytes, Desc, COOKIE, RING_DESC_AT, RING_FLAGS_AT, RING_HEAD_AT, RING_TAIL_AT,
};

/// Which ring: the numbering of memif.h `memif_ring_type_t` (C2S = 0, S2C = 1), which is also
/// the ring's position in the region when there is one ring each way.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    C2S = 0,
    S2C = 1,
}

pub struct Region {
    fd: OwnedFd,
    base: NonNull<u8>,
    size: usize,
    log2: u8,
    buf_size: u32,
}

impl Region {
    /// A memfd of the region's size, sealed against shrinking (the server maps it; a shrink
    /// would fault it), mapped here, rings initialised (cookie, head = tail = 0, every
    /// descriptor pointing at its own buffer). Like rte_eth_memif.c `memif_region_init_shm`.
    pub fn create(log2: u8, buf_size: u32) -> io::Result<Region> {
        let rings = 2 * ring_bytes(log2);
        let size = rings + ((2 * buf_size as usize) << log2);
        // SAFETY: a NUL-terminated name and valid flags; the result is checked.
        let raw = unsafe {
            libc::memfd_create(
                c"memif_region_0".as_ptr(),
                libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain fcntl/ftruncate on our own descriptor; results checked.
        unsafe {
            if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) < 0
                || libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: a new shared mapping of the whole file, checked for MAP_FAILED; it is only
        // unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let r = Region {
            fd,
            base: NonNull::new(p.cast()).expect("mmap does not return NULL on success"),
            size,
            log2,
            buf_size,
        };
        for dir in [Dir::C2S, Dir::S2C] {
            let ring = r.ring(dir);
            // SAFETY: the header is inside the mapping, nobody else has the region yet.
            unsafe { ring.hdr.cast::<u32>().write(COOKIE) };
            for slot in 0..ring.slots() {
                ring.set_desc(
                    slot,
                    Desc {
                        length: buf_size,
                        offset: r.buf_offset(dir, slot),
                        ..Desc::default()
                    },
                );
            }
        }
        Ok(r)
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
    pub fn size(&self) -> usize {
        self.size
    }
    pub fn log2(&self) -> u8 {
        self.log2
    }
    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Offset of a ring in the region (memif_get_ring: C2S rings first, then S2C).
    pub fn ring_offset(&self, dir: Dir) -> u32 {
        (dir as usize * ring_bytes(self.log2)) as u32
    }

    /// Offset of slot `slot`'s buffer: after both rings, ring by ring, slot by slot
    /// (rte_eth_memif.c `memif_init_rings`).
    pub fn buf_offset(&self, dir: Dir, slot: u16) -> u32 {
        let first = 2 * ring_bytes(self.log2);
        (first + (((dir as usize) << self.log2) | slot as usize) * self.buf_size as usize) as u32
    }

    pub fn ring(&self, dir: Dir) -> Ring<'_> {
        Ring {
            _region: PhantomData,
            // SAFETY: ring_offset is inside the mapping (both rings come first in it).
            hdr: unsafe { self.base.as_ptr().add(self.ring_offset(dir) as usize) },
            mask: (1u16 << self.log2).wrapping_sub(1),
        }
    }

    /// The `len` bytes at `offset`, if they are inside the region (a descriptor's offset and
    /// length come from shared memory: they are checked before use).
    pub fn bytes(&self, offset: u32, len: usize) -> Option<*mut u8> {
        let end = (offset as usize).checked_add(len)?;
        // SAFETY: offset..end is inside the mapping.
        (end <= self.size).then(|| unsafe { self.base.as_ptr().add(offset as usize) })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in create; no Ring outlives the Region (they borrow it).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

/// One ring's header and descriptors in the region (2^log2 slots, log2 <= 14), borrowed from
/// the Region so that it cannot outlive the mapping.
pub struct Ring<'a> {
    hdr: *mut u8,
    mask: u16,
    _region: PhantomData<&'a Region>,
}

impl Ring<'_> {
    pub fn slots(&self) -> u16 {
        self.mask + 1
    }
    fn atomic(&self, at: usize) -> &AtomicU16 {
        // SAFETY: `at` is one of the 2-byte-aligned u16 fields of the header, inside the
        // mapping; the peer only ever accesses it atomically too (rte_eth_memif.c uses
        // __atomic_load_n/__atomic_store_n on head and tail).
        unsafe { AtomicU16::from_ptr(self.hdr.add(at).cast()) }
    }
    /// The index the producer advances: the client for C2S, the receiving client for S2C
    /// (it hands empty buffers to the server).
    pub fn head(&self) -> &AtomicU16 {
        self.atomic(RING_HEAD_AT)
    }
    /// The index the consumer advances: the server for C2S, the sending server for S2C.
    pub fn tail(&self) -> &AtomicU16 {
        self.atomic(RING_TAIL_AT)
    }
    /// MEMIF_RING_FLAG_MASK_INT lives here; the receiving side sets it.
    pub fn flags(&self) -> &AtomicU16 {
        self.atomic(RING_FLAGS_AT)
    }
    fn desc_ptr(&self, slot: u16) -> *mut Desc {
        // SAFETY: (slot & mask) < 2^log2, so the descriptor is inside the ring, which is
        // inside the mapping; descriptors are 16 bytes from a 128-aligned offset.
        unsafe {
            self.hdr
                .add(RING_DESC_AT)
                .cast::<Desc>()
                .add((slot & self.mask) as usize)
        }
    }
    /// Reads a descriptor this side owns (between the indices that the protocol gives it).
    pub fn desc(&self, slot: u16) -> Desc {
        // SAFETY: in bounds (desc_ptr) and owned by us: the Acquire load of the index that
        // handed it over ordered the peer's writes before this read.
        unsafe { self.desc_ptr(slot).read() }
    }
    /// Writes a descriptor this side owns; the Release store of the index that hands it over
    /// publishes the write.
    pub fn set_desc(&self, slot: u16, d: Desc) {
        // SAFETY: in bounds (desc_ptr) and owned by us until that Release store.
        unsafe { self.desc_ptr(slot).write(d) }
    }
}
