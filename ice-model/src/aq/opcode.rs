//! The admin commands the model answers: one line per opcode, `Name = value => handler`, value
//! and name from DPDK `base/ice_adminq_cmd.h` `enum ice_adminq_opc` (\[AQC\]). To answer a new
//! command, add its line here and its handler in the file of its area.

use super::{dcb, ddp, fwlog, generic, link, nvm, rss, sched, switch, vlan, Handler};

macro_rules! opcodes {
    ($($(#[doc = $doc:literal])* $name:ident = $value:literal => $handler:path;)*) => {
        /// An admin command opcode (\[AQC\] `enum ice_adminq_opc`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(super) enum Opcode {
            $($(#[doc = $doc])* $name,)*
            /// An opcode the model does not answer (ENOSYS, as firmware does).
            Unknown(u16),
        }

        impl From<u16> for Opcode {
            fn from(v: u16) -> Opcode {
                match v {
                    $($value => Opcode::$name,)*
                    other => Opcode::Unknown(other),
                }
            }
        }

        impl Opcode {
            /// The opcode's value in a descriptor.
            pub(super) fn value(self) -> u16 {
                match self {
                    $(Opcode::$name => $value,)*
                    Opcode::Unknown(v) => v,
                }
            }

            /// The command's handler; `None` for an opcode the model does not answer.
            pub(super) fn handler(self) -> Option<Handler> {
                match self {
                    $(Opcode::$name => Some($handler),)*
                    Opcode::Unknown(_) => None,
                }
            }
        }
    };
}

opcodes! {
    /// get_ver: firmware and API versions (`ice_aqc_opc_get_ver`).
    GetVer = 0x0001 => generic::get_ver;
    /// driver_ver: the driver announces its version (`ice_aqc_opc_driver_ver`).
    DriverVer = 0x0002 => generic::driver_ver;
    /// q_shutdown: the driver is unloading (`ice_aqc_opc_q_shutdown`).
    QShutdown = 0x0003 => generic::accept;
    /// req_res: take a resource lock: NVM (1), SDP (2), change lock (3), global config (4)
    /// (`ice_aqc_opc_req_res`).
    ReqRes = 0x0008 => nvm::req_res;
    /// release_res: give a resource lock back (`ice_aqc_opc_release_res`).
    ReleaseRes = 0x0009 => nvm::release_res;
    /// list_func_caps: the function's capabilities (`ice_aqc_opc_list_func_caps`).
    ListFuncCaps = 0x000A => generic::list_caps;
    /// list_dev_caps: the device's capabilities (`ice_aqc_opc_list_dev_caps`).
    ListDevCaps = 0x000B => generic::list_caps;
    /// manage_mac_read: the LAN MAC address from the NVM (`ice_aqc_opc_manage_mac_read`).
    ManageMacRead = 0x0107 => generic::manage_mac_read;
    /// clear_pxe_mode: end the PXE mode of the option ROM (`ice_aqc_opc_clear_pxe_mode`).
    ClearPxeMode = 0x0110 => generic::clear_pxe_mode;
    /// get_sw_cfg: the switch's elements (`ice_aqc_opc_get_sw_cfg`).
    GetSwCfg = 0x0200 => switch::get_sw_cfg;
    /// set_port_params: double VLAN mode and VSI-to-VSI forwarding
    /// (`ice_aqc_opc_set_port_params`).
    SetPortParams = 0x0203 => switch::set_port_params;
    /// alloc_res: allocate shared resources, e.g. FD profile ids and TCAM entries
    /// (`ice_aqc_opc_alloc_res`).
    AllocRes = 0x0208 => switch::alloc_res;
    /// free_res: free shared resources (`ice_aqc_opc_free_res`).
    FreeRes = 0x0209 => switch::free_res;
    /// set_vlan_mode: single or double VLAN mode (`ice_aqc_opc_set_vlan_mode_parameters`).
    SetVlanMode = 0x020C => vlan::set_vlan_mode;
    /// get_vlan_mode (`ice_aqc_opc_get_vlan_mode_parameters`).
    GetVlanMode = 0x020D => vlan::get_vlan_mode;
    /// add_vsi: create a VSI (`ice_aqc_opc_add_vsi`).
    AddVsi = 0x0210 => switch::add_vsi;
    /// update_vsi: change a VSI's context (`ice_aqc_opc_update_vsi`).
    UpdateVsi = 0x0211 => switch::update_vsi;
    /// free_vsi: delete a VSI (`ice_aqc_opc_free_vsi`).
    FreeVsi = 0x0213 => switch::free_vsi;
    /// add_sw_rules: switch lookup rules (`ice_aqc_opc_add_sw_rules`).
    AddSwRules = 0x02A0 => switch::add_sw_rules;
    /// update_sw_rules: change a rule's action (`ice_aqc_opc_update_sw_rules`).
    UpdateSwRules = 0x02A1 => switch::update_sw_rules;
    /// remove_sw_rules: delete rules by index (`ice_aqc_opc_remove_sw_rules`).
    RemoveSwRules = 0x02A2 => switch::remove_sw_rules;
    /// clear_pf_cfg: drop the PF's switch configuration (`ice_aqc_opc_clear_pf_cfg`).
    ClearPfCfg = 0x02A4 => generic::accept;
    /// get_dflt_topo: the default scheduler topology (`ice_aqc_opc_get_dflt_topo`).
    GetDfltTopo = 0x0400 => sched::get_dflt_topo;
    /// add_sched_elems: add scheduler nodes (`ice_aqc_opc_add_sched_elems`).
    AddSchedElems = 0x0401 => sched::add_sched_elems;
    /// get_sched_elems: scheduler nodes as the firmware keeps them
    /// (`ice_aqc_opc_get_sched_elems`).
    GetSchedElems = 0x0404 => sched::get_sched_elems;
    /// move_sched_elems: hang scheduler nodes under another parent
    /// (`ice_aqc_opc_move_sched_elems`).
    MoveSchedElems = 0x0408 => sched::move_sched_elems;
    /// delete_sched_elems: remove scheduler nodes (`ice_aqc_opc_delete_sched_elems`).
    DeleteSchedElems = 0x040F => sched::delete_sched_elems;
    /// query_port_ets: the port's traffic classes and their scheduler nodes
    /// (`ice_aqc_opc_query_port_ets`).
    QueryPortEts = 0x040E => dcb::query_port_ets;
    /// query_sched_res: scheduler layers and their limits (`ice_aqc_opc_query_sched_res`).
    QuerySchedRes = 0x0412 => sched::query_sched_res;
    /// get_phy_caps: what the PHY can do, or its configuration (`ice_aqc_opc_get_phy_caps`).
    GetPhyCaps = 0x0600 => link::get_phy_caps;
    /// set_phy_cfg: PHY types and link enable, how Linux raises the link
    /// (`ice_aqc_opc_set_phy_cfg`).
    SetPhyCfg = 0x0601 => link::set_phy_cfg;
    /// set_mac_cfg: max frame size and pause timers (`ice_aqc_opc_set_mac_cfg`).
    SetMacCfg = 0x0603 => link::set_mac_cfg;
    /// restart_an: restart autonegotiation, link up or down (`ice_aqc_opc_restart_an`).
    RestartAn = 0x0605 => link::restart_an;
    /// get_link_status: link state, and link status events on or off
    /// (`ice_aqc_opc_get_link_status`); also the opcode of a link status event.
    GetLinkStatus = 0x0607 => link::get_link_status;
    /// set_event_mask: which link events are reported (`ice_aqc_opc_set_event_mask`).
    SetEventMask = 0x0613 => link::set_event_mask;
    /// nvm_read: Shadow RAM or flash contents (`ice_aqc_opc_nvm_read`).
    NvmRead = 0x0701 => nvm::nvm_read;
    /// get_link_topo: a netlist node (PHY, cage, clock, GNSS) (`ice_aqc_opc_get_link_topo`).
    GetLinkTopo = 0x06E0 => link::get_link_topo;
    /// get_port_options: the port split options (`ice_aqc_opc_get_port_options`).
    GetPortOptions = 0x06EA => link::get_port_options;
    /// add_txqs: create LAN TX queues under a queue group (`ice_aqc_opc_add_txqs`).
    AddTxqs = 0x0C30 => sched::add_txqs;
    /// dis_txqs: disable LAN TX queues (`ice_aqc_opc_dis_txqs`).
    DisTxqs = 0x0C31 => sched::dis_txqs;
    /// lldp_get_mib: the local or remote LLDP MIB (`ice_aqc_opc_lldp_get_mib`).
    LldpGetMib = 0x0A00 => dcb::lldp_get_mib;
    /// lldp_set_mib_change: MIB change events on or off (`ice_aqc_opc_lldp_set_mib_change`).
    LldpSetMibChange = 0x0A01 => dcb::lldp_set_mib_change;
    /// get_cee_dcb_cfg: the CEE DCB configuration (`ice_aqc_opc_get_cee_dcb_cfg`).
    GetCeeDcbCfg = 0x0A07 => dcb::get_cee_dcb_cfg;
    /// set_local_mib: the driver's local LLDP MIB (`ice_aqc_opc_set_local_mib`).
    SetLocalMib = 0x0A08 => dcb::set_local_mib;
    /// set_rss_key: a VSI's RSS hash key (`ice_aqc_opc_set_rss_key`).
    SetRssKey = 0x0B02 => rss::set_key;
    /// set_rss_lut: a VSI's RSS lookup table (`ice_aqc_opc_set_rss_lut`).
    SetRssLut = 0x0B03 => rss::set_lut;
    /// get_rss_key (`ice_aqc_opc_get_rss_key`).
    GetRssKey = 0x0B04 => rss::get_key;
    /// get_rss_lut (`ice_aqc_opc_get_rss_lut`).
    GetRssLut = 0x0B05 => rss::get_lut;
    /// download_pkg: one 4 KiB buffer of a DDP package (`ice_aqc_opc_download_pkg`).
    DownloadPkg = 0x0C40 => ddp::download_pkg;
    /// upload_section: read sections of the active package (`ice_aqc_opc_upload_section`).
    UploadSection = 0x0C41 => ddp::upload_section;
    /// update_pkg: change the loaded package's tables, e.g. Flow Director profiles
    /// (`ice_aqc_opc_update_pkg`).
    UpdatePkg = 0x0C42 => ddp::update_pkg;
    /// get_pkg_info_list: the packages the card holds and which is active
    /// (`ice_aqc_opc_get_pkg_info_list`).
    GetPkgInfoList = 0x0C43 => ddp::get_pkg_info_list;
    /// fw_logs_config: firmware log enables, resolution, module levels
    /// (`ice_aqc_opc_fw_logs_config`).
    FwLogsConfig = 0xFF30 => fwlog::config;
    /// fw_logs_register: (un)register for firmware log events (`ice_aqc_opc_fw_logs_register`).
    FwLogsRegister = 0xFF31 => fwlog::register;
    /// fw_logs_query: the firmware log configuration (`ice_aqc_opc_fw_logs_query`).
    FwLogsQuery = 0xFF32 => fwlog::query;
}

#[cfg(test)]
mod tests {
    use super::Opcode;

    #[test]
    fn every_listed_opcode_round_trips_and_has_a_handler() {
        let mut known = 0;
        for v in 0..=u16::MAX {
            let op = Opcode::from(v);
            assert_eq!(op.value(), v);
            match op {
                Opcode::Unknown(_) => assert!(op.handler().is_none()),
                _ => {
                    assert!(op.handler().is_some(), "{op:?}");
                    known += 1;
                }
            }
        }
        assert_eq!(known, 55, "the table lists each opcode once");
        assert_eq!(Opcode::from(0x0607), Opcode::GetLinkStatus);
        assert_eq!(Opcode::from(0x0701), Opcode::NvmRead);
        assert_eq!(Opcode::from(0x0702), Opcode::Unknown(0x0702));
    }
}
