//! Zero-copy TX (`Features::TX_ZERO_COPY`): a frame's payload goes to the backend in place,
//! as a segment that lends guest memory (`Lending::attach`), chained behind a host copy of
//! its first [`LENT_HEADER`] bytes. The spoof check, the steering and any flow rule read only
//! that copy, so a guest rewriting its buffer after the check changes payload bytes only.
//!
//! A lent descriptor is released to the guest when the backend frees the segment, and always
//! in ring order (the guest's done index says "everything before this"). The DMA region a
//! lent segment points into stays held until then: a guest that unmaps that memory, or
//! disconnects, or dies, leaves the mapping in this process until the backend is done, so the
//! backend never reads unmapped memory. The slots outlive the queue for the same reason: the
//! lender behind the pool's mbufs owns them.

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use vdpdk_core::abi::desc::{RingPtr, DESC_F_ERROR};
use vdpdk_core::{Lender, Lending, Mbuf};

use super::DmaRegion;

/// Bytes of a lent frame copied into a host buffer: an Ethernet header with a VLAN tag, an
/// IPv6 header and a TCP header with options fit (14 + 4 + 40 + 60 = 118).
pub(crate) const LENT_HEADER: usize = 128;
/// Smallest frame whose payload is lent rather than copied: below it, a copy of the rest
/// costs less than lending it (a chained segment, a slot, a later release). Measured on the
/// null wire (docs/BENCH.md, session 9), copy against lent, Mpps: 512 B 15.2-16.2 / 11.1-11.6,
/// 1024 B 12.0-12.3 / 11.7-12.0, 1280 B 10.1-10.6 / 11.4-12.3.
pub(crate) const LEND_MIN_FRAME: usize = 1024;

/// The slot's descriptor is not taken, or already released to the guest.
const IDLE: u8 = 0;
/// Its payload is lent to the backend.
const LENT: u8 = 1;
/// Lent and returned by the backend: unpin it and release it once every earlier one is.
const RETURNED: u8 = 2;
/// Done without lending (copied): release it once every earlier one is.
const DONE: u8 = 3;
/// Refused: release it with `DESC_F_ERROR` once every earlier one is.
const DONE_ERROR: u8 = 4;

/// Per-descriptor state of one TX ring, shared by the poller and the backend's frees.
struct Slots {
    state: Box<[AtomicU8]>,
    /// What keeps lent memory mapped; the poller's alone (see `Sync` below).
    held: UnsafeCell<Held>,
}

/// The regions lent slots point into, each held once however many slots point into it (an
/// `Arc` clone and drop per frame would be two locked instructions per frame).
pub(super) struct Held {
    /// Per slot: its entry in `pins` while it is lent.
    pin_of: Box<[u16]>,
    /// Regions with slots lent from them, and how many; a free entry is None.
    pins: Vec<Option<(Arc<DmaRegion>, u32)>>,
}

impl Held {
    /// Nothing pinned, for a ring of `size` slots.
    pub(super) fn new(size: u16) -> Held {
        Held {
            pin_of: vec![0; size as usize].into_boxed_slice(),
            pins: Vec::new(),
        }
    }

    /// Notes slot `slot` lent from `region`.
    pub(super) fn pin(&mut self, slot: usize, region: &Arc<DmaRegion>) {
        let k = match self
            .pins
            .iter()
            .position(|p| p.as_ref().is_some_and(|(r, _)| Arc::ptr_eq(r, region)))
        {
            Some(k) => k,
            None => {
                let free = self.pins.iter().position(Option::is_none);
                let k = free.unwrap_or(self.pins.len());
                let entry = Some((region.clone(), 0));
                match free {
                    Some(_) => self.pins[k] = entry,
                    None => self.pins.push(entry),
                }
                k
            }
        };
        self.pins[k].as_mut().expect("just found or made").1 += 1;
        self.pin_of[slot] = k as u16;
    }

    /// Notes slot `slot` no longer lent; its region is let go with its last slot.
    pub(super) fn unpin(&mut self, slot: usize) {
        let k = self.pin_of[slot] as usize;
        // Every lent slot has a pin (`ZeroCopy::room` keeps a slot from being lent twice).
        if let Some(Some((_, n))) = self.pins.get_mut(k) {
            *n -= 1;
            if *n == 0 {
                self.pins[k] = None; // may unmap: nothing points into it any more
            }
        }
    }
}

// SAFETY: `state` is atomic. `held` is touched by one thread at a time: the poller serving
// the queue (under the guest's TX lock) or, once the queue and every lent mbuf are gone,
// whoever drops the last reference.
unsafe impl Sync for Slots {}

impl Lender for Slots {
    fn returned(&self, slot: u32) {
        // Release: the backend's reads of the payload come before the guest may reuse it.
        self.state[slot as usize].store(RETURNED, Ordering::Release);
    }
}

/// Zero-copy state of one guest TX queue.
pub(crate) struct ZeroCopy {
    slots: Arc<Slots>,
    /// Lends guest memory as mbufs; freeing one marks its slot done.
    lending: Lending,
    mask: u16,
    /// The oldest descriptor taken and not yet released (free-running, like `HostQueue::next`).
    pub(crate) released: u16,
}

impl ZeroCopy {
    /// State for a ring of `size` descriptors (a power of two).
    pub(crate) fn new(size: u16, name: &str) -> ZeroCopy {
        let slots = Arc::new(Slots {
            state: (0..size).map(|_| AtomicU8::new(IDLE)).collect(),
            held: UnsafeCell::new(Held::new(size)),
        });
        ZeroCopy {
            lending: Lending::new(name, slots.clone()),
            slots,
            mask: size - 1,
            released: 0,
        }
    }

    /// The poller's view of what keeps lent memory mapped.
    fn held(&mut self) -> &mut Held {
        // SAFETY: `&mut self`: only the poller serving this queue, under the guest's TX lock,
        // gets here, once at a time; the lender side never touches `held`.
        unsafe { &mut *self.slots.held.get() }
    }

    /// How many more descriptors may be taken from the ring at `next`: never a lap past the
    /// oldest one not yet released. A guest can leave a lent descriptor's AVAIL flag set (it
    /// is never cleared until release), and taking it a second time would lend its slot
    /// twice.
    #[inline]
    pub(crate) fn room(&self, next: u16) -> usize {
        (self.mask as usize + 1) - next.wrapping_sub(self.released) as usize
    }

    /// Whether descriptors taken from the ring still wait for their release (`next`: the
    /// queue's next descriptor to take).
    pub(crate) fn pending(&self, next: u16) -> bool {
        self.released != next
    }

    /// Finishes descriptor `idx` (the newest taken) that needs nothing more from the backend:
    /// released with `flags` now if every earlier one is, else marked to follow them.
    #[inline]
    pub(crate) fn finish(&mut self, ring: &RingPtr, idx: u16, flags: u16) {
        if self.released == idx {
            ring.release(idx, flags);
            self.released = idx.wrapping_add(1);
            return;
        }
        let s = if flags == 0 { DONE } else { DONE_ERROR };
        self.slots.state[(idx & self.mask) as usize].store(s, Ordering::Relaxed);
    }

    /// Lends `len` bytes at `ptr` (guest IOVA `iova`, inside `region`) for descriptor `idx`,
    /// the newest taken. The descriptor is released once the returned mbuf is freed.
    #[inline]
    pub(crate) fn lend(
        &mut self,
        idx: u16,
        region: &Arc<DmaRegion>,
        ptr: NonNull<u8>,
        iova: u64,
        len: u16,
    ) -> Mbuf {
        let slot = (idx & self.mask) as usize;
        // The slot is IDLE: its descriptor was just taken, and the previous one on this slot
        // was released a lap ago.
        self.held().pin(slot, region);
        // Relaxed: the backend gets the mbuf through the TX burst, which orders this store.
        self.slots.state[slot].store(LENT, Ordering::Relaxed);
        // SAFETY: `ptr..ptr+len` lies in `region` (the caller found it there), which stays
        // pinned until `reclaim` sees the slot returned, or until the slots drop with the last
        // lent mbuf.
        unsafe {
            self.lending
                .attach(slot as u32, ptr, region.device_iova(iova), len)
        }
    }

    /// Releases, in ring order, every descriptor before `next` that is done; returns how many.
    #[inline]
    pub(crate) fn reclaim(&mut self, ring: &RingPtr, next: u16) -> usize {
        let mut n = 0;
        while self.released != next {
            let slot = (self.released & self.mask) as usize;
            let flags = match self.slots.state[slot].load(Ordering::Acquire) {
                DONE => 0,
                DONE_ERROR => DESC_F_ERROR,
                RETURNED => {
                    self.held().unpin(slot);
                    0
                }
                _ => break, // still lent: everything after it waits
            };
            self.slots.state[slot].store(IDLE, Ordering::Relaxed);
            ring.release(self.released, flags);
            self.released = self.released.wrapping_add(1);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use vdpdk_core::abi::desc::DESC_F_AVAIL;

    const RAM: u64 = 0x40_0000;

    #[test]
    fn descriptors_are_released_in_ring_order_whatever_order_the_backend_frees_in() {
        let g = testing::guest();
        let _ram = testing::map_ram(&g, RAM, 0x10000, false);
        let tx = g.tx.lock();
        let hq = testing::host_queue(&tx.mem, RAM, 8);
        for i in 0..4 {
            hq.ring.publish(i, &testing::desc(RAM + 0x1000, 600));
        }
        let mut zc = ZeroCopy::new(8, "t");
        let (region, ptr) = tx.mem.lend(RAM + 0x1000, 600).unwrap();
        let a = zc.lend(0, region, ptr, RAM + 0x1000, 600);
        assert_eq!(
            a.data_addr(),
            ptr.as_ptr().cast_const(),
            "the guest's own bytes"
        );
        zc.finish(&hq.ring, 1, 0);
        let b = zc.lend(2, region, ptr, RAM + 0x1000, 600);
        zc.finish(&hq.ring, 3, DESC_F_ERROR);
        let avail = |i| hq.ring.flags(i) & DESC_F_AVAIL != 0;
        assert!(
            (0..4).all(avail),
            "nothing released while the first is lent"
        );
        assert!(zc.pending(4));
        drop(b);
        assert_eq!(
            zc.reclaim(&hq.ring, 4),
            0,
            "the first still holds the rest back"
        );
        let region = tx.mem.region_holding(RAM, 1).unwrap();
        assert_eq!(
            Arc::strong_count(&region),
            4,
            "both halves' maps, the pin and this look"
        );
        drop(a);
        assert_eq!(zc.reclaim(&hq.ring, 4), 4);
        assert_eq!(
            Arc::strong_count(&region),
            3,
            "unpinned with its last lent slot"
        );
        assert!(!(0..4).any(avail));
        assert_eq!(hq.ring.flags(3) & DESC_F_ERROR, DESC_F_ERROR);
        assert_eq!(hq.ring.flags(1) & DESC_F_ERROR, 0);
        assert!(!zc.pending(4));
        // With nothing pending, a finished descriptor is released at once.
        hq.ring.publish(4, &testing::desc(RAM + 0x1000, 60));
        zc.finish(&hq.ring, 4, 0);
        assert!(!avail(4) && !zc.pending(5));
    }
}
