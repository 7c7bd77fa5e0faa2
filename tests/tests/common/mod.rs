//! Shared harness: a host-mux on the in-memory pair backend, the far end of its wire, and guest
//! processes driven over stdin/stdout.
#![allow(dead_code)]

pub mod ice;
pub mod raw;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue, TxQueue};

pub const WIRE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);

pub fn mac(last: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, last])
}

/// A private directory for sockets, removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("vdpdk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn sock(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.sock"))
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The far end of the mux's wire: what a switch port would see.
pub struct Wire {
    pub port: vdpdk_pair::PairPort,
    pub rx: Box<dyn RxQueue>,
    pub tx: Box<dyn TxQueue>,
    pub pool: Mempool,
}

impl Wire {
    /// Sends every frame, retrying while the wire is full.
    pub fn send(&mut self, frames: &[Vec<u8>]) {
        let mut batch: Vec<Mbuf> = Vec::with_capacity(32);
        let mut it = frames.iter();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            while batch.len() < 32 {
                let Some(f) = it.next() else { break };
                let mut m = self.pool.alloc().expect("wire pool");
                m.copy_from(f).unwrap();
                batch.push(m);
            }
            if batch.is_empty() {
                return;
            }
            self.tx.tx_burst(&mut batch);
            if !batch.is_empty() {
                assert!(Instant::now() < deadline, "wire stuck");
                std::thread::yield_now();
            }
        }
    }

    /// Receives until `n` frames arrived or `timeout` passed.
    pub fn recv(&mut self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(32);
        let deadline = Instant::now() + timeout;
        while out.len() < n && Instant::now() < deadline {
            if self.rx.rx_burst(&mut buf, 32) == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
            out.extend(buf.drain(..).map(|m| m.to_vec()));
        }
        out
    }
}

pub struct Vm {
    pub name: &'static str,
    pub mac: MacAddr,
    pub rxq: u16,
}

/// Two VMs of one queue each: "g", the one under test, and "peer", its neighbour.
pub fn guest_and_peer(g: MacAddr, peer: MacAddr) -> [Vm; 2] {
    [
        Vm {
            name: "g",
            mac: g,
            rxq: 1,
        },
        Vm {
            name: "peer",
            mac: peer,
            rxq: 1,
        },
    ]
}

/// Starts host-mux on a pair backend serving `vms`, returns it and the wire's far end.
pub fn start_mux(dir: &TempDir, vms: &[Vm]) -> (HostMux, Wire) {
    start_mux_cfg(mux_config(dir, vms))
}

pub fn mux_config(dir: &TempDir, vms: &[Vm]) -> MuxConfig {
    MuxConfig {
        idle_polls: 256,
        pool_size: 16384,
        ..MuxConfig::new(
            BackendConfig::Pair,
            vms.iter()
                .map(|v| VmConfig {
                    name: v.name.into(),
                    socket: dir.sock(v.name),
                    mac: v.mac,
                    rx_queues: v.rxq,
                    tx_queues: 1,
                    cluster: 0,
                })
                .collect(),
        )
    }
}

/// Starts host-mux serving one VM "g" with `mac` and attaches an in-process guest-pmd port
/// to it (not started), for tests that drive the guest side through the ethdev API.
pub fn mux_with_guest(dir: &TempDir, mac: MacAddr) -> (HostMux, Wire, guest_pmd::VdpdkPort) {
    let (mux, wire) = start_mux(
        dir,
        &[Vm {
            name: "g",
            mac,
            rxq: 1,
        }],
    );
    let port = guest_pmd::VdpdkPort::connect(dir.sock("g")).expect("guest-pmd connect");
    (mux, wire, port)
}

/// Starts host-mux on a pair backend with `cfg` (its backend must be `Pair`).
pub fn start_mux_cfg(cfg: MuxConfig) -> (HostMux, Wire) {
    assert_eq!(cfg.backend, BackendConfig::Pair);
    let (mux_end, mut wire_end) =
        vdpdk_pair::pair(MacAddr([2, 0, 0, 0, 0, 0xfd]), WIRE_MAC, 4, 8192);
    let mux = HostMux::start(&cfg, Box::new(mux_end)).expect("host-mux start");
    let pool = Mempool::new("wire", 16384, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (rx, tx) = start_single_queue(&mut wire_end, &pool, 1024, false).unwrap();
    (
        mux,
        Wire {
            port: wire_end,
            rx,
            tx,
            pool,
        },
    )
}

/// A guest process (vdpdk-test-guest) attached to a mux socket.
pub struct GuestProc {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub mac: MacAddr,
}

impl GuestProc {
    pub fn spawn(socket: &Path, rxq: u16) -> GuestProc {
        Self::spawn_with(socket, rxq, 2048)
    }

    /// A guest with `rxq` RX queues and rings of `ring` descriptors.
    pub fn spawn_with(socket: &Path, rxq: u16, ring: u16) -> GuestProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vdpdk-test-guest"))
            .arg(socket)
            .arg(rxq.to_string())
            .arg("1")
            .arg(ring.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn guest");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let mac = line
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("guest did not start: {line}"))
            .trim()
            .parse()
            .unwrap();
        GuestProc {
            child,
            stdin,
            stdout,
            mac,
        }
    }

    /// Sends a command without waiting for the answer.
    pub fn start(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn answer(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    pub fn cmd(&mut self, cmd: &str) -> String {
        self.start(cmd);
        self.answer()
    }

    /// Parses a `RECV total q0:n:digest ...` answer into (count, digest) per queue.
    pub fn parse_recv(ans: &str) -> Vec<(u64, u64)> {
        let mut w = ans.split_whitespace();
        assert_eq!(w.next(), Some("RECV"), "{ans}");
        w.next();
        w.map(|q| {
            let p: Vec<&str> = q.split(':').collect();
            (
                p[1].parse().unwrap(),
                u64::from_str_radix(p[2], 16).unwrap(),
            )
        })
        .collect()
    }

    /// The count of a `SENT n digest` answer.
    pub fn sent(ans: &str) -> u64 {
        let mut w = ans.split_whitespace();
        assert_eq!(w.next(), Some("SENT"), "{ans}");
        w.next().and_then(|n| n.parse().ok()).expect(ans)
    }

    /// Parses `STATS ipackets opackets ierrors oerrors | host [..]`.
    pub fn parse_stats(ans: &str) -> (Vec<u64>, Vec<u64>) {
        let (a, b) = ans.split_once('|').expect(ans);
        let port = a
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        let host = b
            .trim()
            .trim_start_matches("host")
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|x| x.trim().parse().unwrap())
            .collect();
        (port, host)
    }

    pub fn quit(mut self) {
        self.start("quit");
        let _ = self.child.wait();
    }
}

impl Drop for GuestProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Digest of frames in order.
pub fn digest(frames: &[Vec<u8>]) -> u64 {
    let mut d = vdpdk_core::packet::Digest::default();
    frames.iter().for_each(|f| d.add(f));
    d.0
}

/// Waits until `cond` holds (polling), panicking with `what` after `secs`.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
