//! The Prometheus endpoint of host-mux (`mux.metrics_listen`): scraped with curl and parsed
//! with the reference parser (Python's `prometheus_client`, installed by scripts/prereqs.sh),
//! its values equal host-mux's own counters for the traffic passed; other paths get 404 and
//! garbage requests do not end the server.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use host_mux::HostMux;
use serde_json::Value;
use vdpdk_core::abi::{StatsIndex, STATS_NAMES};
use vdpdk_core::packet::udp_frame;

/// Parses exposition text with prometheus_client and returns its families as JSON:
/// [{name, type, help, samples: [{name, labels, value}]}].
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value}
                            for s in f.samples]})
json.dump(out, sys.stdout)
"#;

fn parse_exposition(text: &str) -> Vec<Value> {
    let mut py = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/prereqs.sh installs it)");
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'prometheus_client'"),
        "python3 lacks prometheus_client: run scripts/prereqs.sh (as root) or \
         python3 -m pip install prometheus_client"
    );
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {err}\n{text}"
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `curl -i` of a URL: (status line, headers, body).
fn curl(url: &str) -> (String, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "60", url])
        .output()
        .expect("curl (scripts/prereqs.sh installs it)");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

fn scrape(addr: SocketAddr) -> Vec<Value> {
    let (status, headers, body) = curl(&format!("http://{addr}/metrics"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers
            .lines()
            .any(|h| h
                .eq_ignore_ascii_case("content-type: text/plain; version=0.0.4; charset=utf-8")),
        "{headers}"
    );
    parse_exposition(&body)
}

fn mux_with_metrics(dir: &TempDir) -> (HostMux, Wire) {
    let mut cfg = mux_config(
        dir,
        &[Vm {
            name: "g",
            mac: mac(0x0a),
            rxq: 1,
        }],
    );
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    start_mux_cfg(cfg)
}

/// The one sample named `name` whose labels include `labels`.
fn value(fams: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Value> = fams
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .filter(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0]["value"].as_f64().unwrap()
}

/// The family a sample name belongs to (counters lose `_total` in the parser's model).
fn family<'a>(fams: &'a [Value], sample: &str) -> &'a Value {
    fams.iter()
        .find(|f| {
            f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == sample)
        })
        .unwrap_or_else(|| panic!("no family has {sample}"))
}

#[test]
fn scraped_metrics_parse_and_equal_host_mux_counters() {
    let dir = TempDir::new("metrics");
    let (mux, mut wire) = mux_with_metrics(&dir);
    let addr = mux.metrics_addr().expect("metrics endpoint");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    // Before a guest attaches: the VM is there, detached.
    let fams = scrape(addr);
    let vm = [("vm", "g"), ("mac", "02:00:00:00:00:0a")];
    assert_eq!(value(&fams, "vdpdk_vm_attached", &vm), 0.0);
    assert_eq!(value(&fams, "vdpdk_vm_rx_packets_total", &vm), 0.0);

    let mut g = GuestProc::spawn(&dir.sock("g"), 1);
    // 50 frames for nobody, then 400 for the guest (same queue, same poller: in order).
    let unknown: Vec<Vec<u8>> = (0..50)
        .map(|s| udp_frame(mac(0x77), WIRE_MAC, s, 64))
        .collect();
    let to_g: Vec<Vec<u8>> = (0..400)
        .map(|s| udp_frame(mac(0x0a), WIRE_MAC, s, 60 + (s as usize * 13) % 1400))
        .collect();
    let rx_bytes: usize = to_g.iter().map(Vec::len).sum();
    wire.send(&unknown);
    wire.send(&to_g);
    assert_eq!(
        GuestProc::parse_recv(&g.cmd("recv 400 20000"))[0],
        (400, digest(&to_g))
    );
    assert_eq!(
        GuestProc::sent(&g.cmd(&format!("send 300 200 {WIRE_MAC}"))),
        300
    );
    assert_eq!(wire.recv(300, Duration::from_secs(20)).len(), 300);

    let fams = scrape(addr);
    // Traffic has stopped: what host-mux says now is what the scrape saw.
    let guests = mux.guests();
    let pollers = mux.pollers();
    let backend = mux.backend_stats();

    // Every family is declared, with HELP and TYPE.
    for f in &fams {
        let name = f["name"].as_str().unwrap();
        assert!(
            f["type"] == "counter" || f["type"] == "gauge",
            "{name} has no TYPE: {f}"
        );
        assert!(
            !f["help"].as_str().unwrap().is_empty(),
            "{name} has no HELP"
        );
    }

    // Per VM: every counter equals host-mux's own, and the frames passed are there.
    let gs = &guests[0];
    for (i, name) in STATS_NAMES.iter().enumerate() {
        let sample = format!("vdpdk_vm_{name}_total");
        assert_eq!(family(&fams, &sample)["type"], "counter", "{sample}");
        assert_eq!(value(&fams, &sample, &vm), gs.stats[i] as f64, "{sample}");
    }
    let st = |i: StatsIndex| {
        value(
            &fams,
            &format!("vdpdk_vm_{}_total", STATS_NAMES[i as usize]),
            &vm,
        )
    };
    assert_eq!(st(StatsIndex::RxPackets), 400.0);
    assert_eq!(st(StatsIndex::RxBytes), rx_bytes as f64);
    assert_eq!(st(StatsIndex::TxPackets), 300.0);
    assert_eq!(st(StatsIndex::TxBytes), 300.0 * 200.0);
    for drop in [
        StatsIndex::RxNoDesc,
        StatsIndex::TxBadDesc,
        StatsIndex::RxBadDesc,
        StatsIndex::TxBackendDrop,
        StatsIndex::RxFlowDrop,
        StatsIndex::TxSpoofed,
        StatsIndex::IrqErrors,
        StatsIndex::CtrlErrors,
    ] {
        assert_eq!(st(drop), 0.0, "{drop:?}");
    }
    assert_eq!(value(&fams, "vdpdk_vm_attached", &vm), 1.0);
    assert_eq!(value(&fams, "vdpdk_vm_running", &vm), 1.0);
    assert_eq!(value(&fams, "vdpdk_vm_attaches_total", &vm), 1.0);
    assert_eq!(family(&fams, "vdpdk_vm_attaches_total")["type"], "counter");
    assert_eq!(family(&fams, "vdpdk_vm_running")["type"], "gauge");
    let regions = value(&fams, "vdpdk_vm_dma_regions", &vm);
    assert!(
        regions >= 1.0 && regions == gs.dma_regions as f64,
        "{regions}"
    );

    // Per poller: the settled counters equal host-mux's; the moving ones never run ahead.
    let mut wire_rx = 0.0;
    for p in &pollers {
        let cluster = p.cluster.to_string();
        let pl = [
            ("poller", p.name.as_str()),
            ("role", p.role),
            ("cluster", cluster.as_str()),
        ];
        let v = |n: &str| value(&fams, &format!("vdpdk_poller_{n}_total"), &pl);
        assert_eq!(v("wire_rx"), p.wire_rx as f64);
        assert_eq!(v("wire_tx"), p.wire_tx as f64);
        assert_eq!(v("rx_unknown_dst"), p.rx_unknown_dst as f64);
        assert_eq!(v("rx_guest_stopped"), p.rx_guest_stopped as f64);
        assert_eq!(v("switched"), p.switched as f64);
        assert_eq!(v("tso_segments"), p.tso_segments as f64);
        assert_eq!(v("tso_offloaded"), p.tso_offloaded as f64);
        assert_eq!(v("tx_backpressure"), p.tx_backpressure as f64);
        assert_eq!(v("tx_lent"), p.tx_lent as f64);
        for (n, later) in [
            ("rounds", p.rounds),
            ("empty_rounds", p.empty_rounds),
            ("sleeps", p.sleeps),
        ] {
            assert!(v(n) <= later as f64, "{n}: scraped {} > {later}", v(n));
        }
        assert!(v("rounds") > 0.0);
        assert!(value(&fams, "vdpdk_poller_asleep_seconds_total", &pl) <= p.asleep_ms as f64 / 1e3);
        assert_eq!(value(&fams, "vdpdk_poller_guests", &pl), p.guests as f64);
        wire_rx += v("wire_rx");
    }
    assert_eq!(wire_rx, 450.0);
    let sum = |f: fn(&host_mux::PollerSnapshot) -> u64| pollers.iter().map(f).sum::<u64>();
    assert_eq!(sum(|p| p.wire_tx), 300);
    assert_eq!(sum(|p| p.rx_unknown_dst), 50);

    // The backend NIC: port totals and every queue.
    assert_eq!(
        value(&fams, "vdpdk_backend_info", &[("driver", "pair")]),
        1.0
    );
    assert_eq!(value(&fams, "vdpdk_backend_ipackets_total", &[]), 450.0);
    assert_eq!(value(&fams, "vdpdk_backend_opackets_total", &[]), 300.0);
    for (name, own) in [
        ("ipackets", backend.ipackets),
        ("opackets", backend.opackets),
        ("ibytes", backend.ibytes),
        ("obytes", backend.obytes),
        ("imissed", backend.imissed),
        ("ierrors", backend.ierrors),
        ("oerrors", backend.oerrors),
        ("rx_nombuf", backend.rx_nombuf),
    ] {
        assert_eq!(
            value(&fams, &format!("vdpdk_backend_{name}_total"), &[]),
            own as f64,
            "{name}"
        );
    }
    for (name, own) in [
        ("ipackets", &backend.q_ipackets),
        ("opackets", &backend.q_opackets),
    ] {
        let sample = format!("vdpdk_backend_queue_{name}_total");
        assert!(!own.is_empty(), "the pair backend reports its queues");
        assert_eq!(
            family(&fams, &sample)["samples"].as_array().unwrap().len(),
            own.len()
        );
        for (q, v) in own.iter().enumerate() {
            assert_eq!(
                value(&fams, &sample, &[("queue", &q.to_string())]),
                *v as f64
            );
        }
    }
    g.quit();
}

/// Sends raw bytes and returns whatever comes back before the server closes.
fn raw_request(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = c.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn other_paths_get_404_and_garbage_does_not_stop_the_server() {
    let dir = TempDir::new("metrics-404");
    let (mux, _wire) = mux_with_metrics(&dir);
    let addr = mux.metrics_addr().unwrap();

    let (status, _, body) = curl(&format!("http://{addr}/"));
    assert!(status.starts_with("HTTP/1.1 404 "), "{status}");
    assert!(body.contains("/metrics"), "{body}");
    let (status, _, _) = curl(&format!("http://{addr}/metrics/x"));
    assert!(status.starts_with("HTTP/1.1 404 "), "{status}");

    // Garbage, a TLS hello, an endless header, a client that says nothing, one that leaves
    // mid-request.
    assert!(raw_request(addr, b"\x00\xffgarbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
    assert!(raw_request(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"
    )
    .starts_with("HTTP/1.1 400 "));
    let endless = [b"GET /metrics HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 20000]].concat();
    assert!(raw_request(addr, &endless).starts_with("HTTP/1.1 431 "));
    let silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /metr").unwrap();
    drop(half);

    // The next scrape is served (after the silent client's time is up) and parses.
    let fams = scrape(addr);
    assert_eq!(value(&fams, "vdpdk_vm_attached", &[("vm", "g")]), 0.0);
    drop(silent);
    // And another after that.
    assert!(!scrape(addr).is_empty());
    mux.shutdown();
    assert!(
        TcpStream::connect(addr).is_err(),
        "the endpoint closes with host-mux"
    );
}
