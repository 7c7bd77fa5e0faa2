//! The account of every frame: the checker of what comes back ([`EchoCheck`]), a snapshot of
//! every counter on the path ([`Snap`]), and the ledger that balances them stage by stage
//! ([`Ledger`]).

use std::sync::atomic::{AtomicU64, Ordering};

use host_mux::{GuestSnapshot, HostMux, PollerSnapshot};
use vdpdk_core::abi::{StatsIndex, STATS_NAMES};
use vdpdk_core::{EthDev, PortStats};

use super::guest::Guest;
use super::{echoes, guest_mac, is_broadcast, unicast_guest, BCAST_EVERY, TOOL, WIRE_MAC};
use crate::outln;

/// Checks each frame that comes back: an echo of a frame we sent, to the guest it was for,
/// intact, and the first copy of it.
pub(super) struct EchoCheck {
    guests: u64,
    /// The frame after the MACs as sent (seq bytes zero).
    tail: Vec<u8>,
    /// Unicast frames seen, by seq.
    unicast: Vec<u64>,
    /// Broadcast echoes seen per guest, by seq / 64.
    bcast: Vec<Vec<u64>>,
    /// Echoes that came back as asked, each counted once.
    pub valid: u64,
    per_guest: Vec<u64>,
    /// Frames that are not an echo we asked for, or a second copy of one.
    pub unexpected: u64,
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
    /// A checker for `guests` guests echoing frames built from `template`.
    pub fn new(guests: u64, template: &[u8]) -> EchoCheck {
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

    /// Checks frame `f`, the frames seq 0..`sent` having been sent.
    pub fn take(&mut self, f: &[u8], sent: u64) {
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
pub(super) struct Snap {
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
    /// Reads every counter now.
    pub fn take(mux: &HostMux, wire: &vdpdk_pair::PairPort) -> Snap {
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
    pub fn dropped(&self) -> u64 {
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
    pub fn signature(&self, check: &EchoCheck) -> [u64; 6] {
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
pub(super) struct Ledger {
    expected: u64,
    back: u64,
    drops: Vec<Dropped>,
    /// (where, echoes)
    queued: Vec<(&'static str, u64)>,
    /// Stages whose counters do not add up: (what, frames unaccounted for).
    problems: Vec<(String, u64)>,
}

impl Ledger {
    /// Balances every stage of the path: the wire, host-mux's RX side and steering, each
    /// guest, host-mux's TX side and the wire back. `sent` frames went out to `n` guests.
    pub fn new(s: &Snap, guests: &[Guest], check: &EchoCheck, sent: u64, n: u64) -> Ledger {
        let mut l = Ledger {
            expected: echoes(sent, n),
            back: check.valid,
            drops: Vec::new(),
            queued: Vec::new(),
            problems: Vec::new(),
        };
        let taken = l.wire_out(s, sent, n);
        let (by_name, stopped, unknown) = l.steering(s, taken, n);
        let took_from_guests = l.guests(s, guests);
        l.back_to_wire(s, check, took_from_guests);
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

    /// Adds `v` echoes queued at `what`.
    fn add_queued(&mut self, what: &'static str, v: u64) {
        if let Some(q) = self.queued.iter_mut().find(|q| q.0 == what) {
            q.1 += v;
        } else {
            self.queued.push((what, v));
        }
    }

    /// Between two counters frames only pass through: once the path has settled, what went
    /// in has come out. A difference is frames stuck or lost there: unaccounted for.
    fn stage(&mut self, what: &str, into: u64, out: u64) {
        if into > out {
            self.problems.push((
                format!(
                    "{what}: {into} frames went in, {out} came out: {} stuck or lost there",
                    into - out
                ),
                into - out,
            ));
        } else if out > into {
            self.problems.push((
                format!("{what}: {out} frames came out, only {into} went in"),
                out - into,
            ));
        }
    }

    /// The wire (our end) and host-mux's backend RX ring; returns the frames host-mux took
    /// from the wire.
    fn wire_out(&mut self, s: &Snap, sent: u64, n: u64) -> u64 {
        // Every frame the generator sent went into host-mux's RX ring or was dropped because
        // host-mux's end was stopped.
        let wire_in = s.wire.opackets;
        if wire_in + s.wire.oerrors != sent {
            self.problems.push((
                format!(
                    "wire: the generator sent {sent}, the wire counted {wire_in} delivered + {} \
                     dropped",
                    s.wire.oerrors
                ),
                sent.abs_diff(wire_in + s.wire.oerrors),
            ));
        }
        if s.wire.oerrors > 0 {
            self.wire_drop(
                "wire: host-mux's end was stopped",
                wire_in,
                sent.min(wire_in + s.wire.oerrors),
                n,
            );
        }
        // host-mux's backend RX ring.
        let taken = s.poller_sum(|p| p.wire_rx);
        self.stage("host-mux's wire RX ring", wire_in, taken);
        // The ring is a FIFO: the frames taken are the first ones sent.
        taken.min(wire_in)
    }

    /// Steering: each frame taken is delivered, or dropped with a counter, once per guest it
    /// is for. Returns the per-VM drop counters by name, and the frames no running guest
    /// (`rx_guest_stopped`) and no guest at all (`rx_unknown_dst`) took.
    fn steering(&mut self, s: &Snap, taken: u64, n: u64) -> (Vec<Dropped>, u64, u64) {
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
            self.problems.push((
                format!(
                    "host-mux steering: {taken} frames taken from the wire ask for {due} \
                     deliveries, {counted} counted ({delivered} delivered, {} dropped)",
                    rx_dropped + stopped + unknown
                ),
                counted.abs_diff(due),
            ));
        }
        (by_name, stopped, unknown)
    }

    /// Each guest: its RX ring, what it held when it stopped echoing, what arrived after, its
    /// TX ring. Returns the frames host-mux took from the guests.
    fn guests(&mut self, s: &Snap, guests: &[Guest]) -> u64 {
        let mut took_from_guests = 0u64;
        for (g, gl) in s.guests.iter().zip(guests) {
            let st = |i: StatsIndex| g.stats[i as usize];
            let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let (received, echoed) = (ld(&gl.ledger.received), ld(&gl.ledger.echoed));
            let (held, discarded) = (ld(&gl.ledger.held), ld(&gl.ledger.discarded));
            self.stage(
                &format!("{}'s RX ring", g.name),
                st(StatsIndex::RxPackets),
                received + discarded,
            );
            self.add_queued("held by a guest when it stopped echoing", held);
            self.add_queued("reached a guest after it stopped echoing", discarded);
            self.stage(
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
            self.stage(
                &format!("{}'s TX ring", g.name),
                echoed,
                st(StatsIndex::TxPackets) + tx_dropped,
            );
            took_from_guests += st(StatsIndex::TxPackets);
        }
        took_from_guests
    }

    /// host-mux's TX side and the wire back to our RX ring.
    fn back_to_wire(&mut self, s: &Snap, check: &EchoCheck, took_from_guests: u64) {
        // Frames taken from guests go to the wire, are refused by it, or wait in host-mux for
        // room on the wire.
        let backend_drop: u64 = s
            .guests
            .iter()
            .map(|g| g.stats[StatsIndex::TxBackendDrop as usize])
            .sum();
        let to_wire = s.poller_sum(|p| p.wire_tx);
        self.stage(
            "host-mux's TX path",
            took_from_guests.saturating_sub(backend_drop),
            to_wire,
        );
        // Frames host-mux sent arrive in our RX ring unless our end was stopped (the pair
        // counts those as the backend's TX errors).
        if s.backend.oerrors > 0 {
            self.drops.push((
                "wire: the demo's end was stopped".into(),
                s.backend.oerrors,
                Vec::new(),
            ));
        }
        let arrived = check.valid + check.unexpected;
        self.stage(
            "the wire's RX ring",
            to_wire.saturating_sub(s.backend.oerrors),
            arrived,
        );
        if check.unexpected > 0 {
            self.problems.push((
                format!(
                    "{} frames came back that are no echo asked for (or a second copy)",
                    check.unexpected
                ),
                check.unexpected,
            ));
        }
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
    /// Whether every frame is accounted for.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Prints the account (and on stderr the error line when it does not add up).
    pub fn print(&self) {
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
