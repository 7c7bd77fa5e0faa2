//! Shared pieces of the tools: opening a port from a command-line spec, so every tool runs
//! unchanged on any backend.

#![warn(missing_docs)]

pub mod demo;
pub mod guestctl;
pub mod smol;
pub mod tapfwd;
pub mod testpmd;

pub use vdpdk_ports::{open_port, port_spec, PORT_KINDS};

/// Exit code of a bad argument (as clap uses).
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a failure at run time.
pub const EXIT_FAILURE: i32 = 1;

/// Prints `TOOL: error: MSG` on stderr (the one error format of every tool) and exits with
/// `code`: [`EXIT_USAGE`] for a bad argument, [`EXIT_FAILURE`] for a failure at run time.
pub fn die(tool: &str, code: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("{tool}: error: {msg}");
    std::process::exit(code)
}

/// Writes to stdout; when nobody reads it any more (a closed pipe, e.g. `| head` or a test
/// that went away), the tool exits quietly with status 0 instead of panicking as `print!`
/// does. Other write errors are ignored: a tool's output is not worth dying for. Use it
/// through [`out!`] and [`outln!`].
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// `print!` that exits quietly on a closed stdout (see [`write_stdout`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that exits quietly on a closed stdout (see [`write_stdout`]).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// A latency histogram with logarithmic buckets (about 3% resolution) from 10 ns to ~100 s.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_ns: u64,
}

const SUB: usize = 32; // buckets per power of two

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; 64 * SUB],
            count: 0,
            max_ns: 0,
        }
    }
}

impl Histogram {
    fn index(ns: u64) -> usize {
        let ns = ns.max(1);
        let exp = 63 - ns.leading_zeros() as usize;
        let frac = if exp >= 5 {
            ((ns >> (exp - 5)) & 31) as usize
        } else {
            ((ns << (5 - exp)) & 31) as usize
        };
        exp * SUB + frac
    }

    fn value(i: usize) -> u64 {
        let (exp, frac) = (i / SUB, (i % SUB) as u64);
        if exp >= 5 {
            (32 + frac) << (exp - 5)
        } else {
            (32 + frac) >> (5 - exp)
        }
    }

    /// Adds one sample of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.buckets[Self::index(ns)] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest sample, exact (not rounded to a bucket), in nanoseconds.
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The value at quantile `q` (0..=1), to bucket resolution.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let want = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if want == self.count {
            return self.max_ns;
        }
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Self::value(i).min(self.max_ns);
            }
        }
        self.max_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_bucket_resolution() {
        let mut h = Histogram::default();
        for ns in 1..=10_000u64 {
            h.record(ns * 100);
        }
        let close = |a: u64, b: u64| (a as f64 - b as f64).abs() / (b as f64) < 0.04;
        assert!(close(h.quantile(0.5), 500_000), "{}", h.quantile(0.5));
        assert!(close(h.quantile(0.99), 990_000), "{}", h.quantile(0.99));
        assert_eq!(h.max_ns(), 1_000_000);
        assert_eq!(h.quantile(1.0), 1_000_000);
    }

    #[test]
    fn bad_port_specs_are_refused() {
        for s in ["", "vdpdk", "vdpdk:", "nic:eth0", ":x", "tap"] {
            let e = open_port(s).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains("expected vdpdk:SOCKET"), "{s}: {e}");
            let e = port_spec(s).unwrap_err();
            assert!(e.contains(&format!("port '{s}'")), "{s}: {e}");
        }
        for s in [
            "vdpdk:/tmp/x.sock",
            "vdpdk-vm:auto",
            "vdpdk-vm:0000:00:03.0",
            "tap:vdpdk0",
            "ice:/tmp/e810.sock",
            "ice-pci:0000:3b:00.0",
        ] {
            assert_eq!(port_spec(s).as_deref(), Ok(s));
        }
    }
}
