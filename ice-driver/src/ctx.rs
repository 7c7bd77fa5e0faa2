//! Bit-packed queue contexts: bit `n` of a context is bit `n % 8` of byte `n / 8`
//! (little-endian packing, \[CMN\] `ice_set_ctx` / Linux `PACKED_FIELD` with
//! `QUIRK_LITTLE_ENDIAN`).

// The context layouts are kept whole, as the header lays them out, not only the fields set today.
#![allow(dead_code)]

/// Writes the low `width` bits of `value` at bit `lsb` of `buf`.
pub fn set_bits(buf: &mut [u8], lsb: usize, width: usize, value: u64) {
    assert!(
        width <= 64 && lsb + width <= buf.len() * 8,
        "field {lsb}/{width} outside context"
    );
    for i in 0..width {
        let bit = lsb + i;
        let (byte, shift) = (bit / 8, bit % 8);
        if value >> i & 1 == 1 {
            buf[byte] |= 1 << shift;
        } else {
            buf[byte] &= !(1 << shift);
        }
    }
}

/// Reads `width` bits at bit `lsb` of `buf`.
pub fn get_bits(buf: &[u8], lsb: usize, width: usize) -> u64 {
    assert!(
        width <= 64 && lsb + width <= buf.len() * 8,
        "field {lsb}/{width} outside context"
    );
    (0..width).fold(0u64, |v, i| {
        let bit = lsb + i;
        v | ((buf[bit / 8] >> (bit % 8) & 1) as u64) << i
    })
}

/// RLAN (RX queue) context fields: (lsb, width) from \[CMN\] `ice_rlan_ctx_info`.
pub mod rlan {
    pub const HEAD: (usize, usize) = (0, 13);
    pub const BASE: (usize, usize) = (32, 57);
    pub const QLEN: (usize, usize) = (89, 13);
    pub const DBUF: (usize, usize) = (102, 7);
    pub const HBUF: (usize, usize) = (109, 5);
    pub const DTYPE: (usize, usize) = (114, 2);
    pub const DSIZE: (usize, usize) = (116, 1);
    pub const CRCSTRIP: (usize, usize) = (117, 1);
    pub const L2TSEL: (usize, usize) = (119, 1);
    pub const RXMAX: (usize, usize) = (174, 14);
    pub const LRXQTHRESH: (usize, usize) = (198, 3);
    pub const PREFENA: (usize, usize) = (201, 1);
    /// 256 bits, written as 8 dwords through QRX_CONTEXT(i, q).
    pub const SIZE: usize = 32;
}

/// TLAN (TX queue) context fields, (lsb, width) from \[CMN\] `ice_tlan_ctx_info`; 22 bytes.
pub mod tlan {
    pub const BASE: (usize, usize) = (0, 57);
    pub const PORT_NUM: (usize, usize) = (57, 3);
    pub const CGD_NUM: (usize, usize) = (60, 5);
    pub const PF_NUM: (usize, usize) = (65, 3);
    pub const VMVF_TYPE: (usize, usize) = (78, 2);
    pub const SRC_VSI: (usize, usize) = (80, 10);
    pub const WB_MODE: (usize, usize) = (101, 1);
    pub const QLEN: (usize, usize) = (135, 13);
    pub const TSO_ENA: (usize, usize) = (152, 1);
    pub const TSO_QNUM: (usize, usize) = (153, 11);
    pub const LEGACY_INT: (usize, usize) = (164, 1);
    pub const SIZE: usize = 22;
    /// vmvf_type for a PF queue.
    pub const VMVF_TYPE_PF: u64 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_roundtrip_and_do_not_touch_neighbours() {
        let mut c = [0u8; rlan::SIZE];
        set_bits(&mut c, rlan::BASE.0, rlan::BASE.1, 0x1_2345_6789_ABCD >> 7);
        set_bits(&mut c, rlan::QLEN.0, rlan::QLEN.1, 512);
        set_bits(&mut c, rlan::RXMAX.0, rlan::RXMAX.1, 9728);
        assert_eq!(
            get_bits(&c, rlan::BASE.0, rlan::BASE.1),
            0x1_2345_6789_ABCD >> 7
        );
        assert_eq!(get_bits(&c, rlan::QLEN.0, rlan::QLEN.1), 512);
        assert_eq!(get_bits(&c, rlan::RXMAX.0, rlan::RXMAX.1), 9728);
        assert_eq!(get_bits(&c, rlan::DBUF.0, rlan::DBUF.1), 0);
        // qlen 512 at bit 89: bit 98 set = byte 12 bit 2.
        assert_eq!(c[12], 0x04);
    }
}
