//! MSI-X interrupts: the queue causes (QINT_RQCTL, QINT_TQCTL), the admin queue cause
//! (PFINT_FW_CTL), software-triggered interrupts (GLINT_DYN_CTL.SWINT_TRIG), arming
//! (GLINT_DYN_CTL.INTENA, auto-masked when it fires) and ITR moderation (GLINT_ITR), as DPDK
//! `base/ice_hw_autogen.h` lays the registers out. Every cause register is MSIX_INDX (bits
//! 10:0), ITR_INDX (12:11) and CAUSE_ENA (bit 30).

use crate::E810Model;

impl E810Model {
    /// Fires RX queue `q`'s vector if its cause is enabled and the vector is armed; the
    /// vector then stays masked until software re-arms it (GLINT_DYN_CTL.INTENA). With an
    /// ITR interval on the queue's ITR index, an interrupt due sooner than that after the
    /// vector's last one is held and fires when the interval ends (interrupt moderation).
    pub(crate) fn rx_interrupt(&mut self, q: usize) {
        if let Some(&ctl) = self.rq_ctl.get(&q) {
            self.cause_interrupt(ctl);
        }
    }

    /// Fires TX queue `q`'s vector (a descriptor was written back), as `rx_interrupt`.
    pub(crate) fn tx_interrupt(&mut self, q: usize) {
        if let Some(&ctl) = self.tq_ctl.get(&q) {
            self.cause_interrupt(ctl);
        }
    }

    /// Fires the admin queue's vector (an event was posted on the ARQ) if PFINT_FW_CTL
    /// enables the cause.
    pub(crate) fn admin_interrupt(&mut self) {
        let ctl = self
            .plain
            .get(&crate::regs::PFINT_FW_CTL)
            .copied()
            .unwrap_or(0);
        self.cause_interrupt(ctl);
    }

    /// Fires the vector a cause register names, if the cause is enabled, with moderation.
    fn cause_interrupt(&mut self, ctl: u32) {
        if ctl & (1 << 30) == 0 {
            return;
        }
        let v = (ctl & 0x7FF) as usize;
        if !self.armed.contains(&v) || self.held.contains(&v) {
            return;
        }
        let itr_index = (ctl >> 11 & 3) as u8; // 3 = no ITR
        let interval = std::time::Duration::from_micros(
            self.itr_us.get(&(itr_index, v)).copied().unwrap_or(0),
        );
        let due = self.last_fire.get(&v).map(|t| *t + interval);
        if let (Some(due), Some(me)) = (due, self.self_ref.clone()) {
            let now = std::time::Instant::now();
            if due > now {
                self.held.insert(v);
                self.throttled += 1;
                std::thread::spawn(move || {
                    std::thread::sleep(due - now);
                    if let Some(m) = me.upgrade() {
                        let mut m = m.lock();
                        m.held.remove(&v);
                        m.fire(v);
                    }
                });
                return;
            }
        }
        self.fire(v);
    }

    /// Signals vector `v` if it is (still) armed, and disarms it.
    pub(crate) fn fire(&mut self, v: usize) {
        if !self.armed.remove(&v) {
            return;
        }
        self.last_fire.insert(v, std::time::Instant::now());
        if let Some(Some(fd)) = self.msix.get(v) {
            use std::os::fd::AsRawFd;
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 bytes from a local buffer to an eventfd we own.
            unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
            self.interrupts += 1;
        }
    }
}
