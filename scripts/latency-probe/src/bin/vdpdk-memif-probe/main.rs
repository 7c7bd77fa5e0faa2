//! One frame in flight over memif, against C DPDK: this program is a memif client (pure Rust,
//! copy mode, one ring each way) connected to `dpdk-testpmd --vdev net_memif0,role=server ...
//! --forward-mode=macswap`. It writes one UDP frame into the client -> server ring, busy-polls
//! the server -> client ring until testpmd sends it back with its MACs swapped, and prints
//! p50/p99/p99.9/max of the round trip in microseconds, in the format of
//! vdpdk-latency-probe (scripts/bench-vs-memif.sh reads both the same way).
//!
//! The clock runs from before the frame is copied into the shared buffer to after the frame
//! that came back is copied out of it: what an application sees of rte_eth_tx_burst +
//! rte_eth_rx_burst on a memif client in copy mode, which copies in and out the same way.
//!
//! Used only by the benchmark; nothing here links C code.
//!
//! Usage: vdpdk-memif-probe SOCKET [SAMPLES] [SIZE] [CPU] [ID]
//! (defaults 200000 64 0 0)

mod control;
mod link;
mod proto;
mod region;
mod rings;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use link::BUF_SIZE;
use proto::{Msg, VERSION};
use rings::Rings;
use vdpdk_core::test_frames::{frame_seq, write_udp_frame};
use vdpdk_core::MacAddr;

/// The same MACs as vdpdk-latency-probe: the peer (testpmd) and us.
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const OWN_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);

type Result<T> = std::result::Result<T, String>;

fn arg<T: std::str::FromStr>(i: usize, default: Option<T>) -> T {
    match (std::env::args().nth(i), default) {
        (None, Some(d)) => d,
        (s, _) => s.and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            eprintln!("usage: vdpdk-memif-probe SOCKET [SAMPLES] [SIZE] [CPU] [ID] (bad or missing argument {i})");
            std::process::exit(2)
        }),
    }
}

fn pct(v: &[u64], q: f64) -> f64 {
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

fn main() {
    let sock: PathBuf = arg(1, None);
    let samples: usize = arg(2, Some(200_000));
    let size: usize = arg(3, Some(64));
    let cpu: usize = arg(4, Some(0));
    let id: u32 = arg(5, Some(0));
    if !(60..=1514).contains(&size) || samples == 0 {
        eprintln!("vdpdk-memif-probe: size must be 60..=1514 and samples > 0");
        std::process::exit(2);
    }
    if let Err(e) = run(&sock, samples, size, cpu, id) {
        eprintln!("vdpdk-memif-probe: {e}");
        std::process::exit(1);
    }
}

fn pin(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays inside it (cpu checked);
    // sched_setaffinity reads it for the size given.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(format!("CPU {cpu} out of range"));
        }
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set)
    };
    if r < 0 {
        return Err(format!(
            "pinning to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Sends frame `seq` and waits up to `limit` for it to come back; the round trip time, or
/// None if it did not come back in time.
fn round_trip(
    rings: &mut Rings,
    frame: &mut [u8],
    back: &mut [u8],
    seq: u64,
    limit: Duration,
) -> Result<Option<Duration>> {
    write_udp_frame(frame, PEER_MAC, OWN_MAC, seq);
    let t0 = Instant::now();
    while !rings.send(frame) {
        if t0.elapsed() > limit {
            return Err("the client -> server ring stays full: is testpmd forwarding?".into());
        }
    }
    loop {
        match rings.recv(back)? {
            // testpmd's macswap swapped the MACs; an older (timed-out) frame is skipped.
            Some(n) if frame_seq(&back[..n]) == Some(seq) => {
                let t1 = Instant::now();
                if back[0..6] != OWN_MAC.0 || back[6..12] != PEER_MAC.0 || n != frame.len() {
                    return Err(format!(
                        "frame {seq} came back changed: {:02x?}",
                        &back[..n.min(14)]
                    ));
                }
                return Ok(Some(t1 - t0));
            }
            Some(_) => {}
            None if t0.elapsed() > limit => return Ok(None),
            None => {}
        }
    }
}

fn run(sock: &Path, samples: usize, size: usize, cpu: usize, id: u32) -> Result<()> {
    pin(cpu)?;
    let link = link::connect(sock, id)?;
    let mut rings = Rings::new(&link);
    let mut frame = vec![0u8; size];
    let mut back = vec![0u8; BUF_SIZE as usize];
    let limit = Duration::from_millis(200);
    let mut seq = 0u64;
    // First contact: testpmd drops what it receives while it starts forwarding (it flushes
    // its RX queues for a few ms), so the first frames after CONNECTED may not come back.
    let t = Instant::now();
    loop {
        seq += 1;
        if round_trip(&mut rings, &mut frame, &mut back, seq, limit)?.is_some() {
            break;
        }
        if t.elapsed() > Duration::from_secs(5) {
            return Err("no frame came back in 5 s: is testpmd forwarding (macswap)?".into());
        }
    }
    let warmup = (samples / 10).max(1000);
    let mut rtt = Vec::with_capacity(samples);
    let mut lost = 0u64;
    let t_start = Instant::now();
    for i in 0..warmup + samples {
        seq += 1;
        match round_trip(&mut rings, &mut frame, &mut back, seq, limit)? {
            Some(d) if i >= warmup => rtt.push(d.as_nanos() as u64),
            Some(_) => {}
            None => {
                lost += 1;
                if let Ok(Some(m)) = link.ctl.try_recv() {
                    if m.ty() == proto::MSG_DISCONNECT {
                        return Err(format!(
                            "the server disconnected: {}",
                            m.disconnect_reason()
                        ));
                    }
                }
                if lost > 50 {
                    return Err(format!("{lost} frames did not come back within {limit:?}"));
                }
            }
        }
    }
    let secs = t_start.elapsed().as_secs_f64();
    // Polite: the server logs the reason and frees the interface for the next client.
    let _ = link
        .ctl
        .send(&Msg::disconnect("vdpdk-memif-probe done"), None);
    println!(
        "vdpdk-memif-probe: {size} B, one frame in flight, client CPU {cpu}, server {:?} (memif {}.{}, \
         ring {} x {} B, copy mode), {} samples (after {warmup} warm-up) in {secs:.1} s, {lost} lost",
        link.server,
        VERSION >> 8,
        VERSION & 0xff,
        1u32 << link.region.log2(),
        link.region.buf_size(),
        rtt.len()
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "us", "p50", "p99", "p99.9", "max"
    );
    if rtt.is_empty() {
        return Err("no samples".into());
    }
    rtt.sort_unstable();
    println!(
        "{:<34} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        "round trip (client->server->client)",
        pct(&rtt, 0.5),
        pct(&rtt, 0.99),
        pct(&rtt, 0.999),
        *rtt.last().unwrap() as f64 / 1000.0
    );
    Ok(())
}
