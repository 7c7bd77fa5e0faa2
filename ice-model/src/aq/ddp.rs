//! DDP package and Flow Director profile commands: the global config lock (resource 4) a
//! package download holds, the change lock (resource 3) update_package needs, the download
//! itself and profile updates (\[AQC\] `ice_aqc_req_res`, `ice_aqc_download_pkg`; DPDK
//! `base/ice_ddp.c` `ice_dwnld_cfg_bufs`, `ice_update_pkg`).

use super::{Cmd, Reply, RC_EBUSY, RC_EINVAL, RC_EIO};
use crate::E810Model;

/// Resource id of the change lock (\[AQC\] `ICE_CHANGE_LOCK_RES_ID`).
const CHANGE_LOCK: u16 = 3;

/// req_res: res_id @0 (4 = global config lock), access @2; status @12: 2 (done) when a
/// package is already active. Resource 3 is the change lock update_package needs.
pub(super) fn req_res(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    if u16::from_le_bytes([p[0], p[1]]) == CHANGE_LOCK {
        if m.change_lock_held {
            return Reply::err(RC_EBUSY);
        }
        m.change_lock_held = true;
        return Reply::ok();
    }
    if u16::from_le_bytes([p[0], p[1]]) != 4 {
        return Reply::err(RC_EINVAL);
    }
    let mut q = *p;
    if m.pkg_loaded {
        q[12..14].copy_from_slice(&2u16.to_le_bytes());
    } else if m.cfg_lock_held {
        return Reply::err(12); // EBUSY
    } else {
        m.cfg_lock_held = true;
        m.pkg_bufs = 0;
        q[12..14].copy_from_slice(&0u16.to_le_bytes());
    }
    Reply {
        params: Some(q),
        ..Reply::ok()
    }
}

/// release_res: res_id @0; releases the change lock (3) or the global config lock.
pub(super) fn release_res(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    if u16::from_le_bytes([p[0], p[1]]) == CHANGE_LOCK {
        m.change_lock_held = false;
    } else {
        m.cfg_lock_held = false;
    }
    Reply::ok()
}

/// download_pkg: 4 KiB buffers (RD) under the config lock; LAST_BUF (byte 0 bit 0) activates
/// the package.
pub(super) fn download_pkg(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    if !m.cfg_lock_held || input.len() != 4096 {
        return Reply::err(RC_EINVAL);
    }
    m.pkg_bufs += 1;
    m.fd.load_package_buffer(input);
    if p[0] & 1 != 0 {
        m.pkg_loaded = true;
    }
    Reply::ok()
}

/// update_package: one buffer (LAST_BUF) under the change lock.
pub(super) fn update_pkg(m: &mut E810Model, c: &Cmd) -> Reply {
    let input = c.input;
    if !m.change_lock_held || !c.has_buf {
        return Reply::err(RC_EINVAL);
    }
    if m.faults.refuse_profile_updates {
        return Reply::err(RC_EIO);
    }
    match m.fd.update(input) {
        Ok(()) => Reply::ok(),
        Err(_) => Reply::err(RC_EINVAL),
    }
}
