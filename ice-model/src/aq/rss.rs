//! RSS key and lookup table per VSI: set/get RSS key (0x0B02/0x0B04) and LUT (0x0B03/0x0B05)
//! [Linux 6.12 `ice_adminq_cmd.h` `ice_aqc_get_set_rss_key`/`_lut`, `ice_common.c`
//! `__ice_aq_get_set_rss_key`/`_lut`]. Params: `vsi_id` u16 @0 with VALID (bit 15); the LUT
//! commands add `flags` u16 @2: LUT type bits 1:0 (0 VSI, 1 PF, 2 global) and, for PF and
//! global LUTs, the size in bits 3:2 (0: 128, 1: 512, 2: 2048 entries; a VSI LUT has 64).
//! The key is 52 bytes: 40 standard and 12 extended.

use super::{Cmd, Reply, RC_EINVAL, RC_ENOENT};
use crate::E810Model;

const VSI_VALID: u16 = 1 << 15;
const KEY_LEN: usize = 52;

/// The VSI a command names, if its VALID bit is set and the VSI exists.
fn vsi(m: &E810Model, c: &Cmd) -> Result<u16, Reply> {
    let id = u16::from_le_bytes([c.p[0], c.p[1]]);
    if id & VSI_VALID == 0 {
        return Err(Reply::err(RC_EINVAL));
    }
    let v = id & 0x3FF;
    if !m.vsis.contains_key(&v) {
        return Err(Reply::err(RC_ENOENT));
    }
    Ok(v)
}

/// The LUT size the flags ask for, or None for a combination the card does not have.
fn lut_len(flags: u16) -> Option<usize> {
    match (flags & 3, flags >> 2 & 3) {
        (0, _) => Some(64),
        (1, 0) => Some(128),
        (1 | 2, 1) => Some(512),
        (1, 2) => Some(2048),
        _ => None,
    }
}

/// set_rss_key: the 52-byte key for the VSI.
pub(super) fn set_key(m: &mut E810Model, c: &Cmd) -> Reply {
    let v = match vsi(m, c) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(key) = <[u8; KEY_LEN]>::try_from(c.input) else {
        return Reply::err(RC_EINVAL);
    };
    m.rss_keys.insert(v, key);
    Reply::ok()
}

/// get_rss_key: the VSI's key (zeros until one was set).
pub(super) fn get_key(m: &mut E810Model, c: &Cmd) -> Reply {
    let v = match vsi(m, c) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if c.buf_len < KEY_LEN {
        return Reply::err(RC_EINVAL);
    }
    let data = m.rss_keys.get(&v).copied().unwrap_or([0; KEY_LEN]).to_vec();
    c.needs_buf(Reply {
        data,
        ..Reply::ok()
    })
}

/// set_rss_lut: a table of the size the flags name, one queue index per byte.
pub(super) fn set_lut(m: &mut E810Model, c: &Cmd) -> Reply {
    let v = match vsi(m, c) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let flags = u16::from_le_bytes([c.p[2], c.p[3]]);
    if lut_len(flags) != Some(c.input.len()) {
        return Reply::err(RC_EINVAL);
    }
    m.rss_luts.insert(v, c.input.to_vec());
    Reply::ok()
}

/// get_rss_lut: the VSI's table, of the size the flags name.
pub(super) fn get_lut(m: &mut E810Model, c: &Cmd) -> Reply {
    let v = match vsi(m, c) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let flags = u16::from_le_bytes([c.p[2], c.p[3]]);
    let Some(len) = lut_len(flags).filter(|&l| l <= c.buf_len) else {
        return Reply::err(RC_EINVAL);
    };
    let mut data = m.rss_luts.get(&v).cloned().unwrap_or_default();
    data.resize(len, 0);
    c.needs_buf(Reply {
        data,
        ..Reply::ok()
    })
}
