//! The vfio-user message layer as host-mux runs it: the patched `vfio_user::Server` (the
//! workspace's third_party copy) serving a fresh `VdpdkDevice`, fed the fuzz input as the
//! byte stream of one client connection.
//!
//! The input is sent as is. The client only decides which file descriptors ride along, the way
//! a guest's VMM attaches them, reading each message's header: the stream is cut at each
//! header's `message_size` (when it fits), and the unused `error` field of a request picks the
//! fds sent with it: DMA_MAP gets a sealed memfd / nothing / an unsealed memfd / an eventfd
//! (`error & 3`), SET_IRQS gets `error & 3` eventfds (pipes if `error & 4`), any other
//! message gets an eventfd if `error & 8`.
//!
//! Every session ends (the client shuts its side down after the input and reads replies until
//! the server closes), then the device is reset as host-mux resets it after a session; the
//! device must be back to nothing and no fd may have leaked.
//!
//! `VDPDK_FUZZ_DEBUG=1` prints where each session left the device (for writing seeds).
//! `VDPDK_FUZZ_CATCH_PANICS=1` treats a panic inside `Server::run` as host-mux does (caught
//! per session, device reset) instead of as a crash, to keep a campaign going past a known
//! panic; by default a panic is a finding.
#![no_main]

use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::{mpsc, Mutex, OnceLock};

use host_mux::device::VdpdkDevice;
use libfuzzer_sys::fuzz_target;
use vdpdk_fuzz::{eventfd, file_of_kind, new_device, open_fds, pipe_fd, sealed_memfd};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

struct Endpoint {
    addr: SocketAddr,
    listener: UnixListener,
}

/// One listening socket per process (abstract namespace: nothing to clean up).
fn endpoint() -> &'static Endpoint {
    static E: OnceLock<Endpoint> = OnceLock::new();
    E.get_or_init(|| {
        let name = format!("vdpdk-fuzz-vfu-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
        let listener = UnixListener::bind_addr(&addr).expect("bind");
        Endpoint { addr, listener }
    })
}

const CMD_DMA_MAP: u16 = 2;
const CMD_SET_IRQS: u16 = 8;

/// The messages of `data` (cut at header sizes) and the fds each carries.
fn chunks(data: &[u8]) -> Vec<(&[u8], Vec<std::fs::File>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 16 {
            out.push((rest, Vec::new()));
            break;
        }
        let command = u16::from_le_bytes([rest[2], rest[3]]);
        let size = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
        let sel = u32::from_le_bytes(rest[12..16].try_into().unwrap());
        let len = if (16..=rest.len()).contains(&size) {
            size
        } else {
            rest.len()
        };
        let fds = match command {
            CMD_DMA_MAP => match sel & 3 {
                0 => vec![sealed_memfd()],
                1 => vec![],
                2 => vec![file_of_kind(1)],
                _ => vec![eventfd()],
            },
            CMD_SET_IRQS => (0..sel & 3)
                .map(|_| if sel & 4 != 0 { pipe_fd() } else { eventfd() })
                .collect(),
            _ if sel & 8 != 0 => vec![eventfd()],
            _ => vec![],
        };
        out.push((&rest[..len], fds));
        pos += len;
    }
    out
}

/// The guest side: sends the messages, then shuts down its writing side, reading (and
/// dropping) replies into `buf` all along until the server closes the connection.
fn client(stream: UnixStream, data: &[u8], buf: &mut [u8]) {
    stream.set_nonblocking(true).expect("nonblocking");
    let msgs = chunks(data);
    let mut next = 0; // message being sent
    let mut sent = 0; // bytes of it sent
    let mut writing = true;
    let mut s = &stream;
    loop {
        if writing && next == msgs.len() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            writing = false;
        }
        let mut pfd = libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN | if writing { libc::POLLOUT } else { 0 },
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 5_000) };
        assert!(r >= 0 || std::io::Error::last_os_error().kind() == ErrorKind::Interrupted);
        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match s.read(buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return, // reset by the server
            }
        }
        if writing && pfd.revents & libc::POLLOUT != 0 {
            let (bytes, files) = &msgs[next];
            let fds: Vec<i32> = match sent {
                0 => files.iter().map(|f| f.as_raw_fd()).collect(),
                _ => Vec::new(),
            };
            match stream.send_with_fds(&[&bytes[sent..]], &fds) {
                Ok(n) => {
                    sent += n;
                    if sent == bytes.len() {
                        next += 1;
                        sent = 0;
                    }
                }
                Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EINTR => {}
                // The server closed the connection: nothing more to send.
                Err(_) => writing = false,
            }
        }
    }
}

/// A session for the guest thread: its connection and the input to send.
type Job = (UnixStream, Vec<u8>);

/// The guest side runs on one long-lived thread (a thread per input cost more than most
/// sessions), fed a session at a time; `session` waits for its answer before it returns.
struct GuestThread {
    jobs: Mutex<mpsc::Sender<Job>>,
    done: Mutex<mpsc::Receiver<()>>,
}

fn guest_thread() -> &'static GuestThread {
    static G: OnceLock<GuestThread> = OnceLock::new();
    G.get_or_init(|| {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            for (stream, data) in job_rx {
                client(stream, &data, &mut buf);
                if done_tx.send(()).is_err() {
                    return;
                }
            }
        });
        GuestThread {
            jobs: Mutex::new(job_tx),
            done: Mutex::new(done_rx),
        }
    })
}

fn catch_panics() -> bool {
    static C: OnceLock<bool> = OnceLock::new();
    *C.get_or_init(|| std::env::var_os("VDPDK_FUZZ_CATCH_PANICS").is_some_and(|v| v == "1"))
}

fn session(data: &[u8]) {
    let (g, mut dev) = new_device();
    let ep = endpoint();
    let listener: OwnedFd = ep.listener.try_clone().expect("dup listener").into();
    let mut server =
        vfio_user::Server::from_owned_fd(listener, true, VdpdkDevice::irqs(), dev.regions());
    // The per-VM message limit (`limits.message_bytes`, docs/ARCHITECTURE.md "Resources").
    server.set_max_message_size(g.limits.message_bytes);
    let stream = UnixStream::connect_addr(&ep.addr).expect("connect");
    let guest = guest_thread();
    guest
        .jobs
        .lock()
        .unwrap()
        .send((stream, data.to_vec()))
        .expect("guest thread");
    if catch_panics() {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.run(&mut dev)));
        drop(server);
        if r.is_err() {
            // The server's end of the connection was dropped while unwinding.
        }
    } else {
        let _ = server.run(&mut dev);
        drop(server);
    }
    guest.done.lock().unwrap().recv().expect("guest thread");
    if std::env::var_os("VDPDK_FUZZ_DEBUG").is_some() {
        // For writing seeds: where the session left the device.
        let (rules, irqs) = {
            let rx = g.rx.lock();
            (rx.rules.len(), rx.irq_fds.iter().flatten().count())
        };
        eprintln!(
            "session end: attaches {} dma_regions {} running {} rules {} irq_fds {} stats {:?}",
            g.attaches.load(std::sync::atomic::Ordering::Relaxed),
            g.dma_regions(),
            g.running(),
            rules,
            irqs,
            g.stats_snapshot()
        );
    }
    // What host-mux does after every session (serve_sessions): back to nothing.
    dev.reset_device();
    assert_eq!(g.dma_regions(), 0);
    assert!(!g.running());
    assert!(g.rx.lock().irq_fds.is_empty());
    assert!(g.rx.lock().rules.is_empty());
}

fuzz_target!(|data: &[u8]| {
    vdpdk_fuzz::init();
    endpoint();
    guest_thread();
    if catch_panics() {
        vdpdk_fuzz::let_panics_unwind();
    }
    let before = open_fds();
    session(data);
    assert_eq!(open_fds(), before, "a session leaked file descriptors");
});
