//! MSI-X interrupts: the queue causes (QINT_RQCTL, QINT_TQCTL), the admin queue cause
//! (PFINT_FW_CTL), software-triggered interrupts (GLINT_DYN_CTL.SWINT_TRIG), arming
//! (GLINT_DYN_CTL.INTENA, auto-masked when it fires; a cause raised while disarmed is latched
//! until re-armed) and ITR moderation (GLINT_ITR), as DPDK
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
        self.request((ctl & 0x7FF) as usize, (ctl >> 11 & 3) as u8);
    }

    /// Asks for vector `v`'s interrupt through ITR index `itr_index` (3: no ITR). A vector
    /// that is not armed latches the request and fires when software re-arms it, as the card
    /// does: Linux's NAPI re-enables the vector after its last poll and relies on a frame that
    /// came in between still raising the interrupt.
    fn request(&mut self, v: usize, itr_index: u8) {
        if !self.armed.contains(&v) {
            self.latched.insert(v, itr_index);
            return;
        }
        if self.held.contains(&v) {
            return;
        }
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
                        m.fire(v, itr_index);
                    }
                });
                return;
            }
        }
        self.fire(v, itr_index);
    }

    /// A GLINT_DYN_CTL(v) write: INTENA (b0) arms or disarms the vector unless INTENA_MSK
    /// (b31) says to leave it; arming fires what was latched while disarmed; SWINT_TRIG (b2)
    /// asks for the interrupt now (Linux's TX hang check and NAPI kick use it). WB_ON_ITR and
    /// CLEARPBA need nothing here: descriptors are written back at once, and the MSI-X PBA
    /// lives in the client (QEMU emulates the table) \[HWA `GLINT_DYN_CTL`\].
    pub(crate) fn dyn_ctl_write(&mut self, v: usize, val: u32) {
        if val & 1 << 31 == 0 {
            if val & 1 != 0 {
                self.armed.insert(v);
                if let Some(itr_index) = self.latched.remove(&v) {
                    self.request(v, itr_index);
                }
            } else {
                self.armed.remove(&v);
            }
        }
        if val & 1 << 2 != 0 {
            self.request(v, 3);
        }
    }

    /// Signals vector `v` if it is (still) armed, and disarms it; latches the request if not.
    fn fire(&mut self, v: usize, itr_index: u8) {
        if !self.armed.remove(&v) {
            self.latched.insert(v, itr_index);
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

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd, OwnedFd};

    use crate::regs::{GLINT_DYN_CTL_BASE, PFGEN_CTRL, QINT_RQCTL_BASE};
    use crate::{E810Model, ModelConfig};

    const INTENA: u32 = 1;
    const SWINT_TRIG: u32 = 1 << 2;
    const INTENA_MSK: u32 = 1 << 31;

    /// A model whose RX queue 0 raises vector 1 (no ITR) into an eventfd.
    fn model_with_vector_1() -> E810Model {
        let mut m = E810Model::new(ModelConfig::default());
        // SAFETY: eventfd returns a new fd (checked below) that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
        assert!(fd >= 0);
        // SAFETY: fd is the fresh eventfd above, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        m.set_msix(vec![None, Some(fd)]);
        m.mmio_write(QINT_RQCTL_BASE, 1 | 3 << 11 | 1 << 30);
        m
    }

    #[test]
    fn a_cause_raised_while_disarmed_fires_when_rearmed() {
        let mut m = model_with_vector_1();
        let dyn_ctl = GLINT_DYN_CTL_BASE + 4;
        m.rx_interrupt(0);
        assert_eq!(m.interrupts, 0, "never armed: nothing fires yet");
        m.mmio_write(dyn_ctl, INTENA);
        assert_eq!(m.interrupts, 1, "arming fires what was latched");
        m.rx_interrupt(0);
        assert_eq!(m.interrupts, 1, "auto-masked after firing");
        m.mmio_write(dyn_ctl, INTENA_MSK);
        assert_eq!(m.interrupts, 1, "INTENA_MSK leaves the vector as it was");
        m.mmio_write(dyn_ctl, INTENA | INTENA_MSK);
        assert_eq!(m.interrupts, 1, "INTENA_MSK: INTENA is not written");
        m.mmio_write(dyn_ctl, INTENA);
        assert_eq!(
            m.interrupts, 2,
            "the frame that came while masked still interrupts"
        );
        m.mmio_write(dyn_ctl, INTENA);
        assert_eq!(m.interrupts, 2, "one latched cause, one interrupt");
        m.rx_interrupt(0);
        assert_eq!(m.interrupts, 3);
        m.mmio_write(dyn_ctl, INTENA | SWINT_TRIG);
        assert_eq!(m.interrupts, 4, "software trigger");
    }

    #[test]
    fn a_pf_reset_forgets_the_interrupt_setup() {
        let mut m = model_with_vector_1();
        m.mmio_write(GLINT_DYN_CTL_BASE + 4, INTENA);
        m.mmio_write(PFGEN_CTRL, 1);
        m.rx_interrupt(0);
        m.mmio_write(GLINT_DYN_CTL_BASE + 4, INTENA);
        assert_eq!(m.interrupts, 0, "the queue's cause went with the reset");
    }
}
