//! vdpdk-nf between two guests of host-mux: frames from the wire to the "in" VM come back to
//! the wire from the "out" VM, rewritten as a router would, minus what the access list denies.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::{MacAddr, Mbuf, Mempool};

const WIRE: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const IN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x01]);
const OUT: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x02]);

/// A private directory for the sockets, removed however the test ends.
struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the NF if the test fails before it exits.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4/UDP frame to the "in" VM, 100 bytes, TTL 64, with a valid header checksum.
fn frame(src_ip: [u8; 4], dport: u16, seq: u8) -> Vec<u8> {
    let mut f = vec![0u8; 100];
    f[0..6].copy_from_slice(&IN.0);
    f[6..12].copy_from_slice(&WIRE.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&86u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src_ip);
    f[30..34].copy_from_slice(&[198, 51, 100, 7]);
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[38..40].copy_from_slice(&66u16.to_be_bytes());
    f[42..].fill(seq);
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn nf_forwards_what_the_acl_allows_rewritten_as_a_router_would() {
    let tmp = TempDir::new("vdpdk-nf");
    let dir = &tmp.0;
    let vm = |name: &str, mac| VmConfig {
        name: name.into(),
        socket: dir.join(format!("{name}.sock")),
        mac,
        rx_queues: 1,
        tx_queues: 1,
        cluster: 0,
    };
    let cfg = MuxConfig::new(BackendConfig::Pair, vec![vm("in", IN), vm("out", OUT)]);
    let (mux_end, mut wire) = vdpdk_pair::pair(MacAddr([2, 0, 0, 0, 0, 0xfd]), WIRE, 1, 4096);
    let mux = HostMux::start(&cfg, Box::new(mux_end)).unwrap();
    let pool = Mempool::new("wire", 4096, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (mut wrx, mut wtx) = start_single_queue(&mut wire, &pool, 1024, false).unwrap();

    // 100 frames: every 4th to DNS (denied), every 5th from 10.66.x.x (denied).
    let frames: Vec<Vec<u8>> = (0..100u8)
        .map(|i| {
            let src = if i % 5 == 0 {
                [10, 66, 3, i]
            } else {
                [192, 0, 2, i]
            };
            frame(src, if i % 4 == 0 { 53 } else { 9000 }, i)
        })
        .collect();
    let allowed: Vec<&Vec<u8>> = (0..100)
        .filter(|i| i % 4 != 0 && i % 5 != 0)
        .map(|i| &frames[i])
        .collect();

    let nf = Command::new(env!("CARGO_BIN_EXE_vdpdk-nf"))
        .args(["--in", &format!("vdpdk:{}", dir.join("in.sock").display())])
        .args([
            "--out",
            &format!("vdpdk:{}", dir.join("out.sock").display()),
        ])
        .args(["--next-hop", &WIRE.to_string()])
        .args([
            "--acl",
            "deny proto udp dport 53",
            "--acl",
            "deny src 10.66.0.0/16",
        ])
        .args(["--frames", "100", "--duration", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut nf = Guard(nf);
    // The NF is up when host-mux sees both of its ports running.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mux.guests().iter().all(|g| g.running) {
        assert!(Instant::now() < deadline, "the NF never started its ports");
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut batch: Vec<Mbuf> = Vec::new();
    for f in &frames {
        let mut m = pool.alloc().unwrap();
        m.copy_from(f).unwrap();
        batch.push(m);
        while !batch.is_empty() {
            wtx.tx_burst(&mut batch);
        }
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < allowed.len() && Instant::now() < deadline {
        if wrx.rx_burst(&mut buf, 32) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        got.extend(buf.drain(..).map(|m| m.data().to_vec()));
    }
    let out = nf.0.wait_with_output_guarded();
    assert!(out.status.success(), "{out:?}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary
            .contains("received 100 forwarded 60 acl-denied 40 not-ipv4 0 ttl-expired 0 tx-full 0"),
        "{summary}"
    );
    assert_eq!(got.len(), allowed.len(), "forwarded frames on the wire");
    for (g, sent) in got.iter().zip(&allowed) {
        assert_eq!(&g[0..6], &WIRE.0, "to the next hop");
        assert_eq!(&g[6..12], &OUT.0, "from the out port");
        assert_eq!(g[22], 63, "TTL decremented");
        assert_eq!(checksum(&g[14..34]), 0, "IPv4 header checksum still right");
        assert_eq!(g[23], sent[23], "protocol untouched");
        assert_eq!(
            &g[26..],
            &sent[26..],
            "addresses, ports and payload untouched"
        );
    }
}

/// `wait_with_output` on the guarded child, leaving the guard with a reaped child.
trait WaitGuarded {
    fn wait_with_output_guarded(&mut self) -> std::process::Output;
}
impl WaitGuarded for Child {
    fn wait_with_output_guarded(&mut self) -> std::process::Output {
        use std::io::Read;
        let mut stdout = Vec::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_end(&mut stdout);
        }
        let status = self.wait().unwrap();
        std::process::Output {
            status,
            stdout,
            stderr: Vec::new(),
        }
    }
}

#[test]
fn bad_arguments_are_refused_with_exit_2() {
    for args in [
        vec![
            "--in",
            "nope:x",
            "--out",
            "vdpdk:/x",
            "--next-hop",
            "02:00:00:00:00:01",
        ],
        vec!["--in", "vdpdk:/x", "--out", "vdpdk:/y", "--next-hop", "zz"],
        vec![
            "--in",
            "vdpdk:/x",
            "--out",
            "vdpdk:/y",
            "--next-hop",
            "02:00:00:00:00:01",
            "--acl",
            "permit all",
        ],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_vdpdk-nf"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
    }
}
