//! Zero-copy RX (`Features::RX_ZERO_COPY`, host-mux's `zero_copy_rx`): the buffers a guest
//! posts on its direct ring are lent to the backend RX queue of its VM, which receives into
//! them in place (the backend sees the guest's own buffers); and a guest that unmaps its
//! memory, or dies, gets every buffer taken back from the backend first, so the backend never
//! writes into memory the guest took away.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use guest_pmd::{OpenOptions, VdpdkPort};
use parking_lot::Mutex;
use vdpdk_core::abi::Features;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{
    DevConfig, DevInfo, EthDev, FlowHandle, FlowRule, LentBuf, LentRx, LinkStatus, MacAddr, Mbuf,
    Mempool, PortStats, Result, RxQueue, TxQueue, DEFAULT_BUF_SIZE,
};
use vdpdk_pci::{PciDevice, VfioUserPci};

const GMAC: u8 = 0x7c;
const PEER: u8 = 0x7d;

/// What the spy saw of the lent buffers of its RX queues.
#[derive(Default)]
struct Seen {
    /// (guest IOVA, host address, tag) of every buffer posted to it.
    posted: Vec<(u64, usize, u32)>,
    /// Guest IOVAs of the lent buffers it handed back with a frame (the buffers come back
    /// in the order posted).
    filled: Vec<u64>,
    /// Buffers posted and not yet handed back (with a frame or by a take-back).
    outstanding: usize,
    /// Posted buffers handed back so far (they come back in the order posted).
    filled_or_back: usize,
}

/// A pair port whose RX queues record the lent buffers they are given and hand back.
struct SpyPort {
    inner: vdpdk_pair::PairPort,
    seen: Arc<Mutex<Seen>>,
}

struct SpyRx {
    inner: Box<dyn RxQueue>,
    seen: Arc<Mutex<Seen>>,
}

impl RxQueue for SpyRx {
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        self.inner.rx_burst(out, max)
    }
    unsafe fn post_lent(&mut self, bufs: &[LentBuf]) -> usize {
        // SAFETY: passed on under the caller's promise.
        let n = unsafe { self.inner.post_lent(bufs) };
        let mut s = self.seen.lock();
        s.posted.extend(
            bufs[..n]
                .iter()
                .map(|b| (b.iova, b.ptr.as_ptr() as usize, b.tag)),
        );
        s.outstanding += n;
        n
    }
    fn rx_lent(&mut self, out: &mut Vec<LentRx>, max: usize) -> usize {
        let first = out.len();
        let n = self.inner.rx_lent(out, max);
        let mut s = self.seen.lock();
        for d in &out[first..] {
            let (iova, _, tag) = s.posted[s.filled_or_back];
            assert_eq!(d.tag, tag, "handed back in the order posted");
            s.filled.push(iova);
            s.filled_or_back += 1;
        }
        s.outstanding -= n;
        n
    }
    fn take_back_lent(&mut self) -> usize {
        let n = self.inner.take_back_lent();
        let mut s = self.seen.lock();
        s.outstanding -= n;
        s.filled_or_back += n;
        n
    }
}

impl EthDev for SpyPort {
    fn info(&self) -> DevInfo {
        self.inner.info()
    }
    fn configure(&mut self, conf: &DevConfig) -> Result<()> {
        self.inner.configure(conf)
    }
    fn rx_queue_setup(&mut self, qid: u16, nb_desc: u16, pool: &Mempool) -> Result<()> {
        self.inner.rx_queue_setup(qid, nb_desc, pool)
    }
    fn tx_queue_setup(&mut self, qid: u16, nb_desc: u16) -> Result<()> {
        self.inner.tx_queue_setup(qid, nb_desc)
    }
    fn start(&mut self) -> Result<()> {
        self.inner.start()
    }
    fn stop(&mut self) -> Result<()> {
        self.inner.stop()
    }
    fn take_rx_queue(&mut self, qid: u16) -> Result<Box<dyn RxQueue>> {
        Ok(Box::new(SpyRx {
            inner: self.inner.take_rx_queue(qid)?,
            seen: self.seen.clone(),
        }))
    }
    fn take_tx_queue(&mut self, qid: u16) -> Result<Box<dyn TxQueue>> {
        self.inner.take_tx_queue(qid)
    }
    fn link(&self) -> LinkStatus {
        self.inner.link()
    }
    fn stats(&self) -> PortStats {
        self.inner.stats()
    }
    fn reset_stats(&mut self) {
        self.inner.reset_stats()
    }
    fn flow_validate(&self, rule: &FlowRule) -> Result<()> {
        self.inner.flow_validate(rule)
    }
    fn flow_create(&mut self, rule: &FlowRule) -> Result<FlowHandle> {
        self.inner.flow_create(rule)
    }
    fn flow_destroy(&mut self, handle: FlowHandle) -> Result<()> {
        self.inner.flow_destroy(handle)
    }
    fn flow_flush(&mut self) -> Result<()> {
        self.inner.flow_flush()
    }
}

/// host-mux on a spied pair wire with zero-copy RX (and so hardware steering) on, serving
/// "g" and "peer", guarding unmapped memory (a write to it faults at once).
fn zero_copy_rx_mux(tag: &str) -> (TempDir, host_mux::HostMux, Wire, Arc<Mutex<Seen>>) {
    let dir = TempDir::new(tag);
    let vms = guest_and_peer(mac(GMAC), mac(PEER));
    let cfg = host_mux::MuxConfig {
        zero_copy_rx: true,
        hw_steering: true,
        guard_unmapped: true,
        ..mux_config(&dir, &vms)
    };
    let (mux_end, mut wire_end) =
        vdpdk_pair::pair(MacAddr([2, 0, 0, 0, 0, 0xfd]), WIRE_MAC, 4, 8192);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let spy = SpyPort {
        inner: mux_end,
        seen: seen.clone(),
    };
    let mux = host_mux::HostMux::start(&cfg, Box::new(spy)).expect("host-mux start");
    let pool = Mempool::new("wire", 4096, DEFAULT_BUF_SIZE).unwrap();
    let (rx, tx) = start_single_queue(&mut wire_end, &pool, 1024, false).unwrap();
    let wire = Wire {
        port: wire_end,
        rx,
        tx,
        pool,
    };
    (dir, mux, wire, seen)
}

/// A guest-pmd port on "g" with every feature, its device kept for raw DMA calls.
fn open(dir: &TempDir) -> (VdpdkPort, Arc<VfioUserPci>) {
    let dev = Arc::new(VfioUserPci::connect(&dir.sock("g")).expect("connect"));
    let opts = OpenOptions {
        features: guest_pmd::driver_features(),
        ..OpenOptions::default()
    };
    let port = VdpdkPort::open_with(dev.clone(), opts).expect("open");
    (port, dev)
}

/// Receives `n` frames on `rx` within 10 s.
fn recv(rx: &mut Box<dyn RxQueue>, n: usize) -> Vec<Mbuf> {
    let mut got = Vec::new();
    wait_for(10, "frames reach the guest", || {
        rx.rx_burst(&mut got, 32);
        got.len() >= n
    });
    got
}

fn in_place(mux: &host_mux::HostMux) -> u64 {
    mux.pollers().iter().map(|p| p.rx_in_place).sum()
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

#[test]
fn frames_from_the_wire_are_received_straight_into_the_guests_buffers() {
    let (dir, mux, mut wire, seen) = zero_copy_rx_mux("zc-rx");
    let (mut port, _dev) = open(&dir);
    assert!(port.features().contains(Features::RX_ZERO_COPY));
    let pool = Mempool::new("g", 512, DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 64, false).unwrap();
    wait_for(
        10,
        "the direct ring's buffers lent to the wire queue",
        || seen.lock().outstanding == 64,
    );
    let posted: Vec<u64> = seen.lock().posted.iter().map(|p| p.0).collect();
    let pool_iova = pool.memory().iova_base();
    assert!(
        posted
            .iter()
            .all(|&a| a >= pool_iova && a < pool_iova + pool.memory().len() as u64),
        "the backend is given the guest's own buffers"
    );
    let sizes = [60, 64, 128, 1000, 1514, 300];
    let frames: Vec<Vec<u8>> = (0..100)
        .map(|i| udp_frame(mac(GMAC), WIRE_MAC, i as u64, sizes[i % sizes.len()]))
        .collect();
    wire.send(&frames);
    let got = recv(&mut rx, frames.len());
    assert_eq!(got.len(), frames.len(), "nothing more, nothing lost");
    let filled = seen.lock().filled.clone();
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.to_vec(), frames[i], "frame {i} whole and in order");
        assert_eq!(
            m.data_iova(),
            filled[i],
            "frame {i} was written by the backend into the buffer the guest reads"
        );
        assert_ne!(m.packet_type.0, 0, "the wire's classification kept");
    }
    assert_eq!(in_place(&mux), frames.len() as u64);
    // A broadcast comes the usual way (the shared queue, copied) and arrives too.
    let bcast = udp_frame(MacAddr::BROADCAST, WIRE_MAC, 7, 80);
    wire.send(std::slice::from_ref(&bcast));
    let got = recv(&mut rx, 1);
    assert_eq!(got[0].to_vec(), bcast);
    assert_eq!(in_place(&mux), frames.len() as u64, "a broadcast is copied");
    let s = port.stats();
    assert_eq!((s.ipackets, s.ierrors), (frames.len() as u64 + 1, 0));
}

#[test]
fn a_flow_rule_takes_the_buffers_back_and_frames_are_copied_meanwhile() {
    let (dir, mux, mut wire, seen) = zero_copy_rx_mux("zc-rx-rule");
    let (mut port, _dev) = open(&dir);
    let pool = Mempool::new("g", 512, DEFAULT_BUF_SIZE).unwrap();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 64, false).unwrap();
    wait_for(10, "buffers lent", || seen.lock().outstanding == 64);
    let rule = FlowRule::to_queue(vec![vdpdk_core::FlowItem::eth_dst(mac(GMAC))], 0);
    let h = port.flow_create(&rule).expect("a rule");
    wait_for(10, "every buffer back from the wire queue", || {
        seen.lock().outstanding == 0
    });
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|i| udp_frame(mac(GMAC), WIRE_MAC, i, 200))
        .collect();
    wire.send(&frames);
    let got = recv(&mut rx, frames.len());
    assert_eq!(got.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), frames);
    assert_eq!(in_place(&mux), 0, "copied while the guest has rules");
    port.flow_destroy(h).unwrap();
    wait_for(10, "lent again once the rules are gone", || {
        seen.lock().outstanding == 64
    });
    wire.send(&frames);
    let got = recv(&mut rx, frames.len());
    assert_eq!(got.iter().map(Mbuf::to_vec).collect::<Vec<_>>(), frames);
    assert_eq!(in_place(&mux), frames.len() as u64);
}

/// Brings "g" up with its direct ring lent out, then has `leave` take its buffer memory away;
/// checks that the wire queue gave every buffer back before that, that host-mux let go of the
/// memory (a guarded, inaccessible reservation now: a write there would fault), and that frames
/// sent afterwards never touch it.
fn buffers_come_back_before_the_memory_goes(
    tag: &str,
    leave: impl FnOnce(VdpdkPort, Arc<VfioUserPci>, &Mempool, &host_mux::HostMux) -> Option<VdpdkPort>,
) {
    let (dir, mux, mut wire, seen) = zero_copy_rx_mux(tag);
    let (mut port, dev) = open(&dir);
    let pool = Mempool::new("g", 512, DEFAULT_BUF_SIZE).unwrap();
    let (rx, tx) = start_single_queue(&mut port, &pool, 64, false).unwrap();
    wait_for(10, "buffers lent", || seen.lock().outstanding == 64);
    let addr = seen.lock().posted[0].1;
    assert_eq!(perms_at(addr), "rw-s", "lent memory mapped in host-mux");
    drop((rx, tx));
    let _still_open = leave(port, dev, &pool, &mux);
    assert_eq!(
        seen.lock().outstanding,
        0,
        "every lent buffer back from the wire queue"
    );
    wait_for(10, "host-mux let go of the guest's memory", || {
        perms_at(addr) == "---p"
    });
    // Frames for the guest now find no buffer (a write to the old ones would kill this test).
    let frames: Vec<Vec<u8>> = (0..32)
        .map(|i| udp_frame(mac(GMAC), WIRE_MAC, i, 600))
        .collect();
    wire.send(&frames);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.lock().outstanding, 0);
    assert_eq!(in_place(&mux), 0);
}

#[test]
fn a_guest_that_unmaps_its_buffers_gets_them_back_from_the_wire_first() {
    buffers_come_back_before_the_memory_goes("zc-rx-unmap", |port, dev, pool, _| {
        let m = pool.memory();
        // The unmap is answered only once the buffers in it are back.
        dev.dma_unmap(m.iova_base(), m.len() as u64).expect("unmap");
        // The device keeps running (its rings are elsewhere) until the test is done.
        Some(port)
    });
}

#[test]
fn a_guest_that_dies_gets_its_buffers_back_from_the_wire() {
    buffers_come_back_before_the_memory_goes("zc-rx-kill", |port, dev, _, mux| {
        // Gone without a word: the connection drops, its memory with it.
        drop((port, dev));
        wait_for(10, "host-mux notices the guest left", || {
            !mux.guests()[0].attached
        });
        None
    });
}

/// A hand-written driver that gets the direct ring wrong every way it can: each request is
/// refused with its reason, each bad buffer comes back with `DESC_F_ERROR` (counted), good
/// ones around them still take frames in order, and the guest next door is not disturbed.
#[test]
fn a_hostile_direct_ring_is_refused_piece_by_piece_and_hurts_nobody_else() {
    use common::raw::Raw;
    use vdpdk_core::abi::desc::{Desc, RingPtr, DESC_F_AVAIL, DESC_F_ERROR};
    use vdpdk_core::abi::{CtrlOp, CtrlStatus, StatsIndex, ABI_MAJOR};

    let (dir, mux, mut wire, seen) = zero_copy_rx_mux("zc-rx-hostile");
    let mut g = Raw::connect(&dir.sock("g"));
    let refused = |g: &mut Raw, args: [u64; 4], why: &str| {
        let (s, m, _) = g.ctrl(CtrlOp::RxqDirectSetup as u32, args, &[], 0);
        assert_ne!(s, CtrlStatus::Ok as u32, "{args:?} taken");
        assert!(m.contains(why), "{args:?}: {m}");
    };
    // Not negotiated yet, then negotiated without it.
    g.ok(
        CtrlOp::Negotiate,
        [
            (ABI_MAJOR as u64) << 16,
            Features::RX_DONE_INDEX.bits(),
            0,
            0,
        ],
    );
    g.ok(CtrlOp::Configure, [1, 1, 0, 0]);
    refused(
        &mut g,
        [0, 0x1000, 64, 0],
        "RX_ZERO_COPY was not negotiated",
    );
    let zc = Features::RX_ZERO_COPY | Features::RX_DONE_INDEX;
    g.ok(
        CtrlOp::Negotiate,
        [(ABI_MAJOR as u64) << 16, zc.bits(), 0, 0],
    );
    g.ok(CtrlOp::Configure, [1, 1, 0, 0]);
    let mem = vdpdk_core::DmaMemory::alloc_with("zc-hostile", 1 << 20, false).unwrap();
    g.dev.dma_map(&mem).unwrap();
    let base = mem.iova_base();
    refused(&mut g, [0, base + 8192, 64, 0], "set up RX queue 0 first");
    g.ok(CtrlOp::RxqSetup, [0, base + 4096, 64, 0]);
    g.ok(CtrlOp::TxqSetup, [0, base, 64, 0]);
    refused(&mut g, [1, base + 8192, 64, 0], "only queue 0");
    refused(&mut g, [0, base + 8192 + 8, 64, 0], "16-byte aligned");
    refused(&mut g, [0, base + 8192, 48, 0], "power of two");
    refused(&mut g, [0, base + (1 << 20) - 512, 64, 0], "not inside");
    g.ok(CtrlOp::RxqDirectSetup, [0, base + 8192, 64, 0]);
    g.ok(CtrlOp::Start, [0; 4]);
    // SAFETY: 64 descriptors at 8 KiB into our own 1 MiB mapping.
    let ring = unsafe { RingPtr::new(mem.as_ptr().add(8192), 64) };
    let buf = |i: u64| base + (256 << 10) + i * 2048;
    let post = |i: u16, addr: u64, len: u16| {
        ring.publish(
            i,
            &Desc {
                addr,
                len,
                flags: DESC_F_AVAIL,
                ..Default::default()
            },
        )
    };
    post(0, 0x10, 2048); // outside the DMA map
    post(1, buf(1), 0); // no room at all
    post(2, buf(2), 2048); // good
    post(3, base + (1 << 20) - 100, 2048); // runs past the end of the map
    post(4, buf(4), 2048); // good, but behind the bad one
    wait_for(10, "the good buffer lent", || seen.lock().outstanding == 1);
    assert_eq!((ring.flags(0), ring.flags(1)), (DESC_F_ERROR, DESC_F_ERROR));
    assert!(
        ring.posted(3) && ring.posted(4),
        "waiting behind the lent one"
    );
    // A neighbour on guest-pmd, running meanwhile.
    let dev = Arc::new(VfioUserPci::connect(&dir.sock("peer")).expect("connect"));
    let mut peer = VdpdkPort::open_with(dev, OpenOptions::default()).expect("open");
    let pool = Mempool::new("peer", 512, DEFAULT_BUF_SIZE).unwrap();
    let (mut peer_rx, _tx) = start_single_queue(&mut peer, &pool, 64, false).unwrap();
    // The neighbour's direct-ring buffers lent to its queue before the frames come (else its
    // frame, arriving first, is copied and not written in place: a race CI once lost).
    wait_for(10, "the neighbour's buffers lent", || {
        seen.lock().outstanding > 1
    });
    let f = udp_frame(mac(GMAC), WIRE_MAC, 1, 300);
    let p = udp_frame(mac(PEER), WIRE_MAC, 2, 300);
    wire.send(&[f.clone(), p.clone()]);
    let got = recv(&mut peer_rx, 1);
    assert_eq!(got[0].to_vec(), p, "the neighbour's frame, untouched");
    wait_for(10, "the good buffer filled", || {
        ring.flags(2) & DESC_F_AVAIL == 0
    });
    let d = ring.read_completed(2);
    assert_eq!((d.len as usize, d.flags), (f.len(), 0));
    let mut back = vec![0u8; f.len()];
    // SAFETY: buffer 2 lies in our own mapping; a byte copy.
    unsafe {
        std::ptr::copy_nonoverlapping(
            mem.as_ptr().add((256 << 10) + 2 * 2048),
            back.as_mut_ptr(),
            f.len(),
        )
    };
    assert_eq!(back, f, "written in place");
    // Nothing lent ahead of it now: the one past the map's end is refused, the next lent
    // (the spy counts the neighbour's lent buffers too: look for this one by address).
    wait_for(10, "the bad one refused, the next lent", || {
        ring.flags(3) == DESC_F_ERROR && seen.lock().posted.iter().any(|p| p.0 == buf(4))
    });
    // (Counted under the guest's lock, just after the descriptor is handed back.)
    let bad = || mux.guests()[0].stats[StatsIndex::RxBadDesc as usize];
    wait_for(10, "three bad buffers counted", || bad() >= 3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(bad(), 3, "each bad buffer counted once");
    assert_eq!(
        in_place(&mux),
        2,
        "its frame and the neighbour's, both in place"
    );
}
