//! Port counters: 40-bit byte and packet counters in GLPRT registers, indexed by lport with
//! stride 8, value = L | (H & 0xFF) << 32, not clear-on-read (\[HWA\]; DPDK
//! `ice_stat_update_40`). Read L, then H, then L again and retry if L went backwards; report
//! deltas from a baseline modulo 2^40 so wrap-arounds count correctly.

use crate::regs::GLPRT_STRIDE;
use crate::{IceError, Regs};

/// (name, L register) of the counters read; H is at L + 4 \[HWA\].
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

/// (name, L register at VSI 0) of the VSI counters; stride 8 per VSI, H at L + 4 [HWA
/// `GLV_GORCL(_i) (0x003B0000 + ((_i) * 8))` etc.].
pub const VSI_COUNTERS: [(&str, u64); 8] = [
    ("vsi_rx_bytes", 0x003B_0000),     // GLV_GORCL
    ("vsi_rx_unicast", 0x003B_2000),   // GLV_UPRCL
    ("vsi_rx_multicast", 0x003B_4000), // GLV_MPRCL
    ("vsi_rx_broadcast", 0x003B_6000), // GLV_BPRCL
    ("vsi_tx_bytes", 0x0030_0000),     // GLV_GOTCL
    ("vsi_tx_unicast", 0x0030_A000),   // GLV_UPTCL
    ("vsi_tx_multicast", 0x0030_C000), // GLV_MPTCL
    ("vsi_tx_broadcast", 0x0030_E000), // GLV_BPTCL
];
pub const GLV_STRIDE: u64 = 8;
/// GLV_RDPC(vsi): 32-bit count of frames for the VSI dropped for lack of RX descriptors
/// [HWA `GLV_RDPC(_i) (0x00294C04 + ((_i) * 4))`].
pub fn glv_rdpc(vsi: u16) -> u64 {
    0x0029_4C04 + 4 * vsi as u64
}

/// One set of 40-bit counters accumulated since the driver started: the port's (GLPRT, by
/// lport) or a VSI's (GLV, by VSI number).
#[derive(Clone, Debug)]
pub struct HwCounters {
    set: &'static [(&'static str, u64)],
    /// Added to each register of `set` (stride times index).
    offset: u64,
    base: Vec<u64>,
    last: Vec<u64>,
    /// Totals since start, in the set's order.
    pub totals: Vec<u64>,
}

impl HwCounters {
    /// The port counters of `lport`, from the current register values.
    pub(crate) fn new(regs: &Regs, lport: u8) -> Result<HwCounters, IceError> {
        Self::start(regs, &PORT_COUNTERS, GLPRT_STRIDE * lport as u64)
    }

    /// The counters of VSI `vsi`, from the current register values.
    pub(crate) fn vsi(regs: &Regs, vsi: u16) -> Result<HwCounters, IceError> {
        Self::start(regs, &VSI_COUNTERS, GLV_STRIDE * vsi as u64)
    }

    fn start(
        regs: &Regs,
        set: &'static [(&'static str, u64)],
        offset: u64,
    ) -> Result<HwCounters, IceError> {
        let base = set
            .iter()
            .map(|(_, l)| read40(regs, l + offset))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HwCounters {
            set,
            offset,
            last: base.clone(),
            totals: vec![0; base.len()],
            base,
        })
    }

    /// Reads the registers and adds what changed (modulo 2^40) to the totals.
    pub(crate) fn update(&mut self, regs: &Regs) -> Result<(), IceError> {
        for (i, (_, l)) in self.set.iter().enumerate() {
            let now = read40(regs, l + self.offset)?;
            self.totals[i] += now.wrapping_sub(self.last[i]) & MASK40;
            self.last[i] = now;
        }
        Ok(())
    }

    /// The total of counter `name` (e.g. `"rx_unicast"`), if the set has it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.set
            .iter()
            .position(|c| c.0 == name)
            .map(|i| self.totals[i])
    }

    /// (name, total) pairs.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.set
            .iter()
            .zip(&self.totals)
            .map(|((n, _), &v)| (*n, v))
    }

    /// The register values the totals started from.
    pub fn baseline(&self) -> &[u64] {
        &self.base
    }
}

/// A 32-bit counter accumulated across wraps (GLV_RDPC).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counter32 {
    last: u32,
    /// Increments since start.
    pub total: u64,
}

impl Counter32 {
    /// Starts from the current value of register `reg`.
    pub(crate) fn start(regs: &Regs, reg: u64) -> Result<Counter32, IceError> {
        Ok(Counter32 {
            last: regs.read(reg)?,
            total: 0,
        })
    }

    /// Reads `reg` and adds what changed (modulo 2^32) to the total.
    pub(crate) fn update(&mut self, regs: &Regs, reg: u64) -> Result<(), IceError> {
        let now = regs.read(reg)?;
        self.total += now.wrapping_sub(self.last) as u64;
        self.last = now;
        Ok(())
    }
}
