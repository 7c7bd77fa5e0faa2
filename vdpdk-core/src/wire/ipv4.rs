//! IPv4 headers (RFC 791 section 3.1).

use std::net::Ipv4Addr;

/// Byte ranges of the fixed IPv4 header.
pub mod field {
    use std::ops::Range;
    /// Version (high 4 bits) and IHL, the header length in 32-bit words (low 4 bits).
    pub const VER_IHL: usize = 0;
    /// DSCP and ECN.
    pub const DSCP_ECN: usize = 1;
    /// Total length: header and payload, in bytes.
    pub const LENGTH: Range<usize> = 2..4;
    /// Identification, shared by the fragments of one datagram.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags (top 3 bits: reserved, DF, MF) and fragment offset (low 13 bits, 8-byte units).
    pub const FLG_OFF: Range<usize> = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload (IANA protocol numbers: 6 TCP, 17 UDP).
    pub const PROTOCOL: usize = 9;
    /// Header checksum (RFC 1071 over the header only).
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 12..16;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Bytes of a header without options (IHL 5).
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Bits of the flags/offset field that make a datagram a fragment: MF (0x2000) and the
/// 13-bit fragment offset (0x1fff). RFC 791 3.1: a datagram is a fragment when MF is set or the
/// offset is non-zero; DF (0x4000) does not make one.
pub const FRAGMENT_MASK: u16 = 0x3fff;
/// More Fragments flag in the flags/offset field.
pub const MORE_FRAGMENTS: u16 = 0x2000;
/// Fragment offset bits of the flags/offset field (units of 8 bytes).
pub const OFFSET_MASK: u16 = 0x1fff;

/// A read (and, over a mutable buffer, write) view of an IPv4 header and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checks; accessors panic on a buffer shorter than the header.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` if [`Ipv4Packet::check_len`] holds.
    #[inline]
    pub fn new_checked(buffer: T) -> Option<Ipv4Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len().then_some(p)
    }

    /// Whether the buffer holds a whole header: at least [`HEADER_LEN`] bytes, an IHL of at
    /// least 5 and at least IHL * 4 bytes. The version nibble and total length are not checked
    /// (the EtherType already said IPv4; a frame may carry padding or be a TSO super-frame).
    #[inline]
    pub fn check_len(&self) -> bool {
        let len = self.buffer.as_ref().len();
        len >= HEADER_LEN && self.header_len() >= HEADER_LEN && len >= self.header_len()
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version from the header (4 for a well-formed one).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize * 4
    }

    /// Total length field: header plus payload, bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// The whole 16-bit flags and fragment offset field.
    #[inline]
    pub fn flags_and_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// Whether MF (more fragments) is set.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_and_offset() & MORE_FRAGMENTS != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> usize {
        (self.flags_and_offset() & OFFSET_MASK) as usize * 8
    }

    /// Whether this is a fragment: MF set or a non-zero offset (see [`FRAGMENT_MASK`]). Only the
    /// fragment at offset 0 carries the L4 header.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_and_offset() & FRAGMENT_MASK != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (6 TCP, 17 UDP).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address bytes.
    #[inline]
    pub fn src_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SRC_ADDR]
    }

    /// Destination address bytes.
    #[inline]
    pub fn dst_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DST_ADDR]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        <[u8; 4]>::try_from(self.src_bytes())
            .expect("4 bytes")
            .into()
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        <[u8; 4]>::try_from(self.dst_bytes())
            .expect("4 bytes")
            .into()
    }

    /// The bytes after the header (options skipped).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4, 20..=60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | (header_len / 4) as u8;
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, id: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&id.to_be_bytes());
    }

    /// Sets the whole flags and fragment offset field.
    #[inline]
    pub fn set_flags_and_offset(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the payload protocol.
    #[inline]
    pub fn set_protocol(&mut self, p: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = p;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Computes and stores the header checksum (RFC 791 3.1, RFC 1071) over
    /// [`Ipv4Packet::header_len`] bytes.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = super::checksum::inet_checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }
}
