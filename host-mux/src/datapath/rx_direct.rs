//! Zero-copy RX on the poller's side (see `crate::guest::DirectRx`): before each burst of a
//! VM's own backend RX queue the guest's direct-ring buffers are lent to it, and after it the
//! frames the backend received into them complete their descriptors in place; a take-back the
//! control thread asked for, or a guest that may not lend now, gets every buffer back first.

use std::sync::atomic::Ordering;

use vdpdk_core::abi::{self, StatsIndex};
use vdpdk_core::Mempool;

use super::{Poller, RxSource};
use crate::guest::{DirectRx, Guest, RxPath};

/// Most direct-ring buffers lent to the backend in one round.
const LEND_PER_ROUND: usize = 256;

impl Poller {
    /// Lends guest buffers to RX source `i` when it lends (`RxSource::lend`), after answering
    /// a take-back: the backend gives back what it holds when the control thread asked, the
    /// guest stopped, added a flow rule or lost its direct ring.
    pub(super) fn lend_rx(&mut self, i: usize) {
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
        let n = d.lend(mem, &mut src.scratch, LEND_PER_ROUND, &mut refused);
        if refused > 0 {
            stats.add(StatsIndex::RxBadDesc, refused);
            publish_direct(g, d);
        }
        if n == 0 {
            return;
        }
        src.queue.post_lent(&mut src.scratch);
        src.lent_mode = true;
        if !src.scratch.is_empty() {
            // The backend had no room for these: they were never its.
            d.unlend_newest(src.scratch.len());
            src.scratch.clear();
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

    /// Delivers what RX source `i` (lending, for guest `gi`) received: frames in lent buffers
    /// complete their direct-ring descriptors; frames in the backend's own buffers (before it
    /// lent, or after a take-back) are copied to the guest as any dedicated queue's.
    pub(super) fn deliver_direct(&mut self, i: usize, gi: u16) {
        let lent = self.rx_buf.iter().filter(|m| m.is_lent()).count();
        if lent == 0 {
            self.deliver(Some(gi));
            return;
        }
        let g = &self.all_guests[gi as usize];
        let (mut pkts, mut bytes, mut stray) = (0u64, 0u64, 0u64);
        {
            let mut rx = g.rx.lock();
            let RxPath { direct, stats, .. } = &mut *rx;
            match direct {
                Some(d) => {
                    for m in self.rx_buf.iter().filter(|m| m.is_lent()) {
                        if d.complete(m) {
                            pkts += 1;
                            bytes += m.pkt_len() as u64;
                        } else {
                            stray += 1;
                        }
                    }
                    publish_direct(g, d);
                }
                None => stray = lent as u64,
            }
            stats.add(StatsIndex::RxPackets, pkts);
            stats.add(StatsIndex::RxBytes, bytes);
            stats.add(StatsIndex::RxBadDesc, stray);
        }
        if stray > 0 {
            // Not the buffer the ring expected (or no ring): everything lent is taken back
            // and lent afresh, so ring and backend agree again.
            self.rxqs[i].resync = true;
        }
        if pkts > 0 {
            self.due.push((gi, 1)); // RX queue 0's interrupt
            super::bump(&self.stats.rx_in_place, pkts);
        }
        if lent == self.rx_buf.len() {
            Mempool::free_bulk(&mut self.rx_buf);
            self.raise_due_irqs();
        } else {
            self.rx_buf.retain(|m| !m.is_lent());
            self.deliver(Some(gi));
        }
    }
}

/// Has the backend give back every lent buffer of `src` and forgets them on the guest's
/// direct ring (their descriptors stay posted, to be lent again).
fn take_back(src: &mut RxSource, rx: &mut RxPath) {
    if src.lent_mode {
        src.queue.take_back_lent(&mut src.scratch);
        src.scratch.clear();
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
