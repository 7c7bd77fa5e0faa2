//! The TAP forwarder: exposes a port (a vDPDK guest port, or any other) to the kernel as a TAP
//! interface with the port's MAC and MTU, so Linux's own stack and tools (ping, iperf3, ssh)
//! run over it.
//!
//! The TAP speaks virtio-net headers and tells the kernel it takes partial checksums and TCP
//! super-frames (TUN_F_CSUM, TSO4, TSO6), so the kernel skips that work. A TCP super-frame goes
//! to the port whole, with a TSO request, when the port offers TCP segmentation (a vDPDK port
//! does: host-mux cuts it); otherwise, and for partial checksums, the forwarder finishes the
//! work in software.
//!
//! Two threads: kernel → port (blocks in poll on the TAP fd) and port → kernel (polls the RX
//! queue while busy, sleeps on its RX interrupt when idle).

use std::io::IoSlice;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use vdpdk_core::mbuf::TxOffloadInfo;
use vdpdk_core::packet::{complete_checksum, finish_tcp_segment, TcpLayout};
use vdpdk_core::{DevConfig, EthDev, Mbuf, Mempool, OlFlags, Result, RxQueue, TxOffloads, TxQueue};
use vdpdk_tap::{TapInterface, VirtioNetHdr, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN};

/// Buffers of one frame written to the TAP in a single writev (more are dropped, counted).
const MAX_SEGS: usize = 16;

/// How the forwarder treats the kernel's TCP super-frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TsoMode {
    /// Hand them to the port with a TSO request when it offers TCP segmentation.
    #[default]
    Port,
    /// Always cut them here.
    Software,
}

/// Smallest MSS handed to the port (host-mux refuses smaller ones); below it, software.
const PORT_TSO_MIN_MSS: usize = 256;

/// Counters of a running forwarder (all monotonic).
#[derive(Debug, Default)]
pub struct FwdStats {
    /// Frames the kernel sent into the TAP.
    pub from_kernel: AtomicU64,
    /// TCP super-frames the forwarder segmented.
    pub super_frames: AtomicU64,
    /// TCP super-frames handed to the port whole, for it to segment.
    pub port_tso: AtomicU64,
    /// Frames put on the port (segments counted one by one).
    pub to_port: AtomicU64,
    /// Frames received on the port and written into the TAP.
    pub to_kernel: AtomicU64,
    /// Frames dropped: no mbuf, port full, malformed header, or the kernel refused the write.
    pub dropped: AtomicU64,
}

impl FwdStats {
    /// The counters as one line of text, for the periodic report.
    pub fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "kernel→port {} frames ({} super-frames cut, {} to the port's TSO) into {} | \
             port→kernel {} | dropped {}",
            g(&self.from_kernel),
            g(&self.super_frames),
            g(&self.port_tso),
            g(&self.to_port),
            g(&self.to_kernel),
            g(&self.dropped)
        )
    }
}

/// Creates TAP `ifname` for `port`, brings it up with the port's MAC and MTU, and forwards
/// until `stop` is set. Returns once both directions have stopped.
pub fn run(
    port: &mut dyn EthDev,
    ifname: &str,
    tso: TsoMode,
    stop: &AtomicBool,
    stats: &FwdStats,
    on_ready: impl FnOnce(&TapInterface),
) -> Result<()> {
    let info = port.info();
    let tso_offloads = TxOffloads::TCP_TSO | TxOffloads::TCP_CKSUM | TxOffloads::IPV4_CKSUM;
    let port_tso = tso == TsoMode::Port && info.tx_offload_capa.contains(tso_offloads);
    let tap = TapInterface::create(ifname, true)?;
    tap.set_mac(info.mac)?;
    tap.set_mtu(info.mtu)?;
    tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)?;
    tap.set_up()?;
    let pool = Mempool::new("tapfwd", 8192, vdpdk_core::DEFAULT_BUF_SIZE)?;
    // Super-frames for the port's TSO travel in one buffer each (the largest a pool holds).
    let big = if port_tso {
        Some(Mempool::new("tapfwd-tso", 256, u16::MAX)?)
    } else {
        None
    };
    port.configure(&DevConfig {
        nb_rx_queues: 1,
        nb_tx_queues: 1,
        rx_intr: info.rx_intr,
        tx_offloads: if port_tso {
            tso_offloads
        } else {
            TxOffloads::empty()
        },
        ..Default::default()
    })?;
    port.rx_queue_setup(0, 1024, &pool)?;
    port.tx_queue_setup(0, 1024)?;
    port.start()?;
    let (rx, tx) = (port.take_rx_queue(0)?, port.take_tx_queue(0)?);
    on_ready(&tap);
    let fd = tap.fd();
    let pools = Pools {
        small: &pool,
        tso: big.as_ref(),
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("tap→port".into())
            .spawn_scoped(s, || kernel_to_port(fd, tx, pools, stop, stats))
            .expect("spawn");
        port_to_kernel(fd, rx, stop, stats);
    });
    Ok(())
}

/// Waits until `fd` is readable or `ms` passed.
fn wait_readable(fd: RawFd, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// The forwarder's buffers: MTU-sized ones, and (with the port's TSO) super-frame-sized ones.
#[derive(Clone, Copy)]
struct Pools<'a> {
    small: &'a Mempool,
    tso: Option<&'a Mempool>,
}

fn kernel_to_port(
    fd: RawFd,
    mut tx: Box<dyn TxQueue>,
    pools: Pools<'_>,
    stop: &AtomicBool,
    stats: &FwdStats,
) {
    // A virtio-net header plus the largest super-frame the kernel sends (64 KiB).
    let mut buf = vec![0u8; VirtioNetHdr::LEN + 65_550];
    let mut batch: Vec<Mbuf> = Vec::with_capacity(64);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: reading into our own buffer of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            flush(&mut *tx, &mut batch, stats);
            wait_readable(fd, 100);
            continue;
        }
        stats.from_kernel.fetch_add(1, Ordering::Relaxed);
        let (hdr, frame) = buf[..n as usize].split_at_mut(VirtioNetHdr::LEN);
        let Some(h) = VirtioNetHdr::parse(hdr) else {
            continue;
        };
        match to_mbufs(&h, frame, pools, &mut batch) {
            None => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(Sent::ToPortTso) => {
                stats.port_tso.fetch_add(1, Ordering::Relaxed);
            }
            Some(Sent::Cut) => {
                stats.super_frames.fetch_add(1, Ordering::Relaxed);
            }
            Some(Sent::Frame) => {}
        }
        if batch.len() >= 32 {
            flush(&mut *tx, &mut batch, stats);
        }
    }
    flush(&mut *tx, &mut batch, stats);
}

/// What became of one frame from the kernel.
enum Sent {
    Frame,
    /// A super-frame cut into segments here.
    Cut,
    /// A super-frame handed to the port whole with a TSO request.
    ToPortTso,
}

/// Converts one frame from the kernel into ready-to-send mbufs: one, one super-frame with a
/// TSO request, or one per segment.
fn to_mbufs(
    h: &VirtioNetHdr,
    frame: &mut [u8],
    pools: Pools<'_>,
    out: &mut Vec<Mbuf>,
) -> Option<Sent> {
    let pool = pools.small;
    match h.gso_type & !VirtioNetHdr::GSO_ECN {
        VirtioNetHdr::GSO_NONE => {
            if h.flags & VirtioNetHdr::F_NEEDS_CSUM != 0
                && !complete_checksum(frame, h.csum_start as usize, h.csum_offset as usize)
            {
                return None;
            }
            let mut m = pool.alloc()?;
            m.copy_from(frame).ok()?;
            out.push(m);
            Some(Sent::Frame)
        }
        VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_TCPV6 => {
            let t = TcpLayout::parse(frame)?;
            let mss = h.gso_size as usize;
            if mss == 0 {
                return None;
            }
            if let Some(m) = port_tso_mbuf(pools.tso, frame, &t, mss) {
                out.push(m);
                return Some(Sent::ToPortTso);
            }
            let (headers, payload) = frame.split_at(t.payload);
            let chunks = payload.len().div_ceil(mss).max(1);
            for k in 0..chunks {
                let chunk =
                    &payload[(k * mss).min(payload.len())..((k + 1) * mss).min(payload.len())];
                let mut m = pool.alloc()?;
                let seg = m.append(headers.len() + chunk.len())?;
                seg[..headers.len()].copy_from_slice(headers);
                seg[headers.len()..].copy_from_slice(chunk);
                finish_tcp_segment(seg, &t, k, mss, k + 1 == chunks);
                out.push(m);
            }
            Some(Sent::Cut)
        }
        _ => None, // UDP fragmentation offload is never enabled on the TAP
    }
}

/// The super-frame in one buffer with a TSO request (DPDK flags and header lengths), when the
/// port segments and the frame fits; None leaves the work to software.
fn port_tso_mbuf(pool: Option<&Mempool>, frame: &[u8], t: &TcpLayout, mss: usize) -> Option<Mbuf> {
    let pool = pool?;
    if mss < PORT_TSO_MIN_MSS || t.l4 - t.l3 > u8::MAX as usize {
        return None;
    }
    let mut m = pool.alloc()?;
    m.copy_from(frame).ok()?;
    let ip = if t.ipv6 {
        OlFlags::TX_IPV6
    } else {
        OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM
    };
    m.ol_flags = ip | OlFlags::TX_TCP_CKSUM | OlFlags::TX_TCP_SEG;
    m.tx_offload = TxOffloadInfo {
        l2_len: t.l3 as u8,
        l3_len: (t.l4 - t.l3) as u16,
        l4_len: (t.payload - t.l4) as u8,
        tso_segsz: mss as u16,
    };
    Some(m)
}

/// Puts `batch` on the port, waiting briefly while its ring is full; what still does not fit
/// after that is dropped (and counted) rather than stalling the kernel side.
fn flush(tx: &mut dyn TxQueue, batch: &mut Vec<Mbuf>, stats: &FwdStats) {
    let mut tries = 0;
    while !batch.is_empty() {
        let n = tx.tx_burst(batch);
        stats.to_port.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            tries += 1;
            if tries > 1000 {
                stats
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                return;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

fn port_to_kernel(fd: RawFd, mut rx: Box<dyn RxQueue>, stop: &AtomicBool, stats: &FwdStats) {
    let hdr = VirtioNetHdr::default().to_bytes();
    let mut burst: Vec<Mbuf> = Vec::with_capacity(32);
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if rx.rx_burst(&mut burst, 32) == 0 {
            idle += 1;
            if idle > 256 {
                sleep_on_rx(&mut *rx);
            }
            continue;
        }
        idle = 0;
        for m in burst.drain(..) {
            // The virtio-net header, then each buffer of the frame (a chain is gathered).
            let mut iov = [IoSlice::new(&[]); 1 + MAX_SEGS];
            iov[0] = IoSlice::new(&hdr);
            let mut n = 1;
            for (v, seg) in iov[1..].iter_mut().zip(m.segments()) {
                *v = IoSlice::new(seg.data());
                n += 1;
            }
            let r = if m.nb_segs() > MAX_SEGS {
                -1 // never written truncated
            } else {
                // SAFETY: n valid iovecs (IoSlice is ABI-compatible with struct iovec).
                unsafe { libc::writev(fd, iov.as_ptr().cast(), n as libc::c_int) }
            };
            if r < 0 {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.to_kernel.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sleeps on the RX interrupt (up to 100 ms) when the queue has one, else briefly.
fn sleep_on_rx(rx: &mut dyn RxQueue) {
    match rx.intr_fd() {
        Some(fd) if rx.enable_intr().is_ok() => {
            wait_readable(fd, 100);
            let _ = rx.disable_intr();
        }
        _ => std::thread::sleep(Duration::from_micros(200)),
    }
}
