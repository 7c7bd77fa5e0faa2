//! Guest MAC -> guest index, looked up once per frame each way. An open-addressed table with
//! linear probing, built once per poller (its guest list is fixed): one multiply and, at
//! most half full, about one probe. The sorted list with a binary search it replaces cost
//! six unpredictable steps a frame with 64 guests, a tenth of the poller's RX time. The last
//! answer is remembered, so a frame to the same MAC as the one before (most of a burst) takes
//! no probe: 64 B guest TX +2-6%, and 64 guests' RX, each frame to another MAC, unchanged
//! (docs/BENCH.md, session 18).

use std::cell::Cell;

use vdpdk_core::MacAddr;

/// No MAC has this key: keys are 48 bits.
const EMPTY: u64 = u64::MAX;

pub(super) struct MacTable {
    /// (MAC key, guest index); `EMPTY` keys are free slots. A power of two long.
    slots: Box<[(u64, u16)]>,
    /// Right shift that keeps the hash's top bits as a slot number.
    shift: u32,
    /// The last key looked up and its answer (`NOT_FOUND` for none): a burst's frames
    /// mostly share their destination.
    last: Cell<(u64, u16)>,
}

/// `last`'s answer for a MAC no guest has.
const NOT_FOUND: u16 = u16::MAX;

impl MacTable {
    /// A table of `macs[i]` -> `i`. A MAC listed twice keeps its first index (the
    /// configuration refuses duplicates before this).
    pub(super) fn new(macs: impl ExactSizeIterator<Item = MacAddr>) -> MacTable {
        // At most half full, so a miss stops at an empty slot after a probe or two.
        let len = (macs.len() * 2).next_power_of_two().max(8);
        let mut t = MacTable {
            slots: vec![(EMPTY, 0); len].into_boxed_slice(),
            shift: 64 - len.trailing_zeros(),
            last: Cell::new((EMPTY, NOT_FOUND)),
        };
        for (i, mac) in macs.enumerate() {
            let key = key(mac);
            let mut s = t.home(key);
            loop {
                match t.slots[s].0 {
                    EMPTY => {
                        t.slots[s] = (key, i as u16);
                        break;
                    }
                    k if k == key => break,
                    _ => s = (s + 1) & (len - 1),
                }
            }
        }
        t
    }

    /// The guest index of `mac`, if a guest has it.
    #[inline(always)]
    pub(super) fn get(&self, mac: MacAddr) -> Option<u16> {
        let key = key(mac);
        let (last_key, last) = self.last.get();
        if key == last_key {
            return (last != NOT_FOUND).then_some(last);
        }
        let found = self.probe(key);
        self.last.set((key, found.unwrap_or(NOT_FOUND)));
        found
    }

    /// The guest index of `key`, from the table.
    #[inline(always)]
    fn probe(&self, key: u64) -> Option<u16> {
        let mask = self.slots.len() - 1;
        let mut s = self.home(key);
        loop {
            let (k, v) = self.slots[s];
            if k == key {
                return Some(v);
            }
            if k == EMPTY {
                return None;
            }
            s = (s + 1) & mask;
        }
    }

    /// Where `key`'s probe starts: Fibonacci hashing, whose top bits mix every byte of the
    /// MAC (guest MACs often differ in their last byte only).
    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }
}

/// A MAC as an integer key (the six bytes, big-endian).
#[inline(always)]
fn key(m: MacAddr) -> u64 {
    m.0.iter().fold(0, |k, &b| k << 8 | b as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> MacAddr {
        let b = i.to_be_bytes();
        MacAddr([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn finds_every_guest_and_nothing_else() {
        for n in [0u32, 1, 2, 7, 64, 200] {
            let t = MacTable::new((0..n).map(mac));
            for i in 0..n {
                assert_eq!(t.get(mac(i)), Some(i as u16), "{n} guests, guest {i}");
            }
            for i in n..n + 300 {
                assert_eq!(t.get(mac(i)), None, "{n} guests, stranger {i}");
            }
            assert_eq!(t.get(MacAddr([0xff; 6])), None);
            assert_eq!(t.get(MacAddr([0; 6])), None);
        }
    }

    #[test]
    fn colliding_macs_are_told_apart() {
        // MACs that differ only in their top bytes, and a table full to the half.
        let macs: Vec<MacAddr> = (0..32u8).map(|i| MacAddr([i, 0, 0, 0, 0, 1])).collect();
        let t = MacTable::new(macs.iter().copied());
        for (i, &m) in macs.iter().enumerate() {
            assert_eq!(t.get(m), Some(i as u16));
        }
        assert_eq!(t.get(MacAddr([32, 0, 0, 0, 0, 1])), None);
    }

    #[test]
    fn the_remembered_answer_is_the_last_mac_s_own() {
        let t = MacTable::new((0..4).map(mac));
        // Repeats, a stranger between members, a member after a stranger: each answer is
        // the table's, not the one before it.
        for (m, want) in [
            (mac(2), Some(2)),
            (mac(2), Some(2)),
            (mac(9), None),
            (mac(9), None),
            (mac(2), Some(2)),
            (mac(3), Some(3)),
            (mac(0), Some(0)),
            (MacAddr([0xff; 6]), None),
            (mac(0), Some(0)),
        ] {
            assert_eq!(t.get(m), want, "{m:?}");
        }
    }

    #[test]
    fn a_duplicate_keeps_its_first_index() {
        let t = MacTable::new([mac(1), mac(2), mac(1)].into_iter());
        assert_eq!(t.get(mac(1)), Some(0));
        assert_eq!(t.get(mac(2)), Some(1));
    }
}
