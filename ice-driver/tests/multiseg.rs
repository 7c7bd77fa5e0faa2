//! Multi-buffer packets: jumbo frames leave as mbuf chains (one data descriptor per segment)
//! and arrive as chains on a queue with scatter (one RX descriptor per buffer, EOF on the
//! last); a port refuses an MTU its buffers cannot hold and packets the hardware cannot send.

use std::sync::Arc;

use ice_driver::{DdpSource, IcePort};
use ice_model::pci::{ModelCable, ModelPci};
use ice_model::{E810Model, ModelConfig};
use parking_lot::Mutex;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{
    DevConfig, Error, EthDev, MacAddr, Mbuf, Mempool, RxOffloads, RxQueue, TxOffloads, TxQueue,
    DEFAULT_BUF_SIZE,
};

const MAC_A: MacAddr = MacAddr([0x00, 0x1b, 0x21, 0, 0, 0xa]);
const MAC_B: MacAddr = MacAddr([0x00, 0x1b, 0x21, 0, 0, 0xb]);

/// Two modelled cards cabled back to back, as ports (the models kept for their counters).
fn cards() -> (IcePort, IcePort, Arc<Mutex<E810Model>>) {
    let cfg = |mac| ModelConfig {
        mac,
        ..Default::default()
    };
    let (ma, mb) = (E810Model::shared(cfg(MAC_A)), E810Model::shared(cfg(MAC_B)));
    let (pa, pb) = (
        Arc::new(ModelPci::new(ma.clone())),
        Arc::new(ModelPci::new(mb.clone())),
    );
    pa.set_wire(Arc::new(ModelCable(mb.clone())));
    pb.set_wire(Arc::new(ModelCable(ma)));
    let a = IcePort::open_with(pa, DdpSource::None).unwrap();
    let b = IcePort::open_with(pb, DdpSource::None).unwrap();
    (a, b, mb)
}

fn start(
    port: &mut IcePort,
    pool: &Mempool,
    mtu: u16,
    rx_offloads: RxOffloads,
) -> (Box<dyn RxQueue>, Box<dyn TxQueue>) {
    port.configure(&DevConfig {
        nb_rx_queues: 1,
        nb_tx_queues: 1,
        rx_offloads,
        tx_offloads: TxOffloads::MULTI_SEGS,
        mtu,
        ..Default::default()
    })
    .unwrap();
    port.rx_queue_setup(0, 256, pool).unwrap();
    port.tx_queue_setup(0, 256).unwrap();
    port.start().unwrap();
    (
        port.take_rx_queue(0).unwrap(),
        port.take_tx_queue(0).unwrap(),
    )
}

fn receive_all(rx: &mut dyn RxQueue) -> Vec<Mbuf> {
    let mut got = Vec::new();
    while rx.rx_burst(&mut got, 32) > 0 {}
    got
}

#[test]
fn jumbo_frames_travel_as_chains_both_ways() {
    let (mut a, mut b, _) = cards();
    let pool = Mempool::new("jumbo", 4096, DEFAULT_BUF_SIZE).unwrap(); // 2048 B per buffer
    let (_a_rx, mut a_tx) = start(&mut a, &pool, 9000, RxOffloads::SCATTER);
    let (mut b_rx, _b_tx) = start(&mut b, &pool, 9000, RxOffloads::SCATTER);
    let sizes = [60usize, 1514, 2048, 2049, 4096, 6000, 9018];
    let frames: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &len)| udp_frame(MAC_B, MAC_A, k as u64, len))
        .collect();
    let mut batch: Vec<Mbuf> = frames
        .iter()
        .map(|f| pool.alloc_packet(f).unwrap())
        .collect();
    assert_eq!(batch[6].nb_segs(), 5, "9018 B in 2048 B buffers");
    assert_eq!(a_tx.tx_burst(&mut batch), frames.len());

    let got = receive_all(b_rx.as_mut());
    assert_eq!(got.len(), frames.len(), "every frame arrived");
    for ((m, f), &len) in got.iter().zip(&frames).zip(&sizes) {
        assert_eq!(m.pkt_len(), len);
        assert_eq!(m.nb_segs(), len.div_ceil(2048), "one buffer per 2048 B");
        assert!(m.segments().take(m.nb_segs() - 1).all(|s| s.len() == 2048));
        assert_eq!(&m.to_vec(), f, "byte-identical");
        assert!(
            m.ol_flags.contains(
                vdpdk_core::OlFlags::RX_L4_CKSUM_GOOD | vdpdk_core::OlFlags::RX_IP_CKSUM_GOOD
            ),
            "checksum status comes from the last descriptor of the chain"
        );
    }
    let total: usize = sizes.iter().sum();
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.opackets, sa.obytes), (7, total as u64));
    assert_eq!((sb.ipackets, sb.ibytes, sb.ierrors), (7, total as u64, 0));
    drop(got);
    drop(batch);
}

#[test]
fn frames_over_the_mtu_are_dropped_by_the_device() {
    let (mut a, mut b, model_b) = cards();
    let pool = Mempool::new("mtu", 2048, DEFAULT_BUF_SIZE).unwrap();
    let (_a_rx, mut a_tx) = start(&mut a, &pool, 9000, RxOffloads::SCATTER);
    // The receiver keeps the default 1500 MTU: RXMAX is one 1526 B frame.
    let (mut b_rx, _b_tx) = start(&mut b, &pool, 0, RxOffloads::empty());
    let mut batch = vec![
        pool.alloc_packet(&udp_frame(MAC_B, MAC_A, 1, 3000))
            .unwrap(),
        pool.alloc_packet(&udp_frame(MAC_B, MAC_A, 2, 1514))
            .unwrap(),
    ];
    assert_eq!(a_tx.tx_burst(&mut batch), 2);
    let got = receive_all(b_rx.as_mut());
    assert_eq!(got.len(), 1, "only the frame within the MTU");
    assert_eq!(got[0].pkt_len(), 1514);
    assert!(!got[0].is_chained());
    assert_eq!(model_b.lock().stats.rx_oversize, 1);
    assert_eq!(b.stats().ierrors, 0, "the driver saw no broken chain");
}

#[test]
fn an_mtu_the_buffers_cannot_hold_is_refused_at_queue_setup() {
    let (mut a, _, _) = cards();
    let pool = Mempool::new("small", 512, DEFAULT_BUF_SIZE).unwrap();
    let max = a.info().max_mtu;
    assert_eq!(
        max, 9702,
        "9728 B frames less Ethernet, CRC and two VLAN tags"
    );
    let conf = |mtu, rx_offloads| DevConfig {
        nb_rx_queues: 1,
        nb_tx_queues: 1,
        mtu,
        rx_offloads,
        ..Default::default()
    };
    let err = a
        .configure(&conf(max + 1, RxOffloads::empty()))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArg(_)), "{err}");
    assert!(a.configure(&conf(67, RxOffloads::empty())).is_err());

    a.configure(&conf(9000, RxOffloads::empty())).unwrap();
    let err = a.rx_queue_setup(0, 256, &pool).unwrap_err().to_string();
    assert!(err.contains("SCATTER"), "the error names the fix: {err}");
    // 1 KiB buffers cannot hold 9026 B even in five.
    let tiny = Mempool::new("tiny", 512, 1024 + 128).unwrap();
    a.configure(&conf(9000, RxOffloads::SCATTER)).unwrap();
    let err = a.rx_queue_setup(0, 256, &tiny).unwrap_err().to_string();
    assert!(err.contains("5 buffers"), "{err}");
    a.rx_queue_setup(0, 256, &pool).unwrap();
}

#[test]
fn packets_the_hardware_cannot_send_are_dropped_and_counted() {
    let (mut a, mut b, _) = cards();
    let pool = Mempool::new("bad", 2048, 256).unwrap(); // 128 B per buffer
    let big = Mempool::new("big", 2048, DEFAULT_BUF_SIZE).unwrap();
    let (_a_rx, mut a_tx) = start(&mut a, &big, 0, RxOffloads::empty());
    let (mut b_rx, _b_tx) = start(&mut b, &big, 0, RxOffloads::empty());
    let good = udp_frame(MAC_B, MAC_A, 7, 1000);
    let nine_segs = pool
        .alloc_packet(&udp_frame(MAC_B, MAC_A, 1, 1100))
        .unwrap();
    assert_eq!(nine_segs.nb_segs(), 9);
    let mut empty_seg = pool.alloc_packet(&udp_frame(MAC_B, MAC_A, 2, 200)).unwrap();
    empty_seg.chain(pool.alloc().unwrap());
    let mut batch = vec![
        nine_segs,
        pool.alloc_packet(&good).unwrap(), // 8 segments: the most allowed
        empty_seg,
    ];
    assert_eq!(a_tx.tx_burst(&mut batch), 3, "refused packets are taken");
    assert!(batch.is_empty());
    let got = receive_all(b_rx.as_mut());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to_vec(), good);
    let s = a.stats();
    assert_eq!((s.opackets, s.oerrors), (1, 2));
    drop(got);
    // Refused buffers went back to their pool, and the ring keeps working.
    for _ in 0..100 {
        let mut v = vec![pool.alloc_packet(&good).unwrap()];
        assert_eq!(a_tx.tx_burst(&mut v), 1);
        drop(receive_all(b_rx.as_mut()));
    }
    let mut flush = vec![big.alloc_packet(&good).unwrap()];
    a_tx.tx_burst(&mut flush);
    drop(receive_all(b_rx.as_mut()));
    assert!(pool.available() >= 2048 - 2 * 8, "{}", pool.available());
}
