//! Start-up steps that deal with the backend NIC: plan the queues, pick offloads, configure
//! and start the backend, program steering and take its queues.

use std::sync::Arc;

use log::{info, warn};
use parking_lot::Mutex;
use vdpdk_core::{
    DevConfig, DevInfo, Error, EthDev, FlowItem, FlowRule, Mempool, Result, RxOffloads, RxQueue,
    TxOffloads, TxQueue,
};

use crate::config::{ClusterConfig, MuxConfig};
use crate::datapath::{self, Role};
use crate::device::PortFacts;

/// Backend ring size: the largest the backend allows up to 1024.
fn pick_ring(lim: vdpdk_core::DescLimits) -> u16 {
    let want = 1024u16.clamp(lim.min, lim.max);
    want - want % lim.align.max(1)
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

/// Which pollers run and which backend queues they serve.
pub(super) struct QueuePlan {
    /// Every poller: (cluster index, role, CPU to pin to).
    pub(super) pollers: Vec<(usize, Role, Option<usize>)>,
    /// Backend RX queue layout, indexed by queue: (cluster whose RX poller serves it, owning
    /// VM when the queue is dedicated to one).
    pub(super) layout: Vec<(usize, Option<u16>)>,
    /// Each VM's MAC gets its own backend RX queue through a backend flow rule.
    pub(super) hw_steering: bool,
    /// Backend TX queues (at least 1; TX pollers share them when there are fewer).
    pub(super) nb_tx: u16,
    /// Each VM's own RX queue receives into its guest's buffers (zero-copy RX): asked for,
    /// and the backend can (`DevInfo::rx_lent_buffers`, with hardware steering).
    pub(super) lend_rx: bool,
}

impl QueuePlan {
    /// Plans the pollers of every cluster and the backend queues they need. With hardware
    /// steering queue 0 takes broadcast and unknown frames and every VM gets its own queue,
    /// steered by a backend flow rule on its MAC; otherwise each cluster gets one queue.
    pub(super) fn new(cfg: &MuxConfig, info: &DevInfo) -> Result<QueuePlan> {
        let pollers: Vec<(usize, Role, Option<usize>)> = cfg
            .clusters
            .iter()
            .enumerate()
            .flat_map(|(ci, c)| {
                cluster_roles(c)
                    .into_iter()
                    .map(move |(r, cpu)| (ci, r, cpu))
            })
            .collect();
        let n_tx = pollers.iter().filter(|p| p.1 != Role::Rx).count() as u16;
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
        if layout.len() > info.max_rx_queues as usize {
            return Err(Error::InvalidArg(format!(
                "{} clusters need {} RX queues but the {} backend has {}",
                cfg.clusters.len(),
                layout.len(),
                info.driver,
                info.max_rx_queues
            )));
        }
        if cfg.zero_copy_rx && !(hw && info.rx_lent_buffers) {
            return Err(Error::InvalidArg(format!(
                "mux.zero_copy_rx needs a backend RX queue per VM that receives into guest \
                 buffers; the {} backend {} (turn zero_copy_rx off{})",
                info.driver,
                if info.rx_lent_buffers {
                    "has too few RX queues or hw_steering is off"
                } else {
                    "cannot receive into lent buffers"
                },
                if info.rx_lent_buffers {
                    ", or set hw_steering = true"
                } else {
                    ", or use the pair backend"
                }
            )));
        }
        Ok(QueuePlan {
            pollers,
            layout,
            hw_steering: hw,
            nb_tx: n_tx.min(info.max_tx_queues).max(1),
            lend_rx: cfg.zero_copy_rx,
        })
    }

    /// Whether VM `vm`'s own RX queue receives into its guest's buffers.
    pub(super) fn lends_rx(&self, vm: usize) -> bool {
        self.lend_rx && self.layout.iter().any(|&(_, o)| o == Some(vm as u16))
    }

    pub(super) fn n_rx(&self) -> u16 {
        self.layout.len() as u16
    }
}

/// The offloads the backend takes over from host-mux.
pub(super) struct Offloads {
    /// Checksum offloads the backend computes for guests' frames (the rest is software).
    pub(super) hw_tx: TxOffloads,
    /// Buffers for super-frames the backend segments itself; None: host-mux cuts them.
    pub(super) tso_pool: Option<Mempool>,
    /// RX checksum status passed through to guests.
    pub(super) rx_csum: RxOffloads,
    /// Guest frames go to the backend as header-and-lent-payload chains (zero-copy TX).
    pub(super) lend: bool,
}

/// The backend's queues once it runs, for the pollers to take.
pub(super) struct BackendQueues {
    pub(super) rxqs: Vec<Option<Box<dyn RxQueue>>>,
    pub(super) txqs: Vec<Arc<Mutex<Box<dyn TxQueue>>>>,
}

/// Host packet buffers, on hugepages when the system has them reserved.
pub(super) fn packet_pool(cfg: &MuxConfig) -> Result<Mempool> {
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
    Ok(pool)
}

/// Picks the offloads the backend has: TX checksums, TCP segmentation of super-frames (as
/// chains of TSO buffers, when it also takes multi-segment frames) and RX checksum status;
/// and zero-copy TX when `zero_copy_tx` asks for it, refused unless the backend sends lent
/// buffers in chains.
pub(super) fn choose_offloads(info: &DevInfo, zero_copy_tx: bool) -> Result<Offloads> {
    if zero_copy_tx
        && !(info.tx_lent_buffers && info.tx_offload_capa.contains(TxOffloads::MULTI_SEGS))
    {
        return Err(Error::InvalidArg(format!(
            "mux.zero_copy_tx: the {} backend cannot send guest buffers in place \
             (turn zero_copy_tx off, or use the pair or tap backend)",
            info.driver
        )));
    }
    let hw_tx = info.tx_offload_capa & datapath::CSUM_TX_OFFLOADS;
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
    Ok(Offloads {
        hw_tx,
        tso_pool,
        rx_csum,
        lend: zero_copy_tx,
    })
}

/// Configures the backend with the planned queues and offloads, sets its queues up on `pool`
/// and starts it.
pub(super) fn bring_up_backend(
    backend: &mut dyn EthDev,
    info: &DevInfo,
    plan: &QueuePlan,
    off: &Offloads,
    pool: &Mempool,
) -> Result<()> {
    let tso_needs = TxOffloads::TCP_TSO | TxOffloads::MULTI_SEGS;
    backend.configure(&DevConfig {
        nb_rx_queues: plan.n_rx(),
        nb_tx_queues: plan.nb_tx,
        rx_intr: info.rx_intr,
        tx_offloads: match (off.tso_pool.is_some(), off.lend) {
            (true, _) => off.hw_tx | tso_needs,
            (false, true) => off.hw_tx | TxOffloads::MULTI_SEGS,
            (false, false) => off.hw_tx,
        },
        rx_offloads: off.rx_csum,
        ..Default::default()
    })?;
    for q in 0..plan.n_rx() {
        backend.rx_queue_setup(q, pick_ring(info.rx_desc_lim), pool)?;
    }
    for q in 0..plan.nb_tx {
        backend.tx_queue_setup(q, pick_ring(info.tx_desc_lim))?;
    }
    backend.start()
}

/// Steers VM MACs to their queues with backend flow rules. Hardware steering that the backend
/// refuses falls back to software steering (everything arrives on queue 0); cluster steering it
/// refuses fails the start.
pub(super) fn program_steering(
    backend: &mut dyn EthDev,
    info: &DevInfo,
    cfg: &MuxConfig,
    plan: &QueuePlan,
) -> Result<()> {
    if plan.hw_steering {
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
    } else if plan.n_rx() > 1 {
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
    Ok(())
}

/// Takes every planned queue out of the running backend.
pub(super) fn take_queues(backend: &mut dyn EthDev, plan: &QueuePlan) -> Result<BackendQueues> {
    let rxqs = (0..plan.n_rx())
        .map(|q| backend.take_rx_queue(q).map(Some))
        .collect::<Result<_>>()?;
    let txqs = (0..plan.nb_tx)
        .map(|q| backend.take_tx_queue(q).map(|t| Arc::new(Mutex::new(t))))
        .collect::<Result<_>>()?;
    Ok(BackendQueues { rxqs, txqs })
}

/// The device-wide facts every guest's info block shows.
pub(super) fn port_facts(backend: &dyn EthDev, info: &DevInfo, off: &Offloads) -> PortFacts {
    let link = backend.link();
    PortFacts {
        mtu: info.mtu,
        rx_offloads: off.rx_csum,
        // The backend runs at its default MTU (host-mux does not raise it), so that is
        // also the most a guest can use.
        max_mtu: info.mtu,
        link_up: link.up,
        link_speed_mbps: link.speed_mbps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdpdk_core::{DescLimits, MacAddr};

    fn info(tx_lent_buffers: bool, tx_offload_capa: TxOffloads) -> DevInfo {
        let lim = DescLimits {
            min: 64,
            max: 4096,
            align: 32,
        };
        DevInfo {
            driver: "test".into(),
            mac: MacAddr::ZERO,
            max_rx_queues: 1,
            max_tx_queues: 1,
            rx_desc_lim: lim,
            tx_desc_lim: lim,
            mtu: 1500,
            max_mtu: 1500,
            rx_offload_capa: RxOffloads::empty(),
            tx_offload_capa,
            rx_intr: false,
            tx_lent_buffers,
            rx_lent_buffers: false,
        }
    }

    #[test]
    fn zero_copy_needs_a_backend_that_sends_lent_chains() {
        for (lent, capa) in [(false, TxOffloads::MULTI_SEGS), (true, TxOffloads::empty())] {
            let err = choose_offloads(&info(lent, capa), true)
                .err()
                .expect("refused");
            assert!(err.to_string().contains("zero_copy_tx"), "{err}");
        }
        let off = choose_offloads(&info(true, TxOffloads::MULTI_SEGS), true).unwrap();
        assert!(off.lend);
        let off = choose_offloads(&info(false, TxOffloads::empty()), false).unwrap();
        assert!(!off.lend, "nothing is asked of a backend without zero-copy");
    }
}
