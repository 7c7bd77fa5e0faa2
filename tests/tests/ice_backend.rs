//! host-mux on the ice driver: a software E810 (card A) behind host-mux, cabled back to back
//! to a second software E810 (card B) that the test drives as the wire. Guest processes get
//! their frames through the real driver's rings and the model's descriptor processing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use ice_driver::model::pci::ModelPci;
use ice_driver::model::ModelConfig;
use ice_driver::{DdpSource, IceDevice, IcePort};
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue, TxQueue};

#[test]
fn guests_exchange_frames_through_host_mux_on_the_ice_driver() {
    let dir = TempDir::new("icemux");
    let (amac, bmac) = (mac(0xca), mac(0xcb));
    let (card_a, card_b) = ModelPci::back_to_back(
        ModelConfig {
            mac: MacAddr([0x00, 0x1b, 0x21, 0, 0, 0xa]),
            ..Default::default()
        },
        ModelConfig {
            mac: MacAddr([0x00, 0x1b, 0x21, 0, 0, 0xb]),
            ..Default::default()
        },
    );
    // With the DDP package the card leaves safe mode: a queue per VM, steered by Flow Director.
    let port = IcePort::open_with(
        card_a,
        DdpSource::Bytes(ice_driver::ddp::synthetic_package(2)),
    )
    .unwrap();
    let vms = [("a", amac), ("b", bmac)]
        .iter()
        .map(|(n, m)| VmConfig {
            name: n.to_string(),
            socket: dir.sock(n),
            mac: *m,
            rx_queues: 1,
            tx_queues: 1,
            cluster: 0,
        })
        .collect();
    // (`backend` only tells the CLI what to open; HostMux::start takes the port itself.)
    let cfg = MuxConfig {
        idle_polls: 64,
        hw_steering: true,
        ..MuxConfig::new(BackendConfig::Pair, vms)
    };
    let mux = HostMux::start(&cfg, Box::new(port)).unwrap();

    // Card B is the wire.
    let mut wire = IceDevice::probe(card_b).unwrap();
    wire.link_up().unwrap();
    let pool = Mempool::new("wire", 4096, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut w_rx = wire.setup_rx_queue(0, 1024, &pool).unwrap();
    let mut w_tx = wire.setup_tx_queue(0, 1024).unwrap();

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
    let model = ice_driver::model::E810Model::shared(ModelConfig::default());
    let card2 = card.clone();
    std::thread::spawn(move || ice_driver::model::server::serve(model, &card2));
    let t0 = Instant::now();
    while !card.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10));
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
