//! Port (GLPRT_*) and VSI (GLV_*) statistics counters, 40 bits wide and wrapping like the
//! hardware's (DPDK `base/ice_hw_autogen.h`).

use vdpdk_core::MacAddr;

use crate::regs::*;
use crate::E810Model;

impl E810Model {
    pub(crate) fn count(&mut self, reg: u64, v: u64) {
        let c = self.port_counters.entry(reg).or_default();
        *c = (*c + v) & ((1 << 40) - 1);
    }

    /// Counts a frame in the port counters and, when a LAN VSI exists, in its VSI counters
    /// (every LAN queue of the model belongs to the PF's VSI).
    pub(crate) fn count_frame(&mut self, frame: &[u8], rx: bool) {
        let dst = MacAddr::dst_of(frame).unwrap_or(MacAddr::ZERO);
        let kind = if dst.is_broadcast() {
            3
        } else if dst.is_multicast() {
            2
        } else {
            1
        };
        let port = if rx {
            [GLPRT_GORCL, GLPRT_UPRCL, GLPRT_MPRCL, GLPRT_BPRCL]
        } else {
            [GLPRT_GOTCL, GLPRT_UPTCL, GLPRT_MPTCL, GLPRT_BPTCL]
        };
        // Port byte counters include the 4-byte CRC the wire carries.
        self.count(port[0], frame.len() as u64 + 4);
        self.count(port[kind], 1);
        if let Some(vsi) = self.lan_vsi {
            let vsi_regs = if rx {
                [GLV_GORCL, GLV_UPRCL, GLV_MPRCL, GLV_BPRCL]
            } else {
                [GLV_GOTCL, GLV_UPTCL, GLV_MPTCL, GLV_BPTCL]
            };
            let at = GLV_STRIDE * vsi as u64;
            self.count(vsi_regs[0] + at, frame.len() as u64);
            self.count(vsi_regs[kind] + at, 1);
        }
    }

    /// A frame for the VSI found no free descriptor (GLV_RDPC, 32 bits).
    pub(crate) fn count_rx_discard(&mut self) {
        if let Some(vsi) = self.lan_vsi {
            let c = self
                .port_counters
                .entry(GLV_RDPC + 4 * vsi as u64)
                .or_default();
            *c = (*c + 1) & 0xFFFF_FFFF;
        }
    }
}
