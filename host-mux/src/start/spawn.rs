//! Start-up steps that start threads: each VM's control thread, the pollers, and the stats
//! and metrics threads. Each listening socket is already bound (see [`super::bind_socket`]).

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use log::{info, warn};
use parking_lot::Mutex;
use vdpdk_core::abi;
use vdpdk_core::{EthDev, Mempool, Result};
use vmm_sys_util::eventfd::EventFd;

use super::backend::{BackendQueues, Offloads, QueuePlan};
use super::{DupFd, StartUnwind};
use crate::config::MuxConfig;
use crate::datapath::{Poller, Role, RxSource, SleepPolicy};
use crate::device::{PortFacts, VdpdkDevice};
use crate::guest::{Guest, GuestStats};
use crate::serve::{serve_stats, serve_vm};
use crate::shm::SharedRegion;
use crate::{metrics, pin_current_thread, MetricsServer, PollerHandle, Shared, VmSlot};

/// What every spawning step shares.
pub(super) struct Spawner<'a> {
    pub(super) cfg: &'a MuxConfig,
    pub(super) plan: &'a QueuePlan,
    pub(super) stop: Arc<AtomicBool>,
    /// One wake fd per planned poller; a guest kicks its cluster's TX-serving poller's.
    pub(super) wakes: Vec<Arc<EventFd>>,
    /// Maps guest memory for the backend NIC (zero-copy on a NIC behind an IOMMU).
    pub(super) nic_dma: Option<Arc<dyn vdpdk_core::ExternalDma>>,
}

impl Spawner<'_> {
    /// The wake fd of `cluster`'s poller that is not of role `not` (the TX-serving one for
    /// `Role::Rx`, the one serving its backend RX queues for `Role::Tx`).
    fn wake_of(&self, cluster: usize, not: Role) -> Arc<EventFd> {
        let i = self
            .plan
            .pollers
            .iter()
            .position(|p| p.0 == cluster && p.1 != not)
            .expect("every cluster has an RX-serving and a TX-serving poller");
        self.wakes[i].clone()
    }

    /// Builds each VM's slot state and starts its control thread on its bound socket.
    pub(super) fn spawn_control_threads(
        &self,
        listeners: Vec<UnixListener>,
        facts: PortFacts,
        unwind: &mut StartUnwind,
    ) -> Result<(Vec<Arc<Guest>>, Vec<VmSlot>)> {
        let mut guests = Vec::new();
        let mut slots = Vec::new();
        for (vmi, (vm, listener)) in self.cfg.vms.iter().zip(listeners).enumerate() {
            let guest = Arc::new(Guest {
                name: vm.name.clone(),
                mac: vm.mac,
                max_rxq: vm.rx_queues,
                max_txq: vm.tx_queues,
                stats: GuestStats::default(),
                rx: Default::default(),
                tx: Default::default(),
                tx_gen: Default::default(),
                tx_wake: self.wake_of(vm.cluster, Role::Rx),
                data_bar: Arc::new(SharedRegion::new(&vm.name, abi::DATA_BAR_SIZE as usize)?),
                attached: AtomicBool::new(false),
                attaches: Default::default(),
                limits: self.cfg.limits,
                zero_copy_tx: self.cfg.zero_copy_tx,
                zero_copy_rx: self.plan.lends_rx(vmi),
                rx_wake: self.wake_of(vm.cluster, Role::Tx),
                lend_ctl: Default::default(),
                nic_dma: self.nic_dma.clone(),
            });
            let keep = listener.as_fd_dup()?;
            unwind.listeners.push(keep.try_clone()?);
            let dev = VdpdkDevice::new(guest.clone(), facts);
            let stop = self.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vfu-{}", vm.name))
                .spawn(move || serve_vm(dev, listener, stop))?;
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
        Ok((guests, slots))
    }

    /// Starts every planned poller, each with its cluster's guests and backend queues.
    pub(super) fn spawn_pollers(
        &self,
        guests: &[Arc<Guest>],
        mut queues: BackendQueues,
        pool: &Mempool,
        off: &Offloads,
    ) -> Result<Vec<PollerHandle>> {
        let cfg = self.cfg;
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
        for (i, &(ci, role, cpu)) in self.plan.pollers.iter().enumerate() {
            let mine: Vec<Arc<Guest>> = cfg
                .vms
                .iter()
                .zip(guests)
                .filter(|(v, _)| v.cluster == ci)
                .map(|(_, g)| g.clone())
                .collect();
            let rxq: Vec<RxSource> = if role != Role::Tx {
                self.plan
                    .layout
                    .iter()
                    .enumerate()
                    .filter(|(_, (c, _))| *c == ci)
                    .filter_map(|(q, (_, owner))| {
                        queues.rxqs[q].take().map(|queue| {
                            let lend = owner.filter(|&vm| self.plan.lends_rx(vm as usize));
                            RxSource::new(queue, *owner).lending_to(lend)
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let txq = (role != Role::Rx).then(|| {
                let t = queues.txqs[tx_next % queues.txqs.len()].clone();
                tx_next += 1;
                t
            });
            let name = format!("c{ci}-{}", role.name().replace('+', ""));
            let p = Poller::new(
                role,
                guests.to_vec(),
                mine.clone(),
                rxq,
                txq,
                pool.clone(),
                self.wakes[i].clone(),
                self.stop.clone(),
                policy,
            )
            .with_hw_tx_offloads(off.hw_tx);
            let p = match &off.tso_pool {
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
                wake: self.wakes[i].clone(),
                stats,
                thread: Some(thread),
            });
        }
        Ok(pollers)
    }

    /// Starts the thread answering the stats socket, when one was bound.
    pub(super) fn spawn_stats(
        &self,
        bound: Option<UnixListener>,
        inner: &Arc<Shared>,
        unwind: &mut StartUnwind,
    ) -> Result<Option<(OwnedFd, PathBuf, JoinHandle<()>)>> {
        let (Some(path), Some(l)) = (&self.cfg.stats_socket, bound) else {
            return Ok(None);
        };
        let keep = l.as_fd_dup()?;
        unwind.listeners.push(keep.try_clone()?);
        let (inner2, stop2) = (inner.clone(), self.stop.clone());
        let t = std::thread::Builder::new()
            .name("mux-stats".into())
            .spawn(move || serve_stats(l, inner2, stop2))?;
        Ok(Some((keep, path.clone(), t)))
    }

    /// Starts the thread answering `GET /metrics`, when a port was bound.
    pub(super) fn spawn_metrics(
        &self,
        bound: Option<TcpListener>,
        inner: &Arc<Shared>,
        backend: &Arc<Mutex<Box<dyn EthDev>>>,
        driver: String,
    ) -> Result<Option<MetricsServer>> {
        let Some(l) = bound else {
            return Ok(None);
        };
        let addr = l.local_addr()?;
        let keep = l.try_clone()?;
        let (inner2, stop2, backend2) = (inner.clone(), self.stop.clone(), backend.clone());
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
        Ok(Some(MetricsServer {
            listener: keep,
            addr,
            thread,
        }))
    }
}
