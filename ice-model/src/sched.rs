//! The transmit scheduler tree as firmware keeps it: nodes by TEID, each with its parent, its
//! layer and the element data the driver set (type, valid sections, bandwidth profiles).
//! Element layout from Linux 6.12 `ice_adminq_cmd.h` (`struct ice_aqc_txsched_elem`, the
//! 16 bytes after parent and node TEID); the walk-through is docs/linux-ice-probe.md 2.4.

use std::collections::HashMap;

/// Element types (`ICE_AQC_ELEM_TYPE_*`).
pub(crate) mod elem_type {
    /// The port's root.
    pub(crate) const ROOT_PORT: u8 = 1;
    /// A traffic class.
    pub(crate) const TC: u8 = 2;
    /// A generic scheduling element (VSI support nodes, queue groups).
    pub(crate) const SE_GENERIC: u8 = 3;
    /// Where software hangs its own nodes.
    pub(crate) const ENTRY_POINT: u8 = 4;
    /// A LAN TX queue.
    pub(crate) const LEAF: u8 = 5;
}

/// One node of the tree.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SchedNode {
    pub(crate) parent: u32,
    /// Depth from the root (layer 0).
    pub(crate) layer: u32,
    /// The element data, byte 0 the element type; what get_sched_elems reports back.
    pub(crate) elem: [u8; 16],
    /// The PF TX queue a leaf stands for.
    pub(crate) queue: Option<u16>,
}

impl SchedNode {
    pub(crate) fn new(parent: u32, layer: u32, kind: u8) -> SchedNode {
        let mut elem = [0u8; 16];
        elem[0] = kind;
        elem[1] = 0x7; // valid sections: generic, CIR, EIR
        SchedNode {
            parent,
            layer,
            elem,
            queue: None,
        }
    }
}

/// TEIDs of the default tree.
pub(crate) const ROOT_TEID: u32 = 0x100;
pub(crate) const TC0_TEID: u32 = 0x101;
pub(crate) const ENTRY_TEID: u32 = 0x102;

/// The tree at power-on: root port (layer 0), TC0 (layer 1) and the software entry point
/// (layer 2), the minimal default topology Linux accepts (the TC one layer above the entry
/// point, `ice_sched.c:ice_sched_add_vsi_support_nodes`).
pub(crate) fn default_topology() -> HashMap<u32, SchedNode> {
    HashMap::from([
        (ROOT_TEID, SchedNode::new(0, 0, elem_type::ROOT_PORT)),
        (TC0_TEID, SchedNode::new(ROOT_TEID, 1, elem_type::TC)),
        (
            ENTRY_TEID,
            SchedNode::new(TC0_TEID, 2, elem_type::ENTRY_POINT),
        ),
    ])
}
