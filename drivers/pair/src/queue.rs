//! The queues a pair port hands out: RX pops its own ring (in lent mode copying each frame into
//! the next buffer posted to it), TX moves frames straight into the peer's rings.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vdpdk_core::mbuf::TxOffloadInfo;
use vdpdk_core::skeleton::LiveGuard;
use vdpdk_core::{
    Error, LentBuf, LentRx, Mbuf, Mempool, OlFlags, PacketType, QueueCounters, Result, RxQueue,
    TxQueue,
};

use crate::ring::{Inbox, RingSender, RxRing, RxSide};

/// An RX queue: pops frames the peer pushed into its ring of our [`RxSide`].
///
/// In lent mode (from the first [`RxQueue::post_lent`] to [`RxQueue::take_back_lent`]) it
/// pops no more frames than buffers are posted, copies each into the next posted buffer and
/// frees it; the rest wait in the ring, as frames wait for a NIC's descriptors.
pub(crate) struct PairRxQueue {
    pub side: Arc<RxSide>,
    pub qid: u16,
    pub port_id: u16,
    /// The descriptor count given to `rx_queue_setup`: the most lent buffers posted at once.
    pub nb_desc: usize,
    /// Lent buffers posted and not yet filled, oldest first. Room for `nb_desc` is reserved
    /// at the first post (queues that never lend pay nothing), so posting never allocates.
    pub lent: VecDeque<LentBuf>,
    /// Receiving into `lent` rather than handing out the ring's mbufs.
    pub lent_mode: bool,
    /// Frames popped in lent mode, reused (room for `nb_desc`) so bursts never allocate.
    pub popped: Vec<Mbuf>,
    pub counters: Arc<QueueCounters>,
    pub _live: LiveGuard,
}

impl PairRxQueue {
    fn ring(&self) -> &RxRing {
        &self.side.rings[self.qid as usize]
    }

    fn need_intr(&self) -> Result<&RxRing> {
        let r = self.ring();
        if r.efd.is_none() {
            return Err(Error::BadState(
                "RX interrupts were not enabled (DevConfig::rx_intr)".into(),
            ));
        }
        Ok(r)
    }
}

/// Copies the whole packet `m` (a chain gathered, segment by segment) into lent buffer `b`,
/// which holds it.
fn write_lent(b: &LentBuf, m: &Mbuf) {
    let mut at = 0;
    for s in m.segments() {
        // SAFETY: `at + s.len() <= m.pkt_len() <= b.len`: inside the lent buffer, mapped and
        // writable until handed back (post_lent's contract). The source is the segment's data
        // range, valid while `m` lives (as in `Mbuf::copy_to`). A raw byte copy forms no
        // reference to either side (both may be memory a guest can write).
        unsafe { std::ptr::copy_nonoverlapping(s.data_addr(), b.ptr.as_ptr().add(at), s.len()) };
        at += s.len();
    }
}

impl RxQueue for PairRxQueue {
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        if self.lent_mode {
            return 0; // frames wait for lent buffers (`rx_lent`)
        }
        let ring = &self.side.rings[self.qid as usize].ring;
        if ring.looks_empty() {
            return 0;
        }
        let first = out.len();
        let n = ring.pop_burst(out, max);
        let mut bytes = 0;
        for m in &mut out[first..] {
            m.port = self.port_id;
            m.queue = self.qid;
            bytes += m.pkt_len() as u64;
        }
        if n > 0 {
            self.counters.add(n as u64, bytes);
        }
        n
    }

    /// Arms the wake-up; signals at once when a frame is already waiting.
    fn enable_intr(&mut self) -> Result<()> {
        let r = self.need_intr()?;
        r.armed.store(true, Ordering::SeqCst);
        // Pairs with the sender's push-fence-check: see RxRing::wake_if_armed.
        fence(Ordering::SeqCst);
        if !r.ring.is_empty() {
            r.wake_if_armed();
        }
        Ok(())
    }

    /// Disarms and clears a pending wake-up. A sender racing with this call may still leave
    /// one spurious wake-up behind; lost wake-ups cannot happen.
    fn disable_intr(&mut self) -> Result<()> {
        let r = self.need_intr()?;
        r.armed.store(false, Ordering::SeqCst);
        r.drain_signal();
        Ok(())
    }

    fn intr_fd(&self) -> Option<RawFd> {
        self.ring().efd.as_ref().map(|fd| fd.as_raw_fd())
    }

    /// Takes up to the room left of `nb_desc` posted buffers, and enters lent mode (also when
    /// it took none).
    unsafe fn post_lent(&mut self, bufs: &[LentBuf]) -> usize {
        if self.lent.capacity() < self.nb_desc {
            // First post: once per queue, off the burst path.
            self.lent.reserve_exact(self.nb_desc - self.lent.len());
            self.popped.reserve_exact(self.nb_desc);
        }
        let k = (self.nb_desc - self.lent.len()).min(bufs.len());
        self.lent.extend(&bufs[..k]);
        self.lent_mode = true;
        k
    }

    /// Pops no more frames than buffers are posted (the rest wait in the ring), copies each
    /// into the oldest posted buffer with its RX metadata, and frees it.
    fn rx_lent(&mut self, out: &mut Vec<LentRx>, max: usize) -> usize {
        let ring = &self.side.rings[self.qid as usize].ring;
        let n = max.min(self.lent.len());
        if n == 0 || ring.looks_empty() {
            return 0;
        }
        // `popped` is empty with room for nb_desc >= n: no allocation.
        ring.pop_burst(&mut self.popped, n);
        let (mut got, mut bytes, mut errors) = (0usize, 0u64, 0u64);
        for m in &self.popped {
            let b = *self
                .lent
                .front()
                .expect("no more frames popped than buffers posted");
            let len = m.pkt_len();
            if len > b.len as usize {
                // Too long: dropped, and the buffer waits for the next frame.
                errors += 1;
                continue;
            }
            write_lent(&b, m);
            self.lent.pop_front();
            out.push(LentRx {
                tag: b.tag,
                len: len as u16,
                packet_type: m.packet_type,
                ol_flags: m.ol_flags,
                mark: m.mark,
                error: false,
            });
            bytes += len as u64;
            got += 1;
        }
        // The frames' own buffers go back to their (the sender's) pools in one go.
        Mempool::free_bulk(&mut self.popped);
        if got > 0 {
            self.counters.add(got as u64, bytes);
        }
        if errors > 0 {
            self.counters.errors.fetch_add(errors, Ordering::Relaxed);
        }
        got
    }

    fn take_back_lent(&mut self) -> usize {
        let n = self.lent.len();
        self.lent.clear();
        self.lent_mode = false;
        n
    }
}

/// A TX queue: pushes frames into the peer's RX rings, looked up through its [`Inbox`].
pub(crate) struct PairTxQueue {
    pub peer: Arc<Inbox>,
    /// The peer's rings as of `cached_gen`; None while the peer is stopped.
    pub cached: Option<Arc<RxSide>>,
    pub cached_gen: u64,
    pub qid: u16,
    pub counters: Arc<QueueCounters>,
    /// Reused buffer for the frames a full ring refused, so bursts never allocate.
    pub unsent: Vec<Mbuf>,
    pub swap_macs: bool,
    pub _live: LiveGuard,
}

/// Makes `m` look freshly received: TX-side metadata cleared, `mark` applied, its packet type
/// classified as a NIC would. Classified here, on the sending core, where the frame is still in
/// cache: on the receiving core it was a cache miss on every frame.
fn to_rx(m: &mut Mbuf, mark: Option<u32>) {
    m.packet_type = PacketType::parse(m.data());
    (m.ol_flags, m.mark) = match mark {
        Some(id) => (OlFlags::RX_FDIR | OlFlags::RX_FDIR_ID, id),
        None => (OlFlags::empty(), 0),
    };
    m.hash = 0;
    m.vlan_tci = 0;
    m.tx_offload = TxOffloadInfo::default();
}

impl PairTxQueue {
    fn refresh_peer(&mut self) {
        let gen = self.peer.gen.load(Ordering::Acquire);
        if gen != self.cached_gen {
            self.cached = self.peer.rx.lock().clone();
            self.cached_gen = gen;
        }
    }
}

impl TxQueue for PairTxQueue {
    /// Moves frames into the peer's rings. With the peer stopped the wire drops them (counted
    /// as TX errors); with the target ring full it stops and leaves the rest in `pkts`.
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        self.refresh_peer();
        let Some(side) = self.cached.as_deref() else {
            let n = pkts.len();
            self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
            Mempool::free_bulk(pkts);
            return n;
        };
        let default_q = self.qid as usize % side.rings.len();
        let rules = side
            .flows
            .active
            .load(Ordering::Acquire)
            .then(|| side.flows.rules.read());
        let (mut sent, mut bytes, mut flow_drops) = (0usize, 0u64, 0u64);
        let mut touched = 0u64;
        // The ring currently locked: consecutive frames to one queue share one lock.
        let mut locked: Option<(usize, RingSender<'_>)> = None;
        let mut it = pkts.drain(..);
        let swap = |m: &mut Mbuf| {
            if m.len() >= 12 {
                let (a, b) = m.data_mut().split_at_mut(6);
                a.swap_with_slice(&mut b[..6]);
            }
        };
        while let Some(mut m) = it.next() {
            // The reflector's receiver sees (and its rules match) the swapped frame.
            if self.swap_macs {
                swap(&mut m);
            }
            // The frame is parsed once for all rules.
            let v = rules
                .as_ref()
                .filter(|rules| !rules.is_empty())
                .and_then(|rules| {
                    let s = vdpdk_core::wire::parse(m.data())?;
                    rules.iter().find(|e| e.rule.matches_parsed(m.data(), &s))
                })
                .map(|e| e.verdict)
                .unwrap_or_default();
            let len = m.pkt_len() as u64;
            if v.drop {
                flow_drops += 1;
                sent += 1;
                bytes += len;
                continue;
            }
            // flow_validate and configure keep rule queues below the ring count.
            let q = v.queue.map_or(default_q, usize::from);
            if locked.as_ref().is_none_or(|(lq, _)| *lq != q) {
                drop(locked.take()); // hold one ring lock at a time
                locked = Some((q, side.rings[q].ring.sender()));
            }
            let ring = &mut locked.as_mut().expect("locked above").1;
            if !ring.has_room() {
                if self.swap_macs {
                    swap(&mut m); // back to what the caller handed us
                }
                self.unsent.push(m);
                self.unsent.extend(it.by_ref());
                break;
            }
            to_rx(&mut m, v.mark);
            ring.push(m);
            sent += 1;
            bytes += len;
            touched |= 1 << q;
        }
        drop(locked);
        drop(it);
        pkts.append(&mut self.unsent);
        drop(rules);
        if touched != 0 {
            // Make the pushes visible before reading the armed flags (see wake_if_armed).
            fence(Ordering::SeqCst);
            while touched != 0 {
                let q = touched.trailing_zeros() as usize;
                touched &= touched - 1;
                side.rings[q].wake_if_armed();
            }
        }
        if flow_drops > 0 {
            side.flows.dropped.fetch_add(flow_drops, Ordering::Relaxed);
        }
        self.counters.add(sent as u64, bytes);
        sent
    }
}
