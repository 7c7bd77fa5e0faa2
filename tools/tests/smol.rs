//! The smoltcp guest apps talking to Linux's own stack across host-mux: host-mux runs on a TAP
//! backend whose interface is moved into a private network namespace (the "outside world"),
//! `vdpdk-smol` attaches as a process guest, and Linux's curl, ping and sockets (python3) in the
//! namespace talk to it. Needs root, /dev/net/tun, iproute2, curl, ping and python3 (.ci/run
//! installs them).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{output_within, setup, ChildGuard, Netns};

/// Starts vdpdk-smol on the guest socket and waits for its "ready" line. It is killed when
/// the guard drops, also when the test fails.
fn smol(sock: &Path, ip: &str, extra: &[&str]) -> ChildGuard {
    let mut c = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-smol"))
            .arg("--port")
            .arg(format!("vdpdk:{}", sock.display()))
            .args(["--ip", ip, "--duration", "60"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.contains("ready"), "vdpdk-smol did not start: {line}");
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    c
}

fn finish(c: ChildGuard) {
    common::finish(c)
}

fn smol_bin(args: &[&str]) -> std::process::Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-smol")).args(args),
        Duration::from_secs(120),
    )
}

#[test]
fn curl_fetches_pages_and_ping_gets_answers_from_the_smoltcp_http_server() {
    let s = setup("h", 91);
    let app = smol(&s.sock, "10.91.0.2/24", &["http", "--size", "300000"]);
    let want = vdpdk_tools::smol::http_body(300_000);
    for i in 0..3 {
        let t0 = Instant::now();
        let o = s.ns.exec(&[
            "curl",
            "-s",
            "--max-time",
            "20",
            "-w",
            "%{http_code} %{size_download}",
            "-o",
            "-",
            "http://10.91.0.2/",
        ]);
        assert!(o.status.success(), "curl #{i}: {o:?}");
        let (body, tail) = o.stdout.split_at(o.stdout.len() - "200 300000".len());
        assert_eq!(String::from_utf8_lossy(tail), "200 300000", "curl #{i}");
        assert!(body == want.as_slice(), "curl #{i}: the page differs");
        eprintln!("curl #{i}: 300000 bytes in {:?}", t0.elapsed());
    }
    let o =
        s.ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "5", "10.91.0.2"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("3 received"),
        "ping: {text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    finish(app);
}

/// Runs a python3 client inside the namespace; it prints one line of results.
fn python(ns: &Netns, code: &str) -> String {
    let o = ns.exec(&["python3", "-c", code]);
    assert!(
        o.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn tcp_echo_and_udp_reflector_return_every_byte_to_linux_sockets() {
    let s = setup("e", 92);
    let app = smol(&s.sock, "10.92.0.2/24", &["tcp-echo", "--listen", "7007"]);
    // 1 MiB through the echo server, sent and read concurrently; bytes must come back intact.
    let got = python(
        &s.ns,
        r#"
import socket, threading, hashlib
data = bytes((i * 7 + i // 251) % 256 for i in range(1 << 20))
s = socket.create_connection(("10.92.0.2", 7007), timeout=20)
t = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
t.start()
back = bytearray()
while True:
    b = s.recv(65536)
    if not b: break
    back += b
t.join()
print(len(back), hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest())
"#,
    );
    assert_eq!(got, "1048576 True", "echo");
    finish(app);

    let app = smol(
        &s.sock,
        "10.92.0.2/24",
        &["udp-reflect", "--listen", "7008"],
    );
    let got = python(
        &s.ns,
        r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
ok = 0
for i in range(200):
    msg = b"datagram %d " % i + bytes(range(256)) * 4
    s.sendto(msg, ("10.92.0.2", 7008))
    data, addr = s.recvfrom(4096)
    ok += data == msg and addr == ("10.92.0.2", 7008)
print(ok)
"#,
    );
    assert_eq!(got, "200", "udp reflector");
    finish(app);
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let o = smol_bin(&[
        "--port",
        "vdpdk:/nonexistent.sock",
        "--ip",
        "10.0.0.300/24",
        "http",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("vdpdk-smol: error: --ip '10.0.0.300/24'"), "{e}");
    // A malformed port spec is a bad argument too.
    let o = smol_bin(&["--port", "nic:eth0", "--ip", "10.0.0.2/24", "http"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("expected vdpdk:SOCKET"), "{e}");
    // A well-formed spec that cannot be opened is a failure at run time.
    let o = smol_bin(&[
        "--port",
        "vdpdk:/nonexistent.sock",
        "--ip",
        "10.0.0.2/24",
        "http",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("vdpdk-smol: error: ") && e.contains("/nonexistent.sock"),
        "{e}"
    );
    let o = smol_bin(&["--help"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("tcp-echo"));
}
