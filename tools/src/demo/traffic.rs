//! The demo's end of the wire: a paced generator, the checker of what comes back, and the
//! drain that lets the path settle before the account is taken.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use host_mux::HostMux;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::{Mbuf, Mempool, RxQueue, TxQueue};
use vdpdk_pair::PairPort;

use super::guest::{self, Guest, QUIESCE};
use super::ledger::{EchoCheck, Ledger, Snap};
use super::{echoes, is_broadcast, unicast_guest, Args, BURST, WIRE_RING};
use crate::{out, outln};

/// Our end of the wire: what the generator sends on and the checker receives from.
pub(super) struct Wire {
    rx: Box<dyn RxQueue>,
    tx: Box<dyn TxQueue>,
    /// Reused receive buffer.
    rbuf: Vec<Mbuf>,
    check: EchoCheck,
    /// Frames the wire took: exactly seq 0..sent.
    pub sent: u64,
    /// Dropped after its queues (declared last).
    port: PairPort,
}

/// How the traffic phase went.
pub(super) struct Traffic {
    /// Frames per second asked for, all guests together (0 = as fast as possible).
    pub asked: u64,
    /// Seconds the generator ran.
    pub secs: f64,
    /// Frames due while the generator was not running in time.
    pub late: f64,
    /// Frames due while host-mux's end of the wire was full.
    pub wire_full: f64,
    /// A guest ended during the traffic.
    pub failed_guest: bool,
}

impl Wire {
    /// Starts one RX and one TX queue on `port`, RX from `pool`.
    pub fn start(mut port: PairPort, pool: &Mempool, check: EchoCheck) -> vdpdk_core::Result<Wire> {
        let (rx, tx) = start_single_queue(&mut port, pool, WIRE_RING, false)?;
        Ok(Wire {
            rx,
            tx,
            rbuf: Vec::with_capacity(BURST),
            check,
            sent: 0,
            port,
        })
    }

    /// Receives what came back on the wire (at most `max_bursts` bursts) and checks it; returns
    /// how many frames arrived.
    fn receive(&mut self, max_bursts: usize) -> u64 {
        let mut got = 0;
        for _ in 0..max_bursts {
            if self.rx.rx_burst(&mut self.rbuf, BURST) == 0 {
                break;
            }
            for m in self.rbuf.iter() {
                self.check.take(m.data(), self.sent);
            }
            got += self.rbuf.len() as u64;
            Mempool::free_bulk(&mut self.rbuf);
        }
        got
    }

    /// Receives until `done` and nothing has moved for 50 ms, or until nothing has moved for
    /// `idle`, or `limit` has passed (the account then says what is missing).
    fn settle(
        &mut self,
        mux: &HostMux,
        idle: Duration,
        limit: Duration,
        done: impl Fn(&Snap, &EchoCheck) -> bool,
    ) {
        let until = Instant::now() + limit;
        let mut last = None;
        let mut since = Instant::now();
        while Instant::now() < until {
            self.receive(usize::MAX);
            let snap = Snap::take(mux, &self.port);
            let sig = snap.signature(&self.check);
            if last != Some(sig) {
                last = Some(sig);
                since = Instant::now();
            } else if since.elapsed() >= idle
                || (since.elapsed() >= Duration::from_millis(50) && done(&snap, &self.check))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Offers frames for `args.duration` seconds at `args.rate` per guest, checking what comes
/// back and printing the per-guest table every second.
pub(super) fn generate(
    args: &Args,
    mux: &HostMux,
    pool: &Mempool,
    templates: &[Vec<u8>],
    wire: &mut Wire,
    guests: &[Guest],
) -> vdpdk_core::Result<Traffic> {
    let n = args.guests as u64;
    // A token bucket against the clock paces the generator. It holds at most 10 ms of frames,
    // so after a stall the generator sends a short catch-up burst at most; what it could not
    // send in time is counted (and the summary says the rate was not reached).
    let asked = args.rate * n;
    let cap = (asked as f64 * 0.010).max(64.0);
    let mut built = 0u64;
    let (mut late, mut wire_full) = (0f64, 0f64);
    let mut tokens = 0f64;
    let mut batch: Vec<Mbuf> = Vec::with_capacity(BURST);
    let t0 = Instant::now();
    let mut last = t0;
    let mut next_print = Duration::from_secs(1);
    let traffic = Duration::from_secs(args.duration);
    let mut failed_guest = false;
    while t0.elapsed() < traffic {
        if asked > 0 {
            let now = Instant::now();
            tokens += now.duration_since(last).as_secs_f64() * asked as f64;
            last = now;
            if tokens > cap {
                // Frames that were due but could not go: the wire was full, or this thread
                // did not run in time.
                if batch.is_empty() {
                    late += tokens - cap;
                } else {
                    wire_full += tokens - cap;
                }
                tokens = cap;
            }
        }
        while batch.len() < BURST && (asked == 0 || tokens >= 1.0) {
            let Some(mut m) = pool.alloc() else { break };
            let t = if is_broadcast(built) {
                n as usize
            } else {
                unicast_guest(built, n) as usize
            };
            m.copy_from(&templates[t])?;
            m.data_mut()[42..50].copy_from_slice(&built.to_be_bytes());
            batch.push(m);
            built += 1;
            tokens -= 1.0;
        }
        // Frames the wire does not take stay in the batch, in order, and go first next time:
        // so the frames sent are exactly seq 0..sent.
        wire.sent += wire.tx.tx_burst(&mut batch) as u64;
        let got = wire.receive(8);
        if t0.elapsed() >= next_print {
            next_print += Duration::from_secs(1);
            let secs = t0.elapsed().as_secs_f64();
            outln!(
                "\n[{:>2}s] wire: offered {} ({:.0}/s), came back {}",
                secs as u64,
                wire.sent,
                wire.sent as f64 / secs,
                wire.check.valid
            );
            out!("{}", host_mux::stats_table(&mux.guests()));
            if guests.iter().any(Guest::ended) {
                failed_guest = true;
                break;
            }
        }
        if got == 0 && !batch.is_empty() {
            // host-mux's end of the wire is full: leave the CPU to its poller for a moment
            // rather than spin against it.
            std::thread::sleep(Duration::from_micros(20));
        } else if got == 0 && asked > 0 && tokens < 1.0 {
            // Nothing due: sleep about one burst's worth (at most 1 ms).
            std::thread::sleep(Duration::from_secs_f64(
                (BURST as f64 / asked as f64).min(0.001),
            ));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    // Frames still in the batch were never sent.
    debug_assert_eq!(built - batch.len() as u64, wire.sent);
    Mempool::free_bulk(&mut batch);
    Ok(Traffic {
        asked,
        secs,
        late,
        wire_full,
        failed_guest,
    })
}

/// Lets the path settle, stops the guests (first echoing, then attached) and takes the
/// account of every frame sent.
pub(super) fn drain(
    mux: &HostMux,
    wire: &mut Wire,
    phase: &AtomicU8,
    guests: &mut [Guest],
    n: u64,
) -> vdpdk_core::Result<Ledger> {
    let sent = wire.sent;
    // The guests keep echoing until every frame came back or was counted as dropped, or
    // nothing has moved for a second.
    let expected = echoes(sent, n);
    wire.settle(
        mux,
        Duration::from_secs(1),
        Duration::from_secs(10),
        |s, c| c.valid + c.unexpected + s.dropped() >= expected,
    );
    // Stop the guests in two steps: first they stop echoing (what they hold, or still
    // receive, stays with them and is counted), the path settles, then they detach.
    phase.store(QUIESCE, Ordering::Release);
    let until = Instant::now() + Duration::from_secs(10);
    while !guests
        .iter()
        .all(|g| g.ended() || g.ledger.quiesced.load(Ordering::Acquire))
        && Instant::now() < until
    {
        wire.receive(usize::MAX);
        std::thread::sleep(Duration::from_millis(1));
    }
    // Now the account must add up: every frame came back, was dropped with a counter, or is
    // with a guest that stopped echoing.
    wire.settle(
        mux,
        Duration::from_secs(2),
        Duration::from_secs(10),
        |s, c| Ledger::new(s, guests, c, sent, n).ok(),
    );
    if let Some(e) = guest::stop(phase, guests) {
        return Err(e);
    }

    // The account. Counters are read while host-mux's pollers run: a poller caught between
    // taking frames and counting them would show as a mismatch, so an account that does not
    // add up is taken again a few times before it is believed.
    let mut ledger = None;
    for attempt in 0..10 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        wire.receive(usize::MAX);
        let l = Ledger::new(&Snap::take(mux, &wire.port), guests, &wire.check, sent, n);
        let ok = l.ok();
        ledger = Some(l);
        if ok {
            break;
        }
    }
    Ok(ledger.expect("taken at least once"))
}
