//! The vDPDK PCI device of one VM, served over vfio-user: config space with an MSI-X
//! capability, the trapped signal BAR, the shared data BAR, DMA map tracking and the control
//! plane. Every guest request is copied out of shared memory once, validated, then applied.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::{debug, info, warn};
use vdpdk_core::abi::desc::{valid_ring_size, RingPtr, DESC_SIZE};
use vdpdk_core::abi::{self, CtrlOp, CtrlRequest, CtrlResponse, CtrlStatus, Features, StatsIndex};
use vdpdk_core::flow::FlowRule;
use vdpdk_core::{FlowHandle, MacAddr};
use vfio_bindings::bindings::vfio::*;
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion, SparseArea};
use zerocopy::{FromZeros, IntoBytes};

use crate::guest::{Guest, HostQueue};

const CFG_SIZE: usize = 256;
const MSIX_CAP: usize = 0x40;

/// What the device offers every guest.
pub fn offered_features() -> Features {
    Features::RX_INTR | Features::TX_KICK | Features::FLOW | Features::MULTIQUEUE
}

/// Device-wide facts the mux fills into each guest's info block.
#[derive(Clone, Copy, Debug)]
pub struct PortFacts {
    pub mtu: u16,
    pub max_mtu: u16,
    /// RX checksum offloads the backend reports per frame (passed through to guests).
    pub rx_offloads: vdpdk_core::RxOffloads,
    pub link_up: bool,
    pub link_speed_mbps: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Fresh,
    Negotiated,
    Configured { nrx: u16, ntx: u16 },
}

type CtrlResult = Result<[u64; 16], (CtrlStatus, String)>;

fn fail<T>(s: CtrlStatus, msg: impl Into<String>) -> Result<T, (CtrlStatus, String)> {
    Err((s, msg.into()))
}

pub struct VdpdkDevice {
    guest: Arc<Guest>,
    facts: PortFacts,
    cfg: [u8; CFG_SIZE],
    msix: Vec<u8>,
    ctrl_status: u32,
    state: State,
    next_flow: u32,
}

impl VdpdkDevice {
    pub fn new(guest: Arc<Guest>, facts: PortFacts) -> VdpdkDevice {
        let mut d = VdpdkDevice {
            guest,
            facts,
            cfg: [0; CFG_SIZE],
            msix: vec![0; (abi::SIGNAL_BAR_SIZE as usize) - abi::MSIX_TABLE_OFFSET as usize],
            ctrl_status: 0,
            state: State::Fresh,
            next_flow: 1,
        };
        d.init_config_space();
        d.reset_device();
        d
    }

    fn init_config_space(&mut self) {
        let c = &mut self.cfg;
        c[0..2].copy_from_slice(&abi::VENDOR_ID.to_le_bytes());
        c[2..4].copy_from_slice(&abi::DEVICE_ID.to_le_bytes());
        c[6..8].copy_from_slice(&0x0010u16.to_le_bytes()); // status: capability list
        c[8] = abi::REVISION;
        c[9..12].copy_from_slice(&abi::CLASS_CODE);
        c[0x2c..0x2e].copy_from_slice(&abi::SUBSYS_VENDOR_ID.to_le_bytes());
        c[0x2e..0x30].copy_from_slice(&abi::SUBSYS_ID.to_le_bytes());
        c[0x34] = MSIX_CAP as u8;
        // MSI-X capability: one vector per possible RX queue; table and PBA in BAR0.
        c[MSIX_CAP] = 0x11;
        c[MSIX_CAP + 1] = 0;
        c[MSIX_CAP + 2..MSIX_CAP + 4].copy_from_slice(&(abi::MAX_QUEUES - 1).to_le_bytes());
        c[MSIX_CAP + 4..MSIX_CAP + 8]
            .copy_from_slice(&(abi::MSIX_TABLE_OFFSET | abi::SIGNAL_BAR as u32).to_le_bytes());
        c[MSIX_CAP + 8..MSIX_CAP + 12]
            .copy_from_slice(&(abi::MSIX_PBA_OFFSET | abi::SIGNAL_BAR as u32).to_le_bytes());
    }

    /// What this VM may make host-mux hold.
    pub fn limits(&self) -> &crate::config::GuestLimits {
        &self.guest.limits
    }

    /// The VM this device belongs to.
    pub fn name(&self) -> &str {
        &self.guest.name
    }

    /// The vfio-user regions this device exposes.
    pub fn regions(&self) -> Vec<ServerRegion> {
        use vdpdk_pci::server::{empty_regions, region, RW as rw};
        let mut regions = empty_regions();
        regions[VFIO_PCI_BAR0_REGION_INDEX as usize] =
            region(VFIO_PCI_BAR0_REGION_INDEX, abi::SIGNAL_BAR_SIZE, rw);
        let mut bar2 = region(
            VFIO_PCI_BAR2_REGION_INDEX,
            abi::DATA_BAR_SIZE,
            rw | VFIO_REGION_INFO_FLAG_MMAP,
        );
        // vfio_user only sends the region fd with a sparse-mmap capability, so the whole BAR
        // is one sparse area.
        bar2.sparse_areas = vec![SparseArea {
            area: vfio_region_sparse_mmap_area {
                offset: 0,
                size: abi::DATA_BAR_SIZE,
            },
        }];
        bar2.mmap_fd = Some(self.guest.data_bar.raw_fd());
        regions[VFIO_PCI_BAR2_REGION_INDEX as usize] = bar2;
        regions[VFIO_PCI_CONFIG_REGION_INDEX as usize] =
            region(VFIO_PCI_CONFIG_REGION_INDEX, CFG_SIZE as u64, rw);
        regions
    }

    pub fn irqs() -> Vec<IrqInfo> {
        let ev = VFIO_IRQ_INFO_EVENTFD;
        vec![
            IrqInfo {
                index: VFIO_PCI_INTX_IRQ_INDEX,
                flags: ev,
                count: 0,
            },
            IrqInfo {
                index: VFIO_PCI_MSI_IRQ_INDEX,
                flags: ev,
                count: 0,
            },
            IrqInfo {
                index: VFIO_PCI_MSIX_IRQ_INDEX,
                flags: ev | VFIO_IRQ_INFO_NORESIZE,
                count: abi::MAX_QUEUES as u32,
            },
            IrqInfo {
                index: VFIO_PCI_ERR_IRQ_INDEX,
                flags: ev,
                count: 0,
            },
            IrqInfo {
                index: VFIO_PCI_REQ_IRQ_INDEX,
                flags: ev,
                count: 0,
            },
        ]
    }

    fn info_block(&self) -> abi::DeviceInfoBlock {
        abi::DeviceInfoBlock {
            magic: abi::ABI_MAGIC,
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
            features: offered_features().bits(),
            mac: self.guest.mac.0,
            mtu: self.facts.mtu,
            max_rx_queues: self.guest.max_rxq,
            max_tx_queues: self.guest.max_txq,
            min_ring_size: abi::MIN_RING_SIZE,
            max_ring_size: abi::MAX_RING_SIZE,
            max_mtu: self.facts.max_mtu,
            link_up: self.facts.link_up as u16,
            link_speed_mbps: self.facts.link_speed_mbps,
            rx_offload_capa: self.facts.rx_offloads.bits(),
            tx_offload_capa: crate::datapath::GUEST_TX_OFFLOADS.bits(),
        }
    }

    /// Back to power-on state: no queues, no rules, no DMA, no interrupts, clean data BAR.
    /// Called at start-up, on DEVICE_RESET and when a guest disconnects.
    pub fn reset_device(&mut self) {
        self.guest.clear();
        let bar = &self.guest.data_bar;
        bar.clear();
        bar.write(abi::INFO_OFFSET, self.info_block().as_bytes());
        self.state = State::Fresh;
        self.guest.attached.store(false, Ordering::Relaxed);
        self.ctrl_status = 0;
        self.msix.fill(0);
        self.cfg[4] = 0;
        self.cfg[5] = 0;
    }

    /// Stops the data path and forgets queues and flow rules. DMA maps, interrupt fds and
    /// counters outlive this (they belong to the VMM's view of the device, not the driver's).
    fn stop_and_clear_queues(&mut self) {
        self.guest.with_both(|tx, rx| {
            tx.running = false;
            tx.queues.clear();
            rx.running = false;
            rx.queues.clear();
            rx.rules.clear();
        });
    }

    fn bad_access(&self, what: &str) {
        self.guest.stats.add(StatsIndex::CtrlErrors, 1);
        debug!("{}: refused {what}", self.guest.name);
    }

    fn exec_ctrl(&mut self, seq: u32) {
        let mut req = CtrlRequest::new_zeroed();
        self.guest
            .data_bar
            .read(abi::CTRL_REQ_OFFSET, req.as_mut_bytes());
        let mut resp = CtrlResponse::new_zeroed();
        resp.seq = seq;
        let outcome = if req.seq != seq {
            fail(
                CtrlStatus::BadSeq,
                format!("doorbell seq {seq} but request block holds {}", req.seq),
            )
        } else {
            match CtrlOp::from_u32(req.op) {
                None => fail(
                    CtrlStatus::UnknownOp,
                    format!("unknown control op {}", req.op),
                ),
                Some(op) => self.dispatch(op, &req),
            }
        };
        match outcome {
            Ok(result) => {
                resp.status = CtrlStatus::Ok as u32;
                resp.result = result;
            }
            Err((status, msg)) => {
                self.guest.stats.add(StatsIndex::CtrlErrors, 1);
                info!(
                    "{}: control request {} refused: {msg}",
                    self.guest.name, req.op
                );
                resp.status = status as u32;
                resp.set_message(&msg);
            }
        }
        self.ctrl_status = resp.status;
        self.guest
            .data_bar
            .write(abi::CTRL_RESP_OFFSET, resp.as_bytes());
    }

    fn need_negotiated(&self) -> Result<(), (CtrlStatus, String)> {
        if self.state == State::Fresh {
            return fail(CtrlStatus::BadState, "negotiate first");
        }
        Ok(())
    }

    fn configured(&self) -> Result<(u16, u16), (CtrlStatus, String)> {
        match self.state {
            State::Configured { nrx, ntx } => Ok((nrx, ntx)),
            _ => fail(CtrlStatus::BadState, "configure first"),
        }
    }

    fn dispatch(&mut self, op: CtrlOp, req: &CtrlRequest) -> CtrlResult {
        let mut out = [0u64; 16];
        match op {
            CtrlOp::Negotiate => {
                let major = (req.args[0] >> 16) as u16;
                let agreed = abi::negotiate(abi::ABI_MAJOR, offered_features(), major, req.args[1])
                    .map_err(|m| (CtrlStatus::Version, m))?;
                // A driver starting over (a restarted guest app) drops its queues and rules;
                // vfio-level state (DMA maps, interrupt fds, PCI config) belongs to the VMM
                // and survives, as it does on CtrlOp::Reset.
                self.stop_and_clear_queues();
                self.state = State::Negotiated;
                self.guest.attached.store(true, Ordering::Relaxed);
                self.guest.attaches.fetch_add(1, Ordering::Relaxed);
                out[0] = agreed.bits();
            }
            CtrlOp::Configure => {
                self.need_negotiated()?;
                let (nrx, ntx) = (req.args[0], req.args[1]);
                if nrx == 0 || nrx > self.guest.max_rxq as u64 {
                    return fail(
                        CtrlStatus::InvalidArg,
                        format!(
                            "{nrx} RX queues, this VM may use 1..={}",
                            self.guest.max_rxq
                        ),
                    );
                }
                if ntx == 0 || ntx > self.guest.max_txq as u64 {
                    return fail(
                        CtrlStatus::InvalidArg,
                        format!(
                            "{ntx} TX queues, this VM may use 1..={}",
                            self.guest.max_txq
                        ),
                    );
                }
                self.guest.with_both(|tx, rx| {
                    if rx.running {
                        return fail(CtrlStatus::BadState, "stop the device before configuring");
                    }
                    rx.queues = (0..nrx).map(|_| None).collect();
                    tx.queues = (0..ntx).map(|_| None).collect();
                    rx.rules.clear();
                    Ok(())
                })?;
                self.state = State::Configured {
                    nrx: nrx as u16,
                    ntx: ntx as u16,
                };
            }
            CtrlOp::RxqSetup | CtrlOp::TxqSetup => {
                let (nrx, ntx) = self.configured()?;
                let is_rx = op == CtrlOp::RxqSetup;
                let (qid, iova, size) = (req.args[0], req.args[1], req.args[2]);
                let n = if is_rx { nrx } else { ntx };
                if qid >= n as u64 {
                    return fail(
                        CtrlStatus::InvalidArg,
                        format!("queue {qid} is not configured ({n} queues)"),
                    );
                }
                if !valid_ring_size(size) {
                    return fail(
                        CtrlStatus::InvalidArg,
                        format!(
                            "ring size {size} is not a power of two in {}..={}",
                            abi::MIN_RING_SIZE,
                            abi::MAX_RING_SIZE
                        ),
                    );
                }
                if !iova.is_multiple_of(DESC_SIZE as u64) {
                    return fail(
                        CtrlStatus::InvalidArg,
                        format!("ring IOVA {iova:#x} is not 32-byte aligned"),
                    );
                }
                let len = size * DESC_SIZE as u64;
                self.guest.with_both(|tx, rx| {
                    if rx.running {
                        return fail(CtrlStatus::BadState, "stop the device before queue setup");
                    }
                    let Some(ptr) = rx.mem.translate(iova, len, true) else {
                        return fail(
                            CtrlStatus::InvalidArg,
                            format!("ring {iova:#x}+{len:#x} is not inside the guest's DMA map"),
                        );
                    };
                    // SAFETY: ptr..ptr+len lies in one writable DMA region; queues are dropped (under
                    // this lock) before that region is unmapped, so the ring outlives the RingPtr.
                    let ring = unsafe { RingPtr::new(ptr, size as u16) };
                    let q = HostQueue {
                        ring,
                        ring_iova: iova,
                        ring_len: len,
                        next: 0,
                    };
                    if is_rx {
                        rx.queues[qid as usize] = Some(q);
                    } else {
                        tx.queues[qid as usize] = Some(q);
                    }
                    Ok(())
                })?;
            }
            CtrlOp::Start => {
                self.configured()?;
                self.guest.with_both(|tx, rx| {
                    if let Some(q) = rx.queues.iter().position(|q| q.is_none()) {
                        return fail(CtrlStatus::BadState, format!("RX queue {q} is not set up"));
                    }
                    if let Some(q) = tx.queues.iter().position(|q| q.is_none()) {
                        return fail(CtrlStatus::BadState, format!("TX queue {q} is not set up"));
                    }
                    tx.running = true;
                    rx.running = true;
                    Ok(())
                })?;
                let _ = self.guest.tx_wake.write(1);
            }
            CtrlOp::Stop => {
                self.need_negotiated()?;
                self.guest.set_running(false);
            }
            CtrlOp::Reset => {
                self.need_negotiated()?;
                self.stop_and_clear_queues();
                self.state = State::Negotiated;
            }
            CtrlOp::FlowValidate | CtrlOp::FlowCreate => {
                let (nrx, _) = self.configured()?;
                let rule = self.decode_rule(req)?;
                self.check_rule(&rule, nrx)?;
                if op == CtrlOp::FlowCreate {
                    let mut rx = self.guest.rx.lock();
                    let max = self.guest.limits.flow_rules;
                    if rx.rules.len() >= max {
                        return fail(
                            CtrlStatus::NoMem,
                            format!("at most {max} flow rules per VM (limits.flow_rules)"),
                        );
                    }
                    let h = FlowHandle(self.next_flow);
                    self.next_flow = self.next_flow.wrapping_add(1).max(1);
                    rx.rules.push((h, rule));
                    out[0] = h.0 as u64;
                }
            }
            CtrlOp::FlowDestroy => {
                self.configured()?;
                let h = req.args[0];
                let mut rx = self.guest.rx.lock();
                let before = rx.rules.len();
                rx.rules.retain(|(x, _)| x.0 as u64 != h);
                if rx.rules.len() == before {
                    return fail(
                        CtrlStatus::InvalidArg,
                        format!("no flow rule with handle {h}"),
                    );
                }
            }
            CtrlOp::FlowFlush => {
                self.configured()?;
                self.guest.rx.lock().rules.clear();
            }
            CtrlOp::GetStats => {
                let s = self.guest.stats_snapshot();
                out[..s.len()].copy_from_slice(&s);
            }
        }
        Ok(out)
    }

    fn decode_rule(&self, req: &CtrlRequest) -> Result<FlowRule, (CtrlStatus, String)> {
        let n = req.payload_len as usize;
        if n > abi::CTRL_PAYLOAD_MAX {
            return fail(
                CtrlStatus::InvalidArg,
                format!("payload length {n} exceeds {}", abi::CTRL_PAYLOAD_MAX),
            );
        }
        abi::flow_codec::decode(&req.payload[..n])
            .map_err(|e| (CtrlStatus::InvalidArg, e.to_string()))
    }

    /// A guest's rule may only look at its own traffic and only target its own queues.
    fn check_rule(&self, rule: &FlowRule, nrx: u16) -> Result<(), (CtrlStatus, String)> {
        rule.check_shape()
            .map_err(|e| (CtrlStatus::InvalidArg, e.to_string()))?;
        if rule.attr.group != 0 {
            return fail(CtrlStatus::Unsupported, "only flow group 0");
        }
        if let Some(q) = rule.queues().find(|&q| q >= nrx) {
            return fail(
                CtrlStatus::Refused,
                format!("queue {q} is not one of this VM's {nrx} RX queues"),
            );
        }
        if let Some((spec, mask)) = rule.eth() {
            let m = mask.dst.0;
            if m != [0; 6] {
                let dst = MacAddr(std::array::from_fn(|i| spec.dst.0[i] & m[i]));
                let own = MacAddr(std::array::from_fn(|i| self.guest.mac.0[i] & m[i]));
                let bcast = spec.dst.is_broadcast() && m == [0xff; 6];
                if dst != own && !bcast {
                    return fail(
                        CtrlStatus::Refused,
                        format!(
                            "rule matches destination {} but this VM owns {}",
                            spec.dst, self.guest.mac
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    fn read_bar0(&mut self, off: u64) -> u32 {
        match off {
            abi::REG_MAGIC => abi::ABI_MAGIC,
            abi::REG_VERSION => (abi::ABI_MAJOR as u32) << 16 | abi::ABI_MINOR as u32,
            abi::REG_CTRL_STATUS => self.ctrl_status,
            o if msix_slot(o) => {
                let i = (o - abi::MSIX_TABLE_OFFSET as u64) as usize;
                u32::from_le_bytes(self.msix[i..i + 4].try_into().expect("4 bytes"))
            }
            _ => {
                self.bad_access(&format!("BAR0 read at {off:#x}"));
                u32::MAX
            }
        }
    }

    fn write_bar0(&mut self, off: u64, v: u32) {
        match off {
            abi::REG_CTRL_DOORBELL => self.exec_ctrl(v),
            abi::REG_TX_KICK => {
                if v >= self.guest.max_txq as u32 {
                    self.bad_access(&format!("TX kick for queue {v}"));
                }
                let _ = self.guest.tx_wake.write(1);
            }
            o if msix_slot(o) => {
                let i = (o - abi::MSIX_TABLE_OFFSET as u64) as usize;
                self.msix[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => self.bad_access(&format!("BAR0 write of {v:#x} at {off:#x}")),
        }
    }
}

/// A 4-byte register of the MSI-X table or PBA (offsets come from the guest: no overflow).
fn msix_slot(off: u64) -> bool {
    (abi::MSIX_TABLE_OFFSET as u64..=abi::SIGNAL_BAR_SIZE - 4).contains(&off)
}

/// `offset..offset+len` as an index range when it lies within `size` bytes.
fn within(offset: u64, len: u64, size: usize) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    (end <= size as u64).then_some(offset as usize..end as usize)
}

/// Sets O_NONBLOCK on a file the guest handed over.
fn set_nonblocking(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an fd we own; only file status flags change.
    let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `f` is an eventfd (what MSI-X vectors must be: a pipe or socket could block or
/// fill up under a poller).
fn is_eventfd(f: &File) -> bool {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .is_ok_and(|p| p.as_os_str() == "anon_inode:[eventfd]")
}

impl ServerBackend for VdpdkDevice {
    // Accesses outside a region never get here (the message layer refuses them with EINVAL);
    // inside one, an offset this device does not implement reads all-ones and is counted, as
    // an unimplemented register does on real hardware.
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        let len = data.len() as u64;
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX if within(offset, len, CFG_SIZE).is_some() => {
                let r = within(offset, len, CFG_SIZE).expect("checked by the guard");
                data.copy_from_slice(&self.cfg[r]);
            }
            VFIO_PCI_BAR0_REGION_INDEX if len == 4 && offset.is_multiple_of(4) => {
                data.copy_from_slice(&self.read_bar0(offset).to_le_bytes());
            }
            VFIO_PCI_BAR2_REGION_INDEX if self.guest.data_bar.read(offset as usize, data) => {}
            _ => {
                self.bad_access(&format!("read region {region} {offset:#x}+{len}"));
                data.fill(0xff);
            }
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let len = data.len() as u64;
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX if within(offset, len, CFG_SIZE).is_some() => {
                // Only command, interrupt line and MSI-X control are writable.
                for (i, b) in data.iter().enumerate() {
                    let o = offset as usize + i;
                    match o {
                        0x04 | 0x05 | 0x3c => self.cfg[o] = *b,
                        o if o == MSIX_CAP + 3 => self.cfg[o] = (self.cfg[o] & 0x07) | (b & 0xc0),
                        _ => {}
                    }
                }
            }
            VFIO_PCI_BAR0_REGION_INDEX if len == 4 && offset.is_multiple_of(4) => {
                let v = u32::from_le_bytes(data.try_into().expect("4 bytes"));
                self.write_bar0(offset, v);
            }
            VFIO_PCI_BAR2_REGION_INDEX if self.guest.data_bar.write(offset as usize, data) => {}
            _ => self.bad_access(&format!("write region {region} {offset:#x}+{len}")),
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        // The message layer logs the refusal (one warn line with this reason) and counts it.
        let einval = |m: String| {
            debug!("{}: DMA map refused: {m}", self.guest.name);
            std::io::Error::new(std::io::ErrorKind::InvalidInput, m)
        };
        let Some(fd) = fd else {
            // QEMU sends its non-shared memory (firmware ROMs; all of RAM unless it is a shared
            // memfd) without an fd, for DMA through socket messages, which we do not offer.
            // Refusing would fail QEMU's device realize, so accept and leave it unreachable:
            // descriptors pointing there are refused like any unmapped address.
            info!(
                "{}: DMA map {address:#x}+{size:#x} without an fd stays unreachable \
                 (guest RAM must be a shared memfd: memory-backend-memfd,share=on)",
                self.guest.name
            );
            return Ok(());
        };
        self.guest
            .map_region(
                &fd,
                offset,
                address,
                size,
                flags.contains(DmaMapFlags::WRITE),
            )
            .map_err(einval)?;
        debug!("{}: DMA map {address:#x}+{size:#x}", self.guest.name);
        Ok(())
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> std::io::Result<()> {
        let (iova, len) = if flags.contains(DmaUnmapFlags::UNMAP_ALL) {
            (0, u64::MAX)
        } else {
            (address, size)
        };
        match self.guest.unmap_range(iova, len) {
            Ok(0) => {}
            Ok(dropped) => warn!(
                "{}: DMA unmap {iova:#x}+{len:#x} removed {dropped} rings; device stopped",
                self.guest.name
            ),
            Err(m) => {
                debug!("{}: DMA unmap refused: {m}", self.guest.name);
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
            }
        }
        Ok(())
    }

    fn refused(&mut self, command: u16, errno: u32) {
        // Every error reply is counted here, once: the message layer's (malformed, oversized,
        // unsupported messages) and this device's own (DMA and interrupt requests it refused).
        self.guest.stats.add(StatsIndex::CtrlErrors, 1);
        debug!(
            "{}: vfio-user command {command} refused (errno {errno})",
            self.guest.name
        );
    }

    fn reset(&mut self) -> std::io::Result<()> {
        info!("{}: device reset", self.guest.name);
        self.reset_device();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        let einval = |m: String| {
            debug!("{}: SET_IRQS refused: {m}", self.guest.name);
            std::io::Error::new(std::io::ErrorKind::InvalidInput, m)
        };
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            return Err(einval(format!("only MSI-X interrupts, not index {index}")));
        }
        let end = start
            .checked_add(count)
            .filter(|&e| e <= abi::MAX_QUEUES as u32)
            .ok_or_else(|| einval(format!("vectors {start}+{count} out of range")))?;
        let eventfds = flags & VFIO_IRQ_SET_DATA_EVENTFD != 0;
        if eventfds && !fds.is_empty() {
            if fds.len() != count as usize {
                return Err(einval(format!("{count} vectors but {} fds", fds.len())));
            }
            // Pollers signal these: each must be an eventfd, and non-blocking so a guest that
            // lets its counter fill up costs a failed write (counted), never a stalled poller.
            // Checked before taking the guest lock (no guest fd is touched under it).
            if !fds.iter().all(is_eventfd) {
                return Err(einval("MSI-X vectors take eventfds only".into()));
            }
            for f in &fds {
                set_nonblocking(f).map_err(|e| einval(format!("eventfd: {e}")))?;
            }
        } else if !eventfds && flags & VFIO_IRQ_SET_DATA_NONE == 0 {
            return Err(einval(format!("unsupported SET_IRQS flags {flags:#x}")));
        }
        let fds: Vec<Arc<File>> = match eventfds {
            true => fds.into_iter().map(Arc::new).collect(),
            false => Vec::new(),
        };
        let mut rx = self.guest.rx.lock();
        if rx.irq_fds.len() < end as usize {
            rx.irq_fds.resize_with(end as usize, || None);
        }
        if !eventfds && count == 0 {
            rx.irq_fds.clear();
        } else {
            // Eventfd data with no fds is QEMU's encoding of fd -1 (vectors unused), like
            // DATA_NONE: the vectors are disarmed.
            for v in start..end {
                rx.irq_fds[v as usize] = fds.get((v - start) as usize).cloned();
            }
        }
        Ok(())
    }
}
