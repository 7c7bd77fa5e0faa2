//! host-mux configuration: a TOML file naming the NIC backend and the VMs it serves.
//!
//! ```toml
//! [backend]
//! kind = "tap"          # "tap": a Linux TAP interface; "pair": in-memory wire (see below)
//! ifname = "vdpdk0"     # tap only
//! pci = "0000:3b:00.0"  # ice: the E810 bound to vfio-pci, or
//! socket = "/run/e810.sock"  # ice: the E810 behind a vfio-user socket
//! ddp = "/lib/firmware/intel/ice/ddp/ice.pkg"  # ice only, optional (default: that path if present)
//! rx_itr_us = 0         # ice only: RX interrupt moderation in µs (0..=8190, default 0 = none)
//!
//! [mux]
//! idle_polls = 1024     # empty poll rounds before a poller sleeps (event mode)
//! sleep_timeout_ms = 200  # longest sleep; 0 = only events wake a poller
//! pool_size = 8192      # host packet buffers
//! stats_socket = "/run/vdpdk/stats.sock"   # optional: live stats for `host-mux --stats`
//! metrics_listen = "127.0.0.1:9473"  # optional: Prometheus metrics at http://ADDR/metrics
//!                                    # (an IP and port; port 0 picks a free one)
//! hw_steering = true    # a NIC RX queue per VM, steered by flow rules (default: on for ice)
//! zero_copy_tx = false  # offer guests zero-copy TX (pair, tap, ice; frames of 1024 B and more)
//! zero_copy_rx = false  # offer guests zero-copy RX: each VM's own backend RX queue receives
//!                       # into the guest's buffers (needs hw_steering; pair, null, ice)
//!
//! [limits]              # what any one VM may make host-mux hold (defaults shown)
//! dma_regions = 1024    # DMA_MAP regions per VM (each is one mmap in host-mux)
//! dma_bytes = 68719476736  # bytes mapped per VM (64 GiB)
//! flow_rules = 64       # flow rules per VM
//! message_bytes = 1048576  # largest vfio-user message a VM may send (1 MiB)
//! spoof_check = true    # drop (and count) TX frames whose source MAC is not the VM's own
//!
//! [[cluster]]           # optional; default: one cluster, one combined unpinned poller
//! cpus = [0, 1]         # the cores its pollers are pinned to
//! mode = "auto"         # "split": an RX and a TX poller; "combined": one; auto: split if 2+ cpus
//!
//! [[vm]]
//! name = "vm1"
//! socket = "/run/vdpdk/vm1.sock"
//! mac = "02:00:00:00:00:01"
//! rx_queues = 4
//! tx_queues = 1
//! cluster = 0           # which [[cluster]] serves this VM (default 0)
//! ```
//! Validation errors name the offending key (`vm[1].mac: ...`).

mod parse;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use vdpdk_core::MacAddr;

/// Why a config was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file named.
        path: String,
        /// What reading it returned.
        source: std::io::Error,
    },
    /// The text is not TOML of the config's shape (an unknown key, a wrong type); the message
    /// is the TOML parser's, with line and column.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent with another.
    #[error("{key}: {msg}")]
    Invalid {
        /// The offending key as written in the file (`vm[1].mac`).
        key: String,
        /// What is wrong with its value.
        msg: String,
    },
}

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

/// The NIC host-mux multiplexes the VMs onto (`[backend]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// A Linux TAP interface (created if missing).
    Tap {
        /// Interface name, 1..=15 bytes.
        ifname: String,
    },
    /// An in-memory wire. The binary puts a reflector on its far end (every frame comes back
    /// with source and destination MAC swapped); tests and tools attach their own far end.
    Pair,
    /// An Intel E810 driven by our ice driver.
    Ice {
        /// Where the card is.
        access: IceAccess,
        /// DDP package file (must exist); None: the standard path if present, else safe mode.
        ddp: Option<PathBuf>,
        /// RX interrupt moderation (µs): after waking a sleeping poller, the NIC waits this
        /// long before interrupting again. 0 = none.
        rx_itr_us: u32,
    },
}

/// How host-mux reaches the E810.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceAccess {
    /// A PCI function bound to the kernel's vfio-pci driver ("0000:3b:00.0").
    Pci(String),
    /// A vfio-user socket (a card exported by a vfio-user server, or `ice-model-server`).
    VfioUser(PathBuf),
}

/// One VM slot (`[[vm]]`): the device served on its socket whether or not a guest is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Unique name, used in logs, stats and metrics labels.
    pub name: String,
    /// The vfio-user socket its device is served on (a stale file there is replaced).
    pub socket: PathBuf,
    /// The VM's unicast MAC: frames to it are steered to the VM, and its TX frames must carry
    /// it as source when `limits.spoof_check` is on.
    pub mac: MacAddr,
    /// Most RX queues the guest may configure (1..=`abi::MAX_QUEUES`).
    pub rx_queues: u16,
    /// Most TX queues the guest may configure (1..=`abi::MAX_QUEUES`).
    pub tx_queues: u16,
    /// Index into `MuxConfig::clusters`.
    pub cluster: usize,
}

/// How a cluster spends its cores on polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// An RX poller and a TX poller (needs two cores to be worth it).
    Split,
    /// One poller does both.
    Combined,
    /// Split when the cluster has two or more cores, else combined.
    Auto,
}

/// A set of cores and the pollers that run on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Cores the pollers are pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
    /// Whether RX and TX get a poller each.
    pub mode: PollMode,
}

impl ClusterConfig {
    /// Whether this cluster runs separate RX and TX pollers.
    pub fn split(&self) -> bool {
        match self.mode {
            PollMode::Split => true,
            PollMode::Combined => false,
            PollMode::Auto => self.cpus.len() >= 2,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cpus: Vec::new(),
            mode: PollMode::Combined,
        }
    }
}

/// A whole host-mux configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxConfig {
    /// The NIC the VMs share.
    pub backend: BackendConfig,
    /// The VM slots (at least one; names, sockets and MACs unique).
    pub vms: Vec<VmConfig>,
    /// Empty poll rounds before the poller arms events and sleeps.
    pub idle_polls: u32,
    /// Host packet buffers (backend RX ring plus copies in flight).
    pub pool_size: u32,
    /// Longest poller sleep in ms; 0 = sleep until an event.
    pub sleep_timeout_ms: u32,
    /// Poller clusters (at least one).
    pub clusters: Vec<ClusterConfig>,
    /// Unix socket serving a JSON stats snapshot to each connection.
    pub stats_socket: Option<PathBuf>,
    /// TCP address of the Prometheus metrics endpoint (`GET /metrics`); port 0 binds a free
    /// port (see `HostMux::metrics_addr`).
    pub metrics_listen: Option<SocketAddr>,
    /// Keep unmapped guest memory as inaccessible reservations (catches use after unmap).
    pub guard_unmapped: bool,
    /// Give every VM its own backend RX queue, steered by a backend flow rule on its MAC
    /// (Flow Director on the E810) instead of steering in software.
    pub hw_steering: bool,
    /// Offer guests zero-copy TX: a frame's payload goes to the backend in place, in guest
    /// memory, behind a host copy of its headers (frames of 1024 B and more, to the wire).
    /// Needs a backend that sends lent buffers (pair, tap, ice behind an IOMMU or vfio-user).
    pub zero_copy_tx: bool,
    /// Offer guests zero-copy RX: each VM's own backend RX queue (`hw_steering`) receives
    /// into the buffers its guest posts on a direct ring, so frames from the wire land in
    /// guest memory without a host copy. Needs a backend that receives into lent buffers
    /// (pair, null, ice behind an IOMMU or vfio-user).
    pub zero_copy_rx: bool,
    /// Per-VM bounds, the same for every VM.
    pub limits: GuestLimits,
}

/// What any one VM may make host-mux hold or do: a guest is untrusted, so each resource it can
/// ask for is bounded, and its frames may only carry its own source MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// DMA_MAP regions (each one is an mmap in host-mux; the process has ~65k in all, see
    /// `vm.max_map_count`).
    pub dma_regions: usize,
    /// Bytes mapped through DMA_MAP, summed over regions.
    pub dma_bytes: u64,
    /// Flow rules.
    pub flow_rules: usize,
    /// Largest vfio-user message accepted (and so the largest region access and reply).
    pub message_bytes: usize,
    /// Drop and count (`tx_spoofed`) TX frames whose source MAC is not the VM's own, as
    /// SR-IOV spoof checking does.
    pub spoof_check: bool,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            dma_regions: 1024,
            dma_bytes: 64 << 30,
            flow_rules: 64,
            message_bytes: 1 << 20,
            spoof_check: true,
        }
    }
}

impl MuxConfig {
    /// A config with defaults for everything but the backend and VMs.
    pub fn new(backend: BackendConfig, vms: Vec<VmConfig>) -> MuxConfig {
        MuxConfig {
            backend,
            vms,
            idle_polls: DEFAULT_IDLE_POLLS,
            pool_size: DEFAULT_POOL_SIZE,
            sleep_timeout_ms: DEFAULT_SLEEP_TIMEOUT_MS,
            clusters: vec![ClusterConfig::default()],
            stats_socket: None,
            metrics_listen: None,
            guard_unmapped: false,
            hw_steering: false,
            zero_copy_tx: false,
            zero_copy_rx: false,
            limits: GuestLimits::default(),
        }
    }
}

/// `mux.idle_polls` when not given: empty rounds before a poller sleeps.
pub const DEFAULT_IDLE_POLLS: u32 = 1024;
/// `mux.pool_size` when not given: host packet buffers.
pub const DEFAULT_POOL_SIZE: u32 = 8192;
/// `mux.sleep_timeout_ms` when not given: longest poller sleep in ms.
pub const DEFAULT_SLEEP_TIMEOUT_MS: u32 = 200;

impl MuxConfig {
    /// Reads and parses the TOML file at `path` (see the module docs for its keys).
    pub fn load(path: &Path) -> Result<MuxConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates a config's TOML text; an error names the offending key.
    pub fn parse(text: &str) -> Result<MuxConfig, ConfigError> {
        parse::parse(text)
    }
}

/// Parses a listening address: an IP and a port (`127.0.0.1:9473`, `[::1]:9473`,
/// `0.0.0.0:9473`); host names are not resolved.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("'{text}' is not an IP address and port like 127.0.0.1:9473 or [::1]:9473")
    })
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
        let ice = GOOD.replace("kind = \"tap\"\n        ifname = \"vd0\"", "kind = \"ice\"");
        assert!(err_of(&ice).starts_with("backend.pci"));
        assert!(
            err_of(&ice.replace("kind = \"ice\"", "kind = \"ice\"\npci = \"3b:00.0\""))
                .starts_with("backend.pci")
        );
        let ice = ice.replace(
            "kind = \"ice\"",
            "kind = \"ice\"\nsocket = \"/run/e810.sock\"",
        );
        assert_eq!(
            MuxConfig::parse(&ice).unwrap().backend,
            BackendConfig::Ice {
                access: IceAccess::VfioUser("/run/e810.sock".into()),
                ddp: None,
                rx_itr_us: 0,
            }
        );
        assert!(
            err_of(&ice.replace("kind = \"ice\"", "kind = \"ice\"\nrx_itr_us = 9000"))
                .starts_with("backend.rx_itr_us")
        );
        let itr = ice.replace("kind = \"ice\"", "kind = \"ice\"\nrx_itr_us = 50");
        assert!(matches!(
            MuxConfig::parse(&itr).unwrap().backend,
            BackendConfig::Ice { rx_itr_us: 50, .. }
        ));
        assert!(err_of(&GOOD.replace("rx_queues = 4", "rx_qeues = 4")).contains("rx_qeues"));
        assert!(err_of(&GOOD.replace("rx_queues = 4", "cluster = 1")).starts_with("vm[0].cluster"));
        let clustered = format!("[[cluster]]\ncpus = [0]\nmode = \"sideways\"\n{GOOD}");
        assert!(err_of(&clustered).starts_with("cluster[0].mode"));
        let clustered = format!("[[cluster]]\ncpus = [4096]\n{GOOD}");
        assert!(err_of(&clustered).starts_with("cluster[0].cpus"));
    }

    #[test]
    fn limits_have_safe_defaults_and_are_range_checked() {
        let c = MuxConfig::parse(GOOD).unwrap();
        assert_eq!(c.limits, GuestLimits::default());
        assert!(c.limits.spoof_check);
        let c = MuxConfig::parse(&format!(
            "{GOOD}\n[limits]\ndma_regions = 16\nflow_rules = 0\nspoof_check = false\n"
        ))
        .unwrap();
        assert_eq!(c.limits.dma_regions, 16);
        assert_eq!(c.limits.flow_rules, 0);
        assert!(!c.limits.spoof_check);
        for (bad, key) in [
            ("dma_regions = 0", "limits.dma_regions"),
            ("dma_regions = 100000", "limits.dma_regions"),
            ("dma_bytes = 4096", "limits.dma_bytes"),
            ("message_bytes = 100", "limits.message_bytes"),
            ("flow_rules = 5000", "limits.flow_rules"),
            ("dma_region = 5", "dma_region"),
        ] {
            let e = err_of(&format!("{GOOD}\n[limits]\n{bad}\n"));
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn metrics_listen_is_optional_and_must_be_a_socket_address() {
        assert_eq!(MuxConfig::parse(GOOD).unwrap().metrics_listen, None);
        let with = |v: &str| format!("[mux]\nmetrics_listen = \"{v}\"\n{GOOD}");
        assert_eq!(
            MuxConfig::parse(&with("127.0.0.1:9473"))
                .unwrap()
                .metrics_listen,
            Some("127.0.0.1:9473".parse().unwrap())
        );
        assert_eq!(
            MuxConfig::parse(&with("[::1]:0")).unwrap().metrics_listen,
            Some("[::1]:0".parse().unwrap())
        );
        for bad in [
            "localhost:9473",
            "127.0.0.1",
            "127.0.0.1:99999",
            ":9473",
            "",
        ] {
            let e = err_of(&with(bad));
            assert!(e.starts_with("mux.metrics_listen: "), "{bad}: {e}");
        }
        let e = err_of(&format!("[mux]\nmetrics_listen = 9473\n{GOOD}"));
        assert!(e.contains("metrics_listen"), "{e}");
    }

    #[test]
    fn clusters_and_modes() {
        let c = MuxConfig::parse(&format!(
            "[[cluster]]\ncpus = [0]\n[[cluster]]\nmode = \"split\"\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(c.clusters.len(), 2);
        assert!(!c.clusters[0].split(), "auto with one cpu is combined");
        assert!(c.clusters[1].split());
        assert_eq!(
            MuxConfig::parse(GOOD).unwrap().clusters,
            vec![ClusterConfig::default()]
        );
    }
}
