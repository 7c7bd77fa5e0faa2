//! The LAN transmit path: TX descriptors up to the doorbell, with checksum/TSO offloads and
//! Flow Director programming descriptors (Linux `ice_lan_txrx.h`, \[LTR\]).

use crate::{offload, E810Model};

/// One LAN TX queue created by add_txqs.
#[derive(Default, Clone)]
pub(crate) struct TxQueueState {
    pub(crate) enabled: bool,
    pub(crate) base: u64,
    pub(crate) len: u32,
    pub(crate) head: u32,
}

impl E810Model {
    /// Processes TX descriptors of queue `q` up to the doorbell `tail` (\[LTR\] `ice_tx_desc`:
    /// qw0 address, qw1 DTYPE 3:0, CMD 15:4 (EOP 0x1, RS 0x2), BUF_SZ 47:34; DTYPE 1 is a
    /// context descriptor). RS descriptors are written back with DTYPE 0xF (DESC_DONE).
    pub(crate) fn tx_doorbell(&mut self, q: usize, tail: u32) {
        let Some(st) = self.txq.get(q).filter(|s| s.enabled).cloned() else {
            return;
        };
        let tail = tail % st.len.max(1);
        let mut head = st.head;
        let mut frame: Vec<u8> = Vec::new();
        let mut pending_fd: Option<(u64, u64)> = None;
        // MSS from a TSO context descriptor, applied to the next packet.
        let mut tso_mss: Option<usize> = None;
        let mut written_back = false;
        let mut guard = 0;
        while head != tail && guard < st.len {
            guard += 1;
            let at = st.base + head as u64 * 16;
            let mut d = [0u8; 16];
            if !self.dma.read(at, &mut d) {
                log::debug!("txq {q}: descriptor {head} at {at:#x} is not mapped");
                self.stats.tx_errors += 1;
                break;
            }
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
            let qw1 = u64::from_le_bytes(d[8..16].try_into().unwrap());
            let cmd = (qw1 >> 4) & 0xFFF;
            match qw1 & 0xF {
                0 => {
                    let len = ((qw1 >> 34) & 0x3FFF) as usize;
                    let start = frame.len();
                    frame.resize(start + len, 0);
                    if !self.dma.read(addr, &mut frame[start..]) {
                        log::debug!("txq {q}: buffer {addr:#x}+{len} is not mapped");
                        self.stats.tx_errors += 1;
                        frame.clear();
                    } else if cmd & 0x010 != 0 {
                        // DUMMY: a Flow Director template, not a frame for the wire.
                        let t = std::mem::take(&mut frame);
                        if let Some((qw0, fqw1)) = pending_fd.take() {
                            let status = self.fdir_program(qw0, fqw1, &t);
                            self.post_status(q, status);
                        }
                    } else if cmd & 0x1 != 0 {
                        let mut f = std::mem::take(&mut frame);
                        let o = offload::TxOffload::from_qw1(qw1);
                        let out = match tso_mss.take() {
                            Some(mss) => offload::tso_segment(&f, &o, mss),
                            None => {
                                if o.any() {
                                    offload::apply_checksums(&mut f, &o);
                                }
                                vec![f]
                            }
                        };
                        for f in out {
                            self.stats.tx_packets += 1;
                            self.stats.tx_bytes += f.len() as u64;
                            self.count_frame(&f, false);
                            self.outbox.push(f);
                        }
                    }
                }
                // Context descriptor: CMD TSO (bit 4 of qw1) with MSS in bits 63:50.
                1 => {
                    if (qw1 >> 4) & 0x1 != 0 {
                        tso_mss = Some((qw1 >> 50 & 0x3FFF) as usize);
                    }
                }
                8 => pending_fd = Some((u64::from_le_bytes(d[0..8].try_into().unwrap()), qw1)),
                t => {
                    log::debug!("txq {q}: descriptor {head} has unknown DTYPE {t} (qw1 {qw1:#x})");
                    self.stats.tx_errors += 1
                }
            }
            if qw1 & 0xF == 0 && cmd & 0x2 != 0 {
                self.dma.write(at + 8, &0xFu64.to_le_bytes());
                written_back = true;
            }
            head = (head + 1) % st.len;
        }
        self.txq[q].head = head;
        if written_back {
            self.tx_interrupt(q);
        }
    }
}
