//! LAN TX: the PF VSI, the scheduler branch TX queues hang off, queue creation through
//! add_txqs with a TLAN context, and the 16-byte data descriptor ring
//! ([SCH] `ice_sched.c`, [AQC] `ice_aqc_add_txqs`, [LTR] `ice_tx_desc`; e810-facts.md §3, §5).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vdpdk_core::{DmaMemory, Mbuf, Mempool, QueueCounters, TxQueue};

use crate::regs::*;
use crate::Regs;

pub const TX_DESC_SIZE: usize = 16;
// qw1 fields [LTR]: DTYPE 3:0, CMD 15:4, OFFSET 33:16, BUF_SZ 47:34.
const DTYPE_DESC_DONE: u64 = 0xF;
const CMD_EOP: u64 = 0x001;
const CMD_RS: u64 = 0x002;
const CMD_SHIFT: u64 = 4;
const BUF_SZ_SHIFT: u64 = 34;
/// Report status (RS) once per this many descriptors; the driver reclaims up to the last one.
const RS_EVERY: u16 = 32;

/// Builds qw1 of a single-buffer data descriptor.
pub fn data_qw1(len: usize, cmd: u64) -> u64 {
    (cmd << CMD_SHIFT) | ((len as u64) << BUF_SZ_SHIFT)
}

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
            counters,
            mapped_pools: Vec::new(),
        }
    }

    fn qw1_ptr(&self, i: u16) -> *mut u64 {
        // SAFETY: i < n, inside the ring; qw1 is the second 8 bytes of the slot.
        unsafe { self.ring.as_ptr().add(i as usize * TX_DESC_SIZE + 8).cast() }
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
        let write = |i: u16, a: u64, b: u64| {
            // SAFETY: slot i is free (the programming queue is drained after every command).
            unsafe {
                let p = self
                    .ring
                    .as_ptr()
                    .add(i as usize * TX_DESC_SIZE)
                    .cast::<u64>();
                p.write_volatile(a);
                p.add(1).write_volatile(b);
            }
        };
        let i = self.ntu;
        write(i, qw0, qw1);
        let j = (i + 1) % self.n;
        write(
            j,
            pkt_iova,
            data_qw1(len, CMD_EOP | CMD_RS | crate::fdir::CMD_DUMMY),
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

impl TxQueue for IceTxQueue {
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        self.reclaim();
        // One slot stays empty so a full ring is not mistaken for an empty one.
        let free = (self.n - 1 - self.in_flight()) as usize;
        let take = free.min(pkts.len());
        if take == 0 {
            return 0;
        }
        let mut bytes = 0u64;
        for m in pkts.drain(..take) {
            let pid = m.pool_id();
            if !self.mapped_pools.contains(&pid) {
                if self.regs.device().dma_map(m.pool().memory()).is_err() {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                self.mapped_pools.push(pid);
            }
            let i = self.ntu;
            self.since_rs += 1;
            let mut cmd = CMD_EOP;
            if self.since_rs >= RS_EVERY {
                cmd |= CMD_RS;
                self.since_rs = 0;
                self.rs_marks.push_back(i);
            }
            // SAFETY: slot i is free (in_flight < n - 1); 16 bytes, 8-byte aligned.
            unsafe {
                let p = self
                    .ring
                    .as_ptr()
                    .add(i as usize * TX_DESC_SIZE)
                    .cast::<u64>();
                p.write_volatile(m.data_iova());
                p.add(1).write_volatile(data_qw1(m.len(), cmd));
            }
            bytes += m.len() as u64;
            self.slots[i as usize] = Some(m);
            self.ntu = (self.ntu + 1) % self.n;
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
        self.counters.add(take as u64, bytes);
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
