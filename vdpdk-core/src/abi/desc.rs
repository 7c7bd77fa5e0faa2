//! Descriptors and the ownership-passing ring.
//!
//! A ring is `size` (a power of two) 16-byte descriptors in guest DMA memory, four to a cache
//! line. Each side keeps its own free-running 16-bit index; the slot is `index & (size - 1)`.
//! Ownership moves with the `AVAIL` flag: the guest fills a descriptor and stores `AVAIL` with
//! Release; the host loads `AVAIL` with Acquire, copies the descriptor out, does the work,
//! writes the results and clears `AVAIL` with Release; the guest sees the cleared flag with
//! Acquire and takes the slot back.
//!
//! - TX: the guest posts a packet buffer; the host copies it out and clears AVAIL.
//! - RX: the guest posts an empty buffer (`len` = its capacity); the host copies a packet in,
//!   sets `len` and the RX metadata, and clears AVAIL.
//!
//! A descriptor has two formats, as a NIC's do: the **posted** format the guest writes (a
//! buffer's address, TX offload requests packed beside it) and the **completed** format the
//! host writes over an RX descriptor (metadata where the address was; the guest keeps its own
//! record of which buffer sits in which slot). Four to a line rather than two halves the lines
//! that cross between the two cores per frame (docs/BENCH.md, session 16).
//!
//! | bytes | posted (guest writes) | completed RX (host writes) |
//! | --- | --- | --- |
//! | 0..8 | buffer IOVA | packet type (0..4), MARK id (4..8) |
//! | 8..10 | TX: frame length; RX: buffer capacity | frame length |
//! | 10..12 | `DESC_F_*` (bits 0-1), TX: TSO segment size (bits 2-15) | `DESC_F_*` |
//! | 12..16 | TX: offload request (bits 0-5), `l2_len` (6-12), `l3_len` (13-21), `l4_len` (22-29) | `DESC_OL_RX_*` |
//!
//! Neither side ever forms a reference to ring memory except the atomic flag word: descriptors
//! are copied out with volatile reads and written with volatile writes.

use std::sync::atomic::{AtomicU16, Ordering};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::mbuf::{Mbuf, OlFlags, PacketType};

/// The host owns the descriptor (guest posted it).
pub const DESC_F_AVAIL: u16 = 1 << 0;
/// Set by the host on completion when it refused the descriptor (bad IOVA or length).
pub const DESC_F_ERROR: u16 = 1 << 1;
/// The bits of the flag word that are `DESC_F_*`; above them a posted TX descriptor carries
/// its TSO segment size.
const DESC_F_MASK: u16 = DESC_F_AVAIL | DESC_F_ERROR;

// Descriptor offload bits (`Desc::ol_flags`).
/// RX: the device checked the IPv4 header checksum and it is right.
pub const DESC_OL_RX_IP_CKSUM_GOOD: u32 = 1 << 0;
/// RX: the device checked the IPv4 header checksum and it is wrong.
pub const DESC_OL_RX_IP_CKSUM_BAD: u32 = 1 << 1;
/// RX: the device checked the TCP/UDP checksum and it is right.
pub const DESC_OL_RX_L4_CKSUM_GOOD: u32 = 1 << 2;
/// RX: the device checked the TCP/UDP checksum and it is wrong.
pub const DESC_OL_RX_L4_CKSUM_BAD: u32 = 1 << 3;
/// `mark` holds a flow-rule MARK id.
pub const DESC_OL_RX_MARK: u32 = 1 << 4;
/// TX: the frame is IPv4 (with a checksum or segmentation request).
pub const DESC_OL_TX_IPV4: u32 = 1 << 16;
/// TX: the frame is IPv6 (with a checksum or segmentation request).
pub const DESC_OL_TX_IPV6: u32 = 1 << 17;
/// TX: fill the IPv4 header checksum.
pub const DESC_OL_TX_IP_CKSUM: u32 = 1 << 18;
/// TX: fill the TCP checksum.
pub const DESC_OL_TX_TCP_CKSUM: u32 = 1 << 19;
/// TX: fill the UDP checksum.
pub const DESC_OL_TX_UDP_CKSUM: u32 = 1 << 20;
/// TX: segment the TCP payload into `tso_segsz`-byte segments.
pub const DESC_OL_TX_TCP_SEG: u32 = 1 << 21;

/// Where the TX request bits (`DESC_OL_TX_*`) sit in `Desc::ol_flags`; in a posted
/// descriptor they are the offload word's six low bits.
const TX_OL_SHIFT: u32 = 16;
const TX_OL_BITS: u32 = 0x3f;
/// The header lengths in a posted descriptor's offload word: shift and width.
const L2_LEN: (u32, u32) = (6, 7);
const L3_LEN: (u32, u32) = (13, 9);
const L4_LEN: (u32, u32) = (22, 8);
/// The TSO segment size in a posted descriptor's flag word: shift and width.
const TSO_SEGSZ: (u32, u32) = (2, 14);

/// Largest `l2_len` a descriptor carries.
pub const MAX_L2_LEN: u8 = (1 << L2_LEN.1) - 1;
/// Largest `l3_len` a descriptor carries.
pub const MAX_L3_LEN: u16 = (1 << L3_LEN.1) - 1;
/// Largest `tso_segsz` a descriptor carries.
pub const MAX_TSO_SEGSZ: u16 = (1 << TSO_SEGSZ.1) - 1;

/// A TX or RX descriptor, unpacked: what one side puts into a ring slot or gets out of it
/// ([`RingPtr::publish`], [`RingPtr::read`], [`RingPtr::read_completed`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// IOVA of the buffer in the guest's DMA address space (posted descriptors).
    pub addr: u64,
    /// TX: frame length. RX: buffer capacity when posted, frame length when completed.
    pub len: u16,
    /// `DESC_F_*`; written last by the owner handing the descriptor over.
    pub flags: u16,
    /// `DESC_OL_*`.
    pub ol_flags: u32,
    /// `PacketType` (completed RX).
    pub packet_type: u32,
    /// Flow MARK id (completed RX, with `DESC_OL_RX_MARK`).
    pub mark: u32,
    /// TX with `DESC_OL_TX_TCP_SEG`: TCP payload bytes per segment (MSS).
    pub tso_segsz: u16,
    /// TX offloads: Ethernet header bytes, VLAN tags included.
    pub l2_len: u8,
    /// TX offloads: TCP or UDP header bytes.
    pub l4_len: u8,
    /// TX offloads: IP header bytes, options included.
    pub l3_len: u16,
}

/// A descriptor as it lies in the ring (see the module docs for its two formats).
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
struct RawDesc {
    /// Posted: the buffer IOVA. Completed RX: packet type (low half), MARK id (high half).
    word: u64,
    len: u16,
    /// `DESC_F_*`, and a posted TX descriptor's TSO segment size above them.
    flags: u16,
    /// Posted TX: request bits and header lengths. Completed RX: `DESC_OL_RX_*`.
    meta: u32,
}
/// Bytes of one descriptor.
pub const DESC_SIZE: usize = 16;
const _: () = assert!(size_of::<RawDesc>() == DESC_SIZE);
const _: () = assert!(std::mem::offset_of!(RawDesc, flags) == 10);

/// `width` bits of `v` from `shift` on.
#[inline(always)]
fn field(v: u32, (shift, width): (u32, u32)) -> u32 {
    (v >> shift) & ((1 << width) - 1)
}

impl RawDesc {
    /// The posted format of `d` (its RX results, which that format has no room for, left out).
    #[inline(always)]
    fn posted(d: &Desc) -> RawDesc {
        RawDesc {
            word: d.addr,
            len: d.len,
            flags: (d.flags & DESC_F_MASK) | (d.tso_segsz << TSO_SEGSZ.0),
            meta: (d.ol_flags >> TX_OL_SHIFT) & TX_OL_BITS
                | (d.l2_len as u32) << L2_LEN.0
                | (d.l3_len as u32) << L3_LEN.0
                | (d.l4_len as u32) << L4_LEN.0,
        }
    }

    /// A posted descriptor, unpacked. Any bytes make one (the values are the guest's).
    #[inline(always)]
    fn unpack_posted(self) -> Desc {
        Desc {
            addr: self.word,
            len: self.len,
            flags: self.flags & DESC_F_MASK,
            ol_flags: (self.meta & TX_OL_BITS) << TX_OL_SHIFT,
            tso_segsz: field(self.flags as u32, TSO_SEGSZ) as u16,
            l2_len: field(self.meta, L2_LEN) as u8,
            l3_len: field(self.meta, L3_LEN) as u16,
            l4_len: field(self.meta, L4_LEN) as u8,
            ..Desc::default()
        }
    }

    /// A completed RX descriptor, unpacked.
    #[inline(always)]
    fn unpack_completed(self) -> Desc {
        Desc {
            len: self.len,
            flags: self.flags & DESC_F_MASK,
            ol_flags: self.meta,
            packet_type: self.word as u32,
            mark: (self.word >> 32) as u32,
            ..Desc::default()
        }
    }
}

/// Mbuf TX offload flags and the descriptor bits that carry them.
const TX_OL_MAP: [(OlFlags, u32); 6] = [
    (OlFlags::TX_IPV4, DESC_OL_TX_IPV4),
    (OlFlags::TX_IPV6, DESC_OL_TX_IPV6),
    (OlFlags::TX_IP_CKSUM, DESC_OL_TX_IP_CKSUM),
    (OlFlags::TX_TCP_CKSUM, DESC_OL_TX_TCP_CKSUM),
    (OlFlags::TX_UDP_CKSUM, DESC_OL_TX_UDP_CKSUM),
    (OlFlags::TX_TCP_SEG, DESC_OL_TX_TCP_SEG),
];
/// Mbuf RX checksum flags and the descriptor bits that carry them.
const RX_CSUM_MAP: [(OlFlags, u32); 4] = [
    (OlFlags::RX_IP_CKSUM_GOOD, DESC_OL_RX_IP_CKSUM_GOOD),
    (OlFlags::RX_IP_CKSUM_BAD, DESC_OL_RX_IP_CKSUM_BAD),
    (OlFlags::RX_L4_CKSUM_GOOD, DESC_OL_RX_L4_CKSUM_GOOD),
    (OlFlags::RX_L4_CKSUM_BAD, DESC_OL_RX_L4_CKSUM_BAD),
];

fn to_bits(f: OlFlags, map: &[(OlFlags, u32)]) -> u32 {
    map.iter()
        .filter(|(of, _)| f.contains(*of))
        .fold(0, |o, (_, d)| o | d)
}

fn to_flags(bits: u32, map: &[(OlFlags, u32)]) -> OlFlags {
    map.iter()
        .filter(|(_, d)| bits & d != 0)
        .fold(OlFlags::empty(), |f, (of, _)| f | *of)
}

impl Desc {
    /// Whether the posted format carries this descriptor whole: its header lengths and TSO
    /// segment size within the fields' widths ([`MAX_L2_LEN`], [`MAX_L3_LEN`], 8 bits of
    /// `l4_len`, [`MAX_TSO_SEGSZ`]) and no offload bit but the TX requests. A guest refuses a
    /// frame whose request does not fit rather than post a different one.
    pub fn fits_posted(&self) -> bool {
        self.l2_len <= MAX_L2_LEN
            && self.l3_len <= MAX_L3_LEN
            && self.tso_segsz <= MAX_TSO_SEGSZ
            && self.ol_flags & !(TX_OL_BITS << TX_OL_SHIFT) == 0
    }

    /// The posted descriptor that 16 ring bytes (`DESC_SIZE`) hold, as the host reads it: any
    /// bytes make one. For the fuzz targets; the rings use [`RingPtr::read`].
    pub fn from_posted_bytes(b: [u8; DESC_SIZE]) -> Desc {
        RawDesc::read_from_bytes(&b)
            .expect("DESC_SIZE bytes make a RawDesc")
            .unpack_posted()
    }

    /// TX offload request bits for an mbuf.
    pub fn tx_ol_from(m: &Mbuf) -> u32 {
        to_bits(m.ol_flags, &TX_OL_MAP)
    }

    /// Mbuf offload flags for TX bits found in a guest descriptor.
    pub fn tx_ol_to_mbuf(ol: u32) -> OlFlags {
        to_flags(ol, &TX_OL_MAP)
    }

    /// RX bits describing a received mbuf's metadata.
    pub fn rx_ol_from(m: &Mbuf) -> u32 {
        Desc::rx_ol_bits(m.ol_flags)
    }

    /// RX bits describing received offload flags `f`.
    pub fn rx_ol_bits(f: OlFlags) -> u32 {
        let mark = if f.contains(OlFlags::RX_FDIR_ID) {
            DESC_OL_RX_MARK
        } else {
            0
        };
        to_bits(f, &RX_CSUM_MAP) | mark
    }

    /// Applies a completed RX descriptor's metadata to the guest's mbuf.
    pub fn rx_apply_to(&self, m: &mut Mbuf) {
        let mut f = to_flags(self.ol_flags, &RX_CSUM_MAP);
        if self.ol_flags & DESC_OL_RX_MARK != 0 {
            f |= OlFlags::RX_FDIR | OlFlags::RX_FDIR_ID;
            m.mark = self.mark;
        }
        m.ol_flags = f;
        m.packet_type = PacketType(self.packet_type);
    }
}

/// Checks a ring size from an untrusted source.
pub fn valid_ring_size(size: u64) -> bool {
    size.is_power_of_two()
        && size >= super::MIN_RING_SIZE as u64
        && size <= super::MAX_RING_SIZE as u64
}

/// Raw access to a ring of descriptors in shared memory.
///
/// Two ways to pass a descriptor back and forth (the ring says which, [`RingPtr::with_laps`]):
/// - **flags** (the default): the guest posts with `DESC_F_AVAIL` set, the host clears it on
///   release (writing into the guest's ring line once per descriptor);
/// - **laps** (TX rings with `Features::TX_LAPS`): the guest posts with `DESC_F_AVAIL` set on
///   even laps of the ring and clear on odd ones (lap = index / size), so a descriptor is new
///   when its bit matches its lap, and the host never writes the ring: the guest learns of
///   releases from `TXQ_DONE_INDEX` and `TXQ_REFUSED` only. The ring must start zeroed.
#[derive(Clone, Copy, Debug)]
pub struct RingPtr {
    base: *mut u8,
    mask: u16,
    laps: bool,
}

// SAFETY: RingPtr is a raw address; all accesses are volatile or atomic and the creator
// guarantees the mapping outlives every copy (see `RingPtr::new`).
unsafe impl Send for RingPtr {}

impl RingPtr {
    /// # Safety
    /// `base` must point to `size * DESC_SIZE` bytes, 8-byte aligned, mapped for as long as this
    /// value (or a copy) is used. `size` must be a power of two.
    pub unsafe fn new(base: *mut u8, size: u16) -> RingPtr {
        debug_assert!(size.is_power_of_two());
        RingPtr {
            base,
            mask: size - 1,
            laps: false,
        }
    }

    /// The same ring, passing descriptors by laps (`on`) or by flags (see the type's docs).
    pub fn with_laps(self, on: bool) -> RingPtr {
        RingPtr { laps: on, ..self }
    }

    /// Whether descriptors are passed by laps.
    pub fn laps(&self) -> bool {
        self.laps
    }

    /// The `DESC_F_AVAIL` bit a guest posts descriptor `idx` with.
    #[inline(always)]
    pub fn avail_bit(&self, idx: u16) -> u16 {
        // Ring sizes are powers of two up to MAX_RING_SIZE, so the lap's parity survives the
        // u16 index wrapping (65536 is an even number of laps).
        match !self.laps || idx & self.size() == 0 {
            true => DESC_F_AVAIL,
            false => 0,
        }
    }

    /// Whether descriptor `idx` is posted (the guest handed it over and the host has not
    /// released it). Acquire: the descriptor's other fields are read after this.
    #[inline(always)]
    pub fn posted(&self, idx: u16) -> bool {
        self.flags(idx) & DESC_F_AVAIL == self.avail_bit(idx)
    }

    /// Descriptors in the ring (a power of two).
    pub fn size(&self) -> u16 {
        self.mask.wrapping_add(1)
    }

    #[inline]
    fn slot(&self, idx: u16) -> *mut RawDesc {
        // SAFETY: (idx & mask) < size, so the slot lies inside the ring (constructor contract).
        unsafe {
            self.base
                .add((idx & self.mask) as usize * DESC_SIZE)
                .cast::<RawDesc>()
        }
    }

    #[inline]
    fn flags_atomic(&self, idx: u16) -> &AtomicU16 {
        // SAFETY: the flags field is 2-byte aligned inside a live slot; shared memory may change
        // under us, which is exactly what an atomic reference permits.
        unsafe { AtomicU16::from_ptr(std::ptr::addr_of_mut!((*self.slot(idx)).flags)) }
    }

    /// Loads a descriptor's `DESC_F_*` flags with Acquire.
    #[inline]
    pub fn flags(&self, idx: u16) -> u16 {
        self.flags_atomic(idx).load(Ordering::Acquire) & DESC_F_MASK
    }

    /// Starts fetching, for writing, the lines of the `n` descriptors from `idx` (at most the
    /// whole ring): a host about to fill descriptors the guest last wrote overlaps those
    /// cross-core transfers instead of waiting for each in turn.
    #[inline]
    pub fn prefetch_for_write(&self, idx: u16, n: u16) {
        self.each_line(idx, n, crate::dma::prefetch_write);
    }

    /// Starts fetching, for reading, the lines of the `n` completed descriptors from `idx`
    /// (at most the whole ring): a guest about to take a burst of completions overlaps the
    /// cross-core transfers of their lines instead of waiting for each in turn. A last line
    /// that also holds descriptors still to complete is left to the host writing it.
    #[inline]
    pub fn prefetch_completed(&self, idx: u16, n: u16) {
        self.each_line(idx, whole_lines(idx, n), crate::dma::prefetch);
    }

    /// Calls `f` with an address in each line holding the `n` descriptors from `idx` (at most
    /// the whole ring).
    #[inline(always)]
    fn each_line(&self, idx: u16, n: u16, f: impl Fn(*const u8)) {
        let n = n.min(self.size());
        let per_line = (64 / DESC_SIZE) as u16;
        let mut i = 0;
        while i < n {
            f(self.slot(idx.wrapping_add(i)).cast());
            i += per_line;
        }
        // From an index in mid-line, the last descriptor may start a line the steps missed.
        if n > 0 {
            f(self.slot(idx.wrapping_add(n - 1)).cast());
        }
    }

    /// Like [`RingPtr::prefetch_for_write`], for the descriptors a producer posts next, from
    /// `idx` on: it starts at the first line boundary at or after `idx`, so the line still
    /// holding descriptors just handed over (which the peer is about to read) is left alone.
    #[inline]
    pub fn prefetch_next_for_write(&self, idx: u16, n: u16) {
        let per_line = (64 / DESC_SIZE) as u16;
        let skip = idx.wrapping_neg() & (per_line - 1);
        if n > skip {
            self.prefetch_for_write(idx.wrapping_add(skip), n - skip);
        }
    }

    /// Copies a posted descriptor out (call after `flags` showed the caller owns it).
    #[inline]
    pub fn read(&self, idx: u16) -> Desc {
        self.read_raw(idx).unpack_posted()
    }

    /// Copies a completed RX descriptor out (call after the host handed it back).
    #[inline]
    pub fn read_completed(&self, idx: u16) -> Desc {
        self.read_raw(idx).unpack_completed()
    }

    #[inline(always)]
    fn read_raw(&self, idx: u16) -> RawDesc {
        // SAFETY: slot is inside the ring and aligned; a volatile copy never assumes the bytes
        // stay unchanged, and every bit pattern is a valid RawDesc.
        unsafe { std::ptr::read_volatile(self.slot(idx)) }
    }

    /// Writes `d` in the posted format (see [`Desc::fits_posted`] for what it carries), all
    /// but the flags, then publishes the flags with Release.
    #[inline]
    pub fn publish(&self, idx: u16, d: &Desc) {
        debug_assert!(d.fits_posted(), "{d:?} does not fit the posted format");
        let r = RawDesc::posted(d);
        let p = self.slot(idx);
        // SAFETY: field pointers inside a live slot; volatile because the peer reads concurrently.
        unsafe {
            std::ptr::addr_of_mut!((*p).word).write_volatile(r.word);
            std::ptr::addr_of_mut!((*p).len).write_volatile(r.len);
            std::ptr::addr_of_mut!((*p).meta).write_volatile(r.meta);
        }
        self.flags_atomic(idx).store(r.flags, Ordering::Release);
    }

    /// Completes a host-owned RX descriptor in the completed format: its length, `flags`
    /// (AVAIL cleared), offload bits `ol`, packet type and MARK id.
    #[inline]
    pub fn complete(&self, idx: u16, len: u16, flags: u16, ol: u32, ptype: u32, mark: u32) {
        let p = self.slot(idx);
        // SAFETY: as in publish.
        unsafe {
            std::ptr::addr_of_mut!((*p).word).write_volatile(ptype as u64 | (mark as u64) << 32);
            std::ptr::addr_of_mut!((*p).len).write_volatile(len);
            std::ptr::addr_of_mut!((*p).meta).write_volatile(ol);
        }
        self.flags_atomic(idx)
            .store(flags & DESC_F_MASK & !DESC_F_AVAIL, Ordering::Release);
    }

    /// Hands a TX descriptor back without touching anything but the flags; a ring passed by
    /// laps is not written (the host's published indexes tell the guest).
    #[inline]
    pub fn release(&self, idx: u16, flags: u16) {
        if self.laps {
            return;
        }
        self.flags_atomic(idx)
            .store(flags & DESC_F_MASK & !DESC_F_AVAIL, Ordering::Release);
    }
}

/// Of the `n` descriptors from `idx`, how many there are up to the end of the last line
/// they fill whole (a line they share with the descriptors after them is left out).
fn whole_lines(idx: u16, n: u16) -> u16 {
    let per_line = (64 / DESC_SIZE) as u16;
    n.saturating_sub(idx.wrapping_add(n) & (per_line - 1))
}

#[cfg(test)]
mod tests;
