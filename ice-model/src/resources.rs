//! The firmware's resource locks, taken and given back with request/release resource
//! (0x0008/0x0009): the NVM, the software-definable pins, the change lock (switch and flow table
//! updates) and the global configuration lock (DDP package download).
//!
//! Semantics from Linux 6.12 `ice_common.c` (`ice_aq_req_res`, `ice_acquire_res`,
//! `ice_release_res`) and the ids from `ice_type.h` `enum ice_aq_res_ids`; docs/linux-ice-probe.md
//! section 3.1.

/// Admin return codes used here (`enum ice_aq_err`).
const RC_EBUSY: u16 = 12;
const RC_EINVAL: u16 = 14;

/// Resource ids of request/release resource (`ice_type.h` `enum ice_aq_res_ids`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceId {
    /// The NVM (every NVM read is wrapped in it).
    Nvm = 1,
    /// Software-definable pins.
    Sdp = 2,
    /// The change lock (package updates of switch/flow tables).
    ChangeLock = 3,
    /// The global configuration lock (DDP package download).
    GlobalConfig = 4,
}

impl ResourceId {
    fn from_raw(v: u16) -> Option<ResourceId> {
        Some(match v {
            1 => ResourceId::Nvm,
            2 => ResourceId::Sdp,
            3 => ResourceId::ChangeLock,
            4 => ResourceId::GlobalConfig,
            _ => return None,
        })
    }
}

/// The status field of a global config lock answer (`ice_adminq_cmd.h`).
pub mod glbl_status {
    /// The lock is yours: download the package.
    pub const SUCCESS: u16 = 0;
    /// Someone else holds it; retry within the returned timeout.
    pub const IN_PROG: u16 = 1;
    /// A package is already loaded: skip the download.
    pub const DONE: u16 = 2;
}

/// What a granted or refused request answers in its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceAnswer {
    /// Milliseconds the owner may hold the resource (granted) or the current owner has left
    /// (busy).
    pub timeout_ms: u32,
    /// The global config lock's status (`glbl_status`); 0 for the other resources.
    pub status: u16,
}

/// The firmware's resource ownership for the one PF the model serves.
#[derive(Default)]
pub struct Resources {
    /// Held resources, with the timeout the holder asked for (index = resource id).
    held: [Option<u32>; 5],
    /// A DDP package was downloaded and activated: the global config lock answers DONE.
    pub package_done: bool,
}

impl Resources {
    /// request resource (0x0008): `res_id` @0, access @2 (1 read, 2 write), timeout @4.
    /// Unknown ids or access types are EINVAL. A held NVM/SDP/change lock is EBUSY with the
    /// holder's timeout (Linux polls for that long); the global config lock answers in its
    /// status field instead, with retval 0 (`ice_aq_req_res`).
    pub fn request(
        &mut self,
        res: u16,
        access: u16,
        timeout_ms: u32,
    ) -> Result<ResourceAnswer, (u16, ResourceAnswer)> {
        let id = ResourceId::from_raw(res).ok_or((
            RC_EINVAL,
            ResourceAnswer {
                timeout_ms: 0,
                status: 0,
            },
        ))?;
        if !(1..=2).contains(&access) {
            return Err((
                RC_EINVAL,
                ResourceAnswer {
                    timeout_ms: 0,
                    status: 0,
                },
            ));
        }
        let slot = &mut self.held[id as usize];
        if id == ResourceId::GlobalConfig {
            let (status, timeout_ms) = if self.package_done {
                (glbl_status::DONE, 0)
            } else if let Some(t) = *slot {
                (glbl_status::IN_PROG, t)
            } else {
                *slot = Some(timeout_ms);
                (glbl_status::SUCCESS, timeout_ms)
            };
            return Ok(ResourceAnswer { timeout_ms, status });
        }
        if let Some(t) = *slot {
            return Err((
                RC_EBUSY,
                ResourceAnswer {
                    timeout_ms: t,
                    status: 0,
                },
            ));
        }
        *slot = Some(timeout_ms);
        Ok(ResourceAnswer {
            timeout_ms,
            status: 0,
        })
    }

    /// release resource (0x0009): frees it; releasing what is not held changes nothing and
    /// succeeds (Linux retries a failed release for 10 s). Unknown ids are EINVAL.
    pub fn release(&mut self, res: u16) -> Result<(), u16> {
        let id = ResourceId::from_raw(res).ok_or(RC_EINVAL)?;
        self.held[id as usize] = None;
        Ok(())
    }

    /// Whether `id` is held.
    pub fn held(&self, id: ResourceId) -> bool {
        self.held[id as usize].is_some()
    }

    /// A PF reset releases everything the PF held; a loaded package stays loaded.
    pub fn reset(&mut self) {
        self.held = [None; 5];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_exclusive_and_released_by_release_or_reset() {
        let mut r = Resources::default();
        assert_eq!(
            r.request(1, 1, 180_000),
            Ok(ResourceAnswer {
                timeout_ms: 180_000,
                status: 0
            })
        );
        assert_eq!(r.request(1, 1, 1000).unwrap_err().0, RC_EBUSY);
        assert_eq!(r.request(1, 1, 1000).unwrap_err().1.timeout_ms, 180_000);
        assert_eq!(r.release(1), Ok(()));
        assert_eq!(r.release(1), Ok(()), "releasing twice changes nothing");
        assert!(r.request(1, 2, 10).is_ok());
        r.reset();
        assert!(!r.held(ResourceId::Nvm));
        assert_eq!(r.request(0, 1, 10).unwrap_err().0, RC_EINVAL);
        assert_eq!(r.request(5, 1, 10).unwrap_err().0, RC_EINVAL);
        assert_eq!(r.request(1, 3, 10).unwrap_err().0, RC_EINVAL);
        assert_eq!(r.release(9), Err(RC_EINVAL));
    }

    #[test]
    fn the_global_config_lock_answers_in_its_status_field() {
        let mut r = Resources::default();
        assert_eq!(r.request(4, 2, 5000).unwrap().status, glbl_status::SUCCESS);
        let busy = r.request(4, 2, 5000).unwrap();
        assert_eq!(busy.status, glbl_status::IN_PROG);
        assert_eq!(busy.timeout_ms, 5000);
        r.release(4).unwrap();
        r.package_done = true;
        assert_eq!(r.request(4, 2, 5000).unwrap().status, glbl_status::DONE);
        assert!(!r.held(ResourceId::GlobalConfig), "DONE takes no lock");
    }
}
