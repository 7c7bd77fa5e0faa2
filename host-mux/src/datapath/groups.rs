//! A batch of frames grouped by the guest each is for, arrival order kept within a guest.
//! With frames for many guests interleaved, each guest is then visited once and reads only
//! its own frames: visiting every guest with a pass over the whole batch cost guests x frames
//! steps (64 guests, 128 frames: 8192 per batch, 64 per frame).

use super::rx::{TARGET_ALL, TARGET_NONE};

/// See the module docs. Reused across batches: no allocation once warm.
#[derive(Default)]
pub(super) struct Groups {
    /// Per guest index: 1 + its position in `hit`, 0 while it has no frame in the batch.
    slot: Vec<u16>,
    /// The guests with unicast frames in the batch, in order of their first frame.
    pub(super) hit: Vec<u16>,
    /// Where each hit guest's frame indices start in `order` (one more entry closes the last).
    start: Vec<u32>,
    /// Frame indices, grouped by guest.
    order: Vec<u32>,
}

impl Groups {
    pub(super) fn new(guests: usize) -> Groups {
        Groups {
            slot: vec![0; guests],
            hit: Vec::with_capacity(guests),
            start: Vec::with_capacity(guests + 1),
            order: Vec::new(),
        }
    }

    /// Forgets the last batch (only the slots it used are touched).
    pub(super) fn clear(&mut self) {
        for &g in &self.hit {
            self.slot[g as usize] = 0;
        }
        self.hit.clear();
        self.start.clear();
        self.order.clear();
    }

    /// Notes one frame's target; call for every frame in order, then [`Groups::seal`].
    #[inline]
    pub(super) fn note(&mut self, target: u16) {
        if target == TARGET_NONE || target == TARGET_ALL {
            return;
        }
        let s = &mut self.slot[target as usize];
        if *s == 0 {
            self.hit.push(target);
            *s = self.hit.len() as u16;
            self.start.push(0);
        }
        self.start[*s as usize - 1] += 1;
    }

    /// Groups the frame indices of `targets` (the ones noted) by guest.
    pub(super) fn seal(&mut self, targets: &[u16]) {
        // Counts become start offsets; `start[k]` then runs ahead as group k fills.
        let mut at = 0;
        for c in self.start.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        self.order.resize(at as usize, 0);
        for (i, &t) in targets.iter().enumerate() {
            if t == TARGET_NONE || t == TARGET_ALL {
                continue;
            }
            let k = self.slot[t as usize] as usize - 1;
            self.order[self.start[k] as usize] = i as u32;
            self.start[k] += 1;
        }
        // Each start now sits where the next group begins: shift back by one group.
        self.start.insert(0, 0);
    }

    /// The frame indices of the `k`-th hit guest, in arrival order.
    pub(super) fn frames(&self, k: usize) -> &[u32] {
        &self.order[self.start[k] as usize..self.start[k + 1] as usize]
    }

    /// How many guests' worth the grouped frames are spread over: their number over the
    /// largest guest's share (8 guests with 4 frames each: 8; one guest with most: 1; none: 0).
    pub(super) fn spread(&self) -> usize {
        let largest = self.start.windows(2).map(|w| w[1] - w[0]).max();
        largest.map_or(0, |m| self.order.len() / m as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_grouped_by_guest_in_arrival_order() {
        let mut g = Groups::new(8);
        for round in 0..2 {
            let targets = [3, TARGET_NONE, 5, 3, TARGET_ALL, 0, 5, 3];
            g.clear();
            targets.iter().for_each(|&t| g.note(t));
            g.seal(&targets);
            assert_eq!(g.hit, [3, 5, 0], "round {round}");
            assert_eq!(g.frames(0), [0, 3, 7]);
            assert_eq!(g.frames(1), [2, 6]);
            assert_eq!(g.frames(2), [5]);
        }
        g.clear();
        g.seal(&[]);
        assert!(g.hit.is_empty());
        assert_eq!(g.spread(), 0);
    }

    #[test]
    fn spread_counts_guests_by_the_largest_share() {
        let mut g = Groups::new(64);
        let mut group = |targets: &[u16]| {
            g.clear();
            targets.iter().for_each(|&t| g.note(t));
            g.seal(targets);
            g.spread()
        };
        let round_robin: Vec<u16> = (0..256).map(|i| i % 8).collect();
        assert_eq!(group(&round_robin), 8);
        // One busy guest and a few frames for others: batches sized for one guest.
        let mut busy = vec![5u16; 29];
        busy.extend([1, 2, 3]);
        assert_eq!(group(&busy), 1);
        // Frames for no guest do not count.
        assert_eq!(group(&[TARGET_NONE, TARGET_ALL, 3, 4]), 2);
    }
}
