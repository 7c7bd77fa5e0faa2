//! `vdpdk-guestctl`: drives one port from line commands on stdin, answering one line each on
//! stdout. It is the guest side of the integration tests, as a host process (`vdpdk:SOCKET`) and
//! inside a VM over the serial console (`vdpdk-vm:auto`), and a handy manual probe of any port.
//!
//! Commands:
//! - `send COUNT LEN DST_MAC` — transmit COUNT UDP frames (seq 0..COUNT) → `SENT n digest`
//! - `recv COUNT TIMEOUT_MS [QUEUE]` — receive until COUNT frames (on QUEUE) or timeout
//!   → `RECV total q0:n:digest ...`
//! - `flow TYPE VALUE QUEUE|drop` — TYPE `ethtype` (hex) or `ethdst` (MAC); matching frames go
//!   to QUEUE or are dropped → `FLOW ok H` / `FLOW err MSG`
//! - `wait-intr QUEUE TIMEOUT_MS` — arm the RX interrupt, sleep on its fd
//!   → `INTR woke MS` / `INTR timeout`
//! - `stats` → `STATS ipackets opackets ierrors oerrors | host h0 h1 ...` (host: the port's xstats)
//! - `info` → `INFO mac=.. driver=.. rxq=.. txq=.. rx_intr=.. rx_offloads=.. tx_offloads=..`
//! - `flood DST_MAC LEN` — transmit forever (until killed)
//! - `quit`
//!
//! A digest is an order-sensitive hash over the frames in sending or arrival order
//! ([`Digest`]), so two sides can compare what was sent with what arrived.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use vdpdk_core::packet::{write_udp_frame, Digest};
use vdpdk_core::{DevConfig, EthDev, FlowItem, FlowRule, MacAddr, Mbuf, Mempool, RxQueue, TxQueue};

/// Drive a port from line commands on stdin (send, recv, flow, wait-intr, stats, info, quit).
///
/// Ports: vdpdk:SOCKET, vdpdk-vm:BDF|auto, tap:IFNAME, ice:SOCKET, ice-pci:BDF.
#[derive(Parser, Debug)]
#[command(name = "vdpdk-guestctl", version)]
pub struct Args {
    /// The port to drive.
    #[arg(value_parser = crate::port_spec)]
    pub port: String,
    /// RX queues.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub rxq: u16,
    /// TX queues (commands use queue 0).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub txq: u16,
    /// Descriptors per RX and TX ring.
    #[arg(long, default_value_t = 2048)]
    pub ring: u16,
}

/// Runs the command loop; returns the process exit code.
pub fn run(args: &Args) -> i32 {
    let mut port = match crate::open_port(&args.port) {
        Ok(p) => p,
        Err(e) => {
            crate::outln!("ERROR {e}");
            return 1;
        }
    };
    match serve(&mut *port, args) {
        Ok(()) => 0,
        Err(e) => {
            crate::outln!("ERROR {e}");
            1
        }
    }
}

fn serve(port: &mut dyn EthDev, args: &Args) -> vdpdk_core::Result<()> {
    let (nrx, ntx, ring) = (args.rxq, args.txq, args.ring);
    // Enough buffers for every RX ring to stay full while a TX ring is in flight.
    let bufs = (nrx as u32 + ntx as u32 + 2) * ring as u32;
    let pool = Mempool::new("guest", bufs, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let rx_intr = port.info().rx_intr;
    port.configure(&DevConfig {
        nb_rx_queues: nrx,
        nb_tx_queues: ntx,
        rx_intr,
        ..Default::default()
    })?;
    for q in 0..nrx {
        port.rx_queue_setup(q, ring, &pool)?;
    }
    for q in 0..ntx {
        port.tx_queue_setup(q, ring)?;
    }
    port.start()?;
    let mut rxqs: Vec<Box<dyn RxQueue>> = (0..nrx)
        .map(|q| port.take_rx_queue(q))
        .collect::<vdpdk_core::Result<_>>()?;
    let mut txq: Box<dyn TxQueue> = port.take_tx_queue(0)?;
    let mac = port.info().mac;
    crate::outln!("READY {mac}");
    let mut out = std::io::stdout();
    out.flush().ok();

    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let w: Vec<&str> = line.split_whitespace().collect();
        let reply = match w.as_slice() {
            [] => continue,
            ["quit"] => break,
            ["flood", dst, len] => match (dst.parse::<MacAddr>(), len.parse::<usize>()) {
                (Ok(dst), Ok(len)) => {
                    send(&mut *txq, &pool, mac, dst, u64::MAX, len, true);
                    unreachable!("flood only ends when the process is killed")
                }
                _ => format!("ERROR bad arguments in '{line}'"),
            },
            _ => command(port, &mut rxqs, &mut *txq, &pool, mac, &w)
                .unwrap_or_else(|| format!("ERROR bad command '{line}' (see --help)")),
        };
        crate::outln!("{reply}");
        out.flush().ok();
    }
    drop(rxqs);
    drop(txq);
    port.stop()
}

/// One command's answer, or None when it is unknown or its arguments do not parse.
fn command(
    port: &mut dyn EthDev,
    rxqs: &mut [Box<dyn RxQueue>],
    txq: &mut dyn TxQueue,
    pool: &Mempool,
    mac: MacAddr,
    w: &[&str],
) -> Option<String> {
    Some(match *w {
        ["send", n, len, dst] => {
            let (n, len, dst) = (n.parse().ok()?, len.parse().ok()?, dst.parse().ok()?);
            let max = (vdpdk_core::DEFAULT_BUF_SIZE - vdpdk_core::MBUF_HEADROOM) as usize;
            if !(60..=max).contains(&len) {
                return Some(format!("ERROR frame length {len} outside 60..={max}"));
            }
            let (sent, digest) = send_digest(txq, pool, mac, dst, n, len);
            format!("SENT {sent} {:016x}", digest.0)
        }
        ["recv", n, t] => recv(rxqs, n.parse().ok()?, t.parse().ok()?, None),
        ["recv", n, t, q] => {
            let q: usize = q.parse().ok()?;
            if q >= rxqs.len() {
                return Some(format!("ERROR RX queue {q} of {}", rxqs.len()));
            }
            recv(rxqs, n.parse().ok()?, t.parse().ok()?, Some(q))
        }
        ["flow", kind, val, q] => {
            let item = match kind {
                "ethtype" => FlowItem::eth_type(u16::from_str_radix(val, 16).ok()?),
                "ethdst" => FlowItem::eth_dst(val.parse().ok()?),
                _ => return None,
            };
            let rule = match q {
                "drop" => FlowRule {
                    actions: vec![vdpdk_core::flow::FlowAction::Drop],
                    ..FlowRule::to_queue(vec![item], 0)
                },
                q => FlowRule::to_queue(vec![item], q.parse().ok()?),
            };
            match port.flow_create(&rule) {
                Ok(h) => format!("FLOW ok {}", h.0),
                Err(e) => format!("FLOW err {e}"),
            }
        }
        ["wait-intr", q, t] => {
            let q: usize = q.parse().ok()?;
            let rx = rxqs.get_mut(q)?;
            wait_intr(&mut **rx, t.parse().ok()?)
        }
        ["stats"] => {
            let s = port.stats();
            let host: Vec<u64> = port.xstats().into_iter().map(|(_, v)| v).collect();
            format!(
                "STATS {} {} {} {} | host {host:?}",
                s.ipackets, s.opackets, s.ierrors, s.oerrors
            )
        }
        ["info"] => {
            let i = port.info();
            format!(
                "INFO mac={} driver={} rxq={} txq={} rx_intr={} rx_offloads={:?} tx_offloads={:?} link_up={}",
                i.mac,
                i.driver,
                i.max_rx_queues,
                i.max_tx_queues,
                i.rx_intr,
                i.rx_offload_capa,
                i.tx_offload_capa,
                port.link().up
            )
        }
        _ => return None,
    })
}

/// Sends `count` frames and returns how many went out and the digest of those.
fn send_digest(
    txq: &mut dyn TxQueue,
    pool: &Mempool,
    src: MacAddr,
    dst: MacAddr,
    count: u64,
    len: usize,
) -> (u64, Digest) {
    let sent = send(txq, pool, src, dst, count, len, false);
    let mut d = Digest::default();
    let mut f = vec![0u8; len];
    for s in 0..sent {
        write_udp_frame(&mut f, dst, src, s);
        d.add(&f);
    }
    (sent, d)
}

#[allow(clippy::too_many_arguments)]
fn send(
    txq: &mut dyn TxQueue,
    pool: &Mempool,
    src: MacAddr,
    dst: MacAddr,
    count: u64,
    len: usize,
    forever: bool,
) -> u64 {
    let mut batch: Vec<Mbuf> = Vec::with_capacity(32);
    let mut seq = 0u64;
    while forever || seq < count {
        while batch.len() < 32 && (forever || seq + (batch.len() as u64) < count) {
            let Some(mut m) = pool.alloc() else { break };
            let s = seq + batch.len() as u64;
            let f = m.append(len).expect("room");
            write_udp_frame(f, dst, src, s);
            batch.push(m);
        }
        let before = batch.len();
        txq.tx_burst(&mut batch);
        seq += (before - batch.len()) as u64;
        if !batch.is_empty() {
            std::thread::yield_now();
        }
    }
    seq
}

/// Receives until `want` frames arrived (on queue `only`, if given) or the timeout.
fn recv(rxqs: &mut [Box<dyn RxQueue>], want: u64, timeout_ms: u64, only: Option<usize>) -> String {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut counts = vec![0u64; rxqs.len()];
    let mut digests = vec![Digest::default(); rxqs.len()];
    let mut buf = Vec::with_capacity(32);
    let mut idle = 0u32;
    let done = |c: &[u64]| only.map_or(c.iter().sum::<u64>(), |q| c[q]) >= want;
    while !done(&counts) && Instant::now() < deadline {
        let mut got = 0;
        for (q, rx) in rxqs.iter_mut().enumerate() {
            got += rx.rx_burst(&mut buf, 32);
            for m in buf.drain(..) {
                counts[q] += 1;
                digests[q].add(m.data());
            }
        }
        if got == 0 {
            idle += 1;
            if idle > 64 {
                std::thread::sleep(Duration::from_micros(50));
            }
        } else {
            idle = 0;
        }
    }
    let per: Vec<String> = counts
        .iter()
        .zip(&digests)
        .enumerate()
        .map(|(q, (c, d))| format!("q{q}:{c}:{:016x}", d.0))
        .collect();
    format!("RECV {} {}", counts.iter().sum::<u64>(), per.join(" "))
}

fn wait_intr(rx: &mut dyn RxQueue, timeout_ms: i32) -> String {
    rx.enable_intr().expect("enable_intr");
    let fd = rx.intr_fd().expect("intr fd");
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let t0 = Instant::now();
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    rx.disable_intr().ok();
    if r == 1 {
        format!("INTR woke {}", t0.elapsed().as_millis())
    } else {
        "INTR timeout".into()
    }
}
