//! The bookkeeping every port driver repeats, written once: lifecycle state and its checks,
//! one setup slot per queue, queues handed out once per start, per-queue counters, and a count
//! of live queues so `stop` can refuse while one is still in use.
//!
//! A driver keeps a [`PortSkeleton`] and calls it at the top of each [`EthDev`] method; what is
//! left in the driver is what is particular to its device (descriptor limits, rings, fds).
//! `R` and `T` are what `rx_queue_setup` and `tx_queue_setup` record (a descriptor count, a
//! pool, or the queue object itself).
//!
//! [`EthDev`]: crate::EthDev

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::ethdev::{check_all_set_up, check_qid, reset_all, sum_stats, PortState};
use crate::{DevConfig, DevInfo, Error, PortStats, QueueCounters, Result};

/// One direction's queues: what each was set up with, whether it was taken since the last
/// start, and its counters (which outlive reconfiguration, so statistics do too).
pub struct QueueSlots<S> {
    kind: &'static str,
    setup: Vec<Option<S>>,
    taken: Vec<bool>,
    counters: Vec<Arc<QueueCounters>>,
}

impl<S> QueueSlots<S> {
    fn new(kind: &'static str) -> Self {
        QueueSlots {
            kind,
            setup: Vec::new(),
            taken: Vec::new(),
            counters: Vec::new(),
        }
    }

    fn resize(&mut self, n: u16) {
        let n = n as usize;
        self.setup = (0..n).map(|_| None).collect();
        self.taken = vec![false; n];
        self.counters.resize_with(n, Default::default);
    }

    /// Records the setup of queue `qid` (checked by the port's `check_*_setup` before).
    pub fn set(&mut self, qid: u16, setup: S) {
        self.setup[qid as usize] = Some(setup);
    }

    /// What queue `qid` was set up with, if it was.
    pub fn get(&self, qid: u16) -> Option<&S> {
        self.setup.get(qid as usize)?.as_ref()
    }

    /// The counters of queue `qid`, to hand to the queue object.
    pub fn counters(&self, qid: u16) -> Arc<QueueCounters> {
        self.counters[qid as usize].clone()
    }

    /// The set-up slots in queue order (None: not set up, or moved out by `take_*_out`).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Option<S>> {
        self.setup.iter_mut()
    }

    /// Marks `qid` taken, refusing a second take before the next start.
    fn mark_taken(&mut self, state: PortState, what: &str, qid: u16) -> Result<()> {
        state.need_started(what)?;
        check_qid(self.kind, qid, self.setup.len() as u16)?;
        let taken = &mut self.taken[qid as usize];
        if *taken {
            return Err(Error::BadState(format!(
                "{} queue {qid} was already taken",
                self.kind
            )));
        }
        *taken = true;
        Ok(())
    }
}

/// A queue handed out by [`PortSkeleton::take_rx`] / [`PortSkeleton::take_tx`]: its setup, its
/// counters, and the guard the queue object keeps until it is dropped.
pub struct Taken<'a, S> {
    /// What the queue was set up with.
    pub setup: &'a S,
    /// The queue's counters.
    pub counters: Arc<QueueCounters>,
    /// Keeps [`PortSkeleton::stop`] refusing while the queue lives.
    pub live: LiveGuard,
}

/// Held by a queue object handed out by the port: while any lives, `stop` refuses.
pub struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(live: &Arc<AtomicUsize>) -> LiveGuard {
        live.fetch_add(1, Ordering::AcqRel);
        LiveGuard(live.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A port's lifecycle bookkeeping. See the module docs.
pub struct PortSkeleton<R, T> {
    /// Where the port is in its lifecycle.
    pub state: PortState,
    /// The configuration of the last successful `configure`.
    pub conf: DevConfig,
    /// The RX queues.
    pub rx: QueueSlots<R>,
    /// The TX queues.
    pub tx: QueueSlots<T>,
    live: Arc<AtomicUsize>,
}

impl<R, T> Default for PortSkeleton<R, T> {
    fn default() -> Self {
        PortSkeleton {
            state: PortState::Unconfigured,
            conf: DevConfig::default(),
            rx: QueueSlots::new("RX"),
            tx: QueueSlots::new("TX"),
            live: Arc::default(),
        }
    }
}

impl<R, T> PortSkeleton<R, T> {
    /// `configure`, first half: refuses on a started port or a `conf` the device does not
    /// offer (`info`).
    pub fn check_configure(&self, conf: &DevConfig, info: &DevInfo) -> Result<()> {
        self.state.need_stopped("configure")?;
        conf.validate(info)
    }

    /// `configure`, second half, once the device took `conf`: every queue setup is forgotten,
    /// counters are kept.
    pub fn configured(&mut self, conf: &DevConfig) {
        self.rx.resize(conf.nb_rx_queues);
        self.tx.resize(conf.nb_tx_queues);
        self.conf = conf.clone();
        self.state = PortState::Configured;
    }

    /// The whole `configure` of a device with nothing of its own to set up: both halves.
    pub fn configure(&mut self, conf: &DevConfig, info: &DevInfo) -> Result<()> {
        self.check_configure(conf, info)?;
        self.configured(conf);
        Ok(())
    }

    /// `rx_queue_setup`: needs a configured, stopped port and an existing queue.
    pub fn check_rx_setup(&self, qid: u16) -> Result<()> {
        self.state.need_configured("rx_queue_setup")?;
        check_qid("RX", qid, self.conf.nb_rx_queues)
    }

    /// `tx_queue_setup`: needs a configured, stopped port and an existing queue.
    pub fn check_tx_setup(&self, qid: u16) -> Result<()> {
        self.state.need_configured("tx_queue_setup")?;
        check_qid("TX", qid, self.conf.nb_tx_queues)
    }

    /// `start`, first half: needs a configured, stopped port with every queue set up.
    pub fn check_start(&self) -> Result<()> {
        self.state.need_startable()?;
        check_all_set_up(&self.rx.setup, &self.tx.setup)
    }

    /// `start`, second half, once the device runs: every queue may be taken once again.
    pub fn started(&mut self) {
        self.rx.taken.fill(false);
        self.tx.taken.fill(false);
        self.state = PortState::Started;
    }

    /// `stop`: refuses on a port that is not started or while a taken queue still lives.
    pub fn stop(&mut self) -> Result<()> {
        if self.state != PortState::Started {
            return Err(Error::BadState("stop of a port that is not started".into()));
        }
        let live = self.live.load(Ordering::Acquire);
        if live != 0 {
            return Err(Error::BadState(format!(
                "stop with {live} queue(s) still taken; drop them first"
            )));
        }
        self.state = PortState::Configured;
        Ok(())
    }

    /// `take_rx_queue` of a driver that builds the queue from its setup: marks the queue taken
    /// (once per start); the setup stays for the next start.
    pub fn take_rx(&mut self, qid: u16) -> Result<Taken<'_, R>> {
        self.rx.mark_taken(self.state, "take_rx_queue", qid)?;
        Ok(Taken {
            setup: self
                .rx
                .get(qid)
                .expect("a started port has every queue set up"),
            counters: self.rx.counters(qid),
            live: LiveGuard::new(&self.live),
        })
    }

    /// `take_tx_queue` of a driver that builds the queue from its setup (see `take_rx`).
    pub fn take_tx(&mut self, qid: u16) -> Result<Taken<'_, T>> {
        self.tx.mark_taken(self.state, "take_tx_queue", qid)?;
        Ok(Taken {
            setup: self
                .tx
                .get(qid)
                .expect("a started port has every queue set up"),
            counters: self.tx.counters(qid),
            live: LiveGuard::new(&self.live),
        })
    }

    /// `take_rx_queue` of a driver whose setup is the queue object itself: moves it out, so
    /// the queue must be set up again before the next start.
    pub fn take_rx_out(&mut self, qid: u16) -> Result<R> {
        self.rx.mark_taken(self.state, "take_rx_queue", qid)?;
        Ok(self.rx.setup[qid as usize].take().expect("set up"))
    }

    /// `take_tx_queue` of a driver whose setup is the queue object itself (see `take_rx_out`).
    pub fn take_tx_out(&mut self, qid: u16) -> Result<T> {
        self.tx.mark_taken(self.state, "take_tx_queue", qid)?;
        Ok(self.tx.setup[qid as usize].take().expect("set up"))
    }

    /// Port statistics summed over the queues' counters.
    pub fn stats(&self) -> PortStats {
        sum_stats(&self.rx.counters, &self.tx.counters)
    }

    /// Zeroes every queue's counters.
    pub fn reset_stats(&self) {
        reset_all(&self.rx.counters, &self.tx.counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DescLimits, MacAddr, RxOffloads, TxOffloads};

    fn info() -> DevInfo {
        let lim = DescLimits {
            min: 1,
            max: 64,
            align: 1,
        };
        DevInfo {
            driver: "test".into(),
            mac: MacAddr::ZERO,
            max_rx_queues: 2,
            max_tx_queues: 2,
            rx_desc_lim: lim,
            tx_desc_lim: lim,
            mtu: 1500,
            max_mtu: 1500,
            rx_offload_capa: RxOffloads::empty(),
            tx_offload_capa: TxOffloads::empty(),
            rx_intr: false,
            tx_lent_buffers: false,
            rx_lent_buffers: false,
        }
    }

    fn configured(p: &mut PortSkeleton<u16, u16>, nrx: u16, ntx: u16) {
        let conf = DevConfig {
            nb_rx_queues: nrx,
            nb_tx_queues: ntx,
            ..Default::default()
        };
        p.check_configure(&conf, &info()).unwrap();
        p.configured(&conf);
    }

    #[test]
    fn lifecycle_order_is_enforced() {
        let mut p = PortSkeleton::<u16, u16>::default();
        assert!(matches!(p.check_rx_setup(0), Err(Error::BadState(_))));
        assert!(matches!(p.check_start(), Err(Error::BadState(_))));
        configured(&mut p, 2, 1);
        assert!(matches!(p.check_rx_setup(2), Err(Error::InvalidArg(_))));
        p.rx.set(0, 8);
        p.tx.set(0, 8);
        assert!(
            matches!(p.check_start(), Err(Error::BadState(_))),
            "RX 1 unset"
        );
        p.rx.set(1, 8);
        p.check_start().unwrap();
        assert!(
            matches!(p.take_rx(0), Err(Error::BadState(_))),
            "not started"
        );
        p.started();
        assert!(matches!(p.check_start(), Err(Error::BadState(_))));
        assert!(matches!(p.check_tx_setup(0), Err(Error::BadState(_))));
    }

    #[test]
    fn queues_are_taken_once_and_stop_waits_for_them() {
        let mut p = PortSkeleton::<u16, u16>::default();
        configured(&mut p, 1, 1);
        p.rx.set(0, 8);
        p.tx.set(0, 16);
        p.check_start().unwrap();
        p.started();
        let rx = p.take_rx(0).unwrap();
        assert_eq!(*rx.setup, 8);
        rx.counters.add(3, 300);
        let live = rx.live;
        assert!(matches!(p.take_rx(0), Err(Error::BadState(_))));
        assert!(matches!(p.take_rx(1), Err(Error::InvalidArg(_))));
        assert!(matches!(p.stop(), Err(Error::BadState(_))), "queue alive");
        drop(live);
        p.stop().unwrap();
        // Counters survive reconfiguration; setups do not.
        configured(&mut p, 1, 1);
        assert_eq!(p.stats().ipackets, 3);
        assert!(p.rx.get(0).is_none());
        p.reset_stats();
        assert_eq!(p.stats().ibytes, 0);
    }

    #[test]
    fn moved_out_queues_need_setting_up_again() {
        let mut p = PortSkeleton::<u16, u16>::default();
        configured(&mut p, 1, 1);
        p.rx.set(0, 8);
        p.tx.set(0, 16);
        p.started();
        assert_eq!(p.take_tx_out(0).unwrap(), 16);
        assert!(matches!(p.take_tx_out(0), Err(Error::BadState(_))));
        p.stop().unwrap();
        assert!(matches!(p.check_start(), Err(Error::BadState(_))));
    }
}
