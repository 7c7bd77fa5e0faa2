//! The pieces of `vdpdk-testpmd` worth testing on their own: testpmd's flow rule syntax, offload
//! names, and the forwarding engine (io, macswap, rxonly, txonly, flowgen).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vdpdk_core::flow::{EthFields, Ipv4Fields, Ipv6Fields, L4Ports};
use vdpdk_core::packet::write_udp_frame;
use vdpdk_core::{
    FlowAction, FlowAttr, FlowItem, FlowRule, MacAddr, Mbuf, Mempool, RxOffloads, RxQueue,
    TxOffloads, TxQueue,
};

/// Parses a rule in testpmd's syntax (the part after `flow create 0 ingress`):
/// `[pattern] ITEM [FIELD is VALUE]... / ... / end actions ACTION / ... / end`, with items
/// `eth` (dst, src, type), `ipv4` (src, dst, proto), `ipv6` (src, dst), `udp`/`tcp` (src, dst)
/// and actions `queue index N`, `drop`, `mark id N`.
pub fn parse_flow(text: &str) -> Result<FlowRule, String> {
    let toks: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    let next = |i: &mut usize, want: &str| -> Result<&str, String> {
        let t = toks
            .get(*i)
            .copied()
            .ok_or_else(|| format!("expected {want} at the end of the rule"))?;
        *i += 1;
        Ok(t)
    };
    if toks.first() == Some(&"pattern") {
        i += 1;
    }
    let mut pattern = Vec::new();
    loop {
        let item = next(&mut i, "an item (eth, ipv4, ipv6, udp, tcp) or 'end'")?;
        if item == "end" {
            break;
        }
        let fields = take_fields(&toks, &mut i)?;
        pattern.push(make_item(item, &fields)?);
    }
    let kw = next(&mut i, "'actions'")?;
    if kw != "actions" {
        return Err(format!(
            "expected 'actions' after the pattern, found '{kw}'"
        ));
    }
    let mut actions = Vec::new();
    loop {
        let a = next(&mut i, "an action (queue, drop, mark) or 'end'")?;
        match a {
            "end" => break,
            "drop" => actions.push(FlowAction::Drop),
            "queue" | "mark" => {
                let key = if a == "queue" { "index" } else { "id" };
                let k = next(&mut i, &format!("'{key}'"))?;
                if k != key {
                    return Err(format!("expected '{key}' after '{a}', found '{k}'"));
                }
                let v = next(&mut i, "a number")?;
                actions.push(if a == "queue" {
                    FlowAction::Queue(v.parse().map_err(|_| format!("bad queue index '{v}'"))?)
                } else {
                    FlowAction::Mark(v.parse().map_err(|_| format!("bad mark id '{v}'"))?)
                });
            }
            other => return Err(format!("unknown action '{other}' (queue, drop, mark)")),
        }
        match next(&mut i, "'/'")? {
            "/" => {}
            t => return Err(format!("expected '/' after an action, found '{t}'")),
        }
    }
    if let Some(t) = toks.get(i) {
        return Err(format!("unexpected '{t}' after the final 'end'"));
    }
    let rule = FlowRule {
        attr: FlowAttr::default(),
        pattern,
        actions,
    };
    rule.check_shape().map_err(|e| e.to_string())?;
    Ok(rule)
}

/// `FIELD is VALUE` pairs up to the next `/`.
fn take_fields<'a>(toks: &[&'a str], i: &mut usize) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out = Vec::new();
    loop {
        match toks.get(*i).copied() {
            None => return Err("expected '/' after an item".into()),
            Some("/") => {
                *i += 1;
                return Ok(out);
            }
            Some(field) => {
                if toks.get(*i + 1) != Some(&"is") {
                    return Err(format!("expected 'is' after '{field}'"));
                }
                let v = toks
                    .get(*i + 2)
                    .ok_or_else(|| format!("expected a value for '{field}'"))?;
                out.push((field, *v));
                *i += 3;
            }
        }
    }
}

fn make_item(item: &str, fields: &[(&str, &str)]) -> Result<FlowItem, String> {
    let bad = |f: &str, v: &str| format!("bad value '{v}' for {item} {f}");
    let unknown = |f: &str| format!("'{item}' has no field '{f}'");
    Ok(match item {
        "eth" => {
            let (mut spec, mut mask) = (EthFields::default(), EthFields::default());
            for &(f, v) in fields {
                match f {
                    "dst" | "src" => {
                        let m: MacAddr = v.parse().map_err(|_| bad(f, v))?;
                        let (s, k) = if f == "dst" {
                            (&mut spec.dst, &mut mask.dst)
                        } else {
                            (&mut spec.src, &mut mask.src)
                        };
                        (*s, *k) = (m, MacAddr::BROADCAST);
                    }
                    "type" => {
                        spec.ether_type = u16::from_str_radix(v.trim_start_matches("0x"), 16)
                            .map_err(|_| bad(f, v))?;
                        mask.ether_type = 0xffff;
                    }
                    _ => return Err(unknown(f)),
                }
            }
            FlowItem::Eth { spec, mask }
        }
        "ipv4" => {
            let (mut spec, mut mask) = (Ipv4Fields::default(), Ipv4Fields::default());
            for &(f, v) in fields {
                match f {
                    "src" => {
                        (spec.src, mask.src) =
                            (v.parse().map_err(|_| bad(f, v))?, Ipv4Addr::BROADCAST)
                    }
                    "dst" => {
                        (spec.dst, mask.dst) =
                            (v.parse().map_err(|_| bad(f, v))?, Ipv4Addr::BROADCAST)
                    }
                    "proto" => (spec.proto, mask.proto) = (v.parse().map_err(|_| bad(f, v))?, 0xff),
                    _ => return Err(unknown(f)),
                }
            }
            FlowItem::Ipv4 { spec, mask }
        }
        "ipv6" => {
            let (mut spec, mut mask) = (Ipv6Fields::default(), Ipv6Fields::default());
            let all = Ipv6Addr::from([0xff; 16]);
            for &(f, v) in fields {
                match f {
                    "src" => (spec.src, mask.src) = (v.parse().map_err(|_| bad(f, v))?, all),
                    "dst" => (spec.dst, mask.dst) = (v.parse().map_err(|_| bad(f, v))?, all),
                    _ => return Err(unknown(f)),
                }
            }
            FlowItem::Ipv6 { spec, mask }
        }
        "udp" | "tcp" => {
            let (mut spec, mut mask) = (L4Ports::default(), L4Ports::default());
            for &(f, v) in fields {
                match f {
                    "src" => (spec.src, mask.src) = (v.parse().map_err(|_| bad(f, v))?, 0xffff),
                    "dst" => (spec.dst, mask.dst) = (v.parse().map_err(|_| bad(f, v))?, 0xffff),
                    _ => return Err(unknown(f)),
                }
            }
            if item == "udp" {
                FlowItem::Udp { spec, mask }
            } else {
                FlowItem::Tcp { spec, mask }
            }
        }
        other => {
            return Err(format!(
                "unknown item '{other}' (eth, ipv4, ipv6, udp, tcp)"
            ))
        }
    })
}

/// Parses DPDK RX offload names (`ipv4_cksum,udp_cksum,tcp_tso`; case-insensitive).
pub fn parse_rx_offloads(list: &str) -> Result<RxOffloads, String> {
    parse_names(list, |n| RxOffloads::from_name(n).map(|f| f.bits()))
        .map(RxOffloads::from_bits_truncate)
}

/// Parses DPDK TX offload names (as [`parse_rx_offloads`]).
pub fn parse_tx_offloads(list: &str) -> Result<TxOffloads, String> {
    parse_names(list, |n| TxOffloads::from_name(n).map(|f| f.bits()))
        .map(TxOffloads::from_bits_truncate)
}

fn parse_names(list: &str, get: impl Fn(&str) -> Option<u64>) -> Result<u64, String> {
    let mut bits = 0;
    for n in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        bits |= get(&n.to_ascii_uppercase()).ok_or_else(|| format!("unknown offload '{n}'"))?;
    }
    Ok(bits)
}

/// Forwarding modes, as in DPDK's testpmd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FwdMode {
    /// Forward every frame unchanged (to the other port, or back out of the only one).
    Io,
    /// Swap source and destination MAC, send back out of the same port.
    Macswap,
    /// Receive and free.
    Rxonly,
    /// Transmit UDP frames only.
    Txonly,
    /// Transmit UDP frames over many flows (varying IPv4 source and UDP ports).
    Flowgen,
}

/// Per-port counters of the forwarding engine.
#[derive(Debug, Default)]
pub struct FwdCounters {
    /// Frames received.
    pub rx: AtomicU64,
    /// Bytes received (whole frames).
    pub rx_bytes: AtomicU64,
    /// Frames the TX queue took.
    pub tx: AtomicU64,
    /// Bytes the TX queue took.
    pub tx_bytes: AtomicU64,
    /// Frames dropped because the TX ring was full (or no mbuf for txonly/flowgen).
    pub tx_dropped: AtomicU64,
}

/// One forwarding lane: an RX queue (None for the generating modes) and the TX queue it feeds.
pub struct Lane {
    /// The RX queue, None in txonly and flowgen.
    pub rx: Option<Box<dyn RxQueue>>,
    /// Index of the port `rx` belongs to (whose counters count what it receives).
    pub rx_port: usize,
    /// The TX queue fed by `rx` (or by the generator).
    pub tx: Box<dyn TxQueue>,
    /// Index of the port `tx` belongs to.
    pub tx_port: usize,
}

/// What txonly/flowgen send.
#[derive(Clone, Copy, Debug)]
pub struct TxTemplate {
    /// Source MAC.
    pub src: MacAddr,
    /// Destination MAC (`--eth-peer`).
    pub dst: MacAddr,
    /// Frame size in bytes.
    pub size: usize,
    /// Flows flowgen cycles through.
    pub flows: u32,
}

/// Runs the lanes round-robin on this thread until `stop`.
pub fn forward(
    mode: FwdMode,
    lanes: &mut [Lane],
    burst: usize,
    pool: &Mempool,
    tmpl: TxTemplate,
    counters: &[FwdCounters],
    stop: &AtomicBool,
) {
    let mut pkts: Vec<Mbuf> = Vec::with_capacity(burst);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        for lane in lanes.iter_mut() {
            match (mode, lane.rx.as_mut()) {
                (FwdMode::Txonly | FwdMode::Flowgen, _) => {
                    while pkts.len() < burst {
                        let Some(mut m) = pool.alloc() else { break };
                        let f = m.append(tmpl.size).expect("frame fits an mbuf");
                        write_udp_frame(f, tmpl.dst, tmpl.src, seq);
                        if mode == FwdMode::Flowgen {
                            vary_flow(f, (seq % tmpl.flows as u64) as u32);
                        }
                        seq += 1;
                        pkts.push(m);
                    }
                }
                (_, Some(rx)) => {
                    let n = rx.rx_burst(&mut pkts, burst);
                    if n == 0 {
                        continue;
                    }
                    let c = &counters[lane.rx_port];
                    c.rx.fetch_add(n as u64, Ordering::Relaxed);
                    let bytes: usize = pkts.iter().map(|m| m.pkt_len()).sum();
                    c.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                    match mode {
                        FwdMode::Rxonly => {
                            pkts.clear();
                            busy = true;
                            continue;
                        }
                        FwdMode::Macswap => {
                            for m in &mut pkts {
                                let d = m.data_mut();
                                let (a, b) = d.split_at_mut(6);
                                a.swap_with_slice(&mut b[..6]);
                            }
                        }
                        _ => {}
                    }
                }
                (_, None) => continue,
            }
            busy = true;
            let bytes: usize = pkts.iter().map(|m| m.pkt_len()).sum();
            let total = pkts.len();
            let sent = lane.tx.tx_burst(&mut pkts);
            let c = &counters[lane.tx_port];
            c.tx.fetch_add(sent as u64, Ordering::Relaxed);
            let unsent: usize = pkts.iter().map(|m| m.pkt_len()).sum();
            c.tx_bytes
                .fetch_add((bytes - unsent) as u64, Ordering::Relaxed);
            if sent < total && !matches!(mode, FwdMode::Txonly | FwdMode::Flowgen) {
                // testpmd frees what the TX ring refused rather than stall the RX side.
                c.tx_dropped.fetch_add(pkts.len() as u64, Ordering::Relaxed);
                pkts.clear();
            }
        }
        if !busy {
            std::hint::spin_loop();
        }
    }
}

/// Gives a UDP frame flow `k`: IPv4 source 10.0.x.y and UDP ports from k, IP checksum fixed.
fn vary_flow(f: &mut [u8], k: u32) {
    f[26..30].copy_from_slice(&[10, 0, (k >> 8) as u8, k as u8]);
    f[34..36].copy_from_slice(&(1024 + (k % 60000) as u16).to_be_bytes());
    f[24..26].fill(0);
    let c = vdpdk_core::packet::inet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_rule_parses() {
        let r = parse_flow(
            "pattern eth dst is 02:00:00:00:00:01 type is 0x0800 / ipv4 dst is 10.0.0.2 / \
             udp dst is 4789 / end actions queue index 3 / mark id 7 / end",
        )
        .unwrap();
        assert_eq!(r.pattern.len(), 3);
        assert_eq!(r.actions, vec![FlowAction::Queue(3), FlowAction::Mark(7)]);
        match r.pattern[0] {
            FlowItem::Eth { spec, mask } => {
                assert_eq!(spec.dst, MacAddr([2, 0, 0, 0, 0, 1]));
                assert_eq!((spec.ether_type, mask.ether_type), (0x0800, 0xffff));
                assert_eq!(mask.src, MacAddr::default(), "src is not matched");
            }
            _ => panic!("first item is eth"),
        }
        match r.pattern[2] {
            FlowItem::Udp { spec, mask } => {
                assert_eq!((spec.dst, mask.dst, mask.src), (4789, 0xffff, 0))
            }
            _ => panic!("third item is udp"),
        }
        let d = parse_flow("eth type is 88b5 / end actions drop / end").unwrap();
        assert_eq!(d.actions, vec![FlowAction::Drop]);
        assert!(
            parse_flow("ipv6 dst is ::1 / tcp src is 22 / end actions queue index 0 / end").is_ok()
        );
    }

    #[test]
    fn errors_name_the_bad_token() {
        for (rule, want) in [
            (
                "eth dst is zz / end actions drop / end",
                "bad value 'zz' for eth dst",
            ),
            (
                "eth color is red / end actions drop / end",
                "'eth' has no field 'color'",
            ),
            ("vxlan / end actions drop / end", "unknown item 'vxlan'"),
            ("eth / end actions jump / end", "unknown action 'jump'"),
            (
                "eth / end actions queue 3 / end",
                "expected 'index' after 'queue'",
            ),
            ("eth / end drop / end", "expected 'actions'"),
            (
                "eth dst 02:00:00:00:00:01 / end actions drop / end",
                "expected 'is' after 'dst'",
            ),
            ("eth / end actions drop / end extra", "unexpected 'extra'"),
            ("eth / end actions drop", "expected '/'"),
            ("udp / eth / end actions drop / end", "out of layer order"),
            (
                "eth / end actions drop / queue index 1 / end",
                "exactly one QUEUE or DROP",
            ),
        ] {
            let e = parse_flow(rule).expect_err(rule);
            assert!(e.contains(want), "{rule}: {e}");
        }
    }

    #[test]
    fn offload_names_are_dpdks() {
        let t = parse_tx_offloads("ipv4_cksum, UDP_CKSUM,tcp_tso").unwrap();
        assert_eq!(
            t,
            TxOffloads::IPV4_CKSUM | TxOffloads::UDP_CKSUM | TxOffloads::TCP_TSO
        );
        assert!(parse_rx_offloads("ipv4_cksum").is_ok());
        assert_eq!(
            parse_tx_offloads("warp_drive").unwrap_err(),
            "unknown offload 'warp_drive'"
        );
        assert_eq!(parse_rx_offloads("").unwrap(), RxOffloads::empty());
    }
}
