//! The wire layer: typed views over frame bytes, and one parse per frame.
//!
//! Modelled on smoltcp's `wire`: each header has a view `Header<T: AsRef<[u8]>>` over a buffer
//! whose `new_checked` refuses a buffer too short for the header, accessors that read fields
//! from byte ranges named in a `field` module, and setters when the buffer is writable. Nothing
//! here allocates or copies a frame.
//!
//! [`parse`] walks a frame once (Ethernet with up to two VLAN tags, IPv4 or IPv6, TCP or UDP)
//! and returns a [`Summary`] of where each layer is; everything in this crate that looks into a
//! frame (packet types, flow rule matching, TCP segmentation) starts from it, so they agree on
//! VLAN tags, fragments and short headers.

pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod tso;
pub mod udp;

pub use checksum::{complete_checksum, fold, inet_checksum, ones_sum};
pub use ethernet::{ethertype, EthernetFrame, VlanTag};
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::TcpPacket;
pub use tso::{finish_tcp_segment, TcpLayout};
pub use udp::UdpPacket;

/// Which network layer header follows the Ethernet header (and its tags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L3 {
    /// An IPv4 header whose length checks passed ([`Ipv4Packet::new_checked`]).
    Ipv4,
    /// An IPv6 fixed header ([`Ipv6Packet::new_checked`]).
    Ipv6,
}

/// What [`parse`] found in a frame: offsets and the few fields steering needs. Small and `Copy`,
/// so a frame is parsed once and each consumer (every flow rule, the packet type) reads this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Bytes of the Ethernet header including VLAN tags: 14, 18 or 22; the L3 header starts
    /// here.
    pub l2_len: u8,
    /// VLAN ids (12 bits each), outer first: one 802.1Q tag fills `[0]`; QinQ (802.1ad S-TAG
    /// then C-TAG) fills both.
    pub vlan_ids: [Option<u16>; 2],
    /// The EtherType after the tags (what the L3 header is).
    pub ethertype: u16,
    /// The L3 header, when the EtherType names IPv4 or IPv6 and the buffer holds its header.
    pub l3: Option<L3>,
    /// IPv4 protocol or IPv6 next header of the fixed header (6 TCP, 17 UDP, 44 IPv6
    /// Fragment); 0 without `l3`.
    pub l4_proto: u8,
    /// Offset of the L4 header, when this frame carries it: IPv4 with fragment offset 0
    /// (unfragmented, or the first fragment: RFC 791 3.1), or any IPv6 (right after the fixed
    /// header). May point at or past the end of a truncated frame.
    pub l4_offset: Option<u16>,
    /// TCP or UDP (source, destination) ports, from a header that is whole in the buffer, of a
    /// packet that is not a fragment: the other fragments of a datagram carry no ports, so
    /// steering by the first fragment's would split the datagram.
    pub ports: Option<(u16, u16)>,
    /// IPv4: MF set or a non-zero fragment offset (`flags_and_offset & 0x3fff != 0`, RFC 791
    /// 3.1). IPv6: a Fragment header after the fixed header with a non-zero offset or M
    /// (RFC 8200 4.5; atomic fragments are not fragments, RFC 6946).
    pub fragment: bool,
}

impl Summary {
    /// Offset of the L3 header (the same as `l2_len`).
    #[inline]
    pub fn l3_offset(&self) -> usize {
        self.l2_len as usize
    }

    /// How many VLAN tags the frame has (0..=2).
    #[inline]
    pub fn vlan_count(&self) -> usize {
        self.vlan_ids.iter().filter(|v| v.is_some()).count()
    }
}

/// How far into a frame [`parse`] (and so a flow rule's match or a packet type) can look: two
/// VLAN tags (22 bytes of Ethernet header), the longest IPv4 header (60) and the longest TCP
/// header (60, whose length is checked against the buffer). A copy of a frame's first
/// `PARSE_REACH` bytes parses as the whole frame does.
pub const PARSE_REACH: usize = ethernet::HEADER_LEN + 4 * ethernet::MAX_VLAN_TAGS + 60 + 60;

/// Parses an Ethernet frame once: VLAN tags (up to two), IPv4 (options skipped) or IPv6 (the
/// fixed header; extension headers not followed, a Fragment header recognised), and TCP or UDP
/// ports. None when the buffer is shorter than an Ethernet header; otherwise every layer found
/// whole is in the summary and the first one missing or unknown ends the walk. Never panics,
/// never allocates.
#[inline]
pub fn parse(frame: &[u8]) -> Option<Summary> {
    let eth = EthernetFrame::new_checked(frame)?;
    let tags = eth.tags();
    let mut s = Summary {
        l2_len: tags.header_len as u8,
        vlan_ids: tags.vlan_ids,
        ethertype: tags.ethertype,
        ..Summary::default()
    };
    let l3 = &frame[tags.header_len..];
    let l4 = match tags.ethertype {
        ethertype::IPV4 => {
            let Some(ip) = Ipv4Packet::new_checked(l3) else {
                return Some(s);
            };
            s.l3 = Some(L3::Ipv4);
            s.l4_proto = ip.protocol();
            s.fragment = ip.is_fragment();
            if ip.frag_offset() != 0 {
                return Some(s);
            }
            tags.header_len + ip.header_len()
        }
        ethertype::IPV6 => {
            let Some(ip) = Ipv6Packet::new_checked(l3) else {
                return Some(s);
            };
            s.l3 = Some(L3::Ipv6);
            s.l4_proto = ip.next_header();
            s.fragment = ip.is_fragment();
            tags.header_len + ipv6::HEADER_LEN
        }
        _ => return Some(s),
    };
    s.l4_offset = Some(l4 as u16);
    if !s.fragment {
        s.ports = l4_ports(s.l4_proto, &frame[l4.min(frame.len())..]);
    }
    Some(s)
}

/// (source, destination) ports of a whole TCP or UDP header at the start of `l4`.
#[inline]
fn l4_ports(proto: u8, l4: &[u8]) -> Option<(u16, u16)> {
    match proto {
        tcp::PROTOCOL => TcpPacket::new_checked(l4).map(|t| (t.src_port(), t.dst_port())),
        udp::PROTOCOL => UdpPacket::new_checked(l4).map(|u| (u.src_port(), u.dst_port())),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
