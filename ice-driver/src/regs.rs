//! E810 PF registers the driver uses (BAR0 offsets, 32-bit, little-endian).
//!
//! Sources: DPDK `drivers/net/intel/ice/base/ice_hw_autogen.h` (\[HWA\]) and
//! `ice_common.c` (\[CMN\]), as summarised with citations in shared/reference/e810-facts.md.
//! The software model keeps its own map (ice-model/src/regs.rs) so that a wrong value here cannot be
//! hidden by the model agreeing with it; tests check both against literal public values.

// The map is kept whole, as the header lays it out, not only the registers in use today.
#![allow(dead_code)]

// Reset and init checks [HWA].
pub const PF_FUNC_RID: u64 = 0x0009_E880;
pub const PF_FUNC_RID_FUNCTION_NUMBER_M: u32 = 0x7;
pub const PFGEN_CTRL: u64 = 0x0009_1000;
pub const PFGEN_CTRL_PFSWR: u32 = 1 << 0;
pub const GLGEN_RSTAT: u64 = 0x000B_8188;
pub const GLGEN_RSTAT_DEVSTATE_M: u32 = 0x3;
pub const GLNVM_ULD: u64 = 0x000B_6008;
/// PCIER_DONE, PCIER_DONE_1, CORER_DONE, GLOBR_DONE, POR_DONE, POR_DONE_1, PCIER_DONE_2
/// (\[CMN\] `ICE_RESET_DONE_MASK`).
pub const RESET_DONE_MASK: u32 = 0x33B;
pub const GLNVM_FLA: u64 = 0x000B_6108;
pub const GLNVM_FLA_LOCKED: u32 = 1 << 6;
pub const GL_MNG_FWSM: u64 = 0x000B_6134;
pub const GL_MNG_FWSM_FW_MODES_M: u32 = 0x7;
/// FW_MODES bit for recovery mode (\[CMN\] `ice_get_fw_mode`).
pub const FW_MODE_RECOVERY: u32 = 1 << 1;

// Admin queue [HWA] (Reset Source EMPR: a PF reset leaves them alone).
pub const PF_FW_ATQBAL: u64 = 0x0008_0000;
pub const PF_FW_ARQBAL: u64 = 0x0008_0080;
pub const PF_FW_ATQBAH: u64 = 0x0008_0100;
pub const PF_FW_ARQBAH: u64 = 0x0008_0180;
pub const PF_FW_ATQLEN: u64 = 0x0008_0200;
pub const PF_FW_ARQLEN: u64 = 0x0008_0280;
pub const PF_FW_ATQH: u64 = 0x0008_0300;
pub const PF_FW_ARQH: u64 = 0x0008_0380;
pub const PF_FW_ATQT: u64 = 0x0008_0400;
pub const PF_FW_ARQT: u64 = 0x0008_0480;
pub const AQ_LEN_M: u32 = 0x3FF;
pub const AQ_LEN_VFE: u32 = 1 << 28;
pub const AQ_LEN_OVFL: u32 = 1 << 29;
pub const AQ_LEN_CRIT: u32 = 1 << 30;
pub const AQ_LEN_ENABLE: u32 = 1 << 31;
pub const AQ_HT_M: u32 = 0x3FF;

// Flow-control timers set_mac_cfg passes on (E800, timer index 8) [HWA]:
// 0x001E36E0 + 32 * 8 and 0x001E3800 + 32 * 8.
pub const PRTMAC_HSEC_CTL_TX_PAUSE_QUANTA_8: u64 = 0x001E_37E0;
pub const PRTMAC_HSEC_CTL_TX_PAUSE_REFRESH_TIMER_8: u64 = 0x001E_3900;

// Queue allocation [HWA, ETH].
pub const PFLAN_RX_QALLOC: u64 = 0x001D_2500;
pub const PFLAN_TX_QALLOC: u64 = 0x001D_2580;
/// FIRSTQ of PFLAN_RX_QALLOC is bits 10:0; of PFLAN_TX_QALLOC bits 13:0 \[HWA\].
pub const RX_QALLOC_FIRSTQ_M: u32 = 0x7FF;
pub const TX_QALLOC_FIRSTQ_M: u32 = 0x3FFF;
pub const QALLOC_VALID: u32 = 1 << 31;

// LAN RX queues, PF-relative queue index [HWA].
/// QRX_CONTEXT(i, q): dword `i` (0..8) of queue `q`'s RLAN context.
pub fn qrx_context(i: u64, q: u64) -> u64 {
    0x0028_0000 + 0x2000 * i + 4 * q
}
pub fn qrx_ctrl(q: u64) -> u64 {
    0x0012_0000 + 4 * q
}
pub const QRX_CTRL_QENA_REQ: u32 = 1 << 0;
pub const QRX_CTRL_QENA_STAT: u32 = 1 << 2;
pub fn qrx_tail(q: u64) -> u64 {
    0x0029_0000 + 4 * q
}
/// QRXFLXP_CNTXT(q): RXDID_IDX bits 5:0, RXDID_PRIO bits 10:8.
pub fn qrxflxp_cntxt(q: u64) -> u64 {
    0x0048_0000 + 4 * q
}
/// Flexible RX descriptor id of the 32-byte "NIC" layout (\[LTR\] `ICE_RXDID_FLEX_NIC`).
pub const RXDID_FLEX_NIC: u32 = 2;

// LAN TX queues [HWA]: doorbell takes the next-to-use index; head reads bits 12:0.
pub fn qtx_comm_dbell(q: u64) -> u64 {
    0x002C_0000 + 4 * q
}
pub fn qtx_comm_head(q: u64) -> u64 {
    0x000E_0000 + 4 * q
}

// Interrupts [HWA] (MSI-X indices are PF-relative vectors).
/// QINT_RQCTL(q): MSIX_INDX bits 10:0, ITR_INDX bits 12:11, CAUSE_ENA bit 30.
pub fn qint_rqctl(q: u64) -> u64 {
    0x0015_0000 + 4 * q
}
pub const QINT_CAUSE_ENA: u32 = 1 << 30;
pub const QINT_ITR_INDX_SHIFT: u32 = 11;
/// GLINT_DYN_CTL(v): INTENA b0, CLEARPBA b1, ITR_INDX bits 4:3 (3 = none), INTERVAL 16:5.
pub fn glint_dyn_ctl(v: u64) -> u64 {
    0x0016_0000 + 4 * v
}
/// GLINT_ITR(i, v): interval of ITR index i (0..=2) for vector v, bits 11:0 in 2 µs units
/// [HWA; Linux ice_txrx.h ICE_ITR_GRAN_S 1]. RX queue causes use ITR index 0.
pub fn glint_itr(i: u64, v: u64) -> u64 {
    0x0015_4000 + i * 8192 + 4 * v
}
pub const ITR_GRAN_US: u32 = 2;
pub const ITR_MAX_US: u32 = 0xFFF * ITR_GRAN_US;
pub const DYN_CTL_INTENA: u32 = 1 << 0;
pub const DYN_CTL_CLEARPBA: u32 = 1 << 1;
pub const DYN_CTL_ITR_NONE: u32 = 3 << 3;

// Port statistics, indexed by lport, stride 8; 40-bit counters are L | (H & 0xFF) << 32 [HWA].
pub const GLPRT_GORCL: u64 = 0x0038_0000;
pub const GLPRT_GOTCL: u64 = 0x0038_0B40;
pub const GLPRT_UPRCL: u64 = 0x0038_1300;
pub const GLPRT_UPTCL: u64 = 0x0038_11C0;
pub const GLPRT_STRIDE: u64 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver's table against literal values from DPDK `base/ice_hw_autogen.h`.
    #[test]
    fn offsets_match_the_public_header() {
        for (ours, public) in [
            (PF_FUNC_RID, 0x0009_E880u64),
            (PFGEN_CTRL, 0x0009_1000),
            (GLGEN_RSTAT, 0x000B_8188),
            (GLNVM_ULD, 0x000B_6008),
            (GLNVM_FLA, 0x000B_6108),
            (GL_MNG_FWSM, 0x000B_6134),
            (PF_FW_ATQBAL, 0x0008_0000),
            (PF_FW_ARQBAL, 0x0008_0080),
            (PF_FW_ATQLEN, 0x0008_0200),
            (PF_FW_ATQH, 0x0008_0300),
            (PF_FW_ATQT, 0x0008_0400),
            (PF_FW_ARQT, 0x0008_0480),
            (PFLAN_RX_QALLOC, 0x001D_2500),
            (PFLAN_TX_QALLOC, 0x001D_2580),
            (GLPRT_GORCL, 0x0038_0000),
            (GLPRT_UPRCL, 0x0038_1300),
        ] {
            assert_eq!(ours, public, "offset {ours:#x}");
        }
        assert_eq!(qrx_context(1, 2), 0x0028_2008);
        assert_eq!(qrx_ctrl(3), 0x0012_000C);
        assert_eq!(qrx_tail(3), 0x0029_000C);
        assert_eq!(qrxflxp_cntxt(1), 0x0048_0004);
        assert_eq!(qtx_comm_dbell(2), 0x002C_0008);
        assert_eq!(qtx_comm_head(2), 0x000E_0008);
        assert_eq!(qint_rqctl(5), 0x0015_0014);
        assert_eq!(glint_dyn_ctl(5), 0x0016_0014);
        // GLINT_ITR(_i, _INT) = 0x00154000 + _i * 8192 + _INT * 4 [HWA].
        assert_eq!(glint_itr(0, 1), 0x0015_4004);
        assert_eq!(glint_itr(2, 3), 0x0015_800C);
        assert_eq!(ITR_MAX_US, 8190);
        assert_eq!(RESET_DONE_MASK, 0b11_0011_1011);
        assert_eq!(AQ_LEN_ENABLE, 0x8000_0000);
        assert_eq!(AQ_LEN_CRIT, 0x4000_0000);
    }
}
