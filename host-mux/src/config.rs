//! host-mux configuration: a TOML file naming the NIC backend and the VMs it serves.
//!
//! ```toml
//! [backend]
//! kind = "tap"          # "tap": a Linux TAP interface; "pair": in-memory wire (see below)
//! ifname = "vdpdk0"     # tap only
//!
//! [mux]
//! idle_polls = 1024     # empty poll rounds before the poller sleeps (event mode)
//! pool_size = 8192      # host packet buffers
//! poller_cpu = 1        # pin the poller thread (optional)
//!
//! [[vm]]
//! name = "vm1"
//! socket = "/run/vdpdk/vm1.sock"
//! mac = "02:00:00:00:00:01"
//! rx_queues = 4
//! tx_queues = 1
//! ```
//! Validation errors name the offending key (`vm[1].mac: ...`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vdpdk_core::abi::MAX_QUEUES;
use vdpdk_core::MacAddr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {msg}")]
    Invalid { key: String, msg: String },
}

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// A Linux TAP interface with this name (created if missing).
    Tap { ifname: String },
    /// An in-memory wire. The binary puts a reflector on its far end (every frame comes back
    /// with source and destination MAC swapped); tests and tools attach their own far end.
    Pair,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    pub socket: PathBuf,
    pub mac: MacAddr,
    pub rx_queues: u16,
    pub tx_queues: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxConfig {
    pub backend: BackendConfig,
    pub vms: Vec<VmConfig>,
    /// Empty poll rounds before the poller arms events and sleeps.
    pub idle_polls: u32,
    /// Host packet buffers (backend RX ring plus copies in flight).
    pub pool_size: u32,
    /// CPU to pin the poller thread to (None: let the scheduler decide).
    pub poller_cpu: Option<usize>,
}

pub const DEFAULT_IDLE_POLLS: u32 = 1024;
pub const DEFAULT_POOL_SIZE: u32 = 8192;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    backend: Option<RawBackend>,
    mux: Option<RawMux>,
    #[serde(default)]
    vm: Vec<RawVm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: Option<String>,
    ifname: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMux {
    idle_polls: Option<u32>,
    pool_size: Option<u32>,
    poller_cpu: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Option<String>,
    socket: Option<PathBuf>,
    mac: Option<String>,
    rx_queues: Option<u16>,
    tx_queues: Option<u16>,
}

impl MuxConfig {
    pub fn load(path: &Path) -> Result<MuxConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<MuxConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let rb = raw
            .backend
            .ok_or_else(|| invalid("backend", "missing [backend] table"))?;
        let backend = match rb.kind.as_deref() {
            Some("tap") => {
                let ifname = rb
                    .ifname
                    .ok_or_else(|| invalid("backend.ifname", "required for kind = \"tap\""))?;
                if ifname.is_empty() || ifname.len() > 15 {
                    return Err(invalid("backend.ifname", "must be 1..=15 characters"));
                }
                BackendConfig::Tap { ifname }
            }
            Some("pair") => {
                if rb.ifname.is_some() {
                    return Err(invalid("backend.ifname", "only valid for kind = \"tap\""));
                }
                BackendConfig::Pair
            }
            Some(other) => {
                return Err(invalid(
                    "backend.kind",
                    format!("unknown backend '{other}' (expected \"tap\" or \"pair\")"),
                ))
            }
            None => return Err(invalid("backend.kind", "missing")),
        };
        let mux = raw.mux.unwrap_or(RawMux {
            idle_polls: None,
            pool_size: None,
            poller_cpu: None,
        });
        if let Some(c) = mux.poller_cpu {
            let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
            if c >= ncpu {
                return Err(invalid(
                    "mux.poller_cpu",
                    format!("CPU {c} does not exist (this machine has {ncpu})"),
                ));
            }
        }
        let pool_size = mux.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        if !(1024..=1 << 20).contains(&pool_size) {
            return Err(invalid("mux.pool_size", "must be in 1024..=1048576"));
        }
        if raw.vm.is_empty() {
            return Err(invalid("vm", "at least one [[vm]] is required"));
        }
        let mut vms = Vec::new();
        let (mut names, mut macs, mut socks) = (HashSet::new(), HashSet::new(), HashSet::new());
        for (i, v) in raw.vm.into_iter().enumerate() {
            let key = |k: &str| format!("vm[{i}].{k}");
            let name = v.name.ok_or_else(|| invalid(key("name"), "missing"))?;
            if name.is_empty() || !names.insert(name.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("'{name}' is empty or not unique"),
                ));
            }
            let socket = v.socket.ok_or_else(|| invalid(key("socket"), "missing"))?;
            if !socks.insert(socket.clone()) {
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
            if !macs.insert(mac) {
                return Err(invalid(key("mac"), format!("{mac} is used by another vm")));
            }
            let q = |k: &str, v: Option<u16>| -> Result<u16, ConfigError> {
                let n = v.unwrap_or(1);
                if n == 0 || n > MAX_QUEUES {
                    return Err(invalid(key(k), format!("must be in 1..={MAX_QUEUES}")));
                }
                Ok(n)
            };
            vms.push(VmConfig {
                name,
                socket,
                mac,
                rx_queues: q("rx_queues", v.rx_queues)?,
                tx_queues: q("tx_queues", v.tx_queues)?,
            });
        }
        Ok(MuxConfig {
            backend,
            vms,
            idle_polls: mux.idle_polls.unwrap_or(DEFAULT_IDLE_POLLS).max(1),
            pool_size,
            poller_cpu: mux.poller_cpu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [backend]
        kind = "tap"
        ifname = "vd0"
        [[vm]]
        name = "a"
        socket = "/tmp/a.sock"
        mac = "02:00:00:00:00:01"
        rx_queues = 4
        [[vm]]
        name = "b"
        socket = "/tmp/b.sock"
        mac = "02:00:00:00:00:02"
    "#;

    #[test]
    fn parses_good_config() {
        let c = MuxConfig::parse(GOOD).unwrap();
        assert_eq!(
            c.backend,
            BackendConfig::Tap {
                ifname: "vd0".into()
            }
        );
        assert_eq!(c.vms.len(), 2);
        assert_eq!(c.vms[0].rx_queues, 4);
        assert_eq!(c.vms[1].tx_queues, 1);
    }

    fn err_of(text: &str) -> String {
        MuxConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_bad_key() {
        assert!(
            err_of(&GOOD.replace("02:00:00:00:00:02", "02:00:00:00:00:01"))
                .starts_with("vm[1].mac")
        );
        assert!(
            err_of(&GOOD.replace("rx_queues = 4", "rx_queues = 65")).starts_with("vm[0].rx_queues")
        );
        assert!(err_of(&GOOD.replace("\"tap\"", "\"ice9\"")).starts_with("backend.kind"));
        assert!(
            err_of(&GOOD.replace("02:00:00:00:00:01", "01:00:5e:00:00:01"))
                .starts_with("vm[0].mac")
        );
        assert!(err_of(&GOOD.replace("/tmp/b.sock", "/tmp/a.sock")).starts_with("vm[1].socket"));
        assert!(
            err_of(&GOOD.replace("mac = \"02:00:00:00:00:02\"", "mac = \"nope\""))
                .starts_with("vm[1].mac")
        );
        assert!(err_of(&GOOD.replace("ifname = \"vd0\"", "")).starts_with("backend.ifname"));
        assert!(err_of(&GOOD.replace("rx_queues = 4", "rx_qeues = 4")).contains("rx_qeues"));
    }
}
