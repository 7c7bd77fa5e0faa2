//! The LAN receive path: steering (Flow Director, then switch rules), RLAN queue contexts, and
//! the 32-byte flex NIC write-back with packet type and checksum status (Linux
//! `ice_lan_txrx.h`, \[LTR\]).

use vdpdk_core::MacAddr;

use crate::regs::*;
use crate::swrules::Verdict;
use crate::E810Model;

/// E810 packet type of a frame (\[LTR\] `ice_ptype_lkup`: 1 L2, 11 ARP, 23 IPv4, 24 IPv4/UDP,
/// 26 IPv4/TCP, 28 IPv4/ICMP, 89 IPv6, 90 IPv6/UDP, 92 IPv6/TCP).
pub(crate) fn e810_ptype(frame: &[u8]) -> u16 {
    let et = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match et {
        Some(0x0806) => 11,
        Some(0x0800) => match frame.get(23) {
            Some(17) => 24,
            Some(6) => 26,
            Some(1) => 28,
            _ => 23,
        },
        Some(0x86dd) => match frame.get(20) {
            Some(17) => 90,
            Some(6) => 92,
            _ => 89,
        },
        _ => 1,
    }
}

/// RFC 1071 sum of 16-bit words (not inverted), folded.
pub(crate) fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Checks IPv4 header and TCP/UDP checksums: (evaluated, ip_bad, l4_bad).
fn verify_checksums(frame: &[u8]) -> (bool, bool, bool) {
    if frame.get(12..14) != Some(&[0x08, 0x00]) || frame.len() < 34 {
        return (false, false, false);
    }
    let ihl = (frame[14] & 0xf) as usize * 4;
    if ihl < 20 || frame.len() < 14 + ihl {
        return (true, true, false);
    }
    let ip_bad = sum16(&frame[14..14 + ihl], 0) != 0xffff;
    let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    let proto = frame[23];
    let l4 = &frame[14 + ihl..(14 + total).min(frame.len()).max(14 + ihl)];
    let l4_bad = match proto {
        17 if l4.len() >= 8 && (l4[6], l4[7]) == (0, 0) => false, // no UDP checksum
        6 | 17 if l4.len() >= 8 => {
            let mut acc = sum16(&frame[26..34], 0);
            acc = sum16(&[0, proto], acc);
            acc = sum16(&(l4.len() as u16).to_be_bytes(), acc);
            sum16(l4, acc) != 0xffff
        }
        _ => false,
    };
    (true, ip_bad, l4_bad)
}

/// The 32-byte flex NIC write-back for a received frame [LTR `ice_32b_rx_flex_desc_nic`]:
/// rxdid @0, ptype @2 (bits 9:0), pkt_len @4 (bits 13:0), status_error0 @8 (DD b0, EOF b1,
/// L3L4P b3, XSUM_IPE b4, XSUM_L4E b5).
fn rx_writeback(frame: &[u8], rxdid: u8) -> [u8; 32] {
    let mut wb = [0u8; 32];
    wb[0] = rxdid;
    wb[2..4].copy_from_slice(&e810_ptype(frame).to_le_bytes());
    wb[4..6].copy_from_slice(&(frame.len() as u16 & 0x3FFF).to_le_bytes());
    let (eval, ip_bad, l4_bad) = verify_checksums(frame);
    let mut st: u16 = 0b11;
    if eval {
        st |= 1 << 3;
        st |= (ip_bad as u16) << 4 | (l4_bad as u16) << 5;
    }
    wb[8..10].copy_from_slice(&st.to_le_bytes());
    wb
}

/// Where steering sends a frame: the PF queue, the Flow Director flow id written back
/// (0xFFFFFFFF: none) and the RSS hash written back (0: none, as Linux reads it).
struct Steer {
    queue: usize,
    flow_id: u32,
    hash: u32,
}

impl Steer {
    fn to(queue: usize) -> Steer {
        Steer {
            queue,
            flow_id: u32::MAX,
            hash: 0,
        }
    }
    fn with_flow_id(self, flow_id: u32) -> Steer {
        Steer { flow_id, ..self }
    }
}

/// One LAN RX queue as the device sees it.
#[derive(Default, Clone)]
pub(crate) struct RxQueueState {
    pub(crate) ctx: [u32; 8],
    pub(crate) enabled: bool,
    /// Reads of QRX_CTRL left before a requested stop completes (0: none pending). Until
    /// then the queue still receives, as hardware finishing its in-flight DMA does.
    pub(crate) stopping: u8,
    pub(crate) base: u64,
    pub(crate) len: u32,
    pub(crate) dbuf: usize,
    pub(crate) rxmax: usize,
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) rxdid: u8,
}

/// QRX_CTRL reads a stop takes: the queue is stopped only when QENA_STAT reads clear, which
/// software must wait for before it frees the ring or the buffers [Linux ice `ice_pf_rxq_wait`
/// polls QRX_CTRL.QENA_STAT, 20-40 us apart; DPDK ice `ice_switch_rx_queue` likewise]. A
/// driver that does not wait leaves the queue receiving into memory it let go.
const RX_STOP_READS: u8 = 3;

impl E810Model {
    /// QRX_CTRL of queue `q` as read: QENA_REQ (bit 0) as last written, QENA_STAT (bit 2)
    /// while the queue runs; each read moves a pending stop on.
    pub(crate) fn rx_ctrl_read(&mut self, q: usize) -> u32 {
        let Some(st) = self.rxq.get_mut(q) else {
            return 0;
        };
        if st.stopping > 0 {
            st.stopping -= 1;
            if st.stopping == 0 {
                st.enabled = false;
            }
        }
        match (st.enabled, st.stopping > 0) {
            (true, false) => 0b101,
            (true, true) => 0b100,
            (false, _) => 0,
        }
    }

    /// A frame from the wire: the switch's MAC lookup rules (a frame they drop or do not claim
    /// goes no further; one they forward goes to a VSI), then the VSI's Flow Director filters,
    /// then `mac_to_queue`, then the VSI's RSS, else queue 0.
    pub fn receive(&mut self, frame: &[u8]) -> bool {
        match self.steer(frame) {
            Some(s) => self.receive_with(s.queue, frame, s.flow_id, s.hash),
            None => false,
        }
    }

    /// As [`receive`](Self::receive), except that a frame whose queue is running but has too
    /// few free descriptors is left with the caller (`None`, nothing counted) to offer again
    /// once the driver has posted buffers: a cable with flow control.
    pub fn try_receive(&mut self, frame: &[u8]) -> Option<bool> {
        let Some(s) = self.steer(frame) else {
            return Some(false);
        };
        if !self.rx_has_room(s.queue, frame.len()) {
            return None;
        }
        Some(self.receive_with(s.queue, frame, s.flow_id, s.hash))
    }

    /// Where a frame goes, or None if a rule or filter dropped it (counted). The switch picks
    /// the VSI by destination MAC; that VSI's Flow Director filters, then `mac_to_queue`, then
    /// its RSS choose the queue.
    fn steer(&mut self, frame: &[u8]) -> Option<Steer> {
        let dst = MacAddr::dst_of(frame);
        let vsi = match self.sw_rules.lookup_rx(dst) {
            Verdict::Drop => {
                self.switch_drops += 1;
                return None;
            }
            Verdict::Forward(vsi) => Some(vsi),
            Verdict::NoRules => self.lan_vsi,
        };
        let prof = vsi.and_then(|v| self.fd.profile(e810_ptype(frame), v));
        if let Some(prof) = prof {
            let key = self.fd.key(prof, frame, false);
            if let Some(&(q, drop, fdid)) = self.fdir.get(&(prof, key)) {
                if drop {
                    self.fdir_drops += 1;
                    return None;
                }
                return Some(Steer::to(q as usize).with_flow_id(fdid));
            }
        }
        if let Some(&(_, q)) = self.mac_to_queue.iter().find(|(m, _)| Some(*m) == dst) {
            return Some(Steer::to(q as usize));
        }
        match vsi.and_then(|v| self.rss_queue(v, frame)) {
            Some((q, hash)) => Some(Steer {
                hash,
                ..Steer::to(q)
            }),
            None => Some(Steer::to(0)),
        }
    }

    /// Whether queue `q` could take a frame of `len` bytes now; a queue that would refuse it
    /// for good (stopped, frame too long) counts as having room, so the frame is dropped.
    fn rx_has_room(&self, q: usize, len: usize) -> bool {
        let Some(st) = self.rxq.get(q).filter(|s| s.enabled) else {
            return true;
        };
        if len == 0 || len > st.rxmax || st.dbuf == 0 {
            return true;
        }
        let free = (st.tail % st.len + st.len - st.head) % st.len;
        free as usize >= len.div_ceil(st.dbuf)
    }

    pub(crate) fn rxq_mut(&mut self, q: usize) -> &mut RxQueueState {
        if self.rxq.len() <= q {
            self.rxq.resize(q + 1, RxQueueState::default());
        }
        &mut self.rxq[q]
    }

    /// QRX_CONTEXT dword `i` of queue `q`, if `off` is one.
    pub(crate) fn rx_ctx_reg(&self, off: u64) -> Option<(usize, usize)> {
        let rel = off.checked_sub(QRX_CONTEXT_BASE)?;
        let i = rel / QRX_CONTEXT_DWORD_STRIDE;
        if i >= 8 {
            return None;
        }
        let q = self.queue_of(
            QRX_CONTEXT_BASE + rel % QRX_CONTEXT_DWORD_STRIDE,
            QRX_CONTEXT_BASE,
        )?;
        Some((i as usize, q))
    }

    pub(crate) fn rx_enable(&mut self, q: usize, on: bool) {
        let st = self.rxq_mut(q);
        if !on {
            if st.enabled {
                st.stopping = RX_STOP_READS;
            }
            return;
        }
        st.stopping = 0;
        let mut c = [0u8; 32];
        for (i, dw) in st.ctx.iter().enumerate() {
            c[i * 4..i * 4 + 4].copy_from_slice(&dw.to_le_bytes());
        }
        let f = |(l, w): (usize, usize)| crate::bits::get_bits(&c, l, w);
        st.base = f(RLAN_BASE) << 7;
        st.len = f(RLAN_QLEN) as u32;
        st.dbuf = (f(RLAN_DBUF) as usize) << 7;
        st.rxmax = f(RLAN_RXMAX) as usize;
        st.head = f(RLAN_HEAD) as u32;
        // Only 32-byte descriptors are modelled (dsize 1); a queue asking for 16 stays off.
        st.enabled = st.len > 0 && f(RLAN_DSIZE) == 1;
    }

    /// A frame arrives from the wire for PF queue `q` (after steering).
    pub fn receive_on(&mut self, q: usize, frame: &[u8]) -> bool {
        self.receive_with(q, frame, u32::MAX, 0)
    }

    /// Like `receive_on`, with the flow id (FDID) of the filter that matched (0xFFFFFFFF:
    /// none) and the RSS hash (0: none) written back.
    fn receive_with(&mut self, q: usize, frame: &[u8], flow_id: u32, hash: u32) -> bool {
        let Some(st) = self.rxq.get(q).filter(|s| s.enabled).cloned() else {
            log::debug!("rxq {q} is stopped: frame of {} bytes dropped", frame.len());
            self.stats.rx_dropped += 1;
            return false;
        };
        // RXMAX bounds the frame; it may span up to RXMAX / DBUF buffers, one descriptor each
        // (EOF on the last) [LTR `ice_rlan_ctx`, flex NIC write-back].
        if frame.is_empty() || frame.len() > st.rxmax || st.dbuf == 0 {
            self.stats.rx_oversize += 1;
            return false;
        }
        let pieces: Vec<&[u8]> = frame.chunks(st.dbuf).collect();
        let free = (st.tail % st.len + st.len - st.head) % st.len;
        if (free as usize) < pieces.len().max(1) {
            log::debug!("rxq {q} has no free descriptor: frame dropped");
            self.stats.rx_dropped += 1;
            self.count_rx_discard();
            return false;
        }
        let mut head = st.head;
        for (k, piece) in pieces.iter().enumerate() {
            let at = st.base + head as u64 * 32;
            let mut d = [0u8; 32];
            if !self.dma.read(at, &mut d) {
                log::debug!("rxq {q}: descriptor {head} at {at:#x} is not mapped");
                self.stats.rx_dropped += 1;
                self.stats.rx_dma_faults += 1;
                return false;
            }
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
            if !self.dma.write(addr, piece) {
                log::debug!("rxq {q}: buffer {addr:#x}+{} is not mapped", piece.len());
                self.stats.rx_dropped += 1;
                self.stats.rx_dma_faults += 1;
                return false;
            }
            let mut wb = if k + 1 == pieces.len() {
                let mut wb = rx_writeback(frame, st.rxdid);
                wb[12..16].copy_from_slice(&hash.to_le_bytes()); // rss_hash [LTR flex NIC @12]
                wb[24..28].copy_from_slice(&flow_id.to_le_bytes()); // flow_id [LTR flex NIC @24]
                wb
            } else {
                let mut wb = [0u8; 32];
                wb[0] = st.rxdid;
                wb[8] = 1; // DD without EOF: more of the frame follows
                wb
            };
            wb[4..6].copy_from_slice(&(piece.len() as u16 & 0x3FFF).to_le_bytes());
            // Status (with DD) last: write the rest, then the status word.
            self.dma.write(at + 10, &wb[10..]);
            self.dma.write(at, &wb[..8]);
            self.dma.write(at + 8, &wb[8..10]);
            head = (head + 1) % st.len;
        }
        self.rxq[q].head = head;
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += frame.len() as u64;
        self.count_frame(frame, true);
        self.rx_interrupt(q);
        true
    }
}
