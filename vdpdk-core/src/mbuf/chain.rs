//! The heap home of a chained segment (`Mbuf::chain`), recycled per thread.

use std::mem::{ManuallyDrop, MaybeUninit};

use super::Mbuf;

/// A chained segment on the heap. Its allocation is recycled through a small per-thread
/// cache: zero-copy TX chains a segment to every frame it sends, and a burst of 32 fresh
/// allocations and frees overflowed the allocator's own per-thread cache (a fifth of the
/// poller's time went to malloc and free).
pub(super) struct Segment(ManuallyDrop<Box<MaybeUninit<Mbuf>>>);

/// Segment allocations kept per thread for reuse.
const SEGMENT_CACHE: usize = 256;

/// Emptied segment allocations: the boxes are the point (kept for reuse), not the values.
#[allow(clippy::vec_box)]
type Shells = Vec<Box<MaybeUninit<Mbuf>>>;

thread_local! {
    static SEGMENT_SHELLS: std::cell::RefCell<Shells> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Segment {
    pub(super) fn new(m: Mbuf) -> Segment {
        let shell = SEGMENT_SHELLS
            .try_with(|c| c.borrow_mut().pop())
            .ok()
            .flatten();
        let mut shell = shell.unwrap_or_else(|| Box::new(MaybeUninit::uninit()));
        shell.write(m);
        Segment(ManuallyDrop::new(shell))
    }

    /// Moves the mbuf out and keeps the allocation for the next segment.
    #[inline(never)]
    pub(super) fn into_inner(self) -> Mbuf {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the box is taken exactly once.
        let shell = unsafe { ManuallyDrop::take(&mut this.0) };
        // SAFETY: a Segment's shell always holds an initialised mbuf (written in `new`); it is
        // read once, and the shell is then treated as uninitialised.
        let m = unsafe { shell.assume_init_read() };
        recycle(shell);
        m
    }
}

/// Keeps an emptied segment allocation for reuse, or frees it when the cache is full.
#[inline(never)]
fn recycle(shell: Box<MaybeUninit<Mbuf>>) {
    // A thread being torn down frees it instead.
    let _ = SEGMENT_SHELLS.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < SEGMENT_CACHE {
            c.push(shell);
        }
    });
}

impl std::ops::Deref for Segment {
    type Target = Mbuf;
    fn deref(&self) -> &Mbuf {
        // SAFETY: initialised in `new`, and only `into_inner`/`drop` end that.
        unsafe { self.0.assume_init_ref() }
    }
}

impl std::ops::DerefMut for Segment {
    fn deref_mut(&mut self) -> &mut Mbuf {
        // SAFETY: as in deref.
        unsafe { self.0.assume_init_mut() }
    }
}

impl Drop for Segment {
    // Out of line: every drop of an mbuf carries this glue, and single-buffer packets (the hot
    // path) never run it.
    #[inline(never)]
    fn drop(&mut self) {
        // SAFETY: drop runs once; the box is taken once and its mbuf dropped once (it was
        // initialised in `new`).
        let mut shell = unsafe { ManuallyDrop::take(&mut self.0) };
        // SAFETY: see above.
        unsafe { shell.assume_init_drop() };
        recycle(shell);
    }
}
