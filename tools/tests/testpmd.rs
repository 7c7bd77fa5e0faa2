//! vdpdk-testpmd through host-mux on the in-memory wire: macswap returns every frame with its
//! MACs swapped and payload intact; txonly's frames reach the wire; flow rules and offloads are
//! applied or refused with clear messages.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{output_within, ChildGuard, PairRig, WIRE_MAC as WIRE};
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mbuf};

const VM: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x3d]);

fn rig(tag: &str, queues: u16) -> PairRig {
    common::pair_mux(&format!("testpmd-{tag}"), VM, queues)
}

/// Starts testpmd and waits for its "Start ... forwarding" line; returns it (killed if the
/// test fails before stopping it) and the lines so far.
fn testpmd(
    args: &[&str],
) -> (
    ChildGuard,
    BufReader<std::process::ChildStdout>,
    Vec<String>,
) {
    let mut running = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-testpmd"))
            .args(args)
            .stdout(Stdio::piped()),
    );
    let stdout = running.stdout.take().unwrap();
    let mut out = BufReader::new(stdout);
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).unwrap() > 0,
            "testpmd exited: {lines:?}"
        );
        lines.push(l.trim().to_string());
        if l.starts_with("Start ") {
            return (running, out, lines);
        }
    }
}

/// Sends SIGINT (Ctrl-C) and returns the final JSON line.
fn stop(mut c: ChildGuard, out: BufReader<std::process::ChildStdout>) -> serde_json::Value {
    // SAFETY: kill(2) on our own child's pid, which the guard has not reaped.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let mut json = None;
    for l in out.lines() {
        let l = l.unwrap();
        if l.starts_with('{') {
            json = Some(serde_json::from_str(&l).unwrap());
        }
    }
    assert!(
        c.wait().unwrap().success(),
        "testpmd did not exit cleanly on Ctrl-C"
    );
    json.expect("final JSON")
}

#[test]
fn macswap_returns_every_frame_swapped_and_intact() {
    let mut r = rig("swap", 1);
    let (c, out, _) = testpmd(&[
        "--port",
        &r.port,
        "--forward-mode",
        "macswap",
        "--stats-period",
        "0",
        "--json",
    ]);
    let n = 5000u64;
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|s| udp_frame(VM, WIRE, s, 60 + (s % 900) as usize))
        .collect();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf: Vec<Mbuf> = Vec::new();
    let mut batch: Vec<Mbuf> = Vec::new();
    // At most WINDOW frames are in flight, fewer than any ring on the way holds, so however
    // late the scheduler runs testpmd none can overflow (and every frame must come back).
    const WINDOW: usize = 512;
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < frames.len() && Instant::now() < deadline {
        while next < frames.len() && next - got.len() < WINDOW {
            let mut m = r.pool.alloc().unwrap();
            m.copy_from(&frames[next]).unwrap();
            batch.push(m);
            next += 1;
            if batch.len() == 64 {
                break;
            }
        }
        while !batch.is_empty() {
            r.tx.tx_burst(&mut batch);
        }
        if r.rx.rx_burst(&mut buf, 64) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        got.extend(buf.drain(..).map(|m| m.data().to_vec()));
    }
    assert_eq!(got.len() as u64, n, "host-mux: {:?}", r.mux.guests()[0]);
    for (f, g) in frames.iter().zip(&got) {
        assert_eq!(&g[..6], &f[6..12], "dst is the old src");
        assert_eq!(&g[6..12], &f[..6], "src is the old dst");
        assert_eq!(&g[12..], &f[12..], "payload intact");
    }
    let j = stop(c, out);
    let p = &j["ports"][0];
    assert_eq!(p["rx_packets"], n, "{j}");
    assert_eq!(p["tx_packets"], n, "{j}");
    assert_eq!(p["tx_dropped"], 0, "{j}");
}

#[test]
fn txonly_frames_reach_the_wire_and_counts_agree_with_host_mux() {
    let mut r = rig("tx", 1);
    let (c, out, _) = testpmd(&[
        "--port",
        &r.port,
        "--forward-mode",
        "txonly",
        "--txpkts",
        "128",
        "--stats-period",
        "0",
        "--json",
        "--eth-peer",
        "02:00:00:00:00:fe",
    ]);
    let mut seen = 0u64;
    let mut buf: Vec<Mbuf> = Vec::new();
    // Until a few thousand frames were seen (however slowly a loaded machine runs testpmd).
    let t0 = Instant::now();
    while seen < 3000 && t0.elapsed() < Duration::from_secs(60) {
        r.rx.rx_burst(&mut buf, 64);
        for m in buf.drain(..) {
            assert_eq!(m.data().len(), 128);
            assert_eq!(&m.data()[..6], &WIRE.0, "to --eth-peer");
            assert_eq!(&m.data()[6..12], &VM.0, "from the port's MAC");
            seen += 1;
        }
    }
    let j = stop(c, out);
    let sent = j["ports"][0]["tx_packets"].as_u64().unwrap();
    assert!(
        seen > 1000 && sent >= seen,
        "testpmd sent {sent}, the wire saw {seen}"
    );
    // Everything testpmd counted as sent went into the guest's TX ring; host-mux took all of
    // it but what was still in flight (at most one ring) when testpmd stopped.
    let host = r.mux.guests()[0].stats[3];
    assert!(
        seen <= host && host <= sent && sent - host <= 1024,
        "testpmd {sent}, host-mux {host}, wire {seen}"
    );
}

#[test]
fn flow_rules_are_created_and_bad_input_is_refused() {
    let r = rig("flow", 2);
    let (c, out, lines) = testpmd(&[
        "--port",
        &r.port,
        "--forward-mode",
        "rxonly",
        "--rxq",
        "2",
        "--txq",
        "2",
        "--stats-period",
        "0",
        "--json",
        "--flow",
        "pattern eth type is 0x88b5 / end actions queue index 1 / end",
    ]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Flow rule #") && l.contains("0x88b5")),
        "{lines:?}"
    );
    stop(c, out);

    let run = |args: &[&str]| {
        let o = output_within(
            Command::new(env!("CARGO_BIN_EXE_vdpdk-testpmd")).args(args),
            Duration::from_secs(120),
        );
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, e) = run(&[
        "--port",
        &r.port,
        "--flow",
        "eth typo is 1 / end actions drop / end",
    ]);
    assert_eq!(code, Some(2));
    assert!(e.contains("'eth' has no field 'typo'"), "{e}");
    let (code, e) = run(&["--port", "nic:eth0"]);
    assert_eq!(code, Some(2), "a malformed port spec is a bad argument");
    assert!(e.contains("expected vdpdk:SOCKET"), "{e}");
    let (code, e) = run(&["--port", &r.port, "--tx-offloads", "teleport"]);
    assert_eq!(code, Some(2));
    assert!(
        e.contains("vdpdk-testpmd: error: ") && e.contains("unknown offload 'teleport'"),
        "{e}"
    );
    // The vDPDK port offers no UDP segmentation: asking for it is refused when the port is
    // configured.
    let (code, e) = run(&[
        "--port",
        &r.port,
        "--tx-offloads",
        "udp_tso",
        "--duration",
        "1",
    ]);
    assert_eq!(code, Some(1));
    assert!(e.contains("UDP_TSO"), "{e}");
    // A rule the device cannot apply (queue 7 of 2) is refused by validate.
    let (code, e) = run(&[
        "--port",
        &r.port,
        "--rxq",
        "2",
        "--txq",
        "2",
        "--duration",
        "1",
        "--flow",
        "eth type is 0x88b5 / end actions queue index 7 / end",
    ]);
    assert_eq!(code, Some(1));
    assert!(e.contains("refuses --flow"), "{e}");
    let (code, e) = run(&[
        "--port",
        &r.port,
        "--rxq",
        "2",
        "--txq",
        "1",
        "--forward-mode",
        "io",
    ]);
    assert_eq!(code, Some(2));
    assert!(e.contains("--txq >= --rxq"), "{e}");
}
