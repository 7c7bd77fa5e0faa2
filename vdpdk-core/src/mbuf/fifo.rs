//! A first-in first-out store of mbufs that moves them memory to memory.
//!
//! A driver keeps the buffers it posted to a device ring in ring order. Held as
//! `Option<Mbuf>` slots, every post and every completion moved an 80-byte mbuf through the
//! stack, where the compiler stored it field by field and read it back in 16-byte pieces
//! across those stores: a store-forwarding stall on each (measured at 64 B: over half of
//! guest-pmd's RX refill and 43% of its `rx_burst`). [`MbufFifo`] copies each mbuf's bytes
//! straight between a vector and its slot instead.

use std::mem::MaybeUninit;
use std::ptr;

use super::Mbuf;

/// A ring of mbufs, filled at the back from a vector and emptied at the front into one.
pub struct MbufFifo {
    slots: Box<[MaybeUninit<Mbuf>]>,
    /// Slots `front..back` (wrapping, masked) hold live mbufs.
    front: usize,
    back: usize,
    mask: usize,
}

// SAFETY: it owns the mbufs it holds, each Send.
unsafe impl Send for MbufFifo {}

impl MbufFifo {
    /// An empty FIFO for `capacity` mbufs (rounded up to a power of two).
    pub fn with_capacity(capacity: usize) -> MbufFifo {
        let n = capacity.max(1).next_power_of_two();
        MbufFifo {
            slots: (0..n).map(|_| MaybeUninit::uninit()).collect(),
            front: 0,
            back: 0,
            mask: n - 1,
        }
    }

    /// Mbufs held.
    pub fn len(&self) -> usize {
        self.back.wrapping_sub(self.front)
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.back == self.front
    }

    /// Whether it holds as many as it can.
    pub fn is_full(&self) -> bool {
        self.len() == self.slots.len()
    }

    /// Moves the last mbuf of `from` to the back; false (nothing moved) when `from` is empty
    /// or the FIFO full.
    #[inline(always)]
    pub fn push_from(&mut self, from: &mut Vec<Mbuf>) -> bool {
        if self.is_full() {
            return false;
        }
        let Some(last) = from.len().checked_sub(1) else {
            return false;
        };
        let slot = self.slots[self.back & self.mask].as_mut_ptr();
        // SAFETY: element `last` is initialised; shrinking the length first hands its
        // ownership to the bitwise copy, which lands in a slot outside `front..back` (the
        // FIFO is not full), so nothing live is overwritten.
        unsafe {
            from.set_len(last);
            ptr::copy_nonoverlapping(from.as_ptr().add(last), slot, 1);
        }
        self.back = self.back.wrapping_add(1);
        true
    }

    /// Moves the front mbuf to the end of `to` and returns it there for the caller to fill
    /// in; None when empty.
    #[inline(always)]
    pub fn pop_into<'a>(&mut self, to: &'a mut Vec<Mbuf>) -> Option<&'a mut Mbuf> {
        if self.is_empty() {
            return None;
        }
        to.reserve(1);
        let at = to.len();
        let slot = self.slots[self.front & self.mask].as_ptr();
        self.front = self.front.wrapping_add(1);
        // SAFETY: the slot was inside `front..back`, so it holds a live mbuf; advancing
        // `front` first hands its ownership to the copy, which lands in reserved capacity
        // that `set_len` then makes part of `to`.
        unsafe {
            ptr::copy_nonoverlapping(slot, to.as_mut_ptr().add(at), 1);
            to.set_len(at + 1);
        }
        to.last_mut()
    }

    /// Takes the front mbuf out; None when empty.
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.is_empty() {
            return None;
        }
        let slot = self.slots[self.front & self.mask].as_ptr();
        self.front = self.front.wrapping_add(1);
        // SAFETY: as in `pop_into`: a live mbuf whose ownership passes to the read.
        Some(unsafe { ptr::read(slot) })
    }
}

impl Drop for MbufFifo {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbuf::{Mempool, DEFAULT_BUF_SIZE};

    #[test]
    fn mbufs_come_out_in_order_and_none_is_lost_or_freed_twice() {
        let pool = Mempool::new("fifo", 16, DEFAULT_BUF_SIZE).unwrap();
        let mut fifo = MbufFifo::with_capacity(5);
        assert_eq!(fifo.slots.len(), 8);
        let mut v = Vec::new();
        pool.alloc_bulk(&mut v, 10);
        let iovas: Vec<u64> = v.iter().rev().map(|m| m.data_iova()).collect();
        let mut pushed = 0;
        while fifo.push_from(&mut v) {
            pushed += 1;
        }
        assert_eq!((pushed, v.len(), fifo.len()), (8, 2, 8));
        assert!(fifo.is_full() && !fifo.push_from(&mut v));
        let mut out = Vec::new();
        for (k, iova) in iovas[..3].iter().enumerate() {
            let m = fifo.pop_into(&mut out).unwrap();
            m.set_len(k + 1).unwrap();
            assert_eq!(m.data_iova(), *iova, "first in, first out");
        }
        // Round the ring: the two left in `v` go in behind the five still held.
        while fifo.push_from(&mut v) {}
        assert_eq!(fifo.len(), 7);
        let rest: Vec<u64> = std::iter::from_fn(|| fifo.pop())
            .map(|m| m.data_iova())
            .collect();
        assert_eq!(rest, iovas[3..]);
        assert_eq!(out.iter().map(|m| m.len()).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(pool.available(), 6 + 7, "popped mbufs went back on drop");
        // Dropping a FIFO that holds mbufs frees them.
        pool.alloc_bulk(&mut v, 4);
        while fifo.push_from(&mut v) {}
        drop(fifo);
        drop(out);
        assert_eq!(pool.available(), 16);
    }
}
