//! Tests of the wire layer: views refuse short buffers, tags and fragments parse right, and
//! (proptest) any bytes parse without panicking while built frames parse back to what was built.

use super::*;
use crate::mac::MacAddr;
use proptest::prelude::*;

/// What a test frame holds; [`build`] makes the bytes, [`expected`] the summary they must parse
/// to (written independently of `parse`).
#[derive(Clone, Debug)]
struct Spec {
    /// VLAN ids, outer first; with two the outer TPID is 802.1ad.
    vlans: Vec<u16>,
    l3: L3Spec,
    /// 6 TCP, 17 UDP, anything else opaque.
    proto: u8,
    ports: (u16, u16),
    payload: usize,
}

#[derive(Clone, Debug)]
enum L3Spec {
    /// An EtherType that is not IP.
    Other(u16),
    /// IPv4 with `opt_words` 32-bit words of options and this flags/offset field.
    Ipv4 { opt_words: u8, flg_off: u16 },
    /// IPv6; `frag` puts a Fragment header with this offset/flags word first.
    Ipv6 { frag: Option<u16> },
}

fn build(s: &Spec) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    for (i, v) in s.vlans.iter().enumerate() {
        let tpid = if i == 0 && s.vlans.len() == 2 {
            ethertype::QINQ
        } else {
            ethertype::VLAN
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(0xa000 | v).to_be_bytes()); // PCP 5
    }
    let l4_len = match s.proto {
        6 => 20,
        17 => 8,
        _ => 0,
    };
    let mut l4 = vec![0u8; l4_len + s.payload];
    if l4_len > 0 {
        l4[0..2].copy_from_slice(&s.ports.0.to_be_bytes());
        l4[2..4].copy_from_slice(&s.ports.1.to_be_bytes());
    }
    if s.proto == 6 {
        l4[12] = 0x50;
    }
    match s.l3 {
        L3Spec::Other(et) => {
            f.extend_from_slice(&et.to_be_bytes());
            f.extend_from_slice(&l4);
        }
        L3Spec::Ipv4 { opt_words, flg_off } => {
            f.extend_from_slice(&ethertype::IPV4.to_be_bytes());
            let hl = 20 + 4 * opt_words as usize;
            let mut ip = vec![0u8; hl];
            let mut v = Ipv4Packet::new_unchecked(&mut ip[..]);
            v.set_version_and_header_len(hl);
            v.set_total_len((hl + l4.len()) as u16);
            v.set_flags_and_offset(flg_off);
            v.set_ttl(64);
            v.set_protocol(s.proto);
            v.fill_checksum();
            f.extend_from_slice(&ip);
            f.extend_from_slice(&l4);
        }
        L3Spec::Ipv6 { frag } => {
            f.extend_from_slice(&ethertype::IPV6.to_be_bytes());
            let mut ip = [0u8; 40];
            let mut v = Ipv6Packet::new_unchecked(&mut ip[..]);
            v.set_version();
            let ext = if frag.is_some() { 8 } else { 0 };
            v.set_payload_len((ext + l4.len()) as u16);
            v.set_next_header(if frag.is_some() { 44 } else { s.proto });
            v.set_hop_limit(64);
            f.extend_from_slice(&ip);
            if let Some(w) = frag {
                f.extend_from_slice(&[s.proto, 0]);
                f.extend_from_slice(&w.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 1]);
            }
            f.extend_from_slice(&l4);
        }
    }
    f
}

fn expected(s: &Spec) -> Summary {
    let l2 = 14 + 4 * s.vlans.len();
    let mut e = Summary {
        l2_len: l2 as u8,
        vlan_ids: [s.vlans.first().copied(), s.vlans.get(1).copied()],
        ..Summary::default()
    };
    let whole_l4 = matches!(s.proto, 6 | 17);
    match s.l3 {
        L3Spec::Other(et) => e.ethertype = et,
        L3Spec::Ipv4 { opt_words, flg_off } => {
            e.ethertype = 0x0800;
            e.l3 = Some(L3::Ipv4);
            e.l4_proto = s.proto;
            e.fragment = flg_off & 0x2000 != 0 || flg_off & 0x1fff != 0;
            if flg_off & 0x1fff == 0 {
                e.l4_offset = Some((l2 + 20 + 4 * opt_words as usize) as u16);
            }
            if !e.fragment && whole_l4 {
                e.ports = Some(s.ports);
            }
        }
        L3Spec::Ipv6 { frag } => {
            e.ethertype = 0x86dd;
            e.l3 = Some(L3::Ipv6);
            e.l4_offset = Some((l2 + 40) as u16);
            match frag {
                Some(w) => {
                    e.l4_proto = 44;
                    e.fragment = w >> 3 != 0 || w & 1 != 0;
                }
                None => {
                    e.l4_proto = s.proto;
                    e.ports = whole_l4.then_some(s.ports);
                }
            }
        }
    }
    e
}

fn spec(l3: L3Spec, proto: u8) -> Spec {
    Spec {
        vlans: vec![],
        l3,
        proto,
        ports: (1234, 80),
        payload: 10,
    }
}

#[test]
fn new_checked_refuses_short_buffers() {
    assert!(EthernetFrame::new_checked(&[0u8; 13][..]).is_none());
    assert!(EthernetFrame::new_checked(&[0u8; 14][..]).is_some());
    assert!(VlanTag::new_checked(&[0u8; 3][..]).is_none());
    assert!(VlanTag::new_checked(&[0u8; 4][..]).is_some());
    let mut ip = [0u8; 24];
    ip[0] = 0x45;
    assert!(Ipv4Packet::new_checked(&ip[..19]).is_none());
    assert!(Ipv4Packet::new_checked(&ip[..20]).is_some());
    ip[0] = 0x46; // 24-byte header
    assert!(Ipv4Packet::new_checked(&ip[..23]).is_none());
    assert!(Ipv4Packet::new_checked(&ip[..]).is_some());
    ip[0] = 0x44; // IHL 4 is shorter than any header
    assert!(Ipv4Packet::new_checked(&ip[..]).is_none());
    assert!(Ipv6Packet::new_checked(&[0u8; 39][..]).is_none());
    assert!(Ipv6Packet::new_checked(&[0u8; 40][..]).is_some());
    assert!(UdpPacket::new_checked(&[0u8; 7][..]).is_none());
    assert!(UdpPacket::new_checked(&[0u8; 8][..]).is_some());
    let mut t = [0u8; 24];
    t[12] = 0x50;
    assert!(TcpPacket::new_checked(&t[..19]).is_none());
    assert!(TcpPacket::new_checked(&t[..20]).is_some());
    t[12] = 0x60; // 24-byte header
    assert!(TcpPacket::new_checked(&t[..23]).is_none());
    assert!(TcpPacket::new_checked(&t[..]).is_some());
    t[12] = 0x40;
    assert!(TcpPacket::new_checked(&t[..]).is_none());
    assert_eq!(parse(&[0u8; 13]), None);
}

#[test]
fn views_read_what_was_written() {
    let mut f = [0u8; 60];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(MacAddr([1, 2, 3, 4, 5, 6]));
    eth.set_src_addr(MacAddr([7, 8, 9, 10, 11, 12]));
    eth.set_ethertype(ethertype::IPV4);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.set_version_and_header_len(20);
    ip.set_src_addr([10, 0, 0, 1].into());
    ip.set_dst_addr([10, 0, 0, 2].into());
    ip.set_protocol(17);
    ip.set_ident(7);
    ip.set_flags_and_offset(0x4000 | 3); // DF, offset 24 bytes
    let eth = EthernetFrame::new_checked(&f[..]).unwrap();
    assert_eq!(eth.dst_addr(), MacAddr([1, 2, 3, 4, 5, 6]));
    assert_eq!(eth.src_addr(), MacAddr([7, 8, 9, 10, 11, 12]));
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.version(), ip.header_len(), ip.ident()), (4, 20, 7));
    assert_eq!(ip.src_addr(), std::net::Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(ip.dst_addr(), std::net::Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!((ip.frag_offset(), ip.more_frags()), (24, false));
    assert!(ip.is_fragment());
}

#[test]
fn one_vlan_tag_and_qinq() {
    let mut s = spec(
        L3Spec::Ipv4 {
            opt_words: 0,
            flg_off: 0,
        },
        17,
    );
    s.vlans = vec![100];
    let p = parse(&build(&s)).unwrap();
    assert_eq!(
        (p.l2_len, p.vlan_ids, p.ethertype),
        (18, [Some(100), None], 0x0800)
    );
    assert_eq!((p.l4_offset, p.ports), (Some(38), Some((1234, 80))));
    s.vlans = vec![10, 20];
    let f = build(&s);
    assert_eq!(&f[12..14], &[0x88, 0xa8], "outer tag is 802.1ad");
    let p = parse(&f).unwrap();
    assert_eq!(p.vlan_ids, [Some(10), Some(20)]);
    assert_eq!((p.l2_len, p.l3_offset(), p.vlan_count()), (22, 22, 2));
    assert_eq!(p.ports, Some((1234, 80)));
    // Two 802.1Q tags (old-style QinQ) parse the same.
    let mut g = f.clone();
    g[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(parse(&g).unwrap().vlan_ids, [Some(10), Some(20)]);
    // A third tag is not peeled: its TPID is the EtherType, and nothing past it is read.
    let mut h = f[..20].to_vec();
    h.extend_from_slice(&[0x81, 0x00, 0, 30]);
    h.extend_from_slice(&f[20..]);
    let p = parse(&h).unwrap();
    assert_eq!((p.ethertype, p.l3, p.l2_len), (0x8100, None, 22));
    // A tag cut short is not peeled either.
    let p = parse(&f[..16]).unwrap();
    assert_eq!(
        (p.ethertype, p.vlan_ids, p.l2_len),
        (0x88a8, [None, None], 14)
    );
}

#[test]
fn ipv4_fragments_first_middle_last() {
    let frag = |flg_off| {
        parse(&build(&spec(
            L3Spec::Ipv4 {
                opt_words: 0,
                flg_off,
            },
            6,
        )))
        .unwrap()
    };
    let whole = frag(0x4000); // DF only: not a fragment
    assert!(!whole.fragment);
    assert_eq!((whole.l4_offset, whole.ports), (Some(34), Some((1234, 80))));
    let first = frag(0x2000); // MF, offset 0
    assert!(
        first.fragment,
        "MF makes a fragment (the old 0x1fff test missed this)"
    );
    assert_eq!(
        first.l4_offset,
        Some(34),
        "the first fragment carries the L4 header"
    );
    assert_eq!(
        first.ports, None,
        "but a fragment is never steered by ports"
    );
    let middle = frag(0x2000 | 185); // MF, offset 1480
    assert!(middle.fragment);
    assert_eq!((middle.l4_offset, middle.ports), (None, None));
    let last = frag(185); // offset 1480, no MF
    assert!(last.fragment);
    assert_eq!((last.l4_offset, last.ports, last.l4_proto), (None, None, 6));
}

#[test]
fn ipv4_options_move_the_l4_header() {
    let p = parse(&build(&spec(
        L3Spec::Ipv4 {
            opt_words: 3,
            flg_off: 0,
        },
        17,
    )))
    .unwrap();
    assert_eq!((p.l4_offset, p.ports), (Some(46), Some((1234, 80))));
}

#[test]
fn ipv6_and_its_fragment_header() {
    let p = parse(&build(&spec(L3Spec::Ipv6 { frag: None }, 6))).unwrap();
    assert_eq!(
        (p.l3, p.l4_proto, p.l4_offset),
        (Some(L3::Ipv6), 6, Some(54))
    );
    assert_eq!((p.ports, p.fragment), (Some((1234, 80)), false));
    let f = build(&spec(L3Spec::Ipv6 { frag: Some(0x0001) }, 17)); // M, offset 0
    assert!(parse(&f).unwrap().fragment);
    let f = build(&spec(
        L3Spec::Ipv6 {
            frag: Some(100 << 3),
        },
        17,
    )); // last
    assert!(parse(&f).unwrap().fragment);
    let f = build(&spec(L3Spec::Ipv6 { frag: Some(0) }, 17)); // atomic
    let p = parse(&f).unwrap();
    assert!(!p.fragment);
    assert_eq!(
        (p.l4_proto, p.ports),
        (44, None),
        "extension headers are not followed"
    );
    let v = Ipv6Packet::new_checked(&f[14..]).unwrap();
    assert_eq!(
        (v.version(), v.hop_limit(), v.payload_len()),
        (6, 64, 8 + 8 + 10)
    );
    // Cut short of its fixed header, the frame is Ethernet only.
    let p = parse(&f[..53]).unwrap();
    assert_eq!((p.ethertype, p.l3), (0x86dd, None));
}

#[test]
fn a_truncated_l4_header_gives_no_ports() {
    let f = build(&spec(
        L3Spec::Ipv4 {
            opt_words: 0,
            flg_off: 0,
        },
        6,
    ));
    let p = parse(&f[..34 + 19]).unwrap();
    assert_eq!((p.l4_offset, p.ports), (Some(34), None));
    let p = parse(&f[..34 + 20]).unwrap();
    assert_eq!(p.ports, Some((1234, 80)));
}

#[test]
fn tcp_layout_sees_through_tags_and_refuses_fragments() {
    let mut s = spec(
        L3Spec::Ipv4 {
            opt_words: 0,
            flg_off: 0,
        },
        6,
    );
    s.vlans = vec![1, 2];
    let t = TcpLayout::parse(&build(&s)).unwrap();
    assert_eq!((t.l3, t.l4, t.payload, t.ipv6), (22, 42, 62, false));
    s.l3 = L3Spec::Ipv4 {
        opt_words: 0,
        flg_off: 0x2000,
    };
    assert_eq!(
        TcpLayout::parse(&build(&s)),
        None,
        "a fragment is not segmented"
    );
    s.l3 = L3Spec::Ipv6 { frag: None };
    let t = TcpLayout::parse(&build(&s)).unwrap();
    assert_eq!((t.l3, t.l4, t.payload, t.ipv6), (22, 62, 82, true));
}

fn any_spec() -> impl Strategy<Value = Spec> {
    let l3 = prop_oneof![
        any::<u16>()
            .prop_filter("not IP or a TPID", |e| ![0x0800, 0x86dd, 0x8100, 0x88a8]
                .contains(e))
            .prop_map(L3Spec::Other),
        (0u8..=10, any::<u16>())
            .prop_map(|(opt_words, flg_off)| L3Spec::Ipv4 { opt_words, flg_off }),
        proptest::option::of(any::<u16>()).prop_map(|frag| L3Spec::Ipv6 { frag }),
    ];
    (
        proptest::collection::vec(0u16..4096, 0..=2),
        l3,
        // 44 is IPv6's fragment header, which `L3Spec::Ipv6::frag` stands for: as a bare
        // next header with bytes that happen to follow, the frame is a fragment after all.
        prop_oneof![
            Just(6u8),
            Just(17u8),
            any::<u8>().prop_filter("44 is spec'd by frag", |p| *p != 44)
        ],
        any::<(u16, u16)>(),
        0usize..64,
    )
        .prop_map(|(vlans, l3, proto, ports, payload)| Spec {
            vlans,
            l3,
            proto,
            ports,
            payload,
        })
}

proptest! {
    #[test]
    fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = crate::offload::PacketType::parse(&bytes);
        let _ = TcpLayout::parse(&bytes);
        if let Some(s) = parse(&bytes) {
            prop_assert!(s.l3_offset() <= bytes.len());
            if let Some(o) = s.l4_offset {
                prop_assert!(o as usize <= bytes.len());
            }
            let rule = crate::flow::FlowRule::to_queue(vec![], 0);
            let _ = rule.matches_parsed(&bytes, &s);
        }
    }

    #[test]
    fn a_built_frame_parses_to_what_was_built(s in any_spec()) {
        prop_assert_eq!(parse(&build(&s)), Some(expected(&s)));
    }

    #[test]
    fn every_prefix_of_a_built_frame_parses(s in any_spec(), cut in 0usize..120) {
        let f = build(&s);
        let f = &f[..cut.min(f.len())];
        prop_assert_eq!(parse(f).is_some(), f.len() >= 14);
    }
}

proptest! {
    /// What parse sees of a frame lies in its first PARSE_REACH bytes: VLAN-tagged or not,
    /// IPv4 with any IHL or IPv6, TCP with any data offset, the rest random.
    #[test]
    fn parse_looks_no_further_than_its_reach(
        mut bytes in proptest::collection::vec(any::<u8>(), 200..400),
        tags in 0usize..=2,
        v6 in any::<bool>(),
        tcp in any::<bool>(),
    ) {
        let mut at = 12;
        for _ in 0..tags {
            bytes[at..at + 2].copy_from_slice(&[0x81, 0x00]);
            at += 4;
        }
        let (ethertype, l4_at) = match v6 {
            false => ([0x08, 0x00], at + 2 + (bytes[at + 2] & 0xf) as usize * 4),
            true => ([0x86, 0xdd], at + 2 + 40),
        };
        bytes[at..at + 2].copy_from_slice(&ethertype);
        let proto = if tcp { 6 } else { 17 };
        match v6 {
            false => bytes[at + 2 + 9] = proto,
            true => bytes[at + 2 + 6] = proto,
        }
        if !v6 {
            bytes[at + 2 + 6..at + 2 + 8].fill(0); // not a fragment
        }
        prop_assume!(l4_at + 60 < bytes.len());
        let whole = parse(&bytes);
        prop_assert_eq!(whole, parse(&bytes[..PARSE_REACH]));
        prop_assert_eq!(
            crate::offload::PacketType::parse(&bytes),
            crate::offload::PacketType::parse(&bytes[..PARSE_REACH])
        );
    }
}
