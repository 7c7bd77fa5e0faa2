//! Ethernet (IEEE 802) MAC addresses: the type device info, flow rules and frame views share.

use crate::{Error, Result};

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff, every station on the segment.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00, "no address" (never valid as a source).
    pub const ZERO: MacAddr = MacAddr([0; 6]);
    /// Whether the I/G bit (least significant bit of the first octet, IEEE 802-2014 8.2) marks
    /// a group address; broadcast is one.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
    /// Whether this is ff:ff:ff:ff:ff:ff.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }
    /// Destination address of an Ethernet frame (its first 6 bytes, IEEE 802.3 clause 3.2.4),
    /// if the frame holds that many. Reads nothing else, so it is the cheapest way to steer by
    /// MAC; the frame views of the `wire` module read the same bytes.
    #[inline]
    pub fn dst_of(frame: &[u8]) -> Option<MacAddr> {
        frame
            .get(..6)
            .map(|d| MacAddr(d.try_into().expect("6 bytes")))
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidArg(format!("'{s}' is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in m.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "02:00:00:AB:cd:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:00:ab:cd:01");
        assert!("02:00:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("02:00:00:ab:cd:01:02".parse::<MacAddr>().is_err());
        assert!("zz:00:00:ab:cd:01".parse::<MacAddr>().is_err());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!m.is_multicast());
    }
}
