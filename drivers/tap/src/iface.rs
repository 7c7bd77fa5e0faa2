//! The kernel side of a TAP interface: creation (optionally with virtio-net headers), and the
//! interface ioctls (up, MAC, MTU, offloads). [`crate::TapPort`] builds a port on it; the TAP
//! forwarder tool uses it directly to expose another port to the kernel.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use vdpdk_core::{Error, MacAddr, Result};

/// A TAP interface: its queue fd (non-blocking) and a control socket for ioctls.
pub struct TapInterface {
    pub(crate) fd: Arc<OwnedFd>,
    /// AF_INET datagram socket, only used for interface ioctls.
    ctl: OwnedFd,
    ifname: String,
    ifindex: u32,
}

/// `struct virtio_net_hdr` (virtio spec 1.x, 5.1.6; Linux include/uapi/linux/virtio_net.h):
/// the 10-byte header a TAP with IFF_VNET_HDR puts before every frame, little-endian on the
/// little-endian hosts this runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`: how the kernel is to segment the frame (or has merged it).
    pub gso_type: u8,
    /// Bytes of headers (L2 to L4) before the payload that segmentation repeats.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed range starts, in bytes from the start of the frame.
    pub csum_start: u16,
    /// Where the checksum goes, in bytes from `csum_start`.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Bytes of the header on the wire.
    pub const LEN: usize = 10;
    /// flags: the checksum from `csum_start` is to be computed and stored at
    /// `csum_start + csum_offset` (the field holds the pseudo-header sum).
    pub const F_NEEDS_CSUM: u8 = 1;
    /// flags: the checksums were verified.
    pub const F_DATA_VALID: u8 = 2;
    /// gso_type: not a super-frame.
    pub const GSO_NONE: u8 = 0;
    /// gso_type: TCP over IPv4 segmentation.
    pub const GSO_TCPV4: u8 = 1;
    /// gso_type: UDP fragmentation offload.
    pub const GSO_UDP: u8 = 3;
    /// gso_type: TCP over IPv6 segmentation.
    pub const GSO_TCPV6: u8 = 4;
    /// gso_type flag: the TCP segments carry ECN (CWR set on the first).
    pub const GSO_ECN: u8 = 0x80;

    /// Decodes the header at the start of `b`; None when `b` is shorter than [`Self::LEN`].
    pub fn parse(b: &[u8]) -> Option<VirtioNetHdr> {
        let b = b.get(..Self::LEN)?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// Encodes the header as the kernel expects it before a frame.
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Offloads a TAP reader can take (TUNSETOFFLOAD; include/uapi/linux/if_tun.h): frames with a
/// partial checksum (`F_NEEDS_CSUM`).
pub const TUN_F_CSUM: u32 = 0x01;
/// TCP over IPv4 super-frames (needs [`TUN_F_CSUM`]).
pub const TUN_F_TSO4: u32 = 0x02;
/// TCP over IPv6 super-frames (needs [`TUN_F_CSUM`]).
pub const TUN_F_TSO6: u32 = 0x04;
/// TCP super-frames with ECN (with [`TUN_F_TSO4`] or [`TUN_F_TSO6`]).
pub const TUN_F_TSO_ECN: u32 = 0x08;

impl TapInterface {
    /// Creates (or attaches to) TAP interface `ifname` ("" lets the kernel pick). With
    /// `vnet_hdr` every frame read or written carries a [`VirtioNetHdr`]. Needs CAP_NET_ADMIN.
    pub fn create(ifname: &str, vnet_hdr: bool) -> Result<TapInterface> {
        check_ifname(ifname)?;
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| Error::Device(format!("open /dev/net/tun: {e}")))?;
        let tap = OwnedFd::from(file);
        let mut ifr = ifreq(ifname);
        let vnet = if vnet_hdr { libc::IFF_VNET_HDR } else { 0 };
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | vnet) as libc::c_short;
        // TUNSETIFF is a c_int on musl and a c_ulong on glibc.
        #[allow(clippy::unnecessary_cast)]
        let tunsetiff = libc::TUNSETIFF as libc::c_ulong;
        ifr_ioctl(
            tap.as_raw_fd(),
            tunsetiff,
            &mut ifr,
            &format!("TUNSETIFF '{ifname}'"),
        )?;
        let name: Vec<u8> = ifr
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        let ifname = String::from_utf8_lossy(&name).into_owned();
        // SAFETY: socket takes no pointers; the result is checked before use.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: s is a fresh descriptor nothing else owns.
        let ctl = unsafe { OwnedFd::from_raw_fd(s) };
        let mut ifr = ifreq(&ifname);
        ifr_ioctl(
            ctl.as_raw_fd(),
            libc::SIOCGIFINDEX,
            &mut ifr,
            "SIOCGIFINDEX",
        )?;
        // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
        let ifindex = unsafe { ifr.ifr_ifru.ifru_ifindex } as u32;
        Ok(TapInterface {
            fd: Arc::new(tap),
            ctl,
            ifname,
            ifindex,
        })
    }

    /// The queue fd (non-blocking): read a frame, write a frame.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    /// The interface's name (`tapN` when the kernel picked it).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    /// The interface's index (for AF_PACKET binds, netlink, ...).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn flags(&self) -> Result<libc::c_short> {
        let mut ifr = ifreq(&self.ifname);
        ifr_ioctl(
            self.ctl.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            &mut ifr,
            "SIOCGIFFLAGS",
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        Ok(unsafe { ifr.ifr_ifru.ifru_flags })
    }

    /// Whether the interface is administratively up (IFF_UP).
    pub fn is_up(&self) -> bool {
        self.flags()
            .is_ok_and(|f| f & libc::IFF_UP as libc::c_short != 0)
    }

    /// Sets IFF_UP: frames only flow through an interface that is up.
    pub fn set_up(&self) -> Result<()> {
        let mut ifr = ifreq(&self.ifname);
        ifr.ifr_ifru.ifru_flags = self.flags()? | libc::IFF_UP as libc::c_short;
        ifr_ioctl(
            self.ctl.as_raw_fd(),
            libc::SIOCSIFFLAGS,
            &mut ifr,
            "SIOCSIFFLAGS",
        )
    }

    /// The kernel interface's MAC.
    pub fn mac(&self) -> Result<MacAddr> {
        let mut ifr = ifreq(&self.ifname);
        ifr_ioctl(
            self.ctl.as_raw_fd(),
            libc::SIOCGIFHWADDR,
            &mut ifr,
            "SIOCGIFHWADDR",
        )?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        let mut m = [0u8; 6];
        for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
            *d = *s as u8;
        }
        Ok(MacAddr(m))
    }

    /// Gives the kernel interface the MAC `mac`.
    pub fn set_mac(&self, mac: MacAddr) -> Result<()> {
        let mut ifr = ifreq(&self.ifname);
        // SAFETY: writing the hwaddr member of the union of our own ifreq.
        unsafe {
            ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (d, s) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac.0) {
                *d = s as libc::c_char;
            }
        }
        ifr_ioctl(
            self.ctl.as_raw_fd(),
            libc::SIOCSIFHWADDR,
            &mut ifr,
            "SIOCSIFHWADDR",
        )
    }

    /// The MTU (1500 unless someone changed it).
    pub fn mtu(&self) -> u16 {
        let mut ifr = ifreq(&self.ifname);
        if ifr_ioctl(self.ctl.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr, "").is_err() {
            return 1500;
        }
        // SAFETY: SIOCGIFMTU filled the mtu member of the union.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
        mtu.clamp(68, u16::MAX as i32) as u16
    }

    /// Sets the interface MTU (L3 bytes; SIOCSIFMTU, needs CAP_NET_ADMIN).
    pub fn set_mtu(&self, mtu: u16) -> Result<()> {
        let mut ifr = ifreq(&self.ifname);
        ifr.ifr_ifru.ifru_mtu = mtu as i32;
        ifr_ioctl(
            self.ctl.as_raw_fd(),
            libc::SIOCSIFMTU,
            &mut ifr,
            "SIOCSIFMTU",
        )
    }

    /// Tells the kernel which offloads the reader handles (`TUN_F_*`): with TUN_F_CSUM it may
    /// send frames whose checksum is still to be done, with TSO4/6 TCP super-frames up to 64 KiB.
    pub fn set_offload(&self, flags: u32) -> Result<()> {
        // SAFETY: TUNSETOFFLOAD takes an unsigned long by value.
        let r = unsafe { libc::ioctl(self.fd(), libc::TUNSETOFFLOAD as _, flags as libc::c_ulong) };
        if r < 0 {
            return Err(Error::Device(format!(
                "TUNSETOFFLOAD {flags:#x}: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

/// A zeroed `ifreq` carrying `name`.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (integers, arrays, a union of those and a raw pointer);
    // all-zero bytes are a valid value of each.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr
}

/// Runs an interface ioctl that reads or writes `ifr`.
fn ifr_ioctl(fd: RawFd, req: libc::c_ulong, ifr: &mut libc::ifreq, what: &str) -> Result<()> {
    // SAFETY: every request used here (TUNSETIFF, SIOC[GS]IF*) reads/writes one `struct ifreq`,
    // and `ifr` is a valid, exclusively borrowed one.
    let r = unsafe { libc::ioctl(fd, req as _, ifr as *mut libc::ifreq) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(Error::Device(format!("{what}: {e}")));
    }
    Ok(())
}

fn check_ifname(name: &str) -> Result<()> {
    if name.len() >= libc::IFNAMSIZ
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        return Err(Error::InvalidArg(format!(
            "interface name '{name}': at most {} bytes, no '/', ':', NUL or spaces",
            libc::IFNAMSIZ - 1
        )));
    }
    Ok(())
}
