//! How guest-pmd takes back its TX buffers: from the index host-mux publishes per queue
//! (`Features::TX_DONE_INDEX`) or, without it, from each descriptor's flags. Either way every
//! buffer comes back to the pool, and frames the host refused count as TX errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use guest_pmd::{driver_features, OpenOptions, VdpdkPort};
use vdpdk_core::abi::Features;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{EthDev, Mempool, DEFAULT_BUF_SIZE};
use vdpdk_pci::VfioUserPci;

fn reclaims_and_counts_refusals(tag: &str, features: Features) {
    let dir = TempDir::new(tag);
    let gmac = mac(0x6a);
    let (_mux, mut wire) = start_mux(
        &dir,
        &[Vm {
            name: "g",
            mac: gmac,
            rxq: 1,
        }],
    );
    let dev = Arc::new(VfioUserPci::connect(&dir.sock("g")).expect("connect"));
    let opts = OpenOptions {
        features,
        ..OpenOptions::default()
    };
    let mut port = VdpdkPort::open_with(dev, opts).expect("open");
    assert_eq!(
        port.features().contains(Features::TX_DONE_INDEX),
        features.contains(Features::TX_DONE_INDEX)
    );
    let pool = Mempool::new("g", 256, DEFAULT_BUF_SIZE).unwrap();
    let (_rx, mut tx) = start_single_queue(&mut port, &pool, 64, false).unwrap();
    let full = pool.available();
    // 3 rounds of a ring's worth: buffers must come back for the later rounds to be taken.
    let mut sent = 0;
    for round in 0..3u64 {
        let mut frames = Vec::new();
        for i in 0..64u64 {
            // Every 8th frame carries another source MAC: the host refuses it (spoof check).
            let src = if i % 8 == 0 { mac(0x99) } else { gmac };
            let f = udp_frame(WIRE_MAC, src, round * 64 + i, 64);
            frames.push(pool.alloc_packet(&f).unwrap());
        }
        wait_for(10, "the ring takes the round", || {
            tx.tx_burst(&mut frames);
            frames.is_empty()
        });
        sent += wire.recv(56, Duration::from_secs(10)).len();
    }
    assert_eq!(sent, 3 * 56, "the frames with the guest's own MAC went out");
    // A last burst reclaims what the host finished since.
    wait_for(10, "every buffer back in the pool", || {
        tx.tx_burst(&mut Vec::new());
        pool.available() == full
    });
    let s = port.stats();
    assert_eq!((s.opackets, s.oerrors), (3 * 64, 3 * 8));
}

#[test]
fn buffers_come_back_by_the_published_index() {
    reclaims_and_counts_refusals("reclaim-index", driver_features());
}

#[test]
fn buffers_come_back_by_descriptor_flags_without_the_index() {
    reclaims_and_counts_refusals("reclaim-flags", driver_features() - Features::TX_DONE_INDEX);
}
