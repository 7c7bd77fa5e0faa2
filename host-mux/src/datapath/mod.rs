//! Pollers: move frames between the backend NIC and the guests' rings.
//!
//! A poller has a role. An **RX** poller owns one backend RX queue: one burst per round, steered
//! by destination MAC (broadcast and multicast to every running guest) and then by the guest's
//! own flow rules to a guest RX queue. A **TX** poller serves the TX rings of its cluster's
//! guests round-robin, at most one burst per guest queue per round (so a busy guest cannot
//! starve the rest), into a backend TX queue. A **combined** poller does both.
//!
//! A TX poller also switches: a guest's frame for another VM goes into that VM's RX ring
//! (`switch`), a broadcast to every other VM and the wire.
//!
//! Event mode: after `idle_polls` empty rounds a poller arms its events (TX: a "kick wanted"
//! flag in each of its guests' TX queues; RX: the backend queue's interrupt), polls once more so
//! nothing that raced the arming is missed, and sleeps in epoll until a kick, an interrupt, a
//! control event or `sleep_timeout`.

mod groups;
mod mac_table;
mod peek;
mod rx;
mod rx_direct;
mod switch;
mod tx;

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use vdpdk_core::abi;
use vdpdk_core::{LentBuf, LentRx, Mbuf, Mempool, RxQueue, TxOffloads, TxQueue};
use vmm_sys_util::eventfd::EventFd;

use crate::guest::Guest;
pub use tx::{tx_request, TxRequest};

pub(crate) const BURST: usize = 32;
/// Frames taken from one backend RX queue before they are steered (whole bursts, only while
/// the queue keeps returning full ones): a burst for each guest the last batch was spread
/// over (frames / the largest guest's share), from 4 to 64 bursts. More frames per guest per
/// batch amortise its lock, ring lines and interrupt check (64 guests, 64 B: 2 frames each at
/// 4 bursts, 7.9 Mpps; 16 at 32 bursts, 19.2; 32 at 64 bursts, 21.4); a guest getting most
/// of a big batch only overruns its ring (1 guest at 16 bursts: 25 -> 13 Mpps), so one busy
/// guest among idle ones keeps batches small.
const RX_GATHER_MIN: usize = 4 * BURST;
const RX_GATHER: usize = 64 * BURST;
/// Largest frame a guest may transmit (also bounded by the host buffer size).
pub const MAX_FRAME: usize = 9018;
/// Checksum offloads host-mux gives guests: the backend's hardware when it has them, else
/// software here.
pub(crate) const CSUM_TX_OFFLOADS: TxOffloads = TxOffloads::IPV4_CKSUM
    .union(TxOffloads::UDP_CKSUM)
    .union(TxOffloads::TCP_CKSUM);
/// Every TX offload guests see: checksums, and TCP segmentation done here in software (a
/// guest hands over a super-frame of up to 64 KiB in one buffer).
pub(crate) const GUEST_TX_OFFLOADS: TxOffloads = CSUM_TX_OFFLOADS.union(TxOffloads::TCP_TSO);
/// Buffers for super-frames a backend segments in hardware: 16 KiB each (under the E810's
/// 16383 B per descriptor), so a 64 KiB super-frame is a chain of 5, within its 8.
pub(crate) const TSO_BUF_SIZE: u16 = 16 * 1024;
pub(crate) const TSO_POOL_BUFS: u32 = 512;
/// Smallest TSO segment size a guest may ask for: bounds the host buffers one super-frame
/// takes (at most 256).
pub const MIN_TSO_MSS: usize = 256;
const MIN_FRAME: usize = 14;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Rx,
    Tx,
    Combined,
}

impl Role {
    fn rx(self) -> bool {
        self != Role::Tx
    }
    fn tx(self) -> bool {
        self != Role::Rx
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Rx => "rx",
            Role::Tx => "tx",
            Role::Combined => "rx+tx",
        }
    }
}

/// Counters of one poller, readable while it runs.
#[derive(Default, Debug)]
pub(crate) struct PollerStats {
    pub(crate) wire_rx: AtomicU64,
    pub(crate) wire_tx: AtomicU64,
    /// Segments cut from guests' TCP super-frames (TSO in software).
    pub(crate) tso_segments: AtomicU64,
    /// Guest super-frames handed to the backend for segmentation (TSO in hardware).
    pub(crate) tso_offloaded: AtomicU64,
    /// Unicast frames from the wire whose destination is no configured VM.
    pub(crate) rx_unknown_dst: AtomicU64,
    /// Frames for a VM whose device is not running.
    pub(crate) rx_guest_stopped: AtomicU64,
    /// Frames from one guest delivered to another by host-mux (a broadcast counts once per
    /// guest that got it).
    pub(crate) switched: AtomicU64,
    /// Guest frames whose payload went to the backend in place (zero-copy TX).
    pub(crate) tx_lent: AtomicU64,
    /// Frames the backend received straight into guest buffers (zero-copy RX).
    pub(crate) rx_in_place: AtomicU64,
    /// Rounds in which the backend TX queue was full (guest frames wait in their rings).
    pub(crate) tx_backpressure: AtomicU64,
    pub(crate) rounds: AtomicU64,
    pub(crate) empty_rounds: AtomicU64,
    pub(crate) sleeps: AtomicU64,
    pub(crate) asleep_ns: AtomicU64,
}

fn bump(c: &AtomicU64, v: u64) {
    c.fetch_add(v, Ordering::Relaxed);
}

/// How a poller sleeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SleepPolicy {
    /// Empty rounds before arming events and sleeping.
    pub(crate) idle_polls: u32,
    /// Longest sleep (ms); -1 sleeps until an event (any lost wake-up would then hang).
    pub(crate) timeout_ms: i32,
}

/// A backend RX queue a poller serves: shared (steer by MAC) or dedicated to one guest (the
/// NIC already steered by MAC, e.g. Flow Director).
pub(crate) struct RxSource {
    pub(crate) queue: Box<dyn RxQueue>,
    /// Index into the poller's `all_guests` when the queue belongs to one guest.
    pub(crate) owner: Option<u16>,
    /// Frames to gather from it before steering (see [`RX_GATHER`]).
    gather: usize,
    /// The guest (index into `all_guests`) whose direct-ring buffers the queue receives into
    /// (zero-copy RX), if any.
    lend: Option<u16>,
    /// Buffers were posted to the queue (`RxQueue::post_lent`) and not all taken back.
    lent_mode: bool,
    /// The queue handed back a buffer its guest's ring did not expect: take everything back.
    resync: bool,
    /// Buffers on their way to the queue (reused: never allocates per round).
    to_lend: Vec<LentBuf>,
    /// Frames the queue received into lent buffers (reused).
    done: Vec<LentRx>,
}

impl RxSource {
    pub(crate) fn new(queue: Box<dyn RxQueue>, owner: Option<u16>) -> RxSource {
        RxSource {
            queue,
            owner,
            gather: RX_GATHER_MIN,
            lend: None,
            lent_mode: false,
            resync: false,
            to_lend: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Lends guest `guest`'s direct-ring buffers to the queue (a dedicated queue, whose
    /// backend receives into lent buffers).
    pub(crate) fn lending_to(mut self, guest: Option<u16>) -> RxSource {
        self.lend = guest;
        if guest.is_some() {
            self.to_lend.reserve(rx_direct::LEND_PER_ROUND);
            self.done.reserve(RX_GATHER);
        }
        self
    }
}

pub(crate) struct Poller {
    pub(crate) role: Role,
    /// Every guest: the RX side steers to any of them (broadcast reaches all).
    all_guests: Vec<Arc<Guest>>,
    /// The guests whose TX rings this poller serves.
    tx_guests: Vec<Arc<Guest>>,
    /// A lock-free view of each of `tx_guests`' TX rings.
    tx_peeks: Vec<peek::TxPeek>,
    rxqs: Vec<RxSource>,
    txq: Option<Arc<Mutex<Box<dyn TxQueue>>>>,
    pool: Mempool,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    policy: SleepPolicy,
    pub(crate) stats: Arc<PollerStats>,
    rx_buf: Vec<Mbuf>,
    tx_buf: Vec<Mbuf>,
    free_cache: Vec<Mbuf>,
    targets: Vec<u16>,
    /// The current batch's frames grouped by target guest.
    groups: groups::Groups,
    /// Guest MAC -> index in `all_guests`.
    macs: mac_table::MacTable,
    max_frame: usize,
    /// Checksum offloads the backend performs (the rest is done in software).
    hw_tx: TxOffloads,
    /// Large buffers for super-frames the backend segments itself (TSO in hardware); None
    /// when it cannot and host-mux cuts them.
    tso_pool: Option<Mempool>,
    tso_bufs: Vec<Mbuf>,
    /// Where the next TX round starts, rotating so no guest is always served last.
    tx_cursor: usize,
    /// (guest, RX queues touched) of the current delivery, whose interrupts are checked once
    /// it is done.
    due: Vec<(u16, u64)>,
}

impl Poller {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        role: Role,
        all_guests: Vec<Arc<Guest>>,
        tx_guests: Vec<Arc<Guest>>,
        rxqs: Vec<RxSource>,
        txq: Option<Arc<Mutex<Box<dyn TxQueue>>>>,
        pool: Mempool,
        wake: Arc<EventFd>,
        stop: Arc<AtomicBool>,
        policy: SleepPolicy,
    ) -> Poller {
        assert!(
            role.rx() || rxqs.is_empty(),
            "a TX-only poller owns no RX queue"
        );
        assert_eq!(
            role.tx(),
            txq.is_some(),
            "a TX role needs a backend TX queue"
        );
        let max_frame =
            MAX_FRAME.min(pool.buf_size() as usize - vdpdk_core::MBUF_HEADROOM as usize);
        let all_guests_len = all_guests.len();
        let macs = mac_table::MacTable::new(all_guests.iter().map(|g| g.mac));
        Poller {
            role,
            all_guests,
            tx_peeks: tx_guests.iter().map(|_| Default::default()).collect(),
            tx_guests,
            rxqs,
            txq,
            pool,
            wake,
            stop,
            policy,
            stats: Arc::new(PollerStats::default()),
            rx_buf: Vec::with_capacity(RX_GATHER),
            tx_buf: Vec::with_capacity(BURST * 4),
            free_cache: Vec::with_capacity(BURST * 2),
            targets: Vec::with_capacity(RX_GATHER),
            groups: groups::Groups::new(all_guests_len),
            macs,
            max_frame,
            hw_tx: TxOffloads::empty(),
            tso_pool: None,
            tso_bufs: Vec::new(),
            tx_cursor: 0,
            due: Vec::with_capacity(64),
        }
    }

    /// Lets the backend compute these checksums (it was configured with them).
    pub(crate) fn with_hw_tx_offloads(mut self, o: TxOffloads) -> Poller {
        self.hw_tx = o & CSUM_TX_OFFLOADS;
        self
    }

    /// Lets the backend segment guests' super-frames (it was configured with TCP_TSO and
    /// MULTI_SEGS): each goes out as a chain of `pool`'s buffers with a TSO request.
    pub(crate) fn with_hw_tso(mut self, pool: Mempool) -> Poller {
        self.tso_pool = Some(pool);
        self
    }

    /// Runs until `stop` is set.
    pub(crate) fn run(mut self) {
        for s in &self.rxqs {
            if let Some(gi) = s.lend {
                self.all_guests[gi as usize].lend_ctl.poller_started();
            }
        }
        let ep = Epoll::new().expect("epoll_create");
        ep.add(self.wake.as_raw_fd());
        let fds: Vec<Option<RawFd>> = self.rxqs.iter().map(|s| s.queue.intr_fd()).collect();
        for fd in fds.iter().flatten() {
            ep.add(*fd);
        }
        let all_interruptible = fds.iter().all(Option::is_some);
        let mut empty = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            // Frames waiting for a full backend are work too: never sleep on them.
            if self.round() > 0 || !self.tx_buf.is_empty() {
                empty = 0;
                continue;
            }
            empty += 1;
            if empty < self.policy.idle_polls {
                std::hint::spin_loop();
                continue;
            }
            // Event mode: ask for kicks and interrupts, then look once more before sleeping.
            let rx_armed = self.arm(true);
            fence(Ordering::SeqCst);
            if self.round() == 0 && !self.stop.load(Ordering::Relaxed) {
                // An RX role whose backend cannot interrupt must still look at the wire often,
                // and so must a TX role with guest buffers lent to the backend: nothing wakes
                // it when the backend is done with them, and their guests wait for them.
                let lent = self.tx_peeks.iter().any(|p| p.lent());
                let timeout = if lent || (self.role.rx() && !(rx_armed && all_interruptible)) {
                    1
                } else {
                    self.policy.timeout_ms
                };
                let t0 = Instant::now();
                ep.wait(timeout);
                bump(&self.stats.sleeps, 1);
                bump(&self.stats.asleep_ns, t0.elapsed().as_nanos() as u64);
                let _ = self.wake.read();
            }
            self.arm(false);
            // Look once after waking; if that finds nothing, go straight back to sleep instead of
            // spinning `idle_polls` rounds again (an idle mux must cost almost nothing).
            empty = self.policy.idle_polls.saturating_sub(1);
        }
        self.flush_pending();
        self.stop_lending();
    }

    /// Sets or clears the kick requests of the TX rings served here and the backend RX
    /// interrupt. Returns whether the backend interrupt is armed.
    fn arm(&mut self, on: bool) -> bool {
        if self.role.tx() {
            for g in &self.tx_guests {
                let n = g.tx.lock().queues.len() as u16;
                for q in 0..n {
                    g.data_bar
                        .flag(abi::txq_flags_offset(q) + abi::TXQ_FLAG_KICK_WANTED)
                        .store(on as u32, Ordering::SeqCst);
                }
            }
        }
        let mut all = !self.rxqs.is_empty();
        for s in &mut self.rxqs {
            if on {
                all &= s.queue.enable_intr().is_ok();
            } else {
                let _ = s.queue.disable_intr();
            }
        }
        on && all
    }

    /// One poll round; returns frames moved.
    pub(crate) fn round(&mut self) -> usize {
        bump(&self.stats.rounds, 1);
        let mut work = 0;
        for i in 0..self.rxqs.len() {
            // Under load, several bursts are steered together: with many guests, a burst of 32
            // frames gives each guest one or two, and each guest's lock, ring cache lines and
            // interrupt check are then paid per frame instead of per burst.
            let mut n = 0;
            while n < self.rxqs[i].gather {
                let got = self.rxqs[i].queue.rx_burst(&mut self.rx_buf, BURST);
                n += got;
                if got < BURST {
                    break;
                }
            }
            if n > 0 {
                bump(&self.stats.wire_rx, n as u64);
                let owner = self.rxqs[i].owner;
                if let Some(spread) = self.deliver(owner) {
                    self.rxqs[i].gather = (spread * BURST).clamp(RX_GATHER_MIN, RX_GATHER);
                }
                work += n;
            }
            // Frames in the backend's own buffers (delivered above) came in before any in
            // lent ones: they are published first.
            if self.rxqs[i].lend.is_some() {
                work += self.direct_round(i);
            }
        }
        if self.role.tx() {
            // Borrow the guest list out of self for the round (a move, no allocation and no
            // reference counting per guest), so pull_tx can use the rest of self.
            let guests = std::mem::take(&mut self.tx_guests);
            let n = guests.len();
            for i in 0..n {
                let k = (self.tx_cursor + i) % n;
                work += self.pull_tx(&guests[k], k);
            }
            self.tx_cursor = (self.tx_cursor + 1) % n.max(1);
            self.tx_guests = guests;
            self.flush_pending();
        }
        if work == 0 {
            bump(&self.stats.empty_rounds, 1);
        }
        work
    }

    /// Sends queued frames; true when none remain.
    fn flush_pending(&mut self) -> bool {
        if self.tx_buf.is_empty() {
            return true;
        }
        let Some(txq) = &self.txq else {
            return true;
        };
        let n = txq.lock().tx_burst(&mut self.tx_buf);
        bump(&self.stats.wire_tx, n as u64);
        self.tx_buf.is_empty()
    }
}

/// Adds one to an eventfd's counter without blocking (the fd is non-blocking; a full counter
/// or a broken fd is an error for the caller to count).
pub(crate) fn signal_eventfd(fd: &File) -> std::io::Result<()> {
    use std::io::Write;
    (&*fd).write(&1u64.to_ne_bytes()).map(|_| ())
}

/// Minimal epoll wrapper for a poller's sleep.
struct Epoll(std::os::fd::OwnedFd);

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall; the fd is checked and owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh fd we own.
        Ok(Epoll(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }
    fn add(&self, fd: RawFd) {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: valid epoll fd and event struct.
        unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
    }
    fn wait(&self, timeout_ms: i32) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: evs is a valid buffer of 8 events.
        unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), 8, timeout_ms) };
    }
}
