//! The TAP forwarder in a guest process: Linux's ping and iperf3 run between two network
//! namespaces whose only path is guest TAP → vdpdk-tapfwd → vDPDK → host-mux → host TAP.
//! Needs root, /dev/net/tun, iproute2, ping and iperf3 (.ci/run installs them).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{finish, setup, ChildGuard, Netns};

/// iperf3's JSON summary: (bytes the sender sent, bytes the receiver received).
fn iperf_bytes(json: &str) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(json).expect("iperf3 JSON");
    let end = &v["end"];
    let n = |k: &str| {
        end[k]["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no end.{k}: {json}"))
    };
    (n("sum_sent"), n("sum_received"))
}

fn iperf(inside: &Netns, outside: &Netns, reverse: bool) -> (u64, u64) {
    // A server for any number of tests (a failed attempt must not leave it waiting forever),
    // killed when the measurement is done or the test fails (`ip netns exec` execs iperf3,
    // so the guard's pid is the server's).
    let server = ChildGuard::spawn(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &outside.0,
                "iperf3",
                "-s",
                "-B",
                "10.94.0.1",
            ])
            .stdout(Stdio::null()),
    );
    // Every client run is bounded (a stalled TCP connection would otherwise wait forever).
    // It is refused until the server listens, which on a busy 2-core host takes a while, so
    // retry; a run only counts when its JSON carries no error.
    let mut args = vec![
        "timeout",
        "30",
        "iperf3",
        "-c",
        "10.94.0.1",
        "-t",
        "2",
        "--connect-timeout",
        "3000",
        "--json",
    ];
    if reverse {
        args.push("-R");
    }
    let mut text = String::new();
    let mut ok = false;
    for attempt in 0..20 {
        let o = inside.exec(&args);
        text = String::from_utf8_lossy(&o.stdout).into_owned();
        // iperf3 3.12 may exit 0 with {"error": "unable to connect ..."} in its JSON.
        let failed = serde_json::from_str::<serde_json::Value>(&text)
            .map_or(true, |v| v.get("error").is_some());
        if o.status.success() && !failed {
            ok = true;
            break;
        }
        if !text.contains("unable to connect") || attempt > 0 {
            eprintln!(
                "iperf3 {args:?} attempt {attempt} failed ({}): {text}",
                o.status
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    finish(server);
    assert!(ok, "iperf3 {args:?} never succeeded: {text}");
    iperf_bytes(&text)
}

#[test]
fn ping_and_iperf3_cross_the_tap_forwarder_through_host_mux() {
    let s = setup("f", 94);
    let inside = Netns(format!("vdpdk-fwd-in-{}", std::process::id() % 10_000));
    let _ = Command::new("ip")
        .args(["netns", "del", &inside.0])
        .status();
    common::ip(&["netns", "add", &inside.0]);
    let mut fwd = ChildGuard::spawn(
        Command::new("ip")
            .args(["netns", "exec", &inside.0])
            .arg(env!("CARGO_BIN_EXE_vdpdk-tapfwd"))
            .arg("--port")
            .arg(format!("vdpdk:{}", s.sock.display()))
            .args(["--ifname", "vfwd0", "--duration", "60"])
            .stdout(Stdio::piped()),
    );
    let mut out = BufReader::new(fwd.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.contains("ready") && line.contains(&common::GUEST_MAC.to_string()),
        "{line}"
    );
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    for cmd in [
        vec!["ip", "addr", "add", "10.94.0.2/24", "dev", "vfwd0"],
        vec!["ip", "link", "set", "lo", "up"],
    ] {
        let o = inside.exec(&cmd);
        assert!(o.status.success(), "{cmd:?}: {o:?}");
    }

    let o = inside.exec(&["ping", "-c", "5", "-i", "0.2", "-W", "5", "10.94.0.1"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("5 received"),
        "ping: {text}"
    );

    // TCP both ways; the kernel hands the forwarder 64 KiB super-frames and partial checksums,
    // so bytes only arrive if segmentation and checksums are right.
    let (sent, received) = iperf(&inside, &s.ns, false);
    assert!(
        sent > 1_000_000 && received > 0,
        "inside→outside: sent {sent}, received {received}"
    );
    let (sent_r, received_r) = iperf(&inside, &s.ns, true);
    assert!(
        sent_r > 1_000_000 && received_r > 0,
        "outside→inside: sent {sent_r}, received {received_r}"
    );
    eprintln!(
        "iperf3 2 s: inside→outside {:.0} Mbit/s, outside→inside {:.0} Mbit/s",
        received as f64 * 8.0 / 2e6,
        received_r as f64 * 8.0 / 2e6
    );
    // host-mux saw the same traffic: both directions of the guest counted, nothing refused.
    let g = &s.mux.guests()[0];
    assert!(
        g.stats[0] > 1000 && g.stats[3] > 1000,
        "host-mux counters: {g:?}"
    );
    assert_eq!(g.stats[5] + g.stats[7], 0, "bad descriptors: {g:?}");
    // The vDPDK port offers TSO, so the kernel's super-frames went to host-mux whole and
    // were cut there.
    let cut: u64 = s.mux.pollers().iter().map(|p| p.tso_segments).sum();
    assert!(cut > 1000, "host-mux cut {cut} TSO segments");
    finish(fwd);
}
