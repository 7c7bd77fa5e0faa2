//! Switch commands: the switch configuration, VSIs, and shared resources (\[AQC\]
//! `ice_aqc_get_sw_cfg`, `ice_aqc_add_get_update_free_vsi`, `ice_aqc_alloc_free_res_cmd`).

use super::{Cmd, Reply, RC_EINVAL, RC_ENOENT, RC_ENOSPC};
use crate::E810Model;

/// get_sw_cfg: one physical port element (type 0, number 0) on switch 0x1.
pub(super) fn get_sw_cfg(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let mut q = *p;
    q[2..4].copy_from_slice(&0u16.to_le_bytes()); // no continuation
    q[4..6].copy_from_slice(&1u16.to_le_bytes());
    let data = vec![0x00, 0x00, 0x01, 0x00, m.cfg.pf_id, 0x00];
    c.needs_buf(Reply {
        params: Some(q),
        data,
        ..Reply::ok()
    })
}

/// set_port_params: cmd_flags @0 (bit 2 double VLAN), bad_frame_vsi @2, swid @4,
/// local_fwd_mode @6 (mode bits 1:0, VALID bit 2) (`struct ice_aqc_set_port_params`).
pub(super) fn set_port_params(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    m.port_params.double_vlan = u16::from_le_bytes([p[0], p[1]]) & 0x4 != 0;
    if p[6] & 0x4 != 0 {
        if p[6] & 0x3 == 3 {
            return Reply::err(RC_EINVAL);
        }
        m.port_params.local_fwd_mode = p[6] & 0x3;
    }
    Reply::ok()
}

/// add_vsi: returns the HW VSI number @0, used @4, free @6.
pub(super) fn add_vsi(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    if input.len() < 128 {
        return Reply::err(RC_EINVAL);
    }
    let v = m.next_vsi;
    m.next_vsi += 1;
    // vsi_flags @6, type in bits 1:0: 2 = PF [AQC ICE_AQ_VSI_TYPE_PF].
    match u16::from_le_bytes([p[6], p[7]]) & 3 {
        2 => m.lan_vsi = Some(v),
        3 => m.ctrl_vsi = Some(v),
        _ => {}
    }
    let mut q = *p;
    q[0..2].copy_from_slice(&v.to_le_bytes());
    q[4..6].copy_from_slice(&1u16.to_le_bytes());
    q[6..8].copy_from_slice(&767u16.to_le_bytes());
    Reply {
        params: Some(q),
        ..Reply::ok()
    }
}

/// alloc_res / free_res: num_entries @0 (one group); buffer {res_type, num_elems, elems[]}.
/// The resource type and its indices, or the error reply.
fn res_group(c: &Cmd) -> Result<(u16, usize), Reply> {
    let (p, input) = (c.p, c.input);
    let (Some(ty), Some(n)) = (
        input.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]])),
        input
            .get(2..4)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
    ) else {
        return Err(Reply::err(RC_EINVAL));
    };
    // At least one element: a pool request carries one whatever its count (the first index).
    if u16::from_le_bytes([p[0], p[1]]) != 1 || input.len() < 6 {
        return Err(Reply::err(RC_EINVAL));
    }
    Ok((ty, n))
}

/// free_res: a pool type frees `num_elems` entries from elems[0]; FD profile/TCAM types free
/// every listed index. ENOENT (nothing changes) if one was not allocated.
pub(super) fn free_res(m: &mut E810Model, c: &Cmd) -> Reply {
    let input = c.input;
    let (ty, n) = match res_group(c) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let elem = |k: usize| u16::from_le_bytes([input[4 + 2 * k], input[5 + 2 * k]]);
    let freed = if m.pools.knows(ty) {
        m.pools.free(ty, elem(0), n)
    } else if input.len() < 4 + 2 * n {
        return Reply::err(RC_EINVAL);
    } else {
        (0..n).all(|k| m.fd.free(ty, elem(k)))
    };
    if freed {
        Reply::ok()
    } else {
        Reply::err(RC_ENOENT)
    }
}

/// alloc_res: a pool type takes `num_elems` contiguous entries, an FD profile/TCAM type one;
/// the (first) index goes into elems[0]. ENOSPC when none is free.
pub(super) fn alloc_res(m: &mut E810Model, c: &Cmd) -> Reply {
    let input = c.input;
    let (ty, n) = match res_group(c) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let idx = if m.pools.knows(ty) {
        m.pools.alloc(ty, n)
    } else if n == 1 {
        m.fd.alloc(ty)
    } else {
        return Reply::err(RC_EINVAL);
    };
    let Some(idx) = idx else {
        return Reply::err(RC_ENOSPC);
    };
    let mut data = input.to_vec();
    data[4..6].copy_from_slice(&idx.to_le_bytes());
    Reply {
        write_back: true,
        data,
        ..Reply::ok()
    }
}
