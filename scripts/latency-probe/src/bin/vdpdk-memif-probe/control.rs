//! The control channel: a unix SOCK_SEQPACKET connection to the server's socket, one 128-byte
//! message per packet, file descriptors passed as SCM_RIGHTS (memif_socket.c
//! `memif_connect_client`, `memif_msg_send`, `memif_msg_receive`).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::time::Duration;

use crate::proto::{Msg, MSG_SIZE};

pub struct Control {
    fd: OwnedFd,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Control {
    /// Connects to a filesystem socket (testpmd's `socket-abstract=no`); receives time out
    /// after `timeout` so that a silent server cannot hang the handshake.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Control> {
        let p = path.as_os_str().as_bytes();
        // SAFETY: an all-zero sockaddr_un is valid (AF_UNSPEC, empty path).
        let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
        if p.len() >= addr.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket path too long",
            ));
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, &s) in addr.sun_path.iter_mut().zip(p) {
            *d = s as libc::c_char;
        }
        // SAFETY: plain socket(2); the result is checked and owned right away.
        let fd = unsafe {
            OwnedFd::from_raw_fd(check(libc::socket(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
            ))?)
        };
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt/connect with pointers to live values of the sizes passed.
        unsafe {
            check(libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                ptr::addr_of!(tv).cast(),
                mem::size_of_val(&tv) as libc::socklen_t,
            ))?;
            check(libc::connect(
                fd.as_raw_fd(),
                ptr::addr_of!(addr).cast(),
                mem::size_of_val(&addr) as libc::socklen_t,
            ))?;
        }
        Ok(Control { fd })
    }

    /// Sends one message, with `pass` as SCM_RIGHTS if given.
    pub fn send(&self, m: &Msg, pass: Option<RawFd>) -> io::Result<()> {
        let mut iov = libc::iovec {
            iov_base: m.0.as_ptr() as *mut libc::c_void,
            iov_len: MSG_SIZE,
        };
        // Room for one cmsghdr with one int, u64-aligned as cmsghdr wants.
        let mut ctl = [0u64; 4];
        // SAFETY: an all-zero msghdr is valid (no name, no control).
        let mut mh: libc::msghdr = unsafe { mem::zeroed() };
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        if let Some(fd) = pass {
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic; CMSG_FIRSTHDR returns a header
            // inside `ctl` (msg_controllen covers it, 24 <= 32 bytes), CMSG_DATA a pointer
            // inside it with room for one int.
            unsafe {
                let space = libc::CMSG_SPACE(mem::size_of::<RawFd>() as u32) as usize;
                assert!(space <= mem::size_of_val(&ctl));
                mh.msg_control = ctl.as_mut_ptr().cast();
                mh.msg_controllen = space;
                let c = libc::CMSG_FIRSTHDR(&mh);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<RawFd>() as u32) as usize;
                libc::CMSG_DATA(c).cast::<RawFd>().write_unaligned(fd);
            }
        }
        // SAFETY: mh points at iov, m and ctl, all alive for the call.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize == MSG_SIZE => Ok(()),
            n => Err(io::Error::other(format!(
                "short send: {n} of {MSG_SIZE} bytes"
            ))),
        }
    }

    fn recv_flags(&self, flags: libc::c_int) -> io::Result<Msg> {
        let mut m = Msg([0; MSG_SIZE]);
        // SAFETY: recv into the message's own 128 bytes. The server sends no descriptors
        // (memif_socket.c only passes them client -> server), so none can leak here.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                m.0.as_mut_ptr().cast(),
                MSG_SIZE,
                flags,
            )
        };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            n if n as usize == MSG_SIZE => Ok(m),
            n => Err(io::Error::other(format!(
                "message of {n} bytes, memif's are {MSG_SIZE}"
            ))),
        }
    }

    /// Waits for the next message (up to the timeout given to connect).
    pub fn recv(&self) -> io::Result<Msg> {
        self.recv_flags(0)
    }

    /// A message if one is waiting.
    pub fn try_recv(&self) -> io::Result<Option<Msg>> {
        match self.recv_flags(libc::MSG_DONTWAIT) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A non-blocking eventfd: memif wants one per ring (the interrupt the ring's sender writes
/// when the receiver has not masked it); the server refuses a ring without one.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd(2); the result is checked and owned right away.
    Ok(unsafe {
        OwnedFd::from_raw_fd(check(libc::eventfd(
            0,
            libc::EFD_NONBLOCK | libc::EFD_CLOEXEC,
        ))?)
    })
}

/// Writes 1 to an eventfd: the interrupt to a receiver that asked for it.
pub fn kick(fd: &OwnedFd) {
    let one = 1u64;
    // SAFETY: an 8-byte write from a live u64. A full counter (EAGAIN) only means the peer
    // has interrupts pending already; nothing to do about it.
    unsafe { libc::write(fd.as_raw_fd(), ptr::addr_of!(one).cast(), 8) };
}
