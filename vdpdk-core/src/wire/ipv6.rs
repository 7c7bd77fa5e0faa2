//! IPv6 fixed headers (RFC 8200 section 3) and the Fragment extension header (section 4.5).
//!
//! Extension headers other than a Fragment header right after the fixed header are not
//! followed: the next header of the fixed header is taken as the payload's protocol.

use std::net::Ipv6Addr;

/// Byte ranges of the fixed IPv6 header.
pub mod field {
    use std::ops::Range;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Payload length: bytes after the fixed header.
    pub const LENGTH: Range<usize> = 4..6;
    /// Next header (IANA protocol numbers: 6 TCP, 17 UDP, 44 Fragment).
    pub const NXT_HDR: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 8..24;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Next-header value of the Fragment extension header (RFC 8200 4.5).
pub const NEXT_HEADER_FRAGMENT: u8 = 44;
/// Bytes of the Fragment extension header.
pub const FRAGMENT_HEADER_LEN: usize = 8;
/// Bits of the Fragment header's offset/flags word (bytes 2..4) that make a packet a real
/// fragment: the 13-bit offset (0xfff8) and M (0x0001). With both zero it is an atomic
/// fragment, processed as a whole packet (RFC 6946 section 4).
pub const FRAGMENT_MASK: u16 = 0xfff9;

/// A read (and, over a mutable buffer, write) view of an IPv6 header and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checks; accessors panic on fewer than [`HEADER_LEN`] bytes.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` if it holds the fixed header ([`HEADER_LEN`] bytes). The payload length
    /// is not checked against the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Option<Ipv6Packet<T>> {
        (buffer.as_ref().len() >= HEADER_LEN).then_some(Ipv6Packet { buffer })
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version from the header (6 for a well-formed one).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// Payload length field, bytes after the fixed header.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Next header of the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
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
    pub fn src_addr(&self) -> Ipv6Addr {
        <[u8; 16]>::try_from(self.src_bytes())
            .expect("16 bytes")
            .into()
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        <[u8; 16]>::try_from(self.dst_bytes())
            .expect("16 bytes")
            .into()
    }

    /// Whether this packet is a fragment: its next header is a Fragment header whose offset
    /// or M flag is non-zero (see [`FRAGMENT_MASK`]), or one cut short by the end of the buffer.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        if self.next_header() != NEXT_HEADER_FRAGMENT {
            return false;
        }
        match self.buffer.as_ref().get(HEADER_LEN + 2..HEADER_LEN + 4) {
            Some(w) => u16::from_be_bytes([w[0], w[1]]) & FRAGMENT_MASK != 0,
            None => true,
        }
    }

    /// The bytes after the fixed header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6 with traffic class and flow label 0.
    #[inline]
    pub fn set_version(&mut self) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = nh;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = h;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }
}
