//! The PF VSI, the scheduler branch TX queues hang off, and LAN queue setup (\[SW\]
//! `ice_aq_add_vsi`, \[SCH\], \[CMN\] `ice_ena_vsi_txq`).

use std::sync::Arc;

use super::fd::VSI_FD_ENABLE;
use super::IceDevice;
use crate::adminq::*;
use crate::regs::*;
use crate::IceError;

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

impl IceDevice {
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

    pub(super) fn vsi_number(&self) -> Result<u16, IceError> {
        self.vsi.ok_or_else(|| {
            IceError::InvalidArg("the PF VSI exists once the first queue is set up".into())
        })
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
        let v = self.add_vsi(VSI_TYPE_PF, 0, nq, fd)?;
        self.vsi = Some(v);
        Ok(v)
    }

    /// add_vsi of `kind` ([`VSI_TYPE_PF`]; [AQC ICE_AQ_VSI_TYPE_*]: 0 VF, 1 VMDQ2, 2 PF,
    /// 3 EMP_MNG) owning queues
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
                let size = self.regs.read(super::fd::profile::GLQF_FD_SIZE)?;
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
}
