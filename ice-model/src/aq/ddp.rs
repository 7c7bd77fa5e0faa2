//! DDP package and Flow Director profile commands: the download, under the global config lock
//! (resource 4, see [`super::nvm`] for the locks), and profile updates under the change lock
//! (resource 3) (\[AQC\] `ice_aqc_req_res`, `ice_aqc_download_pkg`; DPDK
//! `base/ice_ddp.c` `ice_dwnld_cfg_bufs`, `ice_update_pkg`).

use super::{Cmd, Reply, RC_EINVAL, RC_EIO, RC_ENOENT};
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
    // The RX parser metadata init section (58): {count u16, offset u16, 24-byte entries}
    // [Linux 6.12 ice_flex_type.h `ice_meta_init_section`], for upload_section.
    for (ty, s) in crate::pipeline::sections(input).unwrap_or_default() {
        if ty != SID_RXPARSER_METADATA_INIT || s.len() < 4 {
            continue;
        }
        let (count, first) = (
            u16::from_le_bytes([s[0], s[1]]) as usize,
            u16::from_le_bytes([s[2], s[3]]) as usize,
        );
        for (i, e) in s[4..].chunks_exact(24).take(count).enumerate() {
            if m.parser_meta_init.len() <= first + i {
                m.parser_meta_init.resize(first + i + 1, [0; 24]);
            }
            m.parser_meta_init[first + i] = e.try_into().expect("24 bytes");
        }
    }
    if p[0] & 1 != 0 {
        m.resources.package_done = true;
        m.active_pkg = m.pkg_meta;
    }
    Reply::ok()
}

const SID_METADATA: u32 = 1;
const SID_RXPARSER_METADATA_INIT: u32 = 58;

/// upload_section (0x0C41): the buffer is a package buffer whose sections name what to read
/// (type, and in the section its count and first entry); the firmware fills the entries in
/// place [Linux 6.12 `ice_ddp.c:ice_aq_upload_section`, `ice_vlan_mode.c`]. The model keeps
/// the RX parser metadata init section (58) of the active package; another type, or entries
/// it does not hold, are ENOENT.
pub(super) fn upload_section(m: &mut E810Model, c: &Cmd) -> Reply {
    let mut data = c.input.to_vec();
    let Some(secs) = crate::pipeline::section_spans(&data) else {
        return Reply::err(RC_EINVAL);
    };
    if m.active_pkg.is_none() {
        return Reply::err(RC_ENOENT);
    }
    for (ty, at, size) in secs {
        if ty != SID_RXPARSER_METADATA_INIT || size < 4 {
            return Reply::err(RC_ENOENT);
        }
        let count = u16::from_le_bytes([data[at], data[at + 1]]) as usize;
        let first = u16::from_le_bytes([data[at + 2], data[at + 3]]) as usize;
        if 4 + 24 * count > size || first + count > m.parser_meta_init.len() {
            return Reply::err(RC_ENOENT);
        }
        for k in 0..count {
            let o = at + 4 + 24 * k;
            data[o..o + 24].copy_from_slice(&m.parser_meta_init[first + k]);
        }
    }
    Reply {
        write_back: true,
        data,
        ..Reply::ok()
    }
}

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
