//! Where a port receives: its [`Inbox`] (looked up by the peer's TX queues) and, while it runs,
//! its RX rings with their interrupt eventfds.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::ops::Deref;
use vdpdk_core::{Mbuf, Mempool};
use vmm_sys_util::eventfd::EventFd;

use crate::flow::FlowTable;

/// Where a port receives: the peer's TX queues look it up here. `gen` changes whenever `rx`
/// does, so a TX queue revalidates its cached copy with one atomic load per burst.
#[derive(Default)]
pub(crate) struct Inbox {
    pub gen: AtomicU64,
    pub rx: Mutex<Option<Arc<RxSide>>>,
}

impl Inbox {
    pub fn publish(&self, side: Option<Arc<RxSide>>) {
        *self.rx.lock() = side;
        self.gen.fetch_add(1, Ordering::Release);
    }
}

/// The RX rings of a started port.
pub(crate) struct RxSide {
    pub rings: Box<[RxRing]>,
    pub flows: Arc<FlowTable>,
}

/// A bounded FIFO of frames between the senders (the peer's TX queues) and one receiver (an
/// RX queue). Senders take a lock among themselves; the receiver takes none that senders
/// touch: it reads `tail`, moves frames out, and writes `head`, so an empty poll reads one
/// shared cache line and a burst moves whole bursts with two index updates. (A mutex around a
/// VecDeque, locked by both sides, bounced its line between the two cores on every poll: 86%
/// of the wire end's RX burst samples in vdpdk-bench's TX direction; a lock-free queue with a
/// compare-and-swap per frame cost twice the CPU of the mutex.)
pub(crate) struct BurstRing {
    /// `slots.len()` is a power of two at least `cap`; slot `i % len` holds frame `i` for
    /// `head <= i < tail`.
    slots: Box<[UnsafeCell<MaybeUninit<Mbuf>>]>,
    mask: usize,
    pub cap: usize,
    /// Next frame the receiver takes (free-running); written by the receiver only.
    head: Padded<AtomicUsize>,
    /// Next free slot (free-running); written by the sender holding `send` only.
    tail: Padded<AtomicUsize>,
    /// Senders, one at a time.
    send: Padded<Mutex<()>>,
    /// The receiver, one at a time (an RX queue and a port stop clearing the ring).
    recv: Padded<Mutex<()>>,
}

/// Keeps a hot field off its neighbours' cache lines (128: Intel fetches lines in pairs).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

// SAFETY: a slot is written only by the sender holding `send`, between `tail` and
// `head + cap` (free: the receiver is done with it), and read only by the receiver holding
// `recv`, between `head` and `tail` (published with Release, read with Acquire); Mbuf is Send.
unsafe impl Sync for BurstRing {}

impl BurstRing {
    fn new(cap: usize) -> BurstRing {
        let len = cap.max(1).next_power_of_two();
        BurstRing {
            slots: (0..len)
                .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                .collect(),
            mask: len - 1,
            cap,
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
            send: Padded(Mutex::new(())),
            recv: Padded(Mutex::new(())),
        }
    }

    /// Takes the senders' lock: frames pushed through the guard become visible to the
    /// receiver when it is dropped.
    pub fn sender(&self) -> RingSender<'_> {
        let guard = self.send.lock();
        let tail = self.tail.load(Ordering::Relaxed);
        RingSender {
            ring: self,
            _guard: guard,
            published: tail,
            tail,
            head: self.head.load(Ordering::Acquire),
        }
    }

    /// Moves up to `max` frames, oldest first, to the end of `out`; returns how many.
    pub fn pop_burst(&self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let _guard = self.recv.lock();
        let head = self.head.load(Ordering::Relaxed);
        let n = (self.tail.load(Ordering::Acquire) - head).min(max);
        out.reserve(n);
        for i in head..head + n {
            // SAFETY: head <= i < tail: the slot holds a frame the sender published (Acquire
            // above), which only this receiver (holding `recv`) moves out, once.
            out.push(unsafe { (*self.slots[i & self.mask].get()).assume_init_read() });
        }
        self.head.store(head + n, Ordering::Release);
        n
    }

    /// Whether the ring looked empty: a hint for pollers (a frame pushed meanwhile shows up
    /// at the next poll).
    pub fn looks_empty(&self) -> bool {
        self.tail.load(Ordering::Acquire) == self.head.load(Ordering::Relaxed)
    }

    /// Whether the ring is empty, ordered with the caller's SeqCst fence (see
    /// RxRing::wake_if_armed).
    pub fn is_empty(&self) -> bool {
        self.tail.load(Ordering::SeqCst) == self.head.load(Ordering::SeqCst)
    }

    /// Frees every frame still in the ring.
    pub fn clear(&self) {
        let mut v = Vec::new();
        while self.pop_burst(&mut v, usize::MAX) > 0 {}
        Mempool::free_bulk(&mut v);
    }
}

impl Drop for BurstRing {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A sender's hold on a [`BurstRing`]: pushes frames, published when it is dropped.
pub(crate) struct RingSender<'a> {
    ring: &'a BurstRing,
    _guard: MutexGuard<'a, ()>,
    /// `tail` as the receiver knows it.
    published: usize,
    /// Next free slot (not yet published).
    tail: usize,
    /// The receiver's position as last read: frames below it are gone.
    head: usize,
}

impl RingSender<'_> {
    /// Whether one more frame fits.
    pub fn has_room(&mut self) -> bool {
        if self.tail - self.head < self.ring.cap {
            return true;
        }
        // Read the receiver's progress again only when the cached view says full.
        self.head = self.ring.head.load(Ordering::Acquire);
        self.tail - self.head < self.ring.cap
    }

    /// Appends `m`; the caller saw [`RingSender::has_room`] say yes.
    pub fn push(&mut self, m: Mbuf) {
        // The caller's has_room refreshed `head`; this compare keeps a full ring from being
        // overwritten whatever the caller did.
        assert!(
            self.tail - self.head < self.ring.cap,
            "push into a full pair ring"
        );
        // SAFETY: tail - head < cap <= slots.len(): the slot is free (the receiver moved its
        // frame out before publishing `head`, read with Acquire), and only this sender, holding
        // `send`, writes it before publishing `tail`.
        unsafe { (*self.ring.slots[self.tail & self.ring.mask].get()).write(m) };
        self.tail += 1;
    }
}

impl Drop for RingSender<'_> {
    fn drop(&mut self) {
        // Unchanged, the receiver's copy of the line stays valid.
        if self.tail != self.published {
            self.ring.tail.store(self.tail, Ordering::Release);
        }
    }
}

/// One RX queue's ring and its wake-up.
pub(crate) struct RxRing {
    pub ring: BurstRing,
    /// Set by the receiver when it wants a wake-up; whoever clears it writes the eventfd.
    pub armed: AtomicBool,
    /// Present when the port was configured with `rx_intr`.
    pub efd: Option<EventFd>,
}

impl RxRing {
    /// A ring of `cap` frames, with an interrupt eventfd when `intr`.
    pub fn new(cap: usize, intr: bool) -> std::io::Result<RxRing> {
        Ok(RxRing {
            ring: BurstRing::new(cap),
            armed: AtomicBool::new(false),
            efd: intr
                .then(|| EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))
                .transpose()?,
        })
    }

    /// Wakes the receiver if it is armed. The caller has made its pushes visible with a SeqCst
    /// fence first; the receiver arms, fences and re-checks the ring, so one of the two sides
    /// always sees the other and no wake-up is lost.
    pub fn wake_if_armed(&self) {
        if self.armed.load(Ordering::SeqCst) && self.armed.swap(false, Ordering::SeqCst) {
            self.signal();
        }
    }

    fn signal(&self) {
        if let Some(fd) = &self.efd {
            // The only possible failure is EAGAIN at a counter near u64::MAX, which still
            // leaves the fd readable.
            let _ = fd.write(1);
        }
    }

    /// Clears a pending wake-up; nothing pending (EAGAIN) is the expected outcome.
    pub fn drain_signal(&self) {
        if let Some(fd) = &self.efd {
            let _ = fd.read();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(pool: &Mempool, i: u32) -> Mbuf {
        let mut m = pool.alloc().expect("pool has room");
        m.copy_from(&i.to_le_bytes()).unwrap();
        m
    }

    fn number(m: &Mbuf) -> u32 {
        u32::from_le_bytes(m.data().try_into().unwrap())
    }

    #[test]
    fn a_full_ring_refuses_and_frees_what_it_held_when_dropped() {
        let pool = Mempool::new("ring-full", 16, 256).unwrap();
        let ring = BurstRing::new(3);
        let mut tx = ring.sender();
        for i in 0..3 {
            assert!(tx.has_room());
            tx.push(numbered(&pool, i));
        }
        assert!(!tx.has_room(), "3 of 3 held");
        drop(tx);
        assert!(!ring.looks_empty() && !ring.is_empty());
        let mut out = Vec::new();
        assert_eq!(ring.pop_burst(&mut out, 2), 2);
        assert_eq!(out.iter().map(number).collect::<Vec<_>>(), [0, 1]);
        assert!(
            ring.sender().has_room(),
            "room again once the receiver took some"
        );
        Mempool::free_bulk(&mut out);
        drop(ring);
        assert_eq!(
            pool.available(),
            16,
            "the frame left in the ring went back to its pool"
        );
    }

    #[test]
    fn frames_cross_threads_in_order_and_none_is_lost() {
        const N: u32 = 200_000;
        let pool = Mempool::new("ring-threads", 512, 256).unwrap();
        let ring = Arc::new(BurstRing::new(64));
        let sender = {
            let (ring, pool) = (ring.clone(), pool.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while i < N {
                    let mut tx = ring.sender();
                    while i < N && tx.has_room() {
                        let Some(mut m) = pool.alloc() else { break };
                        m.copy_from(&i.to_le_bytes()).unwrap();
                        tx.push(m);
                        i += 1;
                    }
                    drop(tx);
                    std::thread::yield_now();
                }
            })
        };
        let (mut next, mut out) = (0u32, Vec::new());
        while next < N {
            ring.pop_burst(&mut out, 32);
            for m in &out {
                assert_eq!(number(m), next, "frames arrive in the order sent");
                next += 1;
            }
            Mempool::free_bulk(&mut out);
            if ring.looks_empty() {
                std::thread::yield_now();
            }
        }
        sender.join().unwrap();
        assert!(ring.is_empty());
        assert_eq!(pool.available(), 512);
    }
}
