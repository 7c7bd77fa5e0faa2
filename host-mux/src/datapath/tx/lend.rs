//! Zero-copy TX on the poller's side: which frames are lent, and how (see
//! `crate::guest::ZeroCopy` for the slots and pins behind it).

use vdpdk_core::packet::fill_tx_checksums;
use vdpdk_core::MacAddr;

use super::{csum_offloads, spoofed_in_guest, TxFrame, TxOutcome, TxRequest, TARGET_NONE};
use crate::datapath::Poller;
use crate::guest::{Guest, GuestMem, ZeroCopy, LEND_MIN_FRAME, LENT_HEADER};

impl Poller {
    /// Whether a frame's payload may be lent to the backend in place: big enough to be worth
    /// it, and asking for nothing the host would have to write into it (checksums the backend
    /// fills are fine; TSO and software checksums are not).
    #[inline(always)]
    pub(super) fn lendable(&self, f: &TxFrame<'_>) -> bool {
        f.len >= LEND_MIN_FRAME
            && match f.request {
                TxRequest::Plain => true,
                TxRequest::Checksum(_) => self.hw_tx.contains(csum_offloads(f.flags)),
                TxRequest::Segment { .. } => false,
            }
    }

    /// A frame sent as a host copy of its first [`LENT_HEADER`] bytes, checked and steered
    /// like any copy, chained to the rest of it lent in place from guest memory (queue
    /// `zc`, descriptor `idx`). A frame for another guest is copied whole instead: guests
    /// take frames, not lent memory. Needs one reserved buffer.
    pub(super) fn lend_tx(
        &mut self,
        g: &Guest,
        f: &TxFrame<'_>,
        zc: &mut ZeroCopy,
        idx: u16,
        mem: &GuestMem,
    ) -> TxOutcome {
        if spoofed_in_guest(g, &f.src) {
            return TxOutcome::Spoofed;
        }
        if !self.reserve(1) {
            return TxOutcome::Wait;
        }
        let mut m = self.free_cache.pop().expect("reserved above");
        m.reset_to_len(LENT_HEADER)
            .expect("a buffer holds the header");
        if f.src.read_slice(0, m.data_mut()).is_err() {
            self.free_cache.push(m);
            return TxOutcome::Bad;
        }
        if g.limits.spoof_check {
            m.data_mut()[6..12].copy_from_slice(&g.mac.0);
        }
        let for_a_guest =
            MacAddr::dst_of(m.data()).is_some_and(|d| self.local_target(g.mac, d) != TARGET_NONE);
        let rest = f.len - LENT_HEADER;
        let iova = f.src.iova() + LENT_HEADER as u64;
        let lent = match for_a_guest {
            false => mem.lend(iova, rest as u64),
            true => None,
        };
        let Some((region, ptr)) = lent else {
            // For another guest: the rest is copied behind the header, checksums filled.
            m.set_len(f.len).expect("len checked against max_frame");
            let copied = f
                .src
                .read_slice(LENT_HEADER, &mut m.data_mut()[LENT_HEADER..]);
            if copied.is_err() {
                self.free_cache.push(m);
                return TxOutcome::Bad;
            }
            if let TxRequest::Checksum(lay) = f.request {
                fill_tx_checksums(m.data_mut(), f.flags, &lay);
            }
            self.tx_buf.push(m);
            return TxOutcome::Queued;
        };
        if matches!(f.request, TxRequest::Checksum(_)) {
            m.ol_flags = f.flags;
            m.tx_offload = f.info;
        }
        m.chain(zc.lend(idx, region, ptr, iova, rest as u16));
        self.tx_buf.push(m);
        TxOutcome::Lent
    }
}
