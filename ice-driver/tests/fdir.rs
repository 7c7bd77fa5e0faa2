//! Flow Director through the ethdev flow API: three MACs steered to three queues by filters
//! programmed on the control VSI's queue; removing a filter stops it; bad rules are refused.

use std::sync::Arc;

use ice_driver::{ddp, DdpSource, IcePort};
use ice_model::pci::ModelPci;
use ice_model::{E810Model, ModelConfig};
use vdpdk_core::packet::{ether_frame, udp_frame};
use vdpdk_core::{DevConfig, Error, EthDev, FlowAction, FlowItem, FlowRule, MacAddr, Mempool};

#[test]
fn three_macs_land_on_three_queues_and_removal_stops_steering() {
    let m = E810Model::shared(ModelConfig::default());
    let pci = Arc::new(ModelPci::new(m.clone()));
    let mut port = IcePort::open_with(pci, DdpSource::Bytes(ddp::synthetic_package(2))).unwrap();
    port.configure(&DevConfig {
        nb_rx_queues: 4,
        nb_tx_queues: 1,
        ..Default::default()
    })
    .unwrap();
    let pool = Mempool::new("fd", 4096, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    for q in 0..4 {
        port.rx_queue_setup(q, 256, &pool).unwrap();
    }
    port.tx_queue_setup(0, 256).unwrap();
    port.start().unwrap();
    let mut rxq: Vec<_> = (0..4).map(|q| port.take_rx_queue(q).unwrap()).collect();
    let macs = [1u8, 2, 3].map(|i| MacAddr([2, 0, 0, 0, 0x10, i]));
    let mut handles = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let rule = FlowRule::to_queue(vec![FlowItem::eth_dst(*mac)], i as u16 + 1);
        port.flow_validate(&rule).unwrap();
        handles.push(port.flow_create(&rule).unwrap());
    }
    // The dst MAC profile went live through the DDP tables: a profile id and TCAM entries
    // from alloc_res (0x0208), one update_package (0x0C42) under the change lock, and the
    // profile's registers at the public offsets (GLQF_FDSWAP(p, 0) = 0x413000 + 4p: identity
    // swap for a MAC profile; GLQF_FDINSET(p, 0) = 0x412000 + 4p: all words in the input set).
    {
        let mut model = m.lock();
        let seen = model.commands.clone();
        assert_eq!(
            seen.get(&0x0C42),
            Some(&1),
            "one update for the profile: {seen:?}"
        );
        assert!(seen.get(&0x0208).is_some_and(|&n| n >= 2), "{seen:?}");
        let p = (0..128u64)
            .find(|p| model.mmio_read(0x413000 + 4 * p) != 0)
            .expect("a profile's swap registers were written");
        assert_eq!(model.mmio_read(0x413000 + 4 * p), 0x83828180);
        assert_eq!(model.mmio_read(0x412000 + 4 * p + 512 * 5), 0x9F9F9F9F);
    }
    let src = MacAddr([2, 0, 0, 0, 0, 0x99]);
    let send = |mac: MacAddr, n: u64| {
        for s in 0..n {
            assert!(m.lock().receive(&udp_frame(mac, src, s, 80)));
        }
    };
    let counts = |rxq: &mut Vec<Box<dyn vdpdk_core::RxQueue>>| -> Vec<usize> {
        let mut out = Vec::new();
        rxq.iter_mut()
            .map(|q| {
                let mut n = 0;
                while q.rx_burst(&mut out, 32) > 0 {
                    n += out.len();
                    out.clear();
                }
                n
            })
            .collect()
    };
    send(macs[0], 10);
    send(macs[1], 20);
    send(macs[2], 30);
    send(MacAddr([2, 0, 0, 0, 0x10, 9]), 5);
    assert_eq!(
        counts(&mut rxq),
        vec![5, 10, 20, 30],
        "each MAC on its own queue, others on 0"
    );

    // Removing MAC 2's filter sends its frames back to the default queue.
    port.flow_destroy(handles[1]).unwrap();
    send(macs[1], 7);
    assert_eq!(counts(&mut rxq), vec![7, 0, 0, 0]);
    assert!(
        matches!(port.flow_destroy(handles[1]), Err(Error::InvalidArg(_))),
        "no double remove"
    );

    // The card serves a packet type with one flow profile: EtherType rules cannot join the
    // dst MAC rules in place, and are refused up front with the reason.
    let by_type = FlowRule::to_queue(vec![FlowItem::eth_type(0x88b5)], 1);
    match port.flow_validate(&by_type) {
        Err(Error::Unsupported(m)) => assert!(m.contains("ETH dst rules in place"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Once the MAC rules are gone, their profile leaves the TCAM and EtherType can come:
    // steering and DROP.
    port.flow_flush().unwrap();
    send(macs[0], 1);
    assert_eq!(
        counts(&mut rxq),
        vec![1, 0, 0, 0],
        "flush removed the MAC filters"
    );
    let h = port
        .flow_create(&FlowRule {
            actions: vec![FlowAction::Drop],
            ..FlowRule::to_queue(vec![FlowItem::eth_type(0x88b5)], 0)
        })
        .unwrap();
    assert!(!m.lock().receive(&ether_frame(
        MacAddr([2, 0, 0, 0, 0x10, 9]),
        src,
        0x88b5,
        1,
        64
    )));
    assert_eq!(m.lock().fdir_drops, 1);
    port.flow_destroy(h).unwrap();
    for (i, mac) in macs.iter().enumerate() {
        if i != 1 {
            port.flow_create(&FlowRule::to_queue(
                vec![FlowItem::eth_dst(*mac)],
                i as u16 + 1,
            ))
            .unwrap();
        }
    }

    // Bad rules: a queue the port does not have, a pattern FDIR cannot match, MARK.
    let bad_q = FlowRule::to_queue(vec![FlowItem::eth_dst(macs[0])], 7);
    assert!(matches!(
        port.flow_validate(&bad_q),
        Err(Error::InvalidArg(_))
    ));
    let partial = FlowRule::to_queue(
        vec![FlowItem::Eth {
            spec: Default::default(),
            mask: vdpdk_core::flow::EthFields {
                src: MacAddr::BROADCAST,
                ..Default::default()
            },
        }],
        1,
    );
    match port.flow_validate(&partial) {
        Err(Error::Unsupported(m)) => assert!(m.contains("Flow Director cannot offload"), "{m}"),
        other => panic!("{other:?}"),
    }
    let reserved = FlowRule {
        actions: vec![FlowAction::Queue(1), FlowAction::Mark(u32::MAX)],
        ..FlowRule::to_queue(vec![FlowItem::eth_dst(macs[0])], 1)
    };
    assert!(
        port.flow_validate(&reserved).is_err(),
        "the no-id value cannot be a MARK"
    );

    // MARK: frames matching carry the id; others carry none.
    let h = port
        .flow_create(&FlowRule {
            actions: vec![FlowAction::Queue(3), FlowAction::Mark(0x5eed)],
            ..FlowRule::to_queue(vec![FlowItem::eth_dst(macs[1])], 3)
        })
        .unwrap();
    send(macs[1], 2);
    send(macs[2], 1);
    let mut out = Vec::new();
    while rxq[3].rx_burst(&mut out, 32) > 0 {}
    assert_eq!(out.len(), 3);
    let marked: Vec<_> = out
        .iter()
        .map(|m| {
            m.ol_flags
                .contains(vdpdk_core::OlFlags::RX_FDIR_ID)
                .then_some(m.mark)
        })
        .collect();
    assert_eq!(marked, vec![Some(0x5eed), Some(0x5eed), None]);
    out.clear();
    port.flow_destroy(h).unwrap();
    port.flow_flush().unwrap();
    send(macs[0], 3);
    assert_eq!(
        counts(&mut rxq),
        vec![3, 0, 0, 0],
        "flush removed every filter"
    );
}

#[test]
fn safe_mode_refuses_flow_rules() {
    let m = E810Model::shared(ModelConfig::default());
    let port = IcePort::open_with(Arc::new(ModelPci::new(m)), DdpSource::None).unwrap();
    let rule = FlowRule::to_queue(vec![FlowItem::eth_dst(MacAddr([2, 0, 0, 0, 0, 1]))], 0);
    match port.flow_validate(&rule) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("safe mode"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ipv6_and_tcp_destination_filters_steer() {
    use vdpdk_core::flow::{Ipv4Fields, Ipv6Fields, L4Ports};
    let m = E810Model::shared(ModelConfig::default());
    let mut port = IcePort::open_with(
        Arc::new(ModelPci::new(m.clone())),
        DdpSource::Bytes(ddp::synthetic_package(1)),
    )
    .unwrap();
    port.configure(&DevConfig {
        nb_rx_queues: 3,
        nb_tx_queues: 1,
        ..Default::default()
    })
    .unwrap();
    let pool = Mempool::new("fd6", 2048, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    for q in 0..3 {
        port.rx_queue_setup(q, 128, &pool).unwrap();
    }
    port.tx_queue_setup(0, 128).unwrap();
    port.start().unwrap();
    let mut rxq: Vec<_> = (0..3).map(|q| port.take_rx_queue(q).unwrap()).collect();
    let v6: std::net::Ipv6Addr = "fd00::7".parse().unwrap();
    let ports = |dst| L4Ports { src: 0, dst };
    let full = L4Ports {
        src: 0,
        dst: 0xffff,
    };
    port.flow_create(&FlowRule::to_queue(
        vec![
            FlowItem::Ipv6 {
                spec: Ipv6Fields {
                    dst: v6,
                    ..Default::default()
                },
                mask: Ipv6Fields {
                    dst: [0xff; 16].into(),
                    ..Default::default()
                },
            },
            FlowItem::Tcp {
                spec: ports(443),
                mask: full,
            },
        ],
        1,
    ))
    .unwrap();
    port.flow_create(&FlowRule::to_queue(
        vec![
            FlowItem::Ipv4 {
                spec: Ipv4Fields {
                    dst: [10, 0, 0, 9].into(),
                    ..Default::default()
                },
                mask: Ipv4Fields {
                    dst: [255; 4].into(),
                    ..Default::default()
                },
            },
            FlowItem::Tcp {
                spec: ports(80),
                mask: full,
            },
        ],
        2,
    ))
    .unwrap();
    let mut v6tcp = vec![0u8; 78];
    v6tcp[12..14].copy_from_slice(&[0x86, 0xdd]);
    v6tcp[14] = 0x60;
    v6tcp[20] = 6;
    v6tcp[38..54].copy_from_slice(&v6.octets());
    v6tcp[56..58].copy_from_slice(&443u16.to_be_bytes());
    let mut v4tcp = vec![0u8; 60];
    v4tcp[12..14].copy_from_slice(&[8, 0]);
    v4tcp[14] = 0x45;
    v4tcp[23] = 6;
    v4tcp[30..34].copy_from_slice(&[10, 0, 0, 9]);
    v4tcp[36..38].copy_from_slice(&80u16.to_be_bytes());
    let mut other = v4tcp.clone();
    other[37] = 81; // port 81: no filter
    for f in [&v6tcp, &v4tcp, &other] {
        assert!(m.lock().receive(f));
    }
    let mut out = Vec::new();
    let n: Vec<usize> = rxq.iter_mut().map(|q| q.rx_burst(&mut out, 32)).collect();
    assert_eq!(
        n,
        vec![1, 1, 1],
        "IPv6/TCP to 1, IPv4/TCP to 2, the rest to 0"
    );
    assert_eq!(out[1].data(), &v6tcp[..]);
}
