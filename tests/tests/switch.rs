//! Guest-to-guest switching inside host-mux: a frame one VM sends to another VM's MAC lands in
//! that VM's RX ring and never on the wire; a broadcast reaches every other VM and the wire but
//! not its sender; the receiving VM's flow rules apply. (Spoofed sources: attacks.rs.)

mod common;

use std::time::Duration;

use common::*;
use vdpdk_core::abi::StatsIndex;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::MacAddr;

fn vm(name: &'static str, mac: MacAddr) -> Vm {
    Vm { name, mac, rxq: 1 }
}

#[test]
fn frames_between_guests_are_switched_by_host_mux() {
    let dir = TempDir::new("switch");
    let (a_mac, b_mac, c_mac) = (mac(0x5a), mac(0x5b), mac(0x5c));
    let (mux, mut wire) = start_mux(&dir, &[vm("a", a_mac), vm("b", b_mac), vm("c", c_mac)]);
    let mut a = GuestProc::spawn(&dir.sock("a"), 1);
    let mut b = GuestProc::spawn(&dir.sock("b"), 1);
    let mut c = GuestProc::spawn(&dir.sock("c"), 1);
    let switched = |mux: &host_mux::HostMux| mux.pollers().iter().map(|p| p.switched).sum::<u64>();

    // Unicast A -> B, 1500-byte frames: B gets them intact and in order; C and the wire nothing.
    let to_b: Vec<Vec<u8>> = (0..300).map(|s| udp_frame(b_mac, a_mac, s, 1500)).collect();
    b.start("recv 300 30000");
    let sent = a.cmd(&format!("send 300 1500 {b_mac}"));
    assert_eq!(GuestProc::sent(&sent), 300);
    assert_eq!(
        GuestProc::parse_recv(&b.answer())[0],
        (300, digest(&to_b)),
        "B got A's frames, byte-identical"
    );
    assert_eq!(GuestProc::parse_recv(&c.cmd("recv 1 300"))[0].0, 0);
    assert_eq!(GuestProc::parse_recv(&a.cmd("recv 1 100"))[0].0, 0);
    assert!(
        wire.recv(1, Duration::from_millis(300)).is_empty(),
        "nothing went out"
    );
    assert_eq!(switched(&mux), 300);

    // Broadcast from C: A and B get each frame, the wire too, C not its own.
    let bcast: Vec<Vec<u8>> = (0..50)
        .map(|s| udp_frame(MacAddr::BROADCAST, c_mac, s, 64))
        .collect();
    a.start("recv 50 30000");
    b.start("recv 50 30000");
    assert_eq!(
        GuestProc::sent(&c.cmd(&format!("send 50 64 {}", MacAddr::BROADCAST))),
        50
    );
    assert_eq!(GuestProc::parse_recv(&a.answer())[0], (50, digest(&bcast)));
    assert_eq!(GuestProc::parse_recv(&b.answer())[0], (50, digest(&bcast)));
    assert_eq!(
        wire.recv(50, Duration::from_secs(10)),
        bcast,
        "and on the wire"
    );
    assert_eq!(GuestProc::parse_recv(&c.cmd("recv 1 300"))[0].0, 0);
    assert_eq!(switched(&mux), 400);

    // B's rule dropping everything addressed to it holds for frames from A as from the wire.
    let ok = b.cmd(&format!("flow ethdst {b_mac} drop"));
    assert!(ok.starts_with("FLOW ok"), "{ok}");
    assert_eq!(GuestProc::sent(&a.cmd(&format!("send 40 128 {b_mac}"))), 40);
    wait_for(10, "B's rule dropped A's 40 frames", || {
        mux.guests()[1].stats[StatsIndex::RxFlowDrop as usize] == 40
    });
    assert_eq!(GuestProc::parse_recv(&b.cmd("recv 1 300"))[0].0, 0);
    assert!(
        wire.recv(1, Duration::from_millis(300)).is_empty(),
        "not hairpinned either"
    );

    // Counters agree: B received 350, A sent 340, the wire got the 50 broadcasts.
    let hb = &mux.guests()[1].stats;
    assert_eq!(hb[StatsIndex::RxPackets as usize], 350);
    assert_eq!(mux.guests()[0].stats[StatsIndex::TxPackets as usize], 340);
    assert_eq!(vdpdk_core::EthDev::stats(&wire.port).ipackets, 50);
    a.quit();
    b.quit();
    c.quit();
}
