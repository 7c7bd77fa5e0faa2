//! The model's classification pipelines, as the firmware and hardware keep them, one per
//! block: Flow Director and RSS. Each maps packet type to PTG (XLT1, from the downloaded
//! package), VSI to VSI group (XLT2), finds a profile in the TCAM keyed by (flags, PTG, VSIG),
//! and extracts 24 field-vector words per profile (ES). Flow Director adds the swap and
//! input-set registers. The driver fills them through alloc/free resource, update package and
//! register writes; nothing is built in.
//!
//! Formats from DPDK `drivers/net/intel/ice/base` (`ice_ddp.h`, `ice_flex_type.h`,
//! `ice_hw_autogen.h`, `ice_protocol_type.h`) with the model's own constants, independent of
//! the driver's. How the hardware matches the TCAM (per bit, key/key_inv (1,1) any, (0,1)
//! one, (1,0) zero, (0,0) never) is inferred from how the drivers build keys.

const PTYPES: usize = 1024;
const VSIS: usize = 768;
const TCAM_ENTRIES: usize = 512;
const PROFILES: usize = 128;
const WORDS: usize = 24;

/// A block's package section ids (XLT1, XLT2, profile TCAM, field vectors) and its resource
/// types for alloc/free resource (low 7 bits; profile id, TCAM entry) \[`ice_flex_type.h`
/// `ICE_SID_*`, `ice_adminq_cmd.h` `ICE_AQC_RES_TYPE_*`\].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    xlt1: u32,
    xlt2: u32,
    tcam: u32,
    es: u32,
    res_prof: u16,
    res_tcam: u16,
}

/// Flow Director: sections 32/33/34/36, resources 0x58/0x59.
pub const FD: Block = Block {
    xlt1: 32,
    xlt2: 33,
    tcam: 34,
    es: 36,
    res_prof: 0x58,
    res_tcam: 0x59,
};
/// RSS: sections 42/43/44/46, resources 0x60/0x61.
pub const RSS: Block = Block {
    xlt1: 42,
    xlt2: 43,
    tcam: 44,
    es: 46,
    res_prof: 0x60,
    res_tcam: 0x61,
};

impl Block {
    /// Whether section type `ty` belongs to this block.
    fn has_section(&self, ty: u32) -> bool {
        [self.xlt1, self.xlt2, self.tcam, self.es].contains(&ty)
    }
}

/// GLQF_FDINSET(p, j) at 0x412000 + 4p + 512j, GLQF_FDSWAP(p, j) at 0x413000 + 4p + 512j,
/// GLQF_FDMASK_SEL(p) at 0x410400 + 4p.
const FDINSET: u64 = 0x0041_2000;
const FDSWAP: u64 = 0x0041_3000;
const FDMASK_SEL: u64 = 0x0041_0400;

#[derive(Clone, Copy, Debug, Default)]
struct Word {
    prot: u8,
    off: u16,
}

/// One block's pipeline (see the module docs).
pub struct Pipeline {
    block: Block,
    xlt1: Vec<u8>,
    xlt2: Vec<u16>,
    tcam: Vec<Option<([u8; 10], u8)>>,
    tcam_owned: Vec<bool>,
    prof_owned: Vec<bool>,
    es: Vec<[Word; WORDS]>,
    swap: Vec<[u32; 6]>,
    inset: Vec<[u32; 6]>,
}

impl Pipeline {
    /// An empty pipeline for `block`.
    pub fn new(block: Block) -> Self {
        Pipeline {
            block,
            xlt1: vec![0; PTYPES],
            xlt2: vec![0; VSIS],
            tcam: vec![None; TCAM_ENTRIES],
            tcam_owned: vec![false; TCAM_ENTRIES],
            prof_owned: vec![false; PROFILES],
            es: vec![[Word::default(); WORDS]; PROFILES],
            swap: vec![[0; 6]; PROFILES],
            inset: vec![[0; 6]; PROFILES],
        }
    }
}

fn le16(b: &[u8], o: usize) -> Option<u16> {
    b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

/// The sections of a 4 KiB package buffer as (type, payload), or None when the header is
/// malformed: 1..=511 sections, data_end 12..=4096, each section inside the data.
pub(crate) fn sections(buf: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    Some(
        section_spans(buf)?
            .into_iter()
            .map(|(ty, off, size)| (ty, &buf[off..off + size]))
            .collect(),
    )
}

/// The sections of a package buffer as (type, offset, size), checked as [`sections`] does.
pub(crate) fn section_spans(buf: &[u8]) -> Option<Vec<(u32, usize, usize)>> {
    let count = le16(buf, 0)? as usize;
    let data_end = le16(buf, 2)? as usize;
    if !(1..=511).contains(&count) || !(12..=4096).contains(&data_end) || data_end > buf.len() {
        return None;
    }
    (0..count)
        .map(|i| {
            let e = 4 + 8 * i;
            let ty = u32::from_le_bytes(buf.get(e..e + 4)?.try_into().ok()?);
            let off = le16(buf, e + 4)? as usize;
            let size = le16(buf, e + 6)? as usize;
            (off >= 12 && size > 0 && off + size <= data_end).then_some((ty, off, size))
        })
        .collect()
}

impl Pipeline {
    /// A downloaded configuration buffer: the block's XLT1 table is taken from it.
    pub fn load_package_buffer(&mut self, buf: &[u8]) {
        for (ty, s) in sections(buf).unwrap_or_default() {
            if ty == self.block.xlt1 {
                let (Some(count), Some(off)) = (le16(s, 0), le16(s, 2)) else {
                    continue;
                };
                for (i, &v) in s.iter().skip(4).take(count as usize).enumerate() {
                    if let Some(e) = self.xlt1.get_mut(off as usize + i) {
                        *e = v;
                    }
                }
            }
        }
    }

    /// Forgets everything the driver programmed (a global reset), keeping the package's XLT1.
    pub fn clear_programming(&mut self) {
        let xlt1 = std::mem::take(&mut self.xlt1);
        *self = Pipeline {
            xlt1,
            ..Pipeline::new(self.block)
        };
    }

    /// Alloc resource for `res_type` (flag bits above bit 6 ignored): the index, or None
    /// when none is free (or the type is not this block's). Scan-bottom takes the highest.
    pub fn alloc(&mut self, res_type: u16) -> Option<u16> {
        let bottom = res_type & 0x1000 != 0;
        let owned = match res_type & 0x7F {
            t if t == self.block.res_prof => &mut self.prof_owned,
            t if t == self.block.res_tcam => &mut self.tcam_owned,
            _ => return None,
        };
        let n = owned.len();
        let i = if bottom {
            (0..n).rev().find(|&i| !owned[i])?
        } else {
            (0..n).find(|&i| !owned[i])?
        };
        owned[i] = true;
        Some(i as u16)
    }

    /// Free resource; a freed TCAM entry stops matching. False when the index was not
    /// allocated.
    pub fn free(&mut self, res_type: u16, idx: u16) -> bool {
        let i = idx as usize;
        let t = res_type & 0x7F;
        match t {
            _ if t == self.block.res_prof && self.prof_owned.get(i) == Some(&true) => {
                self.prof_owned[i] = false
            }
            _ if t == self.block.res_tcam && self.tcam_owned.get(i) == Some(&true) => {
                self.tcam_owned[i] = false;
                self.tcam[i] = None;
            }
            _ => return false,
        }
        true
    }

    /// Update package: applies ES, TCAM, XLT2 and XLT1 sections. Err(offset) names the first
    /// bad byte (a malformed header, an entry out of range, an index not allocated).
    pub fn update(&mut self, buf: &[u8]) -> Result<(), u32> {
        let secs = sections(buf).ok_or(0u32)?;
        // Validate everything first so a bad buffer changes nothing.
        let b = self.block;
        for (ty, s) in &secs {
            let count = le16(s, 0).ok_or(4u32)? as usize;
            let ok = match *ty {
                t if t == b.es => {
                    let off = le16(s, 2).unwrap_or(u16::MAX) as usize;
                    off + count <= PROFILES
                        && s.len() >= 4 + 4 * WORDS * count
                        && (off..off + count).all(|p| self.prof_owned[p])
                }
                t if t == b.tcam => (0..count).all(|k| {
                    le16(s, 2 + 13 * k)
                        .is_some_and(|a| self.tcam_owned.get(a as usize) == Some(&true))
                        && s.len() >= 2 + 13 * (k + 1)
                }),
                t if t == b.xlt2 => {
                    le16(s, 2).is_some_and(|o| o as usize + count <= VSIS)
                        && s.len() >= 4 + 2 * count
                }
                t if t == b.xlt1 => {
                    le16(s, 2).is_some_and(|o| o as usize + count <= PTYPES) && s.len() >= 4 + count
                }
                _ => false,
            };
            if !ok {
                return Err(4);
            }
        }
        for (ty, s) in secs {
            let count = le16(s, 0).unwrap_or(0) as usize;
            match ty {
                t if t == b.es => {
                    let first = le16(s, 2).unwrap_or(0) as usize;
                    for p in 0..count {
                        for w in 0..WORDS {
                            let o = 4 + 4 * (p * WORDS + w);
                            self.es[first + p][w] = Word {
                                prot: s[o],
                                off: le16(s, o + 1).unwrap_or(0x1FF),
                            };
                        }
                    }
                }
                t if t == b.tcam => {
                    for k in 0..count {
                        let o = 2 + 13 * k;
                        let addr = le16(s, o).unwrap_or(0) as usize;
                        let key: [u8; 10] = s[o + 2..o + 12].try_into().expect("10 bytes");
                        self.tcam[addr] = Some((key, s[o + 12]));
                    }
                }
                t if t == b.xlt2 => {
                    let first = le16(s, 2).unwrap_or(0) as usize;
                    for k in 0..count {
                        self.xlt2[first + k] = le16(s, 4 + 2 * k).unwrap_or(0);
                    }
                }
                _ => {
                    let first = le16(s, 2).unwrap_or(0) as usize;
                    self.xlt1[first..first + count].copy_from_slice(&s[4..4 + count]);
                }
            }
        }
        Ok(())
    }

    /// Whether an update-package buffer is for this block (its first section is one of the
    /// block's).
    pub fn owns_update(&self, buf: &[u8]) -> bool {
        sections(buf).and_then(|s| s.first().map(|f| self.block.has_section(f.0))) == Some(true)
    }

    /// FD register writes; false when `off` is not one of them (or this is not the FD block).
    pub fn reg_write(&mut self, off: u64, v: u32) -> bool {
        if self.block != FD {
            return false;
        }
        let slot = |base: u64| -> Option<(usize, usize)> {
            let rel = off.checked_sub(base)?;
            let (j, p) = ((rel / 512) as usize, (rel % 512 / 4) as usize);
            (rel.is_multiple_of(4) && j < 6 && p < PROFILES).then_some((p, j))
        };
        if let Some((p, j)) = slot(FDINSET) {
            self.inset[p][j] = v;
        } else if let Some((p, j)) = slot(FDSWAP) {
            self.swap[p][j] = v;
        } else if (FDMASK_SEL..FDMASK_SEL + 4 * PROFILES as u64).contains(&off) {
            // Partial-word masks are not modelled; the driver's profiles use none.
        } else {
            return false;
        }
        true
    }

    /// The profile serving a packet of `ptype` arriving on (or programmed for) `vsi`.
    pub fn profile(&self, ptype: u16, vsi: u16) -> Option<u8> {
        let ptg = *self.xlt1.get(ptype as usize)?;
        let vsig = *self.xlt2.get(vsi as usize)?;
        let value = [0u8, 0, ptg, vsig as u8, (vsig >> 8) as u8];
        self.tcam.iter().flatten().find_map(|(key, prof)| {
            let hit = (0..5).all(|i| {
                (0..8).all(|b| {
                    let (k, ki, v) = (key[i] >> b & 1, key[5 + i] >> b & 1, value[i] >> b & 1);
                    match (k, ki) {
                        (1, 1) => true,
                        (0, 1) => v == 1,
                        (1, 0) => v == 0,
                        _ => false,
                    }
                })
            });
            hit.then_some(*prof)
        })
    }

    /// Profile `p`'s hash input for `frame`: its field-vector words from the last to the first
    /// (the drivers fill a profile's vector from the end, `ice_flow.c` reverse order), words
    /// no field uses skipped; for IPv4/UDP that is source and destination address, then
    /// source and destination port, the Toeplitz input of Microsoft's RSS.
    pub fn hash_input(&self, p: u8, frame: &[u8]) -> Vec<u8> {
        self.es[p as usize]
            .iter()
            .rev()
            .filter(|w| w.prot != 0xFF && w.off != 0x1FF)
            .flat_map(|w| extract(frame, *w))
            .collect()
    }

    /// Profile `p`'s key for `frame`: its field-vector words, permuted by the swap registers
    /// for a training packet, those in the input set concatenated.
    pub fn key(&self, p: u8, frame: &[u8], training: bool) -> Vec<u8> {
        let p = p as usize;
        let words: Vec<[u8; 2]> = self.es[p].iter().map(|w| extract(frame, *w)).collect();
        let byte = |regs: &[u32; 6], i: usize| (regs[i / 4] >> (8 * (i % 4))) as u8;
        let mut key = Vec::new();
        for i in 0..WORDS {
            if byte(&self.inset[p], i) & 0x80 == 0 {
                continue;
            }
            let src = if training {
                let s = byte(&self.swap[p], i);
                if s & 0x80 == 0 {
                    continue;
                }
                (s & 0x1F) as usize
            } else {
                i
            };
            key.extend_from_slice(words.get(src).unwrap_or(&[0, 0]));
        }
        key
    }
}

/// Where the parser found header `prot` in an Ethernet frame (IPv4 without options or with
/// them, IPv6 without extension headers); None when the frame has no such header.
fn header_start(frame: &[u8], prot: u8) -> Option<usize> {
    let et = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let (l3_v4, l3_v6) = (et == 0x0800, et == 0x86dd);
    let l4 = || -> Option<(usize, u8)> {
        if l3_v4 {
            Some((14 + (*frame.get(14)? as usize & 0xF) * 4, *frame.get(23)?))
        } else if l3_v6 {
            Some((54, *frame.get(20)?))
        } else {
            None
        }
    };
    match prot {
        1 => Some(0),                                  // MAC_OF_OR_S
        9 => Some(12),                                 // ETYPE_OL
        32 if l3_v4 => Some(14),                       // IPV4_OF_OR_S
        40 if l3_v6 => Some(14),                       // IPV6_OF_OR_S
        49 => l4().filter(|l| l.1 == 6).map(|l| l.0),  // TCP_IL
        53 => l4().filter(|l| l.1 == 17).map(|l| l.0), // UDP_IL_OR_S
        _ => None,
    }
}

fn extract(frame: &[u8], w: Word) -> [u8; 2] {
    header_start(frame, w.prot)
        .and_then(|s| frame.get(s + w.off as usize..s + w.off as usize + 2))
        .map_or([0, 0], |b| [b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 KiB package buffer with one FD XLT1 section: ptype 24 (IPv4/UDP) in PTG 5.
    fn xlt1_buffer() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..2].copy_from_slice(&1u16.to_le_bytes()); // one section
        b[2..4].copy_from_slice(&(12u16 + 4 + 1024).to_le_bytes()); // data_end
        b[4..8].copy_from_slice(&32u32.to_le_bytes()); // FD XLT1
        b[8..10].copy_from_slice(&12u16.to_le_bytes()); // offset
        b[10..12].copy_from_slice(&(4u16 + 1024).to_le_bytes()); // size
        b[12..14].copy_from_slice(&1024u16.to_le_bytes()); // count
        b[16 + 24] = 5;
        b
    }

    fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    /// The update buffer Linux builds for an IPv4/UDP 4-tuple profile (P 2, PTG 5, TCAM
    /// 0x1FF, VSI 10 into VSIG 1), written out by hand from the reference dump.
    fn reference_update() -> Vec<u8> {
        let mut b = vec![
            0x04, 0x00, 0xa6, 0x00, 0x24, 0x00, 0x00, 0x00, 0x24, 0x00, 0x64, 0x00, 0x22, 0x00,
            0x00, 0x00, 0x88, 0x00, 0x0f, 0x00, 0x21, 0x00, 0x00, 0x00, 0x98, 0x00, 0x06, 0x00,
            0x21, 0x00, 0x00, 0x00, 0xa0, 0x00, 0x06, 0x00, 0x01, 0x00, 0x02, 0x00,
        ];
        for _ in 0..18 {
            b.extend_from_slice(&[0xff, 0xff, 0x01, 0x00]);
        }
        b.extend_from_slice(&[
            0x35, 0x02, 0x00, 0x00, 0x35, 0x00, 0x00, 0x00, 0x20, 0x12, 0x00, 0x00, 0x20, 0x10,
            0x00, 0x00, 0x20, 0x0e, 0x00, 0x00, 0x20, 0x0c, 0x00, 0x00, 0x01, 0x00, 0xff, 0x01,
            0xff, 0xff, 0xfa, 0xfe, 0xff, 0xff, 0xff, 0x05, 0x01, 0x00, 0x02, 0x00, 0x01, 0x00,
            0x0a, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x01, 0x00,
        ]);
        assert_eq!(b.len(), 0xa6);
        b
    }

    #[test]
    fn a_reference_profile_classifies_frames_by_its_training_packet() {
        let mut fd = Pipeline::new(FD);
        fd.load_package_buffer(&xlt1_buffer());
        assert_eq!(fd.profile(24, 10), None, "nothing programmed yet");
        assert!(
            fd.update(&reference_update()).is_err(),
            "ids not allocated yet"
        );
        for want in 0..=2 {
            assert_eq!(fd.alloc(0x2058), Some(want));
        }
        assert_eq!(
            fd.alloc(0x3059),
            Some(0x1FF),
            "scan bottom takes the highest"
        );
        fd.update(&reference_update()).unwrap();
        // Registers from the reference: 4-tuple swap (words 23<->21, 22<->20, 19<->18).
        let swap = [
            0x83828180, 0x87868584, 0x8B8A8988, 0x8F8E8D8C, 0x92939190, 0x95949796,
        ];
        for (j, v) in swap.into_iter().enumerate() {
            assert!(fd.reg_write(0x413000 + 4 * 2 + 512 * j as u64, v));
            assert!(fd.reg_write(0x412000 + 4 * 2 + 512 * j as u64, 0x9F9F9F9F));
        }
        assert_eq!(fd.profile(24, 10), Some(2));
        assert_eq!(fd.profile(26, 10), None, "TCP is another PTG");
        assert_eq!(fd.profile(24, 11), None, "VSI 11 is not in the group");

        // Training packet from the transmit side: the rule's destination in source fields.
        let training = udp4([10, 0, 0, 2], [10, 0, 0, 9], 4789, 5555);
        let rx = udp4([10, 0, 0, 9], [10, 0, 0, 2], 5555, 4789);
        let other = udp4([10, 0, 0, 9], [10, 0, 0, 2], 5555, 4790);
        let k = fd.key(2, &training, true);
        assert_eq!(k.len(), 48, "24 words in the input set");
        assert_eq!(fd.key(2, &rx, false), k);
        assert_ne!(fd.key(2, &other, false), k);

        // A freed TCAM entry stops matching.
        assert!(fd.free(0x59, 0x1FF));
        assert_eq!(fd.profile(24, 10), None);
        assert!(!fd.free(0x59, 0x1FF), "double free refused");
    }
}
