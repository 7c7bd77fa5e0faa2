//! A guest process for the integration tests: attaches to a host-mux socket with guest-pmd and
//! obeys line commands on stdin, answering one line each on stdout.
//!
//! usage: vdpdk-test-guest SOCKET [RXQ] [TXQ] [RING]   (RING: RX/TX descriptors, default 2048)
//!
//! Commands:
//! - `send COUNT LEN DST_MAC` — transmit COUNT UDP frames (seq 0..COUNT) → `SENT n`
//! - `recv COUNT TIMEOUT_MS [QUEUE]` — receive until COUNT frames (on QUEUE) or timeout
//!   → `RECV total q0:n:digest ...`
//! - `flow TYPE VALUE QUEUE` — TYPE `ethtype` (hex) or `ethdst` (MAC) → `FLOW ok H` / `FLOW err MSG`
//! - `wait-intr QUEUE TIMEOUT_MS` — arm the RX interrupt, sleep on its fd → `INTR woke|timeout`
//! - `stats` → `STATS ipackets opackets ierrors oerrors | host h0 h1 ...`
//! - `flood DST_MAC LEN` — transmit forever (until killed)
//! - `quit`
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use guest_pmd::VdpdkPort;
use vdpdk_core::packet::{write_udp_frame, Digest};
use vdpdk_core::{DevConfig, EthDev, FlowItem, FlowRule, MacAddr, Mbuf, Mempool, RxQueue, TxQueue};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: vdpdk-test-guest SOCKET [RXQ] [TXQ] [RING]");
        std::process::exit(2);
    }
    let nrx: u16 = args.get(2).map_or(1, |s| s.parse().expect("RXQ"));
    let ntx: u16 = args.get(3).map_or(1, |s| s.parse().expect("TXQ"));
    let ring: u16 = args.get(4).map_or(2048, |s| s.parse().expect("RING"));
    let mut port = match VdpdkPort::connect(Path::new(&args[1])) {
        Ok(p) => p,
        Err(e) => {
            println!("ERROR {e}");
            std::process::exit(1);
        }
    };
    // Enough buffers for every RX ring to stay full while a TX ring is in flight.
    let bufs = (nrx as u32 + ntx as u32 + 2) * ring as u32;
    let pool = Mempool::new("guest", bufs, vdpdk_core::DEFAULT_BUF_SIZE).expect("pool");
    port.configure(&DevConfig {
        nb_rx_queues: nrx,
        nb_tx_queues: ntx,
        rx_intr: true,
        ..Default::default()
    })
    .expect("configure");
    for q in 0..nrx {
        port.rx_queue_setup(q, ring, &pool).expect("rxq");
    }
    for q in 0..ntx {
        port.tx_queue_setup(q, ring).expect("txq");
    }
    port.start().expect("start");
    let mut rxqs: Vec<Box<dyn RxQueue>> =
        (0..nrx).map(|q| port.take_rx_queue(q).unwrap()).collect();
    let mut txq: Box<dyn TxQueue> = port.take_tx_queue(0).unwrap();
    let mac = port.info().mac;
    println!("READY {mac}");
    let mut out = std::io::stdout();
    out.flush().ok();

    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let w: Vec<&str> = line.split_whitespace().collect();
        let reply = match w.as_slice() {
            ["send", n, len, dst] => {
                let dst: MacAddr = dst.parse().expect("mac");
                let n = send(
                    &mut *txq,
                    &pool,
                    mac,
                    dst,
                    n.parse().unwrap(),
                    len.parse().unwrap(),
                    false,
                );
                format!("SENT {n}")
            }
            ["flood", dst, len] => {
                let dst: MacAddr = dst.parse().expect("mac");
                send(
                    &mut *txq,
                    &pool,
                    mac,
                    dst,
                    u64::MAX,
                    len.parse().unwrap(),
                    true,
                );
                unreachable!()
            }
            ["recv", n, t] => recv(&mut rxqs, n.parse().unwrap(), t.parse().unwrap(), None),
            ["recv", n, t, q] => recv(
                &mut rxqs,
                n.parse().unwrap(),
                t.parse().unwrap(),
                Some(q.parse().unwrap()),
            ),
            ["flow", kind, val, q] => {
                let item = match *kind {
                    "ethtype" => FlowItem::eth_type(u16::from_str_radix(val, 16).expect("hex")),
                    _ => FlowItem::eth_dst(val.parse().expect("mac")),
                };
                match port.flow_create(&FlowRule::to_queue(vec![item], q.parse().unwrap())) {
                    Ok(h) => format!("FLOW ok {}", h.0),
                    Err(e) => format!("FLOW err {e}"),
                }
            }
            ["wait-intr", q, t] => {
                wait_intr(&mut *rxqs[q.parse::<usize>().unwrap()], t.parse().unwrap())
            }
            ["stats"] => {
                let s = port.stats();
                let h = port
                    .host_stats()
                    .map(|h| format!("{h:?}"))
                    .unwrap_or_default();
                format!(
                    "STATS {} {} {} {} | host {h}",
                    s.ipackets, s.opackets, s.ierrors, s.oerrors
                )
            }
            ["quit"] => break,
            _ => format!("ERROR unknown command '{line}'"),
        };
        println!("{reply}");
        out.flush().ok();
    }
    drop(rxqs);
    drop(txq);
    port.stop().ok();
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
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    rx.disable_intr().ok();
    if r == 1 {
        "INTR woke".into()
    } else {
        "INTR timeout".into()
    }
}
