//! Acceptance tests of the spine: guest processes attached to host-mux over vfio-user, frames
//! steered by MAC and flow rules, counters agreeing on both sides, and guests coming and going.

mod common;

use std::time::Duration;

use common::*;
use vdpdk_core::abi::StatsIndex;
use vdpdk_core::packet::{ether_frame, udp_frame};
use vdpdk_core::MacAddr;

fn frames_to(dst: MacAddr, n: u64, len: usize) -> Vec<Vec<u8>> {
    (0..n).map(|s| udp_frame(dst, WIRE_MAC, s, len)).collect()
}

#[test]
fn two_guests_get_only_their_frames_and_their_tx_reaches_the_wire() {
    let dir = TempDir::new("two");
    let (a_mac, b_mac) = (mac(0x0a), mac(0x0b));
    let (mux, mut wire) = start_mux(
        &dir,
        &[
            Vm {
                name: "a",
                mac: a_mac,
                rxq: 1,
            },
            Vm {
                name: "b",
                mac: b_mac,
                rxq: 1,
            },
        ],
    );
    let mut a = GuestProc::spawn(&dir.sock("a"), 1);
    let mut b = GuestProc::spawn(&dir.sock("b"), 1);
    assert_eq!((a.mac, b.mac), (a_mac, b_mac));

    // Wire -> guests: 700 to A (mixed sizes), 500 to B, 100 broadcast, 100 unknown unicast.
    let to_a: Vec<Vec<u8>> = (0..700)
        .map(|s| udp_frame(a_mac, WIRE_MAC, s, 60 + (s as usize * 7) % 1400))
        .collect();
    let to_b = frames_to(b_mac, 500, 1500);
    let bcast = frames_to(MacAddr::BROADCAST, 100, 64);
    let unknown = frames_to(mac(0x77), 100, 64);
    wire.send(&to_a);
    wire.send(&to_b);
    wire.send(&bcast);
    wire.send(&unknown);

    let ra = GuestProc::parse_recv(&a.cmd("recv 800 10000"));
    let rb = GuestProc::parse_recv(&b.cmd("recv 600 10000"));
    let exp_a: Vec<Vec<u8>> = to_a.iter().chain(&bcast).cloned().collect();
    let exp_b: Vec<Vec<u8>> = to_b.iter().chain(&bcast).cloned().collect();
    assert_eq!(
        ra[0],
        (800, digest(&exp_a)),
        "guest A got exactly its frames, byte-identical"
    );
    assert_eq!(
        rb[0],
        (600, digest(&exp_b)),
        "guest B got exactly its frames, byte-identical"
    );
    // Nothing more is pending for either guest (unknown unicast went nowhere).
    assert_eq!(GuestProc::parse_recv(&a.cmd("recv 1 200"))[0].0, 0);
    assert_eq!(GuestProc::parse_recv(&b.cmd("recv 1 200"))[0].0, 0);
    let unknown_dst: u64 = mux.pollers().iter().map(|p| p.rx_unknown_dst).sum();
    assert_eq!(unknown_dst, 100);

    // Guests -> wire.
    assert_eq!(
        GuestProc::sent(&a.cmd(&format!("send 300 128 {WIRE_MAC}"))),
        300
    );
    assert_eq!(
        GuestProc::sent(&b.cmd(&format!("send 200 1500 {WIRE_MAC}"))),
        200
    );
    let got = wire.recv(500, Duration::from_secs(10));
    assert_eq!(got.len(), 500);
    let from_a: Vec<Vec<u8>> = got
        .iter()
        .filter(|f| f[6..12] == a_mac.0)
        .cloned()
        .collect();
    let from_b: Vec<Vec<u8>> = got
        .iter()
        .filter(|f| f[6..12] == b_mac.0)
        .cloned()
        .collect();
    let exp_a: Vec<Vec<u8>> = (0..300)
        .map(|s| udp_frame(WIRE_MAC, a_mac, s, 128))
        .collect();
    let exp_b: Vec<Vec<u8>> = (0..200)
        .map(|s| udp_frame(WIRE_MAC, b_mac, s, 1500))
        .collect();
    assert_eq!(from_a, exp_a, "A's frames left intact and in order");
    assert_eq!(from_b, exp_b, "B's frames left intact and in order");

    // Counters agree: guest port stats, the host's per-guest view, and the wire.
    let (pa, ha) = GuestProc::parse_stats(&a.cmd("stats"));
    let (pb, hb) = GuestProc::parse_stats(&b.cmd("stats"));
    assert_eq!(&pa[..4], &[800, 300, 0, 0]);
    assert_eq!(&pb[..4], &[600, 200, 0, 0]);
    assert_eq!(ha[StatsIndex::RxPackets as usize], 800);
    assert_eq!(ha[StatsIndex::TxPackets as usize], 300);
    assert_eq!(hb[StatsIndex::RxPackets as usize], 600);
    assert_eq!(hb[StatsIndex::TxPackets as usize], 200);
    for h in [&ha, &hb] {
        assert_eq!(h[StatsIndex::RxNoDesc as usize], 0);
        assert_eq!(h[StatsIndex::TxBadDesc as usize], 0);
    }
    let ws = vdpdk_core::EthDev::stats(&wire.port);
    assert_eq!((ws.opackets, ws.ipackets), (1400, 500));
    a.quit();
    b.quit();
}

#[test]
fn guest_flow_rules_steer_to_queues_and_foreign_rules_are_refused() {
    let dir = TempDir::new("flow");
    let (a_mac, b_mac) = (mac(0x1a), mac(0x1b));
    let (_mux, mut wire) = start_mux(
        &dir,
        &[
            Vm {
                name: "a",
                mac: a_mac,
                rxq: 4,
            },
            Vm {
                name: "b",
                mac: b_mac,
                rxq: 1,
            },
        ],
    );
    let mut a = GuestProc::spawn(&dir.sock("a"), 4);
    let ok = a.cmd("flow ethtype 88b5 2");
    assert!(ok.starts_with("FLOW ok"), "{ok}");
    let ok = a.cmd("flow ethtype 88b6 3");
    assert!(ok.starts_with("FLOW ok"), "{ok}");

    let custom: Vec<Vec<u8>> = (0..100)
        .map(|s| ether_frame(a_mac, WIRE_MAC, 0x88b5, s, 80))
        .collect();
    let custom3: Vec<Vec<u8>> = (0..30)
        .map(|s| ether_frame(a_mac, WIRE_MAC, 0x88b6, s, 80))
        .collect();
    let plain = frames_to(a_mac, 50, 100);
    wire.send(&custom);
    wire.send(&plain);
    wire.send(&custom3);
    let r = GuestProc::parse_recv(&a.cmd("recv 180 10000"));
    assert_eq!(
        r[0],
        (50, digest(&plain)),
        "unmatched frames stay on queue 0"
    );
    assert_eq!(r[1].0, 0);
    assert_eq!(
        r[2],
        (100, digest(&custom)),
        "EtherType 0x88b5 steered to queue 2"
    );
    assert_eq!(
        r[3],
        (30, digest(&custom3)),
        "EtherType 0x88b6 steered to queue 3"
    );

    // A rule for another guest's MAC, and a queue A does not own, are refused with a reason.
    let e = a.cmd(&format!("flow ethdst {b_mac} 1"));
    assert!(e.starts_with("FLOW err") && e.contains("owns"), "{e}");
    let e = a.cmd("flow ethtype 0800 4");
    assert!(e.starts_with("FLOW err") && e.contains("queue 4"), "{e}");
    // Its own MAC is fine.
    let ok = a.cmd(&format!("flow ethdst {a_mac} 1"));
    assert!(ok.starts_with("FLOW ok"), "{ok}");
    a.quit();
}

#[test]
fn killed_guest_frees_its_slot_and_others_lose_nothing() {
    let dir = TempDir::new("kill");
    let (a_mac, b_mac) = (mac(0x2a), mac(0x2b));
    let (mux, mut wire) = start_mux(
        &dir,
        &[
            Vm {
                name: "a",
                mac: a_mac,
                rxq: 1,
            },
            Vm {
                name: "b",
                mac: b_mac,
                rxq: 1,
            },
        ],
    );
    let mut a = GuestProc::spawn(&dir.sock("a"), 1);
    let mut b = GuestProc::spawn(&dir.sock("b"), 1);
    // A floods the wire; B receives while A is killed mid-traffic.
    a.start(&format!("flood {WIRE_MAC} 256"));
    b.start("recv 1500 20000");
    let to_b = frames_to(b_mac, 1500, 200);
    wire.send(&to_b[..500]);
    let _ = wire.recv(2000, Duration::from_millis(300));
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    wire.send(&to_b[500..]);
    // Keep draining A's leftovers off the wire.
    let _ = wire.recv(1_000_000, Duration::from_millis(300));
    let r = GuestProc::parse_recv(&b.answer());
    assert_eq!(r[0], (1500, digest(&to_b)), "B lost nothing while A died");

    wait_for(10, "A's slot to be released", || {
        let g = &mux.guests()[0];
        !g.attached && !g.running && g.dma_regions == 0
    });
    // A new guest attaches on the same socket and gets traffic.
    let mut a2 = GuestProc::spawn(&dir.sock("a"), 1);
    let to_a = frames_to(a_mac, 100, 300);
    wire.send(&to_a);
    let r = GuestProc::parse_recv(&a2.cmd("recv 100 10000"));
    assert_eq!(r[0], (100, digest(&to_a)));
    assert_eq!(mux.guests()[0].attaches, 2);
    a2.quit();
    b.quit();
}

#[test]
fn rx_interrupt_wakes_a_sleeping_guest() {
    let dir = TempDir::new("intr");
    let a_mac = mac(0x3a);
    let (_mux, mut wire) = start_mux(
        &dir,
        &[Vm {
            name: "a",
            mac: a_mac,
            rxq: 1,
        }],
    );
    let mut a = GuestProc::spawn(&dir.sock("a"), 1);
    // Nothing arrives: the wait times out.
    assert_eq!(a.cmd("wait-intr 0 300"), "INTR timeout");
    a.start("wait-intr 0 10000");
    std::thread::sleep(Duration::from_millis(200));
    wire.send(&frames_to(a_mac, 1, 64));
    assert!(a.answer().starts_with("INTR woke "));
    assert_eq!(GuestProc::parse_recv(&a.cmd("recv 1 2000"))[0].0, 1);
    a.quit();
}

#[test]
fn driver_and_device_of_different_abi_majors_refuse_each_other() {
    use guest_pmd::{OpenOptions, VdpdkPort};
    use std::sync::Arc;
    use vdpdk_core::abi::{ABI_MAJOR, ABI_MINOR};
    use vdpdk_core::Error;
    let dir = TempDir::new("version");
    let (mux, _wire) = start_mux(
        &dir,
        &[Vm {
            name: "a",
            mac: mac(0x5a),
            rxq: 1,
        }],
    );
    let connect = || Arc::new(vdpdk_pci::VfioUserPci::connect(&dir.sock("a")).unwrap());
    // A driver of the next major: it sees the device's major in the info block and refuses
    // first.
    let (ours, next) = (ABI_MAJOR, ABI_MAJOR + 1);
    let opts = OpenOptions {
        abi_major: next,
        ..Default::default()
    };
    match VdpdkPort::open_with(connect(), opts) {
        Err(Error::Version(m)) => assert!(
            m.contains(&format!("ABI {ours}.{ABI_MINOR}")) && m.contains(&format!("{next}.x")),
            "{m}"
        ),
        other => panic!("expected a version error, got {:?}", other.map(|_| ())),
    }
    // A driver that insists is refused by the device, with the reason.
    let opts = OpenOptions {
        abi_major: next,
        skip_version_check: true,
        ..Default::default()
    };
    match VdpdkPort::open_with(connect(), opts) {
        Err(Error::Version(m)) => assert!(
            m.contains(&format!("{next}.x")) && m.contains(&format!("{ours}.x")),
            "{m}"
        ),
        other => panic!("expected a version error, got {:?}", other.map(|_| ())),
    }
    // Requesting a feature the device does not offer is refused too.
    let opts = OpenOptions {
        features: vdpdk_core::abi::Features::TX_CSUM,
        force_features: true,
        ..Default::default()
    };
    assert!(matches!(
        VdpdkPort::open_with(connect(), opts),
        Err(Error::Version(_))
    ));
    // And a matching driver attaches.
    let port = VdpdkPort::open(connect()).unwrap();
    assert!(port.features().contains(vdpdk_core::abi::Features::FLOW));
    drop(port);
    wait_for(5, "slot free", || !mux.guests()[0].attached);
}
