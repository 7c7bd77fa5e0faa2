//! A look at a guest's TX rings without its lock. Taking the lock is a locked instruction,
//! which waits for every store still in flight (frames and completions just written into
//! guest memory) to drain; a poller serving 64 guests spent 65% of its time taking and
//! releasing the locks of guests that had sent nothing. An idle guest now costs one load per
//! TX queue. Each guest's TX rings are served by one poller (its cluster's TX role), so the
//! positions kept here are the only ones.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vdpdk_core::abi::desc::RingPtr;

use crate::guest::{DmaRegion, Guest, TxPath};

/// One guest's TX rings as the poller last saw them under the lock.
#[derive(Default)]
pub(super) struct TxPeek {
    /// `Guest::tx_gen` when the view was built; None: no view yet.
    gen: Option<u64>,
    /// Each running queue's ring and the next descriptor the poller looks at.
    rings: Vec<(RingPtr, u16)>,
    /// Some descriptor is lent to the backend (zero-copy TX): its release needs the lock.
    lent: bool,
    /// The regions holding those rings: while held, their memory stays mapped here even if
    /// the guest unmaps them, so a stale look reads old bytes, never unmapped memory.
    _maps: Vec<Arc<DmaRegion>>,
}

impl TxPeek {
    /// Whether some of the guest's buffers were lent to the backend when last seen.
    pub(super) fn lent(&self) -> bool {
        self.lent
    }

    /// True when the guest surely has nothing to send: the view is current and no ring's next
    /// descriptor is handed over. False means "take the lock and look".
    #[inline]
    pub(super) fn idle(&self, g: &Guest) -> bool {
        // Rings first: a guest with work is told without reading the generation.
        !self.lent
            && self.rings.iter().all(|(ring, next)| !ring.posted(*next))
            && self.gen == Some(g.tx_gen.load(Ordering::Acquire))
    }

    /// Brings the view up to date with `tx` (read under the guest's TX lock, `gen` its
    /// generation then). Only a new generation rebuilds it; otherwise only positions move.
    pub(super) fn update(&mut self, gen: u64, tx: &TxPath) {
        self.lent = tx
            .queues
            .iter()
            .flatten()
            .any(|hq| hq.zc.as_ref().is_some_and(|z| z.pending(hq.next)));
        if self.gen == Some(gen) {
            for ((_, next), hq) in self.rings.iter_mut().zip(tx.queues.iter().flatten()) {
                *next = hq.next;
            }
            return;
        }
        self.rings.clear();
        self._maps.clear();
        self.gen = None;
        if !tx.running {
            self.gen = Some(gen);
            return; // a stopped guest sends nothing until a start moves the generation
        }
        let mut maps = Vec::new();
        for hq in tx.queues.iter().flatten() {
            let Some(region) = tx.mem.region_holding(hq.ring_iova, hq.ring_len) else {
                return; // no view: the lock is taken every round, as before
            };
            maps.push(region);
            self.rings.push((hq.ring, hq.next));
        }
        self._maps = maps;
        self.gen = Some(gen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    const RAM: u64 = 0x40_0000;

    fn look(view: &mut TxPeek, g: &Guest) {
        let tx = g.tx.lock();
        view.update(g.tx_gen.load(Ordering::Relaxed), &tx);
    }

    #[test]
    fn idle_only_while_the_view_is_current_and_no_descriptor_waits() {
        let g = testing::guest();
        let _ram = testing::map_ram(&g, RAM, 0x10000, false);
        g.with_both(|tx, _| {
            tx.queues = vec![Some(testing::host_queue(&tx.mem, RAM, 32)), None];
            tx.running = true;
        });
        let mut view = TxPeek::default();
        assert!(!view.idle(&g), "no view yet");
        look(&mut view, &g);
        assert!(view.idle(&g));
        let ring = g.tx.lock().queues[0].as_ref().unwrap().ring;
        ring.publish(0, &testing::desc(RAM + 0x1000, 60));
        assert!(!view.idle(&g), "a descriptor handed over");
        {
            let mut tx = g.tx.lock();
            let hq = tx.queues[0].as_mut().unwrap();
            hq.ring.release(0, 0);
            hq.next = 1;
        }
        // The poller updates its view after every pull under the lock.
        look(&mut view, &g);
        assert!(view.idle(&g), "positions follow the poller");
        ring.publish(1, &testing::desc(RAM + 0x1000, 60));
        assert!(!view.idle(&g));
        ring.release(1, 0);
        g.tx.lock().queues[0].as_mut().unwrap().next = 2;
        look(&mut view, &g);
        g.set_running(false);
        assert!(
            !view.idle(&g),
            "a control-plane change makes the view stale"
        );
        look(&mut view, &g);
        assert!(view.idle(&g), "a stopped guest sends nothing");
        g.set_running(true);
        assert!(!view.idle(&g));
        look(&mut view, &g);
        assert!(view.idle(&g));
    }

    #[test]
    fn a_view_keeps_its_ring_mapped_after_the_guest_unmaps_it() {
        let g = testing::guest();
        let ram = testing::map_ram(&g, RAM, 0x10000, false);
        g.with_both(|tx, _| {
            tx.queues = vec![Some(testing::host_queue(&tx.mem, RAM, 32))];
            tx.running = true;
        });
        let mut view = TxPeek::default();
        look(&mut view, &g);
        assert!(view.idle(&g));
        assert_eq!(g.unmap_range(RAM, 0x10000), Ok(1));
        drop(ram);
        // The view reads the old ring (still mapped: it holds the region) and, its
        // generation gone, says "take the lock".
        assert!(!view.idle(&g));
        look(&mut view, &g);
        assert!(view.idle(&g), "stopped: the ring went with its memory");
        assert!(view.rings.is_empty() && view._maps.is_empty());
    }
}
