//! The model's own register map (BAR0 offsets). Kept apart from the driver's `crate::regs` on
//! purpose: tests check each against literal values from DPDK `base/ice_hw_autogen.h`, so a
//! wrong offset cannot hide behind the two agreeing.

pub const PF_FUNC_RID: u64 = 0x9E880;
pub const PFGEN_CTRL: u64 = 0x91000;
pub const GLGEN_RSTAT: u64 = 0xB8188;
pub const GLNVM_ULD: u64 = 0xB6008;
pub const GLNVM_FLA: u64 = 0xB6108;
/// NVM general status: NVM present (bit 0), Shadow RAM size (bits 7:5) [HWA `GLNVM_GENS`].
pub const GLNVM_GENS: u64 = 0xB6100;
pub const GL_MNG_FWSM: u64 = 0xB6134;
pub const PFLAN_RX_QALLOC: u64 = 0x1D2500;
pub const PFLAN_TX_QALLOC: u64 = 0x1D2580;

pub const ATQBAL: u64 = 0x80000;
pub const ARQBAL: u64 = 0x80080;
pub const ATQBAH: u64 = 0x80100;
pub const ARQBAH: u64 = 0x80180;
pub const ATQLEN: u64 = 0x80200;
pub const ARQLEN: u64 = 0x80280;
pub const ATQH: u64 = 0x80300;
pub const ARQH: u64 = 0x80380;
pub const ATQT: u64 = 0x80400;
pub const ARQT: u64 = 0x80480;

// LAN RX queues (PF-relative index q) [HWA].
pub const QRX_CONTEXT_BASE: u64 = 0x280000; // + 0x2000 * dword + 4 * q
pub const QRX_CONTEXT_DWORD_STRIDE: u64 = 0x2000;
pub const QRX_CTRL_BASE: u64 = 0x120000;
pub const QRX_TAIL_BASE: u64 = 0x290000;
pub const QRXFLXP_CNTXT_BASE: u64 = 0x480000;

/// RLAN context fields the model reads, (lsb, width) [CMN `ice_rlan_ctx_info`].
pub const RLAN_HEAD: (usize, usize) = (0, 13);
pub const RLAN_BASE: (usize, usize) = (32, 57);
pub const RLAN_QLEN: (usize, usize) = (89, 13);
pub const RLAN_DBUF: (usize, usize) = (102, 7);
pub const RLAN_DSIZE: (usize, usize) = (116, 1);
pub const RLAN_RXMAX: (usize, usize) = (174, 14);

// LAN TX queues [HWA].
pub const QTX_COMM_DBELL_BASE: u64 = 0x2C0000;
pub const QTX_COMM_HEAD_BASE: u64 = 0xE0000;

/// TLAN context fields the model reads, (lsb, width) [CMN `ice_tlan_ctx_info`].
pub const TLAN_BASE: (usize, usize) = (0, 57);
pub const TLAN_QLEN: (usize, usize) = (135, 13);
#[allow(dead_code)] // the model serves every queue as the LAN VSI's; kept as the layout
pub const TLAN_SRC_VSI: (usize, usize) = (80, 10);

/// Scheduler layers of the modelled port (E810 default, \[SCH\]).
pub const SCHED_LAYERS: u32 = 9;

// Interrupts [HWA].
pub const QINT_RQCTL_BASE: u64 = 0x150000;
/// TX queue interrupt cause control, per PF queue [HWA `QINT_TQCTL`].
pub const QINT_TQCTL_BASE: u64 = 0x140000;
/// Admin queue interrupt cause control [HWA `PFINT_FW_CTL`].
pub const PFINT_FW_CTL: u64 = 0x16C800;
pub const GLINT_DYN_CTL_BASE: u64 = 0x160000;

// Port counters (lport 0), L at the offset and H (bits 39:32) at +4 [HWA].
pub const GLPRT_GORCL: u64 = 0x380000;
pub const GLPRT_UPRCL: u64 = 0x381300;
pub const GLPRT_MPRCL: u64 = 0x381340;
pub const GLPRT_BPRCL: u64 = 0x381380;
pub const GLPRT_GOTCL: u64 = 0x380B40;
pub const GLPRT_UPTCL: u64 = 0x3811C0;
pub const GLPRT_MPTCL: u64 = 0x381200;
pub const GLPRT_BPTCL: u64 = 0x381240;

// Flow-control timer registers of timer index 8 (E800) [HWA].
pub const PRTMAC_PAUSE_QUANTA_8: u64 = 0x1E37E0;
pub const PRTMAC_PAUSE_REFRESH_8: u64 = 0x1E3900;

/// GLINT_ITR(i, v): interval of ITR index i (0..=2) for vector v, INTERVAL bits 11:0 in 2 µs
/// units [HWA `GLINT_ITR(_i, _INT) (0x00154000 + ((_i) * 8192 + (_INT) * 4))`; Linux
/// ice_txrx.h ICE_ITR_GRAN_S 1].
pub const GLINT_ITR_BASE: u64 = 0x154000;
pub const GLINT_ITR_INDEX_STRIDE: u64 = 8192;
pub const ITR_GRAN_US: u64 = 2;

/// VSI counters, indexed by HW VSI number \[HWA\]: 40-bit L/H pairs with stride 8
/// (`GLV_GORCL(_i) (0x003B0000 + ((_i) * 8))`, ...), and the 32-bit RX discard counter
/// `GLV_RDPC(_i) (0x00294C04 + ((_i) * 4))` (frames for the VSI dropped for lack of
/// descriptors).
pub const GLV_GORCL: u64 = 0x3B0000;
pub const GLV_UPRCL: u64 = 0x3B2000;
pub const GLV_MPRCL: u64 = 0x3B4000;
pub const GLV_BPRCL: u64 = 0x3B6000;
pub const GLV_GOTCL: u64 = 0x300000;
pub const GLV_UPTCL: u64 = 0x30A000;
pub const GLV_MPTCL: u64 = 0x30C000;
pub const GLV_BPTCL: u64 = 0x30E000;
pub const GLV_STRIDE: u64 = 8;
pub const GLV_RDPC: u64 = 0x294C04;
