//! Hand-rolled clients for hostile-guest tests: a vDPDK driver written against the ABI by
//! hand ([`Raw`]) and a raw vfio-user message speaker ([`Vfu`]) that can send anything.

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vdpdk_core::abi::desc::*;
use vdpdk_core::abi::*;
use vdpdk_core::DmaMemory;
use vdpdk_pci::{MappedBar, PciDevice, VfioUserPci};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Minimal hand-rolled vDPDK driver.
pub struct Raw {
    pub dev: Arc<VfioUserPci>,
    pub bar: MappedBar,
    seq: u32,
}

impl Raw {
    pub fn connect(path: &std::path::Path) -> Raw {
        let dev = Arc::new(VfioUserPci::connect(path).unwrap());
        let bar = dev.map_bar(DATA_BAR).unwrap();
        Raw { dev, bar, seq: 0 }
    }

    /// Sends a request with raw op/args/payload; returns (status, message, result[0]).
    pub fn ctrl(
        &mut self,
        op: u32,
        args: [u64; 4],
        payload: &[u8],
        payload_len: u32,
    ) -> (u32, String, u64) {
        self.seq += 1;
        let mut req = [0u8; std::mem::size_of::<CtrlRequest>()];
        req[0..4].copy_from_slice(&op.to_le_bytes());
        req[4..8].copy_from_slice(&self.seq.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            req[8 + i * 8..16 + i * 8].copy_from_slice(&a.to_le_bytes());
        }
        req[40..44].copy_from_slice(&payload_len.to_le_bytes());
        req[48..48 + payload.len()].copy_from_slice(payload);
        let p = self.bar.at(CTRL_REQ_OFFSET, req.len()).unwrap();
        // SAFETY: in bounds of the mapped data BAR.
        unsafe { std::ptr::copy_nonoverlapping(req.as_ptr(), p, req.len()) };
        self.dev
            .bar_write32(SIGNAL_BAR, REG_CTRL_DOORBELL, self.seq)
            .unwrap();
        let status = self.dev.bar_read32(SIGNAL_BAR, REG_CTRL_STATUS).unwrap();
        let mut resp = vec![0u8; std::mem::size_of::<CtrlResponse>()];
        let p = self.bar.at(CTRL_RESP_OFFSET, resp.len()).unwrap();
        // SAFETY: in bounds of the mapped data BAR.
        unsafe { std::ptr::copy_nonoverlapping(p, resp.as_mut_ptr(), resp.len()) };
        let msg = String::from_utf8_lossy(&resp[136..])
            .trim_end_matches('\0')
            .to_string();
        (
            status,
            msg,
            u64::from_le_bytes(resp[8..16].try_into().unwrap()),
        )
    }

    pub fn ok(&mut self, op: CtrlOp, args: [u64; 4]) {
        let (s, m, _) = self.ctrl(op as u32, args, &[], 0);
        assert_eq!(s, CtrlStatus::Ok as u32, "{op:?}: {m}");
    }
}

/// A raw guest's memory and started queues: TX ring at 0, RX ring at 4 KiB (64 descriptors
/// each), TX buffers from 64 KiB, RX buffers from 512 KiB, 2 KiB apart.
pub struct RawQueues {
    pub mem: DmaMemory,
    pub tx: RingPtr,
    pub rx: RingPtr,
    next_tx: u16,
}

pub const RAW_MEM: usize = 1 << 20;

impl RawQueues {
    pub fn base(&self) -> u64 {
        self.mem.iova_base()
    }
}

impl Raw {
    /// Negotiates, configures one RX and one TX queue, maps memory and starts.
    pub fn bring_up(&mut self, name: &str) -> RawQueues {
        self.bring_up_with(name, Features::empty())
    }

    /// [`Raw::bring_up`], agreeing on `features`.
    pub fn bring_up_with(&mut self, name: &str, features: Features) -> RawQueues {
        self.ok(
            CtrlOp::Negotiate,
            [(ABI_MAJOR as u64) << 16, features.bits(), 0, 0],
        );
        self.ok(CtrlOp::Configure, [1, 1, 0, 0]);
        let mem = DmaMemory::alloc_with(name, RAW_MEM, false).unwrap();
        self.dev.dma_map(&mem).unwrap();
        let base = mem.iova_base();
        self.ok(CtrlOp::TxqSetup, [0, base, 64, 0]);
        self.ok(CtrlOp::RxqSetup, [0, base + 4096, 64, 0]);
        self.ok(CtrlOp::Start, [0; 4]);
        // SAFETY: both rings are 64 descriptors inside our own 1 MiB mapping.
        let (tx, rx) = unsafe {
            (
                RingPtr::new(mem.as_ptr(), 64).with_laps(features.contains(Features::TX_LAPS)),
                RingPtr::new(mem.as_ptr().add(4096), 64),
            )
        };
        RawQueues {
            mem,
            tx,
            rx,
            next_tx: 0,
        }
    }

    /// Copies `frame` into a TX buffer, publishes it and kicks; returns the descriptor index.
    pub fn send(&self, q: &mut RawQueues, frame: &[u8]) -> u16 {
        let flags = q.tx.avail_bit(q.next_tx);
        self.send_flags(q, frame, flags)
    }

    /// [`Raw::send`] with the descriptor's flags chosen by the caller (right or wrong).
    pub fn send_flags(&self, q: &mut RawQueues, frame: &[u8], flags: u16) -> u16 {
        let off = 64 * 1024 + (q.next_tx % 64) as usize * 2048;
        assert!(frame.len() <= 2048);
        // SAFETY: off + 2048 lies inside our own mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(frame.as_ptr(), q.mem.as_ptr().add(off), frame.len())
        };
        self.post_tx_flags(q, q.base() + off as u64, frame.len() as u16, flags)
    }

    /// Publishes a TX descriptor for the `len` bytes at guest IOVA `addr` and kicks; returns
    /// its index.
    pub fn post_tx(&self, q: &mut RawQueues, addr: u64, len: u16) -> u16 {
        let flags = q.tx.avail_bit(q.next_tx);
        self.post_tx_flags(q, addr, len, flags)
    }

    /// [`Raw::post_tx`] with the descriptor's flags chosen by the caller (right or wrong).
    pub fn post_tx_flags(&self, q: &mut RawQueues, addr: u64, len: u16, flags: u16) -> u16 {
        let i = q.next_tx;
        q.next_tx = i.wrapping_add(1);
        q.tx.publish(
            i,
            &Desc {
                addr,
                len,
                flags,
                ..Default::default()
            },
        );
        self.kick_tx();
        i
    }

    /// Rings TX queue 0's doorbell.
    pub fn kick_tx(&self) {
        self.dev.bar_write32(SIGNAL_BAR, REG_TX_KICK, 0).unwrap();
    }

    /// TX queue 0's published (`TXQ_DONE_INDEX`, `TXQ_REFUSED`).
    pub fn tx_progress(&self) -> (u32, u32) {
        let word = |at: usize| {
            let p = self.bar.at(txq_flags_offset(0) + at, 4).unwrap();
            // SAFETY: an aligned flag word inside the mapped data BAR.
            unsafe { std::sync::atomic::AtomicU32::from_ptr(p.cast()) }
                .load(std::sync::atomic::Ordering::Acquire)
        };
        (word(TXQ_DONE_INDEX), word(TXQ_REFUSED))
    }

    /// Posts RX descriptor `i` with a 2 KiB buffer.
    pub fn post_rx(&self, q: &RawQueues, i: u16) {
        q.rx.publish(
            i,
            &Desc {
                addr: q.base() + 512 * 1024 + (i % 64) as u64 * 2048,
                len: 2048,
                flags: DESC_F_AVAIL,
                ..Default::default()
            },
        );
    }

    /// Arms (or disarms) RX queue 0's interrupt, as a driver about to sleep does.
    pub fn arm_rx(&self, on: bool) {
        let off = rxq_flags_offset(0) + RXQ_FLAG_INTR_ARMED;
        let p = self.bar.at(off, 4).unwrap();
        // SAFETY: an aligned flag word inside the mapped data BAR.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(p.cast()) }
            .store(on as u32, std::sync::atomic::Ordering::SeqCst);
    }
}

/// vfio-user wire constants (vfio-user specification, QEMU docs/interop/vfio-user.rst).
pub mod vfu {
    pub const VERSION: u16 = 1;
    pub const DMA_MAP: u16 = 2;
    pub const DMA_UNMAP: u16 = 3;
    pub const DEVICE_GET_INFO: u16 = 4;
    pub const SET_IRQS: u16 = 8;
    pub const REGION_READ: u16 = 9;
    pub const REGION_WRITE: u16 = 10;
    pub const FLAG_ERROR: u32 = 0x20;
    pub const HEADER: usize = 16;
}

/// One reply: flags, errno and body (what follows the header).
#[derive(Debug)]
pub struct Reply {
    pub command: u16,
    pub flags: u32,
    pub error: u32,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_error(&self) -> bool {
        self.flags & vfu::FLAG_ERROR != 0
    }
}

/// A vfio-user client that sends raw bytes: anything a hostile guest could.
pub struct Vfu {
    pub s: UnixStream,
    id: u16,
}

impl Vfu {
    pub fn connect(path: &Path) -> Vfu {
        let s = UnixStream::connect(path).unwrap();
        // A test that waits for a reply the server never sends fails instead of hanging.
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Vfu { s, id: 0 }
    }

    /// A header for `command` announcing `size` bytes in all.
    pub fn header(&mut self, command: u16, size: u32) -> Vec<u8> {
        self.id = self.id.wrapping_add(1);
        let mut h = Vec::with_capacity(vfu::HEADER);
        h.extend_from_slice(&self.id.to_le_bytes());
        h.extend_from_slice(&command.to_le_bytes());
        h.extend_from_slice(&size.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // flags: command
        h.extend_from_slice(&0u32.to_le_bytes()); // error
        h
    }

    /// Sends a well-framed message (header + body) with `fds`, returns the reply.
    pub fn call(&mut self, command: u16, body: &[u8], fds: &[RawFd]) -> Reply {
        let mut m = self.header(command, (vfu::HEADER + body.len()) as u32);
        m.extend_from_slice(body);
        self.send_raw(&m, fds);
        self.reply()
    }

    pub fn send_raw(&mut self, bytes: &[u8], fds: &[RawFd]) {
        if fds.is_empty() {
            self.s.write_all(bytes).unwrap();
        } else {
            let n = self.s.send_with_fds(&[bytes], fds).unwrap();
            self.s.write_all(&bytes[n..]).unwrap();
        }
    }

    pub fn reply(&mut self) -> Reply {
        let mut h = [0u8; vfu::HEADER];
        self.s.read_exact(&mut h).expect("a reply header");
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
        let size = u32_at(4) as usize;
        let mut body = vec![0u8; size.saturating_sub(vfu::HEADER)];
        self.s.read_exact(&mut body).expect("the reply body");
        Reply {
            command: u16::from_le_bytes([h[2], h[3]]),
            flags: u32_at(8),
            error: u32_at(12),
            body,
        }
    }

    /// DMA_MAP of `size` bytes of `fd` at `offset` to `iova`, read-write.
    pub fn dma_map(&mut self, fd: RawFd, offset: u64, iova: u64, size: u64) -> Reply {
        let mut b = Vec::new();
        b.extend_from_slice(&32u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes()); // READ | WRITE
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&iova.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        self.call(vfu::DMA_MAP, &b, &[fd])
    }

    pub fn dma_unmap(&mut self, iova: u64, size: u64) -> Reply {
        let mut b = Vec::new();
        b.extend_from_slice(&24u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&iova.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        self.call(vfu::DMA_UNMAP, &b, &[])
    }

    /// REGION_READ of `count` bytes (the body announces them; nothing else is sent).
    pub fn region_read(&mut self, region: u32, offset: u64, count: u32) -> Reply {
        self.call(vfu::REGION_READ, &region_access(region, offset, count), &[])
    }

    /// DEVICE_GET_INFO: the server still answers in step (num_regions, num_irqs).
    pub fn device_info(&mut self) -> (u32, u32) {
        let mut b = vec![0u8; 16];
        b[0..4].copy_from_slice(&16u32.to_le_bytes());
        let r = self.call(vfu::DEVICE_GET_INFO, &b, &[]);
        assert!(!r.is_error(), "DEVICE_GET_INFO refused: {r:?}");
        assert_eq!(r.command, vfu::DEVICE_GET_INFO);
        let at = |o: usize| u32::from_le_bytes(r.body[o..o + 4].try_into().unwrap());
        (at(8), at(12))
    }
}

/// The fixed part of REGION_READ/REGION_WRITE: offset, region, count.
pub fn region_access(region: u32, offset: u64, count: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&region.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b
}
