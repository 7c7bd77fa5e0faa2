//! The vDPDK PCI device of one VM: config space with an MSI-X capability, the trapped signal
//! BAR (BAR0 registers), the shared data BAR and the control plane. The control plane
//! (`control.rs`) knows no transport; the vfio-user server drives the device through its
//! `ServerBackend` impl (`vfio.rs`). Every guest request is copied out of shared memory once,
//! validated, then applied.

mod control;
mod vfio;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::debug;
use vdpdk_core::abi::{self, Features, StatsIndex};
use vfio_bindings::bindings::vfio::*;
use vfio_user::{IrqInfo, ServerRegion, SparseArea};
use zerocopy::IntoBytes;

use crate::guest::Guest;
use control::ControlPlane;

const CFG_SIZE: usize = 256;
const MSIX_CAP: usize = 0x40;

/// What the device offers `guest`: zero-copy TX only where host-mux was told to lend guest
/// buffers to its backend (`zero_copy_tx`).
pub fn offered_features(guest: &Guest) -> Features {
    let all = Features::RX_INTR
        | Features::TX_KICK
        | Features::FLOW
        | Features::MULTIQUEUE
        | Features::TX_DONE_INDEX
        | Features::RX_DONE_INDEX
        | Features::TX_LAPS;
    let tx = match guest.zero_copy_tx {
        true => Features::TX_ZERO_COPY,
        false => Features::empty(),
    };
    let rx = match guest.zero_copy_rx {
        true => Features::RX_ZERO_COPY,
        false => Features::empty(),
    };
    all | tx | rx
}

/// Device-wide facts the mux fills into each guest's info block.
#[derive(Clone, Copy, Debug)]
pub struct PortFacts {
    /// The MTU guests start with (bytes of L3 payload).
    pub mtu: u16,
    /// The largest MTU a guest may set.
    pub max_mtu: u16,
    /// RX checksum offloads the backend reports per frame (passed through to guests).
    pub rx_offloads: vdpdk_core::RxOffloads,
    /// The backend's link was up at start-up.
    pub link_up: bool,
    /// The backend's link speed at start-up, in Mbit/s.
    pub link_speed_mbps: u32,
}

/// One VM's vDPDK device: what its vfio-user server serves. It exists from start-up; a guest
/// attaches and detaches over time, and [`VdpdkDevice::reset_device`] returns it to power-on
/// state between guests.
pub struct VdpdkDevice {
    guest: Arc<Guest>,
    facts: PortFacts,
    /// PCI config space.
    cfg: [u8; CFG_SIZE],
    /// MSI-X table and PBA (BAR0 from `MSIX_TABLE_OFFSET` to its end).
    msix: Vec<u8>,
    ctrl: ControlPlane,
}

impl VdpdkDevice {
    /// A device for `guest`, in power-on state (which also clears the guest's state).
    pub fn new(guest: Arc<Guest>, facts: PortFacts) -> VdpdkDevice {
        let mut d = VdpdkDevice {
            ctrl: ControlPlane::new(guest.clone()),
            guest,
            facts,
            cfg: [0; CFG_SIZE],
            msix: vec![0; (abi::SIGNAL_BAR_SIZE as usize) - abi::MSIX_TABLE_OFFSET as usize],
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
    pub(crate) fn limits(&self) -> &crate::config::GuestLimits {
        &self.guest.limits
    }

    /// The VM this device belongs to.
    pub(crate) fn name(&self) -> &str {
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

    /// The interrupt indexes the device reports: only MSI-X has vectors, one per possible RX
    /// queue (`abi::MAX_QUEUES`).
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
            features: offered_features(&self.guest).bits(),
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
        self.ctrl.reset();
        self.guest.attached.store(false, Ordering::Relaxed);
        self.msix.fill(0);
        self.cfg[4] = 0;
        self.cfg[5] = 0;
    }

    /// Counts (in `ctrl_errors`) and logs a guest access this device refuses.
    fn bad_access(&self, what: &str) {
        self.guest.stats.add(StatsIndex::CtrlErrors, 1);
        debug!("{}: refused {what}", self.guest.name);
    }

    fn read_bar0(&mut self, off: u64) -> u32 {
        match off {
            abi::REG_MAGIC => abi::ABI_MAGIC,
            abi::REG_VERSION => (abi::ABI_MAJOR as u32) << 16 | abi::ABI_MINOR as u32,
            abi::REG_CTRL_STATUS => self.ctrl.status(),
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
            abi::REG_CTRL_DOORBELL => self.ctrl.ring(v),
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
