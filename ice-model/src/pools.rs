//! The switch's shared resource pools that alloc_res/free_res (0x0208/0x0209) hand out, other
//! than the Flow Director and RSS profile ids and TCAM entries (those live with their tables
//! in `pipeline`). Types from Linux 6.12 `ice_adminq_cmd.h` (`ICE_AQC_RES_TYPE_*`); a request names
//! a type (bits 6:0), flags (bit 7 shared, bit 12 scan from the bottom) and a count, and is
//! answered with the first index of a contiguous run (`ice_switch.c:ice_alloc_res_cntr`).
//! Sizes are the model's own choice, large enough for one PF.

use std::collections::HashMap;

/// (type, entries) of every pool the model keeps.
const POOLS: [(u8, usize); 6] = [
    (0x03, 1024), // VSI list, replication
    (0x04, 1024), // VSI list, pruning
    (0x05, 64),   // switch recipe
    (0x21, 64),   // Flow Director counter block
    (0x22, 2048), // Flow Director guaranteed entries
    (0x23, 8192), // Flow Director shared entries
];

/// Allocation state of each pool: `true` where an entry is taken.
pub(crate) struct Pools {
    taken: HashMap<u8, Vec<bool>>,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            taken: POOLS.iter().map(|&(t, n)| (t, vec![false; n])).collect(),
        }
    }
}

impl Pools {
    /// Whether the model keeps a pool of this type (bits 6:0 of `res_type`).
    pub(crate) fn knows(&self, res_type: u16) -> bool {
        self.taken.contains_key(&((res_type & 0x7F) as u8))
    }

    /// Takes `count` contiguous entries; the first index, or `None` when no run is free.
    pub(crate) fn alloc(&mut self, res_type: u16, count: usize) -> Option<u16> {
        let pool = self.taken.get_mut(&((res_type & 0x7F) as u8))?;
        if count == 0 || count > pool.len() {
            return None;
        }
        let fits = |pool: &[bool], s: usize| pool[s..s + count].iter().all(|t| !t);
        let starts = 0..=pool.len() - count;
        let start = if res_type & 0x1000 != 0 {
            starts.rev().find(|&s| fits(pool, s))?
        } else {
            starts.into_iter().find(|&s| fits(pool, s))?
        };
        pool[start..start + count].fill(true);
        Some(start as u16)
    }

    /// Gives back `count` entries from `first`; false (nothing changes) if any was not taken.
    pub(crate) fn free(&mut self, res_type: u16, first: u16, count: usize) -> bool {
        let Some(pool) = self.taken.get_mut(&((res_type & 0x7F) as u8)) else {
            return false;
        };
        let s = first as usize;
        match pool.get_mut(s..s.saturating_add(count)) {
            Some(run) if count > 0 && run.iter().all(|t| *t) => {
                run.fill(false);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_contiguous_exclusive_and_freed_whole() {
        let mut p = Pools::default();
        assert_eq!(p.alloc(0x21, 1), Some(0));
        assert_eq!(p.alloc(0x21, 2), Some(1));
        assert_eq!(p.alloc(0x21 | 0x1000, 1), Some(63), "from the bottom");
        assert!(!p.free(0x21, 0, 4), "entry 3 was never taken");
        assert_eq!(p.alloc(0x21, 1), Some(3), "a failed free changed nothing");
        assert!(p.free(0x21, 3, 1));
        assert!(p.free(0x21, 1, 2));
        assert_eq!(p.alloc(0x21, 2), Some(1));
        assert_eq!(p.alloc(0x22, 4096), None, "larger than the pool");
        assert_eq!(p.alloc(0x7F, 1), None);
        assert!(!p.knows(0x58), "FD profiles are the pipeline's");
    }
}
