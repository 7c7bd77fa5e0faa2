//! The vDPDK paravirtual device ABI, shared by host-mux (device side) and guest-pmd (driver side).
//!
//! The device is a PCI function `1af4:7abc` with two BARs:
//! - **BAR0, signal region** (trapped: every access is a vfio-user message or VM exit): magic and
//!   version, the control doorbell and status, the TX kick register, and the MSI-X table/PBA.
//! - **BAR2, data region** (a memfd both sides map): the device-info block, the control request
//!   and response blocks, and per-queue event flags. Reading device info or flags costs no exit.
//!
//! Packet rings live in guest DMA memory (see [`desc`]); control requests are written into BAR2,
//! executed by a write to `REG_CTRL_DOORBELL`, and completed when `REG_CTRL_STATUS` is read.
//! Host-side, everything a guest writes is copied out once and validated before use.

pub mod desc;
pub mod flow_codec;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// PCI vendor id (Red Hat's virtio range, 0x1af4).
pub const VENDOR_ID: u16 = 0x1af4;
/// PCI device id of a vDPDK function.
pub const DEVICE_ID: u16 = 0x7abc;
/// PCI subsystem vendor id.
pub const SUBSYS_VENDOR_ID: u16 = 0x1af4;
/// PCI subsystem id.
pub const SUBSYS_ID: u16 = 0x0001;
/// PCI revision id; bumped with incompatible register changes.
pub const REVISION: u8 = 1;
/// PCI class: network controller, Ethernet.
pub const CLASS_CODE: [u8; 3] = [0x00, 0x00, 0x02]; // prog-if, subclass, class

/// Value of `REG_MAGIC` and of [`DeviceInfoBlock::magic`]: "VDPK" in ASCII.
pub const ABI_MAGIC: u32 = 0x5644_504b; // "VDPK"
/// ABI major version: a driver must speak the same one ([`negotiate`]).
pub const ABI_MAJOR: u16 = 2;
/// ABI minor version: additions a driver of the same major may ignore.
pub const ABI_MINOR: u16 = 0;

// ---- BAR layout ----
/// Index of the signal BAR (registers, MSI-X; every access traps).
pub const SIGNAL_BAR: u8 = 0;
/// Size of the signal BAR in bytes (8 KiB).
pub const SIGNAL_BAR_SIZE: u64 = 0x2000;
/// Index of the data BAR (shared memfd: info, control, queue flags).
pub const DATA_BAR: u8 = 2;
/// Size of the data BAR in bytes (64 KiB).
pub const DATA_BAR_SIZE: u64 = 0x1_0000;

// BAR0 registers (32-bit).
/// RO: `ABI_MAGIC`.
pub const REG_MAGIC: u64 = 0x000;
/// RO: `ABI_MAJOR << 16 | ABI_MINOR`.
pub const REG_VERSION: u64 = 0x004;
/// WO: execute the request in the control block; the value written is its sequence number.
pub const REG_CTRL_DOORBELL: u64 = 0x010;
/// RO: status of the last executed request (a `CtrlStatus`). Reading it also orders the guest
/// after the doorbell write, which a VMM may post.
pub const REG_CTRL_STATUS: u64 = 0x014;
/// WO: the guest posted TX descriptors on queue `value` after the host asked for a kick.
pub const REG_TX_KICK: u64 = 0x020;
/// MSI-X table and PBA (one vector per RX queue).
pub const MSIX_TABLE_OFFSET: u32 = 0x1000;
/// PBA offset in BAR0 (after the MSI-X table).
pub const MSIX_PBA_OFFSET: u32 = 0x1800;

// BAR2 layout.
/// Offset of the [`DeviceInfoBlock`] in BAR2.
pub const INFO_OFFSET: usize = 0x0000;
/// Offset of the [`CtrlRequest`] block in BAR2.
pub const CTRL_REQ_OFFSET: usize = 0x1000;
/// Offset of the [`CtrlResponse`] block in BAR2.
pub const CTRL_RESP_OFFSET: usize = 0x1800;
/// Offset of the RX queue flag lines in BAR2 (one [`QUEUE_FLAGS_STRIDE`] line per queue).
pub const RXQ_FLAGS_OFFSET: usize = 0x2000;
/// Offset of the TX queue flag lines in BAR2 (one [`QUEUE_FLAGS_STRIDE`] line per queue).
pub const TXQ_FLAGS_OFFSET: usize = 0x3000;
/// Each queue's flags sit on their own cache line.
pub const QUEUE_FLAGS_STRIDE: usize = 64;

/// Queues a device can offer per direction (bounded by the flag areas and MSI-X vectors).
pub const MAX_QUEUES: u16 = 64;
/// Fewest descriptors a ring may have (a power of two).
pub const MIN_RING_SIZE: u16 = 32;
/// Most descriptors a ring may have (a power of two).
pub const MAX_RING_SIZE: u16 = 4096;
/// Largest buffer a descriptor may describe.
pub const MAX_BUF_LEN: u32 = 16 * 1024;

/// Offsets of a queue's flag words in BAR2.
pub fn rxq_flags_offset(q: u16) -> usize {
    RXQ_FLAGS_OFFSET + q as usize * QUEUE_FLAGS_STRIDE
}
/// Offset in BAR2 of TX queue `q`'s flag line.
pub fn txq_flags_offset(q: u16) -> usize {
    TXQ_FLAGS_OFFSET + q as usize * QUEUE_FLAGS_STRIDE
}
/// Within an RX queue's flag line: non-zero while the guest wants an interrupt (MSI-X vector =
/// queue id) on the next delivered packet. The host clears it when it fires.
pub const RXQ_FLAG_INTR_ARMED: usize = 0;
/// Within an RX queue's flag line (with [`Features::RX_DONE_INDEX`]): the ring index (low 16
/// bits) of the next descriptor the host will fill. Every descriptor before it is complete,
/// so the guest reads them without first testing each one's flags. Host-written once per
/// burst, 0 after queue setup.
pub const RXQ_DONE_INDEX: usize = 4;
/// Within an RX queue's flag line (with [`Features::RX_ZERO_COPY`]): [`RXQ_DONE_INDEX`] of
/// the queue's direct ring ([`CtrlOp::RxqDirectSetup`]).
pub const RXQ_DIRECT_DONE_INDEX: usize = 8;
/// Within a TX queue's flag line: non-zero while the host poller sleeps and wants a kick
/// (`REG_TX_KICK`) after new descriptors are posted.
pub const TXQ_FLAG_KICK_WANTED: usize = 0;
/// Within a TX queue's flag line (with [`Features::TX_DONE_INDEX`]): the ring index (low 16
/// bits) of the next descriptor the host will release (with [`Features::TX_ZERO_COPY`] it can
/// trail the descriptors the host has taken). Every descriptor before it has been released, so the guest reclaims up to it without reading descriptor flags. Host-written
/// once per burst, 0 after queue setup.
pub const TXQ_DONE_INDEX: usize = 4;
/// Within a TX queue's flag line (with [`Features::TX_DONE_INDEX`]): how many descriptors
/// the host has released with `DESC_F_ERROR` since queue setup (wrapping), so the guest can
/// count its refused frames without reading their flags.
pub const TXQ_REFUSED: usize = 8;

bitflags::bitflags! {
    /// Features a device offers and a driver may request during negotiation.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Features: u64 {
        /// Guest-armed RX interrupts through MSI-X.
        const RX_INTR    = 1 << 0;
        /// TX kick register honoured when the host asks for it.
        const TX_KICK    = 1 << 1;
        /// rte_flow rules through the control block.
        const FLOW       = 1 << 2;
        /// More than one queue per direction.
        const MULTIQUEUE = 1 << 3;
        /// TX checksum offload requests in descriptors.
        const TX_CSUM    = 1 << 4;
        /// RX checksum status in descriptors.
        const RX_CSUM    = 1 << 5;
        /// The host publishes each TX queue's progress in its flag line (`TXQ_DONE_INDEX`,
        /// `TXQ_REFUSED`): one cache line per burst for the guest to read instead of the
        /// flags of every descriptor.
        const TX_DONE_INDEX = 1 << 6;
        /// The host publishes each RX queue's progress in its flag line (`RXQ_DONE_INDEX`).
        const RX_DONE_INDEX = 1 << 7;
        /// Zero-copy TX: the host may hand a frame's payload to the NIC backend in place, in
        /// guest memory, and release its descriptor only once the backend is done with it
        /// (descriptors are still released in ring order). The guest must leave a posted
        /// buffer alone until it is released, as it must anyway; what changes is that a
        /// release can come later. Frame headers are always copied and checked on the host.
        const TX_ZERO_COPY = 1 << 8;
        /// TX descriptors are passed by laps (`desc::RingPtr`): the guest's `DESC_F_AVAIL`
        /// bit alternates with each lap of the ring and the host never writes the TX ring, so
        /// its lines go one way only, guest to host (as memif's descriptors do). Needs
        /// `TX_DONE_INDEX`, the only way the guest then learns of releases.
        const TX_LAPS = 1 << 9;
        /// Zero-copy RX: RX queue 0 may get a second ring, its **direct ring**
        /// ([`CtrlOp::RxqDirectSetup`]), whose posted buffers the host hands to the NIC queue
        /// dedicated to this VM, so the NIC writes frames straight into guest memory. The
        /// direct ring completes in the NIC's order and publishes its progress as
        /// [`RXQ_DIRECT_DONE_INDEX`]; broadcasts, frames from other VMs and whatever the
        /// host copies keep arriving on the queue's own ring, so the guest reads both, its
        /// own ring first: when lending starts, the frames copied before it are the older.
        /// (Where lending starts or stops under traffic, a frame may still overtake one on
        /// the other ring; within either ring the order is the NIC's.) A direct buffer may
        /// stay posted a long time (until a frame for it comes), and the host takes its
        /// buffers back from the NIC before any DMA unmap, reset or stop completes. Needs
        /// `RX_DONE_INDEX`.
        const RX_ZERO_COPY = 1 << 10;
    }
}

/// The device-info block at `INFO_OFFSET` in BAR2 (host-written, guest-read).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct DeviceInfoBlock {
    /// [`ABI_MAGIC`].
    pub magic: u32,
    /// [`ABI_MAJOR`] of the device.
    pub abi_major: u16,
    /// [`ABI_MINOR`] of the device.
    pub abi_minor: u16,
    /// [`Features`] the device offers, as bits.
    pub features: u64,
    /// The port's MAC address.
    pub mac: [u8; 6],
    /// Current MTU (L3 bytes).
    pub mtu: u16,
    /// RX queues the device offers.
    pub max_rx_queues: u16,
    /// TX queues the device offers.
    pub max_tx_queues: u16,
    /// Smallest ring size accepted (descriptors).
    pub min_ring_size: u16,
    /// Largest ring size accepted (descriptors).
    pub max_ring_size: u16,
    /// Largest MTU the device accepts (L3 bytes).
    pub max_mtu: u16,
    /// Non-zero when the backend link is up.
    pub link_up: u16,
    /// Link speed in Mbit/s; 0 when unknown.
    pub link_speed_mbps: u32,
    /// RX offload capabilities (`ethdev::RxOffloads` bits).
    pub rx_offload_capa: u64,
    /// TX offload capabilities (`ethdev::TxOffloads` bits).
    pub tx_offload_capa: u64,
}
const _: () = assert!(size_of::<DeviceInfoBlock>() == 56);

/// Control operations (the `op` of a [`CtrlRequest`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrlOp {
    /// args: \[driver major << 16 | minor, requested features\]. result\[0\] = agreed features.
    Negotiate = 1,
    /// args: \[nb_rx_queues, nb_tx_queues\].
    Configure = 2,
    /// args: \[qid, ring IOVA, ring size\].
    RxqSetup = 3,
    /// args: \[qid, ring IOVA, ring size\].
    TxqSetup = 4,
    /// Start the port (queues set up, rings live).
    Start = 5,
    /// Stop the port; rings stay set up.
    Stop = 6,
    /// Stop, forget queues and flow rules, back to the negotiated state.
    Reset = 7,
    /// payload: flow wire codec.
    FlowValidate = 8,
    /// payload: flow wire codec. result\[0\] = handle.
    FlowCreate = 9,
    /// args: \[handle\].
    FlowDestroy = 10,
    /// Remove every flow rule.
    FlowFlush = 11,
    /// result: see [`StatsIndex`].
    GetStats = 12,
    /// args: \[qid (0), ring IOVA, ring size\]: the direct ring of an RX queue (with
    /// [`Features::RX_ZERO_COPY`]; a queue set up again loses it).
    RxqDirectSetup = 13,
}

impl CtrlOp {
    /// The operation with this code, or None for an unknown one.
    pub fn from_u32(v: u32) -> Option<CtrlOp> {
        use CtrlOp::*;
        Some(match v {
            1 => Negotiate,
            2 => Configure,
            3 => RxqSetup,
            4 => TxqSetup,
            5 => Start,
            6 => Stop,
            7 => Reset,
            8 => FlowValidate,
            9 => FlowCreate,
            10 => FlowDestroy,
            11 => FlowFlush,
            12 => GetStats,
            13 => RxqDirectSetup,
            _ => return None,
        })
    }
}

/// Status codes in `REG_CTRL_STATUS` and [`CtrlResponse::status`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrlStatus {
    /// Done.
    Ok = 0,
    /// `op` is not a [`CtrlOp`].
    UnknownOp = 1,
    /// An argument or the payload is out of range or malformed.
    InvalidArg = 2,
    /// The operation is not allowed in the device's current state.
    BadState = 3,
    /// Refused by policy (not the guest's MAC or queue, a limit reached).
    Refused = 4,
    /// The host ran out of a resource.
    NoMem = 5,
    /// ABI major mismatch during negotiation.
    Version = 6,
    /// A feature or flow rule the device cannot provide.
    Unsupported = 7,
    /// The doorbell's sequence number did not match the request block.
    BadSeq = 8,
}

impl CtrlStatus {
    /// The status with this code, or None for an unknown one.
    pub fn from_u32(v: u32) -> Option<CtrlStatus> {
        use CtrlStatus::*;
        Some(match v {
            0 => Ok,
            1 => UnknownOp,
            2 => InvalidArg,
            3 => BadState,
            4 => Refused,
            5 => NoMem,
            6 => Version,
            7 => Unsupported,
            8 => BadSeq,
            _ => return None,
        })
    }
}

/// Bytes of a request's payload area.
pub const CTRL_PAYLOAD_MAX: usize = 1024;
/// Bytes of a response's reason message (NUL-padded).
pub const CTRL_MSG_MAX: usize = 256;

/// A control request at `CTRL_REQ_OFFSET` (guest-written, host copies it out once).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CtrlRequest {
    /// A [`CtrlOp`] code.
    pub op: u32,
    /// Sequence number; the doorbell write must repeat it.
    pub seq: u32,
    /// Operation arguments (see [`CtrlOp`]).
    pub args: [u64; 4],
    /// Bytes of `payload` in use (at most [`CTRL_PAYLOAD_MAX`]).
    pub payload_len: u32,
    /// Zero; keeps `payload` 8-byte aligned.
    pub _pad: u32,
    /// Operation payload (the flow wire codec for flow ops).
    pub payload: [u8; CTRL_PAYLOAD_MAX],
}
const _: () = assert!(size_of::<CtrlRequest>() == 1072);
const _: () = assert!(CTRL_REQ_OFFSET + size_of::<CtrlRequest>() <= CTRL_RESP_OFFSET);

/// The response at `CTRL_RESP_OFFSET` (host-written).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CtrlResponse {
    /// Sequence number of the request this answers.
    pub seq: u32,
    /// A [`CtrlStatus`] code.
    pub status: u32,
    /// Operation results (see [`CtrlOp`], [`StatsIndex`]).
    pub result: [u64; 16],
    /// NUL-padded UTF-8 reason when status is not Ok.
    pub msg: [u8; CTRL_MSG_MAX],
}
const _: () = assert!(size_of::<CtrlResponse>() == 392);
const _: () = assert!(CTRL_RESP_OFFSET + size_of::<CtrlResponse>() <= RXQ_FLAGS_OFFSET);
const _: () =
    assert!(TXQ_FLAGS_OFFSET + MAX_QUEUES as usize * QUEUE_FLAGS_STRIDE <= DATA_BAR_SIZE as usize);
const _: () =
    assert!(RXQ_FLAGS_OFFSET + MAX_QUEUES as usize * QUEUE_FLAGS_STRIDE <= TXQ_FLAGS_OFFSET);

impl CtrlResponse {
    /// The reason message, up to its first NUL (lossy UTF-8).
    pub fn message(&self) -> String {
        let end = self
            .msg
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.msg.len());
        String::from_utf8_lossy(&self.msg[..end]).into_owned()
    }
    /// Stores `s` as the reason, cut at a character boundary to leave a terminating NUL.
    pub fn set_message(&mut self, s: &str) {
        self.msg = [0; CTRL_MSG_MAX];
        let mut n = s.len().min(CTRL_MSG_MAX - 1);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.msg[..n].copy_from_slice(&s.as_bytes()[..n]);
    }
}

/// Layout of `GetStats` results: the host's view of this guest.
#[repr(usize)]
#[derive(Clone, Copy, Debug)]
pub enum StatsIndex {
    /// Frames the host delivered into the guest's RX rings.
    RxPackets = 0,
    /// Bytes of the frames counted in `RxPackets`.
    RxBytes = 1,
    /// Frames for this guest dropped because its RX ring had no free descriptor.
    RxNoDesc = 2,
    /// Frames taken from the guest's TX rings and sent on the wire.
    TxPackets = 3,
    /// Bytes of the frames counted in `TxPackets`.
    TxBytes = 4,
    /// TX descriptors refused (IOVA outside the DMA map, bad length).
    TxBadDesc = 5,
    /// TX frames the backend could not take.
    TxBackendDrop = 6,
    /// RX descriptors refused (buffer outside the DMA map or too small).
    RxBadDesc = 7,
    /// Control requests refused, and accesses to unknown register offsets.
    CtrlErrors = 8,
    /// Frames dropped by a guest DROP flow rule.
    RxFlowDrop = 9,
    /// TX frames dropped because their source MAC is not the guest's own (spoof check).
    TxSpoofed = 10,
    /// Interrupts the host could not deliver (the guest's eventfd was full or broken).
    IrqErrors = 11,
}
/// Number of [`StatsIndex`] counters a `GetStats` result holds.
pub const STATS_COUNT: usize = 12;
/// Names of the `StatsIndex` counters, in order (for tables and JSON).
pub const STATS_NAMES: [&str; STATS_COUNT] = [
    "rx_packets",
    "rx_bytes",
    "rx_no_desc",
    "tx_packets",
    "tx_bytes",
    "tx_bad_desc",
    "tx_backend_drop",
    "rx_bad_desc",
    "ctrl_errors",
    "rx_flow_drop",
    "tx_spoofed",
    "irq_errors",
];

/// Version/feature negotiation, run by the host on `CtrlOp::Negotiate`.
/// Majors must match; the driver may request only offered features. Returns the agreed set.
pub fn negotiate(
    host_major: u16,
    offered: Features,
    driver_major: u16,
    requested: u64,
) -> Result<Features, String> {
    if driver_major != host_major {
        return Err(format!(
            "driver speaks vDPDK ABI {driver_major}.x, device speaks {host_major}.x"
        ));
    }
    let req = Features::from_bits(requested)
        .ok_or_else(|| format!("driver requested unknown feature bits {requested:#x}"))?;
    if !offered.contains(req) {
        return Err(format!(
            "driver requested features {:?} the device does not offer",
            req - offered
        ));
    }
    if req.contains(Features::TX_LAPS) && !req.contains(Features::TX_DONE_INDEX) {
        return Err(
            "driver requested TX_LAPS without TX_DONE_INDEX, its only way to learn \
                    of TX releases"
                .into(),
        );
    }
    if req.contains(Features::RX_ZERO_COPY) && !req.contains(Features::RX_DONE_INDEX) {
        return Err(
            "driver requested RX_ZERO_COPY without RX_DONE_INDEX, the only way its direct \
             ring reports completions"
                .into(),
        );
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn negotiation_refuses_other_major_and_unknown_bits() {
        let offered = Features::RX_INTR | Features::FLOW;
        assert_eq!(
            negotiate(1, offered, 1, Features::FLOW.bits()).unwrap(),
            Features::FLOW
        );
        assert!(negotiate(1, offered, 2, 0).unwrap_err().contains("2.x"));
        assert!(negotiate(1, offered, 1, 1 << 60).is_err());
        assert!(negotiate(1, offered, 1, Features::TX_CSUM.bits()).is_err());
    }

    #[test]
    fn tx_laps_needs_the_done_index() {
        let offered = Features::TX_DONE_INDEX | Features::TX_LAPS;
        let both = negotiate(1, offered, 1, offered.bits()).unwrap();
        assert_eq!(both, offered);
        let err = negotiate(1, offered, 1, Features::TX_LAPS.bits()).unwrap_err();
        assert!(err.contains("TX_DONE_INDEX"), "{err}");
        let offered = offered | Features::RX_ZERO_COPY | Features::RX_DONE_INDEX;
        let err = negotiate(1, offered, 1, Features::RX_ZERO_COPY.bits()).unwrap_err();
        assert!(err.contains("RX_DONE_INDEX"), "{err}");
    }

    #[test]
    fn op_and_status_roundtrip() {
        for v in 1..=13 {
            assert_eq!(CtrlOp::from_u32(v).unwrap() as u32, v);
        }
        assert!(CtrlOp::from_u32(0).is_none());
        assert!(CtrlOp::from_u32(14).is_none());
        for v in 0..=8 {
            assert_eq!(CtrlStatus::from_u32(v).unwrap() as u32, v);
        }
    }

    #[test]
    fn response_message_is_bounded() {
        let mut r = CtrlResponse::new_zeroed();
        r.set_message(&"é".repeat(500));
        assert!(r.message().len() < CTRL_MSG_MAX);
        r.set_message("queue 9 is not yours");
        assert_eq!(r.message(), "queue 9 is not yours");
    }
}
