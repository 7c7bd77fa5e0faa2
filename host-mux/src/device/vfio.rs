//! The vfio-user face of a [`VdpdkDevice`]: region accesses routed to config space, BAR0
//! registers and the data BAR; DMA map and unmap into the guest's memory map; SET_IRQS (MSI-X
//! eventfds only); device reset. Every refusal is an errno for the message layer, which counts
//! it through [`ServerBackend::refused`].

use std::fs::File;
use std::sync::Arc;

use log::{debug, info, warn};
use vdpdk_core::abi::{self, StatsIndex};
use vfio_bindings::bindings::vfio::*;
use vfio_user::{DmaMapFlags, DmaUnmapFlags, ServerBackend};

use super::{VdpdkDevice, CFG_SIZE, MSIX_CAP};

/// `offset..offset+len` as an index range when it lies within `size` bytes.
fn within(offset: u64, len: u64, size: usize) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    (end <= size as u64).then_some(offset as usize..end as usize)
}

/// Sets O_NONBLOCK on a file the guest handed over.
fn set_nonblocking(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an fd we own; only file status flags change.
    let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `f` is an eventfd (what MSI-X vectors must be: a pipe or socket could block or
/// fill up under a poller).
fn is_eventfd(f: &File) -> bool {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .is_ok_and(|p| p.as_os_str() == "anon_inode:[eventfd]")
}

impl ServerBackend for VdpdkDevice {
    // Accesses outside a region never get here (the message layer refuses them with EINVAL);
    // inside one, an offset this device does not implement reads all-ones and is counted, as
    // an unimplemented register does on real hardware.
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        let len = data.len() as u64;
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX if within(offset, len, CFG_SIZE).is_some() => {
                let r = within(offset, len, CFG_SIZE).expect("checked by the guard");
                data.copy_from_slice(&self.cfg[r]);
            }
            VFIO_PCI_BAR0_REGION_INDEX if len == 4 && offset.is_multiple_of(4) => {
                data.copy_from_slice(&self.read_bar0(offset).to_le_bytes());
            }
            VFIO_PCI_BAR2_REGION_INDEX if self.guest.data_bar.read(offset as usize, data) => {}
            _ => {
                self.bad_access(&format!("read region {region} {offset:#x}+{len}"));
                data.fill(0xff);
            }
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let len = data.len() as u64;
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX if within(offset, len, CFG_SIZE).is_some() => {
                // Only command, interrupt line and MSI-X control are writable.
                for (i, b) in data.iter().enumerate() {
                    let o = offset as usize + i;
                    match o {
                        0x04 | 0x05 | 0x3c => self.cfg[o] = *b,
                        o if o == MSIX_CAP + 3 => self.cfg[o] = (self.cfg[o] & 0x07) | (b & 0xc0),
                        _ => {}
                    }
                }
            }
            VFIO_PCI_BAR0_REGION_INDEX if len == 4 && offset.is_multiple_of(4) => {
                let v = u32::from_le_bytes(data.try_into().expect("4 bytes"));
                self.write_bar0(offset, v);
            }
            VFIO_PCI_BAR2_REGION_INDEX if self.guest.data_bar.write(offset as usize, data) => {}
            _ => self.bad_access(&format!("write region {region} {offset:#x}+{len}")),
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        // The message layer logs the refusal (one warn line with this reason) and counts it.
        let einval = |m: String| {
            debug!("{}: DMA map refused: {m}", self.guest.name);
            std::io::Error::new(std::io::ErrorKind::InvalidInput, m)
        };
        let Some(fd) = fd else {
            // QEMU sends its non-shared memory (firmware ROMs; all of RAM unless it is a shared
            // memfd) without an fd, for DMA through socket messages, which we do not offer.
            // Refusing would fail QEMU's device realize, so accept and leave it unreachable:
            // descriptors pointing there are refused like any unmapped address.
            info!(
                "{}: DMA map {address:#x}+{size:#x} without an fd stays unreachable \
                 (guest RAM must be a shared memfd: memory-backend-memfd,share=on)",
                self.guest.name
            );
            return Ok(());
        };
        self.guest
            .map_region(
                &fd,
                offset,
                address,
                size,
                flags.contains(DmaMapFlags::WRITE),
            )
            .map_err(einval)?;
        debug!("{}: DMA map {address:#x}+{size:#x}", self.guest.name);
        Ok(())
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> std::io::Result<()> {
        let (iova, len) = if flags.contains(DmaUnmapFlags::UNMAP_ALL) {
            (0, u64::MAX)
        } else {
            (address, size)
        };
        match self.guest.unmap_range(iova, len) {
            Ok(0) => {}
            Ok(dropped) => warn!(
                "{}: DMA unmap {iova:#x}+{len:#x} removed {dropped} rings; device stopped",
                self.guest.name
            ),
            Err(m) => {
                debug!("{}: DMA unmap refused: {m}", self.guest.name);
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
            }
        }
        Ok(())
    }

    fn refused(&mut self, command: u16, errno: u32) {
        // Every error reply is counted here, once: the message layer's (malformed, oversized,
        // unsupported messages) and this device's own (DMA and interrupt requests it refused).
        self.guest.stats.add(StatsIndex::CtrlErrors, 1);
        debug!(
            "{}: vfio-user command {command} refused (errno {errno})",
            self.guest.name
        );
    }

    fn reset(&mut self) -> std::io::Result<()> {
        info!("{}: device reset", self.guest.name);
        self.reset_device();
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
        let einval = |m: String| {
            debug!("{}: SET_IRQS refused: {m}", self.guest.name);
            std::io::Error::new(std::io::ErrorKind::InvalidInput, m)
        };
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            return Err(einval(format!("only MSI-X interrupts, not index {index}")));
        }
        let end = start
            .checked_add(count)
            .filter(|&e| e <= abi::MAX_QUEUES as u32)
            .ok_or_else(|| einval(format!("vectors {start}+{count} out of range")))?;
        let eventfds = flags & VFIO_IRQ_SET_DATA_EVENTFD != 0;
        if eventfds && !fds.is_empty() {
            if fds.len() != count as usize {
                return Err(einval(format!("{count} vectors but {} fds", fds.len())));
            }
            // Pollers signal these: each must be an eventfd, and non-blocking so a guest that
            // lets its counter fill up costs a failed write (counted), never a stalled poller.
            // Checked before taking the guest lock (no guest fd is touched under it).
            if !fds.iter().all(is_eventfd) {
                return Err(einval("MSI-X vectors take eventfds only".into()));
            }
            for f in &fds {
                set_nonblocking(f).map_err(|e| einval(format!("eventfd: {e}")))?;
            }
        } else if !eventfds && flags & VFIO_IRQ_SET_DATA_NONE == 0 {
            return Err(einval(format!("unsupported SET_IRQS flags {flags:#x}")));
        }
        let fds: Vec<Arc<File>> = match eventfds {
            true => fds.into_iter().map(Arc::new).collect(),
            false => Vec::new(),
        };
        let mut rx = self.guest.rx.lock();
        if rx.irq_fds.len() < end as usize {
            rx.irq_fds.resize_with(end as usize, || None);
        }
        if !eventfds && count == 0 {
            rx.irq_fds.clear();
        } else {
            // Eventfd data with no fds is QEMU's encoding of fd -1 (vectors unused), like
            // DATA_NONE: the vectors are disarmed.
            for v in start..end {
                rx.irq_fds[v as usize] = fds.get((v - start) as usize).cloned();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::PortFacts;
    use crate::testing;
    use std::os::fd::FromRawFd;

    fn device() -> (Arc<crate::guest::Guest>, VdpdkDevice) {
        let g = testing::guest();
        let facts = PortFacts {
            mtu: 1500,
            max_mtu: 1500,
            rx_offloads: vdpdk_core::RxOffloads::empty(),
            link_up: true,
            link_speed_mbps: 1000,
        };
        (g.clone(), VdpdkDevice::new(g, facts))
    }

    fn errors(g: &crate::guest::Guest) -> u64 {
        g.stats.get(StatsIndex::CtrlErrors)
    }

    #[test]
    fn bar0_registers_and_unimplemented_offsets() {
        let (g, mut d) = device();
        let mut v = [0u8; 4];
        d.region_read(VFIO_PCI_BAR0_REGION_INDEX, abi::REG_MAGIC, &mut v)
            .unwrap();
        assert_eq!(u32::from_le_bytes(v), abi::ABI_MAGIC);
        // An offset no register lives at, and a misaligned access: all-ones, counted.
        d.region_read(VFIO_PCI_BAR0_REGION_INDEX, 0x7c, &mut v)
            .unwrap();
        assert_eq!(v, [0xff; 4]);
        d.region_read(VFIO_PCI_BAR0_REGION_INDEX, abi::REG_MAGIC + 1, &mut v)
            .unwrap();
        assert_eq!(errors(&g), 2);
        // Config space: the vendor ID reads back; read-only bytes ignore writes.
        let mut id = [0u8; 2];
        d.region_write(VFIO_PCI_CONFIG_REGION_INDEX, 0, &[0, 0])
            .unwrap();
        d.region_read(VFIO_PCI_CONFIG_REGION_INDEX, 0, &mut id)
            .unwrap();
        assert_eq!(u16::from_le_bytes(id), abi::VENDOR_ID);
        d.region_read(VFIO_PCI_CONFIG_REGION_INDEX, CFG_SIZE as u64 - 1, &mut id)
            .unwrap();
        assert_eq!((id, errors(&g)), ([0xff; 2], 3));
    }

    #[test]
    fn set_irqs_takes_msix_eventfds_only() {
        let (g, mut d) = device();
        let e = d.set_irqs(
            VFIO_PCI_INTX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_NONE,
            0,
            1,
            vec![],
        );
        assert!(e.unwrap_err().to_string().contains("only MSI-X"));
        let e = d.set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_NONE,
            60,
            10,
            vec![],
        );
        assert!(e.unwrap_err().to_string().contains("out of range"));
        let mut p = [0i32; 2];
        // SAFETY: pipe2 writes two fds into p; checked.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds we own.
        let (r, _w) = unsafe { (File::from_raw_fd(p[0]), File::from_raw_fd(p[1])) };
        let e = d.set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_EVENTFD,
            0,
            1,
            vec![r],
        );
        assert!(e.unwrap_err().to_string().contains("eventfds only"));
        // SAFETY: eventfd(2) has no memory arguments; the fd is checked and owned.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: a fresh fd we own.
        let f = unsafe { File::from_raw_fd(raw) };
        d.set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_EVENTFD,
            2,
            1,
            vec![f],
        )
        .unwrap();
        assert!(g.rx.lock().irq_fds[2].is_some());
        d.set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_NONE,
            0,
            0,
            vec![],
        )
        .unwrap();
        assert!(g.rx.lock().irq_fds.is_empty());
    }
}
