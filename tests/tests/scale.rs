//! Issue #5 acceptance: many guests on few cores. A host-mux process on the pair backend (its
//! far end reflects every frame) serves 64 guest processes with two pinned pollers.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use vdpdk_core::packet::udp_frame;
use vdpdk_core::MacAddr;

const GUESTS: usize = 64;

fn guest_mac(i: usize) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0x10, i as u8])
}

struct MuxProc(Child);
impl Drop for MuxProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

fn stats(sock: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vdpdk-test-mux"))
        .arg("--stats")
        .arg(sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sixty_four_guests_on_two_cores_fixed_threads_own_traffic_idle_cost() {
    let dir = TempDir::new("scale");
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let cpu_list: Vec<String> = (0..cpus).map(|c| c.to_string()).collect();
    let mut cfg = format!(
        "[backend]\nkind = \"pair\"\n[mux]\nstats_socket = \"{}\"\n[[cluster]]\ncpus = [{}]\n",
        dir.0.join("stats.sock").display(),
        cpu_list.join(", ")
    );
    for i in 0..GUESTS {
        cfg += &format!(
            "[[vm]]\nname = \"vm{i}\"\nsocket = \"{}\"\nmac = \"{}\"\n",
            dir.sock(&format!("vm{i}")).display(),
            guest_mac(i)
        );
    }
    let cfg_path = dir.0.join("mux.toml");
    std::fs::File::create(&cfg_path)
        .unwrap()
        .write_all(cfg.as_bytes())
        .unwrap();
    let mux = MuxProc(
        Command::new(env!("CARGO_BIN_EXE_vdpdk-test-mux"))
            .args([
                "--config",
                cfg_path.to_str().unwrap(),
                "--stats-interval",
                "0",
            ])
            .spawn()
            .unwrap(),
    );
    let pid = mux.0.id();
    let stats_sock = dir.0.join("stats.sock");
    // The stats thread starts last, so an answer on its socket means every thread is up (the
    // socket file itself exists earlier: host-mux binds every socket before starting threads).
    wait_for(60, "host-mux up", || {
        stats_sock.exists()
            && host_mux::query_stats(&stats_sock)
                .is_ok_and(|v| v["guests"].as_array().is_some_and(|g| g.len() == GUESTS))
    });
    let threads_before = threads_of(pid);

    let mut guests: Vec<GuestProc> = (0..GUESTS)
        .map(|i| GuestProc::spawn_with(&dir.sock(&format!("vm{i}")), 1, 256))
        .collect();
    assert_eq!(
        threads_of(pid),
        threads_before,
        "attaching 64 guests created threads"
    );

    // Idle: 64 guests attached, no traffic.
    std::thread::sleep(Duration::from_millis(500));
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let idle = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
    println!(
        "host-mux idle with {GUESTS} guests: {:.2}% of one core over 10 s",
        idle * 100.0
    );
    // A poller that failed to sleep would burn a whole core (100%); an idle host-mux costs
    // well under 1% on a quiet machine. The bound is loose so that a loaded machine (where
    // every wake-up costs more) cannot fail it; the number itself is printed above.
    assert!(
        idle < 0.10,
        "idle host-mux used {:.2}% of a core",
        idle * 100.0
    );

    // Traffic: every guest sends 100 frames; the reflector returns them to their sender only.
    let far = MacAddr([0x02, 0, 0, 0, 0xee, 0xee]);
    for g in guests.iter_mut() {
        g.start(&format!("send 100 128 {far}"));
    }
    for g in guests.iter_mut() {
        assert_eq!(GuestProc::sent(&g.answer()), 100);
    }
    for g in guests.iter_mut() {
        g.start("recv 100 20000");
    }
    for (i, g) in guests.iter_mut().enumerate() {
        let expect: Vec<Vec<u8>> = (0..100)
            .map(|s| udp_frame(guest_mac(i), far, s, 128))
            .collect();
        let r = GuestProc::parse_recv(&g.answer());
        assert_eq!(
            r[0],
            (100, digest(&expect)),
            "guest {i} got exactly its own frames back"
        );
    }
    let snap = stats(&stats_sock);
    for (i, g) in snap["guests"].as_array().unwrap().iter().enumerate() {
        assert_eq!(g["stats"]["rx_packets"], 100, "vm{i}");
        assert_eq!(g["stats"]["tx_packets"], 100, "vm{i}");
        assert_eq!(g["stats"]["rx_no_desc"], 0, "vm{i}");
    }
    let pollers = snap["pollers"].as_array().unwrap();
    assert_eq!(pollers.len(), if cpus >= 2 { 2 } else { 1 }, "{pollers:?}");
    // Each poller thread is pinned to its cluster's core.
    for (i, p) in pollers.iter().enumerate() {
        let name = format!("poll-{}", p["name"].as_str().unwrap());
        let cpus_allowed = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| {
                let t = t.unwrap().path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                (comm.trim() == name).then(|| std::fs::read_to_string(t.join("status")).unwrap())
            })
            .next()
            .unwrap_or_else(|| panic!("no thread {name}"))
            .lines()
            .find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap();
        assert_eq!(cpus_allowed, i.min(cpus - 1).to_string(), "{name} pinned");
    }
    assert_eq!(threads_of(pid), threads_before, "traffic created threads");
    for g in guests.drain(..) {
        g.quit();
    }
    wait_for(10, "all guests detached", || {
        stats(&stats_sock)["guests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["attached"] == false)
    });
    assert_eq!(
        threads_of(pid),
        threads_before,
        "detaching changed the thread count"
    );
}
