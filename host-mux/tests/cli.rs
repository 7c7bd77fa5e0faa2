//! The host-mux binary: runs on a config file and exits cleanly; refuses bad configs naming
//! the bad key.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_host-mux"))
}

#[test]
fn runs_the_pair_config_and_exits_cleanly() {
    let dir = std::env::temp_dir().join(format!("vdpdk-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("mux.toml");
    std::fs::write(
        &cfg,
        format!(
            "[backend]\nkind = \"pair\"\n[[vm]]\nname = \"vm1\"\nsocket = \"{}/vm1.sock\"\nmac = \"02:00:00:00:00:01\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = bin()
        .env("RUST_LOG", "info")
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--duration",
            "1",
            "--stats-interval",
            "0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("vm1: serving"), "{err}");
    assert!(!dir.join("vm1.sock").exists(), "socket removed at exit");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_config_names_the_key() {
    let dir = std::env::temp_dir().join(format!("vdpdk-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        "[backend]\nkind = \"pair\"\n[[vm]]\nname = \"vm1\"\nsocket = \"/tmp/x.sock\"\nmac = \"02:00:00:00:00\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("vm[0].mac"), "{err}");
    let out = bin()
        .args(["--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
    let help = bin().arg("--help").output().unwrap();
    let h = String::from_utf8_lossy(&help.stdout);
    assert!(h.contains("--config") && h.contains("vfio-user-pci"), "{h}");
    std::fs::remove_dir_all(&dir).unwrap();
}
