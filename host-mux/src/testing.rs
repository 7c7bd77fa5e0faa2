//! Fixtures for the unit tests: a VM slot without a socket or a poller, and guest memory
//! mapped into it as a VMM would through DMA_MAP.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use vdpdk_core::abi;
use vdpdk_core::{DmaMemory, MacAddr};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::GuestLimits;
use crate::guest::{Guest, GuestStats};
use crate::shm::SharedRegion;

/// The MAC every test guest owns.
pub(crate) const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

/// A VM slot with up to `max_rxq`/`max_txq` queues and `limits`.
pub(crate) fn guest_with(max_rxq: u16, max_txq: u16, limits: GuestLimits) -> Arc<Guest> {
    Arc::new(Guest {
        name: "t".into(),
        mac: MAC,
        max_rxq,
        max_txq,
        stats: GuestStats::default(),
        rx: Default::default(),
        tx: Default::default(),
        tx_wake: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        data_bar: Arc::new(SharedRegion::new("t-bar2", abi::DATA_BAR_SIZE as usize).unwrap()),
        attached: AtomicBool::new(false),
        attaches: AtomicU64::new(0),
        limits,
    })
}

/// A VM slot with 4 RX and 2 TX queues and the default limits.
#[allow(dead_code)]
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
