//! TX: guest frames taken from their TX rings, checked, copied into host buffers and queued
//! for the backend. One descriptor goes one of three ways: copied as it is (with checksums
//! filled in software or left to the backend), cut into TCP segments here, or handed to a
//! backend that segments it as a chain of TSO buffers. Guest memory is read only through
//! [`GuestSlice`]; only host copies are parsed.

use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;

use vdpdk_core::abi::desc::{Desc, DESC_F_ERROR};
use vdpdk_core::abi::{self, StatsIndex};
use vdpdk_core::mbuf::TxOffloadInfo;
use vdpdk_core::packet::{fill_tx_checksums, finish_tcp_segment, TcpLayout, TxLayout};
use vdpdk_core::{MacAddr, Mbuf, Mempool, OlFlags};

mod lend;
mod request;
mod staged;

use super::rx::TARGET_NONE;
use super::{bump, Poller, BURST, MIN_FRAME};
use crate::guest::{Guest, GuestMem, GuestMemError, GuestSlice, HostQueue};
pub(super) use request::csum_offloads;
pub use request::{tx_request, TxRequest};
use staged::{stageable, Sink, Switchboard, STAGE_MAX};

/// A TX descriptor the guest handed over, checked: what it asks for and where its frame lies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TxFrame<'m> {
    /// Frame (or super-frame) length in bytes.
    pub(crate) len: usize,
    /// The offload flags the descriptor asks for.
    pub(crate) flags: OlFlags,
    /// Header lengths and segment size from the descriptor.
    pub(crate) info: TxOffloadInfo,
    /// The checked request.
    pub(crate) request: TxRequest,
    /// The frame in guest memory (`len` bytes, inside the guest's DMA map).
    pub(crate) src: GuestSlice<'m>,
}

/// Why a TX descriptor was refused (counted in `tx_bad_desc`, handed back with the error flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadTxDesc {
    /// Its offload request or length is refused by [`tx_request`].
    Request,
    /// Shorter than an Ethernet header.
    Short,
    /// Its buffer is not inside the guest's DMA map.
    Mem(GuestMemError),
}

/// Checks TX descriptor `d` against the guest's DMA map `mem`: its request (see
/// [`tx_request`]), its length and that its frame lies wholly in one region.
#[inline(always)]
pub(crate) fn tx_frame<'m>(
    d: &Desc,
    mem: &'m GuestMem,
    max_frame: usize,
) -> Result<TxFrame<'m>, BadTxDesc> {
    let len = d.len as usize;
    let flags = Desc::tx_ol_to_mbuf(d.ol_flags);
    let info = TxOffloadInfo {
        l2_len: d.l2_len,
        l3_len: d.l3_len,
        l4_len: d.l4_len,
        tso_segsz: d.tso_segsz,
    };
    // The guest's offload request, checked against the descriptor alone (the frame's bytes
    // are the guest's to scribble on; only our copy is parsed).
    let request = tx_request(flags, info, len, max_frame).ok_or(BadTxDesc::Request)?;
    if len < MIN_FRAME {
        return Err(BadTxDesc::Short);
    }
    let src = mem
        .slice(d.addr, len as u64, false)
        .map_err(BadTxDesc::Mem)?;
    Ok(TxFrame {
        len,
        flags,
        info,
        request,
        src,
    })
}

/// What became of one TX descriptor's frame.
pub(super) enum TxOutcome {
    /// Copied into host buffers, queued for the backend.
    Queued,
    /// Delivered straight into another guest's RX ring (or dropped there, counted).
    Switched,
    /// Queued with its payload lent in place: the descriptor is released when the backend
    /// frees it.
    Lent,
    /// Out of host buffers: the descriptor stays with the host until the next round.
    Wait,
    /// Its source MAC is not the guest's own.
    Spoofed,
    /// A copy out of guest memory was refused.
    Bad,
}

/// Descriptors taken from one TX queue per visit: four guest bursts. A visit's fixed cost
/// (the guest's lock, its progress line, the switch and the backend hand-off) is then shared
/// by more frames. Against one burst per visit: 64 B TX +18%, G2G +9%, TX on the pair wire
/// +30% (interleaved pairs, docs/BENCH.md).
const TX_PULL: usize = 4 * BURST;

impl Poller {
    /// Takes up to `TX_PULL` descriptors from each of guest `g`'s TX queues and queues them
    /// for the backend, which gets a burst once one has gathered (from this guest or several)
    /// and the rest at the end of the round: many guests with a few frames each make full
    /// bursts, not one small burst per guest. `k` is the guest's index in `tx_guests` (its
    /// `TxPeek` view).
    pub(super) fn pull_tx(&mut self, g: &Guest, k: usize) -> usize {
        if self.tx_buf.len() >= BURST && !self.flush_pending() {
            bump(&self.stats.tx_backpressure, 1);
            return 0; // backend still full: leave guest frames in their rings (backpressure)
        }
        if self.tx_peeks[k].idle(g) {
            return 0;
        }
        let first = self.tx_buf.len();
        let mut guard = g.tx.lock();
        // Stable while the lock is held: the control plane moves it under the lock.
        let gen = g.tx_gen.load(Ordering::Relaxed);
        if !guard.running {
            self.tx_peeks[k].update(gen, &guard);
            return 0;
        }
        let tx = &mut *guard;
        let (mut taken, mut bytes, mut lent) = (0usize, 0u64, 0u64);
        // The guest list is lent to the switchboard for the pull (a move, no reference
        // counting), so the batch it holds open can borrow a receiver while `self` is used.
        let all = std::mem::take(&mut self.all_guests);
        let mut sw = Switchboard::new(&all);
        let mut stage = [0u8; STAGE_MAX];
        // A burst is taken in two passes: the descriptors are read and checked and their
        // frames prefetched, then the frames are copied, so the cache misses on frames the
        // guest just wrote overlap instead of coming one after another.
        // (Left uninitialised: writing 32 entries on every poll of an idle ring cost more than
        // the polling.)
        let mut burst: [MaybeUninit<(Desc, Result<TxFrame<'_>, BadTxDesc>)>; TX_PULL] =
            [const { MaybeUninit::uninit() }; TX_PULL];
        for (q, hq) in tx.queues.iter_mut().enumerate() {
            let Some(hq) = hq else { continue };
            // Never more than a ring: on a ring passed by flags, the descriptor a lap ahead
            // is the one just read, still posted until it is released below.
            let (mut moved, mut most) = (false, TX_PULL.min(hq.ring.size() as usize));
            if let Some(zc) = &mut hq.zc {
                moved = zc.reclaim(&hq.ring, hq.next) > 0;
                most = most.min(zc.room(hq.next));
            }
            let mut ready = 0;
            while ready < most {
                let idx = hq.next.wrapping_add(ready as u16);
                if !hq.ring.posted(idx) {
                    break;
                }
                let d = hq.ring.read(idx);
                let f = tx_frame(&d, &tx.mem, self.max_frame);
                if let Ok(f) = &f {
                    f.src.prefetch();
                }
                burst[ready].write((d, f));
                ready += 1;
            }
            // SAFETY: the first `ready` entries were written just above (plain Copy data).
            let taken_now: &[(Desc, Result<TxFrame<'_>, BadTxDesc>)] =
                unsafe { std::slice::from_raw_parts(burst.as_ptr().cast(), ready) };
            // A queue that lends gets its own copy of the loop: the copy path then carries no
            // zero-copy test per frame (they cost 64 B TX about 6%).
            let mut out = Sink {
                sw: &mut sw,
                stage: &mut stage,
                stats: &mut tx.stats,
            };
            let (t, b, l) = match hq.zc.is_some() {
                false => self.send_burst::<false>(g, hq, taken_now, &tx.mem, &mut out),
                true => self.send_burst::<true>(g, hq, taken_now, &tx.mem, &mut out),
            };
            taken += t;
            bytes += b;
            lent += l;
            if ready > 0 || moved {
                publish_progress(g, q as u16, hq);
            }
        }
        tx.stats.add(StatsIndex::TxPackets, taken as u64);
        tx.stats.add(StatsIndex::TxBytes, bytes);
        if lent > 0 {
            // Once per pull: an atomic add per frame waits for the frame's stores to drain.
            bump(&self.stats.tx_lent, lent);
        }
        self.tx_peeks[k].update(gen, tx);
        let host_switch = sw.host_switch;
        let switched = sw.finish(&mut self.due);
        self.all_guests = all;
        drop(guard);
        if switched > 0 {
            bump(&self.stats.switched, switched);
            self.raise_due_irqs();
        }
        if taken > 0 {
            if host_switch {
                self.switch_local(g, first);
            }
            if self.tx_buf.len() >= BURST {
                self.flush_pending();
            }
        }
        taken
    }

    /// Sends the checked descriptors `taken_now` of queue `hq` (of guest `g`, DMA map `mem`)
    /// in order, until the host buffers run short; returns the frames taken, their bytes and
    /// how many were lent. `LEND`: the queue lends (`hq.zc` is set).
    #[inline(always)]
    fn send_burst<const LEND: bool>(
        &mut self,
        g: &Guest,
        hq: &mut HostQueue,
        taken_now: &[(Desc, Result<TxFrame<'_>, BadTxDesc>)],
        mem: &GuestMem,
        out: &mut Sink<'_, '_>,
    ) -> (usize, u64, u64) {
        let (mut taken, mut bytes, mut lent) = (0usize, 0u64, 0u64);
        for (i, (d, f)) in taken_now.iter().enumerate() {
            let idx = hq.next;
            let outcome = match f {
                Err(_) => TxOutcome::Bad,
                Ok(f) => {
                    // A frame that may be staged goes where the destination read in guest
                    // memory says. One for the wire only is sent (copied or lent) without the
                    // switch looking at it again: a guest rewriting the address meanwhile
                    // sends to the wire a frame it could have sent there anyway.
                    let target = match stageable(f) {
                        true => self.target_in_guest(g, &f.src),
                        false => {
                            out.sw.host_copy();
                            TARGET_NONE
                        }
                    };
                    match (target, &mut hq.zc) {
                        (TARGET_NONE, Some(zc)) if LEND && self.lendable(f) => {
                            self.lend_tx(g, f, zc, idx, mem)
                        }
                        (TARGET_NONE, _) => self.copy_tx(g, f),
                        _ => self.tx_staged(g, f, out, taken_now.len() - i),
                    }
                }
            };
            let refusal = match outcome {
                TxOutcome::Queued | TxOutcome::Switched => {
                    finish::<LEND>(hq, idx, 0);
                    None
                }
                TxOutcome::Lent => {
                    lent += 1;
                    None
                }
                TxOutcome::Wait => break,
                TxOutcome::Spoofed => Some(StatsIndex::TxSpoofed),
                TxOutcome::Bad => Some(StatsIndex::TxBadDesc),
            };
            hq.next = idx.wrapping_add(1);
            if let Some(why) = refusal {
                finish::<LEND>(hq, idx, DESC_F_ERROR);
                hq.refused = hq.refused.wrapping_add(1);
                out.stats.add(why, 1);
                continue;
            }
            taken += 1;
            bytes += d.len as u64;
        }
        (taken, bytes, lent)
    }

    /// Sends one checked frame the way its request and the backend call for, as a host copy.
    #[inline(always)]
    fn copy_tx(&mut self, g: &Guest, f: &TxFrame<'_>) -> TxOutcome {
        match f.request {
            // A super-frame for another guest is cut here: guests take frames, not super-frames.
            TxRequest::Segment { lay, .. }
                if self.tso_pool.is_some() && !self.for_a_guest_in_guest(g, &f.src) =>
            {
                self.tx_hw_tso(g, f, &lay)
            }
            TxRequest::Segment { lay, mss, nseg } => match self.reserve(nseg) {
                true => self.tx_segments(g, f, &lay, mss, nseg),
                false => TxOutcome::Wait,
            },
            TxRequest::Plain | TxRequest::Checksum(_) => match self.reserve(1) {
                true => self.tx_copy(g, f),
                false => TxOutcome::Wait,
            },
        }
    }

    /// Fills the host buffer cache up to `need` buffers; false when the pool is short (the
    /// descriptor waits for the next round).
    #[inline(always)]
    pub(super) fn reserve(&mut self, need: usize) -> bool {
        while self.free_cache.len() < need {
            let want = need - self.free_cache.len();
            if self.pool.alloc_bulk(&mut self.free_cache, want.max(BURST)) == 0 {
                break;
            }
        }
        self.free_cache.len() >= need
    }

    /// Takes a reserved host buffer into the burst holding `len` bytes: `head`, then frame
    /// `src` (guest memory) from `head.len()` on. Returns its index in the burst, or None (the
    /// buffer back in the cache) when the copy is refused.
    #[inline(always)]
    pub(super) fn push_copy(
        &mut self,
        src: &GuestSlice<'_>,
        len: usize,
        head: &[u8],
    ) -> Option<usize> {
        // Filled in place in the burst: filling a copy on the stack and then moving it read
        // back the fields just written in pieces, a store-forwarding stall per frame.
        let i = self.tx_buf.len();
        self.tx_buf
            .push(self.free_cache.pop().expect("reserved before"));
        let m = &mut self.tx_buf[i];
        m.reset_to_len(len).expect("len checked against max_frame");
        let (staged, rest) = m.data_mut().split_at_mut(head.len());
        staged.copy_from_slice(head);
        // The guest may scribble on the source meanwhile; we only copy bytes.
        if src.read_slice(head.len(), rest).is_err() {
            let m = self.tx_buf.pop().expect("just pushed");
            self.free_cache.push(m);
            return None;
        }
        Some(i)
    }

    /// A frame copied as it is, its checksums (if asked) left to the backend when it has them
    /// or filled here. Needs one reserved buffer.
    #[inline(always)]
    fn tx_copy(&mut self, g: &Guest, f: &TxFrame<'_>) -> TxOutcome {
        // The source MAC is checked in guest memory before the copy (reading back our copy
        // right after writing it cost ~15% of 64 B guest TX), and the copy then gets the
        // checked MAC written over it, so a guest changing it in between sends nothing it was
        // not allowed to.
        if spoofed_in_guest(g, &f.src) {
            return TxOutcome::Spoofed;
        }
        let Some(i) = self.push_copy(&f.src, f.len, &[]) else {
            return TxOutcome::Bad;
        };
        let m = &mut self.tx_buf[i];
        if g.limits.spoof_check {
            m.data_mut()[6..12].copy_from_slice(&g.mac.0);
        }
        if let TxRequest::Checksum(lay) = f.request {
            // The backend fills checksums only of frames it sends; another guest gets them
            // filled here.
            let for_a_guest = MacAddr::dst_of(self.tx_buf[i].data())
                .is_some_and(|d| self.local_target(g.mac, d) != TARGET_NONE);
            let in_hw = self.hw_tx.contains(csum_offloads(f.flags)) && !for_a_guest;
            let m = &mut self.tx_buf[i];
            if in_hw {
                m.ol_flags = f.flags;
                m.tx_offload = f.info;
            } else {
                fill_tx_checksums(m.data_mut(), f.flags, &lay);
            }
        }
        TxOutcome::Queued
    }

    /// A TCP super-frame cut here into `nseg` segments of `mss` payload bytes, each with the
    /// checked headers. Needs `nseg` reserved buffers.
    fn tx_segments(
        &mut self,
        g: &Guest,
        f: &TxFrame<'_>,
        lay: &TxLayout,
        mss: usize,
        nseg: usize,
    ) -> TxOutcome {
        let tcp = TcpLayout {
            l3: lay.l3,
            l4: lay.l4,
            payload: lay.payload,
            ipv6: lay.ipv6,
        };
        let first = self.tx_buf.len();
        for k in 0..nseg {
            let mut m = self.free_cache.pop().expect("reserved above");
            let off = lay.payload + k * mss;
            let chunk = mss.min(f.len - off);
            m.reset_to_len(lay.payload + chunk)
                .expect("headers + mss checked against max_frame");
            let (hdr, payload) = m.data_mut().split_at_mut(lay.payload);
            // Headers are read from guest memory once, into the first segment; the others
            // copy them from there, so every segment carries the headers that were checked.
            let copied = match k {
                0 => f.src.read_slice(0, hdr),
                _ => {
                    hdr.copy_from_slice(&self.tx_buf[first].data()[..lay.payload]);
                    Ok(())
                }
            }
            .and_then(|()| f.src.read_slice(off, payload));
            if copied.is_err() {
                self.free_cache.push(m);
                self.free_cache.extend(self.tx_buf.drain(first..));
                return TxOutcome::Bad;
            }
            if k == 0 && spoofed(g, m.data()) {
                self.free_cache.push(m);
                break;
            }
            self.tx_buf.push(m);
        }
        if self.tx_buf.len() == first {
            return TxOutcome::Spoofed;
        }
        // Headers are finished once all were copied from the pristine first.
        for (k, m) in self.tx_buf[first..].iter_mut().enumerate() {
            finish_tcp_segment(m.data_mut(), &tcp, k, mss, k + 1 == nseg);
        }
        bump(&self.stats.tso_segments, nseg as u64);
        TxOutcome::Queued
    }

    /// Whether the frame at `src` (guest memory) is addressed to another guest (or all). Only
    /// a choice of path rests on it (a super-frame's TSO path here, a frame's staged or wire
    /// path in [`Poller::target_in_guest`]): a guest that changes the address afterwards
    /// sends to the wire what it could have sent there anyway, and what reaches a guest is
    /// classified again from a copy in host memory.
    #[inline(always)]
    fn for_a_guest_in_guest(&self, g: &Guest, src: &GuestSlice<'_>) -> bool {
        self.target_in_guest(g, src) != TARGET_NONE
    }

    /// The [`Poller::local_target`] of the destination of the frame at `src` (guest memory;
    /// see [`Poller::for_a_guest_in_guest`] for what may rest on it).
    #[inline(always)]
    fn target_in_guest(&self, g: &Guest, src: &GuestSlice<'_>) -> u16 {
        src.read_array::<6>(0)
            .map_or(TARGET_NONE, |d| self.local_target(g.mac, MacAddr(d)))
    }

    /// A TCP super-frame handed to the backend to segment, as a chain of TSO buffers.
    fn tx_hw_tso(&mut self, g: &Guest, f: &TxFrame<'_>, lay: &TxLayout) -> TxOutcome {
        let m = match self.hw_tso_chain(&f.src, f.flags, f.info, lay) {
            Ok(Some(m)) => m,
            Ok(None) => return TxOutcome::Wait, // out of TSO buffers: try again next round
            Err(_) => return TxOutcome::Bad,
        };
        if spoofed(g, m.data()) {
            drop(m); // back to the TSO pool
            return TxOutcome::Spoofed;
        }
        self.tx_buf.push(m);
        bump(&self.stats.tso_offloaded, 1);
        TxOutcome::Queued
    }

    /// A guest super-frame `src` as a chain of TSO buffers carrying the request, or None when
    /// the TSO pool is short (the descriptor waits for the next round).
    fn hw_tso_chain(
        &mut self,
        src: &GuestSlice<'_>,
        flags: OlFlags,
        info: TxOffloadInfo,
        lay: &TxLayout,
    ) -> Result<Option<Mbuf>, GuestMemError> {
        let Some(pool) = self.tso_pool.as_ref() else {
            return Ok(None);
        };
        let len = src.len();
        let room = (pool.buf_size() - vdpdk_core::MBUF_HEADROOM) as usize;
        let nbuf = len.div_ceil(room);
        if pool.alloc_bulk(&mut self.tso_bufs, nbuf) < nbuf {
            Mempool::free_bulk(&mut self.tso_bufs);
            return Ok(None);
        }
        let mut head: Option<Mbuf> = None;
        for (k, mut m) in self.tso_bufs.drain(..).enumerate() {
            let chunk = room.min(len - k * room);
            m.reset_to_len(chunk).expect("chunk <= room");
            // On a refusal the rest of the drained buffers go back to the pool with the chain.
            src.read_slice(k * room, m.data_mut())?;
            match &mut head {
                None => head = Some(m),
                Some(h) => h.chain(m),
            }
        }
        let Some(mut head) = head else {
            return Ok(None);
        };
        // The IPv4 header checksum and the TCP checksum are redone per segment by the device.
        let ip = if lay.ipv6 {
            OlFlags::empty()
        } else {
            OlFlags::TX_IP_CKSUM
        };
        head.ol_flags = flags | ip | OlFlags::TX_TCP_CKSUM;
        head.tx_offload = info;
        Ok(Some(head))
    }
}

/// Whether a frame (host copy) claims a source MAC that is not the guest's own, while the
/// guest is spoof-checked.
#[inline(always)]
pub(super) fn spoofed(g: &Guest, frame: &[u8]) -> bool {
    if !g.limits.spoof_check {
        return false;
    }
    // Two integer compares, not a slice compare (a memcmp call per frame cost ~15% of 64 B
    // guest TX in vdpdk-bench).
    let (Some(lo), Some(hi)) = (frame.get(6..10), frame.get(10..12)) else {
        return true;
    };
    let m = &g.mac.0;
    u32::from_ne_bytes([lo[0], lo[1], lo[2], lo[3]]) != u32::from_ne_bytes([m[0], m[1], m[2], m[3]])
        || u16::from_ne_bytes([hi[0], hi[1]]) != u16::from_ne_bytes([m[4], m[5]])
}

/// [`spoofed`] on a frame still in guest memory (`src`, at least [`MIN_FRAME`] bytes). The
/// bytes are read once, as plain values; the caller must not rely on them staying put.
#[inline(always)]
fn spoofed_in_guest(g: &Guest, src: &GuestSlice<'_>) -> bool {
    if !g.limits.spoof_check {
        return false;
    }
    let (Ok(lo), Ok(hi)) = (src.read_array::<4>(6), src.read_array::<2>(10)) else {
        return true;
    };
    let m = &g.mac.0;
    u32::from_ne_bytes(lo) != u32::from_ne_bytes([m[0], m[1], m[2], m[3]])
        || u16::from_ne_bytes(hi) != u16::from_ne_bytes([m[4], m[5]])
}

/// Hands a spoofed frame's descriptor back with the error flag, counted.
/// Tells the guest how far the host got on its TX queue `q` (`abi::TXQ_DONE_INDEX`), with a
/// Release store: a guest that reads the index also sees every descriptor released before
/// it, and the copies out of their buffers are finished.
fn publish_progress(g: &Guest, q: u16, hq: &HostQueue) {
    let line = abi::txq_flags_offset(q);
    g.data_bar
        .flag(line + abi::TXQ_REFUSED)
        .store(hq.refused, Ordering::Relaxed);
    g.data_bar
        .flag(line + abi::TXQ_DONE_INDEX)
        .store(hq.released() as u32, Ordering::Release);
}

/// Hands descriptor `idx` back with `flags`: at once, or (`LEND`) after every earlier one.
#[inline(always)]
fn finish<const LEND: bool>(hq: &mut HostQueue, idx: u16, flags: u16) {
    match LEND {
        true => hq.finish(idx, flags),
        false => hq.ring.release(idx, flags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuestLimits;
    use crate::datapath::{Role, RxSource, MAX_FRAME};
    use crate::guest::MemFault;
    use crate::testing::{self, desc, frame, MAC};
    use std::sync::Arc;
    use vdpdk_core::abi::desc::DESC_OL_TX_TCP_SEG;
    use vdpdk_core::MacAddr;

    const RAM: u64 = 0x40_0000;
    const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);

    #[test]
    fn descriptors_are_refused_for_length_offloads_and_memory() {
        let g = testing::guest();
        let _ram = testing::map_ram(&g, RAM, 0x10000, false);
        let tx = g.tx.lock();
        let check = |d: Desc| tx_frame(&d, &tx.mem, MAX_FRAME).map(|f| (f.len, f.src.len()));
        assert_eq!(check(desc(RAM, 60)), Ok((60, 60)));
        assert_eq!(check(desc(RAM, 13)).unwrap_err(), BadTxDesc::Short);
        assert_eq!(check(desc(RAM, 9019)).unwrap_err(), BadTxDesc::Request);
        // A segmentation request with a segment size below MIN_TSO_MSS.
        let mut tso = desc(RAM, 4000);
        (tso.ol_flags, tso.tso_segsz) = (DESC_OL_TX_TCP_SEG, 100);
        assert_eq!(check(tso).unwrap_err(), BadTxDesc::Request);
        let fault = |d| match check(d) {
            Err(BadTxDesc::Mem(e)) => e.fault,
            other => panic!("{other:?}"),
        };
        assert_eq!(fault(desc(0x1000, 60)), MemFault::Unmapped);
        assert_eq!(fault(desc(RAM + 0x10000 - 30, 60)), MemFault::Unmapped);
        assert_eq!(fault(desc(u64::MAX - 20, 60)), MemFault::Wraps);
    }

    #[test]
    fn the_spoof_check_compares_the_source_mac() {
        let g = testing::guest();
        let open = testing::guest_with(
            1,
            1,
            GuestLimits {
                spoof_check: false,
                ..Default::default()
            },
        );
        assert!(!spoofed(&g, &frame(OTHER, MAC, 60, 0)));
        assert!(spoofed(&g, &frame(MAC, OTHER, 60, 0)));
        assert!(spoofed(&g, &[0; 11]), "too short to carry a source MAC");
        assert!(!spoofed(&open, &frame(MAC, OTHER, 60, 0)));
        let _ram = testing::map_ram(&g, RAM, 0x1000, false);
        testing::poke(&g, RAM, &frame(OTHER, MAC, 60, 0));
        testing::poke(&g, RAM + 0x100, &frame(OTHER, OTHER, 60, 0));
        let tx = g.tx.lock();
        let at = |iova| tx.mem.slice(iova, 60, false).unwrap();
        assert!(!spoofed_in_guest(&g, &at(RAM)));
        assert!(spoofed_in_guest(&g, &at(RAM + 0x100)));
        assert!(!spoofed_in_guest(&open, &at(RAM + 0x100)));
    }

    #[test]
    fn a_round_sends_good_frames_and_hands_bad_ones_back_flagged() {
        let (g, _ram) = guest_with_tx_ring();
        let good = frame(OTHER, MAC, 64, 0x11);
        testing::poke(&g, RAM + 0x1000, &good);
        testing::poke(&g, RAM + 0x1100, &frame(OTHER, OTHER, 64, 0x22));
        let posted = [
            desc(RAM + 0x1000, 64),
            desc(RAM + 0x1100, 64),
            desc(0x1000, 64),
        ];
        for (i, d) in posted.iter().enumerate() {
            g.tx.lock().queues[0]
                .as_ref()
                .unwrap()
                .ring
                .publish(i as u16, d);
        }
        // The mux's port on one end of a pair, the wire's far end on the other.
        let pool = Mempool::new("t-tx", 512, 2048).unwrap();
        let (mut near, mut far) = vdpdk_pair::pair(OTHER, MacAddr([2, 0, 0, 0, 0, 0xfe]), 1, 64);
        let (rxq, txq) =
            vdpdk_core::ethdev::start_single_queue(&mut near, &pool, 64, false).unwrap();
        let (mut wire, _) =
            vdpdk_core::ethdev::start_single_queue(&mut far, &pool, 64, false).unwrap();
        let rxqs = vec![RxSource::new(rxq, None)];
        let mut p = testing::poller(Role::Combined, vec![g.clone()], rxqs, txq, &pool);
        assert_eq!(p.round(), 1);
        let mut got = Vec::new();
        wire.rx_burst(&mut got, 8);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data(), &good[..]);
        let tx = g.tx.lock();
        let ring = tx.queues[0].as_ref().unwrap().ring;
        let flags: Vec<u16> = (0..3).map(|i| ring.flags(i)).collect();
        assert_eq!(flags, [0, DESC_F_ERROR, DESC_F_ERROR]);
        // The same outcome, published for a guest that reclaims by index.
        let line = abi::txq_flags_offset(0);
        let word = |w| g.data_bar.flag(line + w).load(Ordering::Acquire);
        assert_eq!((word(abi::TXQ_DONE_INDEX), word(abi::TXQ_REFUSED)), (3, 2));
        let st = |i: StatsIndex| tx.stats.0[i as usize];
        assert_eq!(
            (
                st(StatsIndex::TxPackets),
                st(StatsIndex::TxSpoofed),
                st(StatsIndex::TxBadDesc)
            ),
            (1, 1, 1)
        );
        Mempool::free_bulk(&mut got);
    }

    /// A running guest with 64 KiB of RAM at `RAM` and one TX queue of 32 descriptors there.
    fn guest_with_tx_ring() -> (Arc<Guest>, vdpdk_core::DmaMemory) {
        let g = testing::guest();
        let ram = testing::map_ram(&g, RAM, 0x10000, false);
        let mut tx = g.tx.lock();
        tx.queues = vec![Some(testing::host_queue(&tx.mem, RAM, 32))];
        tx.running = true;
        drop(tx);
        (g, ram)
    }

    /// A backend TX queue that records the size of every burst it is handed.
    struct Recorder(Arc<parking_lot::Mutex<Vec<usize>>>);

    impl vdpdk_core::TxQueue for Recorder {
        fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
            self.0.lock().push(pkts.len());
            let n = pkts.len();
            Mempool::free_bulk(pkts);
            n
        }
    }

    #[test]
    fn a_visit_takes_a_full_flags_ring_once_around() {
        // 32 descriptors, all posted, on a ring passed by flags smaller than a visit's
        // TX_PULL: a lap ahead is the same descriptor, still flagged until released.
        let (g, _ram) = guest_with_tx_ring();
        const { assert!(32 < TX_PULL) };
        for i in 0..32u16 {
            let at = RAM + 0x1000 + i as u64 * 0x100;
            testing::poke(&g, at, &frame(OTHER, MAC, 64, i as u8));
            let tx = g.tx.lock();
            tx.queues[0]
                .as_ref()
                .unwrap()
                .ring
                .publish(i, &desc(at, 64));
        }
        let bursts = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let backend: Box<dyn vdpdk_core::TxQueue> = Box::new(Recorder(bursts.clone()));
        let pool = Mempool::new("t-lap", 512, 2048).unwrap();
        let mut p = testing::poller(Role::Tx, vec![g.clone()], Vec::new(), backend, &pool);
        assert_eq!(p.round(), 32);
        assert_eq!(
            bursts.lock().iter().sum::<usize>(),
            32,
            "each frame sent once"
        );
        testing::assert_tx_done(&g, 32);
    }

    #[test]
    fn guests_with_a_few_frames_each_make_one_backend_burst() {
        let guests: Vec<_> = (0..4).map(|_| testing::guest()).collect();
        let mut rams = Vec::new();
        for (i, g) in guests.iter().enumerate() {
            rams.push(testing::map_ram(g, RAM, 0x10000, false));
            let mut tx = g.tx.lock();
            tx.queues = vec![Some(testing::host_queue(&tx.mem, RAM, 32))];
            tx.running = true;
            let f = frame(OTHER, MAC, 64, i as u8);
            drop(tx);
            testing::poke(g, RAM + 0x1000, &f);
            testing::poke(g, RAM + 0x1100, &f);
            let tx = g.tx.lock();
            let ring = tx.queues[0].as_ref().unwrap().ring;
            ring.publish(0, &desc(RAM + 0x1000, 64));
            ring.publish(1, &desc(RAM + 0x1100, 64));
        }
        let bursts = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let backend: Box<dyn vdpdk_core::TxQueue> = Box::new(Recorder(bursts.clone()));
        let pool = Mempool::new("t-batch", 512, 2048).unwrap();
        let mut p = testing::poller(Role::Tx, guests.clone(), Vec::new(), backend, &pool);
        assert_eq!(p.round(), 8);
        assert_eq!(
            *bursts.lock(),
            [8],
            "one burst for the four guests' two frames each"
        );
        assert_eq!(p.round(), 0);
        assert_eq!(
            bursts.lock().len(),
            1,
            "an idle round hands the backend nothing"
        );
    }
}
