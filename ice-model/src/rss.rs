//! Receive side scaling: a frame that reaches a VSI with an RSS table is hashed over the
//! fields its RSS profile extracts (the package's RSS block, programmed by the driver), with
//! the VSI's key, and the table picks its queue within the VSI.
//!
//! Sources: the hash is Toeplitz (VSI context `q_opt_rss` bits 7:6 = 0), Microsoft's "RSS
//! hashing" specification; the VSI context's queue map (`mapping_flags` @28, `q_mapping[0]`
//! @30, the first queue) and `q_opt_rss` @78 from Linux 6.12 `ice_adminq_cmd.h`
//! `ice_aqc_vsi_props`. Inferred, not documented in our sources: the 52-byte key is used as
//! one stream (40 bytes cover a 36-byte IPv6 4-tuple) and the table index is the hash's low
//! bits.

use crate::rx::e810_ptype;
use crate::E810Model;

/// Toeplitz hash of `input` with `key` (bits taken most significant first).
pub(crate) fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let bit = |i: usize| key.get(i / 8).map_or(0, |b| (b >> (7 - i % 8) & 1) as u32);
    let mut window = (0..32).fold(0u32, |w, i| w << 1 | bit(i));
    let mut hash = 0u32;
    for (n, i) in (0..input.len() * 8).enumerate() {
        if input[i / 8] >> (7 - i % 8) & 1 == 1 {
            hash ^= window;
        }
        window = window << 1 | bit(32 + n);
    }
    hash
}

impl E810Model {
    /// The PF queue RSS picks for `frame` on `vsi`, with the hash; None when the VSI has no
    /// table or key yet, hashes otherwise than Toeplitz, or no RSS profile serves the frame.
    pub(crate) fn rss_queue(&self, vsi: u16, frame: &[u8]) -> Option<(usize, u32)> {
        let why = |what: &str| log::trace!("vsi {vsi}: no RSS: {what}");
        let ctx = self.vsis.get(&vsi).or_else(|| {
            why("no such VSI");
            None
        })?;
        if ctx.get(78)? >> 6 != 0 {
            why("hash type not Toeplitz");
            return None; // symmetric Toeplitz, XOR and JHash are not modelled
        }
        let (Some(key), Some(lut)) = (self.rss_keys.get(&vsi), self.rss_luts.get(&vsi)) else {
            why("no key or LUT");
            return None;
        };
        let Some(prof) = self.rss.profile(e810_ptype(frame), vsi) else {
            why("no profile");
            return None;
        };
        let input = self.rss.hash_input(prof, frame);
        if input.is_empty() {
            why("empty input");
            return None;
        }
        let hash = toeplitz(key, &input);
        let entry = lut[hash as usize & (lut.len() - 1)] as usize;
        let first = u16::from_le_bytes([*ctx.get(30)?, *ctx.get(31)?]) as usize;
        log::trace!(
            "vsi {vsi}: profile {prof} input {input:02x?} hash {hash:#x} -> queue {}",
            first + entry
        );
        Some((first + entry, hash))
    }
}

#[cfg(test)]
mod tests {
    use super::toeplitz;

    /// Microsoft's verification suite ("Verifying the RSS Hash Calculation"): its key and its
    /// first IPv4 example, 66.9.149.187:2794 -> 161.142.100.80:1766.
    #[test]
    fn toeplitz_matches_the_specification_examples() {
        let key: Vec<u8> = (0..40)
            .map(|i| u8::from_str_radix(&"6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let ips = [66, 9, 149, 187, 161, 142, 100, 80];
        assert_eq!(toeplitz(&key, &ips), 0x323e_8fc2);
        let mut with_ports = ips.to_vec();
        with_ports.extend_from_slice(&2794u16.to_be_bytes());
        with_ports.extend_from_slice(&1766u16.to_be_bytes());
        assert_eq!(toeplitz(&key, &with_ports), 0x51cc_c178);
    }
}
