//! # guest-pmd
//!
//! The driver of the vDPDK paravirtual NIC (`1af4:7abc`), implementing the vdpdk-core ethdev
//! traits. PCI access goes through [`vdpdk_pci::PciDevice`], so the same driver runs in a VM
//! (vfio no-IOMMU, DMA = guest-physical: [`VdpdkPort::open_in_vm`]) or as a host process
//! talking vfio-user to host-mux (DMA memory shared by memfd: [`VdpdkPort::connect`]).

#![warn(missing_docs)]

mod queue;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use vdpdk_core::abi::desc::DESC_SIZE;
use vdpdk_core::abi::{
    self, flow_codec, CtrlOp, CtrlRequest, CtrlResponse, CtrlStatus, DeviceInfoBlock, Features,
    STATS_COUNT,
};
use vdpdk_core::ethdev::PortState;
use vdpdk_core::skeleton::PortSkeleton;
use vdpdk_core::{
    DescLimits, DevConfig, DevInfo, DmaMemory, Error, EthDev, FlowHandle, FlowRule, LinkStatus,
    MacAddr, Mempool, PortStats, Result, RxOffloads, RxQueue, TxOffloads, TxQueue,
};
use vdpdk_pci::{MappedBar, PciDevice, VfioUserPci};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use zerocopy::{FromZeros, IntoBytes};

pub use queue::{GuestRxQueue, GuestTxQueue};

/// Features this driver knows how to use.
pub fn driver_features() -> Features {
    Features::RX_INTR
        | Features::TX_KICK
        | Features::FLOW
        | Features::MULTIQUEUE
        | Features::TX_DONE_INDEX
        | Features::RX_DONE_INDEX
        // Nothing to do on this side: a TX buffer is left alone until its release anyway.
        | Features::TX_ZERO_COPY
        | Features::TX_LAPS
        // RX queue 0 gets a direct ring, read beside its own.
        | Features::RX_ZERO_COPY
}

/// Knobs for [`VdpdkPort::open_with`]; the defaults are what a normal driver sends.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// ABI major the driver speaks (tests use another to check refusal on both sides).
    pub abi_major: u16,
    /// Skip the driver-side version check so the device's refusal can be observed.
    pub skip_version_check: bool,
    /// Features to request; intersected with what the device offers unless `force_features`.
    pub features: Features,
    /// Request `features` even if the device does not offer them.
    pub force_features: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            abi_major: abi::ABI_MAJOR,
            skip_version_check: false,
            features: driver_features(),
            force_features: false,
        }
    }
}

/// Pools whose memory is DMA-mapped into the device, shared by the port and its TX queues
/// (a TX queue maps a pool the first time it sees one of its mbufs).
pub(crate) struct DmaMaps {
    dev: Arc<dyn PciDevice>,
    pools: Vec<Mempool>,
    /// In a VM each 4 KiB guest page would be its own host-side mapping, and buffers cross
    /// those; hugepage pools keep every buffer inside one mapping (see vdpdk_core::mbuf).
    require_hugepages: bool,
}

impl DmaMaps {
    pub(crate) fn ensure(&mut self, pool: &Mempool) -> Result<()> {
        if self.pools.iter().any(|p| p.id() == pool.id()) {
            return Ok(());
        }
        if self.require_hugepages && !pool.memory().is_hugepage_backed() {
            return Err(Error::NoMem(format!(
                "mempool '{}' is not on hugepages, which a VM's vDPDK device needs \
                 (reserve them before creating the pool: echo N > /proc/sys/vm/nr_hugepages)",
                pool.name()
            )));
        }
        self.dev.dma_map(pool.memory())?;
        self.pools.push(pool.clone());
        Ok(())
    }
}

/// A vDPDK port.
pub struct VdpdkPort {
    dev: Arc<dyn PciDevice>,
    bar: Arc<MappedBar>,
    info: DeviceInfoBlock,
    features: Features,
    /// Control sequence; the lock also serialises requests on the shared control block.
    seq: Mutex<u32>,
    /// Lifecycle; a queue's setup is the queue itself, handed out once.
    port: PortSkeleton<GuestRxQueue, GuestTxQueue>,
    maps: Arc<Mutex<DmaMaps>>,
    rings: Vec<Arc<DmaMemory>>,
    irq_fds: Vec<Arc<EventFd>>,
    /// Rings on hugepages: behind a virtual IOMMU each guest page is a separate host-side DMA
    /// mapping, and a ring must lie inside one.
    ring_hugepages: bool,
}

fn status_error(s: u32, msg: String) -> Error {
    match CtrlStatus::from_u32(s) {
        Some(CtrlStatus::InvalidArg) => Error::InvalidArg(msg),
        Some(CtrlStatus::BadState) => Error::BadState(msg),
        Some(CtrlStatus::Refused) => Error::Refused(msg),
        Some(CtrlStatus::NoMem) => Error::NoMem(msg),
        Some(CtrlStatus::Version) => Error::Version(msg),
        Some(CtrlStatus::Unsupported) | Some(CtrlStatus::UnknownOp) => Error::Unsupported(msg),
        _ => Error::Device(format!("control status {s}: {msg}")),
    }
}

impl VdpdkPort {
    /// Connects to a host-mux VM socket as a process guest.
    pub fn connect(socket: impl AsRef<Path>) -> Result<VdpdkPort> {
        Self::open(Arc::new(VfioUserPci::connect(socket.as_ref())?))
    }

    /// Opens a vDPDK device inside a VM, bound to vfio-pci: the one at `bdf`, or the first one
    /// in the system when `bdf` is None. Behind the VM's virtual IOMMU (the normal case) DMA
    /// memory is mapped into the device's IOMMU domain at its virtual address, exactly like a
    /// process guest; in vfio no-IOMMU mode (a kernel with CONFIG_VFIO_NOIOMMU and no vIOMMU)
    /// DMA memory becomes guest-physical, so create mempools after this call.
    pub fn open_in_vm(bdf: Option<&str>) -> Result<VdpdkPort> {
        let bdf = match bdf {
            Some(b) => b.to_string(),
            None => vdpdk_pci::find_pci_devices(abi::VENDOR_ID, abi::DEVICE_ID)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    Error::InvalidArg(format!(
                        "no vDPDK device ({:04x}:{:04x}) in /sys/bus/pci/devices",
                        abi::VENDOR_ID,
                        abi::DEVICE_ID
                    ))
                })?,
        };
        let group = std::fs::read_link(format!("/sys/bus/pci/devices/{bdf}/iommu_group"))
            .ok()
            .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
        let noiommu = group
            .as_ref()
            .is_some_and(|g| Path::new(&format!("/dev/vfio/noiommu-{g}")).exists());
        let mut port = if noiommu {
            Self::open(Arc::new(vdpdk_pci::NoIommuVfioPci::open(&bdf)?))?
        } else {
            Self::open(Arc::new(vdpdk_pci::KernelVfioPci::open(&bdf)?))?
        };
        port.ring_hugepages = true;
        port.maps.lock().require_hugepages = true;
        Ok(port)
    }

    /// Probes and negotiates with a vDPDK device reached through any [`PciDevice`] backend,
    /// with the default [`OpenOptions`].
    pub fn open(dev: Arc<dyn PciDevice>) -> Result<VdpdkPort> {
        Self::open_with(dev, OpenOptions::default())
    }

    /// Probes the device, reads its info block and negotiates version and features.
    pub fn open_with(dev: Arc<dyn PciDevice>, opts: OpenOptions) -> Result<VdpdkPort> {
        let (v, d) = dev.ids()?;
        if (v, d) != (abi::VENDOR_ID, abi::DEVICE_ID) {
            return Err(Error::Unsupported(format!(
                "device {v:04x}:{d:04x} is not a vDPDK NIC ({:04x}:{:04x})",
                abi::VENDOR_ID,
                abi::DEVICE_ID
            )));
        }
        let magic = dev.bar_read32(abi::SIGNAL_BAR, abi::REG_MAGIC)?;
        if magic != abi::ABI_MAGIC {
            return Err(Error::Device(format!("bad device magic {magic:#x}")));
        }
        let bar = Arc::new(dev.map_bar(abi::DATA_BAR)?);
        if (bar.len() as u64) < abi::DATA_BAR_SIZE {
            return Err(Error::Device(format!(
                "data BAR is only {} bytes",
                bar.len()
            )));
        }
        let mut info = DeviceInfoBlock::new_zeroed();
        read_shared(&bar, abi::INFO_OFFSET, info.as_mut_bytes());
        if info.magic != abi::ABI_MAGIC {
            return Err(Error::Device("device info block has a bad magic".into()));
        }
        if info.abi_major != opts.abi_major && !opts.skip_version_check {
            return Err(Error::Version(format!(
                "device speaks vDPDK ABI {}.{}, this driver {}.x",
                info.abi_major, info.abi_minor, opts.abi_major
            )));
        }
        let mut port = VdpdkPort {
            dev: dev.clone(),
            bar,
            info,
            features: Features::empty(),
            seq: Mutex::new(0),
            port: PortSkeleton::default(),
            maps: Arc::new(Mutex::new(DmaMaps {
                dev,
                pools: Vec::new(),
                require_hugepages: false,
            })),
            rings: Vec::new(),
            irq_fds: Vec::new(),
            ring_hugepages: false,
        };
        let offered = Features::from_bits_truncate(info.features);
        let want = if opts.force_features {
            opts.features
        } else {
            opts.features & offered
        };
        let resp = port.ctrl(
            CtrlOp::Negotiate,
            [
                (opts.abi_major as u64) << 16 | abi::ABI_MINOR as u64,
                want.bits(),
                0,
                0,
            ],
            &[],
        )?;
        port.features = Features::from_bits_truncate(resp.result[0]);
        Ok(port)
    }

    /// Unmaps and re-maps the memory of every pool the device can reach, as a guest does when
    /// its memory layout changes. Descriptors the device meets during the gap are refused by it
    /// and show up as errors; rings are not touched, so the port keeps running.
    pub fn remap_dma(&self) -> Result<()> {
        let maps = self.maps.lock();
        for p in &maps.pools {
            let m = p.memory();
            self.dev.dma_unmap(m.iova_base(), m.len() as u64)?;
            self.dev.dma_map(m)?;
        }
        Ok(())
    }

    /// Features agreed with the device.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Runs one control request: write it into the data BAR, ring the doorbell, read the status.
    fn ctrl(&self, op: CtrlOp, args: [u64; 4], payload: &[u8]) -> Result<CtrlResponse> {
        if payload.len() > abi::CTRL_PAYLOAD_MAX {
            return Err(Error::InvalidArg(format!(
                "control payload of {} bytes exceeds {}",
                payload.len(),
                abi::CTRL_PAYLOAD_MAX
            )));
        }
        let mut guard = self.seq.lock();
        *guard = guard.wrapping_add(1);
        let seq = *guard;
        let mut req = CtrlRequest::new_zeroed();
        req.op = op as u32;
        req.seq = seq;
        req.args = args;
        req.payload_len = payload.len() as u32;
        req.payload[..payload.len()].copy_from_slice(payload);
        write_shared(&self.bar, abi::CTRL_REQ_OFFSET, req.as_bytes());
        self.dev
            .bar_write32(abi::SIGNAL_BAR, abi::REG_CTRL_DOORBELL, seq)?;
        let status = self.dev.bar_read32(abi::SIGNAL_BAR, abi::REG_CTRL_STATUS)?;
        let mut resp = CtrlResponse::new_zeroed();
        read_shared(&self.bar, abi::CTRL_RESP_OFFSET, resp.as_mut_bytes());
        if resp.seq != seq {
            return Err(Error::Device(format!(
                "control response for seq {} while waiting for {seq}",
                resp.seq
            )));
        }
        if status != CtrlStatus::Ok as u32 {
            return Err(status_error(status, resp.message()));
        }
        Ok(resp)
    }

    /// The host's counters for this VM (`abi::StatsIndex` order): drops the guest cannot see.
    pub fn host_stats(&self) -> Result<[u64; STATS_COUNT]> {
        let r = self.ctrl(CtrlOp::GetStats, [0; 4], &[])?;
        Ok(std::array::from_fn(|i| r.result[i]))
    }

    fn ring_lim() -> DescLimits {
        DescLimits {
            min: abi::MIN_RING_SIZE,
            max: abi::MAX_RING_SIZE,
            align: abi::MIN_RING_SIZE,
        }
    }

    fn check_ring(what: &str, n: u16) -> Result<()> {
        Self::ring_lim().check(what, n)?;
        if !n.is_power_of_two() {
            return Err(Error::InvalidArg(format!(
                "{what} descriptor count {n} is not a power of two"
            )));
        }
        Ok(())
    }

    fn alloc_ring(&mut self, qid: u16, rx: bool, n: u16) -> Result<Arc<DmaMemory>> {
        let name = format!("{}ring{qid}", if rx { "rx" } else { "tx" });
        let len = n as usize * DESC_SIZE;
        let mem = DmaMemory::alloc_with(&name, len, self.ring_hugepages)?;
        if self.ring_hugepages && !mem.is_hugepage_backed() {
            return Err(Error::NoMem(format!(
                "{name}: no free 2 MiB hugepage for the ring (reserve some: \
                 echo 64 > /proc/sys/vm/nr_hugepages)"
            )));
        }
        self.dev.dma_map(&mem)?;
        Ok(Arc::new(mem))
    }

    fn unmap_rings(&mut self) {
        for r in self.rings.drain(..) {
            let _ = self.dev.dma_unmap(r.iova_base(), r.len() as u64);
        }
    }

    fn flow_payload(rule: &FlowRule) -> Result<Vec<u8>> {
        rule.check_shape()?;
        let b = flow_codec::encode(rule);
        if b.len() > abi::CTRL_PAYLOAD_MAX {
            return Err(Error::InvalidArg("flow rule too large".into()));
        }
        Ok(b)
    }
}

impl EthDev for VdpdkPort {
    fn info(&self) -> DevInfo {
        let i = &self.info;
        DevInfo {
            driver: "vdpdk".into(),
            mac: MacAddr(i.mac),
            max_rx_queues: i.max_rx_queues.min(abi::MAX_QUEUES),
            max_tx_queues: i.max_tx_queues.min(abi::MAX_QUEUES),
            rx_desc_lim: Self::ring_lim(),
            tx_desc_lim: Self::ring_lim(),
            mtu: i.mtu,
            max_mtu: i.max_mtu,
            rx_offload_capa: RxOffloads::from_bits_truncate(i.rx_offload_capa),
            tx_offload_capa: TxOffloads::from_bits_truncate(i.tx_offload_capa),
            rx_intr: self.features.contains(Features::RX_INTR),
            tx_lent_buffers: false,
            rx_lent_buffers: false,
        }
    }

    fn configure(&mut self, conf: &DevConfig) -> Result<()> {
        self.port.check_configure(conf, &self.info())?;
        self.ctrl(
            CtrlOp::Configure,
            [conf.nb_rx_queues as u64, conf.nb_tx_queues as u64, 0, 0],
            &[],
        )?;
        self.unmap_rings();
        self.irq_fds = (0..conf.nb_rx_queues)
            .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
            .collect::<std::io::Result<_>>()?;
        self.port.configured(conf);
        Ok(())
    }

    fn rx_queue_setup(&mut self, qid: u16, nb_desc: u16, pool: &Mempool) -> Result<()> {
        self.port.check_rx_setup(qid)?;
        Self::check_ring("RX", nb_desc)?;
        self.maps.lock().ensure(pool)?;
        let ring = self.alloc_ring(qid, true, nb_desc)?;
        self.ctrl(
            CtrlOp::RxqSetup,
            [qid as u64, ring.iova_base(), nb_desc as u64, 0],
            &[],
        )?;
        let q = GuestRxQueue::new(
            ring.clone(),
            nb_desc,
            pool.clone(),
            self.port.rx.counters(qid),
            self.bar.clone(),
            qid,
            self.irq_fds[qid as usize].clone(),
        )
        .complete_by_done_index(self.features.contains(Features::RX_DONE_INDEX));
        self.rings.push(ring);
        let q = if qid == 0 && self.features.contains(Features::RX_ZERO_COPY) {
            let direct = self.alloc_ring(qid, true, nb_desc)?;
            self.ctrl(
                CtrlOp::RxqDirectSetup,
                [0, direct.iova_base(), nb_desc as u64, 0],
                &[],
            )?;
            self.rings.push(direct.clone());
            q.with_direct_ring(direct, nb_desc)
        } else {
            q
        };
        self.port.rx.set(qid, q);
        Ok(())
    }

    fn tx_queue_setup(&mut self, qid: u16, nb_desc: u16) -> Result<()> {
        self.port.check_tx_setup(qid)?;
        Self::check_ring("TX", nb_desc)?;
        let ring = self.alloc_ring(qid, false, nb_desc)?;
        self.ctrl(
            CtrlOp::TxqSetup,
            [qid as u64, ring.iova_base(), nb_desc as u64, 0],
            &[],
        )?;
        let q = GuestTxQueue::new(
            ring.clone(),
            nb_desc,
            self.port.tx.counters(qid),
            self.bar.clone(),
            qid,
            self.dev.clone(),
            self.maps.clone(),
        )
        .reclaim_by_done_index(self.features.contains(Features::TX_DONE_INDEX))
        .post_by_laps(self.features.contains(Features::TX_LAPS));
        self.rings.push(ring);
        self.port.tx.set(qid, q);
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        self.port.check_start()?;
        for q in self.port.rx.iter_mut().flatten() {
            q.fill();
        }
        if self.features.contains(Features::RX_INTR) {
            let fds: Vec<_> = self.irq_fds.iter().map(|e| e.as_raw_fd()).collect();
            self.dev.set_msix_eventfds(&fds)?;
        }
        self.ctrl(CtrlOp::Start, [0; 4], &[])?;
        self.port.started();
        Ok(())
    }

    /// Stopping a port that is not started does nothing. Taken queues may still live; they
    /// see no more traffic.
    fn stop(&mut self) -> Result<()> {
        if self.port.state != PortState::Started {
            return Ok(());
        }
        self.ctrl(CtrlOp::Stop, [0; 4], &[])?;
        self.port.state = PortState::Configured;
        Ok(())
    }

    /// The queue object set up by `rx_queue_setup` moves out: set it up again before the
    /// next start.
    fn take_rx_queue(&mut self, qid: u16) -> Result<Box<dyn RxQueue>> {
        Ok(Box::new(self.port.take_rx_out(qid)?))
    }

    /// As `take_rx_queue`.
    fn take_tx_queue(&mut self, qid: u16) -> Result<Box<dyn TxQueue>> {
        Ok(Box::new(self.port.take_tx_out(qid)?))
    }

    fn link(&self) -> LinkStatus {
        let mut info = DeviceInfoBlock::new_zeroed();
        read_shared(&self.bar, abi::INFO_OFFSET, info.as_mut_bytes());
        LinkStatus {
            up: info.link_up != 0,
            speed_mbps: info.link_speed_mbps,
            full_duplex: true,
        }
    }

    fn stats(&self) -> PortStats {
        self.port.stats()
    }

    fn reset_stats(&mut self) {
        self.port.reset_stats();
    }

    /// The host's counters for this VM, named `host_<name>` (empty if the host cannot answer).
    fn xstats(&self) -> Vec<(String, u64)> {
        self.host_stats()
            .map(|h| {
                abi::STATS_NAMES
                    .iter()
                    .zip(h)
                    .map(|(n, v)| (format!("host_{n}"), v))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn flow_validate(&self, rule: &FlowRule) -> Result<()> {
        let b = Self::flow_payload(rule)?;
        self.ctrl(CtrlOp::FlowValidate, [0; 4], &b).map(|_| ())
    }

    fn flow_create(&mut self, rule: &FlowRule) -> Result<FlowHandle> {
        let b = Self::flow_payload(rule)?;
        let r = self.ctrl(CtrlOp::FlowCreate, [0; 4], &b)?;
        Ok(FlowHandle(r.result[0] as u32))
    }

    fn flow_destroy(&mut self, handle: FlowHandle) -> Result<()> {
        self.ctrl(CtrlOp::FlowDestroy, [handle.0 as u64, 0, 0, 0], &[])
            .map(|_| ())
    }

    fn flow_flush(&mut self) -> Result<()> {
        self.ctrl(CtrlOp::FlowFlush, [0; 4], &[]).map(|_| ())
    }
}

impl Drop for VdpdkPort {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = self.ctrl(CtrlOp::Reset, [0; 4], &[]);
        self.unmap_rings();
        let maps = self.maps.lock();
        for p in &maps.pools {
            let _ = self
                .dev
                .dma_unmap(p.memory().iova_base(), p.memory().len() as u64);
        }
    }
}

/// Copies bytes out of the shared BAR (volatile: the host may be writing).
pub(crate) fn read_shared(bar: &MappedBar, off: usize, out: &mut [u8]) {
    let p = bar.at(off, out.len()).expect("offset inside the data BAR");
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: in bounds (checked by `at`).
        *b = unsafe { p.add(i).read_volatile() };
    }
}

pub(crate) fn write_shared(bar: &MappedBar, off: usize, data: &[u8]) {
    let p = bar.at(off, data.len()).expect("offset inside the data BAR");
    for (i, b) in data.iter().enumerate() {
        // SAFETY: in bounds (checked by `at`).
        unsafe { p.add(i).write_volatile(*b) };
    }
}

/// The README's Rust blocks, compiled (and so kept true) as doc tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
