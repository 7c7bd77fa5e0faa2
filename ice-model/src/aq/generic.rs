//! Generic commands: version, capabilities, the NVM's MAC address, and the commands the model
//! accepts without state (\[AQC\] `ice_aqc_get_ver`, `ice_aqc_list_caps`,
//! `ice_aqc_manage_mac_read`, `ice_aqc_clear_pxe`).

use super::{Cmd, Reply, RC_EINVAL};
use crate::E810Model;

/// Commands accepted without effect on the model: q_shutdown, clear_pf_cfg.
pub(super) fn accept(_: &mut E810Model, _: &Cmd) -> Reply {
    Reply::ok()
}

/// get_ver: fw 1.3.0 (branch 0), API 1.7.9 (branch 0).
pub(super) fn get_ver(m: &mut E810Model, _: &Cmd) -> Reply {
    let mut q = [0u8; 16];
    q[0..4].copy_from_slice(&0x0001_0203u32.to_le_bytes()); // rom_ver
    q[4..8].copy_from_slice(&4242u32.to_le_bytes()); // fw_build
    q[8..12].copy_from_slice(&[0, 1, 3, 0]);
    q[12..16].copy_from_slice(&[0, m.faults.api_major.unwrap_or(1), 7, 9]);
    Reply {
        params: Some(q),
        ..Reply::ok()
    }
}

/// driver_ver: major, minor, build, subbuild @0..4 and the version string in the buffer (RD);
/// the firmware keeps them (they show in its logs and management views).
pub(super) fn driver_ver(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let text = String::from_utf8_lossy(c.input.split(|&b| b == 0).next().unwrap_or(&[]));
    m.driver_version = Some(([p[0], p[1], p[2], p[3]], text.into_owned()));
    Reply::ok()
}

/// clear_pxe_mode: rx_cnt @0 must be 2 (`ICE_AQC_CLEAR_PXE_RX_READY`).
pub(super) fn clear_pxe_mode(_: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    if p[0] == 2 {
        Reply::ok()
    } else {
        Reply::err(RC_EINVAL)
    }
}

/// list dev/func caps: 32-byte elements {cap u16, major u8, minor u8, number u32, logical_id
/// u32, phys_id u32, ...}, count u32 at params @4 [Linux 6.12 `ice_adminq_cmd.h`
/// `ice_aqc_list_caps_elem`, parsed in `ice_common.c:ice_parse_common_caps`].
/// - RSS (0x0040): number = LUT entries (2048, the PF LUT), logical_id = entry width in bits
///   (6: up to 64 queues per VSI; the model's choice, the card's value is not in our sources).
/// - FD (0x0045): number = Flow Director filters; the guaranteed/best-effort split is read from
///   GLQF_FD_SIZE (`ice_parse_fdir_func_caps`).
/// - DCB (0x0018): number 1, logical_id = TC bitmap (TC0), phys_id = max TCs (8).
pub(super) fn list_caps(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let caps: [(u16, u32, u32, u32); 10] = [
        (0x0005, 1, 0, 0),                               // VALID_FUNCTIONS
        (0x0017, 768, 0, 0),                             // VSI
        (0x0018, 1, 1, 8),                               // DCB
        (0x0040, 2048, 6, 0),                            // RSS
        (0x0041, m.cfg.num_queues, 0, 0),                // RXQS (phys_id = first queue)
        (0x0042, m.cfg.num_queues, 0, 0),                // TXQS
        (0x0043, m.cfg.num_msix, 0, 0),                  // MSIX
        (0x0045, E810Model::FDIR_CAPACITY as u32, 0, 0), // FD
        (0x0047, 9702, 0, 0),                            // MAX_MTU
        (0x0051, 1, 0, 0),                               // RDMA
    ];
    let mut data = Vec::new();
    for (id, number, logical, phys) in caps {
        let mut e = [0u8; 32];
        e[0..2].copy_from_slice(&id.to_le_bytes());
        e[4..8].copy_from_slice(&number.to_le_bytes());
        e[8..12].copy_from_slice(&logical.to_le_bytes());
        e[12..16].copy_from_slice(&phys.to_le_bytes());
        data.extend_from_slice(&e);
    }
    let mut q = *p;
    q[4..8].copy_from_slice(&(caps.len() as u32).to_le_bytes());
    c.needs_buf(Reply {
        params: Some(q),
        data,
        ..Reply::ok()
    })
}

/// manage_mac_read: flags LAN_ADDR_VALID, num_addr 1, one LAN entry.
pub(super) fn manage_mac_read(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let mut q = *p;
    q[0..2].copy_from_slice(&0x10u16.to_le_bytes());
    q[4] = 1;
    let mut e = vec![0u8; 8];
    e[0] = 0; // lport
    e[1] = 0; // LAN
    e[2..8].copy_from_slice(&m.cfg.mac.0);
    c.needs_buf(Reply {
        params: Some(q),
        data: e,
        ..Reply::ok()
    })
}
