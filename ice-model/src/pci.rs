//! The model as a [`PciDevice`] in this process: register accesses call straight into the
//! model, DMA maps are mapped again from their fds (so the model never depends on the driver
//! keeping a mapping alive), MSI-X eventfds are kept for the data path.

use std::os::fd::RawFd;
use std::sync::Arc;

use parking_lot::Mutex;
use vdpdk_core::{DmaMemory, Error, Result};
use vdpdk_pci::{MappedBar, PciDevice};

use super::{E810Model, ModelConfig};

/// BAR0 size of an E810 PF (128 MiB; 32 MiB of it is registers) — only used for bounds here.
const BAR0_SIZE: u64 = 128 << 20;

/// Where frames the model transmits go.
pub trait Wire: Send + Sync {
    /// Takes one frame the card sent (without CRC).
    fn transmit(&self, frame: &[u8]);
}

/// A cable to another model's port (two cards back to back).
pub struct ModelCable(pub Arc<Mutex<E810Model>>);

impl Wire for ModelCable {
    fn transmit(&self, frame: &[u8]) {
        self.0.lock().receive(frame);
    }
}

/// The model as a [`PciDevice`] in this process: config space with the E810 ids, BAR0 trapped
/// into the model, DMA maps and MSI-X eventfds handed to it.
pub struct ModelPci {
    /// The card behind the device.
    pub model: Arc<Mutex<E810Model>>,
    config: [u8; 64],
    wire: Mutex<Option<Arc<dyn Wire>>>,
}

impl ModelPci {
    /// A PCI device for `model`, with no cable plugged in.
    pub fn new(model: Arc<Mutex<E810Model>>) -> ModelPci {
        let mut config = [0u8; 64];
        config[0..2].copy_from_slice(&crate::INTEL_VENDOR_ID.to_le_bytes());
        config[2..4].copy_from_slice(&crate::E810_C_QSFP.to_le_bytes());
        config[0x0b] = 0x02; // class: network
        ModelPci {
            model,
            config,
            wire: Mutex::new(None),
        }
    }

    /// Plugs the port into a wire; transmitted frames go there (else they wait in the model).
    pub fn set_wire(&self, w: Arc<dyn Wire>) {
        *self.wire.lock() = Some(w);
    }

    /// Two models cabled back to back, each behind its own in-process PCI device.
    pub fn back_to_back(a: ModelConfig, b: ModelConfig) -> (Arc<ModelPci>, Arc<ModelPci>) {
        let ma = E810Model::shared(a);
        let mb = E810Model::shared(b);
        let (pa, pb) = (
            Arc::new(ModelPci::new(ma.clone())),
            Arc::new(ModelPci::new(mb.clone())),
        );
        pa.set_wire(Arc::new(ModelCable(mb)));
        pb.set_wire(Arc::new(ModelCable(ma)));
        (pa, pb)
    }

    fn check(bar: u8, off: u64) -> Result<()> {
        if bar != 0 || !off.is_multiple_of(4) || off + 4 > BAR0_SIZE {
            return Err(Error::InvalidArg(format!("BAR{bar} access at {off:#x}")));
        }
        Ok(())
    }
}

impl PciDevice for ModelPci {
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.config.get(off as usize + i).copied().unwrap_or(0);
        }
        Ok(())
    }
    fn config_write(&self, _off: u64, _data: &[u8]) -> Result<()> {
        Ok(())
    }
    fn bar_read32(&self, bar: u8, off: u64) -> Result<u32> {
        Self::check(bar, off)?;
        Ok(self.model.lock().mmio_read(off))
    }
    fn bar_write32(&self, bar: u8, off: u64, val: u32) -> Result<()> {
        Self::check(bar, off)?;
        let out = {
            let mut m = self.model.lock();
            m.mmio_write(off, val);
            if self.wire.lock().is_some() {
                m.take_outbox()
            } else {
                Vec::new()
            }
        };
        // Deliver with our model unlocked: the peer may be transmitting to us meanwhile.
        if let Some(w) = self.wire.lock().clone() {
            for f in &out {
                w.transmit(f);
            }
        }
        Ok(())
    }
    fn map_bar(&self, bar: u8) -> Result<MappedBar> {
        Err(Error::Unsupported(format!(
            "the model traps every BAR{bar} access"
        )))
    }
    fn dma_map(&self, mem: &DmaMemory) -> Result<()> {
        self.model
            .lock()
            .dma
            .map(mem.fd(), 0, mem.iova_base(), mem.len() as u64)
            .map_err(Error::from)
    }
    fn dma_map_external(&self, r: &vdpdk_core::ExternalRegion<'_>, iova: u64) -> Result<()> {
        self.model
            .lock()
            .dma
            .map(r.fd, r.offset, iova, r.len)
            .map_err(Error::from)
    }
    fn dma_unmap(&self, iova: u64, len: u64) -> Result<()> {
        self.model.lock().dma.unmap(iova, len);
        Ok(())
    }
    fn set_msix_eventfds(&self, fds: &[RawFd]) -> Result<()> {
        // Duplicate: the caller keeps its fds, the model owns its copies.
        let owned = fds
            .iter()
            .map(|&fd| {
                // SAFETY: fd is an open eventfd of the caller's; dup returns a new one we own.
                let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                if d < 0 {
                    return Err(Error::from(std::io::Error::last_os_error()));
                }
                // SAFETY: fresh fd.
                Ok(Some(unsafe {
                    <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(d)
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        self.model.lock().set_msix(owned);
        Ok(())
    }
    fn reset(&self) -> Result<()> {
        self.model.lock().function_reset();
        Ok(())
    }
}
