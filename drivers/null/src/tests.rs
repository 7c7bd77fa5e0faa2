use vdpdk_core::packet::udp_frame;
use vdpdk_core::{ethdev::start_single_queue, DevConfig, EthDev, MacAddr, Mbuf, Mempool};

use crate::null_port;

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x20]);

#[test]
fn tx_consumes_counts_and_frees_every_frame() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-tx", 64, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (_rx, mut tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();
    let frame = udp_frame(PEER, MAC, 1, 100);
    let mut pkts: Vec<Mbuf> = (0..10)
        .map(|_| pool.alloc_packet(&frame).unwrap())
        .collect();
    assert_eq!(pool.available(), 54);
    assert_eq!(tx.tx_burst(&mut pkts), 10);
    assert!(pkts.is_empty());
    assert_eq!(
        pool.available(),
        64,
        "every consumed buffer went back to its pool"
    );
    assert_eq!(wire.sunk(), (10, 1000));
    let st = port.stats();
    assert_eq!((st.opackets, st.obytes), (10, 1000));
}

#[test]
fn rx_hands_out_intact_copies_only_while_a_source_is_set() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-rx", 64, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();
    let mut out = Vec::new();
    assert_eq!(rx.rx_burst(&mut out, 32), 0, "no source, no frames");
    let frame = udp_frame(MAC, PEER, 7, 64);
    wire.set_source(&[&frame]);
    assert_eq!(rx.rx_burst(&mut out, 32), 32);
    for m in &out {
        assert_eq!(m.data(), &frame[..]);
        assert_eq!(m.packet_type, vdpdk_core::PacketType::parse(&frame));
    }
    Mempool::free_bulk(&mut out);
    wire.stop_source();
    assert_eq!(rx.rx_burst(&mut out, 32), 0, "the source stopped");
    assert_eq!(port.stats().ipackets, 32);
}

#[test]
fn rx_counts_an_empty_pool_and_refuses_a_source_larger_than_a_buffer() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-small", 8, 256).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();
    let mut out = Vec::new();
    wire.set_source(&[udp_frame(MAC, PEER, 1, 64)]);
    assert_eq!(rx.rx_burst(&mut out, 32), 8, "the pool has 8 buffers");
    assert_eq!(port.stats().rx_nombuf, 24);
    Mempool::free_bulk(&mut out);
    wire.set_source(&[udp_frame(MAC, PEER, 1, 1500)]);
    assert_eq!(rx.rx_burst(&mut out, 4), 0);
    assert!(out.is_empty());
    assert_eq!(pool.available(), 8, "refused buffers went back to the pool");
    assert_eq!(port.stats().ierrors, 4);
}

#[test]
fn lifecycle_is_checked_like_any_port() {
    let (mut port, _wire) = null_port(MAC);
    let pool = Mempool::new("null-life", 8, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    assert!(port.start().is_err(), "not configured");
    port.configure(&DevConfig {
        nb_rx_queues: 1,
        nb_tx_queues: 1,
        ..Default::default()
    })
    .unwrap();
    assert!(port.rx_queue_setup(0, 0, &pool).is_err(), "0 descriptors");
    assert!(
        port.rx_queue_setup(1, 64, &pool).is_err(),
        "queue 1 not configured"
    );
    port.rx_queue_setup(0, 64, &pool).unwrap();
    port.tx_queue_setup(0, 64).unwrap();
    port.start().unwrap();
    let rx = port.take_rx_queue(0).unwrap();
    assert!(port.take_rx_queue(0).is_err(), "taken twice");
    assert!(port.stop().is_err(), "a queue is still in use");
    drop(rx);
    port.stop().unwrap();
}

#[test]
fn rx_cycles_through_several_source_frames() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-rr", 64, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| udp_frame(MAC, PEER, i, 60 + i as usize))
        .collect();
    wire.set_source(&frames);
    let mut out = Vec::new();
    assert_eq!(rx.rx_burst(&mut out, 4), 4);
    assert_eq!(rx.rx_burst(&mut out, 3), 3);
    for (i, m) in out.iter().enumerate() {
        assert_eq!(m.data(), &frames[i % 3][..], "frame {i}");
    }
    assert_eq!(port.stats().ibytes, (60 + 61 + 62) * 2 + 60);
    Mempool::free_bulk(&mut out);
}
