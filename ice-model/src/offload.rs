//! TX offloads as the E810 performs them: IPv4 header checksum (IIPT = IPv4 with checksum),
//! TCP/UDP checksums (L4T) from the header lengths in the descriptor's OFFSET field, and TCP
//! segmentation from a context descriptor's MSS (\[LTR\] `ice_tx_desc`, `ice_tx_ctx_desc`).
//! The model computes complete checksums itself, so it does not depend on the pre-seeded
//! pseudo-header sum drivers put in the checksum field.

/// Header layout from a data descriptor: (MACLEN*2, IPLEN*4, L4LEN*4) and the commands.
#[derive(Clone, Copy, Debug, Default)]
pub struct TxOffload {
    pub l2: usize,
    pub l3: usize,
    pub l4: usize,
    pub ipv4_csum: bool,
    pub ipv6: bool,
    /// 0 none, 1 TCP, 3 UDP (the L4T code).
    pub l4t: u8,
}

impl TxOffload {
    /// Decodes qw1 of a data descriptor (CMD bits 15:4, OFFSET bits 33:16).
    pub fn from_qw1(qw1: u64) -> TxOffload {
        let cmd = qw1 >> 4 & 0xFFF;
        let off = qw1 >> 16 & 0x3FFFF;
        TxOffload {
            l2: (off & 0x7F) as usize * 2,
            l3: (off >> 7 & 0x7F) as usize * 4,
            l4: (off >> 14 & 0xF) as usize * 4,
            ipv4_csum: cmd & 0x060 == 0x060,
            ipv6: cmd & 0x060 == 0x020,
            l4t: (cmd >> 8 & 0x3) as u8,
        }
    }

    pub fn any(&self) -> bool {
        self.ipv4_csum || self.l4t != 0
    }
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Fills in the checksums the descriptor asked for. Frames too short for the stated headers
/// are left alone (the hardware would send them as they are).
pub fn apply_checksums(f: &mut [u8], o: &TxOffload) {
    let (ip, l4) = (o.l2, o.l2 + o.l3);
    if f.len() < l4 || o.l3 < 20 && !o.ipv6 {
        return;
    }
    if o.ipv4_csum {
        f[ip + 10] = 0;
        f[ip + 11] = 0;
        let c = !(sum16(&f[ip..l4], 0) as u16);
        f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    }
    let field = match o.l4t {
        1 => 16,
        3 => 6,
        _ => return,
    };
    if f.len() < l4 + field + 2 {
        return;
    }
    let proto = if o.l4t == 1 { 6u8 } else { 17 };
    let seg_len = f.len() - l4;
    f[l4 + field] = 0;
    f[l4 + field + 1] = 0;
    let mut acc = if o.ipv6 {
        sum16(&f[ip + 8..ip + 40], 0)
    } else {
        sum16(&f[ip + 12..ip + 20], 0)
    };
    acc = sum16(&[0, proto], acc);
    acc = sum16(
        &(seg_len as u32).to_be_bytes()[if o.ipv6 { 0 } else { 2 }..],
        acc,
    );
    let mut c = !(sum16(&f[l4..], acc) as u16);
    if o.l4t == 3 && c == 0 {
        c = 0xffff; // UDP: zero means "no checksum"
    }
    f[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
}

/// Splits a TCP super-frame into MSS-sized segments: headers copied, IPv4 total length and
/// id, TCP sequence number and flags (FIN/PSH only on the last) adjusted, checksums filled.
pub fn tso_segment(f: &[u8], o: &TxOffload, mss: usize) -> Vec<Vec<u8>> {
    let hdr = o.l2 + o.l3 + o.l4;
    if mss == 0 || f.len() <= hdr || o.l4 < 20 {
        let mut one = f.to_vec();
        apply_checksums(&mut one, o);
        return vec![one];
    }
    let (ip, tcp) = (o.l2, o.l2 + o.l3);
    let seq0 = u32::from_be_bytes(f[tcp + 4..tcp + 8].try_into().expect("4"));
    let id0 = if o.ipv6 {
        0
    } else {
        u16::from_be_bytes([f[ip + 4], f[ip + 5]])
    };
    let chunks: Vec<&[u8]> = f[hdr..].chunks(mss).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(k, c)| {
            let mut s = Vec::with_capacity(hdr + c.len());
            s.extend_from_slice(&f[..hdr]);
            s.extend_from_slice(c);
            if o.ipv6 {
                let plen = (o.l4 + c.len()) as u16 + (o.l3 as u16 - 40);
                s[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
            } else {
                let tot = (o.l3 + o.l4 + c.len()) as u16;
                s[ip + 2..ip + 4].copy_from_slice(&tot.to_be_bytes());
                s[ip + 4..ip + 6].copy_from_slice(&id0.wrapping_add(k as u16).to_be_bytes());
            }
            let seq = seq0.wrapping_add((k * mss) as u32);
            s[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
            if k + 1 < n {
                s[tcp + 13] &= !(0x01 | 0x08); // FIN, PSH only on the last segment
            }
            let mut so = *o;
            so.ipv4_csum = !o.ipv6;
            so.l4t = 1;
            apply_checksums(&mut s, &so);
            s
        })
        .collect()
}
