//! The driver brings up the software E810 in this process; the model misbehaves on request and
//! the driver reports it clearly without hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ice_driver::{IceDevice, IceError};
use ice_model::pci::ModelPci;
use ice_model::{E810Model, Faults, ModelConfig};
use parking_lot::Mutex;
use vdpdk_core::MacAddr;

/// How long a call may take before a test calls it hung: far beyond the admin queue's
/// one-second timeout, so a busy machine that stalls the test thread does not fail it.
const NO_HANG: Duration = Duration::from_secs(30);

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
    assert!(t0.elapsed() < NO_HANG, "no hang");
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
    assert!(t0.elapsed() < NO_HANG, "no hang");
    // The control path reports the reset instead of a generic timeout.
    let t0 = Instant::now();
    match ice.link_status(false) {
        Err(IceError::Reset(msg)) => assert!(msg.contains("probe the device again"), "{msg}"),
        other => panic!("expected a reset error, got {other:?}"),
    }
    assert!(t0.elapsed() < NO_HANG, "no hang");
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
    assert!(m.lock().pkg_loaded());
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
