//! Guest-to-guest switching. A frame a guest sends to another VM's MAC goes straight into that
//! VM's RX ring, never out to the NIC (which may not hairpin it back) and in again; a broadcast
//! or multicast goes to every other running VM and to the wire. The receiving VM's flow rules
//! apply as to frames from the wire, and the sender was spoof-checked before its frame got
//! here. Only host copies are looked at, so a guest changing its buffer meanwhile gains nothing.
//!
//! Two ways there. A frame usually goes straight from the sender's ring into the receiver's
//! during the TX pull, its head staged on the poller's stack (`tx::staged`). The rest that may
//! be for a guest (super-frames, checksum requests past the stage, broadcasts, and every frame
//! of a pull after one of those, so each receiver keeps the sender's order) goes as a host
//! copy, switched after the pull by [`Poller::switch_local`]. A frame read as for the wire
//! only goes there, not looked at again.

use vdpdk_core::{MacAddr, OlFlags};

use super::rx::{deliver_to_guest, TARGET_ALL, TARGET_NONE};
use super::{bump, Poller};
use crate::guest::Guest;

impl Poller {
    /// Where a frame from `sender` to `dst` goes besides (or instead of) the wire: another
    /// guest's index, [`TARGET_ALL`] (every guest but the sender, and the wire) or
    /// [`TARGET_NONE`] (the wire only). A frame to the sender's own MAC goes to the wire, as a
    /// switch never sends a frame back out of the port it came in by.
    pub(super) fn local_target(&self, sender: MacAddr, dst: MacAddr) -> u16 {
        if dst == sender {
            return TARGET_NONE;
        }
        self.lookup(dst)
    }

    /// Delivers the frames `tx_buf[first..]` (host copies of `sender`'s) that are for other
    /// guests, each guest's share under one lock, and takes the unicast ones out of what goes
    /// to the wire. Super-frames left for the backend to segment go to the wire only (the
    /// TX path cuts a super-frame for another guest in software before it gets here).
    pub(super) fn switch_local(&mut self, sender: &Guest, first: usize) {
        self.targets.clear();
        self.groups.clear();
        let mut any_all = false;
        for m in &self.tx_buf[first..] {
            let t = if m.is_chained() || m.ol_flags.contains(OlFlags::TX_TCP_SEG) {
                TARGET_NONE
            } else {
                MacAddr::dst_of(m.data()).map_or(TARGET_NONE, |d| self.local_target(sender.mac, d))
            };
            any_all |= t == TARGET_ALL;
            self.groups.note(t);
            self.targets.push(t);
        }
        if self.groups.hit.is_empty() && !any_all {
            return;
        }
        let mut switched = 0;
        let batch = &self.tx_buf[first..];
        if any_all {
            // A broadcast among them: every other guest looks through all of them.
            let me = self.lookup(sender.mac) as usize;
            for (gi, g) in self
                .all_guests
                .iter()
                .enumerate()
                .filter(|(gi, _)| *gi != me)
            {
                let mine = batch
                    .iter()
                    .zip(&self.targets)
                    .filter(|(_, &t)| t as usize == gi || t == TARGET_ALL)
                    .map(|(m, _)| m);
                switched += deliver_to_guest(g, gi as u16, mine, &self.stats, &mut self.due);
            }
        } else {
            self.groups.seal(&self.targets);
            for (k, &gi) in self.groups.hit.iter().enumerate() {
                let mine = self.groups.frames(k).iter().map(|&i| &batch[i as usize]);
                let g = &self.all_guests[gi as usize];
                switched += deliver_to_guest(g, gi, mine, &self.stats, &mut self.due);
            }
        }
        self.raise_due_irqs();
        bump(&self.stats.switched, switched);
        // Unicast frames for a guest are done; the rest (broadcasts too) go on to the wire.
        let mut keep = first;
        for i in first..self.tx_buf.len() {
            let t = self.targets[i - first];
            if t == TARGET_NONE || t == TARGET_ALL {
                self.tx_buf.swap(keep, i);
                keep += 1;
            }
        }
        self.free_cache.extend(self.tx_buf.drain(keep..));
    }
}
