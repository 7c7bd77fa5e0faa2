//! Flow Director on the device: the control VSI and queue pair filters are programmed
//! through, and the flow profiles that go live in the card with their first filter and are
//! withdrawn with their last. [`filter`] turns rules into filters and programming
//! descriptors; [`profile`] builds the DDP table updates a profile needs.

pub(crate) mod filter;
pub(crate) mod profile;

use std::time::{Duration, Instant};

use log::{info, warn};

use super::IceDevice;
use crate::adminq::*;
use crate::IceError;

/// fd_options bits of the VSI properties [AQC `ICE_AQ_VSI_FD_ENABLE`, `_PROG_ENABLE`].
pub(super) const VSI_FD_ENABLE: u16 = 1 << 0;

const VSI_FD_PROG_ENABLE: u16 = 1 << 3;

/// The control VSI and its queue pair for Flow Director programming.
pub(super) struct FdirQueues {
    vsi: u16,
    tx: crate::txq::IceTxQueue,
    rx: crate::rxq::IceRxQueue,
    _pool: vdpdk_core::Mempool,
    template: vdpdk_core::DmaMemory,
}

impl IceDevice {
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
            // A PF-type VSI, as Linux and DPDK create their control VSI (`ice_vsi_init`:
            // ICE_VSI_CTRL gets ICE_AQ_VSI_TYPE_PF); type 3 is the management (EMP) type.
            let vsi = self.add_vsi(VSI_TYPE_PF, q, 1, VSI_FD_PROG_ENABLE)?;
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
    pub fn fdir_program(&mut self, f: &filter::FdirFilter, remove: bool) -> Result<(), IceError> {
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
    fn fdir_send(&mut self, f: &filter::FdirFilter, remove: bool) -> Result<(), IceError> {
        use filter::{WB_FAIL, WB_FAIL_PROF};
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
    pub(super) fn load_fd_tables(&mut self, pkg: &[u8]) {
        match profile::FdTables::from_package(pkg) {
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
            let name = |k| profile::profile_def(k).map_or("?", |d| d.name);
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
    pub(super) fn alloc_res(&mut self, res_type: u16) -> Result<u16, IceError> {
        let mut buf = [0u8; 6];
        buf[0..2].copy_from_slice(&res_type.to_le_bytes());
        buf[2..4].copy_from_slice(&1u16.to_le_bytes());
        let mut d = AqDesc::direct(profile::OP_ALLOC_RES);
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
        let mut d = AqDesc::direct(profile::OP_FREE_RES);
        d.set_param_u16(0, 1);
        self.send(d, Some(&mut buf), true)?;
        Ok(())
    }

    /// Sends one update_package buffer under the change lock (\[DDP\] `ice_update_pkg`: request
    /// resource 3 for write, update with LAST_BUF, release even on failure).
    pub(super) fn update_package(&mut self, mut buf: Vec<u8>) -> Result<(), IceError> {
        let mut d = AqDesc::direct(OP_REQ_RES);
        d.set_param_u16(0, profile::CHANGE_LOCK_RES_ID);
        d.set_param_u16(2, 2); // write
        d.set_param_u32(4, 1000); // timeout (ms) [DDP ICE_CHANGE_LOCK_TIMEOUT]
        self.send(d, None, false)?;
        let mut d = AqDesc::direct(profile::OP_UPDATE_PKG);
        d.params[0] = 1; // LAST_BUF
        let res = self.send(d, Some(&mut buf), true);
        let mut d = AqDesc::direct(OP_RELEASE_RES);
        d.set_param_u16(0, profile::CHANGE_LOCK_RES_ID);
        self.send(d, None, false)?;
        res.map(|_| ())
    }

    /// Makes flow profile `kind` live: hardware profile id and its swap/input-set registers
    /// (once), one TCAM entry per PTG, and an update buffer with the extraction sequence, the
    /// TCAM entries and (the first time) the XLT2 entries of the PF and control VSIs.
    fn activate_profile(&mut self, kind: u8) -> Result<(), IceError> {
        use self::profile::*;
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
        use self::profile::*;
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
}
