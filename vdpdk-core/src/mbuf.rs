//! Packet buffers: a fixed pool of equal-size buffers carved from one [`DmaMemory`], and the
//! [`Mbuf`] handle that owns one buffer while a packet is in flight.
//!
//! No allocation happens per packet: buffers are recycled through the pool's free list, and the
//! bulk calls take the free-list lock once per batch. A packet larger than one buffer is a chain
//! of mbufs (DPDK's multi-segment mbuf): the first segment carries the packet's metadata and owns
//! the rest through `next`. Only chained segments cost a small heap allocation, so the
//! single-buffer hot path is unchanged. An `Mbuf` points at its pool without a
//! per-packet reference count; the pool counts outstanding buffers in batches and frees its
//! memory only when the last `Mempool` handle and the last `Mbuf` are gone.
//!
//! A [`Lending`] owns no memory: it wraps memory lent by someone else (a guest's TX buffer,
//! for zero-copy) in an `Mbuf`, and freeing that mbuf tells the lender ([`Lender::returned`])
//! instead of refilling a free list (DPDK's external buffers, `rte_pktmbuf_attach_extbuf`).

mod chain;
mod fifo;
mod free;
mod lending;

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::dma::DmaMemory;
pub use crate::offload::{OlFlags, PacketType, TxOffloadInfo};
use crate::{Error, Result};
use chain::Segment;
pub use fifo::MbufFifo;
pub use free::ParkedMbuf;
pub use lending::{Lender, Lending};

/// Bytes reserved in front of the packet data (room to prepend headers), as in DPDK.
pub const MBUF_HEADROOM: u16 = 128;
/// Default buffer size: headroom plus a 2 KiB data room, enough for a 1518 B frame.
pub const DEFAULT_BUF_SIZE: u16 = 2048 + MBUF_HEADROOM;

/// Buffers never cross a 2 MiB boundary: behind a virtual IOMMU each hugepage of a guest is a
/// separate DMA mapping on the host side, so a buffer must sit inside one (as DPDK's mempools
/// keep objects inside one page). The cost is under 0.1% of a pool's memory.
const SEGMENT: usize = 2 << 20;

struct PoolInner {
    /// The buffers' memory; None for an external pool, whose mbufs lend someone else's.
    mem: Option<DmaMemory>,
    /// Where `mem` starts, here and for devices (null and 0 for an external pool): kept apart
    /// so that making an mbuf does not test the Option.
    base: *mut u8,
    iova_base: u64,
    /// Told of each freed mbuf of an external pool (None: an own pool, frees to `free`).
    lender: Option<Arc<dyn Lender>>,
    /// Buffer `idx` starts at `idx * stride`.
    stride: usize,
    count: u32,
    buf_len: u16,
    id: u32,
    name: String,
    free: Mutex<Vec<u32>>,
    /// Live `Mempool` handles plus outstanding `Mbuf`s; memory is freed when it reaches 0.
    refs: AtomicUsize,
}

static NEXT_POOL_ID: AtomicU32 = AtomicU32::new(1);

/// A fixed set of packet buffers in DMA memory. Cloning the handle is cheap.
pub struct Mempool {
    inner: NonNull<PoolInner>,
}

// SAFETY: PoolInner is only mutated through its Mutex and atomics.
unsafe impl Send for Mempool {}
// SAFETY: see Send.
unsafe impl Sync for Mempool {}

/// Releases `n` references; frees the pool when they were the last.
///
/// # Safety
/// `inner` must point at a live PoolInner on which the caller holds `n` references.
unsafe fn release(inner: NonNull<PoolInner>, n: usize) {
    // SAFETY: the caller holds references, so the pool is alive here.
    let prev = unsafe { inner.as_ref() }
        .refs
        .fetch_sub(n, Ordering::Release);
    if prev == n {
        fence(Ordering::Acquire);
        // SAFETY: no references remain; the Box came from Mempool::new.
        drop(unsafe { Box::from_raw(inner.as_ptr()) });
    }
}

impl Mempool {
    /// Creates a pool of `count` buffers of `buf_size` bytes each (headroom included).
    pub fn new(name: &str, count: u32, buf_size: u16) -> Result<Mempool> {
        if count == 0 || count >= LENT {
            return Err(Error::InvalidArg(format!(
                "mempool with {count} buffers (1..{LENT})"
            )));
        }
        if buf_size <= MBUF_HEADROOM {
            return Err(Error::InvalidArg(format!(
                "mempool buffer size {buf_size} leaves no room after the {MBUF_HEADROOM} B headroom"
            )));
        }
        // Cache-line aligned strides keep neighbouring buffers from sharing a line.
        let stride = (buf_size as usize).div_ceil(64) * 64;
        // Buffer `idx` sits at `idx * stride`, and an index whose buffer would cross a
        // 2 MiB boundary is never handed out: a multiply finds a buffer, where numbering
        // only the buffers that fit took a division per allocation (a third of making an
        // mbuf).
        let mut free = Vec::with_capacity(count as usize);
        let mut idx = 0u32;
        while free.len() < count as usize {
            let off = idx as usize * stride;
            if off / SEGMENT == (off + stride - 1) / SEGMENT {
                free.push(idx);
            }
            idx += 1;
        }
        if idx > LENT {
            return Err(Error::InvalidArg(format!(
                "mempool with {count} buffers of {buf_size} B: their indexes, with the ones \
                 skipped at 2 MiB boundaries, pass {LENT}"
            )));
        }
        // Reversed so the first allocations come from the start of the memory.
        free.reverse();
        let mem = DmaMemory::alloc(name, (idx as usize * stride).next_multiple_of(SEGMENT))?;
        let inner = Box::new(PoolInner {
            base: mem.as_ptr(),
            iova_base: mem.iova(0),
            mem: Some(mem),
            lender: None,
            stride,
            count,
            buf_len: buf_size,
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            free: Mutex::new(free),
            refs: AtomicUsize::new(1),
        });
        Ok(Mempool {
            inner: NonNull::from(Box::leak(inner)),
        })
    }

    /// Whether this pool lends memory it does not own (a [`Lending`]'s).
    pub fn is_external(&self) -> bool {
        self.inner().lender.is_some()
    }

    fn inner(&self) -> &PoolInner {
        // SAFETY: a Mempool handle holds a reference, so the pool is alive.
        unsafe { self.inner.as_ref() }
    }

    /// Process-unique id of this pool (drivers use it to remember which pools they mapped).
    pub fn id(&self) -> u32 {
        self.inner().id
    }
    /// Name given at creation (also the memfd's name).
    pub fn name(&self) -> &str {
        &self.inner().name
    }
    /// Buffers in the pool.
    pub fn capacity(&self) -> u32 {
        self.inner().count
    }
    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.inner().free.lock().len()
    }
    /// Size of each buffer, headroom included.
    pub fn buf_size(&self) -> u16 {
        self.inner().buf_len
    }
    /// The memory behind all buffers (to share it with a device). Panics on an external
    /// pool, which has none: a driver that may meet one asks [`Mempool::own_memory`].
    pub fn memory(&self) -> &DmaMemory {
        self.own_memory()
            .expect("an external mempool has no memory of its own")
    }
    /// The memory behind all buffers, or None for an external pool.
    pub fn own_memory(&self) -> Option<&DmaMemory> {
        self.inner().mem.as_ref()
    }

    fn make(&self, idx: u32) -> Mbuf {
        let p = self.inner();
        let off = idx as usize * p.stride;
        // SAFETY: only own pools have buffers on their free list, and for them `base` is their
        // memory's start; `new` sized it to hold every index it put on the list.
        let buf = unsafe { NonNull::new_unchecked(p.base.add(off)) };
        Mbuf::fresh(self.inner, buf, idx, p.iova_base + off as u64, p.buf_len)
    }

    /// Takes one buffer, or None when the pool is empty.
    pub fn alloc(&self) -> Option<Mbuf> {
        let idx = self.inner().free.lock().pop()?;
        self.inner().refs.fetch_add(1, Ordering::Relaxed);
        Some(self.make(idx))
    }

    /// Appends up to `n` buffers to `out`, taking the lock once; returns how many it added.
    pub fn alloc_bulk(&self, out: &mut Vec<Mbuf>, n: usize) -> usize {
        // Left uninitialised: zeroing it was a quarter of the call.
        let mut idxs = [MaybeUninit::<u32>::uninit(); 64];
        let mut total = 0;
        while total < n {
            let want = (n - total).min(idxs.len());
            let got = {
                let mut free = self.inner().free.lock();
                let got = want.min(free.len());
                let start = free.len() - got;
                for (o, &i) in idxs.iter_mut().zip(&free[start..]) {
                    o.write(i);
                }
                free.truncate(start);
                got
            };
            if got == 0 {
                break;
            }
            self.inner().refs.fetch_add(got, Ordering::Relaxed);
            // SAFETY: the loop above initialised idxs[..got].
            let taken = unsafe { std::slice::from_raw_parts(idxs.as_ptr().cast::<u32>(), got) };
            out.extend(taken.iter().map(|&i| self.make(i)));
            total += got;
        }
        total
    }

    /// Builds a packet holding `bytes`, chaining as many buffers as it takes (each filled to its
    /// data room after the default headroom). On exhaustion nothing is kept.
    pub fn alloc_packet(&self, bytes: &[u8]) -> Result<Mbuf> {
        let room = (self.buf_size() - MBUF_HEADROOM) as usize;
        let mut chunks = bytes.chunks(room);
        let first = chunks.next().unwrap_or(&[]);
        let no_buf = || Error::NoMem(format!("mempool {} is empty", self.name()));
        let mut head = self.alloc().ok_or_else(no_buf)?;
        head.copy_from(first)?;
        for c in chunks {
            let mut seg = self.alloc().ok_or_else(no_buf)?;
            seg.copy_from(c)?;
            head.chain(seg);
        }
        Ok(head)
    }
}

impl Clone for Mempool {
    fn clone(&self) -> Self {
        self.inner().refs.fetch_add(1, Ordering::Relaxed);
        Mempool { inner: self.inner }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: this handle holds one reference.
        unsafe { release(self.inner, 1) };
    }
}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.name())
            .field("capacity", &self.capacity())
            .field("buf_size", &self.buf_size())
            .finish()
    }
}

/// Marks the slot of a lent mbuf ([`Lending`]) in `Mbuf::idx`, so the free and reset paths
/// tell it from an own buffer without looking at the pool (own pools hold fewer buffers).
const LENT: u32 = 1 << 31;

/// One packet buffer and its metadata. Dropping it returns the buffer to its pool.
pub struct Mbuf {
    pool: NonNull<PoolInner>,
    buf: NonNull<u8>,
    idx: u32,
    iova: u64,
    buf_len: u16,
    data_off: u16,
    data_len: u16,
    /// Offload flags: what RX found, what TX should do.
    pub ol_flags: OlFlags,
    /// Packet type the device (or software) classified (RX).
    pub packet_type: PacketType,
    /// RSS hash when `RX_RSS_HASH` is set.
    pub hash: u32,
    /// Flow-rule MARK id when `RX_FDIR_ID` is set.
    pub mark: u32,
    /// VLAN tag control information: stripped on RX with `RX_VLAN`, inserted on TX with `TX_VLAN`.
    pub vlan_tci: u16,
    /// Header lengths and MSS for TX offloads.
    pub tx_offload: TxOffloadInfo,
    /// Port the packet arrived on (RX).
    pub port: u16,
    /// Queue the packet arrived on (RX).
    pub queue: u16,
    /// The packet's next segment; metadata above is meaningful on the first segment only.
    next: Option<Segment>,
}

// SAFETY: an Mbuf exclusively owns its buffer; the pool it points to is Sync.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// A buffer of `buf_len` bytes at `buf` (device address `iova`) of `pool`, empty, with
    /// the default headroom and no metadata.
    #[inline(always)]
    fn fresh(
        pool: NonNull<PoolInner>,
        buf: NonNull<u8>,
        idx: u32,
        iova: u64,
        buf_len: u16,
    ) -> Mbuf {
        Mbuf {
            pool,
            buf,
            idx,
            iova,
            buf_len,
            data_off: MBUF_HEADROOM,
            data_len: 0,
            ol_flags: OlFlags::empty(),
            packet_type: PacketType::default(),
            hash: 0,
            mark: 0,
            vlan_tci: 0,
            tx_offload: TxOffloadInfo::default(),
            port: 0,
            queue: 0,
            next: None,
        }
    }
    fn pool_inner(&self) -> &PoolInner {
        // SAFETY: a live Mbuf holds a reference on its pool.
        unsafe { self.pool.as_ref() }
    }
    fn idx(&self) -> u32 {
        self.idx & !LENT
    }
    /// Id of the pool this buffer came from.
    pub fn pool_id(&self) -> u32 {
        self.pool_inner().id
    }
    /// A handle to the pool this buffer came from (drivers map unseen pools lazily).
    pub fn pool(&self) -> Mempool {
        self.pool_inner().refs.fetch_add(1, Ordering::Relaxed);
        Mempool { inner: self.pool }
    }
    /// Data length of this segment (DPDK's `data_len`); the whole packet of a chain is
    /// [`Mbuf::pkt_len`].
    pub fn len(&self) -> usize {
        self.data_len as usize
    }
    /// Whether this segment holds no data.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }
    /// Length of the whole packet, every segment of the chain (DPDK's `pkt_len`).
    #[inline]
    pub fn pkt_len(&self) -> usize {
        match &self.next {
            None => self.data_len as usize,
            Some(_) => self.segments().map(Mbuf::len).sum(),
        }
    }
    /// Segments in the chain, this one included (DPDK's `nb_segs`).
    #[inline]
    pub fn nb_segs(&self) -> usize {
        match &self.next {
            None => 1,
            Some(_) => self.segments().count(),
        }
    }
    /// Whether the packet spans more than this buffer.
    #[inline]
    pub fn is_chained(&self) -> bool {
        self.next.is_some()
    }
    /// This segment, then each chained one in order.
    pub fn segments(&self) -> impl Iterator<Item = &Mbuf> {
        std::iter::successors(Some(self), |m| m.next.as_deref())
    }
    /// The next segment, if any.
    pub fn next_segment(&self) -> Option<&Mbuf> {
        self.next.as_deref()
    }
    /// Appends `seg` (and its own chain) at the end of this packet.
    pub fn chain(&mut self, seg: Mbuf) {
        let mut tail = &mut self.next;
        while let Some(m) = tail {
            tail = &mut m.next;
        }
        *tail = Some(Segment::new(seg));
    }
    /// Detaches and returns everything after this segment.
    pub fn take_next(&mut self) -> Option<Mbuf> {
        self.next.take().map(Segment::into_inner)
    }
    /// Copies the whole packet (all segments) to the front of `out`; returns the bytes
    /// copied, or None (nothing copied) when `out` is shorter than the packet. Lent segments
    /// ([`Lending::attach`]) are copied as bytes, without a reference to their memory.
    pub fn copy_to(&self, out: &mut [u8]) -> Option<usize> {
        let total = self.pkt_len();
        let out = out.get_mut(..total)?;
        let mut at = 0;
        for s in self.segments() {
            let dst = &mut out[at..at + s.len()];
            // SAFETY: the segment's data range lies in its buffer, which stays valid while the
            // segment lives (own memory, or lent memory its lender keeps mapped); dst is a
            // distinct caller buffer. A byte copy: nothing is assumed about the bytes.
            unsafe { std::ptr::copy_nonoverlapping(s.data_addr(), dst.as_mut_ptr(), dst.len()) };
            at += s.len();
        }
        Some(total)
    }
    /// The whole packet as one vector (tests, slow paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.pkt_len()];
        self.copy_to(&mut v);
        v
    }
    /// Bytes that still fit after the current data.
    pub fn tailroom(&self) -> usize {
        (self.buf_len - self.data_off - self.data_len) as usize
    }
    /// Bytes free in front of the data.
    pub fn headroom(&self) -> usize {
        self.data_off as usize
    }
    /// Largest packet this buffer can hold with the default headroom.
    pub fn data_room(&self) -> usize {
        (self.buf_len - MBUF_HEADROOM) as usize
    }
    /// IOVA of the first data byte (what a device DMAs to or from).
    pub fn data_iova(&self) -> u64 {
        self.iova + self.data_off as u64
    }
    /// Address of the first data byte, for drivers that hand the bytes on by address (a
    /// `writev`, a descriptor) without forming a reference to them.
    pub fn data_addr(&self) -> *const u8 {
        self.buf.as_ptr().wrapping_add(self.data_off as usize)
    }
    /// Whether this segment lends memory of someone else ([`Lending::attach`]).
    pub fn is_lent(&self) -> bool {
        self.idx & LENT != 0
    }
    /// Raw pointer to the first data byte, for drivers that DMA or copy into the buffer.
    pub fn data_ptr(&mut self) -> *mut u8 {
        // SAFETY: data_off < buf_len, inside this buffer.
        unsafe { self.buf.as_ptr().add(self.data_off as usize) }
    }
    /// Starts fetching the first cache line of the data (see [`crate::dma::prefetch`]).
    #[inline(always)]
    pub fn prefetch_data(&self) {
        // wrapping_add: no unsafe needed for a hint; data_off < buf_len keeps it in the buffer.
        crate::dma::prefetch(self.buf.as_ptr().wrapping_add(self.data_off as usize));
    }
    /// This segment's data. A lent segment's ([`Lending::attach`]) may be guest memory: its
    /// readers use [`Mbuf::copy_to`] or [`Mbuf::data_addr`] instead.
    pub fn data(&self) -> &[u8] {
        // SAFETY: the range [data_off, data_off+data_len) lies in this mbuf's own buffer, which
        // it owns exclusively (a lent buffer: as its lender promised in `attach`).
        unsafe {
            std::slice::from_raw_parts(
                self.buf.as_ptr().add(self.data_off as usize),
                self.data_len as usize,
            )
        }
    }
    /// This segment's data, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(), and &mut self gives exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.buf.as_ptr().add(self.data_off as usize),
                self.data_len as usize,
            )
        }
    }
    /// Sets the packet length (after a device or copy filled the data); fails past the room.
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        let room = (self.buf_len - self.data_off) as usize;
        if len > room {
            return Err(too_long(len, room));
        }
        self.data_len = len as u16;
        Ok(())
    }
    /// Grows the packet by `len` bytes at the end and returns them.
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.tailroom() {
            return None;
        }
        let start = self.data_len as usize;
        self.data_len += len as u16;
        Some(&mut self.data_mut()[start..])
    }
    /// Replaces the packet with `bytes`; fails when they do not fit, and on a lent buffer
    /// (its memory is its lender's to write).
    pub fn copy_from(&mut self, bytes: &[u8]) -> Result<()> {
        if self.is_lent() {
            return Err(Error::InvalidArg("copy into a lent buffer".into()));
        }
        // The room is worked out before `data_off` is stored, as in `reset_to_len`: here the
        // stall was two thirds of the null wire's RX.
        let room = (self.buf_len - MBUF_HEADROOM) as usize;
        if bytes.len() > room {
            return Err(too_long(bytes.len(), room));
        }
        self.data_off = MBUF_HEADROOM;
        self.data_len = bytes.len() as u16;
        self.data_mut().copy_from_slice(bytes);
        Ok(())
    }
    /// Frees the chained segments (out of line: single buffers are the hot path).
    #[cold]
    #[inline(never)]
    fn drop_chain(&mut self) {
        self.next = None;
    }
    /// Clears data and metadata so the buffer can be reused for a new packet; chained
    /// segments go back to their pool.
    pub fn reset(&mut self) {
        if self.next.is_some() {
            self.drop_chain();
        }
        // A lent buffer has no headroom: its data starts where the lender's bytes do.
        self.data_off = if self.is_lent() { 0 } else { MBUF_HEADROOM };
        self.data_len = 0;
        self.ol_flags = OlFlags::empty();
        self.packet_type = PacketType::default();
        self.hash = 0;
        self.mark = 0;
        self.vlan_tci = 0;
        self.tx_offload = TxOffloadInfo::default();
    }
    /// [`Mbuf::reset`] then [`Mbuf::set_len`], as one call: the room is worked out before
    /// the reset's stores, because reading `data_off` back right after storing it (the
    /// compiler loads it together with `buf_len`) stalled on store forwarding, 14% of
    /// host-mux's 64 B TX copy. Fails past the room, leaving the mbuf as it was.
    #[inline(always)]
    pub fn reset_to_len(&mut self, len: usize) -> Result<()> {
        let data_off = if self.is_lent() { 0 } else { MBUF_HEADROOM };
        let room = (self.buf_len - data_off) as usize;
        if len > room {
            return Err(too_long(len, room));
        }
        self.reset();
        self.data_len = len as u16;
        Ok(())
    }
}

/// The error for a packet of `len` bytes in a buffer with `room` (out of line: cold).
#[cold]
fn too_long(len: usize, room: usize) -> Error {
    Error::InvalidArg(format!("packet length {len} exceeds the buffer's {room} B"))
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        let idx = self.idx();
        let p = self.pool_inner();
        match &p.lender {
            None => p.free.lock().push(idx),
            Some(l) => l.returned(idx),
        }
        // SAFETY: this mbuf held one reference.
        unsafe { release(self.pool, 1) };
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.data_len)
            .field("nb_segs", &self.nb_segs())
            .field("ol_flags", &self.ol_flags)
            .field("packet_type", &self.packet_type)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_never_cross_a_2mib_boundary() {
        // Strides that leave a gap before each 2 MiB boundary, and one that divides it.
        for buf_size in [DEFAULT_BUF_SIZE, 3000, 2048] {
            let pool = Mempool::new("seg", 3000, buf_size).unwrap();
            let base = pool.memory().iova_base();
            let mut seen = std::collections::HashSet::new();
            let bufs: Vec<Mbuf> = (0..3000).map(|_| pool.alloc().unwrap()).collect();
            assert!(pool.alloc().is_none(), "3000 buffers, no more");
            for m in &bufs {
                let start = m.data_iova() - MBUF_HEADROOM as u64 - base;
                let end = start + buf_size as u64 - 1;
                assert_eq!(
                    start >> 21,
                    end >> 21,
                    "{buf_size} B: buffer at offset {start:#x} crosses 2 MiB"
                );
                assert!(end < pool.memory().len() as u64);
                assert!(seen.insert(start), "two buffers at {start:#x}");
            }
            // No more memory than the buffers need, rounded up to whole 2 MiB segments.
            let stride = (buf_size as usize).div_ceil(64) * 64;
            let per_segment = (2 << 20) / stride;
            assert_eq!(
                pool.memory().len(),
                3000usize.div_ceil(per_segment) * (2 << 20),
                "{buf_size} B"
            );
        }
    }

    #[test]
    fn alloc_free_recycles_every_buffer() {
        let pool = Mempool::new("t", 64, DEFAULT_BUF_SIZE).unwrap();
        let mut v = Vec::new();
        assert_eq!(pool.alloc_bulk(&mut v, 100), 64);
        assert!(pool.alloc().is_none());
        let iovas: std::collections::HashSet<u64> = v.iter().map(|m| m.data_iova()).collect();
        assert_eq!(iovas.len(), 64, "each buffer is distinct");
        Mempool::free_bulk(&mut v);
        assert_eq!(pool.available(), 64);
        let m = pool.alloc().unwrap();
        assert_eq!(pool.available(), 63);
        drop(m);
        assert_eq!(pool.available(), 64);
    }

    #[test]
    fn data_roundtrip_and_bounds() {
        let pool = Mempool::new("t", 4, 256).unwrap();
        let mut m = pool.alloc().unwrap();
        assert_eq!(m.data_room(), 128);
        m.copy_from(&[7u8; 100]).unwrap();
        assert_eq!(m.data(), &[7u8; 100][..]);
        assert!(m.copy_from(&[0u8; 129]).is_err());
        assert!(m.append(28).is_some());
        assert!(m.append(1).is_none());
        assert_eq!(m.len(), 128);
    }

    #[test]
    fn mbufs_outlive_their_pool_handle() {
        let pool = Mempool::new("t", 8, DEFAULT_BUF_SIZE).unwrap();
        let mut m = pool.alloc().unwrap();
        drop(pool);
        m.copy_from(b"still valid").unwrap();
        assert_eq!(m.data(), b"still valid");
        drop(m); // frees the memory; Miri/ASan would flag a use-after-free here otherwise
    }

    #[test]
    fn free_bulk_handles_mixed_pools() {
        let a = Mempool::new("a", 200, DEFAULT_BUF_SIZE).unwrap();
        let b = Mempool::new("b", 8, DEFAULT_BUF_SIZE).unwrap();
        let mut v = Vec::new();
        a.alloc_bulk(&mut v, 3);
        b.alloc_bulk(&mut v, 2);
        // A run of one pool longer than the 64 handed back under one lock.
        a.alloc_bulk(&mut v, 150);
        assert_eq!((a.available(), b.available()), (47, 6));
        Mempool::free_bulk(&mut v);
        assert!(v.is_empty());
        assert_eq!(a.available(), 200);
        assert_eq!(b.available(), 8);
        // Each buffer came back once: the whole pool can be taken again, all distinct.
        a.alloc_bulk(&mut v, 200);
        let iovas: std::collections::HashSet<u64> = v.iter().map(|m| m.data_iova()).collect();
        assert_eq!(iovas.len(), 200);
    }

    #[test]
    fn free_bulk_takes_a_chain_met_midway() {
        let a = Mempool::new("a", 16, DEFAULT_BUF_SIZE).unwrap();
        let b = Mempool::new("b", 16, DEFAULT_BUF_SIZE).unwrap();
        let mut v = Vec::new();
        a.alloc_bulk(&mut v, 3);
        let mut head = a.alloc().unwrap();
        head.chain(b.alloc().unwrap());
        head.chain(b.alloc().unwrap());
        v.push(head);
        b.alloc_bulk(&mut v, 2);
        a.alloc_bulk(&mut v, 2);
        assert_eq!((a.available(), b.available()), (10, 12));
        Mempool::free_bulk(&mut v);
        assert!(v.is_empty());
        assert_eq!((a.available(), b.available()), (16, 16));
    }

    #[test]
    fn a_packet_larger_than_a_buffer_becomes_a_chain() {
        let pool = Mempool::new("chain", 8, 256).unwrap(); // 128 B data room
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let m = pool.alloc_packet(&bytes).unwrap();
        assert_eq!(m.nb_segs(), 3);
        assert_eq!(m.pkt_len(), 300);
        assert_eq!(m.len(), 128, "the first segment holds one data room");
        let lens: Vec<usize> = m.segments().map(Mbuf::len).collect();
        assert_eq!(lens, [128, 128, 44]);
        assert_eq!(m.to_vec(), bytes);
        let mut short = [0u8; 299];
        assert_eq!(m.copy_to(&mut short), None, "a short buffer gets nothing");
        assert_eq!(pool.available(), 5);
        drop(m);
        assert_eq!(pool.available(), 8, "dropping the head frees every segment");
        // Exhaustion keeps nothing.
        let hold: Vec<Mbuf> = (0..6).map(|_| pool.alloc().unwrap()).collect();
        assert!(matches!(pool.alloc_packet(&bytes), Err(Error::NoMem(_))));
        assert_eq!(pool.available(), 2);
        drop(hold);
    }

    #[test]
    fn chains_across_pools_are_freed_in_bulk_and_by_reset() {
        let a = Mempool::new("a", 4, DEFAULT_BUF_SIZE).unwrap();
        let b = Mempool::new("b", 4, DEFAULT_BUF_SIZE).unwrap();
        let mut head = a.alloc().unwrap();
        head.copy_from(b"head").unwrap();
        let mut tail = b.alloc().unwrap();
        tail.copy_from(b"-tail").unwrap();
        let mut mid = b.alloc().unwrap();
        mid.copy_from(b"-mid").unwrap();
        head.chain(mid);
        head.chain(tail);
        assert_eq!(head.to_vec(), b"head-mid-tail");
        assert_eq!(head.next_segment().unwrap().data(), b"-mid");
        let mut v = vec![head, a.alloc().unwrap()];
        Mempool::free_bulk(&mut v);
        assert_eq!((a.available(), b.available()), (4, 4));

        let mut m = a.alloc().unwrap();
        m.chain(b.alloc().unwrap());
        m.reset();
        assert!(!m.is_chained());
        assert_eq!(b.available(), 4, "reset returns the chained segment");
        let rest = {
            m.chain(b.alloc().unwrap());
            m.take_next().unwrap()
        };
        assert_eq!(m.nb_segs(), 1);
        drop(rest);
        assert_eq!(b.available(), 4);
    }

    /// A lender that records which slots came back.
    #[derive(Default)]
    struct Ledger(Mutex<Vec<u32>>);
    impl Lender for Ledger {
        fn returned(&self, slot: u32) {
            self.0.lock().push(slot);
        }
    }

    #[test]
    fn a_lent_buffer_is_read_in_place_and_returned_to_its_lender() {
        let ledger = Arc::new(Ledger::default());
        let mut ext = Lending::new("lent", ledger.clone());
        assert!(ext.pool().is_external() && ext.pool().own_memory().is_none());
        assert!(
            ext.pool().alloc().is_none(),
            "a lending has nothing to hand out"
        );
        let mut owner = vec![0u8; 300];
        owner.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let ptr = NonNull::new(owner.as_mut_ptr()).unwrap();
        // SAFETY: `owner` outlives every mbuf below (all are dropped before it).
        let (a, b) = unsafe {
            (
                ext.attach(7, ptr, 0x1000, 100),
                ext.attach(9, ptr, 0x1000, 300),
            )
        };
        assert_eq!(
            a.data_addr(),
            owner.as_ptr(),
            "no copy: the mbuf points at the lender's bytes"
        );
        assert_eq!((a.data_iova(), a.len(), a.headroom()), (0x1000, 100, 0));
        assert!(a.is_lent());
        drop(ext); // the mbufs keep the pool alive
        let own = Mempool::new("own", 4, DEFAULT_BUF_SIZE).unwrap();
        let mut head = own.alloc().unwrap();
        head.copy_from(b"hdr:").unwrap();
        assert!(!head.is_lent());
        head.chain(b);
        assert_eq!(
            head.to_vec()[4..],
            owner[..],
            "a chain reads lent bytes by copy"
        );
        let mut lent = a;
        assert!(lent.copy_from(b"x").is_err(), "lent memory is not written");
        lent.reset();
        assert_eq!(lent.data_addr(), owner.as_ptr(), "reset keeps no headroom");
        drop(lent);
        assert_eq!(*ledger.0.lock(), [7]);
        let mut v = vec![head];
        Mempool::free_bulk(&mut v);
        assert_eq!(
            *ledger.0.lock(),
            [7, 9],
            "a chained lent segment is returned in bulk too"
        );
        let mut ext = Lending::new("lent-head", ledger.clone());
        // SAFETY: as above.
        let mut v = vec![unsafe { ext.attach(11, ptr, 0x1000, 10) }];
        Mempool::free_bulk(&mut v);
        assert_eq!(*ledger.0.lock(), [7, 9, 11], "a lent head too");
        assert_eq!(own.available(), 4);
    }

    #[test]
    fn parked_buffers_go_back_to_their_pools_and_lenders() {
        let (a, b) = (
            Mempool::new("a", 8, DEFAULT_BUF_SIZE).unwrap(),
            Mempool::new("b", 8, DEFAULT_BUF_SIZE).unwrap(),
        );
        let mut v = Vec::new();
        a.alloc_bulk(&mut v, 3);
        b.alloc_bulk(&mut v, 2);
        a.alloc_bulk(&mut v, 1);
        let iova = v[5].data_iova(); // the last freed of `a`, the first to come back
        let parked: Vec<ParkedMbuf> = v.drain(..).map(|m| m.park().ok().unwrap()).collect();
        assert_eq!(
            (a.available(), b.available()),
            (4, 6),
            "parked still owns its buffer"
        );
        Mempool::free_parked(parked);
        assert_eq!((a.available(), b.available()), (8, 8));
        // Dropping one frees it as well; the pool outlives its last handle through it.
        let m = a.alloc().unwrap();
        assert_eq!(m.data_iova(), iova, "the same buffer came back");
        let one = m.park().ok().unwrap();
        drop(a);
        drop(one);
        // A chain is handed back whole.
        let mut head = b.alloc().unwrap();
        head.chain(b.alloc().unwrap());
        let head = head.park().err().expect("a chain is not parked");
        assert_eq!(head.nb_segs(), 2);
        drop(head);
        assert_eq!(b.available(), 8);
        // A lent buffer parked goes back to its lender.
        let ledger = Arc::new(Ledger::default());
        let mut ext = Lending::new("lent", ledger.clone());
        let mut owner = [0u8; 64];
        let ptr = NonNull::new(owner.as_mut_ptr()).unwrap();
        // SAFETY: `owner` outlives the mbuf, which is freed below.
        let lent = unsafe { ext.attach(5, ptr, 0x2000, 64) };
        Mempool::free_parked([lent.park().ok().unwrap()]);
        assert_eq!(*ledger.0.lock(), [5]);
    }

    #[test]
    fn reset_to_len_clears_metadata_and_refuses_past_the_room() {
        let pool = Mempool::new("t", 2, 256).unwrap();
        let mut m = pool.alloc().unwrap();
        m.copy_from(&[1; 40]).unwrap();
        m.mark = 7;
        m.ol_flags = OlFlags::RX_FDIR_ID;
        assert!(
            m.reset_to_len(129).is_err(),
            "128 B of room after the headroom"
        );
        assert_eq!((m.len(), m.mark), (40, 7), "a refusal changes nothing");
        m.reset_to_len(128).unwrap();
        assert_eq!(
            (m.len(), m.headroom(), m.mark),
            (128, MBUF_HEADROOM as usize, 0)
        );
        assert!(m.ol_flags.is_empty());
    }

    #[test]
    fn bad_pool_parameters_are_refused() {
        assert!(Mempool::new("t", 0, DEFAULT_BUF_SIZE).is_err());
        assert!(Mempool::new("t", 4, MBUF_HEADROOM).is_err());
    }
}
