//! Tests of the descriptor formats and the ring helpers.

use super::*;

/// A TX descriptor using every field the posted format has, each at its widest.
fn full_tx() -> Desc {
    Desc {
        addr: 0x1122_3344_5566_7788,
        len: 0xfedc,
        flags: DESC_F_AVAIL,
        ol_flags: DESC_OL_TX_IPV6 | DESC_OL_TX_TCP_CKSUM | DESC_OL_TX_TCP_SEG,
        tso_segsz: MAX_TSO_SEGSZ,
        l2_len: MAX_L2_LEN,
        l4_len: 0xff,
        l3_len: MAX_L3_LEN,
        ..Default::default()
    }
}

#[test]
fn publish_read_complete_roundtrip() {
    let mut mem = vec![0u64; 32 * DESC_SIZE / 8];
    // SAFETY: mem holds 32 descriptors, 8-byte aligned, and outlives `r`.
    let r = unsafe { RingPtr::new(mem.as_mut_ptr().cast(), 32) };
    let d = full_tx();
    assert!(d.fits_posted());
    r.publish(33, &d); // wraps to slot 1
    assert_eq!(r.flags(1), DESC_F_AVAIL, "the TSO size is not a flag");
    assert_eq!(r.read(1), d, "every field comes back");
    assert_eq!(r.read(0), Desc::default(), "the slot before is untouched");
    assert_eq!(r.read(2), Desc::default(), "the slot after is untouched");
    // An RX buffer posted, then completed over.
    let post = Desc {
        addr: 0x4000_0080,
        len: 2048,
        flags: DESC_F_AVAIL,
        ..Default::default()
    };
    r.publish(2, &post);
    assert_eq!(r.read(2), post);
    r.complete(2, 42, DESC_F_AVAIL, DESC_OL_RX_MARK, 0x11, 0xdead_beef);
    let want = Desc {
        len: 42,
        ol_flags: DESC_OL_RX_MARK,
        packet_type: 0x11,
        mark: 0xdead_beef,
        ..Default::default()
    };
    assert_eq!(r.read_completed(2), want, "the RX results, AVAIL cleared");
    assert_eq!(r.flags(2), 0);
    assert_eq!(r.read(1), d, "the neighbour in the line is untouched");
}

#[test]
fn the_posted_format_lies_as_documented() {
    let mut mem = vec![0u64; 4 * DESC_SIZE / 8];
    // SAFETY: mem holds 4 descriptors, 8-byte aligned, and outlives `r`.
    let r = unsafe { RingPtr::new(mem.as_mut_ptr().cast(), 4) };
    let d = Desc {
        addr: 0x0102_0304_0506_0708,
        len: 1514,
        flags: DESC_F_AVAIL,
        ol_flags: DESC_OL_TX_IPV4 | DESC_OL_TX_IP_CKSUM | DESC_OL_TX_TCP_SEG,
        tso_segsz: 1448,
        l2_len: 14,
        l3_len: 20,
        l4_len: 32,
        ..Default::default()
    };
    r.publish(1, &d);
    let bytes: Vec<u8> = mem.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let b = &bytes[DESC_SIZE..2 * DESC_SIZE];
    assert_eq!(b[..8], 0x0102_0304_0506_0708u64.to_ne_bytes());
    assert_eq!(b[8..10], 1514u16.to_ne_bytes());
    assert_eq!(b[10..12], (1u16 | 1448 << 2).to_ne_bytes());
    let meta: u32 = 0b100101 | 14 << 6 | 20 << 13 | 32 << 22;
    assert_eq!(b[12..16], meta.to_ne_bytes());
    let raw: [u8; DESC_SIZE] = b.try_into().unwrap();
    assert_eq!(Desc::from_posted_bytes(raw), d);
}

#[test]
fn requests_the_posted_format_cannot_carry_are_told() {
    let ok = full_tx();
    assert!(ok.fits_posted());
    for bad in [
        Desc {
            l2_len: MAX_L2_LEN + 1,
            ..ok
        },
        Desc {
            l3_len: MAX_L3_LEN + 1,
            ..ok
        },
        Desc {
            tso_segsz: MAX_TSO_SEGSZ + 1,
            ..ok
        },
        Desc {
            ol_flags: DESC_OL_RX_MARK,
            ..ok
        },
        Desc {
            ol_flags: 1 << 22,
            ..ok
        },
    ] {
        assert!(!bad.fits_posted(), "{bad:?}");
    }
}

#[test]
fn any_ring_bytes_read_as_a_posted_descriptor_that_fits() {
    // What a guest may write, read back the way the host reads it: every value within
    // the fields' widths, and written again, the same bytes (no bit is dropped or made up).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10_000 {
        let mut raw = [0u8; DESC_SIZE];
        for b in raw.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // The offload word's two top bits are reserved (dropped when read).
        let meta = u32::from_ne_bytes(raw[12..].try_into().unwrap()) & !(3 << 30);
        raw[12..].copy_from_slice(&meta.to_ne_bytes());
        let d = Desc::from_posted_bytes(raw);
        assert!(d.fits_posted(), "{d:?}");
        let mut mem = [0u64; 2];
        // SAFETY: mem holds 1 descriptor, 8-byte aligned, and outlives `r`.
        let r = unsafe { RingPtr::new(mem.as_mut_ptr().cast(), 1) };
        r.publish(0, &d);
        let back: Vec<u8> = mem.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(back, raw, "{d:?}");
    }
}

#[test]
fn laps_alternate_the_avail_bit_and_the_host_never_writes() {
    let mut mem = vec![0u64; 32 * DESC_SIZE / 8];
    // SAFETY: mem holds 32 descriptors, 8-byte aligned, and outlives `r`.
    let r = unsafe { RingPtr::new(mem.as_mut_ptr().cast(), 32) }.with_laps(true);
    // Over the u16 wrap too: 65536 is an even number of laps.
    for step in 0..65536 + 100 {
        let idx = step as u16;
        assert!(!r.posted(idx), "slot {idx} before the guest posts it");
        let d = Desc {
            addr: idx as u64,
            flags: r.avail_bit(idx),
            ..Default::default()
        };
        r.publish(idx, &d);
        assert!(r.posted(idx), "slot {idx} posted");
        assert_eq!(
            r.avail_bit(idx) != 0,
            (idx / 32).is_multiple_of(2),
            "lap parity of {idx}"
        );
        r.release(idx, DESC_F_ERROR);
        assert_eq!(r.flags(idx), d.flags, "release leaves a lap ring alone");
        // Still posted by its flag: the host's index, not the flag, says it moved on.
        assert!(r.posted(idx));
        // The slot a lap ahead is not posted by this descriptor's bit.
        assert!(!r.posted(idx.wrapping_add(32)));
    }
    // By flags (the default), release clears the bit.
    let f = r.with_laps(false);
    f.publish(
        3,
        &Desc {
            flags: f.avail_bit(3),
            ..Default::default()
        },
    );
    assert!(f.posted(3));
    f.release(3, 0);
    assert!(!f.posted(3) && !f.posted(35));
}

#[test]
fn ring_size_validation() {
    assert!(valid_ring_size(32));
    assert!(valid_ring_size(4096));
    assert!(!valid_ring_size(48));
    assert!(!valid_ring_size(16));
    assert!(!valid_ring_size(8192));
    assert!(!valid_ring_size(0));
}

#[test]
fn completed_lines_shared_with_pending_descriptors_are_left_out() {
    // Four descriptors a line: a burst ending mid-line stops before that line.
    assert_eq!(whole_lines(0, 8), 8);
    assert_eq!(whole_lines(0, 7), 4);
    assert_eq!(whole_lines(1, 3), 3, "ends on a line boundary");
    assert_eq!(
        whole_lines(1, 2),
        0,
        "within the first line, still being filled"
    );
    assert_eq!(whole_lines(2, 5), 2);
    assert_eq!(whole_lines(5, 0), 0);
    assert_eq!(whole_lines(u16::MAX, 1), 1, "across the index wrap");
}

#[test]
fn each_line_visits_every_line_of_the_descriptors_once_at_least() {
    let mut mem = vec![0u64; 32 * DESC_SIZE / 8];
    // SAFETY: the vector holds 32 descriptors and outlives the ring.
    let r = unsafe { RingPtr::new(mem.as_mut_ptr().cast(), 32) };
    let base = mem.as_ptr() as usize;
    let lines = |idx: u16, n: u16| {
        let seen = std::cell::RefCell::new(Vec::new());
        r.each_line(idx, n, |p| seen.borrow_mut().push((p as usize - base) / 64));
        let mut v = seen.into_inner();
        v.dedup();
        v
    };
    assert_eq!(lines(0, 8), [0, 1]);
    assert_eq!(lines(1, 7), [0, 1], "from mid-line");
    assert_eq!(lines(1, 8), [0, 1, 2], "the last descriptor's line too");
    assert_eq!(lines(28, 8), [7, 0], "around the ring");
    assert_eq!(lines(31, 8), [7, 0, 1]);
    assert_eq!(lines(0, 100).len(), 8, "never more than the ring");
    assert!(lines(3, 0).is_empty());
}
