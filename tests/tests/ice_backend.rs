//! host-mux on the ice driver: a software E810 (card A) behind host-mux, cabled back to back
//! to a second software E810 (card B) that the test drives as the wire. Guest processes get
//! their frames through the real driver's rings and the model's descriptor processing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use ice_driver::{DdpSource, IceDevice, IcePort};
use ice_model::pci::ModelPci;
use ice_model::ModelConfig;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{Mbuf, Mempool, RxQueue, TxQueue};

#[test]
fn guests_exchange_frames_through_host_mux_on_the_ice_driver() {
    let dir = TempDir::new("icemux");
    let (amac, bmac) = (mac(0xca), mac(0xcb));
    // With the DDP package the card leaves safe mode: a queue per VM, steered by Flow Director.
    let common::ice::IceRig {
        mux,
        pool,
        mut w_rx,
        mut w_tx,
        ..
    } = common::ice::ice_rig(&dir, &[("a", amac), ("b", bmac)], |c| c);

    let mut a = GuestProc::spawn(&dir.sock("a"), 1);
    let mut b = GuestProc::spawn(&dir.sock("b"), 1);
    let to_a: Vec<Vec<u8>> = (0..500)
        .map(|s| udp_frame(amac, WIRE_MAC, s, 128))
        .collect();
    let to_b: Vec<Vec<u8>> = (0..500)
        .map(|s| udp_frame(bmac, WIRE_MAC, s, 1000))
        .collect();
    let mut batch: Vec<Mbuf> = Vec::new();
    for f in to_a.iter().chain(&to_b) {
        let mut m = pool.alloc().unwrap();
        m.copy_from(f).unwrap();
        batch.push(m);
        if batch.len() == 32 {
            while !batch.is_empty() {
                w_tx.tx_burst(&mut batch);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    while !batch.is_empty() {
        w_tx.tx_burst(&mut batch);
    }
    assert_eq!(
        GuestProc::parse_recv(&a.cmd("recv 500 10000"))[0],
        (500, digest(&to_a))
    );
    assert_eq!(
        GuestProc::parse_recv(&b.cmd("recv 500 10000"))[0],
        (500, digest(&to_b))
    );

    assert_eq!(
        GuestProc::sent(&a.cmd(&format!("send 200 256 {WIRE_MAC}"))),
        200
    );
    let mut got = Vec::new();
    let mut out = Vec::new();
    let t0 = Instant::now();
    while got.len() < 200 && t0.elapsed() < Duration::from_secs(10) {
        if w_rx.rx_burst(&mut out, 32) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        got.extend(out.drain(..).map(|m| m.data().to_vec()));
    }
    let expect: Vec<Vec<u8>> = (0..200)
        .map(|s| udp_frame(WIRE_MAC, amac, s, 256))
        .collect();
    assert_eq!(
        got, expect,
        "guest A's frames crossed host-mux, the ice driver and both cards"
    );
    let bs = mux.backend_stats();
    assert_eq!((bs.ipackets, bs.opackets), (1000, 200), "{bs:?}");
    assert_eq!(
        bs.q_ipackets,
        vec![0, 500, 500],
        "Flow Director put each VM's frames on its own queue"
    );
    let unknown: u64 = mux.pollers().iter().map(|p| p.rx_unknown_dst).sum();
    assert_eq!(unknown, 0);
    a.quit();
    b.quit();
}

#[test]
fn host_mux_binary_runs_on_an_e810_behind_a_vfio_user_socket() {
    let dir = TempDir::new("icecli");
    let card = dir.0.join("e810.sock");
    let model = ice_model::E810Model::shared(ModelConfig::default());
    let card2 = card.clone();
    std::thread::spawn(move || ice_model_server::serve(model, &card2));
    let t0 = Instant::now();
    while !card.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the model's socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let cfg = dir.0.join("mux.toml");
    std::fs::write(
        &cfg,
        format!(
            "[backend]\nkind = \"ice\"\nsocket = \"{}\"\n[[vm]]\nname = \"vm1\"\nsocket = \"{}\"\nmac = \"02:00:00:00:00:01\"\n",
            card.display(),
            dir.sock("vm1").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vdpdk-test-mux"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--duration",
            "1",
            "--stats-interval",
            "0",
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("E810 PF 0") && err.contains("vm1: serving"),
        "{err}"
    );
}

#[test]
fn without_flow_profiles_host_mux_falls_back_to_software_steering() {
    let dir = TempDir::new("icefall");
    let amac = mac(0xda);
    let (card_a, card_b) = ModelPci::back_to_back(ModelConfig::default(), ModelConfig::default());
    card_a.model.lock().faults.refuse_profile_updates = true;
    let port = IcePort::open_with(
        card_a,
        DdpSource::Bytes(ice_driver::ddp::synthetic_package(2)),
    )
    .unwrap();
    let vms = vec![VmConfig {
        name: "a".into(),
        socket: dir.sock("a"),
        mac: amac,
        rx_queues: 1,
        tx_queues: 1,
        cluster: 0,
    }];
    let cfg = MuxConfig {
        idle_polls: 64,
        hw_steering: true,
        ..MuxConfig::new(BackendConfig::Pair, vms)
    };
    let mux = HostMux::start(&cfg, Box::new(port)).unwrap();
    let mut wire = IceDevice::probe(card_b).unwrap();
    let pool = Mempool::new("wire", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut w_tx = wire.setup_tx_queue(0, 256).unwrap();
    let mut a = GuestProc::spawn(&dir.sock("a"), 1);
    let frames: Vec<Vec<u8>> = (0..100)
        .map(|s| udp_frame(amac, WIRE_MAC, s, 200))
        .collect();
    let mut batch: Vec<Mbuf> = frames
        .iter()
        .map(|f| {
            let mut m = pool.alloc().unwrap();
            m.copy_from(f).unwrap();
            m
        })
        .collect();
    while !batch.is_empty() {
        w_tx.tx_burst(&mut batch);
    }
    assert_eq!(
        GuestProc::parse_recv(&a.cmd("recv 100 10000"))[0],
        (100, digest(&frames))
    );
    assert_eq!(
        mux.backend_stats().q_ipackets,
        vec![100, 0],
        "all on the shared queue"
    );
    a.quit();
}

/// Offloads through host-mux on the E810: a guest's TX checksum requests and TCP super-frames
/// go to the card's hardware (the model computes and segments), and the card's RX checksum
/// status reaches the guest.
#[test]
fn offloads_reach_the_card_and_its_rx_status_reaches_the_guest() {
    use vdpdk_core::mbuf::TxOffloadInfo;
    use vdpdk_core::packet::inet_checksum;
    use vdpdk_core::{EthDev, OlFlags, RxOffloads, TxOffloads};
    let dir = TempDir::new("icecsum");
    let gmac = mac(0xcc);
    let (card_a, card_b) = ModelPci::back_to_back(ModelConfig::default(), ModelConfig::default());
    let port = IcePort::open_with(
        card_a,
        DdpSource::Bytes(ice_driver::ddp::synthetic_package(2)),
    )
    .unwrap();
    let vms = vec![VmConfig {
        name: "g".into(),
        socket: dir.sock("g"),
        mac: gmac,
        rx_queues: 1,
        tx_queues: 1,
        cluster: 0,
    }];
    let cfg = MuxConfig {
        idle_polls: 64,
        ..MuxConfig::new(BackendConfig::Pair, vms)
    };
    let mux = HostMux::start(&cfg, Box::new(port)).unwrap();
    let mut wire = IceDevice::probe(card_b).unwrap();
    wire.link_up().unwrap();
    let wpool = Mempool::new("wire", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut w_rx = wire.setup_rx_queue(0, 256, &wpool).unwrap();
    let mut w_tx = wire.setup_tx_queue(0, 256).unwrap();

    let mut guest = guest_pmd::VdpdkPort::connect(dir.sock("g")).unwrap();
    let csum = RxOffloads::IPV4_CKSUM | RxOffloads::UDP_CKSUM | RxOffloads::TCP_CKSUM;
    assert_eq!(
        guest.info().rx_offload_capa,
        csum,
        "the card's RX checksum status"
    );
    let gpool = Mempool::new("g", 512, 16384).unwrap();
    guest
        .configure(&vdpdk_core::DevConfig {
            nb_rx_queues: 1,
            nb_tx_queues: 1,
            rx_offloads: csum,
            tx_offloads: TxOffloads::IPV4_CKSUM
                | TxOffloads::UDP_CKSUM
                | TxOffloads::TCP_CKSUM
                | TxOffloads::TCP_TSO,
            ..Default::default()
        })
        .unwrap();
    guest.rx_queue_setup(0, 64, &gpool).unwrap();
    guest.tx_queue_setup(0, 64).unwrap();
    guest.start().unwrap();
    let (mut g_rx, mut g_tx) = (
        guest.take_rx_queue(0).unwrap(),
        guest.take_tx_queue(0).unwrap(),
    );

    // Guest -> wire: IPv4 and UDP checksums zeroed, requested from the device.
    let mut f = udp_frame(WIRE_MAC, gmac, 1, 200);
    f[24..26].fill(0);
    f[40..42].fill(0);
    let mut m = gpool.alloc_packet(&f).unwrap();
    m.ol_flags = OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM | OlFlags::TX_UDP_CKSUM;
    m.tx_offload = TxOffloadInfo {
        l2_len: 14,
        l3_len: 20,
        l4_len: 8,
        tso_segsz: 0,
    };
    assert_eq!(g_tx.tx_burst(&mut vec![m]), 1);
    let mut out = Vec::new();
    let t0 = Instant::now();
    while out.is_empty() && t0.elapsed() < Duration::from_secs(10) {
        if w_rx.rx_burst(&mut out, 8) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let got = out[0].to_vec();
    let mut ph = got[26..34].to_vec();
    ph.extend_from_slice(&[0, 17]);
    ph.extend_from_slice(&((got.len() - 34) as u16).to_be_bytes());
    ph.extend_from_slice(&got[34..]);
    assert_eq!(
        inet_checksum(&got[14..34]),
        0,
        "IPv4 header checksum filled"
    );
    assert_eq!(inet_checksum(&ph), 0, "UDP checksum filled");
    out.clear();

    // A 10,000-byte TCP payload at MSS 1448: host-mux hands it to the card as a chain of
    // 16 KiB buffers with a TSO request; the card sends 7 segments.
    let mut big = udp_frame(WIRE_MAC, gmac, 3, 54 + 10_000);
    big[16..18].copy_from_slice(&((40 + 10_000) as u16).to_be_bytes());
    big[23] = 6;
    big[24..26].fill(0);
    big[38..42].copy_from_slice(&9000u32.to_be_bytes()); // seq
    big[42..46].fill(0);
    big[46] = 0x50;
    big[47] = 0x18;
    big[48..54].fill(0);
    let mut m = gpool.alloc_packet(&big).unwrap();
    m.ol_flags =
        OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM | OlFlags::TX_TCP_CKSUM | OlFlags::TX_TCP_SEG;
    m.tx_offload = TxOffloadInfo {
        l2_len: 14,
        l3_len: 20,
        l4_len: 20,
        tso_segsz: 1448,
    };
    assert_eq!(g_tx.tx_burst(&mut vec![m]), 1);
    let t0 = Instant::now();
    while out.len() < 7 && t0.elapsed() < Duration::from_secs(10) {
        if w_rx.rx_burst(&mut out, 8) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(out.len(), 7);
    let mut payload = Vec::new();
    for (k, seg) in out.iter().enumerate() {
        let s = seg.to_vec();
        let mut ph = s[26..34].to_vec();
        ph.extend_from_slice(&[0, 6]);
        ph.extend_from_slice(&((s.len() - 34) as u16).to_be_bytes());
        ph.extend_from_slice(&s[34..]);
        assert_eq!(inet_checksum(&s[14..34]), 0, "segment {k} IPv4 checksum");
        assert_eq!(inet_checksum(&ph), 0, "segment {k} TCP checksum");
        assert_eq!(
            u32::from_be_bytes(s[38..42].try_into().unwrap()),
            9000 + (k * 1448) as u32
        );
        payload.extend_from_slice(&s[54..]);
    }
    assert_eq!(payload, big[54..].to_vec(), "the payload reassembles");
    let p = mux.pollers();
    let sum = |f: fn(&host_mux::PollerSnapshot) -> u64| p.iter().map(f).sum::<u64>();
    assert_eq!(sum(|p| p.tso_offloaded), 1, "segmented by the card");
    assert_eq!(sum(|p| p.tso_segments), 0, "not by host-mux");

    // Wire -> guest: a frame with a good UDP checksum and one with a broken one.
    let mut good = udp_frame(gmac, WIRE_MAC, 2, 200);
    let flags = OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM | OlFlags::TX_UDP_CKSUM;
    let info = TxOffloadInfo {
        l2_len: 14,
        l3_len: 20,
        l4_len: 8,
        tso_segsz: 0,
    };
    let lay = vdpdk_core::packet::TxLayout::new(flags, info, good.len()).unwrap();
    vdpdk_core::packet::fill_tx_checksums(&mut good, flags, &lay);
    let mut bad = good.clone();
    bad[60] ^= 0xff;
    let mut batch: Vec<Mbuf> = [good, bad]
        .iter()
        .map(|f| wpool.alloc_packet(f).unwrap())
        .collect();
    while !batch.is_empty() {
        w_tx.tx_burst(&mut batch);
    }
    let mut rx = Vec::new();
    let t0 = Instant::now();
    while rx.len() < 2 && t0.elapsed() < Duration::from_secs(10) {
        if g_rx.rx_burst(&mut rx, 8) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(rx.len(), 2);
    assert!(rx[0]
        .ol_flags
        .contains(OlFlags::RX_IP_CKSUM_GOOD | OlFlags::RX_L4_CKSUM_GOOD));
    assert!(rx[1].ol_flags.contains(OlFlags::RX_L4_CKSUM_BAD));
}
