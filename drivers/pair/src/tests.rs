use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::time::{Duration, Instant};
use vdpdk_core::ethdev::start_single_queue;

use vdpdk_core::flow::{FlowAction, FlowAttr, FlowItem, Ipv4Fields, L4Ports};
use vdpdk_core::{Error, LentBuf, Mbuf, OlFlags, PacketType, DEFAULT_BUF_SIZE};

use super::*;

const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

fn pool(n: u32) -> Mempool {
    Mempool::new("pair-test", n, DEFAULT_BUF_SIZE).unwrap()
}

/// Ethernet frame of `len` bytes with `ether_type` and `seq` right after the header.
fn frame(dst: MacAddr, ether_type: u16, seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(60)];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&MAC_A.0);
    f[12..14].copy_from_slice(&ether_type.to_be_bytes());
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    f
}

/// IPv4/UDP frame to `dport`.
fn udp(dport: u16, seq: u32) -> Vec<u8> {
    let mut f = frame(MAC_B, 0x0800, 0, 64);
    f[14..].fill(0);
    f[14] = 0x45;
    f[23] = 17;
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[42..46].copy_from_slice(&seq.to_be_bytes());
    f
}

fn seq_of(m: &Mbuf) -> u32 {
    u32::from_be_bytes(m.data()[14..18].try_into().unwrap())
}

fn mbufs(pool: &Mempool, frames: &[Vec<u8>]) -> Vec<Mbuf> {
    frames
        .iter()
        .map(|f| {
            let mut m = pool.alloc().expect("pool has room");
            m.copy_from(f).unwrap();
            m
        })
        .collect()
}

fn conf(rx: u16, tx: u16, rx_intr: bool) -> DevConfig {
    DevConfig {
        nb_rx_queues: rx,
        nb_tx_queues: tx,
        rx_intr,
        ..Default::default()
    }
}

/// Configures, sets up and starts `p` with `rx`/`tx` queues of `nb_desc` descriptors.
fn bring_up(p: &mut PairPort, pool: &Mempool, rx: u16, tx: u16, nb_desc: u16) {
    p.configure(&conf(rx, tx, true)).unwrap();
    for q in 0..rx {
        p.rx_queue_setup(q, nb_desc, pool).unwrap();
    }
    for q in 0..tx {
        p.tx_queue_setup(q, nb_desc).unwrap();
    }
    p.start().unwrap();
}

/// poll(2) on one fd for readability.
fn readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, count 1.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    assert!(r >= 0, "poll: {}", std::io::Error::last_os_error());
    r == 1 && pfd.revents & libc::POLLIN != 0
}

#[test]
fn chains_cross_as_chains_and_count_whole_packets() {
    let pool = pool(64);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 1, 64);
    let (_rx_a, mut tx_a) = start_single_queue(&mut a, &pool, 16, false).unwrap();
    let (mut rx_b, _tx_b) = start_single_queue(&mut b, &pool, 16, false).unwrap();
    let f = frame(MAC_B, 0x88b5, 1, 1000);
    let mut m = pool.alloc().unwrap();
    m.copy_from(&f[..100]).unwrap();
    let mut tail = pool.alloc().unwrap();
    tail.copy_from(&f[100..]).unwrap();
    m.chain(tail);
    assert_eq!(tx_a.tx_burst(&mut vec![m]), 1);
    let mut got = Vec::new();
    assert_eq!(rx_b.rx_burst(&mut got, 8), 1);
    assert_eq!((got[0].nb_segs(), got[0].to_vec()), (2, f));
    assert_eq!(a.stats().obytes, 1000);
    assert_eq!(b.stats().ibytes, 1000);
}

#[test]
fn frames_cross_byte_identical_both_ways() {
    let pool = pool(256);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 4, 512);
    let (mut rx_a, mut tx_a) = start_single_queue(&mut a, &pool, 256, true).unwrap();
    let (mut rx_b, mut tx_b) = start_single_queue(&mut b, &pool, 256, true).unwrap();
    assert!(a.link().up);
    assert_eq!(a.info().driver, "pair");
    assert_eq!(b.info().mac, MAC_B);

    let frames: Vec<Vec<u8>> = (0..100)
        .map(|i| frame(MAC_B, 0x88b5, i, 60 + i as usize * 13))
        .collect();
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let mut v = mbufs(&pool, &frames);
    assert_eq!(tx_a.tx_burst(&mut v), 100);
    assert!(v.is_empty());

    let mut got = Vec::new();
    assert_eq!(rx_b.rx_burst(&mut got, 64), 64, "burst stops at max");
    assert_eq!(rx_b.rx_burst(&mut got, 64), 36);
    assert_eq!(rx_b.rx_burst(&mut got, 64), 0);
    for (m, f) in got.iter().zip(&frames) {
        assert_eq!(m.data(), &f[..]);
        assert_eq!(m.port, 1);
        assert_eq!(m.queue, 0);
        assert_eq!(m.packet_type.0, PacketType::L2_ETHER);
        assert!(m.ol_flags.is_empty());
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.opackets, sa.obytes), (100, bytes));
    assert_eq!((sb.ipackets, sb.ibytes), (100, bytes));
    assert_eq!((sa.ipackets, sb.opackets), (0, 0));
    assert_eq!(sb.q_ipackets, vec![100]);

    // Back the other way, forwarding the very same buffers (zero copy: no new allocation).
    let avail = pool.available();
    assert_eq!(tx_b.tx_burst(&mut got), 100);
    assert_eq!(pool.available(), avail);
    let mut back = Vec::new();
    while rx_a.rx_burst(&mut back, 32) > 0 {}
    assert_eq!(back.len(), 100);
    assert!(back.iter().zip(&frames).all(|(m, f)| m.data() == &f[..]));
    assert!(back.iter().all(|m| m.port == 0));
    assert_eq!(a.stats().ipackets, 100);
    drop(back);
    assert_eq!(pool.available(), 256);

    a.reset_stats();
    assert_eq!(
        a.stats(),
        PortStats {
            q_ipackets: vec![0],
            q_opackets: vec![0],
            ..Default::default()
        }
    );
}

#[test]
fn tx_queue_maps_to_rx_queue_modulo() {
    let pool = pool(64);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 4, 64);
    bring_up(&mut a, &pool, 1, 3, 64);
    bring_up(&mut b, &pool, 2, 1, 64);
    let mut rx0 = b.take_rx_queue(0).unwrap();
    let mut rx1 = b.take_rx_queue(1).unwrap();
    for q in 0..3u16 {
        let mut tx = a.take_tx_queue(q).unwrap();
        let mut v = mbufs(&pool, &[frame(MAC_B, 0x88b5, q as u32, 60)]);
        assert_eq!(tx.tx_burst(&mut v), 1);
    }
    let mut got = Vec::new();
    assert_eq!(rx0.rx_burst(&mut got, 8), 2);
    assert_eq!(got.iter().map(seq_of).collect::<Vec<_>>(), vec![0, 2]);
    got.clear();
    assert_eq!(rx1.rx_burst(&mut got, 8), 1);
    assert_eq!((seq_of(&got[0]), got[0].queue), (1, 1));
    assert_eq!(a.stats().q_opackets, vec![1, 1, 1]);
    assert_eq!(b.stats().q_ipackets, vec![2, 1]);
}

#[test]
fn full_ring_leaves_the_rest_in_order() {
    let pool = pool(64);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 1, 64);
    let (_rx_a, mut tx) = start_single_queue(&mut a, &pool, 8, true).unwrap();
    let (mut rx, _tx_b) = start_single_queue(&mut b, &pool, 8, true).unwrap();
    let frames: Vec<_> = (0..20).map(|i| frame(MAC_B, 0x88b5, i, 60)).collect();
    let mut v = mbufs(&pool, &frames);
    v[8].ol_flags = OlFlags::TX_IPV4;
    assert_eq!(tx.tx_burst(&mut v), 8);
    assert_eq!(v.len(), 12);
    assert_eq!(
        v.iter().map(seq_of).collect::<Vec<_>>(),
        (8..20).collect::<Vec<_>>()
    );
    assert_eq!(
        v[0].ol_flags,
        OlFlags::TX_IPV4,
        "a refused frame keeps its TX metadata"
    );
    assert_eq!(tx.tx_burst(&mut v), 0, "still full");
    assert_eq!(a.stats().opackets, 8);
    assert_eq!(a.stats().oerrors, 0);

    let mut got = Vec::new();
    assert_eq!(rx.rx_burst(&mut got, 64), 8);
    assert_eq!(tx.tx_burst(&mut v), 8);
    assert_eq!(rx.rx_burst(&mut got, 64), 8);
    assert_eq!(tx.tx_burst(&mut v), 4);
    assert_eq!(rx.rx_burst(&mut got, 64), 4);
    assert_eq!(
        got.iter().map(seq_of).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(a.stats().opackets, 20);
    assert_eq!(b.stats().ipackets, 20);
}

#[test]
fn stopped_peer_drops_and_counts_errors() {
    let pool = pool(16);
    let (mut a, _b) = pair(MAC_A, MAC_B, 1, 64);
    let (_rx, mut tx) = start_single_queue(&mut a, &pool, 8, true).unwrap();
    let mut v = mbufs(
        &pool,
        &[frame(MAC_B, 0x88b5, 0, 60), frame(MAC_B, 0x88b5, 1, 60)],
    );
    assert_eq!(tx.tx_burst(&mut v), 2);
    assert!(v.is_empty());
    assert_eq!(pool.available(), 16, "dropped frames go back to the pool");
    let s = a.stats();
    assert_eq!((s.opackets, s.oerrors), (0, 2));
}

#[test]
fn dropped_peer_is_an_unplugged_cable() {
    let pool = pool(16);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 1, 64);
    let (_rx_a, mut tx) = start_single_queue(&mut a, &pool, 8, true).unwrap();
    drop(start_single_queue(&mut b, &pool, 8, true).unwrap());
    drop(b);
    let mut v = mbufs(&pool, &[frame(MAC_B, 0x88b5, 0, 60)]);
    assert_eq!(tx.tx_burst(&mut v), 1);
    assert_eq!(a.stats().oerrors, 1);
    assert_eq!(pool.available(), 16);
}

#[test]
fn peer_restart_is_picked_up_by_tx() {
    let pool = pool(16);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 1, 64);
    let (_rx_a, mut tx) = start_single_queue(&mut a, &pool, 8, true).unwrap();
    let (rx, tx_b) = start_single_queue(&mut b, &pool, 8, true).unwrap();
    let mut v = mbufs(&pool, &[frame(MAC_B, 0x88b5, 0, 60)]);
    assert_eq!(tx.tx_burst(&mut v), 1);
    drop((rx, tx_b));
    b.stop().unwrap();
    assert_eq!(pool.available(), 16, "stop frees what was waiting");
    let mut v = mbufs(&pool, &[frame(MAC_B, 0x88b5, 1, 60)]);
    assert_eq!(tx.tx_burst(&mut v), 1);
    assert_eq!(a.stats().oerrors, 1);
    b.start().unwrap();
    let mut rx = b.take_rx_queue(0).unwrap();
    let mut v = mbufs(&pool, &[frame(MAC_B, 0x88b5, 2, 60)]);
    assert_eq!(tx.tx_burst(&mut v), 1);
    let mut got = Vec::new();
    assert_eq!(rx.rx_burst(&mut got, 8), 1);
    assert_eq!(seq_of(&got[0]), 2);
}

#[test]
fn flow_rules_steer_drop_and_mark() {
    let pool = pool(64);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 4, 64);
    let (_rx_a, mut tx) = start_single_queue(&mut a, &pool, 64, true).unwrap();
    b.configure(&conf(2, 1, false)).unwrap();

    // QUEUE 1 for EtherType 0x88b5 (created before start: rules survive it).
    let to_q1 = b
        .flow_create(&FlowRule::to_queue(vec![FlowItem::eth_type(0x88b5)], 1))
        .unwrap();
    for q in 0..2 {
        b.rx_queue_setup(q, 64, &pool).unwrap();
    }
    b.tx_queue_setup(0, 64).unwrap();
    b.start().unwrap();
    let mut rx0 = b.take_rx_queue(0).unwrap();
    let mut rx1 = b.take_rx_queue(1).unwrap();

    // DROP for frames to a given MAC.
    let other = MacAddr([2, 0, 0, 0, 0, 0xee]);
    b.flow_create(&FlowRule {
        attr: FlowAttr::default(),
        pattern: vec![FlowItem::eth_dst(other)],
        actions: vec![FlowAction::Drop],
    })
    .unwrap();
    // UDP to 4789 -> MARK 7, QUEUE 0.
    let udp_rule = FlowRule {
        attr: FlowAttr::default(),
        pattern: vec![
            FlowItem::Ipv4 {
                spec: Ipv4Fields::default(),
                mask: Ipv4Fields::default(),
            },
            FlowItem::Udp {
                spec: L4Ports { src: 0, dst: 4789 },
                mask: L4Ports {
                    src: 0,
                    dst: 0xffff,
                },
            },
        ],
        actions: vec![FlowAction::Mark(7), FlowAction::Queue(0)],
    };
    b.flow_validate(&udp_rule).unwrap();
    b.flow_create(&udp_rule).unwrap();

    let frames = vec![
        frame(MAC_B, 0x88b5, 0, 60), // -> q1
        frame(other, 0x88b5, 1, 60), // matches QUEUE 1 first (same priority, older rule)
        frame(other, 0x0806, 2, 60), // -> dropped
        udp(4789, 3),                // -> q0, marked
        udp(53, 4),                  // -> q0 (default), unmarked
    ];
    let mut v = mbufs(&pool, &frames);
    assert_eq!(tx.tx_burst(&mut v), 5, "dropped frames count as sent");
    let mut q0 = Vec::new();
    let mut q1 = Vec::new();
    assert_eq!(rx0.rx_burst(&mut q0, 8), 2);
    assert_eq!(rx1.rx_burst(&mut q1, 8), 2);
    assert_eq!(q1.iter().map(seq_of).collect::<Vec<_>>(), vec![0, 1]);
    assert!(q1.iter().all(|m| m.queue == 1 && m.ol_flags.is_empty()));
    assert_eq!(q0[0].data(), &frames[3][..]);
    assert_eq!(q0[0].mark, 7);
    assert_eq!(q0[0].ol_flags, OlFlags::RX_FDIR | OlFlags::RX_FDIR_ID);
    assert_eq!(
        q0[0].packet_type.0,
        PacketType::L2_ETHER | PacketType::L3_IPV4 | PacketType::L4_UDP
    );
    assert_eq!(q0[1].data(), &frames[4][..]);
    assert!(q0[1].ol_flags.is_empty());
    assert_eq!(b.flow_dropped(), 1);
    assert_eq!(b.stats().ipackets, 4);
    drop((q0, q1));

    // Without the QUEUE 1 rule, the DROP rule catches `other` and the rest takes queue 0.
    b.flow_destroy(to_q1).unwrap();
    assert!(b.flow_destroy(to_q1).is_err(), "already destroyed");
    let mut v = mbufs(
        &pool,
        &[frame(other, 0x88b5, 5, 60), frame(MAC_B, 0x88b5, 6, 60)],
    );
    assert_eq!(tx.tx_burst(&mut v), 2);
    let mut got = Vec::new();
    assert_eq!(rx0.rx_burst(&mut got, 8), 1);
    assert_eq!(seq_of(&got[0]), 6);
    assert_eq!(rx1.rx_burst(&mut got, 8), 0);
    assert_eq!(b.flow_dropped(), 2);

    b.flow_flush().unwrap();
    let mut v = mbufs(&pool, &[frame(other, 0x88b5, 7, 60)]);
    assert_eq!(tx.tx_burst(&mut v), 1);
    got.clear();
    assert_eq!(rx0.rx_burst(&mut got, 8), 1, "no rules after flush");
    assert!(!b.flows.active.load(Ordering::Relaxed));
}

#[test]
fn flow_priority_orders_matching() {
    let pool = pool(16);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 4, 64);
    let (_rx_a, mut tx) = start_single_queue(&mut a, &pool, 16, true).unwrap();
    b.configure(&conf(3, 1, false)).unwrap();
    let rule = |prio, q| FlowRule {
        attr: FlowAttr {
            priority: prio,
            ..Default::default()
        },
        ..FlowRule::to_queue(vec![FlowItem::eth_type(0x88b5)], q)
    };
    b.flow_create(&rule(5, 1)).unwrap();
    b.flow_create(&rule(2, 2)).unwrap();
    bring_up_after_configure(&mut b, &pool, 3, 1);
    let mut rx2 = b.take_rx_queue(2).unwrap();
    let mut v = mbufs(&pool, &[frame(MAC_B, 0x88b5, 0, 60)]);
    assert_eq!(tx.tx_burst(&mut v), 1);
    let mut got = Vec::new();
    assert_eq!(rx2.rx_burst(&mut got, 8), 1, "priority 2 beats priority 5");
}

fn bring_up_after_configure(p: &mut PairPort, pool: &Mempool, rx: u16, tx: u16) {
    for q in 0..rx {
        p.rx_queue_setup(q, 16, pool).unwrap();
    }
    for q in 0..tx {
        p.tx_queue_setup(q, 16).unwrap();
    }
    p.start().unwrap();
}

#[test]
fn bad_flow_rules_are_refused() {
    let (mut a, _b) = pair(MAC_A, MAC_B, 4, 64);
    let r = FlowRule::to_queue(vec![FlowItem::eth_type(0x88b5)], 1);
    assert!(a.flow_validate(&r).is_err(), "no queues before configure");
    a.configure(&conf(2, 1, false)).unwrap();
    a.flow_validate(&r).unwrap();
    assert!(matches!(
        a.flow_create(&FlowRule::to_queue(vec![], 2)),
        Err(Error::InvalidArg(_))
    ));
    let mut egress = r.clone();
    egress.attr.egress = true;
    assert!(a.flow_validate(&egress).is_err());
    let mut group = r.clone();
    group.attr.group = 1;
    assert!(matches!(
        a.flow_validate(&group),
        Err(Error::Unsupported(_))
    ));
    let mut two_fates = r.clone();
    two_fates.actions.push(FlowAction::Drop);
    assert!(a.flow_create(&two_fates).is_err());
    assert!(a.flow_destroy(FlowHandle(999)).is_err());

    // A rule on queue 1 blocks shrinking to one RX queue.
    let h = a.flow_create(&r).unwrap();
    assert!(a.configure(&conf(1, 1, false)).is_err());
    a.flow_destroy(h).unwrap();
    a.configure(&conf(1, 1, false)).unwrap();
}

#[test]
fn lifecycle_errors_are_clear() {
    let pool = pool(8);
    let (mut a, _b) = pair(MAC_A, MAC_B, 2, 128);
    let bad = |r: Result<()>| matches!(r, Err(Error::BadState(_)));
    let inval = |r: Result<()>| matches!(r, Err(Error::InvalidArg(_)));

    assert!(bad(a.start()));
    assert!(bad(a.stop()));
    assert!(bad(a.rx_queue_setup(0, 16, &pool)));
    assert!(bad(a.take_rx_queue(0).map(drop)));
    assert!(inval(a.configure(&conf(0, 1, false))));
    assert!(inval(a.configure(&conf(3, 1, false))));
    assert!(inval(a.configure(&conf(1, 3, false))));
    assert!(matches!(
        a.configure(&DevConfig {
            rx_offloads: RxOffloads::RSS_HASH,
            ..conf(1, 1, false)
        }),
        Err(Error::Unsupported(_))
    ));

    a.configure(&conf(2, 1, false)).unwrap();
    assert!(inval(a.rx_queue_setup(2, 16, &pool)));
    assert!(inval(a.tx_queue_setup(1, 16)));
    assert!(inval(a.rx_queue_setup(0, 0, &pool)));
    assert!(inval(a.rx_queue_setup(0, 129, &pool)));
    a.rx_queue_setup(0, 16, &pool).unwrap();
    a.tx_queue_setup(0, 16).unwrap();
    assert!(bad(a.start()), "RX queue 1 not set up");
    a.rx_queue_setup(1, 128, &pool).unwrap();
    a.start().unwrap();
    assert!(bad(a.start()));
    assert!(bad(a.configure(&conf(1, 1, false))));
    assert!(bad(a.rx_queue_setup(0, 16, &pool)));

    let rx = a.take_rx_queue(0).unwrap();
    assert!(bad(a.take_rx_queue(0).map(drop)), "second take");
    assert!(inval(a.take_rx_queue(2).map(drop)));
    let tx = a.take_tx_queue(0).unwrap();
    assert!(bad(a.take_tx_queue(0).map(drop)));
    assert!(bad(a.stop()), "queues still taken");
    drop(rx);
    assert!(bad(a.stop()), "TX queue still taken");
    drop(tx);
    a.stop().unwrap();
    assert!(bad(a.stop()));
    // Restart without re-setup; queues may be taken again.
    a.start().unwrap();
    a.take_rx_queue(0).unwrap();
}

#[test]
fn intr_requires_rx_intr_config() {
    let pool = pool(8);
    let (mut a, _b) = pair(MAC_A, MAC_B, 1, 64);
    a.configure(&conf(1, 1, false)).unwrap();
    bring_up_after_configure(&mut a, &pool, 1, 1);
    let mut rx = a.take_rx_queue(0).unwrap();
    assert!(rx.intr_fd().is_none());
    assert!(rx.enable_intr().is_err());
    assert!(rx.disable_intr().is_err());
}

#[test]
fn intr_wakes_on_send_from_another_thread() {
    let pool = pool(16);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 1, 64);
    let (_rx_a, mut tx) = start_single_queue(&mut a, &pool, 16, true).unwrap();
    let (mut rx, _tx_b) = start_single_queue(&mut b, &pool, 16, true).unwrap();
    let fd = rx.intr_fd().expect("rx_intr configured");

    rx.enable_intr().unwrap();
    assert!(!readable(fd, 0), "nothing waiting yet");
    let mut v = mbufs(&pool, &[frame(MAC_B, 0x88b5, 42, 60)]);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let sent_at = Instant::now();
        assert_eq!(tx.tx_burst(&mut v), 1);
        (tx, sent_at)
    });
    assert!(readable(fd, 5000), "armed fd must wake up");
    let woke_at = Instant::now();
    rx.disable_intr().unwrap();
    assert!(!readable(fd, 0), "disable drains the pending wake-up");
    let mut got = Vec::new();
    assert_eq!(rx.rx_burst(&mut got, 8), 1);
    assert_eq!(seq_of(&got[0]), 42);

    // Causality, not timing (a busy machine may run either thread late): the wake-up came
    // after the sender started its send.
    let (mut tx, sent_at) = sender.join().unwrap();
    assert!(woke_at >= sent_at, "woke before the send");

    // Not armed: a send does not signal.
    let mut v = mbufs(&pool, &[frame(MAC_B, 0x88b5, 43, 60)]);
    assert_eq!(tx.tx_burst(&mut v), 1);
    assert!(!readable(fd, 0));
}

#[test]
fn arming_with_a_frame_waiting_signals_at_once() {
    let pool = pool(16);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 1, 64);
    let (_rx_a, mut tx) = start_single_queue(&mut a, &pool, 16, true).unwrap();
    let (mut rx, _tx_b) = start_single_queue(&mut b, &pool, 16, true).unwrap();
    let fd = rx.intr_fd().unwrap();
    let mut v = mbufs(&pool, &[frame(MAC_B, 0x88b5, 1, 60)]);
    assert_eq!(tx.tx_burst(&mut v), 1);
    assert!(!readable(fd, 0), "not armed, no signal");
    rx.enable_intr().unwrap();
    assert!(
        readable(fd, 0),
        "frame already waiting: readable immediately"
    );
    rx.disable_intr().unwrap();
    assert!(!readable(fd, 0));
}

/// Interrupt-driven receiver against a bursty sender: every wait must end in a wake-up, never
/// in the timeout, and every frame must arrive in order.
#[test]
fn no_lost_wakeups_under_load() {
    const N: u32 = 20_000;
    let pool = pool(512);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 1, 256);
    let (_rx_a, mut tx) = start_single_queue(&mut a, &pool, 64, true).unwrap();
    let (mut rx, _tx_b) = start_single_queue(&mut b, &pool, 64, true).unwrap();
    let sender_pool = pool.clone();
    let sender = std::thread::spawn(move || {
        let mut v = Vec::with_capacity(32);
        let mut seq = 0u32;
        while seq < N {
            while v.len() < 32 && seq + (v.len() as u32) < N {
                let Some(mut m) = sender_pool.alloc() else {
                    break;
                };
                m.copy_from(&frame(MAC_B, 0x88b5, seq + v.len() as u32, 60))
                    .unwrap();
                v.push(m);
            }
            let n = tx.tx_burst(&mut v);
            seq += n as u32;
            if seq % 1024 < 32 {
                std::thread::sleep(Duration::from_micros(200));
            } else if n == 0 {
                std::thread::yield_now();
            }
        }
    });
    let fd = rx.intr_fd().unwrap();
    let mut got = Vec::with_capacity(64);
    let mut next = 0u32;
    let mut sleeps = 0;
    while next < N {
        if rx.rx_burst(&mut got, 64) == 0 {
            rx.enable_intr().unwrap();
            if rx.rx_burst(&mut got, 64) == 0 {
                assert!(readable(fd, 10_000), "lost wake-up at frame {next}");
                sleeps += 1;
            }
            rx.disable_intr().unwrap();
        }
        for m in got.drain(..) {
            assert_eq!(seq_of(&m), next);
            next += 1;
        }
    }
    sender.join().unwrap();
    assert!(sleeps > 0, "the receiver did sleep on the fd");
    assert_eq!(b.stats().ipackets, N as u64);
}

#[test]
fn reflector_returns_every_frame_with_macs_swapped_and_keeps_the_rest_on_a_full_ring() {
    let mut r = crate::reflector(MacAddr([2, 0, 0, 0, 0, 0x0a]), 1, 64);
    let pool = Mempool::new("refl", 256, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, mut tx) = start_single_queue(&mut r, &pool, 32, false).unwrap();
    let f = |s: u8| {
        let mut v = vec![s; 60];
        v[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xbb]);
        v[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xaa]);
        v
    };
    let mut batch = Vec::new();
    for s in 0..40u8 {
        let mut m = pool.alloc().unwrap();
        m.copy_from(&f(s)).unwrap();
        batch.push(m);
    }
    assert_eq!(tx.tx_burst(&mut batch), 32, "ring of 32");
    assert_eq!(batch.len(), 8);
    assert_eq!(
        batch[0].data(),
        &f(32)[..],
        "refused frames come back unswapped"
    );
    let mut out = Vec::new();
    assert_eq!(rx.rx_burst(&mut out, 64), 32);
    for (s, m) in out.iter().enumerate() {
        let mut want = f(s as u8);
        let (a, b) = want.split_at_mut(6);
        a.swap_with_slice(&mut b[..6]);
        assert_eq!(m.data(), &want[..]);
    }
}

/// Bytes of each lent RX buffer in the lent-mode tests.
const SLOT: usize = 512;

/// Memory lent out in buffers of [`SLOT`] bytes (a guest's RX buffers, say). Leaked: it stays
/// mapped whatever a test (or its panic) leaves alive, as `post_lent` requires.
struct LentMem {
    base: NonNull<u8>,
}

impl LentMem {
    fn new(slots: usize) -> LentMem {
        let mem = Box::into_raw(vec![0u8; slots * SLOT].into_boxed_slice());
        LentMem {
            base: NonNull::new(mem.cast::<u8>()).unwrap(),
        }
    }

    /// Slot `slot` whole, tagged with its number.
    fn buf(&self, slot: u32) -> LentBuf {
        LentBuf {
            iova: 0x10_0000 + (slot as usize * SLOT) as u64,
            ptr: NonNull::new(self.base.as_ptr().wrapping_add(slot as usize * SLOT)).unwrap(),
            len: SLOT as u16,
            tag: slot,
        }
    }

    /// Posts `slots` to `rx`; returns how many it took.
    fn post(&self, rx: &mut Box<dyn RxQueue>, slots: &[u32]) -> usize {
        let bufs: Vec<LentBuf> = slots.iter().map(|&s| self.buf(s)).collect();
        // SAFETY: the slots lie in the leaked allocation, mapped until the process exits.
        unsafe { rx.post_lent(&bufs) }
    }

    /// A copy of the first `len` bytes of slot `slot`.
    fn read(&self, slot: u32, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        // SAFETY: `len <= SLOT` bytes of one slot of the leaked allocation; a byte copy.
        unsafe { std::ptr::copy_nonoverlapping(self.buf(slot).ptr.as_ptr(), v.as_mut_ptr(), len) };
        v
    }
}

/// Ports `a` and `b` of one queue each (`b`'s RX of `nb_desc`), the sender's pool.
fn lent_pair(
    nb_desc: u16,
) -> (
    PairPort,
    PairPort,
    Box<dyn TxQueue>,
    Box<dyn RxQueue>,
    Mempool,
) {
    let pool = pool(64);
    let (mut a, mut b) = pair(MAC_A, MAC_B, 1, 64);
    let (_rx_a, tx) = start_single_queue(&mut a, &pool, 64, false).unwrap();
    let (rx, _tx_b) = start_single_queue(&mut b, &pool, nb_desc, true).unwrap();
    (a, b, tx, rx, pool)
}

/// Sends `frames` from `tx`, all taken.
fn send(tx: &mut Box<dyn TxQueue>, pool: &Mempool, frames: &[Vec<u8>]) {
    let mut v = mbufs(pool, frames);
    assert_eq!(tx.tx_burst(&mut v), frames.len());
}

#[test]
fn lent_rx_fills_posted_buffers_in_order_and_carries_metadata() {
    let (_a, mut b, mut tx, mut rx, pool) = lent_pair(16);
    assert!(b.info().rx_lent_buffers);
    // UDP to 4789 -> MARK 7 on b's queue 0.
    b.flow_create(&FlowRule {
        attr: FlowAttr::default(),
        pattern: vec![
            FlowItem::Ipv4 {
                spec: Ipv4Fields::default(),
                mask: Ipv4Fields::default(),
            },
            FlowItem::Udp {
                spec: L4Ports { src: 0, dst: 4789 },
                mask: L4Ports {
                    src: 0,
                    dst: 0xffff,
                },
            },
        ],
        actions: vec![FlowAction::Mark(7), FlowAction::Queue(0)],
    })
    .unwrap();
    let mem = LentMem::new(8);
    // Posted out of slot order: they fill in posting order.
    assert_eq!(mem.post(&mut rx, &[3, 0, 5, 1]), 4);
    let plain = frame(MAC_B, 0x88b5, 1, 60);
    let big = frame(MAC_B, 0x88b5, 2, SLOT); // fills a slot exactly
    let marked = udp(4789, 3);
    let chained = frame(MAC_B, 0x88b5, 4, 400);
    let mut v = mbufs(&pool, &[plain.clone(), big.clone(), marked.clone()]);
    let mut head = pool.alloc().unwrap();
    head.copy_from(&chained[..150]).unwrap();
    let mut tail = pool.alloc().unwrap();
    tail.copy_from(&chained[150..]).unwrap();
    head.chain(tail);
    v.push(head);
    assert_eq!(tx.tx_burst(&mut v), 4);
    let mut own = Vec::new();
    assert_eq!(
        rx.rx_burst(&mut own, 8),
        0,
        "lent mode: no ring mbufs handed out"
    );
    let mut got = Vec::new();
    assert_eq!(rx.rx_lent(&mut got, 8), 4);
    let want = [(3, &plain), (0, &big), (5, &marked), (1, &chained)];
    for (d, (slot, f)) in got.iter().zip(want) {
        assert_eq!(d.tag, slot, "filled in posting order");
        assert_eq!(d.len as usize, f.len());
        assert_eq!(&mem.read(slot, f.len()), f, "slot {slot} holds the frame");
        assert_eq!(d.packet_type, PacketType::parse(f));
    }
    assert_eq!(
        (got[2].ol_flags.contains(OlFlags::RX_FDIR_ID), got[2].mark),
        (true, 7)
    );
    assert!(!got[0].ol_flags.contains(OlFlags::RX_FDIR_ID));
    assert_eq!(pool.available(), 64, "the sender's buffers freed");
    assert_eq!(b.stats().ipackets, 4);
}

#[test]
fn lent_rx_leaves_frames_in_the_ring_until_buffers_are_posted() {
    let (_a, _b, mut tx, mut rx, pool) = lent_pair(8);
    let mem = LentMem::new(16);
    assert_eq!(
        mem.post(&mut rx, &(0..9).collect::<Vec<_>>()),
        8,
        "a ring of 8"
    );
    assert_eq!(rx.take_back_lent(), 8);
    assert_eq!(mem.post(&mut rx, &[0, 1, 2]), 3);
    let frames: Vec<Vec<u8>> = (0..8).map(|i| frame(MAC_B, 0x88b5, i, 80)).collect();
    send(&mut tx, &pool, &frames);
    let mut got = Vec::new();
    assert_eq!(rx.rx_lent(&mut got, 2), 2, "no more than asked");
    assert_eq!(
        rx.rx_lent(&mut got, 8),
        1,
        "no more than posted: the rest wait"
    );
    assert_eq!(rx.rx_lent(&mut got, 8), 0);
    assert_eq!(mem.post(&mut rx, &[3, 4, 5]), 3);
    assert_eq!(rx.rx_lent(&mut got, 8), 3);
    assert_eq!(mem.post(&mut rx, &[6, 7, 8, 9]), 4);
    assert_eq!(rx.rx_lent(&mut got, 8), 2, "the last two frames");
    let seen: Vec<Vec<u8>> = got
        .iter()
        .map(|d| mem.read(d.tag, d.len as usize))
        .collect();
    assert_eq!(seen, frames, "every frame, in order, none lost");
    assert_eq!(
        got.iter().map(|d| d.tag).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
}

#[test]
fn oversized_frame_is_counted_and_its_lent_buffer_used_by_the_next() {
    let (_a, b, mut tx, mut rx, pool) = lent_pair(8);
    let mem = LentMem::new(2);
    assert_eq!(mem.post(&mut rx, &[1]), 1);
    let small = frame(MAC_B, 0x88b5, 2, 100);
    send(
        &mut tx,
        &pool,
        &[frame(MAC_B, 0x88b5, 1, SLOT + 1), small.clone()],
    );
    let mut got = Vec::new();
    // One buffer, so one frame popped: the oversized one, dropped.
    assert_eq!(rx.rx_lent(&mut got, 8), 0);
    assert_eq!(rx.rx_lent(&mut got, 8), 1);
    assert_eq!((got[0].tag, got[0].len), (1, 100));
    assert_eq!(mem.read(1, 100), small);
    assert_eq!(b.stats().ierrors, 1);
    assert_eq!(pool.available(), 64, "the dropped frame freed too");
}

#[test]
fn take_back_lent_ends_lent_mode_and_the_ring_hands_out_its_mbufs_again() {
    let (_a, _b, mut tx, mut rx, pool) = lent_pair(8);
    let mem = LentMem::new(4);
    assert_eq!(mem.post(&mut rx, &[0, 1, 2]), 3);
    let f = frame(MAC_B, 0x88b5, 1, 70);
    send(&mut tx, &pool, std::slice::from_ref(&f));
    let mut got = Vec::new();
    assert_eq!(rx.rx_lent(&mut got, 8), 1);
    assert_eq!(rx.take_back_lent(), 2, "the unfilled two");
    assert_eq!(mem.read(1, 4), [0; 4], "untouched");
    send(&mut tx, &pool, std::slice::from_ref(&f));
    assert_eq!(rx.rx_lent(&mut got, 8), 0, "nothing lent any more");
    let mut own = Vec::new();
    assert_eq!(rx.rx_burst(&mut own, 8), 1);
    assert_eq!(own[0].data(), &f[..]);
}
