//! The vfio-user server (the patched `vfio_user` crate in third_party/) against a hostile
//! client: every malformed message gets an error reply with a real errno, the server neither
//! panics nor loses its place in the stream, and the next valid message is answered. The
//! crate's own client still talks to it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use vfio_bindings::bindings::vfio::*;
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, Server, ServerBackend, ServerRegion};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

// vfio-user commands.
const VERSION: u16 = 1;
const DMA_MAP: u16 = 2;
const DMA_UNMAP: u16 = 3;
const DEVICE_GET_INFO: u16 = 4;
const DEVICE_GET_REGION_INFO: u16 = 5;
const GET_IRQ_INFO: u16 = 7;
const SET_IRQS: u16 = 8;
const REGION_READ: u16 = 9;
const REGION_WRITE: u16 = 10;
const DMA_READ: u16 = 11;

const FLAG_REPLY: u32 = 1;
const FLAG_ERROR: u32 = 1 << 5;

const HEADER: usize = 16;
const REGION_ACCESS: usize = HEADER + 16;

/// Region 0: 4 KiB of memory the backend serves. Region 1: absent (size 0). Region 2: as
/// large as the address space, reads as 0xee, ignores writes (so only the server's own limits
/// stop an access to it).
const REGION_SIZE: u64 = 0x1000;
const HUGE_REGION: u32 = 2;
/// Backend writes here fail with EPERM, and here with an error that has no errno.
const EPERM_OFFSET: u64 = 0x100;
const NO_ERRNO_OFFSET: u64 = 0x104;

#[derive(Default)]
struct Backend {
    mem: Vec<u8>,
    dma_maps: Vec<(u64, u64, u64, bool)>,
    dma_unmaps: usize,
    irq_sets: Vec<(u32, u32, u32, u32, usize)>,
    resets: usize,
    huge_writes: usize,
}

impl ServerBackend for Backend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        if region == HUGE_REGION {
            data.fill(0xee);
            return Ok(());
        }
        assert_eq!(
            region, 0,
            "the server only passes accesses to regions that exist"
        );
        let start = offset as usize;
        data.copy_from_slice(&self.mem[start..start + data.len()]);
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if region == HUGE_REGION {
            self.huge_writes += 1;
            return Ok(());
        }
        assert_eq!(
            region, 0,
            "the server only passes accesses to regions that exist"
        );
        match offset {
            EPERM_OFFSET => Err(std::io::Error::from_raw_os_error(libc::EPERM)),
            NO_ERRNO_OFFSET => Err(std::io::Error::other("refused")),
            _ => {
                let start = offset as usize;
                self.mem[start..start + data.len()].copy_from_slice(data);
                Ok(())
            }
        }
    }

    fn dma_map(
        &mut self,
        _flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        self.dma_maps.push((offset, address, size, fd.is_some()));
        Ok(())
    }

    fn dma_unmap(
        &mut self,
        _flags: DmaUnmapFlags,
        _address: u64,
        _size: u64,
    ) -> std::io::Result<()> {
        self.dma_unmaps += 1;
        Ok(())
    }

    fn reset(&mut self) -> std::io::Result<()> {
        self.resets += 1;
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        self.irq_sets.push((index, flags, start, count, fds.len()));
        Ok(())
    }
}

fn region(index: u32, size: u64) -> ServerRegion {
    ServerRegion {
        region_info: vfio_region_info {
            argsz: std::mem::size_of::<vfio_region_info>() as u32,
            flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE,
            index,
            cap_offset: 0,
            size,
            offset: 0,
        },
        sparse_areas: Vec::new(),
        mmap_fd: None,
    }
}

/// A server on its own socket, serving one client in a thread.
struct Running {
    path: PathBuf,
    thread: JoinHandle<(Result<(), vfio_user::Error>, Backend)>,
}

fn serve(max_message_size: Option<usize>) -> Running {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "vfio-user-server-test-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    // The server looks interrupts up by their position in this list.
    let irqs = (0..=VFIO_PCI_MSIX_IRQ_INDEX)
        .map(|index| IrqInfo {
            index,
            flags: VFIO_IRQ_INFO_EVENTFD,
            count: if index == VFIO_PCI_MSIX_IRQ_INDEX {
                4
            } else {
                0
            },
        })
        .collect();
    let regions = vec![
        region(0, REGION_SIZE),
        region(1, 0),
        region(HUGE_REGION, u64::MAX),
    ];
    let mut server = Server::new(&path, true, irqs, regions).expect("server socket");
    if let Some(size) = max_message_size {
        server.set_max_message_size(size);
    }
    let thread = std::thread::spawn(move || {
        let mut backend = Backend {
            mem: vec![0; REGION_SIZE as usize],
            ..Default::default()
        };
        let result = server.run(&mut backend);
        (result, backend)
    });
    Running { path, thread }
}

impl Running {
    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Waits for the session to end and returns how it ended and what the backend saw.
    fn finish(self) -> (Result<(), vfio_user::Error>, Backend) {
        self.thread
            .join()
            .expect("the server thread does not panic")
    }

    /// Waits for the session to end, which must be cleanly, and returns the backend.
    fn finish_ok(self) -> Backend {
        let (result, backend) = self.finish();
        result.expect("the session ends without error");
        backend
    }
}

fn header(id: u16, command: u16, message_size: usize) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_ne_bytes());
    m.extend_from_slice(&command.to_ne_bytes());
    m.extend_from_slice(&(message_size as u32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // flags: command
    m.extend_from_slice(&0u32.to_ne_bytes()); // error
    m
}

/// A message of `command` with `body` after the header, its size set to fit.
fn message(id: u16, command: u16, body: &[u8]) -> Vec<u8> {
    let mut m = header(id, command, HEADER + body.len());
    m.extend_from_slice(body);
    m
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

fn region_access(offset: u64, region: u32, count: u32) -> Vec<u8> {
    let mut b = offset.to_ne_bytes().to_vec();
    b.extend_from_slice(&region.to_ne_bytes());
    b.extend_from_slice(&count.to_ne_bytes());
    b
}

fn dma_map_body(address: u64, size: u64) -> Vec<u8> {
    let mut b = u32s(&[32, DmaMapFlags::READ_WRITE.bits()]);
    for v in [0u64, address, size] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b
}

#[derive(Debug)]
struct Reply {
    id: u16,
    command: u16,
    flags: u32,
    error: u32,
    body: Vec<u8>,
}

fn recv(s: &mut UnixStream) -> Reply {
    let mut h = [0u8; HEADER];
    s.read_exact(&mut h).expect("a reply header");
    let u32_at = |i: usize| u32::from_ne_bytes(h[i..i + 4].try_into().unwrap());
    let size = u32_at(4) as usize;
    assert!(size >= HEADER, "reply size {size}");
    let mut body = vec![0; size - HEADER];
    s.read_exact(&mut body).expect("a reply body");
    Reply {
        id: u16::from_ne_bytes([h[0], h[1]]),
        command: u16::from_ne_bytes([h[2], h[3]]),
        flags: u32_at(8),
        error: u32_at(12),
        body,
    }
}

/// Sends `msg` and expects an error reply to it carrying `errno`.
fn expect_error(s: &mut UnixStream, msg: &[u8], errno: i32) {
    s.write_all(msg).unwrap();
    expect_error_reply(s, msg, errno);
}

fn expect_error_reply(s: &mut UnixStream, msg: &[u8], errno: i32) {
    let r = recv(s);
    assert_eq!(r.id, u16::from_ne_bytes([msg[0], msg[1]]), "{r:?}");
    assert_eq!(r.command, u16::from_ne_bytes([msg[2], msg[3]]), "{r:?}");
    assert_eq!(r.flags, FLAG_REPLY | FLAG_ERROR, "{r:?}");
    assert_eq!(r.error, errno as u32, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
}

/// The server is still in step: DEVICE_GET_INFO gets its proper answer.
fn expect_device_info(s: &mut UnixStream, id: u16) {
    s.write_all(&message(id, DEVICE_GET_INFO, &u32s(&[16, 0, 0, 0])))
        .unwrap();
    let r = recv(s);
    assert_eq!(
        (r.id, r.command, r.flags, r.error),
        (id, DEVICE_GET_INFO, FLAG_REPLY, 0)
    );
    let flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET;
    assert_eq!(
        r.body,
        u32s(&[16, flags, 3, 3]),
        "argsz, flags, 3 regions, 3 irqs"
    );
}

/// The session's result and backend after the client hangs up.
fn hang_up(running: Running, s: UnixStream) -> Backend {
    drop(s);
    running.finish_ok()
}

#[test]
fn version_without_nul_is_refused() {
    let running = serve(None);
    let mut s = running.connect();
    let mut body = vec![0, 0, 1, 0]; // major 0, minor 1
    body.extend_from_slice(b"{\"capabilities\":{}}");
    expect_error(&mut s, &message(1, VERSION, &body), libc::EINVAL);
    expect_device_info(&mut s, 2);
    hang_up(running, s);
}

#[test]
fn version_with_bad_json_or_utf8_is_refused() {
    let running = serve(None);
    let mut s = running.connect();
    for (id, data) in [
        (1, &b"{\"capabilities\":\0"[..]),
        (2, b"{\"capabilities\":{\"\xff\":1}}\0"),
        (3, b"{}\0{}\0"),
    ] {
        let mut body = vec![0, 0, 1, 0];
        body.extend_from_slice(data);
        expect_error(&mut s, &message(id, VERSION, &body), libc::EINVAL);
    }
    expect_device_info(&mut s, 4);
    hang_up(running, s);
}

#[test]
fn version_shorter_than_its_struct_is_refused() {
    let running = serve(None);
    let mut s = running.connect();
    // Size 18: a header and half of major/minor. Size 16: no version at all.
    expect_error(&mut s, &message(1, VERSION, &[0, 0]), libc::EINVAL);
    expect_error(&mut s, &message(2, VERSION, &[]), libc::EINVAL);
    expect_device_info(&mut s, 3);
    hang_up(running, s);
}

#[test]
fn version_is_negotiated_and_advertises_the_transfer_limit() {
    let running = serve(Some(REGION_ACCESS + 4096));
    let mut s = running.connect();
    let mut body = vec![0, 0, 1, 0];
    body.extend_from_slice(b"{\"capabilities\":{\"max_msg_fds\":8}}\0");
    s.write_all(&message(7, VERSION, &body)).unwrap();
    let r = recv(&mut s);
    assert_eq!(
        (r.id, r.command, r.flags, r.error),
        (7, VERSION, FLAG_REPLY, 0)
    );
    let json = std::str::from_utf8(&r.body[4..r.body.len() - 1]).unwrap();
    assert_eq!(r.body.last(), Some(&0));
    assert!(json.contains("\"max_data_xfer_size\":4096"), "{json}");
    // The version data is optional.
    s.write_all(&message(8, VERSION, &[0, 0, 1, 0])).unwrap();
    assert_eq!(recv(&mut s).error, 0);
    expect_device_info(&mut s, 9);
    hang_up(running, s);
}

#[test]
fn region_read_of_a_gibibyte_is_refused_without_allocating_it() {
    let running = serve(None);
    let mut s = running.connect();
    // The region is large enough: only the 1 MiB transfer limit stops these.
    for (id, count) in [(1, 1 << 30), (2, (1 << 20) + 1), (3, u32::MAX)] {
        expect_error(
            &mut s,
            &message(id, REGION_READ, &region_access(0, HUGE_REGION, count)),
            libc::EINVAL,
        );
    }
    // Past the end of a small region.
    expect_error(
        &mut s,
        &message(4, REGION_READ, &region_access(REGION_SIZE - 2, 0, 4)),
        libc::EINVAL,
    );
    // 1 MiB is allowed.
    s.write_all(&message(
        5,
        REGION_READ,
        &region_access(0, HUGE_REGION, 1 << 20),
    ))
    .unwrap();
    let r = recv(&mut s);
    assert_eq!((r.id, r.flags, r.error), (5, FLAG_REPLY, 0));
    assert_eq!(r.body.len(), 16 + (1 << 20));
    assert!(r.body[16..].iter().all(|&b| b == 0xee));
    expect_device_info(&mut s, 6);
    hang_up(running, s);
}

#[test]
fn region_read_at_an_offset_near_u64_max_is_refused() {
    let running = serve(None);
    let mut s = running.connect();
    // offset + count wraps around, in a region as large as the address space and in a small one.
    for (id, offset) in [(1, u64::MAX), (2, u64::MAX - 2)] {
        for region in [HUGE_REGION, 0] {
            expect_error(
                &mut s,
                &message(id, REGION_READ, &region_access(offset, region, 4)),
                libc::EINVAL,
            );
            let mut body = region_access(offset, region, 4);
            body.extend_from_slice(&[1, 2, 3, 4]);
            expect_error(&mut s, &message(id, REGION_WRITE, &body), libc::EINVAL);
        }
    }
    expect_error(
        &mut s,
        &message(3, REGION_READ, &region_access(REGION_SIZE, 0, 4)),
        libc::EINVAL,
    );
    // The last bytes of the huge region are fine.
    s.write_all(&message(
        4,
        REGION_READ,
        &region_access(u64::MAX - 4, HUGE_REGION, 4),
    ))
    .unwrap();
    let r = recv(&mut s);
    assert_eq!((r.id, r.error, &r.body[16..]), (4, 0, &[0xee; 4][..]));
    expect_device_info(&mut s, 5);
    let backend = hang_up(running, s);
    assert_eq!(backend.huge_writes, 0);
}

#[test]
fn region_write_to_a_bad_region_is_consumed_whole() {
    let running = serve(None);
    let mut s = running.connect();
    // The data of the refused write looks like a DEVICE_GET_INFO header: if the server did
    // not consume it, it would answer it.
    let mut body = region_access(0, 7, 16);
    body.extend_from_slice(&message(99, DEVICE_GET_INFO, &[]));
    let write = message(1, REGION_WRITE, &body);
    assert_eq!(write.len(), REGION_ACCESS + 16);
    expect_error(&mut s, &write, libc::EINVAL);
    // Region 1 exists but is empty.
    let mut body = region_access(0, 1, 4);
    body.extend_from_slice(&[1, 2, 3, 4]);
    expect_error(&mut s, &message(2, REGION_WRITE, &body), libc::EINVAL);
    expect_device_info(&mut s, 3);
    // A valid write lands and reads back.
    let mut body = region_access(0x20, 0, 4);
    body.extend_from_slice(&[9, 8, 7, 6]);
    s.write_all(&message(4, REGION_WRITE, &body)).unwrap();
    let r = recv(&mut s);
    assert_eq!((r.id, r.flags, r.error), (4, FLAG_REPLY, 0));
    s.write_all(&message(5, REGION_READ, &region_access(0x20, 0, 4)))
        .unwrap();
    let r = recv(&mut s);
    assert_eq!((r.id, r.flags, r.error), (5, FLAG_REPLY, 0));
    assert_eq!(&r.body[16..], &[9, 8, 7, 6]);
    let backend = hang_up(running, s);
    assert_eq!(&backend.mem[0x20..0x24], &[9, 8, 7, 6]);
    assert!(backend.mem[..0x20].iter().all(|&b| b == 0));
}

#[test]
fn region_write_whose_count_disagrees_with_its_data_is_refused() {
    let running = serve(None);
    let mut s = running.connect();
    for (id, count, data_len) in [(1u16, 8u32, 4usize), (2, 4, 8), (3, u32::MAX, 4)] {
        let mut body = region_access(0, 0, count);
        body.extend(std::iter::repeat_n(0xaa, data_len));
        expect_error(&mut s, &message(id, REGION_WRITE, &body), libc::EINVAL);
    }
    expect_device_info(&mut s, 4);
    let backend = hang_up(running, s);
    assert!(backend.mem.iter().all(|&b| b == 0), "nothing was written");
}

#[test]
fn body_shorter_than_the_command_is_refused() {
    let running = serve(None);
    let mut s = running.connect();
    let truncated = [
        (REGION_READ, region_access(0, 0, 4)[..8].to_vec()),
        (REGION_WRITE, region_access(0, 0, 0)[..12].to_vec()),
        (DMA_MAP, dma_map_body(0x1000, 0x1000)[..20].to_vec()),
        (DMA_UNMAP, u32s(&[24, 0, 0])),
        (DEVICE_GET_INFO, u32s(&[16])),
        (DEVICE_GET_REGION_INFO, u32s(&[32, 0, 0, 0])),
        (GET_IRQ_INFO, u32s(&[16, 0])),
        (SET_IRQS, u32s(&[20, 0, 0, 0])),
    ];
    for (id, (command, body)) in (1..).zip(truncated) {
        expect_error(&mut s, &message(id, command, &body), libc::EINVAL);
    }
    expect_device_info(&mut s, 100);
    let backend = hang_up(running, s);
    assert!(backend.dma_maps.is_empty() && backend.irq_sets.is_empty());
    assert_eq!(backend.dma_unmaps, 0);
}

#[test]
fn message_size_below_the_header_is_refused() {
    let running = serve(None);
    let mut s = running.connect();
    for (id, size) in [(1, 0), (2, 8), (3, HEADER - 1)] {
        expect_error(&mut s, &header(id, DEVICE_GET_INFO, size), libc::EINVAL);
    }
    expect_device_info(&mut s, 4);
    hang_up(running, s);
}

#[test]
fn message_above_the_limit_is_drained_and_refused() {
    let running = serve(None);
    let mut s = running.connect();
    // 2 MiB of REGION_WRITE, twice the default limit; its data is made of DEVICE_GET_INFO
    // headers that would be answered if the server lost its place.
    let count = 2 << 20;
    let mut body = region_access(0, 0, count as u32);
    let bait = message(99, DEVICE_GET_INFO, &u32s(&[16, 0, 0, 0]));
    while body.len() < 16 + count {
        body.extend_from_slice(&bait);
    }
    body.truncate(16 + count);
    let msg = message(1, REGION_WRITE, &body);
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&msg).unwrap())
    };
    expect_error_reply(&mut s, &message(1, REGION_WRITE, &[]), libc::EINVAL);
    writer.join().unwrap();
    expect_device_info(&mut s, 2);
    hang_up(running, s);
}

#[test]
fn lower_limit_set_on_the_server_refuses_larger_messages() {
    let running = serve(Some(REGION_ACCESS + 64));
    let mut s = running.connect();
    s.write_all(&message(1, REGION_READ, &region_access(0, 0, 64)))
        .unwrap();
    let r = recv(&mut s);
    assert_eq!((r.flags, r.error, r.body.len()), (FLAG_REPLY, 0, 16 + 64));
    expect_error(
        &mut s,
        &message(2, REGION_READ, &region_access(0, 0, 65)),
        libc::EINVAL,
    );
    let mut body = region_access(0, 0, 65);
    body.extend_from_slice(&[0; 65]);
    expect_error(&mut s, &message(3, REGION_WRITE, &body), libc::EINVAL);
    expect_device_info(&mut s, 4);
    let backend = hang_up(running, s);
    assert!(backend.mem.iter().all(|&b| b == 0), "nothing was written");
}

#[test]
fn message_size_of_4_gib_ends_only_with_the_connection() {
    let running = serve(None);
    let mut s = running.connect();
    // The server drains what it claims in small pieces rather than allocating it; the client
    // gives up after a little and hangs up.
    let mut msg = header(1, REGION_WRITE, u32::MAX as usize);
    msg.extend_from_slice(&[0; 4096]);
    s.write_all(&msg).unwrap();
    drop(s);
    let (result, backend) = running.finish();
    assert!(
        matches!(result, Err(vfio_user::Error::StreamRead(_))),
        "{result:?}"
    );
    assert!(backend.mem.iter().all(|&b| b == 0));
}

#[test]
fn unknown_and_unsupported_commands_are_refused_with_enotsup() {
    let running = serve(None);
    let mut s = running.connect();
    expect_error(&mut s, &message(1, 0x7777, &[1, 2, 3]), libc::ENOTSUP);
    expect_error(&mut s, &message(2, 0, &[]), libc::ENOTSUP);
    expect_error(&mut s, &message(3, DMA_READ, &[0; 24]), libc::EOPNOTSUPP);
    // Boolean interrupt data is not supported; its bytes are consumed all the same.
    let set = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
    let mut body = u32s(&[24, set, VFIO_PCI_MSIX_IRQ_INDEX, 0, 4]);
    body.extend_from_slice(&[1; 4]);
    expect_error(&mut s, &message(4, SET_IRQS, &body), libc::ENOTSUP);
    expect_device_info(&mut s, 5);
    hang_up(running, s);
}

/// A pipe whose write end we hand to the server: reading the read end sees EOF once the
/// server has closed every copy it got.
fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are fresh descriptors we own.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn expect_closed(mut read_end: File) {
    let mut b = [0u8; 1];
    assert_eq!(
        read_end.read(&mut b).unwrap(),
        0,
        "the server closed the fds"
    );
}

fn send_with_fds(s: &UnixStream, msg: &[u8], fds: &[RawFd]) {
    assert_eq!(s.send_with_fds(&[msg], fds).unwrap(), msg.len());
}

#[test]
fn dma_map_with_two_fds_is_refused_and_the_fds_closed() {
    let running = serve(None);
    let mut s = running.connect();
    let (read_end, write_end) = pipe();
    let map = message(1, DMA_MAP, &dma_map_body(0x10000, 0x1000));
    send_with_fds(&s, &map, &[write_end.as_raw_fd(), write_end.as_raw_fd()]);
    expect_error_reply(&mut s, &map, libc::EINVAL);
    // An unmap carries no fd.
    let unmap = message(2, DMA_UNMAP, &[u32s(&[24, 0]), vec![0; 16]].concat());
    send_with_fds(&s, &unmap, &[write_end.as_raw_fd()]);
    expect_error_reply(&mut s, &unmap, libc::EINVAL);
    drop(write_end);
    expect_device_info(&mut s, 3);
    expect_closed(read_end);
    // One fd is fine.
    let (_read_end, write_end) = pipe();
    let map = message(4, DMA_MAP, &dma_map_body(0x20000, 0x1000));
    send_with_fds(&s, &map, &[write_end.as_raw_fd()]);
    let r = recv(&mut s);
    assert_eq!((r.id, r.flags, r.error), (4, FLAG_REPLY, 0));
    let backend = hang_up(running, s);
    assert_eq!(backend.dma_maps, vec![(0, 0x20000, 0x1000, true)]);
    assert_eq!(backend.dma_unmaps, 0);
}

#[test]
fn set_irqs_with_fds_that_do_not_fit_is_refused() {
    let running = serve(None);
    let mut s = running.connect();
    let (read_end, write_end) = pipe();
    let w = write_end.as_raw_fd();
    let efd = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    let none = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    let msix = VFIO_PCI_MSIX_IRQ_INDEX;
    // More fds than interrupts; fds with no eventfd data; an interrupt index that is not there.
    let refused = [
        (u32s(&[20, efd, msix, 0, 1]), vec![w, w]),
        (u32s(&[20, none, msix, 0, 1]), vec![w]),
        (u32s(&[20, efd, 5, 0, 1]), vec![w]),
    ];
    for (id, (body, fds)) in (1..).zip(refused) {
        let msg = message(id, SET_IRQS, &body);
        send_with_fds(&s, &msg, &fds);
        expect_error_reply(&mut s, &msg, libc::EINVAL);
    }
    drop(write_end);
    expect_closed(read_end);
    // Fewer fds than interrupts is the backend's to judge.
    let (_read_end, write_end) = pipe();
    let msg = message(10, SET_IRQS, &u32s(&[20, efd, msix, 0, 2]));
    send_with_fds(&s, &msg, &[write_end.as_raw_fd()]);
    assert_eq!(recv(&mut s).error, 0);
    expect_device_info(&mut s, 11);
    let backend = hang_up(running, s);
    assert_eq!(backend.irq_sets, vec![(msix, efd, 0, 2, 1)]);
}

#[test]
fn region_and_irq_info_out_of_range_are_refused() {
    let running = serve(None);
    let mut s = running.connect();
    for (id, index) in [(1, 3), (2, u32::MAX)] {
        let body = [u32s(&[32, 0, index, 0]), vec![0; 16]].concat();
        expect_error(
            &mut s,
            &message(id, DEVICE_GET_REGION_INFO, &body),
            libc::EINVAL,
        );
    }
    for (id, index) in [(3, 3), (4, u32::MAX)] {
        expect_error(
            &mut s,
            &message(id, GET_IRQ_INFO, &u32s(&[16, 0, index, 0])),
            libc::EINVAL,
        );
    }
    let msix = VFIO_PCI_MSIX_IRQ_INDEX;
    s.write_all(&message(5, GET_IRQ_INFO, &u32s(&[16, 0, msix, 0])))
        .unwrap();
    let r = recv(&mut s);
    assert_eq!((r.id, r.error), (5, 0));
    assert_eq!(r.body, u32s(&[16, VFIO_IRQ_INFO_EVENTFD, msix, 4]));
    expect_device_info(&mut s, 6);
    hang_up(running, s);
}

#[test]
fn backend_errors_carry_their_errno() {
    let running = serve(None);
    let mut s = running.connect();
    for (id, offset, errno) in [
        (1, EPERM_OFFSET, libc::EPERM),
        (2, NO_ERRNO_OFFSET, libc::EINVAL),
    ] {
        let mut body = region_access(offset, 0, 4);
        body.extend_from_slice(&[1, 2, 3, 4]);
        expect_error(&mut s, &message(id, REGION_WRITE, &body), errno);
    }
    expect_device_info(&mut s, 3);
    hang_up(running, s);
}

#[test]
fn header_arriving_in_pieces_is_put_together() {
    let running = serve(None);
    let mut s = running.connect();
    let msg = message(1, DEVICE_GET_INFO, &u32s(&[16, 0, 0, 0]));
    for piece in [&msg[..3], &msg[3..11], &msg[11..20], &msg[20..]] {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = recv(&mut s);
    assert_eq!((r.id, r.command, r.error), (1, DEVICE_GET_INFO, 0));
    // A DMA map whose header comes in two pieces still gets the fd sent with the first.
    let (_read_end, write_end) = pipe();
    let map = message(2, DMA_MAP, &dma_map_body(0x30000, 0x1000));
    send_with_fds(&s, &map[..5], &[write_end.as_raw_fd()]);
    std::thread::sleep(Duration::from_millis(20));
    s.write_all(&map[5..]).unwrap();
    assert_eq!(recv(&mut s).error, 0);
    expect_device_info(&mut s, 3);
    let backend = hang_up(running, s);
    assert_eq!(backend.dma_maps, vec![(0, 0x30000, 0x1000, true)]);
}

#[test]
fn the_crates_client_still_talks_to_the_server() {
    let running = serve(None);
    let mut c = vfio_user::Client::new(&running.path).expect("client connects");
    assert_eq!(c.region(0).map(|r| r.size), Some(REGION_SIZE));
    assert_eq!(c.region(1).map(|r| r.size), Some(0));
    assert_eq!(c.region(HUGE_REGION).map(|r| r.size), Some(u64::MAX));

    c.region_write(0, 0x40, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mut back = [0u8; 8];
    c.region_read(0, 0x40, &mut back).unwrap();
    assert_eq!(back, [1, 2, 3, 4, 5, 6, 7, 8]);
    // The largest transfer the server advertises.
    let big: Vec<u8> = (0..REGION_SIZE as usize).map(|i| i as u8).collect();
    c.region_write(0, 0, &big).unwrap();
    let mut back = vec![0u8; big.len()];
    c.region_read(0, 0, &mut back).unwrap();
    assert_eq!(back, big);

    let (_read_end, write_end) = pipe();
    c.dma_map(0, 0x40000, 0x2000, write_end.as_raw_fd())
        .unwrap();
    c.dma_unmap(0x40000, 0x2000).unwrap();
    let info = c.get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX).unwrap();
    assert_eq!((info.index, info.count), (VFIO_PCI_MSIX_IRQ_INDEX, 4));
    let efd = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, efd, 0, 1, &[write_end.as_raw_fd()])
        .unwrap();
    c.reset().unwrap();
    c.shutdown().unwrap();
    drop(c);

    let backend = running.finish_ok();
    assert_eq!(backend.dma_maps, vec![(0, 0x40000, 0x2000, true)]);
    assert_eq!(backend.dma_unmaps, 1);
    assert_eq!(
        backend.irq_sets,
        vec![(VFIO_PCI_MSIX_IRQ_INDEX, efd, 0, 1, 1)]
    );
    assert_eq!(backend.resets, 1);
}
