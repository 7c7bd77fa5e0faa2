//! vdpdk-classify through host-mux: the same deterministic mix of EtherTypes is offered twice
//! from the far end of the in-memory wire, once to the app in hw mode (device flow rules to
//! queues) and once in sw mode; both must count exactly the mix.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{output_within, ChildGuard, WIRE_MAC as WIRE};
use vdpdk_core::packet::ether_frame;
use vdpdk_core::{MacAddr, Mbuf, Mempool};

const VM: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x5c]);
/// (EtherType, frames): four classes and one type that is none of them.
const MIX: [(u16, u64); 5] = [
    (0x0800, 4000),
    (0x86dd, 3000),
    (0x0806, 1500),
    (0x88b5, 1000),
    (0x9000, 500),
];

fn frames() -> Vec<Vec<u8>> {
    // Interleaved so every queue is busy at once.
    let mut out = Vec::new();
    let mut left: Vec<u64> = MIX.iter().map(|m| m.1).collect();
    let mut seq = 0;
    while left.iter().any(|&n| n > 0) {
        for (i, (t, _)) in MIX.iter().enumerate() {
            if left[i] > 0 {
                left[i] -= 1;
                out.push(ether_frame(VM, WIRE, *t, seq, 60 + (seq % 200) as usize));
                seq += 1;
            }
        }
    }
    out
}

fn run_mode(
    port: &str,
    mode: &str,
    wire: &mut (Box<dyn vdpdk_core::TxQueue>, Mempool),
) -> serde_json::Value {
    let total: u64 = MIX.iter().map(|m| m.1).sum();
    let mut child = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-classify"))
            .args(["--port", port, "--mode", mode, "--json", "--duration", "30"])
            .args(["--count", &total.to_string()])
            .stdout(Stdio::piped()),
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("ready"), "{mode}: {line}");
    // Paced (64 frames a millisecond) so no RX ring (1024) overflows unless the app does not
    // run for 16 ms; the caller checks host-mux's rx_no_desc to tell that case apart.
    let (tx, pool) = wire;
    let mut batch: Vec<Mbuf> = Vec::with_capacity(64);
    for chunk in frames().chunks(64) {
        for f in chunk {
            let mut m = pool.alloc().unwrap();
            m.copy_from(f).unwrap();
            batch.push(m);
        }
        while !batch.is_empty() {
            tx.tx_burst(&mut batch);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut json = None;
    for l in out.lines() {
        let l = l.unwrap();
        if l.starts_with('{') {
            json = Some(serde_json::from_str(&l).unwrap());
        }
    }
    assert!(
        child.into_inner().wait().unwrap().success(),
        "{mode} failed"
    );
    json.unwrap_or_else(|| panic!("{mode}: no JSON line"))
}

#[test]
fn hardware_and_software_classification_count_the_same_mix() {
    let r = common::pair_mux("classify", VM, 5);
    let port = r.port.clone();
    let mut wire = (r.tx, r.pool);
    let mux = r.mux;
    let no_desc = || mux.guests()[0].stats[vdpdk_core::abi::StatsIndex::RxNoDesc as usize];

    // A run counts exactly the mix unless host-mux dropped frames because the app had no free
    // RX descriptor (it was not scheduled for a while): that drop is counted, so such a run
    // is repeated rather than judged.
    let mut run = |mode: &str| {
        for attempt in 1..=3 {
            let before = no_desc();
            let j = run_mode(&port, mode, &mut wire);
            let dropped = no_desc() - before;
            if dropped == 0 {
                return j;
            }
            eprintln!("{mode} run {attempt}: host-mux counted {dropped} rx_no_desc drops, again");
        }
        panic!("{mode}: every run overflowed the app's RX ring");
    };
    let hw = run("hw");
    let sw = run("sw");
    let want: Vec<u64> = MIX[..4].iter().map(|m| m.1).collect();
    for r in [&hw, &sw] {
        let counts: Vec<u64> = serde_json::from_value(r["counts"].clone()).unwrap();
        assert_eq!(counts, want, "{r}");
        assert_eq!(r["other"], MIX[4].1, "{r}");
        assert!(r["mpps"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(hw["counts"], sw["counts"]);
    eprintln!(
        "hw {:.3} Mpps, sw {:.3} Mpps (paced input: these are the offered rate)",
        hw["mpps"].as_f64().unwrap(),
        sw["mpps"].as_f64().unwrap()
    );
}

#[test]
fn bad_classes_are_refused() {
    for (args, msg) in [
        (
            vec!["--class", "zz", "86dd", "0806", "88b5"],
            "not an EtherType",
        ),
        (
            vec!["--class", "0800", "0800", "0806", "88b5"],
            "must differ",
        ),
        (vec!["--class", "0800", "86dd"], "4 values"),
    ] {
        let o = output_within(
            Command::new(env!("CARGO_BIN_EXE_vdpdk-classify"))
                .args([
                    "--port",
                    "vdpdk:/nonexistent",
                    "--mode",
                    "sw",
                    "--count",
                    "1",
                ])
                .args(&args),
            Duration::from_secs(120),
        );
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(msg), "{args:?}: {e}");
    }
    // A malformed port spec is a bad argument as well.
    let o = output_within(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-classify"))
            .args(["--port", "nic:eth0", "--mode", "sw", "--count", "1"]),
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("expected vdpdk:SOCKET"), "{e}");
}
