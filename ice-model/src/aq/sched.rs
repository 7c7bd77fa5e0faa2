//! Scheduler and LAN TX queue commands: the scheduler tree (TEID -> parent, layer) and the
//! queues hanging off its queue groups (\[AQC\] `ice_aqc_query_txsched_res`,
//! `ice_aqc_get_topo`, `ice_aqc_add_elem`, `ice_aqc_delete_elem`, `ice_aqc_add_txqs`,
//! `ice_aqc_dis_txqs`).

use super::{Cmd, Reply, RC_EINVAL};
use crate::regs::*;
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

/// get_dflt_topo: num_branches @1; one 240-byte branch {parent_teid, num_elems, rsvd, 9 x
/// {parent_teid, node_teid, data[16] (elem_type @0)}}.
pub(super) fn get_dflt_topo(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let mut q = *p;
    q[1] = 1;
    let mut d = vec![0u8; 240];
    d[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let chain = [(0x100u32, 0u32, 1u8), (0x101, 0x100, 2), (0x102, 0x101, 4)];
    let present: Vec<_> = chain
        .iter()
        .filter(|c| m.sched.contains_key(&c.0))
        .collect();
    d[4..6].copy_from_slice(&(present.len() as u16).to_le_bytes());
    for (i, (teid, parent, kind)) in present.into_iter().enumerate() {
        let o = 8 + i * 24;
        d[o..o + 4].copy_from_slice(&parent.to_le_bytes());
        d[o + 4..o + 8].copy_from_slice(&teid.to_le_bytes());
        d[o + 8] = *kind;
        d[o + 9] = 0x7;
    }
    c.needs_buf(Reply {
        params: Some(q),
        data: d,
        ..Reply::ok()
    })
}

/// delete_sched_elems: {parent_teid, num_elems u16, rsvd, teid[]}.
pub(super) fn delete_sched_elems(m: &mut E810Model, c: &Cmd) -> Reply {
    let input = c.input;
    if input.len() < 8 {
        return Reply::err(RC_EINVAL);
    }
    let n = u16::from_le_bytes([input[4], input[5]]) as usize;
    if input.len() < 8 + 4 * n {
        return Reply::err(RC_EINVAL);
    }
    for i in 0..n {
        let t = u32::from_le_bytes(input[8 + 4 * i..12 + 4 * i].try_into().unwrap());
        if m.sched.values().any(|&(parent, _)| parent == t) {
            return Reply::err(12); // EBUSY: still has children
        }
        if m.sched.remove(&t).is_none() {
            return Reply::err(2); // ENOENT
        }
    }
    Reply::ok()
}

/// add_sched_elems: groups of {hdr{parent_teid, num_elems, rsvd}, elems[24 B]}; the firmware
/// writes each new node_teid back.
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
            let Some(&(_, layer)) = m.sched.get(&parent) else {
                return Reply::err(2); // ENOENT
            };
            if layer + 2 >= SCHED_LAYERS {
                return Reply::err(RC_EINVAL); // only queues go below the queue groups
            }
            let teid = m.next_teid;
            m.next_teid += 1;
            m.sched.insert(teid, (parent, layer + 1));
            out[o + 4..o + 8].copy_from_slice(&teid.to_le_bytes());
            o += 24;
        }
    }
    Reply {
        write_back: true,
        data: out,
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
            Some(&(_, layer)) if layer == SCHED_LAYERS - 2 => {}
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
            m.sched.insert(teid, (parent, SCHED_LAYERS - 1));
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
                _ => return Reply::err(2), // ENOENT: not an enabled queue
            }
        }
        // Groups are padded to an even number of queue ids.
        o = ids + 2 * (n + n % 2);
    }
    Reply::ok()
}
