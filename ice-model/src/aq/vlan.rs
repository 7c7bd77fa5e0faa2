//! VLAN mode, as firmware that runs single VLAN mode only: get_vlan_mode (0x020D) answers
//! with SVM, set_vlan_mode (0x020C) takes the SVM parameters and refuses double VLAN mode
//! [Linux 6.12 `ice_adminq_cmd.h` `ice_aqc_set_vlan_mode`/`ice_aqc_get_vlan_mode` (100-byte
//! buffers: vlan_mode @0 bit 0 DVM, l2tag_prio_tagging @1, rdma_packet @66, mng_vlan_prot_id
//! @69), `ice_vlan_mode.c`]. Linux asks for DVM when the package supports it, is refused, and
//! falls back to SVM by itself.

use super::{Cmd, Reply, RC_EINVAL};
use crate::E810Model;

const BUF: usize = 100;
/// rdma_packet of the single VLAN mode request (Linux sends 0x1A for double VLAN mode).
const RDMA_PACKET_SVM: u8 = 0x10;

/// get_vlan_mode: vlan_mode 0 (single VLAN mode).
pub(super) fn get_vlan_mode(_: &mut E810Model, c: &Cmd) -> Reply {
    if c.buf_len < BUF {
        return Reply::err(RC_EINVAL);
    }
    c.needs_buf(Reply {
        data: vec![0; BUF],
        ..Reply::ok()
    })
}

/// set_vlan_mode: the SVM parameters are taken (nothing changes: SVM is the only mode); any
/// other request (double VLAN mode) is EINVAL.
pub(super) fn set_vlan_mode(_: &mut E810Model, c: &Cmd) -> Reply {
    match c.input.get(66) {
        Some(&RDMA_PACKET_SVM) if c.input.len() == BUF => Reply::ok(),
        _ => Reply::err(RC_EINVAL),
    }
}
