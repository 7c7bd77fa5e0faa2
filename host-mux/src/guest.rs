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

use crate::config::GuestLimits;
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
    ///
    /// The file must be sealed against shrinking (F_SEAL_SHRINK, as memfds from QEMU's
    /// `memory-backend-memfd` and from guest-pmd are) and hold the whole range: a file that
    /// could shrink under the mapping would turn the next access into SIGBUS for the whole
    /// process, so an unsealed one is refused rather than trusted.
    pub fn map(
        fd: &File,
        offset: u64,
        iova: u64,
        len: u64,
        writable: bool,
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

    pub fn clear(&mut self) {
        self.regions.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.regions.len()
    }
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
    /// MSI-X vector eventfds (vector n = RX queue n), checked to be eventfds and switched to
    /// non-blocking when the guest handed them over. Shared so a poller can signal one after
    /// releasing this lock.
    pub irq_fds: Vec<Option<Arc<File>>>,
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
    /// What this VM may make host-mux hold.
    pub limits: GuestLimits,
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

    /// Maps `len` bytes of `fd` at `offset` as guest IOVA `iova` into both halves' maps,
    /// within this VM's limits (checked before anything is mapped).
    pub fn map_region(
        &self,
        fd: &File,
        offset: u64,
        iova: u64,
        len: u64,
        writable: bool,
    ) -> Result<(), String> {
        let (regions, bytes) = {
            let rx = self.rx.lock();
            (rx.mem.len(), rx.mem.bytes())
        };
        if regions >= self.limits.dma_regions {
            return Err(format!(
                "this VM already has {regions} DMA regions, the limit (limits.dma_regions)"
            ));
        }
        if bytes.saturating_add(len) > self.limits.dma_bytes {
            return Err(format!(
                "{bytes:#x} bytes mapped plus {len:#x} exceeds limits.dma_bytes ({:#x})",
                self.limits.dma_bytes
            ));
        }
        let r = Arc::new(
            DmaRegion::map(fd, offset, iova, len, writable)
                .map_err(|e| format!("mapping {iova:#x}+{len:#x}: {e}"))?,
        );
        self.with_both(|tx, rx| {
            // Both maps hold the same regions, so what one refuses the other refuses too.
            rx.mem.add(r.clone())?;
            tx.mem.add(r)
        })
    }

    /// Removes DMA regions inside `[iova, iova+len)` (refused, changing nothing, if the range
    /// cuts a region). Rings inside the range are dropped and the device stops: a ring must
    /// not outlive its memory. Returns the rings dropped.
    pub fn unmap_range(&self, iova: u64, len: u64) -> Result<usize, String> {
        self.with_both(|tx, rx| {
            rx.mem.remove(iova, len)?;
            tx.mem
                .remove(iova, len)
                .expect("both halves hold the same regions");
            let n = drop_queues_in(&mut tx.queues, iova, len)
                + drop_queues_in(&mut rx.queues, iova, len);
            if n > 0 {
                tx.running = false;
                rx.running = false;
            }
            Ok(n)
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
        let e = DmaRegion::map(&f, 0, 0x1000, 0x1000, true).err().unwrap();
        assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
        // A sealed file, but the range runs past its end.
        let m = vdpdk_core::DmaMemory::alloc_with("short", 0x1000, false).unwrap();
        let fd: OwnedFd = m.fd().as_fd().try_clone_to_owned().unwrap();
        let f = File::from(fd);
        let e = DmaRegion::map(&f, 0, 0x1000, 0x100000, true).err().unwrap();
        assert!(e.to_string().contains("past the end"), "{e}");
        let e = DmaRegion::map(&f, u64::MAX - 0xfff, 0x1000, 0x1000, true)
            .err()
            .unwrap();
        assert!(e.to_string().contains("past the end"), "{e}");
        assert!(DmaRegion::map(&f, 0, 0x1000, 0x1000, true).is_ok());
    }
}
