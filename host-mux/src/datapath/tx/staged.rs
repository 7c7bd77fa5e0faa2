//! The staged way to another guest (see `datapath::switch`). A frame whose destination, read
//! in guest memory, is another guest or all of them has its head (up to [`STAGE_MAX`] bytes,
//! every byte a rule or the packet type can look at) read out of the sender's memory once,
//! onto the poller's stack, checked and classified again from that copy and, for another
//! guest, written straight into its RX ring while the sender's TX lock is held
//! ([`Switchboard`]), the rest of a longer frame copied from guest to guest, never looked at:
//! one copy per byte, no host buffer, no second pass through the switch. A frame that cannot
//! go that way (a broadcast, or any frame of a pull after a host copy that may be for a
//! guest, so each receiver keeps the sender's order) leaves as a host copy.

use std::sync::Arc;

use vdpdk_core::packet::fill_tx_checksums;
use vdpdk_core::wire::PARSE_REACH;
use vdpdk_core::MacAddr;

use super::{csum_offloads, spoofed, TxFrame, TxOutcome, TxRequest};
use crate::datapath::rx::{RxBatch, RxFrame, TARGET_ALL, TARGET_NONE};
use crate::datapath::{Poller, PollerStats};
use crate::guest::{Guest, GuestMemError, GuestSlice, PathStats};

/// Bytes of a frame staged on the stack: four cache lines. A frame up to this long is staged
/// whole (its checksums can then be filled there); a longer one has its head staged, which
/// holds all that a flow rule or the packet type can look at.
pub(super) const STAGE_MAX: usize = 256;
const _: () = assert!(STAGE_MAX >= PARSE_REACH);

/// Where one TX pull's frames go besides the backend's burst: the switchboard, the stack
/// buffer staged heads are read into, and the guest's TX counters.
pub(super) struct Sink<'s, 'g> {
    pub(super) sw: &'s mut Switchboard<'g>,
    pub(super) stage: &'s mut [u8; STAGE_MAX],
    pub(super) stats: &'s mut PathStats,
}

/// Whether a checked frame may go the staged way ([`Poller::tx_staged`]): not a super-frame
/// to cut, and staged whole if its checksums are to be filled.
#[inline(always)]
pub(super) fn stageable(f: &TxFrame<'_>) -> bool {
    match f.request {
        TxRequest::Plain => true,
        TxRequest::Checksum(_) => f.len <= STAGE_MAX,
        TxRequest::Segment { .. } => false,
    }
}

/// A staged frame: its head copied out of the sender's memory onto the poller's stack, and
/// the rest (`body`: the sender's whole frame, from the head's end on) still in its memory.
struct Staged<'s, 'm> {
    head: &'s [u8],
    body: Option<&'s GuestSlice<'m>>,
    len: usize,
}

impl RxFrame for Staged<'_, '_> {
    fn head(&self) -> &[u8] {
        self.head
    }
    fn len(&self) -> usize {
        self.len
    }
    fn write_into(&self, dst: &GuestSlice<'_>) -> Result<(), GuestMemError> {
        dst.write_slice(0, self.head)?;
        match self.body {
            Some(src) => {
                let at = self.head.len();
                dst.copy_within_guests(at, src, at, self.len - at)
            }
            None => Ok(()),
        }
    }
    fn rx_ol(&self) -> u32 {
        0
    }
    fn known_ptype(&self) -> u32 {
        0
    }
}

/// One TX pull's switching state: the receiving guest whose RX lock is held while the run of
/// frames for it lasts, and whether frames may still go to guests directly.
///
/// Lock order: the sender's TX lock, then one receiver's RX lock (the order
/// [`Guest::with_both`] takes a guest's two). Nobody takes a TX lock while holding an RX lock,
/// so pollers switching both ways between two guests cannot deadlock.
pub(super) struct Switchboard<'g> {
    /// Every guest (the poller's `all_guests`, lent for the pull).
    all: &'g [Arc<Guest>],
    open: Option<RxBatch<'g>>,
    /// No frame of the pull went the host-copy way with a guest (possibly) among its targets:
    /// a staged frame may still overtake nothing.
    direct: bool,
    /// Some frame of the pull went the host-copy way and [`Poller::switch_local`] must look
    /// at the pull's host copies.
    pub(super) host_switch: bool,
    /// Frames delivered directly.
    switched: u64,
}

impl<'g> Switchboard<'g> {
    pub(super) fn new(all: &'g [Arc<Guest>]) -> Switchboard<'g> {
        Switchboard {
            all,
            open: None,
            direct: true,
            host_switch: false,
            switched: 0,
        }
    }

    /// A frame went the host-copy way, its target not yet known: the rest of the pull goes
    /// that way too.
    pub(super) fn host_copy(&mut self) {
        self.direct = false;
        self.host_switch = true;
    }

    /// Delivers a staged frame to guest `gi`, opening its batch if another one is open;
    /// `more`: frames left in the sender's burst (the descriptors to fetch ahead).
    fn deliver(
        &mut self,
        gi: u16,
        frame: Staged<'_, '_>,
        more: usize,
        stats: &PollerStats,
        due: &mut Vec<(u16, u64)>,
    ) {
        if self.open.as_ref().is_none_or(|b| b.gi != gi) {
            self.close(due);
            self.open = Some(RxBatch::open(&self.all[gi as usize], gi, more));
        }
        let batch = self.open.as_mut().expect("opened above");
        batch.push(&frame, stats);
    }

    fn close(&mut self, due: &mut Vec<(u16, u64)>) {
        if let Some(b) = self.open.take() {
            self.switched += b.close(due);
        }
    }

    /// Closes the open batch; returns the frames delivered directly in the pull.
    pub(super) fn finish(mut self, due: &mut Vec<(u16, u64)>) -> u64 {
        self.close(due);
        self.switched
    }
}

impl Poller {
    /// Sends a checked frame the staged way (module docs), through `out`; `more`: frames left
    /// in the sender's burst.
    #[inline(always)]
    pub(super) fn tx_staged(
        &mut self,
        g: &Guest,
        f: &TxFrame<'_>,
        out: &mut Sink<'_, '_>,
        more: usize,
    ) -> TxOutcome {
        let sw = &mut *out.sw;
        let head = &mut out.stage[..f.len.min(STAGE_MAX)];
        // Read once; whatever the guest writes there from now on is not looked at.
        if f.src.read_slice(0, head).is_err() {
            return TxOutcome::Bad;
        }
        if spoofed(g, head) {
            return TxOutcome::Spoofed;
        }
        // The destination as copied, looked up again (the table remembers the peek's answer,
        // so an unchanged destination costs no probe).
        let t = MacAddr::dst_of(head).map_or(TARGET_NONE, |d| self.local_target(g.mac, d));
        let to_wire_only = t == TARGET_NONE;
        // The backend fills checksums only of frames it sends; a guest gets them filled here.
        let mut hw_csum = None;
        if let TxRequest::Checksum(lay) = f.request {
            if to_wire_only && self.hw_tx.contains(csum_offloads(f.flags)) {
                hw_csum = Some((f.flags, f.info));
            } else {
                fill_tx_checksums(head, f.flags, &lay); // staged whole (`stageable`)
            }
        }
        if !to_wire_only && t != TARGET_ALL && sw.direct {
            let body = (f.len > head.len()).then_some(&f.src);
            let frame = Staged {
                head,
                body,
                len: f.len,
            };
            sw.deliver(t, frame, more, &self.stats, &mut self.due);
            return TxOutcome::Switched;
        }
        if !to_wire_only {
            sw.host_copy(); // a broadcast, or a guest's frame behind a host copy
        }
        if !self.reserve(1) {
            return TxOutcome::Wait;
        }
        let Some(i) = self.push_copy(&f.src, f.len, head) else {
            return TxOutcome::Bad;
        };
        let m = &mut self.tx_buf[i];
        if let Some((flags, info)) = hw_csum {
            m.ol_flags = flags;
            m.tx_offload = info;
        }
        TxOutcome::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuestLimits;
    use crate::datapath::Role;
    use crate::testing::{self, desc};
    use std::sync::atomic::Ordering;
    use vdpdk_core::abi::desc::{
        Desc, DESC_F_AVAIL, DESC_F_ERROR, DESC_OL_TX_IPV4, DESC_OL_TX_IP_CKSUM,
    };
    use vdpdk_core::abi::StatsIndex;
    use vdpdk_core::test_frames::udp_frame;
    use vdpdk_core::{Mbuf, Mempool};

    const RAM: u64 = 0x40_0000;
    /// Where a guest's ring lies in its RAM, and its buffers (0x800 apart).
    const RING: u64 = RAM;
    const BUFS: u64 = RAM + 0x1000;
    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc]);
    const WIRE: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xee]);

    /// A running guest owning `mac`, with 128 KiB of RAM and one TX or RX queue of 32
    /// descriptors at its start (an RX queue with every descriptor posted).
    fn guest(mac: MacAddr, rx: bool) -> (Arc<Guest>, vdpdk_core::DmaMemory) {
        let g = testing::guest_owning(mac, 1, 1, GuestLimits::default());
        let ram = testing::map_ram(&g, RAM, 0x20000, false);
        let (mut tx, mut rxp) = (g.tx.lock(), g.rx.lock());
        let q = testing::host_queue(&rxp.mem, RING, 32);
        if rx {
            for i in 0..32u16 {
                q.ring.publish(i, &desc(BUFS + i as u64 * 0x800, 2048));
            }
            rxp.queues = vec![Some(q)];
        } else {
            tx.queues = vec![Some(q)];
        }
        (tx.running, rxp.running) = (true, true);
        drop((tx, rxp));
        (g, ram)
    }

    /// Posts `frames` on guest `g`'s TX ring, each in its own buffer, frame `i` with
    /// descriptor offload bits `ol(i)`.
    fn post(g: &Guest, frames: &[Vec<u8>], ol: impl Fn(usize) -> u32) {
        for (i, f) in frames.iter().enumerate() {
            let at = BUFS + i as u64 * 0x800;
            testing::poke(g, at, f);
            let d = Desc {
                ol_flags: ol(i),
                l2_len: 14,
                l3_len: 20,
                ..desc(at, f.len() as u16)
            };
            let tx = g.tx.lock();
            tx.queues[0].as_ref().unwrap().ring.publish(i as u16, &d);
        }
    }

    /// The frames guest `g` has received, in ring order.
    fn received(g: &Guest) -> Vec<Vec<u8>> {
        let lens: Vec<u16> = {
            let rx = g.rx.lock();
            let hq = rx.queues[0].as_ref().unwrap();
            (0..hq.next)
                .map(|i| hq.ring.read_completed(i).len)
                .collect()
        };
        lens.iter()
            .enumerate()
            .map(|(i, &len)| testing::peek(g, BUFS + i as u64 * 0x800, len as usize))
            .collect()
    }

    /// A backend TX queue keeping what it is handed.
    struct Capture(Arc<parking_lot::Mutex<Vec<Vec<u8>>>>);

    impl vdpdk_core::TxQueue for Capture {
        fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
            self.0.lock().extend(pkts.iter().map(|m| m.data().to_vec()));
            let n = pkts.len();
            Mempool::free_bulk(pkts);
            n
        }
    }

    fn poller(
        guests: &[Arc<Guest>],
        pool: &Mempool,
    ) -> (Poller, Arc<parking_lot::Mutex<Vec<Vec<u8>>>>) {
        let wire = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let backend = Box::new(Capture(wire.clone()));
        let p = testing::poller(Role::Tx, guests.to_vec(), Vec::new(), backend, pool);
        (p, wire)
    }

    #[test]
    fn each_guest_gets_its_frames_in_order_whichever_way_they_went() {
        let ((a, _ra), (b, _rb), (c, _rc)) = (guest(A, false), guest(B, true), guest(C, true));
        // Frames to B and C in turn (straight into their rings, the open batch moving between
        // them), one to the wire, one to B whose checksum is to be filled over 1000 bytes (a
        // host copy), then frames to C and B that must not overtake it.
        let sizes_to = [
            (64, B),
            (1500, C),
            (100, B),
            (64, WIRE),
            (200, C),
            (1000, B),
            (64, C),
            (1500, B),
        ];
        let frames: Vec<Vec<u8>> = sizes_to
            .iter()
            .enumerate()
            .map(|(i, &(len, to))| udp_frame(to, A, i as u64, len))
            .collect();
        post(&a, &frames, |i| match i {
            5 => DESC_OL_TX_IPV4 | DESC_OL_TX_IP_CKSUM,
            _ => 0,
        });
        let pool = Mempool::new("t-sw-order", 256, 2048).unwrap();
        let guests = [a.clone(), b.clone(), c.clone()];
        let (mut p, wire) = poller(&guests, &pool);
        assert_eq!(p.round(), 8);
        let to = |mac| -> Vec<Vec<u8>> {
            frames
                .iter()
                .zip(sizes_to)
                .filter(|(_, (_, t))| *t == mac)
                .map(|(f, _)| f.clone())
                .collect()
        };
        assert_eq!(received(&b), to(B), "B: its four frames, intact, in order");
        assert_eq!(received(&c), to(C), "C: its three frames, intact, in order");
        assert_eq!(*wire.lock(), to(WIRE), "the wire: only its frame");
        assert_eq!(p.stats.switched.load(Ordering::Relaxed), 7);
        let rx_packets = |g: &Guest| g.rx.lock().stats.0[StatsIndex::RxPackets as usize];
        assert_eq!((rx_packets(&b), rx_packets(&c)), (4, 3));
        testing::assert_tx_done(&a, 8);
    }

    #[test]
    fn frames_for_a_guest_take_no_host_buffer_whatever_their_length() {
        let ((a, _ra), (b, _rb)) = (guest(A, false), guest(B, true));
        // Staged whole, at the stage's size, one past it (head staged, the rest copied from
        // guest to guest), full-sized; then two for the wire.
        let sizes = [64, STAGE_MAX, STAGE_MAX + 1, 1514, 64, 1514];
        let frames: Vec<Vec<u8>> = (0..6)
            .map(|i| udp_frame(if i < 4 { B } else { WIRE }, A, i as u64, sizes[i]))
            .collect();
        post(&a, &frames, |_| 0);
        // Every host buffer taken: the frames for the wire must wait for one, B's need none.
        let pool = Mempool::new("t-sw-none", 64, 2048).unwrap();
        let mut held = Vec::new();
        while let Some(m) = pool.alloc() {
            held.push(m);
        }
        let (mut p, wire) = poller(&[a.clone(), b.clone()], &pool);
        assert_eq!(p.round(), 4);
        assert_eq!(received(&b), frames[..4]);
        assert!(wire.lock().is_empty());
        let ring = a.tx.lock().queues[0].as_ref().unwrap().ring;
        assert_eq!(
            (ring.flags(3), ring.flags(4) & DESC_F_AVAIL),
            (0, DESC_F_AVAIL)
        );
        // Buffers back: the two for the wire go.
        Mempool::free_bulk(&mut held);
        assert_eq!(p.round(), 2);
        assert_eq!(*wire.lock(), frames[4..]);
    }

    #[test]
    fn a_guest_gets_the_checksums_asked_for_filled_and_spoofed_frames_not_at_all() {
        let ((a, _ra), (b, _rb)) = (guest(A, false), guest(B, true));
        let good = udp_frame(B, A, 7, 80);
        let mut unsummed = good.clone();
        unsummed[24..26].fill(0); // the IPv4 header checksum, left to the offload
        let spoofed = udp_frame(B, C, 8, 80);
        post(&a, &[unsummed, spoofed], |_| {
            DESC_OL_TX_IPV4 | DESC_OL_TX_IP_CKSUM
        });
        let pool = Mempool::new("t-sw-csum", 64, 2048).unwrap();
        let (mut p, _wire) = poller(&[a.clone(), b.clone()], &pool);
        assert_eq!(p.round(), 1);
        assert_eq!(received(&b), [good]);
        let tx = a.tx.lock();
        assert_eq!(tx.stats.0[StatsIndex::TxSpoofed as usize], 1);
        let ring = tx.queues[0].as_ref().unwrap().ring;
        assert_eq!((ring.flags(0), ring.flags(1)), (0, DESC_F_ERROR));
    }

    #[test]
    fn a_receivers_bad_buffers_are_refused_one_by_one_and_the_sender_is_not_harmed() {
        let ((a, _ra), (b, _rb)) = (guest(A, false), guest(B, true));
        {
            // B's first buffers: too short for a full frame, outside its memory, straddling
            // its end; the fourth is good.
            let rx = b.rx.lock();
            let ring = rx.queues[0].as_ref().unwrap().ring;
            ring.publish(0, &desc(BUFS, 100));
            ring.publish(1, &desc(0x1000, 2048));
            ring.publish(2, &desc(RAM + 0x20000 - 1000, 2048));
        }
        let frames: Vec<Vec<u8>> = (0..4).map(|i| udp_frame(B, A, i, 1514)).collect();
        post(&a, &frames, |_| 0);
        let pool = Mempool::new("t-sw-bad", 64, 2048).unwrap();
        let (mut p, wire) = poller(&[a.clone(), b.clone()], &pool);
        assert_eq!(p.round(), 4);
        let rx = b.rx.lock();
        let ring = rx.queues[0].as_ref().unwrap().ring;
        let done: Vec<(u16, u16)> = (0..4)
            .map(|i| {
                let d = ring.read_completed(i);
                (d.len, d.flags & DESC_F_ERROR)
            })
            .collect();
        assert_eq!(
            done,
            [
                (0, DESC_F_ERROR),
                (0, DESC_F_ERROR),
                (0, DESC_F_ERROR),
                (1514, 0)
            ]
        );
        assert_eq!(rx.stats.0[StatsIndex::RxBadDesc as usize], 3);
        drop(rx);
        assert_eq!(testing::peek(&b, BUFS + 3 * 0x800, 1514), frames[3]);
        assert!(wire.lock().is_empty());
        testing::assert_tx_done(&a, 4);
    }
}
