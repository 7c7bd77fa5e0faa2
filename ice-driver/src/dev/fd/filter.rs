//! Flow Director: exact-match filters that steer (or drop) received frames, programmed through
//! a control VSI's queue pair (\[RXTX\] `ice_fdir_programming`, \[LTR\] `ice_fltr_desc`):
//! a 16-byte filter descriptor (DTYPE 8) followed by a data descriptor (EOP | RS | DUMMY)
//! pointing at a packet carrying the fields to match; the result comes back as a programming
//! status write-back on the control RX queue (qword 1: DD b0, PROG_ID 2:1, FAIL b4,
//! FAIL_PROF b5 [LTR `ICE_FXD_FLTR_WB_QW1_*`]).
//!
//! Profiles: the hardware extracts a filter's key by flow profile, and picks the profile from
//! the training packet's packet type. This driver knows six profiles (below), which
//! profile.rs programs into the card through the DDP tables when their first filter
//! comes. Training packets are built from the transmit side, as Linux builds them
//! (`ice_fdir_get_gen_prgm_pkt`: source and destination swapped); the profile's swap
//! registers turn them back.

use vdpdk_core::flow::{FlowAction, FlowItem, FlowRule};
use vdpdk_core::MacAddr;

use crate::IceError;

/// Match the destination MAC.
pub const PROF_ETH_DST: u8 = 1;
/// Match the EtherType.
pub const PROF_ETH_TYPE: u8 = 2;
/// Match IPv4 destination address and UDP destination port.
pub const PROF_IPV4_UDP_DST: u8 = 3;
/// Match IPv4 destination address and TCP destination port.
pub const PROF_IPV4_TCP_DST: u8 = 4;
/// Match IPv6 destination address and UDP destination port.
pub const PROF_IPV6_UDP_DST: u8 = 5;
/// Match IPv6 destination address and TCP destination port.
pub const PROF_IPV6_TCP_DST: u8 = 6;

// Filter descriptor fields [LTR ICE_FXD_FLTR_QW0_* / QW1_*].
pub const QW0_QINDEX_M: u64 = 0x7FF;
pub const QW0_COMP_Q: u64 = 1 << 11;
/// COMP_REPORT = 2: report status for every programming command.
pub const QW0_COMP_REPORT_ALL: u64 = 2 << 12;
pub const QW0_DROP: u64 = 1 << 40;
pub const QW1_DTYPE_FLTR_PROG: u64 = 0x8;
pub const QW1_PCMD_REMOVE: u64 = 1 << 4;
pub const QW1_PROF_PRI_S: u64 = 5;
pub const QW1_PROF_S: u64 = 8;
/// The PROF and PROF_PRI values both drivers always write [FDIR `ice_fdir_get_prgm_desc`:
/// desc_prof 1, desc_prof_prio 3]; the flow profile itself comes from the training packet.
const DESC_PROF: u64 = 1;
const DESC_PROF_PRI: u64 = 3;
pub const QW1_FD_VSI_S: u64 = 14;
pub const QW1_FDID_S: u64 = 32;
/// Data descriptor command bit DUMMY (the packet is a filter template, not sent).
pub const CMD_DUMMY: u64 = 0x010;
// Programming status write-back, qword 1 (DD is bit 0).
pub const WB_FAIL: u64 = 1 << 4;
pub const WB_FAIL_PROF: u64 = 1 << 5;

/// The flow id the RX write-back carries when no filter with an id matched (DPDK reads
/// `flow_id != 0xFFFFFFFF` as "FDIR id valid").
pub const NO_FDID: u32 = 0xFFFF_FFFF;

/// A filter ready to program: profile, template packet, and the fate of matching frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdirFilter {
    pub prof: u8,
    pub packet: Vec<u8>,
    pub queue: u16,
    pub drop: bool,
    pub fdid: u32,
}

impl FdirFilter {
    /// The two filter-descriptor qwords for adding (or removing) this filter on `vsi`.
    pub fn descriptor(&self, vsi: u16, remove: bool) -> (u64, u64) {
        let mut qw0 = (self.queue as u64 & QW0_QINDEX_M) | QW0_COMP_Q | QW0_COMP_REPORT_ALL;
        if self.drop {
            qw0 |= QW0_DROP;
        }
        let mut qw1 = QW1_DTYPE_FLTR_PROG
            | DESC_PROF_PRI << QW1_PROF_PRI_S
            | DESC_PROF << QW1_PROF_S
            | (vsi as u64 & 0x3FF) << QW1_FD_VSI_S
            | (self.fdid as u64) << QW1_FDID_S;
        if remove {
            qw1 |= QW1_PCMD_REMOVE;
        }
        (qw0, qw1)
    }
}

fn full_mac(m: &MacAddr) -> bool {
    m.0 == [0xff; 6]
}

/// `[ETH (no fields)], IPV4|IPV6 (dst exact), UDP|TCP (dst exact)` -> (profile, template).
fn l3l4_dst(items: &[FlowItem]) -> Option<(u8, Vec<u8>)> {
    let rest = match items {
        [FlowItem::Eth { mask, .. }, rest @ ..] if *mask == Default::default() => rest,
        rest => rest,
    };
    let (l4, port_spec, port_mask) = match rest.get(1) {
        Some(FlowItem::Udp { spec, mask }) => (17u8, spec.dst, *mask),
        Some(FlowItem::Tcp { spec, mask }) => (6u8, spec.dst, *mask),
        _ => return None,
    };
    if rest.len() != 2 || port_mask.dst != 0xffff || port_mask.src != 0 {
        return None;
    }
    let udp = l4 == 17;
    match rest[0] {
        FlowItem::Ipv4 { spec, mask }
            if mask.dst.octets() == [0xff; 4] && mask.src.octets() == [0; 4] && mask.proto == 0 =>
        {
            // Linux's ice_fdir_udpv4_pkt / tcpv4_pkt: total length 28 or 40, TTL 64, the
            // rule's destination address and port in the source fields.
            let mut t = vec![0u8; 60];
            t[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            t[14] = 0x45;
            let tot: u16 = if udp { 28 } else { 40 };
            t[16..18].copy_from_slice(&tot.to_be_bytes());
            t[22] = 64;
            t[23] = l4;
            t[26..30].copy_from_slice(&spec.dst.octets());
            t[34..36].copy_from_slice(&port_spec.to_be_bytes());
            if !udp {
                t[46] = 0x50; // TCP data offset 5
            }
            Some((
                if udp {
                    PROF_IPV4_UDP_DST
                } else {
                    PROF_IPV4_TCP_DST
                },
                t,
            ))
        }
        FlowItem::Ipv6 { spec, mask }
            if mask.dst.octets() == [0xff; 16]
                && mask.src.octets() == [0; 16]
                && mask.next_header == 0 =>
        {
            // Transmit side as above: the rule's address in the source field (22), its port
            // in the source port (54).
            let mut t = vec![0u8; 78];
            t[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            t[14] = 0x60;
            let plen: u16 = if udp { 8 } else { 20 };
            t[18..20].copy_from_slice(&plen.to_be_bytes());
            t[20] = l4;
            t[21] = 64;
            t[22..38].copy_from_slice(&spec.dst.octets());
            t[54..56].copy_from_slice(&port_spec.to_be_bytes());
            if !udp {
                t[66] = 0x50;
            }
            Some((
                if udp {
                    PROF_IPV6_UDP_DST
                } else {
                    PROF_IPV6_TCP_DST
                },
                t,
            ))
        }
        _ => None,
    }
}

/// Maps an rte_flow rule onto a Flow Director filter, or says why it cannot be offloaded.
/// `nb_rx` bounds QUEUE actions.
pub fn filter_for(rule: &FlowRule, nb_rx: u16) -> Result<FdirFilter, IceError> {
    rule.check_shape()
        .map_err(|e| IceError::InvalidArg(e.to_string()))?;
    let unsupported =
        |why: &str| IceError::Unsupported(format!("Flow Director cannot offload {why}"));
    let mut packet = vec![0u8; 60];
    let prof = match rule.pattern.as_slice() {
        [FlowItem::Eth { spec, mask }] if full_mac(&mask.dst) && mask.src.0 == [0; 6] && mask.ether_type == 0 => {
            packet[0..6].copy_from_slice(&spec.dst.0);
            PROF_ETH_DST
        }
        [FlowItem::Eth { spec, mask }] if mask.dst.0 == [0; 6] && mask.src.0 == [0; 6] && mask.ether_type == 0xffff => {
            packet[12..14].copy_from_slice(&spec.ether_type.to_be_bytes());
            PROF_ETH_TYPE
        }
        items if l3l4_dst(items).is_some() => {
            let (prof, t) = l3l4_dst(items).expect("guard");
            packet = t;
            prof
        }
        _ => {
            return Err(unsupported(
                "this pattern: supported are ETH dst, ETH type, and IPv4/IPv6 dst + UDP/TCP dst port (all exact)",
            ))
        }
    };
    let mut queue = 0;
    let mut drop = false;
    // Without MARK the filter carries NO_FDID, which the write-back reports as "no flow id".
    let mut fdid = NO_FDID;
    for a in &rule.actions {
        match a {
            FlowAction::Queue(q) if *q < nb_rx => queue = *q,
            FlowAction::Queue(q) => {
                return Err(IceError::InvalidArg(format!(
                    "queue {q}: the port has {nb_rx} RX queues"
                )))
            }
            FlowAction::Drop => drop = true,
            FlowAction::Mark(m) if *m == NO_FDID => {
                return Err(IceError::InvalidArg(format!(
                    "MARK {m:#x} is reserved (no flow id)"
                )))
            }
            FlowAction::Mark(m) => fdid = *m,
        }
    }
    Ok(FdirFilter {
        prof,
        packet,
        queue,
        drop,
        fdid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdpdk_core::flow::{Ipv4Fields, L4Ports};

    #[test]
    fn descriptor_fields_sit_where_the_header_puts_them() {
        let f = FdirFilter {
            prof: 4,
            packet: vec![],
            queue: 5,
            drop: true,
            fdid: 0xABCD,
        };
        let (q0, q1) = f.descriptor(7, true);
        assert_eq!(q0 & 0x7FF, 5);
        assert_ne!(q0 & (1 << 40), 0, "DROP at bit 40");
        assert_eq!(q1 & 0xF, 8, "DTYPE filter programming");
        assert_eq!((q1 >> 4) & 1, 1, "PCMD remove");
        assert_eq!(
            (q1 >> 8) & 0x3F,
            1,
            "PROF 13:8 is the constant 1, whatever the profile"
        );
        assert_eq!((q1 >> 5) & 0x7, 3, "PROF_PRI 7:5");
        assert_eq!((q1 >> 14) & 0x3FF, 7, "FD_VSI 23:14");
        assert_eq!(q1 >> 32, 0xABCD, "FDID 63:32");
    }

    #[test]
    fn rules_map_to_profiles_or_are_refused() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let f = filter_for(&FlowRule::to_queue(vec![FlowItem::eth_dst(mac)], 2), 4).unwrap();
        assert_eq!((f.prof, f.queue), (PROF_ETH_DST, 2));
        assert_eq!(&f.packet[0..6], &mac.0);
        let f = filter_for(&FlowRule::to_queue(vec![FlowItem::eth_type(0x88b5)], 1), 4).unwrap();
        assert_eq!(f.prof, PROF_ETH_TYPE);
        let udp = FlowRule::to_queue(
            vec![
                FlowItem::Ipv4 {
                    spec: Ipv4Fields {
                        dst: [10, 0, 0, 2].into(),
                        ..Default::default()
                    },
                    mask: Ipv4Fields {
                        dst: [255; 4].into(),
                        ..Default::default()
                    },
                },
                FlowItem::Udp {
                    spec: L4Ports { src: 0, dst: 4789 },
                    mask: L4Ports {
                        src: 0,
                        dst: 0xffff,
                    },
                },
            ],
            3,
        );
        assert_eq!(filter_for(&udp, 4).unwrap().prof, PROF_IPV4_UDP_DST);
        assert!(matches!(
            filter_for(&FlowRule::to_queue(vec![FlowItem::eth_dst(mac)], 9), 4),
            Err(IceError::InvalidArg(_))
        ));
        let partial = FlowRule::to_queue(
            vec![FlowItem::Eth {
                spec: Default::default(),
                mask: vdpdk_core::flow::EthFields {
                    dst: MacAddr([0xff, 0, 0, 0, 0, 0]),
                    ..Default::default()
                },
            }],
            0,
        );
        assert!(matches!(
            filter_for(&partial, 4),
            Err(IceError::Unsupported(_))
        ));
    }
}
