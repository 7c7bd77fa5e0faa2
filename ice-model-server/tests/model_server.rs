//! `ice-model-server` as its users meet it: clients one after another (each finds a card fresh
//! from power-on), a stale socket file from a killed server, a second server on a live socket,
//! and SIGTERM/SIGINT, after which no socket file is left behind.

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ice_driver::{ddp, DdpSource, IcePort};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{EthDev, MacAddr, Mempool, RxQueue, TxQueue};

/// A hang guard only: nothing here is expected to take more than a fraction of it.
const PATIENCE: Duration = Duration::from_secs(60);

const CARD_MAC: MacAddr = MacAddr([0x00, 0x1b, 0x21, 0x5e, 0x55, 0x01]);
const PEER_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x77]);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("ice-ms-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An `ice-model-server` process, killed (and reaped) on drop; its stderr goes to a file.
struct ModelServer {
    child: Child,
    log: PathBuf,
}

impl ModelServer {
    /// Starts the server on `socket` with extra arguments, stderr to `log`.
    fn spawn(socket: &Path, log: PathBuf, extra: &[&str]) -> ModelServer {
        let child = Command::new(env!("CARGO_BIN_EXE_ice-model-server"))
            .arg("--socket")
            .arg(socket)
            .args(["--mac", &CARD_MAC.to_string()])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        ModelServer { child, log }
    }

    /// Waits until the server accepts connections on `socket` (or fails the test if it exits).
    fn wait_listening(&mut self, socket: &Path) {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "server exited with {st} before listening:\n{}",
                    self.stderr()
                );
            }
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                // That probe was a client too; the server serves it and waits for the next.
                return;
            }
            assert!(t0.elapsed() < PATIENCE, "server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t0.elapsed() < PATIENCE, "server did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client has after bring-up: the port, its pool and one started queue pair.
struct Client {
    port: IcePort,
    pool: Mempool,
    rx: Box<dyn RxQueue>,
    tx: Box<dyn TxQueue>,
}

impl Client {
    /// Brings the card up as host-mux does: the ice driver opens it over the socket (PF
    /// reset, admin queue, DDP download, VSI), then one queue pair starts (scheduler branch,
    /// add_txqs, RX context).
    fn bring_up(socket: &Path, n: u64) -> Client {
        let pci = Arc::new(vdpdk_pci::VfioUserPci::connect(socket).expect("connect"));
        let mut port = IcePort::open_with(pci, DdpSource::Bytes(ddp::synthetic_package(5)))
            .unwrap_or_else(|e| panic!("client {n}: bring-up failed: {e}"));
        assert_eq!(port.info().mac, CARD_MAC);
        assert_eq!(port.info().max_rx_queues, 64, "client {n}: package loaded");
        let pool = Mempool::new("model-server", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
        let (rx, tx) = start_single_queue(&mut port, &pool, 256, false)
            .unwrap_or_else(|e| panic!("client {n}: start failed: {e}"));
        Client { port, pool, rx, tx }
    }

    fn send(&mut self, frame: &[u8]) {
        let mut m = self.pool.alloc().unwrap();
        m.copy_from(frame).unwrap();
        let mut batch = vec![m];
        while !batch.is_empty() {
            self.tx.tx_burst(&mut batch);
        }
    }

    /// Stops the port and disconnects.
    fn leave(self) {
        let Client {
            mut port, rx, tx, ..
        } = self;
        drop((rx, tx));
        port.stop().unwrap();
    }
}

/// One client session: bring-up, a frame out of the card's wire and one in from it, leave.
fn session(socket: &Path, wire: &UnixDatagram, card_wire: &Path, n: u64) {
    let mut c = Client::bring_up(socket, n);
    // Out of the card: the frame arrives on the test's end of the wire, byte for byte.
    let out = udp_frame(PEER_MAC, CARD_MAC, n, 200 + n as usize);
    c.send(&out);
    let mut buf = vec![0u8; 16384];
    let len = wire.recv(&mut buf).expect("frame from the card");
    assert_eq!(&buf[..len], &out[..], "client {n}: transmitted frame");

    // Into the card: sent on the wire until the driver sees it (a frame that reaches the
    // model before its RX queue runs is dropped, as on a cable).
    let inbound = udp_frame(CARD_MAC, PEER_MAC, 1000 + n, 300);
    let mut got = Vec::new();
    let t0 = Instant::now();
    let mut last_send = None::<Instant>;
    while got.is_empty() {
        assert!(t0.elapsed() < PATIENCE, "client {n}: nothing received");
        if last_send.is_none_or(|t| t.elapsed() > Duration::from_millis(200)) {
            wire.send_to(&inbound, card_wire).unwrap();
            last_send = Some(Instant::now());
        }
        if c.rx.rx_burst(&mut got, 32) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(got[0].data(), &inbound[..], "client {n}: received frame");
    drop(got);
    c.leave();
}

/// The test's end of the model's datagram cable.
fn wire_end(dir: &TempDir) -> UnixDatagram {
    let w = UnixDatagram::bind(dir.path("test.wire")).unwrap();
    w.set_read_timeout(Some(PATIENCE)).unwrap();
    w
}

fn cable_args(dir: &TempDir) -> Vec<String> {
    vec![
        "--wire-local".into(),
        dir.path("card.wire").display().to_string(),
        "--wire-peer".into(),
        dir.path("test.wire").display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn clients_in_sequence_each_find_a_card_fresh_from_power_on() {
    let dir = TempDir::new("seq");
    let sock = dir.path("e810.sock");
    let wire = wire_end(&dir);
    let args = cable_args(&dir);
    let mut server = ModelServer::spawn(&sock, dir.path("server.log"), &strs(&args));
    server.wait_listening(&sock);
    session(&sock, &wire, &dir.path("card.wire"), 1);
    // A client that dies in the middle of a message: the server says so and goes on.
    let mut broken = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    broken.write_all(&[0u8; 8]).unwrap();
    drop(broken);
    session(&sock, &wire, &dir.path("card.wire"), 2);
    session(&sock, &wire, &dir.path("card.wire"), 3);
    server.signal(libc::SIGTERM);
    let st = server.wait_exit();
    let log = server.stderr();
    assert!(st.success(), "exit {st} after SIGTERM:\n{log}");
    assert!(!sock.exists(), "socket removed at SIGTERM");
    // Five clients (the readiness probe, three sessions, the broken one), each followed by
    // a power-on reset; the clean ones at info, the broken one at warn, no errors. (The last
    // one's line may not be written yet when SIGTERM arrives.)
    assert!(!log.contains("ERROR"), "disconnects are no errors:\n{log}");
    let resets = log
        .matches("the card is back in its power-on state")
        .count();
    assert!((4..=5).contains(&resets), "each departure logged:\n{log}");
    let broken = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("connection broken"))
        .count();
    assert_eq!(broken, 1, "{log}");
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let dir = TempDir::new("stale");
    let sock = dir.path("e810.sock");
    // A socket file nobody listens on, as a killed server leaves it.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let wire = wire_end(&dir);
    let args = cable_args(&dir);
    let mut server = ModelServer::spawn(&sock, dir.path("server.log"), &strs(&args));
    server.wait_listening(&sock);
    session(&sock, &wire, &dir.path("card.wire"), 1);

    // A second server on the live socket refuses to start, naming it, and leaves it alone.
    let mut second = ModelServer::spawn(&sock, dir.path("second.log"), &[]);
    let st = second.wait_exit();
    let msg = second.stderr();
    assert!(!st.success(), "second server must fail");
    assert!(
        msg.contains("another server is listening") && msg.contains(sock.to_str().unwrap()),
        "{msg}"
    );
    session(&sock, &wire, &dir.path("card.wire"), 2);

    // A path that is not a socket is never replaced.
    let file = dir.path("not-a-socket");
    std::fs::write(&file, b"data").unwrap();
    let mut third = ModelServer::spawn(&file, dir.path("third.log"), &[]);
    let st = third.wait_exit();
    assert!(!st.success());
    assert!(
        third.stderr().contains("not a socket"),
        "{}",
        third.stderr()
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"data");

    server.signal(libc::SIGINT);
    let st = server.wait_exit();
    assert!(st.success(), "exit {st} after SIGINT:\n{}", server.stderr());
    assert!(!sock.exists(), "socket removed at SIGINT");
}

#[test]
fn sigterm_while_a_client_is_attached_removes_the_socket() {
    let dir = TempDir::new("term");
    let sock = dir.path("e810.sock");
    let mut server = ModelServer::spawn(&sock, dir.path("server.log"), &[]);
    server.wait_listening(&sock);
    let pci = Arc::new(vdpdk_pci::VfioUserPci::connect(&sock).unwrap());
    let port = IcePort::open_with(pci, DdpSource::None).unwrap();
    server.signal(libc::SIGTERM);
    let st = server.wait_exit();
    assert!(st.success(), "exit {st}:\n{}", server.stderr());
    assert!(!sock.exists(), "socket removed");
    drop(port);
}

#[test]
fn wire_tap_cables_the_card_to_a_linux_tap() {
    let dir = TempDir::new("tap");
    let sock = dir.path("e810.sock");
    let ifname = format!("imst{}", std::process::id() % 100_000);
    let mut server = ModelServer::spawn(
        &sock,
        dir.path("server.log"),
        &["--wire-tap", ifname.as_str()],
    );
    server.wait_listening(&sock);
    let counter = format!("/sys/class/net/{ifname}/statistics/rx_packets");
    let kernel_rx = || -> u64 {
        std::fs::read_to_string(&counter)
            .unwrap_or_else(|e| panic!("{counter}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    // The server creates the interface right after binding its socket.
    let t0 = Instant::now();
    while !Path::new(&counter).exists() {
        assert!(t0.elapsed() < PATIENCE, "{ifname} never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = kernel_rx();
    let mut c = Client::bring_up(&sock, 1);
    for s in 0..3 {
        c.send(&udp_frame(PEER_MAC, CARD_MAC, s, 100));
    }
    // What the card transmits, the kernel receives on the TAP.
    let t0 = Instant::now();
    while kernel_rx() < before + 3 {
        assert!(t0.elapsed() < PATIENCE, "frames never reached {ifname}");
        std::thread::sleep(Duration::from_millis(5));
    }
    c.leave();
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.stderr());
    assert!(!sock.exists());
}
