//! The handshake that makes a memif interface: connect, HELLO, INIT, ADD_REGION, ADD_RING x2,
//! CONNECT, CONNECTED (memif_socket.c, client role).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::control::{self, Control};
use crate::proto::{self, Hello, Msg, VERSION};
use crate::region::{Dir, Region};
use crate::Result;

/// rte_eth_memif.h defaults: ETH_MEMIF_DEFAULT_RING_SIZE (log2) and _PKT_BUFFER_SIZE, what
/// testpmd's own memif client would use.
const LOG2_RING: u8 = 10;
pub const BUF_SIZE: u32 = 2048;
/// How long the server may take to come up (its socket exists before the port is started,
/// and until then it answers INIT with "ID not found").
const CONNECT_FOR: Duration = Duration::from_secs(20);

/// A connected memif interface: the control channel (kept open: closing it disconnects), the
/// region and the two rings' interrupt eventfds (given to the server, which may hold them).
pub struct Link {
    pub ctl: Control,
    pub region: Region,
    pub server: String,
    pub kick_c2s: OwnedFd,
    _irq_s2c: OwnedFd,
}

/// Expects one message of type `want`; a DISCONNECT becomes an error with its reason.
fn expect(ctl: &Control, want: u16, what: &str) -> Result<Msg> {
    let m = ctl.recv().map_err(|e| format!("waiting for {what}: {e}"))?;
    match m.ty() {
        t if t == want => Ok(m),
        proto::MSG_DISCONNECT => Err(format!(
            "the server disconnected: {}",
            m.disconnect_reason()
        )),
        t => Err(format!("waiting for {what}: got message type {t}")),
    }
}

/// The client's side of the handshake (memif_socket.c `memif_msg_receive`, client role): the
/// server speaks first (HELLO); then each of INIT, ADD_REGION, ADD_RING (C2S), ADD_RING (S2C)
/// is answered by an ACK before the next goes out, as DPDK's client sends one message per
/// answer; CONNECT is answered by CONNECTED once the server has mapped the region.
fn handshake(path: &Path, id: u32) -> Result<Link> {
    let ctl = Control::connect(path, Duration::from_secs(2))
        .map_err(|e| format!("connecting to {}: {e}", path.display()))?;
    let hello = Hello::parse(&expect(&ctl, proto::MSG_HELLO, "HELLO")?);
    if hello.min_version > VERSION || hello.max_version < VERSION {
        return Err(format!(
            "the server speaks memif {:#x}..{:#x}, this client {VERSION:#x}",
            hello.min_version, hello.max_version
        ));
    }
    let region = Region::create(LOG2_RING.min(hello.max_log2_ring_size), BUF_SIZE)
        .map_err(|e| format!("creating the shared region: {e}"))?;
    let kick_c2s = control::eventfd().map_err(|e| format!("eventfd: {e}"))?;
    let irq_s2c = control::eventfd().map_err(|e| format!("eventfd: {e}"))?;
    let steps = [
        (Msg::init(id, "vdpdk-memif-probe"), None, "INIT"),
        (
            Msg::add_region(0, region.size() as u64),
            Some(region.fd().as_raw_fd()),
            "ADD_REGION",
        ),
        (
            Msg::add_ring(true, 0, region.ring_offset(Dir::C2S), region.log2()),
            Some(kick_c2s.as_raw_fd()),
            "ADD_RING C2S",
        ),
        (
            Msg::add_ring(false, 0, region.ring_offset(Dir::S2C), region.log2()),
            Some(irq_s2c.as_raw_fd()),
            "ADD_RING S2C",
        ),
    ];
    for (m, fd, what) in steps {
        ctl.send(&m, fd)
            .map_err(|e| format!("sending {what}: {e}"))?;
        expect(&ctl, proto::MSG_ACK, &format!("the ACK of {what}"))?;
    }
    ctl.send(&Msg::connect("vdpdk-memif-probe"), None)
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    expect(&ctl, proto::MSG_CONNECTED, "CONNECTED")?;
    Ok(Link {
        ctl,
        region,
        server: hello.name,
        kick_c2s,
        _irq_s2c: irq_s2c,
    })
}

/// Retries the handshake until the server's port is started (or CONNECT_FOR has passed).
pub fn connect(path: &Path, id: u32) -> Result<Link> {
    let t0 = Instant::now();
    loop {
        match handshake(path, id) {
            Ok(l) => return Ok(l),
            Err(e) if t0.elapsed() > CONNECT_FOR => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
