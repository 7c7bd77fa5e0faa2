//! The ice driver against `ice-model-server` processes: bring-up over vfio-user, and two
//! cards cabled back to back through datagram sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ice_driver::IceDevice;
use vdpdk_core::MacAddr;

#[test]
fn driver_brings_up_the_model_in_another_process_over_vfio_user() {
    let dir = std::env::temp_dir().join(format!("ice-vfu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("e810.sock");
    let _server = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_ice-model-server"))
            .args([
                "--socket",
                sock.to_str().unwrap(),
                "--mac",
                "00:1b:21:12:34:56",
                "--queues",
                "128",
            ])
            .spawn()
            .unwrap(),
    );
    let pci = Arc::new(connect_when_listening(&sock));
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
    let _ = std::fs::remove_dir_all(&dir);
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
    let _sa = KillOnDrop(spawn("a.sock", "00:1b:21:00:00:0a", "a.wire", "b.wire"));
    let _sb = KillOnDrop(spawn("b.sock", "00:1b:21:00:00:0b", "b.wire", "a.wire"));
    let t0 = Instant::now();
    while !(p("a.wire").exists() && p("b.wire").exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "servers did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let open = |n: &str| IceDevice::probe(Arc::new(connect_when_listening(&p(n)))).unwrap();
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
    let _ = std::fs::remove_dir_all(&dir);
}

/// Connects to a server that is starting: its socket file appears at bind, a moment before it
/// listens (a connect in between is refused), so connect until it works, for up to 10 s.
fn connect_when_listening(sock: &std::path::Path) -> vdpdk_pci::VfioUserPci {
    let t0 = Instant::now();
    loop {
        match vdpdk_pci::VfioUserPci::connect(sock) {
            Ok(pci) => return pci,
            Err(e) => assert!(
                t0.elapsed() < Duration::from_secs(10),
                "server did not start: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A server process that is killed and reaped when the test ends, failing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
