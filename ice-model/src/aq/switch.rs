//! Switch commands: the switch configuration, VSIs, and shared resources (\[AQC\]
//! `ice_aqc_get_sw_cfg`, `ice_aqc_add_get_update_free_vsi`, `ice_aqc_alloc_free_res_cmd`).

use super::{Cmd, Reply, RC_EINVAL, RC_ENOENT, RC_ENOSPC};
use crate::swrules::{
    parse_vsi_list, SwRule, RULE_HDR, T_LKUP_RX, T_LKUP_TX, T_PRUNE_LIST_CLEAR, T_PRUNE_LIST_SET,
    T_VSI_LIST_CLEAR, T_VSI_LIST_SET,
};
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

/// add_sw_rules: num_rules @0; each element a lookup rule {type, status, recipe, src, act,
/// index (written back), hdr_len, header} or a VSI/prune list set/clear {type, status,
/// index, number_vsi, vsi[]}. ENOSPC when the rule table is full, ENOENT for a VSI that does not
/// exist.
pub(super) fn add_sw_rules(m: &mut E810Model, c: &Cmd) -> Reply {
    let n = u16::from_le_bytes([c.p[0], c.p[1]]) as usize;
    let mut out = c.input.to_vec();
    let mut o = 0;
    for _ in 0..n {
        match list_element(m, &c.input[o.min(c.input.len())..]) {
            Some(Ok(len)) => {
                o += len;
                continue;
            }
            Some(Err(r)) => return r,
            None => {}
        }
        let Some((rule, len)) = c.input.get(o..).and_then(SwRule::parse) else {
            return Reply::err(RC_EINVAL);
        };
        if rule.kind != T_LKUP_RX && rule.kind != T_LKUP_TX {
            return Reply::err(RC_EINVAL);
        }
        log::debug!("switch rule: {rule:?}");
        let Some(idx) = m.sw_rules.add(rule) else {
            return Reply::err(RC_ENOSPC);
        };
        out[o + 12..o + 14].copy_from_slice(&idx.to_le_bytes());
        o += len;
    }
    Reply {
        write_back: true,
        data: out,
        ..Reply::ok()
    }
}

/// A VSI or prune list set/clear element at the start of `e`: applied, and its length;
/// `None` if `e` holds another kind of element.
fn list_element(m: &mut E810Model, e: &[u8]) -> Option<Result<usize, Reply>> {
    let kind = e.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]))?;
    let set = match kind {
        T_VSI_LIST_SET | T_PRUNE_LIST_SET => true,
        T_VSI_LIST_CLEAR | T_PRUNE_LIST_CLEAR => false,
        _ => return None,
    };
    let Some((index, vsis, len)) = parse_vsi_list(e) else {
        return Some(Err(Reply::err(RC_EINVAL)));
    };
    if vsis.iter().any(|v| !m.vsis.contains_key(v)) {
        return Some(Err(Reply::err(RC_ENOENT)));
    }
    let lists = if matches!(kind, T_VSI_LIST_SET | T_VSI_LIST_CLEAR) {
        &mut m.sw_rules.vsi_lists
    } else {
        &mut m.sw_rules.prune_lists
    };
    let list = lists.entry(index).or_default();
    for v in vsis {
        let member = list.contains(&v);
        if set && !member {
            list.push(v);
        } else if !set && member {
            list.retain(|&x| x != v);
        }
    }
    Some(Ok(len))
}

/// update_sw_rules: VSI/prune list elements set or clear members; lookup rules naming their
/// index @12 get the new action @8 (ENOENT for an index that holds no rule).
pub(super) fn update_sw_rules(m: &mut E810Model, c: &Cmd) -> Reply {
    if let Some(r) = list_element(m, c.input) {
        return match r {
            Ok(_) => Reply::ok(),
            Err(r) => r,
        };
    }
    each_rule(c, |idx, act| m.sw_rules.update(idx, act))
}

/// remove_sw_rules: the rules at the listed indices @12 go; ENOENT for one that holds none.
pub(super) fn remove_sw_rules(m: &mut E810Model, c: &Cmd) -> Reply {
    each_rule(c, |idx, _| m.sw_rules.remove(idx))
}

/// Applies `f(index, act)` to every rule element of an update/remove; EINVAL for a cut-short
/// buffer, ENOENT as soon as `f` finds no rule.
fn each_rule(c: &Cmd, mut f: impl FnMut(u16, u32) -> bool) -> Reply {
    let n = u16::from_le_bytes([c.p[0], c.p[1]]) as usize;
    let mut o = 0;
    for _ in 0..n {
        let Some(e) = c.input.get(o..o + RULE_HDR) else {
            return Reply::err(RC_EINVAL);
        };
        let idx = u16::from_le_bytes([e[12], e[13]]);
        let act = u32::from_le_bytes(e[8..12].try_into().unwrap());
        if !f(idx, act) {
            return Reply::err(RC_ENOENT);
        }
        o += RULE_HDR + u16::from_le_bytes([e[14], e[15]]) as usize;
    }
    Reply::ok()
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

/// The answer of add/update/free VSI: vsi_num @0, vsi_used @4, vsi_free @6
/// (`struct ice_aqc_add_update_free_vsi_resp`).
fn vsi_answer(m: &E810Model, p: &[u8; 16], v: u16) -> Reply {
    let mut q = *p;
    q[0..2].copy_from_slice(&v.to_le_bytes());
    q[2..4].fill(0);
    let used = m.vsis.len() as u16;
    q[4..6].copy_from_slice(&used.to_le_bytes());
    q[6..8].copy_from_slice(&(MAX_VSI - used).to_le_bytes());
    Reply {
        params: Some(q),
        ..Reply::ok()
    }
}

/// VSI type PF (`ICE_AQ_VSI_TYPE_PF`; 0 VF, 1 VMDQ2, 3 EMP_MNG).
const VSI_TYPE_PF: u16 = 2;
/// VSIs the switch holds (`ICE_MAX_VSI`).
const MAX_VSI: u16 = 768;
/// VSI context size (`struct ice_aqc_vsi_props`).
const VSI_CTX: usize = 128;

/// add_vsi: vsi_flags @6 (type bits 1:0: 2 PF [AQC ICE_AQ_VSI_TYPE_PF], 3 EMP); the context
/// (RD) is kept; answers the new HW VSI number.
pub(super) fn add_vsi(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    if input.len() < VSI_CTX {
        return Reply::err(RC_EINVAL);
    }
    if m.vsis.len() >= MAX_VSI as usize {
        return Reply::err(RC_ENOSPC);
    }
    let v = m.next_vsi;
    m.next_vsi += 1;
    // The first PF-type VSI is the PF's LAN VSI (drivers add it before their Flow Director
    // control VSI, which is a PF-type VSI too).
    if u16::from_le_bytes([p[6], p[7]]) & 3 == VSI_TYPE_PF && m.lan_vsi.is_none() {
        m.lan_vsi = Some(v);
    }
    m.vsis.insert(v, input[..VSI_CTX].to_vec());
    vsi_answer(m, p, v)
}

/// update_vsi: vsi_num @0 (bits 9:0); the context (RD) replaces the kept one. ENOENT for a
/// VSI that does not exist.
pub(super) fn update_vsi(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    let v = u16::from_le_bytes([p[0], p[1]]) & 0x3FF;
    if input.len() < VSI_CTX {
        return Reply::err(RC_EINVAL);
    }
    match m.vsis.get_mut(&v) {
        Some(ctx) => ctx.copy_from_slice(&input[..VSI_CTX]),
        None => return Reply::err(RC_ENOENT),
    }
    vsi_answer(m, p, v)
}

/// free_vsi: vsi_num @0 (bits 9:0); the VSI and its role (LAN, control) go. ENOENT for a VSI
/// that does not exist.
pub(super) fn free_vsi(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let v = u16::from_le_bytes([p[0], p[1]]) & 0x3FF;
    if m.vsis.remove(&v).is_none() {
        return Reply::err(RC_ENOENT);
    }
    if m.lan_vsi == Some(v) {
        m.lan_vsi = None;
    }
    vsi_answer(m, p, v)
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
        (0..n).all(|k| m.fd.free(ty, elem(k)) || m.rss.free(ty, elem(k)))
    };
    if freed {
        Reply::ok()
    } else {
        Reply::err(RC_ENOENT)
    }
}

/// alloc_res: a pool type takes `num_elems` contiguous entries, an FD or RSS profile/TCAM
/// type one;
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
        m.fd.alloc(ty).or_else(|| m.rss.alloc(ty))
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
