//! What a guest's TX descriptor may ask for: its offload request checked against the
//! descriptor alone (never against the frame's bytes, which the guest may still change).

use vdpdk_core::mbuf::TxOffloadInfo;
use vdpdk_core::packet::TxLayout;
use vdpdk_core::{OlFlags, TxOffloads};

use crate::datapath::MIN_TSO_MSS;

/// What a guest's TX descriptor asks for, once checked. Public for the fuzz targets
/// (fuzz/fuzz_targets/descriptor_validation.rs).
#[derive(Clone, Copy, Debug)]
pub enum TxRequest {
    /// Send as it is.
    Plain,
    /// Fill the checksums its flags name.
    Checksum(TxLayout),
    /// Cut a TCP super-frame into `nseg` segments of `mss` payload bytes.
    Segment {
        /// Where the headers are (the payload starts at `lay.payload`).
        lay: TxLayout,
        /// TCP payload bytes per segment (at least [`MIN_TSO_MSS`]).
        mss: usize,
        /// Segments the super-frame makes (the last may be short).
        nseg: usize,
    },
}

/// Checks a TX descriptor's length and offload request; None refuses it. Offloads outside
/// the checksums and TCP segmentation guests are offered (VLAN insertion, UDP segmentation, ...) are refused too. Public for
/// the fuzz targets (fuzz/fuzz_targets/descriptor_validation.rs).
#[inline]
pub fn tx_request(
    flags: OlFlags,
    t: TxOffloadInfo,
    len: usize,
    max_frame: usize,
) -> Option<TxRequest> {
    let known = OlFlags::TX_IPV4
        | OlFlags::TX_IPV6
        | OlFlags::TX_IP_CKSUM
        | OlFlags::TX_TCP_CKSUM
        | OlFlags::TX_UDP_CKSUM
        | OlFlags::TX_TCP_SEG;
    if !known.contains(flags) {
        return None;
    }
    if !flags.contains(OlFlags::TX_TCP_SEG) {
        if len > max_frame {
            return None;
        }
        if !flags.intersects(OlFlags::TX_IP_CKSUM | OlFlags::TX_TCP_CKSUM | OlFlags::TX_UDP_CKSUM) {
            return Some(TxRequest::Plain);
        }
        return TxLayout::new(flags, t, len).map(TxRequest::Checksum);
    }
    let lay = TxLayout::new(flags, t, len).filter(|l| l.l4_proto == 6)?;
    let mss = t.tso_segsz as usize;
    if mss < MIN_TSO_MSS || lay.payload + mss > max_frame || len <= lay.payload {
        return None;
    }
    Some(TxRequest::Segment {
        lay,
        mss,
        nseg: (len - lay.payload).div_ceil(mss),
    })
}

/// The device checksum offloads a frame's TX flags need.
pub(in crate::datapath) fn csum_offloads(flags: OlFlags) -> TxOffloads {
    let mut o = TxOffloads::empty();
    for (f, t) in [
        (OlFlags::TX_IP_CKSUM, TxOffloads::IPV4_CKSUM),
        (OlFlags::TX_TCP_CKSUM, TxOffloads::TCP_CKSUM),
        (OlFlags::TX_UDP_CKSUM, TxOffloads::UDP_CKSUM),
    ] {
        if flags.contains(f) {
            o |= t;
        }
    }
    o
}
