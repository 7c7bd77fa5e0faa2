//! Guest descriptor validation in host-mux's data path.
//!
//! - `GuestMem` (a guest's DMA map: `add`, `remove`, `translate`) with regions mapped from
//!   sealed memfds at fuzzed IOVAs, against a naive reference model: every `translate` answer
//!   must be exactly the model's (the pointer into the one region that holds the whole range,
//!   writable when asked), its bytes must be that region's file bytes, and adds/removes must
//!   be accepted or refused exactly as the model says (no overlaps, no partial unmaps).
//! - `datapath::tx_request` (the check of a TX descriptor's length and offload request) on
//!   fuzzed descriptor fields: what it accepts must be safe for what the poller then does
//!   (software checksums over `len` bytes; TSO cut into `nseg` segments of at most `mss`
//!   payload bytes, each within `max_frame`), run here on a frame of the descriptor's length
//!   with the real `fill_tx_checksums` / `finish_tcp_segment`; and on raw ring bytes read as
//!   the poller reads a posted descriptor (`Desc::from_posted_bytes`).
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use host_mux::datapath::{tx_request, TxRequest, MAX_FRAME, MIN_TSO_MSS};
use host_mux::guest::{DmaRegion, GuestMem};
use libfuzzer_sys::fuzz_target;
use vdpdk_core::abi::desc::Desc;
use vdpdk_core::mbuf::TxOffloadInfo;
use vdpdk_core::packet::{fill_tx_checksums, finish_tcp_segment, TcpLayout, TxLayout};
use vdpdk_core::{DmaMemory, OlFlags};
use vdpdk_fuzz::ops::{Iova, Size};

const FILES: usize = 4;
const FILE_PAGES: u64 = 16;
const PAGE: u64 = 4096;
const FILE_SIZE: u64 = FILE_PAGES * PAGE;
const MAX_REGIONS: usize = 12;

/// The byte at offset `x` of file `k`.
fn pat(k: usize, x: u64) -> u8 {
    ((x.wrapping_mul(0x9E37_79B9) >> 13) as u8) ^ (x as u8) ^ (k as u8).wrapping_mul(0x5b)
}

/// Sealed memfds, each filled with its own pattern, shared by all runs.
fn files() -> &'static [DmaMemory] {
    static F: OnceLock<Vec<DmaMemory>> = OnceLock::new();
    F.get_or_init(|| {
        (0..FILES)
            .map(|k| {
                let m = DmaMemory::alloc_with(&format!("fuzz-desc-{k}"), FILE_SIZE as usize, false)
                    .expect("memfd");
                for x in 0..FILE_SIZE {
                    // SAFETY: x < FILE_SIZE = the mapping's length; nobody else uses it yet.
                    unsafe { m.as_ptr().add(x as usize).write(pat(k, x)) };
                }
                m
            })
            .collect()
    })
}

fn file(k: usize) -> std::fs::File {
    std::fs::File::from(files()[k].fd().try_clone_to_owned().expect("dup"))
}

#[derive(Arbitrary, Debug)]
struct RegionSpec {
    iova: Iova,
    file: u8,
    file_page: u8,
    pages: u8,
    /// Bytes beyond whole pages (a length need not be page-aligned).
    extra: u16,
    writable: bool,
}

/// An address relative to a model region (its start or end) or absolute.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Start(u8, i16),
    End(u8, i16),
    Abs(Iova),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    Small(u16),
    /// The length of a model region, give or take.
    Region(u8, i16),
    Any(Size),
}

#[derive(Arbitrary, Debug)]
enum MemOp {
    Add(RegionSpec),
    Remove { at: Addr, len: Len },
    Translate { at: Addr, len: Len, write: bool },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Flags {
    /// `ol_flags` of a guest descriptor, converted as the poller converts them.
    Desc(u32),
    /// Any mbuf flags (including ones no descriptor can carry).
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
struct TxCase {
    flags: Flags,
    l2_len: u8,
    l3_len: u16,
    l4_len: u8,
    tso_segsz: u16,
    /// `Desc::len` is 16 bits.
    len: u16,
    /// The poller's `max_frame` is `MAX_FRAME.min(pool buffer size - headroom)`.
    max_frame: Option<u16>,
    frame_seed: Vec<u8>,
    /// When set, the request comes from these ring bytes, read as the poller reads a posted
    /// descriptor, instead of from the fields above.
    ring: Option<[u8; 16]>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    mem: Vec<MemOp>,
    tx: Vec<TxCase>,
}

struct Model {
    iova: u64,
    len: u64,
    writable: bool,
    base: *mut u8,
    file: usize,
    off: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.iova + self.len
    }
}

fn addr(a: Addr, m: &[Model]) -> u64 {
    let rel = |i: u8| m.get(i as usize % m.len().max(1));
    match a {
        Addr::Start(i, d) => rel(i).map_or(0, |r| r.iova).wrapping_add(d as i64 as u64),
        Addr::End(i, d) => rel(i).map_or(0, |r| r.end()).wrapping_add(d as i64 as u64),
        Addr::Abs(i) => i.get(),
    }
}

fn len(l: Len, m: &[Model]) -> u64 {
    match l {
        Len::Small(v) => v as u64,
        Len::Region(i, d) => m
            .get(i as usize % m.len().max(1))
            .map_or(0, |r| r.len)
            .wrapping_add(d as i64 as u64),
        Len::Any(s) => s.get(),
    }
}

/// Reads a byte the guest map points at (volatile: it is shared memory).
fn peek(p: *mut u8) -> u8 {
    // SAFETY: callers pass pointers inside a live mapping (checked against the model first).
    unsafe { p.read_volatile() }
}

fn mem_ops(ops: Vec<MemOp>) {
    let mut mem = GuestMem::default();
    let mut model: Vec<Model> = Vec::new();
    for op in ops.into_iter().take(64) {
        match op {
            MemOp::Add(s) => {
                if model.len() >= MAX_REGIONS {
                    continue;
                }
                let k = s.file as usize % FILES;
                let off = (s.file_page as u64 % FILE_PAGES) * PAGE;
                let len = (s.pages as u64 % (FILE_PAGES + 1)) * PAGE + s.extra as u64 % PAGE;
                let iova = s.iova.get();
                let Ok(r) = DmaRegion::map(&file(k), off, iova, len, s.writable, None) else {
                    // Refused: empty, wrapping, or past the end of the file.
                    assert!(
                        len == 0 || iova.checked_add(len).is_none() || off + len > FILE_SIZE,
                        "map of {iova:#x}+{len:#x} at file offset {off:#x} refused"
                    );
                    continue;
                };
                assert!(len > 0 && iova.checked_add(len).is_some() && off + len <= FILE_SIZE);
                let r = Arc::new(r);
                // The region's host address, learned from a map holding only it.
                let mut alone = GuestMem::default();
                alone.add(r.clone()).expect("one region");
                let base = alone.translate(iova, len, false).expect("the whole region");
                assert_eq!(peek(base), pat(k, off));
                assert_eq!(
                    peek(base.wrapping_add(len as usize - 1)),
                    pat(k, off + len - 1)
                );
                let overlaps = model.iter().any(|m| iova < m.end() && m.iova < iova + len);
                let got = mem.add(r);
                assert_eq!(got.is_ok(), !overlaps, "add {iova:#x}+{len:#x}: {got:?}");
                if got.is_ok() {
                    model.push(Model {
                        iova,
                        len,
                        writable: s.writable,
                        base,
                        file: k,
                        off,
                    });
                }
            }
            MemOp::Remove { at, len: l } => {
                let (iova, n) = (addr(at, &model), len(l, &model));
                let end = iova.saturating_add(n);
                let hit: Vec<usize> = (0..model.len())
                    .filter(|&i| model[i].iova < end && iova < model[i].end())
                    .collect();
                let split = hit
                    .iter()
                    .any(|&i| model[i].iova < iova || model[i].end() > end);
                let got = mem.remove(iova, n);
                if split {
                    assert!(
                        got.is_err(),
                        "partial unmap {iova:#x}+{n:#x} accepted: {got:?}"
                    );
                } else {
                    assert_eq!(got, Ok(hit.len()), "unmap {iova:#x}+{n:#x}");
                    for &i in hit.iter().rev() {
                        model.remove(i);
                    }
                }
            }
            MemOp::Translate { at, len: l, write } => {
                let (iova, n) = (addr(at, &model), len(l, &model));
                let expect = match iova.checked_add(n) {
                    Some(end) if n > 0 => model
                        .iter()
                        .find(|m| m.iova <= iova && end <= m.end())
                        .filter(|m| m.writable || !write),
                    _ => None,
                };
                let got = mem.translate(iova, n, write);
                match expect {
                    None => assert!(
                        got.is_none(),
                        "translate({iova:#x}, {n:#x}, {write}) = {got:?}, expected None"
                    ),
                    Some(m) => {
                        let want = m.base.wrapping_add((iova - m.iova) as usize);
                        assert_eq!(got, Some(want), "translate({iova:#x}, {n:#x}, {write})");
                        let x = m.off + (iova - m.iova);
                        assert_eq!(peek(want), pat(m.file, x));
                        assert_eq!(
                            peek(want.wrapping_add(n as usize - 1)),
                            pat(m.file, x + n - 1)
                        );
                    }
                }
            }
        }
        assert_eq!(mem.len(), model.len());
        assert_eq!(mem.bytes(), model.iter().map(|m| m.len).sum::<u64>());
    }
    mem.clear();
    assert!(mem.is_empty() && mem.bytes() == 0);
}

const KNOWN: OlFlags = OlFlags::TX_IPV4
    .union(OlFlags::TX_IPV6)
    .union(OlFlags::TX_IP_CKSUM)
    .union(OlFlags::TX_TCP_CKSUM)
    .union(OlFlags::TX_UDP_CKSUM)
    .union(OlFlags::TX_TCP_SEG);
const CSUM: OlFlags = OlFlags::TX_IP_CKSUM
    .union(OlFlags::TX_TCP_CKSUM)
    .union(OlFlags::TX_UDP_CKSUM);

fn tx_case(c: TxCase) {
    let c = match c.ring {
        Some(raw) => {
            let d = Desc::from_posted_bytes(raw);
            assert!(d.fits_posted(), "ring bytes read as {d:?}");
            TxCase {
                flags: Flags::Desc(d.ol_flags),
                l2_len: d.l2_len,
                l3_len: d.l3_len,
                l4_len: d.l4_len,
                tso_segsz: d.tso_segsz,
                len: d.len,
                ring: None,
                ..c
            }
        }
        None => c,
    };
    let flags = match c.flags {
        Flags::Desc(ol) => Desc::tx_ol_to_mbuf(ol),
        Flags::Raw(f) => OlFlags::from_bits_retain(f),
    };
    let t = TxOffloadInfo {
        l2_len: c.l2_len,
        l3_len: c.l3_len,
        l4_len: c.l4_len,
        tso_segsz: c.tso_segsz,
    };
    let len = c.len as usize;
    let max_frame = c.max_frame.map_or(MAX_FRAME, |m| MAX_FRAME.min(m as usize));
    let req = tx_request(flags, t, len, max_frame);
    if !KNOWN.contains(flags) {
        assert!(
            req.is_none(),
            "unknown offload flags {flags:?} accepted: {req:?}"
        );
        return;
    }
    let tso = flags.contains(OlFlags::TX_TCP_SEG);
    if !tso && !flags.intersects(CSUM) && len <= max_frame {
        assert!(
            matches!(req, Some(TxRequest::Plain)),
            "plain frame refused: {req:?}"
        );
    }
    let Some(req) = req else { return };
    // The frame the guest handed over (its bytes are the guest's: anything).
    let mut frame = vec![0u8; len];
    if !c.frame_seed.is_empty() {
        for (i, b) in frame.iter_mut().enumerate() {
            *b = c.frame_seed[i % c.frame_seed.len()];
        }
    }
    match req {
        TxRequest::Plain => {
            assert!(!tso && !flags.intersects(CSUM) && len <= max_frame);
        }
        TxRequest::Checksum(lay) => {
            assert!(!tso && flags.intersects(CSUM) && len <= max_frame);
            assert_eq!(Some(lay), TxLayout::new(flags, t, len));
            assert!(
                lay.l3 >= 14 && lay.l3 <= lay.l4 && lay.l4 <= lay.payload && lay.payload <= len
            );
            fill_tx_checksums(&mut frame, flags, &lay);
        }
        TxRequest::Segment { lay, mss, nseg } => {
            assert!(tso && lay.l4_proto == 6);
            assert_eq!(mss, c.tso_segsz as usize);
            assert!(mss >= MIN_TSO_MSS, "mss {mss}");
            assert!(
                lay.payload + mss <= max_frame,
                "headers {} + mss {mss} > {max_frame}",
                lay.payload
            );
            assert!(len > lay.payload);
            let data = len - lay.payload;
            assert!(
                nseg >= 1 && nseg * mss >= data && (nseg - 1) * mss < data,
                "{nseg} x {mss} for {data}"
            );
            // Host buffers one super-frame may take (the reason for MIN_TSO_MSS).
            assert!(nseg <= 256, "{nseg} segments");
            let tcp = TcpLayout {
                l3: lay.l3,
                l4: lay.l4,
                payload: lay.payload,
                ipv6: lay.ipv6,
            };
            // Segments as the poller cuts them: the checked headers, then one chunk.
            let mut ks = vec![0, 1, nseg - 1];
            ks.dedup();
            for k in ks.into_iter().filter(|&k| k < nseg) {
                let off = lay.payload + k * mss;
                assert!(off < len);
                let chunk = mss.min(len - off);
                assert!(chunk > 0 && lay.payload + chunk <= max_frame);
                let mut seg = Vec::with_capacity(lay.payload + chunk);
                seg.extend_from_slice(&frame[..lay.payload]);
                seg.extend_from_slice(&frame[off..off + chunk]);
                finish_tcp_segment(&mut seg, &tcp, k, mss, k + 1 == nseg);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    mem_ops(input.mem);
    for c in input.tx.into_iter().take(8) {
        tx_case(c);
    }
});
