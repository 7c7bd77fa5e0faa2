//! A software E810 PF: the register file, the admin queue engine and the commands a driver
//! sends during bring-up, with the formats of DPDK `base/ice_adminq_cmd.h` and
//! `base/ice_hw_autogen.h` (shared/reference/e810-facts.md; the C++ model in vmuxIO's
//! `e810_bm` was the behavioural reference for completion semantics). Unknown commands answer
//! with an admin error, never a panic; every response buffer is zeroed before it is filled.
//!
//! Fault injection ([`Faults`]) lets tests make the firmware stop answering, report a newer API,
//! complete with the wrong opcode or sit in a global reset.
//!
//! The crate shares no code with `ice-driver` (its own register map, bit-field reader and
//! device ids), so a mistake in the driver cannot hide behind the model agreeing with it.
//!
//! Where things are: `mmio` (BAR0 registers), `aq` (the admin queue: `aq/opcode.rs` maps each
//! opcode to its handler, the handlers live by area in `aq/{generic,switch,sched,link,ddp}.rs`;
//! a new command is one line there and one handler), `rx` and `tx` (LAN queues and
//! descriptors), `fdir` and `pipeline` (Flow Director and RSS classification), `irq` (MSI-X, ITR), `counters`; the
//! front ends are [`pci`] (in-process) and the `ice-model-server` crate (vfio-user).

#![warn(missing_docs)]

mod aq;
mod bits;
pub mod cable;
mod counters;
pub mod dma;
mod fdir;
mod irq;
mod mmio;
mod nvm;
mod offload;
pub mod pci;
mod pipeline;
mod pools;
mod regs;
mod resources;
mod rss;
mod rx;
mod sched;
mod swrules;
mod tx;

use std::collections::HashMap;

use vdpdk_core::MacAddr;

use aq::Ring;
use dma::DmaSpace;
use regs::PFGEN_CTRL;
use rx::RxQueueState;
use tx::TxQueueState;

/// Intel's PCI vendor id (DPDK `drivers/net/intel/ice/base/ice_devids.h`
/// `ICE_INTEL_VENDOR_ID`).
pub const INTEL_VENDOR_ID: u16 = 0x8086;
/// Device id of the E810-C for QSFP, the card the model presents (DPDK
/// `drivers/net/intel/ice/base/ice_devids.h` `ICE_DEV_ID_E810C_QSFP`).
pub const E810_C_QSFP: u16 = 0x1592;

/// Misbehaviours a test can switch on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Ignore tail writes to the send queue (the firmware hangs).
    pub stop_answering: bool,
    /// Report this API major in get_ver.
    pub api_major: Option<u8>,
    /// Complete every command with this opcode instead of its own.
    pub wrong_opcode: Option<u16>,
    /// Report a global reset in progress (GLGEN_RSTAT.DEVSTATE = 1).
    pub in_global_reset: bool,
    /// Make every command fail with this admin error.
    pub fail_all: Option<u16>,
    /// Refuse every update_package (Flow Director profiles can never be programmed).
    pub refuse_profile_updates: bool,
}

/// Model counters (per port, like GLPRT_*).
#[derive(Default, Clone, Copy, Debug)]
pub struct ModelStats {
    /// Frames delivered to an RX queue.
    pub rx_packets: u64,
    /// Bytes of those frames (without CRC).
    pub rx_bytes: u64,
    /// Frames dropped because the target queue was disabled or had no descriptor.
    pub rx_dropped: u64,
    /// Frames longer than the queue's RXMAX.
    pub rx_oversize: u64,
    /// RX descriptors or buffers the device found unmapped (an IOMMU fault on hardware):
    /// a driver that let memory go while its queue could still write there.
    pub rx_dma_faults: u64,
    /// Frames put on the wire (each TSO segment counts).
    pub tx_packets: u64,
    /// Bytes of those frames (without CRC).
    pub tx_bytes: u64,
    /// TX descriptors the model could not process (bad address, unknown type).
    pub tx_errors: u64,
}

/// Model configuration (what the "NVM" says).
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The LAN MAC address manage_mac_read reports.
    pub mac: MacAddr,
    /// The PF's function number (PF_FUNC_RID, get_sw_cfg).
    pub pf_id: u8,
    /// RX and TX queues the function owns (RXQS/TXQS capabilities).
    pub num_queues: u32,
    /// MSI-X vectors of the function (MSIX capability, vfio-user IRQ count).
    pub num_msix: u32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            mac: MacAddr([0x00, 0x1b, 0x21, 0xe8, 0x10, 0x00]),
            pf_id: 0,
            num_queues: 64,
            num_msix: 64,
        }
    }
}

/// What set_port_params (0x0203) configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortParams {
    /// Double VLAN mode (cmd_flags bit 2).
    pub double_vlan: bool,
    /// VSI-to-VSI forwarding: 0 enabled, 1 disabled, 2 prioritized (local_fwd_mode, set when
    /// its VALID bit 2 is).
    pub local_fwd_mode: u8,
}

/// The model's state; drive it with `mmio_read` / `mmio_write`.
pub struct E810Model {
    /// What the NVM says; a power-on keeps it.
    pub cfg: ModelConfig,
    /// Misbehaviours switched on; a power-on keeps them (but ends a global reset).
    pub faults: Faults,
    /// The driver's DMA maps, as the model reads and writes host memory through them.
    pub dma: DmaSpace,
    atq: Ring,
    arq: Ring,
    /// Registers without behaviour: read back what was written.
    plain: HashMap<u64, u32>,
    link_up: bool,
    lse_enabled: bool,
    /// Link events masked by set_event_mask (a set bit masks the event).
    event_mask: u16,
    /// The PHY configuration's caps byte (set_phy_cfg; get_phy_caps in active mode).
    phy_caps: u8,
    /// Port parameters (set_port_params): double VLAN, and the VSI-to-VSI forwarding mode.
    port_params: PortParams,
    /// The driver's version as it announced it (driver_ver): major, minor, build, subbuild
    /// and its version string.
    pub driver_version: Option<([u8; 4], String)>,
    /// Admin commands seen, by opcode (for tests and debugging).
    pub commands: HashMap<u16, u32>,
    /// Events that could not be posted because the ARQ had no free buffer.
    pub events_dropped: u32,
    rxq: Vec<RxQueueState>,
    txq: Vec<TxQueueState>,
    /// Port counters of what went through the model.
    pub stats: ModelStats,
    /// Frames transmitted and not yet taken by the wire.
    outbox: Vec<Vec<u8>>,
    /// Scheduler nodes by TEID.
    sched: HashMap<u32, sched::SchedNode>,
    next_teid: u32,
    next_vsi: u16,
    /// The first PF-type VSI added: the one the LAN queues (and VSI counters) belong to.
    lan_vsi: Option<u16>,
    /// Destination MAC -> PF queue (switch rules); unmatched frames go to queue 0.
    pub mac_to_queue: Vec<(MacAddr, u16)>,
    /// QINT_RQCTL per RX queue.
    rq_ctl: HashMap<usize, u32>,
    /// QINT_TQCTL per TX queue.
    tq_ctl: HashMap<usize, u32>,
    /// Vectors whose INTENA is set (armed); firing one clears it (auto-mask).
    armed: std::collections::HashSet<usize>,
    /// GLINT_ITR intervals in µs by (ITR index, vector); 0 or absent: no throttling.
    itr_us: HashMap<(u8, usize), u64>,
    /// When each vector last fired, and the vectors whose interrupt waits for its interval.
    last_fire: HashMap<usize, std::time::Instant>,
    held: std::collections::HashSet<usize>,
    /// Vectors a cause asked for while disarmed, with the ITR index it asked through: each
    /// fires when software re-arms it.
    latched: HashMap<usize, u8>,
    /// Interrupts the ITR held back (each fires when its interval ends).
    pub throttled: u64,
    /// The shared handle this model lives in (set by [`E810Model::into_shared`]): a held
    /// interrupt's timer needs it to come back.
    self_ref: Option<std::sync::Weak<parking_lot::Mutex<E810Model>>>,
    /// MSI-X vector eventfds (from SET_IRQS).
    msix: Vec<Option<std::os::fd::OwnedFd>>,
    /// Interrupts fired, for tests.
    pub interrupts: u64,
    /// Last set_mac_cfg: \[max_frame_size, tx_tmr_value, fc_refresh_threshold\].
    pub mac_cfg: [u16; 3],
    /// 40-bit port counters by L-register offset (wrap at 2^40 like the hardware).
    port_counters: HashMap<u64, u64>,
    /// Flow Director filters: (hardware profile, extracted key) -> (queue, drop, fdid).
    fdir: HashMap<(u8, Vec<u8>), (u16, bool, u32)>,
    /// The FD classification tables the driver programs (profiles, TCAM, XLT1/2, ES).
    fd: pipeline::Pipeline,
    /// The RSS block's pipeline (profiles Linux programs for its hash input sets).
    rss: pipeline::Pipeline,
    /// Frames dropped by a Flow Director DROP filter.
    pub fdir_drops: u64,
    /// DDP: buffers received in the current download, and whether a package is active.
    pkg_bufs: u32,
    /// The metadata section (version, name, track id) of the package being downloaded, and of
    /// the package that is active (reported by get_pkg_info_list).
    pkg_meta: Option<[u8; 36]>,
    active_pkg: Option<[u8; 36]>,
    /// The package's RX parser metadata init section (58): 24-byte entries by index, what
    /// upload_section answers (entry 0 says whether the package supports double VLAN mode).
    parser_meta_init: Vec<[u8; 24]>,
    /// The local LLDP MIB set_local_mib left (empty: none set).
    local_mib: Vec<u8>,
    /// RSS key (52 bytes) and LUT per VSI number, as set_rss_key/set_rss_lut left them.
    rss_keys: HashMap<u16, [u8; 52]>,
    rss_luts: HashMap<u16, Vec<u8>>,
    /// The resource locks (request/release resource); whether a package is active.
    resources: resources::Resources,
    /// The NVM that NVM read serves.
    nvm: nvm::Nvm,
    /// Shared switch resources (VSI lists, FD counters and entries, RSS profiles).
    pools: pools::Pools,
    /// VSIs by HW number, with the context the driver gave (add/update VSI).
    vsis: std::collections::BTreeMap<u16, Vec<u8>>,
    /// Switch lookup rules (add/update/remove switch rules).
    sw_rules: swrules::SwRules,
    /// Firmware logging configuration (0xFF30-0xFF32).
    fwlog: aq::FwLog,
    /// Received frames the switch dropped (a drop rule, or no rule claimed them).
    pub switch_drops: u64,
}

impl E810Model {
    /// A card at power-on: admin queue off, no VSI, queue or filter, link down.
    pub fn new(cfg: ModelConfig) -> E810Model {
        E810Model {
            cfg,
            faults: Faults::default(),
            dma: DmaSpace::default(),
            atq: Ring::default(),
            arq: Ring::default(),
            plain: HashMap::new(),
            link_up: false,
            lse_enabled: false,
            event_mask: 0,
            // Pause and automatic link update, link not enabled: the driver enables it
            // (set_phy_cfg, or restart_an).
            phy_caps: 0x23,
            port_params: PortParams::default(),
            driver_version: None,
            commands: HashMap::new(),
            events_dropped: 0,
            rxq: Vec::new(),
            txq: Vec::new(),
            stats: ModelStats::default(),
            outbox: Vec::new(),
            sched: sched::default_topology(),
            next_teid: 0x200,
            next_vsi: 5,
            lan_vsi: None,
            mac_to_queue: Vec::new(),
            rq_ctl: HashMap::new(),
            tq_ctl: HashMap::new(),
            armed: Default::default(),
            itr_us: HashMap::new(),
            last_fire: HashMap::new(),
            held: Default::default(),
            latched: HashMap::new(),
            throttled: 0,
            self_ref: None,
            msix: Vec::new(),
            interrupts: 0,
            mac_cfg: [0; 3],
            port_counters: HashMap::new(),
            fdir: HashMap::new(),
            fd: pipeline::Pipeline::new(pipeline::FD),
            rss: pipeline::Pipeline::new(pipeline::RSS),
            fdir_drops: 0,
            pkg_bufs: 0,
            pkg_meta: None,
            active_pkg: None,
            parser_meta_init: Vec::new(),
            local_mib: Vec::new(),
            rss_keys: HashMap::new(),
            rss_luts: HashMap::new(),
            resources: Default::default(),
            nvm: nvm::Nvm::new(),
            pools: Default::default(),
            vsis: Default::default(),
            sw_rules: Default::default(),
            fwlog: Default::default(),
            switch_drops: 0,
        }
    }

    /// Sets a port counter (tests use it to start near the 40-bit wrap).
    pub fn set_port_counter(&mut self, l_reg: u64, v: u64) {
        self.port_counters.insert(l_reg, v & ((1 << 40) - 1));
    }

    /// Routes MSI-X vectors 0.. to these eventfds.
    pub fn set_msix(&mut self, fds: Vec<Option<std::os::fd::OwnedFd>>) {
        self.msix = fds;
    }

    /// The current vector table, leaving it empty (to be edited and set again).
    pub fn take_msix(&mut self) -> Vec<Option<std::os::fd::OwnedFd>> {
        std::mem::take(&mut self.msix)
    }

    /// The model behind a shared handle, as the PCI front ends use it; interrupt throttling
    /// (ITR) needs this to fire held interrupts later.
    pub fn into_shared(mut self) -> std::sync::Arc<parking_lot::Mutex<E810Model>> {
        std::sync::Arc::new_cyclic(|w| {
            self.self_ref = Some(w.clone());
            parking_lot::Mutex::new(self)
        })
    }

    /// Replaces the model by a fresh one with the same configuration and faults (a global
    /// reset in progress is over), in the same shared handle: the card as a host that boots
    /// finds it. The old one is dropped outside the lock: that unmaps its DMA and closes its
    /// interrupt eventfds.
    pub fn power_on(model: &parking_lot::Mutex<E810Model>) {
        let old = {
            let mut m = model.lock();
            let mut fresh = E810Model::new(m.cfg.clone());
            fresh.faults = Faults {
                in_global_reset: false,
                ..m.faults
            };
            fresh.self_ref = m.self_ref.take();
            std::mem::replace(&mut *m, fresh)
        };
        drop(old);
    }

    /// A PCI function-level reset as the front ends forward it: PFGEN_CTRL.PFSWR, the PF
    /// software reset (the admin queue survives, everything else of the PF goes).
    pub fn function_reset(&mut self) {
        self.mmio_write(PFGEN_CTRL, 1);
    }

    /// `E810Model::new(cfg).into_shared()`.
    pub fn shared(cfg: ModelConfig) -> std::sync::Arc<parking_lot::Mutex<E810Model>> {
        Self::new(cfg).into_shared()
    }

    /// Frames transmitted since the last call (what left the port).
    pub fn take_outbox(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }

    /// Flow Director capacity of the model.
    pub const FDIR_CAPACITY: usize = 1024;

    /// Whether a DDP package is active (download_pkg with LAST_BUF went through).
    pub fn pkg_loaded(&self) -> bool {
        self.resources.package_done
    }

    /// Whether the link is up (restart_an with ENABLE brought it up).
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Whether PF TX queue `q` is enabled (created by add_txqs and not disabled).
    pub fn tx_queue_enabled(&self, q: usize) -> bool {
        self.txq.get(q).is_some_and(|s| s.enabled)
    }

    /// A global (CORE) reset, as firmware or another PF may trigger at any time: every queue
    /// and the admin queue stop, link drops, and the device reads as resetting until
    /// `finish_reset`.
    pub fn global_reset(&mut self) {
        self.atq = Ring::default();
        self.arq = Ring::default();
        self.pf_reset();
        // Filters and programmed profiles are gone; the package's XLT1 stays loaded.
        self.fdir.clear();
        self.fd.clear_programming();
        self.rss.clear_programming();
        self.faults.in_global_reset = true;
    }

    /// The global reset is over: registers read as ready again.
    pub fn finish_reset(&mut self) {
        self.faults.in_global_reset = false;
    }

    /// A PF reset: the admin queue survives (its reset source is EMPR), everything else goes.
    fn pf_reset(&mut self) {
        self.plain.clear();
        self.lan_vsi = None;
        self.rss_keys.clear();
        self.rss_luts.clear();
        self.resources.reset();
        self.sw_rules.clear();
        self.vsis.clear();
        self.link_up = false;
        self.lse_enabled = false;
        // The PF's queues stop and its interrupt setup is gone, so a driver that probes
        // again after a reset gets no interrupt its old setup asked for.
        for q in &mut self.rxq {
            q.enabled = false;
        }
        for q in &mut self.txq {
            q.enabled = false;
        }
        // The PF's VSIs and queues are gone, and with them their scheduler nodes: the tree is
        // back to its default topology (a re-probing driver looks for the entry point there).
        self.sched = sched::default_topology();
        self.rq_ctl.clear();
        self.tq_ctl.clear();
        self.armed.clear();
        self.latched.clear();
        self.itr_us.clear();
    }
}
