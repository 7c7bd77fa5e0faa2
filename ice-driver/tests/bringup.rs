//! The driver brings up the software E810 in this process; the model misbehaves on request and
//! the driver reports it clearly without hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ice_driver::model::pci::ModelPci;
use ice_driver::model::{E810Model, Faults, ModelConfig};
use ice_driver::{IceDevice, IceError};
use parking_lot::Mutex;
use vdpdk_core::MacAddr;

fn model(faults: Faults) -> (Arc<Mutex<E810Model>>, Arc<ModelPci>) {
    let cfg = ModelConfig {
        mac: MacAddr([0x00, 0x1b, 0x21, 0xaa, 0xbb, 0xcc]),
        ..Default::default()
    };
    let m = E810Model::shared(cfg);
    m.lock().faults = faults;
    let pci = Arc::new(ModelPci::new(m.clone()));
    (m, pci)
}

#[test]
fn driver_brings_up_the_model_and_the_link() {
    let (m, pci) = model(Faults::default());
    let mut ice = IceDevice::probe(pci).expect("probe");
    let info = ice.info().clone();
    assert_eq!(info.mac, MacAddr([0x00, 0x1b, 0x21, 0xaa, 0xbb, 0xcc]));
    assert_eq!(info.api_version, (1, 7, 9));
    assert_eq!((info.num_rxq, info.num_txq, info.num_msix), (64, 64, 64));
    assert_eq!((info.lport, info.sw_id), (0, 1));
    assert!(!info.link.up);
    let link = ice.link_up().unwrap();
    assert!(link.up && link.media_available);
    assert_eq!(link.speed_mbps, 100_000);
    assert!(m.lock().link_up());
    // The link change also arrived as a firmware event on the receive queue.
    assert_eq!(ice.poll_events().unwrap().map(|l| l.up), Some(true));
    assert_eq!(ice.poll_events().unwrap(), None, "one event, consumed once");
    // Every bring-up command reached the model once, in the documented set.
    let seen = m.lock().commands.clone();
    for op in [
        0x0001u16, 0x02A4, 0x0110, 0x000B, 0x000A, 0x0200, 0x0107, 0x0603, 0x0613, 0x0607, 0x0605,
    ] {
        assert!(
            seen.contains_key(&op),
            "opcode {op:#06x} never sent: {seen:?}"
        );
    }
    assert_eq!(
        m.lock().mac_cfg,
        [9728, 0xFFFF, 0x7FFF],
        "pause timers passed on from PRTMAC"
    );
    ice.shutdown().unwrap();
    assert_eq!(m.lock().commands[&0x0003], 1, "q_shutdown sent");
}

#[test]
fn a_firmware_that_stops_answering_times_out_cleanly() {
    let (_m, pci) = model(Faults {
        stop_answering: true,
        ..Default::default()
    });
    let t0 = Instant::now();
    match IceDevice::probe(pci) {
        Err(IceError::Timeout(m)) => assert!(m.contains("0x0001"), "{m}"),
        other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "no hang");
}

#[test]
fn malformed_or_refusing_firmware_is_reported() {
    let probe = |f: Faults| {
        IceDevice::probe(model(f).1)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = probe(Faults {
        api_major: Some(2),
        ..Default::default()
    });
    assert!(e.contains("newer than this driver"), "{e}");
    let e = probe(Faults {
        wrong_opcode: Some(0x0999),
        ..Default::default()
    });
    assert!(e.contains("completed as opcode 0x0999"), "{e}");
    let e = probe(Faults {
        in_global_reset: true,
        ..Default::default()
    });
    assert!(e.contains("global reset is in progress"), "{e}");
    let e = probe(Faults {
        fail_all: Some(14),
        ..Default::default()
    });
    assert!(e.contains("EINVAL") && e.contains("0x0001"), "{e}");
}

#[test]
fn driver_brings_up_the_model_in_another_process_over_vfio_user() {
    let dir = std::env::temp_dir().join(format!("ice-vfu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("e810.sock");
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_ice-model-server"))
        .args([
            "--socket",
            sock.to_str().unwrap(),
            "--mac",
            "00:1b:21:12:34:56",
            "--queues",
            "128",
        ])
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pci = Arc::new(vdpdk_pci::VfioUserPci::connect(&sock).unwrap());
    let mut ice = IceDevice::probe(pci).expect("probe over vfio-user");
    assert_eq!(
        ice.info().mac,
        MacAddr([0x00, 0x1b, 0x21, 0x12, 0x34, 0x56])
    );
    assert_eq!(ice.info().num_rxq, 128);
    let link = ice.link_up().unwrap();
    assert!(link.up);
    assert_eq!(ice.poll_events().unwrap().map(|l| l.up), Some(true));
    ice.shutdown().unwrap();
    drop(ice);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reset_during_traffic_gives_clear_errors_and_a_fresh_probe_works() {
    use vdpdk_core::packet::udp_frame;
    use vdpdk_core::{Mempool, RxQueue, TxQueue};
    let (m, pci) = model(Faults::default());
    let mut ice = IceDevice::probe(pci.clone()).unwrap();
    let pool = Mempool::new("rst", 2048, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rx = ice.setup_rx_queue(0, 256, &pool).unwrap();
    let mut tx = ice.setup_tx_queue(0, 256).unwrap();
    let f = udp_frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), 1, 64);
    let mut out = Vec::new();
    for _ in 0..10 {
        m.lock().receive_on(0, &f);
    }
    m.lock().global_reset();
    // The data path neither hangs nor crashes: RX drains what was written, TX goes nowhere.
    assert_eq!(rx.rx_burst(&mut out, 32), 10);
    let mut batch = Vec::new();
    pool.alloc_bulk(&mut batch, 8);
    let t0 = Instant::now();
    tx.tx_burst(&mut batch);
    assert!(
        !m.lock().receive_on(0, &f),
        "queues are off after the reset"
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    // The control path reports the reset instead of a generic timeout.
    let t0 = Instant::now();
    match ice.link_status(false) {
        Err(IceError::Reset(msg)) => assert!(msg.contains("probe the device again"), "{msg}"),
        other => panic!("expected a reset error, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "no hang");
    // While the reset is in progress a probe is refused; afterwards it works again.
    let e = IceDevice::probe(pci.clone()).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("global reset"), "{e}");
    m.lock().finish_reset();
    let mut again = IceDevice::probe(pci).unwrap();
    assert!(again.link_up().unwrap().up);
}

#[test]
fn ddp_package_download_leaves_safe_mode() {
    use ice_driver::{ddp, DdpSource, IcePort};
    use vdpdk_core::EthDev;
    let (m, pci) = model(Faults::default());
    let port = IcePort::open_with(pci, DdpSource::None).unwrap();
    assert_eq!(port.info().max_rx_queues, 1, "safe mode without a package");
    drop(port);
    let pci = Arc::new(ModelPci::new(m.clone()));
    let port = IcePort::open_with(pci, DdpSource::Bytes(ddp::synthetic_package(5))).unwrap();
    assert_eq!(port.info().max_rx_queues, 64);
    assert!(m.lock().pkg_loaded);
    assert_eq!(
        m.lock().commands[&0x0C40],
        5,
        "five configuration buffers, metadata not sent"
    );
    // A second function finds the package already loaded (lock status "done").
    let pci = Arc::new(ModelPci::new(m.clone()));
    let port = IcePort::open_with(pci, DdpSource::Bytes(ddp::synthetic_package(5))).unwrap();
    assert_eq!(port.info().max_rx_queues, 64);
    assert_eq!(m.lock().commands[&0x0C40], 5);
    // A named package that is missing is a clear error.
    let (_m, pci) = model(Faults::default());
    let e = IcePort::open_with(pci, DdpSource::File("/nonexistent/ice.pkg".into()))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/ice.pkg") && e.contains("safe mode"),
        "{e}"
    );
}

#[test]
fn two_model_processes_cabled_back_to_back_pass_frames_over_vfio_user() {
    use vdpdk_core::packet::udp_frame;
    use vdpdk_core::{Mempool, RxQueue, TxQueue};
    let dir = std::env::temp_dir().join(format!("ice-b2b-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n);
    let spawn = |name: &str, mac: &str, local: &str, peer: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ice-model-server"))
            .args(["--socket", p(name).to_str().unwrap(), "--mac", mac])
            .args([
                "--wire-local",
                p(local).to_str().unwrap(),
                "--wire-peer",
                p(peer).to_str().unwrap(),
            ])
            .spawn()
            .unwrap()
    };
    let mut sa = spawn("a.sock", "00:1b:21:00:00:0a", "a.wire", "b.wire");
    let mut sb = spawn("b.sock", "00:1b:21:00:00:0b", "b.wire", "a.wire");
    let t0 = Instant::now();
    while !(p("a.sock").exists()
        && p("b.sock").exists()
        && p("a.wire").exists()
        && p("b.wire").exists())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "servers did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let open = |n: &str| {
        IceDevice::probe(Arc::new(vdpdk_pci::VfioUserPci::connect(&p(n)).unwrap())).unwrap()
    };
    let (mut a, mut b) = (open("a.sock"), open("b.sock"));
    assert!(a.link_up().unwrap().up && b.link_up().unwrap().up);
    let pool = Mempool::new("b2b", 2048, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut a_rx, mut a_tx) = (
        a.setup_rx_queue(0, 256, &pool).unwrap(),
        a.setup_tx_queue(0, 256).unwrap(),
    );
    let (mut b_rx, mut b_tx) = (
        b.setup_rx_queue(0, 256, &pool).unwrap(),
        b.setup_tx_queue(0, 256).unwrap(),
    );
    let (ma, mb) = (a.info().mac, b.info().mac);
    let pairs: [(&mut dyn TxQueue, &mut dyn RxQueue, MacAddr, MacAddr); 2] = [
        (&mut a_tx, &mut b_rx, ma, mb),
        (&mut b_tx, &mut a_rx, mb, ma),
    ];
    for (tx, rx, src, dst) in pairs {
        let frames: Vec<Vec<u8>> = (0..100)
            .map(|s| udp_frame(dst, src, s, 64 + s as usize))
            .collect();
        let mut batch = Vec::new();
        for f in &frames {
            let mut m = pool.alloc().unwrap();
            m.copy_from(f).unwrap();
            batch.push(m);
        }
        while !batch.is_empty() {
            tx.tx_burst(&mut batch);
        }
        let (mut got, mut out) = (Vec::new(), Vec::new());
        let t0 = Instant::now();
        while got.len() < 100 && t0.elapsed() < Duration::from_secs(10) {
            if rx.rx_burst(&mut out, 32) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            got.extend(out.drain(..).map(|m| m.data().to_vec()));
        }
        assert_eq!(
            got, frames,
            "byte-identical, in order, across two processes"
        );
    }
    drop((a_rx, a_tx, b_rx, b_tx, a, b));
    for s in [&mut sa, &mut sb] {
        let _ = s.kill();
        let _ = s.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
