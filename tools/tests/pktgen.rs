//! vdpdk-pktgen through host-mux: the generator attaches as a guest, the far end of the
//! in-memory wire reflects, and the generator accounts for every frame it sent (back, or
//! dropped where a counter says so) and reports a latency histogram; the rate sweep
//! terminates. Nothing here asserts a rate: a loaded machine may offer less than asked, and
//! then pktgen must say so.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::output_within;
use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use vdpdk_core::abi::StatsIndex;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::{MacAddr, Mempool};

fn pktgen(args: &[&str]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-pktgen")).args(args),
        Duration::from_secs(300),
    )
}

/// Sets the flag when dropped: stops the reflector thread also when the test fails.
struct StopOnDrop(Arc<AtomicBool>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn generator_accounts_for_every_frame_through_host_mux_and_the_sweep_terminates() {
    let dir = std::env::temp_dir().join(format!("vdpdk-pktgen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("gen.sock");
    let cfg = MuxConfig {
        idle_polls: 256,
        ..MuxConfig::new(
            BackendConfig::Pair,
            vec![VmConfig {
                name: "gen".into(),
                socket: sock.clone(),
                mac: MacAddr([2, 0, 0, 0, 0, 0x61]),
                rx_queues: 1,
                tx_queues: 1,
                cluster: 0,
            }],
        )
    };
    let (mux_end, mut far) = vdpdk_pair::pair(
        MacAddr([2, 0, 0, 0, 0, 0xfd]),
        MacAddr([2, 0, 0, 0, 0, 0xfe]),
        1,
        4096,
    );
    let mux = HostMux::start(&cfg, Box::new(mux_end)).unwrap();
    // The wire's far end reflects (MACs swapped), losing nothing: a full ring makes it wait.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let reflector = std::thread::spawn(move || {
        let pool = Mempool::new("refl", 4096, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
        let (mut rx, mut tx) = start_single_queue(&mut far, &pool, 1024, false).unwrap();
        let mut buf = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            if rx.rx_burst(&mut buf, 32) == 0 {
                std::thread::sleep(Duration::from_micros(20));
                continue;
            }
            for m in &mut buf {
                let d = m.data_mut();
                let (a, b) = d.split_at_mut(6);
                a.swap_with_slice(&mut b[..6]);
            }
            while !buf.is_empty() && !stop2.load(Ordering::Relaxed) {
                tx.tx_burst(&mut buf);
            }
        }
    });
    let _stop_reflector = StopOnDrop(stop.clone());
    let port = format!("vdpdk:{}", sock.display());

    let out = pktgen(&[
        "gen",
        "--port",
        &port,
        "--rate",
        "50000",
        "--duration",
        "1",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = text
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("a JSON line");
    let n = |k: &str| json[k].as_u64().unwrap_or_else(|| panic!("no {k}: {json}"));
    let (sent, received, dropped) = (n("sent"), n("received"), n("dropped"));
    // Every frame sent is accounted for: it came back or a counter names why not.
    assert!(sent > 0, "{json}");
    assert_eq!(n("unaccounted"), 0, "{json}");
    assert_eq!(received + dropped, sent, "{json}");
    // host-mux saw the same: every frame sent left the generator's TX ring, and what it put
    // into the generator's RX ring is what the generator received.
    let g = &mux.guests()[0];
    let host = |i: StatsIndex| g.stats[i as usize];
    assert_eq!(host(StatsIndex::TxPackets), sent, "{g:?}");
    assert_eq!(host(StatsIndex::RxPackets), received, "{g:?}");
    assert_eq!(host(StatsIndex::RxNoDesc), dropped, "{g:?}");
    // The rate it reached is reported honestly, not asserted.
    let offered = json["offered_pps"].as_f64().expect("offered_pps");
    let reached = json["rate_reached"].as_bool().expect("rate_reached");
    assert_eq!(reached, offered >= 50_000.0 * 0.98, "{json}");
    assert_eq!(
        !reached,
        text.contains("asked 50000 frames/s, offered"),
        "a shortfall is said in words: {text}"
    );
    if received > 0 {
        let lat = &json["latency_ns"];
        let (p50, p99, max) = (
            lat["p50"].as_u64().unwrap(),
            lat["p99"].as_u64().unwrap(),
            lat["max"].as_u64().unwrap(),
        );
        assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{lat}");
    }
    assert!(text.contains("p99.9"), "{text}");

    let out = pktgen(&["gen", "--port", &port, "--sweep", "--duration", "0.3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("step")).count(), 7);
    // Which rate it finds depends on the machine; that it ends with a verdict does not.
    assert!(
        text.contains("sweep: highest rate with < 1% loss")
            || text.contains("sweep: no tested rate had < 1% loss"),
        "{text}"
    );

    stop.store(true, Ordering::Relaxed);
    reflector.join().unwrap();
    drop(mux);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let out = pktgen(&["gen", "--port", "nic:eth0"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed port spec is a bad argument"
    );
    assert!(err(&out).contains("expected vdpdk:SOCKET"), "{}", err(&out));
    let out = pktgen(&["gen", "--port", "tap:x", "--size", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("--size"), "{}", err(&out));
    let out = pktgen(&["gen", "--port", "tap:x", "--duration", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err(&out).contains("vdpdk-pktgen: error: --duration"),
        "{}",
        err(&out)
    );
    let out = pktgen(&["gen", "--port", "vdpdk:/nonexistent.sock"]);
    assert_eq!(out.status.code(), Some(1), "opening fails at run time");
    assert!(
        err(&out).contains("vdpdk-pktgen: error: ") && err(&out).contains("/nonexistent.sock"),
        "{}",
        err(&out)
    );
    for h in ["-h", "--help"] {
        let help = String::from_utf8_lossy(&pktgen(&[h]).stdout).into_owned();
        assert!(help.contains("reflect"), "{help}");
        assert!(help.contains("Generate timestamped traffic"), "{help}");
        assert!(!help.contains("(later)"), "{help}");
    }
}
