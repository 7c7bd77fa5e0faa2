//! Zero-copy RX on an E810 queue (`RxQueue::post_lent`): the ring takes lent buffers (a
//! guest's, mapped for the card at their address in this process, `EthDev::external_dma`)
//! instead of the pool's, and hands each back with what the card wrote into it.
//!
//! The switch is gradual, as a driver changing buffer pools on a live ring must be: the pool's
//! buffers already given to the card fill first and come out of `rx_burst`; each descriptor
//! freed after the switch takes a lent buffer, in ring order. Descriptors reach the card eight
//! at a time, since it ignores tail bits 2:0 \[DPDK `ice_recv_pkts` writes the tail as is;
//! e810-facts.md §4\]. Taking the buffers back stops the queue (the card writes nothing more
//! once QENA_STAT reads clear) and restarts it on the pool.

use std::collections::VecDeque;

use vdpdk_core::{LentBuf, LentRx};

use super::{wb_meta, IceRxQueue, RX_DD, RX_DESC_SIZE, RX_EOF, RX_RXE};
use crate::regs::qrx_tail;

/// A descriptor with no lent buffer.
const NONE: u32 = u32::MAX;

/// The lent side of an RX queue.
pub(super) struct Lent {
    /// In lent mode (from the first `post_lent` to `take_back_lent`).
    pub(super) on: bool,
    /// Per descriptor: the tag of the lent buffer posted there, or NONE.
    tags: Box<[u32]>,
    /// Lent buffers in the ring.
    in_ring: usize,
    /// Lent buffers taken and not yet in the ring (it was full).
    pending: VecDeque<LentBuf>,
    /// The next descriptor to put a lent buffer in.
    ntf: u16,
    /// A frame spans buffers: the rest of it, up to its last buffer, comes back unused too.
    spanning: bool,
}

impl Lent {
    pub(super) fn new(n: u16) -> Lent {
        Lent {
            on: false,
            tags: vec![NONE; n as usize].into_boxed_slice(),
            in_ring: 0,
            pending: VecDeque::new(),
            ntf: 0,
            spanning: false,
        }
    }
}

impl IceRxQueue {
    /// `RxQueue::post_lent`: takes buffers while it holds fewer than a ring's worth (in the
    /// ring or waiting for a descriptor), each at least `buf_len` bytes (the card fills one
    /// up to that), and posts what the ring has room for.
    pub(super) fn post_lent_bufs(&mut self, bufs: &[LentBuf]) -> usize {
        if !self.lent.on {
            self.lent.on = true;
            // Lent buffers go in from the descriptor after the last the card was given.
            self.lent.ntf = self.tail;
            self.lent.pending.reserve(self.n as usize);
        }
        let room = (self.n as usize).saturating_sub(self.lent.in_ring + self.lent.pending.len());
        let k = bufs
            .iter()
            .take(room)
            .take_while(|b| b.len as usize >= self.buf_len)
            .count();
        self.lent.pending.extend(&bufs[..k]);
        self.fill_lent();
        k
    }

    /// Puts waiting lent buffers into the free descriptors, in ring order, one short of the
    /// next to read (a full ring would look empty), and hands them to the card.
    pub(super) fn fill_lent(&mut self) {
        let n = self.n;
        let start = self.lent.ntf;
        while (self.lent.ntf + 1) % n != self.ntc {
            let Some(b) = self.lent.pending.pop_front() else {
                break;
            };
            let i = self.lent.ntf;
            // A pool buffer left in a descriptor the card was never given: back to the pool.
            drop(self.slots[i as usize].take());
            let p = self.desc_ptr(i).cast::<u64>();
            // SAFETY: slot i is 32 bytes, 8-byte aligned and not the card's (it lies past the
            // tail); the card owns it only after the tail write below. The buffer is mapped
            // for the card at `b.iova` (post_lent's contract).
            unsafe {
                p.write_volatile(b.iova);
                p.add(1).write_volatile(0);
                p.add(2).write_volatile(0);
                p.add(3).write_volatile(0);
            }
            self.lent.tags[i as usize] = b.tag;
            self.lent.in_ring += 1;
            self.lent.ntf = (i + 1) % n;
        }
        if self.lent.ntf != start {
            // The card reads the tail in eights: the last few wait for the next ones.
            let tail = self.lent.ntf & !7;
            if tail != self.tail {
                let _ = self.regs.write(qrx_tail(self.q as u64), tail as u32);
                self.tail = tail;
            }
        }
    }

    /// `RxQueue::rx_lent`: the lent buffers the card wrote back, in ring order, up to `max`.
    /// A frame with an error, or spread over several buffers (one guest buffer takes one
    /// frame), comes back as buffers marked `error`, counted once in `errors`.
    pub(super) fn receive_lent(&mut self, out: &mut Vec<LentRx>, max: usize) -> usize {
        let (mut got, mut good, mut bytes, mut errors) = (0, 0u64, 0u64, 0u64);
        while got < max {
            let i = self.ntc;
            let tag = self.lent.tags[i as usize];
            if tag == NONE {
                break;
            }
            let p = self.desc_ptr(i);
            // SAFETY: status_error0 at byte 8 of the slot, read first; the rest after DD.
            let st = unsafe { p.add(8).cast::<u16>().read_volatile() };
            if st & RX_DD == 0 {
                break;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let mut wb = [0u8; RX_DESC_SIZE];
            // SAFETY: the whole 32-byte slot, written back by the card.
            unsafe { std::ptr::copy_nonoverlapping(p, wb.as_mut_ptr(), RX_DESC_SIZE) };
            self.lent.tags[i as usize] = NONE;
            self.lent.in_ring -= 1;
            self.ntc = (i + 1) % self.n;
            let eof = st & RX_EOF != 0;
            let bad = self.lent.spanning || !eof || st & RX_RXE != 0;
            self.lent.spanning = !eof;
            let mut rx = LentRx {
                tag,
                error: bad,
                ..Default::default()
            };
            if bad {
                errors += eof as u64;
            } else {
                // pkt_len [LTR flex NIC write-back @4].
                rx.len = u16::from_le_bytes([wb[4], wb[5]]) & 0x3FFF;
                (rx.packet_type, rx.ol_flags, rx.mark) = wb_meta(st, &wb);
                good += 1;
                bytes += rx.len as u64;
            }
            out.push(rx);
            got += 1;
        }
        self.fill_lent();
        if good > 0 {
            self.counters.add(good, bytes);
        }
        if errors > 0 {
            self.counters
                .errors
                .fetch_add(errors, std::sync::atomic::Ordering::Relaxed);
        }
        got
    }

    /// `RxQueue::take_back_lent`: stops the queue, forgets every lent buffer and restarts the
    /// ring on the pool. A queue that does not stop may still write into them: that is logged
    /// (an IOMMU unmap of their memory still keeps the card out).
    pub(super) fn take_back(&mut self) -> usize {
        if !self.lent.on {
            return 0;
        }
        let back = self.lent.in_ring + self.lent.pending.len();
        if !self.stop() {
            log::error!(
                "RX queue {} did not stop: the card may still write into {back} lent buffers",
                self.q
            );
        }
        self.lent.tags.fill(NONE);
        self.lent.in_ring = 0;
        self.lent.pending.clear();
        self.lent.on = false;
        self.lent.spanning = false;
        // From a clean ring: its pool buffers (and any half-received frame) go back first.
        self.slots.iter_mut().for_each(|s| drop(s.take()));
        self.partial = None;
        self.partial_bad = false;
        self.ntc = 0;
        self.unposted = 0;
        if let Err(e) = self.start_ring() {
            log::error!("RX queue {} did not restart after a take-back: {e}", self.q);
        }
        back
    }
}
