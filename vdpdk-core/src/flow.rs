//! rte_flow-shaped rules: attributes, a pattern of items (spec + mask), and actions, with a
//! software matcher that software backends and the mux's classifier share.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ethdev::MacAddr;
use crate::{Error, Result};

/// Handle a driver returns from `flow_create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowHandle(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAttr {
    pub group: u32,
    pub priority: u32,
    pub ingress: bool,
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
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ether_type: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Fields {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Fields {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
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
    pub src: u16,
    pub dst: u16,
}

/// One pattern item: the layer and, per field, the value (spec) and which bits matter (mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowItem {
    Eth { spec: EthFields, mask: EthFields },
    Ipv4 { spec: Ipv4Fields, mask: Ipv4Fields },
    Ipv6 { spec: Ipv6Fields, mask: Ipv6Fields },
    Udp { spec: L4Ports, mask: L4Ports },
    Tcp { spec: L4Ports, mask: L4Ports },
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowAction {
    /// Deliver to this RX queue.
    Queue(u16),
    Drop,
    /// Tag matching packets; the id appears in `Mbuf::mark` with `RX_FDIR_ID`.
    Mark(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FlowRule {
    pub attr: FlowAttr,
    pub pattern: Vec<FlowItem>,
    pub actions: Vec<FlowAction>,
}

/// Limits that keep rules cheap to match and to carry over the wire.
pub const MAX_FLOW_ITEMS: usize = 8;
pub const MAX_FLOW_ACTIONS: usize = 4;

/// What a matching rule decides for a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowVerdict {
    pub queue: Option<u16>,
    pub drop: bool,
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

    /// Whether `frame` (an Ethernet frame) matches every item of the pattern.
    pub fn matches(&self, frame: &[u8]) -> bool {
        let mut l3 = 0u16;
        let mut l4_off = None;
        let mut l4_proto = 0u8;
        if frame.len() < 14 {
            return false;
        }
        let et = u16::from_be_bytes([frame[12], frame[13]]);
        // Parse L3/L4 once (IPv4 with options; IPv6 without extension headers).
        if et == 0x0800 && frame.len() >= 34 {
            let ihl = (frame[14] & 0xf) as usize * 4;
            l3 = 4;
            l4_proto = frame[23];
            let frag = u16::from_be_bytes([frame[20], frame[21]]) & 0x1fff != 0;
            if ihl >= 20 && !frag {
                l4_off = Some(14 + ihl);
            }
        } else if et == 0x86dd && frame.len() >= 54 {
            l3 = 6;
            l4_proto = frame[20];
            l4_off = Some(54);
        }
        for item in &self.pattern {
            let ok = match item {
                FlowItem::Eth { spec, mask } => {
                    masked_eq(&frame[0..6], &spec.dst.0, &mask.dst.0)
                        && masked_eq(&frame[6..12], &spec.src.0, &mask.src.0)
                        && (et & mask.ether_type) == (spec.ether_type & mask.ether_type)
                }
                FlowItem::Ipv4 { spec, mask } => {
                    l3 == 4
                        && masked_eq(&frame[26..30], &spec.src.octets(), &mask.src.octets())
                        && masked_eq(&frame[30..34], &spec.dst.octets(), &mask.dst.octets())
                        && (l4_proto & mask.proto) == (spec.proto & mask.proto)
                }
                FlowItem::Ipv6 { spec, mask } => {
                    l3 == 6
                        && masked_eq(&frame[22..38], &spec.src.octets(), &mask.src.octets())
                        && masked_eq(&frame[38..54], &spec.dst.octets(), &mask.dst.octets())
                        && (l4_proto & mask.next_header) == (spec.next_header & mask.next_header)
                }
                FlowItem::Udp { spec, mask } => {
                    l4_proto == 17 && ports_match(frame, l4_off, spec, mask)
                }
                FlowItem::Tcp { spec, mask } => {
                    l4_proto == 6 && ports_match(frame, l4_off, spec, mask)
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

fn masked_eq(a: &[u8], b: &[u8], m: &[u8]) -> bool {
    a.iter().zip(b).zip(m).all(|((a, b), m)| a & m == b & m)
}

fn ports_match(frame: &[u8], l4_off: Option<usize>, spec: &L4Ports, mask: &L4Ports) -> bool {
    let Some(p) = l4_off.and_then(|o| frame.get(o..o + 4)) else {
        return false;
    };
    let src = u16::from_be_bytes([p[0], p[1]]);
    let dst = u16::from_be_bytes([p[2], p[3]]);
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
}
