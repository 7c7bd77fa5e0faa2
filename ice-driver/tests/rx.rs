//! LAN RX: the model writes frames into the driver's RX ring with flex write-back; the driver
//! delivers them intact with packet type and checksum status, and recycles descriptors.

use std::sync::Arc;

use ice_driver::IceDevice;
use ice_model::pci::ModelPci;
use ice_model::{E810Model, ModelConfig};
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mempool, OlFlags, PacketType, RxQueue};

#[test]
fn frames_arrive_intact_with_ptype_and_checksum_status() {
    let m = E810Model::shared(ModelConfig::default());
    let mut ice = IceDevice::probe(Arc::new(ModelPci::new(m.clone()))).unwrap();
    let pool = Mempool::new("rx", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rxq = ice.setup_rx_queue(3, 256, &pool).unwrap();
    let dst = MacAddr([0x00, 0x1b, 0x21, 0xe8, 0x10, 0x00]);
    let src = MacAddr([0x02, 0, 0, 0, 0, 1]);
    let good = udp_frame(dst, src, 7, 200);
    let mut bad_ip = udp_frame(dst, src, 8, 200);
    bad_ip[24] ^= 0xff; // corrupt the IPv4 header checksum
    let mut arp = vec![0u8; 60];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    for f in [&good, &bad_ip, &arp] {
        assert!(m.lock().receive_on(3, f));
    }
    let mut out = Vec::new();
    assert_eq!(rxq.rx_burst(&mut out, 32), 3);
    assert_eq!(out[0].data(), &good[..]);
    assert_eq!(
        out[0].packet_type.0,
        PacketType::L2_ETHER | PacketType::L3_IPV4 | PacketType::L4_UDP
    );
    assert!(out[0]
        .ol_flags
        .contains(OlFlags::RX_IP_CKSUM_GOOD | OlFlags::RX_L4_CKSUM_GOOD));
    assert_eq!(out[1].data(), &bad_ip[..]);
    assert!(out[1].ol_flags.contains(OlFlags::RX_IP_CKSUM_BAD));
    assert_eq!(out[2].packet_type.0, PacketType::L2_ETHER_ARP);
    assert!(!out[2]
        .ol_flags
        .intersects(OlFlags::RX_IP_CKSUM_GOOD | OlFlags::RX_IP_CKSUM_BAD));
    assert_eq!(rxq.rx_burst(&mut out, 32), 0);
    // A disabled queue drops (counted), it does not write anywhere.
    assert!(!m.lock().receive_on(4, &good));
    assert_eq!(m.lock().stats.rx_dropped, 1);
}

/// The device stops a queue only some reads of QRX_CTRL after the request, receiving
/// meanwhile (as hardware finishes in-flight DMA). A queue being dropped waits for QENA_STAT to
/// clear before its ring and buffers go: a driver that did not would leave the device writing
/// into memory it had let go (the model counts that as a DMA fault).
#[test]
fn a_dropped_queue_is_stopped_before_its_memory_goes() {
    let m = E810Model::shared(ModelConfig::default());
    let mut ice = IceDevice::probe(Arc::new(ModelPci::new(m.clone()))).unwrap();
    let pool = Mempool::new("rx", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let f = udp_frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), 1, 64);
    for round in 0..3 {
        let mut rxq = ice.setup_rx_queue(2, 64, &pool).unwrap();
        assert!(m.lock().receive_on(2, &f), "round {round}: the queue runs");
        let mut out = Vec::new();
        assert_eq!(rxq.rx_burst(&mut out, 32), 1);
        drop(out);
        drop(rxq);
        assert!(
            !m.lock().receive_on(2, &f),
            "round {round}: a stopped queue takes nothing"
        );
        let st = m.lock().stats;
        assert_eq!(
            st.rx_dma_faults, 0,
            "round {round}: nothing written after the stop"
        );
        assert_eq!(pool.available(), 1024, "round {round}: every buffer back");
    }
}

#[test]
fn a_full_ring_drops_until_the_driver_returns_descriptors() {
    let m = E810Model::shared(ModelConfig::default());
    let mut ice = IceDevice::probe(Arc::new(ModelPci::new(m.clone()))).unwrap();
    let pool = Mempool::new("rx", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rxq = ice.setup_rx_queue(0, 64, &pool).unwrap();
    let f = |s| udp_frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), s, 64);
    // 63 descriptors are posted (tail = N - 1): the 64th frame is dropped.
    let taken = (0..64).filter(|&s| m.lock().receive_on(0, &f(s))).count();
    assert_eq!(taken, 63);
    assert_eq!(m.lock().stats.rx_dropped, 1);
    let mut out = Vec::new();
    let mut seqs = Vec::new();
    for round in 0..20u64 {
        while rxq.rx_burst(&mut out, 32) > 0 {}
        seqs.extend(
            out.drain(..)
                .map(|m| vdpdk_core::packet::frame_seq(m.data()).unwrap()),
        );
        for s in 0..16 {
            m.lock().receive_on(0, &f(1000 + round * 16 + s));
        }
    }
    while rxq.rx_burst(&mut out, 32) > 0 {}
    seqs.extend(
        out.drain(..)
            .map(|m| vdpdk_core::packet::frame_seq(m.data()).unwrap()),
    );
    let rx = m.lock().stats.rx_packets;
    assert_eq!(
        seqs.len() as u64,
        rx,
        "every frame the model accepted reached the driver"
    );
    assert!(rx > 300, "descriptors were recycled: {rx}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    drop(rxq);
    assert_eq!(pool.available(), 1024, "no buffer leaked");
}

#[test]
fn a_flow_controlled_cable_holds_a_frame_until_the_driver_frees_descriptors() {
    let m = E810Model::shared(ModelConfig::default());
    let mut ice = IceDevice::probe(Arc::new(ModelPci::new(m.clone()))).unwrap();
    let pool = Mempool::new("rx", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rxq = ice.setup_rx_queue(0, 64, &pool).unwrap();
    let f = |s| udp_frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), s, 64);
    for s in 0..63 {
        assert_eq!(m.lock().try_receive(&f(s)), Some(true));
    }
    // The ring is full: the frame stays with the cable and nothing is counted.
    assert_eq!(m.lock().try_receive(&f(63)), None);
    assert_eq!(m.lock().stats.rx_dropped, 0);
    // The cable's flow control waits while the driver drains the ring, then delivers.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut out = Vec::new();
    std::thread::scope(|scope| {
        let cable = scope.spawn(|| ice_model::cable::deliver(&m, &f(63), &stop));
        while !cable.is_finished() {
            rxq.rx_burst(&mut out, 32);
            std::thread::yield_now();
        }
    });
    while rxq.rx_burst(&mut out, 32) > 0 {}
    let seqs: Vec<u64> = out
        .iter()
        .map(|m| vdpdk_core::packet::frame_seq(m.data()).unwrap())
        .collect();
    assert_eq!(seqs, (0..64).collect::<Vec<_>>(), "all 64 frames, in order");
    assert_eq!(m.lock().stats.rx_dropped, 0);
}

#[test]
fn vsi_counters_count_delivered_frames_and_discards_become_imissed() {
    use ice_driver::IcePort;
    use vdpdk_core::ethdev::start_single_queue;
    use vdpdk_core::EthDev;
    let m = E810Model::shared(ModelConfig::default());
    let mut port = IcePort::open(Arc::new(ModelPci::new(m.clone()))).unwrap();
    let pool = Mempool::new("vsi", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 64, false).unwrap();
    let uc = udp_frame(
        MacAddr([2, 0, 0, 0, 0, 9]),
        MacAddr([2, 0, 0, 0, 0, 1]),
        1,
        60,
    );
    let bc = udp_frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), 2, 100);
    // 100 frames into a 64-descriptor ring nobody drains: the rest are discarded.
    let mut delivered = [0u64; 2];
    for i in 0..100 {
        let (f, k) = if i % 4 == 0 { (&bc, 1) } else { (&uc, 0) };
        if m.lock().receive_on(0, f) {
            delivered[k] += 1;
        }
    }
    let total = delivered[0] + delivered[1];
    assert!(total > 0 && total < 100, "the ring filled up: {total}");
    let x: std::collections::HashMap<String, u64> = port.xstats().into_iter().collect();
    assert_eq!(x["vsi_rx_unicast"], delivered[0], "{x:?}");
    assert_eq!(x["vsi_rx_broadcast"], delivered[1], "{x:?}");
    assert_eq!(
        x["vsi_rx_bytes"],
        delivered[0] * 60 + delivered[1] * 100,
        "{x:?}"
    );
    assert_eq!(x["port_rx_unicast"], delivered[0], "{x:?}");
    assert_eq!(x["vsi_rx_discards"], 100 - total, "{x:?}");
    assert_eq!(port.stats().imissed, 100 - total);
    // The model keeps them where the public register map says: GLV_UPRCL(vsi) at
    // 0x3B2000 + 8 * vsi and GLV_RDPC(vsi) at 0x294C04 + 4 * vsi (the first VSI it hands out
    // is 5).
    assert_eq!(m.lock().mmio_read(0x003B_2000 + 8 * 5) as u64, delivered[0]);
    assert_eq!(m.lock().mmio_read(0x0029_4C04 + 4 * 5) as u64, 100 - total);
    let mut out = Vec::new();
    assert_eq!(rx.rx_burst(&mut out, 128) as u64, total);
}

/// Memory the driver does not own (a guest's, say), mapped for the card at its address here
/// as host-mux maps guest memory (`EthDev::external_dma`), cut into 2 KiB lent buffers.
struct Lendable {
    mem: vdpdk_core::DmaMemory,
}

impl Lendable {
    fn new(pci: &ModelPci, bufs: usize) -> Lendable {
        let mem = vdpdk_core::DmaMemory::alloc_with("lendable", bufs * 2048, false).unwrap();
        // SAFETY: a byte fill of our own fresh mapping.
        unsafe { std::ptr::write_bytes(mem.as_ptr(), 0xee, mem.len()) };
        let host = std::ptr::NonNull::new(mem.as_ptr()).unwrap();
        let r = vdpdk_core::ExternalRegion {
            fd: mem.fd(),
            offset: 0,
            len: mem.len() as u64,
            host,
        };
        vdpdk_pci::PciDevice::dma_map_external(pci, &r, host.as_ptr() as u64).unwrap();
        Lendable { mem }
    }

    fn buf(&self, tag: u32) -> vdpdk_core::LentBuf {
        // SAFETY: tag * 2048 lies inside the mapping (tests use tags below `bufs`).
        let ptr = unsafe { self.mem.as_ptr().add(tag as usize * 2048) };
        vdpdk_core::LentBuf {
            iova: ptr as u64,
            ptr: std::ptr::NonNull::new(ptr).unwrap(),
            len: 2048,
            tag,
        }
    }

    fn read(&self, tag: u32, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        // SAFETY: inside our mapping; a byte copy.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.mem.as_ptr().add(tag as usize * 2048),
                v.as_mut_ptr(),
                len,
            )
        };
        v
    }
}

#[test]
fn lent_buffers_take_frames_after_the_pool_buffers_the_card_already_had() {
    let m = E810Model::shared(ModelConfig::default());
    let pci = Arc::new(ModelPci::new(m.clone()));
    let mut ice = IceDevice::probe(pci.clone()).unwrap();
    let pool = Mempool::new("rx", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rxq = ice.setup_rx_queue(3, 64, &pool).unwrap();
    let guest = Lendable::new(&pci, 100);
    assert_eq!(rxq.lent_min_len(), 2048, "the context's DBUF");
    let short = vdpdk_core::LentBuf {
        len: 1000,
        ..guest.buf(99)
    };
    // SAFETY: the buffers lie in `guest`, mapped for the card until the test ends.
    assert_eq!(unsafe { rxq.post_lent(&[short]) }, 0, "too short for DBUF");
    let bufs: Vec<_> = (0..100).map(|t| guest.buf(t)).collect();
    // SAFETY: as above.
    assert_eq!(unsafe { rxq.post_lent(&bufs) }, 64, "a ring's worth");
    let f = |seq: u64| udp_frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), seq, 300);
    // The pool's buffers the card already had take the first frames.
    for seq in 0..63 {
        assert!(m.lock().receive_on(3, &f(seq)), "frame {seq}");
    }
    let (mut own, mut lent) = (Vec::new(), Vec::new());
    assert_eq!(rxq.rx_lent(&mut lent, 64), 0, "none in lent buffers yet");
    assert_eq!(rxq.rx_burst(&mut own, 64), 63);
    assert!(own
        .iter()
        .enumerate()
        .all(|(i, m)| m.data() == &f(i as u64)[..]));
    // Their descriptors now hold lent buffers: the next frames go there, in posting order.
    for seq in 63..103 {
        assert!(m.lock().receive_on(3, &f(seq)), "frame {seq}");
    }
    assert_eq!(
        rxq.rx_burst(&mut own, 64),
        0,
        "lent mode: no pool buffer refilled"
    );
    assert_eq!(rxq.rx_lent(&mut lent, 64), 40);
    for (k, d) in lent.iter().enumerate() {
        let want = f(63 + k as u64);
        assert_eq!(
            (d.tag, d.len as usize, d.error),
            (k as u32, want.len(), false)
        );
        assert_eq!(
            guest.read(d.tag, want.len()),
            want,
            "frame in lent buffer {k}"
        );
        assert!(d
            .ol_flags
            .contains(OlFlags::RX_IP_CKSUM_GOOD | OlFlags::RX_L4_CKSUM_GOOD));
        assert_eq!(
            d.packet_type.0,
            PacketType::L2_ETHER | PacketType::L3_IPV4 | PacketType::L4_UDP
        );
    }
    // Taking them back stops the card writing into them, and the ring runs on the pool.
    assert_eq!(rxq.take_back_lent(), 24, "the 64 taken, less the 40 filled");
    assert!(m.lock().receive_on(3, &f(200)));
    let mut after = Vec::new();
    assert_eq!(rxq.rx_burst(&mut after, 8), 1);
    assert_eq!(after[0].data(), &f(200)[..]);
    assert_eq!(rxq.rx_lent(&mut lent, 64), 0);
    for t in 40..100 {
        assert_eq!(
            guest.read(t, 16),
            [0xee; 16],
            "lent buffer {t} never written"
        );
    }
    assert_eq!(m.lock().stats.rx_dma_faults, 0);
}
