//! Two software E810s cabled back to back: card A behind host-mux (with the DDP package, so a
//! queue per VM steered by Flow Director), card B driven by the test as the wire.

use std::sync::Arc;

use host_mux::{BackendConfig, HostMux, MuxConfig, VmConfig};
use ice_driver::{DdpSource, IceDevice, IcePort, IceRxQueue, IceTxQueue};
use ice_model::pci::ModelPci;
use ice_model::{E810Model, ModelConfig};
use parking_lot::Mutex;
use vdpdk_core::{MacAddr, Mempool};

use super::TempDir;

/// host-mux on card A and the wire's queues on card B.
pub struct IceRig {
    pub mux: HostMux,
    /// Card A's model, to read what the card saw (DMA faults).
    pub model_a: Arc<Mutex<E810Model>>,
    pub wire: IceDevice,
    pub pool: Mempool,
    pub w_rx: IceRxQueue,
    pub w_tx: IceTxQueue,
}

/// Starts host-mux on card A serving `vms` (name, MAC; one queue each way), with `cfg`'s
/// changes to the defaults (`idle_polls` 64, `hw_steering` on), and brings card B up as the wire.
pub fn ice_rig(
    dir: &TempDir,
    vms: &[(&str, MacAddr)],
    cfg: impl FnOnce(MuxConfig) -> MuxConfig,
) -> IceRig {
    let (card_a, card_b) = ModelPci::back_to_back(
        ModelConfig {
            mac: MacAddr([0x00, 0x1b, 0x21, 0, 0, 0xa]),
            ..Default::default()
        },
        ModelConfig {
            mac: MacAddr([0x00, 0x1b, 0x21, 0, 0, 0xb]),
            ..Default::default()
        },
    );
    let model_a = card_a.model.clone();
    let port = IcePort::open_with(
        card_a,
        DdpSource::Bytes(ice_driver::ddp::synthetic_package(2)),
    )
    .unwrap();
    let vms = vms
        .iter()
        .map(|(n, m)| VmConfig {
            name: n.to_string(),
            socket: dir.sock(n),
            mac: *m,
            rx_queues: 1,
            tx_queues: 1,
            cluster: 0,
        })
        .collect();
    // (`backend` only tells the CLI what to open; HostMux::start takes the port itself.)
    let cfg = cfg(MuxConfig {
        idle_polls: 64,
        hw_steering: true,
        ..MuxConfig::new(BackendConfig::Pair, vms)
    });
    let mux = HostMux::start(&cfg, Box::new(port)).unwrap();
    let mut wire = IceDevice::probe(card_b).unwrap();
    wire.link_up().unwrap();
    let pool = Mempool::new("wire", 4096, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let w_rx = wire.setup_rx_queue(0, 1024, &pool).unwrap();
    let w_tx = wire.setup_tx_queue(0, 1024).unwrap();
    IceRig {
        mux,
        model_a,
        wire,
        pool,
        w_rx,
        w_tx,
    }
}
