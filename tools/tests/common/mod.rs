//! Shared by the tools' network tests: host-mux on a TAP backend whose interface lives in a
//! private network namespace (the "outside world" a guest talks to).
#![allow(dead_code)]

use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use vdpdk_core::MacAddr;

pub const GUEST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x71]);

/// A network namespace holding the TAP interface, deleted on drop.
pub struct Netns(pub String);
impl Netns {
    /// Runs a command in the namespace to its end (killed if it hangs for minutes).
    pub fn exec(&self, args: &[&str]) -> Output {
        output_within(
            Command::new("ip")
                .args(["netns", "exec", &self.0])
                .args(args),
            Duration::from_secs(300),
        )
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

pub struct Setup {
    pub mux: HostMux,
    pub ns: Netns,
    pub sock: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// host-mux on a TAP interface living in a fresh namespace with address 10.<net>.0.1/24.
pub fn setup(tag: &str, net: u8) -> Setup {
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing: .ci/run creates it; run as root"
    );
    let id = std::process::id() % 10_000;
    let dir = std::env::temp_dir().join(format!("vdpdk-smol-{tag}-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ifname = format!("vsm{tag}{id}");
    let tap = vdpdk_tap::TapPort::open(&ifname, None).expect("open TAP (root?)");
    let sock = dir.join("g.sock");
    let cfg = MuxConfig {
        idle_polls: 256,
        pool_size: 4096,
        ..MuxConfig::new(
            BackendConfig::Tap {
                ifname: ifname.clone(),
            },
            vec![VmConfig {
                name: "g".into(),
                socket: sock.clone(),
                mac: GUEST_MAC,
                rx_queues: 1,
                tx_queues: 1,
                cluster: 0,
            }],
        )
    };
    let mux = HostMux::start(&cfg, Box::new(tap)).expect("host-mux");
    let ns = Netns(format!("vdpdk-smol-{tag}-{id}"));
    let _ = Command::new("ip").args(["netns", "del", &ns.0]).status();
    ip(&["netns", "add", &ns.0]);
    // The TAP keeps working when its interface moves: host-mux holds the queue fd.
    ip(&["link", "set", &ifname, "netns", &ns.0]);
    let addr = format!("10.{net}.0.1/24");
    for a in [
        vec!["addr", "add", addr.as_str(), "dev", ifname.as_str()],
        vec!["link", "set", ifname.as_str(), "up"],
        vec!["link", "set", "lo", "up"],
    ] {
        let mut args = vec!["ip"];
        args.extend(a);
        let o = ns.exec(&args);
        assert!(o.status.success(), "{args:?}: {o:?}");
    }
    Setup {
        mux,
        ns,
        sock,
        _dir: TempDir(dir),
    }
}

/// A child process that is killed and reaped when dropped, so a test that fails (panics)
/// while it runs leaves nothing behind. Every process a test spawns goes into one.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let what = format!("{cmd:?}");
        ChildGuard(Some(
            cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}")),
        ))
    }

    /// The child, to wait for it to end on its own; nothing kills it any more.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("child present until dropped")
    }
}

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("child present until dropped")
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until dropped")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Kills a child process and reaps it.
pub fn finish(c: ChildGuard) {
    drop(c);
}

/// Runs a command to its end like `Command::output`, in a [`ChildGuard`]. `limit` is a guard
/// against a hung child (it is killed and the test fails), not a measurement: give it ample
/// room.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut c = ChildGuard::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(c.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(c.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = c.try_wait().expect("wait for child") {
            break st;
        }
        assert!(
            t0.elapsed() < limit,
            "{cmd:?} still running after {limit:?}: killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(c);
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// host-mux on the in-memory wire serving one VM (`mac`, `queues` RX and TX queues), with the
/// wire's far end started (one queue) for the test to drive.
pub struct PairRig {
    pub mux: HostMux,
    pub rx: Box<dyn vdpdk_core::RxQueue>,
    pub tx: Box<dyn vdpdk_core::TxQueue>,
    pub pool: vdpdk_core::Mempool,
    /// The VM's port spec (`vdpdk:SOCKET`).
    pub port: String,
    /// The far end must outlive its queues.
    _far: vdpdk_pair::PairPort,
    _dir: TempDir,
}

pub const WIRE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);

pub fn pair_mux(tag: &str, mac: MacAddr, queues: u16) -> PairRig {
    let dir = std::env::temp_dir().join(format!("vdpdk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("vm.sock");
    let cfg = MuxConfig {
        idle_polls: 256,
        pool_size: 16384,
        ..MuxConfig::new(
            BackendConfig::Pair,
            vec![VmConfig {
                name: tag.into(),
                socket: sock.clone(),
                mac,
                rx_queues: queues,
                tx_queues: queues,
                cluster: 0,
            }],
        )
    };
    let (mux_end, mut far) = vdpdk_pair::pair(MacAddr([2, 0, 0, 0, 0, 0xfd]), WIRE_MAC, 1, 8192);
    let mux = HostMux::start(&cfg, Box::new(mux_end)).expect("host-mux");
    let pool = vdpdk_core::Mempool::new("wire", 16384, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let (rx, tx) =
        vdpdk_core::ethdev::start_single_queue(&mut far, &pool, 1024, false).expect("wire");
    PairRig {
        mux,
        rx,
        tx,
        pool,
        port: format!("vdpdk:{}", sock.display()),
        _far: far,
        _dir: TempDir(dir),
    }
}
