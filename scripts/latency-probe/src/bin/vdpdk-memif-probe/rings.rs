//! The data path: the client's ends of the two rings.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::control;
use crate::link::Link;
use crate::proto::{Desc, DESC_FLAG_NEXT, RING_FLAG_MASK_INT};
use crate::region::{self, Dir};
use crate::Result;

/// The client's ends of the two rings. C2S: we produce at head, the server consumes up to
/// tail. S2C: we hand empty buffers to the server by moving head, it fills them and moves
/// tail; we consume up to tail (rte_eth_memif.c `eth_memif_tx`/`eth_memif_rx`, C2S/S2C cases).
pub struct Rings<'a> {
    link: &'a Link,
    c2s: region::Ring<'a>,
    s2c: region::Ring<'a>,
    /// Next C2S slot to fill (our copy of its head: only we write it).
    tx_head: u16,
    /// Next S2C slot to read (the server's tail up to which we have consumed).
    rx_tail: u16,
}

impl<'a> Rings<'a> {
    /// After CONNECTED: both rings were reset by the server (head = tail = 0). We poll S2C,
    /// so we mask its interrupt (rte_eth_memif.c `memif_connect` does so for the client:
    /// "enable polling mode"), then give the server every S2C buffer.
    pub fn new(link: &'a Link) -> Rings<'a> {
        let c2s = link.region.ring(Dir::C2S);
        let s2c = link.region.ring(Dir::S2C);
        s2c.flags().store(RING_FLAG_MASK_INT, Relaxed);
        let mut r = Rings {
            link,
            c2s,
            s2c,
            tx_head: 0,
            rx_tail: 0,
        };
        r.refill();
        r
    }

    /// Copies `frame` into the next C2S buffer and publishes it; false if the ring is full.
    pub fn send(&mut self, frame: &[u8]) -> bool {
        let slot = self.tx_head;
        // Acquire: the server's reads of the buffers it gave back are done before we reuse them.
        if slot.wrapping_sub(self.c2s.tail().load(Acquire)) >= self.c2s.slots() {
            return false;
        }
        let off = self
            .link
            .region
            .buf_offset(Dir::C2S, slot & (self.c2s.slots() - 1));
        let dst = self
            .link
            .region
            .bytes(off, frame.len())
            .expect("C2S buffers are inside the region");
        // SAFETY: the buffer is ours until the head store below hands the slot over, it is
        // inside the mapping and BUF_SIZE >= 1514 >= frame.len().
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), dst, frame.len()) };
        self.c2s.set_desc(
            slot,
            Desc {
                length: frame.len() as u32,
                offset: off,
                ..Desc::default()
            },
        );
        self.tx_head = slot.wrapping_add(1);
        // Release: the frame and its descriptor are visible before the new head.
        self.c2s.head().store(self.tx_head, Release);
        // testpmd's server masks the C2S interrupt (it polls); a server in interrupt mode would
        // need the kick (rte_eth_memif.c `eth_memif_tx`).
        if self.c2s.flags().load(Relaxed) & RING_FLAG_MASK_INT == 0 {
            control::kick(&self.link.kick_c2s);
        }
        true
    }

    /// Copies the next frame the server sent into `out` and gives its buffer back; its length,
    /// or None if none has arrived.
    pub fn recv(&mut self, out: &mut [u8]) -> Result<Option<usize>> {
        // Acquire: the server's writes of the frame and descriptor happened before its tail.
        if self.s2c.tail().load(Acquire) == self.rx_tail {
            return Ok(None);
        }
        let d = self.s2c.desc(self.rx_tail);
        let len = d.length as usize;
        if d.flags & DESC_FLAG_NEXT != 0 || d.region != 0 || len > out.len() {
            return Err(format!(
                "unexpected S2C descriptor {d:?} (chained, other region or longer than a buffer)"
            ));
        }
        let src = self
            .link
            .region
            .bytes(d.offset, len)
            .ok_or_else(|| format!("S2C descriptor {d:?} outside the region"))?;
        // SAFETY: the slot is ours since the Acquire load above; src..src+len is inside the
        // mapping (checked) and `out` is a different, local buffer.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), len) };
        self.rx_tail = self.rx_tail.wrapping_add(1);
        self.refill();
        Ok(Some(len))
    }

    /// Gives every consumed S2C slot back with a full-size buffer, as DPDK's client does after
    /// each receive in copy mode (rte_eth_memif.c `eth_memif_rx`, `refill:`): the server's
    /// TX writes the frame's length into the descriptor, so it must be reset to the buffer size.
    fn refill(&mut self) {
        let mut head = self.s2c.head().load(Relaxed); // only we write it
        let end = self.rx_tail.wrapping_add(self.s2c.slots());
        while head != end {
            let mut d = self.s2c.desc(head);
            d.length = self.link.region.buf_size();
            d.flags = 0;
            self.s2c.set_desc(head, d);
            head = head.wrapping_add(1);
        }
        // Release: the descriptors are reset before the server may use them.
        self.s2c.head().store(head, Release);
    }
}
