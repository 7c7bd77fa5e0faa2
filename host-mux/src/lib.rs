//! # host-mux
//!
//! Serves one vDPDK PCI device per VM over vfio-user and multiplexes all of them onto one NIC
//! backend (any [`vdpdk_core::EthDev`]). Per VM: a control thread runs the vfio-user server
//! (config space, BARs, DMA map, interrupts, control requests); one poller thread moves frames
//! between the backend and every VM's rings, steering by destination MAC and the VM's own
//! flow rules. Every guest request is validated: no VM can reach another's traffic, memory or
//! queues.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod datapath;
pub mod device;
pub mod guest;
mod metrics;
pub mod shm;

mod serve;
mod start;
#[cfg(test)]
mod testing;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::warn;
use parking_lot::Mutex;
use serde::Serialize;
use vdpdk_core::abi::{self, STATS_COUNT, STATS_NAMES};
use vdpdk_core::{Error, EthDev, MacAddr, Result};
use vmm_sys_util::eventfd::EventFd;

pub use config::{BackendConfig, ClusterConfig, IceAccess, MuxConfig, PollMode, VmConfig};
use datapath::{PollerStats, Role};
use guest::Guest;

/// A point-in-time view of one VM slot.
#[derive(Clone, Debug, Serialize)]
pub struct GuestSnapshot {
    /// The VM's configured name.
    pub name: String,
    /// The VM's MAC (serialized as `02:00:00:00:00:01`).
    #[serde(serialize_with = "ser_display")]
    pub mac: MacAddr,
    /// A driver has negotiated since the last reset or disconnect.
    pub attached: bool,
    /// Times a driver negotiated with this slot since start-up.
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
    /// Thread name without its `poll-` prefix (`c0-rx`, `c1-rxtx`).
    pub name: String,
    /// `rx`, `tx` or `rx+tx`.
    pub role: &'static str,
    /// Index of the `[[cluster]]` this poller belongs to.
    pub cluster: usize,
    /// The CPU the poller is pinned to (None: not pinned).
    pub cpu: Option<usize>,
    /// VMs of its cluster (whose TX rings it serves, for a TX role).
    pub guests: usize,
    /// Frames taken from the backend's RX queue(s).
    pub wire_rx: u64,
    /// Frames the backend's TX queue took.
    pub wire_tx: u64,
    /// Segments cut from guests' TCP super-frames.
    pub tso_segments: u64,
    /// Guest super-frames the backend segmented in hardware.
    pub tso_offloaded: u64,
    /// Unicast frames from the wire for no configured VM (dropped).
    pub rx_unknown_dst: u64,
    /// Frames for a VM whose device was not running (dropped).
    pub rx_guest_stopped: u64,
    /// Frames one VM sent that host-mux delivered to another (a broadcast counts once per VM
    /// that got it).
    pub switched: u64,
    /// Rounds in which the backend TX queue was full (guest frames waited in their rings).
    pub tx_backpressure: u64,
    /// Guest frames whose payload went to the backend in place (zero-copy TX).
    pub tx_lent: u64,
    /// Frames the backend received straight into guest buffers (zero-copy RX).
    pub rx_in_place: u64,
    /// Poll rounds run.
    pub rounds: u64,
    /// Rounds that moved no frame.
    pub empty_rounds: u64,
    /// Times the poller slept in epoll (event mode).
    pub sleeps: u64,
    /// Time spent asleep, in ms.
    pub asleep_ms: u64,
}

/// Everything `host-mux --stats` shows.
#[derive(Clone, Debug, Serialize)]
pub struct MuxSnapshot {
    /// Every VM slot, in config order.
    pub guests: Vec<GuestSnapshot>,
    /// Every poller, in start order.
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

impl HostMux {
    /// The address the metrics endpoint listens on (the bound port when `metrics_listen`
    /// asked for port 0), or None without one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    /// Every VM slot's state and counters now, in config order.
    pub fn guests(&self) -> Vec<GuestSnapshot> {
        self.inner.guests()
    }

    /// Every poller's counters now.
    pub fn pollers(&self) -> Vec<PollerSnapshot> {
        self.inner.pollers()
    }

    /// VMs and pollers together (what the stats socket answers).
    pub fn snapshot(&self) -> MuxSnapshot {
        MuxSnapshot {
            guests: self.guests(),
            pollers: self.pollers(),
        }
    }

    /// The backend NIC's port counters now.
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
                switched: get(&p.stats.switched),
                tx_backpressure: get(&p.stats.tx_backpressure),
                tx_lent: get(&p.stats.tx_lent),
                rx_in_place: get(&p.stats.rx_in_place),
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
