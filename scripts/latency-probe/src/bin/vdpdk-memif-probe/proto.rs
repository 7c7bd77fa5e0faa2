//! The memif protocol, version 2.0, as DPDK 22.11 speaks it: control messages and the layout of
//! the shared rings. The sources named in the comments are DPDK v22.11 (tag v22.11.11, what
//! Debian 12 ships), drivers/net/memif/.

/// memif.h `MEMIF_COOKIE`: written at the start of every ring; the server checks it
/// (rte_eth_memif.c `memif_connect`: "Wrong ring").
pub const COOKIE: u32 = 0x3E31F20;
/// memif.h `MEMIF_VERSION`: (major 2 << 8) | minor 0. The server refuses any other version
/// in INIT (memif_socket.c `memif_msg_receive_init`).
pub const VERSION: u16 = 2 << 8;
/// memif.h `memif_msg_t` is `__rte_packed __rte_aligned(128)`: every message is 128 bytes,
/// and memif_socket.c `memif_msg_receive` drops the connection on any other size.
pub const MSG_SIZE: usize = 128;
/// memif.h `MEMIF_NAME_SZ`.
const NAME_SZ: usize = 32;
/// memif.h `memif_msg_t`: a 16-bit type (`type:16`), then the (packed) union of bodies.
const BODY: usize = 2;

/// memif.h `enum memif_msg_type`.
pub const MSG_ACK: u16 = 1;
pub const MSG_HELLO: u16 = 2;
pub const MSG_INIT: u16 = 3;
pub const MSG_ADD_REGION: u16 = 4;
pub const MSG_ADD_RING: u16 = 5;
pub const MSG_CONNECT: u16 = 6;
pub const MSG_CONNECTED: u16 = 7;
pub const MSG_DISCONNECT: u16 = 8;

/// memif.h `MEMIF_MSG_ADD_RING_FLAG_C2S`: the ring carries client -> server frames.
const ADD_RING_FLAG_C2S: u16 = 1;
/// memif.h `MEMIF_INTERFACE_MODE_ETHERNET`, the only mode the DPDK server accepts
/// (memif_socket.c `memif_msg_receive_init`).
const MODE_ETHERNET: u8 = 0;

/// memif.h `MEMIF_RING_FLAG_MASK_INT`: the ring's receiver polls, so the sender does not write
/// the ring's interrupt eventfd after a burst (rte_eth_memif.c `eth_memif_tx`).
pub const RING_FLAG_MASK_INT: u16 = 1;
/// memif.h `MEMIF_DESC_FLAG_NEXT`: the frame goes on in the next descriptor.
pub const DESC_FLAG_NEXT: u16 = 1;

/// memif.h `memif_ring_t`, with x86's 64-byte `RTE_CACHE_LINE_SIZE`: cookie (u32), flags (u16)
/// and head (u16) in the first cache line, tail (u16) alone in the second, the descriptors
/// from the third on.
pub const RING_FLAGS_AT: usize = 4;
pub const RING_HEAD_AT: usize = 6;
pub const RING_TAIL_AT: usize = 64;
pub const RING_DESC_AT: usize = 128;

/// memif.h `memif_desc_t` (packed, but every field is naturally aligned: 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Desc {
    pub flags: u16,
    pub region: u16,
    pub length: u32,
    pub offset: u32,
    pub metadata: u32,
}
const _: () = assert!(std::mem::size_of::<Desc>() == 16);

/// The bytes of one ring in the region: header and 2^log2 descriptors (rte_eth_memif.c
/// `memif_get_ring`: `sizeof(memif_ring_t) + sizeof(memif_desc_t) * (1 << log2_ring_size)`).
pub fn ring_bytes(log2: u8) -> usize {
    RING_DESC_AT + std::mem::size_of::<Desc>() * (1 << log2)
}

/// One control message, in the host's byte order (memif has no wire byte order: both ends run
/// on the same machine).
pub struct Msg(pub [u8; MSG_SIZE]);

impl Msg {
    fn new(ty: u16) -> Msg {
        let mut m = Msg([0; MSG_SIZE]);
        m.0[..2].copy_from_slice(&ty.to_ne_bytes());
        m
    }
    pub fn ty(&self) -> u16 {
        self.u16(0)
    }
    fn u16(&self, at: usize) -> u16 {
        u16::from_ne_bytes([self.0[at], self.0[at + 1]])
    }
    fn put(&mut self, at: usize, b: &[u8]) -> &mut Msg {
        self.0[BODY + at..BODY + at + b.len()].copy_from_slice(b);
        self
    }
    fn put_name(&mut self, at: usize, name: &str) -> &mut Msg {
        let n = name.len().min(NAME_SZ - 1); // NUL-terminated (strlcpy on the other side)
        self.put(at, &name.as_bytes()[..n])
    }
    fn text(&self, at: usize, len: usize) -> String {
        let b = &self.0[BODY + at..BODY + at + len];
        let end = b.iter().position(|&c| c == 0).unwrap_or(len);
        String::from_utf8_lossy(&b[..end]).into_owned()
    }

    /// memif.h `memif_msg_init_t`: version u16 @0, id u32 @2, mode u8 @6, secret[24] @7,
    /// name[32] @31. No secret: the server only checks one if it was given one.
    pub fn init(id: u32, name: &str) -> Msg {
        let mut m = Msg::new(MSG_INIT);
        m.put(0, &VERSION.to_ne_bytes())
            .put(2, &id.to_ne_bytes())
            .put(6, &[MODE_ETHERNET])
            .put_name(31, name);
        m
    }
    /// memif.h `memif_msg_add_region_t`: index u16 @0, size u64 @2 (the memfd goes along as
    /// SCM_RIGHTS).
    pub fn add_region(index: u16, size: u64) -> Msg {
        let mut m = Msg::new(MSG_ADD_REGION);
        m.put(0, &index.to_ne_bytes()).put(2, &size.to_ne_bytes());
        m
    }
    /// memif.h `memif_msg_add_ring_t`: flags u16 @0, index u16 @2, region u16 @4, offset u32
    /// @6, log2_ring_size u8 @10, private_hdr_size u16 @11 (the interrupt eventfd goes along
    /// as SCM_RIGHTS; the server requires one, memif_socket.c `memif_msg_receive_add_ring`).
    pub fn add_ring(c2s: bool, index: u16, offset: u32, log2: u8) -> Msg {
        let flags = if c2s { ADD_RING_FLAG_C2S } else { 0 };
        let mut m = Msg::new(MSG_ADD_RING);
        m.put(0, &flags.to_ne_bytes())
            .put(2, &index.to_ne_bytes())
            .put(4, &0u16.to_ne_bytes()) // region 0: rings live in region 0
            .put(6, &offset.to_ne_bytes())
            .put(10, &[log2]);
        m
    }
    /// memif.h `memif_msg_connect_t`: if_name[32].
    pub fn connect(if_name: &str) -> Msg {
        let mut m = Msg::new(MSG_CONNECT);
        m.put_name(0, if_name);
        m
    }
    /// memif.h `memif_msg_disconnect_t`: code u32 @0, string[96] @4.
    pub fn disconnect(reason: &str) -> Msg {
        let mut m = Msg::new(MSG_DISCONNECT);
        let n = reason.len().min(95);
        m.put(4, &reason.as_bytes()[..n]);
        m
    }

    /// The reason in a DISCONNECT.
    pub fn disconnect_reason(&self) -> String {
        self.text(4, 96)
    }
}

/// memif.h `memif_msg_hello_t`: name[32] @0, min_version u16 @32, max_version @34,
/// max_region @36, max_s2c_ring @38, max_c2s_ring @40, max_log2_ring_size u8 @42.
pub struct Hello {
    pub name: String,
    pub min_version: u16,
    pub max_version: u16,
    pub max_log2_ring_size: u8,
}

impl Hello {
    pub fn parse(m: &Msg) -> Hello {
        Hello {
            name: m.text(0, NAME_SZ),
            min_version: m.u16(BODY + 32),
            max_version: m.u16(BODY + 34),
            max_log2_ring_size: m.0[BODY + 42],
        }
    }
}
