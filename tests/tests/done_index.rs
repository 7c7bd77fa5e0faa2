//! How guest-pmd learns what host-mux finished: from the index host-mux publishes per queue
//! (`Features::TX_DONE_INDEX`, `Features::RX_DONE_INDEX`) or, without them, from each
//! descriptor's flags. Either way every TX buffer comes back to the pool, frames the host
//! refused count as TX errors, and received frames arrive whole and in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::raw::Raw;
use common::*;
use guest_pmd::{driver_features, OpenOptions, VdpdkPort};
use vdpdk_core::abi::desc::DESC_F_AVAIL;
use vdpdk_core::abi::Features;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{EthDev, Mempool, DEFAULT_BUF_SIZE};
use vdpdk_pci::VfioUserPci;

const GMAC: u8 = 0x6a;

/// host-mux with one guest "g" (MAC `GMAC`) on the pair wire.
fn one_guest_mux(tag: &str) -> (TempDir, host_mux::HostMux, Wire) {
    let dir = TempDir::new(tag);
    let (mux, wire) = start_mux(
        &dir,
        &[Vm {
            name: "g",
            mac: mac(GMAC),
            rxq: 1,
        }],
    );
    (dir, mux, wire)
}

/// host-mux with one guest "g", and guest-pmd attached asking for `features`.
fn guest_with(tag: &str, features: Features) -> (TempDir, host_mux::HostMux, Wire, VdpdkPort) {
    let (dir, mux, wire) = one_guest_mux(tag);
    let dev = Arc::new(VfioUserPci::connect(&dir.sock("g")).expect("connect"));
    let opts = OpenOptions {
        features,
        ..OpenOptions::default()
    };
    let port = VdpdkPort::open_with(dev, opts).expect("open");
    assert_eq!(
        port.features(),
        features - Features::TX_ZERO_COPY - Features::RX_ZERO_COPY,
        "host-mux offers every driver feature (zero-copy only when configured)"
    );
    (dir, mux, wire, port)
}

fn reclaims_and_counts_refusals(tag: &str, features: Features) {
    let (_dir, _mux, mut wire, mut port) = guest_with(tag, features);
    let gmac = mac(GMAC);
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
    // Frames still posted when the queue goes away go back to the pool with it.
    let mut last: Vec<_> = (0..32u64)
        .map(|i| {
            pool.alloc_packet(&udp_frame(WIRE_MAC, gmac, i, 64))
                .unwrap()
        })
        .collect();
    assert_eq!(tx.tx_burst(&mut last), 32);
    drop(tx);
    assert_eq!(pool.available(), full, "no buffer kept by a dropped queue");
}

fn receives_whole_and_in_order(tag: &str, features: Features) {
    let (_dir, _mux, mut wire, mut port) = guest_with(tag, features);
    let pool = Mempool::new("g", 256, DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 32, false).unwrap();
    // 5 rings' worth, 8 at a time, so the ring wraps and the index with it.
    let sent: Vec<Vec<u8>> = (0..160u64)
        .map(|i| udp_frame(mac(GMAC), WIRE_MAC, i, 60 + (i as usize % 7) * 100))
        .collect();
    let mut got = Vec::new();
    for chunk in sent.chunks(8) {
        wire.send(chunk);
        let want = got.len() + chunk.len();
        wait_for(10, "the chunk arrives", || {
            let mut v = Vec::new();
            rx.rx_burst(&mut v, 32);
            got.extend(v.iter().map(|m| m.data().to_vec()));
            got.len() >= want
        });
    }
    assert_eq!(got, sent);
    assert_eq!(port.stats().ipackets, 160);
}

#[test]
fn tx_buffers_come_back_by_the_published_index_on_a_ring_passed_by_laps() {
    reclaims_and_counts_refusals("reclaim-laps", driver_features());
}

#[test]
fn tx_buffers_come_back_by_the_published_index_on_a_ring_passed_by_flags() {
    reclaims_and_counts_refusals("reclaim-index", driver_features() - Features::TX_LAPS);
}

#[test]
fn tx_buffers_come_back_by_descriptor_flags_without_the_index() {
    let no_index = driver_features() - Features::TX_DONE_INDEX - Features::TX_LAPS;
    reclaims_and_counts_refusals("reclaim-flags", no_index);
}

/// With `TX_LAPS` host-mux takes descriptors by their lap's bit and never writes the TX ring:
/// after three laps, a refused descriptor in every eight, each descriptor still holds exactly
/// what the guest wrote, and the published index and refusal count tell the guest all. A
/// descriptor posted with the wrong lap's bit (what a stale slot or a flags-mode driver
/// leaves) is not taken.
#[test]
fn a_ring_passed_by_laps_is_never_written_by_the_host() {
    let (dir, _mux, mut wire) = one_guest_mux("laps-raw");
    let mut g = Raw::connect(&dir.sock("g"));
    let mut q = g.bring_up_with("laps-raw", Features::TX_DONE_INDEX | Features::TX_LAPS);
    assert!(q.tx.laps());
    let gmac = mac(GMAC);
    for lap in 0..3u32 {
        let mut posted = Vec::new();
        for i in 0..64u64 {
            let src = if i % 8 == 0 { mac(0x99) } else { gmac };
            let idx = g.send(&mut q, &udp_frame(WIRE_MAC, src, lap as u64 * 64 + i, 64));
            posted.push((idx, q.tx.read(idx)));
        }
        wait_for(10, "the host takes the lap", || {
            g.tx_progress() == ((lap + 1) * 64, (lap + 1) * 8)
        });
        assert_eq!(
            wire.recv(56, Duration::from_secs(10)).len(),
            56,
            "lap {lap}"
        );
        for (idx, d) in posted {
            let now = q.tx.read(idx);
            assert_eq!(
                (now.addr, now.len, now.flags),
                (d.addr, d.len, q.tx.avail_bit(idx)),
                "lap {lap}, descriptor {idx}: as the guest wrote it"
            );
        }
    }
    // Lap 3 is odd: its bit is clear. A slot posted with the bit set looks like lap 2's.
    let f = udp_frame(WIRE_MAC, gmac, 999, 64);
    let idx = g.send_flags(&mut q, &f, DESC_F_AVAIL);
    assert_eq!((idx, q.tx.avail_bit(idx)), (192, 0));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        g.tx_progress().0,
        192,
        "a stale-looking descriptor is not taken"
    );
    assert!(wire.recv(1, Duration::from_millis(100)).is_empty());
    // Posted again with lap 3's bit, it goes.
    let mut d = q.tx.read(idx);
    d.flags = q.tx.avail_bit(idx);
    q.tx.publish(idx, &d);
    g.kick_tx();
    wait_for(10, "the re-posted descriptor is taken", || {
        g.tx_progress().0 == 193
    });
    assert_eq!(wire.recv(1, Duration::from_secs(10)), vec![f]);
}

#[test]
fn rx_frames_are_read_by_the_published_index() {
    receives_whole_and_in_order("rx-index", driver_features());
}

#[test]
fn rx_frames_are_read_by_descriptor_flags_without_the_index() {
    receives_whole_and_in_order("rx-flags", driver_features() - Features::RX_DONE_INDEX);
}

#[test]
fn a_port_closed_right_after_its_last_burst_still_sends_it() {
    let (dir, _mux, mut wire) = one_guest_mux("close-drain");
    let pool = Mempool::new("g", 256, DEFAULT_BUF_SIZE).unwrap();
    // An application that sends its last burst and exits at once, again and again: each
    // close resets the device, which drops whatever the host had not taken yet.
    for round in 0..20u64 {
        let mut port = VdpdkPort::connect(dir.sock("g")).expect("connect");
        let (rx, mut tx) = start_single_queue(&mut port, &pool, 64, false).unwrap();
        let frames: Vec<Vec<u8>> = (0..48u64)
            .map(|i| udp_frame(WIRE_MAC, mac(GMAC), round * 48 + i, 64))
            .collect();
        let mut burst: Vec<_> = frames
            .iter()
            .map(|f| pool.alloc_packet(f).unwrap())
            .collect();
        assert_eq!(tx.tx_burst(&mut burst), 48);
        drop((tx, rx, port));
        assert_eq!(
            wire.recv(48, Duration::from_secs(10)),
            frames,
            "round {round}: every accepted frame left"
        );
    }
    assert_eq!(pool.available(), 256);
}

/// A TX queue takes finished buffers back in batches, not on every burst, yet never keeps
/// more than `TX_RECLAIM_HELD` (128) of them from an application sending one frame at a
/// time: with 256 buffers to send from and a ring of 1024, a thousand frames go out without
/// the pool running dry, and an empty burst brings every buffer home.
#[test]
fn a_tx_queue_keeps_a_bounded_number_of_finished_buffers() {
    let (_dir, _mux, mut wire, mut port) = guest_with("reclaim-bound", driver_features());
    // 1024 buffers go to the RX ring, 256 are left for TX.
    let pool = Mempool::new("g", 1024 + 256, DEFAULT_BUF_SIZE).unwrap();
    let (_rx, mut tx) = start_single_queue(&mut port, &pool, 1024, false).unwrap();
    let full = pool.available();
    let (mut most_held, mut batches) = (0, 0);
    for i in 0..1000u64 {
        let f = udp_frame(WIRE_MAC, mac(GMAC), i, 64);
        let m = pool
            .alloc_packet(&f)
            .unwrap_or_else(|e| panic!("frame {i}: {e}"));
        let before = pool.available();
        assert_eq!(tx.tx_burst(&mut vec![m]), 1);
        batches += (pool.available() > before) as u32;
        // Once the frame is on the wire the host has finished every descriptor so far.
        assert_eq!(wire.recv(1, Duration::from_secs(10)), vec![f], "frame {i}");
        most_held = most_held.max(full - pool.available());
    }
    assert!(most_held <= 128, "{most_held} buffers held by the queue");
    assert!(
        (7..=9).contains(&batches),
        "buffers came back in {batches} batches, not frame by frame"
    );
    wait_for(10, "every buffer back in the pool", || {
        tx.tx_burst(&mut Vec::new());
        pool.available() == full
    });
}
