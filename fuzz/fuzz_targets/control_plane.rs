//! host-mux's device model driven as a guest (and its VMM) can drive it: the vfio-user backend
//! calls (`ServerBackend`) in any order with any arguments — region reads/writes of every
//! index and offset, control requests written into BAR2 and executed by the doorbell, DMA
//! map/unmap, SET_IRQS with any fds, device reset — on a fresh device per input. After every
//! step the guest slot's invariants are checked: no ring outlives its DMA mapping, both
//! halves see the same DMA map, limits hold, a running device has all its queues, every
//! doorbell is answered with its own sequence number.
#![no_main]

use arbitrary::Arbitrary;
use host_mux::device::VdpdkDevice;
use libfuzzer_sys::fuzz_target;
use vdpdk_core::abi::{self, CtrlRequest, CtrlResponse, CtrlStatus, StatsIndex};
use vdpdk_fuzz::ops::{Arg, Iova, Off, Rule, Size};
use vdpdk_fuzz::{file_of_kind, new_device, GUEST_MAC};
use vfio_bindings::bindings::vfio::*;
use vfio_user::{DmaMapFlags, DmaUnmapFlags, ServerBackend};
use zerocopy::{FromZeros, IntoBytes};

#[derive(Arbitrary, Debug)]
enum Payload {
    Rule(Rule),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        region: u8,
        off: Off,
        len: u8,
    },
    Write {
        region: u8,
        off: Off,
        data: Vec<u8>,
    },
    /// A well-formed request block (op code mostly valid) rung with its sequence number,
    /// unless `wrong_seq`.
    Ctrl {
        op: u8,
        seq: u32,
        wrong_seq: bool,
        args: [Arg; 4],
        payload: Payload,
        /// Overrides the payload length field.
        payload_len: Option<u32>,
    },
    /// Any bytes at the request block, then the doorbell.
    RawCtrl {
        at: u16,
        bytes: Vec<u8>,
        seq: u32,
    },
    Kick(u32),
    DmaMap {
        flags: u32,
        offset: Size,
        iova: Iova,
        size: Size,
        /// 0 none, else the kind of file (sealed memfd, unsealed memfd, eventfd, pipe).
        fd: u8,
    },
    DmaUnmap {
        flags: u32,
        iova: Iova,
        size: Size,
    },
    SetIrqs {
        index: u8,
        flags: u8,
        start: u8,
        count: u8,
        wide: Option<(u32, u32)>,
        fds: Vec<u8>,
    },
    Reset,
}

fn region_index(r: u8) -> u32 {
    r as u32 % 10
}

fn doorbell(dev: &mut VdpdkDevice, seq: u32) {
    dev.region_write(
        VFIO_PCI_BAR0_REGION_INDEX,
        abi::REG_CTRL_DOORBELL,
        &seq.to_le_bytes(),
    )
    .expect("region writes never fail");
}

fn check_invariants(g: &host_mux::guest::Guest) {
    let tx = g.tx.lock();
    let rx = g.rx.lock();
    assert_eq!(rx.mem.len(), tx.mem.len(), "RX and TX DMA maps differ");
    assert_eq!(rx.mem.bytes(), tx.mem.bytes(), "RX and TX DMA maps differ");
    assert!(rx.mem.len() <= g.limits.dma_regions);
    assert!(rx.mem.bytes() <= g.limits.dma_bytes);
    assert!(rx.rules.len() <= g.limits.flow_rules);
    assert!(rx.irq_fds.len() <= abi::MAX_QUEUES as usize);
    assert!(rx.queues.len() <= g.max_rxq as usize);
    assert!(tx.queues.len() <= g.max_txq as usize);
    for q in rx.queues.iter().chain(tx.queues.iter()).flatten() {
        // A ring must never outlive (or lie outside) its writable DMA mapping.
        assert!(
            rx.mem.translate(q.ring_iova, q.ring_len, true).is_some()
                && tx.mem.translate(q.ring_iova, q.ring_len, true).is_some(),
            "ring {:#x}+{:#x} is not inside a writable DMA mapping",
            q.ring_iova,
            q.ring_len
        );
        assert_eq!(q.ring_len, q.ring.size() as u64 * 32);
    }
    for (_, r) in &rx.rules {
        assert!(
            r.check_shape().is_ok(),
            "an installed rule fails its shape check"
        );
        for q in r.queues() {
            assert!((q as usize) < rx.queues.len(), "a rule targets queue {q}");
        }
    }
    assert_eq!(rx.running, tx.running, "halves disagree on running");
    if rx.running {
        assert!(!rx.queues.is_empty() && !tx.queues.is_empty());
        assert!(
            rx.queues
                .iter()
                .chain(tx.queues.iter())
                .all(|q| q.is_some()),
            "running with a queue not set up"
        );
    }
}

fn response(g: &host_mux::guest::Guest) -> CtrlResponse {
    let mut r = CtrlResponse::new_zeroed();
    assert!(g.data_bar.read(abi::CTRL_RESP_OFFSET, r.as_mut_bytes()));
    r
}

fn ctrl_status_reg(dev: &mut VdpdkDevice) -> u32 {
    let mut v = [0u8; 4];
    dev.region_read(VFIO_PCI_BAR0_REGION_INDEX, abi::REG_CTRL_STATUS, &mut v)
        .expect("region reads never fail");
    u32::from_le_bytes(v)
}

fuzz_target!(|ops: Vec<Op>| {
    vdpdk_fuzz::init();
    let before = vdpdk_fuzz::open_fds();
    run(ops);
    // The device and guest slot are gone: every fd they were handed is closed.
    assert_eq!(vdpdk_fuzz::open_fds(), before, "file descriptors leaked");
});

fn run(ops: Vec<Op>) {
    let (g, mut dev) = new_device();
    for op in ops.into_iter().take(64) {
        let errors_before = g.stats.get(StatsIndex::CtrlErrors);
        let mut rung = None;
        match op {
            Op::Read { region, off, len } => {
                let mut buf = vec![0u8; len as usize % 65];
                dev.region_read(region_index(region), off.get(), &mut buf)
                    .expect("region reads never fail");
            }
            Op::Write {
                region,
                off,
                mut data,
            } => {
                data.truncate(64);
                let region = region_index(region);
                let off = off.get();
                let is_doorbell = region == VFIO_PCI_BAR0_REGION_INDEX
                    && off == abi::REG_CTRL_DOORBELL
                    && data.len() == 4;
                dev.region_write(region, off, &data)
                    .expect("region writes never fail");
                if is_doorbell {
                    rung = Some(u32::from_le_bytes(data[..4].try_into().unwrap()));
                }
            }
            Op::Ctrl {
                op,
                seq,
                wrong_seq,
                args,
                payload,
                payload_len,
            } => {
                let mut req = CtrlRequest::new_zeroed();
                req.op = if op < 240 {
                    (op % 14) as u32
                } else {
                    op as u32 * 0x0101_0101
                };
                req.seq = if wrong_seq { seq.wrapping_add(1) } else { seq };
                req.args = args.map(Arg::get);
                let bytes = match payload {
                    Payload::Rule(r) => r.encode(GUEST_MAC.0),
                    Payload::Raw(b) => b,
                };
                let n = bytes.len().min(abi::CTRL_PAYLOAD_MAX);
                req.payload[..n].copy_from_slice(&bytes[..n]);
                req.payload_len = payload_len.unwrap_or(n as u32);
                // The guest writes BAR2 through its own mapping of the shared memfd.
                assert!(g.data_bar.write(abi::CTRL_REQ_OFFSET, req.as_bytes()));
                doorbell(&mut dev, seq);
                rung = Some(seq);
            }
            Op::RawCtrl { at, bytes, seq } => {
                let at = abi::CTRL_REQ_OFFSET + (at as usize % size_of::<CtrlRequest>());
                let n = bytes.len().min(abi::DATA_BAR_SIZE as usize - at);
                assert!(g.data_bar.write(at, &bytes[..n]));
                doorbell(&mut dev, seq);
                rung = Some(seq);
            }
            Op::Kick(q) => {
                dev.region_write(
                    VFIO_PCI_BAR0_REGION_INDEX,
                    abi::REG_TX_KICK,
                    &q.to_le_bytes(),
                )
                .expect("region writes never fail");
            }
            Op::DmaMap {
                flags,
                offset,
                iova,
                size,
                fd,
            } => {
                let file = (fd % 5 != 0).then(|| file_of_kind(fd % 5 - 1));
                let before = g.dma_regions();
                let ok = dev
                    .dma_map(
                        DmaMapFlags::from_bits_retain(flags),
                        offset.get(),
                        iova.get(),
                        size.get(),
                        file,
                    )
                    .is_ok();
                let after = g.dma_regions();
                assert!(after == before || (ok && after == before + 1 && fd % 5 == 1));
            }
            Op::DmaUnmap { flags, iova, size } => {
                let _ = dev.dma_unmap(
                    DmaUnmapFlags::from_bits_retain(flags),
                    iova.get(),
                    size.get(),
                );
                if flags & DmaUnmapFlags::UNMAP_ALL.bits() != 0 {
                    assert_eq!(g.dma_regions(), 0, "UNMAP_ALL left regions");
                }
            }
            Op::SetIrqs {
                index,
                flags,
                start,
                count,
                wide,
                fds,
            } => {
                let (start, count) = wide.unwrap_or((start as u32, count as u32));
                let fds = fds.iter().take(3).map(|&k| file_of_kind(k)).collect();
                let _ = dev.set_irqs(index as u32 % 6, flags as u32, start, count, fds);
            }
            Op::Reset => {
                dev.reset().expect("reset never fails");
                assert_eq!(g.dma_regions(), 0);
                assert!(!g.running());
                assert!(g.rx.lock().irq_fds.is_empty());
                assert!(g.rx.lock().rules.is_empty());
            }
        }
        if let Some(seq) = rung {
            // Every doorbell is answered, with its own sequence number; the status register
            // reads the same status; a refusal is counted.
            let r = response(&g);
            assert_eq!(r.seq, seq, "response carries another sequence number");
            assert_eq!(ctrl_status_reg(&mut dev), r.status);
            if r.status != CtrlStatus::Ok as u32 {
                assert!(g.stats.get(StatsIndex::CtrlErrors) > errors_before);
            }
        }
        check_invariants(&g);
    }
}
