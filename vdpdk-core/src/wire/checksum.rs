//! The Internet checksum (RFC 1071): a 16-bit one's-complement sum of 16-bit big-endian words,
//! inverted. IPv4 headers, TCP and UDP use it; TCP and UDP add a pseudo-header of addresses,
//! protocol and length (RFC 9293 3.1, RFC 768, RFC 8200 8.1).

/// RFC 1071 Internet checksum of `data` (an odd last byte is padded with zero).
pub fn inet_checksum(data: &[u8]) -> u16 {
    !fold(ones_sum(0, data))
}

/// Adds `data` (big-endian 16-bit words, an odd last byte padded) to a one's-complement sum
/// kept unfolded in 64 bits (no overflow below 2^48 words).
pub fn ones_sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [last] = words.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

/// Folds a one's-complement sum to 16 bits (not inverted).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Completes a checksum the sender left partial (Linux CHECKSUM_PARTIAL, virtio-net
/// NEEDS_CSUM): the field at `start + offset` holds the pseudo-header sum; the checksum covers
/// everything from `start`. A result of 0 is sent as 0xffff, as Linux does. False if the
/// offsets do not fit the frame.
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let field = start + offset;
    if start > frame.len() || field + 2 > frame.len() {
        return false;
    }
    let c = !fold(ones_sum(0, &frame[start..]));
    let c = if c == 0 { 0xffff } else { c };
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}
