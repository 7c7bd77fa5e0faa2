//! The DPDK-shaped device API every driver implements: device info, configure, queue setup,
//! start/stop, link, stats, burst RX/TX and RX interrupts.
//!
//! Queues are separate objects so a port can be configured on one thread and its queues polled
//! on others: after [`EthDev::start`], [`EthDev::take_rx_queue`] / [`EthDev::take_tx_queue`] hand
//! out each queue once, and the caller moves it to the thread that polls it.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::flow::{FlowHandle, FlowRule};
pub use crate::mac::MacAddr;
use crate::mbuf::{Mbuf, Mempool};
use crate::{Error, Result};

bitflags::bitflags! {
    /// RX offload capabilities (DPDK `RTE_ETH_RX_OFFLOAD_*` names and bit values).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RxOffloads: u64 {
        /// Strip the VLAN tag into `Mbuf::vlan_tci`.
        const VLAN_STRIP  = 1 << 0;
        /// Check IPv4 header checksums.
        const IPV4_CKSUM  = 1 << 1;
        /// Check UDP checksums.
        const UDP_CKSUM   = 1 << 2;
        /// Check TCP checksums.
        const TCP_CKSUM   = 1 << 3;
        /// Merge TCP segments (large receive offload).
        const TCP_LRO     = 1 << 4;
        /// Receive frames larger than one buffer as mbuf chains.
        const SCATTER     = 1 << 13;
        /// Report the RSS hash in `Mbuf::hash`.
        const RSS_HASH    = 1 << 19;
    }
}

bitflags::bitflags! {
    /// TX offload capabilities (DPDK `RTE_ETH_TX_OFFLOAD_*` names and bit values).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TxOffloads: u64 {
        /// Insert `Mbuf::vlan_tci` as a VLAN tag.
        const VLAN_INSERT    = 1 << 0;
        /// Fill IPv4 header checksums.
        const IPV4_CKSUM     = 1 << 1;
        /// Fill UDP checksums.
        const UDP_CKSUM      = 1 << 2;
        /// Fill TCP checksums.
        const TCP_CKSUM      = 1 << 3;
        /// Fill SCTP checksums.
        const SCTP_CKSUM     = 1 << 4;
        /// TCP segmentation of super-frames.
        const TCP_TSO        = 1 << 5;
        /// UDP segmentation of super-frames.
        const UDP_TSO        = 1 << 6;
        /// Send chained (multi-segment) mbufs.
        const MULTI_SEGS     = 1 << 15;
        /// The application promises all mbufs of a queue come from one pool, unshared.
        const MBUF_FAST_FREE = 1 << 16;
    }
}

/// Descriptor count limits of a queue (`rte_eth_desc_lim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescLimits {
    /// Fewest descriptors a queue accepts.
    pub min: u16,
    /// Most descriptors a queue accepts.
    pub max: u16,
    /// Counts must be a multiple of this.
    pub align: u16,
}

impl DescLimits {
    /// Refuses `n` descriptors outside `min..=max` or not a multiple of `align`; `what` names the
    /// queue kind in the message.
    pub fn check(&self, what: &str, n: u16) -> Result<()> {
        if n < self.min || n > self.max || !n.is_multiple_of(self.align) {
            return Err(Error::InvalidArg(format!(
                "{what} descriptor count {n} outside [{}, {}] or not a multiple of {}",
                self.min, self.max, self.align
            )));
        }
        Ok(())
    }
}

/// What a port offers (`rte_eth_dev_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevInfo {
    /// Driver name (e.g. "vdpdk", "pair", "tap", "ice").
    pub driver: String,
    /// The port's MAC address.
    pub mac: MacAddr,
    /// Most RX queues `configure` accepts.
    pub max_rx_queues: u16,
    /// Most TX queues `configure` accepts.
    pub max_tx_queues: u16,
    /// Descriptor count limits of RX queues.
    pub rx_desc_lim: DescLimits,
    /// Descriptor count limits of TX queues.
    pub tx_desc_lim: DescLimits,
    /// Current MTU: largest IP packet in bytes, Ethernet header and FCS excluded.
    pub mtu: u16,
    /// Largest MTU `configure` accepts.
    pub max_mtu: u16,
    /// RX offloads the port can enable.
    pub rx_offload_capa: RxOffloads,
    /// TX offloads the port can enable.
    pub tx_offload_capa: TxOffloads,
    /// Whether rx interrupts (pollable fds) are available.
    pub rx_intr: bool,
    /// Whether TX sends segments that lend memory this process does not own
    /// ([`crate::Lending`]; host-mux's zero-copy TX hands guest buffers on so).
    pub tx_lent_buffers: bool,
    /// Whether RX queues receive into buffers lent to them ([`RxQueue::post_lent`];
    /// host-mux's zero-copy RX posts a guest's own RX buffers so).
    pub rx_lent_buffers: bool,
}

/// Port configuration (`rte_eth_conf`, the parts we use).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevConfig {
    /// RX queues to set up (at least 1).
    pub nb_rx_queues: u16,
    /// TX queues to set up (at least 1).
    pub nb_tx_queues: u16,
    /// RX offloads to enable (a subset of `DevInfo::rx_offload_capa`).
    pub rx_offloads: RxOffloads,
    /// TX offloads to enable (a subset of `DevInfo::tx_offload_capa`).
    pub tx_offloads: TxOffloads,
    /// Enable RX interrupt support on every RX queue.
    pub rx_intr: bool,
    /// Largest IP packet (L3 bytes) the port receives and sends; 0 keeps the device default
    /// (`DevInfo::mtu`). Frames larger than an RX buffer need `RxOffloads::SCATTER`.
    pub mtu: u16,
}

/// Smallest MTU a port accepts (IPv4's minimum, RFC 791).
pub const MIN_MTU: u16 = 68;

impl DevConfig {
    /// Checks the request against what the device offers.
    pub fn validate(&self, info: &DevInfo) -> Result<()> {
        if self.nb_rx_queues == 0 || self.nb_rx_queues > info.max_rx_queues {
            return Err(Error::InvalidArg(format!(
                "{} RX queues requested, device offers 1..={}",
                self.nb_rx_queues, info.max_rx_queues
            )));
        }
        if self.nb_tx_queues == 0 || self.nb_tx_queues > info.max_tx_queues {
            return Err(Error::InvalidArg(format!(
                "{} TX queues requested, device offers 1..={}",
                self.nb_tx_queues, info.max_tx_queues
            )));
        }
        if !info.rx_offload_capa.contains(self.rx_offloads) {
            return Err(Error::Unsupported(format!(
                "RX offloads {:?}",
                self.rx_offloads - info.rx_offload_capa
            )));
        }
        if !info.tx_offload_capa.contains(self.tx_offloads) {
            return Err(Error::Unsupported(format!(
                "TX offloads {:?}",
                self.tx_offloads - info.tx_offload_capa
            )));
        }
        if self.mtu != 0 && !(MIN_MTU..=info.max_mtu).contains(&self.mtu) {
            return Err(Error::InvalidArg(format!(
                "MTU {} outside the device's {MIN_MTU}..={}",
                self.mtu, info.max_mtu
            )));
        }
        if self.rx_intr && !info.rx_intr {
            return Err(Error::Unsupported("RX interrupts".into()));
        }
        Ok(())
    }
}

/// Link state (`rte_eth_link`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// Whether the link is up.
    pub up: bool,
    /// Mbit/s; 0 when unknown.
    pub speed_mbps: u32,
    /// Full duplex (else half or unknown).
    pub full_duplex: bool,
}

/// Port counters (`rte_eth_stats`), plus per-queue packet counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received (frames without FCS).
    pub ibytes: u64,
    /// Bytes sent (frames without FCS).
    pub obytes: u64,
    /// Received by the device but dropped for lack of RX descriptors.
    pub imissed: u64,
    /// Received frames dropped as erroneous.
    pub ierrors: u64,
    /// Frames the port failed to send or dropped at TX (chains without MULTI_SEGS, bad offload
    /// requests, backend refusals).
    pub oerrors: u64,
    /// RX failures for lack of an mbuf to fill.
    pub rx_nombuf: u64,
    /// Packets received per RX queue, indexed by queue id.
    pub q_ipackets: Vec<u64>,
    /// Packets sent per TX queue, indexed by queue id.
    pub q_opackets: Vec<u64>,
}

/// Counters a queue updates from its polling thread and the port reads from anywhere.
/// Only the owning queue writes, so relaxed atomics suffice. Aligned to 128 bytes so that no
/// other thread's data shares their cache lines: two queues' counters side by side took 14%
/// of the pair TX burst's samples in vdpdk-bench, each core's increment taking the line from
/// the other.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct QueueCounters {
    /// Packets through the queue.
    pub packets: AtomicU64,
    /// Bytes through the queue.
    pub bytes: AtomicU64,
    /// Packets refused as erroneous.
    pub errors: AtomicU64,
    /// Packets dropped (RX: no free descriptor; TX: taken but not sent).
    pub dropped: AtomicU64,
    /// RX: buffer allocations that failed.
    pub nombuf: AtomicU64,
}

impl QueueCounters {
    /// Counts `packets` packets of `bytes` bytes in all.
    #[inline]
    pub fn add(&self, packets: u64, bytes: u64) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Reads one counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    /// Zeroes every counter.
    pub fn reset(&self) {
        for c in [
            &self.packets,
            &self.bytes,
            &self.errors,
            &self.dropped,
            &self.nombuf,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Sums per-queue counters into port stats.
pub fn sum_stats(
    rx: &[std::sync::Arc<QueueCounters>],
    tx: &[std::sync::Arc<QueueCounters>],
) -> PortStats {
    let g = QueueCounters::get;
    PortStats {
        ipackets: rx.iter().map(|q| g(&q.packets)).sum(),
        ibytes: rx.iter().map(|q| g(&q.bytes)).sum(),
        imissed: rx.iter().map(|q| g(&q.dropped)).sum(),
        ierrors: rx.iter().map(|q| g(&q.errors)).sum(),
        rx_nombuf: rx.iter().map(|q| g(&q.nombuf)).sum(),
        opackets: tx.iter().map(|q| g(&q.packets)).sum(),
        obytes: tx.iter().map(|q| g(&q.bytes)).sum(),
        oerrors: tx.iter().map(|q| g(&q.errors) + g(&q.dropped)).sum(),
        q_ipackets: rx.iter().map(|q| g(&q.packets)).collect(),
        q_opackets: tx.iter().map(|q| g(&q.packets)).collect(),
    }
}

/// Where a port is in its lifecycle. Drivers share these checks so that every one of them
/// refuses a wrong call order with the same clear words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PortState {
    /// Nothing configured yet (or reset).
    #[default]
    Unconfigured,
    /// Configured and stopped: queues may be set up.
    Configured,
    /// Started: queues may be taken and polled.
    Started,
}

impl PortState {
    /// For calls that need a configured, stopped port (queue setup).
    pub fn need_configured(self, what: &str) -> Result<()> {
        match self {
            PortState::Unconfigured => Err(Error::BadState(format!(
                "{what} before configure; call configure first"
            ))),
            PortState::Started => Err(Error::BadState(format!(
                "{what} while the port is started; stop it first"
            ))),
            PortState::Configured => Ok(()),
        }
    }

    /// For calls that need a stopped port (configure).
    pub fn need_stopped(self, what: &str) -> Result<()> {
        if self == PortState::Started {
            return Err(Error::BadState(format!(
                "{what} while the port is started; stop it first"
            )));
        }
        Ok(())
    }

    /// For calls that need a started port (taking queues).
    pub fn need_started(self, what: &str) -> Result<()> {
        if self != PortState::Started {
            return Err(Error::BadState(format!(
                "{what} before start; start the port first"
            )));
        }
        Ok(())
    }

    /// For `start` itself.
    pub fn need_startable(self) -> Result<()> {
        match self {
            PortState::Unconfigured => Err(Error::BadState(
                "start before configure; call configure and set up the queues first".into(),
            )),
            PortState::Started => Err(Error::BadState("port is already started".into())),
            PortState::Configured => Ok(()),
        }
    }
}

/// Refuses to start while any configured RX or TX queue has not been set up.
pub fn check_all_set_up<R, T>(rx: &[Option<R>], tx: &[Option<T>]) -> Result<()> {
    if let Some(q) = rx.iter().position(Option::is_none) {
        return Err(Error::BadState(format!(
            "start with RX queue {q} not set up"
        )));
    }
    if let Some(q) = tx.iter().position(Option::is_none) {
        return Err(Error::BadState(format!(
            "start with TX queue {q} not set up"
        )));
    }
    Ok(())
}

/// Refuses a queue id at or past the configured count.
pub fn check_qid(kind: &str, qid: u16, configured: u16) -> Result<()> {
    if qid >= configured {
        return Err(Error::InvalidArg(format!(
            "{kind} queue {qid} does not exist: {configured} configured"
        )));
    }
    Ok(())
}

/// The common case in tools and tests: one RX and one TX queue of `nb_desc` descriptors,
/// RX from `pool`, port started, both queues taken.
pub fn start_single_queue(
    dev: &mut dyn EthDev,
    pool: &Mempool,
    nb_desc: u16,
    rx_intr: bool,
) -> Result<(Box<dyn RxQueue>, Box<dyn TxQueue>)> {
    dev.configure(&DevConfig {
        nb_rx_queues: 1,
        nb_tx_queues: 1,
        rx_intr,
        ..Default::default()
    })?;
    dev.rx_queue_setup(0, nb_desc, pool)?;
    dev.tx_queue_setup(0, nb_desc)?;
    dev.start()?;
    Ok((dev.take_rx_queue(0)?, dev.take_tx_queue(0)?))
}

/// Zeroes every queue's counters (`EthDev::reset_stats` of drivers that count per queue).
pub fn reset_all(rx: &[std::sync::Arc<QueueCounters>], tx: &[std::sync::Arc<QueueCounters>]) {
    rx.iter().chain(tx).for_each(|c| c.reset());
}

/// A buffer lent to an RX queue to receive one frame into ([`RxQueue::post_lent`]).
#[derive(Clone, Copy, Debug)]
pub struct LentBuf {
    /// The buffer's device address (what a NIC writes to).
    pub iova: u64,
    /// The same bytes in this process (what a software queue copies to).
    pub ptr: std::ptr::NonNull<u8>,
    /// Bytes it holds.
    pub len: u16,
    /// The lender's name for it, handed back with the frame ([`LentRx::tag`]).
    pub tag: u32,
}

// SAFETY: a plain address and length; whoever posts one vouches for the memory
// (`RxQueue::post_lent`'s contract), whichever thread the queue runs on.
unsafe impl Send for LentBuf {}

/// A frame an RX queue received into a lent buffer ([`RxQueue::rx_lent`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LentRx {
    /// The buffer's [`LentBuf::tag`].
    pub tag: u32,
    /// Frame length in bytes (at most the buffer's).
    pub len: u16,
    /// What the device made of the frame.
    pub packet_type: crate::PacketType,
    /// RX offload results (checksum status, flow mark).
    pub ol_flags: crate::OlFlags,
    /// Flow MARK id (with `OlFlags::RX_FDIR_ID`).
    pub mark: u32,
    /// The buffer holds no frame to hand on (the device met an error in it, or a frame
    /// spanned several buffers): it comes back unused, `len` 0.
    pub error: bool,
}

/// A receive queue (`rte_eth_rx_burst` and the RX interrupt calls).
pub trait RxQueue: Send {
    /// Appends up to `max` received packets to `out`; returns how many.
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize;
    /// Arms the queue's interrupt: the fd becomes readable when a packet is (or already was)
    /// waiting. Applications check the queue once more after arming, then sleep on the fd.
    fn enable_intr(&mut self) -> Result<()> {
        Err(Error::Unsupported("rx interrupts".into()))
    }
    /// Disarms the interrupt and clears a pending wake-up.
    fn disable_intr(&mut self) -> Result<()> {
        Err(Error::Unsupported("rx interrupts".into()))
    }
    /// Pollable fd (epoll/poll) that signals an armed interrupt.
    fn intr_fd(&self) -> Option<RawFd> {
        None
    }
    /// Posts buffers the caller lends for the queue to receive into (zero-copy RX,
    /// `DevInfo::rx_lent_buffers`): memory the queue does not own, a guest's RX buffers.
    /// Takes the first of `bufs` while it has room; returns how many it took.
    ///
    /// From the first post on the queue is in **lent mode**: it receives into lent buffers
    /// only, filled in the order posted and handed back by [`RxQueue::rx_lent`]; `rx_burst`
    /// returns only frames in its own buffers still posted from before. A frame that finds
    /// no lent buffer waits or is dropped, as a NIC's frame without a descriptor.
    /// [`RxQueue::take_back_lent`] ends lent mode. A queue that cannot receive so takes
    /// nothing.
    ///
    /// # Safety
    /// Each buffer's `len` bytes at `ptr` (and at `iova` for the device) must stay mapped
    /// and writable until the queue hands the buffer back, by `rx_lent` or `take_back_lent`,
    /// or is dropped. Their owner may write them meanwhile: the queue writes them through
    /// raw pointers (or DMA) and never forms a reference to them.
    unsafe fn post_lent(&mut self, bufs: &[LentBuf]) -> usize {
        let _ = bufs;
        0
    }
    /// Appends to `out` up to `max` frames received into lent buffers, in the order the
    /// buffers were posted; returns how many.
    fn rx_lent(&mut self, out: &mut Vec<LentRx>, max: usize) -> usize {
        let _ = (out, max);
        0
    }
    /// Ends lent mode: hands back every lent buffer posted and not yet returned by
    /// `rx_lent` (they are the oldest posted, in order) and returns how many. The queue
    /// writes into none of them any more (a NIC's queue is stopped first) and receives into
    /// its own pool's buffers again.
    fn take_back_lent(&mut self) -> usize {
        0
    }
    /// Bytes a lent buffer must hold: the device may write that many into any buffer, so
    /// `post_lent` takes no shorter one (0: the queue writes only what fits).
    fn lent_min_len(&self) -> usize {
        0
    }
}

/// A transmit queue (`rte_eth_tx_burst`).
pub trait TxQueue: Send {
    /// Sends packets from the front of `pkts`, removing the ones it took; the rest (the device
    /// was full) stay in `pkts` in order for the caller to retry or free. Returns how many it took.
    ///
    /// A packet the queue cannot send (a chained mbuf on a port without
    /// `TxOffloads::MULTI_SEGS`, or one breaking the device's limits) is taken, dropped and
    /// counted in `oerrors`, never sent truncated.
    ///
    /// A queue may take back the buffers of finished packets (and learn of the device's
    /// refusals, counted in `oerrors`) only every few bursts, as DPDK drivers do below their
    /// `tx_free_thresh`; an empty burst takes back what is finished now.
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize;
}

/// A port (`rte_eth_dev_*`). Lifecycle: `configure` -> queue setup -> `start` -> take queues ->
/// burst -> `stop`. Flow rules may be added before or after start.
pub trait EthDev: Send {
    /// What the port offers.
    fn info(&self) -> DevInfo;
    /// Configures queue counts, offloads, MTU and RX interrupts; the port must be stopped.
    fn configure(&mut self, conf: &DevConfig) -> Result<()>;
    /// Sets up RX queue `qid` with `nb_desc` descriptors, filled from `pool`.
    fn rx_queue_setup(&mut self, qid: u16, nb_desc: u16, pool: &Mempool) -> Result<()>;
    /// Sets up TX queue `qid` with `nb_desc` descriptors.
    fn tx_queue_setup(&mut self, qid: u16, nb_desc: u16) -> Result<()>;
    /// Starts the port; every configured queue must be set up.
    fn start(&mut self) -> Result<()>;
    /// Stops the port. Queues taken before must be dropped first.
    fn stop(&mut self) -> Result<()>;
    /// Hands out RX queue `qid` once after start.
    fn take_rx_queue(&mut self, qid: u16) -> Result<Box<dyn RxQueue>>;
    /// Hands out TX queue `qid` once after start.
    fn take_tx_queue(&mut self, qid: u16) -> Result<Box<dyn TxQueue>>;
    /// Current link state.
    fn link(&self) -> LinkStatus;
    /// Port counters.
    fn stats(&self) -> PortStats;
    /// Zeroes the port counters.
    fn reset_stats(&mut self);
    /// Driver-specific named counters (`rte_eth_xstats_get`), e.g. the host's view of a
    /// paravirtual port. None by default.
    fn xstats(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Maps memory the port does not own (a guest's) for its device, when the device reads
    /// and writes memory by DMA through an IOMMU (`ExternalDma`); None for a port that
    /// reaches memory by address anyway (software ports) or cannot map it.
    fn external_dma(&self) -> Option<std::sync::Arc<dyn crate::ExternalDma>> {
        None
    }
    /// Checks whether the device can apply `rule` without changing anything.
    fn flow_validate(&self, rule: &FlowRule) -> Result<()> {
        let _ = rule;
        Err(Error::Unsupported("flow rules".into()))
    }
    /// Applies `rule`; the handle removes it again.
    fn flow_create(&mut self, rule: &FlowRule) -> Result<FlowHandle> {
        let _ = rule;
        Err(Error::Unsupported("flow rules".into()))
    }
    /// Removes the rule `handle` names.
    fn flow_destroy(&mut self, handle: FlowHandle) -> Result<()> {
        let _ = handle;
        Err(Error::Unsupported("flow rules".into()))
    }
    /// Removes every rule.
    fn flow_flush(&mut self) -> Result<()> {
        Err(Error::Unsupported("flow rules".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desc_limits() {
        let l = DescLimits {
            min: 64,
            max: 4096,
            align: 32,
        };
        assert!(l.check("rx", 512).is_ok());
        assert!(l.check("rx", 500).is_err());
        assert!(l.check("rx", 32).is_err());
        assert!(l.check("rx", 8192).is_err());
    }
}
