//! The threads that answer sockets: each VM's control thread (one vfio-user session after
//! another, each isolated) and the stats socket.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};

use crate::device::VdpdkDevice;
use crate::{MuxSnapshot, Shared};

/// Answers each connection to the stats socket with one JSON snapshot.
pub(crate) fn serve_stats(listener: UnixListener, inner: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut conn) = conn else {
            continue;
        };
        let snap = MuxSnapshot {
            guests: inner.guests(),
            pollers: inner.pollers(),
        };
        if let Ok(text) = serde_json::to_string(&snap) {
            let _ = writeln!(conn, "{text}");
        }
    }
}

/// The control thread of one VM: serve a client until it disconnects, reset, wait for the next.
pub(crate) fn serve_vm(mut dev: VdpdkDevice, listener: UnixListener, stop: Arc<AtomicBool>) {
    let regions = dev.regions();
    let mut server = vfio_user::Server::from_owned_fd(
        OwnedFd::from(listener),
        true,
        VdpdkDevice::irqs(),
        regions,
    );
    server.set_max_message_size(dev.limits().message_bytes);
    let name = dev.name().to_string();
    serve_sessions(&server, &mut dev, &name, &stop, |dev| dev.reset_device());
}

/// Serves one vfio-user session after another until `stop`. Each session is isolated: whether
/// it ends by a disconnect, an error or a panic in the message layer, `reset` runs (queues
/// stopped, DMA maps and interrupt fds released) and the slot accepts the next client.
fn serve_sessions<B: vfio_user::ServerBackend>(
    server: &vfio_user::Server,
    backend: &mut B,
    name: &str,
    stop: &AtomicBool,
    reset: impl Fn(&mut B),
) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    while !stop.load(Ordering::SeqCst) {
        // AssertUnwindSafe: after a panic the backend is only used through `reset`, which
        // rebuilds its state from scratch.
        match catch_unwind(AssertUnwindSafe(|| server.run(backend))) {
            Ok(Ok(())) => info!("{name}: guest disconnected"),
            Ok(Err(e)) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                warn!("{name}: vfio-user session ended: {e}");
                if matches!(e, vfio_user::Error::SocketAccept(_)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Err(_) => warn!("{name}: vfio-user session panicked; device reset, slot reopened"),
        }
        // Whatever the guest left behind (queues, DMA maps, interrupt fds) is released here.
        reset(backend);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::start::{bind_socket, DupFd};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;
    use vfio_bindings::bindings::vfio::*;

    /// Panics on its first region read, as a bug in the message layer or device would.
    struct Fragile {
        reads: usize,
        resets: Arc<AtomicUsize>,
    }

    impl vfio_user::ServerBackend for Fragile {
        fn region_read(&mut self, _: u32, _: u64, data: &mut [u8]) -> std::io::Result<()> {
            self.reads += 1;
            assert!(self.reads > 1, "the first read panics");
            data.fill(0x5a);
            Ok(())
        }
        fn region_write(&mut self, _: u32, _: u64, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn dma_map(
            &mut self,
            _: vfio_user::DmaMapFlags,
            _: u64,
            _: u64,
            _: u64,
            _: Option<std::fs::File>,
        ) -> std::io::Result<()> {
            Ok(())
        }
        fn dma_unmap(
            &mut self,
            _: vfio_user::DmaUnmapFlags,
            _: u64,
            _: u64,
        ) -> std::io::Result<()> {
            Ok(())
        }
        fn reset(&mut self) -> std::io::Result<()> {
            Ok(())
        }
        fn set_irqs(
            &mut self,
            _: u32,
            _: u32,
            _: u32,
            _: u32,
            _: Vec<std::fs::File>,
        ) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panicking_session_resets_the_device_and_the_slot_serves_the_next_client() {
        let path = std::env::temp_dir().join(format!("vdpdk-fragile-{}.sock", std::process::id()));
        let listener = bind_socket(&path).unwrap();
        let keep = listener.as_fd_dup().unwrap();
        let mut regions = vdpdk_pci::server::empty_regions();
        regions[VFIO_PCI_BAR0_REGION_INDEX as usize] =
            vdpdk_pci::server::region(VFIO_PCI_BAR0_REGION_INDEX, 4096, vdpdk_pci::server::RW);
        let server = vfio_user::Server::from_owned_fd(
            OwnedFd::from(listener),
            true,
            VdpdkDevice::irqs(),
            regions,
        );
        let resets = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2) = (resets.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            let mut b = Fragile {
                reads: 0,
                resets: r2.clone(),
            };
            serve_sessions(&server, &mut b, "fragile", &s2, |b| {
                b.resets.fetch_add(1, Ordering::SeqCst);
            });
        });
        let mut buf = [0u8; 4];
        let mut c = vfio_user::Client::new(&path).unwrap();
        // The server thread panics inside this read; the session ends, the client sees it.
        assert!(c
            .region_read(VFIO_PCI_BAR0_REGION_INDEX, 0, &mut buf)
            .is_err());
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(20);
        while resets.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the device was never reset");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The slot accepts the next client, which is served.
        let mut c = vfio_user::Client::new(&path).unwrap();
        c.region_read(VFIO_PCI_BAR0_REGION_INDEX, 0, &mut buf)
            .unwrap();
        assert_eq!(buf, [0x5a; 4]);
        drop(c);
        stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown on a listening socket we hold a dup of; wakes the blocked accept.
        unsafe { libc::shutdown(keep.as_raw_fd(), libc::SHUT_RDWR) };
        t.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
