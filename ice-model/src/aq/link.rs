//! MAC/PHY and link commands, and the link status event the model posts on the receive queue
//! (ARQ) when the link changes (\[AQC\] `ice_aqc_set_mac_cfg`, `ice_aqc_restart_an`,
//! `ice_aqc_get_link_status(_data)`).

use super::opcode::Opcode;
use super::{Cmd, Reply, FLAG_CMP, FLAG_DD, RC_EINVAL, RC_ENOMEM};
use crate::E810Model;

/// set_mac_cfg: remember what the driver asked for (max frame @0, pause timers).
pub(super) fn set_mac_cfg(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    m.mac_cfg = [0, 4, 6].map(|o| u16::from_le_bytes([p[o], p[o + 1]]));
    Reply::ok()
}

/// restart_an: cmd_flags @2, bit 2 ENABLE brings the link up, clear takes it down.
pub(super) fn restart_an(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    if p[0] != 0 {
        return Reply::err(RC_EINVAL);
    }
    let up = p[2] & 0x4 != 0;
    if up != m.link_up {
        m.link_up = up;
        if m.lse_enabled {
            m.post_link_event();
        }
    }
    Reply::ok()
}

/// get_link_status: cmd_flags @2 bits 1:0 = 3 enables LSE, 2 disables.
pub(super) fn get_link_status(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    match u16::from_le_bytes([p[2], p[3]]) & 0x3 {
        3 => m.lse_enabled = true,
        2 => m.lse_enabled = false,
        _ => {}
    }
    if c.buf_len < 32 {
        return Reply {
            datalen: Some(32),
            ..Reply::err(RC_ENOMEM)
        };
    }
    c.needs_buf(Reply {
        data: m.link_data(),
        ..Reply::ok()
    })
}

impl E810Model {
    /// get_link_status data (V1, 32 bytes): link_info @2 (UP b0, MEDIA_AVAILABLE b6),
    /// max_frame_size @6, link_speed @10 (100G = b10).
    fn link_data(&self) -> Vec<u8> {
        let mut d = vec![0u8; 32];
        d[2] = 0x40 | self.link_up as u8;
        d[6..8].copy_from_slice(&9728u16.to_le_bytes());
        if self.link_up {
            d[10..12].copy_from_slice(&(1u16 << 10).to_le_bytes());
        }
        d
    }
    /// Writes a link status event (opcode 0x0607) into the next free ARQ buffer.
    fn post_link_event(&mut self) {
        let n = self.arq.entries();
        if !self.arq.enabled() || n == 0 || self.arq.head == self.arq.tail {
            self.events_dropped += 1;
            return;
        }
        let at = self.arq.base() + self.arq.head as u64 * 32;
        let mut d = [0u8; 32];
        if !self.dma.read(at, &mut d) {
            self.events_dropped += 1;
            return;
        }
        let buf_len = u16::from_le_bytes([d[4], d[5]]) as usize;
        let addr = (u32::from_le_bytes(d[24..28].try_into().unwrap()) as u64) << 32
            | u32::from_le_bytes(d[28..32].try_into().unwrap()) as u64;
        let data = self.link_data();
        if buf_len < data.len() || !self.dma.write(addr, &data) {
            self.events_dropped += 1;
            return;
        }
        let flags = (u16::from_le_bytes([d[0], d[1]]) & !0x1FF) | FLAG_DD | FLAG_CMP;
        d[0..2].copy_from_slice(&flags.to_le_bytes());
        d[2..4].copy_from_slice(&Opcode::GetLinkStatus.value().to_le_bytes());
        d[4..6].copy_from_slice(&(data.len() as u16).to_le_bytes());
        d[6..8].copy_from_slice(&0u16.to_le_bytes());
        self.dma.write(at, &d);
        self.arq.head = (self.arq.head + 1) % n;
    }
}
