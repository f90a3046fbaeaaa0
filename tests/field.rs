//! Step 10: what the field does to a device. Damaged state files, bootloader environments
//! written by other tools in other layouts, configuration typos. Each case goes through
//! the real binary; bootloader results are read back by the real tools (grub-editenv,
//! fw_printenv).

mod common;
use common::device::{Device, SLOT};
use common::*;
use std::path::Path;
use std::process::Command;

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

fn damaged_copies(data: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("status.json.damaged-"))
        .collect();
    v.sort();
    v
}

/// Finding 1: a damaged status file (a storage fault, a full disk, a manual edit) never
/// stops the next update. For each kind of damage: `status`, `install` of a good package
/// and `mark good` succeed; the damaged bytes are kept beside it; the reset is reported
/// once as the last result; and a slot the agent has not written since is not activated
/// on the strength of what the lost file said.
#[test]
fn a_damaged_status_file_never_stops_the_next_update() {
    let d = Device::new(false);
    let c = d.w.content("c", 200_000, "");
    let p = d.w.bundle("verity", &c, &["signer-rsa"], "u.raucb", &[]);
    let data = d.w.path("data");
    let status = data.join("status.json");
    let cases: Vec<(&str, Box<dyn Fn(&[u8])>)> = vec![
        ("empty", Box::new(|_| std::fs::write(&status, b"").unwrap())),
        ("cut to 37 bytes", Box::new(|good| std::fs::write(&status, &good[..37]).unwrap())),
        ("{}", Box::new(|_| std::fs::write(&status, b"{}").unwrap())),
        ("a newer format", Box::new(|_| std::fs::write(&status, br#"{"format":99,"slots":{}}"#).unwrap())),
        (
            "format 0",
            Box::new(|_| {
                std::fs::write(&status, br#"{"format":0,"slots":{},"last-result":null,"pending":null}"#).unwrap()
            }),
        ),
        ("garbage bytes", Box::new(|_| std::fs::write(&status, pseudo_random(600, 5)).unwrap())),
        (
            "wrong types",
            Box::new(|_| std::fs::write(&status, br#"{"format":2,"slots":[1,2],"last-result":7}"#).unwrap()),
        ),
        (
            "a directory",
            Box::new(|_| {
                std::fs::remove_file(&status).unwrap();
                std::fs::create_dir(&status).unwrap();
                std::fs::write(status.join("x"), b"x").unwrap();
            }),
        ),
        (
            "a symbolic link",
            Box::new(|_| {
                std::fs::remove_file(&status).unwrap();
                std::os::unix::fs::symlink("/etc/hostname", &status).unwrap();
            }),
        ),
    ];
    for (what, damage) in &cases {
        assert_eq!(d.install(&p).0, 0, "{what}: a normal install first");
        let good = std::fs::read(&status).unwrap();
        damage(&good);
        let before = std::fs::symlink_metadata(&status).map(|m| m.file_type().is_dir()).unwrap();
        let damaged_bytes = if before { None } else { std::fs::read(&status).ok() };

        let o = d.cli(&["status", "--json"]);
        assert!(o.status.success(), "{what}: status: {}", String::from_utf8_lossy(&o.stderr));
        let s = json(&o);
        assert_eq!(s["last-result"]["kind"], "status-reset", "{what}: reported: {s}");
        assert_eq!(s["last-result"]["fault-code"], 9002, "{what}");
        let copies = damaged_copies(&data);
        let kept = copies.last().unwrap_or_else(|| panic!("{what}: the damaged copy is kept"));
        if let Some(b) = &damaged_bytes {
            if !std::fs::symlink_metadata(kept).unwrap().file_type().is_symlink() {
                assert_eq!(&std::fs::read(kept).unwrap(), b, "{what}: its bytes, unchanged");
            }
        }
        assert!(copies.len() <= 3, "{what}: at most three damaged copies are kept: {copies:?}");
        // Reported once: a second status does not reset again.
        let n = damaged_copies(&data).len();
        assert!(d.cli(&["status"]).status.success());
        assert_eq!(damaged_copies(&data).len(), n, "{what}: healed once");

        // B was written before the damage, but what the file said about it is gone.
        let o = d.cli(&["mark", "active", "other"]);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("slot-unknown"), "{what}");

        let (code, out) = d.install(&p);
        assert_eq!(code, 0, "{what}: install after the damage: {out}");
        let o = d.cli(&["mark", "good"]);
        assert!(o.status.success(), "{what}: mark good: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(d.status()["slots"][1]["status"], "Available", "{what}");
        std::fs::write(d.w.path("slotB"), vec![0u8; SLOT as usize]).unwrap();
    }
}

fn run(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout).unwrap()
}
