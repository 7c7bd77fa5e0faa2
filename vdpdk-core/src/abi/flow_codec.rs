//! Wire format of flow rules in the control block's payload.
//!
//! ```text
//! header  : version u8 (=1) | n_items u8 | n_actions u8 | attr u8 (b0 ingress, b1 egress)
//!           | group u32 LE | priority u32 LE
//! item    : type u8 | len u8 | spec | mask        (ETH 1: 14+14, IPV4 2: 9+9,
//!                                                  IPV6 3: 33+33, UDP 4 / TCP 5: 4+4)
//! action  : type u8 | len u8 | value              (QUEUE 1: u16, DROP 2: -, MARK 3: u32)
//! ```
//! Multi-byte header fields are big-endian as on the wire (MACs, addresses, ports, EtherType);
//! the rest is little-endian. The decoder accepts exactly one rule filling the whole buffer and
//! refuses anything else with a reason; it never panics on any input.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::flow::*;
use crate::mac::MacAddr;

/// Version byte at the start of every encoded rule; a decoder refuses any other.
pub const CODEC_VERSION: u8 = 1;
const HDR_LEN: usize = 12;

const ITEM_ETH: u8 = 1;
const ITEM_IPV4: u8 = 2;
const ITEM_IPV6: u8 = 3;
const ITEM_UDP: u8 = 4;
const ITEM_TCP: u8 = 5;
const ACT_QUEUE: u8 = 1;
const ACT_DROP: u8 = 2;
const ACT_MARK: u8 = 3;

/// Why a byte string is not a flow rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended inside the header or element starting at this byte.
    #[error("flow rule truncated at byte {0}")]
    Truncated(usize),
    /// The rule carries this codec version, not [`CODEC_VERSION`].
    #[error("flow codec version {0}, expected {CODEC_VERSION}")]
    Version(u8),
    /// A pattern item of this unknown type.
    #[error("unknown flow item type {0}")]
    UnknownItem(u8),
    /// An action of this unknown type.
    #[error("unknown flow action type {0}")]
    UnknownAction(u8),
    /// An element whose length byte does not fit its type.
    #[error("flow element type {kind} has length {len}, expected {expected}")]
    BadLength {
        /// Item or action type.
        kind: u8,
        /// Length byte found.
        len: u8,
        /// Length the type has.
        expected: u8,
    },
    /// More items or actions than [`crate::flow::MAX_FLOW_ITEMS`] / `MAX_FLOW_ACTIONS`.
    #[error("{0} items or actions exceed the limit")]
    TooMany(usize),
    /// Bytes left over after a whole rule.
    #[error("{0} trailing bytes after the flow rule")]
    Trailing(usize),
    /// Attribute flags with bits this version does not define.
    #[error("unknown attribute bits {0:#x}")]
    BadAttr(u8),
}

fn eth_bytes(e: &EthFields, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.dst.0);
    out.extend_from_slice(&e.src.0);
    out.extend_from_slice(&e.ether_type.to_be_bytes());
}
fn ipv4_bytes(e: &Ipv4Fields, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.src.octets());
    out.extend_from_slice(&e.dst.octets());
    out.push(e.proto);
}
fn ipv6_bytes(e: &Ipv6Fields, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.src.octets());
    out.extend_from_slice(&e.dst.octets());
    out.push(e.next_header);
}
fn ports_bytes(e: &L4Ports, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.src.to_be_bytes());
    out.extend_from_slice(&e.dst.to_be_bytes());
}

/// Encodes a rule. Rules beyond the codec's limits (more than 255 items) are truncated by the
/// count byte, so callers run `FlowRule::check_shape` first.
pub fn encode(rule: &FlowRule) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(CODEC_VERSION);
    out.push(rule.pattern.len().min(255) as u8);
    out.push(rule.actions.len().min(255) as u8);
    out.push(rule.attr.ingress as u8 | (rule.attr.egress as u8) << 1);
    out.extend_from_slice(&rule.attr.group.to_le_bytes());
    out.extend_from_slice(&rule.attr.priority.to_le_bytes());
    for item in rule.pattern.iter().take(255) {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        let kind = match item {
            FlowItem::Eth { spec, mask } => {
                eth_bytes(spec, &mut out);
                eth_bytes(mask, &mut out);
                ITEM_ETH
            }
            FlowItem::Ipv4 { spec, mask } => {
                ipv4_bytes(spec, &mut out);
                ipv4_bytes(mask, &mut out);
                ITEM_IPV4
            }
            FlowItem::Ipv6 { spec, mask } => {
                ipv6_bytes(spec, &mut out);
                ipv6_bytes(mask, &mut out);
                ITEM_IPV6
            }
            FlowItem::Udp { spec, mask } => {
                ports_bytes(spec, &mut out);
                ports_bytes(mask, &mut out);
                ITEM_UDP
            }
            FlowItem::Tcp { spec, mask } => {
                ports_bytes(spec, &mut out);
                ports_bytes(mask, &mut out);
                ITEM_TCP
            }
        };
        out[start] = kind;
        out[start + 1] = (out.len() - start - 2) as u8;
    }
    for a in rule.actions.iter().take(255) {
        match a {
            FlowAction::Queue(q) => {
                out.extend_from_slice(&[ACT_QUEUE, 2]);
                out.extend_from_slice(&q.to_le_bytes());
            }
            FlowAction::Drop => out.extend_from_slice(&[ACT_DROP, 0]),
            FlowAction::Mark(m) => {
                out.extend_from_slice(&[ACT_MARK, 4]);
                out.extend_from_slice(&m.to_le_bytes());
            }
        }
    }
    out
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(CodecError::Truncated(self.pos))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(CodecError::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }
    fn be16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    fn eth(&mut self) -> Result<EthFields, CodecError> {
        Ok(EthFields {
            dst: MacAddr(self.arr()?),
            src: MacAddr(self.arr()?),
            ether_type: self.be16()?,
        })
    }
    fn ipv4(&mut self) -> Result<Ipv4Fields, CodecError> {
        Ok(Ipv4Fields {
            src: Ipv4Addr::from(self.arr::<4>()?),
            dst: Ipv4Addr::from(self.arr::<4>()?),
            proto: self.u8()?,
        })
    }
    fn ipv6(&mut self) -> Result<Ipv6Fields, CodecError> {
        Ok(Ipv6Fields {
            src: Ipv6Addr::from(self.arr::<16>()?),
            dst: Ipv6Addr::from(self.arr::<16>()?),
            next_header: self.u8()?,
        })
    }
    fn ports(&mut self) -> Result<L4Ports, CodecError> {
        Ok(L4Ports {
            src: self.be16()?,
            dst: self.be16()?,
        })
    }
}

fn expect_len(kind: u8, len: u8, expected: u8) -> Result<(), CodecError> {
    if len != expected {
        return Err(CodecError::BadLength {
            kind,
            len,
            expected,
        });
    }
    Ok(())
}

/// Decodes one rule that must fill `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<FlowRule, CodecError> {
    let mut r = Reader { b: bytes, pos: 0 };
    let hdr = r.take(HDR_LEN)?;
    if hdr[0] != CODEC_VERSION {
        return Err(CodecError::Version(hdr[0]));
    }
    let (n_items, n_actions, attr) = (hdr[1] as usize, hdr[2] as usize, hdr[3]);
    if n_items > MAX_FLOW_ITEMS {
        return Err(CodecError::TooMany(n_items));
    }
    if n_actions > MAX_FLOW_ACTIONS {
        return Err(CodecError::TooMany(n_actions));
    }
    if attr & !0x3 != 0 {
        return Err(CodecError::BadAttr(attr));
    }
    let mut rule = FlowRule {
        attr: FlowAttr {
            ingress: attr & 1 != 0,
            egress: attr & 2 != 0,
            group: u32::from_le_bytes(hdr[4..8].try_into().expect("4 bytes")),
            priority: u32::from_le_bytes(hdr[8..12].try_into().expect("4 bytes")),
        },
        pattern: Vec::with_capacity(n_items),
        actions: Vec::with_capacity(n_actions),
    };
    for _ in 0..n_items {
        let (kind, len) = (r.u8()?, r.u8()?);
        let item = match kind {
            ITEM_ETH => {
                expect_len(kind, len, 28)?;
                FlowItem::Eth {
                    spec: r.eth()?,
                    mask: r.eth()?,
                }
            }
            ITEM_IPV4 => {
                expect_len(kind, len, 18)?;
                FlowItem::Ipv4 {
                    spec: r.ipv4()?,
                    mask: r.ipv4()?,
                }
            }
            ITEM_IPV6 => {
                expect_len(kind, len, 66)?;
                FlowItem::Ipv6 {
                    spec: r.ipv6()?,
                    mask: r.ipv6()?,
                }
            }
            ITEM_UDP | ITEM_TCP => {
                expect_len(kind, len, 8)?;
                let (spec, mask) = (r.ports()?, r.ports()?);
                if kind == ITEM_UDP {
                    FlowItem::Udp { spec, mask }
                } else {
                    FlowItem::Tcp { spec, mask }
                }
            }
            k => return Err(CodecError::UnknownItem(k)),
        };
        rule.pattern.push(item);
    }
    for _ in 0..n_actions {
        let (kind, len) = (r.u8()?, r.u8()?);
        let a = match kind {
            ACT_QUEUE => {
                expect_len(kind, len, 2)?;
                FlowAction::Queue(u16::from_le_bytes(r.arr()?))
            }
            ACT_DROP => {
                expect_len(kind, len, 0)?;
                FlowAction::Drop
            }
            ACT_MARK => {
                expect_len(kind, len, 4)?;
                FlowAction::Mark(u32::from_le_bytes(r.arr()?))
            }
            k => return Err(CodecError::UnknownAction(k)),
        };
        rule.actions.push(a);
    }
    if r.pos != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - r.pos));
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_map(MacAddr)
    }
    fn eth() -> impl Strategy<Value = EthFields> {
        (mac(), mac(), any::<u16>()).prop_map(|(dst, src, ether_type)| EthFields {
            dst,
            src,
            ether_type,
        })
    }
    fn ports() -> impl Strategy<Value = L4Ports> {
        (any::<u16>(), any::<u16>()).prop_map(|(src, dst)| L4Ports { src, dst })
    }
    fn item() -> impl Strategy<Value = FlowItem> {
        prop_oneof![
            (eth(), eth()).prop_map(|(spec, mask)| FlowItem::Eth { spec, mask }),
            (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u8>()).prop_map(|(s, d, p)| {
                let f = Ipv4Fields {
                    src: s.into(),
                    dst: d.into(),
                    proto: p,
                };
                FlowItem::Ipv4 { spec: f, mask: f }
            }),
            (any::<[u8; 16]>(), any::<u8>()).prop_map(|(a, p)| {
                let f = Ipv6Fields {
                    src: a.into(),
                    dst: a.into(),
                    next_header: p,
                };
                FlowItem::Ipv6 { spec: f, mask: f }
            }),
            (ports(), ports()).prop_map(|(spec, mask)| FlowItem::Udp { spec, mask }),
            (ports(), ports()).prop_map(|(spec, mask)| FlowItem::Tcp { spec, mask }),
        ]
    }
    fn action() -> impl Strategy<Value = FlowAction> {
        prop_oneof![
            any::<u16>().prop_map(FlowAction::Queue),
            Just(FlowAction::Drop),
            any::<u32>().prop_map(FlowAction::Mark),
        ]
    }
    fn rule() -> impl Strategy<Value = FlowRule> {
        (
            proptest::collection::vec(item(), 0..=MAX_FLOW_ITEMS),
            proptest::collection::vec(action(), 0..=MAX_FLOW_ACTIONS),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(pattern, actions, group, priority, ingress, egress)| FlowRule {
                    attr: FlowAttr {
                        group,
                        priority,
                        ingress,
                        egress,
                    },
                    pattern,
                    actions,
                },
            )
    }

    proptest! {
        #[test]
        fn roundtrip(r in rule()) {
            prop_assert_eq!(decode(&encode(&r)).unwrap(), r);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_rules_decode_or_fail_cleanly(r in rule(), pos in any::<usize>(), val in any::<u8>()) {
            let mut b = encode(&r);
            if !b.is_empty() {
                let i = pos % b.len();
                b[i] = val;
            }
            if let Ok(d) = decode(&b) {
                // Whatever decodes re-encodes to the same bytes: nothing was silently skipped.
                prop_assert_eq!(encode(&d), b);
            }
        }

        #[test]
        fn every_truncation_is_refused(r in rule(), cut in any::<usize>()) {
            let b = encode(&r);
            let n = cut % b.len();
            prop_assert!(decode(&b[..n]).is_err());
        }
    }

    #[test]
    fn specific_refusals() {
        let r = FlowRule::to_queue(vec![FlowItem::eth_type(0x88b5)], 1);
        let mut b = encode(&r);
        b.push(0);
        assert_eq!(decode(&b), Err(CodecError::Trailing(1)));
        let mut b = encode(&r);
        b[0] = 9;
        assert_eq!(decode(&b), Err(CodecError::Version(9)));
        let mut b = encode(&r);
        b[HDR_LEN] = 77;
        assert_eq!(decode(&b), Err(CodecError::UnknownItem(77)));
        let mut b = encode(&r);
        b[1] = 200;
        assert_eq!(decode(&b), Err(CodecError::TooMany(200)));
        let mut b = encode(&r);
        b[3] = 0x80;
        assert_eq!(decode(&b), Err(CodecError::BadAttr(0x80)));
    }
}
