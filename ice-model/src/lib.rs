//! A software E810 PF: the register file, the admin queue engine and the commands a driver
//! sends during bring-up, with the formats of DPDK `base/ice_adminq_cmd.h` and
//! `base/ice_hw_autogen.h` (shared/reference/e810-facts.md; the C++ model in vmuxIO's
//! `e810_bm` was the behavioural reference for completion semantics). Unknown commands answer
//! with an admin error, never a panic; every response buffer is zeroed before it is filled.
//!
//! Fault injection ([`Faults`]) lets tests make the firmware stop answering, report a newer API,
//! complete with the wrong opcode or sit in a global reset.

mod bits;
pub mod cable;
pub mod dma;
pub mod fdpipe;
pub mod offload;
pub mod pci;
pub mod regs;

use std::collections::HashMap;

use vdpdk_core::MacAddr;

use dma::DmaSpace;
use regs::*;

/// Intel's PCI vendor id (DPDK `drivers/net/intel/ice/base/ice_devids.h`
/// `ICE_INTEL_VENDOR_ID`).
pub const INTEL_VENDOR_ID: u16 = 0x8086;
/// Device id of the E810-C for QSFP, the card the model presents (DPDK
/// `drivers/net/intel/ice/base/ice_devids.h` `ICE_DEV_ID_E810C_QSFP`).
pub const E810_C_QSFP: u16 = 0x1592;

// The few AQ constants the model needs, written out from [AQC] rather than shared with the
// driver (see regs.rs for why).
const FLAG_DD: u16 = 0x1;
const FLAG_CMP: u16 = 0x2;
const FLAG_ERR: u16 = 0x4;
const FLAG_RD: u16 = 0x400;
const FLAG_BUF: u16 = 0x1000;
/// `ice_aq_err`: EINVAL 14, ENOMEM 9, ENOSYS 17 (the answer to an unknown opcode).
const RC_EINVAL: u16 = 14;
const RC_ENOMEM: u16 = 9;
const RC_ENOSYS: u16 = 17;
const RC_ENOENT: u16 = 2;
const RC_EIO: u16 = 5;
const RC_EBUSY: u16 = 12;
const RC_ENOSPC: u16 = 16;

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

/// E810 packet type of a frame (\[LTR\] `ice_ptype_lkup`: 1 L2, 11 ARP, 23 IPv4, 24 IPv4/UDP,
/// 26 IPv4/TCP, 28 IPv4/ICMP, 89 IPv6, 90 IPv6/UDP, 92 IPv6/TCP).
fn e810_ptype(frame: &[u8]) -> u16 {
    let et = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match et {
        Some(0x0806) => 11,
        Some(0x0800) => match frame.get(23) {
            Some(17) => 24,
            Some(6) => 26,
            Some(1) => 28,
            _ => 23,
        },
        Some(0x86dd) => match frame.get(20) {
            Some(17) => 90,
            Some(6) => 92,
            _ => 89,
        },
        _ => 1,
    }
}

/// RFC 1071 sum of 16-bit words (not inverted), folded.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Checks IPv4 header and TCP/UDP checksums: (evaluated, ip_bad, l4_bad).
fn verify_checksums(frame: &[u8]) -> (bool, bool, bool) {
    if frame.get(12..14) != Some(&[0x08, 0x00]) || frame.len() < 34 {
        return (false, false, false);
    }
    let ihl = (frame[14] & 0xf) as usize * 4;
    if ihl < 20 || frame.len() < 14 + ihl {
        return (true, true, false);
    }
    let ip_bad = sum16(&frame[14..14 + ihl], 0) != 0xffff;
    let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    let proto = frame[23];
    let l4 = &frame[14 + ihl..(14 + total).min(frame.len()).max(14 + ihl)];
    let l4_bad = match proto {
        17 if l4.len() >= 8 && (l4[6], l4[7]) == (0, 0) => false, // no UDP checksum
        6 | 17 if l4.len() >= 8 => {
            let mut acc = sum16(&frame[26..34], 0);
            acc = sum16(&[0, proto], acc);
            acc = sum16(&(l4.len() as u16).to_be_bytes(), acc);
            sum16(l4, acc) != 0xffff
        }
        _ => false,
    };
    (true, ip_bad, l4_bad)
}

/// The 32-byte flex NIC write-back for a received frame [LTR `ice_32b_rx_flex_desc_nic`]:
/// rxdid @0, ptype @2 (bits 9:0), pkt_len @4 (bits 13:0), status_error0 @8 (DD b0, EOF b1,
/// L3L4P b3, XSUM_IPE b4, XSUM_L4E b5).
fn rx_writeback(frame: &[u8], rxdid: u8) -> [u8; 32] {
    let mut wb = [0u8; 32];
    wb[0] = rxdid;
    wb[2..4].copy_from_slice(&e810_ptype(frame).to_le_bytes());
    wb[4..6].copy_from_slice(&(frame.len() as u16 & 0x3FFF).to_le_bytes());
    let (eval, ip_bad, l4_bad) = verify_checksums(frame);
    let mut st: u16 = 0b11;
    if eval {
        st |= 1 << 3;
        st |= (ip_bad as u16) << 4 | (l4_bad as u16) << 5;
    }
    wb[8..10].copy_from_slice(&st.to_le_bytes());
    wb
}

/// One admin ring as the device sees it.
#[derive(Default, Clone, Copy, Debug)]
struct Ring {
    bal: u32,
    bah: u32,
    len: u32,
    head: u32,
    tail: u32,
}

impl Ring {
    fn enabled(&self) -> bool {
        self.len & (1 << 31) != 0
    }
    fn entries(&self) -> u32 {
        self.len & 0x3FF
    }
    fn base(&self) -> u64 {
        (self.bah as u64) << 32 | self.bal as u64
    }
}

/// One LAN RX queue as the device sees it.
#[derive(Default, Clone)]
struct RxQueueState {
    ctx: [u32; 8],
    enabled: bool,
    base: u64,
    len: u32,
    dbuf: usize,
    rxmax: usize,
    head: u32,
    tail: u32,
    rxdid: u8,
}

/// One LAN TX queue created by add_txqs.
#[derive(Default, Clone)]
struct TxQueueState {
    enabled: bool,
    base: u64,
    len: u32,
    head: u32,
}

/// Model counters (per port, like GLPRT_*).
#[derive(Default, Clone, Copy, Debug)]
pub struct ModelStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames dropped because the target queue was disabled or had no descriptor.
    pub rx_dropped: u64,
    /// Frames longer than the queue's RXMAX.
    pub rx_oversize: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// TX descriptors the model could not process (bad address, unknown type).
    pub tx_errors: u64,
}

/// Model configuration (what the "NVM" says).
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub mac: MacAddr,
    pub pf_id: u8,
    pub num_queues: u32,
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

/// The model's state; drive it with `mmio_read` / `mmio_write`.
pub struct E810Model {
    pub cfg: ModelConfig,
    pub faults: Faults,
    pub dma: DmaSpace,
    atq: Ring,
    arq: Ring,
    /// Registers without behaviour: read back what was written.
    plain: HashMap<u64, u32>,
    link_up: bool,
    lse_enabled: bool,
    /// Admin commands seen, by opcode (for tests and debugging).
    pub commands: HashMap<u16, u32>,
    /// Events that could not be posted because the ARQ had no free buffer.
    pub events_dropped: u32,
    rxq: Vec<RxQueueState>,
    txq: Vec<TxQueueState>,
    pub stats: ModelStats,
    /// Frames transmitted and not yet taken by the wire.
    outbox: Vec<Vec<u8>>,
    /// Scheduler nodes: TEID -> (parent TEID, layer).
    sched: HashMap<u32, (u32, u32)>,
    next_teid: u32,
    next_vsi: u16,
    /// The last VSI added: the one the LAN queues (and VSI counters) belong to.
    lan_vsi: Option<u16>,
    /// Destination MAC -> PF queue (switch rules); unmatched frames go to queue 0.
    pub mac_to_queue: Vec<(MacAddr, u16)>,
    /// QINT_RQCTL per RX queue.
    rq_ctl: HashMap<usize, u32>,
    /// Vectors whose INTENA is set (armed); firing one clears it (auto-mask).
    armed: std::collections::HashSet<usize>,
    /// GLINT_ITR intervals in µs by (ITR index, vector); 0 or absent: no throttling.
    itr_us: HashMap<(u8, usize), u64>,
    /// When each vector last fired, and the vectors whose interrupt waits for its interval.
    last_fire: HashMap<usize, std::time::Instant>,
    held: std::collections::HashSet<usize>,
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
    fd: fdpipe::FdPipeline,
    /// The control VSI (added with type CTRL): training packets are classified with it.
    ctrl_vsi: Option<u16>,
    change_lock_held: bool,
    /// Frames dropped by a Flow Director DROP filter.
    pub fdir_drops: u64,
    /// DDP: buffers received in the current download, and whether a package is active.
    pkg_bufs: u32,
    pub pkg_loaded: bool,
    cfg_lock_held: bool,
}

/// The outcome of one admin command.
struct Reply {
    /// Write `data` back into the buffer even though it was input (RD): firmware fills in
    /// TEIDs and numbers in add_sched_elems / add_txqs buffers.
    write_back: bool,
    retval: u16,
    params: Option<[u8; 16]>,
    data: Vec<u8>,
    /// Response length to report (defaults to data.len()).
    datalen: Option<u16>,
}

impl Reply {
    fn ok() -> Reply {
        Reply {
            write_back: false,
            retval: 0,
            params: None,
            data: Vec::new(),
            datalen: None,
        }
    }
    fn err(rc: u16) -> Reply {
        Reply {
            retval: rc,
            ..Reply::ok()
        }
    }
}

impl E810Model {
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
            commands: HashMap::new(),
            events_dropped: 0,
            rxq: Vec::new(),
            txq: Vec::new(),
            stats: ModelStats::default(),
            outbox: Vec::new(),
            sched: Self::default_topology(),
            next_teid: 0x200,
            next_vsi: 5,
            lan_vsi: None,
            mac_to_queue: Vec::new(),
            rq_ctl: HashMap::new(),
            armed: Default::default(),
            itr_us: HashMap::new(),
            last_fire: HashMap::new(),
            held: Default::default(),
            throttled: 0,
            self_ref: None,
            msix: Vec::new(),
            interrupts: 0,
            mac_cfg: [0; 3],
            port_counters: HashMap::new(),
            fdir: HashMap::new(),
            fd: fdpipe::FdPipeline::default(),
            ctrl_vsi: None,
            change_lock_held: false,
            fdir_drops: 0,
            pkg_bufs: 0,
            pkg_loaded: false,
            cfg_lock_held: false,
        }
    }

    fn count(&mut self, reg: u64, v: u64) {
        let c = self.port_counters.entry(reg).or_default();
        *c = (*c + v) & ((1 << 40) - 1);
    }

    /// Sets a port counter (tests use it to start near the 40-bit wrap).
    pub fn set_port_counter(&mut self, l_reg: u64, v: u64) {
        self.port_counters.insert(l_reg, v & ((1 << 40) - 1));
    }

    /// Counts a frame in the port counters and, when a LAN VSI exists, in its VSI counters
    /// (every LAN queue of the model belongs to the PF's VSI).
    fn count_frame(&mut self, frame: &[u8], rx: bool) {
        let dst = MacAddr::dst_of(frame).unwrap_or(MacAddr::ZERO);
        let kind = if dst.is_broadcast() {
            3
        } else if dst.is_multicast() {
            2
        } else {
            1
        };
        let port = if rx {
            [GLPRT_GORCL, GLPRT_UPRCL, GLPRT_MPRCL, GLPRT_BPRCL]
        } else {
            [GLPRT_GOTCL, GLPRT_UPTCL, GLPRT_MPTCL, GLPRT_BPTCL]
        };
        // Port byte counters include the 4-byte CRC the wire carries.
        self.count(port[0], frame.len() as u64 + 4);
        self.count(port[kind], 1);
        if let Some(vsi) = self.lan_vsi {
            let vsi_regs = if rx {
                [GLV_GORCL, GLV_UPRCL, GLV_MPRCL, GLV_BPRCL]
            } else {
                [GLV_GOTCL, GLV_UPTCL, GLV_MPTCL, GLV_BPTCL]
            };
            let at = GLV_STRIDE * vsi as u64;
            self.count(vsi_regs[0] + at, frame.len() as u64);
            self.count(vsi_regs[kind] + at, 1);
        }
    }

    /// A frame for the VSI found no free descriptor (GLV_RDPC, 32 bits).
    fn count_rx_discard(&mut self) {
        if let Some(vsi) = self.lan_vsi {
            let c = self
                .port_counters
                .entry(GLV_RDPC + 4 * vsi as u64)
                .or_default();
            *c = (*c + 1) & 0xFFFF_FFFF;
        }
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

    /// `E810Model::new(cfg).into_shared()`.
    pub fn shared(cfg: ModelConfig) -> std::sync::Arc<parking_lot::Mutex<E810Model>> {
        Self::new(cfg).into_shared()
    }

    /// Fires RX queue `q`'s vector if its cause is enabled and the vector is armed; the
    /// vector then stays masked until software re-arms it (GLINT_DYN_CTL.INTENA). With an
    /// ITR interval on the queue's ITR index, an interrupt due sooner than that after the
    /// vector's last one is held and fires when the interval ends (interrupt moderation).
    fn rx_interrupt(&mut self, q: usize) {
        let Some(&ctl) = self.rq_ctl.get(&q) else {
            return;
        };
        if ctl & (1 << 30) == 0 {
            return;
        }
        let v = (ctl & 0x7FF) as usize;
        if !self.armed.contains(&v) || self.held.contains(&v) {
            return;
        }
        let itr_index = (ctl >> 11 & 3) as u8; // 3 = no ITR
        let interval = std::time::Duration::from_micros(
            self.itr_us.get(&(itr_index, v)).copied().unwrap_or(0),
        );
        let due = self.last_fire.get(&v).map(|t| *t + interval);
        if let (Some(due), Some(me)) = (due, self.self_ref.clone()) {
            let now = std::time::Instant::now();
            if due > now {
                self.held.insert(v);
                self.throttled += 1;
                std::thread::spawn(move || {
                    std::thread::sleep(due - now);
                    if let Some(m) = me.upgrade() {
                        let mut m = m.lock();
                        m.held.remove(&v);
                        m.fire(v);
                    }
                });
                return;
            }
        }
        self.fire(v);
    }

    /// Signals vector `v` if it is (still) armed, and disarms it.
    fn fire(&mut self, v: usize) {
        if !self.armed.remove(&v) {
            return;
        }
        self.last_fire.insert(v, std::time::Instant::now());
        if let Some(Some(fd)) = self.msix.get(v) {
            use std::os::fd::AsRawFd;
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 bytes from a local buffer to an eventfd we own.
            unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
            self.interrupts += 1;
        }
    }

    /// Root port (layer 0), TC0 (layer 1) and the software entry point (layer 2).
    fn default_topology() -> HashMap<u32, (u32, u32)> {
        HashMap::from([(0x100, (0, 0)), (0x101, (0x100, 1)), (0x102, (0x101, 2))])
    }

    /// Frames transmitted since the last call (what left the port).
    pub fn take_outbox(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }

    /// Flow Director capacity of the model.
    pub const FDIR_CAPACITY: usize = 1024;

    /// Applies a filter programming command; returns the status qword 1 [LTR
    /// ICE_FXD_FLTR_WB_QW1_*]: DD, PROG_ID (0 add, 1 del), FAIL, FAIL_PROF.
    fn fdir_program(&mut self, qw0: u64, qw1: u64, template: &[u8]) -> u64 {
        let remove = qw1 >> 4 & 1 == 1;
        let mut st = 1 | (remove as u64) << 1;
        // The profile comes from the training packet (packet type, PTG, the control VSI's
        // group, TCAM), not from the descriptor's PROF field.
        let prof = self
            .ctrl_vsi
            .and_then(|vsi| self.fd.profile(e810_ptype(template), vsi));
        let Some(prof) = prof else {
            return st | 1 << 5; // FAIL_PROF
        };
        let key = self.fd.key(prof, template, true);
        if remove {
            if self.fdir.remove(&(prof, key)).is_none() {
                st |= 1 << 4;
            }
        } else if self.fdir.len() >= Self::FDIR_CAPACITY
            && !self.fdir.contains_key(&(prof, key.clone()))
        {
            st |= 1 << 4;
        } else {
            let queue = (qw0 & 0x7FF) as u16;
            let drop = qw0 >> 40 & 1 == 1;
            self.fdir
                .insert((prof, key), (queue, drop, (qw1 >> 32) as u32));
        }
        st
    }

    /// Writes a programming status into RX queue `q`'s next descriptor (qword 1).
    fn post_status(&mut self, q: usize, st: u64) {
        let Some(s) = self.rxq.get(q).filter(|s| s.enabled).cloned() else {
            return;
        };
        if s.head == s.tail % s.len.max(1) {
            return;
        }
        let at = s.base + s.head as u64 * 32;
        self.dma.write(at + 8, &st.to_le_bytes());
        self.rxq[q].head = (s.head + 1) % s.len;
    }

    /// A frame from the wire: Flow Director filters first, then destination MAC (switch
    /// rules), else queue 0.
    pub fn receive(&mut self, frame: &[u8]) -> bool {
        let prof = self
            .lan_vsi
            .and_then(|vsi| self.fd.profile(e810_ptype(frame), vsi));
        if let Some(prof) = prof {
            let key = self.fd.key(prof, frame, false);
            if let Some(&(q, drop, fdid)) = self.fdir.get(&(prof, key)) {
                if drop {
                    self.fdir_drops += 1;
                    return false;
                }
                return self.receive_with(q as usize, frame, fdid);
            }
        }
        let dst = MacAddr::dst_of(frame);
        let q = self
            .mac_to_queue
            .iter()
            .find(|(m, _)| Some(*m) == dst)
            .map_or(0, |r| r.1 as usize);
        self.receive_on(q, frame)
    }

    /// Processes TX descriptors of queue `q` up to the doorbell `tail` (\[LTR\] `ice_tx_desc`:
    /// qw0 address, qw1 DTYPE 3:0, CMD 15:4 (EOP 0x1, RS 0x2), BUF_SZ 47:34; DTYPE 1 is a
    /// context descriptor). RS descriptors are written back with DTYPE 0xF (DESC_DONE).
    fn tx_doorbell(&mut self, q: usize, tail: u32) {
        let Some(st) = self.txq.get(q).filter(|s| s.enabled).cloned() else {
            return;
        };
        let tail = tail % st.len.max(1);
        let mut head = st.head;
        let mut frame: Vec<u8> = Vec::new();
        let mut pending_fd: Option<(u64, u64)> = None;
        // MSS from a TSO context descriptor, applied to the next packet.
        let mut tso_mss: Option<usize> = None;
        let mut guard = 0;
        while head != tail && guard < st.len {
            guard += 1;
            let at = st.base + head as u64 * 16;
            let mut d = [0u8; 16];
            if !self.dma.read(at, &mut d) {
                self.stats.tx_errors += 1;
                break;
            }
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
            let qw1 = u64::from_le_bytes(d[8..16].try_into().unwrap());
            let cmd = (qw1 >> 4) & 0xFFF;
            match qw1 & 0xF {
                0 => {
                    let len = ((qw1 >> 34) & 0x3FFF) as usize;
                    let start = frame.len();
                    frame.resize(start + len, 0);
                    if !self.dma.read(addr, &mut frame[start..]) {
                        self.stats.tx_errors += 1;
                        frame.clear();
                    } else if cmd & 0x010 != 0 {
                        // DUMMY: a Flow Director template, not a frame for the wire.
                        let t = std::mem::take(&mut frame);
                        if let Some((qw0, fqw1)) = pending_fd.take() {
                            let status = self.fdir_program(qw0, fqw1, &t);
                            self.post_status(q, status);
                        }
                    } else if cmd & 0x1 != 0 {
                        let mut f = std::mem::take(&mut frame);
                        let o = offload::TxOffload::from_qw1(qw1);
                        let out = match tso_mss.take() {
                            Some(mss) => offload::tso_segment(&f, &o, mss),
                            None => {
                                if o.any() {
                                    offload::apply_checksums(&mut f, &o);
                                }
                                vec![f]
                            }
                        };
                        for f in out {
                            self.stats.tx_packets += 1;
                            self.stats.tx_bytes += f.len() as u64;
                            self.count_frame(&f, false);
                            self.outbox.push(f);
                        }
                    }
                }
                // Context descriptor: CMD TSO (bit 4 of qw1) with MSS in bits 63:50.
                1 => {
                    if (qw1 >> 4) & 0x1 != 0 {
                        tso_mss = Some((qw1 >> 50 & 0x3FFF) as usize);
                    }
                }
                8 => pending_fd = Some((u64::from_le_bytes(d[0..8].try_into().unwrap()), qw1)),
                _ => self.stats.tx_errors += 1,
            }
            if qw1 & 0xF == 0 && cmd & 0x2 != 0 {
                self.dma.write(at + 8, &0xFu64.to_le_bytes());
            }
            head = (head + 1) % st.len;
        }
        self.txq[q].head = head;
    }

    /// The RX queue a register offset in `[base, base + 4 * num_queues)` belongs to.
    fn queue_of(&self, off: u64, base: u64) -> Option<usize> {
        let q = off.checked_sub(base)? / 4;
        (off.is_multiple_of(4) && q < self.cfg.num_queues as u64).then_some(q as usize)
    }

    fn rxq_mut(&mut self, q: usize) -> &mut RxQueueState {
        if self.rxq.len() <= q {
            self.rxq.resize(q + 1, RxQueueState::default());
        }
        &mut self.rxq[q]
    }

    /// QRX_CONTEXT dword `i` of queue `q`, if `off` is one.
    fn rx_ctx_reg(&self, off: u64) -> Option<(usize, usize)> {
        let rel = off.checked_sub(QRX_CONTEXT_BASE)?;
        let i = rel / QRX_CONTEXT_DWORD_STRIDE;
        if i >= 8 {
            return None;
        }
        let q = self.queue_of(
            QRX_CONTEXT_BASE + rel % QRX_CONTEXT_DWORD_STRIDE,
            QRX_CONTEXT_BASE,
        )?;
        Some((i as usize, q))
    }

    fn rx_enable(&mut self, q: usize, on: bool) {
        let st = self.rxq_mut(q);
        if !on {
            st.enabled = false;
            return;
        }
        let mut c = [0u8; 32];
        for (i, dw) in st.ctx.iter().enumerate() {
            c[i * 4..i * 4 + 4].copy_from_slice(&dw.to_le_bytes());
        }
        let f = |(l, w): (usize, usize)| crate::bits::get_bits(&c, l, w);
        st.base = f(RLAN_BASE) << 7;
        st.len = f(RLAN_QLEN) as u32;
        st.dbuf = (f(RLAN_DBUF) as usize) << 7;
        st.rxmax = f(RLAN_RXMAX) as usize;
        st.head = f(RLAN_HEAD) as u32;
        // Only 32-byte descriptors are modelled (dsize 1); a queue asking for 16 stays off.
        st.enabled = st.len > 0 && f(RLAN_DSIZE) == 1;
    }

    /// A frame arrives from the wire for PF queue `q` (after steering).
    pub fn receive_on(&mut self, q: usize, frame: &[u8]) -> bool {
        self.receive_with(q, frame, u32::MAX)
    }

    /// Like `receive_on`, with the flow id (FDID) of the filter that matched written back
    /// (0xFFFFFFFF: none).
    fn receive_with(&mut self, q: usize, frame: &[u8], flow_id: u32) -> bool {
        let Some(st) = self.rxq.get(q).filter(|s| s.enabled).cloned() else {
            self.stats.rx_dropped += 1;
            return false;
        };
        // RXMAX bounds the frame; it may span up to RXMAX / DBUF buffers, one descriptor each
        // (EOF on the last) [LTR `ice_rlan_ctx`, flex NIC write-back].
        if frame.is_empty() || frame.len() > st.rxmax || st.dbuf == 0 {
            self.stats.rx_oversize += 1;
            return false;
        }
        let pieces: Vec<&[u8]> = frame.chunks(st.dbuf).collect();
        let free = (st.tail % st.len + st.len - st.head) % st.len;
        if (free as usize) < pieces.len().max(1) {
            self.stats.rx_dropped += 1;
            self.count_rx_discard();
            return false;
        }
        let mut head = st.head;
        for (k, piece) in pieces.iter().enumerate() {
            let at = st.base + head as u64 * 32;
            let mut d = [0u8; 32];
            if !self.dma.read(at, &mut d) {
                self.stats.rx_dropped += 1;
                return false;
            }
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
            if !self.dma.write(addr, piece) {
                self.stats.rx_dropped += 1;
                return false;
            }
            let mut wb = if k + 1 == pieces.len() {
                let mut wb = rx_writeback(frame, st.rxdid);
                wb[24..28].copy_from_slice(&flow_id.to_le_bytes()); // flow_id [LTR flex NIC @24]
                wb
            } else {
                let mut wb = [0u8; 32];
                wb[0] = st.rxdid;
                wb[8] = 1; // DD without EOF: more of the frame follows
                wb
            };
            wb[4..6].copy_from_slice(&(piece.len() as u16 & 0x3FFF).to_le_bytes());
            // Status (with DD) last: write the rest, then the status word.
            self.dma.write(at + 10, &wb[10..]);
            self.dma.write(at, &wb[..8]);
            self.dma.write(at + 8, &wb[8..10]);
            head = (head + 1) % st.len;
        }
        self.rxq[q].head = head;
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += frame.len() as u64;
        self.count_frame(frame, true);
        self.rx_interrupt(q);
        true
    }

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
        for q in &mut self.rxq {
            q.enabled = false;
        }
        for q in &mut self.txq {
            q.enabled = false;
        }
        self.pf_reset();
        self.sched = Self::default_topology();
        // Filters and programmed profiles are gone; the package's XLT1 stays loaded.
        self.fdir.clear();
        self.fd.clear_programming();
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
        self.ctrl_vsi = None;
        self.change_lock_held = false;
        self.link_up = false;
        self.lse_enabled = false;
    }

    pub fn mmio_read(&mut self, off: u64) -> u32 {
        match off {
            PF_FUNC_RID => self.cfg.pf_id as u32,
            // Reset completes at once: PFSWR reads back 0.
            PFGEN_CTRL => 0,
            GLGEN_RSTAT => self.faults.in_global_reset as u32,
            GLNVM_ULD => {
                if self.faults.in_global_reset {
                    0
                } else {
                    0x33B
                }
            }
            GLNVM_FLA => 1 << 6,
            // GLQF_FD_SIZE: 512 guaranteed filters and 512 best effort (FDIR_CAPACITY).
            0x0046_0010 => 512 << 16 | 512,
            GL_MNG_FWSM => 0,
            PRTMAC_PAUSE_QUANTA_8 => 0xFFFF,
            PRTMAC_PAUSE_REFRESH_8 => 0x7FFF,
            PFLAN_RX_QALLOC | PFLAN_TX_QALLOC => 1 << 31, // FIRSTQ 0, VALID
            ATQBAL => self.atq.bal,
            ATQBAH => self.atq.bah,
            ATQLEN => self.atq.len,
            ATQH => self.atq.head,
            ATQT => self.atq.tail,
            ARQBAL => self.arq.bal,
            ARQBAH => self.arq.bah,
            ARQLEN => self.arq.len,
            ARQH => self.arq.head,
            ARQT => self.arq.tail,
            _ => {
                if let Some((i, q)) = self.rx_ctx_reg(off) {
                    return self.rxq.get(q).map_or(0, |s| s.ctx[i]);
                }
                if let Some(q) = self.queue_of(off, QRX_CTRL_BASE) {
                    // QENA_STAT (b2) mirrors the request (b0) at once.
                    return self
                        .rxq
                        .get(q)
                        .map_or(0, |s| if s.enabled { 0b101 } else { 0 });
                }
                if let Some(q) = self.queue_of(off, QRX_TAIL_BASE) {
                    return self.rxq.get(q).map_or(0, |s| s.tail);
                }
                if let Some(q) = self.queue_of(off, QTX_COMM_HEAD_BASE) {
                    return self.txq.get(q).map_or(0, |s| s.head);
                }
                if let Some(&v) = self.port_counters.get(&off) {
                    return v as u32;
                }
                if let Some(&v) = off.checked_sub(4).and_then(|l| self.port_counters.get(&l)) {
                    return (v >> 32) as u32 & 0xFF;
                }
                self.plain.get(&off).copied().unwrap_or(0)
            }
        }
    }

    pub fn mmio_write(&mut self, off: u64, v: u32) {
        match off {
            PFGEN_CTRL => {
                if v & 1 != 0 {
                    self.pf_reset();
                }
            }
            ATQBAL => self.atq.bal = v & !0x3F,
            ATQBAH => self.atq.bah = v,
            ATQLEN => self.atq.len = v,
            ATQH => self.atq.head = v & 0x3FF,
            ATQT => {
                self.atq.tail = v & 0x3FF;
                if !self.faults.stop_answering {
                    self.process_atq();
                }
            }
            ARQBAL => self.arq.bal = v & !0x3F,
            ARQBAH => self.arq.bah = v,
            ARQLEN => self.arq.len = v,
            ARQH => self.arq.head = v & 0x3FF,
            ARQT => self.arq.tail = v & 0x3FF,
            _ => {
                if let Some((i, q)) = self.rx_ctx_reg(off) {
                    self.rxq_mut(q).ctx[i] = v;
                } else if let Some(q) = self.queue_of(off, QRX_CTRL_BASE) {
                    self.rx_enable(q, v & 1 != 0);
                } else if let Some(q) = self.queue_of(off, QRX_TAIL_BASE) {
                    self.rxq_mut(q).tail = v & 0x1FFF;
                } else if (GLINT_ITR_BASE..GLINT_ITR_BASE + 3 * GLINT_ITR_INDEX_STRIDE)
                    .contains(&off)
                {
                    let rel = off - GLINT_ITR_BASE;
                    let key = (
                        (rel / GLINT_ITR_INDEX_STRIDE) as u8,
                        (rel % GLINT_ITR_INDEX_STRIDE / 4) as usize,
                    );
                    self.itr_us.insert(key, (v & 0xFFF) as u64 * ITR_GRAN_US);
                } else if let Some(q) = self.queue_of(off, QINT_RQCTL_BASE) {
                    self.rq_ctl.insert(q, v);
                } else if let Some(vec) = self.queue_of(off, GLINT_DYN_CTL_BASE) {
                    if v & 1 != 0 {
                        self.armed.insert(vec);
                    } else {
                        self.armed.remove(&vec);
                    }
                } else if let Some(q) = self.queue_of(off, QTX_COMM_DBELL_BASE) {
                    self.tx_doorbell(q, v & 0x1FFF);
                } else if let Some(q) = self.queue_of(off, QRXFLXP_CNTXT_BASE) {
                    self.rxq_mut(q).rxdid = (v & 0x3F) as u8;
                } else {
                    // FD profile registers also read back what was written.
                    self.fd.reg_write(off, v);
                    self.plain.insert(off, v);
                }
            }
        }
    }

    /// Completes every descriptor from head to tail.
    fn process_atq(&mut self) {
        if !self.atq.enabled() || self.atq.entries() == 0 {
            return;
        }
        let n = self.atq.entries();
        let mut guard = 0;
        while self.atq.head != self.atq.tail && self.atq.tail < n && guard < n {
            guard += 1;
            let at = self.atq.base() + self.atq.head as u64 * 32;
            let mut d = [0u8; 32];
            if !self.dma.read(at, &mut d) {
                // A ring outside the DMA map: real hardware would raise a fault; stop here.
                log::warn!("model: ATQ descriptor at {at:#x} is not DMA-mapped");
                return;
            }
            self.complete(at, &mut d);
            self.atq.head = (self.atq.head + 1) % n;
        }
    }

    fn complete(&mut self, at: u64, d: &mut [u8; 32]) {
        let le16 = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let flags = le16(d, 0);
        let opcode = le16(d, 2);
        let datalen = le16(d, 4) as usize;
        let addr = (u32::from_le_bytes(d[24..28].try_into().unwrap()) as u64) << 32
            | u32::from_le_bytes(d[28..32].try_into().unwrap()) as u64;
        *self.commands.entry(opcode).or_default() += 1;
        let has_buf = flags & FLAG_BUF != 0;
        let mut input = Vec::new();
        if has_buf && flags & FLAG_RD != 0 {
            input = vec![0u8; datalen];
            if !self.dma.read(addr, &mut input) {
                input.clear();
            }
        }
        let mut params = [0u8; 16];
        params.copy_from_slice(&d[16..32]);
        let mut reply = match self.faults.fail_all {
            Some(rc) => Reply::err(rc),
            None => self.command(opcode, &params, &input, has_buf, datalen),
        };
        if !reply.data.is_empty() && has_buf && (flags & FLAG_RD == 0 || reply.write_back) {
            if reply.data.len() > datalen {
                // Too small a buffer: ENOMEM with the length needed [VMX].
                reply = Reply {
                    datalen: Some(reply.data.len() as u16),
                    ..Reply::err(RC_ENOMEM)
                };
            } else {
                let mut out = vec![0u8; datalen];
                out[..reply.data.len()].copy_from_slice(&reply.data);
                self.dma.write(addr, &out);
            }
        }
        let mut new_flags = (flags & !0x1FF) | FLAG_DD | FLAG_CMP;
        if reply.retval != 0 {
            new_flags |= FLAG_ERR;
        }
        let op = self.faults.wrong_opcode.unwrap_or(opcode);
        d[0..2].copy_from_slice(&new_flags.to_le_bytes());
        d[2..4].copy_from_slice(&op.to_le_bytes());
        let dl = reply.datalen.unwrap_or(if reply.data.is_empty() {
            datalen as u16
        } else {
            reply.data.len() as u16
        });
        d[4..6].copy_from_slice(&dl.to_le_bytes());
        d[6..8].copy_from_slice(&reply.retval.to_le_bytes());
        if let Some(p) = reply.params {
            // Keep the buffer address of indirect commands.
            d[16..24].copy_from_slice(&p[..8]);
            if !has_buf {
                d[24..32].copy_from_slice(&p[8..]);
            }
        }
        self.dma.write(at, d);
    }

    fn command(
        &mut self,
        opcode: u16,
        p: &[u8; 16],
        input: &[u8],
        has_buf: bool,
        buf_len: usize,
    ) -> Reply {
        let needs_buf = |r: Reply| if has_buf { r } else { Reply::err(RC_EINVAL) };
        match opcode {
            // get_ver: fw 1.3.0 (branch 0), API 1.7.9 (branch 0).
            0x0001 => {
                let mut q = [0u8; 16];
                q[0..4].copy_from_slice(&0x0001_0203u32.to_le_bytes()); // rom_ver
                q[4..8].copy_from_slice(&4242u32.to_le_bytes()); // fw_build
                q[8..12].copy_from_slice(&[0, 1, 3, 0]);
                q[12..16].copy_from_slice(&[0, self.faults.api_major.unwrap_or(1), 7, 9]);
                Reply {
                    params: Some(q),
                    ..Reply::ok()
                }
            }
            // q_shutdown, clear_pf_cfg: accepted.
            0x0003 | 0x02A4 => Reply::ok(),
            // set_mac_cfg: remember what the driver asked for (max frame @0, pause timers).
            0x0603 => {
                self.mac_cfg = [0, 4, 6].map(|o| u16::from_le_bytes([p[o], p[o + 1]]));
                Reply::ok()
            }
            0x0110 => {
                if p[0] == 2 {
                    Reply::ok()
                } else {
                    Reply::err(RC_EINVAL)
                }
            }
            // list dev/func caps: 32-byte elements, count u32 at params @4.
            0x000A | 0x000B => {
                let caps: [(u16, u32, u32); 6] = [
                    (0x0005, 1, 0),                   // VALID_FUNCTIONS
                    (0x0017, 768, 0),                 // VSI
                    (0x0041, self.cfg.num_queues, 0), // RXQS (phys_id = first queue)
                    (0x0042, self.cfg.num_queues, 0), // TXQS
                    (0x0043, self.cfg.num_msix, 0),   // MSIX
                    (0x0047, 9702, 0),                // MAX_MTU
                ];
                let mut data = Vec::new();
                for (id, number, phys) in caps {
                    let mut e = [0u8; 32];
                    e[0..2].copy_from_slice(&id.to_le_bytes());
                    e[4..8].copy_from_slice(&number.to_le_bytes());
                    e[12..16].copy_from_slice(&phys.to_le_bytes());
                    data.extend_from_slice(&e);
                }
                let mut q = *p;
                q[4..8].copy_from_slice(&(caps.len() as u32).to_le_bytes());
                needs_buf(Reply {
                    params: Some(q),
                    data,
                    ..Reply::ok()
                })
            }
            // manage_mac_read: flags LAN_ADDR_VALID, num_addr 1, one LAN entry.
            0x0107 => {
                let mut q = *p;
                q[0..2].copy_from_slice(&0x10u16.to_le_bytes());
                q[4] = 1;
                let mut e = vec![0u8; 8];
                e[0] = 0; // lport
                e[1] = 0; // LAN
                e[2..8].copy_from_slice(&self.cfg.mac.0);
                needs_buf(Reply {
                    params: Some(q),
                    data: e,
                    ..Reply::ok()
                })
            }
            // get_sw_cfg: one physical port element (type 0, number 0) on switch 0x1.
            0x0200 => {
                let mut q = *p;
                q[2..4].copy_from_slice(&0u16.to_le_bytes()); // no continuation
                q[4..6].copy_from_slice(&1u16.to_le_bytes());
                let data = vec![0x00, 0x00, 0x01, 0x00, self.cfg.pf_id, 0x00];
                needs_buf(Reply {
                    params: Some(q),
                    data,
                    ..Reply::ok()
                })
            }
            // restart_an: cmd_flags @2, bit 2 ENABLE brings the link up, clear takes it down.
            0x0605 => {
                if p[0] != 0 {
                    return Reply::err(RC_EINVAL);
                }
                let up = p[2] & 0x4 != 0;
                if up != self.link_up {
                    self.link_up = up;
                    if self.lse_enabled {
                        self.post_link_event();
                    }
                }
                Reply::ok()
            }
            // get_link_status: cmd_flags @2 bits 1:0 = 3 enables LSE, 2 disables.
            0x0607 => {
                match u16::from_le_bytes([p[2], p[3]]) & 0x3 {
                    3 => self.lse_enabled = true,
                    2 => self.lse_enabled = false,
                    _ => {}
                }
                if buf_len < 32 {
                    return Reply {
                        datalen: Some(32),
                        ..Reply::err(RC_ENOMEM)
                    };
                }
                needs_buf(Reply {
                    data: self.link_data(),
                    ..Reply::ok()
                })
            }
            0x0613 => Reply::ok(),
            // add_vsi: returns the HW VSI number @0, used @4, free @6.
            0x0210 => {
                if input.len() < 128 {
                    return Reply::err(RC_EINVAL);
                }
                let v = self.next_vsi;
                self.next_vsi += 1;
                // vsi_flags @6, type in bits 1:0: 2 = PF [AQC ICE_AQ_VSI_TYPE_PF].
                match u16::from_le_bytes([p[6], p[7]]) & 3 {
                    2 => self.lan_vsi = Some(v),
                    3 => self.ctrl_vsi = Some(v),
                    _ => {}
                }
                let mut q = *p;
                q[0..2].copy_from_slice(&v.to_le_bytes());
                q[4..6].copy_from_slice(&1u16.to_le_bytes());
                q[6..8].copy_from_slice(&767u16.to_le_bytes());
                Reply {
                    params: Some(q),
                    ..Reply::ok()
                }
            }
            // query_sched_res: generic props (32 B: phys_levels @0, logical_levels @2), then
            // 9 layer props of 32 B (max_sibl_grp_sz @10).
            0x0412 => {
                let mut d = vec![0u8; 32 + 9 * 32];
                d[0..2].copy_from_slice(&(SCHED_LAYERS as u16).to_le_bytes());
                d[2..4].copy_from_slice(&(SCHED_LAYERS as u16).to_le_bytes());
                for l in 0..9 {
                    let o = 32 + l * 32;
                    d[o] = l as u8;
                    d[o + 10..o + 12].copy_from_slice(&8u16.to_le_bytes());
                }
                needs_buf(Reply {
                    data: d,
                    ..Reply::ok()
                })
            }
            // get_dflt_topo: num_branches @1; one 240-byte branch {parent_teid, num_elems,
            // rsvd, 9 x {parent_teid, node_teid, data[16] (elem_type @0)}}.
            0x0400 => {
                let mut q = *p;
                q[1] = 1;
                let mut d = vec![0u8; 240];
                d[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
                let chain = [(0x100u32, 0u32, 1u8), (0x101, 0x100, 2), (0x102, 0x101, 4)];
                let present: Vec<_> = chain
                    .iter()
                    .filter(|c| self.sched.contains_key(&c.0))
                    .collect();
                d[4..6].copy_from_slice(&(present.len() as u16).to_le_bytes());
                for (i, (teid, parent, kind)) in present.into_iter().enumerate() {
                    let o = 8 + i * 24;
                    d[o..o + 4].copy_from_slice(&parent.to_le_bytes());
                    d[o + 4..o + 8].copy_from_slice(&teid.to_le_bytes());
                    d[o + 8] = *kind;
                    d[o + 9] = 0x7;
                }
                needs_buf(Reply {
                    params: Some(q),
                    data: d,
                    ..Reply::ok()
                })
            }
            // delete_sched_elems: {parent_teid, num_elems u16, rsvd, teid[]}.
            0x040F => {
                if input.len() < 8 {
                    return Reply::err(RC_EINVAL);
                }
                let n = u16::from_le_bytes([input[4], input[5]]) as usize;
                if input.len() < 8 + 4 * n {
                    return Reply::err(RC_EINVAL);
                }
                for i in 0..n {
                    let t = u32::from_le_bytes(input[8 + 4 * i..12 + 4 * i].try_into().unwrap());
                    if self.sched.values().any(|&(parent, _)| parent == t) {
                        return Reply::err(12); // EBUSY: still has children
                    }
                    if self.sched.remove(&t).is_none() {
                        return Reply::err(2); // ENOENT
                    }
                }
                Reply::ok()
            }
            // add_sched_elems: groups of {hdr{parent_teid, num_elems, rsvd}, elems[24 B]};
            // the firmware writes each new node_teid back.
            0x0401 => self.add_sched_elems(p, input),
            // add_txqs: groups of {parent_teid, num_txqs u8, rsvd[3], queues[48 B] {txq_id,
            // rsvd, q_teid (written back), txq_ctx[22], rsvd, sched info[16]}}.
            0x0C30 => self.add_txqs(p, input),
            // req_res: res_id @0 (4 = global config lock), access @2; status @12:
            // 2 (done) when a package is already active.
            // Resource 3 is the change lock update_package needs.
            0x0008 if u16::from_le_bytes([p[0], p[1]]) == 3 => {
                if self.change_lock_held {
                    return Reply::err(RC_EBUSY);
                }
                self.change_lock_held = true;
                Reply::ok()
            }
            0x0009 if u16::from_le_bytes([p[0], p[1]]) == 3 => {
                self.change_lock_held = false;
                Reply::ok()
            }
            0x0008 => {
                if u16::from_le_bytes([p[0], p[1]]) != 4 {
                    return Reply::err(RC_EINVAL);
                }
                let mut q = *p;
                if self.pkg_loaded {
                    q[12..14].copy_from_slice(&2u16.to_le_bytes());
                } else if self.cfg_lock_held {
                    return Reply::err(12); // EBUSY
                } else {
                    self.cfg_lock_held = true;
                    self.pkg_bufs = 0;
                    q[12..14].copy_from_slice(&0u16.to_le_bytes());
                }
                Reply {
                    params: Some(q),
                    ..Reply::ok()
                }
            }
            0x0009 => {
                self.cfg_lock_held = false;
                Reply::ok()
            }
            // download_pkg: 4 KiB buffers (RD) under the config lock; LAST_BUF (byte 0 bit 0)
            // activates the package.
            0x0C40 => {
                if !self.cfg_lock_held || input.len() != 4096 {
                    return Reply::err(RC_EINVAL);
                }
                self.pkg_bufs += 1;
                self.fd.load_package_buffer(input);
                if p[0] & 1 != 0 {
                    self.pkg_loaded = true;
                }
                Reply::ok()
            }
            // alloc_res / free_res: num_entries @0 (one group); buffer {res_type, num_elems,
            // elems[]}; alloc writes the index it handed out into elems[0].
            0x0208 | 0x0209 => {
                let (Some(ty), Some(n)) = (
                    input.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]])),
                    input
                        .get(2..4)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
                ) else {
                    return Reply::err(RC_EINVAL);
                };
                if u16::from_le_bytes([p[0], p[1]]) != 1 || input.len() < 4 + 2 * n {
                    return Reply::err(RC_EINVAL);
                }
                if opcode == 0x0209 {
                    let all = (0..n).all(|k| {
                        let i = u16::from_le_bytes([input[4 + 2 * k], input[5 + 2 * k]]);
                        self.fd.free(ty, i)
                    });
                    return if all {
                        Reply::ok()
                    } else {
                        Reply::err(RC_ENOENT)
                    };
                }
                if n != 1 {
                    return Reply::err(RC_EINVAL);
                }
                let Some(idx) = self.fd.alloc(ty) else {
                    return Reply::err(RC_ENOSPC);
                };
                let mut data = input.to_vec();
                data[4..6].copy_from_slice(&idx.to_le_bytes());
                Reply {
                    write_back: true,
                    data,
                    ..Reply::ok()
                }
            }
            // update_package: one buffer (LAST_BUF) under the change lock.
            0x0C42 => {
                if !self.change_lock_held || !has_buf {
                    return Reply::err(RC_EINVAL);
                }
                if self.faults.refuse_profile_updates {
                    return Reply::err(RC_EIO);
                }
                match self.fd.update(input) {
                    Ok(()) => Reply::ok(),
                    Err(_) => Reply::err(RC_EINVAL),
                }
            }
            // dis_txqs: groups {parent_teid, num_qs u8, rsvd u8, q_id u16[]}; num_entries @1.
            0x0C31 => {
                let groups = p[1] as usize;
                let mut o = 0;
                for _ in 0..groups {
                    let Some(h) = input.get(o..o + 6) else {
                        return Reply::err(RC_EINVAL);
                    };
                    let n = h[4] as usize;
                    let ids = o + 6;
                    for k in 0..n {
                        let Some(b) = input.get(ids + 2 * k..ids + 2 * k + 2) else {
                            return Reply::err(RC_EINVAL);
                        };
                        let q = u16::from_le_bytes([b[0], b[1]]) as usize;
                        match self.txq.get_mut(q) {
                            Some(s) if s.enabled => s.enabled = false,
                            _ => return Reply::err(2), // ENOENT: not an enabled queue
                        }
                    }
                    // Groups are padded to an even number of queue ids.
                    o = ids + 2 * (n + n % 2);
                }
                Reply::ok()
            }
            _ => Reply::err(RC_ENOSYS),
        }
    }

    fn add_sched_elems(&mut self, p: &[u8; 16], input: &[u8]) -> Reply {
        let groups = u16::from_le_bytes([p[0], p[1]]) as usize;
        let mut out = input.to_vec();
        let mut o = 0usize;
        for _ in 0..groups {
            let Some(hdr) = input.get(o..o + 8) else {
                return Reply::err(RC_EINVAL);
            };
            let n = u16::from_le_bytes([hdr[4], hdr[5]]) as usize;
            o += 8;
            for _ in 0..n {
                let Some(e) = input.get(o..o + 24) else {
                    return Reply::err(RC_EINVAL);
                };
                let parent = u32::from_le_bytes(e[0..4].try_into().unwrap());
                let Some(&(_, layer)) = self.sched.get(&parent) else {
                    return Reply::err(2); // ENOENT
                };
                if layer + 2 >= SCHED_LAYERS {
                    return Reply::err(RC_EINVAL); // only queues go below the queue groups
                }
                let teid = self.next_teid;
                self.next_teid += 1;
                self.sched.insert(teid, (parent, layer + 1));
                out[o + 4..o + 8].copy_from_slice(&teid.to_le_bytes());
                o += 24;
            }
        }
        Reply {
            write_back: true,
            data: out,
            ..Reply::ok()
        }
    }

    fn add_txqs(&mut self, p: &[u8; 16], input: &[u8]) -> Reply {
        let groups = p[0] as usize;
        let mut out = input.to_vec();
        let mut o = 0usize;
        for _ in 0..groups {
            let Some(hdr) = input.get(o..o + 8) else {
                return Reply::err(RC_EINVAL);
            };
            let parent = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
            match self.sched.get(&parent) {
                Some(&(_, layer)) if layer == SCHED_LAYERS - 2 => {}
                _ => return Reply::err(RC_EINVAL), // not a queue-group node
            }
            let n = hdr[4] as usize;
            o += 8;
            for _ in 0..n {
                let Some(e) = input.get(o..o + 48) else {
                    return Reply::err(RC_EINVAL);
                };
                let q = u16::from_le_bytes([e[0], e[1]]) as usize;
                if q >= self.cfg.num_queues as usize {
                    return Reply::err(RC_EINVAL);
                }
                let ctx = &e[8..30];
                let f = |(l, w): (usize, usize)| crate::bits::get_bits(ctx, l, w);
                let len = f(TLAN_QLEN) as u32;
                if len == 0 {
                    return Reply::err(RC_EINVAL);
                }
                if self.txq.len() <= q {
                    self.txq.resize(q + 1, TxQueueState::default());
                }
                self.txq[q] = TxQueueState {
                    enabled: true,
                    base: f(TLAN_BASE) << 7,
                    len,
                    head: 0,
                };
                let teid = self.next_teid;
                self.next_teid += 1;
                self.sched.insert(teid, (parent, SCHED_LAYERS - 1));
                out[o + 4..o + 8].copy_from_slice(&teid.to_le_bytes());
                o += 48;
            }
        }
        Reply {
            write_back: true,
            data: out,
            ..Reply::ok()
        }
    }

    /// get_link_status data (V1, 32 bytes): link_info @2 (UP b0, MEDIA_AVAILABLE b6),
    /// max_frame_size @6, link_speed @10 (100G = b10).
    fn link_data(&self) -> Vec<u8> {
        let mut d = vec![0u8; 32];
        d[2] = 0x40 | self.link_up as u8;
        d[6..8].copy_from_slice(&9728u16.to_le_bytes());
        if self.link_up {
            d[10..12].copy_from_slice(&(1u16 << 10).to_le_bytes());
        }
        d
    }

    /// Writes a link status event (opcode 0x0607) into the next free ARQ buffer.
    fn post_link_event(&mut self) {
        let n = self.arq.entries();
        if !self.arq.enabled() || n == 0 || self.arq.head == self.arq.tail {
            self.events_dropped += 1;
            return;
        }
        let at = self.arq.base() + self.arq.head as u64 * 32;
        let mut d = [0u8; 32];
        if !self.dma.read(at, &mut d) {
            self.events_dropped += 1;
            return;
        }
        let buf_len = u16::from_le_bytes([d[4], d[5]]) as usize;
        let addr = (u32::from_le_bytes(d[24..28].try_into().unwrap()) as u64) << 32
            | u32::from_le_bytes(d[28..32].try_into().unwrap()) as u64;
        let data = self.link_data();
        if buf_len < data.len() || !self.dma.write(addr, &data) {
            self.events_dropped += 1;
            return;
        }
        let flags = (u16::from_le_bytes([d[0], d[1]]) & !0x1FF) | FLAG_DD | FLAG_CMP;
        d[0..2].copy_from_slice(&flags.to_le_bytes());
        d[2..4].copy_from_slice(&0x0607u16.to_le_bytes());
        d[4..6].copy_from_slice(&(data.len() as u16).to_le_bytes());
        d[6..8].copy_from_slice(&0u16.to_le_bytes());
        self.dma.write(at, &d);
        self.arq.head = (self.arq.head + 1) % n;
    }
}
