//! Per-VM state shared between the VM's control thread (vfio-user server) and the pollers.
//!
//! A guest's data path has two halves, each behind its own lock so that an RX poller and a TX
//! poller never contend: `Guest::rx` (RX rings, flow rules, interrupt fds) and `Guest::tx` (TX
//! rings). Each half holds its own view of the guest's DMA map (shared regions). The control
//! thread changes a half only while holding its lock, and changes the DMA map only while holding
//! both (TX first, then RX; pollers take one at a time, so there is no lock-order cycle). A
//! poller holds a lock for one bounded batch and never while it sleeps, so a DMA unmap waits at
//! most one batch, and no poller ever touches a region after the control thread removed it.
mod direct;
mod lend;
mod mem;

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use vdpdk_core::abi::desc::RingPtr;
use vdpdk_core::abi::{StatsIndex, STATS_COUNT};
use vdpdk_core::{FlowHandle, FlowRule, MacAddr};

use crate::config::GuestLimits;
use crate::shm::SharedRegion;
pub(crate) use direct::DirectRx;
pub use direct::LendControl;
pub(crate) use lend::{ZeroCopy, LEND_MIN_FRAME, LENT_HEADER};
pub(crate) use mem::GUARD_UNMAPPED;
pub use mem::{DmaRegion, GuestMem, GuestMemError, GuestSlice, MemFault};

/// A guest queue the host serves: its ring (translated once at setup) and the host's index.
pub struct HostQueue {
    /// The descriptor ring, inside a writable region of the guest's DMA map (the queue is
    /// dropped before that region is unmapped).
    pub ring: RingPtr,
    /// Guest IOVA of the ring.
    pub ring_iova: u64,
    /// Ring length in bytes (descriptors × 32).
    pub ring_len: u64,
    /// The next descriptor the host looks at (free-running, wraps with the ring's mask).
    pub(crate) next: u16,
    /// Descriptors released with `DESC_F_ERROR` since setup (TX: published as `TXQ_REFUSED`).
    pub(crate) refused: u32,
    /// RX: the `next` last published as `RXQ_DONE_INDEX`.
    pub(crate) published: u16,
    /// TX with `Features::TX_ZERO_COPY` agreed: descriptors whose payload is lent to the
    /// backend, released in ring order once it is done.
    pub(crate) zc: Option<ZeroCopy>,
}

impl HostQueue {
    /// A queue on `ring` (at guest IOVA `ring_iova`, `ring_len` bytes), at index 0.
    pub(crate) fn new(ring: RingPtr, ring_iova: u64, ring_len: u64, zc: Option<ZeroCopy>) -> Self {
        HostQueue {
            ring,
            ring_iova,
            ring_len,
            next: 0,
            refused: 0,
            published: 0,
            zc,
        }
    }

    /// Hands descriptor `idx` (the newest taken) back to the guest with `flags`, after every
    /// earlier one (some may still be lent to the backend).
    #[inline(always)]
    pub(crate) fn finish(&mut self, idx: u16, flags: u16) {
        match &mut self.zc {
            None => self.ring.release(idx, flags),
            Some(zc) => zc.finish(&self.ring, idx, flags),
        }
    }

    /// Whether the ring overlaps `[iova, iova+len)`.
    fn ring_in(&self, iova: u64, len: u64) -> bool {
        self.ring_iova < iova.saturating_add(len) && iova < self.ring_iova + self.ring_len
    }

    /// The next descriptor to be released to the guest (what `TXQ_DONE_INDEX` publishes).
    #[inline(always)]
    pub(crate) fn released(&self) -> u16 {
        self.zc.as_ref().map_or(self.next, |z| z.released)
    }
}

/// Counters kept inside a locked path: plain integers, updated by whoever holds the lock (no
/// atomic read-modify-write on the hot path, which would also wait for every preceding store
/// into guest memory to drain). Indexed by `StatsIndex`.
#[derive(Default, Clone, Copy)]
pub(crate) struct PathStats(pub(crate) [u64; STATS_COUNT]);

impl PathStats {
    #[inline]
    pub(crate) fn add(&mut self, i: StatsIndex, v: u64) {
        self.0[i as usize] += v;
    }
}

/// The RX half of a guest's data path, guarded by `Guest::rx`.
#[derive(Default)]
pub struct RxPath {
    /// RX counters (survive resets and reconnects: they describe the VM slot).
    pub(crate) stats: PathStats,
    /// Set by Start, cleared by Stop/Reset/disconnect.
    pub running: bool,
    /// This half's view of the guest's DMA map (the same regions as the TX half's).
    pub mem: GuestMem,
    /// RX queues by index (as many as configured; None until set up).
    pub queues: Vec<Option<HostQueue>>,
    /// Guest flow rules, matched in order on frames already steered to this guest.
    pub rules: Vec<(FlowHandle, FlowRule)>,
    /// MSI-X vector eventfds (vector n = RX queue n), checked to be eventfds and switched to
    /// non-blocking when the guest handed them over. Shared so a poller can signal one after
    /// releasing this lock.
    pub irq_fds: Vec<Option<Arc<File>>>,
    /// The driver agreed to `Features::RX_ZERO_COPY`: RX queue 0 may get a direct ring.
    pub zero_copy: bool,
    /// RX queue 0's direct ring, whose buffers are lent to the VM's dedicated backend queue.
    pub(crate) direct: Option<DirectRx>,
}

impl RxPath {
    /// Whether the poller may lend the direct ring's buffers to the backend now: frames go
    /// straight to queue 0 only while the guest runs and has no flow rules (a rule may send
    /// a frame elsewhere or drop it, which a buffer already written cannot follow).
    pub(crate) fn lending_allowed(&self) -> bool {
        self.running && self.rules.is_empty() && self.direct.is_some()
    }
}

/// The TX half of a guest's data path, guarded by `Guest::tx`.
#[derive(Default)]
pub struct TxPath {
    /// TX counters (survive resets and reconnects).
    pub(crate) stats: PathStats,
    /// Set by Start, cleared by Stop/Reset/disconnect (with the RX half's).
    pub running: bool,
    /// This half's view of the guest's DMA map (the same regions as the RX half's).
    pub mem: GuestMem,
    /// TX queues by index (as many as configured; None until set up).
    pub queues: Vec<Option<HostQueue>>,
    /// The driver agreed to `Features::TX_ZERO_COPY`: queues set up from now on lend.
    pub zero_copy: bool,
    /// The driver agreed to `Features::TX_LAPS`: rings set up from now on pass descriptors
    /// by laps and are never written here.
    pub laps: bool,
}

/// Drops queues whose ring overlaps `[iova, iova+len)`; returns how many.
fn drop_queues_in(queues: &mut [Option<HostQueue>], iova: u64, len: u64) -> usize {
    let mut n = 0;
    for q in queues.iter_mut() {
        if q.as_ref().is_some_and(|h| h.ring_in(iova, len)) {
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
    /// Adds `v` to counter `i`.
    #[inline]
    pub fn add(&self, i: StatsIndex, v: u64) {
        self.c[i as usize].fetch_add(v, Ordering::Relaxed);
    }
    /// Counter `i`.
    pub fn get(&self, i: StatsIndex) -> u64 {
        self.c[i as usize].load(Ordering::Relaxed)
    }
    /// Every counter, indexed by `StatsIndex`.
    pub fn snapshot(&self) -> [u64; STATS_COUNT] {
        std::array::from_fn(|i| self.c[i].load(Ordering::Relaxed))
    }
}

/// One VM slot of the mux (exists from startup; a guest attaches and detaches over time).
pub struct Guest {
    /// The VM's configured name.
    pub name: String,
    /// The VM's own MAC (steering target, spoof-check reference).
    pub mac: MacAddr,
    /// Most RX queues the guest may configure.
    pub max_rxq: u16,
    /// Most TX queues the guest may configure.
    pub max_txq: u16,
    /// Counters the control thread moves (refusals, interrupt errors).
    pub stats: GuestStats,
    /// The RX half of the data path (lock after `tx` when taking both).
    pub rx: Mutex<RxPath>,
    /// The TX half of the data path.
    pub tx: Mutex<TxPath>,
    /// Moves whenever the control plane changes either half (every change goes through
    /// `Guest::with_both`): a poller that looked at the TX rings without the lock knows its
    /// view is stale.
    pub tx_gen: AtomicU64,
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
    /// Offer zero-copy TX (`Features::TX_ZERO_COPY`): the backend can send lent buffers and
    /// the operator asked for it (`mux.zero_copy_tx`).
    pub zero_copy_tx: bool,
    /// Offer zero-copy RX (`Features::RX_ZERO_COPY`): the VM has a backend RX queue of its
    /// own that receives into lent buffers, and the operator asked for it
    /// (`mux.zero_copy_rx`).
    pub zero_copy_rx: bool,
    /// Wakes the poller that serves this VM's backend RX queue.
    pub rx_wake: Arc<vmm_sys_util::eventfd::EventFd>,
    /// Has that poller take lent RX buffers back before a control change.
    pub lend_ctl: LendControl,
    /// Maps this VM's DMA regions for the backend NIC too (zero-copy to a NIC behind an
    /// IOMMU: it reads and writes guest buffers in place).
    pub nic_dma: Option<Arc<dyn vdpdk_core::ExternalDma>>,
}

impl Guest {
    /// Runs `f` with both halves locked (TX first, then RX: the one lock order). With
    /// zero-copy RX offered, the poller first takes every lent RX buffer back from the
    /// backend and lends none until `f` is done: whatever `f` unmaps, stops or drops, the
    /// backend no longer writes into it.
    pub(crate) fn with_both<R>(&self, f: impl FnOnce(&mut TxPath, &mut RxPath) -> R) -> R {
        let _paused = self.zero_copy_rx.then(|| {
            let (guard, answered) = self.lend_ctl.pause(|| {
                let _ = self.rx_wake.write(1);
            });
            if !answered {
                log::warn!(
                    "{}: the RX poller did not give lent buffers back in time",
                    self.name
                );
            }
            guard
        });
        self.with_both_lending(f)
    }

    /// [`Guest::with_both`] for a change that takes nothing away (a DMA region added): lent
    /// buffers stay where they are. A VMM maps guest memory region by region at boot, and
    /// each take-back would wait for a poller round.
    fn with_both_lending<R>(&self, f: impl FnOnce(&mut TxPath, &mut RxPath) -> R) -> R {
        let mut tx = self.tx.lock();
        let mut rx = self.rx.lock();
        let r = f(&mut tx, &mut rx);
        self.tx_gen.fetch_add(1, Ordering::Release);
        r
    }

    pub(crate) fn set_running(&self, on: bool) {
        self.with_both(|tx, rx| {
            tx.running = on;
            rx.running = on;
        });
    }

    /// Maps `len` bytes of `fd` at `offset` as guest IOVA `iova` into both halves' maps,
    /// within this VM's limits (checked before anything is mapped).
    pub(crate) fn map_region(
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
            DmaRegion::map(fd, offset, iova, len, writable, self.nic_dma.as_ref())
                .map_err(|e| format!("mapping {iova:#x}+{len:#x}: {e}"))?,
        );
        self.with_both_lending(|tx, rx| {
            // Both maps hold the same regions, so what one refuses the other refuses too.
            rx.mem.add(r.clone())?;
            tx.mem.add(r)
        })
    }

    /// Removes DMA regions inside `[iova, iova+len)` (refused, changing nothing, if the range
    /// cuts a region). Rings inside the range are dropped and the device stops: a ring must
    /// not outlive its memory. Returns the rings dropped.
    pub(crate) fn unmap_range(&self, iova: u64, len: u64) -> Result<usize, String> {
        self.with_both(|tx, rx| {
            rx.mem.remove(iova, len)?;
            tx.mem
                .remove(iova, len)
                .expect("both halves hold the same regions");
            let mut n = drop_queues_in(&mut tx.queues, iova, len)
                + drop_queues_in(&mut rx.queues, iova, len);
            if rx.direct.as_ref().is_some_and(|d| d.q.ring_in(iova, len)) {
                rx.direct = None;
                n += 1;
            }
            if n > 0 {
                tx.running = false;
                rx.running = false;
            }
            Ok(n)
        })
    }

    /// Back to a device with nothing: no queues, rules, DMA maps or interrupt fds (counters
    /// stay: they describe the VM slot).
    pub(crate) fn clear(&self) {
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

    /// DMA regions mapped now.
    pub fn dma_regions(&self) -> usize {
        self.rx.lock().mem.len()
    }

    /// Whether the device is started (the pollers serve its queues).
    pub fn running(&self) -> bool {
        self.rx.lock().running
    }
}
