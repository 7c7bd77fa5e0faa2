//! `vdpdk-nf`: an IPv4 forwarder with an access list, on any two ports — a starting point for
//! a network function that embeds the vdpdk crates.
//!
//! Frames arriving on `--in` are checked to be IPv4, filtered by the access list, and sent out
//! of `--out` with the Ethernet source set to `--out`'s MAC and the destination to
//! `--next-hop`, their TTL decremented (the header checksum updated incrementally, RFC 1624).
//! Everything else is dropped and counted by reason. Ports come from specs
//! (`vdpdk_ports::open_port`), so the same binary runs as a guest of host-mux, inside a VM, on
//! a TAP interface or on an E810. Bursts of 32; no allocation per frame.

#![warn(missing_docs)]

mod acl;

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use clap::Parser;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::{MacAddr, Mbuf, Mempool};

/// Forward IPv4 from one port to another through an access list.
///
/// Example, with host-mux serving vm1 and vm2:
/// `vdpdk-nf --in vdpdk:/tmp/vdpdk/vm1.sock --out vdpdk:/tmp/vdpdk/vm2.sock
/// --next-hop 02:00:00:00:00:fe --acl 'deny proto udp dport 53' --acl 'deny src 10.66.0.0/16'`
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Port frames arrive on (vdpdk:SOCKET, vdpdk-vm:BDF|auto, tap:IFNAME, ice:SOCKET,
    /// ice-pci:BDF).
    #[arg(long = "in", value_parser = vdpdk_ports::port_spec)]
    input: String,
    /// Port frames leave from (same forms as --in).
    #[arg(long = "out", value_parser = vdpdk_ports::port_spec)]
    output: String,
    /// Destination MAC of forwarded frames (the next hop's).
    #[arg(long, value_parser = parse_mac)]
    next_hop: MacAddr,
    /// Access-list rule, in order, first match decides, no match allows:
    /// `allow|deny [src CIDR] [dst CIDR] [proto udp|tcp|icmp|N] [sport N] [dport N]`.
    #[arg(long = "acl", value_parser = acl::Rule::parse)]
    rules: Vec<acl::Rule>,
    /// Stop after this many frames arrived (0 = no limit).
    #[arg(long, default_value_t = 0)]
    frames: u64,
    /// Stop after this many seconds (0 = no limit).
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Print the counters every this many seconds (0 = only at the end).
    #[arg(long, default_value_t = 0)]
    stats_interval: u64,
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    s.parse().map_err(|e: vdpdk_core::Error| e.to_string())
}

/// What happened to the frames that arrived.
#[derive(Default, Debug)]
struct Counters {
    received: u64,
    forwarded: u64,
    acl_denied: u64,
    not_ipv4: u64,
    ttl_expired: u64,
    /// The --out queue was full: dropped rather than held (an NF keeps no backlog).
    tx_full: u64,
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {} forwarded {} acl-denied {} not-ipv4 {} ttl-expired {} tx-full {}",
            self.received,
            self.forwarded,
            self.acl_denied,
            self.not_ipv4,
            self.ttl_expired,
            self.tx_full
        )
    }
}

/// The flow of an IPv4 frame (no VLAN tag), or None for anything else.
fn ipv4_flow(f: &[u8]) -> Option<acl::Flow> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 {
        return None;
    }
    let l4 = 14 + (f[14] & 0x0f) as usize * 4;
    if l4 < 34 || f.len() < l4 {
        return None;
    }
    let proto = f[23];
    let first_fragment = u16::from_be_bytes([f[20], f[21]]) & 0x1fff == 0;
    let ports = if matches!(proto, 6 | 17) && first_fragment && f.len() >= l4 + 4 {
        (
            u16::from_be_bytes([f[l4], f[l4 + 1]]),
            u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]),
        )
    } else {
        (0, 0)
    };
    let ip = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    Some(acl::Flow {
        src: ip(26),
        dst: ip(30),
        proto,
        sport: ports.0,
        dport: ports.1,
    })
}

/// Decrements the TTL of the IPv4 header at `ip` and patches its checksum (RFC 1624 eqn. 3:
/// HC' = ~(~HC + ~m + m'), m being the 16-bit word holding TTL and protocol).
fn decrement_ttl(ip: &mut [u8]) {
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] -= 1;
    let new = u16::from_be_bytes([ip[8], ip[9]]);
    let hc = u16::from_be_bytes([ip[10], ip[11]]);
    let mut sum = !hc as u32 + !old as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Decides one frame's fate; rewrites it in place when it is to be forwarded.
fn process(
    m: &mut Mbuf,
    rules: &[acl::Rule],
    src: MacAddr,
    next_hop: MacAddr,
    c: &mut Counters,
) -> bool {
    let Some(flow) = ipv4_flow(m.data()) else {
        c.not_ipv4 += 1;
        return false;
    };
    if !acl::allowed(rules, &flow) {
        c.acl_denied += 1;
        return false;
    }
    let f = m.data_mut();
    if f[22] <= 1 {
        c.ttl_expired += 1;
        return false;
    }
    decrement_ttl(&mut f[14..]);
    f[0..6].copy_from_slice(&next_hop.0);
    f[6..12].copy_from_slice(&src.0);
    true
}

fn run(args: &Args) -> vdpdk_core::Result<Counters> {
    let pool = Mempool::new("nf", 8192, vdpdk_core::DEFAULT_BUF_SIZE)?;
    let mut input = vdpdk_ports::open_port(&args.input)?;
    let mut output = vdpdk_ports::open_port(&args.output)?;
    let (mut rx, _in_tx) = start_single_queue(input.as_mut(), &pool, 1024, false)?;
    let (mut out_rx, mut tx) = start_single_queue(output.as_mut(), &pool, 1024, false)?;
    let src = output.info().mac;
    let (mut burst, mut fwd, mut ignored) = (Vec::new(), Vec::new(), Vec::new());
    let mut c = Counters::default();
    let t0 = Instant::now();
    let mut next_stats = t0 + Duration::from_secs(args.stats_interval);
    loop {
        if (args.frames > 0 && c.received >= args.frames)
            || (args.duration > 0 && t0.elapsed() >= Duration::from_secs(args.duration))
        {
            return Ok(c);
        }
        // Frames that arrive on --out are not ours to forward; drain them so its ring never
        // fills up.
        if out_rx.rx_burst(&mut ignored, 32) > 0 {
            Mempool::free_bulk(&mut ignored);
        }
        let n = rx.rx_burst(&mut burst, 32);
        if n == 0 {
            if args.stats_interval > 0 && Instant::now() >= next_stats {
                println!("vdpdk-nf: {c}");
                next_stats += Duration::from_secs(args.stats_interval);
            }
            std::hint::spin_loop();
            continue;
        }
        c.received += n as u64;
        for mut m in burst.drain(..) {
            if process(&mut m, &args.rules, src, args.next_hop, &mut c) {
                fwd.push(m);
            } // else: dropped here, back to the pool
        }
        let sent = tx.tx_burst(&mut fwd);
        c.forwarded += sent as u64;
        c.tx_full += fwd.len() as u64;
        Mempool::free_bulk(&mut fwd);
    }
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(c) => {
            // A closed stdout is no reason to fail at the end of the work.
            let _ = writeln!(std::io::stdout(), "vdpdk-nf: {c}");
        }
        Err(e) => {
            eprintln!("vdpdk-nf: error: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(b: &[u8]) -> u16 {
        let mut s: u32 = b
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn ttl_decrement_keeps_the_header_checksum_right() {
        for ttl in [2u8, 64, 255] {
            let mut h = [
                0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, ttl, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            decrement_ttl(&mut h);
            assert_eq!(h[8], ttl - 1);
            assert_eq!(checksum(&h), 0, "ttl {ttl}");
        }
    }

    #[test]
    fn only_ipv4_frames_have_a_flow() {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x06]); // ARP
        assert!(ipv4_flow(&f).is_none());
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 1, 2, 3]);
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        let fl = ipv4_flow(&f).unwrap();
        assert_eq!(
            (fl.src, fl.proto, fl.dport),
            (Ipv4Addr::new(10, 1, 2, 3), 17, 53)
        );
        f[14] = 0x44; // IHL 4: malformed
        assert!(ipv4_flow(&f).is_none());
    }
}
