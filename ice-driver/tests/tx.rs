//! LAN TX through the scheduler and add_txqs, and two model cards cabled back to back.

use std::sync::Arc;

use ice_driver::IceDevice;
use ice_model::pci::ModelPci;
use ice_model::{E810Model, ModelConfig};
use vdpdk_core::packet::{udp_frame, Digest};
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue, TxQueue};

fn send(tx: &mut dyn TxQueue, pool: &Mempool, frames: &[Vec<u8>]) {
    let mut batch: Vec<Mbuf> = Vec::new();
    for chunk in frames.chunks(32) {
        for f in chunk {
            let mut m = pool.alloc().expect("pool");
            m.copy_from(f).unwrap();
            batch.push(m);
        }
        while !batch.is_empty() {
            tx.tx_burst(&mut batch);
        }
    }
}

#[test]
fn tx_queue_is_created_through_the_scheduler_and_frames_leave_intact() {
    let m = E810Model::shared(ModelConfig::default());
    let mut ice = IceDevice::probe(Arc::new(ModelPci::new(m.clone()))).unwrap();
    let mut tx = ice.setup_tx_queue(0, 256).unwrap();
    let seen = m.lock().commands.clone();
    for op in [0x0210u16, 0x0412, 0x0400, 0x040F, 0x0401, 0x0C30] {
        assert!(
            seen.contains_key(&op),
            "opcode {op:#06x} never sent: {seen:?}"
        );
    }
    assert_eq!(
        seen[&0x0401], 6,
        "one node per layer from the entry point (2) to the queue groups (7)"
    );
    let pool = Mempool::new("tx", 2048, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let frames: Vec<Vec<u8>> = (0..1000)
        .map(|s| {
            udp_frame(
                MacAddr::BROADCAST,
                MacAddr([2, 0, 0, 0, 0, 1]),
                s,
                60 + (s as usize % 1400),
            )
        })
        .collect();
    send(&mut tx, &pool, &frames);
    let out = m.lock().take_outbox();
    assert_eq!(out, frames, "every frame left the port intact and in order");
    // Completed descriptors are reclaimed: after one more burst, nearly every buffer is back.
    send(&mut tx, &pool, &frames[..1]);
    assert!(
        pool.available() >= 2048 - 2,
        "buffers reclaimed: {}",
        pool.available()
    );
    assert!(
        ice.setup_tx_queue(0, 100).is_err(),
        "ring sizes are checked"
    );
}

#[test]
fn two_cards_back_to_back_pass_frames_both_ways() {
    let (pa, pb) = ModelPci::back_to_back(
        ModelConfig {
            mac: MacAddr([0x00, 0x1b, 0x21, 0, 0, 0xa]),
            ..Default::default()
        },
        ModelConfig {
            mac: MacAddr([0x00, 0x1b, 0x21, 0, 0, 0xb]),
            ..Default::default()
        },
    );
    let mut a = IceDevice::probe(pa).unwrap();
    let mut b = IceDevice::probe(pb).unwrap();
    assert!(a.link_up().unwrap().up && b.link_up().unwrap().up);
    let pool = Mempool::new("b2b", 4096, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut a_rx, mut a_tx) = (
        a.setup_rx_queue(0, 512, &pool).unwrap(),
        a.setup_tx_queue(0, 512).unwrap(),
    );
    let (mut b_rx, mut b_tx) = (
        b.setup_rx_queue(0, 512, &pool).unwrap(),
        b.setup_tx_queue(0, 512).unwrap(),
    );
    let (ma, mb) = (a.info().mac, b.info().mac);
    let pairs: [(&mut dyn TxQueue, &mut dyn RxQueue, MacAddr, MacAddr); 2] = [
        (&mut a_tx, &mut b_rx, ma, mb),
        (&mut b_tx, &mut a_rx, mb, ma),
    ];
    for (tx, rx, src, dst) in pairs {
        let frames: Vec<Vec<u8>> = (0..300)
            .map(|s| udp_frame(dst, src, s, 64 + s as usize))
            .collect();
        let mut got = Vec::new();
        let mut out = Vec::new();
        for chunk in frames.chunks(100) {
            send(tx, &pool, chunk);
            while rx.rx_burst(&mut out, 32) > 0 {
                got.extend(out.drain(..).map(|m| m.data().to_vec()));
            }
        }
        let (mut dg, mut de) = (Digest::default(), Digest::default());
        got.iter().for_each(|f| dg.add(f));
        frames.iter().for_each(|f| de.add(f));
        assert_eq!(got.len(), 300);
        assert_eq!(dg, de, "byte-identical, in order");
    }
}

#[test]
fn port_counters_are_40_bit_and_survive_a_wrap() {
    let m = E810Model::shared(ModelConfig::default());
    let mut ice = IceDevice::probe(Arc::new(ModelPci::new(m.clone()))).unwrap();
    let pool = Mempool::new("st", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rx = ice.setup_rx_queue(0, 256, &pool).unwrap();
    // GLPRT_GORCL (0x380000) 100 bytes before the 40-bit wrap.
    m.lock().set_port_counter(0x380000, (1 << 40) - 100);
    let mut c = ice.hw_counters().unwrap();
    let uc = udp_frame(
        MacAddr([2, 0, 0, 0, 0, 9]),
        MacAddr([2, 0, 0, 0, 0, 1]),
        1,
        60,
    );
    let bc = udp_frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), 2, 100);
    for f in [&uc, &uc, &bc] {
        assert!(m.lock().receive_on(0, f));
    }
    ice.update_counters(&mut c).unwrap();
    assert_eq!(
        c.get("rx_bytes"),
        Some(64 + 64 + 104),
        "CRC included, wrap handled"
    );
    assert_eq!(c.get("rx_unicast"), Some(2));
    assert_eq!(c.get("rx_broadcast"), Some(1));
    let mut out = Vec::new();
    assert_eq!(rx.rx_burst(&mut out, 32), 3);
}

#[test]
fn model_cabled_to_the_pair_backend_passes_frames_both_ways() {
    use ice_model::cable::EthDevCable;
    use vdpdk_core::ethdev::start_single_queue;
    let m = E810Model::shared(ModelConfig::default());
    let pci = Arc::new(ModelPci::new(m.clone()));
    let (card_end, mut far) = vdpdk_pair::pair(
        MacAddr([2, 0, 0, 0, 0, 1]),
        MacAddr([2, 0, 0, 0, 0, 2]),
        1,
        1024,
    );
    pci.set_wire(EthDevCable::connect(m.clone(), Box::new(card_end)).unwrap());
    let mut ice = IceDevice::probe(pci).unwrap();
    let pool = Mempool::new("cable", 2048, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rx = ice.setup_rx_queue(0, 256, &pool).unwrap();
    let mut tx = ice.setup_tx_queue(0, 256).unwrap();
    let (mut far_rx, mut far_tx) = start_single_queue(&mut far, &pool, 512, false).unwrap();
    let out_frames: Vec<Vec<u8>> = (0..50)
        .map(|s| {
            udp_frame(
                MacAddr([2, 0, 0, 0, 0, 2]),
                MacAddr([2, 0, 0, 0, 0, 9]),
                s,
                100,
            )
        })
        .collect();
    send(&mut tx, &pool, &out_frames);
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let t0 = std::time::Instant::now();
    while got.len() < 50 && t0.elapsed() < std::time::Duration::from_secs(5) {
        far_rx.rx_burst(&mut buf, 32);
        got.extend(buf.drain(..).map(|m| m.data().to_vec()));
    }
    assert_eq!(got, out_frames, "driver -> model -> pair");
    let in_frames: Vec<Vec<u8>> = (0..50)
        .map(|s| {
            udp_frame(
                MacAddr([0, 0x1b, 0x21, 0xe8, 0x10, 0]),
                MacAddr([2, 0, 0, 0, 0, 2]),
                s,
                90,
            )
        })
        .collect();
    send(&mut *far_tx, &pool, &in_frames);
    let mut got = Vec::new();
    let t0 = std::time::Instant::now();
    while got.len() < 50 && t0.elapsed() < std::time::Duration::from_secs(5) {
        rx.rx_burst(&mut buf, 32);
        got.extend(buf.drain(..).map(|m| m.data().to_vec()));
    }
    assert_eq!(got, in_frames, "pair -> model -> driver");
}

#[test]
fn stopping_the_port_disables_its_tx_queues() {
    use ice_driver::IcePort;
    use vdpdk_core::ethdev::start_single_queue;
    use vdpdk_core::EthDev;
    let m = E810Model::shared(ModelConfig::default());
    let mut port = IcePort::open_with(
        Arc::new(ModelPci::new(m.clone())),
        ice_driver::DdpSource::None,
    )
    .unwrap();
    let pool = Mempool::new("stop", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (rx, tx) = start_single_queue(&mut port, &pool, 128, false).unwrap();
    assert!(m.lock().tx_queue_enabled(0));
    drop((rx, tx));
    port.stop().unwrap();
    assert!(!m.lock().tx_queue_enabled(0), "dis_txqs reached the device");
    assert_eq!(m.lock().commands[&0x0C31], 1);
}
