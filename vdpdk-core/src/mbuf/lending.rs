//! Mbufs of memory someone else owns (DPDK's external buffers, `rte_pktmbuf_attach_extbuf`):
//! a [`Lending`] wraps a range it is lent in an [`Mbuf`], and freeing that mbuf tells the
//! [`Lender`] instead of refilling a free list. host-mux's zero-copy TX lends guest buffers
//! to its backend so.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{release, Mbuf, Mempool, PoolInner, LENT, NEXT_POOL_ID};

/// The owner of memory an external pool lends out (see [`Lending::attach`]).
pub trait Lender: Send + Sync {
    /// The mbuf attached as `slot` was freed: nobody reads its memory any more.
    fn returned(&self, slot: u32);
}

impl Mempool {
    /// A pool of no memory of its own, whose mbufs each lend memory owned by `lender`
    /// (see [`Lending`]); freeing one calls `lender.returned(slot)`. It hands out nothing
    /// from `alloc`.
    fn external(name: &str, lender: Arc<dyn Lender>) -> Mempool {
        let inner = Box::new(PoolInner {
            mem: None,
            base: std::ptr::null_mut(),
            iova_base: 0,
            lender: Some(lender),
            stride: 0,
            count: 0,
            buf_len: 0,
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            free: Mutex::new(Vec::new()),
            refs: AtomicUsize::new(1),
        });
        Mempool {
            inner: NonNull::from(Box::leak(inner)),
        }
    }
}

/// Lends memory owned by someone else as mbufs (DPDK's external buffers): each
/// [`Lending::attach`] wraps a range in an mbuf, and freeing that mbuf (or the packet it is
/// chained into) tells the [`Lender`] its slot came back.
pub struct Lending {
    pool: Mempool,
    /// Pool references paid ahead: an attach takes one instead of an atomic add each.
    credit: usize,
}

/// References [`Lending`] pays ahead at a time.
const LENDING_CREDIT: usize = 64;

impl Lending {
    /// A lending of memory owned by `lender`, named `name` (in its pool's name).
    pub fn new(name: &str, lender: Arc<dyn Lender>) -> Lending {
        Lending {
            pool: Mempool::external(name, lender),
            credit: 0,
        }
    }

    /// The pool its mbufs belong to (it hands out nothing from `alloc`).
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// Wraps `len` bytes at `ptr` (device address `iova`) in an mbuf holding a packet of all
    /// `len` bytes, with no headroom. Freeing it calls the lender's [`Lender::returned`] with
    /// `slot`.
    ///
    /// The memory may be written by its owner meanwhile (a guest's buffer): readers that must
    /// not form a Rust reference to it use [`Mbuf::copy_to`] or [`Mbuf::data_addr`], not
    /// [`Mbuf::data`].
    ///
    /// `slot` is below 2^31 (the top bit marks lent mbufs).
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped and readable until the lender is told `slot` came back.
    #[inline]
    pub unsafe fn attach(&mut self, slot: u32, ptr: NonNull<u8>, iova: u64, len: u16) -> Mbuf {
        if self.credit == 0 {
            self.pool
                .inner()
                .refs
                .fetch_add(LENDING_CREDIT, Ordering::Relaxed);
            self.credit = LENDING_CREDIT;
        }
        self.credit -= 1; // this mbuf's reference on the pool
        debug_assert!(slot < LENT, "slot {slot} collides with the lent mark");
        // No headroom: the data is the lender's bytes from the first.
        let mut m = Mbuf::fresh(self.pool.inner, ptr, slot | LENT, iova, len);
        m.data_off = 0;
        m.data_len = len;
        m
    }
}

impl Drop for Lending {
    fn drop(&mut self) {
        if self.credit > 0 {
            // SAFETY: the credit is references this lending paid for and did not hand out.
            unsafe { release(self.pool.inner, self.credit) };
        }
    }
}
