//! `vdpdk-smol`: small guest applications on smoltcp over any port: an HTTP server, a TCP echo
//! server and a UDP reflector. They answer ARP and ping too, so Linux's own tools (curl, nc,
//! ping, iperf3's UDP mode) can talk to them across host-mux.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use smoltcp::wire::{IpCidr, Ipv4Address};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::Mempool;
use vdpdk_tools::smol::{http_body, serve, App, AppStats, PortPhy};
use vdpdk_tools::{die, open_port, outln, port_spec, EXIT_FAILURE, EXIT_USAGE};

const TOOL: &str = "vdpdk-smol";

/// smoltcp guest applications (HTTP server, TCP echo, UDP reflector) on any vdpdk-rs port.
///
/// Ports: vdpdk:SOCKET, vdpdk-vm:BDF|auto, tap:IFNAME, ice:SOCKET, ice-pci:BDF. The port's own
/// MAC is used; give the application an IPv4 address with --ip.
#[derive(Parser, Debug)]
#[command(name = "vdpdk-smol", version)]
struct Args {
    /// The port to run on.
    #[arg(long, value_parser = port_spec)]
    port: String,
    /// IPv4 address and prefix of the application, e.g. 10.0.0.2/24.
    #[arg(long)]
    ip: String,
    /// Default gateway (optional).
    #[arg(long)]
    gateway: Option<Ipv4Address>,
    /// Seconds to run (0 = until killed).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Exit after this many HTTP requests / TCP connections / UDP datagrams (0 = no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Print a progress line every second.
    #[arg(long)]
    progress: bool,
    #[command(subcommand)]
    app: AppArg,
}

#[derive(Subcommand, Debug)]
enum AppArg {
    /// HTTP/1.0 server: GET returns a deterministic text body of --size bytes.
    Http {
        #[arg(long, default_value_t = 80)]
        listen: u16,
        /// Body size in bytes.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=(64 << 20)))]
        size: u64,
    },
    /// TCP echo server.
    TcpEcho {
        #[arg(long, default_value_t = 7)]
        listen: u16,
    },
    /// UDP reflector: every datagram goes back to its sender.
    UdpReflect {
        #[arg(long, default_value_t = 7)]
        listen: u16,
    },
}

fn main() {
    let args = Args::parse();
    let ip: IpCidr = match args.ip.parse() {
        Ok(IpCidr::Ipv4(c)) if c.prefix_len() > 0 => IpCidr::Ipv4(c),
        _ => {
            die(
                TOOL,
                EXIT_USAGE,
                format!(
                    "--ip '{}' is not an IPv4 address with a prefix (e.g. 10.0.0.2/24)",
                    args.ip
                ),
            );
        }
    };
    if !(args.duration >= 0.0 && args.duration.is_finite()) {
        die(
            TOOL,
            EXIT_USAGE,
            "--duration must be a non-negative number of seconds",
        );
    }
    let app = match args.app {
        AppArg::Http { listen, size } => App::Http {
            port: listen,
            body: http_body(size as usize),
        },
        AppArg::TcpEcho { listen } => App::TcpEcho { port: listen },
        AppArg::UdpReflect { listen } => App::UdpReflect { port: listen },
    };
    let mut port = open_port(&args.port).unwrap_or_else(|e| die(TOOL, EXIT_FAILURE, e));
    let info = port.info();
    let pool = Mempool::new("smol", 4096, vdpdk_core::DEFAULT_BUF_SIZE)
        .unwrap_or_else(|e| die(TOOL, EXIT_FAILURE, e));
    let (rx, tx) = start_single_queue(&mut *port, &pool, 1024, info.rx_intr)
        .unwrap_or_else(|e| die(TOOL, EXIT_FAILURE, format!("starting {}: {e}", args.port)));
    let mut phy = PortPhy::new(rx, tx, pool, info.mtu);
    outln!(
        "{app_name} on {} ({}, {ip}), ready",
        args.port,
        info.mac,
        app_name = name(&app)
    );
    let start = Instant::now();
    let deadline = (args.duration > 0.0).then(|| start + Duration::from_secs_f64(args.duration));
    let limit = args.count;
    let counted = |s: &AppStats| match app {
        App::Http { .. } => s.requests,
        App::TcpEcho { .. } => s.connections,
        App::UdpReflect { .. } => s.datagrams,
    };
    let st = serve(
        &mut phy,
        info.mac,
        ip,
        args.gateway,
        &app,
        |s| deadline.is_some_and(|d| Instant::now() >= d) || (limit > 0 && counted(s) >= limit),
        |s| {
            if args.progress {
                outln!("[{:6.1} s] {}", start.elapsed().as_secs_f64(), line(s));
            }
        },
    );
    outln!(
        "done after {:.1} s: {}",
        start.elapsed().as_secs_f64(),
        line(&st)
    );
    if phy.tx_dropped > 0 {
        outln!("tx dropped: {}", phy.tx_dropped);
    }
}

fn name(app: &App) -> &'static str {
    match app {
        App::Http { .. } => "http",
        App::TcpEcho { .. } => "tcp-echo",
        App::UdpReflect { .. } => "udp-reflect",
    }
}

fn line(s: &AppStats) -> String {
    format!(
        "connections {} requests {} datagrams {} bytes in {} out {}",
        s.connections, s.requests, s.datagrams, s.bytes_in, s.bytes_out
    )
}
