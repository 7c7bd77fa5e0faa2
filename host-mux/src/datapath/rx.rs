//! RX delivery: a backend burst steered to guests (destination MAC, then the guest's own flow
//! rules) and copied into their RX rings, with MSI-X interrupts for queues whose guest armed
//! them, signalled after the guest's lock is released.

use std::sync::atomic::{fence, Ordering};

use vdpdk_core::abi::desc::{Desc, DESC_F_ERROR};
use vdpdk_core::abi::{self, StatsIndex};
use vdpdk_core::{MacAddr, Mbuf, Mempool};

use parking_lot::MutexGuard;

use super::{bump, signal_eventfd, Poller, PollerStats};
use crate::guest::{Guest, GuestMemError, GuestSlice, RxPath};

/// `lookup`'s answer for a frame every guest gets (broadcast, multicast).
pub(super) const TARGET_ALL: u16 = u16::MAX;
/// `lookup`'s answer for a frame no guest owns.
pub(super) const TARGET_NONE: u16 = u16::MAX - 1;
/// Frames ahead of the one looked up whose first line `deliver` fetches.
const LOOKUP_AHEAD: usize = 16;

impl Poller {
    /// The guest owning unicast `dst` ([`TARGET_NONE`] if none), or [`TARGET_ALL`].
    pub(super) fn lookup(&self, dst: MacAddr) -> u16 {
        if dst.is_multicast() {
            return TARGET_ALL;
        }
        self.macs.get(dst).unwrap_or(TARGET_NONE)
    }

    /// Steers the RX burst to guests, taking each target guest's RX lock once per burst.
    /// A dedicated queue's frames all go to its owner (the NIC matched them already).
    /// Returns how many guests' worth the frames for guests were spread over (those frames /
    /// the largest guest's share), None for a batch with broadcasts.
    pub(super) fn deliver(&mut self, owner: Option<u16>) -> Option<usize> {
        self.targets.clear();
        let mut any_all = false;
        if let Some(gi) = owner {
            self.targets.resize(self.rx_buf.len(), gi);
        }
        // The frames were written on another core. A queue's own frames are copied next:
        // all of them are fetched now. The destination MACs of the rest are read below, each
        // fetched a few frames ahead: fetched all at once, a batch of up to 2048 frames had
        // its first lines evicted again before they were read.
        let n = if owner.is_some() {
            self.rx_buf.iter().for_each(Mbuf::prefetch_data);
            0
        } else {
            self.rx_buf
                .iter()
                .take(LOOKUP_AHEAD)
                .for_each(Mbuf::prefetch_data);
            self.rx_buf.len()
        };
        for i in 0..n {
            if let Some(m) = self.rx_buf.get(i + LOOKUP_AHEAD) {
                m.prefetch_data();
            }
            let t = MacAddr::dst_of(self.rx_buf[i].data()).map_or(TARGET_NONE, |d| self.lookup(d));
            match t {
                TARGET_NONE => bump(&self.stats.rx_unknown_dst, 1),
                TARGET_ALL => any_all = true,
                _ => {}
            }
            self.targets.push(t);
        }
        let mut spread = None;
        if any_all {
            // A broadcast in the batch: every guest looks through all of it for its own frames
            // and the broadcasts (rare enough under load not to be grouped).
            for (gi, g) in self.all_guests.iter().enumerate() {
                let mine = self
                    .rx_buf
                    .iter()
                    .zip(&self.targets)
                    .filter(|(_, &t)| t as usize == gi || t == TARGET_ALL)
                    .map(|(m, _)| m);
                deliver_to_guest(g, gi as u16, mine, &self.stats, &mut self.due);
            }
        } else {
            self.groups.clear();
            self.targets.iter().for_each(|&t| self.groups.note(t));
            self.groups.seal(&self.targets);
            for (k, &gi) in self.groups.hit.iter().enumerate() {
                let mine = self
                    .groups
                    .frames(k)
                    .iter()
                    .map(|&i| &self.rx_buf[i as usize]);
                let g = &self.all_guests[gi as usize];
                deliver_to_guest(g, gi, mine, &self.stats, &mut self.due);
            }
            spread = Some(self.groups.spread());
        }
        self.raise_due_irqs();
        Mempool::free_bulk(&mut self.rx_buf);
        spread
    }

    /// Interrupts for the RX queues that got frames in this batch (`due`) and whose guest
    /// armed them. One fence serves the whole batch: it pairs with each guest's fence between
    /// arming and re-checking its ring. (A fence per guest, which drains every store still in
    /// flight into guest memory, was half the poller's time with 64 guests.) A guest's lock is
    /// taken only to fetch the fd of a queue found armed, and the fd is signalled after.
    pub(super) fn raise_due_irqs(&mut self) {
        if self.due.is_empty() {
            return;
        }
        fence(Ordering::SeqCst);
        for (gi, touched) in self.due.drain(..) {
            let g = &self.all_guests[gi as usize];
            let mut left = touched;
            while left != 0 {
                let q = left.trailing_zeros() as usize;
                left &= left - 1;
                let flag = g
                    .data_bar
                    .flag(abi::rxq_flags_offset(q as u16) + abi::RXQ_FLAG_INTR_ARMED);
                if flag.load(Ordering::SeqCst) == 0 || flag.swap(0, Ordering::SeqCst) == 0 {
                    continue;
                }
                let fd = g.rx.lock().irq_fds.get(q).cloned().flatten();
                if fd.is_some_and(|fd| signal_eventfd(&fd).is_err()) {
                    g.stats.add(StatsIndex::IrqErrors, 1);
                }
            }
        }
    }
}

/// Delivers `frames` to guest `g` (index `gi`), in order, taking its RX lock once; notes the
/// RX queues it touched in `due` for [`Poller::raise_due_irqs`]. Returns the frames delivered.
pub(super) fn deliver_to_guest<'a>(
    g: &Guest,
    gi: u16,
    frames: impl Iterator<Item = &'a Mbuf>,
    stats: &PollerStats,
    due: &mut Vec<(u16, u64)>,
) -> u64 {
    // (An iterator that cannot tell its length gets no descriptors fetched ahead.)
    let mut batch = RxBatch::open(g, gi, frames.size_hint().0);
    for m in frames {
        batch.push(m, stats);
    }
    batch.close(due)
}

/// A frame on its way into a guest's RX ring: a host buffer (from the wire, or a host copy of
/// another guest's frame) or another guest's staged frame (`tx::staged`: its head copied onto
/// the poller's stack, the rest copied from guest to guest unread). What is parsed
/// ([`RxFrame::head`]) is host memory either way; guest memory never is.
pub(super) trait RxFrame {
    /// The bytes parsed for the guest's flow rules and the packet type (a chain's first
    /// buffer).
    fn head(&self) -> &[u8];
    /// The whole frame's length.
    fn len(&self) -> usize;
    /// Copies the whole frame into `dst`, which holds [`RxFrame::len`] bytes.
    fn write_into(&self, dst: &GuestSlice<'_>) -> Result<(), GuestMemError>;
    /// The completion's `DESC_OL_RX_*` bits.
    fn rx_ol(&self) -> u32;
    /// The packet type the backend reported, or 0 to parse it from [`RxFrame::head`].
    fn known_ptype(&self) -> u32;
}

impl RxFrame for Mbuf {
    fn head(&self) -> &[u8] {
        self.data()
    }
    fn len(&self) -> usize {
        self.pkt_len()
    }
    fn write_into(&self, dst: &GuestSlice<'_>) -> Result<(), GuestMemError> {
        write_frame(dst, self)
    }
    fn rx_ol(&self) -> u32 {
        Desc::rx_ol_from(self)
    }
    fn known_ptype(&self) -> u32 {
        self.packet_type.0
    }
}

/// Frames going into one guest's RX rings under its lock, taken once for all of them: opened,
/// given frames in order, closed (which publishes how far its queues moved).
pub(super) struct RxBatch<'g> {
    g: &'g Guest,
    pub(super) gi: u16,
    rx: MutexGuard<'g, RxPath>,
    /// RX queues that got a frame (bit per queue, modulo 64).
    touched: u64,
    pkts: u64,
    bytes: u64,
}

impl<'g> RxBatch<'g> {
    /// Locks guest `g`'s (index `gi`) RX side for about `expect` frames.
    pub(super) fn open(g: &'g Guest, gi: u16, expect: usize) -> RxBatch<'g> {
        let rx = g.rx.lock();
        // Without rules every frame goes to queue 0: fetch the descriptors they will fill
        // (the guest wrote them last) all at once.
        if let (true, Some(Some(hq))) = (rx.rules.is_empty(), rx.queues.first()) {
            hq.ring.prefetch_for_write(hq.next, expect as u16);
        }
        RxBatch {
            g,
            gi,
            rx,
            touched: 0,
            pkts: 0,
            bytes: 0,
        }
    }

    /// Delivers one frame (or counts why not).
    #[inline(always)]
    pub(super) fn push(&mut self, f: &impl RxFrame, stats: &PollerStats) {
        if !self.rx.running {
            bump(&stats.rx_guest_stopped, 1);
            return;
        }
        if let Some(q) = deliver_one(&mut self.rx, f) {
            self.touched |= 1 << (q % 64);
            self.pkts += 1;
            self.bytes += f.len() as u64;
        }
    }

    /// Publishes the queues' progress, counts the frames once for the batch and notes the
    /// queues touched in `due` (for [`Poller::raise_due_irqs`], after the lock is released).
    /// Returns the frames delivered.
    pub(super) fn close(mut self, due: &mut Vec<(u16, u64)>) -> u64 {
        publish_progress(self.g, &mut self.rx);
        if self.touched != 0 {
            // One counter update per guest and batch, not per frame.
            self.rx.stats.add(StatsIndex::RxPackets, self.pkts);
            self.rx.stats.add(StatsIndex::RxBytes, self.bytes);
            due.push((self.gi, self.touched));
        }
        self.pkts
    }
}

/// Copies one frame into the guest RX queue its rules choose. Returns the queue used (the
/// caller counts delivered frames); drops are counted here.
#[inline(always)]
fn deliver_one(rx: &mut RxPath, m: &impl RxFrame) -> Option<u16> {
    let RxPath {
        queues,
        mem,
        rules,
        stats,
        ..
    } = rx;
    let frame = m.head();
    let mut q = 0u16;
    let mut mark = None;
    // Parsed once for all rules (and only when the guest has rules).
    let parsed = if rules.is_empty() {
        None
    } else {
        vdpdk_core::wire::parse(frame)
    };
    let hit = parsed.and_then(|s| rules.iter().find(|(_, r)| r.matches_parsed(frame, &s)));
    if let Some((_, r)) = hit {
        let v = r.verdict();
        if v.drop {
            stats.add(StatsIndex::RxFlowDrop, 1);
            return None;
        }
        q = v.queue.unwrap_or(0);
        mark = v.mark;
    }
    let Some(hq) = queues.get_mut(q as usize).and_then(|q| q.as_mut()) else {
        stats.add(StatsIndex::RxNoDesc, 1);
        return None;
    };
    let idx = hq.next;
    if !hq.ring.posted(idx) {
        stats.add(StatsIndex::RxNoDesc, 1);
        return None;
    }
    let d = hq.ring.read(idx);
    // The whole packet: a backend may hand over a chain (several buffers).
    let len = m.len();
    // The buffer must hold the frame and lie in a writable region of the guest's DMA map.
    let copied = if d.len as usize >= len {
        mem.slice(d.addr, len as u64, true)
            .and_then(|dst| m.write_into(&dst))
            .is_ok()
    } else {
        false
    };
    hq.next = idx.wrapping_add(1);
    if !copied {
        hq.ring.complete(idx, 0, DESC_F_ERROR, 0, 0, 0);
        stats.add(StatsIndex::RxBadDesc, 1);
        return None;
    }
    let mut ol = m.rx_ol();
    if mark.is_some() {
        ol |= vdpdk_core::abi::desc::DESC_OL_RX_MARK;
    }
    let ptype = match m.known_ptype() {
        0 => vdpdk_core::PacketType::parse(frame).0,
        known => known,
    };
    hq.ring
        .complete(idx, len as u16, 0, ol, ptype, mark.unwrap_or(0));
    Some(q)
}

/// Tells the guest how far the host got on each RX queue that moved (`abi::RXQ_DONE_INDEX`),
/// with a Release store: a guest that reads the index also sees the frames and descriptors
/// completed before it. Delivered and refused descriptors alike move a queue on.
fn publish_progress(g: &Guest, rx: &mut RxPath) {
    for (q, hq) in rx.queues.iter_mut().enumerate() {
        let Some(hq) = hq else { continue };
        if hq.next != hq.published {
            hq.published = hq.next;
            g.data_bar
                .flag(abi::rxq_flags_offset(q as u16) + abi::RXQ_DONE_INDEX)
                .store(hq.next as u32, Ordering::Release);
        }
    }
}

/// Copies frame `m` (a chain is gathered) into guest buffer `dst`, which holds its length.
#[inline(always)]
fn write_frame(dst: &GuestSlice<'_>, m: &Mbuf) -> Result<(), GuestMemError> {
    if !m.is_chained() {
        return dst.write_slice(0, m.data());
    }
    // A backend's chain is gathered into the one guest buffer.
    let mut at = 0;
    for seg in m.segments() {
        dst.write_slice(at, seg.data())?;
        at += seg.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, desc, frame, MAC};
    use std::sync::Arc;
    use vdpdk_core::abi::desc::DESC_F_AVAIL;
    use vdpdk_core::flow::{FlowItem, FlowRule};
    use vdpdk_core::FlowHandle;

    const RAM: u64 = 0x40_0000;
    const BUF: u64 = RAM + 0x8000;

    fn mbuf(pool: &Mempool, bytes: &[u8]) -> Mbuf {
        let mut m = pool.alloc().unwrap();
        m.set_len(bytes.len()).unwrap();
        m.data_mut().copy_from_slice(bytes);
        m
    }

    /// A guest with 64 KiB of RAM at RAM, 2 RX queues with 32-descriptor rings at its start.
    fn guest() -> (Arc<Guest>, vdpdk_core::DmaMemory) {
        let g = testing::guest();
        let ram = testing::map_ram(&g, RAM, 0x10000, false);
        let mut rx = g.rx.lock();
        let (q0, q1) = (
            testing::host_queue(&rx.mem, RAM, 32),
            testing::host_queue(&rx.mem, RAM + 0x400, 32),
        );
        rx.queues = vec![Some(q0), Some(q1)];
        rx.running = true;
        drop(rx);
        (g, ram)
    }

    fn post(rx: &RxPath, q: usize, idx: u16, d: Desc) {
        rx.queues[q].as_ref().unwrap().ring.publish(idx, &d);
    }

    #[test]
    fn a_frame_lands_in_the_posted_buffer_and_completes_its_descriptor() {
        let (g, _ram) = guest();
        let pool = Mempool::new("t-rx", 64, 2048).unwrap();
        let f = frame(MAC, MacAddr([2, 0, 0, 0, 0, 9]), 60, 0xab);
        let mut rx = g.rx.lock();
        post(&rx, 0, 0, desc(BUF, 2048));
        assert_eq!(deliver_one(&mut rx, &mbuf(&pool, &f)), Some(0));
        let q = rx.queues[0].as_ref().unwrap();
        let d = q.ring.read_completed(0);
        assert_eq!((d.len, d.flags & (DESC_F_AVAIL | DESC_F_ERROR)), (60, 0));
        assert_eq!(q.next, 1);
        drop(rx);
        assert_eq!(testing::peek(&g, BUF, 60), f);
    }

    #[test]
    fn a_chain_is_gathered_into_one_guest_buffer() {
        let (g, _ram) = guest();
        let pool = Mempool::new("t-rx", 64, 2048).unwrap();
        let f = frame(MAC, MAC, 1500, 0x5c);
        let mut head = mbuf(&pool, &f[..1000]);
        head.chain(mbuf(&pool, &f[1000..]));
        let mut rx = g.rx.lock();
        post(&rx, 0, 0, desc(BUF, 1500));
        assert_eq!(deliver_one(&mut rx, &head), Some(0));
        drop(rx);
        assert_eq!(testing::peek(&g, BUF, 1500), f);
    }

    #[test]
    fn bad_buffers_get_the_error_flag_and_are_counted() {
        let (g, _ram) = guest();
        let _ro = testing::map_ram(&g, 0x80_0000, 0x1000, true);
        let pool = Mempool::new("t-rx", 64, 2048).unwrap();
        let m = mbuf(&pool, &frame(MAC, MAC, 100, 1));
        let mut rx = g.rx.lock();
        // Too small for the frame, outside the DMA map, straddling its end, read-only.
        let bad = [
            desc(BUF, 99),
            desc(0x1000, 2048),
            desc(RAM + 0x10000 - 50, 100),
            desc(0x80_0000, 2048),
        ];
        for (i, d) in bad.into_iter().enumerate() {
            post(&rx, 0, i as u16, d);
            assert_eq!(deliver_one(&mut rx, &m), None);
            let d = rx.queues[0].as_ref().unwrap().ring.read_completed(i as u16);
            assert_eq!((d.len, d.flags), (0, DESC_F_ERROR), "descriptor {i}");
        }
        assert_eq!(rx.queues[0].as_ref().unwrap().next, 4);
        assert_eq!(rx.stats.0[StatsIndex::RxBadDesc as usize], 4);
    }

    #[test]
    fn a_burst_publishes_how_far_each_queue_moved() {
        let (g, _ram) = guest();
        let pool = Mempool::new("t-rx", 64, 2048).unwrap();
        let frames: Vec<Mbuf> = (0..3)
            .map(|i| mbuf(&pool, &frame(MAC, MAC, 64, i)))
            .collect();
        {
            let rx = g.rx.lock();
            // Two good buffers and one outside the DMA map (refused, yet taken).
            post(&rx, 0, 0, desc(BUF, 2048));
            post(&rx, 0, 1, desc(0x1000, 2048));
            post(&rx, 0, 2, desc(BUF + 0x800, 2048));
        }
        let stats = PollerStats::default();
        let delivered = deliver_to_guest(&g, 0, frames.iter(), &stats, &mut Vec::new());
        assert_eq!(delivered, 2);
        let word = |q| {
            g.data_bar
                .flag(abi::rxq_flags_offset(q) + abi::RXQ_DONE_INDEX)
                .load(Ordering::Acquire)
        };
        assert_eq!(
            (word(0), word(1)),
            (3, 0),
            "queue 0 moved by 3, queue 1 not at all"
        );
    }

    #[test]
    fn no_posted_buffer_is_a_drop_and_rules_choose_the_queue() {
        let (g, _ram) = guest();
        let pool = Mempool::new("t-rx", 64, 2048).unwrap();
        let m = mbuf(&pool, &frame(MAC, MAC, 64, 2));
        let mut rx = g.rx.lock();
        assert_eq!(deliver_one(&mut rx, &m), None);
        assert_eq!(rx.stats.0[StatsIndex::RxNoDesc as usize], 1);
        assert_eq!(rx.queues[0].as_ref().unwrap().next, 0, "nothing taken");
        let rule = FlowRule::to_queue(vec![FlowItem::eth_dst(MAC)], 1);
        rx.rules.push((FlowHandle(1), rule));
        post(&rx, 1, 0, desc(BUF, 2048));
        assert_eq!(deliver_one(&mut rx, &m), Some(1));
        let drop_all = FlowRule {
            actions: vec![vdpdk_core::flow::FlowAction::Drop],
            ..FlowRule::to_queue(vec![FlowItem::eth_dst(MAC)], 0)
        };
        rx.rules.insert(0, (FlowHandle(2), drop_all));
        assert_eq!(deliver_one(&mut rx, &m), None);
        assert_eq!(rx.stats.0[StatsIndex::RxFlowDrop as usize], 1);
    }
}
