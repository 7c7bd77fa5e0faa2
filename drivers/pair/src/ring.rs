//! Where a port receives: its [`Inbox`] (looked up by the peer's TX queues) and, while it runs,
//! its RX rings with their interrupt eventfds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::collections::VecDeque;
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
/// much CPU in vdpdk-bench).
pub(crate) struct BurstRing {
    pub q: Mutex<VecDeque<Mbuf>>,
    pub cap: usize,
}

impl BurstRing {
    fn new(cap: usize) -> BurstRing {
        BurstRing {
            q: Mutex::new(VecDeque::with_capacity(cap)),
            cap,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.q.lock().is_empty()
    }
    pub fn clear(&self) {
        let mut q = self.q.lock();
        let mut v: Vec<Mbuf> = q.drain(..).collect();
        drop(q);
        Mempool::free_bulk(&mut v);
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
