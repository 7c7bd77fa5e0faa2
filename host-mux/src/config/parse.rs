//! The TOML file's raw shape and its validation, one function per section: `[backend]`,
//! `[mux]`, `[limits]`, `[[cluster]]` and `[[vm]]`. Sections are checked in that order, so the
//! first error reported is the same whatever else is wrong.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;
use vdpdk_core::abi::MAX_QUEUES;
use vdpdk_core::MacAddr;

use super::{
    invalid, parse_listen, BackendConfig, ClusterConfig, ConfigError, GuestLimits, IceAccess,
    MuxConfig, PollMode, VmConfig, DEFAULT_IDLE_POLLS, DEFAULT_POOL_SIZE, DEFAULT_SLEEP_TIMEOUT_MS,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    backend: Option<RawBackend>,
    mux: Option<RawMux>,
    limits: Option<RawLimits>,
    #[serde(default)]
    cluster: Vec<RawCluster>,
    #[serde(default)]
    vm: Vec<RawVm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    cpus: Vec<usize>,
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: Option<String>,
    ifname: Option<String>,
    socket: Option<PathBuf>,
    pci: Option<String>,
    ddp: Option<PathBuf>,
    rx_itr_us: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(Default)]
struct RawMux {
    idle_polls: Option<u32>,
    pool_size: Option<u32>,
    sleep_timeout_ms: Option<u32>,
    stats_socket: Option<PathBuf>,
    metrics_listen: Option<String>,
    guard_unmapped: Option<bool>,
    hw_steering: Option<bool>,
    zero_copy_tx: Option<bool>,
    zero_copy_rx: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    dma_regions: Option<usize>,
    dma_bytes: Option<u64>,
    flow_rules: Option<usize>,
    message_bytes: Option<usize>,
    spoof_check: Option<bool>,
}

impl RawLimits {
    fn resolve(self) -> Result<GuestLimits, ConfigError> {
        let d = GuestLimits::default();
        let ranged = |key: &str, v: Option<usize>, def: usize, lo: usize, hi: usize| {
            let n = v.unwrap_or(def);
            if !(lo..=hi).contains(&n) {
                return Err(invalid(key, format!("must be in {lo}..={hi}")));
            }
            Ok(n)
        };
        let dma_bytes = self.dma_bytes.unwrap_or(d.dma_bytes);
        if dma_bytes < 1 << 20 {
            return Err(invalid(
                "limits.dma_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        Ok(GuestLimits {
            dma_regions: ranged(
                "limits.dma_regions",
                self.dma_regions,
                d.dma_regions,
                1,
                65536,
            )?,
            dma_bytes,
            flow_rules: ranged("limits.flow_rules", self.flow_rules, d.flow_rules, 0, 4096)?,
            // A region access carries at most one BAR (64 KiB) plus headers.
            message_bytes: ranged(
                "limits.message_bytes",
                self.message_bytes,
                d.message_bytes,
                128 << 10,
                64 << 20,
            )?,
            spoof_check: self.spoof_check.unwrap_or(d.spoof_check),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Option<String>,
    socket: Option<PathBuf>,
    mac: Option<String>,
    rx_queues: Option<u16>,
    tx_queues: Option<u16>,
    cluster: Option<usize>,
}

/// Parses and validates a whole config.
pub(super) fn parse(text: &str) -> Result<MuxConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
    let backend = backend(raw.backend)?;
    let mux = raw.mux.unwrap_or_default();
    let clusters = clusters(raw.cluster)?;
    let pool_size = mux.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
    if !(1024..=1 << 20).contains(&pool_size) {
        return Err(invalid("mux.pool_size", "must be in 1024..=1048576"));
    }
    let vms = vms(raw.vm, clusters.len())?;
    let limits = raw.limits.unwrap_or_default().resolve()?;
    let metrics_listen = match mux.metrics_listen.as_deref() {
        None => None,
        Some(a) => Some(parse_listen(a).map_err(|m| invalid("mux.metrics_listen", m))?),
    };
    let hw_steering = mux
        .hw_steering
        .unwrap_or(matches!(backend, BackendConfig::Ice { .. }));
    Ok(MuxConfig {
        backend,
        vms,
        idle_polls: mux.idle_polls.unwrap_or(DEFAULT_IDLE_POLLS).max(1),
        pool_size,
        sleep_timeout_ms: mux.sleep_timeout_ms.unwrap_or(DEFAULT_SLEEP_TIMEOUT_MS),
        clusters,
        stats_socket: mux.stats_socket,
        metrics_listen,
        guard_unmapped: mux.guard_unmapped.unwrap_or(false),
        hw_steering,
        zero_copy_tx: mux.zero_copy_tx.unwrap_or(false),
        zero_copy_rx: mux.zero_copy_rx.unwrap_or(false),
        limits,
    })
}

/// The `[backend]` table.
fn backend(rb: Option<RawBackend>) -> Result<BackendConfig, ConfigError> {
    let rb = rb.ok_or_else(|| invalid("backend", "missing [backend] table"))?;
    match rb.kind.as_deref() {
        Some("tap") => {
            let ifname = rb
                .ifname
                .ok_or_else(|| invalid("backend.ifname", "required for kind = \"tap\""))?;
            if ifname.is_empty() || ifname.len() > 15 {
                return Err(invalid("backend.ifname", "must be 1..=15 characters"));
            }
            Ok(BackendConfig::Tap { ifname })
        }
        Some("pair") => {
            if rb.ifname.is_some() {
                return Err(invalid("backend.ifname", "only valid for kind = \"tap\""));
            }
            Ok(BackendConfig::Pair)
        }
        Some("ice") => ice(rb),
        Some(other) => Err(invalid(
            "backend.kind",
            format!("unknown backend '{other}' (expected \"tap\", \"pair\" or \"ice\")"),
        )),
        None => Err(invalid("backend.kind", "missing")),
    }
}

/// `[backend]` with `kind = "ice"`: exactly one of a PCI address or a vfio-user socket, and
/// the interrupt moderation the E810 can do.
fn ice(rb: RawBackend) -> Result<BackendConfig, ConfigError> {
    let access = match (rb.pci, rb.socket) {
        (Some(bdf), None) => {
            let ok = bdf.len() == 12
                && bdf.chars().enumerate().all(|(i, c)| match i {
                    4 | 7 => c == ':',
                    10 => c == '.',
                    _ => c.is_ascii_hexdigit(),
                });
            if !ok {
                return Err(invalid(
                    "backend.pci",
                    format!("'{bdf}' is not a PCI address like 0000:3b:00.0"),
                ));
            }
            IceAccess::Pci(bdf)
        }
        (None, Some(sock)) => IceAccess::VfioUser(sock),
        _ => {
            return Err(invalid(
                "backend.pci",
                "kind = \"ice\" needs exactly one of pci (a vfio-pci bound \
                 function) or socket (a vfio-user socket)",
            ))
        }
    };
    let rx_itr_us = rb.rx_itr_us.unwrap_or(0);
    if rx_itr_us > 8190 {
        return Err(invalid(
            "backend.rx_itr_us",
            format!("{rx_itr_us} µs: the E810 moderates in 0..=8190 µs"),
        ));
    }
    Ok(BackendConfig::Ice {
        access,
        ddp: rb.ddp,
        rx_itr_us,
    })
}

/// The `[[cluster]]` tables (one default cluster when there are none).
fn clusters(raw: Vec<RawCluster>) -> Result<Vec<ClusterConfig>, ConfigError> {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut clusters = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("cluster[{i}].{k}");
        if let Some(&bad) = c.cpus.iter().find(|&&c| c >= ncpu) {
            return Err(invalid(
                key("cpus"),
                format!("CPU {bad} does not exist (this machine has {ncpu})"),
            ));
        }
        let mode = match c.mode.as_deref() {
            None | Some("auto") => PollMode::Auto,
            Some("split") => PollMode::Split,
            Some("combined") => PollMode::Combined,
            Some(other) => {
                return Err(invalid(
                    key("mode"),
                    format!("'{other}' (expected \"auto\", \"split\" or \"combined\")"),
                ))
            }
        };
        clusters.push(ClusterConfig { cpus: c.cpus, mode });
    }
    if clusters.is_empty() {
        clusters.push(ClusterConfig::default());
    }
    Ok(clusters)
}

/// Names, sockets and MACs already taken by earlier `[[vm]]` tables.
#[derive(Default)]
struct Taken {
    names: HashSet<String>,
    macs: HashSet<MacAddr>,
    sockets: HashSet<PathBuf>,
}

/// The `[[vm]]` tables (at least one), each served by one of `nclusters` clusters.
fn vms(raw: Vec<RawVm>, nclusters: usize) -> Result<Vec<VmConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("vm", "at least one [[vm]] is required"));
    }
    let mut taken = Taken::default();
    raw.into_iter()
        .enumerate()
        .map(|(i, v)| vm(i, v, nclusters, &mut taken))
        .collect()
}

/// `[[vm]]` number `i`: unique name, socket and unicast MAC, queue counts in range, an
/// existing cluster.
fn vm(i: usize, v: RawVm, nclusters: usize, taken: &mut Taken) -> Result<VmConfig, ConfigError> {
    let key = |k: &str| format!("vm[{i}].{k}");
    let name = v.name.ok_or_else(|| invalid(key("name"), "missing"))?;
    if name.is_empty() || !taken.names.insert(name.clone()) {
        return Err(invalid(
            key("name"),
            format!("'{name}' is empty or not unique"),
        ));
    }
    let socket = v.socket.ok_or_else(|| invalid(key("socket"), "missing"))?;
    if !taken.sockets.insert(socket.clone()) {
        return Err(invalid(key("socket"), "used by another vm"));
    }
    let mac: MacAddr = v
        .mac
        .ok_or_else(|| invalid(key("mac"), "missing"))?
        .parse()
        .map_err(|e: vdpdk_core::Error| invalid(key("mac"), e.to_string()))?;
    if mac.is_multicast() || mac == MacAddr::ZERO {
        return Err(invalid(
            key("mac"),
            format!("{mac} is not a unicast address"),
        ));
    }
    if !taken.macs.insert(mac) {
        return Err(invalid(key("mac"), format!("{mac} is used by another vm")));
    }
    let q = |k: &str, v: Option<u16>| -> Result<u16, ConfigError> {
        let n = v.unwrap_or(1);
        if n == 0 || n > MAX_QUEUES {
            return Err(invalid(key(k), format!("must be in 1..={MAX_QUEUES}")));
        }
        Ok(n)
    };
    let cluster = v.cluster.unwrap_or(0);
    if cluster >= nclusters {
        return Err(invalid(
            key("cluster"),
            format!("cluster {cluster} is not defined ({nclusters} [[cluster]])"),
        ));
    }
    Ok(VmConfig {
        name,
        socket,
        mac,
        rx_queues: q("rx_queues", v.rx_queues)?,
        tx_queues: q("tx_queues", v.tx_queues)?,
        cluster,
    })
}
