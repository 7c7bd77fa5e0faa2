//! Per-packet offload metadata with DPDK's meaning (flags, packet type, header lengths), and
//! the software side of TX offloads: checking an application's request against its frame and
//! filling the checksums it asked for.

use crate::wire::checksum::{fold, inet_checksum, ones_sum};
use crate::wire::{ethertype, ipv4, ipv6, tcp, udp, L3};

bitflags::bitflags! {
    /// Per-packet offload flags (DPDK's `RTE_MBUF_F_*` names, our own bit positions): `RX_*`
    /// report what the device found, `TX_*` ask the device to do something.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct OlFlags: u64 {
        /// `vlan_tci` holds the stripped VLAN tag.
        const RX_VLAN            = 1 << 0;
        /// `hash` holds the RSS hash.
        const RX_RSS_HASH        = 1 << 1;
        /// A flow rule matched the packet.
        const RX_FDIR            = 1 << 2;
        /// `mark` holds the matching rule's MARK id.
        const RX_FDIR_ID         = 1 << 3;
        /// The IPv4 header checksum was checked and is right.
        const RX_IP_CKSUM_GOOD   = 1 << 4;
        /// The IPv4 header checksum was checked and is wrong.
        const RX_IP_CKSUM_BAD    = 1 << 5;
        /// The TCP/UDP checksum was checked and is right.
        const RX_L4_CKSUM_GOOD   = 1 << 6;
        /// The TCP/UDP checksum was checked and is wrong.
        const RX_L4_CKSUM_BAD    = 1 << 7;
        /// Insert `vlan_tci` as a VLAN tag.
        const TX_VLAN            = 1 << 32;
        /// The packet is IPv4 (for checksum and segmentation offloads).
        const TX_IPV4            = 1 << 33;
        /// The packet is IPv6 (for checksum and segmentation offloads).
        const TX_IPV6            = 1 << 34;
        /// Compute the IPv4 header checksum.
        const TX_IP_CKSUM        = 1 << 35;
        /// Compute the TCP checksum.
        const TX_TCP_CKSUM       = 1 << 36;
        /// Compute the UDP checksum.
        const TX_UDP_CKSUM       = 1 << 37;
        /// Segment the TCP payload into `tso_segsz`-byte segments.
        const TX_TCP_SEG         = 1 << 38;
    }
}

/// DPDK-style packet type (`RTE_PTYPE_*` values, rte_mbuf_ptype.h): an L2, an L3 and an L4
/// field, each selected by its mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PacketType(pub u32);

impl PacketType {
    /// Nothing recognised.
    pub const UNKNOWN: u32 = 0;
    /// Ethernet.
    pub const L2_ETHER: u32 = 0x0000_0001;
    /// Ethernet carrying ARP.
    pub const L2_ETHER_ARP: u32 = 0x0000_0003;
    /// Ethernet with one VLAN tag.
    pub const L2_ETHER_VLAN: u32 = 0x0000_0006;
    /// Ethernet with two VLAN tags (QinQ).
    pub const L2_ETHER_QINQ: u32 = 0x0000_0007;
    /// Selects the L2 field.
    pub const L2_MASK: u32 = 0x0000_000f;
    /// IPv4 (options or not).
    pub const L3_IPV4: u32 = 0x0000_0010;
    /// IPv6 (extension headers not followed).
    pub const L3_IPV6: u32 = 0x0000_0040;
    /// Selects the L3 field.
    pub const L3_MASK: u32 = 0x0000_00f0;
    /// TCP.
    pub const L4_TCP: u32 = 0x0000_0100;
    /// UDP.
    pub const L4_UDP: u32 = 0x0000_0200;
    /// An IP fragment, the first included (rte_mbuf_ptype.h: IPv4 with MF set or a non-zero
    /// offset; IPv6 with a Fragment header).
    pub const L4_FRAG: u32 = 0x0000_0300;
    /// SCTP.
    pub const L4_SCTP: u32 = 0x0000_0400;
    /// ICMP or ICMPv6.
    pub const L4_ICMP: u32 = 0x0000_0500;
    /// Selects the L4 field.
    pub const L4_MASK: u32 = 0x0000_0f00;

    /// Classifies an Ethernet frame in software (what a NIC's parser reports), from
    /// [`crate::wire::parse`]: VLAN and QinQ frames are classified by what follows their tags;
    /// the L4 type comes from the protocol field alone.
    pub fn parse(frame: &[u8]) -> PacketType {
        // Untagged IPv4, most of what a switch sees, without the general walk (which also
        // reads the ports): the same answer, in a few loads.
        if let (Some(&[0x08, 0x00]), Some(l3)) = (frame.get(12..14), frame.get(14..)) {
            let Some(ip) = crate::wire::Ipv4Packet::new_checked(l3) else {
                return PacketType(Self::L2_ETHER);
            };
            let l4 = match ip.is_fragment() {
                true => Self::L4_FRAG,
                false => Self::l4_of(ip.protocol()),
            };
            return PacketType(Self::L2_ETHER | Self::L3_IPV4 | l4);
        }
        Self::walk(frame)
    }

    /// [`PacketType::parse`] through [`crate::wire::parse`]: every frame shape it knows.
    fn walk(frame: &[u8]) -> PacketType {
        let Some(s) = crate::wire::parse(frame) else {
            return PacketType(Self::UNKNOWN);
        };
        let l2 = match s.vlan_count() {
            0 if s.ethertype == ethertype::ARP => return PacketType(Self::L2_ETHER_ARP),
            0 => Self::L2_ETHER,
            1 => Self::L2_ETHER_VLAN,
            _ => Self::L2_ETHER_QINQ,
        };
        let l3 = match s.l3 {
            None => return PacketType(l2),
            Some(L3::Ipv4) => Self::L3_IPV4,
            Some(L3::Ipv6) => Self::L3_IPV6,
        };
        let l4 = if s.fragment {
            Self::L4_FRAG
        } else {
            Self::l4_of(s.l4_proto)
        };
        PacketType(l2 | l3 | l4)
    }

    fn l4_of(proto: u8) -> u32 {
        match proto {
            tcp::PROTOCOL => Self::L4_TCP,
            udp::PROTOCOL => Self::L4_UDP,
            132 => Self::L4_SCTP,
            1 | 58 => Self::L4_ICMP,
            _ => 0,
        }
    }
}

/// Header lengths and segment size a TX offload needs (DPDK's `tx_offload` union, unpacked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOffloadInfo {
    /// Ethernet header bytes, VLAN tags included.
    pub l2_len: u8,
    /// IP header bytes, options or extension headers included.
    pub l3_len: u16,
    /// TCP or UDP header bytes, options included.
    pub l4_len: u8,
    /// TCP payload bytes per segment (MSS) with `TX_TCP_SEG`.
    pub tso_segsz: u16,
}

/// Header layout of a frame an application asks a device to offload (DPDK semantics: the
/// lengths come from the mbuf's `tx_offload`, the protocols from its flags), checked against
/// the frame. None when the request is inconsistent: lengths that do not fit, an IP header
/// shorter than its minimum, an L4 header too short for its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLayout {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    /// Offset of the L4 payload.
    pub payload: usize,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// 6 TCP, 17 UDP, 0 none.
    pub l4_proto: u8,
}

impl TxLayout {
    /// Checks a request (`flags`, the header lengths `t`) against a frame of `frame_len`
    /// bytes; the frame's bytes are not read. Needs exactly one of IPv4/IPv6, an IP header of
    /// at least its minimum, an L4 header of at least its minimum (20 TCP, 8 UDP) or a bare
    /// IPv4 checksum request, an L2 header of at least 14 bytes, and all headers inside the
    /// frame.
    pub fn new(flags: OlFlags, t: TxOffloadInfo, frame_len: usize) -> Option<TxLayout> {
        let ipv6 = flags.contains(OlFlags::TX_IPV6);
        let ipv4 = flags.intersects(OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM);
        let l4_proto = if flags.intersects(OlFlags::TX_TCP_CKSUM | OlFlags::TX_TCP_SEG) {
            tcp::PROTOCOL
        } else if flags.contains(OlFlags::TX_UDP_CKSUM) {
            udp::PROTOCOL
        } else {
            0
        };
        let (l3, l4) = (t.l2_len as usize, t.l2_len as usize + t.l3_len as usize);
        let payload = l4 + t.l4_len as usize;
        let l3_ok = match (ipv4, ipv6) {
            (true, false) => t.l3_len as usize >= ipv4::HEADER_LEN,
            (false, true) => t.l3_len as usize >= ipv6::HEADER_LEN,
            _ => false,
        };
        let l4_ok = match l4_proto {
            tcp::PROTOCOL => t.l4_len as usize >= tcp::HEADER_LEN,
            udp::PROTOCOL => t.l4_len as usize >= udp::HEADER_LEN,
            _ => flags.contains(OlFlags::TX_IP_CKSUM) && !ipv6,
        };
        let l2_ok = l3 >= crate::wire::ethernet::HEADER_LEN;
        (l2_ok && l3_ok && l4_ok && payload <= frame_len).then_some(TxLayout {
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
            &frame[self.l3 + ipv6::field::SRC_ADDR.start..self.l3 + ipv6::field::DST_ADDR.end]
        } else {
            &frame[self.l3 + ipv4::field::SRC_ADDR.start..self.l3 + ipv4::field::DST_ADDR.end]
        };
        ones_sum(0, addrs) + self.l4_proto as u64 + l4_len.unwrap_or(0) as u64
    }
}

/// Fills, in software, the checksums `flags` ask for: the IPv4 header checksum and the TCP or
/// UDP checksum over the pseudo-header and everything from the L4 header on (a UDP result of
/// 0 is sent as 0xffff, RFC 768). The frame must have been checked with [`TxLayout::new`].
pub fn fill_tx_checksums(frame: &mut [u8], flags: OlFlags, t: &TxLayout) {
    if flags.contains(OlFlags::TX_IP_CKSUM) && !t.ipv6 {
        let mut ip = ipv4::Ipv4Packet::new_unchecked(&mut frame[t.l3..t.l4]);
        ip.set_checksum(0);
        let c = inet_checksum(ip.into_inner());
        ipv4::Ipv4Packet::new_unchecked(&mut frame[t.l3..t.l4]).set_checksum(c);
    }
    let field = match t.l4_proto {
        tcp::PROTOCOL => t.l4 + tcp::field::CHECKSUM.start,
        udp::PROTOCOL => t.l4 + udp::field::CHECKSUM.start,
        _ => return,
    };
    frame[field..field + 2].fill(0);
    let pseudo = t.pseudo_sum(frame, Some(frame.len() - t.l4));
    let mut c = !fold(ones_sum(pseudo, &frame[t.l4..]));
    if t.l4_proto == udp::PROTOCOL && c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn packet_type_parse() {
        let mut f = [0u8; 64];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 17;
        assert_eq!(
            PacketType::parse(&f).0,
            PacketType::L2_ETHER | PacketType::L3_IPV4 | PacketType::L4_UDP
        );
        f[20] = 0x20; // MF: the first fragment
        assert_eq!(
            PacketType::parse(&f).0,
            PacketType::L2_ETHER | PacketType::L3_IPV4 | PacketType::L4_FRAG
        );
        f[20] = 0;
        f[14] = 0x44; // IHL 4: no IPv4 header
        assert_eq!(PacketType::parse(&f).0, PacketType::L2_ETHER);
        f[12] = 0x08;
        f[13] = 0x06;
        assert_eq!(PacketType::parse(&f).0, PacketType::L2_ETHER_ARP);
        assert_eq!(PacketType::parse(&f[..10]).0, PacketType::UNKNOWN);
        // One 802.1Q tag, then IPv4/TCP.
        let mut v = [0u8; 68];
        v[12..14].copy_from_slice(&[0x81, 0x00]);
        v[14..16].copy_from_slice(&[0x00, 0x07]);
        v[16..18].copy_from_slice(&[0x08, 0x00]);
        v[18] = 0x45;
        v[18 + 9] = 6;
        assert_eq!(
            PacketType::parse(&v).0,
            PacketType::L2_ETHER_VLAN | PacketType::L3_IPV4 | PacketType::L4_TCP
        );
    }

    proptest::proptest! {
        /// The untagged-IPv4 shortcut answers as the general walk does, for any bytes after
        /// an IPv4 EtherType (any IHL, flags, protocol and length, the header cut anywhere).
        #[test]
        fn the_ipv4_shortcut_agrees_with_the_walk(
            head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60),
            ver_ihl in proptest::prelude::any::<u8>(),
            flags in proptest::prelude::any::<u8>(),
            proto in proptest::sample::select(vec![1u8, 6, 17, 58, 132, 47, 0, 255]),
            cut in 0usize..80,
        ) {
            let mut f = vec![0u8; 14];
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let mut ip = head;
            ip.resize(60, 0);
            (ip[0], ip[6], ip[9]) = (ver_ihl, flags, proto);
            f.extend_from_slice(&ip);
            f.truncate(cut.max(12));
            proptest::prop_assert_eq!(PacketType::parse(&f).0, PacketType::walk(&f).0);
        }
    }
}
