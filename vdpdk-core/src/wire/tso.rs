//! TCP segmentation in software: where a super-frame's headers are, and how a copy of them in
//! front of one payload chunk becomes a valid segment (what TSO hardware does per segment).

use super::checksum::{fold, inet_checksum, ones_sum};
use super::{ipv4, ipv6, parse, tcp, L3};

/// Where a TCP segment's headers are: IP header at `l3` (v4 or v6), TCP header at `l4`,
/// payload from `payload` (byte offsets into the frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLayout {
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3: usize,
    /// Offset of the TCP header.
    pub l4: usize,
    /// Offset of the first payload byte (after TCP options).
    pub payload: usize,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
}

impl TcpLayout {
    /// Finds the headers of an Ethernet (up to two VLAN tags) + IPv4/IPv6 + TCP frame with
    /// [`parse`]. None when the frame is not TCP, is an IPv4 fragment (no whole segment to cut),
    /// has a header cut short by the end of the frame, or has IPv6 extension headers (not
    /// followed).
    pub fn parse(f: &[u8]) -> Option<TcpLayout> {
        let s = parse(f)?;
        if s.l4_proto != tcp::PROTOCOL || s.fragment {
            return None;
        }
        let l4 = s.l4_offset? as usize;
        let t = tcp::TcpPacket::new_checked(f.get(l4..)?)?;
        Some(TcpLayout {
            l3: s.l3_offset(),
            l4,
            payload: l4 + t.header_len(),
            ipv6: s.l3 == Some(L3::Ipv6),
        })
    }
}

/// Turns a copy of a super-frame's headers followed by one payload chunk into segment `k` of a
/// TCP segmentation with `mss`-byte chunks: IP length (and IPv4 id + k), TCP sequence number
/// (+ k * mss), FIN/PSH only on the `last` segment, CWR only on the first, and full IPv4 header
/// and TCP checksums. `seg` must hold the headers `t` describes (from [`TcpLayout::parse`] of
/// the super-frame).
pub fn finish_tcp_segment(seg: &mut [u8], t: &TcpLayout, k: usize, mss: usize, last: bool) {
    let (ip, l4) = (t.l3, t.l4);
    let l4_len = seg.len() - l4;
    if t.ipv6 {
        let plen = (seg.len() - ip - ipv6::HEADER_LEN) as u16;
        ipv6::Ipv6Packet::new_unchecked(&mut seg[ip..]).set_payload_len(plen);
    } else {
        let tot = (seg.len() - ip) as u16;
        let mut h = ipv4::Ipv4Packet::new_unchecked(&mut seg[ip..l4]);
        h.set_total_len(tot);
        h.set_ident(h.ident().wrapping_add(k as u16));
        h.set_checksum(0);
        let c = inet_checksum(h.into_inner());
        ipv4::Ipv4Packet::new_unchecked(&mut seg[ip..l4]).set_checksum(c);
    }
    let mut h = tcp::TcpPacket::new_unchecked(&mut seg[l4..]);
    h.set_seq_number(h.seq_number().wrapping_add((k * mss) as u32));
    let mut f = h.flags();
    if !last {
        f &= !(tcp::flags::FIN | tcp::flags::PSH);
    }
    if k > 0 {
        f &= !tcp::flags::CWR;
    }
    h.set_flags(f);
    h.set_checksum(0);
    let pseudo = if t.ipv6 {
        ones_sum(
            0,
            &seg[ip + ipv6::field::SRC_ADDR.start..ip + ipv6::field::DST_ADDR.end],
        )
    } else {
        ones_sum(
            0,
            &seg[ip + ipv4::field::SRC_ADDR.start..ip + ipv4::field::DST_ADDR.end],
        )
    };
    let acc = ones_sum(pseudo + tcp::PROTOCOL as u64 + l4_len as u64, &seg[l4..]);
    tcp::TcpPacket::new_unchecked(&mut seg[l4..]).set_checksum(!fold(acc));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::complete_checksum;

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
}
