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
//! entries (the count given to [`EthDev::rx_queue_setup`]): senders lock it once per burst
//! among themselves, the receiver takes frames without a lock; when it is full, `tx_burst` stops there and leaves the rest with
//! the caller, as a NIC with a full ring does. TX queues have no ring of their own, so their
//! `nb_desc` is only checked against the limits.
//!
//! Received mbufs come from the *sender's* pool: the pool passed to `rx_queue_setup` is not
//! used, because nothing is copied. Their packet type is classified on the way, on the sending
//! core, as a NIC's RX descriptor would report it.
//!
//! An RX queue can also receive into buffers lent to it ([`RxQueue::post_lent`], lent mode):
//! then each frame is copied out of the ring into the next posted buffer, in posting order,
//! with its RX metadata, and frames wait in the ring while no buffer is posted.

#![warn(missing_docs)]

mod flow;
mod queue;
mod ring;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vdpdk_core::skeleton::PortSkeleton;
use vdpdk_core::{
    DescLimits, DevConfig, DevInfo, EthDev, FlowHandle, FlowRule, LinkStatus, MacAddr, Mempool,
    PortStats, Result, RxOffloads, RxQueue, TxOffloads, TxQueue,
};

use flow::FlowTable;
use queue::{PairRxQueue, PairTxQueue};
use ring::{Inbox, RxRing, RxSide};

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

/// One end of the wire. See the crate docs for how packets travel.
pub struct PairPort {
    mac: MacAddr,
    port_id: u16,
    max_queues: u16,
    max_desc: u16,
    /// Lifecycle; each queue's setup is its descriptor count.
    port: PortSkeleton<u16, u16>,
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
            port: PortSkeleton::default(),
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
            tx_lent_buffers: true,
            // Lent mode copies each frame into the next posted buffer (see PairRxQueue).
            rx_lent_buffers: true,
        }
    }

    /// Statistics survive a reconfiguration. Refused while a flow rule targets an RX queue
    /// beyond the new count.
    fn configure(&mut self, conf: &DevConfig) -> Result<()> {
        self.port.check_configure(conf, &self.info())?;
        self.flows.check_queues(conf.nb_rx_queues)?;
        self.port.configured(conf);
        Ok(())
    }

    /// `pool` is not used: received mbufs are the sender's, moved without a copy (in lent
    /// mode, the buffers posted). `nb_desc` is also the most lent buffers posted at a time.
    fn rx_queue_setup(&mut self, qid: u16, nb_desc: u16, _pool: &Mempool) -> Result<()> {
        self.port.check_rx_setup(qid)?;
        self.desc_lim().check("RX", nb_desc)?;
        self.port.rx.set(qid, nb_desc);
        Ok(())
    }

    /// TX queues push straight into the peer's RX rings, so `nb_desc` is only validated.
    fn tx_queue_setup(&mut self, qid: u16, nb_desc: u16) -> Result<()> {
        self.port.check_tx_setup(qid)?;
        self.desc_lim().check("TX", nb_desc)?;
        self.port.tx.set(qid, nb_desc);
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        self.port.check_start()?;
        let intr = self.port.conf.rx_intr;
        let rings = self
            .port
            .rx
            .iter_mut()
            .map(|d| RxRing::new(d.unwrap_or(1) as usize, intr))
            .collect::<std::io::Result<Vec<_>>>()?;
        let side = Arc::new(RxSide {
            rings: rings.into_boxed_slice(),
            flows: self.flows.clone(),
        });
        self.inbox.publish(Some(side.clone()));
        self.side = Some(side);
        self.port.started();
        Ok(())
    }

    /// Frames still in the RX rings are freed.
    fn stop(&mut self) -> Result<()> {
        self.port.stop()?;
        self.inbox.publish(None);
        if let Some(side) = self.side.take() {
            // A peer TX queue may still hold the old rings until its next burst; free what is
            // there now rather than pin the sender's buffers until then.
            for r in side.rings.iter() {
                r.ring.clear();
            }
        }
        Ok(())
    }

    fn take_rx_queue(&mut self, qid: u16) -> Result<Box<dyn RxQueue>> {
        let t = self.port.take_rx(qid)?;
        Ok(Box::new(PairRxQueue {
            side: self.side.clone().expect("started port has RX rings"),
            qid,
            port_id: self.port_id,
            nb_desc: *t.setup as usize,
            lent: Default::default(),
            lent_mode: false,
            popped: Vec::new(),
            counters: t.counters,
            _live: t.live,
        }))
    }

    fn take_tx_queue(&mut self, qid: u16) -> Result<Box<dyn TxQueue>> {
        let t = self.port.take_tx(qid)?;
        Ok(Box::new(PairTxQueue {
            peer: self.peer.clone(),
            cached: None,
            // Never equal to a real generation at first, so the first burst looks up the peer.
            cached_gen: u64::MAX,
            qid,
            counters: t.counters,
            unsent: Vec::new(),
            swap_macs: self.swap_macs,
            _live: t.live,
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
        self.port.stats()
    }

    fn reset_stats(&mut self) {
        self.port.reset_stats();
        self.flows.dropped.store(0, Ordering::Relaxed);
    }

    /// Accepts rules that pass `check_shape`, in group 0, whose QUEUE is a configured RX queue.
    fn flow_validate(&self, rule: &FlowRule) -> Result<()> {
        FlowTable::validate(rule, self.port.conf.nb_rx_queues)
    }

    /// Rules apply in priority order (lower value first), then in creation order; the first
    /// match decides. They take effect immediately, also on a started port.
    fn flow_create(&mut self, rule: &FlowRule) -> Result<FlowHandle> {
        self.flow_validate(rule)?;
        let handle = FlowHandle(self.next_flow);
        self.next_flow = self.next_flow.wrapping_add(1);
        self.flows.insert(handle, rule);
        Ok(handle)
    }

    fn flow_destroy(&mut self, handle: FlowHandle) -> Result<()> {
        self.flows.remove(handle)
    }

    fn flow_flush(&mut self) -> Result<()> {
        self.flows.clear();
        Ok(())
    }
}

impl Drop for PairPort {
    /// A dropped port is an unplugged cable: the peer's TX drops instead of filling our rings.
    fn drop(&mut self) {
        self.inbox.publish(None);
    }
}

#[cfg(test)]
mod tests;
