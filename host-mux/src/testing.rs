//! Fixtures for the unit tests: a VM slot without a socket or a poller, and guest memory
//! mapped into it as a VMM would through DMA_MAP.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use vdpdk_core::abi;
use vdpdk_core::abi::desc::{Desc, RingPtr, DESC_F_AVAIL, DESC_SIZE};
use vdpdk_core::{DmaMemory, MacAddr, Mempool};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::GuestLimits;
use crate::datapath::{Poller, Role, RxSource, SleepPolicy};
use crate::guest::{Guest, GuestMem, GuestStats, HostQueue};
use crate::shm::SharedRegion;

/// The MAC every test guest owns.
pub(crate) const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

/// A VM slot with up to `max_rxq`/`max_txq` queues and `limits`.
pub(crate) fn guest_with(max_rxq: u16, max_txq: u16, limits: GuestLimits) -> Arc<Guest> {
    guest_owning(MAC, max_rxq, max_txq, limits)
}

/// [`guest_with`] for a VM owning `mac` (a test with several guests).
pub(crate) fn guest_owning(
    mac: MacAddr,
    max_rxq: u16,
    max_txq: u16,
    limits: GuestLimits,
) -> Arc<Guest> {
    Arc::new(Guest {
        name: "t".into(),
        mac,
        max_rxq,
        max_txq,
        stats: GuestStats::default(),
        rx: Default::default(),
        tx: Default::default(),
        tx_gen: Default::default(),
        tx_wake: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        data_bar: Arc::new(SharedRegion::new("t-bar2", abi::DATA_BAR_SIZE as usize).unwrap()),
        attached: AtomicBool::new(false),
        attaches: AtomicU64::new(0),
        limits,
        zero_copy_tx: false,
        zero_copy_rx: false,
        rx_wake: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        lend_ctl: Default::default(),
        nic_dma: None,
    })
}

/// A VM slot with 4 RX and 2 TX queues and the default limits.
pub(crate) fn guest() -> Arc<Guest> {
    guest_with(4, 2, GuestLimits::default())
}

/// Maps `len` bytes of fresh sealed memory into `g` at `iova` (writable unless `read_only`);
/// the returned memory is the guest's side of it (keep it alive while the test runs).
pub(crate) fn map_ram(g: &Guest, iova: u64, len: usize, read_only: bool) -> DmaMemory {
    let m = DmaMemory::alloc_with("t-ram", len, false).unwrap();
    let fd: OwnedFd = m.fd().as_fd().try_clone_to_owned().unwrap();
    g.map_region(&File::from(fd), 0, iova, len as u64, !read_only)
        .unwrap();
    m
}

/// A ring of `size` descriptors at `iova` (inside a writable region of `mem`), as the host
/// queue a queue setup would make.
pub(crate) fn host_queue(mem: &GuestMem, iova: u64, size: u16) -> HostQueue {
    let len = size as u64 * DESC_SIZE as u64;
    let ptr = mem.translate(iova, len, true).expect("ring inside the map");
    // SAFETY: ptr..ptr+len lies in a writable region of the map, which the test keeps mapped
    // (its DmaMemory and the guest alive) for as long as it uses the queue.
    let ring = unsafe { RingPtr::new(ptr, size) };
    HostQueue::new(ring, iova, len, None)
}

/// Writes `bytes` into `g`'s memory at `iova`, as the guest would.
pub(crate) fn poke(g: &Guest, iova: u64, bytes: &[u8]) {
    let rx = g.rx.lock();
    let s = rx.mem.slice(iova, bytes.len() as u64, true).unwrap();
    s.write_slice(0, bytes).unwrap();
}

/// `len` bytes of `g`'s memory at `iova`, as the guest would read them.
pub(crate) fn peek(g: &Guest, iova: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    let rx = g.rx.lock();
    rx.mem
        .slice(iova, len as u64, false)
        .unwrap()
        .read_slice(0, &mut out)
        .unwrap();
    out
}

/// A `len`-byte Ethernet frame from `src` to `dst` (IPv4 ethertype), its payload `fill`.
pub(crate) fn frame(dst: MacAddr, src: MacAddr, len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

/// A posted descriptor: `len` bytes at `addr`, handed to the host.
pub(crate) fn desc(addr: u64, len: u16) -> Desc {
    Desc {
        addr,
        len,
        flags: DESC_F_AVAIL,
        ..Default::default()
    }
}

/// A poller serving `guests` (all of them on TX), polling at once and never sleeping long.
pub(crate) fn poller(
    role: Role,
    guests: Vec<Arc<Guest>>,
    rxqs: Vec<RxSource>,
    txq: Box<dyn vdpdk_core::TxQueue>,
    pool: &Mempool,
) -> Poller {
    Poller::new(
        role,
        guests.clone(),
        guests,
        rxqs,
        Some(Arc::new(parking_lot::Mutex::new(txq))),
        pool.clone(),
        Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        Arc::new(AtomicBool::new(false)),
        SleepPolicy {
            idle_polls: 1,
            timeout_ms: 1,
        },
    )
}

/// Asserts that guest `g`'s TX queue 0 handed its first `n` descriptors back, none refused,
/// and counted `n` frames sent.
pub(crate) fn assert_tx_done(g: &Guest, n: u16) {
    let tx = g.tx.lock();
    let ring = tx.queues[0].as_ref().unwrap().ring;
    assert!(
        (0..n).all(|i| ring.flags(i) == 0),
        "every descriptor back, none refused"
    );
    let sent = tx.stats.0[vdpdk_core::abi::StatsIndex::TxPackets as usize];
    assert_eq!(sent, n as u64);
}
