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
    m.rss.load_package_buffer(input);
    // The metadata section (ICE_SID_METADATA, 1) names the package: `ice_meta_sect` {ver[4],
    // name[28], track_id u32} [Linux 6.12 ice_ddp.h], what get_pkg_info_list reports.
    let meta = crate::pipeline::sections(input)
        .unwrap_or_default()
        .into_iter()
        .find(|(ty, s)| *ty == SID_METADATA && s.len() >= 36);
    if let Some((_, s)) = meta {
        m.pkg_meta = Some(s[..36].try_into().expect("36 bytes"));
    }
    if p[0] & 1 != 0 {
        m.resources.package_done = true;
        m.active_pkg = m.pkg_meta;
    }
    Reply::ok()
}

const SID_METADATA: u32 = 1;

/// get_pkg_info_list (0x0C43): `count` u32 then 40-byte entries {ver[4], name[28], track_id,
/// is_in_nvm, is_active, is_active_at_boot, is_modified} [Linux 6.12 ice_adminq_cmd.h
/// `ice_aqc_get_pkg_info_resp`]. The model's NVM holds no package, so the list is empty until a
/// download completes; then it holds the active package, named by its metadata section.
pub(super) fn get_pkg_info_list(m: &mut E810Model, c: &Cmd) -> Reply {
    let mut data = vec![0u8; 4];
    if let Some(meta) = m.active_pkg {
        data[0] = 1;
        data.extend_from_slice(&meta);
        data.extend_from_slice(&[0, 1, 0, 0]); // active, not in NVM, not modified
    }
    c.needs_buf(Reply {
        data,
        ..Reply::ok()
    })
}

/// update_package: one buffer (LAST_BUF) under the change lock, for the Flow Director or the
/// RSS block (by its sections).
pub(super) fn update_pkg(m: &mut E810Model, c: &Cmd) -> Reply {
    let input = c.input;
    if !m.resources.held(ResourceId::ChangeLock) || !c.has_buf {
        return Reply::err(RC_EINVAL);
    }
    if m.faults.refuse_profile_updates {
        return Reply::err(RC_EIO);
    }
    let pipeline = if m.rss.owns_update(input) {
        &mut m.rss
    } else {
        &mut m.fd
    };
    match pipeline.update(input) {
        Ok(()) => Reply::ok(),
        Err(_) => Reply::err(RC_EINVAL),
    }
}
