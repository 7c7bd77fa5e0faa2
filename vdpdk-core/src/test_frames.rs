//! Builders of test and traffic-generator frames (Ethernet / IPv4 / UDP with a sequence
//! number, or any EtherType), and a stable digest to compare what was sent with what arrived.
//! Not for the data path: frame parsing lives in [`crate::wire`].

use std::net::Ipv4Addr;

use crate::mac::MacAddr;
use crate::wire::ethernet::{self, ethertype, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::udp::{self, UdpPacket};

/// Offset of the UDP header in a [`udp_frame`].
const UDP_AT: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
/// Offset of the sequence number (the UDP payload) in a [`udp_frame`].
const SEQ_AT: usize = UDP_AT + udp::HEADER_LEN;
/// End of the sequence number: the shortest frame [`write_udp_frame`] fills (50 bytes).
const SEQ_END: usize = SEQ_AT + 8;

/// Ethernet + IPv4 + UDP frame of exactly `len` bytes (min 60) whose payload starts with
/// `seq` (8 bytes, big-endian) followed by a pattern derived from `seq`. Checksums are valid.
pub fn udp_frame(dst: MacAddr, src: MacAddr, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(60);
    let mut f = vec![0u8; len];
    write_udp_frame(&mut f, dst, src, seq);
    f
}

/// Fills `f` (its whole length, at least 50 bytes) as [`udp_frame`] would: 10.0.0.1:1024 ->
/// 10.0.0.2:4789, TTL 64, no UDP checksum (optional over IPv4, RFC 768).
pub fn write_udp_frame(f: &mut [u8], dst: MacAddr, src: MacAddr, seq: u64) {
    let len = f.len();
    assert!(len >= SEQ_END, "frame too short for Eth/IPv4/UDP + seq");
    let mut eth = EthernetFrame::new_unchecked(&mut *f);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    eth.set_ethertype(ethertype::IPV4);
    let ip_len = (len - ethernet::HEADER_LEN) as u16;
    // Zeroed first: DSCP, identification and flags/offset must not keep a reused buffer's bytes.
    f[ethernet::HEADER_LEN..UDP_AT].fill(0);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[ethernet::HEADER_LEN..UDP_AT]);
    ip.set_version_and_header_len(ipv4::HEADER_LEN);
    ip.set_total_len(ip_len);
    ip.set_ttl(64);
    ip.set_protocol(udp::PROTOCOL);
    ip.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
    ip.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
    ip.fill_checksum();
    let mut u = UdpPacket::new_unchecked(&mut f[UDP_AT..SEQ_AT]);
    u.set_src_port(1024);
    u.set_dst_port(4789);
    u.set_len(ip_len - ipv4::HEADER_LEN as u16);
    u.set_checksum(0);
    f[SEQ_AT..SEQ_END].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[SEQ_END..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
}

/// Sequence number of a frame built by [`udp_frame`].
pub fn frame_seq(f: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(f.get(SEQ_AT..SEQ_END)?.try_into().ok()?))
}

/// Frame with an arbitrary EtherType and a sequence number right after the header.
pub fn ether_frame(dst: MacAddr, src: MacAddr, ether_type: u16, seq: u64, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(60)];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ether_type.to_be_bytes());
    f[14..22].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[22..].iter_mut().enumerate() {
        *b = (seq as u8) ^ (i as u8);
    }
    f
}

/// Order-sensitive FNV-1a (64-bit) digest over a sequence of frames, each prefixed by its
/// length; the value starts at the FNV offset basis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(pub u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    /// Folds `frame` (its length, then its bytes) into the digest.
    pub fn add(&mut self, frame: &[u8]) {
        let mut h = self.0;
        for b in (frame.len() as u32).to_le_bytes().iter().chain(frame) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::inet_checksum;

    #[test]
    fn udp_frame_has_valid_ip_checksum_and_seq() {
        let f = udp_frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 9]), 77, 128);
        assert_eq!(f.len(), 128);
        assert_eq!(inet_checksum(&f[14..34]), 0);
        assert_eq!(frame_seq(&f), Some(77));
        let s = crate::wire::parse(&f).unwrap();
        assert_eq!(s.ports, Some((1024, 4789)));
    }

    #[test]
    fn digest_is_order_sensitive() {
        let (a, b) = (b"abc".as_slice(), b"abd".as_slice());
        let (mut x, mut y) = (Digest::default(), Digest::default());
        x.add(a);
        x.add(b);
        y.add(b);
        y.add(a);
        assert_ne!(x, y);
    }

    /// The builder before it used the wire views, byte for byte.
    fn old_write_udp_frame(f: &mut [u8], dst: MacAddr, src: MacAddr, seq: u64) {
        let len = f.len();
        f[0..6].copy_from_slice(&dst.0);
        f[6..12].copy_from_slice(&src.0);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (len - 14) as u16;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = inet_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let udp_len = ip_len - 20;
        f[34..36].copy_from_slice(&1024u16.to_be_bytes());
        f[36..38].copy_from_slice(&4789u16.to_be_bytes());
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
        f[40..42].copy_from_slice(&[0, 0]);
        f[42..50].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in f[50..].iter_mut().enumerate() {
            *b = (seq as u8).wrapping_add(i as u8);
        }
    }

    #[test]
    fn the_builder_writes_what_it_always_wrote_and_ignores_old_bytes() {
        let (d, s) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        for len in [50, 60, 1514] {
            let mut old = vec![0u8; len];
            old_write_udp_frame(&mut old, d, s, 0x0102_0304_0506_0708);
            let mut dirty = vec![0xaau8; len];
            write_udp_frame(&mut dirty, d, s, 0x0102_0304_0506_0708);
            assert_eq!(dirty, old, "len {len}");
        }
    }
}
