//! # vdpdk-tap
//!
//! A Linux TAP backend: the port is one end of a virtual cable whose other end is a kernel
//! network interface. Frames written by [`TxQueue::tx_burst`] arrive on the kernel interface as
//! if received from a wire; frames the kernel sends out of that interface are what
//! [`RxQueue::rx_burst`] returns. It lets the host mux (and tests) talk to the host's network
//! stack, AF_PACKET tools or a bridge without a NIC.
//!
//! Addresses: the port *presents* its own MAC ([`DevInfo::mac`], the address the mux uses for
//! this port), distinct from the kernel interface's MAC ([`TapPort::kernel_mac`]), just as a
//! NIC and the switch port it plugs into have different addresses.
//!
//! One RX and one TX queue; no offloads, no flow rules. RX interrupts come for free: the tap fd
//! itself is readable while frames are pending.
//!
//! The interface is not persistent: it disappears when the port and every queue taken from it
//! are dropped (the last close of the tap fd deletes it).

#![warn(missing_docs)]

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vdpdk_core::skeleton::{LiveGuard, PortSkeleton};
use vdpdk_core::{
    DescLimits, DevConfig, DevInfo, Error, EthDev, LinkStatus, MacAddr, Mbuf, Mempool, PacketType,
    PortStats, QueueCounters, Result, RxOffloads, RxQueue, TxOffloads, TxQueue, MBUF_HEADROOM,
};

/// Driver name reported in [`DevInfo::driver`].
pub const DRIVER_NAME: &str = "tap";
/// Descriptor limits. There is no ring: `nb_desc` of the RX queue bounds how many spare mbufs
/// it keeps ready for `read()`; TX writes straight to the fd.
pub const DESC_LIM: DescLimits = DescLimits {
    min: 1,
    max: 4096,
    align: 1,
};
/// Room for a VLAN-tagged frame header on top of the MTU.
const L2_OVERHEAD: usize = 18;

mod iface;
pub use iface::{TapInterface, VirtioNetHdr, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN};

/// A port backed by a kernel TAP interface. See the crate docs.
pub struct TapPort {
    iface: TapInterface,
    tap: Arc<OwnedFd>,
    mac: MacAddr,
    port_id: u16,
    /// Lifecycle; RX queue 0's setup is its spare-mbuf count and pool, TX's its count.
    port: PortSkeleton<(u16, Mempool), u16>,
}

/// A random unicast, locally administered MAC for a port opened without one.
fn random_mac() -> MacAddr {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        .to_le_bytes();
    MacAddr([(r[0] & 0xfc) | 0x02, r[1], r[2], r[3], r[4], r[5]])
}

impl TapPort {
    /// Creates (or attaches to) TAP interface `ifname` and brings it up. An empty name lets the
    /// kernel pick one (`tapN`); see [`TapPort::ifname`]. `mac` is the address this port
    /// presents; None picks a random locally administered one. Needs CAP_NET_ADMIN.
    pub fn open(ifname: &str, mac: Option<MacAddr>) -> Result<TapPort> {
        let iface = TapInterface::create(ifname, false)?;
        iface.set_up()?;
        let port = TapPort {
            tap: iface.fd.clone(),
            iface,
            mac: mac.unwrap_or_else(random_mac),
            port_id: 0,
            port: PortSkeleton::default(),
        };
        Ok(port)
    }

    /// The id written to `Mbuf::port` of received packets (0 by default).
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// Changes the id written to `Mbuf::port`; takes effect for queues taken afterwards.
    pub fn set_port_id(&mut self, id: u16) {
        self.port_id = id;
    }

    /// The kernel interface's name (useful when `open` was given an empty one).
    pub fn ifname(&self) -> &str {
        self.iface.ifname()
    }

    /// The kernel interface's index (for AF_PACKET binds, netlink, ...).
    pub fn ifindex(&self) -> u32 {
        self.iface.ifindex()
    }

    /// The kernel interface's own MAC, the other end of the cable.
    pub fn kernel_mac(&self) -> Result<MacAddr> {
        self.iface.mac()
    }

    fn mtu(&self) -> u16 {
        self.iface.mtu()
    }

    /// Discards frames the kernel queued while the port was stopped, as a stopped NIC would
    /// have dropped them.
    fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads at most 64 bytes into a live stack buffer; the tap fd is
            // non-blocking. A short buffer just truncates the discarded frame.
            let r = unsafe { libc::read(self.tap.as_raw_fd(), buf.as_mut_ptr().cast(), 64) };
            if r < 0 {
                break;
            }
        }
    }
}

impl EthDev for TapPort {
    fn info(&self) -> DevInfo {
        let mtu = self.mtu();
        DevInfo {
            driver: DRIVER_NAME.into(),
            mac: self.mac,
            max_rx_queues: 1,
            max_tx_queues: 1,
            rx_desc_lim: DESC_LIM,
            tx_desc_lim: DESC_LIM,
            mtu,
            // The MTU is the kernel interface's; this port cannot change it.
            max_mtu: mtu,
            rx_offload_capa: RxOffloads::empty(),
            tx_offload_capa: TxOffloads::MULTI_SEGS,
            rx_intr: true,
            tx_lent_buffers: true,
            rx_lent_buffers: false,
        }
    }

    fn configure(&mut self, conf: &DevConfig) -> Result<()> {
        let info = self.info();
        self.port.configure(conf, &info)
    }

    /// `pool` buffers must hold a full frame at the interface MTU: a TAP read cannot scatter.
    fn rx_queue_setup(&mut self, qid: u16, nb_desc: u16, pool: &Mempool) -> Result<()> {
        self.port.check_rx_setup(qid)?;
        DESC_LIM.check("RX", nb_desc)?;
        let room = (pool.buf_size() - MBUF_HEADROOM) as usize;
        let need = self.mtu() as usize + L2_OVERHEAD;
        if room < need {
            return Err(Error::InvalidArg(format!(
                "pool '{}' buffers hold {room} B, frames at MTU {} need {need} B",
                pool.name(),
                self.mtu()
            )));
        }
        self.port.rx.set(qid, (nb_desc, pool.clone()));
        Ok(())
    }

    fn tx_queue_setup(&mut self, qid: u16, nb_desc: u16) -> Result<()> {
        self.port.check_tx_setup(qid)?;
        DESC_LIM.check("TX", nb_desc)?;
        self.port.tx.set(qid, nb_desc);
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        self.port.check_start()?;
        self.drain();
        self.port.started();
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        self.port.stop()
    }

    fn take_rx_queue(&mut self, qid: u16) -> Result<Box<dyn RxQueue>> {
        let t = self.port.take_rx(qid)?;
        let (nb_desc, pool) = t.setup.clone();
        Ok(Box::new(TapRxQueue {
            tap: self.tap.clone(),
            pool,
            spare: Vec::with_capacity(nb_desc as usize),
            nb_desc: nb_desc as usize,
            port_id: self.port_id,
            counters: t.counters,
            _live: t.live,
        }))
    }

    fn take_tx_queue(&mut self, qid: u16) -> Result<Box<dyn TxQueue>> {
        let t = self.port.take_tx(qid)?;
        Ok(Box::new(TapTxQueue {
            tap: self.tap.clone(),
            done: Vec::new(),
            counters: t.counters,
            _live: t.live,
        }))
    }

    /// Up while the kernel interface is administratively up. IFF_RUNNING is not used: the
    /// kernel updates it asynchronously, so it lags right after open.
    fn link(&self) -> LinkStatus {
        let up = self.iface.is_up();
        LinkStatus {
            up,
            speed_mbps: 0,
            full_duplex: true,
        }
    }

    fn stats(&self) -> PortStats {
        self.port.stats()
    }

    fn reset_stats(&mut self) {
        self.port.reset_stats();
    }
}

/// Whether a frame is pending on `fd`, without waiting.
fn readable_now(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, count 1, no wait.
    unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

struct TapRxQueue {
    tap: Arc<OwnedFd>,
    pool: Mempool,
    /// Empty mbufs ready for `read()`, at most `nb_desc`; kept across bursts so an idle poll
    /// does not churn the pool.
    spare: Vec<Mbuf>,
    nb_desc: usize,
    port_id: u16,
    counters: Arc<QueueCounters>,
    _live: LiveGuard,
}

impl RxQueue for TapRxQueue {
    /// Reads up to `max` frames, one `read()` each, until the fd would block.
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let fd = self.tap.as_raw_fd();
        let (mut n, mut bytes) = (0, 0u64);
        while n < max {
            if self.spare.is_empty() {
                let want = (max - n).min(self.nb_desc);
                if self.pool.alloc_bulk(&mut self.spare, want) == 0 {
                    // Count only a frame actually left waiting, not every idle poll.
                    if readable_now(fd) {
                        self.counters.nombuf.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
            let m = self.spare.last_mut().expect("refilled above");
            let room = m.tailroom();
            // SAFETY: data_ptr() points at the empty data area of an mbuf we own exclusively,
            // and `room` bytes from there stay inside its buffer.
            let r = unsafe { libc::read(fd, m.data_ptr().cast(), room) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if !would_block(&e) {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
            let len = r as usize;
            if len > room {
                // Frame longer than the buffer (MTU raised after setup): truncated, drop it and
                // keep the mbuf for the next read.
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut m = self.spare.pop().expect("checked above");
            m.set_len(len).expect("len <= room");
            m.packet_type = PacketType::parse(m.data());
            m.port = self.port_id;
            m.queue = 0;
            bytes += len as u64;
            out.push(m);
            n += 1;
        }
        if n > 0 {
            self.counters.add(n as u64, bytes);
        }
        n
    }

    /// Nothing to arm: the tap fd is readable whenever a frame is pending.
    fn enable_intr(&mut self) -> Result<()> {
        Ok(())
    }

    fn disable_intr(&mut self) -> Result<()> {
        Ok(())
    }

    fn intr_fd(&self) -> Option<RawFd> {
        Some(self.tap.as_raw_fd())
    }
}

/// Segments one chained frame may have (one `writev`).
const MAX_TX_SEGS: usize = 64;

/// Writes one frame: a `write` for one buffer, a `writev` gathering a chain.
fn write_frame(fd: RawFd, m: &Mbuf) -> isize {
    // By address, not through `data()`: a segment may lend a guest's memory (zero-copy).
    if !m.is_chained() {
        // SAFETY: writes the `len()` bytes of a live segment's data; the kernel only reads.
        return unsafe { libc::write(fd, m.data_addr().cast(), m.len()) };
    }
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_TX_SEGS];
    let mut n = 0;
    for (v, seg) in iov.iter_mut().zip(m.segments()) {
        *v = libc::iovec {
            iov_base: seg.data_addr() as *mut libc::c_void,
            iov_len: seg.len(),
        };
        n += 1;
    }
    // SAFETY: n iovecs, each over a live segment's data; the kernel only reads them.
    unsafe { libc::writev(fd, iov.as_ptr(), n as libc::c_int) }
}

struct TapTxQueue {
    tap: Arc<OwnedFd>,
    /// Reused buffer to free sent mbufs in bulk.
    done: Vec<Mbuf>,
    counters: Arc<QueueCounters>,
    _live: LiveGuard,
}

impl TxQueue for TapTxQueue {
    /// Writes frames one `write()` (a chain: one `writev()`) each. Stops at EAGAIN, leaving the rest; a frame the kernel
    /// rejects otherwise is dropped and counted as an error so it cannot block the queue.
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        let fd = self.tap.as_raw_fd();
        let (mut taken, mut sent, mut bytes) = (0, 0u64, 0u64);
        for m in pkts.iter() {
            if m.nb_segs() > MAX_TX_SEGS {
                // Refused, never sent truncated.
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                taken += 1;
                continue;
            }
            let r = write_frame(fd, m);
            if r < 0 {
                let e = io::Error::last_os_error();
                if would_block(&e) || e.kind() == io::ErrorKind::Interrupted {
                    break;
                }
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            } else {
                sent += 1;
                bytes += m.pkt_len() as u64;
            }
            taken += 1;
        }
        if taken > 0 {
            self.done.extend(pkts.drain(..taken));
            Mempool::free_bulk(&mut self.done);
            self.counters.add(sent, bytes);
        }
        taken
    }
}

#[cfg(test)]
mod tests;
