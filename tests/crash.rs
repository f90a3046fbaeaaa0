//! Crash safety: the agent is killed (abort, no cleanup) at every point where state
//! changes and at random points of the image write; afterwards the boot environment and
//! the status parse, the booted slot is still primary unless the switch completed, no slot
//! is marked good that was not fully written and verified, and a retried install succeeds.
//! Needs the `failpoints` feature (scripts/test.sh enables it).
#![cfg(feature = "failpoints")]

mod common;
use common::device::{grub_list, Device};
use common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const IMAGE: usize = 5 << 20; // five 1 MiB write chunks

fn kill_at(point: &str, bundle: &Path) {
    let d = Device::new(false);
    let image = pseudo_random(IMAGE, 7);
    let out = Command::new(BIN)
        .arg("--conf")
        .arg(&d.conf)
        .args(["--override-boot-slot", "A", "install"])
        .arg(bundle)
        .env("HENB_FAILPOINT", point)
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(6), "{point} was not reached: {}", String::from_utf8_lossy(&out.stderr));
    // What the next boot and the next agent see.
    let env = grub_list(&d); // grub-editenv must parse it
    let status = d.cli(&["status", "--json"]);
    assert!(status.status.success(), "{point}: status does not load: {}", String::from_utf8_lossy(&status.stderr));
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let slot = std::fs::read(d.w.path("slotB")).unwrap();
    let complete = slot[..IMAGE] == image[..];
    let untouched = slot.iter().all(|b| *b == 0);
    let b_good = env.contains("B_OK=1\n") && env.contains("B_TRY=0\n");
    assert!(!b_good || complete || untouched, "{point}: B is marked good but half written\n{env}");
    match s["primary"].as_str() {
        Some("A") => {}
        Some("B") => assert!(complete && b_good, "{point}: B boots next but is not complete"),
        other => panic!("{point}: primary {other:?}\n{env}"),
    }
    if s["primary"] == "B" {
        assert_eq!(s["pending"]["bootname"], "B", "{point}: switched without a pending confirmation");
    }
    // A retried install succeeds.
    let (code, out) = d.install(bundle);
    assert_eq!(code, 0, "{point}: retry failed: {out}");
    assert_eq!(std::fs::read(d.w.path("slotB")).unwrap()[..IMAGE], image[..]);
    assert!(grub_list(&d).contains("ORDER=B A\n"));
}

#[test]
fn killed_at_every_state_change_and_20_random_points_of_the_write() {
    let w = Work::new();
    let c = w.content("c", IMAGE, "");
    let bundle = w.bundle("verity", &c, &["signer-rsa"], "u.raucb", &[]);
    let mut points: Vec<String> =
        ["install.leased", "install.marked-bad", "install.written", "install.pending", "install.switched"]
            .map(String::from)
            .to_vec();
    // Every atomic file replacement of an install, before and after its rename: grubenv
    // (mark bad), status (Downloading), status (pending), grubenv (switch), status (result).
    for n in 1..=5 {
        points.push(format!("fsutil.before-rename@{n}"));
        points.push(format!("fsutil.after-rename@{n}"));
    }
    let mut seed = 0x5eed_u64;
    for _ in 0..20 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        points.push(format!("install.write@{}", 1 + (seed >> 33) % 5));
    }
    for p in &points {
        kill_at(p, &bundle);
    }
}

/// Killed inside the confirmation that raises the anti-rollback minimum: after the raise
/// and before the other slot (now below it) leaves the bootloader's choice, and after
/// each atomic replacement in it. The next boot-check finishes the job: the old slot is
/// marked bad, cannot be made primary, and the confirmed slot stays primary.
#[test]
fn killed_while_the_minimum_rises_the_old_slot_still_leaves() {
    let w = Work::new();
    let bundle = |name: &str, sv: u32| {
        let c = w.content(&format!("c-{name}"), 200_000, &format!("\n[meta.anti-rollback]\nsecurity-version={sv}\n"));
        w.bundle("verity", &c, &["signer-rsa"], name, &[])
    };
    let (v1, v5) = (bundle("v1.raucb", 1), bundle("v5.raucb", 5));
    let ok = |o: std::process::Output, what: &str| {
        assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let mut points = vec!["confirm.raised".to_string(), "confirm.retired".to_string()];
    for n in 1..=3 {
        points.push(format!("fsutil.after-rename@{n}"));
    }
    for point in &points {
        let d = Device::new(false);
        assert_eq!(d.install(&v1).0, 0);
        ok(d.cli_as("B", &["mark", "good"]), "mark good on B");
        ok(d.cli_as("B", &["install", v5.to_str().unwrap()]), "install v5 into A");
        let o = d.cmd_as("A", &["mark", "good"]).env("HENB_FAILPOINT", point).output().unwrap();
        if o.status.signal() != Some(6) {
            // Reached no such point (fewer replacements): the confirmation completed.
            assert!(o.status.success(), "{point}: {}", String::from_utf8_lossy(&o.stderr));
        }
        // The next boot of A: boot-check, then the confirmation again.
        ok(d.cli_as("A", &["boot-check"]), "boot-check on A");
        ok(d.cli_as("A", &["mark", "good"]), "mark good on A again");
        let env = grub_list(&d);
        assert!(env.contains("B_OK=0\n") && env.contains("ORDER=A B\n"), "{point}: {env}");
        let o = d.cli_as("A", &["mark", "active", "other"]);
        assert_eq!(o.status.code(), Some(1), "{point}: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&d.cli(&["security-version", "--json"]).stdout).unwrap();
        assert_eq!(v["minimum-security-version"], 5, "{point}");
    }
}
