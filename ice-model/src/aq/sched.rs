//! Scheduler and LAN TX queue commands: the scheduler tree (TEID -> parent, layer) and the
//! queues hanging off its queue groups (\[AQC\] `ice_aqc_query_txsched_res`,
//! `ice_aqc_get_topo`, `ice_aqc_add_elem`, `ice_aqc_delete_elem`, `ice_aqc_add_txqs`,
//! `ice_aqc_dis_txqs`).

use super::{Cmd, Reply, RC_EBUSY, RC_EINVAL, RC_ENOENT};
use crate::regs::*;
use crate::sched::{elem_type, SchedNode, ENTRY_TEID, ROOT_TEID, TC0_TEID};
use crate::tx::TxQueueState;
use crate::E810Model;

/// query_sched_res: generic props (32 B: phys_levels @0, logical_levels @2), then 9 layer
/// props of 32 B (max_sibl_grp_sz @10).
pub(super) fn query_sched_res(_: &mut E810Model, c: &Cmd) -> Reply {
    let mut d = vec![0u8; 32 + 9 * 32];
    d[0..2].copy_from_slice(&(SCHED_LAYERS as u16).to_le_bytes());
    d[2..4].copy_from_slice(&(SCHED_LAYERS as u16).to_le_bytes());
    for l in 0..9 {
        let o = 32 + l * 32;
        d[o] = l as u8;
        d[o + 10..o + 12].copy_from_slice(&8u16.to_le_bytes());
    }
    c.needs_buf(Reply {
        data: d,
        ..Reply::ok()
    })
}

/// get_dflt_topo: num_branches @1; one 224-byte branch {parent_teid, num_elems u16, rsvd,
/// 9 x 24-byte elements {parent_teid, node_teid, elem[16]}} (`struct ice_aqc_get_topo_elem`).
pub(super) fn get_dflt_topo(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let mut q = *p;
    q[1] = 1;
    let mut d = vec![0u8; 8 + 9 * 24];
    d[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let present: Vec<u32> = [ROOT_TEID, TC0_TEID, ENTRY_TEID]
        .into_iter()
        .filter(|t| m.sched.contains_key(t))
        .collect();
    d[4..6].copy_from_slice(&(present.len() as u16).to_le_bytes());
    for (i, teid) in present.into_iter().enumerate() {
        elem_data(&mut d[8 + i * 24..8 + (i + 1) * 24], teid, &m.sched[&teid]);
    }
    c.needs_buf(Reply {
        params: Some(q),
        data: d,
        ..Reply::ok()
    })
}

/// One 24-byte `ice_aqc_txsched_elem_data`: parent TEID, node TEID, element data.
fn elem_data(out: &mut [u8], teid: u32, n: &SchedNode) {
    out[0..4].copy_from_slice(&n.parent.to_le_bytes());
    out[4..8].copy_from_slice(&teid.to_le_bytes());
    out[8..24].copy_from_slice(&n.elem);
}

/// The answer's parameters: the request's, with num_elem_resp @2 (how many were handled).
fn handled(p: &[u8; 16], n: usize) -> [u8; 16] {
    let mut q = *p;
    q[2..4].copy_from_slice(&(n as u16).to_le_bytes());
    q
}

/// get_sched_elems: num_elem_req @0; the buffer holds that many 24-byte elements whose
/// node_teid @4 names the node; each is filled with the node as the firmware keeps it.
/// num_elem_resp @2. An unknown TEID is ENOENT.
pub(super) fn get_sched_elems(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    let n = u16::from_le_bytes([p[0], p[1]]) as usize;
    if n == 0 || input.len() < 24 * n {
        return Reply::err(RC_EINVAL);
    }
    let mut out = input.to_vec();
    for i in 0..n {
        let o = 24 * i;
        let teid = u32::from_le_bytes(input[o + 4..o + 8].try_into().unwrap());
        let Some(node) = m.sched.get(&teid) else {
            return Reply::err(RC_ENOENT);
        };
        elem_data(&mut out[o..o + 24], teid, node);
    }
    Reply {
        write_back: true,
        params: Some(handled(p, n)),
        data: out,
        ..Reply::ok()
    }
}

/// delete_sched_elems: num_elem_req @0 groups of {parent_teid, num_elems u16, rsvd, teid[]};
/// num_elem_resp @2. A node with children is EBUSY, an unknown one ENOENT.
pub(super) fn delete_sched_elems(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    let groups = u16::from_le_bytes([p[0], p[1]]).max(1) as usize;
    let mut o = 0;
    for g in 0..groups {
        let Some(hdr) = input.get(o..o + 8) else {
            return Reply::err(RC_EINVAL);
        };
        let n = u16::from_le_bytes([hdr[4], hdr[5]]) as usize;
        let Some(teids) = input.get(o + 8..o + 8 + 4 * n) else {
            return Reply::err(RC_EINVAL);
        };
        for t in teids.chunks(4) {
            let t = u32::from_le_bytes(t.try_into().unwrap());
            if m.sched.values().any(|node| node.parent == t) {
                return Reply {
                    params: Some(handled(p, g)),
                    ..Reply::err(RC_EBUSY) // still has children
                };
            }
            log::debug!(
                "delete sched node {t:#x}: {:?}",
                m.sched.get(&t).map(|n| n.elem[0])
            );
            if m.sched.remove(&t).is_none() {
                return Reply {
                    params: Some(handled(p, g)),
                    ..Reply::err(RC_ENOENT)
                };
            }
        }
        o += 8 + 4 * n;
    }
    Reply {
        params: Some(handled(p, groups)),
        ..Reply::ok()
    }
}

/// add_sched_elems: num_elem_req @0 groups of {hdr{parent_teid, num_elems, rsvd}, elems[24 B]};
/// the firmware writes each new node_teid back and answers num_elem_resp @2 (groups added).
pub(super) fn add_sched_elems(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    let groups = u16::from_le_bytes([p[0], p[1]]) as usize;
    let mut out = input.to_vec();
    let mut o = 0usize;
    for _ in 0..groups {
        let Some(hdr) = input.get(o..o + 8) else {
            return Reply::err(RC_EINVAL);
        };
        let n = u16::from_le_bytes([hdr[4], hdr[5]]) as usize;
        o += 8;
        for _ in 0..n {
            let Some(e) = input.get(o..o + 24) else {
                return Reply::err(RC_EINVAL);
            };
            let parent = u32::from_le_bytes(e[0..4].try_into().unwrap());
            let Some(layer) = m.sched.get(&parent).map(|n| n.layer) else {
                return Reply::err(RC_ENOENT);
            };
            if layer + 2 >= SCHED_LAYERS {
                return Reply::err(RC_EINVAL); // only queues go below the queue groups
            }
            let teid = m.next_teid;
            m.next_teid += 1;
            let mut node = SchedNode::new(parent, layer + 1, elem_type::SE_GENERIC);
            node.elem.copy_from_slice(&e[8..24]);
            m.sched.insert(teid, node);
            out[o + 4..o + 8].copy_from_slice(&teid.to_le_bytes());
            o += 24;
        }
    }
    Reply {
        write_back: true,
        params: Some(handled(p, groups)),
        data: out,
        ..Reply::ok()
    }
}

/// move_sched_elems: num_elem_req @0 groups of {src_parent_teid, dest_parent_teid,
/// num_elems u16, mode u8, rsvd u8, teid[]}; each node must sit under the source and the
/// destination on the layer above it. num_elem_resp @2.
pub(super) fn move_sched_elems(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    let groups = u16::from_le_bytes([p[0], p[1]]) as usize;
    let mut o = 0;
    for g in 0..groups {
        let Some(hdr) = input.get(o..o + 12) else {
            return Reply::err(RC_EINVAL);
        };
        let src = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
        let dst = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let n = u16::from_le_bytes([hdr[8], hdr[9]]) as usize;
        let Some(teids) = input.get(o + 12..o + 12 + 4 * n) else {
            return Reply::err(RC_EINVAL);
        };
        let Some(dst_layer) = m.sched.get(&dst).map(|n| n.layer) else {
            return Reply::err(RC_ENOENT);
        };
        for t in teids.chunks(4) {
            let t = u32::from_le_bytes(t.try_into().unwrap());
            match m.sched.get_mut(&t) {
                Some(node) if node.parent == src && node.layer == dst_layer + 1 => {
                    node.parent = dst;
                }
                _ => {
                    return Reply {
                        params: Some(handled(p, g)),
                        ..Reply::err(RC_EINVAL)
                    }
                }
            }
        }
        o += 12 + 4 * n;
    }
    Reply {
        params: Some(handled(p, groups)),
        ..Reply::ok()
    }
}
/// add_txqs: groups of {parent_teid, num_txqs u8, rsvd[3], queues[48 B] {txq_id, rsvd, q_teid
/// (written back), txq_ctx[22], rsvd, sched info[16]}}.
pub(super) fn add_txqs(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    let groups = p[0] as usize;
    let mut out = input.to_vec();
    let mut o = 0usize;
    for _ in 0..groups {
        let Some(hdr) = input.get(o..o + 8) else {
            return Reply::err(RC_EINVAL);
        };
        let parent = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
        match m.sched.get(&parent) {
            Some(node) if node.layer == SCHED_LAYERS - 2 => {}
            _ => return Reply::err(RC_EINVAL), // not a queue-group node
        }
        let n = hdr[4] as usize;
        o += 8;
        for _ in 0..n {
            let Some(e) = input.get(o..o + 48) else {
                return Reply::err(RC_EINVAL);
            };
            let q = u16::from_le_bytes([e[0], e[1]]) as usize;
            if q >= m.cfg.num_queues as usize {
                return Reply::err(RC_EINVAL);
            }
            let ctx = &e[8..30];
            let f = |(l, w): (usize, usize)| crate::bits::get_bits(ctx, l, w);
            let len = f(TLAN_QLEN) as u32;
            if len == 0 {
                return Reply::err(RC_EINVAL);
            }
            if m.txq.len() <= q {
                m.txq.resize(q + 1, TxQueueState::default());
            }
            m.txq[q] = TxQueueState {
                enabled: true,
                base: f(TLAN_BASE) << 7,
                len,
                head: 0,
            };
            let teid = m.next_teid;
            m.next_teid += 1;
            let mut leaf = SchedNode::new(parent, SCHED_LAYERS - 1, elem_type::LEAF);
            leaf.queue = Some(q as u16);
            m.sched.insert(teid, leaf);
            out[o + 4..o + 8].copy_from_slice(&teid.to_le_bytes());
            o += 48;
        }
    }
    Reply {
        write_back: true,
        data: out,
        ..Reply::ok()
    }
}
/// dis_txqs: groups {parent_teid, num_qs u8, rsvd u8, q_id u16[]}; num_entries @1.
pub(super) fn dis_txqs(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    let groups = p[1] as usize;
    let mut o = 0;
    for _ in 0..groups {
        let Some(h) = input.get(o..o + 6) else {
            return Reply::err(RC_EINVAL);
        };
        let n = h[4] as usize;
        let ids = o + 6;
        for k in 0..n {
            let Some(b) = input.get(ids + 2 * k..ids + 2 * k + 2) else {
                return Reply::err(RC_EINVAL);
            };
            let q = u16::from_le_bytes([b[0], b[1]]) as usize;
            match m.txq.get_mut(q) {
                Some(s) if s.enabled => s.enabled = false,
                _ => return Reply::err(RC_ENOENT), // not an enabled queue
            }
            // The queue's leaf goes with it.
            m.sched.retain(|_, n| n.queue != Some(q as u16));
        }
        // Groups are padded to an even number of queue ids.
        o = ids + 2 * (n + n % 2);
    }
    Reply::ok()
}
