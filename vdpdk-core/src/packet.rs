//! The former home of frame builders and software offload helpers, kept so existing paths
//! (`vdpdk_core::packet::udp_frame`, `vdpdk_core::packet::TxLayout`, ...) keep working.
//! New code names the modules that own them: [`crate::test_frames`] (builders and digest),
//! [`crate::wire`] (checksums, TCP segmentation) and [`crate::offload`] (TX offload requests).

pub use crate::offload::{fill_tx_checksums, TxLayout};
pub use crate::test_frames::{ether_frame, frame_seq, udp_frame, write_udp_frame, Digest};
pub use crate::wire::checksum::{complete_checksum, fold, inet_checksum, ones_sum};
pub use crate::wire::tso::{finish_tcp_segment, TcpLayout};
