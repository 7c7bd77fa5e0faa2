//! E810 PF bring-up: reset, admin queue, version and capability discovery, switch
//! configuration, MAC, link. Order from DPDK `base/ice_common.c` `ice_init_hw` (\[CMN\]) and
//! shared/reference/e810-facts.md §8.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};
use vdpdk_core::MacAddr;
use vdpdk_pci::PciDevice;

pub(crate) mod fd;
mod link;
mod package;
mod queues;

use crate::adminq::*;
use crate::regs::*;
use crate::{IceError, Regs, E810_DEVICE_IDS, INTEL_VENDOR_ID};

/// Firmware API major this driver speaks (\[CQ\] `EXP_FW_API_VER_MAJOR_E810`); a newer major
/// means the firmware may behave in ways this driver does not know, so it refuses to load.
pub const FW_API_MAJOR: u8 = 1;

/// Capability ids in list-caps responses (\[AQC\] `ICE_AQC_CAPS_*`).
#[allow(dead_code)] // the ids the driver may read, not only those it reads today
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
    /// Link up (`link_info` bit 0, `ICE_AQ_LINK_UP`).
    pub up: bool,
    /// A module or cable is present (`link_info` bit 6, `ICE_AQ_MEDIA_AVAILABLE`).
    pub media_available: bool,
    /// Speed in Mbit/s from the `ICE_AQ_LINK_SPEED_*` bit; 0 when down or unknown.
    pub speed_mbps: u32,
    /// Largest frame the MAC accepts, in bytes (`max_frame_size`).
    pub max_frame: u16,
}

/// What bring-up learned about the function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceInfo {
    /// PCI function number of this PF (PF_FUNC_RID).
    pub pf_id: u8,
    /// Firmware (major, minor, patch) from get_ver.
    pub fw_version: (u8, u8, u8),
    /// Admin queue API (major, minor, patch) from get_ver; a major above the driver's (1)
    /// is refused.
    pub api_version: (u8, u8, u8),
    /// The LAN MAC address the NVM holds (manage_mac_read).
    pub mac: MacAddr,
    /// RX queues the function owns (RXQS capability).
    pub num_rxq: u32,
    /// Absolute index of its first RX queue.
    pub first_rxq: u32,
    /// TX queues the function owns (TXQS capability).
    pub num_txq: u32,
    /// Absolute index of its first TX queue.
    pub first_txq: u32,
    /// MSI-X vectors of the function (MSIX capability).
    pub num_msix: u32,
    /// Largest MTU the device supports, in bytes (MAX_MTU capability).
    pub max_mtu: u32,
    /// Logical port of the PF's physical port in the switch (get_sw_cfg).
    pub lport: u8,
    /// Id of the switch the port belongs to (get_sw_cfg).
    pub sw_id: u16,
    /// The link as last reported.
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
    fdir: Option<fd::FdirQueues>,
    /// The FD block's tables (from the DDP package) and live profiles.
    fd: Option<fd::profile::FdTables>,
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

    /// The PCI device behind the port (DMA maps of memory the port does not own).
    pub(crate) fn pci(&self) -> &Arc<dyn PciDevice> {
        self.regs.device()
    }

    /// What bring-up learned about the function, with the last link state.
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

    /// Starts port counters from the current register values.
    pub fn hw_counters(&self) -> Result<crate::stats::HwCounters, IceError> {
        crate::stats::HwCounters::new(&self.regs, self.info.lport)
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

    /// Routes MSI-X vectors `0..fds.len()` to these eventfds.
    pub fn set_msix(&mut self, fds: &[std::os::fd::RawFd]) -> Result<(), IceError> {
        Ok(self.regs.device().set_msix_eventfds(fds)?)
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
