//! TX offloads through the vDPDK device: a guest asks for IPv4/UDP/TCP checksums and TCP
//! segmentation in its descriptors; host-mux performs them (the backend's hardware for
//! checksums when it has them, software otherwise) and refuses requests that do not fit.

mod common;

use std::time::Duration;

use common::*;
use vdpdk_core::abi::StatsIndex;
use vdpdk_core::mbuf::TxOffloadInfo;
use vdpdk_core::packet::inet_checksum;
use vdpdk_core::{EthDev, MacAddr, Mbuf, Mempool, OlFlags, RxOffloads, TxOffloads};

/// Eth/IPv4/(TCP|UDP) from the guest to the wire, every checksum zero.
fn frame(src: MacAddr, proto: u8, payload: usize) -> Vec<u8> {
    let l4 = if proto == 6 { 20 } else { 8 };
    let mut f = vec![0u8; 34 + l4 + payload];
    f[0..6].copy_from_slice(&WIRE_MAC.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[8, 0]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + l4 + payload) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&0x0700u16.to_be_bytes());
    f[22] = 64;
    f[23] = proto;
    f[26..34].copy_from_slice(&[10, 9, 0, 2, 10, 9, 0, 1]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    if proto == 6 {
        f[38..42].copy_from_slice(&7000u32.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x18; // PSH | ACK
    } else {
        f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    }
    for (i, b) in f[34 + l4..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    f
}

/// Independent check of an IPv4 frame's header and L4 checksums.
fn checksums_ok(f: &[u8]) -> bool {
    let mut ph = f[26..34].to_vec();
    ph.extend_from_slice(&[0, f[23]]);
    ph.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
    ph.extend_from_slice(&f[34..]);
    inet_checksum(&f[14..34]) == 0 && inet_checksum(&ph) == 0
}

fn mbuf(pool: &Mempool, f: &[u8], flags: OlFlags, l4_len: u8, mss: u16) -> Mbuf {
    let mut m = pool.alloc_packet(f).unwrap();
    m.ol_flags = flags;
    m.tx_offload = TxOffloadInfo {
        l2_len: 14,
        l3_len: 20,
        l4_len,
        tso_segsz: mss,
    };
    m
}

#[test]
fn guests_get_checksums_and_tcp_segmentation_done_by_host_mux() {
    let dir = TempDir::new("offload");
    let gmac = mac(0x0f);
    let (mux, mut wire, mut port) = mux_with_guest(&dir, gmac);
    let info = port.info();
    let offered = TxOffloads::IPV4_CKSUM
        | TxOffloads::UDP_CKSUM
        | TxOffloads::TCP_CKSUM
        | TxOffloads::TCP_TSO;
    assert_eq!(info.tx_offload_capa, offered);
    assert_eq!(
        info.rx_offload_capa,
        RxOffloads::empty(),
        "the pair backend reports no RX checksum status"
    );
    // Buffers big enough for a 10 KB super-frame.
    let pool = Mempool::new("g", 256, 16384).unwrap();
    port.configure(&vdpdk_core::DevConfig {
        nb_rx_queues: 1,
        nb_tx_queues: 1,
        tx_offloads: offered,
        ..Default::default()
    })
    .unwrap();
    port.rx_queue_setup(0, 64, &pool).unwrap();
    port.tx_queue_setup(0, 64).unwrap();
    port.start().unwrap();
    let mut tx = port.take_tx_queue(0).unwrap();
    let csum = OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM;

    // Checksums: UDP and TCP frames leave with both checksums right, payload untouched.
    let udp = frame(gmac, 17, 300);
    let tcp = frame(gmac, 6, 500);
    let mut v = vec![
        mbuf(&pool, &udp, csum | OlFlags::TX_UDP_CKSUM, 8, 0),
        mbuf(&pool, &tcp, csum | OlFlags::TX_TCP_CKSUM, 20, 0),
    ];
    assert_eq!(tx.tx_burst(&mut v), 2);
    let got = wire.recv(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2);
    for (g, sent, hdrs) in [(&got[0], &udp, 42), (&got[1], &tcp, 54)] {
        assert!(checksums_ok(g), "checksums filled");
        assert_eq!(&g[hdrs..], &sent[hdrs..], "payload untouched");
    }

    // TSO: a 10,000-byte TCP payload at MSS 1448 becomes 7 segments.
    let big = frame(gmac, 6, 10_000);
    let mut v = vec![mbuf(
        &pool,
        &big,
        csum | OlFlags::TX_TCP_CKSUM | OlFlags::TX_TCP_SEG,
        20,
        1448,
    )];
    assert_eq!(tx.tx_burst(&mut v), 1);
    let segs = wire.recv(7, Duration::from_secs(10));
    assert_eq!(segs.len(), 7);
    let mut payload = Vec::new();
    for (k, s) in segs.iter().enumerate() {
        assert!(checksums_ok(s), "segment {k}");
        let plen = s.len() - 54;
        assert_eq!(plen, if k < 6 { 1448 } else { 10_000 - 6 * 1448 });
        assert_eq!(u16::from_be_bytes([s[16], s[17]]) as usize, 40 + plen);
        assert_eq!(
            u16::from_be_bytes([s[18], s[19]]),
            0x0700 + k as u16,
            "IP id"
        );
        let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
        assert_eq!(seq, 7000 + (k * 1448) as u32);
        assert_eq!(s[47] & 0x08 != 0, k == 6, "PSH only on the last");
        payload.extend_from_slice(&s[54..]);
    }
    assert_eq!(payload, big[54..].to_vec(), "the payload reassembles");
    let tso: u64 = mux.pollers().iter().map(|p| p.tso_segments).sum();
    assert_eq!(tso, 7);

    // Requests that do not fit are refused and counted, and nothing leaves for them: a TCP
    // header of 8 bytes, an MSS under 256, a super-frame without segmentation, an L4 checksum
    // without an IP version.
    let mut v = vec![
        mbuf(&pool, &tcp, csum | OlFlags::TX_TCP_CKSUM, 8, 0),
        mbuf(&pool, &big, csum | OlFlags::TX_TCP_SEG, 20, 100),
        mbuf(&pool, &big, csum | OlFlags::TX_TCP_CKSUM, 20, 0),
        mbuf(&pool, &udp, OlFlags::TX_UDP_CKSUM, 8, 0),
    ];
    assert_eq!(tx.tx_burst(&mut v), 4);
    assert!(wire.recv(1, Duration::from_millis(500)).is_empty());
    let g = &mux.guests()[0];
    assert_eq!(g.stats[StatsIndex::TxBadDesc as usize], 4, "{g:?}");

    // Requests wider than the descriptor's fields never reach the host: the driver refuses
    // and counts them (a segment size over 14 bits, an IP header over 511 bytes), next to
    // the host's four refusals it learns of when it takes their descriptors back.
    let tso = csum | OlFlags::TX_TCP_CKSUM | OlFlags::TX_TCP_SEG;
    let mut wide_l3 = mbuf(&pool, &tcp, csum | OlFlags::TX_TCP_CKSUM, 20, 0);
    wide_l3.tx_offload.l3_len = 600;
    let mut v = vec![mbuf(&pool, &big, tso, 20, 20_000), wide_l3];
    assert_eq!(tx.tx_burst(&mut v), 2);
    assert!(wire.recv(1, Duration::from_millis(500)).is_empty());
    // An empty burst takes back what the host finished, and with it its refusals.
    assert_eq!(tx.tx_burst(&mut Vec::new()), 0);
    assert_eq!(port.stats().oerrors, 4 + 2);
    let g = &mux.guests()[0];
    assert_eq!(g.stats[StatsIndex::TxBadDesc as usize], 4, "{g:?}");
    drop(tx);
}
