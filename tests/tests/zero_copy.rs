//! Zero-copy TX (`Features::TX_ZERO_COPY`, host-mux's `zero_copy_tx`): a frame's payload
//! reaches the backend in place, at the guest's own address, behind a host copy of its
//! headers; the guest gets the buffer back only once the backend is done with it; and a
//! guest that unmaps its memory, or dies, mid-traffic never leaves the backend reading
//! unmapped memory.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{Raw, RawQueues};
use common::*;
use guest_pmd::{OpenOptions, VdpdkPort};
use vdpdk_core::abi::desc::{DESC_F_AVAIL, DESC_F_ERROR};
use vdpdk_core::abi::Features;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{DmaMemory, EthDev, Mbuf, Mempool, DEFAULT_BUF_SIZE};
use vdpdk_pci::{PciDevice, VfioUserPci};

const GMAC: u8 = 0x7a;
const PEER: u8 = 0x7b;
/// What host-mux copies of a lent frame (`LENT_HEADER`); the rest is lent.
const HEADER: usize = 128;
/// Frames this long are lent; shorter ones are copied (`LEND_MIN_FRAME` is 1024).
const BIG: usize = 1200;

/// host-mux on the pair wire with zero-copy TX on, serving "g" and "peer", guarding
/// unmapped memory (a read of it faults at once instead of reading stale bytes).
fn zero_copy_mux(tag: &str) -> (TempDir, host_mux::HostMux, Wire) {
    let dir = TempDir::new(tag);
    let vms = guest_and_peer(mac(GMAC), mac(PEER));
    let cfg = host_mux::MuxConfig {
        zero_copy_tx: true,
        guard_unmapped: true,
        ..mux_config(&dir, &vms)
    };
    let (mux, wire) = start_mux_cfg(cfg);
    (dir, mux, wire)
}

fn open(dir: &TempDir, name: &str, features: Features) -> VdpdkPort {
    let dev = Arc::new(VfioUserPci::connect(&dir.sock(name)).expect("connect"));
    let opts = OpenOptions {
        features,
        ..OpenOptions::default()
    };
    VdpdkPort::open_with(dev, opts).expect("open")
}

/// Takes `n` frames off the wire as mbufs (chains kept), within 10 s.
fn take(wire: &mut Wire, n: usize) -> Vec<Mbuf> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n && Instant::now() < deadline {
        if wire.rx.rx_burst(&mut out, 32) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert_eq!(out.len(), n, "frames on the wire");
    out
}

/// The permissions of this process's mapping holding `addr` ("rw-s", "---p", ...).
fn perms_at(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .find_map(|l| {
            let (range, rest) = l.split_once(' ')?;
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            (a <= addr && addr < b).then(|| rest[..4].to_string())
        })
        .unwrap_or_else(|| "unmapped".into())
}

fn lent_frames_counted(mux: &host_mux::HostMux) -> u64 {
    mux.pollers().iter().map(|p| p.tx_lent).sum()
}

#[test]
fn a_big_frame_reaches_the_backend_in_guest_memory_and_comes_back_when_the_backend_is_done() {
    let (dir, mux, mut wire) = zero_copy_mux("zc-addr");
    let mut port = open(&dir, "g", guest_pmd::driver_features());
    assert!(port.features().contains(Features::TX_ZERO_COPY));
    let pool = Mempool::new("g", 256, DEFAULT_BUF_SIZE).unwrap();
    let (_rx, mut tx) = start_single_queue(&mut port, &pool, 64, false).unwrap();
    let full = pool.available();
    // Big frames to the wire are lent; a small one is copied.
    let sizes = [BIG, 1500, 1000, BIG];
    let frames: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| udp_frame(WIRE_MAC, mac(GMAC), i as u64, len))
        .collect();
    let mut burst: Vec<Mbuf> = frames
        .iter()
        .map(|f| pool.alloc_packet(f).unwrap())
        .collect();
    let guest_iovas: Vec<u64> = burst.iter().map(Mbuf::data_iova).collect();
    tx.tx_burst(&mut burst);
    assert!(burst.is_empty());
    let got = take(&mut wire, frames.len());
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            m.to_vec(),
            frames[i],
            "frame {i} arrives whole and in order"
        );
        if sizes[i] < 1024 {
            assert_eq!(m.nb_segs(), 1, "a small frame is copied");
            assert!(!m.is_lent());
            continue;
        }
        let lent = m
            .next_segment()
            .expect("a lent frame is a header and a lent payload");
        assert!(
            !m.is_lent() && m.len() == HEADER,
            "the header is a host copy"
        );
        assert!(lent.is_lent());
        assert_eq!(
            lent.data_iova(),
            guest_iovas[i] + HEADER as u64,
            "the backend sees the guest's own buffer, not a copy"
        );
        assert_eq!(lent.len(), sizes[i] - HEADER);
    }
    assert_eq!(lent_frames_counted(&mux), 3);
    // While the wire holds the lent frames their buffers stay the guest's to lend: only the
    // copied one comes back.
    // Descriptors are released in ring order, so the copied one waits for the lent before it.
    std::thread::sleep(Duration::from_millis(50));
    tx.tx_burst(&mut Vec::new());
    assert_eq!(
        pool.available(),
        full - 4,
        "lent buffers wait for the backend"
    );
    drop(got);
    wait_for(10, "every buffer back once the wire freed them", || {
        tx.tx_burst(&mut Vec::new());
        pool.available() == full
    });
    let s = port.stats();
    assert_eq!((s.opackets, s.oerrors), (4, 0));
}

#[test]
fn what_is_not_lent_is_copied_and_checked_as_ever() {
    let (dir, mux, mut wire) = zero_copy_mux("zc-rules");
    let mut port = open(&dir, "g", guest_pmd::driver_features());
    let mut peer = open(&dir, "peer", guest_pmd::driver_features());
    let pool = Mempool::new("g", 256, DEFAULT_BUF_SIZE).unwrap();
    let peer_pool = Mempool::new("peer", 256, DEFAULT_BUF_SIZE).unwrap();
    let (_rx, mut tx) = start_single_queue(&mut port, &pool, 64, false).unwrap();
    let (mut peer_rx, _peer_tx) = start_single_queue(&mut peer, &peer_pool, 64, false).unwrap();
    let full = pool.available();
    let to_peer = udp_frame(mac(PEER), mac(GMAC), 1, BIG);
    let spoofed = udp_frame(WIRE_MAC, mac(0x99), 2, BIG);
    let to_wire = udp_frame(WIRE_MAC, mac(GMAC), 3, BIG);
    let mut burst: Vec<Mbuf> = [&to_peer, &spoofed, &to_wire]
        .iter()
        .map(|f| pool.alloc_packet(f).unwrap())
        .collect();
    tx.tx_burst(&mut burst);
    // Another guest gets a whole copy, never lent memory.
    let mut got = Vec::new();
    wait_for(10, "the peer receives its frame", || {
        peer_rx.rx_burst(&mut got, 32);
        !got.is_empty()
    });
    assert_eq!((got[0].to_vec(), got[0].nb_segs()), (to_peer.clone(), 1));
    drop(got);
    // A spoofed source is refused before anything is lent; the rest goes out.
    let out = take(&mut wire, 1);
    assert_eq!(out[0].to_vec(), to_wire);
    assert_eq!(
        lent_frames_counted(&mux),
        1,
        "only the frame to the wire was lent"
    );
    drop(out);
    wait_for(10, "every buffer back", || {
        tx.tx_burst(&mut Vec::new());
        pool.available() == full
    });
    assert_eq!(
        port.stats().oerrors,
        1,
        "the spoofed frame counts as refused"
    );

    // A driver that does not ask for zero-copy gets copies.
    drop((tx, _rx, port));
    let mut port = open(&dir, "g", Features::TX_DONE_INDEX);
    let (_rx, mut tx) = start_single_queue(&mut port, &pool, 64, false).unwrap();
    let mut burst = vec![pool.alloc_packet(&to_wire).unwrap()];
    tx.tx_burst(&mut burst);
    let out = take(&mut wire, 1);
    assert_eq!((out[0].to_vec(), out[0].nb_segs()), (to_wire, 1));
    assert_eq!(lent_frames_counted(&mux), 1);
}

/// A raw guest (ABI by hand, zero-copy agreed) whose `n` big frames, in a DMA region of
/// their own (apart from its rings), were taken and lent to the wire, which holds them.
/// Returns the guest, its queues, the buffers' region and the frames.
fn lend_and_hold(
    dir: &TempDir,
    mux: &host_mux::HostMux,
    n: usize,
) -> (Raw, RawQueues, DmaMemory, Vec<Vec<u8>>) {
    let mut g = Raw::connect(&dir.sock("g"));
    let mut q = g.bring_up_with("zc-raw", Features::TX_ZERO_COPY);
    let bufs = DmaMemory::alloc_with("zc-bufs", 1 << 20, false).unwrap();
    g.dev.dma_map(&bufs).unwrap();
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| udp_frame(WIRE_MAC, mac(GMAC), i as u64, BIG))
        .collect();
    for (i, f) in frames.iter().enumerate() {
        let off = i * 2048;
        // SAFETY: n * 2048 bytes fit in our own 1 MiB mapping.
        unsafe { std::ptr::copy_nonoverlapping(f.as_ptr(), bufs.as_ptr().add(off), f.len()) };
        g.post_tx(&mut q, bufs.iova_base() + off as u64, f.len() as u16);
    }
    wait_for(10, "host-mux lends every frame to the wire", || {
        lent_frames_counted(mux) == n as u64
    });
    // Lent descriptors stay the host's until the wire is done with them.
    assert!((0..n as u16).all(|i| q.tx.flags(i) & DESC_F_AVAIL != 0));
    (g, q, bufs, frames)
}

/// Checks lent frames still read as sent after their guest let go of the memory, and that
/// the memory is unmapped here once the wire freed them.
fn read_after_the_guest_let_go(wire: &mut Wire, frames: &[Vec<u8>]) {
    let got = take(wire, frames.len());
    let addr = got[0].next_segment().expect("lent").data_addr() as usize;
    assert_ne!(
        perms_at(addr),
        "---p",
        "still mapped while the wire holds it"
    );
    for (m, f) in got.iter().zip(frames) {
        // A read of unmapped (guarded) memory would kill this test with SIGSEGV.
        assert_eq!(&m.to_vec(), f);
    }
    drop(got);
    // The poller lets go of the memory the next time it looks at the (gone) guest.
    wait_for(
        10,
        "the guest's memory unmapped once the wire is done",
        || perms_at(addr) == "---p",
    );
}

#[test]
fn a_guest_that_unmaps_its_buffers_mid_traffic_leaves_them_mapped_until_the_wire_is_done() {
    let (dir, mux, mut wire) = zero_copy_mux("zc-unmap");
    let (mut g, mut q, bufs, frames) = lend_and_hold(&dir, &mux, 8);
    // The guest takes its buffer memory back while the wire holds its frames (its queues keep
    // running: their rings are elsewhere).
    g.dev
        .dma_unmap(bufs.iova_base(), bufs.len() as u64)
        .expect("unmap");
    drop(bufs);
    read_after_the_guest_let_go(&mut wire, &frames);
    // The guest gets its descriptors back, and the queue still works.
    wait_for(10, "the lent descriptors released", || {
        (0..8).all(|i| q.tx.flags(i) & DESC_F_AVAIL == 0)
    });
    let f = udp_frame(WIRE_MAC, mac(GMAC), 99, 64);
    g.send(&mut q, &f);
    assert_eq!(take(&mut wire, 1)[0].to_vec(), f);
    g.ok(vdpdk_core::abi::CtrlOp::Stop, [0; 4]);
}

#[test]
fn a_guest_that_dies_mid_traffic_leaves_its_memory_mapped_until_the_wire_is_done() {
    let (dir, mux, mut wire) = zero_copy_mux("zc-kill");
    let (g, q, bufs, frames) = lend_and_hold(&dir, &mux, 8);
    // Gone without a word: the connection drops, its memory with it.
    drop((g, q, bufs));
    wait_for(10, "host-mux notices the guest left", || {
        !mux.guests()[0].attached
    });
    read_after_the_guest_let_go(&mut wire, &frames);
}

#[test]
fn a_refused_descriptor_among_lent_ones_comes_back_in_ring_order_with_its_error() {
    let (dir, mux, mut wire) = zero_copy_mux("zc-refused");
    let mut g = Raw::connect(&dir.sock("g"));
    let mut q = g.bring_up_with("zc-refused", Features::TX_ZERO_COPY);
    let bufs = DmaMemory::alloc_with("zc-bufs", 1 << 20, false).unwrap();
    g.dev.dma_map(&bufs).unwrap();
    let f = udp_frame(WIRE_MAC, mac(GMAC), 1, BIG);
    // SAFETY: the frame fits in our own 1 MiB mapping.
    unsafe { std::ptr::copy_nonoverlapping(f.as_ptr(), bufs.as_ptr(), f.len()) };
    let at = bufs.iova_base();
    g.post_tx(&mut q, at, BIG as u16); // lent
    g.post_tx(&mut q, 0xdead_0000_0000, BIG as u16); // outside the guest's map: refused
    g.post_tx(&mut q, at, BIG as u16); // lent
    wait_for(10, "both good frames lent", || {
        lent_frames_counted(&mux) == 2
    });
    let avail = |i| q.tx.flags(i) & DESC_F_AVAIL != 0;
    assert!(
        (0..3).all(avail),
        "the refusal waits behind the lent frame before it"
    );
    let got = take(&mut wire, 2);
    assert!(got.iter().all(|m| m.to_vec() == f));
    drop(got);
    wait_for(10, "all three released", || !(0..3).any(avail));
    let flags: Vec<u16> = (0..3).map(|i| q.tx.flags(i) & DESC_F_ERROR).collect();
    assert_eq!(
        flags,
        [0, DESC_F_ERROR, 0],
        "only the bad one carries the error"
    );
}

/// A raw guest agreeing to `features`, its whole ring (64 descriptors of one big frame) lent
/// to and held by the wire.
struct LentRing {
    _dir: TempDir,
    mux: host_mux::HostMux,
    wire: Wire,
    g: Raw,
    q: RawQueues,
    bufs: DmaMemory,
    frame: Vec<u8>,
}

fn lend_a_whole_ring(tag: &str, features: Features) -> LentRing {
    let (dir, mux, wire) = zero_copy_mux(tag);
    let mut g = Raw::connect(&dir.sock("g"));
    let mut q = g.bring_up_with(tag, features);
    let bufs = DmaMemory::alloc_with(&format!("{tag}-bufs"), 1 << 20, false).unwrap();
    g.dev.dma_map(&bufs).unwrap();
    let frame = udp_frame(WIRE_MAC, mac(GMAC), 1, BIG);
    // SAFETY: the frame fits in our own 1 MiB mapping.
    unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), bufs.as_ptr(), frame.len()) };
    for _ in 0..64 {
        g.post_tx(&mut q, bufs.iova_base(), BIG as u16);
    }
    wait_for(10, "the whole ring lent", || {
        lent_frames_counted(&mux) == 64
    });
    LentRing {
        _dir: dir,
        mux,
        wire,
        g,
        q,
        bufs,
        frame,
    }
}

#[test]
fn a_guest_that_leaves_lent_descriptors_avail_cannot_get_a_slot_lent_twice() {
    // A whole ring lent and held by the wire. Their AVAIL flags stay set: to a host that took
    // a lap too many, descriptor 0 would look posted again.
    let LentRing {
        mux,
        mut wire,
        g,
        mut q,
        bufs,
        frame,
        ..
    } = lend_a_whole_ring("zc-lap", Features::TX_ZERO_COPY);
    let got = take(&mut wire, 64);
    assert_eq!(lent_frames_counted(&mux), 64, "no slot taken a second time");
    drop(got);
    wait_for(10, "the ring released", || {
        (0..64).all(|i| q.tx.flags(i) & DESC_F_AVAIL == 0)
    });
    assert!(
        wire.recv(1, Duration::from_millis(200)).is_empty(),
        "nothing sent twice"
    );
    // The poller is alive and the queue still works.
    g.post_tx(&mut q, bufs.iova_base(), BIG as u16);
    assert_eq!(take(&mut wire, 1)[0].to_vec(), frame);
}

/// The same on a ring passed by laps, where the host never clears a flag: a guest that posts
/// the next lap into slots still lent (64 more behind the 64 the wire holds) gets none of them
/// taken until the wire lets the first go, and then each exactly once.
#[test]
fn a_guest_that_posts_a_lap_ahead_into_lent_slots_waits_for_them() {
    let features = Features::TX_ZERO_COPY | Features::TX_DONE_INDEX | Features::TX_LAPS;
    let LentRing {
        mux,
        mut wire,
        g,
        mut q,
        bufs,
        frame,
        ..
    } = lend_a_whole_ring("zc-laps", features);
    // Lap 1 over the lent slots.
    for _ in 0..64 {
        g.post_tx(&mut q, bufs.iova_base(), BIG as u16);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        lent_frames_counted(&mux),
        64,
        "nothing taken over a lent slot"
    );
    assert_eq!(
        g.tx_progress().0,
        0,
        "nothing released while the wire holds it"
    );
    let first = take(&mut wire, 64);
    drop(first);
    wait_for(10, "the second lap lent once the first is released", || {
        lent_frames_counted(&mux) == 128
    });
    let second = take(&mut wire, 64);
    assert!(second.iter().all(|m| m.to_vec() == frame));
    drop(second);
    wait_for(10, "both laps released", || g.tx_progress().0 == 128);
    assert!(
        wire.recv(1, Duration::from_millis(200)).is_empty(),
        "nothing sent twice"
    );
}
