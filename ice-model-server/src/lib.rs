//! The model behind a vfio-user socket: a separate process that looks to the driver exactly
//! like an E810 behind kernel vfio (trapped BAR0, DMA maps with fds).

#![warn(missing_docs)]

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{info, warn};
use parking_lot::Mutex;
use vfio_bindings::bindings::vfio::*;
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, Server, ServerBackend};

use ice_model::pci::Wire;
use ice_model::{E810Model, E810_C_QSFP, INTEL_VENDOR_ID};

const BAR0_SIZE: u64 = 128 << 20;
const CFG_SIZE: usize = 256;
/// BAR3 holds the MSI-X table (offset 0) and pending-bit array, as on the E810 (Linux
/// `ice_main.c` maps only BAR0 and lets the PCI core find the table through the capability).
const BAR3_SIZE: u64 = 64 << 10;
const MSIX_PBA_OFFSET: u32 = 0x8000;
/// Where the MSI-X capability sits in config space.
const MSIX_CAP: usize = 0x70;

/// A BAR0 access the model serves: 4 or 8 bytes, aligned, inside the BAR.
fn bar0_access(offset: u64, len: usize) -> bool {
    (len == 4 || len == 8)
        && offset.is_multiple_of(len as u64)
        && offset
            .checked_add(len as u64)
            .is_some_and(|e| e <= BAR0_SIZE)
}

/// The card's config space: ids, class (Ethernet), and one capability, MSI-X with `vectors`
/// entries in BAR3 (PCI Local Bus 3.0 section 6.8.2: capability id 0x11, message control
/// with the table size minus one, table and PBA offset/BIR dwords).
fn config_space(vectors: u32) -> [u8; CFG_SIZE] {
    let mut cfg = [0u8; CFG_SIZE];
    cfg[0..2].copy_from_slice(&INTEL_VENDOR_ID.to_le_bytes());
    cfg[2..4].copy_from_slice(&E810_C_QSFP.to_le_bytes());
    cfg[0x06] = 0x10; // status: capability list present
    cfg[0x0b] = 0x02; // class: network controller
    cfg[0x34] = MSIX_CAP as u8;
    cfg[MSIX_CAP] = 0x11;
    cfg[MSIX_CAP + 1] = 0; // last capability
    let table_size = (vectors.clamp(1, 2048) - 1) as u16;
    cfg[MSIX_CAP + 2..MSIX_CAP + 4].copy_from_slice(&table_size.to_le_bytes());
    cfg[MSIX_CAP + 4..MSIX_CAP + 8].copy_from_slice(&3u32.to_le_bytes()); // table: BAR3 + 0
    cfg[MSIX_CAP + 8..MSIX_CAP + 12].copy_from_slice(&(MSIX_PBA_OFFSET | 3).to_le_bytes());
    cfg
}

/// A config space write: the command register and the MSI-X enable/mask bits are kept (the
/// rest is read-only here; QEMU emulates the BAR registers itself).
fn config_write(cfg: &mut [u8; CFG_SIZE], offset: u64, data: &[u8]) {
    for (i, b) in data.iter().enumerate() {
        let at = offset as usize + i;
        match at {
            0x04 | 0x05 => cfg[at] = *b,
            _ if at == MSIX_CAP + 3 => cfg[at] = *b & 0xC0,
            _ => {}
        }
    }
}

struct Backend {
    model: Arc<Mutex<E810Model>>,
    cfg: [u8; CFG_SIZE],
    wire: Option<Arc<dyn Wire>>,
}

impl ServerBackend for Backend {
    // Reads never fail (the vfio_user client waits for data even after an error reply).
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.cfg.get(offset as usize + i).copied().unwrap_or(0);
                }
            }
            VFIO_PCI_BAR0_REGION_INDEX if bar0_access(offset, data.len()) => {
                // 64-bit loads (Linux reads the 40-bit counters with readq) are two 32-bit
                // registers, low first, as on the card's PCIe interface.
                let mut m = self.model.lock();
                for (i, chunk) in data.chunks_mut(4).enumerate() {
                    let v = m.mmio_read(offset + 4 * i as u64);
                    chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
                    log::trace!("bar0 read {:#x} -> {v:#x}", offset + 4 * i as u64);
                }
            }
            _ => data.fill(0xff),
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if region == VFIO_PCI_CONFIG_REGION_INDEX {
            config_write(&mut self.cfg, offset, data);
            return Ok(());
        }
        if region == VFIO_PCI_BAR0_REGION_INDEX
            && bar0_access(offset, data.len())
            && data.len().is_multiple_of(4)
        {
            let out = {
                let mut m = self.model.lock();
                for (i, chunk) in data.chunks(4).enumerate() {
                    let v = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
                    log::trace!("bar0 write {:#x} <- {v:#x}", offset + 4 * i as u64);
                    m.mmio_write(offset + 4 * i as u64, v);
                }
                if self.wire.is_some() {
                    m.take_outbox()
                } else {
                    Vec::new()
                }
            };
            if let Some(w) = &self.wire {
                for f in &out {
                    w.transmit(f);
                }
            }
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        _flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        // QEMU also announces guest address ranges it cannot share (ROMs, MMIO) without an
        // fd. The model cannot reach them, as a card behind an IOMMU cannot reach unmapped
        // memory: accept the announcement, and a DMA there fails like any unmapped access.
        let Some(fd) = fd else {
            log::debug!("DMA range {address:#x}+{size:#x} without an fd: not reachable");
            return Ok(());
        };
        self.model.lock().dma.map(fd.as_fd(), offset, address, size)
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> std::io::Result<()> {
        let mut m = self.model.lock();
        if flags.contains(DmaUnmapFlags::UNMAP_ALL) {
            m.dma.clear();
        } else {
            m.dma.unmap(address, size);
        }
        Ok(())
    }

    fn reset(&mut self) -> std::io::Result<()> {
        self.model.lock().function_reset();
        Ok(())
    }

    /// MSI-X vectors over vfio-user: eventfds for vectors `start..start+count` (fewer fds than
    /// vectors, or DATA_NONE, leaves those vectors without one), as the kernel's vfio-pci does
    /// for VFIO_DEVICE_SET_IRQS. Other interrupt types are refused: the card has none here.
    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        let einval = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            return Err(einval(format!("interrupt index {index}: only MSI-X")));
        }
        let vectors = self.model.lock().cfg.num_msix;
        let end = start
            .checked_add(count)
            .filter(|&e| e <= vectors)
            .ok_or_else(|| einval(format!("vectors {start}+{count} beyond {vectors}")))?;
        let mut model = self.model.lock();
        let mut table: Vec<Option<std::os::fd::OwnedFd>> = model.take_msix();
        if flags & VFIO_IRQ_SET_DATA_NONE != 0 && count == 0 {
            table.clear();
        } else {
            if table.len() < end as usize {
                table.resize_with(end as usize, || None);
            }
            let mut fds = fds.into_iter();
            for v in start..end {
                table[v as usize] = fds.next().map(std::os::fd::OwnedFd::from);
            }
        }
        model.set_msix(table);
        Ok(())
    }
}

/// A cable between model processes: frames travel as datagrams between two Unix sockets.
pub struct DatagramCable {
    sock: std::os::unix::net::UnixDatagram,
    peer: std::path::PathBuf,
}

impl DatagramCable {
    /// Binds `local` and sends to `peer`; a thread feeds what arrives into `model`.
    pub fn connect(
        model: Arc<Mutex<E810Model>>,
        local: &Path,
        peer: &Path,
    ) -> std::io::Result<Arc<DatagramCable>> {
        let _ = std::fs::remove_file(local);
        let sock = std::os::unix::net::UnixDatagram::bind(local)?;
        let rx = sock.try_clone()?;
        std::thread::Builder::new()
            .name("model-wire".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16384];
                let never_stop = std::sync::atomic::AtomicBool::new(false);
                while let Ok(n) = rx.recv(&mut buf) {
                    ice_model::cable::deliver(&model, &buf[..n], &never_stop);
                }
            })?;
        Ok(Arc::new(DatagramCable {
            sock,
            peer: peer.to_path_buf(),
        }))
    }
}

impl Wire for DatagramCable {
    fn transmit(&self, frame: &[u8]) {
        // A peer that is not listening (yet) is an unplugged cable: the frame is lost.
        let _ = self.sock.send_to(frame, &self.peer);
    }
}

/// The socket file a server listens on, as [`bind_socket`] left it. Dropping it (or
/// [`SocketFile::remove`]) removes the file, if the path still names this socket: a file a
/// later server bound there is left alone.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the socket we bound.
    id: (u64, u64),
}

impl SocketFile {
    /// Where the socket file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still ours; true if it was removed.
    pub fn remove(&self) -> bool {
        match std::fs::symlink_metadata(&self.path) {
            Ok(md) if md.file_type().is_socket() && (md.dev(), md.ino()) == self.id => {
                std::fs::remove_file(&self.path).is_ok()
            }
            _ => false,
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Binds a listening Unix socket at `path` (creating its directory). A socket file nobody
/// listens on (a server that was killed left it) is replaced; a socket another server listens
/// on, or a path that is not a socket, is an error naming the path.
pub fn bind_socket(path: &Path) -> std::io::Result<(UnixListener, SocketFile)> {
    use std::io::{Error, ErrorKind};
    let named =
        |kind: ErrorKind, what: String| Error::new(kind, format!("{}: {what}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(named(
                    ErrorKind::AddrInUse,
                    "another server is listening there".into(),
                ))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| named(e.kind(), format!("removing: {e}")))?;
                info!(
                    "{}: replaced a stale socket (nobody was listening)",
                    path.display()
                );
            }
            Err(e) => return Err(named(e.kind(), format!("probing the existing socket: {e}"))),
        },
        Ok(_) => {
            return Err(named(
                ErrorKind::AlreadyExists,
                "exists and is not a socket".into(),
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(named(e.kind(), e.to_string())),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| named(e.kind(), format!("creating its directory: {e}")))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| named(e.kind(), format!("binding: {e}")))?;
    let md = std::fs::symlink_metadata(path)?;
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            id: (md.dev(), md.ino()),
        },
    ))
}

/// Serves `model` on `socket`, one client after another, until the listener fails; the socket
/// file is removed when it returns. See [`serve_listener`].
pub fn serve(model: Arc<Mutex<E810Model>>, socket: &Path) -> Result<(), vfio_user::Error> {
    serve_with_wire(model, socket, None)
}

/// Like [`serve`], with transmitted frames going to `wire`.
pub fn serve_with_wire(
    model: Arc<Mutex<E810Model>>,
    socket: &Path,
    wire: Option<Arc<dyn Wire>>,
) -> Result<(), vfio_user::Error> {
    let (listener, _file) = bind_socket(socket).map_err(vfio_user::Error::SocketBind)?;
    serve_listener(model, listener, wire)
}

/// Serves `model` on `listener`, one client at a time, until accepting fails. Each client finds
/// the card as at power-on, as a host that boots finds it: between clients the model is
/// replaced by a fresh one with the same configuration (and faults), in the same shared handle,
/// so whatever holds the handle (a cable's receive thread, a test) reaches the new card. A
/// client that leaves is logged at info; one whose connection broke mid-message at warn; both
/// make way for the next.
pub fn serve_listener(
    model: Arc<Mutex<E810Model>>,
    listener: UnixListener,
    wire: Option<Arc<dyn Wire>>,
) -> Result<(), vfio_user::Error> {
    use vdpdk_pci::server::{empty_regions, region, RW as rw};
    let mut regions = empty_regions();
    regions[VFIO_PCI_BAR0_REGION_INDEX as usize] =
        region(VFIO_PCI_BAR0_REGION_INDEX, BAR0_SIZE, rw);
    regions[VFIO_PCI_BAR3_REGION_INDEX as usize] =
        region(VFIO_PCI_BAR3_REGION_INDEX, BAR3_SIZE, rw);
    regions[VFIO_PCI_CONFIG_REGION_INDEX as usize] =
        region(VFIO_PCI_CONFIG_REGION_INDEX, CFG_SIZE as u64, rw);
    // The vfio-user server looks interrupt types up by position, so every PCI index up to
    // MSI-X is listed; only MSI-X has vectors (as on the card: no INTx/MSI in use).
    let vectors = model.lock().cfg.num_msix;
    let irqs = (0..=VFIO_PCI_MSIX_IRQ_INDEX)
        .map(|index| IrqInfo {
            index,
            flags: VFIO_IRQ_INFO_EVENTFD,
            count: if index == VFIO_PCI_MSIX_IRQ_INDEX {
                vectors
            } else {
                0
            },
        })
        .collect();
    let cfg = config_space(vectors);
    let server = Server::from_owned_fd(OwnedFd::from(listener), true, irqs, regions);
    let mut backend = Backend { model, cfg, wire };
    let mut clients = 0u64;
    loop {
        let ended = server.run(&mut backend);
        if let Err(vfio_user::Error::SocketAccept(e)) = &ended {
            if matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
            ) {
                continue;
            }
        }
        if let Err(e @ vfio_user::Error::SocketAccept(_)) = ended {
            return Err(e);
        }
        clients += 1;
        {
            let m = backend.model.lock();
            info!(
                "client {clients}: {:?}, {} interrupts ({} held by ITR)",
                m.stats, m.interrupts, m.throttled
            );
        }
        E810Model::power_on(&backend.model);
        const NEXT: &str = "the card is back in its power-on state";
        match ended {
            Ok(()) => info!("client {clients} left; {NEXT}"),
            Err(e) => warn!("client {clients}: connection broken ({e}); {NEXT}"),
        }
    }
}
