//! The far end of host-mux's backend: what the bench's "wire" is.

use vdpdk_core::ethdev::start_single_queue;
use vdpdk_core::{EthDev, MacAddr, Mbuf, Mempool, RxQueue, TxQueue};
use vdpdk_null::NullWire;

use crate::{WireKind, BURST};

/// host-mux's own MAC on the backend.
const MUX_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfd]);

/// The wire the bench thread sees.
pub enum Wire {
    /// A pair port, driven by the bench thread: every frame host-mux sends is received (and
    /// freed) there, every frame host-mux receives is allocated and sent there. That is a
    /// third actor on the guest's CPU.
    Pair {
        rx: Box<dyn RxQueue>,
        tx: Box<dyn TxQueue>,
        pool: Mempool,
        /// Kept open: a dropped pair port is an unplugged cable.
        _port: Box<vdpdk_pair::PairPort>,
    },
    /// The null NIC: host-mux's poller frees what it sends and copies a template for what it
    /// receives, on its own CPU, as a NIC's DMA would cost the host nothing.
    Null(NullWire),
}

impl Wire {
    /// Builds the wire and host-mux's side of it, `wire_mac` being the far end's MAC.
    pub fn new(kind: WireKind, wire_mac: MacAddr) -> vdpdk_core::Result<(Box<dyn EthDev>, Wire)> {
        Ok(match kind {
            WireKind::Pair => {
                let (mux_end, mut far) = vdpdk_pair::pair(MUX_MAC, wire_mac, 1, 4096);
                let pool = Mempool::new("bench-wire", 16384, vdpdk_core::DEFAULT_BUF_SIZE)?;
                let (rx, tx) = start_single_queue(&mut far, &pool, 1024, false)?;
                (
                    Box::new(mux_end),
                    Wire::Pair {
                        rx,
                        tx,
                        pool,
                        _port: Box::new(far),
                    },
                )
            }
            WireKind::Null => {
                let (port, wire) = vdpdk_null::null_port(MUX_MAC);
                (Box::new(port), Wire::Null(wire))
            }
        })
    }

    /// Frames the wire received so far, where it counts them itself (the null wire); the pair
    /// wire's are counted by whoever calls [`Wire::take`].
    pub fn sunk(&self) -> u64 {
        match self {
            Wire::Pair { .. } => 0,
            Wire::Null(w) => w.sunk().0,
        }
    }

    /// Receives and frees what reached the pair wire; returns how many. The null wire
    /// consumes on its own, so 0.
    pub fn take(&mut self, buf: &mut Vec<Mbuf>) -> usize {
        match self {
            Wire::Pair { rx, .. } => {
                let n = rx.rx_burst(buf, BURST);
                Mempool::free_bulk(buf);
                n
            }
            Wire::Null(_) => 0,
        }
    }

    /// Starts offering `frames` to host-mux, round robin: the null wire produces them on the
    /// poller's CPU from now on; the pair wire sends a burst at each [`Wire::offer`].
    pub fn start_source(&mut self, frames: &[Vec<u8>]) {
        if let Wire::Null(w) = self {
            w.set_source(frames);
        }
    }

    /// Stops the null wire's source.
    pub fn stop_source(&mut self) {
        if let Wire::Null(w) = self {
            w.stop_source();
        }
    }

    /// The pair wire sends up to a burst of `frames` (round robin from `*next`); a no-op for
    /// the null wire, whose source runs on its own.
    pub fn offer(&mut self, pending: &mut Vec<Mbuf>, frames: &[Vec<u8>], next: &mut usize) {
        if let Wire::Pair { tx, pool, .. } = self {
            let start = pending.len();
            pool.alloc_bulk(pending, BURST - start);
            for m in &mut pending[start..] {
                m.copy_from(&frames[*next]).expect("template fits");
                *next = (*next + 1) % frames.len();
            }
            tx.tx_burst(pending);
        }
    }
}
