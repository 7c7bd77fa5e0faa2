//! A cable from the model's port to any ethdev: a Linux TAP (so the Linux stack and tools see
//! the model's frames), the in-memory pair, or anything else with the traits. Frames the model
//! transmits are copied into the port's TX queue; a thread feeds what the port receives into
//! the model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::{EthDev, Mempool, Result, TxQueue};

use super::pci::Wire;
use super::E810Model;

/// A cable between the model's port and an ethdev port (see the module docs).
pub struct EthDevCable {
    /// The port's TX queue and a reused burst buffer.
    tx: Mutex<(Box<dyn TxQueue>, Vec<vdpdk_core::Mbuf>)>,
    pool: Mempool,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl EthDevCable {
    /// Starts `port` with one queue pair and plugs it into `model`.
    pub fn connect(
        model: Arc<Mutex<E810Model>>,
        mut port: Box<dyn EthDev>,
    ) -> Result<Arc<EthDevCable>> {
        let pool = Mempool::new("model-cable", 2048, 9216 + vdpdk_core::MBUF_HEADROOM)?;
        let (mut rx, tx) = start_single_queue(&mut *port, &pool, 256, false)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("model-cable".into())
            .spawn(move || {
                let _port = port; // keep the device alive while its queue is used
                let mut buf = Vec::with_capacity(32);
                while !stop2.load(Ordering::Relaxed) {
                    if rx.rx_burst(&mut buf, 32) == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    let mut m = model.lock();
                    for f in buf.drain(..) {
                        m.receive(f.data());
                    }
                }
            })?;
        Ok(Arc::new(EthDevCable {
            tx: Mutex::new((tx, Vec::with_capacity(1))),
            pool,
            stop,
            thread: Mutex::new(Some(thread)),
        }))
    }
}

impl Wire for EthDevCable {
    fn transmit(&self, frame: &[u8]) {
        let Some(mut m) = self.pool.alloc() else {
            return;
        };
        if m.copy_from(frame).is_err() {
            return;
        }
        let mut g = self.tx.lock();
        let (tx, v) = &mut *g;
        v.push(m);
        tx.tx_burst(v);
        // A full port drops, like a congested cable would.
        v.clear();
    }
}

impl Drop for EthDevCable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}
