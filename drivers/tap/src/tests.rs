//! These tests create real TAP interfaces and need CAP_NET_ADMIN and /dev/net/tun. They skip
//! (with a message) only when /dev/net/tun cannot be opened at all.

use std::fs::OpenOptions;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};
use vdpdk_core::ethdev::start_single_queue;

use vdpdk_core::DEFAULT_BUF_SIZE;

use super::*;

/// Experimental EtherType: the kernel never sends it, so it filters out IPv6 RS/MLD noise.
const ETHERTYPE: u16 = 0x88b5;
const PORT_MAC: MacAddr = MacAddr([2, 0, 0, 0x7a, 0x90, 1]);

/// Interface name unique to this process and test, so parallel runs do not collide.
fn ifname(tag: char) -> String {
    format!("vdtap{}{tag}", std::process::id() % 100_000)
}

fn tun_available() -> bool {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: cannot open /dev/net/tun ({e}); TAP tests need it");
            false
        }
    }
}

fn ifindex_of(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: c is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn pool() -> Mempool {
    Mempool::new("tap-test", 256, DEFAULT_BUF_SIZE).unwrap()
}

fn frame(dst: MacAddr, src: MacAddr, seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(60)];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as u8) ^ (i as u8);
    }
    f
}

fn is_ours(f: &[u8]) -> bool {
    f.len() >= 14 && f[12..14] == ETHERTYPE.to_be_bytes()
}

fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, count 1.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    r == 1
}

/// An AF_PACKET socket bound to one interface: the kernel side of the cable.
struct RawSock(OwnedFd);

impl RawSock {
    fn bind(ifindex: u32) -> RawSock {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket takes no pointers; checked below.
        let s = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                proto as i32,
            )
        };
        assert!(s >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: s is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(s) };
        // SAFETY: sockaddr_ll is plain data; zero is valid for every field.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: passes a valid sockaddr_ll with its exact size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind AF_PACKET: {}", io::Error::last_os_error());
        RawSock(fd)
    }

    /// Sends `f` out of the interface, i.e. towards the tap fd.
    fn send(&self, f: &[u8]) {
        // SAFETY: sends f.len() bytes from a live slice on a bound packet socket.
        let r = unsafe { libc::send(self.0.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
        assert_eq!(r, f.len() as isize, "send: {}", io::Error::last_os_error());
    }

    /// Next incoming (not outgoing) frame with our EtherType, within `timeout`.
    fn recv_ours(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_readable(self.0.as_raw_fd(), left) {
                return None;
            }
            // SAFETY: sockaddr_ll is plain data; zero is valid for every field.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut alen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and sll are live and sized as passed; alen is their size.
            let r = unsafe {
                libc::recvfrom(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut alen,
                )
            };
            if r < 0 {
                continue;
            }
            let f = &buf[..r as usize];
            if sll.sll_pkttype != libc::PACKET_OUTGOING && is_ours(f) {
                return Some(f.to_vec());
            }
        }
    }
}

#[test]
fn tx_burst_frames_reach_the_kernel_interface() {
    if !tun_available() {
        return;
    }
    let mut port = TapPort::open(&ifname('t'), Some(PORT_MAC)).unwrap();
    assert_eq!(port.ifname(), ifname('t'));
    assert_eq!(port.ifindex(), ifindex_of(&ifname('t')));
    let kmac = port.kernel_mac().unwrap();
    assert_ne!(kmac, PORT_MAC);
    let info = port.info();
    assert_eq!((info.driver.as_str(), info.mac), ("tap", PORT_MAC));
    assert_eq!(info.mtu, 1500);
    assert!(port.link().up, "open brings the interface up");

    let sock = RawSock::bind(port.ifindex());
    let pool = pool();
    let (_rx, mut tx) = start_single_queue(&mut port, &pool, 64, true).unwrap();
    let frames: Vec<_> = (0..8)
        .map(|i| frame(kmac, PORT_MAC, i, 60 + 200 * i as usize))
        .collect();
    // Odd frames go as two-buffer chains (one writev each).
    let mut v: Vec<Mbuf> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut m = pool.alloc().unwrap();
            let cut = if i % 2 == 1 { 50 } else { f.len() };
            m.copy_from(&f[..cut]).unwrap();
            if cut < f.len() {
                let mut tail = pool.alloc().unwrap();
                tail.copy_from(&f[cut..]).unwrap();
                m.chain(tail);
            }
            m
        })
        .collect();
    assert_eq!(v[1].nb_segs(), 2);
    assert_eq!(tx.tx_burst(&mut v), 8);
    assert!(v.is_empty());
    assert_eq!(pool.available(), 256, "sent mbufs go back to the pool");
    for f in &frames {
        let got = sock
            .recv_ours(Duration::from_secs(5))
            .expect("frame on the interface");
        assert_eq!(&got, f);
    }
    let s = port.stats();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    assert_eq!((s.opackets, s.obytes, s.oerrors), (8, bytes as u64, 0));
}

#[test]
fn kernel_frames_arrive_through_rx_burst() {
    if !tun_available() {
        return;
    }
    let mut port = TapPort::open(&ifname('r'), Some(PORT_MAC)).unwrap();
    port.set_port_id(3);
    let kmac = port.kernel_mac().unwrap();
    let sock = RawSock::bind(port.ifindex());
    let pool = pool();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 32, true).unwrap();
    let fd = rx.intr_fd().expect("the tap fd");
    rx.enable_intr().unwrap();

    let frames: Vec<_> = (0..4)
        .map(|i| frame(PORT_MAC, kmac, i, 100 + 400 * i as usize))
        .collect();
    for f in &frames {
        sock.send(f);
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ours = Vec::new();
    while ours.len() < frames.len() && Instant::now() < deadline {
        wait_readable(fd, Duration::from_millis(200));
        rx.rx_burst(&mut got, 32);
        // Skip whatever the kernel sends on its own (IPv6 RS, MLD, ...).
        ours.extend(got.drain(..).filter(|m| is_ours(m.data())));
    }
    rx.disable_intr().unwrap();
    assert_eq!(ours.len(), frames.len(), "all injected frames arrive");
    for (m, f) in ours.iter().zip(&frames) {
        assert_eq!(m.data(), &f[..]);
        assert_eq!((m.port, m.queue), (3, 0));
        assert_eq!(m.packet_type.0, PacketType::L2_ETHER);
    }
    let s = port.stats();
    assert!(s.ipackets >= 4 && s.ibytes >= frames.iter().map(|f| f.len() as u64).sum());
    drop(ours);
    drop(rx);
    assert_eq!(
        pool.available(),
        256,
        "spare mbufs return when the queue drops"
    );
    port.reset_stats();
    assert_eq!(port.stats().ipackets, 0);
}

#[test]
fn rx_burst_counts_nombuf_when_the_pool_is_empty() {
    if !tun_available() {
        return;
    }
    let mut port = TapPort::open(&ifname('n'), Some(PORT_MAC)).unwrap();
    let sock = RawSock::bind(port.ifindex());
    let pool = pool();
    let (mut rx, _tx) = start_single_queue(&mut port, &pool, 32, true).unwrap();
    let mut hoard = Vec::new();
    pool.alloc_bulk(&mut hoard, 256);
    sock.send(&frame(PORT_MAC, MacAddr([2, 0, 0, 0, 0, 9]), 1, 60));
    assert!(wait_readable(rx.intr_fd().unwrap(), Duration::from_secs(5)));
    let mut got = Vec::new();
    assert_eq!(rx.rx_burst(&mut got, 32), 0);
    assert!(port.stats().rx_nombuf >= 1);
    drop(hoard);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.iter().any(|m| is_ours(m.data())) && Instant::now() < deadline {
        rx.rx_burst(&mut got, 32);
    }
    assert!(
        got.iter().any(|m| is_ours(m.data())),
        "the frame waited for buffers"
    );
}

#[test]
fn lifecycle_and_argument_errors() {
    if !tun_available() {
        return;
    }
    assert!(matches!(
        TapPort::open("this-name-is-too-long", None),
        Err(Error::InvalidArg(_))
    ));
    assert!(TapPort::open("bad/name", None).is_err());

    let mut port = TapPort::open(&ifname('l'), None).unwrap();
    let mac = port.info().mac;
    assert!(
        !mac.is_multicast() && mac.0[0] & 2 == 2,
        "random MAC is local unicast"
    );
    let pool = pool();
    let bad = |r: Result<()>| matches!(r, Err(Error::BadState(_)));
    let inval = |r: Result<()>| matches!(r, Err(Error::InvalidArg(_)));
    assert!(bad(port.start()));
    assert!(bad(port.rx_queue_setup(0, 32, &pool)));
    assert!(bad(port.take_rx_queue(0).map(drop)));
    assert!(inval(port.configure(&DevConfig {
        nb_rx_queues: 2,
        nb_tx_queues: 1,
        ..Default::default()
    })));
    port.configure(&DevConfig {
        nb_rx_queues: 1,
        nb_tx_queues: 1,
        ..Default::default()
    })
    .unwrap();
    assert!(inval(port.rx_queue_setup(1, 32, &pool)));
    assert!(inval(port.tx_queue_setup(1, 32)));
    assert!(inval(port.rx_queue_setup(0, 0, &pool)));
    let small = Mempool::new("small", 8, 1024).unwrap();
    assert!(
        inval(port.rx_queue_setup(0, 32, &small)),
        "buffers too small for MTU"
    );
    port.rx_queue_setup(0, 32, &pool).unwrap();
    assert!(bad(port.start()), "TX queue not set up");
    port.tx_queue_setup(0, 32).unwrap();
    port.start().unwrap();
    assert!(bad(port.start()));
    assert!(bad(port.configure(&DevConfig::default())));
    let rx = port.take_rx_queue(0).unwrap();
    assert!(bad(port.take_rx_queue(0).map(drop)));
    assert!(inval(port.take_tx_queue(1).map(drop)));
    assert!(bad(port.stop()), "queue still taken");
    drop(rx);
    port.stop().unwrap();
    assert!(bad(port.stop()));
    assert!(port.flow_flush().is_err(), "no flow support");
}

#[test]
fn interface_lives_until_port_and_queues_drop() {
    if !tun_available() {
        return;
    }
    let name = ifname('d');
    let mut port = TapPort::open(&name, None).unwrap();
    assert_ne!(ifindex_of(&name), 0);
    let pool = pool();
    let (rx, tx) = start_single_queue(&mut port, &pool, 8, true).unwrap();
    drop(port);
    assert_ne!(ifindex_of(&name), 0, "queues keep the fd open");
    drop((rx, tx));
    assert_eq!(ifindex_of(&name), 0, "last close deletes the interface");
}

#[test]
fn empty_name_lets_the_kernel_choose() {
    if !tun_available() {
        return;
    }
    let port = TapPort::open("", None).unwrap();
    assert!(!port.ifname().is_empty());
    assert_eq!(ifindex_of(port.ifname()), port.ifindex());
}
