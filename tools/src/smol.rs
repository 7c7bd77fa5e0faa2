//! smoltcp on any vdpdk-rs port: [`PortPhy`] adapts an RX/TX queue pair to smoltcp's
//! `phy::Device`, and [`serve`] runs one of three small guest applications on it (an HTTP server,
//! a TCP echo server, a UDP reflector) until a deadline, sleeping on the RX interrupt when idle.
//!
//! smoltcp answers ARP and ICMP echo by itself, so `ping` works against any of them.

use std::collections::VecDeque;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue, TxQueue};

/// An RX/TX queue pair as a smoltcp device. Frames are received in bursts and handed to
/// smoltcp one at a time; each transmitted frame is one mbuf.
pub struct PortPhy {
    rx: Box<dyn RxQueue>,
    tx: Box<dyn TxQueue>,
    pool: Mempool,
    pending: VecDeque<Mbuf>,
    burst: Vec<Mbuf>,
    one: Vec<Mbuf>,
    mtu: usize,
    /// Frames dropped because the TX ring stayed full.
    pub tx_dropped: u64,
}

impl PortPhy {
    /// The device over `rx` and `tx`; transmitted frames come from `pool`, at most `mtu` L3
    /// bytes each.
    pub fn new(rx: Box<dyn RxQueue>, tx: Box<dyn TxQueue>, pool: Mempool, mtu: u16) -> PortPhy {
        PortPhy {
            rx,
            tx,
            pool,
            pending: VecDeque::with_capacity(64),
            burst: Vec::with_capacity(32),
            one: Vec::with_capacity(1),
            mtu: mtu as usize + 14,
            tx_dropped: 0,
        }
    }

    /// Sleeps until a frame arrives or `timeout` passes, on the RX interrupt when the port has
    /// one (otherwise a short sleep).
    pub fn wait(&mut self, timeout: Duration) {
        if !self.pending.is_empty() {
            return;
        }
        let Some(fd) = self.rx.intr_fd().filter(|_| self.rx.enable_intr().is_ok()) else {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
            return;
        };
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(1000) as i32) };
        let _ = self.rx.disable_intr();
    }
}

/// smoltcp's token for one received frame (the mbuf, freed once smoltcp has read it).
pub struct PhyRx(Mbuf);
/// smoltcp's token for one frame to send: an mbuf from the pool, sent as a one-frame burst.
pub struct PhyTx<'a> {
    tx: &'a mut dyn TxQueue,
    pool: &'a Mempool,
    /// Reused one-frame burst (no allocation per frame).
    one: &'a mut Vec<Mbuf>,
    tx_dropped: &'a mut u64,
}

impl smoltcp::phy::RxToken for PhyRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        if self.0.is_chained() {
            return f(&self.0.to_vec()); // rare: a frame spanning buffers
        }
        f(self.0.data())
    }
}

impl smoltcp::phy::TxToken for PhyTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut m = match self.pool.alloc() {
            Some(m) if len <= m.tailroom() => m,
            _ => {
                // No buffer (or an oversized frame): smoltcp still writes it somewhere.
                *self.tx_dropped += 1;
                return f(&mut vec![0u8; len]);
            }
        };
        let r = f(m.append(len).expect("tailroom checked"));
        self.one.push(m);
        for _ in 0..1000 {
            if self.tx.tx_burst(self.one) == 1 {
                return r;
            }
            std::thread::yield_now();
        }
        self.one.clear();
        *self.tx_dropped += 1;
        r
    }
}

impl PortPhy {
    fn tx_token(&mut self) -> PhyTx<'_> {
        PhyTx {
            tx: &mut *self.tx,
            pool: &self.pool,
            one: &mut self.one,
            tx_dropped: &mut self.tx_dropped,
        }
    }
}

impl Device for PortPhy {
    type RxToken<'a> = PhyRx;
    type TxToken<'a> = PhyTx<'a>;

    fn receive(&mut self, _ts: Instant) -> Option<(PhyRx, PhyTx<'_>)> {
        if self.pending.is_empty() {
            self.rx.rx_burst(&mut self.burst, 32);
            self.pending.extend(self.burst.drain(..));
        }
        let m = self.pending.pop_front()?;
        Some((PhyRx(m), self.tx_token()))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<PhyTx<'_>> {
        Some(self.tx_token())
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu;
        c.max_burst_size = Some(32);
        c
    }
}

/// Which application [`serve`] runs.
#[derive(Clone, Debug)]
pub enum App {
    /// HTTP/1.0 on `port`: every GET gets `body` (200), anything else 400.
    Http {
        /// TCP port to listen on.
        port: u16,
        /// Response body of every GET.
        body: Vec<u8>,
    },
    /// Echoes every byte back on TCP `port`.
    TcpEcho {
        /// TCP port to listen on.
        port: u16,
    },
    /// Returns every datagram to its sender on UDP `port`.
    UdpReflect {
        /// UDP port to bind.
        port: u16,
    },
}

/// What an application did.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// HTTP requests answered.
    pub requests: u64,
    /// Payload bytes received (TCP stream bytes or UDP payload).
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// UDP datagrams received.
    pub datagrams: u64,
}

/// Concurrent TCP connections the servers accept.
const TCP_SOCKETS: usize = 8;

/// Runs `app` on `phy` with address `ip` until `until` returns true (checked about every 100 ms
/// and after each event); `progress` is called about once a second with the running totals.
pub fn serve(
    phy: &mut PortPhy,
    mac: MacAddr,
    ip: IpCidr,
    gateway: Option<Ipv4Address>,
    app: &App,
    mut until: impl FnMut(&AppStats) -> bool,
    mut progress: impl FnMut(&AppStats),
) -> AppStats {
    let epoch = std::time::Instant::now();
    let now = || Instant::from_micros(epoch.elapsed().as_micros() as i64);
    let config = Config::new(EthernetAddress(mac.0).into());
    let mut iface = Interface::new(config, phy, now());
    iface.update_ip_addrs(|a| {
        a.push(ip).expect("one address");
    });
    if let Some(gw) = gateway {
        iface
            .routes_mut()
            .add_default_ipv4_route(gw)
            .expect("default route");
    }
    let (mut sockets, tcp_handles, udp_handle) = make_sockets(app);
    let mut conns: Vec<TcpConn> = tcp_handles.iter().map(|_| TcpConn::default()).collect();
    let mut st = AppStats::default();
    let mut last_progress = std::time::Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    while !until(&st) {
        iface.poll(now(), phy, &mut sockets);
        for (conn, &h) in conns.iter_mut().zip(&tcp_handles) {
            conn.serve(sockets.get_mut::<tcp::Socket>(h), app, &mut st, &mut buf);
        }
        if let Some(h) = udp_handle {
            let s = sockets.get_mut::<udp::Socket>(h);
            while let Ok((n, meta)) = s.recv_slice(&mut buf) {
                st.datagrams += 1;
                st.bytes_in += n as u64;
                if s.send_slice(&buf[..n], meta.endpoint).is_ok() {
                    st.bytes_out += n as u64;
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            progress(&st);
            last_progress = std::time::Instant::now();
        }
        let delay = iface
            .poll_delay(now(), &sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        if !delay.is_zero() {
            phy.wait(delay);
        }
    }
    iface.poll(now(), phy, &mut sockets);
    st
}

/// The sockets `app` serves on: [`TCP_SOCKETS`] TCP sockets, or one bound UDP socket.
fn make_sockets(app: &App) -> (SocketSet<'static>, Vec<SocketHandle>, Option<SocketHandle>) {
    let mut sockets = SocketSet::new(vec![]);
    let mut tcp_handles: Vec<SocketHandle> = Vec::new();
    let mut udp_handle = None;
    match app {
        App::Http { .. } | App::TcpEcho { .. } => {
            for _ in 0..TCP_SOCKETS {
                let s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; 64 * 1024]),
                    tcp::SocketBuffer::new(vec![0; 256 * 1024]),
                );
                tcp_handles.push(sockets.add(s));
            }
        }
        App::UdpReflect { port } => {
            let mut s = udp::Socket::new(
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 256], vec![0; 256 * 1024]),
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 256], vec![0; 256 * 1024]),
            );
            s.bind(*port).expect("bind UDP");
            udp_handle = Some(sockets.add(s));
        }
    }
    (sockets, tcp_handles, udp_handle)
}

/// What a TCP server keeps per socket between polls.
#[derive(Default)]
struct TcpConn {
    /// Bytes of the request seen so far (HTTP).
    req: Vec<u8>,
    /// Response bytes still to send.
    out: VecDeque<u8>,
    was_open: bool,
    responded: bool,
}

impl TcpConn {
    /// One poll's work on socket `s`: listen again once closed, take what arrived, answer it,
    /// close when done. `buf` is scratch space.
    fn serve(&mut self, s: &mut tcp::Socket, app: &App, st: &mut AppStats, buf: &mut [u8]) {
        let port = match app {
            App::Http { port, .. } | App::TcpEcho { port } => *port,
            App::UdpReflect { .. } => unreachable!(),
        };
        if !s.is_open() {
            if self.was_open {
                self.was_open = false;
                self.responded = false;
                self.req.clear();
                self.out.clear();
            }
            s.listen(port).expect("listen");
            return;
        }
        if s.is_active() && !self.was_open {
            self.was_open = true;
            st.connections += 1;
        }
        while s.can_recv() {
            let n = s.recv_slice(buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            st.bytes_in += n as u64;
            match app {
                App::TcpEcho { .. } => self.out.extend(&buf[..n]),
                App::Http { body, .. } => {
                    self.req.extend_from_slice(&buf[..n]);
                    if self.req.windows(4).any(|w| w == b"\r\n\r\n") {
                        st.requests += 1;
                        self.out.extend(http_response(&self.req, body));
                        self.req.clear();
                        self.responded = true;
                    }
                }
                App::UdpReflect { .. } => unreachable!(),
            }
        }
        while s.can_send() && !self.out.is_empty() {
            let (a, _) = self.out.as_slices();
            let n = s.send_slice(a).unwrap_or(0);
            if n == 0 {
                break;
            }
            st.bytes_out += n as u64;
            self.out.drain(..n);
        }
        // HTTP/1.0 closes after its response; echo closes once the peer has and all its bytes
        // went back.
        let finished = match app {
            App::Http { .. } => self.responded,
            _ => !s.may_recv(),
        };
        if finished && self.out.is_empty() && s.may_send() {
            s.close();
        }
    }
}

fn http_response(request: &[u8], body: &[u8]) -> Vec<u8> {
    let ok = request.starts_with(b"GET ");
    let (status, body): (&str, &[u8]) = if ok {
        ("200 OK", body)
    } else {
        ("400 Bad Request", b"only GET is served\n")
    };
    let mut r = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A deterministic body of `len` bytes (lines of text), so a client can check what it got.
pub fn http_body(len: usize) -> Vec<u8> {
    let line = b"vdpdk-rs smoltcp http server: 0123456789abcdefghijklmnopqrstuvwxyz\n";
    line.iter().copied().cycle().take(len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_get_with_the_body_and_refuses_the_rest() {
        let r = http_response(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"hello");
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.0 200 OK\r\n"), "{s}");
        assert!(
            s.contains("Content-Length: 5\r\n") && s.ends_with("\r\n\r\nhello"),
            "{s}"
        );
        let r = String::from_utf8(http_response(b"POST / HTTP/1.1\r\n\r\n", b"x")).unwrap();
        assert!(r.starts_with("HTTP/1.0 400"), "{r}");
    }

    #[test]
    fn body_has_the_asked_length() {
        assert_eq!(http_body(100_000).len(), 100_000);
        assert!(http_body(10).starts_with(b"vdpdk-rs s"));
    }
}
