//! The control plane of one vDPDK device: the ops a guest driver writes into BAR2's request
//! block and rings the doorbell for (negotiate, configure, queue setup, start, stop, reset,
//! flow rules, stats). It knows nothing of vfio-user: [`ControlPlane::ring`] takes the
//! doorbell's value, copies the request out of the data BAR once, validates it against the
//! [`Guest`], applies it and writes the response back. Every refusal has a status and a reason
//! and is counted in `ctrl_errors`.
//!
//! A new op: add it to `vdpdk_core::abi::CtrlOp`, give it a method here (checking the state
//! with [`ControlPlane::need_negotiated`] or [`ControlPlane::configured`] first, every guest
//! value before it is used) and route it in [`ControlPlane::dispatch`]; a unit test in this
//! file's tests shows its refusals and its success.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::info;
use vdpdk_core::abi::desc::{valid_ring_size, RingPtr, DESC_SIZE};
use vdpdk_core::abi::{self, CtrlOp, CtrlRequest, CtrlResponse, CtrlStatus, StatsIndex};
use vdpdk_core::flow::FlowRule;
use vdpdk_core::{FlowHandle, MacAddr};
use zerocopy::{FromZeros, IntoBytes};

use super::offered_features;
use crate::guest::{DirectRx, Guest, GuestMem, HostQueue, ZeroCopy};

/// Where the driver stands in the device's life cycle.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Nothing negotiated since power-on, reset or disconnect.
    Fresh,
    /// ABI and features agreed; no queue counts yet.
    Negotiated,
    /// Queue counts set (queues may still await setup).
    Configured { nrx: u16, ntx: u16 },
}

/// A refusal: the status the guest reads and the reason it is told (and that is logged).
pub(crate) type Refusal = (CtrlStatus, String);

/// An op's result words on success.
type CtrlResult = Result<[u64; 16], Refusal>;

fn fail<T>(s: CtrlStatus, msg: impl Into<String>) -> Result<T, Refusal> {
    Err((s, msg.into()))
}

/// The control plane's state for one VM slot.
pub(crate) struct ControlPlane {
    guest: Arc<Guest>,
    state: State,
    /// Status of the last request, as `REG_CTRL_STATUS` reads it.
    status: u32,
    /// The handle the next flow rule gets (never 0).
    next_flow: u32,
}

impl ControlPlane {
    /// A control plane for `guest`, in power-on state.
    pub(crate) fn new(guest: Arc<Guest>) -> ControlPlane {
        ControlPlane {
            guest,
            state: State::Fresh,
            status: 0,
            next_flow: 1,
        }
    }

    /// Back to power-on state (the caller clears the guest's queues, rules and maps).
    pub(crate) fn reset(&mut self) {
        self.state = State::Fresh;
        self.status = 0;
    }

    /// The status of the last request (`CtrlStatus` as u32; 0 before any).
    pub(crate) fn status(&self) -> u32 {
        self.status
    }

    /// The doorbell rang with `seq`: copies the request out of BAR2 once, executes it and
    /// writes the response into BAR2.
    pub(crate) fn ring(&mut self, seq: u32) {
        let mut req = CtrlRequest::new_zeroed();
        self.guest
            .data_bar
            .read(abi::CTRL_REQ_OFFSET, req.as_mut_bytes());
        let resp = self.execute(seq, &req);
        self.guest
            .data_bar
            .write(abi::CTRL_RESP_OFFSET, resp.as_bytes());
    }

    /// Executes `req` (already copied out of guest memory) for doorbell value `seq` and returns
    /// the response; a refusal is counted and logged.
    pub(crate) fn execute(&mut self, seq: u32, req: &CtrlRequest) -> CtrlResponse {
        let mut resp = CtrlResponse::new_zeroed();
        resp.seq = seq;
        let outcome = if req.seq != seq {
            fail(
                CtrlStatus::BadSeq,
                format!("doorbell seq {seq} but request block holds {}", req.seq),
            )
        } else {
            match CtrlOp::from_u32(req.op) {
                None => fail(
                    CtrlStatus::UnknownOp,
                    format!("unknown control op {}", req.op),
                ),
                Some(op) => self.dispatch(op, req),
            }
        };
        match outcome {
            Ok(result) => {
                resp.status = CtrlStatus::Ok as u32;
                resp.result = result;
            }
            Err((status, msg)) => {
                self.guest.stats.add(StatsIndex::CtrlErrors, 1);
                info!(
                    "{}: control request {} refused: {msg}",
                    self.guest.name, req.op
                );
                resp.status = status as u32;
                resp.set_message(&msg);
            }
        }
        self.status = resp.status;
        resp
    }

    /// Routes one op to its handler.
    fn dispatch(&mut self, op: CtrlOp, req: &CtrlRequest) -> CtrlResult {
        let mut out = [0u64; 16];
        match op {
            CtrlOp::Negotiate => out[0] = self.negotiate(req)?,
            CtrlOp::Configure => self.configure(req.args[0], req.args[1])?,
            CtrlOp::RxqSetup => self.queue_setup(true, req.args[0], req.args[1], req.args[2])?,
            CtrlOp::RxqDirectSetup => self.direct_setup(req.args[0], req.args[1], req.args[2])?,
            CtrlOp::TxqSetup => self.queue_setup(false, req.args[0], req.args[1], req.args[2])?,
            CtrlOp::Start => self.start()?,
            CtrlOp::Stop => {
                self.need_negotiated()?;
                self.guest.set_running(false);
            }
            CtrlOp::Reset => {
                self.need_negotiated()?;
                self.stop_and_clear_queues();
                self.state = State::Negotiated;
            }
            CtrlOp::FlowValidate => {
                self.flow_check(req)?;
            }
            CtrlOp::FlowCreate => out[0] = self.flow_create(req)?,
            CtrlOp::FlowDestroy => self.flow_destroy(req.args[0])?,
            CtrlOp::FlowFlush => {
                self.configured()?;
                self.guest.rx.lock().rules.clear();
            }
            CtrlOp::GetStats => {
                let s = self.guest.stats_snapshot();
                out[..s.len()].copy_from_slice(&s);
            }
        }
        Ok(out)
    }

    fn need_negotiated(&self) -> Result<(), Refusal> {
        if self.state == State::Fresh {
            return fail(CtrlStatus::BadState, "negotiate first");
        }
        Ok(())
    }

    /// The configured (RX, TX) queue counts.
    fn configured(&self) -> Result<(u16, u16), Refusal> {
        match self.state {
            State::Configured { nrx, ntx } => Ok((nrx, ntx)),
            _ => fail(CtrlStatus::BadState, "configure first"),
        }
    }

    /// Stops the data path and forgets queues and flow rules. DMA maps, interrupt fds and
    /// counters outlive this (they belong to the VMM's view of the device, not the driver's).
    fn stop_and_clear_queues(&mut self) {
        self.guest.with_both(|tx, rx| {
            tx.running = false;
            tx.queues.clear();
            rx.running = false;
            rx.queues.clear();
            rx.direct = None;
            rx.rules.clear();
        });
    }

    /// Agrees on the ABI (major version in `args[0] >> 16`) and features (`args[1]`, a subset
    /// of the offered ones); returns the agreed features.
    fn negotiate(&mut self, req: &CtrlRequest) -> Result<u64, Refusal> {
        let major = (req.args[0] >> 16) as u16;
        let offered = offered_features(&self.guest);
        let agreed = abi::negotiate(abi::ABI_MAJOR, offered, major, req.args[1])
            .map_err(|m| (CtrlStatus::Version, m))?;
        // A driver starting over (a restarted guest app) drops its queues and rules;
        // vfio-level state (DMA maps, interrupt fds, PCI config) belongs to the VMM
        // and survives, as it does on CtrlOp::Reset.
        self.stop_and_clear_queues();
        let mut tx = self.guest.tx.lock();
        tx.zero_copy = agreed.contains(abi::Features::TX_ZERO_COPY);
        tx.laps = agreed.contains(abi::Features::TX_LAPS);
        drop(tx);
        self.guest.rx.lock().zero_copy = agreed.contains(abi::Features::RX_ZERO_COPY);
        self.state = State::Negotiated;
        self.guest.attached.store(true, Ordering::Relaxed);
        self.guest.attaches.fetch_add(1, Ordering::Relaxed);
        Ok(agreed.bits())
    }

    /// Sets the queue counts (each within this VM's limit) on a stopped device; every queue
    /// then awaits setup and the flow rules are dropped.
    fn configure(&mut self, nrx: u64, ntx: u64) -> Result<(), Refusal> {
        self.need_negotiated()?;
        if nrx == 0 || nrx > self.guest.max_rxq as u64 {
            return fail(
                CtrlStatus::InvalidArg,
                format!(
                    "{nrx} RX queues, this VM may use 1..={}",
                    self.guest.max_rxq
                ),
            );
        }
        if ntx == 0 || ntx > self.guest.max_txq as u64 {
            return fail(
                CtrlStatus::InvalidArg,
                format!(
                    "{ntx} TX queues, this VM may use 1..={}",
                    self.guest.max_txq
                ),
            );
        }
        self.guest.with_both(|tx, rx| {
            if rx.running {
                return fail(CtrlStatus::BadState, "stop the device before configuring");
            }
            rx.queues = (0..nrx).map(|_| None).collect();
            rx.direct = None;
            tx.queues = (0..ntx).map(|_| None).collect();
            rx.rules.clear();
            Ok(())
        })?;
        self.state = State::Configured {
            nrx: nrx as u16,
            ntx: ntx as u16,
        };
        Ok(())
    }

    /// Sets up RX (`is_rx`) or TX queue `qid` on the ring of `size` descriptors at guest IOVA
    /// `iova`, which must lie wholly in one writable DMA region, on a stopped device.
    fn queue_setup(&mut self, is_rx: bool, qid: u64, iova: u64, size: u64) -> Result<(), Refusal> {
        let (nrx, ntx) = self.configured()?;
        let n = if is_rx { nrx } else { ntx };
        if qid >= n as u64 {
            return fail(
                CtrlStatus::InvalidArg,
                format!("queue {qid} is not configured ({n} queues)"),
            );
        }
        let len = check_ring(iova, size)?;
        self.guest.with_both(|tx, rx| {
            if rx.running {
                return fail(CtrlStatus::BadState, "stop the device before queue setup");
            }
            let ptr = ring_in_map(&rx.mem, iova, len)?;
            // SAFETY: ptr..ptr+len lies in one writable DMA region; queues are dropped (under
            // this lock) before that region is unmapped, so the ring outlives the RingPtr.
            let ring = unsafe { RingPtr::new(ptr, size as u16) }.with_laps(!is_rx && tx.laps);
            let zc = (!is_rx && tx.zero_copy)
                .then(|| ZeroCopy::new(size as u16, &format!("{}-txq{qid}", self.guest.name)));
            let q = HostQueue::new(ring, iova, len, zc);
            // The published progress restarts with the ring.
            let bar = &self.guest.data_bar;
            if is_rx {
                rx.queues[qid as usize] = Some(q);
                if qid == 0 {
                    rx.direct = None; // a queue set up again loses its direct ring
                }
                let line = abi::rxq_flags_offset(qid as u16);
                for word in [abi::RXQ_DONE_INDEX, abi::RXQ_DIRECT_DONE_INDEX] {
                    bar.flag(line + word).store(0, Ordering::Release);
                }
            } else {
                tx.queues[qid as usize] = Some(q);
                let line = abi::txq_flags_offset(qid as u16);
                for word in [abi::TXQ_DONE_INDEX, abi::TXQ_REFUSED] {
                    bar.flag(line + word).store(0, Ordering::Release);
                }
            }
            Ok(())
        })
    }

    /// Sets up the direct ring of RX queue `qid` (0, set up already) on the ring of `size`
    /// descriptors at guest IOVA `iova` (`Features::RX_ZERO_COPY`), on a stopped device.
    fn direct_setup(&mut self, qid: u64, iova: u64, size: u64) -> Result<(), Refusal> {
        self.configured()?;
        if !self.guest.rx.lock().zero_copy {
            return fail(CtrlStatus::BadState, "RX_ZERO_COPY was not negotiated");
        }
        if qid != 0 {
            return fail(
                CtrlStatus::InvalidArg,
                format!("RX queue {qid} cannot have a direct ring (only queue 0 can)"),
            );
        }
        let len = check_ring(iova, size)?;
        self.guest.with_both(|_, rx| {
            if rx.running {
                return fail(CtrlStatus::BadState, "stop the device before queue setup");
            }
            if rx.queues.first().is_none_or(|q| q.is_none()) {
                return fail(CtrlStatus::BadState, "set up RX queue 0 first");
            }
            let ptr = ring_in_map(&rx.mem, iova, len)?;
            // SAFETY: as in queue_setup: the direct ring is dropped (under this lock) before
            // its region is unmapped.
            let ring = unsafe { RingPtr::new(ptr, size as u16) };
            let q = HostQueue::new(ring, iova, len, None);
            rx.direct = Some(DirectRx::new(q, size as u16));
            self.guest
                .data_bar
                .flag(abi::rxq_flags_offset(0) + abi::RXQ_DIRECT_DONE_INDEX)
                .store(0, Ordering::Release);
            Ok(())
        })
    }

    /// Starts the data path once every configured queue is set up, and wakes the TX poller.
    fn start(&mut self) -> Result<(), Refusal> {
        self.configured()?;
        self.guest.with_both(|tx, rx| {
            if let Some(q) = rx.queues.iter().position(|q| q.is_none()) {
                return fail(CtrlStatus::BadState, format!("RX queue {q} is not set up"));
            }
            if let Some(q) = tx.queues.iter().position(|q| q.is_none()) {
                return fail(CtrlStatus::BadState, format!("TX queue {q} is not set up"));
            }
            tx.running = true;
            rx.running = true;
            Ok(())
        })?;
        let _ = self.guest.tx_wake.write(1);
        Ok(())
    }

    /// The request's flow rule, decoded and checked against this VM (FlowValidate).
    fn flow_check(&self, req: &CtrlRequest) -> Result<FlowRule, Refusal> {
        let (nrx, _) = self.configured()?;
        let rule = decode_rule(req)?;
        self.check_rule(&rule, nrx)?;
        Ok(rule)
    }

    /// Adds the request's flow rule within `limits.flow_rules`; returns its handle.
    fn flow_create(&mut self, req: &CtrlRequest) -> Result<u64, Refusal> {
        let rule = self.flow_check(req)?;
        let mut rx = self.guest.rx.lock();
        let max = self.guest.limits.flow_rules;
        if rx.rules.len() >= max {
            return fail(
                CtrlStatus::NoMem,
                format!("at most {max} flow rules per VM (limits.flow_rules)"),
            );
        }
        let h = FlowHandle(self.next_flow);
        self.next_flow = self.next_flow.wrapping_add(1).max(1);
        rx.rules.push((h, rule));
        Ok(h.0 as u64)
    }

    /// Removes the flow rule with handle `h`.
    fn flow_destroy(&mut self, h: u64) -> Result<(), Refusal> {
        self.configured()?;
        let mut rx = self.guest.rx.lock();
        let before = rx.rules.len();
        rx.rules.retain(|(x, _)| x.0 as u64 != h);
        if rx.rules.len() == before {
            return fail(
                CtrlStatus::InvalidArg,
                format!("no flow rule with handle {h}"),
            );
        }
        Ok(())
    }

    /// A guest's rule may only look at its own traffic and only target its own queues.
    fn check_rule(&self, rule: &FlowRule, nrx: u16) -> Result<(), Refusal> {
        rule.check_shape()
            .map_err(|e| (CtrlStatus::InvalidArg, e.to_string()))?;
        if rule.attr.group != 0 {
            return fail(CtrlStatus::Unsupported, "only flow group 0");
        }
        if let Some(q) = rule.queues().find(|&q| q >= nrx) {
            return fail(
                CtrlStatus::Refused,
                format!("queue {q} is not one of this VM's {nrx} RX queues"),
            );
        }
        if let Some((spec, mask)) = rule.eth() {
            let m = mask.dst.0;
            if m != [0; 6] {
                let dst = MacAddr(std::array::from_fn(|i| spec.dst.0[i] & m[i]));
                let own = MacAddr(std::array::from_fn(|i| self.guest.mac.0[i] & m[i]));
                let bcast = spec.dst.is_broadcast() && m == [0xff; 6];
                if dst != own && !bcast {
                    return fail(
                        CtrlStatus::Refused,
                        format!(
                            "rule matches destination {} but this VM owns {}",
                            spec.dst, self.guest.mac
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// The flow rule in a request's payload (flow wire codec, decoded strictly).
fn decode_rule(req: &CtrlRequest) -> Result<FlowRule, Refusal> {
    let n = req.payload_len as usize;
    if n > abi::CTRL_PAYLOAD_MAX {
        return fail(
            CtrlStatus::InvalidArg,
            format!("payload length {n} exceeds {}", abi::CTRL_PAYLOAD_MAX),
        );
    }
    abi::flow_codec::decode(&req.payload[..n]).map_err(|e| (CtrlStatus::InvalidArg, e.to_string()))
}

/// Checks a ring's size and alignment from the guest; returns its length in bytes.
fn check_ring(iova: u64, size: u64) -> Result<u64, Refusal> {
    if !valid_ring_size(size) {
        return fail(
            CtrlStatus::InvalidArg,
            format!(
                "ring size {size} is not a power of two in {}..={}",
                abi::MIN_RING_SIZE,
                abi::MAX_RING_SIZE
            ),
        );
    }
    if !iova.is_multiple_of(DESC_SIZE as u64) {
        return fail(
            CtrlStatus::InvalidArg,
            format!("ring IOVA {iova:#x} is not {DESC_SIZE}-byte aligned"),
        );
    }
    Ok(size * DESC_SIZE as u64)
}

/// Where a ring of `len` bytes at `iova` lies in this process: wholly in one writable region.
fn ring_in_map(mem: &GuestMem, iova: u64, len: u64) -> Result<*mut u8, Refusal> {
    match mem.translate(iova, len, true) {
        Some(p) => Ok(p),
        None => fail(
            CtrlStatus::InvalidArg,
            format!("ring {iova:#x}+{len:#x} is not inside the guest's DMA map"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuestLimits;
    use crate::testing::{self, MAC};
    use vdpdk_core::flow::FlowItem;

    const RAM: u64 = 0x10_0000;

    fn req(op: CtrlOp, seq: u32, args: [u64; 4]) -> CtrlRequest {
        let mut r = CtrlRequest::new_zeroed();
        r.op = op as u32;
        r.seq = seq;
        r.args = args;
        r
    }

    /// A control plane and its counter of refusals, driven one op at a time.
    struct Bench {
        g: Arc<Guest>,
        cp: ControlPlane,
        seq: u32,
        _ram: vdpdk_core::DmaMemory,
    }

    impl Bench {
        fn new(limits: GuestLimits) -> Bench {
            let g = testing::guest_with(4, 2, limits);
            let ram = testing::map_ram(&g, RAM, 0x10000, false);
            Bench {
                cp: ControlPlane::new(g.clone()),
                g,
                seq: 0,
                _ram: ram,
            }
        }
        fn op(&mut self, op: CtrlOp, args: [u64; 4]) -> CtrlResponse {
            self.seq += 1;
            self.cp.execute(self.seq, &req(op, self.seq, args))
        }
        fn flow(&mut self, op: CtrlOp, rule: &FlowRule) -> CtrlResponse {
            self.seq += 1;
            let mut r = req(op, self.seq, [0; 4]);
            let bytes = abi::flow_codec::encode(rule);
            r.payload[..bytes.len()].copy_from_slice(&bytes);
            r.payload_len = bytes.len() as u32;
            self.cp.execute(self.seq, &r)
        }
        fn errors(&self) -> u64 {
            self.g.stats.get(StatsIndex::CtrlErrors)
        }
        /// Negotiated and configured with 2 RX and 1 TX queues.
        fn configured(limits: GuestLimits) -> Bench {
            let mut b = Bench::new(limits);
            ok(&b.op(CtrlOp::Negotiate, [(abi::ABI_MAJOR as u64) << 16, 0, 0, 0]));
            ok(&b.op(CtrlOp::Configure, [2, 1, 0, 0]));
            b
        }
    }

    fn ok(r: &CtrlResponse) {
        assert_eq!(r.status, CtrlStatus::Ok as u32, "{}", r.message());
    }

    fn refused(r: &CtrlResponse, s: CtrlStatus, says: &str) {
        assert_eq!(r.status, s as u32, "{}", r.message());
        assert!(
            r.message().contains(says),
            "{:?} lacks {says:?}",
            r.message()
        );
    }

    #[test]
    fn a_wrong_seq_or_unknown_op_is_refused_and_counted() {
        let mut b = Bench::new(GuestLimits::default());
        let r = b.cp.execute(7, &req(CtrlOp::Negotiate, 6, [0; 4]));
        refused(&r, CtrlStatus::BadSeq, "doorbell seq 7");
        assert_eq!(r.seq, 7);
        let mut unknown = req(CtrlOp::Negotiate, 8, [0; 4]);
        unknown.op = 0xdead;
        refused(&b.cp.execute(8, &unknown), CtrlStatus::UnknownOp, "unknown");
        assert_eq!(b.errors(), 2);
        assert_eq!(b.cp.status(), CtrlStatus::UnknownOp as u32);
    }

    #[test]
    fn a_fresh_device_refuses_every_op_but_negotiate_and_stats() {
        let mut b = Bench::new(GuestLimits::default());
        let ops = [
            (CtrlOp::Configure, "negotiate first"),
            (CtrlOp::RxqSetup, "configure first"),
            (CtrlOp::TxqSetup, "configure first"),
            (CtrlOp::Start, "configure first"),
            (CtrlOp::Stop, "negotiate first"),
            (CtrlOp::Reset, "negotiate first"),
            (CtrlOp::FlowValidate, "configure first"),
            (CtrlOp::FlowCreate, "configure first"),
            (CtrlOp::FlowDestroy, "configure first"),
            (CtrlOp::FlowFlush, "configure first"),
        ];
        for (op, says) in ops {
            refused(&b.op(op, [0, RAM, 32, 0]), CtrlStatus::BadState, says);
        }
        assert_eq!(b.errors(), ops.len() as u64);
        let r = b.op(CtrlOp::GetStats, [0; 4]);
        ok(&r);
        assert_eq!(r.result[StatsIndex::CtrlErrors as usize], ops.len() as u64);
    }

    #[test]
    fn negotiate_checks_the_abi_and_attaches() {
        let mut b = Bench::new(GuestLimits::default());
        let bad_major = (abi::ABI_MAJOR as u64 + 1) << 16;
        refused(
            &b.op(CtrlOp::Negotiate, [bad_major, 0, 0, 0]),
            CtrlStatus::Version,
            "ABI",
        );
        refused(
            &b.op(
                CtrlOp::Negotiate,
                [(abi::ABI_MAJOR as u64) << 16, 1 << 63, 0, 0],
            ),
            CtrlStatus::Version,
            "unknown feature",
        );
        assert!(!b.g.attached.load(Ordering::Relaxed));
        let want = offered_features(&b.g).bits();
        let r = b.op(
            CtrlOp::Negotiate,
            [(abi::ABI_MAJOR as u64) << 16, want, 0, 0],
        );
        ok(&r);
        assert_eq!(r.result[0], want);
        assert!(b.g.attached.load(Ordering::Relaxed));
        assert_eq!(b.g.attaches.load(Ordering::Relaxed), 1);
        assert_eq!(b.errors(), 2);
    }

    #[test]
    fn configure_needs_negotiate_and_queue_counts_within_the_vm() {
        let mut b = Bench::new(GuestLimits::default());
        refused(
            &b.op(CtrlOp::Configure, [1, 1, 0, 0]),
            CtrlStatus::BadState,
            "negotiate",
        );
        ok(&b.op(CtrlOp::Negotiate, [(abi::ABI_MAJOR as u64) << 16, 0, 0, 0]));
        refused(
            &b.op(CtrlOp::Configure, [0, 1, 0, 0]),
            CtrlStatus::InvalidArg,
            "0 RX",
        );
        refused(
            &b.op(CtrlOp::Configure, [5, 1, 0, 0]),
            CtrlStatus::InvalidArg,
            "1..=4",
        );
        refused(
            &b.op(CtrlOp::Configure, [1, 3, 0, 0]),
            CtrlStatus::InvalidArg,
            "3 TX",
        );
        ok(&b.op(CtrlOp::Configure, [4, 2, 0, 0]));
        assert_eq!(b.g.rx.lock().queues.len(), 4);
        assert_eq!(b.g.tx.lock().queues.len(), 2);
    }

    #[test]
    fn queue_setup_refuses_bad_index_size_alignment_and_rings_outside_dma() {
        let mut b = Bench::configured(GuestLimits::default());
        let setup = CtrlOp::RxqSetup;
        refused(
            &b.op(setup, [2, RAM, 64, 0]),
            CtrlStatus::InvalidArg,
            "queue 2",
        );
        refused(
            &b.op(CtrlOp::TxqSetup, [1, RAM, 64, 0]),
            CtrlStatus::InvalidArg,
            "queue 1",
        );
        refused(
            &b.op(setup, [u64::MAX, RAM, 64, 0]),
            CtrlStatus::InvalidArg,
            "not configured",
        );
        refused(
            &b.op(setup, [0, RAM, 48, 0]),
            CtrlStatus::InvalidArg,
            "power of two",
        );
        refused(
            &b.op(setup, [0, RAM, 8192, 0]),
            CtrlStatus::InvalidArg,
            "power of two",
        );
        refused(
            &b.op(setup, [0, RAM + 8, 64, 0]),
            CtrlStatus::InvalidArg,
            "aligned",
        );
        // Before the map, straddling its end, and far outside it (wrapping).
        for iova in [RAM - 0x800, RAM + 0x10000 - 0x200, u64::MAX - 31] {
            let r = b.op(setup, [0, iova, 64, 0]);
            refused(&r, CtrlStatus::InvalidArg, "not inside the guest's DMA map");
        }
        assert!(b.g.rx.lock().queues[0].is_none());
        assert_eq!(b.errors(), 9);
        ok(&b.op(setup, [1, RAM + 0x800, 64, 0]));
        let rx = b.g.rx.lock();
        let q = rx.queues[1].as_ref().expect("set up");
        assert_eq!(
            (q.ring_iova, q.ring_len, q.ring.size()),
            (RAM + 0x800, 64 * DESC_SIZE as u64, 64)
        );
    }

    #[test]
    fn queue_setup_refuses_read_only_memory() {
        let mut b = Bench::configured(GuestLimits::default());
        let _ro = testing::map_ram(&b.g, 0x80_0000, 0x1000, true);
        let r = b.op(CtrlOp::TxqSetup, [0, 0x80_0000, 32, 0]);
        refused(&r, CtrlStatus::InvalidArg, "not inside");
    }

    #[test]
    fn start_needs_every_queue_and_stop_reset_follow() {
        let mut b = Bench::new(GuestLimits::default());
        refused(
            &b.op(CtrlOp::Start, [0; 4]),
            CtrlStatus::BadState,
            "configure first",
        );
        refused(
            &b.op(CtrlOp::Stop, [0; 4]),
            CtrlStatus::BadState,
            "negotiate first",
        );
        let mut b = Bench::configured(GuestLimits::default());
        ok(&b.op(CtrlOp::RxqSetup, [0, RAM, 32, 0]));
        ok(&b.op(CtrlOp::TxqSetup, [0, RAM + 0x400, 32, 0]));
        refused(
            &b.op(CtrlOp::Start, [0; 4]),
            CtrlStatus::BadState,
            "RX queue 1",
        );
        ok(&b.op(CtrlOp::RxqSetup, [1, RAM + 0x800, 32, 0]));
        ok(&b.op(CtrlOp::Start, [0; 4]));
        assert!(b.g.running() && b.g.tx.lock().running);
        assert_eq!(b.g.tx_wake.read().unwrap(), 1, "the TX poller is woken");
        let r = b.op(CtrlOp::Configure, [1, 1, 0, 0]);
        refused(&r, CtrlStatus::BadState, "stop the device");
        let r = b.op(CtrlOp::RxqSetup, [0, RAM, 32, 0]);
        refused(&r, CtrlStatus::BadState, "stop the device");
        ok(&b.op(CtrlOp::Stop, [0; 4]));
        assert!(!b.g.running());
        ok(&b.op(CtrlOp::Reset, [0; 4]));
        assert!(b.g.rx.lock().queues.is_empty());
        refused(
            &b.op(CtrlOp::Start, [0; 4]),
            CtrlStatus::BadState,
            "configure first",
        );
    }

    fn to_queue(mac: MacAddr, q: u16) -> FlowRule {
        FlowRule::to_queue(vec![FlowItem::eth_dst(mac)], q)
    }

    #[test]
    fn flow_rules_stay_within_the_vm_and_its_limit() {
        let limits = GuestLimits {
            flow_rules: 2,
            ..Default::default()
        };
        let mut b = Bench::new(limits);
        ok(&b.op(CtrlOp::Negotiate, [(abi::ABI_MAJOR as u64) << 16, 0, 0, 0]));
        let own = to_queue(MAC, 1);
        refused(
            &b.flow(CtrlOp::FlowCreate, &own),
            CtrlStatus::BadState,
            "configure",
        );
        ok(&b.op(CtrlOp::Configure, [2, 1, 0, 0]));
        let other = to_queue(MacAddr([2, 0, 0, 0, 0, 9]), 0);
        refused(
            &b.flow(CtrlOp::FlowCreate, &other),
            CtrlStatus::Refused,
            "this VM owns",
        );
        let r = b.flow(CtrlOp::FlowValidate, &to_queue(MAC, 2));
        refused(&r, CtrlStatus::Refused, "queue 2");
        let mut garbage = req(CtrlOp::FlowCreate, b.seq + 1, [0; 4]);
        garbage.payload_len = abi::CTRL_PAYLOAD_MAX as u32 + 1;
        b.seq += 1;
        refused(
            &b.cp.execute(b.seq, &garbage),
            CtrlStatus::InvalidArg,
            "payload length",
        );
        ok(&b.flow(CtrlOp::FlowValidate, &own));
        assert!(b.g.rx.lock().rules.is_empty(), "validate adds nothing");
        let h1 = b.flow(CtrlOp::FlowCreate, &own).result[0];
        let bcast = to_queue(MacAddr::BROADCAST, 0);
        let h2 = b.flow(CtrlOp::FlowCreate, &bcast).result[0];
        assert!(h1 != 0 && h2 != 0 && h1 != h2);
        refused(
            &b.flow(CtrlOp::FlowCreate, &own),
            CtrlStatus::NoMem,
            "limits.flow_rules",
        );
        refused(
            &b.op(CtrlOp::FlowDestroy, [h2 + 7, 0, 0, 0]),
            CtrlStatus::InvalidArg,
            "handle",
        );
        ok(&b.op(CtrlOp::FlowDestroy, [h1, 0, 0, 0]));
        assert_eq!(b.g.rx.lock().rules.len(), 1);
        ok(&b.op(CtrlOp::FlowFlush, [0; 4]));
        assert!(b.g.rx.lock().rules.is_empty());
        assert_eq!(b.errors(), 6);
    }

    #[test]
    fn the_doorbell_reads_the_request_from_bar2_and_answers_there() {
        let mut b = Bench::new(GuestLimits::default());
        let r = req(
            CtrlOp::Negotiate,
            41,
            [(abi::ABI_MAJOR as u64) << 16, 0, 0, 0],
        );
        b.g.data_bar.write(abi::CTRL_REQ_OFFSET, r.as_bytes());
        b.cp.ring(41);
        let mut resp = CtrlResponse::new_zeroed();
        b.g.data_bar
            .read(abi::CTRL_RESP_OFFSET, resp.as_mut_bytes());
        assert_eq!((resp.seq, resp.status), (41, CtrlStatus::Ok as u32));
        ok(&b.op(CtrlOp::GetStats, [0; 4]));
    }
}
