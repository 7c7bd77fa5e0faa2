//! UDP headers (RFC 768).

/// Byte ranges of the UDP header.
pub mod field {
    use std::ops::Range;
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Length of header and data, bytes.
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum over pseudo-header, header and data (0: none, IPv4 only).
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Bytes of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;
/// IANA protocol number of UDP (IPv4 protocol / IPv6 next header).
pub const PROTOCOL: u8 = 17;

/// A read (and, over a mutable buffer, write) view of a UDP header and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without checks; accessors panic on fewer than [`HEADER_LEN`] bytes.
    #[inline]
    pub fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` if it holds the header ([`HEADER_LEN`] bytes); the length field is not
    /// checked against the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Option<UdpPacket<T>> {
        (buffer.as_ref().len() >= HEADER_LEN).then_some(UdpPacket { buffer })
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn get16(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.get16(field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.get16(field::DST_PORT)
    }

    /// Length field: header and data, bytes.
    #[inline]
    pub fn len(&self) -> u16 {
        self.get16(field::LENGTH)
    }

    /// Whether the length field says there is no data (only the 8-byte header, or less).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.get16(field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    fn set16(&mut self, r: std::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        self.set16(field::SRC_PORT, p)
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        self.set16(field::DST_PORT, p)
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        self.set16(field::LENGTH, len)
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.set16(field::CHECKSUM, c)
    }
}
