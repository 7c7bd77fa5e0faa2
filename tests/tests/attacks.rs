//! Acceptance for "a hostile guest must not be able to take down host-mux or stall other
//! guests": one test per class of attack. In each, an honest neighbour receives traffic from
//! the wire while the attack runs (it must get every frame), the attacker is refused and a
//! counter moves, and afterwards the attacker's slot takes a fresh guest that works.
//!
//! No test asserts a time: "the neighbour never stalls" is checked as "the neighbour's traffic
//! completes while the attack is still in place" (a poller blocked by the attack would stall
//! it forever, and `wait_for` would fail the test).

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::raw::{region_access, vfu, Raw, Vfu, RAW_MEM};
use common::*;
use host_mux::config::GuestLimits;
use host_mux::HostMux;
use vdpdk_core::abi::desc::*;
use vdpdk_core::abi::*;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::MacAddr;
use vdpdk_pci::PciDevice;
use vfio_bindings::bindings::vfio::*;

const EINVAL: u32 = libc::EINVAL as u32;
const EVIL: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x4e]);
const GOOD: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x46]);

/// host-mux with an attacker slot "evil" (VM 0) and an honest guest "good" (VM 1) that is
/// already receiving.
struct Scene {
    dir: TempDir,
    mux: HostMux,
    wire: Wire,
    good: GuestProc,
    seq: u64,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        Self::with_limits(tag, GuestLimits::default())
    }

    fn with_limits(tag: &str, limits: GuestLimits) -> Scene {
        let dir = TempDir::new(tag);
        let mut cfg = mux_config(
            &dir,
            &[
                Vm {
                    name: "evil",
                    mac: EVIL,
                    rxq: 1,
                },
                Vm {
                    name: "good",
                    mac: GOOD,
                    rxq: 1,
                },
            ],
        );
        cfg.limits = limits;
        let (mux, wire) = start_mux_cfg(cfg);
        let good = GuestProc::spawn(&dir.sock("good"), 1);
        Scene {
            dir,
            mux,
            wire,
            good,
            seq: 0,
        }
    }

    fn evil(&self, i: StatsIndex) -> u64 {
        self.mux.guests()[0].stats[i as usize]
    }

    /// The honest guest receives `n` frames from the wire, every one intact and in order.
    fn neighbour_gets(&mut self, n: usize) {
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                self.seq += 1;
                udp_frame(GOOD, WIRE_MAC, self.seq, 64)
            })
            .collect();
        self.good.start(&format!("recv {n} 30000"));
        self.wire.send(&frames);
        let r = GuestProc::parse_recv(&self.good.answer());
        assert_eq!(
            r[0],
            (n as u64, digest(&frames)),
            "the neighbour lost nothing"
        );
    }

    /// A fresh, honest guest on the attacker's slot attaches and receives traffic.
    fn slot_works_again(&mut self) {
        let mut g = GuestProc::spawn(&self.dir.sock("evil"), 1);
        let frames: Vec<Vec<u8>> = (0..50)
            .map(|s| udp_frame(EVIL, WIRE_MAC, 1_000_000 + s, 100))
            .collect();
        g.start("recv 50 30000");
        self.wire.send(&frames);
        let r = GuestProc::parse_recv(&g.answer());
        assert_eq!(r[0], (50, digest(&frames)), "the re-attached guest works");
        g.quit();
        self.neighbour_gets(100);
    }
}

/// A memfd of `len` bytes, sealed against shrinking (as QEMU's and guest-pmd's are) or not.
fn memfd(len: u64, sealed: bool) -> OwnedFd {
    let flags = libc::MFD_CLOEXEC | if sealed { libc::MFD_ALLOW_SEALING } else { 0 };
    // SAFETY: memfd_create with a static C string; the fd is checked and owned.
    let fd = unsafe { libc::memfd_create(c"attack".as_ptr(), flags) };
    assert!(fd >= 0);
    // SAFETY: fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscalls on our fd.
    unsafe {
        assert_eq!(libc::ftruncate(fd.as_raw_fd(), len as libc::off_t), 0);
        if sealed {
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
            assert_eq!(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals), 0);
        }
    }
    fd
}

#[test]
fn shared_memory_cannot_be_pulled_out_from_under_host_mux() {
    let mut sc = Scene::new("attack-mem");
    {
        // The data BAR host-mux hands out is sealed: the guest can neither shrink nor grow it.
        let client = vfio_user::Client::new(&sc.dir.sock("evil")).unwrap();
        let bar = client.region(VFIO_PCI_BAR2_REGION_INDEX).unwrap();
        let file = bar
            .file_offset
            .as_ref()
            .expect("BAR2 comes with its fd")
            .file();
        assert!(file.set_len(0).is_err(), "the data BAR can be shrunk");
        assert!(file.set_len(1 << 30).is_err(), "the data BAR can be grown");
    }
    sc.neighbour_gets(500);

    let mut v = Vfu::connect(&sc.dir.sock("evil"));
    let errors = sc.evil(StatsIndex::CtrlErrors);
    // Guest memory that could be truncated later is refused; so is a range longer than its
    // file, at any offset.
    let loose = memfd(1 << 20, false);
    let r = v.dma_map(loose.as_raw_fd(), 0, 0x1000_0000, 1 << 20);
    assert!(
        r.is_error() && r.error == EINVAL,
        "unsealed memory accepted: {r:?}"
    );
    let small = memfd(4096, true);
    for (offset, size) in [(0, 1 << 30), (0, 8192), (4096, 4096), (!4095, 4096)] {
        let r = v.dma_map(small.as_raw_fd(), offset, 0x2000_0000, size);
        assert!(
            r.is_error() && r.error == EINVAL,
            "{offset:#x}+{size:#x}: {r:?}"
        );
    }
    assert_eq!(sc.evil(StatsIndex::CtrlErrors), errors + 5);
    assert_eq!(sc.mux.guests()[0].dma_regions, 0);
    // Sealed memory is taken, and the guest cannot shrink it afterwards either.
    let good_mem = memfd(1 << 20, true);
    let r = v.dma_map(good_mem.as_raw_fd(), 0, 0x3000_0000, 1 << 20);
    assert!(!r.is_error(), "{r:?}");
    assert_eq!(sc.mux.guests()[0].dma_regions, 1);
    // SAFETY: ftruncate on our own fd.
    assert_ne!(unsafe { libc::ftruncate(good_mem.as_raw_fd(), 0) }, 0);
    sc.neighbour_gets(500);
    drop(v);
    sc.slot_works_again();
}

#[test]
fn interrupt_fds_never_block_a_poller() {
    let mut sc = Scene::new("attack-irq");
    let mut raw = Raw::connect(&sc.dir.sock("evil"));
    let q = raw.bring_up("evil");
    let errors = sc.evil(StatsIndex::CtrlErrors);
    // A pipe is not an eventfd: refused, counted.
    let mut p = [0; 2];
    // SAFETY: pipe fills two fds we then own.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    // SAFETY: fresh fds we own.
    let (pr, pw) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    assert!(raw.dev.set_msix_eventfds(&[pw.as_raw_fd()]).is_err());
    wait_for(10, "the pipe refused", || {
        sc.evil(StatsIndex::CtrlErrors) == errors + 1
    });
    drop(pr);

    // A blocking eventfd one short of its maximum: any further write would block forever.
    // SAFETY: eventfd without flags (blocking); checked and owned.
    let efd = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, 0)) };
    let full = 0xffff_ffff_ffff_fffeu64;
    // SAFETY: an 8-byte write to our eventfd.
    let n = unsafe { libc::write(efd.as_raw_fd(), full.to_ne_bytes().as_ptr().cast(), 8) };
    assert_eq!(n, 8);
    raw.dev.set_msix_eventfds(&[efd.as_raw_fd()]).unwrap();
    // Ten times: arm the interrupt, get a frame (the host must signal), and meanwhile the
    // neighbour's traffic flows through the same poller.
    for i in 0..10u16 {
        raw.post_rx(&q, i);
        raw.arm_rx(true);
        sc.wire.send(&[udp_frame(EVIL, WIRE_MAC, i as u64, 100)]);
        wait_for(20, "the attacker's frame delivered", || {
            q.rx.flags(i) & DESC_F_AVAIL == 0
        });
        sc.neighbour_gets(200);
    }
    wait_for(10, "ten failed signals counted", || {
        sc.evil(StatsIndex::IrqErrors) == 10
    });
    assert_eq!(sc.evil(StatsIndex::RxPackets), 10);
    let mut c = [0u8; 8];
    // SAFETY: an 8-byte read from our eventfd (non-blocking now: host-mux set O_NONBLOCK).
    assert_eq!(
        unsafe { libc::read(efd.as_raw_fd(), c.as_mut_ptr().cast(), 8) },
        8
    );
    assert_eq!(
        u64::from_ne_bytes(c),
        full,
        "nothing was added to the full counter"
    );
    drop(raw);
    sc.slot_works_again();
}

#[test]
fn malformed_vfio_user_messages_are_refused_and_the_slot_survives() {
    let mut sc = Scene::new("attack-msg");
    let mut v = Vfu::connect(&sc.dir.sock("evil"));
    let (regions, irqs) = v.device_info();
    assert_eq!((regions, irqs), (9, 5));
    let errors = sc.evil(StatsIndex::CtrlErrors);
    // VERSION without its NUL; VERSION shorter than its fixed part.
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(b"{\"capabilities\":{}}");
    let r = v.call(vfu::VERSION, &body, &[]);
    assert!(r.is_error() && r.error == EINVAL, "{r:?}");
    let r = v.call(vfu::VERSION, &[1], &[]);
    assert!(r.is_error() && r.error == EINVAL, "{r:?}");
    v.device_info();
    // Region accesses: a 1 GiB read announced in 32 bytes, offsets that wrap around 2^64 in
    // config space and BAR0, a region that does not exist, past the end of the data BAR.
    for (region, offset, count) in [
        (VFIO_PCI_BAR2_REGION_INDEX, 0, 1u32 << 30),
        (VFIO_PCI_CONFIG_REGION_INDEX, u64::MAX - 1, 4),
        (VFIO_PCI_BAR0_REGION_INDEX, u64::MAX - 3, 4),
        (VFIO_PCI_BAR0_REGION_INDEX, !3, 4),
        (99, 0, 4),
        (VFIO_PCI_BAR2_REGION_INDEX, DATA_BAR_SIZE - 2, 4),
    ] {
        let r = v.region_read(region, offset, count);
        assert!(
            r.is_error() && r.error == EINVAL,
            "{region}@{offset:#x}+{count}: {r:?}"
        );
        assert!(r.body.is_empty(), "an error reply carries no data");
    }
    v.device_info();
    // A write to a region that does not exist, with its data: refused, and the data is not
    // taken for the next message's header.
    let mut body = region_access(99, 0, 8);
    body.extend_from_slice(&[0xff; 8]);
    let r = v.call(vfu::REGION_WRITE, &body, &[]);
    assert!(r.is_error(), "{r:?}");
    v.device_info();
    // An unknown command; a message shorter than its header says; a DMA_MAP with two fds.
    let r = v.call(0x77, &[1, 2, 3], &[]);
    assert!(r.is_error(), "{r:?}");
    let fd = memfd(4096, true);
    let mut m = Vec::new();
    m.extend_from_slice(&32u32.to_le_bytes());
    m.extend_from_slice(&3u32.to_le_bytes());
    m.extend_from_slice(&[0; 24]);
    let r = v.call(vfu::DMA_MAP, &m, &[fd.as_raw_fd(), fd.as_raw_fd()]);
    assert!(r.is_error() && r.error == EINVAL, "{r:?}");
    v.device_info();
    // Config space and BAR0 accesses straddling their ends are refused by host-mux as well.
    assert_eq!(vfio_user_config_probe(&mut v), vec![true, true]);
    // Every refusal above moved the VM's counter: 2 VERSION, 6 reads, a write, an unknown
    // command, a DMA_MAP.
    assert_eq!(sc.evil(StatsIndex::CtrlErrors), errors + 11);
    sc.neighbour_gets(500);
    // A header that announces more than the limit: the session ends (nothing is buffered),
    // the device is reset and the slot serves the next guest.
    let h = v.header(vfu::REGION_WRITE, u32::MAX);
    v.send_raw(&h, &[]);
    drop(v);
    sc.slot_works_again();
}

/// Reads of the last word of config space and of BAR0 (in range, so the message layer passes
/// them to the device): each is answered with its 4 bytes.
fn vfio_user_config_probe(v: &mut Vfu) -> Vec<bool> {
    let a = v.region_read(VFIO_PCI_CONFIG_REGION_INDEX, 252, 4);
    let b = v.region_read(VFIO_PCI_BAR0_REGION_INDEX, SIGNAL_BAR_SIZE - 4, 4);
    vec![
        !a.is_error() && a.body.len() == 20,
        !b.is_error() && b.body.len() == 20,
    ]
}

#[test]
fn per_vm_resources_are_bounded() {
    let limits = GuestLimits {
        dma_regions: 8,
        dma_bytes: 256 << 20,
        flow_rules: 4,
        ..Default::default()
    };
    let mut sc = Scene::with_limits("attack-limits", limits);
    let mut v = Vfu::connect(&sc.dir.sock("evil"));
    let errors = sc.evil(StatsIndex::CtrlErrors);
    // Eight regions, then no more.
    let fds: Vec<OwnedFd> = (0..9).map(|_| memfd(4096, true)).collect();
    for (i, fd) in fds.iter().enumerate() {
        let r = v.dma_map(fd.as_raw_fd(), 0, 0x1000_0000 + i as u64 * 0x10000, 4096);
        assert_eq!(r.is_error(), i == 8, "map {i}: {r:?}");
    }
    assert_eq!(sc.mux.guests()[0].dma_regions, 8);
    v.dma_unmap(0, 1 << 40);
    assert_eq!(sc.mux.guests()[0].dma_regions, 0);
    // More bytes than dma_bytes, in one map or summed over several.
    // (memfd pages are only allocated when touched: these cost nothing.)
    let big = memfd(512 << 20, true);
    let r = v.dma_map(big.as_raw_fd(), 0, 0x4000_0000, 512 << 20);
    assert!(r.is_error() && r.error == EINVAL, "{r:?}");
    for i in 0..3u64 {
        let r = v.dma_map(big.as_raw_fd(), i << 27, 0x4000_0000 + (i << 27), 128 << 20);
        assert_eq!(r.is_error(), i == 2, "map {i}: {r:?}");
    }
    assert_eq!(sc.evil(StatsIndex::CtrlErrors), errors + 3);
    // A message larger than limits.message_bytes is refused before it is buffered.
    let r = v.region_read(VFIO_PCI_BAR2_REGION_INDEX, 0, 2 << 20);
    assert!(r.is_error(), "{r:?}");
    v.device_info();
    sc.neighbour_gets(300);
    drop(v);

    // Flow rules: four, then NoMem.
    let mut raw = Raw::connect(&sc.dir.sock("evil"));
    let _q = raw.bring_up("evil");
    let rule = vdpdk_core::FlowRule::to_queue(vec![vdpdk_core::FlowItem::eth_dst(EVIL)], 0);
    let payload = flow_codec::encode(&rule);
    let n = payload.len() as u32;
    for i in 0..5 {
        let (s, m, _) = raw.ctrl(CtrlOp::FlowCreate as u32, [0; 4], &payload, n);
        let want = if i < 4 {
            CtrlStatus::Ok
        } else {
            CtrlStatus::NoMem
        };
        assert_eq!(s, want as u32, "rule {i}: {m}");
    }
    drop(raw);
    sc.slot_works_again();
}

#[test]
fn partial_dma_unmap_is_refused_and_changes_nothing() {
    let mut sc = Scene::new("attack-unmap");
    let mut raw = Raw::connect(&sc.dir.sock("evil"));
    let q = raw.bring_up("evil");
    let errors = sc.evil(StatsIndex::CtrlErrors);
    // The second half of the mapping (where the RX buffers are): refused, nothing changes,
    // frames still land there.
    assert!(raw
        .dev
        .dma_unmap(q.base() + RAW_MEM as u64 / 2, RAW_MEM as u64 / 2)
        .is_err());
    assert!(raw.dev.dma_unmap(q.base() - 4096, 8192).is_err());
    assert_eq!(sc.evil(StatsIndex::CtrlErrors), errors + 2);
    assert_eq!(sc.mux.guests()[0].dma_regions, 1);
    assert!(sc.mux.guests()[0].running);
    raw.post_rx(&q, 0);
    let f = udp_frame(EVIL, WIRE_MAC, 7, 300);
    sc.wire.send(std::slice::from_ref(&f));
    wait_for(20, "a frame into the kept mapping", || {
        q.rx.flags(0) & DESC_F_AVAIL == 0
    });
    assert_eq!(q.rx.read(0).len, 300);
    // SAFETY: RX buffer 0 lies at 512 KiB inside our own mapping.
    let got = unsafe { std::slice::from_raw_parts(q.mem.as_ptr().add(512 * 1024), 300) };
    assert_eq!(got, &f[..]);
    sc.neighbour_gets(300);
    // The whole mapping goes; the rings in it stop the device.
    raw.dev.dma_unmap(q.base(), RAW_MEM as u64).unwrap();
    wait_for(10, "the evil guest stopped", || !sc.mux.guests()[0].running);
    assert_eq!(sc.mux.guests()[0].dma_regions, 0);
    drop(raw);
    sc.slot_works_again();
}

#[test]
fn a_spoofed_frame_for_the_neighbour_is_not_switched_to_it() {
    let mut sc = Scene::new("attack-spoof-local");
    let mut raw = Raw::connect(&sc.dir.sock("evil"));
    let mut q = raw.bring_up("evil");
    // To the neighbour's MAC, claiming the wire's, the neighbour's own and then its own.
    let sources = [WIRE_MAC, GOOD, EVIL];
    let mut own = Vec::new();
    let mut sent = Vec::new();
    sc.good.start("recv 10 30000");
    for i in 0..30u64 {
        let src = sources[i as usize % 3];
        let f = udp_frame(GOOD, src, i, 80);
        sent.push(raw.send(&mut q, &f));
        if src == EVIL {
            own.push(f);
        }
    }
    let r = GuestProc::parse_recv(&sc.good.answer());
    assert_eq!(
        r[0],
        (10, digest(&own)),
        "the neighbour got only the frames with the sender's own MAC"
    );
    wait_for(20, "all TX descriptors back", || {
        sent.iter().all(|&i| q.tx.flags(i) & DESC_F_AVAIL == 0)
    });
    assert_eq!(sc.evil(StatsIndex::TxSpoofed), 20);
    assert_eq!(GuestProc::parse_recv(&sc.good.cmd("recv 1 300"))[0].0, 0);
    assert!(
        sc.wire.recv(1, Duration::from_millis(300)).is_empty(),
        "nothing hairpinned"
    );
    sc.neighbour_gets(100);
    drop(raw);
    sc.slot_works_again();
}

#[test]
fn spoofed_source_macs_are_dropped_and_counted() {
    let mut sc = Scene::new("attack-spoof");
    let mut raw = Raw::connect(&sc.dir.sock("evil"));
    let mut q = raw.bring_up("evil");
    // Alternating: the neighbour's MAC, a made-up one, broadcast, and its own.
    let sources = [GOOD, MacAddr([2, 9, 9, 9, 9, 9]), MacAddr::BROADCAST, EVIL];
    let mut own = Vec::new();
    let mut sent = Vec::new();
    for i in 0..20u64 {
        let src = sources[i as usize % 4];
        let f = udp_frame(WIRE_MAC, src, i, 80);
        sent.push((raw.send(&mut q, &f), src == EVIL));
        if src == EVIL {
            own.push(f);
        }
    }
    wait_for(20, "all TX descriptors back", || {
        sent.iter().all(|&(i, _)| q.tx.flags(i) & DESC_F_AVAIL == 0)
    });
    for &(i, ok) in &sent {
        assert_eq!(q.tx.flags(i) & DESC_F_ERROR == 0, ok, "descriptor {i}");
    }
    let on_wire = sc.wire.recv(own.len() + 5, Duration::from_millis(500));
    assert_eq!(
        on_wire, own,
        "only frames with the guest's own source MAC leave"
    );
    assert_eq!(sc.evil(StatsIndex::TxSpoofed), 15);
    assert_eq!(sc.evil(StatsIndex::TxPackets), 5);
    sc.neighbour_gets(300);
    drop(raw);
    sc.slot_works_again();
}
