//! The card's non-volatile memory as its firmware presents it to NVM read (0x0701): the
//! Shadow RAM and the flat flash image.
//!
//! Layout and semantics from Linux 6.12 `ice_nvm.c` (`ice_init_nvm`, `ice_read_flat_nvm`,
//! `ice_discover_flash_size`, `ice_determine_active_flash_banks`, `ice_get_nvm_css_hdr_len`,
//! `ice_get_orom_civd_data`, `ice_get_netlist_info`, `ice_get_pfa_module_tlv`); the walk-through
//! with line numbers is docs/linux-ice-probe.md section 3. The image is small but consistent:
//! every pointer Linux follows lands on content that parses, and reads past the end fail as the
//! firmware's do.

/// The admin return code of a read past the end (EINVAL, `enum ice_aq_err`):
/// `ice_discover_flash_size` takes exactly this code as "beyond the flash".
pub const RC_EINVAL: u16 = 14;

/// Shadow RAM size in 16-bit words: GLNVM_GENS SR_SIZE (bits 7:5) = 4 means 2^4 x 512 words
/// (`ice_nvm.c:ice_init_nvm`).
pub const SR_WORDS: usize = 8192;
/// The GLNVM_GENS value that announces it: NVM present (bit 0) and SR_SIZE 4.
pub const GLNVM_GENS_VALUE: u32 = 1 | (4 << 5);
/// Flash size in bytes. Reads at or beyond it fail with EINVAL, which is how Linux finds the
/// size (a binary search of 1-byte reads).
pub const FLASH_BYTES: usize = 1 << 20;
/// Linux never reads more than one 4 KiB sector per command (`ice_read_flat_nvm`).
pub const SECTOR: usize = 4096;

/// Shadow RAM word offsets (`ice_type.h` / `ice_nvm.c`).
mod sr {
    /// Control word: bits 7:6 = 01 marks a valid Shadow RAM; bits 5/4/3 select the second
    /// bank of the NVM / netlist / option ROM modules.
    pub const CTRL: usize = 0x00;
    /// Device starter version, "major.minor" in hex digits (bits 15:12 and 7:0).
    pub const DEV_STARTER_VER: usize = 0x18;
    /// Wake-on-LAN configuration: bit n set means no WoL on port n.
    pub const WOL_CFG: usize = 0x19;
    /// EETRACK id, low and high words.
    pub const EETRACK_LO: usize = 0x2D;
    pub const EETRACK_HI: usize = 0x2E;
    /// Preserved-fields area pointer (a word offset) whose first word is its length.
    pub const PFA_PTR: usize = 0x40;
    /// Bank pointer and size pairs: NVM, option ROM, netlist. A pointer with bit 15 set
    /// counts 4 KiB sectors; sizes count 4 KiB sectors.
    pub const NVM_BANK_PTR: usize = 0x42;
    pub const OROM_BANK_PTR: usize = 0x44;
    pub const NETLIST_BANK_PTR: usize = 0x46;
}

/// Where the modules sit in flash (first bank; the second bank follows at +size).
const NVM_BANK: usize = 64 << 10;
const NVM_BANK_SIZE: usize = 64 << 10;
const OROM_BANK: usize = 192 << 10;
const OROM_BANK_SIZE: usize = 4 << 10;
const NETLIST_BANK: usize = 256 << 10;
const NETLIST_BANK_SIZE: usize = 4 << 10;
/// PFA location in Shadow RAM (words); its length word 2 means no TLVs.
const PFA_AT: usize = 0x100;

/// The version this NVM reports: 4.30 (recipe reuse needs >= 4.30, `ice_switch.c`
/// `ice_init_chk_recipe_reuse_support`), and an EETRACK id.
const NVM_VERSION: u16 = 0x4030;
const EETRACK: u32 = 0x8000_1234;

/// Which of the two address spaces an NVM read addresses (cmd_flags bit 7 of 0x0701).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NvmSpace {
    /// The Shadow RAM, byte-addressed (word n at byte 2n).
    ShadowRam,
    /// The flat flash image.
    Flash,
}

/// The Shadow RAM and flash image.
pub struct Nvm {
    sr: Vec<u8>,
    flash: Vec<u8>,
}

impl Default for Nvm {
    fn default() -> Self {
        Nvm::new()
    }
}

impl Nvm {
    /// A freshly built image: valid Shadow RAM, both NVM banks with an empty CSS header and a
    /// Shadow RAM copy, an option ROM with its CIVD record, a netlist with its id block.
    pub fn new() -> Nvm {
        let mut sr = vec![0u16; SR_WORDS];
        sr[sr::CTRL] = 0b01 << 6; // valid; first bank of every module active
        sr[sr::DEV_STARTER_VER] = NVM_VERSION;
        sr[sr::WOL_CFG] = 0;
        sr[sr::EETRACK_LO] = EETRACK as u16;
        sr[sr::EETRACK_HI] = (EETRACK >> 16) as u16;
        sr[sr::PFA_PTR] = PFA_AT as u16;
        sr[PFA_AT] = 2; // length word + final word: no TLVs
        for (at, base, size) in [
            (sr::NVM_BANK_PTR, NVM_BANK, NVM_BANK_SIZE),
            (sr::OROM_BANK_PTR, OROM_BANK, OROM_BANK_SIZE),
            (sr::NETLIST_BANK_PTR, NETLIST_BANK, NETLIST_BANK_SIZE),
        ] {
            sr[at] = 0x8000 | (base / SECTOR) as u16;
            sr[at + 1] = (size / SECTOR) as u16;
        }
        let sr_bytes: Vec<u8> = sr.iter().flat_map(|w| w.to_le_bytes()).collect();

        let mut flash = vec![0xFFu8; FLASH_BYTES];
        // NVM banks: CSS header length (dwords) in words 2-3 = 0, so the header is 8 words and
        // the Shadow RAM copy starts at the next 32-word boundary (`ice_read_nvm_sr_copy`).
        for bank in [NVM_BANK, NVM_BANK + NVM_BANK_SIZE] {
            flash[bank..bank + 64].fill(0);
            let copy = bank + 64;
            let n = sr_bytes.len().min(NVM_BANK_SIZE - 64);
            flash[copy..copy + n].copy_from_slice(&sr_bytes[..n]);
        }
        for bank in [OROM_BANK, OROM_BANK + OROM_BANK_SIZE] {
            flash[bank..bank + OROM_BANK_SIZE].fill(0);
            let civd = civd_record(1, 3, 0);
            flash[bank..bank + civd.len()].copy_from_slice(&civd);
        }
        for bank in [NETLIST_BANK, NETLIST_BANK + NETLIST_BANK_SIZE] {
            flash[bank..bank + NETLIST_BANK_SIZE].fill(0);
            let words = netlist_module();
            for (i, w) in words.iter().enumerate() {
                flash[bank + 2 * i..bank + 2 * i + 2].copy_from_slice(&w.to_le_bytes());
            }
        }
        Nvm {
            sr: sr_bytes,
            flash,
        }
    }

    /// Reads `len` bytes at byte `offset` of `space`, as 0x0701 does: a read that crosses a
    /// 4 KiB sector, is empty, or reaches past the end is refused with EINVAL.
    pub fn read(&self, space: NvmSpace, offset: u32, len: usize) -> Result<&[u8], u16> {
        let image = match space {
            NvmSpace::ShadowRam => &self.sr,
            NvmSpace::Flash => &self.flash,
        };
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(RC_EINVAL)?;
        if len == 0 || end > image.len() || start / SECTOR != (end - 1) / SECTOR {
            return Err(RC_EINVAL);
        }
        Ok(&image[start..end])
    }

    /// One Shadow RAM word.
    #[cfg(test)]
    pub fn sr_word(&self, word: usize) -> u16 {
        u16::from_le_bytes([self.sr[2 * word], self.sr[2 * word + 1]])
    }
}

/// The option ROM's "$CIV" record (`ice_nvm.c:ice_get_orom_civd_data`): signature, checksum
/// (all 74 bytes sum to 0 mod 256), combo version (major 31:24, build 23:8, patch 7:0), name
/// length and a UTF-16 name of up to 32 characters.
fn civd_record(major: u8, build: u16, patch: u8) -> Vec<u8> {
    let name: Vec<u16> = "vdpdk E810 model".encode_utf16().collect();
    let mut r = Vec::with_capacity(74);
    r.extend_from_slice(b"$CIV");
    r.push(0); // checksum, fixed below
    let combo = (u32::from(major) << 24) | (u32::from(build) << 8) | u32::from(patch);
    r.extend_from_slice(&combo.to_le_bytes());
    r.push(name.len() as u8);
    for i in 0..32 {
        r.extend_from_slice(&name.get(i).copied().unwrap_or(0).to_le_bytes());
    }
    let sum = r.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    r[4] = 0u8.wrapping_sub(sum);
    r
}

/// The netlist module's words (`ice_nvm.c:ice_get_netlist_info`): module id 0x011B (link
/// topology), module length, node count 0, then the 0x30-word id block at word 6.
fn netlist_module() -> Vec<u16> {
    let mut w = vec![0u16; 6 + 0x30];
    w[0] = 0x011B;
    w[2] = 0x30;
    w[3] = 0; // node count (bits 9:0)
    let id = &mut w[6..];
    id[2] = 1; // major, low/high words
    id[4] = 0; // minor
    id[6] = 0; // type
    id[8] = 1; // revision
    id[0x2F] = 0; // customer version
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(b: &[u8]) -> u16 {
        u16::from_le_bytes([b[0], b[1]])
    }

    #[test]
    fn shadow_ram_is_valid_and_its_banks_lie_inside_the_flash() {
        let n = Nvm::new();
        let ctrl = word(n.read(NvmSpace::ShadowRam, 0, 2).unwrap());
        assert_eq!((ctrl >> 6) & 3, 1);
        for at in [sr::NVM_BANK_PTR, sr::OROM_BANK_PTR, sr::NETLIST_BANK_PTR] {
            let ptr = n.sr_word(at);
            let size = n.sr_word(at + 1) as usize * SECTOR;
            assert!(ptr & 0x8000 != 0);
            let base = (ptr & 0x7FFF) as usize * SECTOR;
            assert!(base > 0 && size > 0);
            assert!(
                base + 2 * size <= FLASH_BYTES,
                "both banks inside the flash"
            );
        }
    }

    #[test]
    fn the_nvm_bank_holds_a_shadow_ram_copy_after_its_css_header() {
        let n = Nvm::new();
        let css = n.read(NvmSpace::Flash, (NVM_BANK + 4) as u32, 4).unwrap();
        assert_eq!(css, [0; 4]);
        // hdr_len = 0 * 2 + 8 words, copy at roundup(8, 32) words.
        let at = NVM_BANK + 32 * 2 + 2 * sr::DEV_STARTER_VER;
        assert_eq!(
            word(n.read(NvmSpace::Flash, at as u32, 2).unwrap()),
            NVM_VERSION
        );
    }

    #[test]
    fn reads_past_the_flash_fail_with_einval_and_inside_succeed() {
        let n = Nvm::new();
        assert!(n.read(NvmSpace::Flash, (FLASH_BYTES - 1) as u32, 1).is_ok());
        assert_eq!(
            n.read(NvmSpace::Flash, FLASH_BYTES as u32, 1),
            Err(RC_EINVAL)
        );
        assert_eq!(n.read(NvmSpace::Flash, 0xFF_FFFF, 1), Err(RC_EINVAL));
        assert_eq!(
            n.read(NvmSpace::ShadowRam, (SR_WORDS * 2) as u32, 2),
            Err(RC_EINVAL)
        );
        // Across a sector boundary, or empty.
        assert_eq!(n.read(NvmSpace::Flash, 4095, 2), Err(RC_EINVAL));
        assert_eq!(n.read(NvmSpace::Flash, 0, 0), Err(RC_EINVAL));
        // A binary search of 1-byte reads finds the size, as Linux's does.
        let (mut lo, mut hi) = (0u32, 1 << 24);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if n.read(NvmSpace::Flash, mid, 1).is_ok() {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        assert_eq!(hi as usize, FLASH_BYTES);
    }

    #[test]
    fn the_option_rom_record_sums_to_zero_and_the_netlist_has_its_module_id() {
        let n = Nvm::new();
        let civd = n.read(NvmSpace::Flash, OROM_BANK as u32, 74).unwrap();
        assert_eq!(&civd[..4], b"$CIV");
        assert_eq!(civd.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let nl = n.read(NvmSpace::Flash, NETLIST_BANK as u32, 8).unwrap();
        assert_eq!(word(&nl[0..2]), 0x011B);
        assert_eq!(word(&nl[4..6]), 0x30);
    }

    #[test]
    fn the_pfa_is_empty_but_well_formed() {
        let n = Nvm::new();
        let pfa = n.sr_word(sr::PFA_PTR) as usize;
        assert!(pfa > 0 && pfa < SR_WORDS);
        assert_eq!(n.sr_word(pfa), 2);
    }
}
