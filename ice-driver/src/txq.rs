//! LAN TX: the PF VSI, the scheduler branch TX queues hang off, queue creation through
//! add_txqs with a TLAN context, and the 16-byte data descriptor ring
//! (\[SCH\] `ice_sched.c`, \[AQC\] `ice_aqc_add_txqs`, \[LTR\] `ice_tx_desc`; e810-facts.md §3, §5).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vdpdk_core::{DmaMemory, Mbuf, Mempool, OlFlags, QueueCounters, TxQueue};

use crate::regs::*;
use crate::Regs;

pub const TX_DESC_SIZE: usize = 16;
// qw1 fields [LTR]: DTYPE 3:0, CMD 15:4, OFFSET 33:16, BUF_SZ 47:34.
const DTYPE_DESC_DONE: u64 = 0xF;
const CMD_EOP: u64 = 0x001;
const CMD_RS: u64 = 0x002;
const CMD_SHIFT: u64 = 4;
/// OFFSET field (MACLEN 2-byte words bits 0-6, IPLEN 4-byte words 7-13, L4LEN 4-byte words
/// 14-17) starts at qw1 bit 16 \[LTR\].
const OFFSET_SHIFT: u64 = 16;
const CMD_IIPT_IPV6: u64 = 0x020;
const CMD_IIPT_IPV4: u64 = 0x040;
const CMD_IIPT_IPV4_CSUM: u64 = 0x060;
const CMD_L4T_TCP: u64 = 0x100;
const CMD_L4T_UDP: u64 = 0x300;
/// Context descriptor command: TSO \[LTR ICE_TX_CTX_DESC_TSO\].
const CTX_CMD_TSO: u64 = 0x01;

/// Data-descriptor offload command bits and OFFSET for an mbuf's TX offload requests
/// (\[CTX\] `ci_txd_enable_checksum`): the checksum fields must be pre-seeded as DPDK's
/// `rte_net_intel_cksum_prepare` does.
fn offload_fields(m: &Mbuf) -> (u64, u64) {
    let f = m.ol_flags;
    let t = m.tx_offload;
    let mut cmd = 0;
    if f.contains(OlFlags::TX_IP_CKSUM) {
        cmd |= CMD_IIPT_IPV4_CSUM;
    } else if f.contains(OlFlags::TX_IPV4) {
        cmd |= CMD_IIPT_IPV4;
    } else if f.contains(OlFlags::TX_IPV6) {
        cmd |= CMD_IIPT_IPV6;
    }
    if f.intersects(OlFlags::TX_TCP_CKSUM | OlFlags::TX_TCP_SEG) {
        cmd |= CMD_L4T_TCP;
    } else if f.contains(OlFlags::TX_UDP_CKSUM) {
        cmd |= CMD_L4T_UDP;
    }
    if cmd == 0 {
        return (0, 0);
    }
    let offset = (t.l2_len as u64 / 2) | (t.l3_len as u64 / 4) << 7 | (t.l4_len as u64 / 4) << 14;
    (cmd, offset)
}
const BUF_SZ_SHIFT: u64 = 34;
/// Largest buffer one data descriptor carries (BUF_SZ is 14 bits: 16K - 1) [FBSD
/// `ICE_MAX_DMA_SEG_SIZE`].
pub const MAX_BUF_PER_DESC: usize = 16 * 1024 - 1;
/// Data descriptors one packet may use [FBSD `ICE_MAX_TX_SEGS`]. A TSO packet may use more as
/// long as each MSS-sized window stays within 8; keeping TSO chains to 8 too makes every window
/// trivially legal.
pub const MAX_SEGS: usize = 8;
/// TSO limits [DPDK ice_rxtx.c `ICE_MIN_TSO_MSS`, `ICE_MAX_TSO_MSS`; FBSD `ICE_TSO_SIZE`].
const TSO_MSS: std::ops::RangeInclusive<u16> = 64..=9728;
const TSO_MAX_PAYLOAD: usize = 256 * 1024 - 1;

/// Seeds the L4 checksum field with the pseudo-header sum, which the hardware adds the
/// segment's data to [DPDK `ice_prep_pkts` -> `rte_net_intel_cksum_flags_prepare`: length
/// included for checksum offload, left out for TSO]. False when the headers the offload
/// request describes do not sit in the first segment.
fn seed_pseudo_header(m: &mut Mbuf) -> bool {
    let f = m.ol_flags;
    if !f.intersects(OlFlags::TX_TCP_CKSUM | OlFlags::TX_UDP_CKSUM | OlFlags::TX_TCP_SEG) {
        return true;
    }
    let pkt_len = m.pkt_len();
    let Some(lay) = vdpdk_core::packet::TxLayout::new(f, m.tx_offload, m.len()) else {
        return false;
    };
    let tso = f.contains(OlFlags::TX_TCP_SEG);
    let d = m.data_mut();
    let sum = lay.pseudo_sum(d, (!tso).then(|| pkt_len - lay.l4));
    let field = lay.l4 + if lay.l4_proto == 6 { 16 } else { 6 };
    d[field..field + 2].copy_from_slice(&vdpdk_core::packet::fold(sum).to_be_bytes());
    true
}

/// Why a packet cannot go to the device as it is, or None when it can.
fn unsendable(m: &Mbuf) -> Option<&'static str> {
    if m.nb_segs() > MAX_SEGS {
        return Some("more than 8 segments");
    }
    if m.segments()
        .any(|s| s.is_empty() || s.len() > MAX_BUF_PER_DESC)
    {
        return Some("a segment is empty or larger than 16383 B");
    }
    if m.ol_flags.contains(OlFlags::TX_TCP_SEG) {
        let t = m.tx_offload;
        let hdrs = t.l2_len as usize + t.l3_len as usize + t.l4_len as usize;
        let payload = m.pkt_len().saturating_sub(hdrs);
        if !TSO_MSS.contains(&t.tso_segsz) || payload == 0 || payload > TSO_MAX_PAYLOAD {
            return Some("TSO MSS outside 64..=9728 or payload outside 1..=262143 B");
        }
    }
    None
}
/// Report status (RS) once per this many descriptors; the driver reclaims up to the last one.
const RS_EVERY: u16 = 32;

/// Builds qw1 of a single-buffer data descriptor.
pub fn data_qw1(len: usize, cmd: u64) -> u64 {
    (cmd << CMD_SHIFT) | ((len as u64) << BUF_SZ_SHIFT)
}

/// A LAN TX queue: a ring of 16-byte descriptors, completions by RS/DESC_DONE write-back;
/// the `vdpdk_core::TxQueue` the port hands out.
pub struct IceTxQueue {
    regs: Arc<Regs>,
    q: u16,
    ring: DmaMemory,
    n: u16,
    /// Next descriptor to fill.
    ntu: u16,
    /// Oldest descriptor not yet reclaimed.
    ntc: u16,
    slots: Vec<Option<Mbuf>>,
    /// Indices whose descriptor asked for a status report, oldest first.
    rs_marks: std::collections::VecDeque<u16>,
    since_rs: u16,
    done: Vec<Mbuf>,
    /// Data-descriptor index of each packet of the burst being posted (reused buffer).
    posted: Vec<u16>,
    counters: Arc<QueueCounters>,
    mapped_pools: Vec<u32>,
}

impl IceTxQueue {
    pub(crate) fn new(
        regs: Arc<Regs>,
        q: u16,
        ring: DmaMemory,
        n: u16,
        counters: Arc<QueueCounters>,
    ) -> IceTxQueue {
        IceTxQueue {
            regs,
            q,
            ring,
            n,
            ntu: 0,
            ntc: 0,
            slots: (0..n).map(|_| None).collect(),
            rs_marks: Default::default(),
            since_rs: 0,
            done: Vec::with_capacity(n as usize),
            posted: Vec::with_capacity(64),
            counters,
            mapped_pools: Vec::new(),
        }
    }

    fn qw1_ptr(&self, i: u16) -> *mut u64 {
        // SAFETY: i < n, inside the ring; qw1 is the second 8 bytes of the slot.
        unsafe { self.ring.as_ptr().add(i as usize * TX_DESC_SIZE + 8).cast() }
    }

    /// Writes descriptor `i` (the caller owns the slot: it is not in flight).
    fn write_desc(&self, i: u16, qw0: u64, qw1: u64) {
        // SAFETY: i < n, so the 16 bytes lie in the ring, 8-byte aligned; the device reads the
        // slot only after the doorbell that follows.
        unsafe {
            let p = self
                .ring
                .as_ptr()
                .add(i as usize * TX_DESC_SIZE)
                .cast::<u64>();
            p.write_volatile(qw0);
            p.add(1).write_volatile(qw1);
        }
    }

    /// Frees buffers up to each completed status report (hardware writes DESC_DONE there).
    fn reclaim(&mut self) {
        while let Some(&mark) = self.rs_marks.front() {
            // SAFETY: qw1 of a slot we wrote; the device overwrites it on completion.
            let qw1 = unsafe { self.qw1_ptr(mark).read_volatile() };
            if qw1 & 0xF != DTYPE_DESC_DONE {
                break;
            }
            self.rs_marks.pop_front();
            let end = (mark + 1) % self.n;
            while self.ntc != end {
                if let Some(m) = self.slots[self.ntc as usize].take() {
                    self.done.push(m);
                }
                self.ntc = (self.ntc + 1) % self.n;
            }
        }
        if !self.done.is_empty() {
            Mempool::free_bulk(&mut self.done);
        }
    }

    fn in_flight(&self) -> u16 {
        (self.ntu + self.n - self.ntc) % self.n
    }

    /// The PF-relative queue index.
    pub fn queue(&self) -> u16 {
        self.q
    }

    /// Posts a Flow Director filter descriptor and its template packet (at `pkt_iova`,
    /// `len` bytes) and waits until the device has consumed both (DESC_DONE on the data
    /// descriptor). Used on the control VSI's programming queue only.
    pub(crate) fn program(
        &mut self,
        qw0: u64,
        qw1: u64,
        pkt_iova: u64,
        len: usize,
    ) -> Result<(), crate::IceError> {
        if self.in_flight() + 2 >= self.n {
            self.reclaim_all();
        }
        let i = self.ntu;
        self.write_desc(i, qw0, qw1);
        let j = (i + 1) % self.n;
        self.write_desc(
            j,
            pkt_iova,
            data_qw1(len, CMD_EOP | CMD_RS | crate::dev::fd::filter::CMD_DUMMY),
        );
        self.ntu = (j + 1) % self.n;
        std::sync::atomic::fence(Ordering::Release);
        self.regs
            .write(qtx_comm_dbell(self.q as u64), self.ntu as u32)?;
        let t0 = std::time::Instant::now();
        // SAFETY: qw1 of the data descriptor we wrote.
        while unsafe { self.qw1_ptr(j).read_volatile() } & 0xF != DTYPE_DESC_DONE {
            if t0.elapsed() > std::time::Duration::from_millis(100) {
                return Err(crate::IceError::Timeout(
                    "Flow Director programming descriptor not done".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_micros(10));
        }
        self.ntc = self.ntu;
        Ok(())
    }

    fn reclaim_all(&mut self) {
        self.reclaim();
    }

    /// Counts into `c` (the port's per-queue counters) from now on.
    pub fn set_counters(&mut self, c: Arc<QueueCounters>) {
        self.counters = c;
    }
}

impl IceTxQueue {
    /// Maps the pools of all of `m`'s segments into the device (once per pool). A lent
    /// segment (memory this process does not own, such as a guest's) was mapped by its
    /// lender (`EthDev::external_dma`, at the IOVA the segment carries); without an IOMMU
    /// nothing can map it and the packet is refused.
    fn map_pools(&mut self, m: &Mbuf) -> bool {
        for seg in m.segments() {
            if seg.is_lent() {
                if vdpdk_core::dma::physical_addresses() {
                    return false;
                }
                continue;
            }
            let pid = seg.pool_id();
            if !self.mapped_pools.contains(&pid) {
                let pool = seg.pool();
                let Some(mem) = pool.own_memory() else {
                    return false;
                };
                if self.regs.device().dma_map(mem).is_err() {
                    return false;
                }
                self.mapped_pools.push(pid);
            }
        }
        true
    }
}

/// Marks a packet of a burst that was refused rather than posted.
const REFUSED: u16 = u16::MAX;

impl TxQueue for IceTxQueue {
    /// One data descriptor per segment (EOP on the last), preceded by a context descriptor
    /// for TSO; the whole chain is freed when its last descriptor completes.
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        self.reclaim();
        let mut bytes = 0u64;
        let mut take = 0;
        let mut refused = 0u64;
        for m in pkts.iter_mut() {
            if let Some(why) = unsendable(m).or_else(|| {
                (!seed_pseudo_header(m)).then_some("offload headers outside the first segment")
            }) {
                log::debug!("ice TX queue {}: dropped a packet: {why}", self.q);
                self.posted.push(REFUSED);
                refused += 1;
                take += 1;
                continue;
            }
            let tso = m.ol_flags.contains(OlFlags::TX_TCP_SEG);
            let need = tso as u16 + m.nb_segs() as u16;
            // One slot stays empty so a full ring is not mistaken for an empty one.
            if self.in_flight() + need > self.n - 1 {
                break;
            }
            if !self.map_pools(m) {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let (cmd_ol, offset) = offload_fields(m);
            let pkt_len = m.pkt_len();
            if tso {
                // Context descriptor: DTYPE 1, CMD TSO, TSO_LEN (payload bytes) @30, MSS @50.
                let t = m.tx_offload;
                let hdrs = t.l2_len as usize + t.l3_len as usize + t.l4_len as usize;
                let payload = (pkt_len - hdrs) as u64;
                let qw1 = 1
                    | CTX_CMD_TSO << 4
                    | (payload & 0x3FFFF) << 30
                    | (t.tso_segsz as u64 & 0x3FFF) << 50;
                self.write_desc(self.ntu, 0, qw1);
                self.ntu = (self.ntu + 1) % self.n;
                self.since_rs += 1;
            }
            let mut last = self.ntu;
            for seg in m.segments() {
                let i = self.ntu;
                self.since_rs += 1;
                // Offload commands and header lengths go on every data descriptor of the
                // packet [CTX `ci_txd_enable_checksum` is applied per descriptor].
                let mut cmd = cmd_ol;
                if !seg.is_chained() {
                    cmd |= CMD_EOP;
                    if self.since_rs >= RS_EVERY {
                        cmd |= CMD_RS;
                        self.since_rs = 0;
                        self.rs_marks.push_back(i);
                    }
                }
                self.write_desc(
                    i,
                    seg.data_iova(),
                    data_qw1(seg.len(), cmd) | offset << OFFSET_SHIFT,
                );
                last = i;
                self.ntu = (self.ntu + 1) % self.n;
            }
            bytes += pkt_len as u64;
            self.posted.push(last);
            take += 1;
        }
        // Each packet stays with its last data descriptor until the device is done with it.
        for (m, i) in pkts.drain(..take).zip(self.posted.drain(..)) {
            if i == REFUSED {
                drop(m);
            } else {
                self.slots[i as usize] = Some(m);
            }
        }
        if refused > 0 {
            self.counters.errors.fetch_add(refused, Ordering::Relaxed);
        }
        // Make sure the burst's last descriptor reports status, so it is reclaimed even if
        // no more traffic follows.
        let last = (self.ntu + self.n - 1) % self.n;
        if self.since_rs != 0 && self.slots[last as usize].is_some() {
            // SAFETY: qw1 of the slot we just wrote.
            unsafe {
                let q = self.qw1_ptr(last);
                q.write_volatile(q.read_volatile() | CMD_RS << CMD_SHIFT);
            }
            self.rs_marks.push_back(last);
            self.since_rs = 0;
        }
        std::sync::atomic::fence(Ordering::Release);
        let _ = self
            .regs
            .write(qtx_comm_dbell(self.q as u64), self.ntu as u32);
        self.counters.add((take as u64) - refused, bytes);
        take
    }
}

impl Drop for IceTxQueue {
    /// Withdraws the ring from the device before the memory goes (the queue itself is
    /// disabled with dis_txqs by the device owner).
    fn drop(&mut self) {
        let _ = self
            .regs
            .device()
            .dma_unmap(self.ring.iova_base(), self.ring.len() as u64);
    }
}
