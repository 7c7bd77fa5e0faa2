//! DDP package download: the firmware learns the packet-processing pipeline from Intel's
//! package file; without it the driver stays in safe mode (1 queue pair), as Linux and DPDK do
//! ([CMN] `ice_set_safe_mode_caps`). Layout and procedure from DPDK `base/ice_ddp.h/.c`
//! ([DDP]): `ice_pkg_hdr {ver[4], seg_count u32, seg_offset[] u32}`; segments start with
//! `ice_generic_seg_hdr {seg_type u32, ver[4], seg_size u32, seg_id[32]}`; the ICE segment
//! (type 0x10) continues with the device table, the NVM table and the buffer table
//! `{buf_count u32, 4 KiB buffers}`; a buffer begins `{section_count u16, data_end u16,
//! entries {type u32, offset u16, size u16}}` and metadata buffers have bit 31 of their first
//! section type set.

use std::path::Path;

use crate::IceError;

/// Where Linux and DPDK look for the package.
pub const DEFAULT_PKG_PATH: &str = "/lib/firmware/intel/ice/ddp/ice.pkg";
pub const PKG_BUF_SIZE: usize = 4096;
const SEGMENT_TYPE_ICE_E810: u32 = 0x10;
const SEG_HDR_LEN: usize = 44;
const METADATA_BUF: u32 = 1 << 31;

fn u32_at(b: &[u8], o: usize) -> Result<u32, IceError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| IceError::InvalidArg(format!("DDP package truncated at byte {o}")))
}

/// The 4 KiB configuration buffers of the package's E810 segment, in download order, ending
/// before the first metadata buffer.
pub fn config_buffers(pkg: &[u8]) -> Result<Vec<&[u8]>, IceError> {
    let seg_count = u32_at(pkg, 4)? as usize;
    if seg_count == 0 || seg_count > 64 {
        return Err(IceError::InvalidArg(format!(
            "DDP package claims {seg_count} segments"
        )));
    }
    for s in 0..seg_count {
        let off = u32_at(pkg, 8 + 4 * s)? as usize;
        if u32_at(pkg, off)? != SEGMENT_TYPE_ICE_E810 {
            continue;
        }
        let mut o = off + SEG_HDR_LEN;
        let dev_count = u32_at(pkg, o)? as usize;
        o += 4 + 8 * dev_count;
        let nvm_count = u32_at(pkg, o)? as usize;
        o += 4 + 4 * nvm_count;
        let buf_count = u32_at(pkg, o)? as usize;
        o += 4;
        let end = o
            .checked_add(buf_count.saturating_mul(PKG_BUF_SIZE))
            .filter(|&e| e <= pkg.len())
            .ok_or_else(|| {
                IceError::InvalidArg(format!(
                    "DDP buffer table of {buf_count} runs past the file"
                ))
            })?;
        let mut bufs = Vec::new();
        for b in pkg[o..end].chunks_exact(PKG_BUF_SIZE) {
            let sections = u16::from_le_bytes([b[0], b[1]]);
            if sections > 0 && u32_at(b, 4)? & METADATA_BUF != 0 {
                break;
            }
            bufs.push(b);
        }
        if bufs.is_empty() {
            return Err(IceError::InvalidArg(
                "DDP package has no configuration buffers".into(),
            ));
        }
        return Ok(bufs);
    }
    Err(IceError::InvalidArg(
        "DDP package has no E810 segment".into(),
    ))
}

/// Reads the package file, with an error that says what to do when it is missing.
pub fn read_package(path: &Path) -> Result<Vec<u8>, IceError> {
    std::fs::read(path).map_err(|e| {
        IceError::Init(format!(
            "cannot read the DDP package {}: {e}. Without it the E810 runs in safe mode \
             (one queue pair, no Flow Director); install Intel's ice DDP package there",
            path.display()
        ))
    })
}

/// Builds a minimal valid package (one E810 segment with `n` configuration buffers and one
/// metadata buffer). For tests and the model.
pub fn synthetic_package(n: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[1, 0, 0, 0]); // format version
    p.extend_from_slice(&1u32.to_le_bytes()); // seg_count
    p.extend_from_slice(&12u32.to_le_bytes()); // seg_offset[0]
    p.extend_from_slice(&SEGMENT_TYPE_ICE_E810.to_le_bytes());
    p.extend_from_slice(&[1, 3, 0, 0]);
    p.extend_from_slice(&0u32.to_le_bytes()); // seg_size (unused here)
    let mut id = [0u8; 32];
    id[..9].copy_from_slice(b"ICE test ");
    p.extend_from_slice(&id);
    p.extend_from_slice(&0u32.to_le_bytes()); // device table: 0 entries
    p.extend_from_slice(&0u32.to_le_bytes()); // NVM table: 0 entries
    p.extend_from_slice(&((n + 1) as u32).to_le_bytes());
    for i in 0..=n {
        let mut b = vec![0u8; PKG_BUF_SIZE];
        b[0..2].copy_from_slice(&1u16.to_le_bytes());
        b[2..4].copy_from_slice(&16u16.to_le_bytes());
        let ty: u32 = if i == n {
            METADATA_BUF | 1
        } else {
            0x10 + i as u32
        };
        b[4..8].copy_from_slice(&ty.to_le_bytes());
        p.extend_from_slice(&b);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buffers_and_stops_at_metadata() {
        let p = synthetic_package(3);
        let b = config_buffers(&p).unwrap();
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|b| b.len() == PKG_BUF_SIZE));
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert!(config_buffers(&[0u8; 3]).is_err());
        let p = synthetic_package(2);
        assert!(config_buffers(&p[..p.len() - 100]).is_err());
        let mut q = p.clone();
        q[12] = 0x99; // not an E810 segment
        assert!(config_buffers(&q).is_err());
        let e = read_package(Path::new("/nonexistent/ice.pkg"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("safe mode") && e.contains("/nonexistent/ice.pkg"),
            "{e}"
        );
    }
}
