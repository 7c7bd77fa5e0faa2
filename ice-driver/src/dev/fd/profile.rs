//! Flow Director flow profiles, programmed into the card through the DDP tables as
//! `ice_flow_add_prof` and `ice_flow_add_entry` do for the FD block. Sources, DPDK
//! `drivers/net/intel/ice/base` @38f72e5 (Linux `ice` has the same code): \[FLOW\] `ice_flow.c`,
//! \[FP\] `ice_flex_pipe.c`, \[DDP\] `ice_ddp.c`/`ice_ddp.h`, \[FT\] `ice_flex_type.h`,
//! \[HWA\] `ice_hw_autogen.h`, \[AQC\] `ice_adminq_cmd.h`.
//!
//! A profile says which packet types it serves and which header words form a filter's key.
//! Making one live takes four steps:
//! 1. A hardware profile id from firmware (alloc_res, type FD_PROF_BLDR_PROFID).
//! 2. The id's swap and input-set registers (GLQF_FDSWAP/FDINSET, GLQF_FDMASK_SEL).
//! 3. One profile-TCAM entry per packet-type group (PTG) of its packet types (alloc_res, type
//!    FD_PROF_BLDR_TCAM). The PTGs come from the package's FD XLT1 table.
//! 4. One update_package buffer under the change lock, carrying three kinds of section:
//!    - the extraction sequence (ES);
//!    - the TCAM entries, keyed by (PTG, VSI group);
//!    - the XLT2 entries that put the PF VSI and the control VSI into this PF's VSI group.
//!
//! The hardware then picks a filter's profile from its training packet (packet type, then PTG,
//! then TCAM), so the programming descriptor's PROF field is a constant. Within one VSI group a
//! PTG selects a single profile, so two live profiles must not share a PTG.

use crate::IceError;

pub(crate) use crate::ddp::{SID_FLD_VEC_FD, SID_PROF_TCAM_FD, SID_XLT1_FD, SID_XLT2_FD};
/// FD block geometry [FP `blk_sizes`]: 1024 packet types, 24 field-vector words per profile,
/// 128 profile ids, 512 TCAM entries.
pub const XLT1_ENTRIES: usize = 1024;
pub const FVW: usize = 24;

/// Admin opcodes \[AQC\]: allocate/free resources and update package (the change lock is
/// request/release resource with resource id 3).
pub const OP_ALLOC_RES: u16 = 0x0208;
pub const OP_FREE_RES: u16 = 0x0209;
pub const OP_UPDATE_PKG: u16 = 0x0C42;
pub const CHANGE_LOCK_RES_ID: u16 = 3;
/// Resource types [AQC `ICE_AQC_RES_TYPE_FD_PROF_BLDR_*`] and flags (IGNORE_INDEX,
/// SCAN_BOTTOM).
pub const RES_FD_PROFID: u16 = 0x58;
pub const RES_FD_TCAM: u16 = 0x59;
pub const RES_IGNORE_INDEX: u16 = 0x2000;
pub const RES_SCAN_BOTTOM: u16 = 0x1000;

/// Protocol ids the parser tags headers with [`ice_protocol_type.h` `enum ice_prot_id`].
pub const PROT_MAC_OF_OR_S: u8 = 1;
pub const PROT_ETYPE_OL: u8 = 9;
pub const PROT_IPV4_OF_OR_S: u8 = 32;
pub const PROT_IPV6_OF_OR_S: u8 = 40;
pub const PROT_TCP_IL: u8 = 49;
pub const PROT_UDP_IL_OR_S: u8 = 53;

/// FD registers \[HWA\]: `GLQF_FDINSET(p, j)`, `GLQF_FDSWAP(p, j)` (p < 128, j < 6; byte k of
/// register j covers field-vector word 4j + k), `GLQF_FDMASK_SEL(p)`, and `GLQF_FD_SIZE`
/// (guaranteed filters 14:0, best-effort 30:16).
pub fn glqf_fdinset(p: u8, j: usize) -> u64 {
    0x0041_2000 + 4 * p as u64 + 512 * j as u64
}
pub fn glqf_fdswap(p: u8, j: usize) -> u64 {
    0x0041_3000 + 4 * p as u64 + 512 * j as u64
}
pub fn glqf_fdmask_sel(p: u8) -> u64 {
    0x0041_0400 + 4 * p as u64
}
pub const GLQF_FD_SIZE: u64 = 0x0046_0010;

/// One field-vector word: 2 bytes at `off` from the start of the header tagged `prot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FvWord {
    pub prot: u8,
    pub off: u16,
}

/// An unused word [FT `ICE_PROT_INVALID`, `ICE_FV_OFFSET_INVAL`].
pub const UNUSED: FvWord = FvWord {
    prot: 0xFF,
    off: 0x1FF,
};

/// Packet-type bitmaps of Linux `ice_flow.c`, as (word, bits): ptype n is bit n % 32 of
/// word n / 32.
type Bitmap = &'static [(usize, u32)];
const PT_MAC_OFOS: Bitmap = &[
    (0, 0xFDC0_0846),
    (1, 0xBFBF_7F7E),
    (2, 0xF700_01DF),
    (3, 0xFEFD_FDFB),
    (4, 0x0000_077E),
    (8, 0x0040_0000),
    (9, 0x03FF_F000),
    (10, 0x7FFF_FFE0),
];
const PT_IPV4_OFOS: Bitmap = &[
    (0, 0x1DC0_0000),
    (1, 0x0400_0800),
    (5, 0x0000_0155),
    (9, 0x000F_C000),
];
const PT_UDP_IL: Bitmap = &[
    (0, 0x8100_0000),
    (1, 0x2020_4040),
    (2, 0x0400_0010),
    (3, 0x8081_0102),
    (4, 0x0000_0040),
    (9, 0x0041_0000),
    (10, 0x9084_2000),
    (11, 0x0000_0007),
];
const PT_TCP_IL: Bitmap = &[
    (0, 0x0400_0000),
    (1, 0x8081_0102),
    (2, 0x1000_0040),
    (3, 0x0204_0408),
    (4, 0x0000_0102),
    (9, 0x0082_0000),
    (10, 0x2108_4000),
];
/// Removed from every non-PPPoE, non-PFCP segment [FLOW `ice_flow_proc_seg_hdrs`].
const PT_PPPOE: Bitmap = &[(9, 0x03FF_E000)];
const PT_PFCP: Bitmap = &[(10, 0x8000_0000), (11, 0x0000_0007)];

fn bitmap_set(b: Bitmap) -> Vec<bool> {
    let mut v = vec![false; XLT1_ENTRIES];
    for &(w, bits) in b {
        for bit in 0..32 {
            if bits >> bit & 1 == 1 {
                v[w * 32 + bit] = true;
            }
        }
    }
    v
}

/// `all` of the bitmaps, minus PPPoE and PFCP, as a sorted ptype list.
fn ptypes_of(all: &[Bitmap]) -> Vec<u16> {
    let sets: Vec<Vec<bool>> = all.iter().map(|b| bitmap_set(b)).collect();
    let (pppoe, pfcp) = (bitmap_set(PT_PPPOE), bitmap_set(PT_PFCP));
    (0..XLT1_ENTRIES)
        .filter(|&p| sets.iter().all(|s| s[p]) && !pppoe[p] && !pfcp[p])
        .map(|p| p as u16)
        .collect()
}

/// What one of the driver's profiles (the `crate::fdir::PROF_*` ids) matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileDef {
    pub name: &'static str,
    /// Packet types the profile serves.
    pub ptypes: Vec<u16>,
    /// The key fields in ascending field order: (protocol, byte offset, bytes).
    pub fields: &'static [(u8, u16, u16)],
}

/// The definition of profile `kind` (1..=6, the `PROF_*` ids of filter.rs), as the Linux driver builds it:
/// `ETH` segments for the L2 profiles, `IPV4|UDP` style segments for the L3/L4 ones.
pub fn profile_def(kind: u8) -> Option<ProfileDef> {
    // IPv6 pay ptypes 90 (UDP) and 92 (TCP) [FT `ICE_PTYPE_IPV6_UDP_PAY`, `_TCP_PAY`]: the
    // intersection of Linux's ipv6_ofos and udp_il/tcp_il bitmaps for a non-tunnel segment.
    let (name, ptypes, fields): (_, Vec<u16>, &'static [(u8, u16, u16)]) = match kind {
        1 => (
            "ETH dst",
            ptypes_of(&[PT_MAC_OFOS]),
            &[(PROT_MAC_OF_OR_S, 0, 6)],
        ),
        2 => (
            "ETH type",
            ptypes_of(&[PT_MAC_OFOS]),
            &[(PROT_ETYPE_OL, 0, 2)],
        ),
        3 => (
            "IPv4 dst + UDP dst port",
            ptypes_of(&[PT_IPV4_OFOS, PT_UDP_IL]),
            &[(PROT_IPV4_OF_OR_S, 16, 4), (PROT_UDP_IL_OR_S, 2, 2)],
        ),
        4 => (
            "IPv4 dst + TCP dst port",
            ptypes_of(&[PT_IPV4_OFOS, PT_TCP_IL]),
            &[(PROT_IPV4_OF_OR_S, 16, 4), (PROT_TCP_IL, 2, 2)],
        ),
        5 => (
            "IPv6 dst + UDP dst port",
            vec![90],
            &[(PROT_IPV6_OF_OR_S, 24, 16), (PROT_UDP_IL_OR_S, 2, 2)],
        ),
        6 => (
            "IPv6 dst + TCP dst port",
            vec![92],
            &[(PROT_IPV6_OF_OR_S, 24, 16), (PROT_TCP_IL, 2, 2)],
        ),
        _ => return None,
    };
    Some(ProfileDef {
        name,
        ptypes,
        fields,
    })
}

/// The extraction sequence of `fields`: FD fills the vector from word 23 down, two bytes a
/// word [FLOW `ice_flow_xtract_fld`, FD block `reverse`].
pub fn extraction(fields: &[(u8, u16, u16)]) -> [FvWord; FVW] {
    let mut es = [UNUSED; FVW];
    let mut idx = FVW;
    for &(prot, off, bytes) in fields {
        for w in 0..bytes.div_ceil(2) {
            idx -= 1;
            es[idx] = FvWord {
                prot,
                off: off + 2 * w,
            };
        }
    }
    es
}

/// Source/destination field pairs the hardware swaps in training packets (built from the
/// transmit side) [FP `ice_fd_pairs`]: (protocol, words, offset), partners at 2k and 2k + 1.
/// Only the non-tunnel entries; the tunnel ones never occur in these profiles.
const FD_PAIRS: [(u8, u16, u16); 8] = [
    (PROT_IPV4_OF_OR_S, 2, 12),
    (PROT_IPV4_OF_OR_S, 2, 16),
    (PROT_IPV6_OF_OR_S, 8, 8),
    (PROT_IPV6_OF_OR_S, 8, 24),
    (PROT_TCP_IL, 1, 0),
    (PROT_TCP_IL, 1, 2),
    (PROT_UDP_IL_OR_S, 1, 0),
    (PROT_UDP_IL_OR_S, 1, 2),
];

/// A profile's final extraction sequence and its swap and input-set register values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapRegs {
    pub es: [FvWord; FVW],
    pub swap: [u32; 6],
    pub inset: [u32; 6],
}

/// [FP `ice_update_fd_swap`]: a half of a source/destination pair present without its partner
/// gets the partner appended below the used words, masked out of the input set; each present
/// half then takes its partner's words when a training packet is swapped.
pub fn fd_swap(es: &[FvWord; FVW]) -> Result<SwapRegs, IceError> {
    let mut es = *es;
    let first_valid = es.iter().position(|w| *w != UNUSED).unwrap_or(FVW);
    let orig_first_free = first_valid as isize - 1;
    let mut first_free = orig_first_free;
    let mut present = [false; FD_PAIRS.len()];
    let mut start = [0isize; FD_PAIRS.len()];
    for (i, w) in es.iter().enumerate() {
        for (j, &(prot, _, off)) in FD_PAIRS.iter().enumerate() {
            if w.prot == prot && w.off == off {
                present[j] = true;
                start[j] = i as isize;
            }
        }
    }
    let mut mask_sel = 0u32;
    for k in (0..FD_PAIRS.len()).step_by(2) {
        if present[k] == present[k + 1] {
            continue;
        }
        let missing = if present[k] { k + 1 } else { k };
        let (prot, count, off) = FD_PAIRS[missing];
        if first_free + 1 < count as isize {
            return Err(IceError::InvalidArg(
                "Flow Director profile needs more than 24 field-vector words".into(),
            ));
        }
        for w in 0..count {
            let at = (first_free - w as isize) as usize;
            es[at] = FvWord {
                prot,
                off: off + 2 * w,
            };
            mask_sel |= 1 << at;
        }
        start[missing] = first_free;
        present[missing] = true;
        first_free -= count as isize;
    }
    let mut used: [u8; FVW] = std::array::from_fn(|i| i as u8 | 0x80);
    for si in (orig_first_free + 1) as usize..FVW {
        for (j, &(_, _, _)) in FD_PAIRS.iter().enumerate() {
            if start[j] != si as isize || !present[j] || mask_sel & 1 << si != 0 {
                continue;
            }
            let partner = j ^ 1;
            for k in 0..FD_PAIRS[partner].1 as usize {
                used[si - k] = (start[partner] as usize - k) as u8 | 0x80;
            }
        }
    }
    let (mut swap, mut inset) = ([0u32; 6], [0u32; 6]);
    for j in 0..6 {
        for k in 0..4 {
            let i = 4 * j + k;
            if mask_sel & 1 << i == 0 {
                swap[j] |= (used[i] as u32) << (8 * k);
                // Index 31 with the valid bit, as the drivers write for every word.
                inset[j] |= 0x9F << (8 * k);
            }
        }
    }
    Ok(SwapRegs { es, swap, inset })
}

/// The 16-bit VSI group value [FT `ICE_VSIG_VALUE`]: index in bits 12:0, PF in 15:13.
pub fn vsig_value(idx: u16, pf_id: u8) -> u16 {
    (idx & 0x1FFF) | ((pf_id as u16 & 7) << 13)
}

/// The 10-byte TCAM key of (PTG, VSIG) with the packet flags don't-care [FP `ice_prof_gen_key`,
/// `ice_set_key`]: per value byte v with don't-care mask dc, key = !v | dc and key_inv = v | dc.
pub fn tcam_key(ptg: u8, vsig: u16) -> [u8; 10] {
    let v = [0, 0, ptg, vsig as u8, (vsig >> 8) as u8];
    let dc = [0xFF, 0xFF, 0, 0, 0];
    let mut k = [0u8; 10];
    for i in 0..5 {
        k[i] = !v[i] | dc[i];
        k[5 + i] = v[i] | dc[i];
    }
    k
}

/// A key no packet matches (a (0, 0) bit pair never matches) [FP `ice_rel_tcam_idx`].
pub const TCAM_NEVER: [u8; 10] = [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF];

/// Section payloads of an update buffer [FT `ice_pkg_es`, `ice_prof_tcam_entry`,
/// `ice_xlt2_section`]; all little-endian, one entry each.
pub fn es_section(p: u8, es: &[FvWord; FVW]) -> Vec<u8> {
    let mut s = Vec::with_capacity(4 + 4 * FVW);
    s.extend_from_slice(&1u16.to_le_bytes());
    s.extend_from_slice(&(p as u16).to_le_bytes());
    for w in es {
        s.push(w.prot);
        s.extend_from_slice(&w.off.to_le_bytes());
        s.push(0);
    }
    s
}
pub fn tcam_section(addr: u16, key: &[u8; 10], p: u8) -> Vec<u8> {
    let mut s = Vec::with_capacity(15);
    s.extend_from_slice(&1u16.to_le_bytes());
    s.extend_from_slice(&addr.to_le_bytes());
    s.extend_from_slice(key);
    s.push(p);
    s
}
pub fn xlt2_section(vsi: u16, vsig: u16) -> Vec<u8> {
    [1u16, vsi, vsig]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// A package buffer being built [DDP `ice_pkg_buf_alloc`, `_reserve_section`,
/// `_alloc_section`]: header {section_count, data_end, entries {type, offset, size}}, each
/// section 4-byte aligned; only `data_end` bytes are sent.
pub struct PkgBuf {
    buf: Vec<u8>,
    reserved: usize,
    count: usize,
    data_end: usize,
}

impl PkgBuf {
    pub fn new(sections: usize) -> PkgBuf {
        PkgBuf {
            buf: vec![0; crate::ddp::PKG_BUF_SIZE],
            reserved: sections,
            count: 0,
            data_end: 4 + 8 * sections,
        }
    }

    pub fn add(&mut self, sid: u32, payload: &[u8]) -> Result<(), IceError> {
        let at = self.data_end.div_ceil(4) * 4;
        if self.count == self.reserved || at + payload.len() > self.buf.len() {
            return Err(IceError::InvalidArg(
                "Flow Director update does not fit one package buffer".into(),
            ));
        }
        let e = 4 + 8 * self.count;
        self.buf[e..e + 4].copy_from_slice(&sid.to_le_bytes());
        self.buf[e + 4..e + 6].copy_from_slice(&(at as u16).to_le_bytes());
        self.buf[e + 6..e + 8].copy_from_slice(&(payload.len() as u16).to_le_bytes());
        self.buf[at..at + payload.len()].copy_from_slice(payload);
        self.data_end = at + payload.len();
        self.count += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[0..2].copy_from_slice(&(self.count as u16).to_le_bytes());
        self.buf[2..4].copy_from_slice(&(self.data_end as u16).to_le_bytes());
        self.buf.truncate(self.data_end);
        self.buf
    }
}

/// The PTGs of `ptypes` in first-appearance order, at most 64 [FP `ice_add_prof`,
/// `ICE_MAX_PTG_PER_PROFILE`].
pub fn ptgs(xlt1: &[u8], ptypes: &[u16]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for &p in ptypes {
        let g = xlt1.get(p as usize).copied().unwrap_or(0);
        if !out.contains(&g) {
            out.push(g);
        }
        if out.len() == 64 {
            break;
        }
    }
    out
}

/// A profile as it lives in the card: its hardware id and its TCAM entries (index, PTG).
#[derive(Clone, Debug, Default)]
pub struct LiveProfile {
    pub hw_id: Option<u8>,
    pub es_written: bool,
    pub tcam: Vec<(u16, u8)>,
    /// Filters programmed through it; its TCAM entries go when the last one does.
    pub filters: usize,
}

/// The driver's view of the FD block: the package's ptype -> PTG table, this PF's VSI group,
/// and the profiles by kind.
#[derive(Debug)]
pub struct FdTables {
    pub xlt1: Vec<u8>,
    pub vsig: Option<u16>,
    pub profiles: [LiveProfile; 7],
}

impl FdTables {
    /// Reads the FD XLT1 sections of a package ([FP `ice_fill_tbl`]: the sections'
    /// payloads, one byte per packet type, concatenated in order).
    pub fn from_package(pkg: &[u8]) -> Result<FdTables, IceError> {
        let mut xlt1 = Vec::new();
        for s in crate::ddp::sections(pkg, SID_XLT1_FD)? {
            let count = s
                .get(0..2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as usize)
                .unwrap_or(0);
            let vals = s.get(4..4 + count).ok_or_else(|| {
                IceError::InvalidArg("DDP FD XLT1 section shorter than its count".into())
            })?;
            xlt1.extend_from_slice(vals);
        }
        if xlt1.is_empty() {
            return Err(IceError::InvalidArg(
                "DDP package has no Flow Director XLT1 table (section 32)".into(),
            ));
        }
        xlt1.resize(XLT1_ENTRIES, 0);
        Ok(FdTables {
            xlt1,
            vsig: None,
            profiles: Default::default(),
        })
    }

    /// The live profile (kind) whose PTGs overlap `kind`'s, if any: the card would serve those
    /// packet types with one of them only.
    pub fn conflict(&self, kind: u8) -> Option<u8> {
        let mine = ptgs(&self.xlt1, &profile_def(kind)?.ptypes);
        (1..self.profiles.len() as u8).find(|&other| {
            other != kind
                && self.profiles[other as usize]
                    .tcam
                    .iter()
                    .any(|(_, g)| mine.contains(g))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptype_sets_follow_the_linux_bitmaps() {
        let mac = profile_def(1).unwrap().ptypes;
        assert_eq!(mac.len(), 120);
        for p in [1, 2, 6, 11, 22, 24, 26, 90, 92, 138, 278, 300, 325, 350] {
            assert!(mac.contains(&p), "MAC profile serves ptype {p}");
        }
        assert!(!mac.contains(&301), "PPPoE is excluded");
        assert_eq!(profile_def(3).unwrap().ptypes, vec![24]);
        assert_eq!(profile_def(4).unwrap().ptypes, vec![26]);
    }

    #[test]
    fn swap_registers_match_the_worked_examples() {
        // dst MAC only: three words at 23..21, identity swap, every word in the input set.
        let r = fd_swap(&extraction(profile_def(1).unwrap().fields)).unwrap();
        assert_eq!(
            &r.es[21..],
            &[
                FvWord { prot: 1, off: 4 },
                FvWord { prot: 1, off: 2 },
                FvWord { prot: 1, off: 0 }
            ]
        );
        assert_eq!(
            r.swap,
            [0x83828180, 0x87868584, 0x8B8A8988, 0x8F8E8D8C, 0x93929190, 0x97969594]
        );
        assert_eq!(r.inset, [0x9F9F9F9F; 6]);
        // IPv4 dst + UDP dst port: the source halves are appended at 20..18, masked out,
        // and the destination words take them.
        let r = fd_swap(&extraction(profile_def(3).unwrap().fields)).unwrap();
        let w = |prot, off| FvWord { prot, off };
        assert_eq!(
            &r.es[18..],
            &[
                w(53, 0),
                w(32, 14),
                w(32, 12),
                w(53, 2),
                w(32, 18),
                w(32, 16)
            ]
        );
        assert_eq!(r.swap[4], 0x0000_9190);
        assert_eq!(r.swap[5], 0x9493_9200);
        assert_eq!(r.inset[4], 0x0000_9F9F);
        assert_eq!(r.inset[5], 0x9F9F_9F00);
        // IPv6 (8 words) + port still fits.
        assert!(fd_swap(&extraction(profile_def(5).unwrap().fields)).is_ok());
    }

    #[test]
    fn update_buffer_bytes_match_the_reference_dump() {
        // IPv4/UDP 4-tuple profile P = 2, PTG 5, TCAM 0x1FF, VSI 10 into VSIG 1: the buffer
        // Linux builds (ES, TCAM, XLT2 x2), byte for byte.
        let w = |prot, off| FvWord { prot, off };
        let mut es = [UNUSED; FVW];
        es[18..].copy_from_slice(&[
            w(53, 2),
            w(53, 0),
            w(32, 18),
            w(32, 16),
            w(32, 14),
            w(32, 12),
        ]);
        let mut b = PkgBuf::new(4);
        b.add(SID_FLD_VEC_FD, &es_section(2, &es)).unwrap();
        b.add(SID_PROF_TCAM_FD, &tcam_section(0x1FF, &tcam_key(5, 1), 2))
            .unwrap();
        b.add(SID_XLT2_FD, &xlt2_section(10, 1)).unwrap();
        b.add(SID_XLT2_FD, &xlt2_section(10, 1)).unwrap();
        let buf = b.finish();
        assert_eq!(buf.len(), 166);
        let head: [u8; 40] = [
            0x04, 0x00, 0xa6, 0x00, 0x24, 0x00, 0x00, 0x00, 0x24, 0x00, 0x64, 0x00, 0x22, 0x00,
            0x00, 0x00, 0x88, 0x00, 0x0f, 0x00, 0x21, 0x00, 0x00, 0x00, 0x98, 0x00, 0x06, 0x00,
            0x21, 0x00, 0x00, 0x00, 0xa0, 0x00, 0x06, 0x00, 0x01, 0x00, 0x02, 0x00,
        ];
        assert_eq!(&buf[..40], &head);
        assert_eq!(&buf[0x28..0x2c], &[0xff, 0xff, 0x01, 0x00], "unused word");
        let tail: [u8; 46] = [
            0x35, 0x02, 0x00, 0x00, 0x35, 0x00, 0x00, 0x00, 0x20, 0x12, 0x00, 0x00, 0x20, 0x10,
            0x00, 0x00, 0x20, 0x0e, 0x00, 0x00, 0x20, 0x0c, 0x00, 0x00, 0x01, 0x00, 0xff, 0x01,
            0xff, 0xff, 0xfa, 0xfe, 0xff, 0xff, 0xff, 0x05, 0x01, 0x00, 0x02, 0x00, 0x01, 0x00,
            0x0a, 0x00, 0x01, 0x00,
        ];
        assert_eq!(&buf[0x70..0x9e], &tail);
        assert_eq!(&buf[0xa0..], &[0x01, 0x00, 0x0a, 0x00, 0x01, 0x00]);
    }

    #[test]
    fn vsig_and_keys() {
        assert_eq!(vsig_value(1, 0), 1);
        assert_eq!(vsig_value(1, 2), 0x4001);
        assert_eq!(
            tcam_key(2, 1),
            [0xff, 0xff, 0xfd, 0xfe, 0xff, 0xff, 0xff, 0x02, 0x01, 0x00]
        );
    }
}
