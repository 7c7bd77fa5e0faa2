//! host-mux on the Linux TAP backend: a guest process's frames leave through a real kernel
//! interface, and frames injected into that interface reach the guest (steered by a guest flow
//! rule away from whatever the kernel itself sends). Needs root for /dev/net/tun.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::*;
use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use vdpdk_core::packet::ether_frame;

const ETHERTYPE: u16 = 0x88b5;

fn packet_socket(ifindex: u32) -> OwnedFd {
    // SAFETY: plain socket/bind syscalls on a local struct; results checked.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        );
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        let r = libc::bind(
            fd,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(fd)
    }
}

#[test]
fn guest_traffic_crosses_a_real_tap_interface() {
    if std::fs::metadata("/dev/net/tun").is_err() {
        panic!("/dev/net/tun is missing: .ci/run creates it; run the tests as root");
    }
    let dir = TempDir::new("tapmux");
    let ifname = format!("vdmux{}", std::process::id() % 100_000);
    let gmac = mac(0x6a);
    let tap = vdpdk_tap::TapPort::open(&ifname, None).expect("open TAP (are you root?)");
    let ifindex = tap.ifindex();
    let cfg = MuxConfig {
        idle_polls: 256,
        pool_size: 4096,
        ..MuxConfig::new(
            BackendConfig::Tap {
                ifname: ifname.clone(),
            },
            vec![VmConfig {
                name: "a".into(),
                socket: dir.sock("a"),
                mac: gmac,
                rx_queues: 2,
                tx_queues: 1,
                cluster: 0,
            }],
        )
    };
    let sock = packet_socket(ifindex);
    let mux = HostMux::start(&cfg, Box::new(tap)).unwrap();
    let mut g = GuestProc::spawn(&dir.sock("a"), 2);
    assert!(g
        .cmd(&format!("flow ethtype {ETHERTYPE:x} 1"))
        .starts_with("FLOW ok"));

    // Guest -> kernel: the frames appear on the interface, intact.
    let peer = mac(0x99);
    assert_eq!(GuestProc::sent(&g.cmd(&format!("send 50 200 {peer}"))), 50);
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 50 && Instant::now() < deadline {
        // SAFETY: reading into a local buffer from our socket.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 && buf[6..12] == gmac.0 {
            seen.push(buf[..n as usize].to_vec());
        } else if n <= 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let expect: Vec<Vec<u8>> = (0..50)
        .map(|s| vdpdk_core::packet::udp_frame(peer, gmac, s, 200))
        .collect();
    assert_eq!(seen, expect);

    // Kernel -> guest: injected frames are steered by the guest's rule to queue 1.
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|s| ether_frame(gmac, peer, ETHERTYPE, s, 100))
        .collect();
    for f in &frames {
        // SAFETY: sending a local buffer on our bound socket.
        let n = unsafe { libc::send(sock.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
        assert_eq!(n as usize, f.len());
    }
    let r = GuestProc::parse_recv(&g.cmd("recv 40 10000 1"));
    assert_eq!(
        r[1],
        (40, digest(&frames)),
        "frames intact, in order, on queue 1"
    );
    let bs = mux.backend_stats();
    assert!(bs.opackets >= 50 && bs.ipackets >= 40, "{bs:?}");
    g.quit();
}
