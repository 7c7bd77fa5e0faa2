//! DCB as a port whose firmware LLDP agent runs in IEEE mode with no peer: the commands Linux
//! sends at probe when the DCB capability is present [Linux 6.12 `ice_dcb.c` `ice_init_dcb`,
//! `ice_dcb_lib.c` `ice_init_pf_dcb`; layouts from `ice_adminq_cmd.h`].

use super::{Cmd, Reply, RC_EINVAL, RC_ENOENT};
use crate::sched::{ROOT_TEID, TC0_TEID};
use crate::E810Model;

/// get_cee_dcb_cfg (0x0A07): ENOENT, there is no CEE configuration (the agent runs IEEE).
pub(super) fn get_cee_dcb_cfg(_: &mut E810Model, _: &Cmd) -> Reply {
    Reply::err(RC_ENOENT)
}

/// lldp_get_mib (0x0A00): MIB type in bits 1:0 of byte 0 (0 local, 1 remote). The local MIB
/// is what set_local_mib left, else no TLV (all zeros: the first TLV's type is 0, the end);
/// there is no remote peer.
pub(super) fn lldp_get_mib(m: &mut E810Model, c: &Cmd) -> Reply {
    match c.p[0] & 3 {
        0 => {
            let mut data = m.local_mib.clone();
            data.resize(c.buf_len, 0);
            c.needs_buf(Reply {
                data,
                ..Reply::ok()
            })
        }
        1 => Reply::err(RC_ENOENT),
        _ => Reply::err(RC_EINVAL),
    }
}

/// set_local_mib (0x0A08): the driver's local MIB (RD buffer, at most 1500 bytes), kept for
/// lldp_get_mib.
pub(super) fn set_local_mib(m: &mut E810Model, c: &Cmd) -> Reply {
    if c.input.is_empty() || c.input.len() > 1500 {
        return Reply::err(RC_EINVAL);
    }
    m.local_mib = c.input.to_vec();
    Reply::ok()
}

/// lldp_set_mib_change (0x0A01): MIB change events on or off; no peer, so none come.
pub(super) fn lldp_set_mib_change(_: &mut E810Model, _: &Cmd) -> Reply {
    Reply::ok()
}

/// query_port_ets (0x040E): `port_teid` u32 @0 names the root. The 64-byte answer:
/// tc_valid_bits @0 (TC0), tc_node_teid\[8\] @32 (TC0's node, the rest 0xFFFFFFFF: unused).
pub(super) fn query_port_ets(_: &mut E810Model, c: &Cmd) -> Reply {
    if u32::from_le_bytes(c.p[0..4].try_into().expect("4 bytes")) != ROOT_TEID {
        return Reply::err(RC_EINVAL);
    }
    if c.buf_len < 64 {
        return Reply::err(RC_EINVAL);
    }
    let mut data = vec![0u8; 64];
    data[0] = 1;
    data[32..36].copy_from_slice(&TC0_TEID.to_le_bytes());
    for tc in 1..8 {
        data[32 + 4 * tc..36 + 4 * tc].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    c.needs_buf(Reply {
        data,
        ..Reply::ok()
    })
}
