//! Handing freed buffers back in batches: one lock per run of buffers from the same pool.

use std::ptr::NonNull;

use super::{release, Mbuf, Mempool, PoolInner};

impl Mempool {
    /// Returns every mbuf in `mbufs` (with its chained segments) to its pool, one lock per run
    /// of buffers from the same pool.
    pub fn free_bulk(mbufs: &mut Vec<Mbuf>) {
        Mempool::free_all(mbufs.drain(..));
    }

    /// [`Mempool::free_bulk`] for mbufs taken from anywhere (a driver's ring slots), without
    /// gathering them into a vector first.
    #[inline]
    pub fn free_all(mbufs: impl IntoIterator<Item = Mbuf>) {
        // Chained lent segments go back to their lender as they come, their pool references
        // in one release per run, so a burst of header-and-lent chains is one run of headers.
        // (A lent head, rare, is handed back by its run's flush.)
        let (mut own, mut lent) = (FreeRun::default(), LentRun::default());
        for mut m in mbufs {
            let mut next = m.next.take();
            own.push(m);
            // Chained segments (rare) follow their head.
            while let Some(seg) = next {
                let mut seg = seg.into_inner();
                next = seg.next.take();
                match seg.is_lent() {
                    false => own.push(seg),
                    true => lent.push(seg),
                }
            }
        }
        own.flush();
        lent.flush();
    }
}

/// Indexes of freed buffers of one pool, handed back together.
struct FreeRun {
    pool: Option<NonNull<PoolInner>>,
    idxs: [u32; 64],
    n: usize,
}

impl Default for FreeRun {
    fn default() -> Self {
        FreeRun {
            pool: None,
            idxs: [0; 64],
            n: 0,
        }
    }
}

impl FreeRun {
    /// Queues one buffer, flushing first when it is of another pool or the run is full.
    #[inline(always)]
    fn push(&mut self, m: Mbuf) {
        self.push_index(m.pool, m.idx());
        std::mem::forget(m);
    }

    /// Queues buffer `idx` of `pool`, whose reference (one per buffer) the run takes over.
    #[inline(always)]
    fn push_index(&mut self, pool: NonNull<PoolInner>, idx: u32) {
        if self.pool != Some(pool) || self.n == self.idxs.len() {
            self.flush();
            self.pool = Some(pool);
        }
        self.idxs[self.n] = idx;
        self.n += 1;
    }

    /// Returns the queued buffers to their pool and drops their references.
    fn flush(&mut self) {
        let Some(pool) = self.pool else { return };
        let idxs = &self.idxs[..self.n];
        // SAFETY: each index in idxs belongs to an mbuf of `pool` that we forgot, so we hold
        // one reference per index.
        let p = unsafe { pool.as_ref() };
        match &p.lender {
            None => p.free.lock().extend_from_slice(idxs),
            Some(l) => idxs.iter().for_each(|&i| l.returned(i)),
        }
        // SAFETY: releasing exactly the references those mbufs held.
        unsafe { release(pool, idxs.len()) };
        self.n = 0;
    }
}

/// Lent segments freed from one pool: each is returned to its lender at once, their
/// references on the pool dropped together.
#[derive(Default)]
struct LentRun {
    pool: Option<NonNull<PoolInner>>,
    n: usize,
}

impl LentRun {
    fn push(&mut self, m: Mbuf) {
        if self.pool != Some(m.pool) {
            self.flush();
            self.pool = Some(m.pool);
        }
        // SAFETY: `m` holds a reference on its pool, so the pool is alive.
        let p = unsafe { m.pool.as_ref() };
        if let Some(l) = &p.lender {
            l.returned(m.idx());
        }
        self.n += 1;
        std::mem::forget(m);
    }

    fn flush(&mut self) {
        if let Some(pool) = self.pool {
            // SAFETY: one reference per forgotten mbuf of `pool`.
            unsafe { release(pool, self.n) };
        }
        self.n = 0;
    }
}

/// A single-segment mbuf a device is still reading, reduced to what freeing it takes: its pool
/// and buffer index. A TX ring parks each posted buffer in its slot as one of these, 16 bytes
/// written and read back per frame where a whole [`Mbuf`] is 80 (moving those was the largest
/// per-frame cost of guest TX at 64 B). Dropping it frees the buffer; [`Mempool::free_parked`]
/// frees many under one lock.
pub struct ParkedMbuf {
    pool: NonNull<PoolInner>,
    idx: u32,
}

// SAFETY: a ParkedMbuf exclusively owns its buffer, as the Mbuf it was; the pool is Sync.
unsafe impl Send for ParkedMbuf {}

impl Mbuf {
    /// Parks a single-segment mbuf (its metadata is dropped; see [`ParkedMbuf`]). A chain is
    /// handed back unchanged: its segments need the full form to be freed.
    #[inline(always)]
    pub fn park(self) -> Result<ParkedMbuf, Mbuf> {
        if self.next.is_some() {
            return Err(self);
        }
        let parked = ParkedMbuf {
            pool: self.pool,
            idx: self.idx(),
        };
        // The pool reference and the buffer pass to `parked`.
        std::mem::forget(self);
        Ok(parked)
    }
}

impl Mempool {
    /// Frees parked buffers, one lock per run of the same pool (as [`Mempool::free_all`]).
    #[inline]
    pub fn free_parked(parked: impl IntoIterator<Item = ParkedMbuf>) {
        let mut run = FreeRun::default();
        for p in parked {
            run.push_index(p.pool, p.idx);
            std::mem::forget(p);
        }
        run.flush();
    }
}

impl Drop for ParkedMbuf {
    fn drop(&mut self) {
        let mut run = FreeRun::default();
        run.push_index(self.pool, self.idx);
        run.flush();
    }
}
