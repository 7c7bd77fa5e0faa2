//! Ethernet II frames (IEEE 802.3 clause 3.2) and 802.1Q VLAN tags (IEEE 802.1Q-2018 clause 9).
//!
//! A frame starts with destination MAC, source MAC and a 16-bit type field. When that field is a
//! tag protocol identifier ([`ethertype::VLAN`], or [`ethertype::QINQ`] for an 802.1ad service
//! tag), a 4-byte tag follows: 16 bits of tag control information (priority, drop eligible,
//! 12-bit VLAN id), then the next type field. The FCS is not part of the buffers seen here.

use crate::mac::MacAddr;

/// EtherType values (IEEE Registration Authority; the ones this crate acts on).
pub mod ethertype {
    /// IPv4 (RFC 894).
    pub const IPV4: u16 = 0x0800;
    /// ARP (RFC 826).
    pub const ARP: u16 = 0x0806;
    /// Customer VLAN tag, 802.1Q C-TAG TPID.
    pub const VLAN: u16 = 0x8100;
    /// Service VLAN tag, 802.1ad S-TAG TPID (the outer tag of QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6 (RFC 2464).
    pub const IPV6: u16 = 0x86dd;
}

/// Byte ranges of the untagged Ethernet header.
pub mod field {
    use std::ops::{Range, RangeFrom};
    /// Destination MAC address.
    pub const DESTINATION: Range<usize> = 0..6;
    /// Source MAC address.
    pub const SOURCE: Range<usize> = 6..12;
    /// EtherType, or the TPID of the first VLAN tag.
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Everything after the header (a VLAN tag's TCI when the frame is tagged).
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// Bytes of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// Bytes one VLAN tag adds (TCI and the next type field).
pub const VLAN_TAG_LEN: usize = 4;
/// Most VLAN tags [`EthernetFrame::tags`] peels: 802.1ad S-TAG + 802.1Q C-TAG.
pub const MAX_VLAN_TAGS: usize = 2;

/// A read (and, over a mutable buffer, write) view of an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

/// The VLAN tags of a frame and where its L3 header starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tags {
    /// VLAN ids (the low 12 bits of each TCI), outer first; `None` past the tags present.
    pub vlan_ids: [Option<u16>; MAX_VLAN_TAGS],
    /// The type field after the tags: what the L3 header is.
    pub ethertype: u16,
    /// Header bytes including tags: 14, 18 or 22.
    pub header_len: usize,
}

impl Tags {
    /// How many VLAN tags were peeled (0..=2).
    #[inline]
    pub fn count(&self) -> usize {
        self.vlan_ids.iter().filter(|v| v.is_some()).count()
    }
}

/// Whether a type field announces a VLAN tag (802.1Q C-TAG or 802.1ad S-TAG).
#[inline]
pub fn is_tpid(ethertype: u16) -> bool {
    ethertype == ethertype::VLAN || ethertype == ethertype::QINQ
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking its length; accessors panic on a buffer shorter than
    /// [`HEADER_LEN`].
    #[inline]
    pub fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` if it holds at least an untagged header ([`HEADER_LEN`] bytes).
    #[inline]
    pub fn new_checked(buffer: T) -> Option<EthernetFrame<T>> {
        let f = Self::new_unchecked(buffer);
        f.check_len().then_some(f)
    }

    /// Whether the buffer holds an untagged header.
    #[inline]
    pub fn check_len(&self) -> bool {
        self.buffer.as_ref().len() >= HEADER_LEN
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(
            self.buffer.as_ref()[field::DESTINATION]
                .try_into()
                .expect("6 bytes"),
        )
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr(
            self.buffer.as_ref()[field::SOURCE]
                .try_into()
                .expect("6 bytes"),
        )
    }

    /// The type field at bytes 12..14: the EtherType of an untagged frame, the TPID of the
    /// first tag of a tagged one.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Peels up to [`MAX_VLAN_TAGS`] tags. A tag cut short by the end of the buffer is not
    /// peeled: its TPID is then the reported `ethertype`, as is a third tag's.
    #[inline]
    pub fn tags(&self) -> Tags {
        let b = self.buffer.as_ref();
        let mut t = Tags {
            vlan_ids: [None; MAX_VLAN_TAGS],
            ethertype: self.ethertype(),
            header_len: HEADER_LEN,
        };
        for id in t.vlan_ids.iter_mut() {
            if !is_tpid(t.ethertype) {
                break;
            }
            let Some(tag) = b.get(t.header_len..t.header_len + VLAN_TAG_LEN) else {
                break;
            };
            let tag = VlanTag::new_unchecked(tag);
            *id = Some(tag.vlan_id());
            t.ethertype = tag.ethertype();
            t.header_len += VLAN_TAG_LEN;
        }
        t
    }

    /// The bytes after the untagged header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0);
    }

    /// Sets the type field at bytes 12..14.
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&t.to_be_bytes());
    }

    /// The bytes after the untagged header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// Byte ranges of a VLAN tag, counted from its TCI (the TPID before it belongs to the previous
/// header's type field).
pub mod tag_field {
    use std::ops::Range;
    /// Tag control information: PCP (3 bits), DEI (1 bit), VLAN id (12 bits).
    pub const TCI: Range<usize> = 0..2;
    /// The type field after this tag.
    pub const ETHERTYPE: Range<usize> = 2..4;
}

/// A view of one VLAN tag's last 4 bytes (TCI and the following type field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps `buffer` without checking its length; accessors panic on fewer than
    /// [`VLAN_TAG_LEN`] bytes.
    #[inline]
    pub fn new_unchecked(buffer: T) -> VlanTag<T> {
        VlanTag { buffer }
    }

    /// Wraps `buffer` if it holds [`VLAN_TAG_LEN`] bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Option<VlanTag<T>> {
        (buffer.as_ref().len() >= VLAN_TAG_LEN).then_some(VlanTag { buffer })
    }

    /// Tag control information, all 16 bits.
    #[inline]
    pub fn tci(&self) -> u16 {
        let b = &self.buffer.as_ref()[tag_field::TCI];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The 12-bit VLAN id (0 means priority-tagged, no VLAN).
    #[inline]
    pub fn vlan_id(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// Priority code point, 0..=7.
    #[inline]
    pub fn priority(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// The type field after this tag.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[tag_field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the tag control information.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[tag_field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the type field after this tag.
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[tag_field::ETHERTYPE].copy_from_slice(&t.to_be_bytes());
    }
}
