//! [`HostMux::start`] as a sequence of named steps: plan the queues, bring the backend up,
//! program steering (in [`backend`]), then start the control threads, the pollers and the
//! optional stats and metrics threads (in [`spawn`]). Everything an operator can fix (a socket
//! in use, a taken port) fails before the first thread starts; should a later step still fail,
//! [`StartUnwind`] stops what already runs.

mod backend;
mod spawn;

use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use vdpdk_core::{Error, EthDev, Result};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::MuxConfig;
use crate::{guest, HostMux, Shared};
use backend::{
    bring_up_backend, choose_offloads, packet_pool, port_facts, program_steering, take_queues,
    QueuePlan,
};
use spawn::Spawner;

/// Binds a Unix socket. A stale socket file (nobody listening) is replaced; a live one is an
/// error.
pub(crate) fn bind_socket(path: &Path) -> Result<UnixListener> {
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

/// The listening sockets, bound before any thread starts.
struct Sockets {
    metrics: Option<TcpListener>,
    vms: Vec<UnixListener>,
    stats: Option<UnixListener>,
}

/// Binds the metrics port, done first so a taken port fails the start before anything else.
fn bind_metrics(cfg: &MuxConfig) -> Result<Option<TcpListener>> {
    cfg.metrics_listen
        .map(|addr| {
            TcpListener::bind(addr)
                .map_err(|e| Error::InvalidArg(format!("mux.metrics_listen: binding {addr}: {e}")))
        })
        .transpose()
}

/// Binds every VM's socket and the stats socket.
fn bind_unix_sockets(cfg: &MuxConfig, metrics: Option<TcpListener>) -> Result<Sockets> {
    let vms = cfg
        .vms
        .iter()
        .map(|vm| bind_socket(&vm.socket))
        .collect::<Result<Vec<_>>>()?;
    let stats = cfg.stats_socket.as_deref().map(bind_socket).transpose()?;
    Ok(Sockets {
        metrics,
        vms,
        stats,
    })
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
    /// no threads. A start that fails leaves no thread serving and no socket accepting.
    pub fn start(cfg: &MuxConfig, mut backend: Box<dyn EthDev>) -> Result<HostMux> {
        guest::GUARD_UNMAPPED.store(cfg.guard_unmapped, Ordering::Relaxed);
        // Bound before any thread starts, so a taken port fails the start cleanly.
        let metrics_listener = bind_metrics(cfg)?;
        let info = backend.info();
        let pool = packet_pool(cfg)?;
        let plan = QueuePlan::new(cfg, &info)?;
        let off = choose_offloads(&info, cfg.zero_copy_tx)?;
        bring_up_backend(&mut *backend, &info, &plan, &off, &pool)?;
        program_steering(&mut *backend, &info, cfg, &plan)?;
        let queues = take_queues(&mut *backend, &plan)?;
        let facts = port_facts(&*backend, &info, &off);
        let wakes = plan
            .pollers
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        // Everything that can fail for a reason the operator can fix (a socket in use, a bad
        // path) is done before the first thread starts.
        let sockets = bind_unix_sockets(cfg, metrics_listener)?;
        let stop = Arc::new(AtomicBool::new(false));
        // Should a later step still fail (no memory, no threads), the threads started so far
        // are told to stop instead of being left serving sockets nobody owns.
        let mut unwind = StartUnwind {
            stop: stop.clone(),
            listeners: Vec::new(),
            wakes: wakes.clone(),
            armed: true,
        };
        // Zero-copy on a NIC behind an IOMMU: guests' memory is mapped for it as they map it.
        let nic_dma = (off.lend || plan.lend_rx)
            .then(|| backend.external_dma())
            .flatten();
        let spawner = Spawner {
            cfg,
            plan: &plan,
            stop: stop.clone(),
            wakes,
            nic_dma,
        };
        let (guests, slots) = spawner.spawn_control_threads(sockets.vms, facts, &mut unwind)?;
        let pollers = spawner.spawn_pollers(&guests, queues, &pool, &off)?;
        let inner = Arc::new(Shared {
            guests,
            pollers: Mutex::new(pollers),
        });
        let stats_listener = spawner.spawn_stats(sockets.stats, &inner, &mut unwind)?;
        let backend = Arc::new(Mutex::new(backend));
        let metrics = spawner.spawn_metrics(sockets.metrics, &inner, &backend, info.driver)?;
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

/// A close-on-exec duplicate of a listening socket's fd, kept to shut the socket down from
/// another thread.
pub(crate) trait DupFd {
    /// The duplicate, owned by the caller.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, VmConfig};
    use vdpdk_core::MacAddr;

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
