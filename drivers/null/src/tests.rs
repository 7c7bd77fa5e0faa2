use std::ptr::NonNull;

use vdpdk_core::packet::udp_frame;
use vdpdk_core::{
    ethdev::start_single_queue, DevConfig, Error, EthDev, FlowAction, FlowItem, FlowRule, LentBuf,
    MacAddr, Mbuf, Mempool, PacketType, RxQueue,
};

use crate::{null_port, NullPort};

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x20]);

#[test]
fn tx_consumes_counts_and_frees_every_frame() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-tx", 64, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (_rx, mut tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();
    let frame = udp_frame(PEER, MAC, 1, 100);
    let mut pkts: Vec<Mbuf> = (0..10)
        .map(|_| pool.alloc_packet(&frame).unwrap())
        .collect();
    assert_eq!(pool.available(), 54);
    assert_eq!(tx.tx_burst(&mut pkts), 10);
    assert!(pkts.is_empty());
    assert_eq!(
        pool.available(),
        64,
        "every consumed buffer went back to its pool"
    );
    assert_eq!(wire.sunk(), (10, 1000));
    let st = port.stats();
    assert_eq!((st.opackets, st.obytes), (10, 1000));
}

#[test]
fn rx_hands_out_intact_copies_only_while_a_source_is_set() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-rx", 64, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();
    let mut out = Vec::new();
    assert_eq!(rx.rx_burst(&mut out, 32), 0, "no source, no frames");
    let frame = udp_frame(MAC, PEER, 7, 64);
    wire.set_source(&[&frame]);
    assert_eq!(rx.rx_burst(&mut out, 32), 32);
    for m in &out {
        assert_eq!(m.data(), &frame[..]);
        assert_eq!(m.packet_type, vdpdk_core::PacketType::parse(&frame));
    }
    Mempool::free_bulk(&mut out);
    wire.stop_source();
    assert_eq!(rx.rx_burst(&mut out, 32), 0, "the source stopped");
    assert_eq!(port.stats().ipackets, 32);
}

#[test]
fn rx_counts_an_empty_pool_and_refuses_a_source_larger_than_a_buffer() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-small", 8, 256).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();
    let mut out = Vec::new();
    wire.set_source(&[udp_frame(MAC, PEER, 1, 64)]);
    assert_eq!(rx.rx_burst(&mut out, 32), 8, "the pool has 8 buffers");
    assert_eq!(port.stats().rx_nombuf, 24);
    Mempool::free_bulk(&mut out);
    wire.set_source(&[udp_frame(MAC, PEER, 1, 1500)]);
    assert_eq!(rx.rx_burst(&mut out, 4), 0);
    assert!(out.is_empty());
    assert_eq!(pool.available(), 8, "refused buffers went back to the pool");
    assert_eq!(port.stats().ierrors, 4);
}

#[test]
fn lifecycle_is_checked_like_any_port() {
    let (mut port, _wire) = null_port(MAC);
    let pool = Mempool::new("null-life", 8, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    assert!(port.start().is_err(), "not configured");
    port.configure(&DevConfig {
        nb_rx_queues: 1,
        nb_tx_queues: 1,
        ..Default::default()
    })
    .unwrap();
    assert!(port.rx_queue_setup(0, 0, &pool).is_err(), "0 descriptors");
    assert!(
        port.rx_queue_setup(1, 64, &pool).is_err(),
        "queue 1 not configured"
    );
    port.rx_queue_setup(0, 64, &pool).unwrap();
    port.tx_queue_setup(0, 64).unwrap();
    port.start().unwrap();
    let rx = port.take_rx_queue(0).unwrap();
    assert!(port.take_rx_queue(0).is_err(), "taken twice");
    assert!(port.stop().is_err(), "a queue is still in use");
    drop(rx);
    port.stop().unwrap();
}

#[test]
fn rx_cycles_through_several_source_frames() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-rr", 64, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 256, false).unwrap();
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| udp_frame(MAC, PEER, i, 60 + i as usize))
        .collect();
    wire.set_source(&frames);
    let mut out = Vec::new();
    assert_eq!(rx.rx_burst(&mut out, 4), 4);
    assert_eq!(rx.rx_burst(&mut out, 3), 3);
    for (i, m) in out.iter().enumerate() {
        assert_eq!(m.data(), &frames[i % 3][..], "frame {i}");
    }
    assert_eq!(port.stats().ibytes, (60 + 61 + 62) * 2 + 60);
    Mempool::free_bulk(&mut out);
}

// ---- Flow steering ----

const VM1: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
const VM2: MacAddr = MacAddr([2, 0, 0, 0, 1, 2]);
const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 1, 9]);

/// Starts `port` with `n_rx` RX queues (and one TX queue) and takes the RX queues.
fn start_rx_queues(port: &mut NullPort, pool: &Mempool, n_rx: u16) -> Vec<Box<dyn RxQueue>> {
    port.configure(&DevConfig {
        nb_rx_queues: n_rx,
        nb_tx_queues: 1,
        ..Default::default()
    })
    .unwrap();
    for q in 0..n_rx {
        port.rx_queue_setup(q, 64, pool).unwrap();
    }
    port.tx_queue_setup(0, 64).unwrap();
    port.start().unwrap();
    (0..n_rx).map(|q| port.take_rx_queue(q).unwrap()).collect()
}

/// The frames one burst of up to `max` gives, as bytes (the mbufs are freed).
fn burst(rx: &mut dyn RxQueue, max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    rx.rx_burst(&mut out, max);
    let frames = out.iter().map(|m| m.to_vec()).collect();
    Mempool::free_bulk(&mut out);
    frames
}

/// Frames to VM1, VM2, OTHER, VM1 (distinct by sequence number).
fn steering_source() -> Vec<Vec<u8>> {
    [VM1, VM2, OTHER, VM1]
        .iter()
        .enumerate()
        .map(|(i, &dst)| udp_frame(dst, PEER, i as u64, 64))
        .collect()
}

/// `frames[i]` for each `i` of `idx`.
fn pick(frames: &[Vec<u8>], idx: &[usize]) -> Vec<Vec<u8>> {
    idx.iter().map(|&i| frames[i].clone()).collect()
}

#[test]
fn steering_splits_frames_by_destination_mac_and_sends_the_rest_to_queue_0() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-steer", 64, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rxs = start_rx_queues(&mut port, &pool, 4);
    let frames = steering_source();
    wire.set_source(&frames);
    for (q, rx) in rxs.iter_mut().enumerate() {
        assert_eq!(
            burst(rx.as_mut(), 4),
            frames,
            "queue {q}: no rules, every frame"
        );
    }
    // The rules host-mux's hardware steering creates, made while the queues run.
    let vm1 = port
        .flow_create(&FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 1))
        .unwrap();
    let vm2 = port
        .flow_create(&FlowRule::to_queue(vec![FlowItem::eth_dst(VM2)], 2))
        .unwrap();
    assert_ne!(vm1, vm2);
    assert_eq!(
        burst(rxs[0].as_mut(), 4),
        pick(&frames, &[2, 2, 2, 2]),
        "unmatched frames go to queue 0 only"
    );
    assert_eq!(burst(rxs[1].as_mut(), 4), pick(&frames, &[0, 3, 0, 3]));
    assert_eq!(burst(rxs[2].as_mut(), 3), pick(&frames, &[1, 1, 1]));
    assert!(
        burst(rxs[3].as_mut(), 4).is_empty(),
        "a queue no frame is steered to gets nothing"
    );
    let mut out = Vec::new();
    rxs[1].rx_burst(&mut out, 1);
    assert_eq!(out[0].queue, 1, "the mbuf names the queue it arrived on");
    Mempool::free_bulk(&mut out);
    // A new source is steered by the same rules.
    wire.set_source(&[udp_frame(VM2, PEER, 9, 80)]);
    assert!(burst(rxs[0].as_mut(), 4).is_empty());
    assert_eq!(burst(rxs[2].as_mut(), 1)[0].len(), 80);
    assert_eq!(pool.available(), 64);
}

#[test]
fn steering_takes_the_first_rule_by_priority() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-prio", 64, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rxs = start_rx_queues(&mut port, &pool, 3);
    let frames = steering_source();
    wire.set_source(&frames);
    let mut low = FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 1);
    low.attr.priority = 5;
    port.flow_create(&low).unwrap();
    let mut high = FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 2);
    high.attr.priority = 1;
    port.flow_create(&high).unwrap();
    assert!(burst(rxs[1].as_mut(), 4).is_empty());
    assert_eq!(burst(rxs[2].as_mut(), 2), pick(&frames, &[0, 3]));
}

#[test]
fn flow_rules_other_than_eth_dst_to_an_existing_queue_are_refused() {
    let (mut port, _wire) = null_port(MAC);
    let pool = Mempool::new("null-refuse", 8, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let rxs = start_rx_queues(&mut port, &pool, 2);
    let unsupported = |port: &mut NullPort, rule: FlowRule, what: &str| {
        assert!(
            matches!(port.flow_validate(&rule), Err(Error::Unsupported(_))),
            "validate: {what}"
        );
        assert!(
            matches!(port.flow_create(&rule), Err(Error::Unsupported(_))),
            "create: {what}"
        );
    };
    unsupported(
        &mut port,
        FlowRule::to_queue(vec![FlowItem::eth_type(0x0800)], 1),
        "an EtherType match",
    );
    unsupported(&mut port, FlowRule::to_queue(vec![], 1), "an empty pattern");
    let mut half_mac = FlowItem::eth_dst(VM1);
    if let FlowItem::Eth { mask, .. } = &mut half_mac {
        mask.dst = MacAddr([0xff, 0xff, 0xff, 0, 0, 0]);
    }
    unsupported(
        &mut port,
        FlowRule::to_queue(vec![half_mac], 1),
        "part of the MAC",
    );
    let mut dst_and_src = FlowItem::eth_dst(VM1);
    if let FlowItem::Eth { spec, mask } = &mut dst_and_src {
        spec.src = PEER;
        mask.src = MacAddr::BROADCAST;
    }
    unsupported(
        &mut port,
        FlowRule::to_queue(vec![dst_and_src], 1),
        "a source MAC too",
    );
    unsupported(
        &mut port,
        FlowRule::to_queue(
            vec![
                FlowItem::eth_dst(VM1),
                FlowItem::Ipv4 {
                    spec: Default::default(),
                    mask: Default::default(),
                },
            ],
            1,
        ),
        "an L3 item",
    );
    let drop_rule = FlowRule {
        actions: vec![FlowAction::Drop],
        ..FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 0)
    };
    unsupported(&mut port, drop_rule, "DROP");
    let mut marked = FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 1);
    marked.actions.push(FlowAction::Mark(7));
    unsupported(&mut port, marked, "MARK");
    let mut group = FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 1);
    group.attr.group = 1;
    unsupported(&mut port, group, "group 1");
    let mut egress = FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 1);
    egress.attr.egress = true;
    unsupported(&mut port, egress, "egress");

    let beyond = FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 2);
    assert!(matches!(
        port.flow_validate(&beyond),
        Err(Error::InvalidArg(_))
    ));
    assert!(matches!(
        port.flow_create(&beyond),
        Err(Error::InvalidArg(_))
    ));
    let ok = FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 1);
    port.flow_validate(&ok).unwrap();
    port.flow_create(&ok).unwrap();
    drop(rxs);
    port.stop().unwrap();
    assert!(
        matches!(
            port.configure(&DevConfig {
                nb_rx_queues: 1,
                nb_tx_queues: 1,
                ..Default::default()
            }),
            Err(Error::InvalidArg(_))
        ),
        "a rule targets queue 1"
    );
    port.flow_flush().unwrap();
    port.configure(&DevConfig {
        nb_rx_queues: 1,
        nb_tx_queues: 1,
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn flow_destroy_and_flush_restore_the_frames_to_their_queues() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-destroy", 64, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rxs = start_rx_queues(&mut port, &pool, 3);
    let frames = steering_source();
    wire.set_source(&frames);
    let vm1 = port
        .flow_create(&FlowRule::to_queue(vec![FlowItem::eth_dst(VM1)], 1))
        .unwrap();
    port.flow_create(&FlowRule::to_queue(vec![FlowItem::eth_dst(VM2)], 2))
        .unwrap();
    assert_eq!(burst(rxs[0].as_mut(), 2), pick(&frames, &[2, 2]));
    port.flow_destroy(vm1).unwrap();
    assert_eq!(
        burst(rxs[0].as_mut(), 3),
        pick(&frames, &[0, 2, 3]),
        "VM1's frames are unmatched again: queue 0's"
    );
    assert!(burst(rxs[1].as_mut(), 4).is_empty());
    assert_eq!(burst(rxs[2].as_mut(), 2), pick(&frames, &[1, 1]));
    assert!(
        matches!(port.flow_destroy(vm1), Err(Error::InvalidArg(_))),
        "destroyed twice"
    );
    port.flow_flush().unwrap();
    for (q, rx) in rxs.iter_mut().enumerate() {
        assert_eq!(burst(rx.as_mut(), 4), frames, "queue {q}: no rules left");
    }
}

// ---- Lent RX ----

/// Bytes in each lent slot.
const SLOT: usize = 256;
/// Slots of the lent memory.
const SLOTS: usize = 8;
/// Device address of slot 0.
const IOVA: u64 = 0x10_0000;

/// Memory lent to a queue as a guest's would be: `SLOTS` slots of `SLOT` bytes, read only
/// through raw pointers.
struct GuestMem {
    base: NonNull<u8>,
}

impl GuestMem {
    fn new() -> GuestMem {
        let mem: Box<[u8]> = vec![0xee; SLOT * SLOTS].into_boxed_slice();
        GuestMem {
            base: NonNull::new(Box::into_raw(mem).cast::<u8>()).unwrap(),
        }
    }

    fn slot_ptr(&self, slot: usize) -> NonNull<u8> {
        assert!(slot < SLOTS);
        // SAFETY: slot * SLOT < SLOT * SLOTS: inside the allocation.
        unsafe { self.base.add(slot * SLOT) }
    }

    /// A copy of the first `len` bytes of `slot`.
    fn read(&self, slot: usize, len: usize) -> Vec<u8> {
        assert!(len <= SLOT);
        let mut v = vec![0; len];
        // SAFETY: `len <= SLOT` bytes of one slot of the live allocation, into a distinct
        // vector; a byte copy, no reference to the lent memory.
        unsafe { std::ptr::copy_nonoverlapping(self.slot_ptr(slot).as_ptr(), v.as_mut_ptr(), len) };
        v
    }

    /// Slots `slots`, the first `len` bytes of each, tagged with their slot number.
    fn bufs(&self, slots: &[usize], len: usize) -> Vec<LentBuf> {
        slots
            .iter()
            .map(|&s| LentBuf {
                iova: IOVA + (s * SLOT) as u64,
                ptr: self.slot_ptr(s),
                len: len as u16,
                tag: s as u32,
            })
            .collect()
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        let mem = std::ptr::slice_from_raw_parts_mut(self.base.as_ptr(), SLOT * SLOTS);
        // SAFETY: `base` came from `Box::into_raw` of a boxed slice of this length, and is
        // freed once, here.
        drop(unsafe { Box::from_raw(mem) });
    }
}

/// A started null port with one RX queue of `nb_desc` descriptors, sourcing `frames`.
fn lent_port(nb_desc: u16, frames: &[Vec<u8>]) -> (NullPort, Box<dyn RxQueue>, Mempool) {
    let (mut port, wire) = null_port(MacAddr([2, 0, 0, 0, 0, 1]));
    let pool = Mempool::new("t-null-lent", 64, 2048).unwrap();
    let (rx, _tx) = start_single_queue(&mut port, &pool, nb_desc, false).unwrap();
    wire.set_source(frames);
    (port, rx, pool)
}

fn post(rx: &mut dyn RxQueue, mem: &GuestMem, slots: &[usize], len: usize) -> usize {
    // SAFETY: the slots lie in `mem`, which every test keeps alive past its queue.
    unsafe { rx.post_lent(&mem.bufs(slots, len)) }
}

#[test]
fn lent_rx_writes_frames_into_the_lent_memory_in_posting_order() {
    let mem = GuestMem::new();
    let frames = [udp_frame(MAC, PEER, 1, 60), udp_frame(MAC, PEER, 2, 200)];
    let (port, mut rx, pool) = lent_port(64, &frames);
    assert!(port.info().rx_lent_buffers);
    assert_eq!(post(rx.as_mut(), &mem, &[3, 0, 2, 1], SLOT), 4);
    let mut own = Vec::new();
    assert_eq!(rx.rx_burst(&mut own, 8), 0, "lent mode: no own buffers");
    let mut got = Vec::new();
    assert_eq!(rx.rx_lent(&mut got, 8), 4);
    assert_eq!(
        got.iter().map(|d| d.tag).collect::<Vec<_>>(),
        [3, 0, 2, 1],
        "filled in posting order"
    );
    for (i, d) in got.iter().enumerate() {
        let f = &frames[i % 2];
        assert_eq!(d.len as usize, f.len());
        assert_eq!(
            &mem.read(d.tag as usize, f.len()),
            f,
            "frame {i} in its lent slot"
        );
        assert_eq!(d.packet_type, PacketType::parse(f));
    }
    assert_eq!(
        rx.rx_lent(&mut got, 8),
        0,
        "nothing posted, nothing received"
    );
    assert_eq!(pool.available(), 64, "no own buffer used");
    let s = port.stats();
    assert_eq!((s.ipackets, s.ierrors, s.rx_nombuf), (4, 0, 0));
}

#[test]
fn lent_rx_takes_no_more_than_its_ring_and_gives_no_more_than_asked() {
    let mem = GuestMem::new();
    let (_port, mut rx, _pool) = lent_port(3, &[udp_frame(MAC, PEER, 1, 60)]);
    assert_eq!(
        post(rx.as_mut(), &mem, &[0, 1, 2, 3, 4], SLOT),
        3,
        "a ring of 3"
    );
    let mut got = Vec::new();
    assert_eq!(rx.rx_lent(&mut got, 2), 2);
    assert_eq!(
        post(rx.as_mut(), &mem, &[5, 6], SLOT),
        2,
        "room for 2 again"
    );
    assert_eq!(rx.rx_lent(&mut got, 8), 3);
    assert_eq!(
        got.iter().map(|d| d.tag).collect::<Vec<_>>(),
        [0, 1, 2, 5, 6]
    );
}

#[test]
fn lent_rx_drops_a_frame_too_big_for_the_buffer_and_keeps_the_buffer_posted() {
    let mem = GuestMem::new();
    let frames = [udp_frame(MAC, PEER, 1, 200), udp_frame(MAC, PEER, 2, 60)];
    let (port, mut rx, _pool) = lent_port(64, &frames);
    assert_eq!(post(rx.as_mut(), &mem, &[4], 100), 1);
    let mut got = Vec::new();
    assert_eq!(rx.rx_lent(&mut got, 1), 1);
    assert_eq!(
        (got[0].tag, got[0].len),
        (4, 60),
        "the 60-byte frame, in the same buffer"
    );
    assert_eq!(&mem.read(4, 60), &frames[1]);
    assert_eq!(
        port.stats().ierrors,
        1,
        "the 200-byte frame counted, not truncated"
    );
}

#[test]
fn take_back_lent_ends_lent_mode_and_rx_uses_the_pool_again() {
    let mem = GuestMem::new();
    let f = udp_frame(MAC, PEER, 1, 60);
    let (_port, mut rx, pool) = lent_port(64, std::slice::from_ref(&f));
    assert_eq!(post(rx.as_mut(), &mem, &[0, 1, 2], SLOT), 3);
    let mut got = Vec::new();
    assert_eq!(rx.rx_lent(&mut got, 1), 1);
    assert_eq!(rx.take_back_lent(), 2, "the two unfilled ones");
    assert_eq!(mem.read(1, 4), [0xee; 4], "untouched");
    assert_eq!(rx.rx_lent(&mut got, 8), 0, "none lent any more");
    let mut own = Vec::new();
    assert_eq!(rx.rx_burst(&mut own, 2), 2, "own buffers again");
    assert_eq!(own[0].to_vec(), f);
    assert_eq!(pool.available(), 62);
}
