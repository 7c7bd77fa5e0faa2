use std::ptr::NonNull;
use std::sync::Arc;

use vdpdk_core::packet::udp_frame;
use vdpdk_core::{
    ethdev::start_single_queue, DevConfig, Error, EthDev, FlowAction, FlowItem, FlowRule, Lender,
    Lending, MacAddr, Mbuf, Mempool, RxQueue,
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

/// A guest as far as lending goes: memory it lends in `SLOTS` slots of `SLOT` bytes, read and
/// written only through raw pointers (as host-mux reaches a guest's memory), and the slots
/// that came back. The external pool keeps its lender, so the memory lives until every mbuf
/// lending it is freed.
struct Guest {
    base: NonNull<u8>,
    returned: parking_lot::Mutex<Vec<u32>>,
}

// SAFETY: `base` is a heap allocation owned by the Guest; nothing in it is tied to a thread,
// and it is only accessed through raw pointers (byte copies).
unsafe impl Send for Guest {}
// SAFETY: as above; `returned` is behind a mutex.
unsafe impl Sync for Guest {}

impl Guest {
    fn new() -> Arc<Guest> {
        let mem: Box<[u8]> = vec![0xee; SLOT * SLOTS].into_boxed_slice();
        Arc::new(Guest {
            base: NonNull::new(Box::into_raw(mem).cast::<u8>()).unwrap(),
            returned: Default::default(),
        })
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

    /// The slots that came back so far, sorted.
    fn returned(&self) -> Vec<u32> {
        let mut r = self.returned.lock().clone();
        r.sort_unstable();
        r
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let mem = std::ptr::slice_from_raw_parts_mut(self.base.as_ptr(), SLOT * SLOTS);
        // SAFETY: `base` came from `Box::into_raw` of a boxed slice of this length, and is
        // freed once, here.
        drop(unsafe { Box::from_raw(mem) });
    }
}

impl Lender for Guest {
    fn returned(&self, slot: u32) {
        self.returned.lock().push(slot);
    }
}

/// Lends slots `slots` of `guest`, each whole.
fn lend(lending: &mut Lending, guest: &Guest, slots: &[usize]) -> Vec<Mbuf> {
    lend_len(lending, guest, slots, SLOT)
}

/// Lends the first `len` bytes of each slot of `slots`.
fn lend_len(lending: &mut Lending, guest: &Guest, slots: &[usize], len: usize) -> Vec<Mbuf> {
    slots
        .iter()
        .map(|&s| {
            let iova = IOVA + (s * SLOT) as u64;
            // SAFETY: the slot lies in the guest's memory, which its Arc in the lending's
            // pool keeps alive until every mbuf lending it is freed.
            unsafe { lending.attach(s as u32, guest.slot_ptr(s), iova, len as u16) }
        })
        .collect()
}

#[test]
fn lent_rx_writes_frames_into_the_lent_memory_in_posting_order() {
    let (mut port, wire) = null_port(MAC);
    assert!(port.info().rx_lent_buffers);
    let pool = Mempool::new("null-lent", 8, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 16, false).unwrap();
    let guest = Guest::new();
    let mut lending = Lending::new("guest", guest.clone());
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| udp_frame(MAC, PEER, i, 60 + 10 * i as usize))
        .collect();
    wire.set_source(&frames);
    // Posted out of address order: frames follow the posting order.
    let order = [3, 1, 4, 0, 6];
    let mut bufs = lend(&mut lending, &guest, &order);
    let addrs: Vec<*const u8> = bufs.iter().map(|m| m.data_addr()).collect();
    assert_eq!(rx.post_lent(&mut bufs), 5);
    assert!(bufs.is_empty());
    let mut out = Vec::new();
    assert_eq!(rx.rx_burst(&mut out, 32), 5);
    assert_eq!(pool.available(), 8, "no own buffer used");
    for (i, m) in out.iter().enumerate() {
        let f = &frames[i % 3];
        assert_eq!(
            m.data_addr(),
            addrs[i],
            "frame {i} is in the {i}th buffer posted"
        );
        assert!(m.is_lent());
        assert_eq!((m.len(), m.pkt_len(), m.nb_segs()), (f.len(), f.len(), 1));
        assert_eq!(
            guest.read(order[i], f.len()),
            *f,
            "frame {i} in the lent memory"
        );
        assert_eq!(m.to_vec(), *f);
        assert_eq!(m.packet_type, vdpdk_core::PacketType::parse(f));
        assert_eq!(m.queue, 0);
    }
    let st = port.stats();
    assert_eq!((st.ipackets, st.ibytes), (5, (60 + 70 + 80) + 60 + 70));
    assert!(
        guest.returned().is_empty(),
        "received buffers are the caller's now"
    );
    Mempool::free_bulk(&mut out);
    assert_eq!(
        guest.returned(),
        [0, 1, 3, 4, 6],
        "freeing them returns them"
    );
}

#[test]
fn lent_rx_gives_no_more_frames_than_buffers_posted() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-lent-few", 8, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 4, false).unwrap();
    let guest = Guest::new();
    let mut lending = Lending::new("guest", guest.clone());
    let frames: Vec<Vec<u8>> = (0..3).map(|i| udp_frame(MAC, PEER, i, 64)).collect();
    wire.set_source(&frames);
    let mut out = Vec::new();
    let mut bufs = lend(&mut lending, &guest, &[0, 1]);
    assert_eq!(rx.post_lent(&mut bufs), 2);
    assert_eq!(rx.rx_burst(&mut out, 32), 2, "two buffers, two frames");
    assert_eq!(
        rx.rx_burst(&mut out, 32),
        0,
        "none posted: nothing, not even from the own pool"
    );
    let st = port.stats();
    assert_eq!(
        (st.ipackets, st.ierrors, st.imissed, st.rx_nombuf),
        (2, 0, 0, 0)
    );
    assert_eq!(pool.available(), 8);
    // The ring holds nb_desc (4) buffers: the rest stay with the caller, in order.
    let mut bufs = lend(&mut lending, &guest, &[2, 3, 4, 5, 6, 7]);
    assert_eq!(rx.post_lent(&mut bufs), 4);
    assert_eq!(bufs.len(), 2);
    assert_eq!(bufs[0].data_addr(), guest.slot_ptr(6).as_ptr().cast_const());
    assert_eq!(rx.post_lent(&mut bufs), 0, "the ring is full");
    assert_eq!(rx.rx_burst(&mut out, 1), 1);
    assert_eq!(rx.post_lent(&mut bufs), 1, "one was handed back, one fits");
    assert_eq!(rx.rx_burst(&mut out, 32), 4);
    // The round robin goes on across bursts: 0 1 | 2 | 0 1 2 0.
    let got: Vec<Vec<u8>> = out.iter().map(|m| m.to_vec()).collect();
    assert_eq!(got, pick(&frames, &[0, 1, 2, 0, 1, 2, 0]));
    let slots: Vec<*const u8> = out.iter().map(|m| m.data_addr()).collect();
    let want: Vec<*const u8> = [0, 1, 2, 3, 4, 5, 6]
        .iter()
        .map(|&s| guest.slot_ptr(s).as_ptr().cast_const())
        .collect();
    assert_eq!(slots, want);
    Mempool::free_bulk(&mut out);
    drop(bufs);
    assert_eq!(guest.returned(), [0, 1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn lent_rx_drops_a_frame_too_big_for_the_buffer_and_keeps_the_buffer_posted() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-lent-big", 8, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 8, false).unwrap();
    let guest = Guest::new();
    let mut lending = Lending::new("guest", guest.clone());
    let frames = [
        udp_frame(MAC, PEER, 0, 64),
        udp_frame(MAC, PEER, 1, 200),
        udp_frame(MAC, PEER, 2, 100),
    ];
    wire.set_source(&frames);
    // 128-byte buffers: the 200-byte frame fits none.
    let mut bufs = lend_len(&mut lending, &guest, &[0, 1], 128);
    assert_eq!(rx.post_lent(&mut bufs), 2);
    let mut out = Vec::new();
    assert_eq!(rx.rx_burst(&mut out, 8), 2);
    assert_eq!(out[0].to_vec(), frames[0]);
    assert_eq!(out[1].to_vec(), frames[2], "the big frame was dropped");
    assert_eq!(
        out[1].data_addr(),
        guest.slot_ptr(1).as_ptr().cast_const(),
        "the buffer it found stayed posted for the next frame"
    );
    assert_eq!(guest.read(1, 100), frames[2]);
    let st = port.stats();
    assert_eq!((st.ipackets, st.ibytes, st.ierrors), (2, 164, 1));
    Mempool::free_bulk(&mut out);
}

#[test]
fn take_back_lent_returns_the_unfilled_buffers_in_order_and_rx_uses_the_pool_again() {
    let (mut port, wire) = null_port(MAC);
    let pool = Mempool::new("null-lent-back", 8, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 8, false).unwrap();
    let guest = Guest::new();
    let mut lending = Lending::new("guest", guest.clone());
    let frame = udp_frame(MAC, PEER, 0, 64);
    wire.set_source(&[&frame]);
    let order = [5, 2, 7, 0, 3];
    let mut bufs = lend(&mut lending, &guest, &order);
    assert_eq!(rx.post_lent(&mut bufs), 5);
    let mut got = Vec::new();
    assert_eq!(rx.rx_burst(&mut got, 2), 2);
    let mut back = Vec::new();
    assert_eq!(rx.take_back_lent(&mut back), 3);
    let addrs: Vec<*const u8> = back.iter().map(|m| m.data_addr()).collect();
    let want: Vec<*const u8> = order[2..]
        .iter()
        .map(|&s| guest.slot_ptr(s).as_ptr().cast_const())
        .collect();
    assert_eq!(addrs, want, "in the order posted");
    assert!(back.iter().all(|m| m.len() == SLOT), "unfilled: as posted");
    assert_eq!(guest.read(7, 4), [0xee; 4], "nothing was written into them");
    assert!(guest.returned().is_empty());
    assert_eq!(rx.take_back_lent(&mut back), 0, "nothing left");
    // Own buffers again.
    let mut own = Vec::new();
    assert_eq!(rx.rx_burst(&mut own, 3), 3);
    assert!(own.iter().all(|m| !m.is_lent() && m.data() == &frame[..]));
    assert_eq!(pool.available(), 5);
    Mempool::free_bulk(&mut own);
    Mempool::free_bulk(&mut back);
    Mempool::free_bulk(&mut got);
    assert_eq!(guest.returned(), [0, 2, 3, 5, 7]);
    // Posting again enters lent mode again.
    let mut bufs = lend(&mut lending, &guest, &[1]);
    assert_eq!(rx.post_lent(&mut bufs), 1);
    assert_eq!(rx.rx_burst(&mut got, 4), 1);
    assert!(got[0].is_lent());
    Mempool::free_bulk(&mut got);
}

#[test]
fn dropping_the_queue_returns_its_posted_buffers_to_their_lender() {
    let (mut port, _wire) = null_port(MAC);
    let pool = Mempool::new("null-lent-drop", 8, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (rx, tx) = start_single_queue(&mut port, &pool, 8, false).unwrap();
    let mut rx = rx;
    let guest = Guest::new();
    let mut lending = Lending::new("guest", guest.clone());
    let mut bufs = lend(&mut lending, &guest, &[4, 1, 6]);
    assert_eq!(rx.post_lent(&mut bufs), 3);
    drop(lending);
    assert!(guest.returned().is_empty());
    drop(rx);
    assert_eq!(guest.returned(), [1, 4, 6]);
    drop(tx);
    port.stop().unwrap();
}
