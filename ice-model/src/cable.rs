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
                    for f in buf.drain(..) {
                        deliver(&model, f.data(), &stop2);
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

/// How long a frame waits for its RX queue to get free descriptors before it is dropped: far
/// longer than a busy guest's driver takes to refill (a TCG guest beside other work can take
/// 100 ms), short enough that a driver that stopped refilling does not hold the cable for long.
const PAUSE_LIMIT: Duration = Duration::from_secs(1);

/// Hands a frame from the cable to the model with flow control: while the frame's RX queue
/// has no free descriptors, the cable holds it (and takes nothing more from its far end), up
/// to `PAUSE_LIMIT` (then drops it, logged), as link flow control (802.3x PAUSE) would hold the sender. A slow guest
/// driver then costs the far end time, not frames; one that stopped refilling costs a frame
/// per `PAUSE_LIMIT`, counted as an RX drop.
pub fn deliver(model: &Mutex<E810Model>, frame: &[u8], stop: &AtomicBool) {
    let start = std::time::Instant::now();
    loop {
        if model.lock().try_receive(frame).is_some() {
            return;
        }
        if start.elapsed() > PAUSE_LIMIT || stop.load(Ordering::Relaxed) {
            log::warn!("a frame waited {PAUSE_LIMIT:?} for a free RX descriptor; dropped");
            model.lock().receive(frame);
            return;
        }
        std::thread::sleep(Duration::from_micros(20));
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
