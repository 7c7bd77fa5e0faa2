//! Acceptance: a hostile guest. A raw vfio-user client speaks the vDPDK ABI by hand and feeds
//! host-mux bad descriptors, bad ring sizes, garbage flow rules and unknown register offsets;
//! each is refused or dropped and counted while a well-behaved guest keeps its traffic.

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::raw::Raw;
use common::*;
use vdpdk_core::abi::desc::*;
use vdpdk_core::abi::*;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::DmaMemory;
use vdpdk_pci::PciDevice;

#[test]
fn hostile_guest_is_refused_and_counted_while_neighbour_keeps_traffic() {
    let dir = TempDir::new("hostile");
    let (evil_mac, good_mac) = (mac(0x4e), mac(0x46));
    let (mux, mut wire) = start_mux(
        &dir,
        &[
            Vm {
                name: "evil",
                mac: evil_mac,
                rxq: 2,
            },
            Vm {
                name: "good",
                mac: good_mac,
                rxq: 1,
            },
        ],
    );
    let mut good = GuestProc::spawn(&dir.sock("good"), 1);
    good.start("recv 2000 30000");

    let mut raw = Raw::connect(&dir.sock("evil"));
    // Control before negotiation, unknown ops, and a wrong ABI major are refused.
    assert_eq!(
        raw.ctrl(CtrlOp::Configure as u32, [1, 1, 0, 0], &[], 0).0,
        CtrlStatus::BadState as u32
    );
    assert_eq!(
        raw.ctrl(999, [0; 4], &[], 0).0,
        CtrlStatus::UnknownOp as u32
    );
    let (s, m, _) = raw.ctrl(
        CtrlOp::Negotiate as u32,
        [(ABI_MAJOR as u64 + 1) << 16, 0, 0, 0],
        &[],
        0,
    );
    assert_eq!(s, CtrlStatus::Version as u32, "{m}");
    let (s, _, _) = raw.ctrl(
        CtrlOp::Negotiate as u32,
        [(ABI_MAJOR as u64) << 16, 1 << 40, 0, 0],
        &[],
        0,
    );
    assert_eq!(s, CtrlStatus::Version as u32, "unknown feature bits");
    raw.ok(CtrlOp::Negotiate, [(ABI_MAJOR as u64) << 16, 0, 0, 0]);
    assert_eq!(
        raw.ctrl(CtrlOp::Configure as u32, [65, 1, 0, 0], &[], 0).0,
        CtrlStatus::InvalidArg as u32
    );
    raw.ok(CtrlOp::Configure, [2, 1, 0, 0]);

    // Memory: one mapped region holds rings and buffers.
    let mem = DmaMemory::alloc_with("evil", 1 << 20, false).unwrap();
    raw.dev.dma_map(&mem).unwrap();
    let base = mem.iova_base();
    // Ring sizes that are not powers of two, out of range, misaligned or outside the map.
    for (size, iova) in [
        (48, base),
        (16, base),
        (8192, base),
        (64, base + 8),
        (64, base + (1 << 20) - 64),
    ] {
        let (s, m, _) = raw.ctrl(CtrlOp::TxqSetup as u32, [0, iova, size, 0], &[], 0);
        assert_eq!(
            s,
            CtrlStatus::InvalidArg as u32,
            "ring {size}@{iova:#x} accepted: {m}"
        );
    }
    assert_eq!(
        raw.ctrl(CtrlOp::TxqSetup as u32, [5, base, 64, 0], &[], 0)
            .0,
        CtrlStatus::InvalidArg as u32
    );
    raw.ok(CtrlOp::TxqSetup, [0, base, 64, 0]);
    raw.ok(CtrlOp::RxqSetup, [0, base + 4096, 64, 0]);
    raw.ok(CtrlOp::RxqSetup, [1, base + 8192, 64, 0]);

    // Garbage in the flow-rule region.
    for (payload, len) in [
        (vec![0xffu8; 40], 40u32),
        (vec![1, 200, 1, 1], 4),
        (vec![], 5000),
    ] {
        let (s, _, _) = raw.ctrl(CtrlOp::FlowCreate as u32, [0; 4], &payload, len.min(5000));
        assert_eq!(s, CtrlStatus::InvalidArg as u32);
    }
    assert_eq!(
        raw.ctrl(CtrlOp::FlowDestroy as u32, [12345, 0, 0, 0], &[], 0)
            .0,
        CtrlStatus::InvalidArg as u32
    );

    // Unknown register offsets: reads answer all-ones, writes are ignored; both are counted.
    assert_eq!(raw.dev.bar_read32(SIGNAL_BAR, 0x100).unwrap(), u32::MAX);
    raw.dev.bar_write32(SIGNAL_BAR, 0x104, 7).unwrap();

    raw.ok(CtrlOp::Start, [0; 4]);

    // TX descriptors: outside the map, straddling its end, longer than any frame, too short,
    // plus pseudo-random garbage; and 5 valid ones.
    // SAFETY: the ring is the first 64 descriptors of our own mapping.
    let tx = unsafe { RingPtr::new(mem.as_ptr(), 64) };
    let buf = base + 64 * 1024;
    let frame = udp_frame(mac(0xfe), evil_mac, 1, 100);
    // SAFETY: inside our mapping.
    unsafe {
        std::ptr::copy_nonoverlapping(frame.as_ptr(), mem.as_ptr().add(64 * 1024), frame.len())
    };
    let bad = [
        (0x10u64, 100u16),
        (base + (1 << 20) - 50, 100),
        (u64::MAX - 10, 100),
        (buf, 10_000),
        (buf, 3),
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut descs = Vec::new();
    for (addr, len) in bad {
        descs.push((addr, len, false));
    }
    for _ in 0..40 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let addr = if rng & 1 == 0 {
            rng >> 8
        } else {
            base + (rng >> 40) % (2 << 20)
        };
        let len = (rng >> 16) as u16;
        let valid = addr >= base
            && addr + len as u64 <= base + (1 << 20)
            && (14..=9018).contains(&(len as usize));
        descs.push((addr, len, valid));
    }
    for _ in 0..5 {
        descs.push((buf, frame.len() as u16, true));
    }
    let n_valid = descs.iter().filter(|d| d.2).count() as u64;
    for (i, (addr, len, _)) in descs.iter().enumerate() {
        let d = Desc {
            addr: *addr,
            len: *len,
            flags: DESC_F_AVAIL,
            ..Default::default()
        };
        tx.publish(i as u16, &d);
        if i % 32 == 31 {
            raw.dev.bar_write32(SIGNAL_BAR, REG_TX_KICK, 0).unwrap();
        }
    }
    raw.dev.bar_write32(SIGNAL_BAR, REG_TX_KICK, 0).unwrap();
    wait_for(10, "all TX descriptors returned", || {
        (0..descs.len() as u16).all(|i| tx.flags(i) & DESC_F_AVAIL == 0)
    });
    for (i, (_, _, valid)) in descs.iter().enumerate() {
        let f = tx.flags(i as u16);
        assert_eq!(
            f & DESC_F_ERROR == 0,
            *valid,
            "descriptor {i}: {:?}",
            descs[i]
        );
    }
    let on_wire = wire.recv(n_valid as usize + 10, Duration::from_millis(500));
    assert_eq!(on_wire.len() as u64, n_valid);
    let evil = |i: StatsIndex| mux.guests()[0].stats[i as usize];
    assert_eq!(evil(StatsIndex::TxBadDesc), descs.len() as u64 - n_valid);
    assert_eq!(evil(StatsIndex::TxPackets), n_valid);

    // RX descriptors: buffer outside the map and buffer too small are refused, one good one used.
    // SAFETY: RX ring 0 is 64 descriptors at offset 4096 of our mapping.
    let rx = unsafe { RingPtr::new(mem.as_ptr().add(4096), 64) };
    rx.publish(
        0,
        &Desc {
            addr: 0x1000,
            len: 2048,
            flags: DESC_F_AVAIL,
            ..Default::default()
        },
    );
    rx.publish(
        1,
        &Desc {
            addr: buf,
            len: 20,
            flags: DESC_F_AVAIL,
            ..Default::default()
        },
    );
    rx.publish(
        2,
        &Desc {
            addr: buf,
            len: 2048,
            flags: DESC_F_AVAIL,
            ..Default::default()
        },
    );
    wire.send(
        &(0..3)
            .map(|s| udp_frame(evil_mac, WIRE_MAC, s, 200))
            .collect::<Vec<_>>(),
    );
    wait_for(10, "RX descriptors completed", || {
        (0..3).all(|i| rx.flags(i) & DESC_F_AVAIL == 0)
    });
    assert_ne!(rx.flags(0) & DESC_F_ERROR, 0);
    assert_ne!(rx.flags(1) & DESC_F_ERROR, 0);
    assert_eq!(rx.flags(2) & DESC_F_ERROR, 0);
    assert_eq!(rx.read_completed(2).len, 200);
    assert_eq!(evil(StatsIndex::RxBadDesc), 2);
    assert!(
        evil(StatsIndex::CtrlErrors) >= 15,
        "refusals counted: {}",
        evil(StatsIndex::CtrlErrors)
    );

    // Unmapping the memory under running rings stops the device instead of touching freed memory.
    raw.dev.dma_unmap(base, 1 << 20).unwrap();
    wait_for(5, "evil guest stopped", || !mux.guests()[0].running);

    // Meanwhile the good guest got every frame sent to it.
    let to_good: Vec<Vec<u8>> = (0..2000)
        .map(|s| udp_frame(good_mac, WIRE_MAC, s, 64))
        .collect();
    wire.send(&to_good);
    let r = GuestProc::parse_recv(&good.answer());
    assert_eq!(r[0], (2000, digest(&to_good)), "the neighbour lost nothing");
    drop(raw);
    good.quit();
}

#[test]
fn garbage_interrupt_setup_is_refused_and_counted() {
    use vfio_bindings::bindings::vfio::*;
    let dir = TempDir::new("irqs");
    let (mux, _wire) = start_mux(
        &dir,
        &[Vm {
            name: "evil",
            mac: mac(0x4f),
            rxq: 1,
        }],
    );
    let mut c = vfio_user::Client::new(&dir.sock("evil")).unwrap();
    let errors = |mux: &host_mux::HostMux| mux.guests()[0].stats[StatsIndex::CtrlErrors as usize];
    let before = errors(&mux);
    let none = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    let efd = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    // Vectors past the 64 the device has; an index that is not MSI-X; two eventfds promised
    // but one sent; an unknown data type. (The client ignores error replies; the host counts
    // them.) Eventfd data with no fds at all is QEMU's way of saying "fd -1" and is accepted.
    let one = std::fs::File::open("/dev/null").unwrap();
    let refused = [
        c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, none, 60, 10, &[]),
        c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, none, u32::MAX, 2, &[]),
        c.set_irqs(VFIO_PCI_INTX_IRQ_INDEX, none, 0, 1, &[]),
        c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, efd, 0, 2, &[one.as_raw_fd()]),
        c.set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_ACTION_TRIGGER,
            0,
            1,
            &[],
        ),
    ];
    for (i, r) in refused.iter().enumerate() {
        assert!(
            matches!(r, Err(vfio_user::Error::Refused(e)) if *e == libc::EINVAL as u32),
            "request {i}: {r:?}"
        );
    }
    c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, efd, 0, 2, &[]).unwrap();
    wait_for(5, "five refusals counted", || errors(&mux) == before + 5);
    // The device still serves the connection afterwards.
    let mut v = [0u8; 4];
    c.region_read(VFIO_PCI_BAR0_REGION_INDEX, REG_MAGIC, &mut v)
        .unwrap();
    assert_eq!(u32::from_le_bytes(v), ABI_MAGIC);
}
