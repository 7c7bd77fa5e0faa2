//! The small HTTP/1.1 server answering `GET /metrics`: one thread, one connection at a time,
//! each bounded in size ([`MAX_REQUEST`]) and time ([`READ_DEADLINE`], [`WRITE_DEADLINE`]) so
//! no client can stall it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The media type of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The longest request head (request line and headers) read; longer ones get 431.
pub(crate) const MAX_REQUEST: usize = 8 << 10;
/// How long a client has to send its request head, in all (not per read).
pub(crate) const READ_DEADLINE: Duration = Duration::from_secs(2);
/// How long a client has to take the response, in all.
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a closing connection waits for the client to close its side.
const LINGER: Duration = Duration::from_millis(500);

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET /metrics` (`head_only` for HEAD).
    Metrics {
        head_only: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes a request head (the bytes up to the blank line). Only the request line matters:
/// `GET /metrics` or `HEAD /metrics`, any query string ignored, HTTP/1.x.
pub(crate) fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::BadRequest;
    };
    let parts: Vec<&str> = line.trim_end_matches('\r').split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Route::BadRequest;
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if path == "/metrics" {
        Route::Metrics { head_only }
    } else {
        Route::NotFound
    }
}

/// Where the request head ends (after its blank line), if it has arrived.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads a request head within [`MAX_REQUEST`] bytes and [`READ_DEADLINE`] in all.
/// `Ok(Err(status))`: answer with that error status; `Ok(Ok(None))`: the client left.
fn read_head(conn: &mut TcpStream) -> std::io::Result<Result<Option<Vec<u8>>, u16>> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    loop {
        if let Some(end) = head_end(&buf[..n]) {
            buf.truncate(end);
            return Ok(Ok(Some(buf)));
        }
        if n == buf.len() {
            return Ok(Err(431));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Err(408));
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut buf[n..]) {
            Ok(0) => return Ok(Ok(None)),
            Ok(k) => n += k,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(Err(408))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data` within `deadline`.
fn write_by(conn: &mut TcpStream, mut data: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        conn.set_write_timeout(Some(left))?;
        match conn.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(k) => data = &data[k..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// Answers one connection: one request, one response, then the connection is closed.
fn answer(mut conn: TcpStream, body: &dyn Fn() -> String) -> std::io::Result<()> {
    let (status, content_type, text, head_only) = match read_head(&mut conn)? {
        Ok(None) => return Ok(()),
        Err(status) => (status, "text/plain", format!("{}\n", reason(status)), false),
        Ok(Some(head)) => match route(&head) {
            Route::Metrics { head_only } => (200, CONTENT_TYPE, body(), head_only),
            Route::NotFound => (
                404,
                "text/plain",
                "not found: the metrics are at /metrics\n".to_string(),
                false,
            ),
            Route::MethodNotAllowed => (405, "text/plain", "use GET\n".to_string(), false),
            Route::BadRequest => (400, "text/plain", "bad request\n".to_string(), false),
        },
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        reason(status),
        text.len()
    );
    if status == 405 {
        resp.push_str("Allow: GET, HEAD\r\n");
    }
    resp.push_str("\r\n");
    if !head_only {
        resp.push_str(&text);
    }
    write_by(&mut conn, resp.as_bytes(), Instant::now() + WRITE_DEADLINE)?;
    linger_close(conn);
    Ok(())
}

/// Closes after the response: FIN first, then what the client still sends is read and
/// dropped (a little, briefly) until it closes too. Closing with unread input would reset
/// the connection and could cost the client the response (e.g. a refused oversized request).
fn linger_close(mut conn: TcpStream) {
    if conn.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut left = 64usize << 10;
    let mut buf = [0u8; 4096];
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || conn.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Serves `GET /metrics` with `body()` until `stop` is set and the listener is shut down
/// (`shutdown(2)` on it wakes the blocked accept). One connection at a time; each is bounded
/// by [`MAX_REQUEST`], [`READ_DEADLINE`], [`WRITE_DEADLINE`] and a short linger, so a slow or
/// hostile client delays the next scrape by a few seconds at most and cannot end the server.
pub(crate) fn serve(listener: TcpListener, stop: &AtomicBool, body: impl Fn() -> String) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(c) => {
                if let Err(e) = answer(c, &body) {
                    log::debug!("metrics: a client: {e}");
                }
            }
            Err(e) => {
                // Out of fds or the like: do not spin.
                log::warn!("metrics: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    #[test]
    fn routes() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(
            r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            r("HEAD /metrics?x=1 HTTP/1.0\n\n"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        for bad in [
            "\u{1}\u{2}garbage\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "",
        ] {
            assert_eq!(r(bad), Route::BadRequest, "{bad:?}");
        }
        assert_eq!(route(b"GET /\xff HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    /// A server on a free loopback port, stopped and joined on drop.
    struct Server {
        addr: std::net::SocketAddr,
        keep: TcpListener,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        fn start() -> Server {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let keep = l.try_clone().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            let thread = std::thread::spawn(move || serve(l, &s2, || "m 1\n".to_string()));
            Server {
                addr,
                keep,
                stop,
                thread: Some(thread),
            }
        }

        /// Sends `req` (as far as the server takes it) and reads the answer.
        fn get(&self, req: &[u8]) -> String {
            let mut c = TcpStream::connect(self.addr).unwrap();
            let _ = c.write_all(req);
            read_all(&mut c)
        }
    }

    /// Everything the server sent before it closed (a reset after it is no error here: the
    /// server closes with unread bytes of a refused request).
    fn read_all(c: &mut TcpStream) -> String {
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            // SAFETY: shutdown(2) on a listening socket we hold a dup of; it wakes the
            // server's blocked accept.
            unsafe { libc::shutdown(self.keep.as_raw_fd(), libc::SHUT_RDWR) };
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    #[test]
    fn server_answers_metrics_404_405_400_and_survives_hostile_clients() {
        let s = Server::start();
        let ok = s.get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}\r\n")));
        assert!(ok.contains("\r\nContent-Length: 4\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nm 1\n"), "{ok}");
        let head = s.get(b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
        assert!(s
            .get(b"GET /nope HTTP/1.1\r\n\r\n")
            .starts_with("HTTP/1.1 404 "));
        let post = s.get(b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(s
            .get(b"\x00\x01\x02 garbage\r\n\r\n")
            .starts_with("HTTP/1.1 400 "));
        // A head larger than the limit is refused without reading it all.
        let out = s.get(&vec![b'a'; MAX_REQUEST + 100]);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        // A client that connects and says nothing, and one that leaves mid-request: the
        // next scrape is still answered (after the silent one's deadline).
        let silent = TcpStream::connect(s.addr).unwrap();
        let mut half = TcpStream::connect(s.addr).unwrap();
        half.write_all(b"GET /met").unwrap();
        drop(half);
        assert!(s
            .get(b"GET /metrics HTTP/1.1\r\n\r\n")
            .ends_with("\r\n\r\nm 1\n"));
        drop(silent);
    }

    #[test]
    fn a_silent_client_gets_408_when_its_time_is_up() {
        let s = Server::start();
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let out = read_all(&mut c);
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    }
}
