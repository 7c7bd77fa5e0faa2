//! Small builders for test and generator frames (Ethernet / IPv4 / UDP with a sequence number),
//! and a stable digest to compare what was sent with what arrived.

use crate::ethdev::MacAddr;
use crate::mbuf::{OlFlags, TxOffloadInfo};

/// Ethernet + IPv4 + UDP frame of exactly `len` bytes (min 60) whose payload starts with
/// `seq` (8 bytes, big-endian) followed by a pattern derived from `seq`. Checksums are valid.
pub fn udp_frame(dst: MacAddr, src: MacAddr, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(60);
    let mut f = vec![0u8; len];
    write_udp_frame(&mut f, dst, src, seq);
    f
}

/// Fills `f` (its whole length, at least 50 bytes) as [`udp_frame`] would.
pub fn write_udp_frame(f: &mut [u8], dst: MacAddr, src: MacAddr, seq: u64) {
    let len = f.len();
    assert!(len >= 50, "frame too short for Eth/IPv4/UDP + seq");
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
    f[40..42].copy_from_slice(&[0, 0]); // UDP checksum optional over IPv4
    f[42..50].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[50..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
}

/// Sequence number of a frame built by [`udp_frame`].
pub fn frame_seq(f: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(f.get(42..50)?.try_into().ok()?))
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

/// RFC 1071 Internet checksum.
pub fn inet_checksum(data: &[u8]) -> u16 {
    !fold(ones_sum(0, data))
}

/// Adds `data` (big-endian 16-bit words, an odd last byte padded) to a one's-complement sum.
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

/// Where a TCP segment's headers are: IP header at `l3` (v4 or v6), TCP header at `l4`,
/// payload from `payload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLayout {
    pub l3: usize,
    pub l4: usize,
    pub payload: usize,
    pub ipv6: bool,
}

impl TcpLayout {
    /// Parses an Ethernet (optionally one VLAN tag) + IPv4/IPv6 + TCP frame. IPv6 extension
    /// headers are not followed (None).
    pub fn parse(f: &[u8]) -> Option<TcpLayout> {
        let mut l3 = 14;
        let mut et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
        if et == 0x8100 {
            et = u16::from_be_bytes([*f.get(16)?, *f.get(17)?]);
            l3 = 18;
        }
        let (l4, ipv6) = match et {
            0x0800 if *f.get(l3 + 9)? == 6 => (l3 + (*f.get(l3)? as usize & 0xf) * 4, false),
            0x86dd if *f.get(l3 + 6)? == 6 => (l3 + 40, true),
            _ => return None,
        };
        let payload = l4 + (*f.get(l4 + 12)? as usize >> 4) * 4;
        (payload <= f.len() && payload >= l4 + 20).then_some(TcpLayout {
            l3,
            l4,
            payload,
            ipv6,
        })
    }
}

/// Turns a copy of a super-frame's headers followed by one payload chunk into segment `k` of a
/// TCP segmentation with `mss`-byte chunks: IP length (and IPv4 id + k), TCP sequence number
/// (+ k * mss), FIN/PSH only on the `last` segment, and full IPv4 header and TCP checksums.
pub fn finish_tcp_segment(seg: &mut [u8], t: &TcpLayout, k: usize, mss: usize, last: bool) {
    let (ip, tcp) = (t.l3, t.l4);
    let l4_len = seg.len() - tcp;
    if t.ipv6 {
        let plen = (seg.len() - ip - 40) as u16;
        seg[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
    } else {
        let tot = (seg.len() - ip) as u16;
        seg[ip + 2..ip + 4].copy_from_slice(&tot.to_be_bytes());
        let id = u16::from_be_bytes([seg[ip + 4], seg[ip + 5]]).wrapping_add(k as u16);
        seg[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
        seg[ip + 10..ip + 12].fill(0);
        let c = inet_checksum(&seg[ip..tcp]);
        seg[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    }
    let seq = u32::from_be_bytes(seg[tcp + 4..tcp + 8].try_into().expect("4 bytes"))
        .wrapping_add((k * mss) as u32);
    seg[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
    if !last {
        seg[tcp + 13] &= !(0x01 | 0x08); // FIN, PSH
    }
    if k > 0 {
        seg[tcp + 13] &= !0x80; // CWR only on the first
    }
    seg[tcp + 16..tcp + 18].fill(0);
    let pseudo = if t.ipv6 {
        ones_sum(0, &seg[ip + 8..ip + 40])
    } else {
        ones_sum(0, &seg[ip + 12..ip + 20])
    };
    let acc = ones_sum(pseudo + 6 + l4_len as u64, &seg[tcp..]);
    let c = !fold(acc);
    seg[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
}

/// Header layout of a frame an application asks a device to offload (DPDK semantics: the
/// lengths come from the mbuf's `tx_offload`, the protocols from its flags), checked against
/// the frame. None when the request is inconsistent: lengths that do not fit, an IP header
/// shorter than its minimum, an L4 header too short for its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLayout {
    pub l3: usize,
    pub l4: usize,
    pub payload: usize,
    pub ipv6: bool,
    /// 6 TCP, 17 UDP, 0 none.
    pub l4_proto: u8,
}

impl TxLayout {
    pub fn new(flags: OlFlags, t: TxOffloadInfo, frame_len: usize) -> Option<TxLayout> {
        let ipv6 = flags.contains(OlFlags::TX_IPV6);
        let ipv4 = flags.intersects(OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM);
        let l4_proto = if flags.intersects(OlFlags::TX_TCP_CKSUM | OlFlags::TX_TCP_SEG) {
            6
        } else if flags.contains(OlFlags::TX_UDP_CKSUM) {
            17
        } else {
            0
        };
        let (l3, l4) = (t.l2_len as usize, t.l2_len as usize + t.l3_len as usize);
        let payload = l4 + t.l4_len as usize;
        let l3_ok = match (ipv4, ipv6) {
            (true, false) => t.l3_len >= 20,
            (false, true) => t.l3_len >= 40,
            _ => false,
        };
        let l4_ok = match l4_proto {
            6 => t.l4_len >= 20,
            17 => t.l4_len >= 8,
            _ => flags.contains(OlFlags::TX_IP_CKSUM) && !ipv6,
        };
        (l3 >= 14 && l3_ok && l4_ok && payload <= frame_len).then_some(TxLayout {
            l3,
            l4,
            payload,
            ipv6,
            l4_proto,
        })
    }

    /// The pseudo-header sum of the L4 checksum, without the length (what hardware that
    /// segments needs seeded, DPDK `rte_ipv4_phdr_cksum` with TSO) or with `l4_len` added.
    pub fn pseudo_sum(&self, frame: &[u8], l4_len: Option<usize>) -> u64 {
        let addrs = if self.ipv6 {
            &frame[self.l3 + 8..self.l3 + 40]
        } else {
            &frame[self.l3 + 12..self.l3 + 20]
        };
        ones_sum(0, addrs) + self.l4_proto as u64 + l4_len.unwrap_or(0) as u64
    }
}

/// Fills, in software, the checksums `flags` ask for: the IPv4 header checksum and the TCP or
/// UDP checksum over the pseudo-header and everything from the L4 header on (a UDP result of
/// 0 is sent as 0xffff). The frame must have been checked with [`TxLayout::new`].
pub fn fill_tx_checksums(frame: &mut [u8], flags: OlFlags, t: &TxLayout) {
    if flags.contains(OlFlags::TX_IP_CKSUM) && !t.ipv6 {
        frame[t.l3 + 10..t.l3 + 12].fill(0);
        let c = inet_checksum(&frame[t.l3..t.l4]);
        frame[t.l3 + 10..t.l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let field = match t.l4_proto {
        6 => t.l4 + 16,
        17 => t.l4 + 6,
        _ => return,
    };
    frame[field..field + 2].fill(0);
    let pseudo = t.pseudo_sum(frame, Some(frame.len() - t.l4));
    let mut c = !fold(ones_sum(pseudo, &frame[t.l4..]));
    if t.l4_proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

/// Order-sensitive FNV-1a digest over a sequence of frames (length-delimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(pub u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
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

    #[test]
    fn udp_frame_has_valid_ip_checksum_and_seq() {
        let f = udp_frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 9]), 77, 128);
        assert_eq!(f.len(), 128);
        assert_eq!(inet_checksum(&f[14..34]), 0);
        assert_eq!(frame_seq(&f), Some(77));
    }

    /// Ethernet + IPv4 + TCP (with FIN|PSH) carrying `payload`, checksums left zero.
    fn tcp4(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[38..42].copy_from_slice(&1000u32.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = 0x18 | 0x01; // PSH ACK FIN
        f.extend_from_slice(payload);
        f
    }

    fn tcp_checksum_ok(seg: &[u8], t: &TcpLayout) -> bool {
        let l4_len = (seg.len() - t.l4) as u64;
        let acc = ones_sum(
            ones_sum(0, &seg[t.l3 + 12..t.l3 + 20]) + 6 + l4_len,
            &seg[t.l4..],
        );
        fold(acc) == 0xffff
    }

    #[test]
    fn a_tcp_super_frame_becomes_valid_mss_segments() {
        let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
        let f = tcp4(&payload);
        let t = TcpLayout::parse(&f).unwrap();
        assert_eq!((t.l3, t.l4, t.payload, t.ipv6), (14, 34, 54, false));
        let mss = 1448;
        let chunks: Vec<&[u8]> = f[t.payload..].chunks(mss).collect();
        let mut joined = Vec::new();
        for (k, c) in chunks.iter().enumerate() {
            let mut seg = f[..t.payload].to_vec();
            seg.extend_from_slice(c);
            let last = k + 1 == chunks.len();
            finish_tcp_segment(&mut seg, &t, k, mss, last);
            assert_eq!(
                inet_checksum(&seg[14..34]),
                0,
                "IPv4 header checksum of {k}"
            );
            assert!(tcp_checksum_ok(&seg, &t), "TCP checksum of segment {k}");
            assert_eq!(
                u16::from_be_bytes([seg[16], seg[17]]) as usize,
                40 + c.len()
            );
            assert_eq!(u16::from_be_bytes([seg[18], seg[19]]), 0x1234 + k as u16);
            let seq = u32::from_be_bytes(seg[38..42].try_into().unwrap());
            assert_eq!(seq, 1000 + (k * mss) as u32);
            assert_eq!(
                seg[47] & 0x09 != 0,
                last,
                "FIN/PSH only on the last segment"
            );
            joined.extend_from_slice(&seg[54..]);
        }
        assert_eq!(chunks.len(), 3);
        assert_eq!(joined, payload);
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut f = tcp4(b"hello, partial checksum");
        let t = TcpLayout::parse(&f).unwrap();
        // What a sender with CHECKSUM_PARTIAL leaves: the pseudo-header sum in the field.
        let l4_len = (f.len() - t.l4) as u64;
        let pseudo = fold(ones_sum(0, &f[26..34]) + 6 + l4_len);
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        assert!(complete_checksum(&mut f, t.l4, 16));
        assert!(tcp_checksum_ok(&f, &t));
        assert!(
            !complete_checksum(&mut f, 60, 16),
            "offsets past the end are refused"
        );
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

    /// Eth/IPv4/(TCP|UDP) with every checksum zeroed and a patterned payload.
    fn zeroed(proto: u8, payload: usize) -> Vec<u8> {
        let l4 = if proto == 6 { 20 } else { 8 };
        let mut f = vec![0u8; 34 + l4 + payload];
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((20 + l4 + payload) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = proto;
        f[26..34].copy_from_slice(&[10, 1, 2, 3, 10, 4, 5, 6]);
        if proto == 6 {
            f[46] = 0x50;
        } else {
            f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        }
        for (i, b) in f[34 + l4..].iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        f
    }

    /// Independent check: the IPv4 header and the L4 segment with its pseudo-header both sum
    /// to 0xffff.
    fn sums_ok(f: &[u8]) -> bool {
        let mut ph = f[26..34].to_vec();
        ph.extend_from_slice(&[0, f[23]]);
        ph.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
        ph.extend_from_slice(&f[34..]);
        inet_checksum(&f[14..34]) == 0 && inet_checksum(&ph) == 0
    }

    #[test]
    fn software_tx_checksums_follow_the_offload_request() {
        let t = |l4| TxOffloadInfo {
            l2_len: 14,
            l3_len: 20,
            l4_len: l4,
            tso_segsz: 0,
        };
        for (proto, l4, flag) in [
            (17u8, 8u8, OlFlags::TX_UDP_CKSUM),
            (6, 20, OlFlags::TX_TCP_CKSUM),
        ] {
            let mut f = zeroed(proto, 333);
            let flags = OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM | flag;
            let lay = TxLayout::new(flags, t(l4), f.len()).unwrap();
            fill_tx_checksums(&mut f, flags, &lay);
            assert!(sums_ok(&f), "proto {proto}");
        }
        // Requests that do not fit the frame or lack a protocol are refused.
        let flags = OlFlags::TX_IPV4 | OlFlags::TX_TCP_CKSUM;
        assert!(
            TxLayout::new(flags, t(20), 53).is_none(),
            "headers past the end"
        );
        assert!(
            TxLayout::new(flags, t(8), 100).is_none(),
            "TCP header of 8 bytes"
        );
        assert!(
            TxLayout::new(OlFlags::TX_TCP_CKSUM, t(20), 100).is_none(),
            "no IP version"
        );
        let short_ip = TxOffloadInfo {
            l3_len: 12,
            ..t(20)
        };
        assert!(TxLayout::new(flags, short_ip, 100).is_none());
    }
}
