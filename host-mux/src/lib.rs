//! # host-mux
//!
//! Serves one vDPDK PCI device per VM over vfio-user and multiplexes all of them onto one NIC
//! backend (any [`vdpdk_core::EthDev`]). Per VM: a control thread runs the vfio-user server
//! (config space, BARs, DMA map, interrupts, control requests); one poller thread moves frames
//! between the backend and every VM's rings, steering by destination MAC and the VM's own
//! flow rules. Every guest request is validated: no VM can reach another's traffic, memory or
//! queues.

pub mod config;
pub mod datapath;
pub mod device;
pub mod guest;
pub mod shm;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::Mutex;
use vdpdk_core::abi::{self, STATS_COUNT};
use vdpdk_core::{DevConfig, Error, EthDev, MacAddr, Mempool, Result};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use config::{BackendConfig, MuxConfig, VmConfig};
pub use datapath::MuxStats;
use device::{PortFacts, VdpdkDevice};
use guest::{DataPath, Guest, GuestStats};
use shm::SharedRegion;

/// A point-in-time view of one VM slot.
#[derive(Clone, Debug)]
pub struct GuestSnapshot {
    pub name: String,
    pub mac: MacAddr,
    pub attached: bool,
    pub attaches: u64,
    /// Device started with queues the poller serves.
    pub running: bool,
    /// DMA regions currently mapped from this guest.
    pub dma_regions: usize,
    /// Indexed by `abi::StatsIndex`.
    pub stats: [u64; STATS_COUNT],
}

struct VmSlot {
    listener: OwnedFd,
    socket: PathBuf,
    thread: Option<JoinHandle<()>>,
}

/// A running multiplexer. Dropping it (or calling [`HostMux::shutdown`]) stops it.
pub struct HostMux {
    guests: Vec<Arc<Guest>>,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    poller: Option<JoinHandle<()>>,
    slots: Vec<VmSlot>,
    stats: Arc<MuxStats>,
    backend: Arc<Mutex<Box<dyn EthDev>>>,
}

/// Backend RX ring size: the largest the backend allows up to 1024.
fn pick_ring(lim: vdpdk_core::DescLimits) -> u16 {
    let want = 1024u16.clamp(lim.min, lim.max);
    want - want % lim.align.max(1)
}

/// Binds a VM socket. A stale socket file (nobody listening) is replaced; a live one is an error.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(Error::InvalidArg(format!(
                "{}: another server is listening there",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    UnixListener::bind(path)
        .map_err(|e| Error::InvalidArg(format!("binding {}: {e}", path.display())))
}

impl HostMux {
    /// Starts serving `cfg.vms` on `backend` (configured and started here with one RX and one
    /// TX queue; software steering).
    pub fn start(cfg: &MuxConfig, mut backend: Box<dyn EthDev>) -> Result<HostMux> {
        let info = backend.info();
        let pool = Mempool::new("host-mux", cfg.pool_size, vdpdk_core::DEFAULT_BUF_SIZE)?;
        if pool.memory().is_hugepage_backed() {
            info!("{} packet buffers on hugepages", cfg.pool_size);
        } else {
            warn!(
                "{} packet buffers on normal 4 KiB pages (no hugepages reserved; a NIC needs them: \
                 echo 512 > /proc/sys/vm/nr_hugepages)",
                cfg.pool_size
            );
        }
        backend.configure(&DevConfig {
            nb_rx_queues: 1,
            nb_tx_queues: 1,
            rx_intr: info.rx_intr,
            ..Default::default()
        })?;
        backend.rx_queue_setup(0, pick_ring(info.rx_desc_lim), &pool)?;
        backend.tx_queue_setup(0, pick_ring(info.tx_desc_lim))?;
        backend.start()?;
        let rxq = backend.take_rx_queue(0)?;
        let txq = backend.take_tx_queue(0)?;
        let link = backend.link();
        let facts = PortFacts {
            mtu: info.mtu,
            max_mtu: info.max_mtu,
            link_up: link.up,
            link_speed_mbps: link.speed_mbps,
        };

        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let stats = Arc::new(MuxStats::default());
        let mut guests = Vec::new();
        let mut slots = Vec::new();
        for vm in &cfg.vms {
            let guest = Arc::new(Guest {
                name: vm.name.clone(),
                mac: vm.mac,
                max_rxq: vm.rx_queues,
                max_txq: vm.tx_queues,
                stats: GuestStats::default(),
                dp: Mutex::new(DataPath::default()),
                data_bar: Arc::new(SharedRegion::new(&vm.name, abi::DATA_BAR_SIZE as usize)?),
                attached: AtomicBool::new(false),
                attaches: Default::default(),
            });
            let listener = bind_socket(&vm.socket)?;
            let keep = listener.as_fd_dup()?;
            let dev = VdpdkDevice::new(guest.clone(), facts, wake.clone());
            let stop2 = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vfu-{}", vm.name))
                .spawn(move || serve_vm(dev, listener, stop2))?;
            info!(
                "{}: serving {} (MAC {})",
                vm.name,
                vm.socket.display(),
                vm.mac
            );
            guests.push(guest);
            slots.push(VmSlot {
                listener: keep,
                socket: vm.socket.clone(),
                thread: Some(thread),
            });
        }
        let poller = datapath::Poller::new(
            guests.clone(),
            rxq,
            txq,
            pool,
            wake.clone(),
            stop.clone(),
            cfg.idle_polls,
            stats.clone(),
        );
        let cpu = cfg.poller_cpu;
        let poller = std::thread::Builder::new()
            .name("mux-poll".into())
            .spawn(move || {
                if let Some(c) = cpu {
                    if let Err(e) = pin_current_thread(c) {
                        warn!("cannot pin the poller to CPU {c}: {e}");
                    }
                }
                poller.run()
            })?;
        Ok(HostMux {
            guests,
            stop,
            wake,
            poller: Some(poller),
            slots,
            stats,
            backend: Arc::new(Mutex::new(backend)),
        })
    }

    pub fn guests(&self) -> Vec<GuestSnapshot> {
        self.guests
            .iter()
            .map(|g| {
                let dp = g.dp.lock();
                GuestSnapshot {
                    name: g.name.clone(),
                    running: dp.running,
                    dma_regions: dp.mem.len(),
                    mac: g.mac,
                    attached: g.attached.load(Ordering::Relaxed),
                    attaches: g.attaches.load(Ordering::Relaxed),
                    stats: g.stats.snapshot(),
                }
            })
            .collect()
    }

    pub fn stats(&self) -> &MuxStats {
        &self.stats
    }

    pub fn backend_stats(&self) -> vdpdk_core::PortStats {
        self.backend.lock().stats()
    }

    /// Stops the poller and the listeners. Control threads of still-connected guests end when
    /// their guest disconnects.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.wake.write(1);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        for s in &mut self.slots {
            // SAFETY: shutdown on a listening socket we hold a dup of; wakes a blocked accept.
            unsafe { libc::shutdown(s.listener.as_raw_fd(), libc::SHUT_RDWR) };
            let _ = std::fs::remove_file(&s.socket);
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        for s in &mut self.slots {
            if let Some(t) = s.thread.take() {
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if t.is_finished() {
                    let _ = t.join();
                } else {
                    warn!("{}: guest still connected at shutdown", s.socket.display());
                }
            }
        }
        let _ = self.backend.lock().stop();
    }
}

impl Drop for HostMux {
    fn drop(&mut self) {
        self.stop_all();
    }
}

trait DupFd {
    fn as_fd_dup(&self) -> std::io::Result<OwnedFd>;
}
impl DupFd for UnixListener {
    fn as_fd_dup(&self) -> std::io::Result<OwnedFd> {
        // SAFETY: dup of a valid fd; the result is checked and owned.
        let fd = unsafe { libc::fcntl(self.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// The control thread of one VM: serve a client until it disconnects, reset, wait for the next.
fn serve_vm(mut dev: VdpdkDevice, listener: UnixListener, stop: Arc<AtomicBool>) {
    let regions = dev.regions();
    let server = vfio_user::Server::from_owned_fd(
        OwnedFd::from(listener),
        true,
        VdpdkDevice::irqs(),
        regions,
    );
    while !stop.load(Ordering::SeqCst) {
        match server.run(&mut dev) {
            Ok(()) => info!("guest disconnected"),
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                warn!("vfio-user session ended: {e}");
                if matches!(e, vfio_user::Error::SocketAccept(_)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // Whatever the guest left behind (queues, DMA maps, interrupt fds) is released here.
        dev.reset_device();
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size; the syscall
    // only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Renders the per-VM stats table printed by the binary and the demo.
pub fn stats_table(guests: &[GuestSnapshot]) -> String {
    use abi::StatsIndex as S;
    let mut s = format!(
        "{:<10} {:<17} {:<8} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9}\n",
        "vm",
        "mac",
        "state",
        "rx-pkts",
        "rx-bytes",
        "tx-pkts",
        "tx-bytes",
        "rx-nodesc",
        "bad-desc",
        "ctrl-err"
    );
    for g in guests {
        let st = |i: S| g.stats[i as usize];
        let state = match (g.attached, g.running) {
            (_, true) => "running",
            (true, false) => "attached",
            _ => "idle",
        };
        s += &format!(
            "{:<10} {:<17} {:<8} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9}\n",
            g.name,
            g.mac.to_string(),
            state,
            st(S::RxPackets),
            st(S::RxBytes),
            st(S::TxPackets),
            st(S::TxBytes),
            st(S::RxNoDesc),
            st(S::TxBadDesc) + st(S::RxBadDesc),
            st(S::CtrlErrors),
        );
    }
    s
}
