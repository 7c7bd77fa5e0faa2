//! E810 PF bring-up: reset, admin queue, version and capability discovery, switch
//! configuration, MAC, link. Order from DPDK `base/ice_common.c` `ice_init_hw` (\[CMN\]) and
//! shared/reference/e810-facts.md §8.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use vdpdk_core::MacAddr;
use vdpdk_pci::PciDevice;

use crate::adminq::*;
use crate::regs::*;
use crate::{IceError, Regs, E810_DEVICE_IDS, INTEL_VENDOR_ID};

/// Firmware API major this driver speaks (\[CQ\] `EXP_FW_API_VER_MAJOR_E810`); a newer major
/// means the firmware may behave in ways this driver does not know, so it refuses to load.
pub const FW_API_MAJOR: u8 = 1;

/// Capability ids in list-caps responses (\[AQC\] `ICE_AQC_CAPS_*`).
pub mod caps {
    pub const VALID_FUNCTIONS: u16 = 0x0005;
    pub const VSI: u16 = 0x0017;
    pub const RSS: u16 = 0x0040;
    pub const RXQS: u16 = 0x0041;
    pub const TXQS: u16 = 0x0042;
    pub const MSIX: u16 = 0x0043;
    pub const FD: u16 = 0x0045;
    pub const MAX_MTU: u16 = 0x0047;
}

/// Link state from get_link_status (\[AQC\] `ice_aqc_get_link_status_data`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkInfo {
    pub up: bool,
    pub media_available: bool,
    pub speed_mbps: u32,
    pub max_frame: u16,
}

/// What bring-up learned about the function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceInfo {
    pub pf_id: u8,
    pub fw_version: (u8, u8, u8),
    pub api_version: (u8, u8, u8),
    pub mac: MacAddr,
    pub num_rxq: u32,
    pub first_rxq: u32,
    pub num_txq: u32,
    pub first_txq: u32,
    pub num_msix: u32,
    pub max_mtu: u32,
    pub lport: u8,
    pub sw_id: u16,
    pub link: LinkInfo,
    /// No DDP package loaded: the driver offers one queue pair (Linux/DPDK policy).
    pub safe_mode: bool,
    /// PCI functions of the device (VALID_FUNCTIONS bitmap, counted).
    pub num_funcs: u32,
}

/// An E810 PF after bring-up.
pub struct IceDevice {
    regs: Arc<Regs>,
    aq: AdminQueue,
    info: IceInfo,
    /// HW number of the PF VSI (created on first queue setup).
    vsi: Option<u16>,
    /// TEID of the queue-group scheduler node TX queues hang off.
    qgroup_teid: Option<u32>,
    fdir: Option<FdirQueues>,
    /// The FD block's tables (from the DDP package) and live profiles.
    fd: Option<crate::fdprof::FdTables>,
}

/// fd_options bits of the VSI properties [AQC `ICE_AQ_VSI_FD_ENABLE`, `_PROG_ENABLE`].
const VSI_FD_ENABLE: u16 = 1 << 0;
const VSI_FD_PROG_ENABLE: u16 = 1 << 3;

/// The control VSI and its queue pair for Flow Director programming.
struct FdirQueues {
    vsi: u16,
    tx: crate::txq::IceTxQueue,
    rx: crate::rxq::IceRxQueue,
    _pool: vdpdk_core::Mempool,
    template: vdpdk_core::DmaMemory,
}

/// Scheduler element types (\[AQC\] `ICE_AQC_ELEM_TYPE_*`).
mod elem {
    pub const ROOT_PORT: u8 = 1;
    pub const TC: u8 = 2;
    pub const SE_GENERIC: u8 = 3;
    pub const ENTRY_POINT: u8 = 4;
    /// valid_sections = GENERIC | CIR | EIR.
    pub const VALID_ALL: u8 = 0x7;
}

/// A 16-byte scheduler element: type, valid sections, CIR/EIR {profile 0, bw_alloc 4}.
fn sched_elem_data(kind: u8) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0] = kind;
    d[1] = elem::VALID_ALL;
    d[6..8].copy_from_slice(&4u16.to_le_bytes()); // cir.bw_alloc
    d[10..12].copy_from_slice(&4u16.to_le_bytes()); // eir.bw_alloc
    d
}

/// Link speed bits of `link_speed` (\[AQC\] `ICE_AQ_LINK_SPEED_*`) in Mbit/s.
fn speed_mbps(bits: u16) -> u32 {
    const SPEEDS: [(u16, u32); 8] = [
        (1 << 3, 1_000),
        (1 << 5, 10_000),
        (1 << 6, 20_000),
        (1 << 7, 25_000),
        (1 << 8, 40_000),
        (1 << 9, 50_000),
        (1 << 10, 100_000),
        (1 << 11, 200_000),
    ];
    SPEEDS
        .iter()
        .find(|(b, _)| bits & b != 0)
        .map_or(0, |s| s.1)
}

/// Parses get_link_status data (also the payload of a link status event).
pub fn parse_link(data: &[u8]) -> Result<LinkInfo, IceError> {
    if data.len() < 12 {
        return Err(IceError::Firmware(format!(
            "link status of {} bytes",
            data.len()
        )));
    }
    Ok(LinkInfo {
        up: data[2] & 0x01 != 0,
        media_available: data[2] & 0x40 != 0,
        max_frame: u16::from_le_bytes([data[6], data[7]]),
        speed_mbps: speed_mbps(u16::from_le_bytes([data[10], data[11]])),
    })
}

impl IceDevice {
    /// Brings up the PF: checks ids, resets, starts the admin queue and learns the function.
    pub fn probe(dev: Arc<dyn PciDevice>) -> Result<IceDevice, IceError> {
        let (v, d) = dev.ids()?;
        if v != INTEL_VENDOR_ID || !E810_DEVICE_IDS.contains(&d) {
            return Err(IceError::Unsupported(format!(
                "{v:04x}:{d:04x} is not an E810"
            )));
        }
        let regs = Arc::new(Regs::new(dev.clone()));
        let pf_id = (regs.read(PF_FUNC_RID)? & PF_FUNC_RID_FUNCTION_NUMBER_M) as u8;
        Self::pf_reset(&regs)?;
        let mut aq = AdminQueue::new(&mut |m| Ok(dev.dma_map(m)?))?;
        aq.start(&regs)?;
        let mut ice = IceDevice {
            regs,
            aq,
            info: IceInfo {
                pf_id,
                safe_mode: true,
                ..Default::default()
            },
            vsi: None,
            qgroup_teid: None,
            fdir: None,
            fd: None,
        };
        ice.init_hw()?;
        Ok(ice)
    }

    pub fn info(&self) -> &IceInfo {
        &self.info
    }

    /// Sets the admin command timeout (tests shorten it).
    pub fn set_aq_timeout(&mut self, t: Duration) {
        self.aq.timeout = t;
    }

    /// PF software reset (\[CMN\] `ice_pf_reset`): not while a global reset is in progress.
    fn pf_reset(regs: &Regs) -> Result<(), IceError> {
        let rstat = regs.read(GLGEN_RSTAT)?;
        let uld = regs.read(GLNVM_ULD)?;
        if rstat & GLGEN_RSTAT_DEVSTATE_M != 0 || uld & RESET_DONE_MASK != RESET_DONE_MASK {
            return Err(IceError::Init(format!(
                "a global reset is in progress (GLGEN_RSTAT {rstat:#x}, GLNVM_ULD {uld:#x}); retry later"
            )));
        }
        let ctrl = regs.read(PFGEN_CTRL)?;
        regs.write(PFGEN_CTRL, ctrl | PFGEN_CTRL_PFSWR)?;
        // [CMN]: poll every 1 ms; Linux allows 3000 + 300 ms.
        let t0 = Instant::now();
        while regs.read(PFGEN_CTRL)? & PFGEN_CTRL_PFSWR != 0 {
            if t0.elapsed() > Duration::from_millis(3300) {
                return Err(IceError::Timeout("PF reset did not complete".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn send(&mut self, d: AqDesc, buf: Option<&mut [u8]>, input: bool) -> Result<AqDesc, IceError> {
        debug!("admin command {:#06x}", d.opcode);
        self.aq.send(&self.regs, d, buf, input)
    }

    fn init_hw(&mut self) -> Result<(), IceError> {
        // get_ver: rom_ver u32 @0, fw_build u32 @4, fw branch/major/minor/patch @8..12,
        // api branch/major/minor/patch @12..16 [AQC ice_aqc_get_ver].
        let v = self.send(AqDesc::direct(OP_GET_VER), None, false)?;
        let p = v.params;
        self.info.fw_version = (p[9], p[10], p[11]);
        self.info.api_version = (p[13], p[14], p[15]);
        if p[13] > FW_API_MAJOR {
            return Err(IceError::Unsupported(format!(
                "firmware API {}.{}.{} is newer than this driver's {FW_API_MAJOR}.x; update the driver",
                p[13], p[14], p[15]
            )));
        }
        if self.regs.read(GLNVM_FLA)? & GLNVM_FLA_LOCKED == 0 {
            return Err(IceError::Init(
                "the NVM is blank (GLNVM_FLA.LOCKED clear)".into(),
            ));
        }
        if self.regs.read(GL_MNG_FWSM)? & FW_MODE_RECOVERY != 0 {
            return Err(IceError::Init(
                "firmware is in recovery mode; reflash the NVM with Intel's tools".into(),
            ));
        }
        self.send(AqDesc::direct(OP_CLEAR_PF_CFG), None, false)?;
        let mut d = AqDesc::direct(OP_CLEAR_PXE);
        d.params[0] = 2; // rx_cnt [CMN ice_clear_pxe_mode]
        self.send(d, None, false)?;
        self.discover_caps(OP_LIST_DEV_CAPS)?;
        self.discover_caps(OP_LIST_FUNC_CAPS)?;
        self.read_switch_config()?;
        self.read_mac()?;
        // set_mac_cfg [CMN ice_aq_set_mac_pfc_cfg]: max_frame_size u16 @0 = 9728,
        // tx_tmr_priority @3 = 0, tx_tmr_value u16 @4 and fc_refresh_threshold u16 @6 taken
        // from the E800 PRTMAC pause registers of timer index 8
        // (E800_PRTMAC_HSEC_CTL_TX_PAUSE_QUANTA(8), _REFRESH_TIMER(8)) [HWA].
        let quanta = self.regs.read(PRTMAC_HSEC_CTL_TX_PAUSE_QUANTA_8)? & 0xFFFF;
        let refresh = self.regs.read(PRTMAC_HSEC_CTL_TX_PAUSE_REFRESH_TIMER_8)? & 0xFFFF;
        let mut d = AqDesc::direct(OP_SET_MAC_CFG);
        d.set_param_u16(0, crate::rxq::MAX_FRAME);
        d.set_param_u16(4, quanta as u16);
        d.set_param_u16(6, refresh as u16);
        self.send(d, None, false)?;
        info!(
            "E810 PF {}: firmware {}.{}.{}, API {}.{}.{}, MAC {}, {} RX / {} TX queues",
            self.info.pf_id,
            self.info.fw_version.0,
            self.info.fw_version.1,
            self.info.fw_version.2,
            self.info.api_version.0,
            self.info.api_version.1,
            self.info.api_version.2,
            self.info.mac,
            self.info.num_rxq,
            self.info.num_txq
        );
        Ok(())
    }

    /// list caps: response `count` u32 @4; 32-byte elements {cap u16, major, minor, number u32
    /// @4, logical_id u32 @8, phys_id u32 @12} [AQC ice_aqc_list_caps(_elem)].
    fn discover_caps(&mut self, op: u16) -> Result<(), IceError> {
        let mut buf = vec![0u8; AQ_MAX_BUF];
        let done = self.send(AqDesc::direct(op), Some(&mut buf), false)?;
        let count = done.param_u32(4) as usize;
        if count * 32 > AQ_MAX_BUF {
            return Err(IceError::Firmware(format!(
                "{count} capabilities do not fit a buffer"
            )));
        }
        for e in buf.chunks_exact(32).take(count) {
            let id = u16::from_le_bytes([e[0], e[1]]);
            let number = u32::from_le_bytes(e[4..8].try_into().expect("4 bytes"));
            let phys = u32::from_le_bytes(e[12..16].try_into().expect("4 bytes"));
            match id {
                caps::RXQS => (self.info.num_rxq, self.info.first_rxq) = (number, phys),
                caps::TXQS => (self.info.num_txq, self.info.first_txq) = (number, phys),
                caps::MSIX => self.info.num_msix = number,
                caps::MAX_MTU => self.info.max_mtu = number,
                caps::VALID_FUNCTIONS => self.info.num_funcs = number.count_ones(),
                _ => {}
            }
        }
        Ok(())
    }

    /// get_sw_cfg: `element` u16 @2 continues, `num_elems` u16 @4; 6-byte elements
    /// {vsi_port_num (type in bits 15:14, 0 = physical port), swid, pf_vf_num} \[SW\].
    fn read_switch_config(&mut self) -> Result<(), IceError> {
        let mut next = 0u16;
        let mut found = false;
        for _ in 0..64 {
            let mut buf = vec![0u8; 2048];
            let mut d = AqDesc::direct(OP_GET_SW_CFG);
            d.set_param_u16(2, next);
            let done = self.send(d, Some(&mut buf), false)?;
            let n = done.param_u16(4) as usize;
            if n * 6 > buf.len() {
                return Err(IceError::Firmware(format!(
                    "{n} switch elements do not fit"
                )));
            }
            for e in buf.chunks_exact(6).take(n) {
                let vpn = u16::from_le_bytes([e[0], e[1]]);
                if vpn >> 14 == 0 && !found {
                    self.info.lport = (vpn & 0x3FF) as u8;
                    self.info.sw_id = u16::from_le_bytes([e[2], e[3]]);
                    found = true;
                }
            }
            next = done.param_u16(2);
            if next == 0 {
                break;
            }
        }
        if !found {
            return Err(IceError::Firmware(
                "switch configuration has no physical port".into(),
            ));
        }
        Ok(())
    }

    /// manage_mac_read: flags u16 @0 (bit 4 LAN_ADDR_VALID), num_addr u8 @4; buffer of 8-byte
    /// entries {lport, addr_type (0 = LAN), mac\[6\]} \[AQC, CMN ice_aq_manage_mac_read\].
    fn read_mac(&mut self) -> Result<(), IceError> {
        let mut buf = vec![0u8; 16];
        let done = self.send(AqDesc::direct(OP_MANAGE_MAC_READ), Some(&mut buf), false)?;
        if done.param_u16(0) & 0x10 == 0 {
            return Err(IceError::Firmware(
                "firmware has no valid LAN MAC address".into(),
            ));
        }
        let n = (done.params[4] as usize).min(2);
        let lan = buf
            .chunks_exact(8)
            .take(n)
            .find(|e| e[1] == 0)
            .ok_or_else(|| IceError::Firmware("no LAN address in the MAC list".into()))?;
        self.info.mac = MacAddr(lan[2..8].try_into().expect("6 bytes"));
        Ok(())
    }

    /// Sets the RX interrupt throttle of vector `v`: after an interrupt, the next one waits at
    /// least `us` microseconds (rounded down to the 2 µs granularity; 0 = none).
    pub fn set_rx_itr(&self, v: u16, us: u32) -> Result<(), IceError> {
        if us > ITR_MAX_US {
            return Err(IceError::InvalidArg(format!(
                "ITR of {us} µs exceeds the hardware's {ITR_MAX_US} µs"
            )));
        }
        self.regs.write(glint_itr(0, v as u64), us / ITR_GRAN_US)
    }

    /// Sets up and enables PF RX queue `q` (PF-relative) with `n` descriptors from `pool`.
    pub fn setup_rx_queue(
        &mut self,
        q: u16,
        n: u16,
        pool: &vdpdk_core::Mempool,
    ) -> Result<crate::rxq::IceRxQueue, IceError> {
        self.setup_rx_queue_with(q, n, pool, Default::default(), None)
    }

    /// Like [`IceDevice::setup_rx_queue`], with frame limits (MTU, scatter) and MSI-X vector
    /// `irq.0` signalling `irq.1`.
    pub fn setup_rx_queue_with(
        &mut self,
        q: u16,
        n: u16,
        pool: &vdpdk_core::Mempool,
        limits: crate::rxq::RxFrameLimits,
        irq: Option<(u16, Arc<vmm_sys_util::eventfd::EventFd>)>,
    ) -> Result<crate::rxq::IceRxQueue, IceError> {
        if q as u32 >= self.info.num_rxq {
            return Err(IceError::InvalidArg(format!(
                "RX queue {q}: the function has {}",
                self.info.num_rxq
            )));
        }
        if let Some((v, _)) = &irq {
            if *v as u32 >= self.info.num_msix {
                return Err(IceError::InvalidArg(format!(
                    "MSI-X vector {v}: the function has {}",
                    self.info.num_msix
                )));
            }
        }
        crate::rxq::IceRxQueue::setup(
            self.regs.clone(),
            q,
            n,
            pool,
            limits,
            Default::default(),
            irq,
        )
    }

    /// Sets up Flow Director programming: a control VSI (FLOW_DIR section, PROG_ENABLE) owning
    /// the function's last queue pair, with a TX queue for filter descriptors and an RX queue
    /// for programming status.
    fn fdir_queues(&mut self) -> Result<&mut FdirQueues, IceError> {
        if self.fdir.is_none() {
            if self.info.safe_mode {
                return Err(IceError::Unsupported(
                    "Flow Director needs the DDP package (the port is in safe mode)".into(),
                ));
            }
            let q = (self.info.num_txq.min(self.info.num_rxq).max(2) - 1) as u16;
            let vsi = self.add_vsi(3, q, 1, VSI_FD_PROG_ENABLE)?;
            let tx = self.add_tx_queue(q, 64, vsi)?;
            let pool = vdpdk_core::Mempool::new("ice-fdir", 128, 2048 + vdpdk_core::MBUF_HEADROOM)?;
            let rx = self.setup_rx_queue_with(q, 64, &pool, Default::default(), None)?;
            let template = vdpdk_core::DmaMemory::alloc_with("ice-fdir-pkt", 4096, false)?;
            self.regs.device().dma_map(&template)?;
            self.fdir = Some(FdirQueues {
                vsi,
                tx,
                rx,
                _pool: pool,
                template,
            });
        }
        Ok(self.fdir.as_mut().expect("set above"))
    }

    /// Adds (or removes) a Flow Director filter and checks the programming status. The
    /// filter's flow profile goes live in the card with its first filter and is withdrawn
    /// with its last.
    pub fn fdir_program(
        &mut self,
        f: &crate::fdir::FdirFilter,
        remove: bool,
    ) -> Result<(), IceError> {
        if !remove {
            self.activate_profile(f.prof)?;
        }
        let res = self.fdir_send(f, remove);
        let Some(live) = self
            .fd
            .as_mut()
            .and_then(|fd| fd.profiles.get_mut(f.prof as usize))
        else {
            return res;
        };
        match (&res, remove) {
            (Ok(()), false) => live.filters += 1,
            (Ok(()), true) => live.filters = live.filters.saturating_sub(1),
            _ => {}
        }
        if live.filters == 0 {
            if let Err(e) = self.deactivate_profile(f.prof) {
                warn!("Flow Director profile withdrawal failed: {e}");
            }
        }
        res
    }

    /// Posts one programming descriptor and its training packet, and reads the status.
    fn fdir_send(&mut self, f: &crate::fdir::FdirFilter, remove: bool) -> Result<(), IceError> {
        use crate::fdir::{WB_FAIL, WB_FAIL_PROF};
        let pf_vsi = self.vsi;
        let fq = self.fdir_queues()?;
        let (qw0, qw1) = f.descriptor(pf_vsi.unwrap_or(fq.vsi), remove);
        let len = f.packet.len().min(4096);
        // SAFETY: the template buffer is 4096 bytes of our own DMA memory.
        unsafe { std::ptr::copy_nonoverlapping(f.packet.as_ptr(), fq.template.as_ptr(), len) };
        fq.tx.program(qw0, qw1, fq.template.iova_base(), len)?;
        let t0 = Instant::now();
        let st = loop {
            if let Some(st) = fq.rx.take_status() {
                break st;
            }
            if t0.elapsed() > Duration::from_millis(100) {
                return Err(IceError::Timeout(
                    "no Flow Director programming status".into(),
                ));
            }
            std::thread::sleep(Duration::from_micros(10));
        };
        if st & WB_FAIL_PROF != 0 {
            return Err(IceError::Unsupported(
                "Flow Director: the card found no flow profile for the filter's packet".into(),
            ));
        }
        if st & WB_FAIL != 0 {
            return Err(if remove {
                IceError::InvalidArg("Flow Director: no such filter".into())
            } else {
                IceError::Core(vdpdk_core::Error::NoMem(
                    "the Flow Director table is full".into(),
                ))
            });
        }
        Ok(())
    }

    /// Keeps the FD tables a downloaded package carries (without them filters are refused).
    fn load_fd_tables(&mut self, pkg: &[u8]) {
        match crate::fdprof::FdTables::from_package(pkg) {
            Ok(t) => self.fd = Some(t),
            Err(e) => warn!("{e}: Flow Director filters will be refused"),
        }
    }

    /// Whether a filter of profile `kind` could go live next to the live ones.
    pub fn fdir_profile_check(&self, kind: u8) -> Result<(), IceError> {
        let fd = self.fd.as_ref().ok_or_else(|| {
            IceError::Unsupported(
                "Flow Director: the DDP package has no FD packet-type table".into(),
            )
        })?;
        if let Some(other) = fd.conflict(kind) {
            let name = |k| crate::fdprof::profile_def(k).map_or("?", |d| d.name);
            return Err(IceError::Unsupported(format!(
                "Flow Director: {} rules cannot coexist with the {} rules in place (the E810 \
                 serves a packet type with one flow profile); remove those first",
                name(kind),
                name(other)
            )));
        }
        Ok(())
    }

    /// Allocates one firmware resource of `res_type` (\[CMN\] `ice_alloc_hw_res`: buffer
    /// {res_type, num_elems 1, elem}; the firmware writes the index into elem).
    fn alloc_res(&mut self, res_type: u16) -> Result<u16, IceError> {
        let mut buf = [0u8; 6];
        buf[0..2].copy_from_slice(&res_type.to_le_bytes());
        buf[2..4].copy_from_slice(&1u16.to_le_bytes());
        let mut d = AqDesc::direct(crate::fdprof::OP_ALLOC_RES);
        d.set_param_u16(0, 1); // num_entries
        self.send(d, Some(&mut buf), true)?;
        Ok(u16::from_le_bytes([buf[4], buf[5]]))
    }

    /// Frees firmware resources (\[CMN\] `ice_free_hw_res`).
    fn free_res(&mut self, res_type: u16, idx: &[u16]) -> Result<(), IceError> {
        if idx.is_empty() {
            return Ok(());
        }
        let mut buf: Vec<u8> = [res_type, idx.len() as u16]
            .iter()
            .chain(idx)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut d = AqDesc::direct(crate::fdprof::OP_FREE_RES);
        d.set_param_u16(0, 1);
        self.send(d, Some(&mut buf), true)?;
        Ok(())
    }

    /// Sends one update_package buffer under the change lock (\[DDP\] `ice_update_pkg`: request
    /// resource 3 for write, update with LAST_BUF, release even on failure).
    fn update_package(&mut self, mut buf: Vec<u8>) -> Result<(), IceError> {
        let mut d = AqDesc::direct(OP_REQ_RES);
        d.set_param_u16(0, crate::fdprof::CHANGE_LOCK_RES_ID);
        d.set_param_u16(2, 2); // write
        d.set_param_u32(4, 1000); // timeout (ms) [DDP ICE_CHANGE_LOCK_TIMEOUT]
        self.send(d, None, false)?;
        let mut d = AqDesc::direct(crate::fdprof::OP_UPDATE_PKG);
        d.params[0] = 1; // LAST_BUF
        let res = self.send(d, Some(&mut buf), true);
        let mut d = AqDesc::direct(OP_RELEASE_RES);
        d.set_param_u16(0, crate::fdprof::CHANGE_LOCK_RES_ID);
        self.send(d, None, false)?;
        res.map(|_| ())
    }

    /// Makes flow profile `kind` live: hardware profile id and its swap/input-set registers
    /// (once), one TCAM entry per PTG, and an update buffer with the extraction sequence, the
    /// TCAM entries and (the first time) the XLT2 entries of the PF and control VSIs.
    fn activate_profile(&mut self, kind: u8) -> Result<(), IceError> {
        use crate::fdprof::*;
        self.fdir_profile_check(kind)?;
        let pf_vsi = self.vsi_number()?;
        let ctrl_vsi = self.fdir_queues()?.vsi;
        let fd = self.fd.as_ref().expect("checked above");
        let live = &fd.profiles[kind as usize];
        if !live.tcam.is_empty() {
            return Ok(());
        }
        let def = profile_def(kind)
            .ok_or_else(|| IceError::InvalidArg(format!("no flow profile {kind}")))?;
        let regs = fd_swap(&extraction(def.fields))?;
        let groups = ptgs(&fd.xlt1, &def.ptypes);
        let (hw_id, es_written, vsig) = (live.hw_id, live.es_written, fd.vsig);
        let p = match hw_id {
            Some(p) => p,
            None => {
                let p = self.alloc_res(RES_FD_PROFID | RES_IGNORE_INDEX)?;
                let p = u8::try_from(p).ok().filter(|p| *p < 128).ok_or_else(|| {
                    IceError::Firmware(format!("flow profile id {p} is out of range"))
                })?;
                for j in 0..6 {
                    self.regs.write(glqf_fdswap(p, j), regs.swap[j])?;
                    self.regs.write(glqf_fdinset(p, j), regs.inset[j])?;
                }
                self.regs.write(glqf_fdmask_sel(p), 0)?;
                self.fd.as_mut().expect("set").profiles[kind as usize].hw_id = Some(p);
                p
            }
        };
        let mut tcam: Vec<(u16, u8)> = Vec::new();
        for &g in &groups {
            match self.alloc_res(RES_FD_TCAM | RES_IGNORE_INDEX | RES_SCAN_BOTTOM) {
                Ok(t) => tcam.push((t, g)),
                Err(e) => {
                    let idx: Vec<u16> = tcam.iter().map(|t| t.0).collect();
                    let _ = self.free_res(RES_FD_TCAM, &idx);
                    return Err(e);
                }
            }
        }
        let new_vsig = vsig.unwrap_or(vsig_value(1, self.info.pf_id));
        let n = !es_written as usize + tcam.len() + 2 * vsig.is_none() as usize;
        let mut b = PkgBuf::new(n);
        if !es_written {
            b.add(SID_FLD_VEC_FD, &es_section(p, &regs.es))?;
        }
        for &(t, g) in tcam.iter().rev() {
            b.add(
                SID_PROF_TCAM_FD,
                &tcam_section(t, &tcam_key(g, new_vsig), p),
            )?;
        }
        if vsig.is_none() {
            b.add(SID_XLT2_FD, &xlt2_section(pf_vsi, new_vsig))?;
            b.add(SID_XLT2_FD, &xlt2_section(ctrl_vsi, new_vsig))?;
        }
        if let Err(e) = self.update_package(b.finish()) {
            let idx: Vec<u16> = tcam.iter().map(|t| t.0).collect();
            let _ = self.free_res(RES_FD_TCAM, &idx);
            return Err(IceError::Unsupported(format!(
                "Flow Director: the card refused the {} flow profile ({e})",
                def.name
            )));
        }
        let fd = self.fd.as_mut().expect("set");
        fd.vsig = Some(new_vsig);
        let live = &mut fd.profiles[kind as usize];
        live.es_written = true;
        live.tcam = tcam;
        info!(
            "Flow Director profile '{}' live as hardware profile {p} ({} packet-type groups)",
            def.name,
            live.tcam.len()
        );
        Ok(())
    }

    /// Withdraws profile `kind`'s TCAM entries (rewritten to never match, then freed), so
    /// its packet types are free for another profile.
    fn deactivate_profile(&mut self, kind: u8) -> Result<(), IceError> {
        use crate::fdprof::*;
        let Some(fd) = self.fd.as_mut() else {
            return Ok(());
        };
        let live = &mut fd.profiles[kind as usize];
        let tcam = std::mem::take(&mut live.tcam);
        if tcam.is_empty() {
            return Ok(());
        }
        let mut b = PkgBuf::new(tcam.len());
        for &(t, _) in &tcam {
            b.add(SID_PROF_TCAM_FD, &tcam_section(t, &TCAM_NEVER, 0))?;
        }
        self.update_package(b.finish())?;
        let idx: Vec<u16> = tcam.iter().map(|t| t.0).collect();
        self.free_res(RES_FD_TCAM, &idx)
    }

    /// Starts port counters from the current register values.
    pub fn hw_counters(&self) -> Result<crate::stats::HwCounters, IceError> {
        crate::stats::HwCounters::new(&self.regs, self.info.lport)
    }

    fn vsi_number(&self) -> Result<u16, IceError> {
        self.vsi.ok_or_else(|| {
            IceError::InvalidArg("the PF VSI exists once the first queue is set up".into())
        })
    }

    /// Starts the LAN VSI's counters (and its RX discard counter) from the current values.
    pub fn vsi_counters(
        &self,
    ) -> Result<(crate::stats::HwCounters, crate::stats::Counter32), IceError> {
        let vsi = self.vsi_number()?;
        Ok((
            crate::stats::HwCounters::vsi(&self.regs, vsi)?,
            crate::stats::Counter32::start(&self.regs, crate::stats::glv_rdpc(vsi))?,
        ))
    }

    /// Adds what a counter set moved since the last update.
    pub fn update_counters(&self, c: &mut crate::stats::HwCounters) -> Result<(), IceError> {
        c.update(&self.regs)
    }

    /// Adds what the LAN VSI's RX discard counter moved.
    pub fn update_rx_discards(&self, c: &mut crate::stats::Counter32) -> Result<(), IceError> {
        c.update(&self.regs, crate::stats::glv_rdpc(self.vsi_number()?))
    }

    /// Downloads a DDP package (\[DDP\] `ice_dwnld_cfg_bufs`): takes the global config lock
    /// (resource 4, write); "done" means another PF already loaded one; sends every
    /// configuration buffer with download_pkg, LAST_BUF on the final one; releases the lock.
    /// Leaves safe mode on success.
    pub fn download_package(&mut self, pkg: &[u8]) -> Result<(), IceError> {
        let bufs = crate::ddp::config_buffers(pkg)?;
        let mut d = AqDesc::direct(OP_REQ_RES);
        d.set_param_u16(0, 4); // global config lock
        d.set_param_u16(2, 2); // write access
        d.set_param_u32(4, 3000); // timeout (ms)
        let got = self.send(d, None, false)?;
        let status = got.param_u16(12);
        if status == 2 {
            info!("DDP package already loaded by another function");
            self.info.safe_mode = false;
            self.load_fd_tables(pkg);
            return Ok(());
        }
        let mut result = Ok(());
        for (i, b) in bufs.iter().enumerate() {
            let mut buf = b.to_vec();
            let mut d = AqDesc::direct(OP_DOWNLOAD_PKG);
            d.params[0] = (i + 1 == bufs.len()) as u8; // LAST_BUF
            if let Err(e) = self.send(d, Some(&mut buf), true) {
                result = Err(IceError::Init(format!(
                    "DDP buffer {i} of {} refused: {e}",
                    bufs.len()
                )));
                break;
            }
        }
        let mut d = AqDesc::direct(OP_RELEASE_RES);
        d.set_param_u16(0, 4);
        self.send(d, None, false)?;
        result?;
        self.info.safe_mode = false;
        self.load_fd_tables(pkg);
        info!("DDP package loaded ({} buffers)", bufs.len());
        Ok(())
    }

    /// Routes MSI-X vectors `0..fds.len()` to these eventfds.
    pub fn set_msix(&mut self, fds: &[std::os::fd::RawFd]) -> Result<(), IceError> {
        Ok(self.regs.device().set_msix_eventfds(fds)?)
    }

    /// Creates the PF VSI owning queues `0..nq` (\[SW\] `ice_aq_add_vsi`, DPDK PF settings:
    /// SW and RXQ_MAP sections, LAN_ENA, contiguous queue map, TC0 over all queues).
    fn ensure_vsi(&mut self, nq: u16) -> Result<u16, IceError> {
        if let Some(v) = self.vsi {
            return Ok(v);
        }
        let fd = if self.info.safe_mode {
            0
        } else {
            VSI_FD_ENABLE
        };
        let v = self.add_vsi(2, 0, nq, fd)?;
        self.vsi = Some(v);
        Ok(v)
    }

    /// add_vsi of `kind` (2 = PF, 3 = CTRL [AQC ICE_AQ_VSI_TYPE_*]) owning queues
    /// `first..first+nq`; non-zero `fd_options` adds the FLOW_DIR section. A VSI receiving
    /// through Flow Director (FD_ENABLE) gets this function's share of the guaranteed
    /// filters and the best-effort pool from GLQF_FD_SIZE [ETH `ice_setup_vsi`; CMN
    /// `ice_parse_fdir_func_caps`].
    pub(crate) fn add_vsi(
        &mut self,
        kind: u16,
        first: u16,
        nq: u16,
        fd_options: u16,
    ) -> Result<u16, IceError> {
        let mut props = [0u8; 128];
        let mut valid: u16 = 1 | 1 << 6; // SW | RXQ_MAP
        if fd_options != 0 {
            valid |= 1 << 11; // FLOW_DIR
            props[90..92].copy_from_slice(&fd_options.to_le_bytes());
            if fd_options & VSI_FD_ENABLE != 0 {
                let size = self.regs.read(crate::fdprof::GLQF_FD_SIZE)?;
                let guar = (size & 0x7FFF) / self.info.num_funcs.max(1);
                let best_effort = size >> 16 & 0x7FFF;
                props[92..94].copy_from_slice(&(guar as u16).to_le_bytes()); // dedicated
                props[94..96].copy_from_slice(&(best_effort as u16).to_le_bytes());
                // shared
            }
        }
        props[0..2].copy_from_slice(&valid.to_le_bytes());
        props[2] = self.info.sw_id as u8;
        props[4] = 1 << 4; // sw_flags2: LAN_ENA
        props[12] = 0x1B; // inner_vlan_flags: TX_MODE_ALL | EMODE_NOTHING
        props[16..20].copy_from_slice(&0x00FA_C688u32.to_le_bytes()); // ingress up table
        props[20..24].copy_from_slice(&0x00FA_C688u32.to_le_bytes()); // egress up table
        props[30..32].copy_from_slice(&first.to_le_bytes()); // q_mapping[0]: first queue
        props[32..34].copy_from_slice(&nq.to_le_bytes()); // q_mapping[1]: count
        let log2 = 16 - (nq.max(1) - 1).leading_zeros() as u16;
        props[62..64].copy_from_slice(&(log2 << 11).to_le_bytes()); // tc_mapping[0]
        props[84..88].copy_from_slice(&0x00FA_C688u32.to_le_bytes()); // outer up table
        let mut d = AqDesc::direct(OP_ADD_VSI);
        d.set_param_u16(6, kind); // vsi_flags: type
        let done = self.send(d, Some(&mut props), true)?;
        Ok(done.param_u16(0) & 0x3FF)
    }

    /// Builds the scheduler branch TX queues hang off and returns the queue-group node
    /// ([SCH]: query resources, read the default topology, delete default nodes below the
    /// software entry layer, add one generic node per layer down to the queue-group layer).
    fn ensure_qgroup(&mut self) -> Result<u32, IceError> {
        if let Some(t) = self.qgroup_teid {
            return Ok(t);
        }
        let mut res = vec![0u8; 32 + 9 * 32];
        self.send(AqDesc::direct(OP_QUERY_SCHED_RES), Some(&mut res), false)?;
        let layers = u16::from_le_bytes([res[2], res[3]]) as usize;
        if !(5..=9).contains(&layers) {
            return Err(IceError::Firmware(format!("{layers} scheduler layers")));
        }
        let mut topo = vec![0u8; AQ_MAX_BUF];
        let mut d = AqDesc::direct(OP_GET_DFLT_TOPO);
        d.params[0] = self.info.lport;
        let done = self.send(d, Some(&mut topo), false)?;
        let branches = done.params[1] as usize;
        if branches == 0 || branches * 240 > AQ_MAX_BUF {
            return Err(IceError::Firmware(format!("{branches} topology branches")));
        }
        // First branch: header {parent_teid, num_elems u16}, then 24-byte elements
        // {parent_teid, node_teid, data[16]} indexed by layer.
        let b = &topo[..240];
        let n = (u16::from_le_bytes([b[4], b[5]]) as usize).min(9);
        // (parent_teid, node_teid, elem_type) of the element at layer i.
        let el = |i: usize| {
            let e = &b[8 + i * 24..8 + (i + 1) * 24];
            let word = |o: usize| u32::from_le_bytes(e[o..o + 4].try_into().expect("4"));
            (word(0), word(4), e[8])
        };
        let mut tc0 = None;
        let mut entry_layer = None;
        let mut remove = Vec::new();
        for i in 0..n {
            let (_, teid, kind) = el(i);
            match kind {
                elem::TC if tc0.is_none() => tc0 = Some(teid),
                elem::ENTRY_POINT => entry_layer = Some(i),
                _ => {}
            }
        }
        let entry = entry_layer
            .ok_or_else(|| IceError::Firmware("no entry point in the topology".into()))?;
        let tc0 = tc0.ok_or_else(|| IceError::Firmware("no TC node in the topology".into()))?;
        for i in entry..n {
            let (parent, teid, kind) = el(i);
            if kind != elem::TC && kind != elem::ROOT_PORT {
                remove.push((parent, teid));
            }
        }
        // Delete deepest first so no node is removed before its children; the buffer is
        // {parent_teid, num_elems u16, rsvd u16, teid[]} [SCH ice_sched_rm_dflt_nodes].
        for (parent, teid) in remove.into_iter().rev() {
            let mut buf = [0u8; 12];
            buf[0..4].copy_from_slice(&parent.to_le_bytes());
            buf[4..6].copy_from_slice(&1u16.to_le_bytes());
            buf[8..12].copy_from_slice(&teid.to_le_bytes());
            let mut d = AqDesc::direct(OP_DELETE_SCHED_ELEMS);
            d.set_param_u16(0, 1);
            self.send(d, Some(&mut buf), true)?;
        }
        // VSI layer = layers - 4 (9 layers) or layers - 2 (5 layers); queue groups at
        // layers - 2; leaves (queues) at layers - 1 [SCH].
        let vsi_layer = if layers == 5 { layers - 2 } else { layers - 4 };
        let qgroup_layer = layers - 2;
        let mut parent = tc0;
        for _layer in entry..=qgroup_layer.max(vsi_layer) {
            let mut buf = [0u8; 8 + 24];
            buf[0..4].copy_from_slice(&parent.to_le_bytes());
            buf[4..6].copy_from_slice(&1u16.to_le_bytes());
            buf[8..12].copy_from_slice(&parent.to_le_bytes());
            buf[16..32].copy_from_slice(&sched_elem_data(elem::SE_GENERIC));
            let mut d = AqDesc::direct(OP_ADD_SCHED_ELEMS);
            d.set_param_u16(0, 1);
            self.send(d, Some(&mut buf), true)?;
            let teid = u32::from_le_bytes(buf[12..16].try_into().expect("4"));
            if teid == 0 {
                return Err(IceError::Firmware(
                    "add_sched_elems returned no node TEID".into(),
                ));
            }
            parent = teid;
        }
        self.qgroup_teid = Some(parent);
        Ok(parent)
    }

    /// Creates PF TX queue `q` with `n` descriptors (\[CMN\] `ice_ena_vsi_txq`: one queue group
    /// of one queue, TLAN context as Linux `ice_setup_tx_ctx` fills it).
    pub fn setup_tx_queue(&mut self, q: u16, n: u16) -> Result<crate::txq::IceTxQueue, IceError> {
        if q as u32 >= self.info.num_txq {
            return Err(IceError::InvalidArg(format!(
                "TX queue {q}: the function has {}",
                self.info.num_txq
            )));
        }
        if !(64..=4096).contains(&n) || !n.is_multiple_of(32) {
            return Err(IceError::InvalidArg(format!(
                "TX ring of {n}: need 64..=4096, a multiple of 32"
            )));
        }
        // The last queue pair is kept for Flow Director programming (the control VSI's).
        let nq = (self.info.num_txq.min(u16::MAX as u32) as u16)
            .saturating_sub(1)
            .max(1);
        let vsi = self.ensure_vsi(nq)?;
        self.add_tx_queue(q, n, vsi)
    }

    /// Creates PF TX queue `q` for HW VSI `vsi` through add_txqs.
    pub(crate) fn add_tx_queue(
        &mut self,
        q: u16,
        n: u16,
        vsi: u16,
    ) -> Result<crate::txq::IceTxQueue, IceError> {
        use crate::ctx::{set_bits, tlan};
        let parent = self.ensure_qgroup()?;
        let ring = vdpdk_core::DmaMemory::alloc_with(
            "ice-txq",
            n as usize * crate::txq::TX_DESC_SIZE,
            false,
        )?;
        self.regs.device().dma_map(&ring)?;
        let mut ctx = [0u8; tlan::SIZE];
        let f = |c: &mut [u8], (l, w): (usize, usize), v: u64| set_bits(c, l, w, v);
        f(&mut ctx, tlan::BASE, ring.iova_base() >> 7);
        f(&mut ctx, tlan::PORT_NUM, self.info.lport as u64);
        f(&mut ctx, tlan::PF_NUM, self.info.pf_id as u64);
        f(&mut ctx, tlan::VMVF_TYPE, tlan::VMVF_TYPE_PF);
        f(&mut ctx, tlan::SRC_VSI, vsi as u64);
        f(&mut ctx, tlan::QLEN, n as u64);
        f(&mut ctx, tlan::TSO_ENA, 1);
        f(&mut ctx, tlan::TSO_QNUM, q as u64);
        f(&mut ctx, tlan::LEGACY_INT, 1);
        let mut buf = [0u8; 8 + 48];
        buf[0..4].copy_from_slice(&parent.to_le_bytes());
        buf[4] = 1; // num_txqs
        buf[8..10].copy_from_slice(&q.to_le_bytes());
        buf[16..16 + tlan::SIZE].copy_from_slice(&ctx);
        buf[40..56].copy_from_slice(&sched_elem_data(0));
        let mut d = AqDesc::direct(OP_ADD_TXQS);
        d.params[0] = 1; // num_qgrps
        self.send(d, Some(&mut buf), true)?;
        if u32::from_le_bytes(buf[12..16].try_into().expect("4")) == 0 {
            return Err(IceError::Firmware(format!(
                "add_txqs returned no TEID for queue {q}"
            )));
        }
        Ok(crate::txq::IceTxQueue::new(
            self.regs.clone(),
            q,
            ring,
            n,
            Default::default(),
        ))
    }

    /// Disables PF TX queue `q` (\[AQC\] dis_txqs 0x0C31: one group {parent_teid, num_qs,
    /// rsvd, q_id[]}; num_entries @1, vmvf_and_timeout @2 = 5 << 10 as Linux sends).
    pub fn disable_tx_queue(&mut self, q: u16) -> Result<(), IceError> {
        let Some(parent) = self.qgroup_teid else {
            return Ok(()); // no TX queue was ever created
        };
        let mut buf = [0u8; 8];
        buf[0..4].copy_from_slice(&parent.to_le_bytes());
        buf[4] = 1;
        buf[6..8].copy_from_slice(&q.to_le_bytes());
        let mut d = AqDesc::direct(OP_DIS_TXQS);
        d.params[1] = 1;
        d.set_param_u16(2, 5 << 10);
        self.send(d, Some(&mut buf), true)?;
        Ok(())
    }

    /// Enables link status events and asks for link up (\[AQC\] set_event_mask, get_link_status
    /// with LSE, restart_an with ENABLE). Returns the link state reported right after.
    pub fn link_up(&mut self) -> Result<LinkInfo, IceError> {
        let lport = self.info.lport;
        let mut d = AqDesc::direct(OP_SET_EVENT_MASK);
        d.params[0] = lport;
        // Unmask link up/down and media events only (bits 1, 2 of the mask; 1 = masked).
        d.set_param_u16(8, !0x6);
        self.send(d, None, false)?;
        self.link_status(true)?;
        let mut d = AqDesc::direct(OP_RESTART_AN);
        d.params[0] = lport;
        d.params[2] = 0x2 | 0x4; // RESTART | ENABLE
        self.send(d, None, false)?;
        self.link_status(false)
    }

    /// get_link_status: lport @0, cmd_flags u16 @2 (3 = enable LSE events) \[AQC\].
    pub fn link_status(&mut self, enable_events: bool) -> Result<LinkInfo, IceError> {
        let mut buf = vec![0u8; 32];
        let mut d = AqDesc::direct(OP_GET_LINK_STATUS);
        d.params[0] = self.info.lport;
        if enable_events {
            d.set_param_u16(2, 3);
        }
        self.send(d, Some(&mut buf), false)?;
        let l = parse_link(&buf)?;
        self.info.link = l;
        Ok(l)
    }

    /// Handles pending firmware events; returns the new link state if one reported it.
    pub fn poll_events(&mut self) -> Result<Option<LinkInfo>, IceError> {
        let mut link = None;
        while let Some(ev) = self.aq.next_event(&self.regs)? {
            if ev.desc.opcode == OP_GET_LINK_STATUS {
                let l = parse_link(&ev.data)?;
                self.info.link = l;
                link = Some(l);
            } else {
                debug!("ignoring firmware event {:#06x}", ev.desc.opcode);
            }
        }
        Ok(link)
    }

    /// Tells the firmware the driver is leaving and stops the admin queue.
    pub fn shutdown(&mut self) -> Result<(), IceError> {
        let mut d = AqDesc::direct(OP_Q_SHUTDOWN);
        d.params[0] = 1; // driver_unloading
        let r = self.send(d, None, false);
        self.aq.stop(&self.regs)?;
        r.map(|_| ())
    }
}

impl Drop for IceDevice {
    /// Stops the admin queue and withdraws its memory from the device.
    fn drop(&mut self) {
        let _ = self.aq.stop(&self.regs);
        for (iova, len) in self.aq.dma_ranges() {
            let _ = self.regs.device().dma_unmap(iova, len);
        }
    }
}
