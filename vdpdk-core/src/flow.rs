//! rte_flow-shaped rules: attributes, a pattern of items (spec + mask), and actions, with a
//! software matcher that software backends and the mux's classifier share.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::mac::MacAddr;
use crate::wire::{self, EthernetFrame, Ipv4Packet, Ipv6Packet, L3};
use crate::{Error, Result};

/// Handle a driver returns from `flow_create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowHandle(pub u32);

/// Rule attributes (`rte_flow_attr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAttr {
    /// Rule group; the drivers here accept only group 0.
    pub group: u32,
    /// Priority within the group: a lower value is tried first (DPDK semantics).
    pub priority: u32,
    /// Applies to received traffic (the only kind supported).
    pub ingress: bool,
    /// Applies to sent traffic (refused by [`FlowRule::check_shape`]).
    pub egress: bool,
}

impl Default for FlowAttr {
    fn default() -> Self {
        FlowAttr {
            group: 0,
            priority: 0,
            ingress: true,
            egress: false,
        }
    }
}

/// Ethernet header fields; a field matters where its mask is non-zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthFields {
    /// Destination MAC address.
    pub dst: MacAddr,
    /// Source MAC address.
    pub src: MacAddr,
    /// The type field at bytes 12..14 (the TPID on a VLAN-tagged frame).
    pub ether_type: u16,
}

/// IPv4 header fields; a field matters where its mask is non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Fields {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload (6 TCP, 17 UDP).
    pub proto: u8,
}

impl Default for Ipv4Fields {
    fn default() -> Self {
        Ipv4Fields {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            proto: 0,
        }
    }
}

/// IPv6 header fields; a field matters where its mask is non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Fields {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header of the fixed header (extension headers are not followed).
    pub next_header: u8,
}

impl Default for Ipv6Fields {
    fn default() -> Self {
        Ipv6Fields {
            src: Ipv6Addr::UNSPECIFIED,
            dst: Ipv6Addr::UNSPECIFIED,
            next_header: 0,
        }
    }
}

/// TCP or UDP ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L4Ports {
    /// Source port.
    pub src: u16,
    /// Destination port.
    pub dst: u16,
}

/// One pattern item: the layer and, per field, the value (spec) and which bits matter (mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowItem {
    /// Ethernet header.
    Eth {
        /// Values to compare.
        spec: EthFields,
        /// Bits of each field that take part.
        mask: EthFields,
    },
    /// IPv4 header (after any VLAN tags).
    Ipv4 {
        /// Values to compare.
        spec: Ipv4Fields,
        /// Bits of each field that take part.
        mask: Ipv4Fields,
    },
    /// IPv6 fixed header (after any VLAN tags).
    Ipv6 {
        /// Values to compare.
        spec: Ipv6Fields,
        /// Bits of each field that take part.
        mask: Ipv6Fields,
    },
    /// UDP ports of a packet that is not a fragment.
    Udp {
        /// Values to compare.
        spec: L4Ports,
        /// Bits of each field that take part.
        mask: L4Ports,
    },
    /// TCP ports of a packet that is not a fragment.
    Tcp {
        /// Values to compare.
        spec: L4Ports,
        /// Bits of each field that take part.
        mask: L4Ports,
    },
}

impl FlowItem {
    /// ETH item matching exactly this destination MAC.
    pub fn eth_dst(dst: MacAddr) -> FlowItem {
        FlowItem::Eth {
            spec: EthFields {
                dst,
                ..Default::default()
            },
            mask: EthFields {
                dst: MacAddr::BROADCAST,
                ..Default::default()
            },
        }
    }
    /// ETH item matching exactly this EtherType.
    pub fn eth_type(ether_type: u16) -> FlowItem {
        FlowItem::Eth {
            spec: EthFields {
                ether_type,
                ..Default::default()
            },
            mask: EthFields {
                ether_type: 0xffff,
                ..Default::default()
            },
        }
    }
}

/// What a matching rule does (`rte_flow_action`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowAction {
    /// Deliver to this RX queue.
    Queue(u16),
    /// Discard the packet.
    Drop,
    /// Tag matching packets; the id appears in `Mbuf::mark` with `RX_FDIR_ID`.
    Mark(u32),
}

/// A flow rule (`rte_flow`): attributes, a pattern every item of which must match, and actions.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FlowRule {
    /// Direction, group and priority.
    pub attr: FlowAttr,
    /// Items from L2 down (ETH, then one of IPV4/IPV6, then one of UDP/TCP); any may be left out.
    pub pattern: Vec<FlowItem>,
    /// What to do with a matching packet: exactly one QUEUE or DROP, at most one MARK.
    pub actions: Vec<FlowAction>,
}

/// Limits that keep rules cheap to match and to carry over the wire.
pub const MAX_FLOW_ITEMS: usize = 8;
/// Most actions a rule may carry.
pub const MAX_FLOW_ACTIONS: usize = 4;

/// What a matching rule decides for a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowVerdict {
    /// RX queue to deliver to.
    pub queue: Option<u16>,
    /// Whether to discard the packet.
    pub drop: bool,
    /// MARK id to report with the packet.
    pub mark: Option<u32>,
}

impl FlowRule {
    /// Rule `pattern -> QUEUE q`.
    pub fn to_queue(pattern: Vec<FlowItem>, q: u16) -> FlowRule {
        FlowRule {
            attr: FlowAttr::default(),
            pattern,
            actions: vec![FlowAction::Queue(q)],
        }
    }

    /// Structural checks every driver applies: ingress only, bounded sizes, layers in order,
    /// exactly one fate (QUEUE or DROP), at most one MARK.
    pub fn check_shape(&self) -> Result<()> {
        if !self.attr.ingress || self.attr.egress {
            return Err(Error::Unsupported("only ingress rules".into()));
        }
        if self.pattern.len() > MAX_FLOW_ITEMS {
            return Err(Error::InvalidArg(format!(
                "{} pattern items, at most {MAX_FLOW_ITEMS}",
                self.pattern.len()
            )));
        }
        if self.actions.is_empty() || self.actions.len() > MAX_FLOW_ACTIONS {
            return Err(Error::InvalidArg(format!(
                "{} actions, need 1..={MAX_FLOW_ACTIONS}",
                self.actions.len()
            )));
        }
        // Layers must go down the stack: ETH, then one L3, then one L4.
        let mut level = 0;
        for item in &self.pattern {
            let l = match item {
                FlowItem::Eth { .. } => 1,
                FlowItem::Ipv4 { .. } | FlowItem::Ipv6 { .. } => 2,
                FlowItem::Udp { .. } | FlowItem::Tcp { .. } => 3,
            };
            if l <= level {
                return Err(Error::InvalidArg(format!(
                    "pattern item {item:?} is out of layer order"
                )));
            }
            level = l;
        }
        let fates = self
            .actions
            .iter()
            .filter(|a| matches!(a, FlowAction::Queue(_) | FlowAction::Drop))
            .count();
        let marks = self
            .actions
            .iter()
            .filter(|a| matches!(a, FlowAction::Mark(_)))
            .count();
        if fates != 1 || marks > 1 {
            return Err(Error::InvalidArg(
                "a rule needs exactly one QUEUE or DROP and at most one MARK".into(),
            ));
        }
        Ok(())
    }

    /// The ETH item, if any.
    pub fn eth(&self) -> Option<(&EthFields, &EthFields)> {
        self.pattern.iter().find_map(|i| match i {
            FlowItem::Eth { spec, mask } => Some((spec, mask)),
            _ => None,
        })
    }

    /// Queues the rule's actions name.
    pub fn queues(&self) -> impl Iterator<Item = u16> + '_ {
        self.actions.iter().filter_map(|a| match a {
            FlowAction::Queue(q) => Some(*q),
            _ => None,
        })
    }

    /// What the rule's actions decide, folded into one verdict.
    pub fn verdict(&self) -> FlowVerdict {
        let mut v = FlowVerdict::default();
        for a in &self.actions {
            match a {
                FlowAction::Queue(q) => v.queue = Some(*q),
                FlowAction::Drop => v.drop = true,
                FlowAction::Mark(m) => v.mark = Some(*m),
            }
        }
        v
    }

    /// Whether `frame` (an Ethernet frame) matches every item of the pattern. Parses the frame
    /// once with [`wire::parse`]; to test several rules against one frame, parse it yourself and
    /// call [`FlowRule::matches_parsed`] for each. A frame shorter than an Ethernet header
    /// matches nothing.
    pub fn matches(&self, frame: &[u8]) -> bool {
        wire::parse(frame).is_some_and(|s| self.matches_parsed(frame, &s))
    }

    /// Whether `frame`, already parsed into `s` (by [`wire::parse`] of the same bytes), matches
    /// every item of the pattern. The ETH item compares the type field at bytes 12..14 (the
    /// TPID of a tagged frame); IPv4/IPv6 items compare the L3 header after any VLAN tags; TCP
    /// and UDP items need the ports of a packet that is not a fragment (see
    /// [`wire::Summary::ports`]). With another frame's summary the answer is meaningless but the
    /// call never panics.
    #[inline]
    pub fn matches_parsed(&self, frame: &[u8], s: &wire::Summary) -> bool {
        let l3 = frame.get(s.l3_offset()..).unwrap_or(&[]);
        self.pattern.iter().all(|item| match item {
            FlowItem::Eth { spec, mask } => match EthernetFrame::new_checked(frame) {
                Some(eth) => {
                    masked_eq(&eth.dst_addr().0, &spec.dst.0, &mask.dst.0)
                        && masked_eq(&eth.src_addr().0, &spec.src.0, &mask.src.0)
                        && (eth.ethertype() & mask.ether_type)
                            == (spec.ether_type & mask.ether_type)
                }
                None => false,
            },
            FlowItem::Ipv4 { spec, mask } => match (s.l3, Ipv4Packet::new_checked(l3)) {
                (Some(L3::Ipv4), Some(ip)) => {
                    masked_eq(ip.src_bytes(), &spec.src.octets(), &mask.src.octets())
                        && masked_eq(ip.dst_bytes(), &spec.dst.octets(), &mask.dst.octets())
                        && (ip.protocol() & mask.proto) == (spec.proto & mask.proto)
                }
                _ => false,
            },
            FlowItem::Ipv6 { spec, mask } => match (s.l3, Ipv6Packet::new_checked(l3)) {
                (Some(L3::Ipv6), Some(ip)) => {
                    masked_eq(ip.src_bytes(), &spec.src.octets(), &mask.src.octets())
                        && masked_eq(ip.dst_bytes(), &spec.dst.octets(), &mask.dst.octets())
                        && (ip.next_header() & mask.next_header)
                            == (spec.next_header & mask.next_header)
                }
                _ => false,
            },
            FlowItem::Udp { spec, mask } => {
                s.l4_proto == wire::udp::PROTOCOL && ports_match(s.ports, spec, mask)
            }
            FlowItem::Tcp { spec, mask } => {
                s.l4_proto == wire::tcp::PROTOCOL && ports_match(s.ports, spec, mask)
            }
        })
    }
}

#[inline]
fn masked_eq(a: &[u8], b: &[u8], m: &[u8]) -> bool {
    a.iter().zip(b).zip(m).all(|((a, b), m)| a & m == b & m)
}

#[inline]
fn ports_match(ports: Option<(u16, u16)>, spec: &L4Ports, mask: &L4Ports) -> bool {
    let Some((src, dst)) = ports else {
        return false;
    };
    (src & mask.src) == (spec.src & mask.src) && (dst & mask.dst) == (spec.dst & mask.dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame(dst: [u8; 6], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = 17;
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn eth_and_udp_match() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let r = FlowRule::to_queue(
            vec![
                FlowItem::eth_dst(mac),
                FlowItem::Ipv4 {
                    spec: Ipv4Fields::default(),
                    mask: Ipv4Fields::default(),
                },
                FlowItem::Udp {
                    spec: L4Ports { src: 0, dst: 4789 },
                    mask: L4Ports {
                        src: 0,
                        dst: 0xffff,
                    },
                },
            ],
            2,
        );
        r.check_shape().unwrap();
        assert!(r.matches(&udp_frame(mac.0, 4789)));
        assert!(!r.matches(&udp_frame(mac.0, 4790)));
        assert!(!r.matches(&udp_frame([2, 0, 0, 0, 0, 2], 4789)));
        assert_eq!(r.verdict().queue, Some(2));
    }

    #[test]
    fn shape_errors() {
        let mut r = FlowRule::to_queue(vec![FlowItem::eth_type(0x0800)], 0);
        r.actions.push(FlowAction::Drop);
        assert!(r.check_shape().is_err(), "two fates");
        let r = FlowRule::to_queue(
            vec![
                FlowItem::Udp {
                    spec: L4Ports::default(),
                    mask: L4Ports::default(),
                },
                FlowItem::eth_type(0x0800),
            ],
            0,
        );
        assert!(r.check_shape().is_err(), "layer order");
        let r = FlowRule {
            attr: FlowAttr {
                egress: true,
                ..Default::default()
            },
            ..FlowRule::to_queue(vec![], 0)
        };
        assert!(r.check_shape().is_err(), "egress");
    }

    #[test]
    fn short_frames_never_match() {
        let r = FlowRule::to_queue(vec![FlowItem::eth_type(0x0800)], 0);
        assert!(!r.matches(&[0u8; 13]));
    }

    fn udp_rule(dport: u16) -> FlowRule {
        FlowRule::to_queue(
            vec![
                FlowItem::Ipv4 {
                    spec: Ipv4Fields {
                        dst: Ipv4Addr::new(10, 0, 0, 2),
                        ..Default::default()
                    },
                    mask: Ipv4Fields {
                        dst: Ipv4Addr::BROADCAST,
                        ..Default::default()
                    },
                },
                FlowItem::Udp {
                    spec: L4Ports { src: 0, dst: dport },
                    mask: L4Ports {
                        src: 0,
                        dst: 0xffff,
                    },
                },
            ],
            1,
        )
    }

    #[test]
    fn l3_and_l4_items_see_through_a_vlan_tag() {
        let mut f = udp_frame([2, 0, 0, 0, 0, 1], 4789);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert!(udp_rule(4789).matches(&f));
        assert!(!udp_rule(4790).matches(&f));
        // The ETH item's EtherType is the type field at 12..14: the TPID here.
        assert!(!FlowRule::to_queue(vec![FlowItem::eth_type(0x0800)], 0).matches(&f));
        assert!(FlowRule::to_queue(vec![FlowItem::eth_type(0x8100)], 0).matches(&f));
    }

    #[test]
    fn no_fragment_matches_a_port_item_but_every_one_matches_l3() {
        let l3_only = FlowRule::to_queue(udp_rule(4789).pattern[..1].to_vec(), 1);
        for flg_off in [0x2000u16, 0x2000 | 185, 185] {
            let mut f = udp_frame([2, 0, 0, 0, 0, 1], 4789);
            f[20..22].copy_from_slice(&flg_off.to_be_bytes());
            assert!(!udp_rule(4789).matches(&f), "fragment {flg_off:#x}");
            assert!(l3_only.matches(&f), "fragment {flg_off:#x}");
        }
    }

    #[test]
    fn matches_parsed_agrees_with_matches() {
        let f = udp_frame([2, 0, 0, 0, 0, 1], 4789);
        let s = crate::wire::parse(&f).unwrap();
        for r in [udp_rule(4789), udp_rule(1)] {
            assert_eq!(r.matches_parsed(&f, &s), r.matches(&f));
        }
    }
}
