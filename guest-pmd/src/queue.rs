//! Guest RX and TX queues over the ownership-passing ring (see `vdpdk_core::abi::desc`).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use vdpdk_core::abi::desc::{Desc, RingPtr, DESC_F_AVAIL, DESC_F_ERROR};
use vdpdk_core::abi::{self};
use vdpdk_core::{
    DmaMemory, Mbuf, MbufFifo, Mempool, ParkedMbuf, QueueCounters, Result, RxQueue, TxQueue,
};
use vdpdk_pci::{MappedBar, PciDevice};
use vmm_sys_util::eventfd::EventFd;

use crate::DmaMaps;

/// A flag word in the data BAR.
fn bar_flag(bar: &MappedBar, off: usize) -> &AtomicU32 {
    let p = bar.at(off, 4).expect("flag inside the data BAR");
    // SAFETY: 4-byte aligned (flag offsets are multiples of 64 plus 0) and in bounds; an
    // atomic tolerates the host writing the word concurrently.
    unsafe { AtomicU32::from_ptr(p.cast()) }
}

/// An RX queue of a vDPDK port: keeps its ring stocked with empty buffers from its pool and
/// returns the ones the host filled.
pub struct GuestRxQueue {
    ring: RingPtr,
    /// Keeps the ring memory alive as long as the queue (the port may go first).
    _ring_mem: Arc<DmaMemory>,
    size: u16,
    /// Next slot to post an empty buffer to.
    head: u16,
    /// Next slot the host completes.
    tail: u16,
    /// The buffers of the descriptors `tail..head`, in ring order.
    posted: MbufFifo,
    pool: Mempool,
    cache: Vec<Mbuf>,
    counters: Arc<QueueCounters>,
    bar: Arc<MappedBar>,
    qid: u16,
    irq: Arc<EventFd>,
    /// The host publishes its progress (`Features::RX_DONE_INDEX`): a burst reads one word,
    /// then the completed descriptors, instead of testing each one's flags in turn.
    done_index: bool,
    /// The direct ring (`Features::RX_ZERO_COPY`): its buffers go to the NIC queue of this
    /// VM, which writes frames straight into them.
    direct: Option<Box<DirectRing>>,
}

/// An RX queue's direct ring (`Features::RX_ZERO_COPY`): stocked with empty buffers like the
/// queue's own ring, completed in the NIC's order, progress published as
/// `RXQ_DIRECT_DONE_INDEX`.
struct DirectRing {
    ring: RingPtr,
    _ring_mem: Arc<DmaMemory>,
    size: u16,
    head: u16,
    tail: u16,
    /// The buffers of the descriptors `tail..head`, in ring order.
    posted: MbufFifo,
}

impl GuestRxQueue {
    pub(crate) fn new(
        ring: Arc<DmaMemory>,
        size: u16,
        pool: Mempool,
        counters: Arc<QueueCounters>,
        bar: Arc<MappedBar>,
        qid: u16,
        irq: Arc<EventFd>,
    ) -> GuestRxQueue {
        GuestRxQueue {
            // SAFETY: the ring memory holds `size` descriptors and lives as long as `_ring_mem`.
            ring: unsafe { RingPtr::new(ring.as_ptr(), size) },
            _ring_mem: ring,
            size,
            head: 0,
            tail: 0,
            posted: MbufFifo::with_capacity(size as usize),
            pool,
            cache: Vec::with_capacity(64),
            counters,
            bar,
            qid,
            irq,
            done_index: false,
            direct: None,
        }
    }

    /// Reads completions by the host's published index (`Features::RX_DONE_INDEX` was agreed).
    pub(crate) fn complete_by_done_index(mut self, on: bool) -> GuestRxQueue {
        self.done_index = on;
        self
    }

    /// Adds the direct ring of `size` descriptors in `ring` (set up on the device with
    /// `CtrlOp::RxqDirectSetup`; needs the done index).
    pub(crate) fn with_direct_ring(mut self, ring: Arc<DmaMemory>, size: u16) -> GuestRxQueue {
        debug_assert!(self.done_index, "RX_ZERO_COPY comes with RX_DONE_INDEX");
        self.direct = Some(Box::new(DirectRing {
            // SAFETY: the ring memory holds `size` descriptors and lives as long as `_ring_mem`.
            ring: unsafe { RingPtr::new(ring.as_ptr(), size) },
            _ring_mem: ring,
            size,
            head: 0,
            tail: 0,
            posted: MbufFifo::with_capacity(size as usize),
        }));
        self
    }

    /// Takes up to `max` frames the NIC wrote into direct-ring buffers; returns (frames,
    /// bytes). Stocks the ring again.
    #[inline(never)]
    fn direct_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> (usize, u64) {
        let Some(d) = self.direct.as_deref_mut() else {
            return (0, 0);
        };
        let line = abi::rxq_flags_offset(self.qid);
        let done = bar_flag(&self.bar, line + abi::RXQ_DIRECT_DONE_INDEX).load(Ordering::Acquire);
        let posted = d.head.wrapping_sub(d.tail) as usize;
        let ready = (done as u16).wrapping_sub(d.tail) as usize;
        // The host cannot have filled buffers it was never given: not believed.
        let ready = if ready > posted { 0 } else { ready.min(max) };
        let (mut n, mut bytes) = (0, 0u64);
        // The completed descriptors' lines, which the host just wrote, all in flight at once
        // rather than one miss per line as the loop reaches it: 64 B zero-copy RX 1.05-1.07,
        // `rx_burst` 24-27 -> 20-21 ns per frame (docs/BENCH.md, session 15). Not on the
        // queue's own ring: there the guest waits for the poller's copies, and its shorter
        // bursts gained nothing (G2G 0.96-0.99).
        d.ring.prefetch_completed(d.tail, ready as u16);
        for _ in 0..ready {
            let desc = d.ring.read_completed(d.tail);
            d.tail = d.tail.wrapping_add(1);
            if let Some(b) = take_completed(&desc, &mut d.posted, out, self.qid, &self.counters) {
                bytes += b;
                n += 1;
            }
        }
        self.fill_direct();
        (n, bytes)
    }

    /// Posts empty buffers into every free slot of the direct ring.
    fn fill_direct(&mut self) {
        let Some(d) = self.direct.as_deref_mut() else {
            return;
        };
        while d.head.wrapping_sub(d.tail) < d.size {
            let to = (&d.ring, &mut d.head, &mut d.posted);
            if !post_empty(to, &mut self.cache, &self.pool, &self.counters) {
                break;
            }
        }
    }

    /// How many descriptors from `tail` on the host has completed, at most `max`: from the
    /// published index, or by testing flags one by one.
    fn ready(&self, max: usize) -> usize {
        let posted = self.head.wrapping_sub(self.tail) as usize;
        if self.done_index {
            let line = abi::rxq_flags_offset(self.qid);
            let done = bar_flag(&self.bar, line + abi::RXQ_DONE_INDEX).load(Ordering::Acquire);
            let n = (done as u16).wrapping_sub(self.tail) as usize;
            // The host cannot have filled buffers it was never given: not believed.
            return if n > posted { 0 } else { n.min(max) };
        }
        let mut n = 0;
        while n < max.min(posted) {
            if self.ring.flags(self.tail.wrapping_add(n as u16)) & DESC_F_AVAIL != 0 {
                break;
            }
            n += 1;
        }
        n
    }

    fn intr_flag(&self) -> &AtomicU32 {
        bar_flag(
            &self.bar,
            abi::rxq_flags_offset(self.qid) + abi::RXQ_FLAG_INTR_ARMED,
        )
    }

    /// Posts empty buffers into every free slot (of the direct ring too).
    pub(crate) fn fill(&mut self) {
        self.fill_direct();
        while self.head.wrapping_sub(self.tail) < self.size {
            let to = (&self.ring, &mut self.head, &mut self.posted);
            if !post_empty(to, &mut self.cache, &self.pool, &self.counters) {
                break;
            }
        }
    }

    fn completed(&self) -> bool {
        let direct = self
            .direct
            .as_ref()
            .is_some_and(|d| d.head != d.tail && d.ring.flags(d.tail) & DESC_F_AVAIL == 0);
        direct || (self.head != self.tail && self.ring.flags(self.tail) & DESC_F_AVAIL == 0)
    }
}

/// Hands the buffer of completed descriptor `d` (the oldest posted, at the front of
/// `posted`) to `out` as a received frame of queue `qid`; returns its bytes, or None (counted
/// in `errors`, the buffer freed) when the host refused it or its length does not fit.
#[inline(always)]
fn take_completed(
    d: &Desc,
    posted: &mut MbufFifo,
    out: &mut Vec<Mbuf>,
    qid: u16,
    counters: &QueueCounters,
) -> Option<u64> {
    // Moved into place first and filled in there: filling a copy on the stack and then
    // moving it read back the fields just written in pieces, a store-forwarding stall per
    // frame (a third of rx_burst at 64 B).
    let m = posted
        .pop_into(out)
        .expect("one buffer per posted descriptor");
    if d.flags & DESC_F_ERROR != 0 || m.set_len(d.len as usize).is_err() {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        out.pop();
        return None;
    }
    d.rx_apply_to(m);
    m.queue = qid;
    Some(d.len as u64)
}

/// Posts one empty buffer, from `cache` (refilled from `pool`), at the head of a ring (`to`:
/// the ring, its head, the buffers of its posted descriptors); false when the pool is dry
/// (counted in `nombuf`).
#[inline(always)]
fn post_empty(
    (ring, head, posted): (&RingPtr, &mut u16, &mut MbufFifo),
    cache: &mut Vec<Mbuf>,
    pool: &Mempool,
    counters: &QueueCounters,
) -> bool {
    if cache.is_empty() && pool.alloc_bulk(cache, 64) == 0 {
        counters.nombuf.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    // Fresh from alloc_bulk: nothing to reset.
    let m = cache.last().expect("cache refilled");
    let d = Desc {
        addr: m.data_iova(),
        len: m.data_room().min(u16::MAX as usize) as u16,
        flags: DESC_F_AVAIL,
        ..Default::default()
    };
    // Never full here: it holds one buffer per descriptor `tail..head`.
    let pushed = posted.push_from(cache);
    debug_assert!(pushed);
    ring.publish(*head, &d);
    *head = head.wrapping_add(1);
    true
}

impl RxQueue for GuestRxQueue {
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let (mut n, mut bytes) = (0, 0u64);
        for _ in 0..self.ready(max) {
            let d = self.ring.read_completed(self.tail);
            self.tail = self.tail.wrapping_add(1);
            if let Some(b) = take_completed(&d, &mut self.posted, out, self.qid, &self.counters) {
                bytes += b;
                n += 1;
            }
        }
        // The direct ring after the queue's own: when the host starts lending, the frames
        // it copied before are older than the first the NIC wrote in place.
        if self.direct.is_some() && n < max {
            let (k, b) = self.direct_burst(out, max - n);
            n += k;
            bytes += b;
        }
        if n > 0 {
            self.counters.add(n as u64, bytes);
        }
        if self.head.wrapping_sub(self.tail) < self.size {
            self.fill();
        }
        n
    }

    fn enable_intr(&mut self) -> Result<()> {
        self.intr_flag().store(1, Ordering::SeqCst);
        // Pairs with the host's fence between completing descriptors and reading the flag:
        // either the host sees the flag, or we see its completion here.
        fence(Ordering::SeqCst);
        if self.completed() {
            self.intr_flag().store(0, Ordering::SeqCst);
            let _ = self.irq.write(1);
        }
        Ok(())
    }

    fn disable_intr(&mut self) -> Result<()> {
        self.intr_flag().store(0, Ordering::SeqCst);
        let _ = self.irq.read(); // clear a pending wake-up (non-blocking fd)
        Ok(())
    }

    fn intr_fd(&self) -> Option<RawFd> {
        Some(self.irq.as_raw_fd())
    }
}

/// A TX queue of a vDPDK port: posts frames into its ring, frees them once the host copied
/// them, and kicks the host when it asked for a kick.
pub struct GuestTxQueue {
    ring: RingPtr,
    _ring_mem: Arc<DmaMemory>,
    size: u16,
    head: u16,
    tail: u16,
    /// The buffers posted and not yet taken back, parked: 16 bytes each to write and read
    /// back where a whole mbuf is 80.
    slots: Vec<Option<ParkedMbuf>>,
    done: Vec<ParkedMbuf>,
    counters: Arc<QueueCounters>,
    bar: Arc<MappedBar>,
    qid: u16,
    dev: Arc<dyn PciDevice>,
    maps: Arc<Mutex<DmaMaps>>,
    /// Last pool seen mapped: skips the map lookup for the common single-pool case.
    last_pool: u32,
    /// The host publishes its progress (`Features::TX_DONE_INDEX`): reclaim reads one word
    /// per burst instead of every descriptor's flags.
    done_index: bool,
    /// The host's `TXQ_REFUSED` count as last read.
    refused_seen: u32,
}

impl GuestTxQueue {
    pub(crate) fn new(
        ring: Arc<DmaMemory>,
        size: u16,
        counters: Arc<QueueCounters>,
        bar: Arc<MappedBar>,
        qid: u16,
        dev: Arc<dyn PciDevice>,
        maps: Arc<Mutex<DmaMaps>>,
    ) -> GuestTxQueue {
        GuestTxQueue {
            // SAFETY: the ring memory holds `size` descriptors and lives as long as `_ring_mem`.
            ring: unsafe { RingPtr::new(ring.as_ptr(), size) },
            _ring_mem: ring,
            size,
            head: 0,
            tail: 0,
            slots: (0..size).map(|_| None).collect(),
            done: Vec::with_capacity(size as usize),
            counters,
            bar,
            qid,
            dev,
            maps,
            last_pool: 0,
            done_index: false,
            refused_seen: 0,
        }
    }

    /// Reclaims by the host's published index (`Features::TX_DONE_INDEX` was agreed).
    pub(crate) fn reclaim_by_done_index(mut self, on: bool) -> GuestTxQueue {
        self.done_index = on;
        self
    }

    /// Posts by laps (`Features::TX_LAPS` was agreed, and with it the done index): the host
    /// never writes the ring. The ring is fresh, zeroed memory, as laps need.
    pub(crate) fn post_by_laps(mut self, on: bool) -> GuestTxQueue {
        debug_assert!(!on || self.done_index, "TX_LAPS comes with TX_DONE_INDEX");
        self.ring = self.ring.with_laps(on);
        self
    }

    /// Takes back descriptors the host finished with.
    fn reclaim(&mut self) {
        if self.done_index {
            return self.reclaim_to_done_index();
        }
        let mask = self.size - 1;
        while self.tail != self.head {
            let f = self.ring.flags(self.tail);
            if f & DESC_F_AVAIL != 0 {
                break;
            }
            if f & DESC_F_ERROR != 0 {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(m) = self.slots[(self.tail & mask) as usize].take() {
                self.done.push(m);
            }
            self.tail = self.tail.wrapping_add(1);
        }
        if !self.done.is_empty() {
            Mempool::free_parked(self.done.drain(..));
        }
    }

    /// Takes back every descriptor before the host's published `TXQ_DONE_INDEX`. The word
    /// sits in the line that also holds the kick request, which a burst reads anyway.
    fn reclaim_to_done_index(&mut self) {
        let line = abi::txq_flags_offset(self.qid);
        let done = bar_flag(&self.bar, line + abi::TXQ_DONE_INDEX).load(Ordering::Acquire) as u16;
        let n = done.wrapping_sub(self.tail);
        // The host cannot have finished descriptors it was never given: a value beyond our
        // head is not believed (and nothing is freed that the host may still read).
        if n == 0 || n > self.head.wrapping_sub(self.tail) {
            return;
        }
        let refused = bar_flag(&self.bar, line + abi::TXQ_REFUSED).load(Ordering::Relaxed);
        let new_refused = refused.wrapping_sub(self.refused_seen);
        if new_refused != 0 {
            self.refused_seen = refused;
            self.counters
                .errors
                .fetch_add(new_refused as u64, Ordering::Relaxed);
        }
        // Straight from the slots back to the pool: a stop in a vector on the way cost a copy
        // of each mbuf.
        let (mask, tail) = (self.size - 1, self.tail);
        let slots = &mut self.slots;
        Mempool::free_parked(
            (0..n).filter_map(|k| slots[(tail.wrapping_add(k) & mask) as usize].take()),
        );
        self.tail = tail.wrapping_add(n);
    }

    /// Whether a burst of `want` frames takes back what the host finished first: once
    /// [`TX_RECLAIM_HELD`] descriptors (at most half the ring) are posted and not taken back,
    /// when the ring has no room for the burst, or when the burst is empty (an application
    /// flushing). Reading the host's progress on every burst found its line just written by
    /// the host nearly every time, a cross-core miss per burst.
    #[inline(always)]
    fn reclaim_due(&self, want: usize) -> bool {
        let held = self.head.wrapping_sub(self.tail);
        held >= TX_RECLAIM_HELD.min(self.size / 2)
            || ((self.size - held) as usize) < want
            || want == 0
    }

    fn ensure_mapped(&mut self, m: &Mbuf) -> bool {
        let id = m.pool_id();
        if id == self.last_pool {
            return true;
        }
        if self.maps.lock().ensure(&m.pool()).is_err() {
            return false;
        }
        self.last_pool = id;
        true
    }
}

/// Descriptors a TX queue holds posted before a burst takes back the finished ones (see
/// [`GuestTxQueue::reclaim_due`]): four bursts, so the application's buffers come back
/// in big batches and never many more than that wait in the ring for it.
const TX_RECLAIM_HELD: u16 = 128;

/// Longest a TX queue being dropped waits for the host to take the frames still posted.
const TX_DRAIN: std::time::Duration = std::time::Duration::from_millis(200);

impl Drop for GuestTxQueue {
    /// Frames `tx_burst` accepted leave before the queue goes: an application that sends its
    /// last burst and exits (closing the device, whose reset drops the ring) loses nothing
    /// the host could still take. The wait is bounded: a stopped device takes nothing, and
    /// what is left goes back to its pool with the queue.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + TX_DRAIN;
        while self.host_behind() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
}

impl GuestTxQueue {
    /// Whether the host has not yet released every descriptor posted (it releases in ring
    /// order, so the last one tells). Apart from `reclaim`, which stays `tx_burst`'s alone:
    /// a second caller got it compiled out of line there, 8% of 64 B TX.
    fn host_behind(&self) -> bool {
        if self.head == self.tail {
            return false;
        }
        if self.done_index {
            let line = abi::txq_flags_offset(self.qid);
            let done = bar_flag(&self.bar, line + abi::TXQ_DONE_INDEX).load(Ordering::Acquire);
            return done as u16 != self.head;
        }
        self.ring.posted(self.head.wrapping_sub(1))
    }
}

impl TxQueue for GuestTxQueue {
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        if self.reclaim_due(pkts.len()) {
            self.reclaim();
        }
        let free = (self.size - self.head.wrapping_sub(self.tail)) as usize;
        let n = free.min(pkts.len());
        if n == 0 {
            return 0;
        }
        let mask = self.size - 1;
        let mut bytes = 0u64;
        let mut sent = 0;
        for m in pkts.drain(..n) {
            if !self.ensure_mapped(&m) {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                continue; // the mbuf is freed; its memory cannot reach the device
            }
            let t = m.tx_offload;
            let d = Desc {
                addr: m.data_iova(),
                len: m.len() as u16,
                flags: self.ring.avail_bit(self.head),
                ol_flags: Desc::tx_ol_from(&m),
                tso_segsz: t.tso_segsz,
                l2_len: t.l2_len,
                l3_len: t.l3_len,
                l4_len: t.l4_len,
                ..Default::default()
            };
            // Header lengths or a segment size wider than the descriptor's fields: refused,
            // not sent with a request the application did not make.
            if !d.fits_posted() {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // One descriptor carries one buffer: the port offers no MULTI_SEGS, and a chain
            // is refused rather than sent truncated.
            let Ok(parked) = m.park() else {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            bytes += d.len as u64;
            self.ring.publish(self.head, &d);
            self.slots[(self.head & mask) as usize] = Some(parked);
            self.head = self.head.wrapping_add(1);
            sent += 1;
        }
        self.counters.add(sent as u64, bytes);
        // The lines of the next burst's descriptors (as many as this one, and only slots the
        // host is done with: the rest it has yet to read), which the host read a lap ago, are
        // fetched for writing now, while the application makes its next frames: the burst's
        // stores then find them owned (docs/BENCH.md, session 15: tx_burst -15% per frame).
        let free = self.size - self.head.wrapping_sub(self.tail);
        self.ring
            .prefetch_next_for_write(self.head, (n as u16).min(free));
        // Pairs with the host's fence after raising the kick request before its last poll.
        fence(Ordering::SeqCst);
        let kick = bar_flag(
            &self.bar,
            abi::txq_flags_offset(self.qid) + abi::TXQ_FLAG_KICK_WANTED,
        );
        if kick.load(Ordering::SeqCst) != 0 {
            kick.store(0, Ordering::SeqCst);
            let _ = self
                .dev
                .bar_write32(abi::SIGNAL_BAR, abi::REG_TX_KICK, self.qid as u32);
        }
        n
    }
}
