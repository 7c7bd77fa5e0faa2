//! The model's own register map (BAR0 offsets). Kept apart from the driver's `crate::regs` on
//! purpose: tests check each against literal values from DPDK `base/ice_hw_autogen.h`, so a
//! wrong offset cannot hide behind the two agreeing.

pub const PF_FUNC_RID: u64 = 0x9E880;
pub const PFGEN_CTRL: u64 = 0x91000;
pub const GLGEN_RSTAT: u64 = 0xB8188;
pub const GLNVM_ULD: u64 = 0xB6008;
pub const GLNVM_FLA: u64 = 0xB6108;
pub const GL_MNG_FWSM: u64 = 0xB6134;
pub const PFLAN_RX_QALLOC: u64 = 0x1D2500;
pub const PFLAN_TX_QALLOC: u64 = 0x1D0480;

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
