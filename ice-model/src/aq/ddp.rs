//! DDP package and Flow Director profile commands: the download, under the global config lock
//! (resource 4, see [`super::nvm`] for the locks), and profile updates under the change lock
//! (resource 3) (\[AQC\] `ice_aqc_req_res`, `ice_aqc_download_pkg`; DPDK
//! `base/ice_ddp.c` `ice_dwnld_cfg_bufs`, `ice_update_pkg`).

use super::{Cmd, Reply, RC_EINVAL, RC_EIO};
use crate::resources::ResourceId;
use crate::E810Model;

/// download_pkg: 4 KiB buffers (RD) under the config lock; LAST_BUF (byte 0 bit 0) activates
/// the package.
pub(super) fn download_pkg(m: &mut E810Model, c: &Cmd) -> Reply {
    let (p, input) = (c.p, c.input);
    if !m.resources.held(ResourceId::GlobalConfig) || input.len() != 4096 {
        return Reply::err(RC_EINVAL);
    }
    m.pkg_bufs += 1;
    m.fd.load_package_buffer(input);
    if p[0] & 1 != 0 {
        m.resources.package_done = true;
    }
    Reply::ok()
}

/// update_package: one buffer (LAST_BUF) under the change lock.
pub(super) fn update_pkg(m: &mut E810Model, c: &Cmd) -> Reply {
    let input = c.input;
    if !m.resources.held(ResourceId::ChangeLock) || !c.has_buf {
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
