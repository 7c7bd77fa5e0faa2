//! Handing freed buffers back in batches: one lock per run of buffers from the same pool.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use super::{release, Mbuf, Mempool, PoolInner};

impl Mempool {
    /// Returns every mbuf in `mbufs` (with its chained segments) to its pool, one lock per run
    /// of buffers from the same pool.
    // Inlined into the application's receive loop (chains leave it for `free_rest`): called
    // out of line, G2G at 64 B was 5-9% slower.
    #[inline]
    pub fn free_bulk(mbufs: &mut Vec<Mbuf>) {
        let len = mbufs.len();
        // Emptied first: should anything below panic, the rest leak rather than be freed twice.
        // SAFETY: the elements stay initialised in the buffer; each is read in place below and
        // its buffer and pool reference handed to a run, so none is dropped as well.
        unsafe { mbufs.set_len(0) };
        let base = mbufs.as_mut_ptr();
        let mut run = FreeRun::new();
        for i in 0..len {
            // SAFETY: i < len, an element set aside above and still valid; read in place,
            // since moving the 80-byte mbuf out first cost a store-and-reload per frame.
            let m = unsafe { &*base.add(i) };
            if m.next.is_some() {
                // Chains (a zero-copy frame's lent data behind its header) and what follows
                // them go the general way, which keeps their heads in one run and hands the
                // lent segments back as they come. (Taking them apart here, in place, cost
                // 1500 B zero-copy TX 13%.)
                run.flush();
                // SAFETY: elements i..len are set aside above and not yet taken over.
                return unsafe { Self::free_rest(base.add(i), len - i) };
            }
            run.push_index(m.pool, m.idx());
        }
        run.flush();
    }

    /// Frees the `n` mbufs from `first` on through [`Mempool::free_all`], out of
    /// `free_bulk`'s inlined loop.
    ///
    /// # Safety
    /// The `n` mbufs are valid and owned by nobody else; each is read out once.
    #[cold]
    #[inline(never)]
    unsafe fn free_rest(first: *mut Mbuf, n: usize) {
        // SAFETY: the caller's promise.
        Self::free_all((0..n).map(|j| unsafe { std::ptr::read(first.add(j)) }));
    }

    /// [`Mempool::free_bulk`] for mbufs taken from anywhere (a driver's ring slots), without
    /// gathering them into a vector first.
    #[inline]
    pub fn free_all(mbufs: impl IntoIterator<Item = Mbuf>) {
        let (mut own, mut lent) = (FreeRun::new(), LentRun::default());
        for mut m in mbufs {
            let next = m.next.take();
            own.push(m);
            Self::free_segments(next, &mut own, &mut lent);
        }
        own.flush();
        lent.flush();
    }

    /// Queues a head's chained segments (rare). Lent ones go back to their lender as they
    /// come, their pool references in one release per run, so a burst of header-and-lent
    /// chains is one run of headers. (A lent head, rare, is handed back by its run's flush.)
    fn free_segments(
        mut next: Option<super::chain::Segment>,
        own: &mut FreeRun,
        lent: &mut LentRun,
    ) {
        while let Some(seg) = next {
            let mut seg = seg.into_inner();
            next = seg.next.take();
            match seg.is_lent() {
                false => own.push(seg),
                true => lent.push(seg),
            }
        }
    }
}

/// Buffers a [`FreeRun`] holds before it hands them back.
const RUN: usize = 64;

/// Indexes of freed buffers of one pool, handed back together.
struct FreeRun {
    pool: Option<NonNull<PoolInner>>,
    n: usize,
    /// Only `idxs[..n]` is ever written (see `new`).
    idxs: MaybeUninit<[u32; RUN]>,
}

impl FreeRun {
    #[inline(always)]
    fn new() -> FreeRun {
        // Field by field: as a struct literal LLVM zeroed the whole run (the index array
        // too) with one memset, whose wide stores the later reads of `pool` and `n` could
        // not be forwarded from, a wait for every store in flight (the guest's ring writes
        // included) on each bulk free: 9.6% of a G2G profile.
        let mut run = MaybeUninit::<FreeRun>::uninit();
        let p = run.as_mut_ptr();
        // SAFETY: `p` is valid for writes; after the two writes every field but `idxs`,
        // which may stay uninitialised, is initialised.
        unsafe {
            std::ptr::addr_of_mut!((*p).pool).write(None);
            std::ptr::addr_of_mut!((*p).n).write(0);
            run.assume_init()
        }
    }

    /// Queues one buffer, flushing first when it is of another pool or the run is full.
    #[inline(always)]
    fn push(&mut self, m: Mbuf) {
        self.push_index(m.pool, m.idx());
        std::mem::forget(m);
    }

    /// Queues buffer `idx` of `pool`, whose reference (one per buffer) the run takes over.
    #[inline(always)]
    fn push_index(&mut self, pool: NonNull<PoolInner>, idx: u32) {
        if self.pool != Some(pool) || self.n == RUN {
            self.flush();
            self.pool = Some(pool);
        }
        // SAFETY: n < RUN, inside the array.
        unsafe { self.idxs.as_mut_ptr().cast::<u32>().add(self.n).write(idx) };
        self.n += 1;
    }

    /// Returns the queued buffers to their pool and drops their references.
    fn flush(&mut self) {
        let Some(pool) = self.pool else { return };
        // SAFETY: push_index wrote idxs[..n].
        let idxs: &[u32] = unsafe { std::slice::from_raw_parts(self.idxs.as_ptr().cast(), self.n) };
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
        let mut run = FreeRun::new();
        for p in parked {
            run.push_index(p.pool, p.idx);
            std::mem::forget(p);
        }
        run.flush();
    }
}

impl Drop for ParkedMbuf {
    fn drop(&mut self) {
        let mut run = FreeRun::new();
        run.push_index(self.pool, self.idx);
        run.flush();
    }
}
