//! The model checked against the public formats with literal values (offsets and bits from
//! DPDK `base/ice_hw_autogen.h` and `base/ice_adminq_cmd.h`), independent of both the driver's
//! and the model's own constant tables.

use ice_model::pci::ModelPci;
use ice_model::{E810Model, ModelConfig};
use vdpdk_core::DmaMemory;
use vdpdk_pci::PciDevice;

fn setup() -> (ModelPci, DmaMemory) {
    let m = E810Model::shared(ModelConfig::default());
    let pci = ModelPci::new(m);
    let mem = DmaMemory::alloc_with("fmt", 8192, false).unwrap();
    pci.dma_map(&mem).unwrap();
    (pci, mem)
}

/// Programs a 4-entry ATQ at the start of `mem` through the literal register offsets.
fn program_atq(pci: &ModelPci, mem: &DmaMemory) {
    let w = |off: u64, v: u32| pci.bar_write32(0, off, v).unwrap();
    w(0x80300, 0); // PF_FW_ATQH
    w(0x80400, 0); // PF_FW_ATQT
    w(0x80200, 4 | 1 << 31); // PF_FW_ATQLEN: 4 entries, ENABLE
    w(0x80000, mem.iova_base() as u32); // PF_FW_ATQBAL
    w(0x80100, (mem.iova_base() >> 32) as u32); // PF_FW_ATQBAH
}

fn desc(mem: &DmaMemory, i: usize) -> [u8; 32] {
    let mut d = [0u8; 32];
    // SAFETY: descriptor i of the ring at the start of our own mapping.
    unsafe { std::ptr::copy_nonoverlapping(mem.as_ptr().add(i * 32), d.as_mut_ptr(), 32) };
    d
}

fn put_desc(mem: &DmaMemory, i: usize, d: &[u8; 32]) {
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), mem.as_ptr().add(i * 32), 32) };
}

#[test]
fn init_registers_read_as_documented() {
    let (pci, _mem) = setup();
    let r = |off| pci.bar_read32(0, off).unwrap();
    assert_eq!(r(0xB6008) & 0x33B, 0x33B, "GLNVM_ULD: all reset-done bits");
    assert_eq!(r(0xB8188) & 0x3, 0, "GLGEN_RSTAT.DEVSTATE active");
    assert_ne!(r(0xB6108) & (1 << 6), 0, "GLNVM_FLA.LOCKED");
    assert_eq!(r(0xB6134) & 0x7, 0, "GL_MNG_FWSM: normal mode");
    pci.bar_write32(0, 0x91000, 1).unwrap(); // PFGEN_CTRL.PFSWR
    assert_eq!(r(0x91000) & 1, 0, "PF reset completes (PFSWR self-clears)");
    assert_ne!(r(0x1D2500) & (1 << 31), 0, "PFLAN_RX_QALLOC.VALID");
    assert_ne!(r(0x1D2580) & (1 << 31), 0, "PFLAN_TX_QALLOC.VALID");
}

#[test]
fn admin_descriptor_completion_follows_ice_aq_desc() {
    let (pci, mem) = setup();
    program_atq(&pci, &mem);
    // get_ver: flags SI (0x2000) @0, opcode 0x0001 @2.
    let mut d = [0u8; 32];
    d[0..2].copy_from_slice(&0x2000u16.to_le_bytes());
    d[2..4].copy_from_slice(&0x0001u16.to_le_bytes());
    put_desc(&mem, 0, &d);
    pci.bar_write32(0, 0x80400, 1).unwrap(); // tail
    assert_eq!(
        pci.bar_read32(0, 0x80300).unwrap(),
        1,
        "ATQH caught up with the tail"
    );
    let c = desc(&mem, 0);
    let flags = u16::from_le_bytes([c[0], c[1]]);
    assert_eq!(flags & 0x7, 0x3, "DD | CMP, no ERR");
    assert_eq!(flags & 0x2000, 0x2000, "SI kept");
    assert_eq!(u16::from_le_bytes([c[6], c[7]]), 0, "retval OK");
    assert_eq!(
        c[16 + 13],
        1,
        "api_maj at params byte 13 (E810 API major 1)"
    );

    // An unknown opcode answers ERR with an admin error, and the queue keeps going.
    let mut d = [0u8; 32];
    d[0..2].copy_from_slice(&0x2000u16.to_le_bytes());
    d[2..4].copy_from_slice(&0x7777u16.to_le_bytes());
    put_desc(&mem, 1, &d);
    pci.bar_write32(0, 0x80400, 2).unwrap();
    let c = desc(&mem, 1);
    assert_eq!(
        u16::from_le_bytes([c[0], c[1]]) & 0x7,
        0x7,
        "DD | CMP | ERR"
    );
    assert_ne!(u16::from_le_bytes([c[6], c[7]]), 0, "an admin error code");
}

#[test]
fn indirect_response_too_small_reports_enomem_and_needed_length() {
    let (pci, mem) = setup();
    program_atq(&pci, &mem);
    // get_link_status with an 8-byte buffer (needs 32): BUF (0x1000) | SI, datalen 8,
    // buffer address in params bytes 8..16 (high, low).
    let buf_iova = mem.iova_base() + 4096;
    let mut d = [0u8; 32];
    d[0..2].copy_from_slice(&0x3000u16.to_le_bytes());
    d[2..4].copy_from_slice(&0x0607u16.to_le_bytes());
    d[4..6].copy_from_slice(&8u16.to_le_bytes());
    d[24..28].copy_from_slice(&((buf_iova >> 32) as u32).to_le_bytes());
    d[28..32].copy_from_slice(&(buf_iova as u32).to_le_bytes());
    put_desc(&mem, 0, &d);
    pci.bar_write32(0, 0x80400, 1).unwrap();
    let c = desc(&mem, 0);
    assert_eq!(u16::from_le_bytes([c[6], c[7]]), 9, "ENOMEM");
    assert_eq!(
        u16::from_le_bytes([c[4], c[5]]),
        32,
        "datalen = length needed"
    );
}

/// Sets `width` bits at bit `lsb` of a little-endian context image.
fn put_bits(ctx: &mut [u8], lsb: usize, width: usize, v: u64) {
    for b in 0..width {
        let bit = lsb + b;
        if v >> b & 1 == 1 {
            ctx[bit / 8] |= 1 << (bit % 8);
        }
    }
}

#[test]
fn a_frame_larger_than_dbuf_spans_descriptors_up_to_rxmax() {
    let m = E810Model::shared(ModelConfig::default());
    let pci = ModelPci::new(m.clone());
    let mem = DmaMemory::alloc_with("rxfmt", 16384, false).unwrap();
    pci.dma_map(&mem).unwrap();
    let (ring, bufs) = (mem.iova_base() + 4096, mem.iova_base() + 8192);
    for i in 0..8 {
        let mut d = [0u8; 32];
        d[0..8].copy_from_slice(&(bufs + i as u64 * 128).to_le_bytes()); // pkt_addr
        put_desc(&mem, 128 + i, &d); // ring at byte 4096 = descriptor slot 128
    }
    // RLAN context [DPDK ice_lan_rx_ctx_info]: base 32/57 (128 B units), qlen 89/13,
    // dbuf 102/7 (128 B units), dsize 116/1, rxmax 174/14.
    let mut ctx = [0u8; 32];
    put_bits(&mut ctx, 32, 57, ring >> 7);
    put_bits(&mut ctx, 89, 13, 8);
    put_bits(&mut ctx, 102, 7, 1);
    put_bits(&mut ctx, 116, 1, 1);
    put_bits(&mut ctx, 174, 14, 1000);
    let w = |off: u64, v: u32| pci.bar_write32(0, off, v).unwrap();
    for (i, dw) in ctx.chunks(4).enumerate() {
        w(
            0x280000 + 0x2000 * i as u64,
            u32::from_le_bytes(dw.try_into().unwrap()),
        ); // QRX_CONTEXT(i, 0)
    }
    w(0x290000, 7); // QRX_TAIL(0): descriptors 0..7 posted
    w(0x120000, 1); // QRX_CTRL(0).QENA_REQ

    let frame: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    assert!(m.lock().receive_on(0, &frame));
    // Flex write-back [DPDK ice_32b_rx_flex_desc]: pkt_len @4 (13:0), status_error0 @8
    // (DD b0, EOF b1).
    let mut data = Vec::new();
    for (i, (len, eof)) in [(128u16, false), (128, false), (44, true)]
        .into_iter()
        .enumerate()
    {
        let d = desc(&mem, 128 + i);
        assert_eq!(
            u16::from_le_bytes([d[4], d[5]]) & 0x3FFF,
            len,
            "descriptor {i}"
        );
        let st = u16::from_le_bytes([d[8], d[9]]);
        assert_eq!(st & 1, 1, "DD on descriptor {i}");
        assert_eq!(st & 2 != 0, eof, "EOF only on the last");
        let mut b = vec![0u8; len as usize];
        // SAFETY: buffer i inside our own mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(mem.as_ptr().add(8192 + i * 128), b.as_mut_ptr(), b.len())
        };
        data.extend(b);
    }
    assert_eq!(data, frame, "the pieces reassemble the frame");
    // Over RXMAX: dropped whole; with 4 descriptors left a 600 B frame (5 buffers) is a
    // discard, not a partial write.
    assert!(!m.lock().receive_on(0, &[0u8; 1001]));
    assert_eq!(m.lock().stats.rx_oversize, 1);
    assert!(!m.lock().receive_on(0, &[0u8; 600]));
    assert_eq!(desc(&mem, 128 + 3)[8] & 1, 0, "nothing written for it");
}
