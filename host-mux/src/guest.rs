//! Per-VM state shared between the VM's control thread (vfio-user server) and the poller.
//!
//! The control thread changes a guest's data path (DMA map, queues, rules, interrupt fds) only
//! while holding `Guest::dp`; the poller holds the same lock for one bounded batch at a time and
//! never while it sleeps, so a DMA unmap waits at most one batch and no poller ever touches a
//! region after the control thread removed it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use vdpdk_core::abi::desc::RingPtr;
use vdpdk_core::abi::{StatsIndex, STATS_COUNT};
use vdpdk_core::{FlowHandle, FlowRule, MacAddr};

use crate::shm::SharedRegion;

/// One DMA_MAP'ed range of guest memory, mapped into this process.
pub struct DmaRegion {
    pub iova: u64,
    pub len: u64,
    pub writable: bool,
    ptr: NonNull<u8>,
    map_len: usize,
}

// SAFETY: the mapping is owned by this value; accesses go through raw pointers.
unsafe impl Send for DmaRegion {}

impl DmaRegion {
    /// Maps `len` bytes of `fd` at `offset` (the guest's DMA_MAP request).
    pub fn map(
        fd: &File,
        offset: u64,
        iova: u64,
        len: u64,
        writable: bool,
    ) -> std::io::Result<Self> {
        if len == 0 || iova.checked_add(len).is_none() || len > isize::MAX as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "DMA range is empty or wraps",
            ));
        }
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
        Ok(DmaRegion {
            iova,
            len,
            writable,
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            map_len: len as usize,
        })
    }

    fn overlaps(&self, iova: u64, len: u64) -> bool {
        iova < self.iova + self.len && self.iova < iova.saturating_add(len)
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: ptr/map_len are our mmap; the owner guarantees no pointer into it is used
        // after this (pollers only translate under the guest lock).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

/// The guest's DMA address space as the host sees it.
#[derive(Default)]
pub struct GuestMem {
    regions: Vec<DmaRegion>,
}

impl GuestMem {
    /// Adds a region; refuses overlaps with existing ones.
    pub fn add(&mut self, r: DmaRegion) -> Result<(), String> {
        if self.regions.iter().any(|x| x.overlaps(r.iova, r.len)) {
            return Err(format!(
                "DMA map {:#x}+{:#x} overlaps an existing mapping",
                r.iova, r.len
            ));
        }
        self.regions.push(r);
        Ok(())
    }

    /// Removes every region inside `[iova, iova+len)`; returns how many.
    pub fn remove(&mut self, iova: u64, len: u64) -> usize {
        let before = self.regions.len();
        self.regions
            .retain(|r| !(r.iova >= iova && r.iova + r.len <= iova.saturating_add(len)));
        before - self.regions.len()
    }

    pub fn clear(&mut self) {
        self.regions.clear();
    }

    pub fn len(&self) -> usize {
        self.regions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Host pointer for `[iova, iova+len)` if it lies wholly in one region (and that region is
    /// writable when `write` is asked). The pointer is valid while the caller holds the guest
    /// lock that protects this map.
    #[inline]
    pub fn translate(&self, iova: u64, len: u64, write: bool) -> Option<*mut u8> {
        let end = iova.checked_add(len)?;
        for r in &self.regions {
            if iova >= r.iova && end <= r.iova + r.len {
                if write && !r.writable {
                    return None;
                }
                // SAFETY: iova - r.iova + len <= r.len, so the offset is inside the mapping.
                return Some(unsafe { r.ptr.as_ptr().add((iova - r.iova) as usize) });
            }
        }
        None
    }
}

/// A guest queue the host serves: its ring (translated once at setup) and the host's index.
pub struct HostQueue {
    pub ring: RingPtr,
    pub ring_iova: u64,
    pub ring_len: u64,
    pub next: u16,
}

/// Everything the poller needs about one guest, guarded by `Guest::dp`.
#[derive(Default)]
pub struct DataPath {
    /// Set by Start, cleared by Stop/Reset/disconnect.
    pub running: bool,
    pub mem: GuestMem,
    pub rxq: Vec<Option<HostQueue>>,
    pub txq: Vec<Option<HostQueue>>,
    /// Guest flow rules, matched in order on frames already steered to this guest.
    pub rules: Vec<(FlowHandle, FlowRule)>,
    /// MSI-X vector eventfds (vector n = RX queue n).
    pub irq_fds: Vec<Option<File>>,
}

impl DataPath {
    /// Drops queues whose ring lies in `[iova, iova+len)` (about to be unmapped); returns how many.
    pub fn drop_queues_in(&mut self, iova: u64, len: u64) -> usize {
        let mut n = 0;
        for q in self.rxq.iter_mut().chain(self.txq.iter_mut()) {
            if q.as_ref().is_some_and(|h| {
                h.ring_iova < iova.saturating_add(len) && iova < h.ring_iova + h.ring_len
            }) {
                *q = None;
                n += 1;
            }
        }
        if n > 0 {
            self.running = false;
        }
        n
    }
}

/// Counters of one guest, updated by the poller and the control thread, read by anyone.
#[derive(Default)]
pub struct GuestStats {
    c: [AtomicU64; STATS_COUNT],
}

impl GuestStats {
    #[inline]
    pub fn add(&self, i: StatsIndex, v: u64) {
        self.c[i as usize].fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self, i: StatsIndex) -> u64 {
        self.c[i as usize].load(Ordering::Relaxed)
    }
    pub fn snapshot(&self) -> [u64; STATS_COUNT] {
        std::array::from_fn(|i| self.c[i].load(Ordering::Relaxed))
    }
}

/// One VM slot of the mux (exists from startup; a guest attaches and detaches over time).
pub struct Guest {
    pub name: String,
    pub mac: MacAddr,
    pub max_rxq: u16,
    pub max_txq: u16,
    pub stats: GuestStats,
    pub dp: Mutex<DataPath>,
    /// BAR2, shared with the guest: queue flags live here.
    pub data_bar: Arc<SharedRegion>,
    /// A driver has negotiated with the device since the last reset or disconnect.
    pub attached: std::sync::atomic::AtomicBool,
    /// Times a driver attached to this slot.
    pub attaches: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::fd::{AsFd, OwnedFd};

    fn region(iova: u64, len: u64, writable: bool) -> DmaRegion {
        let m = vdpdk_core::DmaMemory::alloc_with("t", len as usize, false).unwrap();
        let fd: OwnedFd = m.fd().as_fd().try_clone_to_owned().unwrap();
        DmaRegion::map(&File::from(fd), 0, iova, len, writable).unwrap()
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
            mem.add(region(0x10000, 0x2000, true)).unwrap();
            mem.add(region(0x20000, 0x1000, false)).unwrap();
            let inside = |base: u64, size: u64| {
                iova.checked_add(len).is_some_and(|end| iova >= base && end <= base + size)
            };
            let expect = inside(0x10000, 0x2000) || (!write && inside(0x20000, 0x1000));
            let got = mem.translate(iova, len, write);
            prop_assert_eq!(got.is_some(), expect);
        }
    }

    #[test]
    fn overlapping_maps_are_refused_and_unmap_drops_rings() {
        let mut mem = GuestMem::default();
        mem.add(region(0x10000, 0x2000, true)).unwrap();
        assert!(mem.add(region(0x11000, 0x2000, true)).is_err());
        assert_eq!(mem.remove(0x10000, 0x2000), 1);
        assert!(mem.is_empty());
    }
}
