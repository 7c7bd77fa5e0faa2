//! Zero-copy on the ice driver: host-mux maps each guest's memory for the card
//! (`EthDev::external_dma`, at the memory's address in host-mux), lends a guest's direct-ring
//! buffers to the card's RX queue Flow Director gives its VM, so the card writes frames
//! straight into guest memory, and hands big TX frames to the card in guest memory. Card A
//! (behind host-mux) is cabled to card B, which the test drives as the wire.

mod common;

use std::time::{Duration, Instant};

use common::*;
use host_mux::{HostMux, MuxConfig};
use ice_driver::IceDevice;
use ice_model::ModelConfig;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::{MacAddr, Mbuf, Mempool, RxQueue, TxQueue};

fn send_all(tx: &mut impl TxQueue, pool: &Mempool, frames: &[Vec<u8>]) {
    for chunk in frames.chunks(32) {
        let mut batch: Vec<Mbuf> = chunk
            .iter()
            .map(|f| pool.alloc_packet(f).unwrap())
            .collect();
        while !batch.is_empty() {
            tx.tx_burst(&mut batch);
        }
        // Paced: card A's queue holds 1024 frames while host-mux's poller is off its CPU.
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[test]
fn the_card_writes_into_and_reads_from_guest_memory_in_place() {
    let dir = TempDir::new("icezc");
    let (amac, bmac) = (mac(0xda), mac(0xdb));
    let common::ice::IceRig {
        mux,
        model_a,
        pool,
        mut w_rx,
        mut w_tx,
        ..
    } = common::ice::ice_rig(&dir, &[("a", amac), ("b", bmac)], |c| MuxConfig {
        zero_copy_rx: true,
        zero_copy_tx: true,
        ..c
    });

    let mut a = GuestProc::spawn(&dir.sock("a"), 1);
    let mut b = GuestProc::spawn(&dir.sock("b"), 1);
    let lent = |mux: &HostMux| -> u64 { mux.pollers().iter().map(|p| p.rx_in_place).sum() };
    // The card's RX queues start on host-mux's own buffers (1023 each, a ring less one):
    // those frames are copied, then the guests' lent buffers take over, lossless. A ring and
    // more to each guest first, then count what lands in place.
    for round in 0..2 {
        let n = if round == 0 { 1100 } else { 300 };
        let to_a: Vec<Vec<u8>> = (0..n)
            .map(|s| udp_frame(amac, WIRE_MAC, s, 64 + (s as usize * 7) % 1400))
            .collect();
        let to_b: Vec<Vec<u8>> = (0..n).map(|s| udp_frame(bmac, WIRE_MAC, s, 1000)).collect();
        let before = lent(&mux);
        let mut both = to_a.clone();
        both.extend(to_b.iter().cloned());
        send_all(&mut w_tx, &pool, &both);
        assert_eq!(
            GuestProc::parse_recv(&a.cmd(&format!("recv {n} 10000")))[0],
            (n, digest(&to_a))
        );
        assert_eq!(
            GuestProc::parse_recv(&b.cmd(&format!("recv {n} 10000")))[0],
            (n, digest(&to_b))
        );
        if round == 1 {
            assert_eq!(
                lent(&mux) - before,
                2 * n,
                "every frame written by the card into a guest buffer, none copied"
            );
        }
    }
    // Big frames to the wire leave from guest memory (a host copy of their headers first).
    assert_eq!(
        GuestProc::sent(&a.cmd(&format!("send 100 1200 {WIRE_MAC}"))),
        100
    );
    let (mut got, mut out) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    while got.len() < 100 && t0.elapsed() < Duration::from_secs(10) {
        if w_rx.rx_burst(&mut out, 32) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        got.extend(out.drain(..).map(|m| m.to_vec()));
    }
    let expect: Vec<Vec<u8>> = (0..100)
        .map(|s| udp_frame(WIRE_MAC, amac, s, 1200))
        .collect();
    assert_eq!(got, expect, "guest A's frames read by the card in place");
    let tx_lent: u64 = mux.pollers().iter().map(|p| p.tx_lent).sum();
    assert_eq!(tx_lent, 100);
    // Guests leave: their memory is taken back from the card with their buffers, and the
    // card never wrote or read outside what it was given.
    a.quit();
    b.quit();
    wait_for(10, "both guests gone", || {
        mux.guests().iter().all(|g| !g.attached)
    });
    let in_place = lent(&mux);
    let late: Vec<Vec<u8>> = (0..50).map(|s| udp_frame(amac, WIRE_MAC, s, 100)).collect();
    send_all(&mut w_tx, &pool, &late);
    std::thread::sleep(Duration::from_millis(100));
    let st = model_a.lock().stats;
    assert_eq!((st.rx_dma_faults, st.tx_errors), (0, 0), "{st:?}");
    assert_eq!(
        lent(&mux),
        in_place,
        "nothing lands in a gone guest's memory"
    );
}

/// The same maps over vfio-user, as the `host-mux` binary reaches a card served by
/// `ice-model-server`: guest memory handed to the server as an fd and an offset into it (the
/// second half of a memfd here), lent buffers in it filled by the card.
#[test]
fn guest_memory_reaches_a_card_behind_a_vfio_user_socket_at_an_offset_into_its_file() {
    use std::sync::Arc;
    use vdpdk_core::{DmaMemory, ExternalRegion, LentBuf};
    use vdpdk_pci::{PciDevice, VfioUserPci};

    let dir = TempDir::new("icezc-vfu");
    let sock = dir.0.join("e810.sock");
    let model = ice_model::E810Model::shared(ModelConfig::default());
    let (m2, s2) = (model.clone(), sock.clone());
    std::thread::spawn(move || ice_model_server::serve(m2, &s2));
    wait_for(10, "the card's socket", || sock.exists());
    let pci = Arc::new(VfioUserPci::connect(&sock).unwrap());
    let mut ice = IceDevice::probe(pci.clone()).unwrap();
    let pool = Mempool::new("rx", 1024, vdpdk_core::DEFAULT_BUF_SIZE).unwrap();
    let mut rxq = ice.setup_rx_queue(1, 64, &pool).unwrap();
    // "Guest memory": 256 KiB of a memfd; its second half is what gets mapped.
    let mem = DmaMemory::alloc_with("guest", 256 << 10, false).unwrap();
    let half = 128usize << 10;
    // SAFETY: a byte fill of our own fresh mapping.
    unsafe { std::ptr::write_bytes(mem.as_ptr(), 0xee, mem.len()) };
    // SAFETY: `half` is inside the mapping.
    let host = std::ptr::NonNull::new(unsafe { mem.as_ptr().add(half) }).unwrap();
    let r = ExternalRegion {
        fd: mem.fd(),
        offset: half as u64,
        len: half as u64,
        host,
    };
    pci.dma_map_external(&r, host.as_ptr() as u64).unwrap();
    let bufs: Vec<LentBuf> = (0..64u32)
        .map(|t| LentBuf {
            iova: host.as_ptr() as u64 + t as u64 * 2048,
            // SAFETY: 64 buffers of 2 KiB fill the 128 KiB half exactly.
            ptr: std::ptr::NonNull::new(unsafe { host.as_ptr().add(t as usize * 2048) }).unwrap(),
            len: 2048,
            tag: t,
        })
        .collect();
    // SAFETY: the buffers lie in `mem`, mapped for the card until the test ends.
    assert_eq!(unsafe { rxq.post_lent(&bufs) }, 64);
    let f = |s: u64| udp_frame(MacAddr::BROADCAST, WIRE_MAC, s, 200);
    // The ring's own buffers first, then lent ones.
    for s in 0..63 {
        assert!(model.lock().receive_on(1, &f(s)));
    }
    let mut own = Vec::new();
    assert_eq!(rxq.rx_burst(&mut own, 64), 63);
    for s in 100..110 {
        assert!(model.lock().receive_on(1, &f(s)), "frame {s}");
    }
    let mut lent = Vec::new();
    assert_eq!(rxq.rx_lent(&mut lent, 64), 10);
    for (k, d) in lent.iter().enumerate() {
        let mut back = vec![0u8; d.len as usize];
        // SAFETY: lent buffer `d.tag` lies in our own mapping; a byte copy.
        unsafe {
            std::ptr::copy_nonoverlapping(
                host.as_ptr().add(d.tag as usize * 2048),
                back.as_mut_ptr(),
                back.len(),
            )
        };
        assert_eq!((d.tag, back), (k as u32, f(100 + k as u64)));
    }
    assert_eq!(rxq.take_back_lent(), 54);
    pci.dma_unmap(host.as_ptr() as u64, half as u64).unwrap();
    assert_eq!(model.lock().stats.rx_dma_faults, 0);
}
