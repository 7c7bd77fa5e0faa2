//! The ethdev face of the E810 driver: [`IcePort`] implements [`EthDev`] over [`IceDevice`],
//! so host-mux and the tools drive a real (or modelled) E810 like any other backend.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use vdpdk_core::ethdev::{check_qid, sum_stats, PortState};
use vdpdk_core::{
    DescLimits, DevConfig, DevInfo, Error, EthDev, FlowHandle, FlowRule, LinkStatus, Mempool,
    PortStats, QueueCounters, Result, RxOffloads, RxQueue, TxOffloads, TxQueue,
};
use vdpdk_pci::PciDevice;

use crate::rxq::IceRxQueue;
use crate::txq::IceTxQueue;
use crate::IceDevice;

/// RX/TX ring limits (power-of-two not required; multiples of 32, \[RXTX\]).
const DEFAULT_MTU: u16 = 1500;

const RING_LIM: DescLimits = DescLimits {
    min: 64,
    max: 4096,
    align: 32,
};

/// An E810 port as a `vdpdk_core::EthDev`: configure, queue setup, start/stop, stats and
/// flow rules (as Flow Director filters) over an [`IceDevice`].
pub struct IcePort {
    dev: IceDevice,
    state: PortState,
    conf: DevConfig,
    rx_setup: Vec<Option<(u16, Mempool)>>,
    tx_setup: Vec<Option<u16>>,
    rxq: Vec<Option<IceRxQueue>>,
    txq: Vec<Option<IceTxQueue>>,
    rx_counters: Vec<Arc<QueueCounters>>,
    tx_counters: Vec<Arc<QueueCounters>>,
    /// Vector 0 (misc/admin, \[ETH\] `ice_pf_enable_irq0`) then one per RX queue.
    irq_fds: Vec<Arc<EventFd>>,
    /// Installed Flow Director filters by handle.
    flows: Vec<(FlowHandle, crate::dev::fd::filter::FdirFilter)>,
    next_flow: u32,
    /// RX interrupt throttle (µs, 0 = none), see [`IcePort::set_rx_itr`].
    rx_itr_us: u32,
    /// Hardware counters since start (port, LAN VSI, VSI RX discards); None before start.
    hw: parking_lot::Mutex<Option<HwStats>>,
}

struct HwStats {
    port: crate::stats::HwCounters,
    vsi: crate::stats::HwCounters,
    rx_discards: crate::stats::Counter32,
}

/// Where the DDP package comes from.
#[derive(Clone, Debug)]
pub enum DdpSource {
    /// The standard path if the file exists; safe mode (with a warning) if not.
    Default,
    /// This file, which must exist.
    File(std::path::PathBuf),
    /// These bytes (tests, embedded packages).
    Bytes(Vec<u8>),
    /// Stay in safe mode.
    None,
}

impl IcePort {
    /// Interrupt moderation for the RX queues (the E810's ITR): after an RX interrupt, the
    /// next one on that queue's vector comes at least `us` microseconds later, however many
    /// frames arrive (0 = every arming may fire at once; at most 8190, 2 µs steps). Applies
    /// now if the port runs, else at start.
    pub fn set_rx_itr(&mut self, us: u32) -> Result<()> {
        if us > crate::regs::ITR_MAX_US {
            return Err(vdpdk_core::Error::InvalidArg(format!(
                "RX ITR of {us} µs exceeds the hardware's {} µs",
                crate::regs::ITR_MAX_US
            )));
        }
        self.rx_itr_us = us;
        if self.state == PortState::Started {
            for v in 1..self.irq_fds.len() {
                self.dev.set_rx_itr(v as u16, us)?;
            }
        }
        Ok(())
    }

    /// Probes the E810 behind `pci`, loads the DDP package from the standard path when present,
    /// and brings it up.
    pub fn open(pci: Arc<dyn PciDevice>) -> Result<IcePort> {
        Self::open_with(pci, DdpSource::Default)
    }

    /// Like [`IcePort::open`], with the DDP package from `ddp`.
    pub fn open_with(pci: Arc<dyn PciDevice>, ddp: DdpSource) -> Result<IcePort> {
        let mut dev = IceDevice::probe(pci)?;
        let default = std::path::Path::new(crate::ddp::DEFAULT_PKG_PATH);
        let pkg = match ddp {
            DdpSource::Default if default.exists() => Some(crate::ddp::read_package(default)?),
            DdpSource::Default => {
                log::warn!(
                    "no DDP package at {}: safe mode, one queue pair",
                    default.display()
                );
                None
            }
            DdpSource::File(p) => Some(crate::ddp::read_package(&p)?),
            DdpSource::Bytes(b) => Some(b),
            DdpSource::None => None,
        };
        if let Some(pkg) = pkg {
            dev.download_package(&pkg)?;
        }
        Ok(IcePort {
            dev,
            state: PortState::Unconfigured,
            conf: DevConfig::default(),
            rx_setup: Vec::new(),
            tx_setup: Vec::new(),
            rxq: Vec::new(),
            txq: Vec::new(),
            rx_counters: Vec::new(),
            tx_counters: Vec::new(),
            irq_fds: Vec::new(),
            flows: Vec::new(),
            next_flow: 1,
            rx_itr_us: 0,
            hw: parking_lot::Mutex::new(None),
        })
    }

    /// The device under the port, for what the `EthDev` face does not offer.
    pub fn device(&mut self) -> &mut IceDevice {
        &mut self.dev
    }

    /// Frame size and scatter from the configured MTU and RX offloads.
    fn rx_limits(&self) -> crate::rxq::RxFrameLimits {
        let mtu = if self.conf.mtu == 0 {
            DEFAULT_MTU
        } else {
            self.conf.mtu
        };
        crate::rxq::RxFrameLimits {
            max_frame: mtu + crate::rxq::ETH_OVERHEAD,
            scatter: self.conf.rx_offloads.contains(RxOffloads::SCATTER),
        }
    }
}

impl EthDev for IcePort {
    fn info(&self) -> DevInfo {
        let i = self.dev.info();
        // Safe mode (no DDP package) offers one queue pair, as Linux and DPDK do.
        let maxq = |n: u32| if i.safe_mode { 1 } else { n.min(256) as u16 };
        DevInfo {
            driver: "ice".into(),
            mac: i.mac,
            max_rx_queues: maxq(i.num_rxq),
            max_tx_queues: maxq(i.num_txq),
            rx_desc_lim: RING_LIM,
            tx_desc_lim: RING_LIM,
            mtu: DEFAULT_MTU,
            max_mtu: (i.max_mtu.min(u16::MAX as u32) as u16)
                .min(crate::rxq::MAX_FRAME - crate::rxq::ETH_OVERHEAD),
            rx_offload_capa: RxOffloads::IPV4_CKSUM
                | RxOffloads::UDP_CKSUM
                | RxOffloads::TCP_CKSUM
                | RxOffloads::SCATTER,
            tx_offload_capa: TxOffloads::IPV4_CKSUM
                | TxOffloads::UDP_CKSUM
                | TxOffloads::TCP_CKSUM
                | TxOffloads::TCP_TSO
                | TxOffloads::MULTI_SEGS,
            rx_intr: i.num_msix > 1,
            // Lent (guest) memory reaches the card through `external_dma`.
            tx_lent_buffers: !vdpdk_core::dma::physical_addresses(),
            rx_lent_buffers: !vdpdk_core::dma::physical_addresses(),
        }
    }

    fn configure(&mut self, conf: &DevConfig) -> Result<()> {
        self.state.need_stopped("configure")?;
        conf.validate(&self.info())?;
        self.conf = conf.clone();
        self.rx_setup = vec![None; conf.nb_rx_queues as usize];
        self.tx_setup = vec![None; conf.nb_tx_queues as usize];
        self.rx_counters = (0..conf.nb_rx_queues).map(|_| Default::default()).collect();
        self.tx_counters = (0..conf.nb_tx_queues).map(|_| Default::default()).collect();
        self.irq_fds = if conf.rx_intr {
            (0..=conf.nb_rx_queues)
                .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
                .collect::<std::io::Result<_>>()?
        } else {
            Vec::new()
        };
        self.state = PortState::Configured;
        Ok(())
    }

    /// Refuses a pool whose buffers cannot hold an MTU-sized frame: in one buffer without
    /// `RxOffloads::SCATTER`, in five with it.
    fn rx_queue_setup(&mut self, qid: u16, nb_desc: u16, pool: &Mempool) -> Result<()> {
        self.state.need_configured("rx_queue_setup")?;
        check_qid("RX", qid, self.conf.nb_rx_queues)?;
        RING_LIM.check("RX", nb_desc)?;
        let limits = self.rx_limits();
        let buf = crate::rxq::rx_buf_len(pool);
        if limits.rxmax(buf) < limits.max_frame as u64 {
            let mtu = limits.max_frame - crate::rxq::ETH_OVERHEAD;
            return Err(Error::InvalidArg(if limits.scatter {
                format!(
                    "MTU {mtu} needs {} B frames; {} buffers of {buf} B hold fewer",
                    limits.max_frame,
                    crate::rxq::MAX_RX_SEGS
                )
            } else {
                format!(
                    "MTU {mtu} needs {} B frames but pool {} receives {buf} B per buffer: \
                     enable RxOffloads::SCATTER or use larger buffers",
                    limits.max_frame,
                    pool.name()
                )
            }));
        }
        self.rx_setup[qid as usize] = Some((nb_desc, pool.clone()));
        Ok(())
    }

    fn tx_queue_setup(&mut self, qid: u16, nb_desc: u16) -> Result<()> {
        self.state.need_configured("tx_queue_setup")?;
        check_qid("TX", qid, self.conf.nb_tx_queues)?;
        RING_LIM.check("TX", nb_desc)?;
        self.tx_setup[qid as usize] = Some(nb_desc);
        Ok(())
    }

    /// Creates the hardware queues (RX contexts, TX queues through the scheduler) and brings
    /// the link up.
    fn start(&mut self) -> Result<()> {
        self.state.need_startable()?;
        vdpdk_core::ethdev::check_all_set_up(&self.rx_setup, &self.tx_setup)?;
        if !self.irq_fds.is_empty() {
            let fds: Vec<_> = self.irq_fds.iter().map(|e| e.as_raw_fd()).collect();
            self.dev.set_msix(&fds)?;
        }
        let mut rxq = Vec::new();
        for (q, s) in self.rx_setup.iter().enumerate() {
            let (n, pool) = s.as_ref().expect("checked above");
            let irq = self.irq_fds.get(q + 1).map(|fd| (q as u16 + 1, fd.clone()));
            if let Some((v, _)) = &irq {
                self.dev.set_rx_itr(*v, self.rx_itr_us)?;
            }
            let limits = self.rx_limits();
            let mut r = self
                .dev
                .setup_rx_queue_with(q as u16, *n, pool, limits, irq)?;
            r.set_counters(self.rx_counters[q].clone());
            rxq.push(Some(r));
        }
        let mut txq = Vec::new();
        for (q, n) in self.tx_setup.iter().enumerate() {
            let mut t = self
                .dev
                .setup_tx_queue(q as u16, n.expect("checked above"))?;
            t.set_counters(self.tx_counters[q].clone());
            txq.push(Some(t));
        }
        self.dev.link_up()?;
        let (vsi, rx_discards) = self.dev.vsi_counters()?;
        *self.hw.lock() = Some(HwStats {
            port: self.dev.hw_counters()?,
            vsi,
            rx_discards,
        });
        self.rxq = rxq;
        self.txq = txq;
        self.state = PortState::Started;
        Ok(())
    }

    /// Disables the hardware queues (RX through QRX_CTRL as each queue drops, TX through
    /// dis_txqs).
    fn stop(&mut self) -> Result<()> {
        if self.state != PortState::Started {
            return Err(Error::BadState("stop of a port that is not started".into()));
        }
        self.rxq.clear();
        self.txq.clear();
        for q in 0..self.conf.nb_tx_queues {
            self.dev.disable_tx_queue(q)?;
        }
        self.state = PortState::Configured;
        Ok(())
    }

    fn take_rx_queue(&mut self, qid: u16) -> Result<Box<dyn RxQueue>> {
        self.state.need_started("take_rx_queue")?;
        check_qid("RX", qid, self.conf.nb_rx_queues)?;
        let q = self.rxq[qid as usize]
            .take()
            .ok_or_else(|| Error::BadState(format!("RX queue {qid} was already taken")))?;
        Ok(Box::new(q))
    }

    fn take_tx_queue(&mut self, qid: u16) -> Result<Box<dyn TxQueue>> {
        self.state.need_started("take_tx_queue")?;
        check_qid("TX", qid, self.conf.nb_tx_queues)?;
        let q = self.txq[qid as usize]
            .take()
            .ok_or_else(|| Error::BadState(format!("TX queue {qid} was already taken")))?;
        Ok(Box::new(q))
    }

    fn link(&self) -> LinkStatus {
        let l = self.dev.info().link;
        LinkStatus {
            up: l.up,
            speed_mbps: l.speed_mbps,
            full_duplex: true,
        }
    }

    /// Software per-queue counters, plus `imissed` from the VSI's RX discard counter.
    fn stats(&self) -> PortStats {
        let mut s = sum_stats(&self.rx_counters, &self.tx_counters);
        if let Some(hw) = self.hw.lock().as_mut() {
            if self.dev.update_rx_discards(&mut hw.rx_discards).is_ok() {
                s.imissed = hw.rx_discards.total;
            }
        }
        s
    }

    /// The port (GLPRT, `port_*`) and LAN VSI (GLV, `vsi_*`) hardware counters since start,
    /// 40-bit wraps accounted for.
    fn xstats(&self) -> Vec<(String, u64)> {
        let mut g = self.hw.lock();
        let Some(hw) = g.as_mut() else {
            return Vec::new();
        };
        if self.dev.update_counters(&mut hw.port).is_err()
            || self.dev.update_counters(&mut hw.vsi).is_err()
            || self.dev.update_rx_discards(&mut hw.rx_discards).is_err()
        {
            return Vec::new();
        }
        hw.port
            .named()
            .map(|(n, v)| (format!("port_{n}"), v))
            .chain(hw.vsi.named().map(|(n, v)| (n.to_string(), v)))
            .chain([("vsi_rx_discards".to_string(), hw.rx_discards.total)])
            .collect()
    }

    /// Checks that Flow Director can apply `rule` (pattern, actions, queues configured).
    /// Guest memory reaches the card through the IOMMU (or the vfio-user server's DMA maps)
    /// at IOVA = its address here; not in the physical-address mode (no IOMMU), where the
    /// card would need the physical pages, which guest memory does not pin.
    fn external_dma(&self) -> Option<Arc<dyn vdpdk_core::ExternalDma>> {
        if vdpdk_core::dma::physical_addresses() {
            return None;
        }
        Some(Arc::new(IceExternalDma(self.dev.pci().clone())))
    }

    fn flow_validate(&self, rule: &FlowRule) -> Result<()> {
        if self.dev.info().safe_mode {
            return Err(Error::Unsupported(
                "Flow Director needs the DDP package (safe mode)".into(),
            ));
        }
        let f = crate::dev::fd::filter::filter_for(rule, self.conf.nb_rx_queues.max(1))?;
        self.dev.fdir_profile_check(f.prof)?;
        Ok(())
    }

    fn flow_create(&mut self, rule: &FlowRule) -> Result<FlowHandle> {
        self.flow_validate(rule)?;
        let h = FlowHandle(self.next_flow);
        let f = crate::dev::fd::filter::filter_for(rule, self.conf.nb_rx_queues.max(1))?;
        self.dev.fdir_program(&f, false)?;
        self.next_flow += 1;
        self.flows.push((h, f));
        Ok(h)
    }

    fn flow_destroy(&mut self, handle: FlowHandle) -> Result<()> {
        let i = self
            .flows
            .iter()
            .position(|(h, _)| *h == handle)
            .ok_or_else(|| Error::InvalidArg(format!("no flow rule with handle {}", handle.0)))?;
        self.dev.fdir_program(&self.flows[i].1, true)?;
        self.flows.remove(i);
        Ok(())
    }

    fn flow_flush(&mut self) -> Result<()> {
        while let Some((h, _)) = self.flows.last().cloned() {
            self.flow_destroy(h)?;
        }
        Ok(())
    }

    fn reset_stats(&mut self) {
        vdpdk_core::ethdev::reset_all(&self.rx_counters, &self.tx_counters);
    }
}

/// Guest memory mapped for the card (`EthDev::external_dma`).
struct IceExternalDma(Arc<dyn vdpdk_pci::PciDevice>);

impl vdpdk_core::ExternalDma for IceExternalDma {
    fn map(&self, r: &vdpdk_core::ExternalRegion<'_>) -> Result<()> {
        self.0.dma_map_external(r, r.host.as_ptr() as u64)
    }
    fn unmap(&self, iova: u64, len: u64) -> Result<()> {
        self.0.dma_unmap(iova, len)
    }
}
