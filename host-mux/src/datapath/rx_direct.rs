//! Zero-copy RX on the poller's side (see `crate::guest::DirectRx`): each round, a VM's own
//! backend RX queue is lent the guest's direct-ring buffers, and the frames it received into
//! them complete their descriptors in place; a take-back the control thread asked for, or a
//! guest that may not lend now, gets every buffer back from the backend first.

use std::sync::atomic::Ordering;

use vdpdk_core::abi::{self, StatsIndex};

use super::{bump, Poller, RxSource, BURST, RX_GATHER};
use crate::guest::{DirectRx, Guest, RxPath};

/// Most direct-ring buffers lent to the backend in one round.
pub(super) const LEND_PER_ROUND: usize = 8 * BURST;

impl Poller {
    /// One round of RX source `i`'s lending (`RxSource::lend`): lends, receives into lent
    /// buffers and completes their descriptors. Returns the frames received.
    pub(super) fn direct_round(&mut self, i: usize) -> usize {
        self.lend_rx(i);
        let src = &mut self.rxqs[i];
        let Some(gi) = src.lend.filter(|_| src.lent_mode) else {
            return 0;
        };
        let mut n = 0;
        while n < RX_GATHER {
            let got = src.queue.rx_lent(&mut src.done, BURST);
            n += got;
            if got < BURST {
                break;
            }
        }
        if n > 0 {
            bump(&self.stats.wire_rx, n as u64);
            self.complete_direct(i, gi);
        }
        n
    }

    /// Lends guest buffers to RX source `i`, after answering a take-back: the backend gives
    /// back what it holds when the control thread asked, the guest stopped, added a flow
    /// rule or lost its direct ring.
    fn lend_rx(&mut self, i: usize) {
        let Poller {
            rxqs, all_guests, ..
        } = self;
        let src = &mut rxqs[i];
        let Some(gi) = src.lend else { return };
        let g = &all_guests[gi as usize];
        let asked = g.lend_ctl.pending();
        let mut rx = g.rx.lock();
        let lend = rx.lending_allowed() && !g.lend_ctl.paused() && !src.resync;
        if asked.is_some() || !lend {
            take_back(src, &mut rx);
            if let Some(a) = asked {
                g.lend_ctl.answer(a);
            }
            return;
        }
        let RxPath {
            direct, mem, stats, ..
        } = &mut *rx;
        let d = direct.as_mut().expect("lending_allowed");
        let mut refused = 0;
        src.to_lend.clear();
        let min_len = src.queue.lent_min_len();
        let n = d.lend(
            mem,
            &mut src.to_lend,
            (LEND_PER_ROUND, min_len),
            &mut refused,
        );
        if refused > 0 {
            stats.add(StatsIndex::RxBadDesc, refused);
            publish_direct(g, d);
        }
        if n == 0 {
            return;
        }
        // SAFETY: each buffer lies in writable guest memory whose region `d` pinned, and
        // stays pinned until the buffer is completed or taken back (`take_back`, which every
        // control change that could unmap it waits for); a backend queue dropped meanwhile
        // writes nothing more.
        let took = unsafe { src.queue.post_lent(&src.to_lend) };
        src.lent_mode = true;
        // The backend had no room for the rest: they were never its.
        d.unlend_newest(n - took);
    }

    /// Completes the direct-ring descriptors of the frames RX source `i` (lending, for guest
    /// `gi`) received into lent buffers.
    fn complete_direct(&mut self, i: usize, gi: u16) {
        let g = &self.all_guests[gi as usize];
        let src = &mut self.rxqs[i];
        let (mut pkts, mut bytes, mut stray) = (0u64, 0u64, 0u64);
        {
            let mut rx = g.rx.lock();
            let RxPath { direct, stats, .. } = &mut *rx;
            match direct {
                Some(d) => {
                    for f in &src.done {
                        if d.complete(f) {
                            pkts += !f.error as u64;
                            bytes += f.len as u64;
                        } else {
                            stray += 1;
                        }
                    }
                    publish_direct(g, d);
                }
                None => stray = src.done.len() as u64,
            }
            stats.add(StatsIndex::RxPackets, pkts);
            stats.add(StatsIndex::RxBytes, bytes);
            stats.add(StatsIndex::RxBadDesc, stray);
        }
        src.done.clear();
        if stray > 0 {
            // Not the buffer the ring expected (or no ring): everything lent is taken back
            // and lent afresh, so ring and backend agree again.
            src.resync = true;
        }
        if pkts > 0 {
            bump(&self.stats.rx_in_place, pkts);
            self.due.push((gi, 1)); // RX queue 0's interrupt
            self.raise_due_irqs();
        }
    }

    /// At the poller's end: every lent buffer back from the backend, and nobody waits for
    /// this poller to take any back again.
    pub(super) fn stop_lending(&mut self) {
        let Poller {
            rxqs, all_guests, ..
        } = self;
        for src in rxqs.iter_mut() {
            let Some(gi) = src.lend else { continue };
            let g = &all_guests[gi as usize];
            take_back(src, &mut g.rx.lock());
            src.lend = None;
            g.lend_ctl.poller_stopped();
        }
    }
}

/// Has the backend give back every lent buffer of `src` and forgets them on the guest's
/// direct ring (their descriptors stay posted, to be lent again).
fn take_back(src: &mut RxSource, rx: &mut RxPath) {
    if src.lent_mode {
        src.queue.take_back_lent();
        src.lent_mode = false;
    }
    if let Some(d) = rx.direct.as_mut() {
        d.rewind();
    }
    src.resync = false;
}

/// Publishes the direct ring's progress (`abi::RXQ_DIRECT_DONE_INDEX`), with Release: a guest
/// reading it also sees the frames and descriptors completed before.
fn publish_direct(g: &Guest, d: &mut DirectRx) {
    if d.q.next != d.q.published {
        d.q.published = d.q.next;
        g.data_bar
            .flag(abi::rxq_flags_offset(0) + abi::RXQ_DIRECT_DONE_INDEX)
            .store(d.q.next as u32, Ordering::Release);
    }
}
