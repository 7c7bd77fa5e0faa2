//! The Flow Director filter table: filters the driver programs through TX programming
//! descriptors (a training packet classified through [`crate::pipeline`]), and the status
//! written back on the RX queue.

use crate::rx::e810_ptype;
use crate::E810Model;

impl E810Model {
    /// Applies a filter programming command; returns the status qword 1 [LTR
    /// ICE_FXD_FLTR_WB_QW1_*]: DD, PROG_ID (0 add, 1 del), FAIL, FAIL_PROF.
    pub(crate) fn fdir_program(&mut self, qw0: u64, qw1: u64, template: &[u8]) -> u64 {
        let remove = qw1 >> 4 & 1 == 1;
        let mut st = 1 | (remove as u64) << 1;
        // The profile comes from the training packet (packet type, PTG, the group of the
        // filter's VSI, FD_VSI in qw1 bits 23:14 [Linux 6.12 ice_fdir.h ICE_FXD_FLTR_QW1_*],
        // TCAM), not from the descriptor's PROF field.
        let fd_vsi = (qw1 >> 14 & 0x3FF) as u16;
        let prof = self.fd.profile(e810_ptype(template), fd_vsi);
        let Some(prof) = prof else {
            return st | 1 << 5; // FAIL_PROF
        };
        let key = self.fd.key(prof, template, true);
        if remove {
            if self.fdir.remove(&(prof, key)).is_none() {
                st |= 1 << 4;
            }
        } else if self.fdir.len() >= Self::FDIR_CAPACITY
            && !self.fdir.contains_key(&(prof, key.clone()))
        {
            st |= 1 << 4;
        } else {
            let queue = (qw0 & 0x7FF) as u16;
            let drop = qw0 >> 40 & 1 == 1;
            self.fdir
                .insert((prof, key), (queue, drop, (qw1 >> 32) as u32));
        }
        st
    }

    /// Writes a programming status into RX queue `q`'s next descriptor (qword 1).
    pub(crate) fn post_status(&mut self, q: usize, st: u64) {
        let Some(s) = self.rxq.get(q).filter(|s| s.enabled).cloned() else {
            return;
        };
        if s.head == s.tail % s.len.max(1) {
            return;
        }
        let at = s.base + s.head as u64 * 32;
        self.dma.write(at + 8, &st.to_le_bytes());
        self.rxq[q].head = (s.head + 1) % s.len;
    }
}
