//! DDP package download: the firmware learns the packet-processing pipeline from Intel's
//! package file; without it the driver stays in safe mode (1 queue pair), as Linux and DPDK do
//! (\[CMN\] `ice_set_safe_mode_caps`). Layout and procedure from DPDK `base/ice_ddp.h/.c`
//! (\[DDP\]): `ice_pkg_hdr {ver\[4\], seg_count u32, seg_offset[] u32}`; segments start with
//! `ice_generic_seg_hdr {seg_type u32, ver\[4\], seg_size u32, seg_id\[32\]}`; the ICE segment
//! (type 0x10) continues with the device table, the NVM table and the buffer table
//! `{buf_count u32, 4 KiB buffers}`; a buffer begins `{section_count u16, data_end u16,
//! entries {type u32, offset u16, size u16}}` and metadata buffers have bit 31 of their first
//! section type set.

use std::path::Path;

use crate::IceError;

/// Where Linux and DPDK look for the package.
pub const DEFAULT_PKG_PATH: &str = "/lib/firmware/intel/ice/ddp/ice.pkg";
/// Size of one package buffer in bytes, as download_pkg and update_package send it
/// (\[DDP\] `ICE_PKG_BUF_SIZE`).
pub const PKG_BUF_SIZE: usize = 4096;
/// Section ids of the Flow Director block's tables: XLT1 (packet type -> PTG), XLT2 (VSI ->
/// VSI group), profile TCAM and field vectors (extraction sequences) [FT `ICE_SID_*_FD`].
pub const SID_XLT1_FD: u32 = 32;
/// See [`SID_XLT1_FD`].
pub const SID_XLT2_FD: u32 = 33;
/// See [`SID_XLT1_FD`].
pub const SID_PROF_TCAM_FD: u32 = 34;
/// See [`SID_XLT1_FD`].
pub const SID_FLD_VEC_FD: u32 = 36;
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
    let mut bufs = Vec::new();
    for b in buffer_table(pkg)? {
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
    Ok(bufs)
}

/// The payloads of every section of type `sid` in the E810 segment, in buffer order
/// (\[DDP\] `ice_pkg_enum_section`; a buffer is checked as `ice_pkg_val_buf` does: 1..=511
/// sections, data_end 12..=4096, each section inside the buffer).
pub fn sections(pkg: &[u8], sid: u32) -> Result<Vec<&[u8]>, IceError> {
    let bad = |what: &str| IceError::InvalidArg(format!("DDP buffer malformed: {what}"));
    let mut out = Vec::new();
    for b in buffer_table(pkg)? {
        let count = u16::from_le_bytes([b[0], b[1]]) as usize;
        let data_end = u16::from_le_bytes([b[2], b[3]]) as usize;
        if !(1..=511).contains(&count) || !(12..=PKG_BUF_SIZE).contains(&data_end) {
            return Err(bad("section count or data_end out of range"));
        }
        for i in 0..count {
            let e = 4 + 8 * i;
            let ty = u32_at(b, e)?;
            let off = u16::from_le_bytes([b[e + 4], b[e + 5]]) as usize;
            let size = u16::from_le_bytes([b[e + 6], b[e + 7]]) as usize;
            if ty != sid {
                continue;
            }
            let sec = b
                .get(off..off + size)
                .filter(|_| off >= 12 && size > 0)
                .ok_or_else(|| bad("section outside its buffer"))?;
            out.push(sec);
        }
    }
    Ok(out)
}

/// Every 4 KiB buffer of the package's E810 segment (\[DDP\] `ice_find_buf_table`).
fn buffer_table(pkg: &[u8]) -> Result<Vec<&[u8]>, IceError> {
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
        return Ok(pkg[o..end].chunks_exact(PKG_BUF_SIZE).collect());
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

/// Packet-type groups of the synthetic package's FD XLT1 table: the packet types the model
/// parses, grouped as a real package groups them (names after \[FT\] `ICE_PTG_*`); others 0.
pub const SYNTHETIC_PTGS: [(u16, u8); 9] = [
    (1, 67),  // MAC payload: L2 other
    (11, 67), // ARP
    (23, 18), // IPv4 payload
    (24, 17), // IPv4/UDP
    (26, 16), // IPv4/TCP
    (28, 18), // IPv4/ICMP
    (89, 21), // IPv6 payload
    (90, 20), // IPv6/UDP
    (92, 19), // IPv6/TCP
];

/// Builds a minimal valid package (one E810 segment with `n` configuration buffers, the first
/// carrying an FD XLT1 table, and one metadata buffer). For tests and the model.
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
        let ty: u32 = if i == n {
            METADATA_BUF | 1
        } else {
            0x10 + i as u32
        };
        let mut secs: Vec<(u32, Vec<u8>)> = vec![(ty, vec![0u8; 4])];
        if i == 0 && n > 0 {
            // FD XLT1: count 1024, offset 0, one PTG byte per packet type.
            let mut x = vec![0u8; 4 + 1024];
            x[0..2].copy_from_slice(&1024u16.to_le_bytes());
            for (ptype, ptg) in SYNTHETIC_PTGS {
                x[4 + ptype as usize] = ptg;
            }
            secs.push((SID_XLT1_FD, x));
        }
        let mut b = vec![0u8; PKG_BUF_SIZE];
        let mut at = 4 + 8 * secs.len();
        for (k, (t, data)) in secs.iter().enumerate() {
            let e = 4 + 8 * k;
            b[e..e + 4].copy_from_slice(&t.to_le_bytes());
            b[e + 4..e + 6].copy_from_slice(&(at as u16).to_le_bytes());
            b[e + 6..e + 8].copy_from_slice(&(data.len() as u16).to_le_bytes());
            b[at..at + data.len()].copy_from_slice(data);
            at = (at + data.len()).div_ceil(4) * 4;
        }
        b[0..2].copy_from_slice(&(secs.len() as u16).to_le_bytes());
        b[2..4].copy_from_slice(&(at as u16).to_le_bytes());
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
