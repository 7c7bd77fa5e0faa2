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

mod http;

use std::fmt::Write as _;

use vdpdk_core::abi::{STATS_COUNT, STATS_NAMES};
use vdpdk_core::PortStats;

use crate::{GuestSnapshot, PollerSnapshot};
pub(crate) use http::serve;

/// What the backend NIC reports.
#[derive(Clone, Debug, Default)]
pub(crate) struct BackendSnapshot {
    /// The driver's name (`pair`, `tap`, `ice`).
    pub(crate) driver: String,
    pub(crate) stats: PortStats,
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
fn poller_counters(p: &PollerSnapshot) -> [(&'static str, &'static str, u64); 13] {
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
            "switched",
            "Frames one VM sent that this poller delivered to another VM (broadcasts once per VM).",
            p.switched,
        ),
        (
            "tx_lent",
            "Guest frames whose payload went to the backend in place (zero-copy TX).",
            p.tx_lent,
        ),
        (
            "rx_in_place",
            "Frames the backend received straight into guest buffers (zero-copy RX).",
            p.rx_in_place,
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
pub(crate) fn escape_label(v: &str) -> String {
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
pub(crate) fn render(
    guests: &[GuestSnapshot],
    pollers: &[PollerSnapshot],
    backend: Option<&BackendSnapshot>,
) -> String {
    let mut o = Out(String::with_capacity(4096 + guests.len() * 2048));
    render_vms(&mut o, guests);
    render_pollers(&mut o, pollers);
    if let Some(b) = backend {
        render_backend(&mut o, b);
    }
    o.0
}

/// The per-VM families (labels `vm` and `mac`).
fn render_vms(o: &mut Out, guests: &[GuestSnapshot]) {
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
}

/// The per-poller families (labels `poller`, `role` and `cluster`).
fn render_pollers(o: &mut Out, pollers: &[PollerSnapshot]) {
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
}

/// The backend NIC's families: its driver, port totals and per-queue packets.
fn render_backend(o: &mut Out, b: &BackendSnapshot) {
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

/// What a request head asks for.
#[cfg(test)]
mod tests {
    use super::*;
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
            switched: 21,
            tx_backpressure: 17,
            tx_lent: 22,
            rx_in_place: 23,
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
            ("switched", 21),
            ("tx_backpressure", 17),
            ("tx_lent", 22),
            ("rx_in_place", 23),
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
        // VM counters + 3 gauges + attaches, 13 + 2 poller, info + 8 + 2 backend.
        assert_eq!(declared.len(), STATS_COUNT + 4 + 15 + 11);
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
}
