//! The switch's lookup rules as add/update/remove switch rules (0x02A0-0x02A2) program them,
//! and the RX lookup that honours them. Layout from Linux 6.12 `ice_adminq_cmd.h`
//! (`struct ice_aqc_sw_rules_elem_hdr`: type @0, status @2; `struct ice_sw_rule_lkup_rx_tx`:
//! recipe_id @4, src @6 (not used here), act @8, index @12, hdr_len @14, the dummy header from @16; the
//! `ICE_SINGLE_ACT_*` bits of `act`).
//!
//! Modelled: destination-MAC lookups (recipe 1, `ICE_SW_LKUP_MAC`) on received frames,
//! forwarding to a VSI or VSI list, or dropping. Once any such rule exists, a received frame
//! no rule matches is dropped, as the switch drops what nothing claims. Other recipes and TX
//! lookups are kept (so they can be updated and removed) but match nothing here.

use std::collections::BTreeMap;

use vdpdk_core::MacAddr;

/// Rule types of the element header.
pub(crate) const T_LKUP_RX: u16 = 0x0;
pub(crate) const T_LKUP_TX: u16 = 0x1;
/// VSI list and VLAN prune list elements: set a list's members, or clear them
/// (`struct ice_sw_rule_vsi_list`: index @4, number_vsi @6, vsi[] @8). Type 2 is a large
/// action, not modelled.
pub(crate) const T_VSI_LIST_SET: u16 = 0x3;
pub(crate) const T_VSI_LIST_CLEAR: u16 = 0x4;
pub(crate) const T_PRUNE_LIST_SET: u16 = 0x5;
pub(crate) const T_PRUNE_LIST_CLEAR: u16 = 0x6;
/// The destination-MAC recipe.
pub(crate) const RECIPE_MAC: u16 = 1;
/// Bytes before the dummy header.
pub(crate) const RULE_HDR: usize = 16;

/// One lookup rule.
#[derive(Clone, Debug)]
pub(crate) struct SwRule {
    pub(crate) kind: u16,
    pub(crate) recipe: u16,
    pub(crate) act: u32,
    /// The dummy header's destination MAC (bytes 0..6 of the header).
    pub(crate) dst: Option<MacAddr>,
}

/// What a matching rule does with a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Deliver to this VSI (a VSI list's first member; the model's PF VSIs share the LAN
    /// queues).
    Forward(u16),
    /// Drop (a drop rule, or no rule claims the frame).
    Drop,
    /// No MAC rule is programmed: the model's default steering applies.
    NoRules,
}

impl SwRule {
    /// Parses one rule element; `None` if it is cut short.
    pub(crate) fn parse(e: &[u8]) -> Option<(SwRule, usize)> {
        let le16 = |o: usize| e.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let hdr_len = le16(14)? as usize;
        let hdr = e.get(RULE_HDR..RULE_HDR + hdr_len)?;
        let rule = SwRule {
            kind: le16(0)?,
            recipe: le16(4)?,
            act: u32::from_le_bytes(e.get(8..12)?.try_into().ok()?),
            dst: hdr.get(0..6).map(|b| MacAddr(b.try_into().unwrap())),
        };
        Some((rule, RULE_HDR + hdr_len))
    }

    fn valid(&self) -> bool {
        self.act & (1 << 17) != 0
    }
}

/// A VSI list element: the list's index and its member VSIs; and the element's length.
pub(crate) fn parse_vsi_list(e: &[u8]) -> Option<(u16, Vec<u16>, usize)> {
    let le16 = |o: usize| e.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let (index, n) = (le16(4)?, le16(6)? as usize);
    let vsis = (0..n)
        .map(|i| le16(8 + 2 * i))
        .collect::<Option<Vec<u16>>>()?;
    Some((index, vsis, 8 + 2 * n))
}

/// The rules by index, and the VSI lists they may forward to.
#[derive(Default)]
pub(crate) struct SwRules {
    rules: BTreeMap<u16, SwRule>,
    /// VSI lists by index (from alloc_res VSI list types): member VSIs.
    pub(crate) vsi_lists: BTreeMap<u16, Vec<u16>>,
    /// VLAN prune lists by index: the VSIs a VLAN is allowed on (kept; the model does not
    /// filter VLANs on receive).
    pub(crate) prune_lists: BTreeMap<u16, Vec<u16>>,
}

impl SwRules {
    /// Stores a rule; its index, or `None` when the table is full.
    pub(crate) fn add(&mut self, rule: SwRule) -> Option<u16> {
        let idx = (0..=u16::MAX).find(|i| !self.rules.contains_key(i))?;
        self.rules.insert(idx, rule);
        Some(idx)
    }

    /// Replaces rule `idx`'s action; false if there is no such rule.
    pub(crate) fn update(&mut self, idx: u16, act: u32) -> bool {
        self.rules.get_mut(&idx).map(|r| r.act = act).is_some()
    }

    /// Removes rule `idx`; false if there is no such rule.
    pub(crate) fn remove(&mut self, idx: u16) -> bool {
        self.rules.remove(&idx).is_some()
    }

    /// Forgets every rule and list (a PF reset).
    pub(crate) fn clear(&mut self) {
        self.rules.clear();
        self.vsi_lists.clear();
        self.prune_lists.clear();
    }

    /// The RX lookup of a frame with destination `dst`: the MAC rules of either direction.
    /// Linux adds its MAC filters as TX lookups (`ICE_FLTR_TX`, with loopback and LAN enables)
    /// and receives on them, so the card forwards by destination MAC whichever direction a
    /// MAC rule was added in (inferred from Linux's behaviour; our sources do not say).
    pub(crate) fn lookup_rx(&self, dst: Option<MacAddr>) -> Verdict {
        let mut mac_rules = self
            .rules
            .values()
            .filter(|r| r.recipe == RECIPE_MAC && r.valid())
            .peekable();
        if mac_rules.peek().is_none() {
            return Verdict::NoRules;
        }
        let hit = mac_rules.find(|r| r.dst.is_some() && r.dst == dst);
        log::trace!("rx lookup {dst:?}: {:?}", hit.map(|r| r.act));
        match hit {
            Some(r) if r.act & (1 << 18) != 0 => Verdict::Drop,
            // Action type 0 (bits 1:0): forward to the VSI, or VSI list with bit 14, in bits
            // 13:4 [Linux 6.12 ice_lan_tx_rx.h ICE_SINGLE_ACT_*].
            Some(r) if r.act & 0x3 == 0 => {
                let id = (r.act >> 4 & 0x3FF) as u16;
                let vsi = if r.act & 1 << 14 != 0 {
                    self.vsi_lists.get(&id).and_then(|l| l.first().copied())
                } else {
                    Some(id)
                };
                vsi.map_or(Verdict::Drop, Verdict::Forward)
            }
            _ => Verdict::Drop,
        }
    }
}
