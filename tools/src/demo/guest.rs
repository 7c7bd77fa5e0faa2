//! The demo's guests: each attaches to host-mux over vfio-user and echoes every frame back to
//! its sender, keeping a ledger of what it did for the account at the end.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use guest_pmd::VdpdkPort;
use host_mux::MuxConfig;
use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::{EthDev, MacAddr, Mbuf, Mempool};

use super::{guest_mac, BURST, GUEST_RING};

/// The guests' phase, set by the main thread.
pub(super) const RUN: u8 = 0;
/// Stop echoing: what a guest holds or still receives is counted as queued in it.
pub(super) const QUIESCE: u8 = 1;
/// Detach and end.
const EXIT: u8 = 2;

/// What one guest did, for the account at the end (final once its thread ended).
#[derive(Default)]
pub(super) struct GuestLedger {
    /// Frames taken from its RX ring while echoing.
    pub received: AtomicU64,
    /// Echoes its TX ring accepted.
    pub echoed: AtomicU64,
    /// Received but not yet accepted by the TX ring when it stopped echoing (freed).
    pub held: AtomicU64,
    /// Found in its RX ring after it stopped echoing (freed).
    pub discarded: AtomicU64,
    /// It stopped echoing and counted what it held.
    pub quiesced: AtomicBool,
}

/// One guest thread and its ledger.
pub(super) struct Guest {
    pub ledger: Arc<GuestLedger>,
    thread: Option<JoinHandle<vdpdk_core::Result<()>>>,
}

impl Guest {
    /// Whether its thread ended (or was joined).
    pub fn ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// Starts one echoing guest thread per VM of `cfg`.
pub(super) fn spawn(cfg: &MuxConfig, phase: &Arc<AtomicU8>) -> vdpdk_core::Result<Vec<Guest>> {
    let mut guests: Vec<Guest> = Vec::new();
    for (i, vm) in cfg.vms.iter().enumerate() {
        let ledger = Arc::new(GuestLedger::default());
        let (sock, phase, l) = (vm.socket.clone(), phase.clone(), ledger.clone());
        let mac = guest_mac(i as u8);
        let thread = std::thread::Builder::new()
            .name(format!("guest-vm{i}"))
            .spawn(move || guest_echo(&sock, mac, &phase, &l))?;
        guests.push(Guest {
            ledger,
            thread: Some(thread),
        });
    }
    Ok(guests)
}

/// Tells the guests to stop, joins them, and returns the first failure of one.
pub(super) fn stop(phase: &AtomicU8, guests: &mut [Guest]) -> Option<vdpdk_core::Error> {
    phase.store(EXIT, Ordering::Release);
    let mut first = None;
    for (i, g) in guests.iter_mut().enumerate() {
        let r = match g.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => continue,
            Some(Ok(Err(e))) => format!("guest vm{i}: {e}"),
            Some(Err(_)) => format!("guest vm{i} panicked"),
        };
        first.get_or_insert(vdpdk_core::Error::Device(r));
    }
    first
}

/// A guest: attach over vfio-user and echo every frame back to its sender (destination = the
/// old source, source = its own MAC) until told to stop.
fn guest_echo(
    sock: &Path,
    mac: MacAddr,
    phase: &AtomicU8,
    ledger: &GuestLedger,
) -> vdpdk_core::Result<()> {
    let mut port = VdpdkPort::connect(sock)?;
    let pool = Mempool::new(
        "guest",
        2 * GUEST_RING as u32 + 1024,
        vdpdk_core::DEFAULT_BUF_SIZE,
    )?;
    let (mut rx, mut tx) = start_single_queue(&mut port, &pool, GUEST_RING, false)?;
    let mut buf: Vec<Mbuf> = Vec::with_capacity(BURST);
    let (mut received, mut echoed) = (0u64, 0u64);
    while phase.load(Ordering::Acquire) == RUN {
        if !buf.is_empty() {
            echoed += tx.tx_burst(&mut buf) as u64;
            if !buf.is_empty() {
                // TX ring full: let host-mux catch up before taking more.
                std::thread::sleep(Duration::from_micros(20));
                continue;
            }
        }
        let got = rx.rx_burst(&mut buf, BURST);
        if got == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        received += got as u64;
        for m in &mut buf {
            let d = m.data_mut();
            if d.len() >= 12 {
                let (dst, rest) = d.split_at_mut(6);
                dst.copy_from_slice(&rest[..6]);
                rest[..6].copy_from_slice(&mac.0);
            }
        }
        echoed += tx.tx_burst(&mut buf) as u64;
    }
    ledger.received.store(received, Ordering::Relaxed);
    ledger.echoed.store(echoed, Ordering::Relaxed);
    ledger.held.store(buf.len() as u64, Ordering::Relaxed);
    Mempool::free_bulk(&mut buf);
    ledger.quiesced.store(true, Ordering::Release);
    // Stopped echoing: whatever still arrives is counted and freed until it is time to detach.
    let mut discarded = 0u64;
    loop {
        let got = rx.rx_burst(&mut buf, BURST);
        if got > 0 {
            discarded += got as u64;
            ledger.discarded.store(discarded, Ordering::Relaxed);
            Mempool::free_bulk(&mut buf);
        } else {
            if phase.load(Ordering::Acquire) == EXIT {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(rx);
    drop(tx);
    port.stop()
}
