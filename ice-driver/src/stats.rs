//! Port counters: 40-bit byte and packet counters in GLPRT registers, indexed by lport with
//! stride 8, value = L | (H & 0xFF) << 32, not clear-on-read ([HWA]; DPDK
//! `ice_stat_update_40`). Read L, then H, then L again and retry if L went backwards; report
//! deltas from a baseline modulo 2^40 so wrap-arounds count correctly.

use crate::regs::GLPRT_STRIDE;
use crate::{IceError, Regs};

/// (name, L register) of the counters read; H is at L + 4 [HWA].
pub const PORT_COUNTERS: [(&str, u64); 8] = [
    ("rx_bytes", 0x0038_0000),     // GLPRT_GORCL
    ("rx_unicast", 0x0038_1300),   // GLPRT_UPRCL
    ("rx_multicast", 0x0038_1340), // GLPRT_MPRCL
    ("rx_broadcast", 0x0038_1380), // GLPRT_BPRCL
    ("tx_bytes", 0x0038_0B40),     // GLPRT_GOTCL
    ("tx_unicast", 0x0038_11C0),   // GLPRT_UPTCL
    ("tx_multicast", 0x0038_1200), // GLPRT_MPTCL
    ("tx_broadcast", 0x0038_1240), // GLPRT_BPTCL
];
const MASK40: u64 = (1 << 40) - 1;

/// Reads one 40-bit counter consistently.
pub fn read40(regs: &Regs, l: u64) -> Result<u64, IceError> {
    for _ in 0..3 {
        let lo = regs.read(l)?;
        let hi = regs.read(l + 4)? & 0xFF;
        let lo2 = regs.read(l)?;
        if lo2 >= lo {
            return Ok((hi as u64) << 32 | lo2 as u64);
        }
    }
    Err(IceError::Firmware(format!(
        "counter {l:#x} keeps wrapping while read"
    )))
}

/// Accumulated port counters since the driver started.
#[derive(Clone, Debug, Default)]
pub struct HwCounters {
    base: [u64; 8],
    last: [u64; 8],
    /// Totals since start, in `PORT_COUNTERS` order.
    pub totals: [u64; 8],
}

impl HwCounters {
    /// Takes the current register values as the baseline.
    pub fn new(regs: &Regs, lport: u8) -> Result<HwCounters, IceError> {
        let mut c = HwCounters::default();
        for (i, (_, l)) in PORT_COUNTERS.iter().enumerate() {
            c.base[i] = read40(regs, l + GLPRT_STRIDE * lport as u64)?;
            c.last[i] = c.base[i];
        }
        Ok(c)
    }

    /// Reads the registers and adds what changed (modulo 2^40) to the totals.
    pub fn update(&mut self, regs: &Regs, lport: u8) -> Result<(), IceError> {
        for (i, (_, l)) in PORT_COUNTERS.iter().enumerate() {
            let now = read40(regs, l + GLPRT_STRIDE * lport as u64)?;
            self.totals[i] += now.wrapping_sub(self.last[i]) & MASK40;
            self.last[i] = now;
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        PORT_COUNTERS
            .iter()
            .position(|c| c.0 == name)
            .map(|i| self.totals[i])
    }
}
