//! Helpers shared by the fuzz targets: a host-mux guest slot and device built as
//! `host_mux::HostMux::start` builds them, and the files a guest can hand over.

pub mod ops;

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};

use host_mux::config::GuestLimits;
use host_mux::device::{PortFacts, VdpdkDevice};
use host_mux::guest::{Guest, GuestStats};
use host_mux::shm::SharedRegion;
use vdpdk_core::abi;
use vdpdk_core::{DmaMemory, MacAddr, RxOffloads};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The guest's MAC (flow rules naming another destination are refused).
pub const GUEST_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
pub const MAX_RXQ: u16 = 4;
pub const MAX_TXQ: u16 = 4;
/// Size of the sealed memory file offered for DMA_MAP (room for the largest ring, 4096 x 32 B).
pub const GUEST_MEM_SIZE: usize = 256 << 10;

/// A fresh VM slot, as `HostMux::start` makes one per configured VM.
pub fn new_guest() -> Arc<Guest> {
    Arc::new(Guest {
        name: "fuzz".into(),
        mac: GUEST_MAC,
        max_rxq: MAX_RXQ,
        max_txq: MAX_TXQ,
        stats: GuestStats::default(),
        rx: Default::default(),
        tx: Default::default(),
        tx_gen: Default::default(),
        tx_wake: Arc::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")),
        data_bar: data_bar(),
        attached: AtomicBool::new(false),
        attaches: AtomicU64::new(0),
        limits: GuestLimits::default(),
        // Offered, so inputs reach the zero-copy queue state too.
        zero_copy_tx: true,
        zero_copy_rx: true,
        rx_wake: Arc::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")),
        // No poller here: a control change has nobody to wait for.
        lend_ctl: Default::default(),
        nic_dma: None,
    })
}

/// The data BAR, one per process: creating and mapping a fresh 64 KiB memfd cost more than
/// most inputs. `VdpdkDevice::new` clears it (`reset_device`), so every input starts from the
/// same zeroed BAR, and inputs run one at a time.
fn data_bar() -> Arc<SharedRegion> {
    static BAR: OnceLock<Arc<SharedRegion>> = OnceLock::new();
    BAR.get_or_init(|| {
        Arc::new(SharedRegion::new("fuzz-bar2", abi::DATA_BAR_SIZE as usize).expect("data BAR"))
    })
    .clone()
}

pub fn facts() -> PortFacts {
    PortFacts {
        mtu: 1500,
        max_mtu: 9000,
        rx_offloads: RxOffloads::empty(),
        link_up: true,
        link_speed_mbps: 10_000,
    }
}

/// A fresh device on a fresh guest slot.
pub fn new_device() -> (Arc<Guest>, VdpdkDevice) {
    let g = new_guest();
    let d = VdpdkDevice::new(g.clone(), facts());
    (g, d)
}

fn sealed_mem() -> &'static DmaMemory {
    static M: OnceLock<DmaMemory> = OnceLock::new();
    M.get_or_init(|| {
        DmaMemory::alloc_with("fuzz-guest-ram", GUEST_MEM_SIZE, false).expect("guest memory")
    })
}

/// A new fd of the (process-wide, reused) sealed guest-memory memfd, as guest-pmd and QEMU's
/// memory-backend-memfd hand over.
pub fn sealed_memfd() -> File {
    let fd: OwnedFd = sealed_mem().fd().try_clone_to_owned().expect("dup");
    File::from(fd)
}

/// A new fd of a memfd without seals (must be refused for DMA_MAP).
pub fn unsealed_memfd() -> File {
    static F: OnceLock<File> = OnceLock::new();
    F.get_or_init(|| {
        // SAFETY: memfd_create with a static C string; the result is checked and owned.
        let raw = unsafe { libc::memfd_create(c"fuzz-unsealed".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0, "memfd_create");
        // SAFETY: a fresh fd we own.
        let f = unsafe { File::from_raw_fd(raw) };
        f.set_len(64 << 10).expect("ftruncate");
        f
    })
    .try_clone()
    .expect("dup")
}

/// A fresh eventfd (what SET_IRQS must get).
pub fn eventfd() -> File {
    // SAFETY: eventfd(2) has no memory arguments; the result is checked and owned.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(raw >= 0, "eventfd");
    // SAFETY: a fresh fd we own.
    unsafe { File::from_raw_fd(raw) }
}

/// The read end of a fresh pipe (SET_IRQS must refuse it).
pub fn pipe_fd() -> File {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two fds into p; checked.
    assert_eq!(
        unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe"
    );
    // SAFETY: fresh fds we own; the write end is closed at once.
    unsafe {
        drop(File::from_raw_fd(p[1]));
        File::from_raw_fd(p[0])
    }
}

/// A file of the kind `k` picks (for fds a guest attaches): sealed memfd, unsealed memfd,
/// eventfd, pipe.
pub fn file_of_kind(k: u8) -> File {
    match k % 4 {
        0 => sealed_memfd(),
        1 => unsealed_memfd(),
        2 => eventfd(),
        _ => pipe_fd(),
    }
}

/// Rust binaries ignore SIGPIPE; libFuzzer's `main` does not. host-mux (a Rust binary) gets
/// EPIPE from a write to a closed socket, so the targets must too.
pub fn ignore_sigpipe() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: installing SIG_IGN for SIGPIPE has no memory-safety preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    });
}

/// Per-process setup every target calls first (cheap after the first call): SIGPIPE ignored
/// as in host-mux, and the shared files created up front so they do not count as an input's
/// open fds.
pub fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        ignore_sigpipe();
        let _ = sealed_mem();
        drop(data_bar());
        drop(unsealed_memfd());
    });
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Lets a panic unwind to a `catch_unwind` (as host-mux catches a session's panic) instead of
/// aborting as libFuzzer's hook does; each panic location is printed once.
pub fn let_panics_unwind() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if seen.lock().unwrap().insert(at.clone()) {
                eprintln!("caught panic (first at {at}): {info}");
            }
        }));
    });
}
