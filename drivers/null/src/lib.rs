//! # vdpdk-null
//!
//! A NIC that costs no CPU, what DPDK's `net_null` is to its benchmarks: every frame given to
//! a TX queue is counted and freed, as if the wire took it, and an RX queue hands out copies
//! of a template frame, as many as asked, while a source is set. It measures what sits above
//! the NIC (host-mux, a guest) without a software far end eating one of the cores; on the
//! E810 the far end is the NIC's own DMA, which costs the host nothing either. The source
//! is a list of frames handed out round robin, so one port can feed many destinations.
//!
//! Flow rules steer like a NIC's MAC filters, the rules host-mux's hardware steering creates:
//! a rule of one ETH item on the whole destination MAC and one QUEUE action sends the source
//! frames to that MAC to that queue only; with rules, frames no rule matches go to queue 0
//! only, and a queue left without frames returns nothing (with none, every queue hands out
//! every frame). Anything else is refused.
//!
//! RX queues also receive into lent buffers ([`RxQueue::post_lent`], a guest's own RX buffers
//! for host-mux's zero-copy RX): once buffers are posted, [`RxQueue::rx_lent`] writes source
//! frames into them in the order posted and hands them back, and with none posted it returns
//! nothing (nor does `rx_burst`, in lent mode).
//!
//! [`null_port`] returns the port and a [`NullWire`]: the handle that sets the RX source and
//! reads what TX consumed, for whoever drives the port from outside (a benchmark).

#![warn(missing_docs)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use vdpdk_core::flow::EthFields;
use vdpdk_core::skeleton::{LiveGuard, PortSkeleton};
use vdpdk_core::{
    wire, DescLimits, DevConfig, DevInfo, Error, EthDev, FlowAction, FlowHandle, FlowItem,
    FlowRule, LentBuf, LentRx, LinkStatus, MacAddr, Mbuf, Mempool, PacketType, PortStats,
    QueueCounters, Result, RxOffloads, RxQueue, TxOffloads, TxQueue,
};

/// Driver name reported in [`DevInfo::driver`].
pub const DRIVER_NAME: &str = "null";
/// Most RX and TX queues a null port offers.
pub const MAX_QUEUES: u16 = 64;
/// Largest descriptor count a queue accepts (nothing is held, so it only bounds a burst).
pub const MAX_DESC: u16 = 4096;

/// What the port and its [`NullWire`] share.
#[derive(Default)]
struct Shared {
    /// The frames RX queues hand out and the rules that steer them.
    source: Mutex<Source>,
    /// Bumped after every change of `source` (frames or rules), so an RX burst takes no lock
    /// until it changes: each queue then reads its share again.
    source_gen: AtomicU64,
    /// Frames and bytes every TX queue consumed.
    sunk: QueueCounters,
}

impl Shared {
    /// Tells the RX queues `source` changed: each reads its share at its next burst.
    fn changed(&self) {
        self.source_gen.fetch_add(1, Ordering::Release);
    }
}

/// The source frames and the flow rules that steer them to queues.
#[derive(Default)]
struct Source {
    /// The frames RX queues hand out, round robin; empty: RX returns nothing.
    frames: Arc<[Template]>,
    /// Steering rules, by priority (lower value first), then by creation.
    rules: Vec<Steer>,
}

impl Source {
    /// The frames RX queue `qid` hands out: all of them without rules; with rules, those
    /// the first matching rule sends to `qid`, and on queue 0 those no rule matches.
    fn share(&self, qid: u16) -> Arc<[Template]> {
        if self.rules.is_empty() {
            return self.frames.clone();
        }
        self.frames
            .iter()
            .filter(|t| self.queue_of(&t.frame) == qid)
            .cloned()
            .collect()
    }

    /// The queue `frame` is steered to: the first matching rule's, else 0 (a frame too short
    /// to parse matches no rule).
    fn queue_of(&self, frame: &[u8]) -> u16 {
        let Some(s) = wire::parse(frame) else {
            return 0;
        };
        self.rules
            .iter()
            .find(|r| r.rule.matches_parsed(frame, &s))
            .map_or(0, |r| r.queue)
    }
}

/// A flow rule the port took ([`check_rule`]), with its handle and queue.
struct Steer {
    handle: FlowHandle,
    rule: FlowRule,
    queue: u16,
}

/// Checks that `rule` is one the port steers by, a whole destination MAC to a queue below
/// `nb_rx_queues`, and returns that queue.
fn check_rule(rule: &FlowRule, nb_rx_queues: u16) -> Result<u16> {
    rule.check_shape()?;
    if rule.attr.group != 0 {
        return Err(Error::Unsupported(format!(
            "flow group {}: null ports have only group 0",
            rule.attr.group
        )));
    }
    // What FlowItem::eth_dst masks: the whole destination MAC, nothing else.
    let dst_only = EthFields {
        dst: MacAddr::BROADCAST,
        ..Default::default()
    };
    match rule.pattern.as_slice() {
        [FlowItem::Eth { mask, .. }] if *mask == dst_only => {}
        p => {
            return Err(Error::Unsupported(format!(
                "flow pattern {p:?}: null ports match only one ETH item on the whole \
                 destination MAC (FlowItem::eth_dst)"
            )))
        }
    }
    let q = match rule.actions.as_slice() {
        [FlowAction::Queue(q)] => *q,
        a => {
            return Err(Error::Unsupported(format!(
                "flow actions {a:?}: null ports take only a single QUEUE action"
            )))
        }
    };
    if q >= nb_rx_queues {
        return Err(Error::InvalidArg(format!(
            "flow rule targets RX queue {q}, but {nb_rx_queues} are configured"
        )));
    }
    Ok(q)
}

/// A source frame, classified once.
#[derive(Clone)]
struct Template {
    frame: Arc<[u8]>,
    ptype: PacketType,
}

/// The outside handle of a null port: sets what its RX queues produce and reads what its TX
/// queues consumed. Cheap to clone.
#[derive(Clone)]
pub struct NullWire {
    shared: Arc<Shared>,
}

impl NullWire {
    /// From now on every RX burst returns copies of `frames`, round robin (as many as asked
    /// and the pool gives; with flow rules, of the frames steered to its queue); an empty
    /// list stops the source. Each RX queue sees the change at its next burst.
    pub fn set_source<F: AsRef<[u8]>>(&self, frames: &[F]) {
        let t: Arc<[Template]> = frames
            .iter()
            .map(|f| Template {
                frame: f.as_ref().into(),
                ptype: PacketType::parse(f.as_ref()),
            })
            .collect();
        self.shared.source.lock().frames = t;
        self.shared.changed();
    }

    /// Stops the source: RX bursts return nothing from their next burst on.
    pub fn stop_source(&self) {
        self.set_source::<&[u8]>(&[]);
    }

    /// Frames and bytes that all TX queues have consumed so far.
    pub fn sunk(&self) -> (u64, u64) {
        let s = &self.shared.sunk;
        (QueueCounters::get(&s.packets), QueueCounters::get(&s.bytes))
    }
}

/// Creates a null port with MAC `mac` and the handle that drives its far end.
pub fn null_port(mac: MacAddr) -> (NullPort, NullWire) {
    let shared = Arc::new(Shared::default());
    let port = NullPort {
        mac,
        port: PortSkeleton::default(),
        shared: shared.clone(),
        next_flow: 1,
    };
    (port, NullWire { shared })
}

/// A port whose far end is nothing. See the crate docs.
pub struct NullPort {
    mac: MacAddr,
    /// Lifecycle; RX queues record their pool and ring size, TX queues nothing.
    port: PortSkeleton<RxSetup, ()>,
    shared: Arc<Shared>,
    /// The handle the next flow rule gets.
    next_flow: u32,
}

/// What `rx_queue_setup` records.
struct RxSetup {
    /// Own buffers source frames are copied into.
    pool: Mempool,
    /// Ring size: the most lent buffers the queue holds posted.
    nb_desc: u16,
}

const DESC_LIM: DescLimits = DescLimits {
    min: 1,
    max: MAX_DESC,
    align: 1,
};

impl EthDev for NullPort {
    fn info(&self) -> DevInfo {
        DevInfo {
            driver: DRIVER_NAME.into(),
            mac: self.mac,
            max_rx_queues: MAX_QUEUES,
            max_tx_queues: MAX_QUEUES,
            rx_desc_lim: DESC_LIM,
            tx_desc_lim: DESC_LIM,
            mtu: 1500,
            max_mtu: 9000,
            // Nothing is offered that the port would then not do: it computes no checksum
            // and segments nothing.
            rx_offload_capa: RxOffloads::empty(),
            tx_offload_capa: TxOffloads::MULTI_SEGS,
            rx_intr: false,
            tx_lent_buffers: true,
            rx_lent_buffers: true,
        }
    }

    /// Refused while a flow rule targets an RX queue beyond the new count.
    fn configure(&mut self, conf: &DevConfig) -> Result<()> {
        let info = self.info();
        self.port.check_configure(conf, &info)?;
        let src = self.shared.source.lock();
        let beyond = src
            .rules
            .iter()
            .map(|r| r.queue)
            .find(|&q| q >= conf.nb_rx_queues);
        drop(src);
        if let Some(q) = beyond {
            return Err(Error::InvalidArg(format!(
                "a flow rule targets RX queue {q}, beyond the {} requested; destroy it first",
                conf.nb_rx_queues
            )));
        }
        self.port.configured(conf);
        Ok(())
    }

    /// Source frames are copied into buffers of `pool`, or written into lent buffers, at
    /// most `nb_desc` posted at a time.
    fn rx_queue_setup(&mut self, qid: u16, nb_desc: u16, pool: &Mempool) -> Result<()> {
        self.port.check_rx_setup(qid)?;
        DESC_LIM.check("RX", nb_desc)?;
        self.port.rx.set(
            qid,
            RxSetup {
                pool: pool.clone(),
                nb_desc,
            },
        );
        Ok(())
    }

    fn tx_queue_setup(&mut self, qid: u16, nb_desc: u16) -> Result<()> {
        self.port.check_tx_setup(qid)?;
        DESC_LIM.check("TX", nb_desc)?;
        self.port.tx.set(qid, ());
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        self.port.check_start()?;
        self.port.started();
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        self.port.stop()
    }

    fn take_rx_queue(&mut self, qid: u16) -> Result<Box<dyn RxQueue>> {
        let t = self.port.take_rx(qid)?;
        Ok(Box::new(NullRxQueue {
            pool: t.setup.pool.clone(),
            shared: self.shared.clone(),
            // Never a real generation, so the first burst reads the source.
            seen_gen: u64::MAX,
            templates: Arc::new([]),
            next: 0,
            qid,
            nb_desc: t.setup.nb_desc,
            lent_mode: false,
            // Sized at the first post: a queue never lent to holds no ring.
            lent: VecDeque::new(),
            counters: t.counters,
            _live: t.live,
        }))
    }

    fn take_tx_queue(&mut self, qid: u16) -> Result<Box<dyn TxQueue>> {
        let t = self.port.take_tx(qid)?;
        Ok(Box::new(NullTxQueue {
            shared: self.shared.clone(),
            counters: t.counters,
            _live: t.live,
        }))
    }

    /// Always up; speed unknown (0).
    fn link(&self) -> LinkStatus {
        LinkStatus {
            up: true,
            speed_mbps: 0,
            full_duplex: true,
        }
    }

    fn stats(&self) -> PortStats {
        self.port.stats()
    }

    fn reset_stats(&mut self) {
        self.port.reset_stats();
    }

    /// Takes a rule of one [`FlowItem::eth_dst`] item and one QUEUE action below the
    /// configured RX queue count, in group 0; refuses anything else.
    fn flow_validate(&self, rule: &FlowRule) -> Result<()> {
        check_rule(rule, self.port.conf.nb_rx_queues).map(|_| ())
    }

    /// Running RX queues see the rule from their next burst on.
    fn flow_create(&mut self, rule: &FlowRule) -> Result<FlowHandle> {
        let queue = check_rule(rule, self.port.conf.nb_rx_queues)?;
        let handle = FlowHandle(self.next_flow);
        self.next_flow = self.next_flow.wrapping_add(1);
        {
            let mut src = self.shared.source.lock();
            let prio = rule.attr.priority;
            let at = src.rules.partition_point(|r| r.rule.attr.priority <= prio);
            src.rules.insert(
                at,
                Steer {
                    handle,
                    rule: rule.clone(),
                    queue,
                },
            );
        }
        self.shared.changed();
        Ok(handle)
    }

    fn flow_destroy(&mut self, handle: FlowHandle) -> Result<()> {
        {
            let mut src = self.shared.source.lock();
            let Some(at) = src.rules.iter().position(|r| r.handle == handle) else {
                return Err(Error::InvalidArg(format!(
                    "no flow rule {handle:?} on this null port"
                )));
            };
            src.rules.remove(at);
        }
        self.shared.changed();
        Ok(())
    }

    fn flow_flush(&mut self) -> Result<()> {
        self.shared.source.lock().rules.clear();
        self.shared.changed();
        Ok(())
    }
}

/// Hands out copies of the source frames steered to it.
struct NullRxQueue {
    pool: Mempool,
    shared: Arc<Shared>,
    seen_gen: u64,
    /// This queue's share of the source (see `Source::share`).
    templates: Arc<[Template]>,
    /// The template the next frame copies.
    next: usize,
    qid: u16,
    /// The most lent buffers `lent` holds.
    nb_desc: u16,
    /// Whether the queue receives into lent buffers only (from `post_lent` until
    /// `take_back_lent`).
    lent_mode: bool,
    /// Lent buffers posted and not yet filled, in the order posted.
    lent: VecDeque<LentBuf>,
    counters: Arc<QueueCounters>,
    _live: LiveGuard,
}

impl NullRxQueue {
    /// Reads this queue's share of the source again, after it changed to generation `gen`.
    #[cold]
    #[inline(never)]
    fn reload(&mut self, gen: u64) {
        self.templates = self.shared.source.lock().share(self.qid);
        self.next = 0;
        self.seen_gen = gen;
    }

    /// Whether this queue has frames to hand out, after picking up a changed source.
    #[inline]
    fn sourcing(&mut self) -> bool {
        let gen = self.shared.source_gen.load(Ordering::Acquire);
        if gen != self.seen_gen {
            self.reload(gen);
        }
        !self.templates.is_empty()
    }
}

impl RxQueue for NullRxQueue {
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        if !self.sourcing() || self.lent_mode {
            return 0;
        }
        let first = out.len();
        let got = self.pool.alloc_bulk(out, max);
        if got < max {
            self.counters
                .nombuf
                .fetch_add((max - got) as u64, Ordering::Relaxed);
        }
        let (mut n, mut bytes) = (0, 0);
        for m in &mut out[first..] {
            let t = &self.templates[self.next];
            // A source frame larger than the pool's buffers is refused here, not truncated.
            if m.copy_from(&t.frame).is_err() {
                break;
            }
            m.packet_type = t.ptype;
            m.queue = self.qid;
            n += 1;
            bytes += t.frame.len() as u64;
            self.next = (self.next + 1) % self.templates.len();
        }
        if n < got {
            // The refused buffers go back to the pool as they are dropped.
            out.truncate(first + n);
            self.counters
                .errors
                .fetch_add((got - n) as u64, Ordering::Relaxed);
        }
        self.counters.add(n as u64, bytes);
        n
    }

    /// Enters lent mode (even when `bufs` is empty) and keeps buffers while fewer than
    /// `nb_desc` are posted.
    unsafe fn post_lent(&mut self, bufs: &[LentBuf]) -> usize {
        self.lent_mode = true;
        let nb_desc = self.nb_desc as usize;
        if self.lent.capacity() < nb_desc {
            // Once per queue: never grows past nb_desc afterwards.
            self.lent.reserve_exact(nb_desc - self.lent.len());
        }
        let k = (nb_desc - self.lent.len()).min(bufs.len());
        self.lent.extend(&bufs[..k]);
        k
    }

    /// Up to `max` source frames, each written into the oldest lent buffer still posted.
    fn rx_lent(&mut self, out: &mut Vec<LentRx>, max: usize) -> usize {
        if !self.sourcing() {
            return 0;
        }
        // A frame that finds no lent buffer posted is not taken and not counted. A NIC would
        // drop it and count it missed, but the null source is infinite: such a count would
        // only say how often the queue was polled while empty.
        let (mut n, mut bytes, mut errors) = (0, 0, 0);
        while n < max {
            let Some(&b) = self.lent.front() else {
                break;
            };
            let t = &self.templates[self.next];
            self.next = (self.next + 1) % self.templates.len();
            let len = t.frame.len();
            if len > b.len as usize {
                // Too big for this buffer: the frame is dropped, not truncated, and the
                // buffer stays posted for the next one.
                errors += 1;
                continue;
            }
            // SAFETY: the buffer holds `b.len >= len` bytes at `b.ptr`, mapped and writable
            // until handed back (post_lent's contract); a byte copy through a raw pointer
            // forms no reference to memory its owner may be writing.
            unsafe { std::ptr::copy_nonoverlapping(t.frame.as_ptr(), b.ptr.as_ptr(), len) };
            self.lent.pop_front();
            out.push(LentRx {
                tag: b.tag,
                len: len as u16,
                packet_type: t.ptype,
                ..Default::default()
            });
            n += 1;
            bytes += len as u64;
        }
        if errors > 0 {
            self.counters.errors.fetch_add(errors, Ordering::Relaxed);
        }
        self.counters.add(n as u64, bytes);
        n
    }

    fn take_back_lent(&mut self) -> usize {
        self.lent_mode = false;
        let n = self.lent.len();
        self.lent.clear();
        n
    }
}

/// Consumes every frame.
struct NullTxQueue {
    shared: Arc<Shared>,
    counters: Arc<QueueCounters>,
    _live: LiveGuard,
}

impl TxQueue for NullTxQueue {
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        let n = pkts.len();
        if n == 0 {
            return 0;
        }
        let bytes = pkts.iter().map(|m| m.pkt_len() as u64).sum();
        Mempool::free_bulk(pkts);
        self.counters.add(n as u64, bytes);
        self.shared.sunk.add(n as u64, bytes);
        n
    }
}

#[cfg(test)]
mod tests;
