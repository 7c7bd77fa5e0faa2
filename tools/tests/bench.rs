//! vdpdk-bench runs every direction end to end (frames arrive in each; nothing here asserts a
//! rate, which a loaded machine may not reach) and refuses bad arguments.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::output_within;

/// A private socket directory per run, removed at the end.
struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench(tag: &str, args: &[&str]) -> (std::process::Output, String) {
    let dir = Dir(std::env::temp_dir().join(format!("vdpdk-bench-{tag}-{}", std::process::id())));
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-bench"))
            .args(["--dir", dir.0.to_str().expect("UTF-8 temp dir")])
            .args(args),
        Duration::from_secs(300),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

/// A short run on the null wire with `extra` arguments and JSON output, which must succeed:
/// (stdout, stderr).
fn null_wire_run(tag: &str, extra: &str) -> (String, String) {
    // The poller on the second CPU, or beside the guest on a one-CPU machine.
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mux_cpu = if ncpu > 1 { "1" } else { "0" };
    let base = "--secs 0.1 --repeats 1 --sizes 64 --wire null --json --mux-cpu";
    let mut args: Vec<&str> = base.split(' ').collect();
    args.push(mux_cpu);
    args.extend(extra.split_whitespace());
    let (out, text) = bench(tag, &args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}\n{err}");
    (text, err)
}

#[test]
fn every_direction_moves_frames_on_the_null_wire() {
    let (text, err) = null_wire_run("all", "");
    for dir in ["tx", "rx", "g2g", "g2g-fwd"] {
        let key = format!("{{\"direction\":\"{dir}\",");
        let line = text
            .lines()
            .find(|l| l.starts_with(&key))
            .unwrap_or_else(|| panic!("no result for {dir}:\n{text}"));
        let mpps: f64 = line
            .split("\"median_mpps\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unreadable: {line}"));
        assert!(mpps > 0.0, "no frame arrived in {dir}: {line}\n{err}");
    }
}

#[test]
fn a_priming_outside_1_to_32_bursts_is_refused() {
    for bad in ["0", "33"] {
        let (out, _) = bench("prime", &["--prime-bursts", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--prime-bursts"), "{err}");
    }
}

#[test]
fn scaling_mode_moves_frames_for_every_guest_and_compares_with_the_first_count() {
    let (text, err) = null_wire_run("scale", "--guests 1,3");
    let field = |line: &str, name: &str| -> f64 {
        line.split(&format!("\"{name}\":"))
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    for dir in ["wire -> guests", "guests -> wire"] {
        let find = |n: u32| {
            let key = format!("{{\"guests\":{n},\"direction\":\"{dir}\",");
            text.lines()
                .find(|l| l.starts_with(&key))
                .unwrap_or_else(|| panic!("no result for {n} guests, {dir}:\n{text}\n{err}"))
                .to_string()
        };
        let (one, three) = (find(1), find(3));
        let (m1, m3) = (field(&one, "median_mpps"), field(&three, "median_mpps"));
        assert!(
            m1 > 0.0 && m3 > 0.0,
            "no frame arrived, {dir}:\n{text}\n{err}"
        );
        // Every guest got a share of the frames.
        assert!(field(&three, "min_share") > 0.0, "a starved guest: {three}");
        assert_eq!(field(&one, "vs_first"), 1.0, "{one}");
        // The JSON rounds each number to 3 decimals: the ratio of the unrounded rates lies
        // between the ratios of the rounded ones pushed half a unit apart.
        let ratio = field(&three, "vs_first");
        let half = 0.0005;
        let (lo, hi) = ((m3 - half) / (m1 + half), (m3 + half) / (m1 - half));
        assert!(
            (lo - half..=hi + half).contains(&ratio),
            "{ratio} against {m3}/{m1}"
        );
    }
}
