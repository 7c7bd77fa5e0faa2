//! Issue #5 acceptance: event mode without lost wake-ups, and DMA remaps under traffic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use guest_pmd::VdpdkPort;
use host_mux::{BackendConfig, ClusterConfig, HostMux, MuxConfig, PollMode, VmConfig};
use vdpdk_core::abi::StatsIndex;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue};

fn mux_with(
    dir: &TempDir,
    vms: &[(&str, MacAddr)],
    tune: impl FnOnce(&mut MuxConfig),
) -> (HostMux, Wire) {
    let vms = vms
        .iter()
        .map(|(name, mac)| VmConfig {
            name: name.to_string(),
            socket: dir.sock(name),
            mac: *mac,
            rx_queues: 1,
            tx_queues: 1,
            cluster: 0,
        })
        .collect();
    let mut cfg = MuxConfig::new(BackendConfig::Pair, vms);
    tune(&mut cfg);
    start_mux_cfg(cfg)
}

/// Waits for one frame on `rx`, either spinning or asleep on its interrupt.
fn wait_one(rx: &mut dyn RxQueue, buf: &mut Vec<Mbuf>, sleep: bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if rx.rx_burst(buf, 32) > 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        if sleep {
            rx.enable_intr().unwrap();
            let mut p = libc::pollfd {
                fd: rx.intr_fd().unwrap(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, limit.as_millis() as i32) };
            rx.disable_intr().unwrap();
        }
    }
}

#[test]
fn no_wakeup_is_lost_across_100k_arm_arrive_races() {
    let dir = TempDir::new("wakeup");
    let gmac = mac(0x7a);
    // Pollers arm after a single empty round and sleep with no timeout: a lost wake-up hangs.
    let (mux, mut wire) = mux_with(&dir, &[("a", gmac)], |c| {
        c.idle_polls = 1;
        c.sleep_timeout_ms = 0;
        c.clusters = vec![ClusterConfig {
            cpus: vec![],
            mode: PollMode::Split,
        }];
    });
    let mut port = VdpdkPort::connect(dir.sock("a")).unwrap();
    let pool = Mempool::new("g", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, mut tx) = start_single_queue(&mut port, &pool, 256, true).unwrap();
    let to_guest = udp_frame(gmac, WIRE_MAC, 1, 64);
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let iterations: u32 = 100_000;
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    for i in 0..iterations {
        // Wire -> guest: the RX poller must wake on the backend interrupt; every 4th time the
        // guest itself sleeps on its RX interrupt.
        let t = Instant::now();
        wire.send(std::slice::from_ref(&to_guest));
        assert!(
            wait_one(&mut *rx, &mut buf, i % 4 == 0, Duration::from_secs(5)),
            "frame {i} to the guest never arrived: lost wake-up"
        );
        Mempool::free_bulk(&mut buf);
        // Guest -> wire: the TX poller must wake on the guest's kick.
        let mut m = pool.alloc().unwrap();
        m.copy_from(&udp_frame(WIRE_MAC, gmac, i as u64, 64))
            .unwrap();
        out.push(m);
        assert_eq!(tx.tx_burst(&mut out), 1);
        assert!(
            wait_one(&mut *wire.rx, &mut buf, false, Duration::from_secs(5)),
            "frame {i} from the guest never left: lost kick"
        );
        Mempool::free_bulk(&mut buf);
        worst = worst.max(t.elapsed());
    }
    let sleeps: u64 = mux.pollers().iter().map(|p| p.sleeps).sum();
    println!(
        "{iterations} round trips through sleeping pollers in {:.1} s, {sleeps} poller sleeps, worst {:?}",
        t0.elapsed().as_secs_f64(),
        worst
    );
    assert!(
        sleeps >= iterations as u64,
        "the pollers were not actually asleep ({sleeps} sleeps)"
    );
}

#[test]
fn guest_remapping_its_memory_in_a_loop_harms_no_one() {
    let dir = TempDir::new("remap");
    let (rmac, smac) = (mac(0x8a), mac(0x8b));
    // Unmapped guest memory becomes inaccessible: a poller using a stale pointer would crash
    // this test process.
    let (mux, mut wire) = mux_with(&dir, &[("remapper", rmac), ("steady", smac)], |c| {
        c.guard_unmapped = true;
        c.idle_polls = 64;
    });
    let mut steady = GuestProc::spawn(&dir.sock("steady"), 1);
    steady.start("recv 2000 60000");

    let mut port = VdpdkPort::connect(dir.sock("remapper")).unwrap();
    let pool = Mempool::new("r", 2048, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, mut tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();
    let to_steady: Vec<Vec<u8>> = (0..2000)
        .map(|s| udp_frame(smac, WIRE_MAC, s, 100))
        .collect();
    let to_remapper: Vec<Vec<u8>> = (0..16).map(|s| udp_frame(rmac, WIRE_MAC, s, 100)).collect();
    let (mut buf, mut out) = (Vec::new(), Vec::<Mbuf>::new());
    let t0 = Instant::now();
    let mut remaps = 0u32;
    let mut chunk = to_steady.chunks(20);
    while t0.elapsed() < Duration::from_secs(3) || remaps < 200 {
        port.remap_dma().unwrap();
        remaps += 1;
        // Traffic both ways for the remapper while its memory comes and goes.
        wire.send(&to_remapper);
        while out.len() < 16 {
            let mut m = pool.alloc().unwrap();
            m.copy_from(&udp_frame(WIRE_MAC, rmac, remaps as u64, 100))
                .unwrap();
            out.push(m);
        }
        tx.tx_burst(&mut out);
        rx.rx_burst(&mut buf, 32);
        Mempool::free_bulk(&mut buf);
        wire.rx.rx_burst(&mut buf, 32);
        Mempool::free_bulk(&mut buf);
        if let Some(c) = chunk.next() {
            wire.send(c);
        }
    }
    for c in chunk {
        wire.send(c);
    }
    let r = GuestProc::parse_recv(&steady.answer());
    assert_eq!(
        r[0],
        (2000, digest(&to_steady)),
        "the other guest lost nothing"
    );

    // The remapper still works once it stops remapping.
    let _ = wire.recv(1_000_000, Duration::from_millis(300));
    Mempool::free_bulk(&mut out);
    let sent_before = mux.guests()[0].stats[StatsIndex::TxPackets as usize];
    for s in 0..50 {
        let mut m = pool.alloc().unwrap();
        m.copy_from(&udp_frame(WIRE_MAC, rmac, 10_000 + s, 100))
            .unwrap();
        out.push(m);
    }
    while !out.is_empty() {
        tx.tx_burst(&mut out);
    }
    let got = wire.recv(50, Duration::from_secs(10));
    assert_eq!(got.len(), 50);
    assert_eq!(
        mux.guests()[0].stats[StatsIndex::TxPackets as usize] - sent_before,
        50
    );
    let g = &mux.guests()[0];
    println!(
        "{remaps} remaps in {:.1} s; host refused {} TX and {} RX descriptors during the gaps",
        t0.elapsed().as_secs_f64(),
        g.stats[StatsIndex::TxBadDesc as usize],
        g.stats[StatsIndex::RxBadDesc as usize]
    );
    assert!(g.running, "remapping buffers never stops the device");
    steady.quit();
}

#[test]
fn two_clusters_each_serve_their_guests_and_broadcast_reaches_both() {
    let dir = TempDir::new("clusters");
    let (amac, bmac) = (mac(0x9a), mac(0x9b));
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let vms = vec![
        VmConfig {
            name: "a".into(),
            socket: dir.sock("a"),
            mac: amac,
            rx_queues: 1,
            tx_queues: 1,
            cluster: 0,
        },
        VmConfig {
            name: "b".into(),
            socket: dir.sock("b"),
            mac: bmac,
            rx_queues: 1,
            tx_queues: 1,
            cluster: 1,
        },
    ];
    let cfg = MuxConfig {
        idle_polls: 64,
        clusters: vec![
            ClusterConfig {
                cpus: vec![0],
                mode: PollMode::Auto,
            },
            ClusterConfig {
                cpus: vec![1 % ncpu],
                mode: PollMode::Split,
            },
        ],
        ..MuxConfig::new(BackendConfig::Pair, vms)
    };
    let (mux, mut wire) = start_mux_cfg(cfg);
    let roles: Vec<(String, &str)> = mux
        .pollers()
        .iter()
        .map(|p| (p.name.clone(), p.role))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("c0-rxtx".to_string(), "rx+tx"),
            ("c1-rx".into(), "rx"),
            ("c1-tx".into(), "tx")
        ]
    );
    let mut a = GuestProc::spawn(&dir.sock("a"), 1);
    let mut b = GuestProc::spawn(&dir.sock("b"), 1);
    let to_a: Vec<Vec<u8>> = (0..300).map(|s| udp_frame(amac, WIRE_MAC, s, 90)).collect();
    let to_b: Vec<Vec<u8>> = (0..300).map(|s| udp_frame(bmac, WIRE_MAC, s, 90)).collect();
    let bcast: Vec<Vec<u8>> = (0..20)
        .map(|s| udp_frame(MacAddr::BROADCAST, WIRE_MAC, s, 90))
        .collect();
    wire.send(&to_a);
    wire.send(&to_b);
    wire.send(&bcast);
    let ra = GuestProc::parse_recv(&a.cmd("recv 320 10000"));
    let rb = GuestProc::parse_recv(&b.cmd("recv 320 10000"));
    let exp_a: Vec<Vec<u8>> = to_a.iter().chain(&bcast).cloned().collect();
    assert_eq!(ra[0], (320, digest(&exp_a)));
    // B's unicast arrives through cluster 1's queue, broadcast through cluster 0's: each stream
    // keeps its order, so compare as sets of streams.
    assert_eq!(rb[0].0, 320);
    let p = mux.pollers();
    assert_eq!(
        p[1].wire_rx, 300,
        "B's frames were steered to cluster 1's backend queue: {p:?}"
    );
    assert_eq!(
        p[0].wire_rx, 320,
        "A's frames and broadcast stay on queue 0: {p:?}"
    );
    // TX from each cluster reaches the wire.
    assert_eq!(
        GuestProc::sent(&a.cmd(&format!("send 100 80 {WIRE_MAC}"))),
        100
    );
    assert_eq!(
        GuestProc::sent(&b.cmd(&format!("send 100 80 {WIRE_MAC}"))),
        100
    );
    assert_eq!(wire.recv(200, Duration::from_secs(10)).len(), 200);
    let p = mux.pollers();
    assert_eq!((p[0].wire_tx, p[2].wire_tx), (100, 100), "{p:?}");
    a.quit();
    b.quit();
}

#[test]
fn a_flooding_guest_does_not_starve_its_neighbour() {
    let dir = TempDir::new("starve");
    let (amac, bmac) = (mac(0xaa), mac(0xab));
    let (mux, mut wire) = mux_with(&dir, &[("a", amac), ("b", bmac)], |_| {});
    let mut a = GuestProc::spawn(&dir.sock("a"), 1);
    let mut b = GuestProc::spawn(&dir.sock("b"), 1);
    a.start(&format!("flood {WIRE_MAC} 1500"));
    // Let A fill the wire and its ring first.
    let _ = wire.recv(5000, Duration::from_millis(200));
    b.start(&format!("send 500 64 {WIRE_MAC}"));
    let (mut from_b, t0) = (0usize, Instant::now());
    while from_b < 500 && t0.elapsed() < Duration::from_secs(20) {
        from_b += wire
            .recv(256, Duration::from_millis(20))
            .iter()
            .filter(|f| f[6..12] == bmac.0)
            .count();
    }
    assert_eq!(from_b, 500, "B's frames got through while A flooded");
    assert_eq!(GuestProc::sent(&b.answer()), 500);
    let sent_a = mux.guests()[0].stats[StatsIndex::TxPackets as usize];
    println!(
        "B's 500 frames crossed in {:?} while A sent {sent_a}",
        t0.elapsed()
    );
    assert!(sent_a > 500, "A really was flooding ({sent_a})");
    a.child.kill().unwrap();
    b.quit();
}
