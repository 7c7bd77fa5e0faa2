//! The admin queue engine: the send queue (ATQ) processed on its tail write, each command
//! completed in place (DD/CMP/ERR flags, retval, response buffer), and the dispatcher that hands
//! each opcode to its handler. Descriptor layout from DPDK `base/ice_adminq_cmd.h`
//! `struct ice_aq_desc` (\[AQC\]); completion semantics from vmuxIO's `e810_bm`.
//!
//! The commands live by area: [`generic`] (version, capabilities, MAC address, shutdown),
//! [`switch`] (switch configuration, VSIs, resources), [`sched`] (scheduler tree, LAN TX
//! queues), [`link`] (MAC/PHY configuration, link status and events), [`nvm`] (resource locks
//! and NVM reads), [`ddp`] (package download and info, Flow Director and RSS profile updates),
//! [`rss`] (RSS keys and tables), [`dcb`] (DCB/LLDP queries), [`vlan`] (VLAN mode), [`fwlog`]
//! (firmware logging). [`opcode`] maps opcode values to
//! handlers; a command the table lacks answers ENOSYS, as firmware does.

mod dcb;
mod ddp;
mod fwlog;
mod generic;
mod link;
mod nvm;
mod opcode;
mod rss;
mod sched;
mod switch;
mod vlan;

use crate::E810Model;
use opcode::Opcode;

// The few AQ constants the model needs, written out from [AQC] rather than shared with the
// driver (see regs.rs for why).
/// Descriptor flags (\[AQC\] `ICE_AQ_FLAG_*`): done, completed, error, buffer read by the
/// device (input), buffer present.
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
const RC_ENOSPC: u16 = 16;
const RC_EBUSY: u16 = 12;
/// EACCES (`ice_aq_err` 3): e.g. an NVM read without owning the NVM resource.
const RC_EACCES: u16 = 3;

/// One admin command as its handler sees it.
struct Cmd<'a> {
    /// The descriptor's 16 parameter bytes (offset 16..32).
    p: &'a [u8; 16],
    /// The buffer's contents when the driver sent one for the device to read (RD), else empty.
    input: &'a [u8],
    /// Whether the descriptor carries a buffer (BUF).
    has_buf: bool,
    /// The buffer's length (datalen) in bytes.
    buf_len: usize,
}

impl Cmd<'_> {
    /// `r` if the command came with a buffer to answer in, EINVAL otherwise.
    fn needs_buf(&self, r: Reply) -> Reply {
        if self.has_buf {
            r
        } else {
            Reply::err(RC_EINVAL)
        }
    }
}

/// An admin command handler.
type Handler = fn(&mut E810Model, &Cmd) -> Reply;

pub(crate) use fwlog::FwLog;

/// One admin ring as the device sees it.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct Ring {
    pub(crate) bal: u32,
    pub(crate) bah: u32,
    pub(crate) len: u32,
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

impl Ring {
    pub(crate) fn enabled(&self) -> bool {
        self.len & (1 << 31) != 0
    }
    pub(crate) fn entries(&self) -> u32 {
        self.len & 0x3FF
    }
    pub(crate) fn base(&self) -> u64 {
        (self.bah as u64) << 32 | self.bal as u64
    }
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
    /// Completes every descriptor from head to tail.
    pub(crate) fn process_atq(&mut self) {
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

    /// Runs one command: its handler from the opcode table, ENOSYS for an opcode without one.
    fn command(
        &mut self,
        opcode: u16,
        p: &[u8; 16],
        input: &[u8],
        has_buf: bool,
        buf_len: usize,
    ) -> Reply {
        let cmd = Cmd {
            p,
            input,
            has_buf,
            buf_len,
        };
        let op = Opcode::from(opcode);
        let reply = match op.handler() {
            Some(handler) => handler(self, &cmd),
            None => Reply::err(RC_ENOSYS),
        };
        // One line per command at debug level: what a driver asked and what it got, the trace
        // to read when a driver stops (RUST_LOG=ice_model=debug).
        log::debug!(
            "aq {opcode:#06x} {op:?} params {:02x?} buf {}{} -> retval {}",
            p,
            buf_len,
            if input.is_empty() { "" } else { " (input)" },
            reply.retval
        );
        reply
    }
}
