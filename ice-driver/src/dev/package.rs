//! DDP package download (\[DDP\] `ice_dwnld_cfg_bufs`); the package's format is
//! [`crate::ddp`]'s.

use log::info;

use super::IceDevice;
use crate::adminq::*;
use crate::IceError;

impl IceDevice {
    /// Downloads a DDP package (\[DDP\] `ice_dwnld_cfg_bufs`): takes the global config lock
    /// (resource 4, write); "done" means another PF already loaded one; sends every
    /// configuration buffer with download_pkg, LAST_BUF on the final one; releases the lock.
    /// Leaves safe mode on success.
    pub fn download_package(&mut self, pkg: &[u8]) -> Result<(), IceError> {
        let bufs = crate::ddp::config_buffers(pkg)?;
        let mut d = AqDesc::direct(OP_REQ_RES);
        d.set_param_u16(0, 4); // global config lock
        d.set_param_u16(2, 2); // write access
        d.set_param_u32(4, 3000); // timeout (ms)
        let got = self.send(d, None, false)?;
        let status = got.param_u16(12);
        if status == 2 {
            info!("DDP package already loaded by another function");
            self.info.safe_mode = false;
            self.load_fd_tables(pkg);
            return Ok(());
        }
        let mut result = Ok(());
        for (i, b) in bufs.iter().enumerate() {
            let mut buf = b.to_vec();
            let mut d = AqDesc::direct(OP_DOWNLOAD_PKG);
            d.params[0] = (i + 1 == bufs.len()) as u8; // LAST_BUF
            if let Err(e) = self.send(d, Some(&mut buf), true) {
                result = Err(IceError::Init(format!(
                    "DDP buffer {i} of {} refused: {e}",
                    bufs.len()
                )));
                break;
            }
        }
        let mut d = AqDesc::direct(OP_RELEASE_RES);
        d.set_param_u16(0, 4);
        self.send(d, None, false)?;
        result?;
        self.info.safe_mode = false;
        self.load_fd_tables(pkg);
        info!("DDP package loaded ({} buffers)", bufs.len());
        Ok(())
    }
}
