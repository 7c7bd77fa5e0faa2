//! Where a port receives: its [`Inbox`] (looked up by the peer's TX queues) and, while it runs,
//! its RX rings with their interrupt eventfds.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
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

/// A bounded FIFO that moves whole bursts under one lock: a burst of 32 costs one lock round
/// trip (measured: the per-packet compare-and-swap of a lock-free queue cost more than twice as
/// much CPU in vdpdk-bench). `len` mirrors the queue's length so that a receiver polling an
/// empty ring reads a shared cache line instead of taking the lock: polling through the lock
/// pulled the line away from the sender on every empty poll (86% of the wire end's time in
/// vdpdk-bench's TX direction was that lock).
pub(crate) struct BurstRing {
    q: Mutex<VecDeque<Mbuf>>,
    len: AtomicUsize,
    pub cap: usize,
}

impl BurstRing {
    fn new(cap: usize) -> BurstRing {
        BurstRing {
            q: Mutex::new(VecDeque::with_capacity(cap)),
            len: AtomicUsize::new(0),
            cap,
        }
    }
    /// Locks the queue; the guard publishes the new length when it is dropped.
    pub fn lock(&self) -> RingGuard<'_> {
        RingGuard {
            len: &self.len,
            q: self.q.lock(),
        }
    }
    /// Whether the ring looked empty at its last unlock: a hint for pollers (a frame pushed
    /// meanwhile shows up at the next poll), never a reason to skip a wake-up.
    pub fn looks_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }
    pub fn is_empty(&self) -> bool {
        self.q.lock().is_empty()
    }
    pub fn clear(&self) {
        let mut q = self.lock();
        let mut v: Vec<Mbuf> = q.drain(..).collect();
        drop(q);
        Mempool::free_bulk(&mut v);
    }
}

/// A locked [`BurstRing`]: its queue, and on drop its length published for
/// [`BurstRing::looks_empty`].
pub(crate) struct RingGuard<'a> {
    len: &'a AtomicUsize,
    q: MutexGuard<'a, VecDeque<Mbuf>>,
}

impl Deref for RingGuard<'_> {
    type Target = VecDeque<Mbuf>;
    fn deref(&self) -> &VecDeque<Mbuf> {
        &self.q
    }
}

impl DerefMut for RingGuard<'_> {
    fn deref_mut(&mut self) -> &mut VecDeque<Mbuf> {
        &mut self.q
    }
}

impl Drop for RingGuard<'_> {
    fn drop(&mut self) {
        self.len.store(self.q.len(), Ordering::Release);
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
