//! Firmware logging: configuration (0xFF30), registration for log events (0xFF31) and query
//! (0xFF32). Layout from Linux 6.12 `ice_adminq_cmd.h` (`struct ice_aqc_fw_log`: cmd_flags @0,
//! log_resolution @4, mdl_cnt @6; `struct ice_aqc_fw_log_cfg_resp` {module u16, level u8,
//! rsvd} per module; 32 modules, `ICE_AQC_FW_LOG_ID_MAX`). The model's firmware keeps the
//! configuration and registration; it has nothing to log, so no log event (0xFF33) is ever
//! posted.

use super::{Cmd, Reply, RC_EINVAL};
use crate::E810Model;

/// Firmware log modules (`enum ice_aqc_fw_logging_mod`).
pub(crate) const MODULES: usize = 32;
/// cmd_flags bits: UART and admin-queue logging enabled, registered (query answer), the
/// configuration is valid (set).
const UART_EN: u8 = 1 << 0;
const AQ_EN: u8 = 1 << 1;
const QUERY_REGISTERED: u8 = 1 << 2;
const SET_VALID: u8 = 1 << 3;
/// 0xFF31 cmd_flags bit 0: register (set) or unregister (clear).
const AQ_REGISTER: u8 = 1 << 0;

/// The firmware log configuration.
#[derive(Clone, Debug)]
pub(crate) struct FwLog {
    /// UART_EN | AQ_EN as last set.
    enabled: u8,
    registered: bool,
    /// Log events per this many messages (1..=128).
    resolution: u16,
    levels: [u8; MODULES],
}

impl Default for FwLog {
    fn default() -> Self {
        FwLog {
            enabled: 0,
            registered: false,
            resolution: 10,
            levels: [0; MODULES],
        }
    }
}

impl FwLog {
    /// The per-module answer: {module u16, level u8, rsvd} for every module.
    fn entries(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(4 * MODULES);
        for (id, level) in self.levels.iter().enumerate() {
            d.extend_from_slice(&(id as u16).to_le_bytes());
            d.extend_from_slice(&[*level, 0]);
        }
        d
    }

    fn params(&self, p: &[u8; 16]) -> [u8; 16] {
        let mut q = *p;
        q[0] = self.enabled | if self.registered { QUERY_REGISTERED } else { 0 };
        q[4..6].copy_from_slice(&self.resolution.to_le_bytes());
        q[6..8].copy_from_slice(&(MODULES as u16).to_le_bytes());
        q
    }
}

/// fw_logs_query: the configuration in the parameters, the module levels in the buffer.
pub(super) fn query(m: &mut E810Model, c: &Cmd) -> Reply {
    c.needs_buf(Reply {
        params: Some(m.fwlog.params(c.p)),
        data: m.fwlog.entries(),
        ..Reply::ok()
    })
}

/// fw_logs_config: with SET_VALID, the UART/AQ enables and the resolution (1..=128) are set;
/// the buffer's {module, level} entries (mdl_cnt of them) set those modules' levels. A module
/// or resolution out of range is EINVAL and changes nothing.
pub(super) fn config(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let resolution = u16::from_le_bytes([p[4], p[5]]);
    let n = u16::from_le_bytes([p[6], p[7]]) as usize;
    let Some(entries) = c.input.get(..4 * n) else {
        return Reply::err(RC_EINVAL);
    };
    let mut next = m.fwlog.clone();
    if p[0] & SET_VALID != 0 {
        if !(1..=128).contains(&resolution) {
            return Reply::err(RC_EINVAL);
        }
        next.enabled = p[0] & (UART_EN | AQ_EN);
        next.resolution = resolution;
    }
    for e in entries.chunks(4) {
        let id = u16::from_le_bytes([e[0], e[1]]) as usize;
        match next.levels.get_mut(id) {
            Some(level) => *level = e[2],
            None => return Reply::err(RC_EINVAL),
        }
    }
    m.fwlog = next;
    Reply {
        write_back: true,
        params: Some(m.fwlog.params(p)),
        data: entries.to_vec(),
        ..Reply::ok()
    }
}

/// fw_logs_register: cmd_flags bit 0 registers the driver for log events, clear unregisters.
pub(super) fn register(m: &mut E810Model, c: &Cmd) -> Reply {
    m.fwlog.registered = c.p[0] & AQ_REGISTER != 0;
    Reply::ok()
}
