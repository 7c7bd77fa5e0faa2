//! # vdpdk-null
//!
//! A NIC that costs no CPU, what DPDK's `net_null` is to its benchmarks: every frame given to
//! a TX queue is counted and freed, as if the wire took it, and an RX queue hands out copies
//! of a template frame, as many as asked, while a source is set. It measures what sits above
//! the NIC (host-mux, a guest) without a software far end eating one of the cores; on the
//! E810 the far end is the NIC's own DMA, which costs the host nothing either. The source
//! is a list of frames handed out round robin, so one port can feed many destinations.
//!
//! [`null_port`] returns the port and a [`NullWire`]: the handle that sets the RX source and
//! reads what TX consumed, for whoever drives the port from outside (a benchmark).

#![warn(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use vdpdk_core::skeleton::{LiveGuard, PortSkeleton};
use vdpdk_core::{
    DescLimits, DevConfig, DevInfo, EthDev, LinkStatus, MacAddr, Mbuf, Mempool, PacketType,
    PortStats, QueueCounters, Result, RxOffloads, RxQueue, TxOffloads, TxQueue,
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
    /// The frames RX queues hand out, round robin; empty: RX returns nothing.
    source: Mutex<Arc<[Template]>>,
    /// Bumped on every source change, so an RX burst takes no lock until it changes.
    source_gen: AtomicU64,
    /// Frames and bytes every TX queue consumed.
    sunk: QueueCounters,
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
    /// and the pool gives); an empty list stops the source. Each RX queue sees the change at
    /// its next burst.
    pub fn set_source<F: AsRef<[u8]>>(&self, frames: &[F]) {
        let t: Arc<[Template]> = frames
            .iter()
            .map(|f| Template {
                frame: f.as_ref().into(),
                ptype: PacketType::parse(f.as_ref()),
            })
            .collect();
        *self.shared.source.lock() = t;
        self.shared.source_gen.fetch_add(1, Ordering::Release);
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
    };
    (port, NullWire { shared })
}

/// A port whose far end is nothing. See the crate docs.
pub struct NullPort {
    mac: MacAddr,
    /// Lifecycle; RX queues record their pool, TX queues nothing.
    port: PortSkeleton<Mempool, ()>,
    shared: Arc<Shared>,
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
        }
    }

    fn configure(&mut self, conf: &DevConfig) -> Result<()> {
        let info = self.info();
        self.port.configure(conf, &info)
    }

    /// Source frames are copied into buffers of `pool`.
    fn rx_queue_setup(&mut self, qid: u16, nb_desc: u16, pool: &Mempool) -> Result<()> {
        self.port.check_rx_setup(qid)?;
        DESC_LIM.check("RX", nb_desc)?;
        self.port.rx.set(qid, pool.clone());
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
            pool: t.setup.clone(),
            shared: self.shared.clone(),
            // Never a real generation, so the first burst reads the source.
            seen_gen: u64::MAX,
            templates: Arc::new([]),
            next: 0,
            qid,
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
}

/// Hands out copies of the source frame.
struct NullRxQueue {
    pool: Mempool,
    shared: Arc<Shared>,
    seen_gen: u64,
    templates: Arc<[Template]>,
    /// The template the next frame copies.
    next: usize,
    qid: u16,
    counters: Arc<QueueCounters>,
    _live: LiveGuard,
}

impl RxQueue for NullRxQueue {
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let gen = self.shared.source_gen.load(Ordering::Acquire);
        if gen != self.seen_gen {
            self.templates = self.shared.source.lock().clone();
            self.next = 0;
            self.seen_gen = gen;
        }
        if self.templates.is_empty() {
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
