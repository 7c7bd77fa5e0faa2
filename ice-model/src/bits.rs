//! Bit-packed queue contexts, read the way the hardware packs them: bit `n` of a context is
//! bit `n % 8` of byte `n / 8` (DPDK `base/ice_common.c` `ice_set_ctx`, Linux `PACKED_FIELD`
//! with `QUIRK_LITTLE_ENDIAN`). The model's own copy, so a packing mistake in a driver cannot
//! be hidden by the model sharing it.

/// Reads `width` bits (at most 64) at bit `lsb` of `buf`. Panics if the field leaves `buf`.
pub(crate) fn get_bits(buf: &[u8], lsb: usize, width: usize) -> u64 {
    assert!(
        width <= 64 && lsb + width <= buf.len() * 8,
        "field {lsb}/{width} outside context"
    );
    (0..width).fold(0u64, |v, i| {
        let bit = lsb + i;
        v | ((buf[bit / 8] >> (bit % 8) & 1) as u64) << i
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cross_byte_boundaries_little_endian() {
        // 13 bits at bit 89 holding 512: bit 98 set = byte 12 bit 2.
        let mut c = [0u8; 32];
        c[12] = 0x04;
        assert_eq!(get_bits(&c, 89, 13), 512);
        assert_eq!(get_bits(&c, 102, 7), 0);
        let c = [0xFFu8; 8];
        assert_eq!(get_bits(&c, 0, 64), u64::MAX);
        assert_eq!(get_bits(&c, 3, 5), 0x1F);
    }
}
