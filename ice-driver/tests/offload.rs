//! TX offloads through the driver and the model: checksum offload and TSO leave the port as
//! correct frames, checked by an independent checksum routine and by the Linux stack.

use std::sync::Arc;

use ice_driver::IceDevice;
use ice_model::pci::ModelPci;
use ice_model::{E810Model, ModelConfig};
use parking_lot::Mutex;
use vdpdk_core::mbuf::TxOffloadInfo;
use vdpdk_core::packet::inet_checksum;
use vdpdk_core::{MacAddr, Mbuf, Mempool, OlFlags, TxQueue};

const SRC_IP: [u8; 4] = [10, 213, 77, 2];
const DST_IP: [u8; 4] = [10, 213, 77, 1];

/// Eth/IPv4/(UDP|TCP) frame with every checksum field zeroed.
fn frame(dst: MacAddr, proto: u8, payload: usize) -> Vec<u8> {
    let l4 = if proto == 6 { 20 } else { 8 };
    let mut f = vec![0u8; 14 + 20 + l4 + payload];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x42]);
    f[12..14].copy_from_slice(&[8, 0]);
    f[14] = 0x45;
    let tot = (20 + l4 + payload) as u16;
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
    f[22] = 64;
    f[23] = proto;
    f[26..30].copy_from_slice(&SRC_IP);
    f[30..34].copy_from_slice(&DST_IP);
    f[34..36].copy_from_slice(&5555u16.to_be_bytes());
    f[36..38].copy_from_slice(&4789u16.to_be_bytes());
    if proto == 17 {
        f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    } else {
        f[38..42].copy_from_slice(&1000u32.to_be_bytes()); // seq
        f[46] = 5 << 4; // data offset
        f[47] = 0x18; // PSH | ACK
        f[48..50].copy_from_slice(&65535u16.to_be_bytes());
    }
    for (i, b) in f[14 + 20 + l4..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// Independent check: IPv4 header sums to 0xffff, L4 with pseudo-header sums to 0xffff.
fn checksums_ok(f: &[u8]) -> bool {
    if inet_checksum(&f[14..34]) != 0 {
        return false;
    }
    let l4 = &f[34..];
    let mut ph = Vec::new();
    ph.extend_from_slice(&f[26..34]);
    ph.extend_from_slice(&[0, f[23]]);
    ph.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    ph.extend_from_slice(l4);
    inet_checksum(&ph) == 0
}

fn setup() -> (
    Arc<Mutex<E810Model>>,
    IceDevice,
    ice_driver::IceTxQueue,
    Mempool,
) {
    let m = E810Model::shared(ModelConfig::default());
    let mut ice = IceDevice::probe(Arc::new(ModelPci::new(m.clone()))).unwrap();
    let tx = ice.setup_tx_queue(0, 256).unwrap();
    let pool = Mempool::new("ol", 1024, 9216).unwrap();
    (m, ice, tx, pool)
}

fn mbuf(pool: &Mempool, f: &[u8], flags: OlFlags, l4: u8, mss: u16) -> Mbuf {
    let mut m = pool.alloc().unwrap();
    m.copy_from(f).unwrap();
    m.ol_flags = flags;
    m.tx_offload = TxOffloadInfo {
        l2_len: 14,
        l3_len: 20,
        l4_len: l4,
        tso_segsz: mss,
    };
    m
}

#[test]
fn checksum_offload_fills_ipv4_udp_and_tcp_checksums() {
    let (m, _ice, mut tx, pool) = setup();
    let dst = MacAddr([2, 0, 0, 0, 0, 1]);
    let csum = OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM;
    let mut v = vec![
        mbuf(
            &pool,
            &frame(dst, 17, 100),
            csum | OlFlags::TX_UDP_CKSUM,
            8,
            0,
        ),
        mbuf(
            &pool,
            &frame(dst, 6, 333),
            csum | OlFlags::TX_TCP_CKSUM,
            20,
            0,
        ),
        mbuf(&pool, &frame(dst, 17, 50), OlFlags::empty(), 8, 0),
    ];
    tx.tx_burst(&mut v);
    let out = m.lock().take_outbox();
    assert_eq!(out.len(), 3);
    assert!(checksums_ok(&out[0]), "UDP frame checksums");
    assert!(checksums_ok(&out[1]), "TCP frame checksums");
    assert!(!checksums_ok(&out[2]), "no offload requested: left as sent");
    assert_eq!(
        &out[0][42..],
        &frame(dst, 17, 100)[42..],
        "payload untouched"
    );
}

#[test]
fn tso_super_frame_becomes_mss_sized_segments() {
    let (m, _ice, mut tx, pool) = setup();
    let dst = MacAddr([2, 0, 0, 0, 0, 1]);
    let big = frame(dst, 6, 4000);
    let flags = OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM | OlFlags::TX_TCP_SEG;
    let mut v = vec![mbuf(&pool, &big, flags, 20, 1448)];
    assert_eq!(tx.tx_burst(&mut v), 1);
    let segs = m.lock().take_outbox();
    assert_eq!(segs.len(), 3, "4000 bytes at MSS 1448");
    let mut payload = Vec::new();
    for (k, s) in segs.iter().enumerate() {
        assert!(checksums_ok(s), "segment {k} checksums");
        let plen = s.len() - 54;
        assert_eq!(plen, if k < 2 { 1448 } else { 4000 - 2 * 1448 });
        assert_eq!(
            u16::from_be_bytes([s[16], s[17]]) as usize,
            40 + plen,
            "IPv4 total length"
        );
        assert_eq!(
            u16::from_be_bytes([s[18], s[19]]),
            0x1234 + k as u16,
            "IP id"
        );
        assert_eq!(
            u32::from_be_bytes(s[38..42].try_into().unwrap()),
            1000 + (k * 1448) as u32
        );
        assert_eq!(s[47] & 0x08 != 0, k == 2, "PSH only on the last segment");
        payload.extend_from_slice(&s[54..]);
    }
    assert_eq!(payload, big[54..].to_vec(), "payload reassembles exactly");
}

/// The Linux stack judges the checksums: frames go out through a TAP inside a private
/// network namespace where a UDP socket listens; only valid ones are delivered.
#[test]
fn linux_accepts_offloaded_checksums_through_a_tap() {
    use std::process::Command;
    let run = |args: &[&str]| {
        let o = Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect(args[0]);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let id = std::process::id() % 100_000;
    let (ns, ifname) = (format!("vdol{id}"), format!("vdol{id}"));
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    run(&["ip", "netns", "add", &ns]);
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .output();
        }
    }
    let _ns = Ns(ns.clone());
    let tap = vdpdk_tap::TapPort::open(&ifname, None).expect("TAP (run as root)");
    let kmac = tap.kernel_mac().unwrap();
    run(&["ip", "link", "set", &ifname, "netns", &ns]);
    run(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        "10.213.77.1/24",
        "dev",
        &ifname,
    ]);
    run(&["ip", "-n", &ns, "link", "set", &ifname, "up"]);
    // Static neighbour so the kernel never needs to ARP for our source.
    run(&[
        "ip",
        "-n",
        &ns,
        "neigh",
        "add",
        "10.213.77.2",
        "lladdr",
        "02:00:00:00:00:42",
        "dev",
        &ifname,
    ]);
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c"])
        .arg(
            "import socket,sys\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('10.213.77.1',4789)); s.settimeout(3)\n\
             print('ready', flush=True)\n\
             n=0\n\
             try:\n  while True: s.recv(4096); n+=1\n\
             except socket.timeout: pass\n\
             print(n)",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Send only once the listener is bound (a busy machine can take seconds to start Python).
    let mut out = std::io::BufReader::new(listener.stdout.take().unwrap());
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut out, &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready", "the UDP listener did not start");

    // The model's port is cabled to the TAP: what it transmits reaches the namespace's stack.
    let m = E810Model::shared(ModelConfig::default());
    let pci = Arc::new(ModelPci::new(m.clone()));
    pci.set_wire(ice_model::cable::EthDevCable::connect(m.clone(), Box::new(tap)).unwrap());
    let mut ice = IceDevice::probe(pci).unwrap();
    let mut tx = ice.setup_tx_queue(0, 256).unwrap();
    let pool = Mempool::new("ol", 1024, 9216).unwrap();
    let csum = OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM | OlFlags::TX_UDP_CKSUM;
    let mut good = (0..5)
        .map(|_| mbuf(&pool, &frame(kmac, 17, 64), csum, 8, 0))
        .collect::<Vec<_>>();
    tx.tx_burst(&mut good);
    // A frame with a wrong (non-zero) UDP checksum and correct IP header: Linux must drop it.
    let mut bad = frame(kmac, 17, 64);
    bad[40] = 0x12;
    let mut badm = vec![mbuf(
        &pool,
        &bad,
        OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM,
        8,
        0,
    )];
    tx.tx_burst(&mut badm);
    assert_eq!(
        m.lock().stats.tx_packets,
        6,
        "all six left the port into the cable"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    listener.wait().unwrap();
    let n: u32 = rest.trim().parse().unwrap();
    assert_eq!(n, 5, "Linux delivered exactly the offloaded frames");
}

#[test]
fn tso_of_a_chained_super_frame_matches_the_single_buffer_one() {
    let (m, _ice, mut tx, pool) = setup();
    let dst = MacAddr([2, 0, 0, 0, 0, 1]);
    let big = frame(dst, 6, 4000);
    let flags = OlFlags::TX_IPV4 | OlFlags::TX_IP_CKSUM | OlFlags::TX_TCP_SEG;
    // Headers alone in the first segment, the payload split unevenly over three more.
    let mut chained = mbuf(&pool, &big[..54], flags, 20, 1448);
    for part in [&big[54..1054], &big[1054..3054], &big[3054..]] {
        let mut seg = pool.alloc().unwrap();
        seg.copy_from(part).unwrap();
        chained.chain(seg);
    }
    assert_eq!((chained.nb_segs(), chained.pkt_len()), (4, big.len()));
    let mut v = vec![chained];
    assert_eq!(tx.tx_burst(&mut v), 1);
    let from_chain = m.lock().take_outbox();
    let mut v = vec![mbuf(&pool, &big, flags, 20, 1448)];
    assert_eq!(tx.tx_burst(&mut v), 1);
    let from_one = m.lock().take_outbox();
    assert_eq!(from_chain.len(), 3);
    assert!(from_chain.iter().all(|s| checksums_ok(s)));
    assert_eq!(from_chain, from_one, "same segments either way");
}
