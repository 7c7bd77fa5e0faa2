//! BAR0 register reads and writes: the admin queue registers, queue registers by queue
//! index, counters, and plain registers that read back what was written.

use crate::regs::*;
use crate::E810Model;

impl E810Model {
    /// The RX queue a register offset in `[base, base + 4 * num_queues)` belongs to.
    pub(crate) fn queue_of(&self, off: u64, base: u64) -> Option<usize> {
        let q = off.checked_sub(base)? / 4;
        (off.is_multiple_of(4) && q < self.cfg.num_queues as u64).then_some(q as usize)
    }

    /// A 32-bit read of BAR0 at byte offset `off` (offsets from DPDK `base/ice_hw_autogen.h`).
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
            GLNVM_GENS => crate::nvm::GLNVM_GENS_VALUE,
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
                    return self.rx_ctrl_read(q);
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

    /// A 32-bit write of BAR0 at byte offset `off`; a write to ATQT runs the admin commands
    /// up to it, one to a TX doorbell the TX descriptors.
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
                } else if let Some(q) = self.queue_of(off, QINT_TQCTL_BASE) {
                    self.tq_ctl.insert(q, v);
                } else if let Some(vec) = self.queue_of(off, GLINT_DYN_CTL_BASE) {
                    self.dyn_ctl_write(vec, v);
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
}
