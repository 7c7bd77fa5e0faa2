//! The admin queue: the E810's command channel to its firmware.
//!
//! Two rings of 32-byte descriptors in DMA memory: the send queue (ATQ) for commands and the
//! receive queue (ARQ) for firmware events. Formats from DPDK `base/ice_adminq_cmd.h` (\[AQC\])
//! and the send/receive rules from `base/ice_controlq.c` (\[CQ\]); see
//! shared/reference/e810-facts.md §2.

use std::time::{Duration, Instant};

use vdpdk_core::DmaMemory;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::regs::*;
use crate::{IceError, Regs};

/// `struct ice_aq_desc` \[AQC\].
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AqDesc {
    pub flags: u16,
    pub opcode: u16,
    pub datalen: u16,
    pub retval: u16,
    pub cookie_high: u32,
    pub cookie_low: u32,
    /// Command-specific parameters; for indirect commands bytes 8..16 are the buffer address
    /// (high dword, then low dword).
    pub params: [u8; 16],
}
pub const AQ_DESC_SIZE: usize = 32;
const _: () = assert!(size_of::<AqDesc>() == AQ_DESC_SIZE);
const _: () = assert!(std::mem::offset_of!(AqDesc, params) == 16);

// Descriptor flags [AQC `ICE_AQ_FLAG_*`].
pub const AQ_FLAG_DD: u16 = 0x0001;
#[allow(dead_code)] // the full flag set of [AQC], for reading completions
pub const AQ_FLAG_CMP: u16 = 0x0002;
pub const AQ_FLAG_ERR: u16 = 0x0004;
pub const AQ_FLAG_LB: u16 = 0x0200;
pub const AQ_FLAG_RD: u16 = 0x0400;
pub const AQ_FLAG_BUF: u16 = 0x1000;
pub const AQ_FLAG_SI: u16 = 0x2000;

/// Largest indirect buffer [CQ `ICE_AQ_MAX_BUF_LEN`].
pub const AQ_MAX_BUF: usize = 4096;
/// Descriptors per ring (DPDK uses 32 \[ETH\]).
pub const AQ_RING_LEN: usize = 32;

// Opcodes [AQC enum ice_adminq_opc].
pub const OP_GET_VER: u16 = 0x0001;
pub const OP_Q_SHUTDOWN: u16 = 0x0003;
pub const OP_LIST_FUNC_CAPS: u16 = 0x000A;
pub const OP_LIST_DEV_CAPS: u16 = 0x000B;
pub const OP_MANAGE_MAC_READ: u16 = 0x0107;
pub const OP_CLEAR_PXE: u16 = 0x0110;
pub const OP_GET_SW_CFG: u16 = 0x0200;
pub const OP_CLEAR_PF_CFG: u16 = 0x02A4;
pub const OP_SET_MAC_CFG: u16 = 0x0603;
pub const OP_RESTART_AN: u16 = 0x0605;
pub const OP_GET_LINK_STATUS: u16 = 0x0607;
pub const OP_SET_EVENT_MASK: u16 = 0x0613;
pub const OP_REQ_RES: u16 = 0x0008;
pub const OP_RELEASE_RES: u16 = 0x0009;
pub const OP_DOWNLOAD_PKG: u16 = 0x0C40;
pub const OP_ADD_VSI: u16 = 0x0210;
/// add_vsi's VSI type for a PF's own VSIs, its LAN VSI and its Flow Director control VSI
/// alike (`ICE_AQ_VSI_TYPE_PF`; 0 VF, 1 VMDQ2, 3 EMP_MNG).
pub const VSI_TYPE_PF: u16 = 2;
pub const OP_GET_DFLT_TOPO: u16 = 0x0400;
pub const OP_ADD_SCHED_ELEMS: u16 = 0x0401;
pub const OP_DELETE_SCHED_ELEMS: u16 = 0x040F;
pub const OP_QUERY_SCHED_RES: u16 = 0x0412;
pub const OP_ADD_TXQS: u16 = 0x0C30;
pub const OP_DIS_TXQS: u16 = 0x0C31;

/// `enum ice_aq_err` names for the low byte of `retval` \[AQC\].
pub fn aq_err_name(rc: u16) -> &'static str {
    match rc & 0xFF {
        0 => "OK",
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        5 => "EIO",
        9 => "ENOMEM",
        12 => "EBUSY",
        13 => "EEXIST",
        14 => "EINVAL",
        16 => "ENOSPC",
        17 => "ENOSYS",
        _ => "unknown",
    }
}

impl AqDesc {
    /// A direct command: zeroed, `SI` and the opcode (\[CQ\] `ice_fill_dflt_direct_cmd_desc`).
    pub fn direct(opcode: u16) -> AqDesc {
        AqDesc {
            flags: AQ_FLAG_SI,
            opcode,
            ..Default::default()
        }
    }
    pub fn param_u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.params[off], self.params[off + 1]])
    }
    pub fn param_u32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.params[off..off + 4].try_into().expect("4 bytes"))
    }
    pub fn set_param_u16(&mut self, off: usize, v: u16) {
        self.params[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub fn set_param_u32(&mut self, off: usize, v: u32) {
        self.params[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub fn set_buf_addr(&mut self, a: u64) {
        self.set_param_u32(8, (a >> 32) as u32);
        self.set_param_u32(12, a as u32);
    }
}

/// How long a command may take before the driver gives up (Linux `ICE_CTL_Q_SQ_CMD_TIMEOUT`
/// is one second).
pub const AQ_TIMEOUT: Duration = Duration::from_secs(1);

/// A firmware event taken from the ARQ.
#[derive(Clone, Debug)]
pub struct AqEvent {
    pub desc: AqDesc,
    pub data: Vec<u8>,
}

/// Driver side of the admin queue.
pub struct AdminQueue {
    atq: DmaMemory,
    arq: DmaMemory,
    arq_bufs: DmaMemory,
    cmd_buf: DmaMemory,
    ntu: usize,
    arq_ntc: usize,
    pub timeout: Duration,
}

impl AdminQueue {
    /// Allocates the rings and buffers; `map` makes each piece reachable by the device.
    pub fn new(map: &mut dyn FnMut(&DmaMemory) -> Result<(), IceError>) -> Result<Self, IceError> {
        let alloc = |name: &str, len: usize| DmaMemory::alloc_with(name, len, false);
        let q = AdminQueue {
            atq: alloc("ice-atq", AQ_RING_LEN * AQ_DESC_SIZE)?,
            arq: alloc("ice-arq", AQ_RING_LEN * AQ_DESC_SIZE)?,
            arq_bufs: alloc("ice-arq-bufs", AQ_RING_LEN * AQ_MAX_BUF)?,
            cmd_buf: alloc("ice-aq-cmd", AQ_MAX_BUF)?,
            ntu: 0,
            arq_ntc: 0,
            timeout: AQ_TIMEOUT,
        };
        for m in [&q.atq, &q.arq, &q.arq_bufs, &q.cmd_buf] {
            map(m)?;
        }
        Ok(q)
    }

    fn write_desc(ring: &DmaMemory, i: usize, d: &AqDesc) {
        let b = d.as_bytes();
        // SAFETY: i < AQ_RING_LEN, so the 32 bytes lie inside the ring; the device reads the
        // ring only after the tail write that follows.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), ring.as_ptr().add(i * AQ_DESC_SIZE), b.len())
        };
    }

    fn read_desc(ring: &DmaMemory, i: usize) -> AqDesc {
        // SAFETY: as in write_desc; the ring is 4 KiB aligned so every slot is aligned for
        // AqDesc. The device may write the descriptor, so copy it out once with a volatile read
        // and work on the copy; every bit pattern is a valid AqDesc.
        unsafe { std::ptr::read_volatile(ring.as_ptr().add(i * AQ_DESC_SIZE).cast::<AqDesc>()) }
    }

    /// Programs both rings (\[CQ\] `ice_cfg_cq_regs`) and posts every ARQ buffer.
    pub fn start(&mut self, regs: &Regs) -> Result<(), IceError> {
        self.ntu = 0;
        self.arq_ntc = 0;
        let len = AQ_RING_LEN as u32;
        for (h, t, l, bal, bah, ring) in [
            (
                PF_FW_ATQH,
                PF_FW_ATQT,
                PF_FW_ATQLEN,
                PF_FW_ATQBAL,
                PF_FW_ATQBAH,
                &self.atq,
            ),
            (
                PF_FW_ARQH,
                PF_FW_ARQT,
                PF_FW_ARQLEN,
                PF_FW_ARQBAL,
                PF_FW_ARQBAH,
                &self.arq,
            ),
        ] {
            regs.write(h, 0)?;
            regs.write(t, 0)?;
            regs.write(l, len | AQ_LEN_ENABLE)?;
            regs.write(bal, ring.iova_base() as u32)?;
            regs.write(bah, (ring.iova_base() >> 32) as u32)?;
            if regs.read(bal)? != ring.iova_base() as u32 {
                return Err(IceError::Init(
                    "admin queue base address did not stick".into(),
                ));
            }
        }
        for i in 0..AQ_RING_LEN {
            self.post_arq(i);
        }
        regs.write(PF_FW_ARQT, len - 1)?;
        Ok(())
    }

    fn post_arq(&self, i: usize) {
        let mut d = AqDesc {
            flags: AQ_FLAG_BUF | AQ_FLAG_LB,
            datalen: AQ_MAX_BUF as u16,
            ..Default::default()
        };
        d.set_buf_addr(self.arq_bufs.iova(i * AQ_MAX_BUF));
        Self::write_desc(&self.arq, i, &d);
    }

    /// The DMA ranges the queue uses (to unmap them when the driver goes).
    pub fn dma_ranges(&self) -> Vec<(u64, u64)> {
        [&self.atq, &self.arq, &self.arq_bufs, &self.cmd_buf]
            .iter()
            .map(|m| (m.iova_base(), m.len() as u64))
            .collect()
    }

    /// Disables both rings.
    pub fn stop(&mut self, regs: &Regs) -> Result<(), IceError> {
        for (h, t, l, bal, bah) in [
            (
                PF_FW_ATQH,
                PF_FW_ATQT,
                PF_FW_ATQLEN,
                PF_FW_ATQBAL,
                PF_FW_ATQBAH,
            ),
            (
                PF_FW_ARQH,
                PF_FW_ARQT,
                PF_FW_ARQLEN,
                PF_FW_ARQBAL,
                PF_FW_ARQBAH,
            ),
        ] {
            for r in [h, t, l, bal, bah] {
                regs.write(r, 0)?;
            }
        }
        Ok(())
    }

    /// Sends one command and waits for its completion (\[CQ\] `ice_sq_send_cmd_nolock`).
    ///
    /// `buf` is the indirect buffer: sent to the firmware when `input` (RD), filled by the
    /// response otherwise (or both). Returns the completed descriptor; the response length is
    /// its `datalen`.
    pub fn send(
        &mut self,
        regs: &Regs,
        mut desc: AqDesc,
        buf: Option<&mut [u8]>,
        input: bool,
    ) -> Result<AqDesc, IceError> {
        let op = desc.opcode;
        let buf_len = buf.as_ref().map_or(0, |b| b.len());
        if buf_len > AQ_MAX_BUF {
            return Err(IceError::InvalidArg(format!(
                "admin buffer of {buf_len} bytes"
            )));
        }
        if let Some(b) = buf.as_deref() {
            desc.flags |= AQ_FLAG_BUF;
            if buf_len > 512 {
                desc.flags |= AQ_FLAG_LB;
            }
            if input {
                desc.flags |= AQ_FLAG_RD;
                // SAFETY: cmd_buf holds AQ_MAX_BUF >= buf_len bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(b.as_ptr(), self.cmd_buf.as_ptr(), buf_len)
                };
            } else {
                // SAFETY: as above; zeroed so stale bytes never look like a response.
                unsafe { std::ptr::write_bytes(self.cmd_buf.as_ptr(), 0, buf_len) };
            }
            desc.datalen = buf_len as u16;
            desc.set_buf_addr(self.cmd_buf.iova_base());
        }
        let slot = self.ntu;
        Self::write_desc(&self.atq, slot, &desc);
        self.ntu = (self.ntu + 1) % AQ_RING_LEN;
        regs.write(PF_FW_ATQT, self.ntu as u32)?;
        // Completion: the head catches up with our tail ("more reliable than DD" [CQ]).
        let t0 = Instant::now();
        loop {
            let h = regs.read(PF_FW_ATQH)? & AQ_HT_M;
            if h as usize == self.ntu {
                break;
            }
            if h as usize >= AQ_RING_LEN {
                return Err(IceError::Firmware(format!(
                    "ATQ head {h} is outside the ring"
                )));
            }
            if t0.elapsed() > self.timeout
                || (h == 0 && regs.read(PF_FW_ATQLEN)? & AQ_LEN_ENABLE == 0)
            {
                let len = regs.read(PF_FW_ATQLEN)?;
                if len & AQ_LEN_ENABLE == 0 {
                    return Err(IceError::Reset(format!(
                        "admin command {op:#06x}: the admin queue was disabled (device reset); \
                         probe the device again"
                    )));
                }
                let crit = if len & AQ_LEN_CRIT != 0 {
                    " (firmware reports a critical error)"
                } else {
                    ""
                };
                return Err(IceError::Timeout(format!(
                    "admin command {op:#06x} not completed after {:?}{crit}",
                    self.timeout
                )));
            }
            std::thread::sleep(Duration::from_micros(10));
        }
        let done = Self::read_desc(&self.atq, slot);
        if done.flags & AQ_FLAG_DD == 0 {
            return Err(IceError::Firmware(format!(
                "admin command {op:#06x}: head advanced but descriptor not done (flags {:#06x})",
                done.flags
            )));
        }
        if done.opcode != op {
            return Err(IceError::Firmware(format!(
                "admin command {op:#06x} completed as opcode {:#06x}",
                done.opcode
            )));
        }
        if done.flags & AQ_FLAG_ERR != 0 || done.retval != 0 {
            return Err(IceError::Admin {
                opcode: op,
                retval: done.retval,
            });
        }
        if let Some(b) = buf {
            let n = (done.datalen as usize).min(buf_len);
            // SAFETY: n <= buf_len <= AQ_MAX_BUF bytes of cmd_buf.
            unsafe { std::ptr::copy_nonoverlapping(self.cmd_buf.as_ptr(), b.as_mut_ptr(), n) };
        }
        Ok(done)
    }

    /// Takes the next firmware event, if any (\[CQ\] `ice_clean_rq_elem`).
    pub fn next_event(&mut self, regs: &Regs) -> Result<Option<AqEvent>, IceError> {
        let head = (regs.read(PF_FW_ARQH)? & AQ_HT_M) as usize;
        if head >= AQ_RING_LEN {
            return Err(IceError::Firmware(format!(
                "ARQ head {head} is outside the ring"
            )));
        }
        if head == self.arq_ntc {
            return Ok(None);
        }
        let i = self.arq_ntc;
        let desc = Self::read_desc(&self.arq, i);
        let n = (desc.datalen as usize).min(AQ_MAX_BUF);
        let mut data = vec![0u8; n];
        // SAFETY: buffer i is AQ_MAX_BUF bytes at offset i * AQ_MAX_BUF; n <= AQ_MAX_BUF.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.arq_bufs.as_ptr().add(i * AQ_MAX_BUF),
                data.as_mut_ptr(),
                n,
            )
        };
        self.post_arq(i);
        regs.write(PF_FW_ARQT, i as u32)?;
        self.arq_ntc = (i + 1) % AQ_RING_LEN;
        Ok(Some(AqEvent { desc, data }))
    }
}
