//! # vdpdk-pair
//!
//! An in-memory wire: [`pair`] returns two connected ports, and a packet sent on one arrives on
//! the other. Tests and the host mux use it as a backend that needs no kernel, no device and no
//! privileges, yet behaves like a NIC: full ethdev lifecycle, bounded rings with back-pressure,
//! RX interrupts on eventfds, and software flow rules.
//!
//! How a packet travels: TX queue `q` of one port pushes the mbuf itself (zero copy, moved by
//! ownership) into RX queue `q % nb_rx_queues` of the peer, unless one of the peer's flow rules
//! sends it elsewhere, drops it or marks it. Each RX queue is a bounded FIFO of `nb_desc`
//! entries, locked once per burst on either side (the count given to
//! [`EthDev::rx_queue_setup`]); when it is full, `tx_burst` stops there and leaves the rest with
//! the caller, as a NIC with a full ring does. TX queues have no ring of their own, so their
//! `nb_desc` is only checked against the limits.
//!
//! Received mbufs come from the *sender's* pool: the pool passed to `rx_queue_setup` is not
//! used, because nothing is copied.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use vdpdk_core::ethdev::sum_stats;
use vdpdk_core::flow::FlowVerdict;
use vdpdk_core::mbuf::TxOffloadInfo;
use vdpdk_core::{
    DescLimits, DevConfig, DevInfo, Error, EthDev, FlowHandle, FlowRule, LinkStatus, MacAddr, Mbuf,
    Mempool, OlFlags, PacketType, PortStats, QueueCounters, Result, RxOffloads, RxQueue,
    TxOffloads, TxQueue,
};

/// Driver name reported in [`DevInfo::driver`].
pub const DRIVER_NAME: &str = "pair";
/// Most queues a pair port can have: a TX burst records the RX queues it touched in a `u64`.
pub const MAX_QUEUES: u16 = 64;
/// MTU reported by [`EthDev::info`]. The wire itself carries any frame that fits an mbuf.
pub const MTU: u16 = 1500;
/// Largest MTU reported by [`EthDev::info`].
pub const MAX_MTU: u16 = 9000;

/// Creates two connected ports, `a` (port id 0) and `b` (port id 1).
///
/// `max_queues` is the most RX and TX queues each port may configure (1..=[`MAX_QUEUES`]);
/// `depth` is the largest descriptor count a queue accepts, i.e. the largest RX ring
/// (clamped to `u16::MAX`). The ring size itself is the `nb_desc` of each `rx_queue_setup`.
///
/// # Panics
/// If `max_queues` is 0 or above [`MAX_QUEUES`], or `depth` is 0: these are programming errors.
pub fn pair(mac_a: MacAddr, mac_b: MacAddr, max_queues: u16, depth: usize) -> (PairPort, PairPort) {
    assert!(
        (1..=MAX_QUEUES).contains(&max_queues),
        "pair: max_queues {max_queues} outside 1..={MAX_QUEUES}"
    );
    assert!(depth > 0, "pair: depth must be at least 1");
    let max_desc = depth.min(u16::MAX as usize) as u16;
    let inbox_a = Arc::new(Inbox::default());
    let inbox_b = Arc::new(Inbox::default());
    let a = PairPort::new(
        mac_a,
        0,
        max_queues,
        max_desc,
        inbox_a.clone(),
        inbox_b.clone(),
    );
    let b = PairPort::new(mac_b, 1, max_queues, max_desc, inbox_b, inbox_a);
    (a, b)
}

/// A single port wired to itself through a reflector: every frame it transmits comes back on
/// its own RX side with source and destination MAC swapped, like a far end that echoes. No
/// thread is involved (the swap happens in `tx_burst`), so it costs no core of its own.
pub fn reflector(mac: MacAddr, max_queues: u16, depth: usize) -> PairPort {
    assert!(
        (1..=MAX_QUEUES).contains(&max_queues),
        "pair: max_queues {max_queues} outside 1..={MAX_QUEUES}"
    );
    assert!(depth > 0, "pair: depth must be at least 1");
    let inbox = Arc::new(Inbox::default());
    let mut p = PairPort::new(
        mac,
        0,
        max_queues,
        depth.min(u16::MAX as usize) as u16,
        inbox.clone(),
        inbox,
    );
    p.swap_macs = true;
    p
}

/// Where a port receives: the peer's TX queues look it up here. `gen` changes whenever `rx`
/// does, so a TX queue revalidates its cached copy with one atomic load per burst.
#[derive(Default)]
struct Inbox {
    gen: AtomicU64,
    rx: Mutex<Option<Arc<RxSide>>>,
}

impl Inbox {
    fn publish(&self, side: Option<Arc<RxSide>>) {
        *self.rx.lock() = side;
        self.gen.fetch_add(1, Ordering::Release);
    }
}

/// The RX rings of a started port.
struct RxSide {
    rings: Box<[RxRing]>,
    flows: Arc<FlowTable>,
}

/// A bounded FIFO that moves whole bursts under one lock: a burst of 32 costs one lock round
/// trip (measured: the per-packet compare-and-swap of a lock-free queue cost more than twice as
/// much CPU in vdpdk-bench).
struct BurstRing {
    q: Mutex<VecDeque<Mbuf>>,
    cap: usize,
}

impl BurstRing {
    fn new(cap: usize) -> BurstRing {
        BurstRing {
            q: Mutex::new(VecDeque::with_capacity(cap)),
            cap,
        }
    }
    fn is_empty(&self) -> bool {
        self.q.lock().is_empty()
    }
    fn clear(&self) {
        let mut q = self.q.lock();
        let mut v: Vec<Mbuf> = q.drain(..).collect();
        drop(q);
        Mempool::free_bulk(&mut v);
    }
}

struct RxRing {
    ring: BurstRing,
    /// Set by the receiver when it wants a wake-up; whoever clears it writes the eventfd.
    armed: AtomicBool,
    /// Present when the port was configured with `rx_intr`.
    efd: Option<OwnedFd>,
}

impl RxRing {
    /// Wakes the receiver if it is armed. The caller has made its pushes visible with a SeqCst
    /// fence first; the receiver arms, fences and re-checks the ring, so one of the two sides
    /// always sees the other and no wake-up is lost.
    fn wake_if_armed(&self) {
        if self.armed.load(Ordering::SeqCst) && self.armed.swap(false, Ordering::SeqCst) {
            self.signal();
        }
    }

    fn signal(&self) {
        if let Some(fd) = &self.efd {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. The only possible
            // failure is EAGAIN at a counter near u64::MAX, which still leaves the fd readable.
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    fn drain_signal(&self) {
        if let Some(fd) = &self.efd {
            let mut v: u64 = 0;
            // SAFETY: reads at most 8 bytes into a live u64 from a non-blocking eventfd we own;
            // EAGAIN (nothing pending) is the expected outcome and needs no handling.
            unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        }
    }
}

fn eventfd() -> Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; we check the result before using it.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

struct FlowEntry {
    handle: FlowHandle,
    priority: u32,
    rule: FlowRule,
    verdict: FlowVerdict,
}

/// A port's flow rules, matched on the *sender's* thread when it enqueues a frame.
#[derive(Default)]
struct FlowTable {
    /// Whether any rule exists: lets the common no-rule case skip the lock.
    active: AtomicBool,
    /// Ordered by priority (lower value first), then by creation.
    rules: RwLock<Vec<FlowEntry>>,
    /// Frames a DROP rule discarded.
    dropped: AtomicU64,
}

/// Counts queues handed out and not yet dropped, so `stop` can refuse while they live.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(live: &Arc<AtomicUsize>) -> LiveGuard {
        live.fetch_add(1, Ordering::AcqRel);
        LiveGuard(live.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

use vdpdk_core::ethdev::{check_qid, PortState as State};

/// One end of the wire. See the crate docs for how packets travel.
pub struct PairPort {
    mac: MacAddr,
    port_id: u16,
    max_queues: u16,
    max_desc: u16,
    state: State,
    conf: DevConfig,
    rx_desc: Vec<Option<u16>>,
    tx_desc: Vec<Option<u16>>,
    rx_taken: Vec<bool>,
    tx_taken: Vec<bool>,
    rx_counters: Vec<Arc<QueueCounters>>,
    tx_counters: Vec<Arc<QueueCounters>>,
    live: Arc<AtomicUsize>,
    /// Our receive side, where the peer delivers.
    inbox: Arc<Inbox>,
    /// The peer's receive side, where our TX queues deliver.
    peer: Arc<Inbox>,
    /// Our rings while started.
    side: Option<Arc<RxSide>>,
    flows: Arc<FlowTable>,
    next_flow: u32,
    /// Swap source and destination MAC on transmit (the reflector).
    swap_macs: bool,
}

impl PairPort {
    fn new(
        mac: MacAddr,
        port_id: u16,
        max_queues: u16,
        max_desc: u16,
        inbox: Arc<Inbox>,
        peer: Arc<Inbox>,
    ) -> PairPort {
        PairPort {
            mac,
            port_id,
            max_queues,
            max_desc,
            state: State::Unconfigured,
            conf: DevConfig::default(),
            rx_desc: Vec::new(),
            tx_desc: Vec::new(),
            rx_taken: Vec::new(),
            tx_taken: Vec::new(),
            rx_counters: Vec::new(),
            tx_counters: Vec::new(),
            live: Arc::new(AtomicUsize::new(0)),
            inbox,
            peer,
            side: None,
            flows: Arc::new(FlowTable::default()),
            next_flow: 1,
            swap_macs: false,
        }
    }

    /// The id written to `Mbuf::port` of received packets (0 and 1 by default).
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// Changes the id written to `Mbuf::port`; takes effect for queues taken afterwards.
    pub fn set_port_id(&mut self, id: u16) {
        self.port_id = id;
    }

    /// Frames discarded by a DROP flow rule on this port (not part of [`PortStats`]).
    pub fn flow_dropped(&self) -> u64 {
        self.flows.dropped.load(Ordering::Relaxed)
    }

    fn desc_lim(&self) -> DescLimits {
        DescLimits {
            min: 1,
            max: self.max_desc,
            align: 1,
        }
    }
}

impl EthDev for PairPort {
    fn info(&self) -> DevInfo {
        DevInfo {
            driver: DRIVER_NAME.into(),
            mac: self.mac,
            max_rx_queues: self.max_queues,
            max_tx_queues: self.max_queues,
            rx_desc_lim: self.desc_lim(),
            tx_desc_lim: self.desc_lim(),
            mtu: MTU,
            max_mtu: MAX_MTU,
            // Chains cross the wire as they are (the mbufs move), so a receiver sees the
            // sender's segments.
            rx_offload_capa: RxOffloads::SCATTER,
            tx_offload_capa: TxOffloads::MULTI_SEGS,
            rx_intr: true,
        }
    }

    fn configure(&mut self, conf: &DevConfig) -> Result<()> {
        self.state.need_stopped("configure")?;
        conf.validate(&self.info())?;
        if let Some(q) = self
            .flows
            .rules
            .read()
            .iter()
            .flat_map(|e| e.rule.queues())
            .find(|&q| q >= conf.nb_rx_queues)
        {
            return Err(Error::InvalidArg(format!(
                "a flow rule targets RX queue {q}, beyond the {} requested; destroy it first",
                conf.nb_rx_queues
            )));
        }
        let (nrx, ntx) = (conf.nb_rx_queues as usize, conf.nb_tx_queues as usize);
        self.conf = conf.clone();
        self.rx_desc = vec![None; nrx];
        self.tx_desc = vec![None; ntx];
        self.rx_taken = vec![false; nrx];
        self.tx_taken = vec![false; ntx];
        // Keep existing counters so statistics survive a reconfiguration.
        self.rx_counters.resize_with(nrx, Default::default);
        self.tx_counters.resize_with(ntx, Default::default);
        self.state = State::Configured;
        Ok(())
    }

    /// `pool` is not used: received mbufs are the sender's, moved without a copy.
    fn rx_queue_setup(&mut self, qid: u16, nb_desc: u16, _pool: &Mempool) -> Result<()> {
        self.state.need_configured("rx_queue_setup")?;
        check_qid("RX", qid, self.conf.nb_rx_queues)?;
        self.desc_lim().check("RX", nb_desc)?;
        self.rx_desc[qid as usize] = Some(nb_desc);
        Ok(())
    }

    /// TX queues push straight into the peer's RX rings, so `nb_desc` is only validated.
    fn tx_queue_setup(&mut self, qid: u16, nb_desc: u16) -> Result<()> {
        self.state.need_configured("tx_queue_setup")?;
        check_qid("TX", qid, self.conf.nb_tx_queues)?;
        self.desc_lim().check("TX", nb_desc)?;
        self.tx_desc[qid as usize] = Some(nb_desc);
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        self.state.need_startable()?;
        vdpdk_core::ethdev::check_all_set_up(&self.rx_desc, &self.tx_desc)?;
        let rings = self
            .rx_desc
            .iter()
            .map(|d| {
                Ok(RxRing {
                    ring: BurstRing::new(d.unwrap_or(1) as usize),
                    armed: AtomicBool::new(false),
                    efd: if self.conf.rx_intr {
                        Some(eventfd()?)
                    } else {
                        None
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let side = Arc::new(RxSide {
            rings: rings.into_boxed_slice(),
            flows: self.flows.clone(),
        });
        self.inbox.publish(Some(side.clone()));
        self.side = Some(side);
        self.rx_taken.iter_mut().for_each(|t| *t = false);
        self.tx_taken.iter_mut().for_each(|t| *t = false);
        self.state = State::Started;
        Ok(())
    }

    /// Frames still in the RX rings are freed.
    fn stop(&mut self) -> Result<()> {
        if self.state != State::Started {
            return Err(Error::BadState("stop of a port that is not started".into()));
        }
        let live = self.live.load(Ordering::Acquire);
        if live != 0 {
            return Err(Error::BadState(format!(
                "stop with {live} queue(s) still taken; drop them first"
            )));
        }
        self.inbox.publish(None);
        if let Some(side) = self.side.take() {
            // A peer TX queue may still hold the old rings until its next burst; free what is
            // there now rather than pin the sender's buffers until then.
            for r in side.rings.iter() {
                r.ring.clear();
            }
        }
        self.state = State::Configured;
        Ok(())
    }

    fn take_rx_queue(&mut self, qid: u16) -> Result<Box<dyn RxQueue>> {
        self.state.need_started("take_rx_queue")?;
        check_qid("RX", qid, self.conf.nb_rx_queues)?;
        if self.rx_taken[qid as usize] {
            return Err(Error::BadState(format!("RX queue {qid} was already taken")));
        }
        let side = self.side.clone().expect("started port has RX rings");
        self.rx_taken[qid as usize] = true;
        Ok(Box::new(PairRxQueue {
            side,
            qid,
            port_id: self.port_id,
            counters: self.rx_counters[qid as usize].clone(),
            _live: LiveGuard::new(&self.live),
        }))
    }

    fn take_tx_queue(&mut self, qid: u16) -> Result<Box<dyn TxQueue>> {
        self.state.need_started("take_tx_queue")?;
        check_qid("TX", qid, self.conf.nb_tx_queues)?;
        if self.tx_taken[qid as usize] {
            return Err(Error::BadState(format!("TX queue {qid} was already taken")));
        }
        self.tx_taken[qid as usize] = true;
        Ok(Box::new(PairTxQueue {
            peer: self.peer.clone(),
            cached: None,
            // Never equal to a real generation at first, so the first burst looks up the peer.
            cached_gen: u64::MAX,
            qid,
            counters: self.tx_counters[qid as usize].clone(),
            unsent: Vec::new(),
            swap_macs: self.swap_macs,
            _live: LiveGuard::new(&self.live),
        }))
    }

    /// Always up: the wire cannot be unplugged. Speed is unknown (0).
    fn link(&self) -> LinkStatus {
        LinkStatus {
            up: true,
            speed_mbps: 0,
            full_duplex: true,
        }
    }

    fn stats(&self) -> PortStats {
        sum_stats(&self.rx_counters, &self.tx_counters)
    }

    fn reset_stats(&mut self) {
        vdpdk_core::ethdev::reset_all(&self.rx_counters, &self.tx_counters);
        self.flows.dropped.store(0, Ordering::Relaxed);
    }

    /// Accepts rules that pass `check_shape`, in group 0, whose QUEUE is a configured RX queue.
    fn flow_validate(&self, rule: &FlowRule) -> Result<()> {
        rule.check_shape()?;
        if rule.attr.group != 0 {
            return Err(Error::Unsupported(format!(
                "flow group {}: pair ports have only group 0",
                rule.attr.group
            )));
        }
        if let Some(q) = rule.queues().find(|&q| q >= self.conf.nb_rx_queues) {
            return Err(Error::InvalidArg(format!(
                "flow rule targets RX queue {q}, but {} are configured",
                self.conf.nb_rx_queues
            )));
        }
        Ok(())
    }

    /// Rules apply in priority order (lower value first), then in creation order; the first
    /// match decides. They take effect immediately, also on a started port.
    fn flow_create(&mut self, rule: &FlowRule) -> Result<FlowHandle> {
        self.flow_validate(rule)?;
        let handle = FlowHandle(self.next_flow);
        self.next_flow = self.next_flow.wrapping_add(1);
        let entry = FlowEntry {
            handle,
            priority: rule.attr.priority,
            rule: rule.clone(),
            verdict: rule.verdict(),
        };
        let mut rules = self.flows.rules.write();
        let at = rules.partition_point(|e| e.priority <= entry.priority);
        rules.insert(at, entry);
        self.flows.active.store(true, Ordering::Release);
        Ok(handle)
    }

    fn flow_destroy(&mut self, handle: FlowHandle) -> Result<()> {
        let mut rules = self.flows.rules.write();
        let at = rules
            .iter()
            .position(|e| e.handle == handle)
            .ok_or_else(|| Error::InvalidArg(format!("no flow rule {handle:?} on this port")))?;
        rules.remove(at);
        self.flows
            .active
            .store(!rules.is_empty(), Ordering::Release);
        Ok(())
    }

    fn flow_flush(&mut self) -> Result<()> {
        let mut rules = self.flows.rules.write();
        rules.clear();
        self.flows.active.store(false, Ordering::Release);
        Ok(())
    }
}

impl Drop for PairPort {
    /// A dropped port is an unplugged cable: the peer's TX drops instead of filling our rings.
    fn drop(&mut self) {
        self.inbox.publish(None);
    }
}

struct PairRxQueue {
    side: Arc<RxSide>,
    qid: u16,
    port_id: u16,
    counters: Arc<QueueCounters>,
    _live: LiveGuard,
}

impl PairRxQueue {
    fn ring(&self) -> &RxRing {
        &self.side.rings[self.qid as usize]
    }

    fn need_intr(&self) -> Result<&RxRing> {
        let r = self.ring();
        if r.efd.is_none() {
            return Err(Error::BadState(
                "RX interrupts were not enabled (DevConfig::rx_intr)".into(),
            ));
        }
        Ok(r)
    }
}

impl RxQueue for PairRxQueue {
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let ring = &self.side.rings[self.qid as usize].ring;
        let (mut n, mut bytes) = (0, 0);
        let mut q = ring.q.lock();
        while n < max {
            let Some(mut m) = q.pop_front() else { break };
            m.packet_type = PacketType::parse(m.data());
            m.port = self.port_id;
            m.queue = self.qid;
            bytes += m.pkt_len() as u64;
            out.push(m);
            n += 1;
        }
        drop(q);
        if n > 0 {
            self.counters.add(n as u64, bytes);
        }
        n
    }

    /// Arms the wake-up; signals at once when a frame is already waiting.
    fn enable_intr(&mut self) -> Result<()> {
        let r = self.need_intr()?;
        r.armed.store(true, Ordering::SeqCst);
        // Pairs with the sender's push-fence-check: see RxRing::wake_if_armed.
        fence(Ordering::SeqCst);
        if !r.ring.is_empty() {
            r.wake_if_armed();
        }
        Ok(())
    }

    /// Disarms and clears a pending wake-up. A sender racing with this call may still leave
    /// one spurious wake-up behind; lost wake-ups cannot happen.
    fn disable_intr(&mut self) -> Result<()> {
        let r = self.need_intr()?;
        r.armed.store(false, Ordering::SeqCst);
        r.drain_signal();
        Ok(())
    }

    fn intr_fd(&self) -> Option<RawFd> {
        self.ring().efd.as_ref().map(|fd| fd.as_raw_fd())
    }
}

struct PairTxQueue {
    peer: Arc<Inbox>,
    /// The peer's rings as of `cached_gen`; None while the peer is stopped.
    cached: Option<Arc<RxSide>>,
    cached_gen: u64,
    qid: u16,
    counters: Arc<QueueCounters>,
    /// Reused buffer for the frames a full ring refused, so bursts never allocate.
    unsent: Vec<Mbuf>,
    swap_macs: bool,
    _live: LiveGuard,
}

/// Makes `m` look freshly received: TX-side metadata cleared, `mark` applied.
fn to_rx(m: &mut Mbuf, mark: Option<u32>) {
    (m.ol_flags, m.mark) = match mark {
        Some(id) => (OlFlags::RX_FDIR | OlFlags::RX_FDIR_ID, id),
        None => (OlFlags::empty(), 0),
    };
    m.hash = 0;
    m.vlan_tci = 0;
    m.tx_offload = TxOffloadInfo::default();
}

impl PairTxQueue {
    fn refresh_peer(&mut self) {
        let gen = self.peer.gen.load(Ordering::Acquire);
        if gen != self.cached_gen {
            self.cached = self.peer.rx.lock().clone();
            self.cached_gen = gen;
        }
    }
}

impl TxQueue for PairTxQueue {
    /// Moves frames into the peer's rings. With the peer stopped the wire drops them (counted
    /// as TX errors); with the target ring full it stops and leaves the rest in `pkts`.
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        self.refresh_peer();
        let Some(side) = self.cached.as_deref() else {
            let n = pkts.len();
            self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
            Mempool::free_bulk(pkts);
            return n;
        };
        let default_q = self.qid as usize % side.rings.len();
        let rules = side
            .flows
            .active
            .load(Ordering::Acquire)
            .then(|| side.flows.rules.read());
        let (mut sent, mut bytes, mut flow_drops) = (0usize, 0u64, 0u64);
        let mut touched = 0u64;
        // The ring currently locked: consecutive frames to one queue share one lock.
        let mut locked: Option<(usize, parking_lot::MutexGuard<'_, VecDeque<Mbuf>>)> = None;
        let mut it = pkts.drain(..);
        let swap = |m: &mut Mbuf| {
            if m.len() >= 12 {
                let (a, b) = m.data_mut().split_at_mut(6);
                a.swap_with_slice(&mut b[..6]);
            }
        };
        while let Some(mut m) = it.next() {
            // The reflector's receiver sees (and its rules match) the swapped frame.
            if self.swap_macs {
                swap(&mut m);
            }
            let v = rules
                .as_ref()
                .and_then(|rules| rules.iter().find(|e| e.rule.matches(m.data())))
                .map(|e| e.verdict)
                .unwrap_or_default();
            let len = m.pkt_len() as u64;
            if v.drop {
                flow_drops += 1;
                sent += 1;
                bytes += len;
                continue;
            }
            // flow_validate and configure keep rule queues below the ring count.
            let q = v.queue.map_or(default_q, usize::from);
            if locked.as_ref().is_none_or(|(lq, _)| *lq != q) {
                drop(locked.take()); // hold one ring lock at a time
                locked = Some((q, side.rings[q].ring.q.lock()));
            }
            let ring = &mut locked.as_mut().expect("locked above").1;
            if ring.len() < side.rings[q].ring.cap {
                to_rx(&mut m, v.mark);
                ring.push_back(m);
                sent += 1;
                bytes += len;
                touched |= 1 << q;
            } else {
                if self.swap_macs {
                    swap(&mut m); // back to what the caller handed us
                }
                self.unsent.push(m);
                self.unsent.extend(it.by_ref());
                break;
            }
        }
        drop(locked);
        drop(it);
        pkts.append(&mut self.unsent);
        drop(rules);
        if touched != 0 {
            // Make the pushes visible before reading the armed flags (see wake_if_armed).
            fence(Ordering::SeqCst);
            while touched != 0 {
                let q = touched.trailing_zeros() as usize;
                touched &= touched - 1;
                side.rings[q].wake_if_armed();
            }
        }
        if flow_drops > 0 {
            side.flows.dropped.fetch_add(flow_drops, Ordering::Relaxed);
        }
        self.counters.add(sent as u64, bytes);
        sent
    }
}

#[cfg(test)]
mod tests;
