//! LAN RX queues: 32-byte flexible descriptors (RXDID 2), RLAN context through QRX_CONTEXT,
//! enable through QRX_CTRL (\[LB\] `ice_setup_rx_ctx`, \[RXTX\] `ice_program_hw_rx_queue`;
//! formats \[LTR\] `ice_32b_rx_flex_desc_nic`; e810-facts.md §4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, RawFd};

use vdpdk_core::{
    DmaMemory, LentBuf, LentRx, Mbuf, Mempool, OlFlags, PacketType, QueueCounters, Result, RxQueue,
};
use vmm_sys_util::eventfd::EventFd;

use crate::ctx::{rlan, set_bits};
use crate::regs::*;
use crate::{IceError, Regs};

mod lent;

pub const RX_DESC_SIZE: usize = 32;
// status_error0 bits (write-back byte 8) [LTR].
const RX_DD: u16 = 1 << 0;
const RX_EOF: u16 = 1 << 1;
const RX_L3L4P: u16 = 1 << 3;
const RX_XSUM_IPE: u16 = 1 << 4;
const RX_XSUM_L4E: u16 = 1 << 5;
const RX_RXE: u16 = 1 << 10;

/// E810 packet type (\[LTR\] `ice_ptype_lkup`) to the DPDK-style one.
pub fn ptype_to_mbuf(p: u16) -> PacketType {
    let (l2, l3, l4) = (
        PacketType::L2_ETHER,
        PacketType::L3_IPV4,
        PacketType::L3_IPV6,
    );
    PacketType(match p {
        1 => l2,
        11 => PacketType::L2_ETHER_ARP,
        23 => l2 | l3,
        24 => l2 | l3 | PacketType::L4_UDP,
        26 => l2 | l3 | PacketType::L4_TCP,
        27 => l2 | l3 | PacketType::L4_SCTP,
        28 => l2 | l3 | PacketType::L4_ICMP,
        89 => l2 | l4,
        90 => l2 | l4 | PacketType::L4_UDP,
        92 => l2 | l4 | PacketType::L4_TCP,
        _ => PacketType::UNKNOWN,
    })
}

/// What the last write-back of a frame says of it: packet type, checksum status and Flow
/// Director id as offload flags, and the id (\[LTR\] flex NIC write-back: ptype @2, status
/// bits of byte 8, flow id @24).
fn wb_meta(st: u16, wb: &[u8; RX_DESC_SIZE]) -> (PacketType, OlFlags, u32) {
    let ptype = ptype_to_mbuf(u16::from_le_bytes([wb[2], wb[3]]) & 0x3FF);
    let mut ol = OlFlags::empty();
    if st & RX_L3L4P != 0 {
        ol |= if st & RX_XSUM_IPE != 0 {
            OlFlags::RX_IP_CKSUM_BAD
        } else {
            OlFlags::RX_IP_CKSUM_GOOD
        };
        ol |= if st & RX_XSUM_L4E != 0 {
            OlFlags::RX_L4_CKSUM_BAD
        } else {
            OlFlags::RX_L4_CKSUM_GOOD
        };
    }
    let flow_id = u32::from_le_bytes(wb[24..28].try_into().expect("4 bytes"));
    let mut mark = 0;
    if flow_id != crate::dev::fd::filter::NO_FDID {
        ol |= OlFlags::RX_FDIR | OlFlags::RX_FDIR_ID;
        mark = flow_id;
    }
    (ptype, ol, mark)
}

/// Buffers one received frame may span [FBSD `ICE_MAX_RX_SEGS`; DPDK `ICE_SUPPORT_CHAIN_NUM`].
pub const MAX_RX_SEGS: u64 = 5;
/// Bytes a frame adds to its MTU: Ethernet header, CRC and two VLAN tags [DPDK
/// `ICE_ETH_OVERHEAD`].
pub const ETH_OVERHEAD: u16 = 14 + 4 + 2 * 4;
/// Largest frame the MAC is configured for (set_mac_cfg max_frame_size) [DPDK
/// `ICE_FRAME_SIZE_MAX`].
pub const MAX_FRAME: u16 = 9728;

/// How large a frame an RX queue takes, and whether it may span buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxFrameLimits {
    /// Largest frame accepted (bytes, CRC stripped); larger ones are dropped by the device.
    pub max_frame: u16,
    /// Frames larger than one buffer arrive as mbuf chains (`RxOffloads::SCATTER`); without
    /// it the device drops them.
    pub scatter: bool,
}

impl Default for RxFrameLimits {
    /// A 1500 B MTU, no scatter.
    fn default() -> Self {
        RxFrameLimits {
            max_frame: 1500 + ETH_OVERHEAD,
            scatter: false,
        }
    }
}

impl RxFrameLimits {
    /// The RLAN context's RXMAX for buffers of `dbuf` bytes: one buffer without scatter, at
    /// most five with it [DPDK ice_rxtx.c `ice_rx_queue_init`: max_pkt_len =
    /// min(ICE_SUPPORT_CHAIN_NUM * rx_buf_len, frame_size)].
    pub fn rxmax(&self, dbuf: u64) -> u64 {
        let bufs = if self.scatter { MAX_RX_SEGS } else { 1 };
        (self.max_frame as u64).min(bufs * dbuf)
    }
}

/// Usable receive bytes of each buffer of `pool` (the RLAN DBUF granule is 128 B).
pub fn rx_buf_len(pool: &Mempool) -> u64 {
    (pool.buf_size() - vdpdk_core::MBUF_HEADROOM) as u64 & !127
}

/// A LAN RX queue: a ring of 32-byte descriptors (flex NIC write-back) its mempool refills,
/// with an optional MSI-X vector; the `vdpdk_core::RxQueue` the port hands out.
pub struct IceRxQueue {
    regs: Arc<Regs>,
    q: u16,
    ring: DmaMemory,
    n: u16,
    ntc: u16,
    slots: Vec<Option<Mbuf>>,
    pool: Mempool,
    cache: Vec<Mbuf>,
    /// Descriptors refilled since the tail was last written.
    unposted: u16,
    /// The tail last written: the device owns the descriptors from its head up to it.
    tail: u16,
    counters: Arc<QueueCounters>,
    /// MSI-X vector and the eventfd it signals, when RX interrupts are configured.
    irq: Option<(u16, Arc<EventFd>)>,
    /// Chains are delivered (else a multi-buffer frame is an error).
    scatter: bool,
    /// The segments of a frame whose last descriptor has not been written back yet (it may
    /// straddle two bursts), and whether one of them was bad.
    partial: Option<Mbuf>,
    partial_bad: bool,
    /// The RLAN context, written again when the ring restarts (`lent::take_back`).
    ctx: [u8; rlan::SIZE],
    /// Bytes the device writes into each buffer at most (the context's DBUF).
    buf_len: usize,
    /// Zero-copy RX (`RxQueue::post_lent`): the ring takes lent buffers, not the pool's.
    lent: lent::Lent,
}

impl IceRxQueue {
    /// Programs and enables PF queue `q` with `n` descriptors filled from `pool`.
    pub(crate) fn setup(
        regs: Arc<Regs>,
        q: u16,
        n: u16,
        pool: &Mempool,
        limits: RxFrameLimits,
        counters: Arc<QueueCounters>,
        irq: Option<(u16, Arc<EventFd>)>,
    ) -> std::result::Result<IceRxQueue, IceError> {
        // Ring constraints [RXTX]: 64..=8160 descriptors, a multiple of 32.
        if !(64..=8160).contains(&n) || !n.is_multiple_of(32) {
            return Err(IceError::InvalidArg(format!(
                "RX ring of {n}: need 64..=8160, a multiple of 32"
            )));
        }
        let ring = DmaMemory::alloc_with("ice-rxq", n as usize * RX_DESC_SIZE, false)?;
        regs.device().dma_map(&ring)?;
        regs.device().dma_map(pool.memory())?;
        let buf_len = rx_buf_len(pool);
        if buf_len == 0 {
            return Err(IceError::InvalidArg(format!(
                "RX buffers of {} B leave under 128 B after the headroom",
                pool.buf_size()
            )));
        }
        let dbuf = buf_len >> 7;
        let mut ctx = [0u8; rlan::SIZE];
        set_bits(&mut ctx, rlan::BASE.0, rlan::BASE.1, ring.iova_base() >> 7);
        set_bits(&mut ctx, rlan::QLEN.0, rlan::QLEN.1, n as u64);
        set_bits(&mut ctx, rlan::DBUF.0, rlan::DBUF.1, dbuf);
        set_bits(&mut ctx, rlan::DSIZE.0, rlan::DSIZE.1, 1);
        set_bits(&mut ctx, rlan::CRCSTRIP.0, rlan::CRCSTRIP.1, 1);
        set_bits(&mut ctx, rlan::L2TSEL.0, rlan::L2TSEL.1, 1);
        set_bits(
            &mut ctx,
            rlan::RXMAX.0,
            rlan::RXMAX.1,
            limits.rxmax(buf_len),
        );
        set_bits(&mut ctx, rlan::LRXQTHRESH.0, rlan::LRXQTHRESH.1, 1);
        set_bits(&mut ctx, rlan::PREFENA.0, rlan::PREFENA.1, 1);
        let mut rq = IceRxQueue {
            regs,
            q,
            ring,
            n,
            ntc: 0,
            slots: (0..n).map(|_| None).collect(),
            pool: pool.clone(),
            cache: Vec::with_capacity(64),
            unposted: 0,
            tail: 0,
            counters,
            irq,
            scatter: limits.scatter,
            partial: None,
            partial_bad: false,
            ctx,
            buf_len: buf_len as usize,
            lent: lent::Lent::new(n),
        };
        rq.start_ring()?;
        Ok(rq)
    }

    /// Programs the queue (its context, its interrupt cause), fills the whole ring from the
    /// pool and enables it: at setup, and again when lent buffers were taken back.
    fn start_ring(&mut self) -> std::result::Result<(), IceError> {
        let (q, qq, n) = (self.q, self.q as u64, self.n);
        self.regs
            .write(qrxflxp_cntxt(qq), RXDID_FLEX_NIC | 3 << 8)?;
        for (i, dw) in self.ctx.chunks_exact(4).enumerate() {
            self.regs.write(
                qrx_context(i as u64, qq),
                u32::from_le_bytes(dw.try_into().expect("4")),
            )?;
        }
        if let Some((v, _)) = &self.irq {
            // Cause enabled on vector v with ITR index 0 [LB ice_cfg_rxq_interrupt]; the vector
            // stays disarmed until enable_intr.
            self.regs
                .write(qint_rqctl(qq), *v as u32 | QINT_CAUSE_ENA)?;
            self.regs
                .write(glint_dyn_ctl(*v as u64), DYN_CTL_ITR_NONE)?;
        }
        for i in 0..n {
            if !self.refill(i) {
                return Err(IceError::InvalidArg(format!(
                    "mempool {} has fewer free buffers than the {n} RX descriptors",
                    self.pool.name()
                )));
            }
        }
        // Hardware ignores tail bits 2:0; DPDK writes N - 1.
        self.regs.write(qrx_tail(qq), (n - 1) as u32)?;
        self.tail = n - 1;
        self.regs.write(qrx_ctrl(qq), QRX_CTRL_QENA_REQ)?;
        let t0 = Instant::now();
        while self.regs.read(qrx_ctrl(qq))? & QRX_CTRL_QENA_STAT == 0 {
            if t0.elapsed() > Duration::from_millis(10) {
                return Err(IceError::Timeout(format!("RX queue {q} did not enable")));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    fn pending(&self) -> bool {
        // SAFETY: status_error0 of slot ntc.
        let st = unsafe { self.desc_ptr(self.ntc).add(8).cast::<u16>().read_volatile() };
        st & RX_DD != 0
    }

    fn desc_ptr(&self, i: u16) -> *mut u8 {
        // SAFETY: i < n, inside the ring.
        unsafe { self.ring.as_ptr().add(i as usize * RX_DESC_SIZE) }
    }

    /// Puts a fresh buffer in slot `i` (read format: packet address, header address 0).
    fn refill(&mut self, i: u16) -> bool {
        if !self.has_spare_buffer() {
            return false;
        }
        let mut m = self.cache.pop().expect("cache refilled");
        m.reset();
        let p = self.desc_ptr(i).cast::<u64>();
        // SAFETY: slot i is 32 bytes, 8-byte aligned; the device owns it only after the tail
        // write that follows.
        unsafe {
            p.write_volatile(m.data_iova());
            p.add(1).write_volatile(0);
            p.add(2).write_volatile(0);
            p.add(3).write_volatile(0);
        }
        self.slots[i as usize] = Some(m);
        true
    }

    /// PF-relative queue index.
    pub fn queue(&self) -> u16 {
        self.q
    }

    /// Takes the next write-back as a raw status qword 1 (programming status on the Flow
    /// Director control queue), recycling its descriptor.
    pub(crate) fn take_status(&mut self) -> Option<u64> {
        let p = self.desc_ptr(self.ntc);
        // SAFETY: qword 1 of slot ntc (bytes 8..16); DD is bit 0.
        let qw1 = unsafe { p.add(8).cast::<u64>().read_volatile() };
        if qw1 & 1 == 0 {
            return None;
        }
        let i = self.ntc;
        self.ntc = (self.ntc + 1) % self.n;
        self.slots[i as usize] = None;
        self.refill(i);
        let tail = (self.ntc + self.n - 1) % self.n;
        let _ = self.regs.write(qrx_tail(self.q as u64), tail as u32);
        Some(qw1)
    }

    /// Counts into `c` (the port's per-queue counters) from now on.
    pub fn set_counters(&mut self, c: Arc<QueueCounters>) {
        self.counters = c;
    }

    /// Whether a buffer is at hand to replace the next consumed one (counts a miss).
    fn has_spare_buffer(&mut self) -> bool {
        if self.cache.is_empty() && self.pool.alloc_bulk(&mut self.cache, 64) == 0 {
            self.counters
                .nombuf
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl RxQueue for IceRxQueue {
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let (mut got, mut bytes) = (0usize, 0u64);
        let lent = self.lent.on;
        while got < max {
            // In lent mode only the pool's buffers posted before it are ours to hand out;
            // they come first in the ring, then lent ones (`rx_lent`).
            if lent && self.slots[self.ntc as usize].is_none() {
                break;
            }
            let p = self.desc_ptr(self.ntc);
            // SAFETY: status_error0 at byte 8 of the slot; read it before anything else and
            // fence so the rest of the write-back is read after DD.
            let st = unsafe { p.add(8).cast::<u16>().read_volatile() };
            if st & RX_DD == 0 {
                break;
            }
            // A descriptor is consumed only with a replacement buffer in hand, so every slot
            // the device owns has a buffer; when the pool is dry the frame waits in the ring
            // (the device counts what no longer fits) [DPDK `ice_recv_pkts`]. In lent mode
            // the replacement is a lent buffer, posted by `fill_lent`.
            if !lent && !self.has_spare_buffer() {
                break;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let mut wb = [0u8; RX_DESC_SIZE];
            // SAFETY: the whole 32-byte slot, now written back by the device.
            unsafe { std::ptr::copy_nonoverlapping(p, wb.as_mut_ptr(), RX_DESC_SIZE) };
            let i = self.ntc;
            self.ntc = (self.ntc + 1) % self.n;
            let m = self.slots[i as usize].take();
            if !lent {
                self.refill(i);
                self.unposted += 1;
            }
            let Some(mut m) = m else {
                // Unreachable while the invariant above holds; never hand out a stale slot.
                self.partial_bad = true;
                continue;
            };
            // pkt_len is this buffer's share of the frame [LTR flex NIC write-back @4].
            let len = (u16::from_le_bytes([wb[4], wb[5]]) & 0x3FFF) as usize;
            self.partial_bad |= m.set_len(len).is_err();
            if st & RX_EOF == 0 {
                match &mut self.partial {
                    Some(head) => head.chain(m),
                    None => self.partial = Some(m),
                }
                continue;
            }
            let mut m = match self.partial.take() {
                Some(mut head) => {
                    head.chain(m);
                    head
                }
                None => m,
            };
            // Status, type and checksum bits are valid on the last descriptor of a frame.
            let bad = std::mem::take(&mut self.partial_bad)
                || st & RX_RXE != 0
                || (m.is_chained() && !self.scatter);
            if bad {
                self.counters
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            (m.packet_type, m.ol_flags, m.mark) = wb_meta(st, &wb);
            m.queue = self.q;
            bytes += m.pkt_len() as u64;
            out.push(m);
            got += 1;
        }
        if self.unposted >= 32 {
            // Give back everything up to (not including) the next slot we will read.
            let tail = (self.ntc + self.n - 1) % self.n;
            let _ = self.regs.write(qrx_tail(self.q as u64), tail as u32);
            self.tail = tail;
            self.unposted = 0;
        }
        if lent {
            self.fill_lent();
        }
        if got > 0 {
            self.counters.add(got as u64, bytes);
        }
        got
    }

    unsafe fn post_lent(&mut self, bufs: &[LentBuf]) -> usize {
        self.post_lent_bufs(bufs)
    }

    fn rx_lent(&mut self, out: &mut Vec<LentRx>, max: usize) -> usize {
        self.receive_lent(out, max)
    }

    fn take_back_lent(&mut self) -> usize {
        self.take_back()
    }

    /// The context's DBUF: the device fills a buffer up to that many bytes.
    fn lent_min_len(&self) -> usize {
        self.buf_len
    }

    /// Arms the queue's vector (\[LTX\] re-arm: INTENA | CLEARPBA, no ITR update), then looks
    /// once more: a frame written before the arming fired nothing, so signal it ourselves.
    fn enable_intr(&mut self) -> Result<()> {
        let (v, fd) = self.irq.clone().ok_or_else(|| {
            vdpdk_core::Error::BadState(
                "RX interrupts were not configured (DevConfig::rx_intr)".into(),
            )
        })?;
        self.regs.write(
            glint_dyn_ctl(v as u64),
            DYN_CTL_INTENA | DYN_CTL_CLEARPBA | DYN_CTL_ITR_NONE,
        )?;
        if self.pending() {
            let _ = fd.write(1);
        }
        Ok(())
    }

    fn disable_intr(&mut self) -> Result<()> {
        let (v, fd) = self.irq.clone().ok_or_else(|| {
            vdpdk_core::Error::BadState(
                "RX interrupts were not configured (DevConfig::rx_intr)".into(),
            )
        })?;
        self.regs.write(glint_dyn_ctl(v as u64), DYN_CTL_ITR_NONE)?;
        let _ = fd.read(); // non-blocking: clears a pending wake-up
        Ok(())
    }

    fn intr_fd(&self) -> Option<RawFd> {
        self.irq.as_ref().map(|(_, fd)| fd.as_raw_fd())
    }
}

/// Longest a stopping RX queue is waited for (Linux ice allows ~1-2 ms: 50 polls 20-40 us
/// apart, `ICE_Q_WAIT_MAX_RETRY` in `ice_pf_rxq_wait`).
const RX_STOP_WAIT: Duration = Duration::from_millis(10);

impl IceRxQueue {
    /// Clears QENA_REQ and waits for QENA_STAT to follow: until it does, the device may still
    /// write frames into the ring and the buffers [Linux ice `ice_pf_rxq_wait`]. False when it
    /// did not stop in time (or the device cannot be read).
    fn stop(&self) -> bool {
        let qq = self.q as u64;
        if self.regs.write(qrx_ctrl(qq), 0).is_err() {
            return false;
        }
        let t0 = Instant::now();
        loop {
            match self.regs.read(qrx_ctrl(qq)) {
                Ok(v) if v & QRX_CTRL_QENA_STAT == 0 => return true,
                Ok(_) if t0.elapsed() < RX_STOP_WAIT => {
                    std::thread::sleep(Duration::from_micros(20))
                }
                _ => return false,
            }
        }
    }
}

impl Drop for IceRxQueue {
    /// Stops the queue, then withdraws its ring from the device and frees its buffers. A queue
    /// that does not stop keeps both: its ring stays mapped and its buffers are never reused,
    /// since the device may still write into them.
    fn drop(&mut self) {
        if !self.stop() {
            log::error!(
                "RX queue {} did not stop within {RX_STOP_WAIT:?}: its ring stays mapped and its {} buffers are not reused",
                self.q,
                self.slots.iter().flatten().count()
            );
            std::mem::take(&mut self.slots)
                .into_iter()
                .for_each(std::mem::forget);
            std::mem::forget(self.partial.take());
            return;
        }
        let _ = self
            .regs
            .device()
            .dma_unmap(self.ring.iova_base(), self.ring.len() as u64);
    }
}
