//! Pollers: move frames between the backend NIC and the guests' rings.
//!
//! A poller has a role. An **RX** poller owns one backend RX queue: one burst per round, steered
//! by destination MAC (broadcast and multicast to every running guest) and then by the guest's
//! own flow rules to a guest RX queue. A **TX** poller serves the TX rings of its cluster's
//! guests round-robin, at most one burst per guest queue per round (so a busy guest cannot
//! starve the rest), into a backend TX queue. A **combined** poller does both.
//!
//! Event mode: after `idle_polls` empty rounds a poller arms its events (TX: a "kick wanted"
//! flag in each of its guests' TX queues; RX: the backend queue's interrupt), polls once more so
//! nothing that raced the arming is missed, and sleeps in epoll until a kick, an interrupt, a
//! control event or `sleep_timeout`.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use vdpdk_core::abi::desc::{Desc, DESC_F_AVAIL, DESC_F_ERROR};
use vdpdk_core::abi::{self, StatsIndex};
use vdpdk_core::mbuf::TxOffloadInfo;
use vdpdk_core::packet::{fill_tx_checksums, finish_tcp_segment, TcpLayout, TxLayout};
use vdpdk_core::{MacAddr, Mbuf, Mempool, OlFlags, RxQueue, TxOffloads, TxQueue};
use vmm_sys_util::eventfd::EventFd;

use crate::guest::{Guest, HostQueue, PathStats, RxPath};

pub const BURST: usize = 32;
/// Largest frame a guest may transmit (also bounded by the host buffer size).
pub const MAX_FRAME: usize = 9018;
/// Checksum offloads host-mux gives guests: the backend's hardware when it has them, else
/// software here.
pub const CSUM_TX_OFFLOADS: TxOffloads = TxOffloads::IPV4_CKSUM
    .union(TxOffloads::UDP_CKSUM)
    .union(TxOffloads::TCP_CKSUM);
/// Every TX offload guests see: checksums, and TCP segmentation done here in software (a
/// guest hands over a super-frame of up to 64 KiB in one buffer).
pub const GUEST_TX_OFFLOADS: TxOffloads = CSUM_TX_OFFLOADS.union(TxOffloads::TCP_TSO);
/// Buffers for super-frames a backend segments in hardware: 16 KiB each (under the E810's
/// 16383 B per descriptor), so a 64 KiB super-frame is a chain of 5, within its 8.
pub const TSO_BUF_SIZE: u16 = 16 * 1024;
pub const TSO_POOL_BUFS: u32 = 512;
/// Smallest TSO segment size a guest may ask for: bounds the host buffers one super-frame
/// takes (at most 256).
pub const MIN_TSO_MSS: usize = 256;
const MIN_FRAME: usize = 14;
const TARGET_ALL: u16 = u16::MAX;
const TARGET_NONE: u16 = u16::MAX - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Rx,
    Tx,
    Combined,
}

impl Role {
    fn rx(self) -> bool {
        self != Role::Tx
    }
    fn tx(self) -> bool {
        self != Role::Rx
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Rx => "rx",
            Role::Tx => "tx",
            Role::Combined => "rx+tx",
        }
    }
}

/// Counters of one poller, readable while it runs.
#[derive(Default, Debug)]
pub struct PollerStats {
    pub wire_rx: AtomicU64,
    pub wire_tx: AtomicU64,
    /// Segments cut from guests' TCP super-frames (TSO in software).
    pub tso_segments: AtomicU64,
    /// Guest super-frames handed to the backend for segmentation (TSO in hardware).
    pub tso_offloaded: AtomicU64,
    /// Unicast frames from the wire whose destination is no configured VM.
    pub rx_unknown_dst: AtomicU64,
    /// Frames for a VM whose device is not running.
    pub rx_guest_stopped: AtomicU64,
    /// Rounds in which the backend TX queue was full (guest frames wait in their rings).
    pub tx_backpressure: AtomicU64,
    pub rounds: AtomicU64,
    pub empty_rounds: AtomicU64,
    pub sleeps: AtomicU64,
    pub asleep_ns: AtomicU64,
}

fn bump(c: &AtomicU64, v: u64) {
    c.fetch_add(v, Ordering::Relaxed);
}

/// How a poller sleeps.
#[derive(Clone, Copy, Debug)]
pub struct SleepPolicy {
    /// Empty rounds before arming events and sleeping.
    pub idle_polls: u32,
    /// Longest sleep (ms); -1 sleeps until an event (any lost wake-up would then hang).
    pub timeout_ms: i32,
}

/// A backend RX queue a poller serves: shared (steer by MAC) or dedicated to one guest (the
/// NIC already steered by MAC, e.g. Flow Director).
pub struct RxSource {
    pub queue: Box<dyn RxQueue>,
    /// Index into the poller's `all_guests` when the queue belongs to one guest.
    pub owner: Option<u16>,
}

pub struct Poller {
    pub role: Role,
    /// Every guest: the RX side steers to any of them (broadcast reaches all).
    all_guests: Vec<Arc<Guest>>,
    /// The guests whose TX rings this poller serves.
    tx_guests: Vec<Arc<Guest>>,
    rxqs: Vec<RxSource>,
    txq: Option<Arc<Mutex<Box<dyn TxQueue>>>>,
    pool: Mempool,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    policy: SleepPolicy,
    pub stats: Arc<PollerStats>,
    rx_buf: Vec<Mbuf>,
    tx_buf: Vec<Mbuf>,
    free_cache: Vec<Mbuf>,
    targets: Vec<u16>,
    /// Distinct unicast targets of the current burst.
    hit: Vec<u16>,
    /// Guest MACs as u64 keys, sorted, with the guest index: O(log n) steering.
    mac_index: Vec<(u64, u16)>,
    max_frame: usize,
    /// Checksum offloads the backend performs (the rest is done in software).
    hw_tx: TxOffloads,
    /// Large buffers for super-frames the backend segments itself (TSO in hardware); None
    /// when it cannot and host-mux cuts them.
    tso_pool: Option<Mempool>,
    tso_bufs: Vec<Mbuf>,
    /// Where the next TX round starts, rotating so no guest is always served last.
    tx_cursor: usize,
    /// Guest interrupts due in the current delivery, signalled outside the guest's lock.
    irqs: Vec<Arc<File>>,
}

impl Poller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        role: Role,
        all_guests: Vec<Arc<Guest>>,
        tx_guests: Vec<Arc<Guest>>,
        rxqs: Vec<RxSource>,
        txq: Option<Arc<Mutex<Box<dyn TxQueue>>>>,
        pool: Mempool,
        wake: Arc<EventFd>,
        stop: Arc<AtomicBool>,
        policy: SleepPolicy,
    ) -> Poller {
        assert!(
            role.rx() || rxqs.is_empty(),
            "a TX-only poller owns no RX queue"
        );
        assert_eq!(
            role.tx(),
            txq.is_some(),
            "a TX role needs a backend TX queue"
        );
        let max_frame =
            MAX_FRAME.min(pool.buf_size() as usize - vdpdk_core::MBUF_HEADROOM as usize);
        let mut mac_index: Vec<(u64, u16)> = all_guests
            .iter()
            .enumerate()
            .map(|(i, g)| (mac_key(g.mac), i as u16))
            .collect();
        mac_index.sort_unstable();
        Poller {
            role,
            all_guests,
            tx_guests,
            rxqs,
            txq,
            pool,
            wake,
            stop,
            policy,
            stats: Arc::new(PollerStats::default()),
            rx_buf: Vec::with_capacity(BURST),
            tx_buf: Vec::with_capacity(BURST * 4),
            free_cache: Vec::with_capacity(BURST * 2),
            targets: Vec::with_capacity(BURST),
            hit: Vec::with_capacity(BURST),
            mac_index,
            max_frame,
            hw_tx: TxOffloads::empty(),
            tso_pool: None,
            tso_bufs: Vec::new(),
            tx_cursor: 0,
            irqs: Vec::with_capacity(64),
        }
    }

    /// Lets the backend compute these checksums (it was configured with them).
    pub fn with_hw_tx_offloads(mut self, o: TxOffloads) -> Poller {
        self.hw_tx = o & CSUM_TX_OFFLOADS;
        self
    }

    /// Lets the backend segment guests' super-frames (it was configured with TCP_TSO and
    /// MULTI_SEGS): each goes out as a chain of `pool`'s buffers with a TSO request.
    pub fn with_hw_tso(mut self, pool: Mempool) -> Poller {
        self.tso_pool = Some(pool);
        self
    }

    /// A guest super-frame at `src` as a chain of TSO buffers carrying the request, or None
    /// when the TSO pool is short (the descriptor waits for the next round).
    fn hw_tso_chain(
        &mut self,
        src: *const u8,
        len: usize,
        flags: OlFlags,
        info: TxOffloadInfo,
        lay: &TxLayout,
    ) -> Option<Mbuf> {
        let pool = self.tso_pool.as_ref()?;
        let room = (pool.buf_size() - vdpdk_core::MBUF_HEADROOM) as usize;
        let nbuf = len.div_ceil(room);
        if pool.alloc_bulk(&mut self.tso_bufs, nbuf) < nbuf {
            Mempool::free_bulk(&mut self.tso_bufs);
            return None;
        }
        let mut head: Option<Mbuf> = None;
        for (k, mut m) in self.tso_bufs.drain(..).enumerate() {
            m.reset();
            let chunk = room.min(len - k * room);
            m.set_len(chunk).expect("chunk <= room");
            // SAFETY: src + k*room .. + chunk lies in src..src+len, which translate checked
            // and which stays mapped while the caller holds the guest's TX lock; the buffer
            // holds `room` bytes.
            unsafe { std::ptr::copy_nonoverlapping(src.add(k * room), m.data_ptr(), chunk) };
            match &mut head {
                None => head = Some(m),
                Some(h) => h.chain(m),
            }
        }
        let mut head = head?;
        // The IPv4 header checksum and the TCP checksum are redone per segment by the device.
        let ip = if lay.ipv6 {
            OlFlags::empty()
        } else {
            OlFlags::TX_IP_CKSUM
        };
        head.ol_flags = flags | ip | OlFlags::TX_TCP_CKSUM;
        head.tx_offload = info;
        Some(head)
    }

    /// Runs until `stop` is set.
    pub fn run(mut self) {
        let ep = Epoll::new().expect("epoll_create");
        ep.add(self.wake.as_raw_fd());
        let fds: Vec<Option<RawFd>> = self.rxqs.iter().map(|s| s.queue.intr_fd()).collect();
        for fd in fds.iter().flatten() {
            ep.add(*fd);
        }
        let all_interruptible = fds.iter().all(Option::is_some);
        let mut empty = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            // Frames waiting for a full backend are work too: never sleep on them.
            if self.round() > 0 || !self.tx_buf.is_empty() {
                empty = 0;
                continue;
            }
            empty += 1;
            if empty < self.policy.idle_polls {
                std::hint::spin_loop();
                continue;
            }
            // Event mode: ask for kicks and interrupts, then look once more before sleeping.
            let rx_armed = self.arm(true);
            fence(Ordering::SeqCst);
            if self.round() == 0 && !self.stop.load(Ordering::Relaxed) {
                // An RX role whose backend cannot interrupt must still look at the wire often.
                let timeout = if self.role.rx() && !(rx_armed && all_interruptible) {
                    1
                } else {
                    self.policy.timeout_ms
                };
                let t0 = Instant::now();
                ep.wait(timeout);
                bump(&self.stats.sleeps, 1);
                bump(&self.stats.asleep_ns, t0.elapsed().as_nanos() as u64);
                let _ = self.wake.read();
            }
            self.arm(false);
            // Look once after waking; if that finds nothing, go straight back to sleep instead of
            // spinning `idle_polls` rounds again (an idle mux must cost almost nothing).
            empty = self.policy.idle_polls.saturating_sub(1);
        }
        self.flush_pending();
    }

    /// Sets or clears the kick requests of the TX rings served here and the backend RX
    /// interrupt. Returns whether the backend interrupt is armed.
    fn arm(&mut self, on: bool) -> bool {
        if self.role.tx() {
            for g in &self.tx_guests {
                let n = g.tx.lock().queues.len() as u16;
                for q in 0..n {
                    g.data_bar
                        .flag(abi::txq_flags_offset(q) + abi::TXQ_FLAG_KICK_WANTED)
                        .store(on as u32, Ordering::SeqCst);
                }
            }
        }
        let mut all = !self.rxqs.is_empty();
        for s in &mut self.rxqs {
            if on {
                all &= s.queue.enable_intr().is_ok();
            } else {
                let _ = s.queue.disable_intr();
            }
        }
        on && all
    }

    /// One poll round; returns frames moved.
    pub fn round(&mut self) -> usize {
        bump(&self.stats.rounds, 1);
        let mut work = 0;
        for i in 0..self.rxqs.len() {
            let n = self.rxqs[i].queue.rx_burst(&mut self.rx_buf, BURST);
            if n > 0 {
                bump(&self.stats.wire_rx, n as u64);
                let owner = self.rxqs[i].owner;
                self.deliver(owner);
                work += n;
            }
        }
        if self.role.tx() {
            // Borrow the guest list out of self for the round (a move, no allocation and no
            // reference counting per guest), so pull_tx can use the rest of self.
            let guests = std::mem::take(&mut self.tx_guests);
            let n = guests.len();
            for i in 0..n {
                work += self.pull_tx(&guests[(self.tx_cursor + i) % n]);
            }
            self.tx_cursor = (self.tx_cursor + 1) % n.max(1);
            self.tx_guests = guests;
        }
        if work == 0 {
            bump(&self.stats.empty_rounds, 1);
        }
        work
    }

    fn lookup(&self, dst: MacAddr) -> u16 {
        if dst.is_multicast() {
            return TARGET_ALL;
        }
        let k = mac_key(dst);
        self.mac_index
            .binary_search_by_key(&k, |e| e.0)
            .map_or(TARGET_NONE, |i| self.mac_index[i].1)
    }

    /// Steers the RX burst to guests, taking each target guest's RX lock once per burst.
    /// A dedicated queue's frames all go to its owner (the NIC matched them already).
    fn deliver(&mut self, owner: Option<u16>) {
        self.targets.clear();
        self.hit.clear();
        let mut any_all = false;
        if let Some(gi) = owner {
            self.targets.resize(self.rx_buf.len(), gi);
            self.hit.push(gi);
        }
        for i in 0..if owner.is_some() {
            0
        } else {
            self.rx_buf.len()
        } {
            let t = MacAddr::dst_of(self.rx_buf[i].data()).map_or(TARGET_NONE, |d| self.lookup(d));
            match t {
                TARGET_NONE => bump(&self.stats.rx_unknown_dst, 1),
                TARGET_ALL => any_all = true,
                t if !self.hit.contains(&t) => self.hit.push(t),
                _ => {}
            }
            self.targets.push(t);
        }
        // Broadcast in the burst: every guest is a target, in order (frame order per guest
        // is preserved either way).
        if any_all {
            self.hit.clear();
            self.hit.extend(0..self.all_guests.len() as u16);
        }
        for &gi in &self.hit {
            let g = &self.all_guests[gi as usize];
            let mut rx = g.rx.lock();
            let (mut touched, mut pkts, mut bytes) = (0u64, 0u64, 0u64);
            for (m, &t) in self.rx_buf.iter().zip(&self.targets) {
                if t != gi && t != TARGET_ALL {
                    continue;
                }
                if !rx.running {
                    bump(&self.stats.rx_guest_stopped, 1);
                    continue;
                }
                if let Some(q) = deliver_one(&mut rx, m) {
                    touched |= 1 << (q % 64);
                    pkts += 1;
                    bytes += m.pkt_len() as u64;
                }
            }
            if touched != 0 {
                // One counter update per guest and burst, not per frame.
                rx.stats.add(StatsIndex::RxPackets, pkts);
                rx.stats.add(StatsIndex::RxBytes, bytes);
                due_rx_irqs(g, &rx, touched, &mut self.irqs);
            }
            drop(rx);
            // Signalled after the guest lock is released: the fds are the guest's.
            for fd in self.irqs.drain(..) {
                if signal_eventfd(&fd).is_err() {
                    g.stats.add(StatsIndex::IrqErrors, 1);
                }
            }
        }
        Mempool::free_bulk(&mut self.rx_buf);
    }

    /// Takes up to a burst from each of guest `g`'s TX queues and sends it to the backend.
    fn pull_tx(&mut self, g: &Guest) -> usize {
        if !self.tx_buf.is_empty() && !self.flush_pending() {
            bump(&self.stats.tx_backpressure, 1);
            return 0; // backend still full: leave guest frames in their rings (backpressure)
        }
        let mut guard = g.tx.lock();
        if !guard.running {
            return 0;
        }
        let tx = &mut *guard;
        let (mut taken, mut bytes) = (0usize, 0u64);
        for hq in tx.queues.iter_mut().flatten() {
            for _ in 0..BURST {
                let idx = hq.next;
                if hq.ring.flags(idx) & DESC_F_AVAIL == 0 {
                    break;
                }
                let d = hq.ring.read(idx);
                let len = d.len as usize;
                let flags = Desc::tx_ol_to_mbuf(d.ol_flags);
                let info = TxOffloadInfo {
                    l2_len: d.l2_len,
                    l3_len: d.l3_len,
                    l4_len: d.l4_len,
                    tso_segsz: d.tso_segsz,
                };
                // The guest's offload request, checked against the descriptor alone (the
                // frame's bytes are the guest's to scribble on; only our copy is parsed).
                let request = tx_request(flags, info, len, self.max_frame);
                let src = match request {
                    Some(_) if len >= MIN_FRAME => tx.mem.translate(d.addr, len as u64, false),
                    _ => None,
                };
                let (Some(src), Some(request)) = (src, request) else {
                    hq.ring.release(idx, DESC_F_ERROR);
                    hq.next = idx.wrapping_add(1);
                    tx.stats.add(StatsIndex::TxBadDesc, 1);
                    continue;
                };
                if let TxRequest::Segment { lay, .. } = request {
                    if self.tso_pool.is_some() {
                        let Some(m) = self.hw_tso_chain(src, len, flags, info, &lay) else {
                            break; // out of TSO buffers: try again next round
                        };
                        if spoofed(g, m.data()) {
                            drop(m); // back to the TSO pool
                            refuse_spoofed(hq, idx, &mut tx.stats);
                            continue;
                        }
                        self.tx_buf.push(m);
                        bump(&self.stats.tso_offloaded, 1);
                        hq.ring.release(idx, 0);
                        hq.next = idx.wrapping_add(1);
                        taken += 1;
                        bytes += len as u64;
                        continue;
                    }
                }
                let need = match request {
                    TxRequest::Segment { nseg, .. } => nseg,
                    _ => 1,
                };
                while self.free_cache.len() < need {
                    let want = need - self.free_cache.len();
                    if self.pool.alloc_bulk(&mut self.free_cache, want.max(BURST)) == 0 {
                        break;
                    }
                }
                if self.free_cache.len() < need {
                    break; // out of host buffers: try again next round
                }
                match request {
                    TxRequest::Segment { lay, mss, nseg } => {
                        let tcp = TcpLayout {
                            l3: lay.l3,
                            l4: lay.l4,
                            payload: lay.payload,
                            ipv6: lay.ipv6,
                        };
                        let first = self.tx_buf.len();
                        for k in 0..nseg {
                            let mut m = self.free_cache.pop().expect("reserved above");
                            m.reset();
                            let off = lay.payload + k * mss;
                            let chunk = mss.min(len - off);
                            m.set_len(lay.payload + chunk)
                                .expect("headers + mss checked against max_frame");
                            // Headers are read from guest memory once, into the first segment;
                            // the others copy them from there, so every segment carries the
                            // headers that were checked.
                            let hdr = match k {
                                0 => src,
                                _ => self.tx_buf[first].data().as_ptr(),
                            };
                            // SAFETY: hdr is either src (lay.payload bytes of the guest range
                            // translate checked, mapped while we hold the guest's TX lock) or
                            // our own first segment, which holds lay.payload header bytes; the
                            // payload range lies in src..src+len; the mbuf has room for
                            // payload + chunk bytes and is not the first segment when k > 0.
                            unsafe {
                                std::ptr::copy_nonoverlapping(hdr, m.data_ptr(), lay.payload);
                                std::ptr::copy_nonoverlapping(
                                    src.add(off),
                                    m.data_ptr().add(lay.payload),
                                    chunk,
                                );
                            }
                            if k == 0 && spoofed(g, m.data()) {
                                self.free_cache.push(m);
                                break;
                            }
                            self.tx_buf.push(m);
                        }
                        if self.tx_buf.len() == first {
                            refuse_spoofed(hq, idx, &mut tx.stats);
                            continue;
                        }
                        // Headers are finished once all were copied from the pristine first.
                        for (k, m) in self.tx_buf[first..].iter_mut().enumerate() {
                            finish_tcp_segment(m.data_mut(), &tcp, k, mss, k + 1 == nseg);
                        }
                        bump(&self.stats.tso_segments, nseg as u64);
                    }
                    TxRequest::Plain | TxRequest::Checksum(_) => {
                        // The source MAC is checked in guest memory before the copy (reading
                        // back our copy right after writing it cost ~15% of 64 B guest TX),
                        // and the copy then gets the checked MAC written over it, so a guest
                        // changing it in between sends nothing it was not allowed to.
                        if spoofed_in_guest(g, src) {
                            refuse_spoofed(hq, idx, &mut tx.stats);
                            continue;
                        }
                        let mut m = self.free_cache.pop().expect("reserved above");
                        m.reset();
                        m.set_len(len).expect("len checked against max_frame");
                        // SAFETY: src..src+len lies in the guest's DMA map (translate checked
                        // it) and stays mapped while we hold the guest's TX lock; the mbuf has
                        // room for len bytes. The guest may scribble on the source meanwhile;
                        // we only copy bytes.
                        unsafe { std::ptr::copy_nonoverlapping(src, m.data_ptr(), len) };
                        if g.limits.spoof_check {
                            m.data_mut()[6..12].copy_from_slice(&g.mac.0);
                        }
                        if let TxRequest::Checksum(lay) = request {
                            if self.hw_tx.contains(csum_offloads(flags)) {
                                m.ol_flags = flags;
                                m.tx_offload = info;
                            } else {
                                fill_tx_checksums(m.data_mut(), flags, &lay);
                            }
                        }
                        self.tx_buf.push(m);
                    }
                }
                hq.ring.release(idx, 0);
                hq.next = idx.wrapping_add(1);
                taken += 1;
                bytes += len as u64;
            }
        }
        tx.stats.add(StatsIndex::TxPackets, taken as u64);
        tx.stats.add(StatsIndex::TxBytes, bytes);
        drop(guard);
        if taken > 0 {
            self.flush_pending();
        }
        taken
    }

    /// Sends queued frames; true when none remain.
    fn flush_pending(&mut self) -> bool {
        if self.tx_buf.is_empty() {
            return true;
        }
        let Some(txq) = &self.txq else {
            return true;
        };
        let n = txq.lock().tx_burst(&mut self.tx_buf);
        bump(&self.stats.wire_tx, n as u64);
        self.tx_buf.is_empty()
    }
}

/// Whether a frame (host copy) claims a source MAC that is not the guest's own, while the
/// guest is spoof-checked.
#[inline(always)]
fn spoofed(g: &Guest, frame: &[u8]) -> bool {
    if !g.limits.spoof_check {
        return false;
    }
    // Two integer compares, not a slice compare (a memcmp call per frame cost ~15% of 64 B
    // guest TX in vdpdk-bench).
    let (Some(lo), Some(hi)) = (frame.get(6..10), frame.get(10..12)) else {
        return true;
    };
    let m = &g.mac.0;
    u32::from_ne_bytes([lo[0], lo[1], lo[2], lo[3]]) != u32::from_ne_bytes([m[0], m[1], m[2], m[3]])
        || u16::from_ne_bytes([hi[0], hi[1]]) != u16::from_ne_bytes([m[4], m[5]])
}

/// [`spoofed`] on a frame still in guest memory at `src` (at least [`MIN_FRAME`] bytes, inside
/// the guest's DMA map, which stays mapped while the caller holds the guest's TX lock). The
/// bytes are read once, as plain values; the caller must not rely on them staying put.
#[inline(always)]
fn spoofed_in_guest(g: &Guest, src: *const u8) -> bool {
    if !g.limits.spoof_check {
        return false;
    }
    // SAFETY: src + 6..src + 12 lies inside the frame (len >= MIN_FRAME, checked before
    // translate), which is mapped (see above); unaligned reads of plain integers, no
    // reference to guest memory is formed.
    let (lo, hi) = unsafe {
        (
            src.add(6).cast::<u32>().read_unaligned(),
            src.add(10).cast::<u16>().read_unaligned(),
        )
    };
    let m = &g.mac.0;
    lo != u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) || hi != u16::from_ne_bytes([m[4], m[5]])
}

/// Hands a spoofed frame's descriptor back with the error flag, counted.
fn refuse_spoofed(hq: &mut HostQueue, idx: u16, stats: &mut PathStats) {
    hq.ring.release(idx, DESC_F_ERROR);
    hq.next = idx.wrapping_add(1);
    stats.add(StatsIndex::TxSpoofed, 1);
}

/// What a guest's TX descriptor asks for, once checked. Public for the fuzz targets
/// (fuzz/fuzz_targets/descriptor_validation.rs).
#[derive(Clone, Copy, Debug)]
pub enum TxRequest {
    /// Send as it is.
    Plain,
    /// Fill the checksums its flags name.
    Checksum(TxLayout),
    /// Cut a TCP super-frame into `nseg` segments of `mss` payload bytes.
    Segment {
        lay: TxLayout,
        mss: usize,
        nseg: usize,
    },
}

/// Checks a TX descriptor's length and offload request; None refuses it. Offloads outside
/// [`GUEST_TX_OFFLOADS`] (VLAN insertion, UDP segmentation, ...) are refused too. Public for
/// the fuzz targets (fuzz/fuzz_targets/descriptor_validation.rs).
pub fn tx_request(
    flags: OlFlags,
    t: TxOffloadInfo,
    len: usize,
    max_frame: usize,
) -> Option<TxRequest> {
    let known = OlFlags::TX_IPV4
        | OlFlags::TX_IPV6
        | OlFlags::TX_IP_CKSUM
        | OlFlags::TX_TCP_CKSUM
        | OlFlags::TX_UDP_CKSUM
        | OlFlags::TX_TCP_SEG;
    if !known.contains(flags) {
        return None;
    }
    if !flags.contains(OlFlags::TX_TCP_SEG) {
        if len > max_frame {
            return None;
        }
        if !flags.intersects(OlFlags::TX_IP_CKSUM | OlFlags::TX_TCP_CKSUM | OlFlags::TX_UDP_CKSUM) {
            return Some(TxRequest::Plain);
        }
        return TxLayout::new(flags, t, len).map(TxRequest::Checksum);
    }
    let lay = TxLayout::new(flags, t, len).filter(|l| l.l4_proto == 6)?;
    let mss = t.tso_segsz as usize;
    if mss < MIN_TSO_MSS || lay.payload + mss > max_frame || len <= lay.payload {
        return None;
    }
    Some(TxRequest::Segment {
        lay,
        mss,
        nseg: (len - lay.payload).div_ceil(mss),
    })
}

/// The device checksum offloads a frame's TX flags need.
fn csum_offloads(flags: OlFlags) -> TxOffloads {
    let mut o = TxOffloads::empty();
    for (f, t) in [
        (OlFlags::TX_IP_CKSUM, TxOffloads::IPV4_CKSUM),
        (OlFlags::TX_TCP_CKSUM, TxOffloads::TCP_CKSUM),
        (OlFlags::TX_UDP_CKSUM, TxOffloads::UDP_CKSUM),
    ] {
        if flags.contains(f) {
            o |= t;
        }
    }
    o
}

/// Copies one frame into the guest RX queue its rules choose. Returns the queue used (the
/// caller counts delivered frames); drops are counted here.
/// A MAC as an integer key (the six bytes, big-endian).
fn mac_key(m: MacAddr) -> u64 {
    m.0.iter().fold(0, |k, &b| k << 8 | b as u64)
}

fn deliver_one(rx: &mut RxPath, m: &Mbuf) -> Option<u16> {
    let RxPath {
        queues,
        mem,
        rules,
        stats,
        ..
    } = rx;
    let frame = m.data();
    let mut q = 0u16;
    let mut mark = None;
    if let Some((_, r)) = rules.iter().find(|(_, r)| r.matches(frame)) {
        let v = r.verdict();
        if v.drop {
            stats.add(StatsIndex::RxFlowDrop, 1);
            return None;
        }
        q = v.queue.unwrap_or(0);
        mark = v.mark;
    }
    let Some(hq) = queues.get_mut(q as usize).and_then(|q| q.as_mut()) else {
        stats.add(StatsIndex::RxNoDesc, 1);
        return None;
    };
    let idx = hq.next;
    if hq.ring.flags(idx) & DESC_F_AVAIL == 0 {
        stats.add(StatsIndex::RxNoDesc, 1);
        return None;
    }
    let d = hq.ring.read(idx);
    // The whole packet: a backend may hand over a chain (several buffers).
    let len = m.pkt_len();
    let dst = if d.len as usize >= len {
        mem.translate(d.addr, len as u64, true)
    } else {
        None
    };
    hq.next = idx.wrapping_add(1);
    let Some(dst) = dst else {
        hq.ring.complete(idx, 0, DESC_F_ERROR, 0, 0, 0);
        stats.add(StatsIndex::RxBadDesc, 1);
        return None;
    };
    if m.is_chained() {
        // A backend's chain is gathered into the one guest buffer.
        let mut at = 0;
        for seg in m.segments() {
            // SAFETY: dst..dst+len lies in a writable region of the guest's DMA map (checked),
            // mapped while we hold the guest's RX lock, and the segments add up to len; the
            // source is our own mbuf.
            unsafe { std::ptr::copy_nonoverlapping(seg.data().as_ptr(), dst.add(at), seg.len()) };
            at += seg.len();
        }
    } else {
        // SAFETY: dst..dst+len lies in a writable region of the guest's DMA map (checked),
        // mapped while we hold the guest's RX lock; the source is our own mbuf.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), dst, len) };
    }
    let mut ol = Desc::rx_ol_from(m);
    if mark.is_some() {
        ol |= vdpdk_core::abi::desc::DESC_OL_RX_MARK;
    }
    let ptype = if m.packet_type.0 != 0 {
        m.packet_type.0
    } else {
        vdpdk_core::PacketType::parse(frame).0
    };
    hq.ring
        .complete(idx, len as u16, 0, ol, ptype, mark.unwrap_or(0));
    Some(q)
}

/// Collects the MSI-X eventfd of each touched RX queue whose guest armed its interrupt (and
/// disarms it), for the caller to signal once it has let go of the guest's lock.
fn due_rx_irqs(g: &Guest, rx: &RxPath, touched: u64, out: &mut Vec<Arc<File>>) {
    // Pairs with the guest's fence between arming and re-checking its ring.
    fence(Ordering::SeqCst);
    for q in 0..rx.queues.len().min(64) {
        if touched & (1 << q) == 0 {
            continue;
        }
        let flag = g
            .data_bar
            .flag(abi::rxq_flags_offset(q as u16) + abi::RXQ_FLAG_INTR_ARMED);
        if flag.load(Ordering::SeqCst) != 0 && flag.swap(0, Ordering::SeqCst) != 0 {
            if let Some(Some(fd)) = rx.irq_fds.get(q) {
                out.push(fd.clone());
            }
        }
    }
}

/// Adds one to an eventfd's counter without blocking (the fd is non-blocking; a full counter
/// or a broken fd is an error for the caller to count).
pub fn signal_eventfd(fd: &File) -> std::io::Result<()> {
    use std::io::Write;
    (&*fd).write(&1u64.to_ne_bytes()).map(|_| ())
}

/// Minimal epoll wrapper for a poller's sleep.
struct Epoll(std::os::fd::OwnedFd);

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall; the fd is checked and owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh fd we own.
        Ok(Epoll(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }
    fn add(&self, fd: RawFd) {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: valid epoll fd and event struct.
        unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
    }
    fn wait(&self, timeout_ms: i32) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: evs is a valid buffer of 8 events.
        unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), 8, timeout_ms) };
    }
}
