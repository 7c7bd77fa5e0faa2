//! Per-VM state shared between the VM's control thread (vfio-user server) and the pollers.
//!
//! A guest's data path has two halves, each behind its own lock so that an RX poller and a TX
//! poller never contend: `Guest::rx` (RX rings, flow rules, interrupt fds) and `Guest::tx` (TX
//! rings). Each half holds its own view of the guest's DMA map (shared regions). The control
//! thread changes a half only while holding its lock, and changes the DMA map only while holding
//! both (TX first, then RX; pollers take one at a time, so there is no lock-order cycle). A
//! poller holds a lock for one bounded batch and never while it sleeps, so a DMA unmap waits at
//! most one batch, and no poller ever touches a region after the control thread removed it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
// SAFETY: &DmaRegion only exposes the address (via translate) and immutable metadata; who may
// touch the bytes is governed by the guest locks.
unsafe impl Sync for DmaRegion {}

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

/// When set, unmapped guest memory is replaced by an inaccessible reservation instead of being
/// returned to the system, so any use after unmap faults at once instead of silently reaching
/// whatever the kernel maps there next (a test aid: address space is not reused).
pub static GUARD_UNMAPPED: AtomicBool = AtomicBool::new(false);

impl Drop for DmaRegion {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr().cast();
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

/// The guest's DMA address space as the host sees it. Cloning shares the regions.
#[derive(Default, Clone)]
pub struct GuestMem {
    regions: Vec<Arc<DmaRegion>>,
}

impl GuestMem {
    /// Adds a region; refuses overlaps with existing ones.
    pub fn add(&mut self, r: Arc<DmaRegion>) -> Result<(), String> {
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

/// Counters kept inside a locked path: plain integers, updated by whoever holds the lock (no
/// atomic read-modify-write on the hot path, which would also wait for every preceding store
/// into guest memory to drain). Indexed by `StatsIndex`.
#[derive(Default, Clone, Copy)]
pub struct PathStats(pub [u64; STATS_COUNT]);

impl PathStats {
    #[inline]
    pub fn add(&mut self, i: StatsIndex, v: u64) {
        self.0[i as usize] += v;
    }
}

/// The RX half of a guest's data path, guarded by `Guest::rx`.
#[derive(Default)]
pub struct RxPath {
    /// RX counters (survive resets and reconnects: they describe the VM slot).
    pub stats: PathStats,
    /// Set by Start, cleared by Stop/Reset/disconnect.
    pub running: bool,
    pub mem: GuestMem,
    pub queues: Vec<Option<HostQueue>>,
    /// Guest flow rules, matched in order on frames already steered to this guest.
    pub rules: Vec<(FlowHandle, FlowRule)>,
    /// MSI-X vector eventfds (vector n = RX queue n).
    pub irq_fds: Vec<Option<File>>,
}

/// The TX half of a guest's data path, guarded by `Guest::tx`.
#[derive(Default)]
pub struct TxPath {
    /// TX counters (survive resets and reconnects).
    pub stats: PathStats,
    pub running: bool,
    pub mem: GuestMem,
    pub queues: Vec<Option<HostQueue>>,
}

/// Drops queues whose ring overlaps `[iova, iova+len)`; returns how many.
fn drop_queues_in(queues: &mut [Option<HostQueue>], iova: u64, len: u64) -> usize {
    let mut n = 0;
    for q in queues.iter_mut() {
        if q.as_ref().is_some_and(|h| {
            h.ring_iova < iova.saturating_add(len) && iova < h.ring_iova + h.ring_len
        }) {
            *q = None;
            n += 1;
        }
    }
    n
}

/// Counters the control thread updates (refused requests), read by anyone.
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
    pub rx: Mutex<RxPath>,
    pub tx: Mutex<TxPath>,
    /// Wakes the poller that serves this guest's TX queues (kicks, start).
    pub tx_wake: Arc<vmm_sys_util::eventfd::EventFd>,
    /// BAR2, shared with the guest: queue flags live here.
    pub data_bar: Arc<SharedRegion>,
    /// A driver has negotiated with the device since the last reset or disconnect.
    pub attached: std::sync::atomic::AtomicBool,
    /// Times a driver attached to this slot.
    pub attaches: AtomicU64,
}

impl Guest {
    /// Runs `f` with both halves locked (TX first, then RX: the one lock order).
    pub fn with_both<R>(&self, f: impl FnOnce(&mut TxPath, &mut RxPath) -> R) -> R {
        let mut tx = self.tx.lock();
        let mut rx = self.rx.lock();
        f(&mut tx, &mut rx)
    }

    pub fn set_running(&self, on: bool) {
        self.with_both(|tx, rx| {
            tx.running = on;
            rx.running = on;
        });
    }

    /// Adds a DMA region to both halves' maps.
    pub fn map_region(&self, r: DmaRegion) -> Result<(), String> {
        let r = Arc::new(r);
        self.with_both(|tx, rx| {
            tx.mem.add(r.clone())?;
            rx.mem.add(r)
        })
    }

    /// Removes DMA regions inside `[iova, iova+len)`. Rings inside the range are dropped and
    /// the device stops: a ring must not outlive its memory. Returns the rings dropped.
    pub fn unmap_range(&self, iova: u64, len: u64) -> usize {
        self.with_both(|tx, rx| {
            let n = drop_queues_in(&mut tx.queues, iova, len)
                + drop_queues_in(&mut rx.queues, iova, len);
            if n > 0 {
                tx.running = false;
                rx.running = false;
            }
            tx.mem.remove(iova, len);
            rx.mem.remove(iova, len);
            n
        })
    }

    /// Back to a device with nothing: no queues, rules, DMA maps or interrupt fds (counters
    /// stay: they describe the VM slot).
    pub fn clear(&self) {
        self.with_both(|tx, rx| {
            *tx = TxPath {
                stats: tx.stats,
                ..Default::default()
            };
            *rx = RxPath {
                stats: rx.stats,
                ..Default::default()
            };
        });
    }

    /// All counters of this VM slot, indexed by `StatsIndex`.
    pub fn stats_snapshot(&self) -> [u64; STATS_COUNT] {
        let mut s = self.stats.snapshot();
        let (t, r) = (self.tx.lock().stats.0, self.rx.lock().stats.0);
        for i in 0..STATS_COUNT {
            s[i] += t[i] + r[i];
        }
        s
    }

    pub fn dma_regions(&self) -> usize {
        self.rx.lock().mem.len()
    }

    pub fn running(&self) -> bool {
        self.rx.lock().running
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
            mem.add(Arc::new(region(0x10000, 0x2000, true))).unwrap();
            mem.add(Arc::new(region(0x20000, 0x1000, false))).unwrap();
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
        mem.add(Arc::new(region(0x10000, 0x2000, true))).unwrap();
        assert!(mem.add(Arc::new(region(0x11000, 0x2000, true))).is_err());
        assert_eq!(mem.remove(0x10000, 0x2000), 1);
        assert!(mem.is_empty());
    }
}
