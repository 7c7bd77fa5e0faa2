//! Multi-buffer packets at host-mux's edges: a chain from the backend reaches a guest whole
//! (gathered into one guest buffer); a chain a guest hands to guest-pmd, whose descriptors
//! carry one buffer each, is refused and counted, never sent truncated.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{EthDev, Mbuf, Mempool, DEFAULT_BUF_SIZE};

/// `frame` as a chain of two buffers split at `cut`.
fn two_buffers(pool: &Mempool, frame: &[u8], cut: usize) -> Mbuf {
    let mut m = pool.alloc().unwrap();
    m.copy_from(&frame[..cut]).unwrap();
    let mut tail = pool.alloc().unwrap();
    tail.copy_from(&frame[cut..]).unwrap();
    m.chain(tail);
    m
}

#[test]
fn chains_are_gathered_towards_guests_and_refused_from_them() {
    let dir = TempDir::new("multiseg");
    let gmac = mac(0x5c);
    let (_mux, mut wire, mut port) = mux_with_guest(&dir, gmac);
    assert_eq!(
        port.info().max_mtu,
        wire.port.info().mtu,
        "a guest may use the MTU the backend runs at, no more"
    );
    let pool = Mempool::new("g", 1024, DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, mut tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();

    // Wire -> guest: 1000 B in two backend buffers arrive as one frame.
    let inbound = udp_frame(gmac, WIRE_MAC, 1, 1000);
    let mut v = vec![two_buffers(&wire.pool, &inbound, 100)];
    assert_eq!(wire.tx.tx_burst(&mut v), 1);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.is_empty() && Instant::now() < deadline {
        if rx.rx_burst(&mut got, 8) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert_eq!(got.len(), 1, "the chained frame reached the guest");
    assert!(!got[0].is_chained());
    assert_eq!(got[0].data(), &inbound[..], "byte-identical");

    // Guest -> wire: the chain is taken and dropped; the plain frame behind it goes out.
    let chained = udp_frame(WIRE_MAC, gmac, 2, 800);
    let plain = udp_frame(WIRE_MAC, gmac, 3, 600);
    let mut v = vec![
        two_buffers(&pool, &chained, 60),
        pool.alloc_packet(&plain).unwrap(),
    ];
    assert_eq!(tx.tx_burst(&mut v), 2, "the refused chain counts as taken");
    assert_eq!(wire.recv(1, Duration::from_secs(10)), vec![plain]);
    let s = port.stats();
    assert_eq!((s.opackets, s.oerrors), (1, 1));
    assert!(
        wire.recv(1, Duration::from_millis(300)).is_empty(),
        "nothing truncated followed"
    );
}
