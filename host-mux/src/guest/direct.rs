//! Zero-copy RX (`Features::RX_ZERO_COPY`): the buffers a guest posts on RX queue 0's direct
//! ring are lent to the backend RX queue dedicated to its VM (`RxQueue::post_lent`), which
//! receives into them in place, and each comes back as a frame whose descriptor is completed
//! here, in ring order (the backend fills lent buffers in the order posted).
//!
//! Lent buffers are in the backend's hands between [`DirectRx::lend`] and [`DirectRx::complete`]
//! (or a take-back, [`DirectRx::rewind`]). Until then the region a buffer lies in stays pinned,
//! so it stays mapped in this process whatever the guest does; and before any DMA unmap, reset
//! or stop completes the control thread has the poller take every buffer back (see
//! `Guest::with_both`), so the backend never writes into memory the guest took away. A
//! backend queue dropped without a take-back (a poller that died) writes nothing more, and
//! the pins keep its buffers' regions mapped until the direct ring goes.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vdpdk_core::abi::desc::{Desc, DESC_F_ERROR};
use vdpdk_core::{LentBuf, LentRx, OlFlags};

use super::lend::Held;
use super::{GuestMem, HostQueue};

/// The direct ring of a guest's RX queue 0 and the buffers of it lent to the backend.
pub(crate) struct DirectRx {
    /// The ring; `q.next` is the oldest lent descriptor (the next to complete).
    pub(crate) q: HostQueue,
    /// The next descriptor to lend: `q.next..lend_next` are in the backend's hands.
    lend_next: u16,
    /// What keeps lent memory mapped: each lent slot pins its region.
    held: Held,
    mask: u16,
}

impl DirectRx {
    /// The direct ring `q` of `size` descriptors, nothing lent.
    pub(crate) fn new(q: HostQueue, size: u16) -> DirectRx {
        DirectRx {
            q,
            lend_next: 0,
            held: Held::new(size),
            mask: size - 1,
        }
    }

    /// Buffers in the backend's hands.
    pub(crate) fn lent(&self) -> u16 {
        self.lend_next.wrapping_sub(self.q.next)
    }

    /// Lends the buffers posted from `lend_next` on, at most `max`, appending them to `out`
    /// (tagged with their slot); returns how many. Each descriptor is read once and its
    /// buffer must lie in writable guest memory: a bad one is refused (`DESC_F_ERROR`,
    /// counted in `refused`) when nothing lent is ahead of it, else lending stops there until
    /// what is ahead completes. Each lent buffer's region stays pinned, so mapped, until the
    /// buffer is completed or taken back.
    ///
    /// Buffers shorter than `min_len` (what the backend may write into each) are refused too.
    pub(crate) fn lend(
        &mut self,
        mem: &GuestMem,
        out: &mut Vec<LentBuf>,
        (max, min_len): (usize, usize),
        refused: &mut u64,
    ) -> usize {
        let mut n = 0;
        // Never a lap ahead of the oldest lent: its AVAIL flag stays set until completion.
        let room = (self.mask as usize + 1) - self.lent() as usize;
        while n < max.min(room) {
            let idx = self.lend_next;
            if !self.q.ring.posted(idx) {
                break;
            }
            let d: Desc = self.q.ring.read(idx);
            let fits = d.len > 0 && d.len as usize >= min_len;
            let Some((region, ptr)) = mem.lend_writable(d.addr, d.len as u64).filter(|_| fits)
            else {
                if self.lent() != 0 {
                    break;
                }
                self.q.ring.complete(idx, 0, DESC_F_ERROR, 0, 0, 0);
                *refused += 1;
                self.q.next = idx.wrapping_add(1);
                self.lend_next = self.q.next;
                continue;
            };
            let slot = idx & self.mask;
            self.held.pin(slot as usize, region);
            out.push(LentBuf {
                iova: region.device_iova(d.addr),
                ptr,
                len: d.len,
                tag: slot as u32,
            });
            self.lend_next = idx.wrapping_add(1);
            n += 1;
        }
        n
    }

    /// Takes back the `n` newest lent buffers, which the backend did not take.
    pub(crate) fn unlend_newest(&mut self, n: usize) {
        for _ in 0..n.min(self.lent() as usize) {
            self.lend_next = self.lend_next.wrapping_sub(1);
            self.held.unpin((self.lend_next & self.mask) as usize);
        }
    }

    /// Completes the oldest lent descriptor with the frame the backend received into its
    /// buffer; false (nothing changed) when `rx` is not about that buffer.
    #[inline]
    pub(crate) fn complete(&mut self, rx: &LentRx) -> bool {
        let idx = self.q.next;
        let slot = idx & self.mask;
        if self.lent() == 0 || rx.tag != slot as u32 {
            return false;
        }
        if rx.error {
            // No frame in it (the device dropped it): back to the guest unused.
            self.q.ring.complete(idx, 0, DESC_F_ERROR, 0, 0, 0);
        } else {
            let ol = Desc::rx_ol_bits(rx.ol_flags);
            let mark = if rx.ol_flags.contains(OlFlags::RX_FDIR_ID) {
                rx.mark
            } else {
                0
            };
            self.q
                .ring
                .complete(idx, rx.len, 0, ol, rx.packet_type.0, mark);
        }
        self.held.unpin(slot as usize);
        self.q.next = idx.wrapping_add(1);
        true
    }

    /// Forgets every lent buffer, which the backend gave back (`take_back_lent`): their
    /// descriptors are still posted and will be lent again.
    pub(crate) fn rewind(&mut self) {
        let n = self.lent() as usize;
        self.unlend_newest(n);
    }
}

/// How the control thread has the poller take every lent RX buffer back from the backend
/// before it changes a guest (see `Guest::with_both`).
#[derive(Default)]
pub struct LendControl {
    /// Control threads in a change: no lending meanwhile.
    paused: AtomicU32,
    /// Take-backs asked for.
    asked: AtomicU64,
    /// The last `asked` the poller answered, after taking everything back.
    done: AtomicU64,
    /// A poller lends this guest's buffers (from its start until it stopped, having taken
    /// everything back): only then is there anyone to wait for.
    served: AtomicBool,
}

/// Longest a control change waits for the poller to take lent buffers back.
const TAKE_BACK_WAIT: Duration = Duration::from_secs(2);

impl LendControl {
    /// Stops lending and waits until the poller took every lent buffer back (it is woken by
    /// `wake`); lending resumes when the returned guard drops. False when the poller did not
    /// answer in time (it stopped).
    pub(crate) fn pause(&self, wake: impl Fn()) -> (PauseGuard<'_>, bool) {
        self.paused.fetch_add(1, Ordering::SeqCst);
        let want = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = PauseGuard(self);
        wake();
        let t0 = Instant::now();
        while self.done.load(Ordering::Acquire) < want && self.served.load(Ordering::Acquire) {
            if t0.elapsed() > TAKE_BACK_WAIT {
                return (guard, false);
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        (guard, true)
    }

    /// The poller's side: a take-back it has yet to answer (the `asked` to answer with).
    #[inline]
    pub(crate) fn pending(&self) -> Option<u64> {
        let asked = self.asked.load(Ordering::SeqCst);
        (asked != self.done.load(Ordering::Relaxed)).then_some(asked)
    }

    /// The poller took everything back for `asked`.
    pub(crate) fn answer(&self, asked: u64) {
        self.done.store(asked, Ordering::Release);
    }

    /// A poller starts lending this guest's buffers.
    pub(crate) fn poller_started(&self) {
        self.served.store(true, Ordering::Release);
    }

    /// The poller stopped for good, after taking everything back.
    pub(crate) fn poller_stopped(&self) {
        self.served.store(false, Ordering::Release);
    }

    /// Whether lending may go on.
    #[inline]
    pub(crate) fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst) != 0
    }
}

/// Lending resumes when this drops.
pub(crate) struct PauseGuard<'a>(&'a LendControl);

impl Drop for PauseGuard<'_> {
    fn drop(&mut self) {
        self.0.paused.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use std::sync::Arc;
    use vdpdk_core::abi::desc::DESC_F_AVAIL;

    const RAM: u64 = 0x40_0000;
    const BUF: u64 = RAM + 0x4000;

    fn filled(b: &LentBuf, len: u16) -> LentRx {
        LentRx {
            tag: b.tag,
            len,
            ..Default::default()
        }
    }

    #[test]
    fn buffers_are_lent_once_completed_in_order_and_refused_when_bad() {
        let g = testing::guest();
        let _ram = testing::map_ram(&g, RAM, 0x10000, false);
        let _ro = testing::map_ram(&g, 0x80_0000, 0x1000, true);
        let rx = g.rx.lock();
        let q = testing::host_queue(&rx.mem, RAM, 8);
        let ring = q.ring;
        let mut d = DirectRx::new(q, 8);
        // A bad buffer first (read-only memory): refused at once, nothing being ahead of it.
        ring.publish(0, &testing::desc(0x80_0000, 2048));
        for i in 1..4u16 {
            ring.publish(i, &testing::desc(BUF + i as u64 * 0x800, 2048));
        }
        // Outside the map, behind lent ones: lending stops there.
        ring.publish(4, &testing::desc(0x1000, 2048));
        let (mut lent, mut refused) = (Vec::new(), 0);
        assert_eq!(d.lend(&rx.mem, &mut lent, (16, 0), &mut refused), 3);
        assert_eq!(refused, 1);
        assert_eq!(ring.read(0).flags, DESC_F_ERROR, "refused, handed back");
        assert_eq!(
            lent.iter().map(|b| (b.iova, b.tag)).collect::<Vec<_>>(),
            [(BUF + 0x800, 1), (BUF + 0x1000, 2), (BUF + 0x1800, 3)],
            "the guest's own buffers, tagged with their slots"
        );
        let host = rx.mem.translate(BUF + 0x800, 2048, true).unwrap();
        assert_eq!(
            lent[0].ptr.as_ptr(),
            host,
            "where the guest's buffer is mapped here"
        );
        assert_eq!(d.lent(), 3);
        assert_eq!(d.lend(&rx.mem, &mut Vec::new(), (16, 0), &mut refused), 0);
        // The backend fills them in order; one out of order is not taken.
        assert!(!d.complete(&filled(&lent[1], 60)), "not the oldest");
        assert!(d.complete(&filled(&lent[0], 100)));
        let c = ring.read_completed(1);
        assert_eq!((c.len, c.flags & DESC_F_AVAIL), (100, 0));
        assert!(d.complete(&filled(&lent[1], 60)));
        assert_eq!(ring.read_completed(2).len, 60);
        let region = rx.mem.region_holding(BUF, 1).unwrap();
        let pinned = Arc::strong_count(&region);
        // Taken back: the last one is posted still, and lent again from there.
        d.rewind();
        assert_eq!(d.lent(), 0);
        assert_eq!(Arc::strong_count(&region), pinned - 1, "unpinned");
        assert!(ring.posted(3));
        let mut again = Vec::new();
        assert_eq!(d.lend(&rx.mem, &mut again, (16, 0), &mut refused), 1);
        assert_eq!(again[0].iova, BUF + 0x1800);
        // Completing what is left, lending meets the bad one now nothing is ahead of it.
        assert!(d.complete(&filled(&again[0], 64)));
        assert!(!d.complete(&filled(&again[0], 64)), "nothing lent");
        assert_eq!(d.lend(&rx.mem, &mut Vec::new(), (16, 0), &mut refused), 0);
        assert_eq!(refused, 2);
        assert_eq!(ring.read(4).flags, DESC_F_ERROR);
    }
}
