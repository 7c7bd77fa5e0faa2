//! The main job on an embedded default: host-mux on the in-memory pair backend, guests attached
//! over real vfio-user sockets, a paced traffic source on the wire, a live per-guest stats
//! table, and at the end an account of every frame: it came back, or a counter names where and
//! why it was dropped, or it was still queued when the guests stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use guest_pmd::VdpdkPort;
use host_mux::{BackendConfig, GuestSnapshot, HostMux, MuxConfig, PollerSnapshot, VmConfig};
use vdpdk_core::abi::{StatsIndex, STATS_NAMES};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{EthDev, MacAddr, Mbuf, Mempool, PortStats};
use vdpdk_tools::{die, out, outln, EXIT_FAILURE};

const TOOL: &str = "vdpdk-demo";

/// Run host-mux with guests on an in-memory wire, show live per-guest stats, and account for
/// every frame.
///
/// A generator on the wire offers UDP frames to each guest's MAC at a fixed rate (every 64th
/// is a broadcast, which every guest answers); each guest echoes them back through host-mux
/// and the wire checks each echo. At the end every frame is accounted for: it came back, or a
/// counter of host-mux or of a port names why it was dropped (listed, not a failure: a starved
/// guest's full RX ring drops frames, as a NIC would), or it was still queued when the guests
/// stopped. When the machine cannot offer the asked rate the summary says so.
///
/// Exit status: 0 every frame accounted for, 1 a frame unaccounted for (or a failure), 2 a bad
/// argument.
#[derive(Parser, Debug)]
#[command(name = "vdpdk-demo", version)]
struct Args {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Number of guests (each its own vfio-user socket and MAC).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    guests: u8,
    /// Frames per second offered to each guest (0 = as fast as possible).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    rate: u64,
    /// Frame size in bytes (60..=1514).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(60..=1514))]
    size: u16,
    /// Directory for the vfio-user sockets.
    #[arg(long, default_value = "/tmp/vdpdk-demo")]
    dir: PathBuf,
}

const WIRE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
/// Descriptors of each guest's RX and TX ring.
const GUEST_RING: u16 = 2048;
/// Descriptors of the wire's receive ring (frames coming back from host-mux).
const WIRE_RING: u16 = 4096;
/// Largest ring of the in-memory wire (bounds host-mux's backend RX ring).
const WIRE_DEPTH: usize = 8192;
const MUX_POOL: u32 = 16384;
const BURST: usize = 32;
/// Every 64th frame is a broadcast.
const BCAST_EVERY: u64 = 64;
/// Offered below this share of the asked rate, the summary says the machine fell short.
const RATE_SHORTFALL: f64 = 0.98;

fn guest_mac(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, i + 1])
}

/// Whether frame `seq` is a broadcast.
fn is_broadcast(seq: u64) -> bool {
    seq % BCAST_EVERY == BCAST_EVERY - 1
}

/// Broadcasts among the first `n` frames.
fn broadcasts(n: u64) -> u64 {
    n / BCAST_EVERY
}

/// The guest unicast frame `seq` goes to (round robin over the unicast frames).
fn unicast_guest(seq: u64, guests: u64) -> u64 {
    (seq - broadcasts(seq)) % guests
}

/// Echoes the first `n` frames ask for: one per unicast frame, one per guest per broadcast.
fn echoes(n: u64, guests: u64) -> u64 {
    n - broadcasts(n) + broadcasts(n) * guests
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(EXIT_FAILURE),
        Err(e) => die(TOOL, EXIT_FAILURE, e),
    }
}

/// The guests' phase, set by the main thread.
const RUN: u8 = 0;
/// Stop echoing: what a guest holds or still receives is counted as queued in it.
const QUIESCE: u8 = 1;
/// Detach and end.
const EXIT: u8 = 2;

/// What one guest did, for the account at the end (final once its thread ended).
#[derive(Default)]
struct GuestLedger {
    /// Frames taken from its RX ring while echoing.
    received: AtomicU64,
    /// Echoes its TX ring accepted.
    echoed: AtomicU64,
    /// Received but not yet accepted by the TX ring when it stopped echoing (freed).
    held: AtomicU64,
    /// Found in its RX ring after it stopped echoing (freed).
    discarded: AtomicU64,
    /// It stopped echoing and counted what it held.
    quiesced: AtomicBool,
}

struct Guest {
    ledger: Arc<GuestLedger>,
    thread: Option<JoinHandle<vdpdk_core::Result<()>>>,
}

impl Guest {
    fn ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// Returns `Ok(true)` when every frame is accounted for, `Ok(false)` when one is not (the
/// summary says which), `Err` on a failure to run.
fn run(args: &Args) -> vdpdk_core::Result<bool> {
    let n = args.guests as u64;
    let cfg = MuxConfig {
        idle_polls: 1024,
        pool_size: MUX_POOL,
        ..MuxConfig::new(
            BackendConfig::Pair,
            (0..args.guests)
                .map(|i| VmConfig {
                    name: format!("vm{i}"),
                    socket: args.dir.join(format!("vm{i}.sock")),
                    mac: guest_mac(i),
                    rx_queues: 1,
                    tx_queues: 1,
                    cluster: 0,
                })
                .collect(),
        )
    };
    let (mux_end, mut wire) =
        vdpdk_pair::pair(MacAddr([2, 0, 0, 0, 0, 0xfd]), WIRE_MAC, 1, WIRE_DEPTH);
    // The wire: generator + checker, started before host-mux can send to it.
    let pool = Mempool::new("wire", 8192, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let (mut rx, mut tx) = start_single_queue(&mut wire, &pool, WIRE_RING, false)?;
    let mux = HostMux::start(&cfg, Box::new(mux_end)).map_err(|e| {
        vdpdk_core::Error::Device(format!(
            "starting host-mux with its sockets in {}: {e}",
            args.dir.display()
        ))
    })?;
    outln!(
        "host-mux serving {} guests on an in-memory wire; sockets in {}",
        args.guests,
        args.dir.display()
    );

    let phase = Arc::new(AtomicU8::new(RUN));
    let mut guests: Vec<Guest> = Vec::new();
    for (i, vm) in cfg.vms.iter().enumerate() {
        let ledger = Arc::new(GuestLedger::default());
        let (sock, phase, l) = (vm.socket.clone(), phase.clone(), ledger.clone());
        let mac = guest_mac(i as u8);
        let thread = std::thread::Builder::new()
            .name(format!("guest-vm{i}"))
            .spawn(move || guest_echo(&sock, mac, &phase, &l))?;
        guests.push(Guest {
            ledger,
            thread: Some(thread),
        });
    }
    // Traffic starts once every guest's device runs (frames before would find no guest).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mux.guests().iter().all(|g| g.running) {
        if guests.iter().any(Guest::ended) || Instant::now() >= deadline {
            return Err(stop_guests(&phase, &mut guests).unwrap_or_else(|| {
                vdpdk_core::Error::Device("the guests did not start within 30 s".into())
            }));
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    // Traffic: a token bucket against the clock paces the generator. It holds at most 10 ms
    // of frames, so after a stall the generator sends a short catch-up burst at most; what it
    // could not send in time is counted (and the summary says the rate was not reached).
    let asked = args.rate * n;
    let cap = (asked as f64 * 0.010).max(64.0);
    let templates: Vec<Vec<u8>> = (0..args.guests)
        .map(guest_mac)
        .chain([MacAddr::BROADCAST])
        .map(|dst| udp_frame(dst, WIRE_MAC, 0, args.size as usize))
        .collect();
    let mut check = EchoCheck::new(n, &templates[0]);
    let (mut built, mut sent) = (0u64, 0u64);
    let (mut late, mut wire_full) = (0f64, 0f64);
    let mut tokens = 0f64;
    let mut batch: Vec<Mbuf> = Vec::with_capacity(BURST);
    let mut rbuf: Vec<Mbuf> = Vec::with_capacity(BURST);
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
        sent += tx.tx_burst(&mut batch) as u64;
        let got = receive(&mut *rx, &mut rbuf, &mut check, sent, 8);
        if t0.elapsed() >= next_print {
            next_print += Duration::from_secs(1);
            let secs = t0.elapsed().as_secs_f64();
            outln!(
                "\n[{:>2}s] wire: offered {sent} ({:.0}/s), came back {}",
                secs as u64,
                sent as f64 / secs,
                check.valid
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
    let traffic_secs = t0.elapsed().as_secs_f64();
    // Frames still in the batch were never sent.
    debug_assert_eq!(built - batch.len() as u64, sent);
    Mempool::free_bulk(&mut batch);
    if failed_guest {
        return Err(stop_guests(&phase, &mut guests)
            .unwrap_or_else(|| vdpdk_core::Error::Device("a guest stopped early".into())));
    }

    // Drain: the guests keep echoing until every frame came back or was counted as dropped,
    // or nothing has moved for a second.
    let drain_t0 = Instant::now();
    let expected = echoes(sent, n);
    settle(
        &mux,
        &wire,
        &mut *rx,
        &mut rbuf,
        &mut check,
        sent,
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
        receive(&mut *rx, &mut rbuf, &mut check, sent, usize::MAX);
        std::thread::sleep(Duration::from_millis(1));
    }
    // Now the account must add up: every frame came back, was dropped with a counter, or is
    // with a guest that stopped echoing.
    settle(
        &mux,
        &wire,
        &mut *rx,
        &mut rbuf,
        &mut check,
        sent,
        Duration::from_secs(2),
        Duration::from_secs(10),
        |s, c| Ledger::new(s, &guests, c, sent, n).ok(),
    );
    if let Some(e) = stop_guests(&phase, &mut guests) {
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
        receive(&mut *rx, &mut rbuf, &mut check, sent, usize::MAX);
        let l = Ledger::new(&Snap::take(&mux, &wire), &guests, &check, sent, n);
        let ok = l.ok();
        ledger = Some(l);
        if ok {
            break;
        }
    }
    let ledger = ledger.expect("taken at least once");

    outln!("\nfinal:");
    out!("{}", host_mux::stats_table(&mux.guests()));
    let offered = sent as f64 / traffic_secs;
    outln!(
        "\n{:.1} s of traffic: offered {sent} frames, {offered:.0}/s ({} broadcasts, answered by \
         each of the {n} guests); {:.1} s more to drain and stop the guests",
        traffic_secs,
        broadcasts(sent),
        drain_t0.elapsed().as_secs_f64()
    );
    if asked > 0 && offered < asked as f64 * RATE_SHORTFALL {
        outln!(
            "asked {asked} frames/s, offered {offered:.0}/s: the machine could not keep up \
             (frames not sent in time: {:.0} while the generator was not running, {:.0} while \
             host-mux's end of the wire was full)",
            late,
            wire_full
        );
    }
    ledger.print();
    mux.shutdown();
    let _ = std::fs::remove_dir(&args.dir);
    Ok(ledger.ok())
}

/// Tells the guests to stop, joins them, and returns the first failure of one.
fn stop_guests(phase: &AtomicU8, guests: &mut [Guest]) -> Option<vdpdk_core::Error> {
    phase.store(EXIT, Ordering::Release);
    let mut first = None;
    for (i, g) in guests.iter_mut().enumerate() {
        let r = match g.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => continue,
            Some(Ok(Err(e))) => format!("guest vm{i}: {e}"),
            Some(Err(_)) => format!("guest vm{i} panicked"),
        };
        first.get_or_insert(vdpdk_core::Error::Device(r));
    }
    first
}

/// Receives what came back on the wire (at most `max_bursts` bursts) and checks it; returns
/// how many frames arrived.
fn receive(
    rx: &mut dyn vdpdk_core::RxQueue,
    rbuf: &mut Vec<Mbuf>,
    check: &mut EchoCheck,
    sent: u64,
    max_bursts: usize,
) -> u64 {
    let mut got = 0;
    for _ in 0..max_bursts {
        if rx.rx_burst(rbuf, BURST) == 0 {
            break;
        }
        for m in rbuf.iter() {
            check.take(m.data(), sent);
        }
        got += rbuf.len() as u64;
        Mempool::free_bulk(rbuf);
    }
    got
}

/// Receives until `done` and nothing has moved for 50 ms, or until nothing has moved for
/// `idle`, or `limit` has passed (the account then says what is missing).
#[allow(clippy::too_many_arguments)]
fn settle(
    mux: &HostMux,
    wire: &vdpdk_pair::PairPort,
    rx: &mut dyn vdpdk_core::RxQueue,
    rbuf: &mut Vec<Mbuf>,
    check: &mut EchoCheck,
    sent: u64,
    idle: Duration,
    limit: Duration,
    done: impl Fn(&Snap, &EchoCheck) -> bool,
) {
    let until = Instant::now() + limit;
    let mut last = None;
    let mut since = Instant::now();
    while Instant::now() < until {
        receive(rx, rbuf, check, sent, usize::MAX);
        let snap = Snap::take(mux, wire);
        let sig = snap.signature(check);
        if last != Some(sig) {
            last = Some(sig);
            since = Instant::now();
        } else if since.elapsed() >= idle
            || (since.elapsed() >= Duration::from_millis(50) && done(&snap, check))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A guest: attach over vfio-user and echo every frame back to its sender (destination = the
/// old source, source = its own MAC) until told to stop.
fn guest_echo(
    sock: &Path,
    mac: MacAddr,
    phase: &AtomicU8,
    ledger: &GuestLedger,
) -> vdpdk_core::Result<()> {
    let mut port = VdpdkPort::connect(sock)?;
    let pool = Mempool::new(
        "guest",
        2 * GUEST_RING as u32 + 1024,
        vdpdk_core::DEFAULT_BUF_SIZE,
    )?;
    let (mut rx, mut tx) = start_single_queue(&mut port, &pool, GUEST_RING, false)?;
    let mut buf: Vec<Mbuf> = Vec::with_capacity(BURST);
    let (mut received, mut echoed) = (0u64, 0u64);
    while phase.load(Ordering::Acquire) == RUN {
        if !buf.is_empty() {
            echoed += tx.tx_burst(&mut buf) as u64;
            if !buf.is_empty() {
                // TX ring full: let host-mux catch up before taking more.
                std::thread::sleep(Duration::from_micros(20));
                continue;
            }
        }
        let got = rx.rx_burst(&mut buf, BURST);
        if got == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        received += got as u64;
        for m in &mut buf {
            let d = m.data_mut();
            if d.len() >= 12 {
                let (dst, rest) = d.split_at_mut(6);
                dst.copy_from_slice(&rest[..6]);
                rest[..6].copy_from_slice(&mac.0);
            }
        }
        echoed += tx.tx_burst(&mut buf) as u64;
    }
    ledger.received.store(received, Ordering::Relaxed);
    ledger.echoed.store(echoed, Ordering::Relaxed);
    ledger.held.store(buf.len() as u64, Ordering::Relaxed);
    Mempool::free_bulk(&mut buf);
    ledger.quiesced.store(true, Ordering::Release);
    // Stopped echoing: whatever still arrives is counted and freed until it is time to detach.
    let mut discarded = 0u64;
    loop {
        let got = rx.rx_burst(&mut buf, BURST);
        if got > 0 {
            discarded += got as u64;
            ledger.discarded.store(discarded, Ordering::Relaxed);
            Mempool::free_bulk(&mut buf);
        } else {
            if phase.load(Ordering::Acquire) == EXIT {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(rx);
    drop(tx);
    port.stop()
}

/// Checks each frame that comes back: an echo of a frame we sent, to the guest it was for,
/// intact, and the first copy of it.
struct EchoCheck {
    guests: u64,
    /// The frame after the MACs as sent (seq bytes zero).
    tail: Vec<u8>,
    /// Unicast frames seen, by seq.
    unicast: Vec<u64>,
    /// Broadcast echoes seen per guest, by seq / 64.
    bcast: Vec<Vec<u64>>,
    valid: u64,
    per_guest: Vec<u64>,
    /// Frames that are not an echo we asked for, or a second copy of one.
    unexpected: u64,
}

fn test_and_set(bits: &mut Vec<u64>, i: u64) -> bool {
    let (w, b) = ((i / 64) as usize, i % 64);
    if bits.len() <= w {
        bits.resize(w + 1 + w / 2, 0);
    }
    let was = bits[w] & (1 << b) != 0;
    bits[w] |= 1 << b;
    was
}

impl EchoCheck {
    fn new(guests: u64, template: &[u8]) -> EchoCheck {
        EchoCheck {
            guests,
            tail: template[12..].to_vec(),
            unicast: Vec::new(),
            bcast: vec![Vec::new(); guests as usize],
            valid: 0,
            per_guest: vec![0; guests as usize],
            unexpected: 0,
        }
    }

    fn take(&mut self, f: &[u8], sent: u64) {
        if !self.is_echo(f, sent) {
            self.unexpected += 1;
        }
    }

    fn is_echo(&mut self, f: &[u8], sent: u64) -> bool {
        let (seq_at, tail) = (42 - 12, &self.tail);
        let intact = f.len() == 12 + tail.len()
            && f[..6] == WIRE_MAC.0
            && f[6..11] == guest_mac(0).0[..5]
            && f[12..42] == tail[..seq_at]
            && f[50..] == tail[seq_at + 8..];
        if !intact {
            return false;
        }
        let g = (f[11] as u64).wrapping_sub(1);
        let seq = u64::from_be_bytes(f[42..50].try_into().expect("8 bytes"));
        if g >= self.guests || seq >= sent {
            return false;
        }
        let first = if is_broadcast(seq) {
            !test_and_set(&mut self.bcast[g as usize], seq / BCAST_EVERY)
        } else {
            unicast_guest(seq, self.guests) == g && !test_and_set(&mut self.unicast, seq)
        };
        if first {
            self.valid += 1;
            self.per_guest[g as usize] += 1;
        }
        first
    }
}

/// Counters of host-mux and of the wire at one moment.
struct Snap {
    guests: Vec<GuestSnapshot>,
    pollers: Vec<PollerSnapshot>,
    backend: PortStats,
    wire: PortStats,
}

/// Whether a per-VM counter counts dropped frames, and on which side of the guest: RX drops
/// happen before a frame reaches the guest's ring, TX drops after the guest sent it and before
/// host-mux takes it (tx_backend_drop comes after: host-mux took the frame).
fn rx_drop(name: &str) -> bool {
    name.starts_with("rx_") && !matches!(name, "rx_packets" | "rx_bytes")
}
fn tx_drop(name: &str) -> bool {
    name.starts_with("tx_") && !matches!(name, "tx_packets" | "tx_bytes" | "tx_backend_drop")
}

impl Snap {
    fn take(mux: &HostMux, wire: &vdpdk_pair::PairPort) -> Snap {
        Snap {
            guests: mux.guests(),
            pollers: mux.pollers(),
            backend: mux.backend_stats(),
            wire: wire.stats(),
        }
    }

    fn poller_sum(&self, f: impl Fn(&PollerSnapshot) -> u64) -> u64 {
        self.pollers.iter().map(f).sum()
    }

    /// Every frame dropped anywhere so far, in echoes (each counter counts one frame for one
    /// guest; the wire's own drops are counted as the echoes they would have caused, roughly).
    fn dropped(&self) -> u64 {
        let per_vm: u64 = self
            .guests
            .iter()
            .flat_map(|g| {
                STATS_NAMES
                    .iter()
                    .zip(g.stats)
                    .filter(|(name, _)| {
                        rx_drop(name) || tx_drop(name) || **name == "tx_backend_drop"
                    })
                    .map(|(_, v)| v)
            })
            .sum();
        per_vm
            + self.poller_sum(|p| p.rx_guest_stopped + p.rx_unknown_dst)
            + self.wire.oerrors
            + self.backend.oerrors
    }

    /// What moves while frames are in flight.
    fn signature(&self, check: &EchoCheck) -> [u64; 6] {
        let sum = |i: StatsIndex| self.guests.iter().map(|g| g.stats[i as usize]).sum::<u64>();
        [
            check.valid + check.unexpected,
            sum(StatsIndex::RxPackets),
            sum(StatsIndex::TxPackets),
            self.dropped(),
            self.poller_sum(|p| p.wire_rx),
            self.poller_sum(|p| p.wire_tx),
        ]
    }
}

/// Frames dropped for one reason: (reason, echoes, per VM where the counter is per VM).
type Dropped = (String, u64, Vec<(String, u64)>);

/// The account of every echo the frames sent asked for.
struct Ledger {
    expected: u64,
    back: u64,
    drops: Vec<Dropped>,
    /// (where, echoes)
    queued: Vec<(&'static str, u64)>,
    /// Stages whose counters do not add up: (what, frames unaccounted for).
    problems: Vec<(String, u64)>,
}

impl Ledger {
    fn new(s: &Snap, guests: &[Guest], check: &EchoCheck, sent: u64, n: u64) -> Ledger {
        let mut l = Ledger {
            expected: echoes(sent, n),
            back: check.valid,
            drops: Vec::new(),
            queued: Vec::new(),
            problems: Vec::new(),
        };
        let queued = |l: &mut Ledger, what: &'static str, v: u64| {
            if let Some(q) = l.queued.iter_mut().find(|q| q.0 == what) {
                q.1 += v;
            } else {
                l.queued.push((what, v));
            }
        };
        // Between two counters frames only pass through: once the path has settled, what went
        // in has come out. A difference is frames stuck or lost there: unaccounted for.
        let stage = |l: &mut Ledger, what: &str, into: u64, out: u64| {
            if into > out {
                l.problems.push((
                    format!(
                        "{what}: {into} frames went in, {out} came out: {} stuck or lost there",
                        into - out
                    ),
                    into - out,
                ));
            } else if out > into {
                l.problems.push((
                    format!("{what}: {out} frames came out, only {into} went in"),
                    out - into,
                ));
            }
        };

        // The wire (our end): every frame the generator sent went into host-mux's RX ring or
        // was dropped because host-mux's end was stopped.
        let wire_in = s.wire.opackets;
        if wire_in + s.wire.oerrors != sent {
            l.problems.push((
                format!(
                    "wire: the generator sent {sent}, the wire counted {wire_in} delivered + {} \
                     dropped",
                    s.wire.oerrors
                ),
                sent.abs_diff(wire_in + s.wire.oerrors),
            ));
        }
        if s.wire.oerrors > 0 {
            l.wire_drop(
                "wire: host-mux's end was stopped",
                wire_in,
                sent.min(wire_in + s.wire.oerrors),
                n,
            );
        }
        // host-mux's backend RX ring.
        let taken = s.poller_sum(|p| p.wire_rx);
        stage(&mut l, "host-mux's wire RX ring", wire_in, taken);
        // The ring is a FIFO: the frames taken are the first ones sent.
        let taken = taken.min(wire_in);
        // Steering: each frame taken is delivered, or dropped with a counter, once
        // per guest it is for.
        let mut delivered = 0u64;
        let mut by_name: Vec<Dropped> = Vec::new();
        for g in &s.guests {
            delivered += g.stats[StatsIndex::RxPackets as usize];
            for (name, v) in STATS_NAMES.iter().zip(g.stats) {
                if rx_drop(name) || tx_drop(name) || *name == "tx_backend_drop" {
                    let e = match by_name.iter_mut().find(|e| e.0 == *name) {
                        Some(e) => e,
                        None => {
                            by_name.push((name.to_string(), 0, Vec::new()));
                            by_name.last_mut().expect("pushed")
                        }
                    };
                    e.1 += v;
                    if v > 0 {
                        e.2.push((g.name.clone(), v));
                    }
                }
            }
        }
        let rx_dropped: u64 = by_name.iter().filter(|e| rx_drop(&e.0)).map(|e| e.1).sum();
        let stopped = s.poller_sum(|p| p.rx_guest_stopped);
        let unknown = s.poller_sum(|p| p.rx_unknown_dst);
        let due = echoes(taken, n);
        let counted = delivered + rx_dropped + stopped + unknown;
        if counted != due {
            l.problems.push((
                format!(
                    "host-mux steering: {taken} frames taken from the wire ask for {due} \
                     deliveries, {counted} counted ({delivered} delivered, {} dropped)",
                    rx_dropped + stopped + unknown
                ),
                counted.abs_diff(due),
            ));
        }
        // Each guest: its RX ring, what it held when it stopped echoing, what arrived after,
        // its TX ring.
        let mut took_from_guests = 0u64;
        for (g, gl) in s.guests.iter().zip(guests) {
            let st = |i: StatsIndex| g.stats[i as usize];
            let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let (received, echoed) = (ld(&gl.ledger.received), ld(&gl.ledger.echoed));
            let (held, discarded) = (ld(&gl.ledger.held), ld(&gl.ledger.discarded));
            stage(
                &mut l,
                &format!("{}'s RX ring", g.name),
                st(StatsIndex::RxPackets),
                received + discarded,
            );
            queued(&mut l, "held by a guest when it stopped echoing", held);
            queued(
                &mut l,
                "reached a guest after it stopped echoing",
                discarded,
            );
            stage(
                &mut l,
                &format!("{} (received, then echoed or held)", g.name),
                received,
                echoed + held,
            );
            let tx_dropped: u64 = STATS_NAMES
                .iter()
                .zip(g.stats)
                .filter(|(name, _)| tx_drop(name))
                .map(|(_, v)| v)
                .sum();
            stage(
                &mut l,
                &format!("{}'s TX ring", g.name),
                echoed,
                st(StatsIndex::TxPackets) + tx_dropped,
            );
            took_from_guests += st(StatsIndex::TxPackets);
        }
        // host-mux's TX side: frames taken from guests go to the wire, are refused by it, or
        // wait in host-mux for room on the wire.
        let backend_drop: u64 = s
            .guests
            .iter()
            .map(|g| g.stats[StatsIndex::TxBackendDrop as usize])
            .sum();
        let to_wire = s.poller_sum(|p| p.wire_tx);
        stage(
            &mut l,
            "host-mux's TX path",
            took_from_guests.saturating_sub(backend_drop),
            to_wire,
        );
        // The wire back: frames host-mux sent arrive in our RX ring unless our end was
        // stopped (the pair counts those as the backend's TX errors).
        if s.backend.oerrors > 0 {
            l.drops.push((
                "wire: the demo's end was stopped".into(),
                s.backend.oerrors,
                Vec::new(),
            ));
        }
        let arrived = check.valid + check.unexpected;
        stage(
            &mut l,
            "the wire's RX ring",
            to_wire.saturating_sub(s.backend.oerrors),
            arrived,
        );
        if check.unexpected > 0 {
            l.problems.push((
                format!(
                    "{} frames came back that are no echo asked for (or a second copy)",
                    check.unexpected
                ),
                check.unexpected,
            ));
        }
        for (name, v, per_vm) in by_name {
            if v > 0 {
                l.drops.push((describe(&name), v, per_vm));
            }
        }
        for (what, v) in [
            ("no guest was running (rx_guest_stopped)", stopped),
            ("no guest has that MAC (rx_unknown_dst)", unknown),
        ] {
            if v > 0 {
                l.drops.push((what.into(), v, Vec::new()));
            }
        }
        // Every stage balanced: the whole must too (a check of this account itself).
        let total = l.back + l.dropped() + l.queued();
        if l.problems.is_empty() && total != l.expected {
            l.problems.push((
                format!(
                    "the account does not add up: {} expected, {total} found",
                    l.expected
                ),
                total.abs_diff(l.expected),
            ));
        }
        l
    }

    /// Drops at the wire, in echoes: frames `from..to` of the sequence.
    fn wire_drop(&mut self, what: &str, from: u64, to: u64, n: u64) {
        self.drops.push((
            what.into(),
            echoes(to, n) - echoes(from.min(to), n),
            Vec::new(),
        ));
    }

    fn dropped(&self) -> u64 {
        self.drops.iter().map(|d| d.1).sum()
    }
    fn queued(&self) -> u64 {
        self.queued.iter().map(|q| q.1).sum()
    }
    fn unaccounted(&self) -> u64 {
        self.problems.iter().map(|p| p.1).sum()
    }
    fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn print(&self) {
        outln!("echoes expected {:>12}", self.expected);
        outln!("came back       {:>12}", self.back);
        outln!(
            "dropped         {:>12}{}",
            self.dropped(),
            if self.dropped() > 0 {
                "   (counted by reason below; drops are not a failure)"
            } else {
                ""
            }
        );
        for (what, v, per_vm) in &self.drops {
            let vms: Vec<String> = per_vm.iter().map(|(vm, v)| format!("{vm} {v}")).collect();
            outln!(
                "  {v:>10}  {what}{}",
                if vms.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", vms.join(", "))
                }
            );
        }
        outln!("still queued    {:>12}", self.queued());
        for (what, v) in self.queued.iter().filter(|q| q.1 > 0) {
            outln!("  {v:>10}  {what}");
        }
        if self.ok() {
            outln!(
                "every frame accounted for: {} expected = {} came back + {} dropped + {} queued",
                self.expected,
                self.back,
                self.dropped(),
                self.queued()
            );
        } else {
            outln!("UNACCOUNTED: {} frames", self.unaccounted());
            for (what, _) in &self.problems {
                outln!("  {what}");
            }
            eprintln!(
                "{TOOL}: error: {} frames unaccounted for (see above)",
                self.unaccounted()
            );
        }
    }
}

/// What a per-VM drop counter means.
fn describe(name: &str) -> String {
    let what = match name {
        "rx_no_desc" => "guest RX ring full",
        "rx_flow_drop" => "a guest flow rule dropped it",
        "rx_bad_desc" => "bad guest RX descriptor",
        "tx_bad_desc" => "bad guest TX descriptor",
        "tx_spoofed" => "source MAC not the guest's own",
        "tx_backend_drop" => "the backend refused it",
        _ => return name.to_string(),
    };
    format!("{what} ({name})")
}
