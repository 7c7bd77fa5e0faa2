//! Structured guest inputs (derived with `arbitrary`) shared by the targets: offsets, IOVAs
//! and sizes biased towards the values that matter (registers, region bases, ends of the
//! address space) and flow rules built in the wire codec's layout.

use arbitrary::Arbitrary;
use vdpdk_core::abi;

const PAGE: u64 = 4096;

/// Offsets that mean something in the device's regions.
const KNOWN_OFFSETS: &[u64] = &[
    0,
    abi::REG_VERSION,
    abi::REG_CTRL_DOORBELL,
    abi::REG_CTRL_STATUS,
    abi::REG_TX_KICK,
    abi::MSIX_TABLE_OFFSET as u64,
    abi::MSIX_PBA_OFFSET as u64,
    abi::SIGNAL_BAR_SIZE - 4,
    abi::SIGNAL_BAR_SIZE,
    abi::CTRL_REQ_OFFSET as u64,
    abi::CTRL_RESP_OFFSET as u64,
    abi::RXQ_FLAGS_OFFSET as u64,
    abi::TXQ_FLAGS_OFFSET as u64,
    abi::DATA_BAR_SIZE - 64,
    abi::DATA_BAR_SIZE - 1,
    abi::DATA_BAR_SIZE,
    0x04, // PCI command
    0x3c, // interrupt line
    0x40, // MSI-X capability
    0x43, // MSI-X control (high byte)
    0xfc,
    0x100, // end of config space
];

/// A region offset.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Off {
    Known(u8),
    KnownPlus(u8, i8),
    Small(u16),
    NearMax(u16),
    Any(u64),
}

impl Off {
    pub fn get(self) -> u64 {
        match self {
            Off::Known(i) => KNOWN_OFFSETS[i as usize % KNOWN_OFFSETS.len()],
            Off::KnownPlus(i, d) => {
                KNOWN_OFFSETS[i as usize % KNOWN_OFFSETS.len()].wrapping_add(d as i64 as u64)
            }
            Off::Small(v) => v as u64,
            Off::NearMax(v) => u64::MAX - v as u64,
            Off::Any(v) => v,
        }
    }
}

/// An IOVA: page-granular low values (where maps go), a small window of pages, near the top
/// of the address space, or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Iova {
    Page(u8),
    PagePlus(u8, u16),
    NearMax(u32),
    Any(u64),
}

/// Base of the IOVA window the biased values fall into.
pub const IOVA_BASE: u64 = 0x1000_0000;

impl Iova {
    pub fn get(self) -> u64 {
        match self {
            Iova::Page(p) => IOVA_BASE + p as u64 * PAGE,
            Iova::PagePlus(p, o) => IOVA_BASE + p as u64 * PAGE + o as u64,
            Iova::NearMax(v) => u64::MAX - v as u64,
            Iova::Any(v) => v,
        }
    }
}

/// A byte count: whole pages, small, huge or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    Pages(u8),
    Small(u16),
    NearMax(u32),
    Any(u64),
}

impl Size {
    pub fn get(self) -> u64 {
        match self {
            Size::Pages(p) => p as u64 * PAGE,
            Size::Small(v) => v as u64,
            Size::NearMax(v) => u64::MAX - v as u64,
            Size::Any(v) => v,
        }
    }
}

/// A control request argument.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Arg {
    Small(u8),
    /// `ABI_MAJOR << 16 | minor` (Negotiate's first argument).
    Version(u16),
    /// A subset of the offered feature bits, or any bits.
    Features(u8),
    /// A ring size: 2^n.
    Pow2(u8),
    /// An IOVA (ring addresses).
    Iova(Iova),
    Any(u64),
}

impl Arg {
    pub fn get(self) -> u64 {
        match self {
            Arg::Small(v) => v as u64,
            Arg::Version(minor) => (abi::ABI_MAJOR as u64) << 16 | minor as u64,
            Arg::Features(f) => {
                static OFFERED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
                let offered = *OFFERED
                    .get_or_init(|| host_mux::device::offered_features(&crate::new_guest()).bits());
                if f & 0x80 != 0 {
                    1u64 << (f % 64)
                } else {
                    // Seven bits choose among feature bits 0-6 and, again, 7-13 (zero-copy
                    // and laps are bits 8 and 9).
                    let pick = (f & 0x7f) as u64;
                    offered & (pick | pick << 7)
                }
            }
            Arg::Pow2(n) => 1u64 << (n % 64),
            Arg::Iova(i) => i.get(),
            Arg::Any(v) => v,
        }
    }
}

/// A flow-rule item in the codec's layout: the length byte is right unless `bad_len`.
#[derive(Arbitrary, Debug, Clone)]
pub enum Item {
    /// `own_dst`: the destination is the guest's MAC (or broadcast) under a full mask.
    Eth {
        own_dst: u8,
        rest: [u8; 22],
    },
    Ipv4([u8; 18]),
    Ipv6(Box<[u8; 66]>),
    Udp([u8; 8]),
    Tcp([u8; 8]),
    Raw(u8, Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Action {
    Queue(u16),
    Drop,
    Mark(u32),
    Raw(u8, u8),
}

/// A flow rule as a guest would write it.
#[derive(Arbitrary, Debug, Clone)]
pub struct Rule {
    pub attr: u8,
    pub group: u8,
    pub priority: u32,
    pub items: Vec<Item>,
    pub actions: Vec<Action>,
    /// Bytes appended after the rule (the decoder must refuse them).
    pub trailing: Vec<u8>,
}

impl Rule {
    pub fn encode(&self, own_mac: [u8; 6]) -> Vec<u8> {
        let mut b = vec![
            1,
            self.items.len().min(255) as u8,
            self.actions.len().min(255) as u8,
            // Mostly ingress only (the one accepted attribute).
            if self.attr < 200 { 1 } else { self.attr },
        ];
        b.extend_from_slice(
            &(if self.group < 200 {
                0
            } else {
                self.group as u32
            })
            .to_le_bytes(),
        );
        b.extend_from_slice(&self.priority.to_le_bytes());
        for it in self.items.iter().take(255) {
            match it {
                Item::Eth { own_dst, rest } => {
                    b.extend_from_slice(&[1, 28]);
                    let dst = match own_dst % 3 {
                        0 => own_mac,
                        1 => [0xff; 6],
                        _ => rest[..6].try_into().unwrap(),
                    };
                    b.extend_from_slice(&dst);
                    b.extend_from_slice(&rest[6..14]); // src, ether type
                    let dmask = if own_dst % 5 == 4 { [0; 6] } else { [0xff; 6] };
                    b.extend_from_slice(&dmask);
                    b.extend_from_slice(&rest[14..22]);
                }
                Item::Ipv4(x) => {
                    b.extend_from_slice(&[2, 18]);
                    b.extend_from_slice(x);
                }
                Item::Ipv6(x) => {
                    b.extend_from_slice(&[3, 66]);
                    b.extend_from_slice(&x[..]);
                }
                Item::Udp(x) => {
                    b.extend_from_slice(&[4, 8]);
                    b.extend_from_slice(x);
                }
                Item::Tcp(x) => {
                    b.extend_from_slice(&[5, 8]);
                    b.extend_from_slice(x);
                }
                Item::Raw(k, x) => {
                    b.extend_from_slice(&[*k, x.len().min(255) as u8]);
                    b.extend_from_slice(&x[..x.len().min(255)]);
                }
            }
        }
        for a in self.actions.iter().take(255) {
            match a {
                Action::Queue(q) => {
                    b.extend_from_slice(&[1, 2]);
                    b.extend_from_slice(&q.to_le_bytes());
                }
                Action::Drop => b.extend_from_slice(&[2, 0]),
                Action::Mark(m) => {
                    b.extend_from_slice(&[3, 4]);
                    b.extend_from_slice(&m.to_le_bytes());
                }
                Action::Raw(k, l) => b.extend_from_slice(&[*k, *l]),
            }
        }
        b.extend_from_slice(&self.trailing);
        b
    }
}
