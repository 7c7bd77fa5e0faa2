//! # vdpdk-core
//!
//! The foundation every other crate builds on, with no I/O of its own:
//! - [`ethdev`]: the DPDK-shaped device traits ([`EthDev`], [`RxQueue`], [`TxQueue`]) and their
//!   types (device info, offload capability bitflags with DPDK's names, config, stats, link);
//! - [`mbuf`] and [`dma`]: packet buffers in shared, DMA-able memory with no per-packet allocation;
//! - [`flow`]: rte_flow-shaped rules and a software matcher;
//! - [`abi`]: the vDPDK paravirtual device ABI (PCI ids, BARs, control block, descriptors, ring,
//!   flow wire codec, version negotiation).

pub mod abi;
pub mod dma;
pub mod error;
pub mod ethdev;
pub mod flow;
pub mod mbuf;
pub mod packet;
pub mod skeleton;

pub use dma::DmaMemory;
pub use error::{Error, Result};
pub use ethdev::{
    DescLimits, DevConfig, DevInfo, EthDev, LinkStatus, MacAddr, PortStats, QueueCounters,
    RxOffloads, RxQueue, TxOffloads, TxQueue,
};
pub use flow::{FlowAction, FlowAttr, FlowHandle, FlowItem, FlowRule};
pub use mbuf::{Mbuf, Mempool, OlFlags, PacketType, DEFAULT_BUF_SIZE, MBUF_HEADROOM};
