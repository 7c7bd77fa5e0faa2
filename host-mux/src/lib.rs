//! # host-mux
//!
//! Serves one vDPDK PCI device per VM over vfio-user and multiplexes all of them onto one NIC
//! backend (any [`vdpdk_core::EthDev`]). Per VM: a control thread runs the vfio-user server
//! (config space, BARs, DMA map, interrupts, control requests); one poller thread moves frames
//! between the backend and every VM's rings, steering by destination MAC and the VM's own
//! flow rules. Every guest request is validated: no VM can reach another's traffic, memory or
//! queues.

pub mod cli;
pub mod config;
pub mod datapath;
pub mod device;
pub mod guest;
pub mod metrics;
pub mod shm;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::Mutex;
use serde::Serialize;
use vdpdk_core::abi::{self, STATS_COUNT, STATS_NAMES};
use vdpdk_core::{
    DevConfig, Error, EthDev, FlowItem, FlowRule, MacAddr, Mempool, Result, RxOffloads, TxOffloads,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use config::{BackendConfig, ClusterConfig, IceAccess, MuxConfig, PollMode, VmConfig};
use datapath::{Poller, PollerStats, Role, SleepPolicy};
use device::{PortFacts, VdpdkDevice};
use guest::{Guest, GuestStats};
use shm::SharedRegion;

/// A point-in-time view of one VM slot.
#[derive(Clone, Debug, Serialize)]
pub struct GuestSnapshot {
    pub name: String,
    #[serde(serialize_with = "ser_display")]
    pub mac: MacAddr,
    pub attached: bool,
    pub attaches: u64,
    /// Device started with queues the pollers serve.
    pub running: bool,
    /// DMA regions currently mapped from this guest.
    pub dma_regions: usize,
    /// Indexed by `abi::StatsIndex` (names in `abi::STATS_NAMES`).
    #[serde(serialize_with = "ser_guest_stats")]
    pub stats: [u64; STATS_COUNT],
}

/// A point-in-time view of one poller thread.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PollerSnapshot {
    pub name: String,
    pub role: &'static str,
    /// Index of the `[[cluster]]` this poller belongs to.
    pub cluster: usize,
    pub cpu: Option<usize>,
    pub guests: usize,
    pub wire_rx: u64,
    pub wire_tx: u64,
    /// Segments cut from guests' TCP super-frames.
    pub tso_segments: u64,
    /// Guest super-frames the backend segmented in hardware.
    pub tso_offloaded: u64,
    pub rx_unknown_dst: u64,
    pub rx_guest_stopped: u64,
    pub tx_backpressure: u64,
    pub rounds: u64,
    pub empty_rounds: u64,
    pub sleeps: u64,
    pub asleep_ms: u64,
}

/// Everything `host-mux --stats` shows.
#[derive(Clone, Debug, Serialize)]
pub struct MuxSnapshot {
    pub guests: Vec<GuestSnapshot>,
    pub pollers: Vec<PollerSnapshot>,
}

fn ser_display<S: serde::Serializer>(v: &MacAddr, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_guest_stats<S: serde::Serializer>(
    v: &[u64; STATS_COUNT],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(STATS_NAMES.iter().zip(v.iter()))
}

struct VmSlot {
    listener: OwnedFd,
    socket: PathBuf,
    thread: Option<JoinHandle<()>>,
}

struct PollerHandle {
    name: String,
    role: Role,
    cluster: usize,
    cpu: Option<usize>,
    guests: usize,
    wake: Arc<EventFd>,
    stats: Arc<PollerStats>,
    thread: Option<JoinHandle<()>>,
}

/// A running multiplexer. Dropping it (or calling [`HostMux::shutdown`]) stops it.
pub struct HostMux {
    inner: Arc<Shared>,
    stop: Arc<AtomicBool>,
    slots: Vec<VmSlot>,
    stats_listener: Option<(OwnedFd, PathBuf, JoinHandle<()>)>,
    metrics: Option<MetricsServer>,
    backend: Arc<Mutex<Box<dyn EthDev>>>,
}

/// The thread answering `mux.metrics_listen`.
struct MetricsServer {
    /// A dup of its listening socket, to shut it down.
    listener: TcpListener,
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

/// What the stats socket needs to read while the mux runs.
struct Shared {
    guests: Vec<Arc<Guest>>,
    pollers: Mutex<Vec<PollerHandle>>,
}

/// Backend ring size: the largest the backend allows up to 1024.
fn pick_ring(lim: vdpdk_core::DescLimits) -> u16 {
    let want = 1024u16.clamp(lim.min, lim.max);
    want - want % lim.align.max(1)
}

/// Binds a Unix socket. A stale socket file (nobody listening) is replaced; a live one is an
/// error.
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

/// The pollers a cluster runs.
fn cluster_roles(c: &ClusterConfig) -> Vec<(Role, Option<usize>)> {
    if c.split() {
        let tx_cpu = c.cpus.get(1).or(c.cpus.first()).copied();
        vec![(Role::Rx, c.cpus.first().copied()), (Role::Tx, tx_cpu)]
    } else {
        vec![(Role::Combined, c.cpus.first().copied())]
    }
}

impl HostMux {
    /// Starts serving `cfg.vms` on `backend`, which is configured and started here: one RX
    /// queue per cluster (each VM's MAC steered by a backend flow rule to its cluster's queue
    /// when there is more than one) and one TX queue per TX poller (shared when the backend has
    /// fewer).
    ///
    /// Threads: one control thread per configured VM (blocked on its socket), the pollers of
    /// each cluster, one stats thread when `stats_socket` is set and one metrics thread when
    /// `metrics_listen` is. The count is fixed at start-up: guests attaching or leaving create
    /// no threads.
    pub fn start(cfg: &MuxConfig, mut backend: Box<dyn EthDev>) -> Result<HostMux> {
        guest::GUARD_UNMAPPED.store(cfg.guard_unmapped, Ordering::Relaxed);
        // Bound before any thread starts, so a taken port fails the start cleanly.
        let metrics_listener = match cfg.metrics_listen {
            None => None,
            Some(addr) => Some(TcpListener::bind(addr).map_err(|e| {
                Error::InvalidArg(format!("mux.metrics_listen: binding {addr}: {e}"))
            })?),
        };
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
        let plans: Vec<(usize, Role, Option<usize>)> = cfg
            .clusters
            .iter()
            .enumerate()
            .flat_map(|(ci, c)| {
                cluster_roles(c)
                    .into_iter()
                    .map(move |(r, cpu)| (ci, r, cpu))
            })
            .collect();
        let n_tx = plans.iter().filter(|p| p.1 != Role::Rx).count() as u16;
        // RX queue layout: (cluster whose RX poller serves it, owning VM). With hardware
        // steering queue 0 takes broadcast and unknown frames and every VM gets its own queue,
        // steered by a backend flow rule on its MAC; otherwise each cluster gets one queue.
        let nvm = cfg.vms.len();
        let hw = cfg.hw_steering && nvm > 0 && nvm < info.max_rx_queues as usize;
        if cfg.hw_steering && !hw {
            warn!(
                "hardware steering needs {} RX queues, the {} backend has {}: steering in software",
                1 + nvm,
                info.driver,
                info.max_rx_queues
            );
        }
        let layout: Vec<(usize, Option<u16>)> = if hw {
            std::iter::once((0, None))
                .chain(
                    cfg.vms
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v.cluster, Some(i as u16))),
                )
                .collect()
        } else {
            (0..cfg.clusters.len()).map(|c| (c, None)).collect()
        };
        let n_rx = layout.len() as u16;
        if n_rx > info.max_rx_queues {
            return Err(Error::InvalidArg(format!(
                "{} clusters need {n_rx} RX queues but the {} backend has {}",
                cfg.clusters.len(),
                info.driver,
                info.max_rx_queues
            )));
        }
        let nb_tx = n_tx.min(info.max_tx_queues).max(1);
        // Checksum offloads the backend has are used for guests' frames (the rest is done
        // in software); RX checksum status is passed through to guests.
        let hw_tx = info.tx_offload_capa & datapath::CSUM_TX_OFFLOADS;
        // Super-frames go to a backend that segments TCP itself (the E810) as buffer chains.
        let tso_needs = TxOffloads::TCP_TSO | TxOffloads::MULTI_SEGS;
        let hw_tso = info
            .tx_offload_capa
            .contains(tso_needs | datapath::CSUM_TX_OFFLOADS);
        let tso_pool = if hw_tso {
            Some(Mempool::new(
                "host-mux-tso",
                datapath::TSO_POOL_BUFS,
                datapath::TSO_BUF_SIZE,
            )?)
        } else {
            None
        };
        let rx_csum = info.rx_offload_capa
            & (RxOffloads::IPV4_CKSUM | RxOffloads::UDP_CKSUM | RxOffloads::TCP_CKSUM);
        backend.configure(&DevConfig {
            nb_rx_queues: n_rx,
            nb_tx_queues: nb_tx,
            rx_intr: info.rx_intr,
            tx_offloads: if hw_tso { hw_tx | tso_needs } else { hw_tx },
            rx_offloads: rx_csum,
            ..Default::default()
        })?;
        for q in 0..n_rx {
            backend.rx_queue_setup(q, pick_ring(info.rx_desc_lim), &pool)?;
        }
        for q in 0..nb_tx {
            backend.tx_queue_setup(q, pick_ring(info.tx_desc_lim))?;
        }
        backend.start()?;
        if hw {
            let steered = cfg.vms.iter().enumerate().try_for_each(|(i, vm)| {
                let rule = FlowRule::to_queue(vec![FlowItem::eth_dst(vm.mac)], i as u16 + 1);
                backend.flow_create(&rule).map(|_| ())
            });
            match steered {
                Ok(()) => info!("hardware steering: one {} RX queue per VM", info.driver),
                Err(e) => {
                    // Everything then arrives on queue 0 and is steered in software; the
                    // per-VM queues stay empty.
                    warn!(
                        "the {} backend cannot steer VM MACs to their own queues ({e}); steering in software",
                        info.driver
                    );
                    let _ = backend.flow_flush();
                }
            }
        } else if n_rx > 1 {
            // Each VM's MAC to its cluster's queue (queue 0 also gets broadcast and unknown
            // traffic; its poller delivers broadcast to every VM).
            for vm in cfg.vms.iter().filter(|v| v.cluster != 0) {
                let rule = FlowRule::to_queue(vec![FlowItem::eth_dst(vm.mac)], vm.cluster as u16);
                backend.flow_create(&rule).map_err(|e| {
                    Error::Unsupported(format!(
                        "the {} backend cannot steer {} to cluster {}'s queue ({e}); use one cluster",
                        info.driver, vm.name, vm.cluster
                    ))
                })?;
            }
        }
        let mut rxqs: Vec<Option<Box<dyn vdpdk_core::RxQueue>>> = (0..n_rx)
            .map(|q| backend.take_rx_queue(q).map(Some))
            .collect::<Result<_>>()?;
        let txqs: Vec<_> = (0..nb_tx)
            .map(|q| backend.take_tx_queue(q).map(|t| Arc::new(Mutex::new(t))))
            .collect::<Result<_>>()?;
        let link = backend.link();
        let facts = PortFacts {
            mtu: info.mtu,
            rx_offloads: rx_csum,
            // The backend runs at its default MTU (host-mux does not raise it), so that is
            // also the most a guest can use.
            max_mtu: info.mtu,
            link_up: link.up,
            link_speed_mbps: link.speed_mbps,
        };

        // Each cluster's TX-serving poller has the wake fd its guests kick.
        let wakes: Vec<Arc<EventFd>> = plans
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
            .collect::<std::io::Result<_>>()?;
        let tx_wake_of = |cluster: usize| {
            let i = plans
                .iter()
                .position(|p| p.0 == cluster && p.1 != Role::Rx)
                .expect("every cluster has a TX-serving poller");
            wakes[i].clone()
        };

        // Everything that can fail for a reason the operator can fix (a socket in use, a bad
        // path) is done before the first thread starts.
        let mut vm_listeners = cfg
            .vms
            .iter()
            .map(|vm| bind_socket(&vm.socket))
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        let stats_bound = match &cfg.stats_socket {
            None => None,
            Some(path) => Some(bind_socket(path)?),
        };
        let stop = Arc::new(AtomicBool::new(false));
        // Should a later step still fail (no memory, no threads), the threads started so far
        // are told to stop instead of being left serving sockets nobody owns.
        let mut unwind = StartUnwind {
            stop: stop.clone(),
            listeners: Vec::new(),
            wakes: wakes.clone(),
            armed: true,
        };
        let mut guests = Vec::new();
        let mut slots = Vec::new();
        for vm in &cfg.vms {
            let guest = Arc::new(Guest {
                name: vm.name.clone(),
                mac: vm.mac,
                max_rxq: vm.rx_queues,
                max_txq: vm.tx_queues,
                stats: GuestStats::default(),
                rx: Default::default(),
                tx: Default::default(),
                tx_wake: tx_wake_of(vm.cluster),
                data_bar: Arc::new(SharedRegion::new(&vm.name, abi::DATA_BAR_SIZE as usize)?),
                attached: AtomicBool::new(false),
                attaches: Default::default(),
                limits: cfg.limits,
            });
            let listener = vm_listeners.next().expect("one listener per VM");
            let keep = listener.as_fd_dup()?;
            unwind.listeners.push(keep.try_clone()?);
            let dev = VdpdkDevice::new(guest.clone(), facts);
            let stop2 = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vfu-{}", vm.name))
                .spawn(move || serve_vm(dev, listener, stop2))?;
            info!(
                "{}: serving {} (MAC {}, cluster {})",
                vm.name,
                vm.socket.display(),
                vm.mac,
                vm.cluster
            );
            guests.push(guest);
            slots.push(VmSlot {
                listener: keep,
                socket: vm.socket.clone(),
                thread: Some(thread),
            });
        }

        let policy = SleepPolicy {
            idle_polls: cfg.idle_polls,
            timeout_ms: if cfg.sleep_timeout_ms == 0 {
                -1
            } else {
                cfg.sleep_timeout_ms.min(i32::MAX as u32) as i32
            },
        };
        let mut pollers = Vec::new();
        let mut tx_next = 0usize;
        for (i, &(ci, role, cpu)) in plans.iter().enumerate() {
            let mine: Vec<Arc<Guest>> = cfg
                .vms
                .iter()
                .zip(&guests)
                .filter(|(v, _)| v.cluster == ci)
                .map(|(_, g)| g.clone())
                .collect();
            let rxq: Vec<datapath::RxSource> = if role != Role::Tx {
                layout
                    .iter()
                    .enumerate()
                    .filter(|(_, (c, _))| *c == ci)
                    .filter_map(|(q, (_, owner))| {
                        rxqs[q].take().map(|queue| datapath::RxSource {
                            queue,
                            owner: *owner,
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let txq = (role != Role::Rx).then(|| {
                let t = txqs[tx_next % txqs.len()].clone();
                tx_next += 1;
                t
            });
            let name = format!("c{ci}-{}", role.name().replace('+', ""));
            let p = Poller::new(
                role,
                guests.clone(),
                mine.clone(),
                rxq,
                txq,
                pool.clone(),
                wakes[i].clone(),
                stop.clone(),
                policy,
            )
            .with_hw_tx_offloads(hw_tx);
            let p = match &tso_pool {
                Some(tp) if role != Role::Rx => p.with_hw_tso(tp.clone()),
                _ => p,
            };
            let stats = p.stats.clone();
            let thread = std::thread::Builder::new()
                .name(format!("poll-{name}"))
                .spawn(move || {
                    if let Some(c) = cpu {
                        if let Err(e) = pin_current_thread(c) {
                            warn!("cannot pin a poller to CPU {c}: {e}");
                        }
                    }
                    p.run()
                })?;
            info!(
                "poller {name}: {} on {}, {} VMs",
                role.name(),
                cpu.map_or("any CPU".into(), |c| format!("CPU {c}")),
                mine.len()
            );
            pollers.push(PollerHandle {
                name,
                role,
                cluster: ci,
                cpu,
                guests: mine.len(),
                wake: wakes[i].clone(),
                stats,
                thread: Some(thread),
            });
        }
        let inner = Arc::new(Shared {
            guests,
            pollers: Mutex::new(pollers),
        });
        let stats_listener = match (&cfg.stats_socket, stats_bound) {
            (Some(path), Some(l)) => {
                let keep = l.as_fd_dup()?;
                unwind.listeners.push(keep.try_clone()?);
                let (inner2, stop2) = (inner.clone(), stop.clone());
                let t = std::thread::Builder::new()
                    .name("mux-stats".into())
                    .spawn(move || serve_stats(l, inner2, stop2))?;
                Some((keep, path.clone(), t))
            }
            _ => None,
        };
        let backend = Arc::new(Mutex::new(backend));
        let metrics = match metrics_listener {
            None => None,
            Some(l) => {
                let addr = l.local_addr()?;
                let keep = l.try_clone()?;
                let (inner2, stop2, backend2) = (inner.clone(), stop.clone(), backend.clone());
                let driver = info.driver.clone();
                let thread = std::thread::Builder::new()
                    .name("mux-metrics".into())
                    .spawn(move || {
                        metrics::serve(l, &stop2, || {
                            let b = metrics::BackendSnapshot {
                                driver: driver.clone(),
                                stats: backend2.lock().stats(),
                            };
                            metrics::render(&inner2.guests(), &inner2.pollers(), Some(&b))
                        })
                    })?;
                info!("metrics at http://{addr}/metrics");
                Some(MetricsServer {
                    listener: keep,
                    addr,
                    thread,
                })
            }
        };
        unwind.armed = false;
        Ok(HostMux {
            inner,
            stop,
            slots,
            stats_listener,
            metrics,
            backend,
        })
    }

    /// The address the metrics endpoint listens on (the bound port when `metrics_listen`
    /// asked for port 0), or None without one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    pub fn guests(&self) -> Vec<GuestSnapshot> {
        self.inner.guests()
    }

    pub fn pollers(&self) -> Vec<PollerSnapshot> {
        self.inner.pollers()
    }

    pub fn snapshot(&self) -> MuxSnapshot {
        MuxSnapshot {
            guests: self.guests(),
            pollers: self.pollers(),
        }
    }

    pub fn backend_stats(&self) -> vdpdk_core::PortStats {
        self.backend.lock().stats()
    }

    /// Stops the pollers and the listeners. Control threads of still-connected guests end
    /// when their guest disconnects.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        for p in self.inner.pollers.lock().iter_mut() {
            let _ = p.wake.write(1);
            if let Some(t) = p.thread.take() {
                let _ = t.join();
            }
        }
        if let Some((fd, path, t)) = self.stats_listener.take() {
            // SAFETY: shutdown on a listening socket we hold a dup of; wakes a blocked accept.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
            let _ = t.join();
            let _ = std::fs::remove_file(path);
        }
        if let Some(m) = self.metrics.take() {
            // SAFETY: shutdown on a listening socket we hold a dup of; wakes a blocked accept.
            unsafe { libc::shutdown(m.listener.as_raw_fd(), libc::SHUT_RDWR) };
            let _ = m.thread.join();
        }
        for s in &mut self.slots {
            // SAFETY: as above.
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

impl Shared {
    fn guests(&self) -> Vec<GuestSnapshot> {
        self.guests
            .iter()
            .map(|g| GuestSnapshot {
                name: g.name.clone(),
                mac: g.mac,
                attached: g.attached.load(Ordering::Relaxed),
                attaches: g.attaches.load(Ordering::Relaxed),
                running: g.running(),
                dma_regions: g.dma_regions(),
                stats: g.stats_snapshot(),
            })
            .collect()
    }

    fn pollers(&self) -> Vec<PollerSnapshot> {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        self.pollers
            .lock()
            .iter()
            .map(|p| PollerSnapshot {
                name: p.name.clone(),
                role: p.role.name(),
                cluster: p.cluster,
                cpu: p.cpu,
                guests: p.guests,
                wire_rx: get(&p.stats.wire_rx),
                wire_tx: get(&p.stats.wire_tx),
                tso_segments: get(&p.stats.tso_segments),
                tso_offloaded: get(&p.stats.tso_offloaded),
                rx_unknown_dst: get(&p.stats.rx_unknown_dst),
                rx_guest_stopped: get(&p.stats.rx_guest_stopped),
                tx_backpressure: get(&p.stats.tx_backpressure),
                rounds: get(&p.stats.rounds),
                empty_rounds: get(&p.stats.empty_rounds),
                sleeps: get(&p.stats.sleeps),
                asleep_ms: get(&p.stats.asleep_ns) / 1_000_000,
            })
            .collect()
    }
}

impl Drop for HostMux {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Answers each connection to the stats socket with one JSON snapshot.
fn serve_stats(listener: UnixListener, inner: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut conn) = conn else {
            continue;
        };
        let snap = MuxSnapshot {
            guests: inner.guests(),
            pollers: inner.pollers(),
        };
        if let Ok(text) = serde_json::to_string(&snap) {
            let _ = writeln!(conn, "{text}");
        }
    }
}

/// Reads a snapshot from a running host-mux's stats socket.
pub fn query_stats(path: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let mut s = UnixStream::connect(path).map_err(|e| {
        Error::InvalidArg(format!(
            "{}: {e} (is host-mux running with mux.stats_socket?)",
            path.display()
        ))
    })?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(|e| Error::Device(format!("bad stats reply: {e}")))
}

/// Stops what a failed [`HostMux::start`] had already started: sets `stop`, wakes the pollers
/// and shuts the listening sockets down so the control threads leave `accept`.
struct StartUnwind {
    stop: Arc<AtomicBool>,
    /// Its own dups of the listening sockets (shutting one down wakes every accept on it).
    listeners: Vec<OwnedFd>,
    wakes: Vec<Arc<EventFd>>,
    armed: bool,
}

impl Drop for StartUnwind {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakes {
            let _ = w.write(1);
        }
        for fd in &self.listeners {
            // SAFETY: shutdown on a listening socket we hold a dup of.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
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
    let mut server = vfio_user::Server::from_owned_fd(
        OwnedFd::from(listener),
        true,
        VdpdkDevice::irqs(),
        regions,
    );
    server.set_max_message_size(dev.limits().message_bytes);
    let name = dev.name().to_string();
    serve_sessions(&server, &mut dev, &name, &stop, |dev| dev.reset_device());
}

/// Serves one vfio-user session after another until `stop`. Each session is isolated: whether
/// it ends by a disconnect, an error or a panic in the message layer, `reset` runs (queues
/// stopped, DMA maps and interrupt fds released) and the slot accepts the next client.
fn serve_sessions<B: vfio_user::ServerBackend>(
    server: &vfio_user::Server,
    backend: &mut B,
    name: &str,
    stop: &AtomicBool,
    reset: impl Fn(&mut B),
) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    while !stop.load(Ordering::SeqCst) {
        // AssertUnwindSafe: after a panic the backend is only used through `reset`, which
        // rebuilds its state from scratch.
        match catch_unwind(AssertUnwindSafe(|| server.run(backend))) {
            Ok(Ok(())) => info!("{name}: guest disconnected"),
            Ok(Err(e)) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                warn!("{name}: vfio-user session ended: {e}");
                if matches!(e, vfio_user::Error::SocketAccept(_)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Err(_) => warn!("{name}: vfio-user session panicked; device reset, slot reopened"),
        }
        // Whatever the guest left behind (queues, DMA maps, interrupt fds) is released here.
        reset(backend);
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
        "{:<10} {:<17} {:<8} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9}\n",
        "vm",
        "mac",
        "state",
        "rx-pkts",
        "rx-bytes",
        "tx-pkts",
        "tx-bytes",
        "rx-nodesc",
        "bad-desc",
        "spoofed",
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
            "{:<10} {:<17} {:<8} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9}\n",
            g.name,
            g.mac.to_string(),
            state,
            st(S::RxPackets),
            st(S::RxBytes),
            st(S::TxPackets),
            st(S::TxBytes),
            st(S::RxNoDesc),
            st(S::TxBadDesc) + st(S::RxBadDesc),
            st(S::TxSpoofed),
            st(S::CtrlErrors),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use vfio_bindings::bindings::vfio::*;

    /// Panics on its first region read, as a bug in the message layer or device would.
    struct Fragile {
        reads: usize,
        resets: Arc<AtomicUsize>,
    }

    impl vfio_user::ServerBackend for Fragile {
        fn region_read(&mut self, _: u32, _: u64, data: &mut [u8]) -> std::io::Result<()> {
            self.reads += 1;
            assert!(self.reads > 1, "the first read panics");
            data.fill(0x5a);
            Ok(())
        }
        fn region_write(&mut self, _: u32, _: u64, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn dma_map(
            &mut self,
            _: vfio_user::DmaMapFlags,
            _: u64,
            _: u64,
            _: u64,
            _: Option<std::fs::File>,
        ) -> std::io::Result<()> {
            Ok(())
        }
        fn dma_unmap(
            &mut self,
            _: vfio_user::DmaUnmapFlags,
            _: u64,
            _: u64,
        ) -> std::io::Result<()> {
            Ok(())
        }
        fn reset(&mut self) -> std::io::Result<()> {
            Ok(())
        }
        fn set_irqs(
            &mut self,
            _: u32,
            _: u32,
            _: u32,
            _: u32,
            _: Vec<std::fs::File>,
        ) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panicking_session_resets_the_device_and_the_slot_serves_the_next_client() {
        let path = std::env::temp_dir().join(format!("vdpdk-fragile-{}.sock", std::process::id()));
        let listener = bind_socket(&path).unwrap();
        let keep = listener.as_fd_dup().unwrap();
        let mut regions = vdpdk_pci::server::empty_regions();
        regions[VFIO_PCI_BAR0_REGION_INDEX as usize] =
            vdpdk_pci::server::region(VFIO_PCI_BAR0_REGION_INDEX, 4096, vdpdk_pci::server::RW);
        let server = vfio_user::Server::from_owned_fd(
            OwnedFd::from(listener),
            true,
            VdpdkDevice::irqs(),
            regions,
        );
        let resets = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2) = (resets.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            let mut b = Fragile {
                reads: 0,
                resets: r2.clone(),
            };
            serve_sessions(&server, &mut b, "fragile", &s2, |b| {
                b.resets.fetch_add(1, Ordering::SeqCst);
            });
        });
        let mut buf = [0u8; 4];
        let mut c = vfio_user::Client::new(&path).unwrap();
        // The server thread panics inside this read; the session ends, the client sees it.
        assert!(c
            .region_read(VFIO_PCI_BAR0_REGION_INDEX, 0, &mut buf)
            .is_err());
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(20);
        while resets.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the device was never reset");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The slot accepts the next client, which is served.
        let mut c = vfio_user::Client::new(&path).unwrap();
        c.region_read(VFIO_PCI_BAR0_REGION_INDEX, 0, &mut buf)
            .unwrap();
        assert_eq!(buf, [0x5a; 4]);
        drop(c);
        stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown on a listening socket we hold a dup of; wakes the blocked accept.
        unsafe { libc::shutdown(keep.as_raw_fd(), libc::SHUT_RDWR) };
        t.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}

#[cfg(test)]
mod start_tests {
    use super::*;

    fn vm(dir: &Path, name: &str, last: u8) -> VmConfig {
        VmConfig {
            name: name.into(),
            socket: dir.join(format!("{name}.sock")),
            mac: MacAddr([2, 0, 0, 0, 0, last]),
            rx_queues: 1,
            tx_queues: 1,
            cluster: 0,
        }
    }

    #[test]
    fn a_start_that_fails_leaves_nothing_serving() {
        let dir = std::env::temp_dir().join(format!("vdpdk-startfail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Someone is serving vm2's socket already.
        let squatter = UnixListener::bind(dir.join("vm2.sock")).unwrap();
        let cfg = MuxConfig::new(
            BackendConfig::Pair,
            vec![vm(&dir, "vm1", 1), vm(&dir, "vm2", 2)],
        );
        let backend = vdpdk_pair::reflector(MacAddr([2, 0, 0, 0, 0, 0xfd]), 1, 1024);
        let err = HostMux::start(&cfg, Box::new(backend))
            .err()
            .expect("start must fail");
        assert!(err.to_string().contains("vm2.sock"), "{err}");
        // Nothing answers on vm1's socket: no control thread was left behind serving it.
        assert!(UnixStream::connect(dir.join("vm1.sock")).is_err());
        drop(squatter);
        std::fs::remove_file(dir.join("vm2.sock")).unwrap();
        let backend = vdpdk_pair::reflector(MacAddr([2, 0, 0, 0, 0, 0xfd]), 1, 1024);
        let mux = HostMux::start(&cfg, Box::new(backend)).expect("the same config starts now");
        assert!(UnixStream::connect(dir.join("vm1.sock")).is_ok());
        mux.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
