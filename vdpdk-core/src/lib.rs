#![warn(missing_docs)]

//! # vdpdk-core
//!
//! The foundation every other crate builds on, with no I/O of its own:
//! - [`ethdev`]: the DPDK-shaped device traits ([`EthDev`], [`RxQueue`], [`TxQueue`]) and their
//!   types (device info, offload capability bitflags with DPDK's names, config, stats, link);
//! - [`mbuf`] and [`dma`]: packet buffers in shared, DMA-able memory with no per-packet allocation;
//! - [`flow`]: rte_flow-shaped rules and a software matcher;
//! - [`wire`]: typed views over frame bytes (Ethernet with VLAN tags, IPv4, IPv6, TCP, UDP),
//!   checksums and TCP segmentation, and [`wire::parse`], the one parse per frame every frame
//!   reader here starts from;
//! - [`offload`]: per-packet offload metadata (flags, packet type, header lengths) and TX
//!   offloads done in software; [`mac`]: Ethernet addresses;
//! - [`skeleton`]: the port bookkeeping every driver shares (state checks, queue slots taken
//!   once per start, counters);
//! - [`test_frames`]: builders of test and generator frames (old paths stay in [`packet`]);
//! - [`abi`]: the vDPDK paravirtual device ABI (PCI ids, BARs, control block, descriptors, ring,
//!   flow wire codec, version negotiation).

pub mod abi;
pub mod dma;
pub mod error;
pub mod ethdev;
pub mod flow;
pub mod mac;
pub mod mbuf;
pub mod offload;
pub mod packet;
pub mod skeleton;
pub mod test_frames;
pub mod wire;

pub use dma::{DmaMemory, ExternalDma, ExternalRegion};
pub use error::{Error, Result};
pub use ethdev::{
    DescLimits, DevConfig, DevInfo, EthDev, LentBuf, LentRx, LinkStatus, PortStats, QueueCounters,
    RxOffloads, RxQueue, TxOffloads, TxQueue,
};
pub use flow::{FlowAction, FlowAttr, FlowHandle, FlowItem, FlowRule};
pub use mac::MacAddr;
pub use mbuf::{
    Lender, Lending, Mbuf, MbufFifo, Mempool, OlFlags, PacketType, ParkedMbuf, DEFAULT_BUF_SIZE,
    MBUF_HEADROOM,
};
