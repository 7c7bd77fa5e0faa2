//! TCP headers (RFC 9293 section 3.1).

/// Byte ranges of the fixed TCP header.
pub mod field {
    use std::ops::Range;
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Sequence number.
    pub const SEQ_NUM: Range<usize> = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset: header length in 32-bit words (high 4 bits of the byte).
    pub const DATA_OFF: usize = 12;
    /// Control bits (CWR ECE URG ACK PSH RST SYN FIN, most significant first).
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WIN_SIZE: Range<usize> = 14..16;
    /// Checksum over pseudo-header, header and data.
    pub const CHECKSUM: Range<usize> = 16..18;
    /// Urgent pointer.
    pub const URGENT: Range<usize> = 18..20;
}

/// Bytes of a header without options (data offset 5).
pub const HEADER_LEN: usize = field::URGENT.end;
/// IANA protocol number of TCP (IPv4 protocol / IPv6 next header).
pub const PROTOCOL: u8 = 6;

/// Control bits of the [`field::FLAGS`] byte.
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field significant.
    pub const URG: u8 = 0x20;
    /// ECN-Echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

/// A read (and, over a mutable buffer, write) view of a TCP header and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checks; accessors panic on fewer than [`HEADER_LEN`] bytes.
    #[inline]
    pub fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` if it holds a whole header: at least [`HEADER_LEN`] bytes, a data offset
    /// of at least 5 and at least data offset * 4 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Option<TcpPacket<T>> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        (len >= HEADER_LEN && p.header_len() >= HEADER_LEN && len >= p.header_len()).then_some(p)
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SEQ_NUM];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Header length in bytes, options included (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) as usize * 4
    }

    /// Control bits (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.get16(field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, s: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&s.to_be_bytes());
    }

    /// Sets the header length in bytes (a multiple of 4, 20..=60), clearing the reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) as u8) << 4;
    }

    /// Sets the control bits.
    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.set16(field::CHECKSUM, c)
    }
}
