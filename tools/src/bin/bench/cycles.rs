//! Where the guest thread's time goes (`--cycles`): per frame, the time-stamp-counter ticks
//! of each phase of a step (making frames, `tx_burst`, `rx_burst`, freeing), and the share of
//! the thread's time spent in steps that moved nothing, waiting for the poller.
//!
//! The Mpps figure alone cannot say which side binds: the poller's share of rounds that found
//! nothing counts rounds, not time, and an idle round is short. In guest -> guest at 64 B the
//! guest's steps are nearly all idle by count, yet nine tenths of its time goes to the few
//! that move frames: it is the guest that binds. Off by default: the counter reads (five per
//! step) cost a few ticks per frame.

use std::time::Instant;

/// A monotonic tick count: the TSC on x86_64 (constant-rate on every CPU this runs on that
/// matters), nanoseconds elsewhere.
#[inline(always)]
fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC reads a counter; it touches no memory.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static T0: OnceLock<Instant> = OnceLock::new();
        T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Phases a step can have; each direction names the ones it uses.
pub(crate) const PHASES: usize = 4;

/// Per-phase ticks of the steps that moved frames, and the ticks of those that did not.
pub(crate) struct StepClock {
    on: bool,
    names: [&'static str; PHASES],
    step: [u64; PHASES],
    last: u64,
    busy: [u64; PHASES],
    idle: u64,
    frames: u64,
    since: (Instant, u64),
}

impl StepClock {
    /// A clock for steps with phases `names` (unused ones ""); `on` false makes every call a
    /// no-op.
    pub(crate) fn new(on: bool, names: [&'static str; PHASES]) -> StepClock {
        StepClock {
            on,
            names,
            step: [0; PHASES],
            last: 0,
            busy: [0; PHASES],
            idle: 0,
            frames: 0,
            since: (Instant::now(), ticks()),
        }
    }

    /// Forgets what was counted (the warm-up).
    pub(crate) fn reset(&mut self) {
        *self = StepClock::new(self.on, self.names);
    }

    /// A step starts.
    #[inline(always)]
    pub(crate) fn begin(&mut self) {
        if self.on {
            self.step = [0; PHASES];
            self.last = ticks();
        }
    }

    /// Phase `k` of the step ends.
    #[inline(always)]
    pub(crate) fn lap(&mut self, k: usize) {
        if self.on {
            let t = ticks();
            self.step[k] += t - self.last;
            self.last = t;
        }
    }

    /// The step ends: it `moved` frames (or only waited), `frames` of them counted.
    #[inline(always)]
    pub(crate) fn end(&mut self, moved: bool, frames: u64) {
        if !self.on {
            return;
        }
        if !moved {
            self.idle += self.step.iter().sum::<u64>();
            return;
        }
        for (b, s) in self.busy.iter_mut().zip(self.step) {
            *b += s;
        }
        self.frames += frames;
    }

    /// One line: the busy share and the nanoseconds per frame of each phase; None when off
    /// or nothing moved.
    pub(crate) fn summary(&self) -> Option<String> {
        if !self.on || self.frames == 0 {
            return None;
        }
        let (t0, k0) = self.since;
        let ns_per_tick = t0.elapsed().as_nanos() as f64 / (ticks() - k0).max(1) as f64;
        let busy: u64 = self.busy.iter().sum();
        let per_frame = |t: u64| t as f64 * ns_per_tick / self.frames as f64;
        let phases: Vec<String> = self
            .names
            .iter()
            .zip(self.busy)
            .filter(|(n, _)| !n.is_empty())
            .map(|(n, t)| format!("{n} {:.1}", per_frame(t)))
            .collect();
        Some(format!(
            "guest thread {:.0}% in steps that moved frames; ns per frame: {} (sum {:.1})",
            100.0 * busy as f64 / (busy + self.idle).max(1) as f64,
            phases.join(", "),
            per_frame(busy)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(c: &mut StepClock, moved: bool, frames: u64) {
        c.begin();
        std::hint::black_box((0..1000).sum::<u64>());
        c.lap(0);
        c.lap(1);
        c.end(moved, frames);
    }

    #[test]
    fn waiting_steps_count_as_idle_and_moving_ones_per_frame() {
        let mut c = StepClock::new(true, ["make", "tx_burst", "", ""]);
        step(&mut c, false, 0);
        assert!(c.idle > 0 && c.busy == [0; PHASES]);
        assert_eq!(c.summary(), None, "nothing moved yet");
        step(&mut c, true, 32);
        assert_eq!(c.frames, 32);
        assert!(c.busy[0] > 0, "the work sits in the phase it was timed in");
        let line = c.summary().unwrap();
        assert!(line.contains("make ") && line.contains("tx_burst ") && line.contains("sum "));
        assert_eq!(
            line.matches(',').count(),
            1,
            "unnamed phases are left out: {line}"
        );
        c.reset();
        assert_eq!((c.frames, c.idle), (0, 0));
    }

    #[test]
    fn an_off_clock_counts_nothing() {
        let mut c = StepClock::new(false, ["make", "", "", ""]);
        step(&mut c, true, 32);
        assert_eq!((c.frames, c.idle, c.busy), (0, 0, [0; PHASES]));
        assert_eq!(c.summary(), None);
    }
}
