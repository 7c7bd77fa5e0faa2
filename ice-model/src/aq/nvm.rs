//! Resource locks and NVM reads: request/release resource (0x0008/0x0009) over
//! [`crate::resources`], and NVM read (0x0701) over [`crate::nvm`]. Layouts from Linux 6.12
//! `ice_adminq_cmd.h` (`struct ice_aqc_req_res`, `struct ice_aqc_nvm`) and `ice_nvm.c`
//! (`ice_aq_read_nvm`); docs/linux-ice-probe.md section 3.

use super::{Cmd, Reply, RC_EINVAL};
use crate::nvm::NvmSpace;
use crate::resources::{glbl_status, ResourceAnswer, ResourceId};
use crate::E810Model;

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

/// The answer's parameters: the request's, with timeout @4 and status @12 filled in.
fn answer(p: &[u8; 16], a: ResourceAnswer) -> [u8; 16] {
    let mut q = *p;
    q[4..8].copy_from_slice(&a.timeout_ms.to_le_bytes());
    q[12..14].copy_from_slice(&a.status.to_le_bytes());
    q
}

/// req_res: res_id @0, access @2 (1 read, 2 write), timeout @4 (ms); the answer's timeout @4
/// and, for the global config lock, status @12.
pub(super) fn req_res(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let timeout = u32::from_le_bytes(p[4..8].try_into().unwrap());
    match m.resources.request(le16(p, 0), le16(p, 2), timeout) {
        Ok(a) => {
            if le16(p, 0) == ResourceId::GlobalConfig as u16 && a.status == glbl_status::SUCCESS {
                m.pkg_bufs = 0; // a new download begins
            }
            Reply {
                params: Some(answer(p, a)),
                ..Reply::ok()
            }
        }
        Err((rc, a)) => Reply {
            params: Some(answer(p, a)),
            ..Reply::err(rc)
        },
    }
}

/// release_res: res_id @0.
pub(super) fn release_res(m: &mut E810Model, c: &Cmd) -> Reply {
    match m.resources.release(le16(c.p, 0)) {
        Ok(()) => Reply::ok(),
        Err(rc) => Reply::err(rc),
    }
}

/// nvm_read: 24-bit byte offset (@0 low 16 bits, @2 high 8), cmd_flags @3 (bit 7: flat flash
/// rather than Shadow RAM), module_typeid @4 (0: from the start), length @6; the data goes
/// into the buffer. Reads need the NVM resource, as on the card.
pub(super) fn nvm_read(m: &mut E810Model, c: &Cmd) -> Reply {
    let p = c.p;
    let offset = u32::from(le16(p, 0)) | u32::from(p[2]) << 16;
    let space = if p[3] & 0x80 != 0 {
        NvmSpace::Flash
    } else {
        NvmSpace::ShadowRam
    };
    let len = usize::from(le16(p, 6));
    if !c.has_buf || le16(p, 4) != 0 || len > c.buf_len {
        return Reply::err(RC_EINVAL);
    }
    if !m.resources.held(ResourceId::Nvm) {
        // The firmware refuses an NVM access by a function that does not own the NVM.
        return Reply::err(super::RC_EACCES);
    }
    match m.nvm.read(space, offset, len) {
        Ok(data) => Reply {
            data: data.to_vec(),
            ..Reply::ok()
        },
        Err(rc) => Reply::err(rc),
    }
}
