//! vdpdk-demo, the README's first command: host-mux, guests over vfio-user, traffic on the
//! in-memory wire, and an account of every frame. Nothing here asserts a rate: a loaded
//! machine may offer less than asked (the demo says so), but it must account for every frame.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{output_within, ChildGuard};

/// A private socket directory per run, removed at the end.
struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("vdpdk-demo-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Dir(d)
    }
    fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp dir")
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn demo(args: &[&str]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-demo"))
            .args(args)
            .env("RUST_LOG", "warn"),
        Duration::from_secs(300),
    )
}

/// The numbers of the summary line
/// `every frame accounted for: E expected = B came back + D dropped + Q queued`.
fn account(text: &str) -> [u64; 4] {
    let line = text
        .lines()
        .find(|l| l.starts_with("every frame accounted for:"))
        .unwrap_or_else(|| panic!("no account line:\n{text}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    nums.try_into()
        .unwrap_or_else(|v| panic!("4 numbers expected in '{line}': {v:?}"))
}

fn run_and_check(args: &[&str]) -> (String, [u64; 4]) {
    let o = demo(args);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{args:?}:\n{text}{err}");
    let [expected, back, dropped, queued] = account(&text);
    assert!(expected > 0, "{text}");
    assert_eq!(expected, back + dropped + queued, "{text}");
    // The per-guest table, and the rate offered.
    assert!(
        text.contains("final:") && text.contains("rx-nodesc"),
        "{text}"
    );
    assert!(text.contains("s of traffic: offered"), "{text}");
    assert!(!err.contains("panicked"), "{err}");
    (text, [expected, back, dropped, queued])
}

#[test]
fn the_demo_accounts_for_every_frame() {
    let dir = Dir::new("two");
    let (text, _) = run_and_check(&["--duration", "1", "--dir", dir.arg()]);
    assert!(text.contains("host-mux serving 2 guests"), "{text}");
}

#[test]
fn more_guests_answer_broadcasts_and_every_echo_is_accounted_for() {
    let dir = Dir::new("four");
    let (text, [expected, ..]) = run_and_check(&[
        "--guests",
        "4",
        "--rate",
        "20000",
        "--size",
        "60",
        "--duration",
        "1",
        "--dir",
        dir.arg(),
    ]);
    // Each broadcast (every 64th frame) asks for an echo from each of the 4 guests.
    let offered: u64 = text
        .lines()
        .find_map(|l| l.split("s of traffic: offered ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'offered N frames':\n{text}"));
    assert_eq!(
        expected,
        offered - offered / 64 + offered / 64 * 4,
        "{text}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["--guests", "0"][..],
        &["--guests", "17"],
        &["--size", "10"],
        &["--duration", "0"],
        &["--rate", "fast"],
    ] {
        let o = demo(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("error:"),
            "{args:?}"
        );
    }
    let o = demo(&["--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && help.contains("account for"), "{help}");
}

#[test]
fn a_closed_stdout_ends_the_demo_quietly() {
    let dir = Dir::new("pipe");
    let mut c = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-demo"))
            .args(["--duration", "5", "--rate", "1000", "--dir", dir.arg()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("host-mux serving"), "{first}");
    // Nobody reads any more: the next line it prints (within a second) ends it.
    drop(out);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut c.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
