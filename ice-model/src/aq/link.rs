//! MAC/PHY and link commands, and the link status event the model posts on the receive queue
//! (ARQ) when the link changes (\[AQC\] `ice_aqc_set_mac_cfg`, `ice_aqc_restart_an`,
//! `ice_aqc_get_link_status(_data)`).

use super::opcode::Opcode;
use super::{Cmd, Reply, FLAG_CMP, FLAG_DD, RC_EINVAL, RC_ENOENT, RC_ENOMEM};
use crate::E810Model;

/// The port's one PHY type: 100GBASE-CR4, bit 51 of phy_type_low (Linux `ice_adminq_cmd.h`
/// `ICE_PHY_TYPE_LOW_100GBASE_CR4`); the link speed it runs at is 100G (bit 10).
const PHY_TYPE_LOW: u64 = 1 << 51;
const SPEED_100G: u16 = 1 << 10;
/// set_event_mask bit of the link up/down event (`ICE_AQ_LINK_EVENT_UPDOWN`).
const EVENT_UPDOWN: u16 = 1 << 1;
/// get/set_phy_caps caps byte bits: pause TX/RX (0, 1), link enabled (3), autoneg (4),
/// automatic link update (5) (`ICE_AQC_PHY_*`).
const CAPS_PAUSE: u8 = 0x3;
const CAPS_EN_LINK: u8 = 1 << 3;
const CAPS_AN_MODE: u8 = 1 << 4;
const CAPS_AUTO_LINK_UPDT: u8 = 1 << 5;
/// get_phy_caps report modes (param0 @2 bits 2:1): what the media allows, and the active
/// configuration (`ICE_AQC_REPORT_*`).
const REPORT_ACTIVE_CFG: u16 = 4;
const REPORT_DFLT_CFG: u16 = 8;
/// Size of the get_phy_caps answer (`struct ice_aqc_get_phy_caps_data`, 16 qualified-module
/// records included).
const PHY_CAPS_LEN: usize = 560;

/// get_phy_caps: param0 @2 the report mode. The topology modes report what the PHY can do;
/// the active and default configuration modes report the configuration (set_phy_cfg's last,
/// or link enabled with automatic link update at power-on).
pub(super) fn get_phy_caps(m: &mut E810Model, c: &Cmd) -> Reply {
    if c.buf_len < PHY_CAPS_LEN {
        return Reply {
            datalen: Some(PHY_CAPS_LEN as u16),
            ..Reply::err(RC_ENOMEM)
        };
    }
    let mode = u16::from_le_bytes([c.p[2], c.p[3]]) & 0xE;
    let mut d = vec![0u8; PHY_CAPS_LEN];
    d[0..8].copy_from_slice(&PHY_TYPE_LOW.to_le_bytes());
    d[16] = match mode {
        REPORT_ACTIVE_CFG => m.phy_caps,
        REPORT_DFLT_CFG => CAPS_PAUSE | CAPS_EN_LINK | CAPS_AUTO_LINK_UPDT,
        _ => CAPS_PAUSE | CAPS_AN_MODE,
    };
    d[34] = 0; // no FEC options
    c.needs_buf(Reply {
        data: d,
        ..Reply::ok()
    })
}

/// set_phy_cfg: a 24-byte buffer {phy_type_low, phy_type_high, caps @16, ...}: link enabled
/// (caps bit 3) brings the link up, clear takes it down, with a link event when enabled. A
/// PHY type the port does not have is EINVAL.
pub(super) fn set_phy_cfg(m: &mut E810Model, c: &Cmd) -> Reply {
    let Some(cfg) = c.input.get(0..24) else {
        return Reply::err(RC_EINVAL);
    };
    let low = u64::from_le_bytes(cfg[0..8].try_into().unwrap());
    let high = u64::from_le_bytes(cfg[8..16].try_into().unwrap());
    if high != 0 || low & !PHY_TYPE_LOW != 0 {
        return Reply::err(RC_EINVAL);
    }
    m.phy_caps = cfg[16];
    m.set_link(cfg[16] & CAPS_EN_LINK != 0 && low != 0);
    Reply::ok()
}

/// set_event_mask: lport @0, event_mask @8; a set bit masks that link event (bit 1: link up
/// or down, the only event the model raises) (`struct ice_aqc_set_event_mask`).
pub(super) fn set_event_mask(m: &mut E810Model, c: &Cmd) -> Reply {
    m.event_mask = u16::from_le_bytes([c.p[8], c.p[9]]);
    Reply::ok()
}

/// get_link_topo: the netlist lists no PHY, cage, clock or GNSS node (its node count is 0),
/// so every lookup is ENOENT, as firmware answers for a node it does not have.
pub(super) fn get_link_topo(_: &mut E810Model, _: &Cmd) -> Reply {
    Reply::err(RC_ENOENT)
}

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
    if up {
        m.phy_caps |= CAPS_EN_LINK;
    } else {
        m.phy_caps &= !CAPS_EN_LINK;
    }
    m.set_link(up);
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
    /// Takes the link up or down; a change is a link status event when events are enabled.
    fn set_link(&mut self, up: bool) {
        if up != self.link_up {
            self.link_up = up;
            if self.lse_enabled && self.event_mask & EVENT_UPDOWN == 0 {
                self.post_link_event();
            }
        }
    }

    /// get_link_status data (V1, 32 bytes): link_info @2 (UP b0, MEDIA_AVAILABLE b6),
    /// an_info @3 (AN done b0), max_frame_size @6, link_speed @10, phy_type_low @16.
    fn link_data(&self) -> Vec<u8> {
        let mut d = vec![0u8; 32];
        d[2] = 0x40 | self.link_up as u8;
        d[6..8].copy_from_slice(&9728u16.to_le_bytes());
        d[16..24].copy_from_slice(&PHY_TYPE_LOW.to_le_bytes());
        if self.link_up {
            d[3] = 1;
            d[10..12].copy_from_slice(&SPEED_100G.to_le_bytes());
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
        self.admin_interrupt();
    }
}

/// get_port_options (0x06EA): one option, active, of one port over 4 lanes at 25G (the
/// model's 100GBASE-CR4), none pending. Params: lport_num @0, lport_num_valid @1 bit 0; the
/// answer's port_options_count @2 (bits 3:0), port_options @4 (active index bits 3:0, VALID
/// bit 7), pending_port_option_status @5; the buffer holds 8-byte elements {pmd (bits 3:0
/// PMD count), max_lane_speed (bits 3:0, 5 = 25G), global_scid\[2\], phy_scid\[2\],
/// pf2port_cid\[2\]} [Linux 6.12 `ice_adminq_cmd.h` `ice_aqc_get_port_options`,
/// `ice_common.c:ice_aq_get_port_options`]. A logical port other than 0 is EINVAL.
pub(super) fn get_port_options(_: &mut E810Model, c: &Cmd) -> Reply {
    if c.p[1] & 1 != 0 && c.p[0] != 0 {
        return Reply::err(RC_EINVAL);
    }
    if c.buf_len < 8 {
        return Reply::err(RC_EINVAL);
    }
    let mut q = *c.p;
    q[2] = 1; // one option
    q[4] = 0x80; // option 0 active, valid
    q[5] = 0; // none pending
    c.needs_buf(Reply {
        params: Some(q),
        data: vec![4, 5, 0, 0, 0, 0, 0, 0],
        ..Reply::ok()
    })
}
