//! Link state: get_link_status, link status events and link up (\[AQC\]
//! `ice_aqc_get_link_status_data`, `ice_aqc_restart_an`, `ice_aqc_set_event_mask`).

use log::debug;

use super::{IceDevice, LinkInfo};
use crate::adminq::*;
use crate::IceError;

/// Link speed bits of `link_speed` (\[AQC\] `ICE_AQ_LINK_SPEED_*`) in Mbit/s.
fn speed_mbps(bits: u16) -> u32 {
    const SPEEDS: [(u16, u32); 8] = [
        (1 << 3, 1_000),
        (1 << 5, 10_000),
        (1 << 6, 20_000),
        (1 << 7, 25_000),
        (1 << 8, 40_000),
        (1 << 9, 50_000),
        (1 << 10, 100_000),
        (1 << 11, 200_000),
    ];
    SPEEDS
        .iter()
        .find(|(b, _)| bits & b != 0)
        .map_or(0, |s| s.1)
}

/// Parses get_link_status data (also the payload of a link status event).
pub fn parse_link(data: &[u8]) -> Result<LinkInfo, IceError> {
    if data.len() < 12 {
        return Err(IceError::Firmware(format!(
            "link status of {} bytes",
            data.len()
        )));
    }
    Ok(LinkInfo {
        up: data[2] & 0x01 != 0,
        media_available: data[2] & 0x40 != 0,
        max_frame: u16::from_le_bytes([data[6], data[7]]),
        speed_mbps: speed_mbps(u16::from_le_bytes([data[10], data[11]])),
    })
}

impl IceDevice {
    /// Enables link status events and asks for link up (\[AQC\] set_event_mask, get_link_status
    /// with LSE, restart_an with ENABLE). Returns the link state reported right after.
    pub fn link_up(&mut self) -> Result<LinkInfo, IceError> {
        let lport = self.info.lport;
        let mut d = AqDesc::direct(OP_SET_EVENT_MASK);
        d.params[0] = lport;
        // Unmask link up/down and media events only (bits 1, 2 of the mask; 1 = masked).
        d.set_param_u16(8, !0x6);
        self.send(d, None, false)?;
        self.link_status(true)?;
        let mut d = AqDesc::direct(OP_RESTART_AN);
        d.params[0] = lport;
        d.params[2] = 0x2 | 0x4; // RESTART | ENABLE
        self.send(d, None, false)?;
        self.link_status(false)
    }

    /// get_link_status: lport @0, cmd_flags u16 @2 (3 = enable LSE events) \[AQC\].
    pub fn link_status(&mut self, enable_events: bool) -> Result<LinkInfo, IceError> {
        let mut buf = vec![0u8; 32];
        let mut d = AqDesc::direct(OP_GET_LINK_STATUS);
        d.params[0] = self.info.lport;
        if enable_events {
            d.set_param_u16(2, 3);
        }
        self.send(d, Some(&mut buf), false)?;
        let l = parse_link(&buf)?;
        self.info.link = l;
        Ok(l)
    }

    /// Handles pending firmware events; returns the new link state if one reported it.
    pub fn poll_events(&mut self) -> Result<Option<LinkInfo>, IceError> {
        let mut link = None;
        while let Some(ev) = self.aq.next_event(&self.regs)? {
            if ev.desc.opcode == OP_GET_LINK_STATUS {
                let l = parse_link(&ev.data)?;
                self.info.link = l;
                link = Some(l);
            } else {
                debug!("ignoring firmware event {:#06x}", ev.desc.opcode);
            }
        }
        Ok(link)
    }
}
