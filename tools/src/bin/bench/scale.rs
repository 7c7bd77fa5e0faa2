//! Scaling mode: N guests on one poller, aggregate Mpps each way and per-guest fairness.

use std::time::{Duration, Instant};

use guest_pmd::VdpdkPort;
use host_mux::{BackendConfig, ClusterConfig, HostMux, MuxConfig, PollMode, VmConfig};
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue, TxQueue};
use vdpdk_tools::outln;

use crate::wire::Wire;
use crate::{fill, Args, Direction, Rounds, BURST, WIRE_MAC};

fn scale_guest_mac(i: usize) -> MacAddr {
    MacAddr([2, 0, 0, 1, (i >> 8) as u8, i as u8])
}

/// Scaling mode: for each guest count, aggregate Mpps and per-guest shares, both directions.
pub fn scale(args: &Args) -> vdpdk_core::Result<()> {
    let size = args.sizes[0];
    outln!(
        "vdpdk-bench scaling: {size} B frames, {:?} wire, one combined poller on CPU {}, guests driven from CPU {}, {} x {:.1}s",
        args.wire, args.mux_cpu, args.guest_cpu, args.repeats, args.secs
    );
    // Each rate is also given against the first guest count's in the same direction (#14's
    // scaling target compares 64 guests with 1).
    let first = args.guests[0];
    let against = format!("x {first} guest{}", if first == 1 { "" } else { "s" });
    outln!(
        "{:>6} {:<18} {:>12} {:>10} {:>10} {:>10}",
        "guests",
        "direction",
        "median Mpps",
        "min share",
        "max share",
        against
    );
    let mut base = [None::<f64>; 2];
    host_mux::pin_current_thread(args.guest_cpu)?;
    for &n in &args.guests {
        let vms = (0..n)
            .map(|i| VmConfig {
                name: format!("g{i}"),
                socket: args.dir.join(format!("g{i}.sock")),
                mac: scale_guest_mac(i),
                rx_queues: 1,
                tx_queues: 1,
                cluster: 0,
            })
            .collect();
        let cfg = MuxConfig {
            idle_polls: 1 << 20,
            pool_size: 32768,
            clusters: vec![ClusterConfig {
                cpus: vec![args.mux_cpu],
                mode: PollMode::Combined,
            }],
            zero_copy_tx: args.zero_copy,
            ..MuxConfig::new(BackendConfig::Pair, vms)
        };
        let (backend, mut wire) = Wire::new(args.wire, WIRE_MAC)?;
        let mux = HostMux::start(&cfg, backend)?;
        let mut ports = Vec::new();
        let mut queues = Vec::new();
        for vm in &cfg.vms {
            let mut port = VdpdkPort::connect(&vm.socket)?;
            let pool = Mempool::new("scale-guest", 1024, vdpdk_core::DEFAULT_BUF_SIZE)?;
            let (rx, tx) = start_single_queue(&mut port, &pool, 256, false)?;
            ports.push(port);
            queues.push((rx, tx, pool));
        }
        let dirs = [
            (Direction::Rx, "wire -> guests"),
            (Direction::Tx, "guests -> wire"),
        ];
        for (slot, (_, dir)) in dirs
            .into_iter()
            .enumerate()
            .filter(|(_, (d, _))| args.directions.contains(d))
        {
            let mut runs: Vec<(f64, Vec<u64>)> = Vec::new();
            for rep in 0..args.repeats {
                let (r, idle, what) = if dir.starts_with("wire") {
                    let (r, idle) = scale_rx(&mut queues, &mut wire, size, args.secs);
                    (r, idle, "guest polls")
                } else {
                    let (r, idle) = scale_tx(&mut queues, &mut wire, &mux, size, args.secs);
                    (r, idle, "poller rounds")
                };
                eprintln!(
                    "  run {}: {n} guests, {dir}: {:.2} Mpps ({what} that found nothing: {:.0}%)",
                    rep + 1,
                    r.0,
                    idle * 100.0
                );
                runs.push(r);
            }
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (mpps, counts) = &runs[runs.len() / 2];
            let fair = counts.iter().sum::<u64>() as f64 / n as f64;
            let share = |c: u64| if fair > 0.0 { c as f64 / fair } else { 0.0 };
            let min = share(*counts.iter().min().unwrap());
            let max = share(*counts.iter().max().unwrap());
            let base = *base[slot].get_or_insert(*mpps);
            let ratio = if base > 0.0 { mpps / base } else { 0.0 };
            outln!("{n:>6} {dir:<18} {mpps:>12.2} {min:>10.2} {max:>10.2} {ratio:>10.2}");
            if args.json {
                outln!(
                    "{{\"guests\":{n},\"direction\":\"{dir}\",\"size\":{size},\"median_mpps\":{mpps:.3},\"min_share\":{min:.3},\"max_share\":{max:.3},\"vs_first\":{ratio:.3}}}"
                );
            }
        }
        drop(queues);
        drop(ports);
        mux.shutdown();
    }
    Ok(())
}

type GuestQueues = (Box<dyn RxQueue>, Box<dyn TxQueue>, Mempool);

/// The wire offers frames round-robin to every guest's MAC; every guest polls. Returns
/// ((Mpps received by all guests, per-guest counts), the share of the guests' polls that
/// found nothing). (The poller's idle rounds say nothing here: the null wire always has
/// frames.) Many empty polls: the poller bounds the rate; few: the guests' side does.
fn scale_rx(
    guests: &mut [GuestQueues],
    wire: &mut Wire,
    size: usize,
    secs: f64,
) -> ((f64, Vec<u64>), f64) {
    let n = guests.len();
    let tmpls: Vec<Vec<u8>> = (0..n)
        .map(|i| udp_frame(scale_guest_mac(i), WIRE_MAC, 1, size))
        .collect();
    let mut counts = vec![0u64; n];
    let (mut pending, mut buf): (Vec<Mbuf>, Vec<Mbuf>) = (Vec::new(), Vec::new());
    let mut next = 0usize;
    wire.start_source(&tmpls);
    let (t0, dur) = (Instant::now(), Duration::from_secs_f64(secs));
    let (mut polls, mut empty) = (0u64, 0u64);
    while t0.elapsed() < dur {
        wire.offer(&mut pending, &tmpls, &mut next);
        for (i, g) in guests.iter_mut().enumerate() {
            let got = g.0.rx_burst(&mut buf, BURST) as u64;
            polls += 1;
            empty += (got == 0) as u64;
            counts[i] += got;
            Mempool::free_bulk(&mut buf);
        }
    }
    let el = t0.elapsed().as_secs_f64();
    wire.stop_source();
    Mempool::free_bulk(&mut pending);
    settle(guests, wire);
    let idle = empty as f64 / polls.max(1) as f64;
    ((counts.iter().sum::<u64>() as f64 / el / 1e6, counts), idle)
}

/// Every guest offers a burst in turn. Returns ((Mpps on the wire, per-guest counts), idle
/// poller rounds in the window): the pair wire counts per source MAC; the null wire counts
/// the total, and each guest's share is what its TX queue took (the same up to the frames in
/// flight, which `settle` lets through).
fn scale_tx(
    guests: &mut [GuestQueues],
    wire: &mut Wire,
    mux: &HostMux,
    size: usize,
    secs: f64,
) -> ((f64, Vec<u64>), f64) {
    let n = guests.len();
    let tmpls: Vec<Vec<u8>> = (0..n)
        .map(|i| udp_frame(WIRE_MAC, scale_guest_mac(i), 1, size))
        .collect();
    let mut counts = vec![0u64; n];
    let mut taken = vec![0u64; n];
    let (mut pending, mut buf): (Vec<Mbuf>, Vec<Mbuf>) = (Vec::new(), Vec::new());
    let sunk0 = wire.sunk();
    let (t0, rounds) = (Instant::now(), Rounds::now(mux));
    let dur = Duration::from_secs_f64(secs);
    while t0.elapsed() < dur {
        for (i, g) in guests.iter_mut().enumerate() {
            fill(&g.2, &mut pending, &tmpls[i]);
            taken[i] += g.1.tx_burst(&mut pending) as u64;
            Mempool::free_bulk(&mut pending);
            if let Wire::Pair { rx, .. } = wire {
                while rx.rx_burst(&mut buf, BURST) > 0 {
                    for m in &buf {
                        let src = (m.data()[10] as usize) << 8 | m.data()[11] as usize;
                        if src < n {
                            counts[src] += 1;
                        }
                    }
                    Mempool::free_bulk(&mut buf);
                }
            }
        }
    }
    let (el, idle) = (t0.elapsed().as_secs_f64(), rounds.idle_since(mux));
    let total = match wire {
        Wire::Pair { .. } => counts.iter().sum::<u64>(),
        Wire::Null(_) => {
            counts = taken;
            wire.sunk() - sunk0
        }
    };
    settle(guests, wire);
    ((total as f64 / el / 1e6, counts), idle)
}

/// Drains what is still in flight so the next measurement starts clean.
fn settle(guests: &mut [GuestQueues], wire: &mut Wire) {
    let mut buf = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(50) {
        for g in guests.iter_mut() {
            g.0.rx_burst(&mut buf, BURST);
            Mempool::free_bulk(&mut buf);
        }
        wire.take(&mut buf);
    }
}
