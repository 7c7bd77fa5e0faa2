//! The host-mux binary: runs on a config file and exits cleanly; refuses bad configs naming
//! the bad key.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_host-mux"))
}

/// A private directory, removed however the test ends.
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

#[test]
fn runs_the_pair_config_and_exits_cleanly() {
    let tmp = TempDir::new("vdpdk-cli");
    let dir = tmp.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("mux.toml");
    std::fs::write(
        &cfg,
        format!(
            "[backend]\nkind = \"pair\"\n[[vm]]\nname = \"vm1\"\nsocket = \"{}/vm1.sock\"\nmac = \"02:00:00:00:00:01\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = bin()
        .env("RUST_LOG", "info")
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--duration",
            "1",
            "--stats-interval",
            "0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("vm1: serving"), "{err}");
    assert!(!dir.join("vm1.sock").exists(), "socket removed at exit");
}

#[test]
fn bad_config_names_the_key() {
    let tmp = TempDir::new("vdpdk-cli-bad");
    let dir = tmp.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        "[backend]\nkind = \"pair\"\n[[vm]]\nname = \"vm1\"\nsocket = \"/tmp/x.sock\"\nmac = \"02:00:00:00:00\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("vm[0].mac"), "{err}");
    let out = bin()
        .args(["--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
    let help = bin().arg("--help").output().unwrap();
    let h = String::from_utf8_lossy(&help.stdout);
    assert!(h.contains("--config") && h.contains("vfio-user-pci"), "{h}");
}

/// A host-mux process, killed and reaped if the test ends early.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn metrics_listen_flag_overrides_the_config_and_serves_metrics() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::Stdio;
    use std::time::Duration;

    let tmp = TempDir::new("vdpdk-cli-metrics");
    let dir = tmp.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    // The config names an address that is taken, so only the flag lets host-mux start.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = dir.join("mux.toml");
    std::fs::write(
        &cfg,
        format!(
            "[backend]\nkind = \"pair\"\n[mux]\nmetrics_listen = \"{}\"\n[[vm]]\nname = \"vm1\"\n\
             socket = \"{}/vm1.sock\"\nmac = \"02:00:00:00:00:01\"\n",
            taken.local_addr().unwrap(),
            dir.display()
        ),
    )
    .unwrap();
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--stats-interval",
        "0",
        "--duration",
        "120",
    ];
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("mux.metrics_listen: binding"), "{err}");

    let mut mux = Running(
        bin()
            .env("RUST_LOG", "info")
            .args(args)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(mux.0.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("host-mux logs its metrics address");
        if let Some(rest) = line.split("metrics at http://").nth(1) {
            break rest.trim_end_matches("/metrics").to_string();
        }
    };
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(
        resp.contains("\nvdpdk_vm_attached{vm=\"vm1\",mac=\"02:00:00:00:00:01\"} 0\n"),
        "{resp}"
    );
    // SIGTERM ends it cleanly.
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(mux.0.id() as i32, libc::SIGTERM) }, 0);
    assert!(mux.0.wait().unwrap().success());
    assert!(TcpStream::connect(&addr).is_err(), "the endpoint is gone");

    let help = bin().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--metrics-listen <ADDR>"));
    let bad = bin()
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--metrics-listen",
            "nowhere",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--metrics-listen"));
}
