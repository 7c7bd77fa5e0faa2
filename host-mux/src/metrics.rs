//! Prometheus metrics: host-mux's counters in the text exposition format (version 0.0.4), and
//! the small HTTP/1.1 server that answers `GET /metrics` on `mux.metrics_listen`.
//!
//! Families (every one has `# HELP` and `# TYPE`, even when it has no sample):
//! - per VM, labels `vm` and `mac`: `vdpdk_vm_<name>_total` for every counter of
//!   [`vdpdk_core::abi::STATS_NAMES`] (packets, bytes, drops by reason), the gauges
//!   `vdpdk_vm_attached`, `vdpdk_vm_running`, `vdpdk_vm_dma_regions` and the counter
//!   `vdpdk_vm_attaches_total`;
//! - per poller, labels `poller`, `role` and `cluster`: `vdpdk_poller_<counter>_total`,
//!   `vdpdk_poller_asleep_seconds_total` and the gauge `vdpdk_poller_guests`;
//! - the backend NIC: `vdpdk_backend_info{driver}`, port totals `vdpdk_backend_<counter>_total`
//!   (DPDK's `rte_eth_stats` names) and per queue (label `queue`)
//!   `vdpdk_backend_queue_ipackets_total` / `vdpdk_backend_queue_opackets_total`.
//!
//! [`render`] is a pure function of the snapshots; [`serve`] is the server loop (one thread,
//! one connection at a time, each bounded in size and time so no client can stall it).

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vdpdk_core::abi::{STATS_COUNT, STATS_NAMES};
use vdpdk_core::PortStats;

use crate::{GuestSnapshot, PollerSnapshot};

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The longest request head (request line and headers) read; longer ones get 431.
pub const MAX_REQUEST: usize = 8 << 10;
/// How long a client has to send its request head, in all (not per read).
pub const READ_DEADLINE: Duration = Duration::from_secs(2);
/// How long a client has to take the response, in all.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a closing connection waits for the client to close its side.
const LINGER: Duration = Duration::from_millis(500);

/// What the backend NIC reports.
#[derive(Clone, Debug, Default)]
pub struct BackendSnapshot {
    /// The driver's name (`pair`, `tap`, `ice`).
    pub driver: String,
    pub stats: PortStats,
}

/// HELP text of each `abi::StatsIndex` counter, in `STATS_NAMES` order.
const VM_STAT_HELP: [&str; STATS_COUNT] = [
    "Frames host-mux delivered into the VM's RX rings.",
    "Bytes host-mux delivered into the VM's RX rings.",
    "Frames for the VM dropped because its RX ring had no free descriptor.",
    "Frames taken from the VM's TX rings and sent on the wire.",
    "Bytes taken from the VM's TX rings and sent on the wire.",
    "TX descriptors refused (IOVA outside the VM's DMA map, bad length or offload request).",
    "TX frames from the VM the backend NIC could not take.",
    "RX descriptors refused (buffer outside the VM's DMA map, or too small).",
    "Control requests refused, and accesses to unknown register offsets.",
    "Frames dropped by one of the VM's DROP flow rules.",
    "TX frames dropped because their source MAC is not the VM's own (spoof check).",
    "Interrupts host-mux could not deliver (the VM's eventfd was full or broken).",
];

/// Poller counters: (field name as in the JSON stats, HELP, value).
fn poller_counters(p: &PollerSnapshot) -> [(&'static str, &'static str, u64); 10] {
    [
        ("wire_rx", "Frames this poller received from the backend NIC.", p.wire_rx),
        ("wire_tx", "Frames this poller sent on the backend NIC.", p.wire_tx),
        (
            "tso_segments",
            "Segments this poller cut from guests' TCP super-frames (TSO in software).",
            p.tso_segments,
        ),
        (
            "tso_offloaded",
            "Guest TCP super-frames handed to the backend NIC for segmentation.",
            p.tso_offloaded,
        ),
        (
            "rx_unknown_dst",
            "Unicast frames from the wire whose destination MAC is no configured VM's.",
            p.rx_unknown_dst,
        ),
        (
            "rx_guest_stopped",
            "Frames from the wire for a VM whose device was not running.",
            p.rx_guest_stopped,
        ),
        (
            "tx_backpressure",
            "Poll rounds in which the backend TX queue was full (guest frames waited in their rings).",
            p.tx_backpressure,
        ),
        ("rounds", "Poll rounds.", p.rounds),
        ("empty_rounds", "Poll rounds that moved nothing.", p.empty_rounds),
        ("sleeps", "Times the poller went to sleep waiting for events.", p.sleeps),
    ]
}

/// Backend port counters: (DPDK `rte_eth_stats` name, HELP, value).
fn backend_counters(s: &PortStats) -> [(&'static str, &'static str, u64); 8] {
    [
        ("ipackets", "Frames the backend NIC received.", s.ipackets),
        ("opackets", "Frames the backend NIC sent.", s.opackets),
        ("ibytes", "Bytes the backend NIC received.", s.ibytes),
        ("obytes", "Bytes the backend NIC sent.", s.obytes),
        (
            "imissed",
            "Frames the backend NIC dropped for lack of RX descriptors.",
            s.imissed,
        ),
        (
            "ierrors",
            "Erroneous frames the backend NIC received.",
            s.ierrors,
        ),
        (
            "oerrors",
            "Frames the backend NIC failed or refused to send.",
            s.oerrors,
        ),
        (
            "rx_nombuf",
            "RX buffer allocation failures in the backend NIC's driver.",
            s.rx_nombuf,
        ),
    ]
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Builds the exposition text one family at a time.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Renders the snapshots in the Prometheus text format. Families are emitted even when
/// empty, so the set of families does not depend on what is attached.
pub fn render(
    guests: &[GuestSnapshot],
    pollers: &[PollerSnapshot],
    backend: Option<&BackendSnapshot>,
) -> String {
    let mut o = Out(String::with_capacity(4096 + guests.len() * 2048));
    let macs: Vec<String> = guests.iter().map(|g| g.mac.to_string()).collect();
    let vm_labels = |i: usize| [("vm", guests[i].name.as_str()), ("mac", macs[i].as_str())];

    for (k, (name, help)) in STATS_NAMES.iter().zip(VM_STAT_HELP).enumerate() {
        let metric = format!("vdpdk_vm_{name}_total");
        o.family(&metric, "counter", help);
        for (i, g) in guests.iter().enumerate() {
            o.sample(&metric, &vm_labels(i), g.stats[k]);
        }
    }
    type Gauge = (&'static str, &'static str, fn(&GuestSnapshot) -> u64);
    let vm_gauges: [Gauge; 3] = [
        (
            "vdpdk_vm_attached",
            "1 while a guest is connected to the VM's vfio-user socket.",
            |g| g.attached as u64,
        ),
        (
            "vdpdk_vm_running",
            "1 while the VM's device is started with queues the pollers serve.",
            |g| g.running as u64,
        ),
        (
            "vdpdk_vm_dma_regions",
            "DMA regions the VM has mapped.",
            |g| g.dma_regions as u64,
        ),
    ];
    for (metric, help, get) in vm_gauges {
        o.family(metric, "gauge", help);
        for (i, g) in guests.iter().enumerate() {
            o.sample(metric, &vm_labels(i), get(g));
        }
    }
    o.family(
        "vdpdk_vm_attaches_total",
        "counter",
        "Guests that connected to the VM's vfio-user socket.",
    );
    for (i, g) in guests.iter().enumerate() {
        o.sample("vdpdk_vm_attaches_total", &vm_labels(i), g.attaches);
    }

    let clusters: Vec<String> = pollers.iter().map(|p| p.cluster.to_string()).collect();
    let poller_labels = |i: usize| {
        [
            ("poller", pollers[i].name.as_str()),
            ("role", pollers[i].role),
            ("cluster", clusters[i].as_str()),
        ]
    };
    let per_poller: Vec<_> = pollers.iter().map(poller_counters).collect();
    let names = poller_counters(&PollerSnapshot::default());
    for (k, (name, help, _)) in names.iter().enumerate() {
        let metric = format!("vdpdk_poller_{name}_total");
        o.family(&metric, "counter", help);
        for (i, counters) in per_poller.iter().enumerate() {
            o.sample(&metric, &poller_labels(i), counters[k].2);
        }
    }
    o.family(
        "vdpdk_poller_asleep_seconds_total",
        "counter",
        "Time the poller spent asleep waiting for events.",
    );
    for (i, p) in pollers.iter().enumerate() {
        o.sample(
            "vdpdk_poller_asleep_seconds_total",
            &poller_labels(i),
            p.asleep_ms as f64 / 1000.0,
        );
    }
    o.family(
        "vdpdk_poller_guests",
        "gauge",
        "VMs whose traffic this poller serves.",
    );
    for (i, p) in pollers.iter().enumerate() {
        o.sample("vdpdk_poller_guests", &poller_labels(i), p.guests);
    }

    if let Some(b) = backend {
        o.family(
            "vdpdk_backend_info",
            "gauge",
            "The backend NIC host-mux multiplexes (always 1; the driver is a label).",
        );
        o.sample("vdpdk_backend_info", &[("driver", b.driver.as_str())], 1);
        for (name, help, value) in backend_counters(&b.stats) {
            let metric = format!("vdpdk_backend_{name}_total");
            o.family(&metric, "counter", help);
            o.sample(&metric, &[], value);
        }
        let queues: [(&str, &str, &[u64]); 2] = [
            (
                "vdpdk_backend_queue_ipackets_total",
                "Frames received on one backend NIC RX queue.",
                &b.stats.q_ipackets,
            ),
            (
                "vdpdk_backend_queue_opackets_total",
                "Frames sent on one backend NIC TX queue.",
                &b.stats.q_opackets,
            ),
        ];
        for (metric, help, values) in queues {
            o.family(metric, "counter", help);
            for (q, v) in values.iter().enumerate() {
                o.sample(metric, &[("queue", q.to_string().as_str())], v);
            }
        }
    }
    o.0
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
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
pub fn route(head: &[u8]) -> Route {
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
pub fn serve(listener: TcpListener, stop: &AtomicBool, body: impl Fn() -> String) {
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
    use vdpdk_core::MacAddr;

    fn guest(name: &str, last: u8) -> GuestSnapshot {
        let mut stats = [0u64; STATS_COUNT];
        for (i, s) in stats.iter_mut().enumerate() {
            *s = 1000 * last as u64 + i as u64;
        }
        GuestSnapshot {
            name: name.into(),
            mac: MacAddr([2, 0, 0, 0, 0, last]),
            attached: true,
            attaches: 3,
            running: false,
            dma_regions: 7,
            stats,
        }
    }

    fn poller() -> PollerSnapshot {
        PollerSnapshot {
            name: "c1-rx".into(),
            role: "rx",
            cluster: 1,
            guests: 2,
            wire_rx: 11,
            wire_tx: 12,
            tso_segments: 13,
            tso_offloaded: 14,
            rx_unknown_dst: 15,
            rx_guest_stopped: 16,
            tx_backpressure: 17,
            rounds: 18,
            empty_rounds: 19,
            sleeps: 20,
            asleep_ms: 1500,
            ..Default::default()
        }
    }

    fn backend() -> BackendSnapshot {
        BackendSnapshot {
            driver: "pair".into(),
            stats: PortStats {
                ipackets: 1,
                opackets: 2,
                ibytes: 3,
                obytes: 4,
                imissed: 5,
                ierrors: 6,
                oerrors: 7,
                rx_nombuf: 8,
                q_ipackets: vec![9, 10],
                q_opackets: vec![11],
            },
        }
    }

    /// Lines of `text` that are samples of `metric` (name followed by labels or a space).
    fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| {
                l.strip_prefix(metric)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
            .collect()
    }

    #[test]
    fn every_counter_of_every_vm_poller_and_queue_is_rendered_with_its_labels() {
        let text = render(
            &[guest("a", 1), guest("b", 2)],
            &[poller()],
            Some(&backend()),
        );
        for (k, name) in STATS_NAMES.iter().enumerate() {
            let m = format!("vdpdk_vm_{name}_total");
            assert_eq!(
                samples(&text, &m),
                vec![
                    format!("{m}{{vm=\"a\",mac=\"02:00:00:00:00:01\"}} {}", 1000 + k),
                    format!("{m}{{vm=\"b\",mac=\"02:00:00:00:00:02\"}} {}", 2000 + k),
                ],
            );
        }
        assert!(text.contains("\nvdpdk_vm_attached{vm=\"a\",mac=\"02:00:00:00:00:01\"} 1\n"));
        assert!(text.contains("\nvdpdk_vm_running{vm=\"b\",mac=\"02:00:00:00:00:02\"} 0\n"));
        assert!(text.contains("\nvdpdk_vm_dma_regions{vm=\"a\",mac=\"02:00:00:00:00:01\"} 7\n"));
        assert!(text.contains("\nvdpdk_vm_attaches_total{vm=\"b\",mac=\"02:00:00:00:00:02\"} 3\n"));
        let pl = "{poller=\"c1-rx\",role=\"rx\",cluster=\"1\"}";
        for (name, want) in [
            ("wire_rx", 11),
            ("wire_tx", 12),
            ("tso_segments", 13),
            ("tso_offloaded", 14),
            ("rx_unknown_dst", 15),
            ("rx_guest_stopped", 16),
            ("tx_backpressure", 17),
            ("rounds", 18),
            ("empty_rounds", 19),
            ("sleeps", 20),
        ] {
            let line = format!("\nvdpdk_poller_{name}_total{pl} {want}\n");
            assert!(text.contains(&line), "{line}");
        }
        assert!(text.contains(&format!("\nvdpdk_poller_asleep_seconds_total{pl} 1.5\n")));
        assert!(text.contains(&format!("\nvdpdk_poller_guests{pl} 2\n")));
        assert!(text.contains("\nvdpdk_backend_info{driver=\"pair\"} 1\n"));
        for (name, want) in [
            ("ipackets", 1),
            ("opackets", 2),
            ("ibytes", 3),
            ("obytes", 4),
            ("imissed", 5),
            ("ierrors", 6),
            ("oerrors", 7),
            ("rx_nombuf", 8),
        ] {
            let line = format!("\nvdpdk_backend_{name}_total {want}\n");
            assert!(text.contains(&line), "{line}");
        }
        assert_eq!(
            samples(&text, "vdpdk_backend_queue_ipackets_total"),
            [
                "vdpdk_backend_queue_ipackets_total{queue=\"0\"} 9",
                "vdpdk_backend_queue_ipackets_total{queue=\"1\"} 10"
            ]
        );
        assert_eq!(
            samples(&text, "vdpdk_backend_queue_opackets_total"),
            ["vdpdk_backend_queue_opackets_total{queue=\"0\"} 11"]
        );
    }

    #[test]
    fn each_family_has_help_and_type_once_before_its_samples() {
        let text = render(&[guest("a", 1)], &[poller()], Some(&backend()));
        let mut declared: Vec<String> = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(l) = lines.next() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(rest.len() > name.len() + 1, "{name} has an empty HELP");
                let ty = lines.next().unwrap();
                let kind = ty
                    .strip_prefix(&format!("# TYPE {name} "))
                    .unwrap_or_else(|| panic!("{name}: HELP not followed by TYPE: {ty}"));
                assert!(kind == "counter" || kind == "gauge", "{ty}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
                assert!(!declared.contains(&name.to_string()), "{name} twice");
                declared.push(name.to_string());
                continue;
            }
            let name = l.split(['{', ' ']).next().unwrap();
            assert_eq!(
                declared.last().map(String::as_str),
                Some(name),
                "sample outside its family: {l}"
            );
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
        // 12 VM counters + 3 gauges + attaches, 10 + 2 poller, info + 8 + 2 backend.
        assert_eq!(declared.len(), STATS_COUNT + 4 + 12 + 11);
    }

    #[test]
    fn families_are_there_without_vms_pollers_or_queues() {
        let text = render(&[], &[], Some(&BackendSnapshot::default()));
        assert!(text.contains("# TYPE vdpdk_vm_rx_no_desc_total counter\n"));
        assert!(text.contains("# TYPE vdpdk_poller_sleeps_total counter\n"));
        assert!(text.contains("# TYPE vdpdk_backend_queue_ipackets_total counter\n"));
        assert!(!text.contains("vdpdk_backend_queue_ipackets_total{"));
        assert!(!render(&[], &[], None).contains("vdpdk_backend"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let text = render(&[guest("we\"ird\\vm\nname", 1)], &[], None);
        assert!(text.contains(
            "vdpdk_vm_rx_packets_total{vm=\"we\\\"ird\\\\vm\\nname\",mac=\"02:00:00:00:00:01\"} 1000\n"
        ));
        assert!(text.lines().all(|l| !l.is_empty()), "no raw newline leaks");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

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
