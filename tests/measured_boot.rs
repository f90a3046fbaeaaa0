//! Measured boot (R5), end to end on a real swtpm: the package's reference values are
//! committed to the policy index before the switch; a TPM reset stands in for the reboot
//! and the test extends PCRs 8 and 9 the way GRUB would (tpm2_pcrextend, a second TPM
//! client); a secret sealed to PolicyAuthorizeNV(index) follows the slots that measure as
//! approved, and nothing else.

mod common;
use common::bus::{cwmp_call, Bus, Service};
use common::device::{grub_list, Device};
use common::tpmproxy;
use common::*;
use henb_update::tpm::policy;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What one boot of a slot extends: (pcr, event digest).
#[derive(Clone, Copy)]
struct Boot {
    pcr8: [u8; 32],
    pcr9: [u8; 32],
}

fn event(seed: u64) -> [u8; 32] {
    pseudo_random(32, seed).try_into().unwrap()
}

/// GRUB's measurements of slot A and B: commands/command line (8) differ per slot, the
/// files read (9) are the same image.
const A: u64 = 100;
const B: u64 = 200;
fn boot_of(slot: u64) -> Boot {
    Boot { pcr8: event(slot), pcr9: event(9) }
}

/// The final value of a PCR after one extend from zero.
fn final_value(d: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(d);
    h.finalize().into()
}

fn reference_values(w: &Work) -> PathBuf {
    let p = w.path("reference-values");
    std::fs::write(
        &p,
        format!(
            "pcr-bank=sha256\npcr.9={}\npcr.8.A={}\npcr.8.B={}\ncomponent.kernel={}\n",
            hex::encode(final_value(&boot_of(A).pcr9)),
            hex::encode(final_value(&boot_of(A).pcr8)),
            hex::encode(final_value(&boot_of(B).pcr8)),
            hex::encode(boot_of(A).pcr9),
        ),
    )
    .unwrap();
    p
}

/// Reboot: TPM reset, then the bootloader's measurements.
fn reboot(d: &Device, boot: Boot) {
    d.t.reset();
    for (pcr, e) in [(8, boot.pcr8), (9, boot.pcr9)] {
        let ok = Command::new("tpm2_pcrextend")
            .arg(format!("{pcr}:sha256={}", hex::encode(e)))
            .args(["-T", &d.t.tcti()])
            .env("TSS2_LOG", "all+none")
            .status()
            .unwrap();
        assert!(ok.success(), "tpm2_pcrextend");
    }
}

fn seal(d: &Device, name: &str, secret: &[u8]) {
    let mut c = d.cmd_as("A", &["secret", "seal", name]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(secret).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "seal: {}", String::from_utf8_lossy(&o.stderr));
}

fn unseal(d: &Device, booted: &str) -> Output {
    d.cli_as(booted, &["secret", "unseal", "device-credential"])
}

fn ok(o: Output, what: &str) -> Output {
    assert!(o.status.success(), "{what}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    o
}

fn policy_show(d: &Device) -> serde_json::Value {
    serde_json::from_slice(&ok(d.cli(&["policy", "show", "--json"]), "policy show").stdout).unwrap()
}

/// The policy digest that approves exactly `slots`, computed here from the values.
fn expected_digest(slots: &[u64]) -> [u8; 32] {
    let branch = |s: u64| {
        let b = boot_of(s);
        policy::branch(&[(8, final_value(&b.pcr8)), (9, final_value(&b.pcr9))]).unwrap()
    };
    let mut v: Vec<[u8; 32]> = slots.iter().map(|s| branch(*s)).collect();
    if v.len() == 1 {
        v.push(v[0]);
    }
    policy::policy_or(&v).unwrap()
}

/// The index as tpm2-tools reads it.
fn index_via_tpm2_tools(d: &Device) -> Vec<u8> {
    let o = run_ok(
        Command::new("tpm2_nvread")
            .args(["0x01010300", "-C", "0x01010300", "-T", &d.t.tcti()])
            .env("TSS2_LOG", "all+none"),
    );
    o.stdout
}

/// A device booted from A (measured), measured boot initialized from its PCRs, the
/// device credential sealed, and a signed update carrying reference values for A and B.
fn provisioned(uboot: bool) -> (Device, PathBuf) {
    let d = Device::new(uboot);
    d.enable_measured_boot();
    reboot(&d, boot_of(A));
    ok(d.cli(&["policy", "init", "--from-pcrs", "8,9"]), "policy init");
    seal(&d, "device-credential", b"s3cret");
    assert_eq!(ok(unseal(&d, "A"), "unseal on A").stdout, b"s3cret");
    let c = d.w.content("c", 1_000_000, "");
    let rv = reference_values(&d.w);
    let p = d.w.bundle("verity", &c, &["signer-rsa"], "u.raucb", &["--reference-values", rv.to_str().unwrap()]);
    (d, p)
}

#[test]
fn update_confirmed_good_then_the_old_slot_can_no_longer_unseal() {
    let (d, p) = provisioned(false);
    assert_eq!(index_via_tpm2_tools(&d), policy::tpmt_ha(&expected_digest(&[A])));
    let (code, out) = d.install(&p);
    assert_eq!(code, 0, "{out}");
    // Committed before the switch: both slots approved, the index says so.
    let s = policy_show(&d);
    assert_eq!(s["approved"], serde_json::json!(["A", "B"]));
    assert_eq!(s["slots"]["B"]["origin"], "package");
    assert_eq!(index_via_tpm2_tools(&d), policy::tpmt_ha(&expected_digest(&[A, B])));
    assert!(grub_list(&d).contains("ORDER=B A\n"));
    // Still on A before the reboot: the secret is there.
    assert_eq!(ok(unseal(&d, "A"), "unseal on A before the reboot").stdout, b"s3cret");

    reboot(&d, boot_of(B));
    let o = ok(d.cli_as("B", &["boot-check", "--json"]), "boot-check on B");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["measured-as-expected"], true);
    assert_eq!(v["checked"], true);
    assert_eq!(ok(unseal(&d, "B"), "unseal on B").stdout, b"s3cret", "no re-sealing needed");
    ok(d.cli_as("B", &["mark", "good"]), "mark good");
    assert_eq!(policy_show(&d)["approved"], serde_json::json!(["B"]));
    assert_eq!(index_via_tpm2_tools(&d), policy::tpmt_ha(&expected_digest(&[B])));
    assert_eq!(ok(unseal(&d, "B"), "unseal on B after mark good").stdout, b"s3cret");
    let st: serde_json::Value = serde_json::from_slice(&d.cli_as("B", &["status", "--json"]).stdout).unwrap();
    assert!(st["pending"].is_null());
    assert_eq!(st["last-result"]["fault-code"], 0);

    // A's measurements can no longer unseal.
    reboot(&d, boot_of(A));
    let o = unseal(&d, "A");
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
}

#[test]
fn wrong_measurements_fail_the_check_and_the_fallback_is_reported() {
    let (d, p) = provisioned(true);
    assert_eq!(d.install(&p).0, 0);
    // B boots with a kernel command line nobody signed.
    reboot(&d, Boot { pcr8: event(666), ..boot_of(B) });
    let o = d.cli_as("B", &["boot-check", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["measured-as-expected"], false);
    assert_eq!(v["mismatches"][0]["pcr"], 8);
    assert_eq!(v["mismatches"].as_array().unwrap().len(), 1, "PCR 9 matches: only 8 is reported");
    assert!(String::from_utf8_lossy(&o.stderr).contains("PCR 8: expected"));
    // Marked bad for U-Boot: no attempts left (fw_printenv reads what we wrote).
    let env =
        String::from_utf8(run_ok(Command::new("fw_printenv").arg("-c").arg(d.w.path("fw_env.config"))).stdout).unwrap();
    assert!(env.contains("BOOT_B_LEFT=0\n"), "{env}");
    assert_eq!(unseal(&d, "B").status.code(), Some(1), "the secret does not unseal on a wrong measurement");
    assert_eq!(d.cli_as("B", &["mark", "good"]).status.code(), Some(1), "mark good refuses a mismatching slot");

    // The bootloader falls back to A.
    reboot(&d, boot_of(A));
    let o = ok(d.cli_as("A", &["boot-check", "--json"]), "boot-check on A after the fallback");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fell-back-from"]["slot"], "rootfs.1");
    assert_eq!(v["fell-back-from"]["command-key"], "ck-1");
    assert_eq!(ok(unseal(&d, "A"), "unseal on A after the fallback").stdout, b"s3cret");
    let st = d.status();
    assert_eq!(st["last-result"]["command-key"], "ck-1");
    assert_eq!(st["last-result"]["fault-code"], 9010);
    assert_eq!(st["last-result"]["kind"], "activation-failed");
    assert_eq!(st["slots"][1]["status"], "ActivationFailed");
    assert!(st["pending"].is_null());
    assert_eq!(policy_show(&d)["approved"], serde_json::json!(["A"]), "OR(old, old)");
    // A second boot-check reports the fallback only once.
    let v: serde_json::Value = serde_json::from_slice(&d.cli(&["boot-check", "--json"]).stdout).unwrap();
    assert!(v["fell-back-from"].is_null());
}

/// Killed between the policy commit and the switch, and between the switch and the
/// confirmation: after the reset the device boots a slot that can unseal.
#[cfg(feature = "failpoints")]
#[test]
fn power_cuts_around_the_policy_commit_leave_a_slot_that_unseals() {
    use std::os::unix::process::ExitStatusExt;
    for point in ["policy.recorded", "policy.written", "install.approved", "install.pending", "install.switched"] {
        let (d, p) = provisioned(false);
        let o =
            d.cmd_as("A", &["install", "--command-key", "ck-1"]).arg(&p).env("HENB_FAILPOINT", point).output().unwrap();
        assert_eq!(o.status.signal(), Some(6), "{point} not reached: {}", String::from_utf8_lossy(&o.stderr));
        let env = grub_list(&d);
        let next = if env.contains("ORDER=B A\n") && env.contains("B_OK=1\n") { "B" } else { "A" };
        assert_eq!(next == "B", point == "install.switched", "{point}: {env}");
        // The reboot: whichever slot the bootloader picks measures as approved.
        reboot(&d, boot_of(if next == "B" { B } else { A }));
        ok(d.cli_as(next, &["boot-check"]), &format!("{point}: boot-check on {next}"));
        assert_eq!(ok(unseal(&d, next), &format!("{point}: unseal on {next}")).stdout, b"s3cret");
        if next == "B" {
            // And if B had not come up, A would still unseal after the fallback.
            reboot(&d, boot_of(A));
            assert_eq!(ok(unseal(&d, "A"), &format!("{point}: unseal on A")).stdout, b"s3cret");
        }
        // A retried install completes.
        if next == "A" {
            let (code, out) = d.install(&p);
            assert_eq!(code, 0, "{point}: retry: {out}");
            assert_eq!(policy_show(&d)["approved"], serde_json::json!(["A", "B"]));
        }
    }
}

/// Killed inside `mark good` (policy being narrowed to OR(new, new)): after the reset the
/// new slot still unseals and the retried `mark good` completes.
#[cfg(feature = "failpoints")]
#[test]
fn power_cuts_in_mark_good_leave_the_new_slot_able_to_unseal() {
    use std::os::unix::process::ExitStatusExt;
    for point in ["policy.recorded", "policy.written"] {
        let (d, p) = provisioned(false);
        assert_eq!(d.install(&p).0, 0);
        reboot(&d, boot_of(B));
        ok(d.cli_as("B", &["boot-check"]), "boot-check");
        let o = d.cmd_as("B", &["mark", "good"]).env("HENB_FAILPOINT", point).output().unwrap();
        assert_eq!(o.status.signal(), Some(6), "{point} not reached: {}", String::from_utf8_lossy(&o.stderr));
        reboot(&d, boot_of(B));
        ok(d.cli_as("B", &["boot-check"]), &format!("{point}: boot-check"));
        assert_eq!(ok(unseal(&d, "B"), &format!("{point}: unseal on B")).stdout, b"s3cret");
        ok(d.cli_as("B", &["mark", "good"]), &format!("{point}: mark good retried"));
        assert_eq!(policy_show(&d)["approved"], serde_json::json!(["B"]));
        assert!(d.status()["pending"].is_null());
    }
}

#[test]
fn packages_without_or_with_altered_reference_values_are_refused() {
    let (d, _) = provisioned(false);
    let before = (d.boot_env(), std::fs::read(d.w.path("slotB")).unwrap(), index_via_tpm2_tools(&d));
    let unchanged = |what: &str| {
        assert_eq!(d.boot_env(), before.0, "{what}: boot environment changed");
        assert!(std::fs::read(d.w.path("slotB")).unwrap() == before.1, "{what}: slot B changed");
        assert_eq!(index_via_tpm2_tools(&d), before.2, "{what}: policy changed");
    };
    // No [meta.measured-boot]: refused by policy (9001).
    let c = d.w.content("c", 100_000, "");
    let p = d.w.bundle("verity", &c, &["signer-rsa"], "none.raucb", &[]);
    let (code, out) = d.install(&p);
    assert_eq!((code, out["error"]["cwmp-fault"].as_u64()), (1, Some(9001)), "{out}");
    assert_eq!(out["error"]["kind"], "no-reference-values");
    unchanged("no reference values");
    // Values changed after signing, in each format's signed copy (for verity the
    // manifest inside the CMS, the last copy in the file; the squashfs copy is covered by
    // the verity tree): 9019.
    let rv = reference_values(&d.w);
    for format in ["verity", "tr069"] {
        let p = d.w.bundle(
            format,
            &c,
            &["signer-rsa"],
            &format!("rv.{format}"),
            &["--reference-values", rv.to_str().unwrap()],
        );
        let mut bytes = std::fs::read(&p).unwrap();
        let at = rfind(&bytes, b"pcr.8.B=").unwrap_or_else(|| panic!("{format}: values not found in clear")) + 8;
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        let tampered = d.w.path(&format!("tampered.{format}"));
        std::fs::write(&tampered, &bytes).unwrap();
        let (code, out) = d.install(&tampered);
        assert_eq!((code, out["error"]["cwmp-fault"].as_u64()), (1, Some(9019)), "{format}: {out}");
        unchanged(format);
    }
}

fn rfind(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).rposition(|w| w == n)
}

#[test]
fn policy_init_from_the_factory_package() {
    let (d, p) = provisioned(false);
    // Re-provision from the signed package instead of the PCRs: the same values for A.
    ok(d.cli(&["policy", "init", "--package", p.to_str().unwrap()]), "policy init --package");
    let s = policy_show(&d);
    assert_eq!(s["slots"]["A"]["origin"], "package");
    assert_eq!(s["approved"], serde_json::json!(["A"]));
    assert_eq!(index_via_tpm2_tools(&d), policy::tpmt_ha(&expected_digest(&[A])));
    assert_eq!(ok(unseal(&d, "A"), "unseal").stdout, b"s3cret");
    // An unsigned or foreign package is refused.
    let foreign = d.w.path("foreign");
    std::fs::write(&foreign, b"not a package").unwrap();
    assert_ne!(d.cli(&["policy", "init", "--package", foreign.to_str().unwrap()]).status.code(), Some(0));
    assert_eq!(policy_show(&d)["approved"], serde_json::json!(["A"]), "a refused init changes nothing");
}

/// A verity bundle with reference values for A and B and this security version.
fn versioned(d: &Device, name: &str, security_version: u32) -> PathBuf {
    let c = d.w.content(
        &format!("c-{name}"),
        300_000,
        &format!("\n[meta.anti-rollback]\nsecurity-version={security_version}\n"),
    );
    let rv = reference_values(&d.w);
    d.w.bundle("verity", &c, &["signer-rsa"], name, &["--reference-values", rv.to_str().unwrap()])
}

fn minimum(d: &Device) -> u64 {
    let o = ok(d.cli(&["security-version", "--json"]), "security-version");
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["minimum-security-version"].as_u64().unwrap()
}

/// The review's finding 1: v1 (security version 1) in B, v2 (5) in A confirmed, so the
/// minimum is 5. a) a CWMP client's Mark("active", "other") over D-Bus; b) A's attempts
/// run out and GRUB falls back to B. Neither may make B primary, confirm it or approve
/// it; B still runs the agent and takes an install at or above 5 (recovery).
#[test]
fn a_slot_below_the_anti_rollback_minimum_is_never_made_primary_confirmed_or_approved() {
    let (d, _) = provisioned(false);
    let v1 = versioned(&d, "v1.raucb", 1);
    assert_eq!(d.install(&v1).0, 0);
    reboot(&d, boot_of(B));
    ok(d.cli_as("B", &["boot-check"]), "boot-check on B");
    ok(d.cli_as("B", &["mark", "good"]), "mark good on B");
    assert_eq!(minimum(&d), 1);
    let v2 = versioned(&d, "v2.raucb", 5);
    ok(d.cli_as("B", &["install", "--command-key", "ck-2", v2.to_str().unwrap()]), "install v2 into A");
    reboot(&d, boot_of(A));
    ok(d.cli_as("A", &["boot-check"]), "boot-check on A");
    ok(d.cli_as("A", &["mark", "good"]), "mark good on A");
    assert_eq!(minimum(&d), 5);
    // The minimum rose: B's branch left the policy and B left the bootloader's choice.
    assert_eq!(policy_show(&d)["approved"], serde_json::json!(["A"]));
    assert!(grub_list(&d).contains("B_OK=0\n"), "{}", grub_list(&d));
    assert_eq!(d.status()["slots"][1]["security-version"], 1);

    // a) Mark over D-Bus by the CWMP client (group cwmp), and the same on the command line.
    let env = d.boot_env();
    let bus = Bus::start();
    let svc = Service::start(&bus, &d.conf, "A", &[]);
    for (state, slot) in [("active", "other"), ("good", "other"), ("active", "B")] {
        let (done, _, err) =
            cwmp_call(&bus, "org.henb.Update1", "/org/henb/Update1", "org.henb.Update1", "Mark", &["ss", state, slot]);
        assert!(!done, "Mark({state}, {slot}) must be refused");
        assert!(err.contains("below the device's anti-rollback minimum 5"), "{err}");
    }
    drop(svc);
    for args in [["mark", "active", "other"], ["mark", "good", "B"]] {
        let o = d.cli(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("(below-minimum)"));
    }
    assert_eq!(d.boot_env(), env, "nothing reached the boot order");
    assert_eq!(policy_show(&d)["approved"], serde_json::json!(["A"]), "B was not approved again");

    // b) A's boot attempts run out: GRUB falls back to B without any call.
    run_ok(Command::new("grub-editenv").arg(d.w.path("grubenv")).args(["set", "A_OK=0", "A_TRY=0"]));
    reboot(&d, boot_of(B));
    let o = d.cli_as("B", &["boot-check", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["below-minimum"], serde_json::json!({"security-version": 1, "minimum": 5}));
    assert_eq!(v["measured-as-expected"], true, "B measures as its old values, and that is not enough");
    let o = d.cli_as("B", &["mark", "good"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(unseal(&d, "B").status.code(), Some(1), "B must not unseal");
    assert!(!policy_show(&d)["approved"].as_array().unwrap().contains(&serde_json::json!("B")));
    let st = d.cli_as("B", &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["last-result"]["kind"], "activation-failed");
    assert!(st["last-result"]["fault-string"].as_str().unwrap().contains("below the minimum 5"), "{st}");
    assert_eq!(minimum(&d), 5, "the minimum never goes down");

    // Recovery: B takes an install at or above the minimum, refuses one below it.
    let v4 = versioned(&d, "v4.raucb", 4);
    assert_eq!(d.cli_as("B", &["install", v4.to_str().unwrap()]).status.code(), Some(1), "below the minimum");
    let v6 = versioned(&d, "v6.raucb", 6);
    ok(d.cli_as("B", &["install", "--command-key", "ck-6", v6.to_str().unwrap()]), "recovery install into A");
    reboot(&d, boot_of(A));
    ok(d.cli_as("A", &["boot-check"]), "boot-check on A");
    ok(d.cli_as("A", &["mark", "good"]), "mark good on A");
    assert_eq!(minimum(&d), 6);
    assert_eq!(ok(unseal(&d, "A"), "unseal on A").stdout, b"s3cret");
}

/// Step 10: the measured-boot record guards sealed secrets, so a damaged one stays
/// fail-closed (nothing is approved or installed on its word) and its error names the
/// recovery, `policy init`, which works: secrets sealed again unseal, installs go on.
#[test]
fn a_damaged_measured_boot_record_fails_closed_and_names_its_recovery() {
    let (d, p) = provisioned(false);
    let rec = d.w.path("data").join("measured-boot.json");
    std::fs::write(&rec, b"{\"format\":1,\"slots\":{\"A\":").unwrap();
    let env = d.boot_env();
    let o = d.cli(&["policy", "show"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("policy init"), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, out) = d.install(&p);
    assert_eq!(code, 3, "{out}");
    assert_eq!(out["error"]["kind"], "measured-boot-record");
    assert!(out["error"]["message"].as_str().unwrap().contains("policy init"), "{out}");
    assert_eq!(d.boot_env(), env, "nothing switched");
    ok(d.cli(&["policy", "init", "--from-pcrs", "8,9"]), "policy init over a damaged record");
    assert!(std::fs::read_dir(d.w.path("data")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("measured-boot.json.damaged-")));
    seal(&d, "device-credential", b"again");
    assert_eq!(ok(unseal(&d, "A"), "unseal after policy init").stdout, b"again");
    assert_eq!(d.install(&p).0, 0);
}

/// `security-version --raise` enforces the new minimum at once, as a confirmation does:
/// an install of security version 3 waits in B (the policy approves A and B); raising
/// the minimum to 4 takes B out of the policy and the bootloader's choice, and reports
/// that the booted slot (A, no version: 0) is below it too. Not lowered, nothing else moves.
#[test]
fn raising_the_minimum_retires_and_unapproves_slots_below_it() {
    let (d, _) = provisioned(false);
    let v3 = versioned(&d, "v3.raucb", 3);
    assert_eq!(d.install(&v3).0, 0);
    assert_eq!(policy_show(&d)["approved"], serde_json::json!(["A", "B"]));
    assert!(grub_list(&d).contains("B_OK=1\n"), "{}", grub_list(&d));
    let o = d.cli(&["security-version", "--raise", "4", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["minimum-security-version"], 4);
    assert_eq!(v["booted-below-minimum"], 0, "{v}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("below the device's anti-rollback minimum 4"));
    assert_eq!(policy_show(&d)["approved"], serde_json::json!([]), "no slot below 4 keeps a branch");
    assert!(grub_list(&d).contains("B_OK=0\n"), "{}", grub_list(&d));
    assert_eq!(unseal(&d, "A").status.code(), Some(1), "A is below the minimum too");
    let o = d.cli_as("B", &["mark", "active", "B"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    // A TPM the device needs but cannot use (owner authorization unreadable) stops mark
    // and boot-check instead of counting the minimum as 0.
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    std::fs::write(&d.conf, conf.replace("[tpm]\n", "[tpm]\nowner-auth-file=/nonexistent/owner-auth\n")).unwrap();
    let env = d.boot_env();
    for args in [vec!["mark", "good"], vec!["mark", "active", "other"], vec!["boot-check"]] {
        let o = d.cli(&args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("owner authorization"), "{args:?}");
    }
    assert_eq!(d.boot_env(), env);
}

/// The review's finding 5: reference values for A and a common PCR 9, none for PCR 8 of
/// B. B would get a branch over PCR 9 only, so a changed kernel command line (PCR 8)
/// would unseal. Refused before a byte is written, naming the PCR.
#[test]
fn reference_values_that_do_not_cover_the_sealed_pcrs_are_refused() {
    let (d, _) = provisioned(false);
    let rv = d.w.path("partial-values");
    std::fs::write(
        &rv,
        format!(
            "pcr-bank=sha256\npcr.9={}\npcr.8.A={}\n",
            hex::encode(final_value(&boot_of(A).pcr9)),
            hex::encode(final_value(&boot_of(A).pcr8)),
        ),
    )
    .unwrap();
    let c = d.w.content("c-partial", 300_000, "");
    let p = d.w.bundle("verity", &c, &["signer-rsa"], "partial.raucb", &["--reference-values", rv.to_str().unwrap()]);
    let env = d.boot_env();
    let (code, out) = d.install(&p);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["error"]["kind"], "reference-values");
    assert_eq!(out["error"]["cwmp-fault"], 9001);
    assert!(out["error"]["message"].as_str().unwrap().contains("do not cover PCR 8"), "{out}");
    assert_eq!(d.boot_env(), env);
    assert!(std::fs::read(d.w.path("slotB")).unwrap().iter().all(|b| *b == 0), "nothing written");
    assert_eq!(policy_show(&d)["approved"], serde_json::json!(["A"]));
    // `[measured-boot] pcrs=` names the set explicitly: the same package, the same answer.
    let mut conf = std::fs::read_to_string(&d.conf).unwrap();
    conf.push_str("pcrs=8;9\n");
    std::fs::write(&d.conf, conf).unwrap();
    assert_eq!(d.install(&p).1["error"]["kind"], "reference-values");
}

/// Point the device's agent at `proxy` (and give it `owner_auth`, when set).
fn through(d: &Device, proxy: &tpmproxy::Proxy, owner_auth: Option<&Path>) -> String {
    let before = std::fs::read_to_string(&d.conf).unwrap();
    let mut tcti = format!("tcti={}", proxy.tcti());
    if let Some(a) = owner_auth {
        tcti.push_str(&format!("\nowner-auth-file={}", a.display()));
    }
    std::fs::write(&d.conf, before.replace(&format!("tcti={}", d.t.tcti()), &tcti)).unwrap();
    before
}

/// Step 11: a probe on the TPM bus (tests/common/tpmproxy.rs records every byte between
/// the agent and swtpm) sees neither the sealed secret (Create's sensitive data and
/// Unseal's answer travel encrypted in a salted session) nor the owner authorization
/// (an HMAC key, never a password), while the agent provisions, initializes measured
/// boot, seals, unseals and installs through it.
#[test]
fn the_secret_and_the_owner_authorization_never_cross_the_bus_in_clear() {
    let d = Device::new(false);
    let owner = "owner-passphrase-9c1e77";
    run_ok(Command::new("tpm2_changeauth").args(["-c", "owner", owner, "-T", &d.t.tcti()]).env("TSS2_LOG", "all+none"));
    let auth = d.w.path("owner-auth");
    std::fs::write(&auth, owner).unwrap();
    std::fs::set_permissions(&auth, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let proxy = tpmproxy::Proxy::start(d.t.port, None);
    through(&d, &proxy, Some(&auth));
    d.enable_measured_boot();
    reboot(&d, boot_of(A));
    ok(d.cli(&["policy", "init", "--from-pcrs", "8,9"]), "policy init");
    let secret = b"device-credential-5be0c8a1f2";
    seal(&d, "device-credential", secret);
    assert_eq!(ok(unseal(&d, "A"), "unseal through the probe").stdout, secret);
    let c = d.w.content("c", 100_000, "");
    let rv = reference_values(&d.w);
    let p = d.w.bundle("verity", &c, &["signer-rsa"], "u.raucb", &["--reference-values", rv.to_str().unwrap()]);
    assert_eq!(d.install(&p).0, 0, "install through the probe");
    let rec = proxy.recording();
    assert!(rec.len() > 20_000, "the probe saw the conversation ({} bytes)", rec.len());
    assert!(!tpmproxy::contains(&rec, secret), "the secret crossed the bus in clear");
    assert!(!tpmproxy::contains(&rec, &secret[..12]), "part of the secret crossed the bus in clear");
    assert!(!tpmproxy::contains(&rec, owner.as_bytes()), "the owner authorization crossed the bus in clear");
    // The probe does see what is public in clear: PCR 8 as `policy init` read it.
    let pcr8 = final_value(&boot_of(A).pcr8);
    assert!(tpmproxy::contains(&rec, &pcr8), "the recording holds the PCR values read");
}

/// Step 11, item 2: an empty owner authorization lets any process that can open the TPM
/// rewrite the policy index, so measured boot refuses it unless the configuration says
/// `[tpm] allow-empty-owner-auth=true`: no `owner-auth-file` is a configuration error
/// (exit 3, naming the key), an empty file is "could not check" (9002) at install, and
/// neither touches the boot order or the slots.
#[test]
fn measured_boot_refuses_an_empty_owner_authorization() {
    let (d, p) = provisioned(false);
    let allowed = std::fs::read_to_string(&d.conf).unwrap();
    assert!(allowed.contains("allow-empty-owner-auth=true\n"), "{allowed}");
    let env = d.boot_env();
    let slot_b = std::fs::read(d.w.path("slotB")).unwrap();
    // No owner-auth-file and nothing allowing an empty one: the configuration is refused.
    std::fs::write(&d.conf, allowed.replace("allow-empty-owner-auth=true\n", "")).unwrap();
    let o = d.cli(&["config", "check", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problem = &j["problems"][0];
    assert_eq!(problem["key"], "[tpm] owner-auth-file", "{j}");
    assert!(problem["what"].as_str().unwrap().contains("allow-empty-owner-auth"), "{j}");
    let o = d.cli(&["install", "--json", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("owner-auth-file"));
    // A file that holds nothing is an empty authorization as well.
    let empty = d.w.path("owner-auth-empty");
    std::fs::write(&empty, "\n").unwrap();
    std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let conf = allowed.replace("allow-empty-owner-auth=true\n", &format!("owner-auth-file={}\n", empty.display()));
    std::fs::write(&d.conf, conf).unwrap();
    let (rc, out) = d.install(&p);
    assert_eq!(rc, 3, "{out}");
    assert_eq!(out["error"]["cwmp-fault"], 9002, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("allow-empty-owner-auth"), "{out}");
    for args in [vec!["boot-check"], vec!["mark", "good"]] {
        let o = d.cli(&args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(d.boot_env(), env, "the boot order is untouched");
    assert_eq!(std::fs::read(d.w.path("slotB")).unwrap(), slot_b, "the inactive slot is untouched");
    // Allowed again (a development image): the same package installs.
    std::fs::write(&d.conf, &allowed).unwrap();
    assert_eq!(d.install(&p).0, 0);
}

/// Step 11: the probe flips one byte of the TPM's answer to an NV read of the root
/// certificate, the anti-rollback counter and the policy index. The salted session's
/// response HMAC no longer verifies: each time the agent says "could not check" (exit
/// 3, 9002), and the boot environment, the slots and the status stay as they were.
#[test]
fn a_changed_tpm_answer_is_could_not_check_and_changes_nothing() {
    use std::sync::Arc;
    let (d, p) = provisioned(false);
    let slot_b = || Sha256::digest(std::fs::read(d.w.path("slotB")).unwrap());
    for (what, index) in [("root", 0x0101_0100u32), ("counter", 0x0101_0200), ("policy index", 0x0101_0300)] {
        let tamper: Arc<tpmproxy::Tamper> = Arc::new(move |cmd, resp| {
            if tpmproxy::command_code(cmd) == tpmproxy::TPM_CC_NV_READ
                && tpmproxy::handle(cmd, 1) == Some(index)
                && tpmproxy::response_code(resp) == 0
                && resp.len() > 17
            {
                resp[17] ^= 0x01; // a data byte of the TPM2B_MAX_NV_BUFFER
            }
        });
        let proxy = tpmproxy::Proxy::start(d.t.port, Some(tamper));
        let conf = through(&d, &proxy, None);
        let (env, status, b) = (d.boot_env(), d.status(), slot_b());
        let (code, out) = d.install(&p);
        assert_eq!(code, 3, "{what}: {out}");
        assert_eq!(out["error"]["cwmp-fault"], 9002, "{what}: {out}");
        let msg = out["error"]["message"].as_str().unwrap();
        assert!(msg.contains("TPM NV_Read of index") || msg.contains("TPM NV_ReadPublic"), "{what}: {msg}");
        assert_eq!(d.boot_env(), env, "{what}: boot environment changed");
        assert_eq!(slot_b(), b, "{what}: slot B written");
        std::fs::write(&d.conf, conf).unwrap();
        // The agent's session is flushed even though ESAPI refused to go on with it
        // (swtpm has no resource manager: a leaked session stays, and there are three).
        let o = run_ok(Command::new("tpm2_getcap").args(["handles-loaded-session", "-T", &d.t.tcti()]));
        assert!(o.stdout.is_empty(), "{what}: sessions left loaded: {}", String::from_utf8_lossy(&o.stdout));
        let after = d.status();
        assert_eq!(after["pending"], status["pending"], "{what}");
        // Refused before the install began (nothing recorded) or recorded as 9002.
        let last = &after["last-result"];
        assert!(*last == status["last-result"] || last["fault-code"] == 9002, "{what}: {last}");
    }
    // Without the probe the same install goes through.
    let (code, out) = d.install(&p);
    assert_eq!(code, 0, "{out}");
}

/// Step 11: answers a probe can forge without breaking an HMAC. An error response has
/// no session area, so "this index is not defined" for the anti-rollback counter can be
/// forged at will: confirming a slot then is "could not check", never a minimum of 0.
/// PCR_Read has no authorization; it runs in an audit session, so a changed PCR value
/// is "could not check" for boot-check, not a mismatch that marks the slot bad.
#[test]
fn forged_tpm_answers_on_the_confirmation_path_are_could_not_check() {
    use std::sync::Arc;
    let (d, p) = provisioned(false);
    assert_eq!(d.install(&p).0, 0);
    reboot(&d, boot_of(B));
    const TPM_CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
    const TPM_CC_PCR_READ: u32 = 0x0000_017E;
    let undefined_counter: Arc<tpmproxy::Tamper> = Arc::new(|cmd, resp| {
        if tpmproxy::command_code(cmd) == TPM_CC_NV_READ_PUBLIC && tpmproxy::handle(cmd, 0) == Some(0x0101_0200) {
            *resp = vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x8B]; // TPM_RC_HANDLE
        }
    });
    let changed_pcr: Arc<tpmproxy::Tamper> = Arc::new(|cmd, resp| {
        if tpmproxy::command_code(cmd) == TPM_CC_PCR_READ && tpmproxy::response_code(resp) == 0 && resp.len() > 60 {
            // header 10, parameterSize 4, then the parameters: flip their last byte (a
            // PCR value).
            let size = u32::from_be_bytes(resp[10..14].try_into().unwrap()) as usize;
            resp[14 + size - 1] ^= 0x01;
        }
    });
    for (what, tamper, args) in [
        ("counter forged undefined", undefined_counter, &["mark", "good"][..]),
        ("PCR value changed", changed_pcr, &["boot-check", "--json"][..]),
    ] {
        let proxy = tpmproxy::Proxy::start(d.t.port, Some(tamper));
        let conf = through(&d, &proxy, None);
        let (env, status) = (d.boot_env(), d.status());
        let o = d.cli_as("B", args);
        assert_eq!(o.status.code(), Some(3), "{what}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(d.boot_env(), env, "{what}: boot environment changed");
        std::fs::write(&d.conf, conf).unwrap();
        assert_eq!(d.status()["pending"], status["pending"], "{what}: the confirmation is still pending");
    }
    // Without the probe B is confirmed.
    ok(d.cli_as("B", &["boot-check", "--json"]), "boot-check on B");
    ok(d.cli_as("B", &["mark", "good"]), "mark good");
}

/// Step 11: the probe answers the salt key's CreatePrimary with another public key, as
/// an interposer would to learn the session salt. Here the change is caught by the
/// response HMAC of the (unsalted) session that creates the key; an interposer that
/// recomputes that HMAC (its key is public) is caught by the pin, shown with a whole
/// other TPM in place of the first: its key is consistent, only the pin tells.
#[test]
fn a_substituted_salt_key_is_refused() {
    use std::sync::Arc;
    let (d, p) = provisioned(false);
    let pin = d.w.path("data").join("tpm-salt-key.name");
    let pinned = std::fs::read_to_string(&pin).expect("the salt key is pinned at provisioning");
    let tamper: Arc<tpmproxy::Tamper> = Arc::new(|cmd, resp| {
        const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
        if tpmproxy::command_code(cmd) == tpmproxy::TPM_CC_CREATE_PRIMARY
            && tpmproxy::handle(cmd, 0) == Some(TPM_RH_ENDORSEMENT)
            && tpmproxy::response_code(resp) == 0
        {
            // header 10, objectHandle 4, parameterSize 4, outPublic (size 2, TPMT_PUBLIC);
            // the ECC point's x coordinate starts 26 bytes into the TPMT_PUBLIC.
            let size = u16::from_be_bytes([resp[18], resp[19]]) as usize;
            let public = 20..20 + size;
            resp[20 + 26 + 5] ^= 0x40;
            let name = [&[0x00, 0x0b][..], &Sha256::digest(&resp[public])].concat();
            // The name is the last TPM2B before the 5-byte password-session response.
            let at = resp.len() - 5 - name.len();
            resp[at..at + name.len()].copy_from_slice(&name);
        }
    });
    let proxy = tpmproxy::Proxy::start(d.t.port, Some(tamper));
    through(&d, &proxy, None);
    let env = d.boot_env();
    let (code, out) = d.install(&p);
    assert_eq!(code, 3, "{out}");
    assert_eq!(out["error"]["cwmp-fault"], 9002, "{out}");
    let msg = out["error"]["message"].as_str().unwrap();
    assert!(msg.contains("CreatePrimary (salt key)"), "{msg}");
    assert_eq!(d.boot_env(), env);
    let o = unseal(&d, "A");
    assert_eq!(
        o.status.code(),
        Some(3),
        "unseal through a substituted salt key: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&pin).unwrap(), pinned, "the pin is not rewritten");
    // A whole other TPM in its place (its keys are consistent, so only the pin tells).
    let other = common::swtpm::Swtpm::start();
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    std::fs::write(&d.conf, conf.replace(&format!("tcti={}", proxy.tcti()), &format!("tcti={}", other.tcti())))
        .unwrap();
    let (code, out) = d.install(&p);
    assert_eq!(code, 3, "{out}");
    let msg = out["error"]["message"].as_str().unwrap();
    assert!(msg.contains("is not the key pinned in"), "{msg}");
    assert_eq!(d.boot_env(), env);
    assert_eq!(std::fs::read_to_string(&pin).unwrap(), pinned, "the pin is not rewritten");
    // A pin the field damaged guards like the measured-boot record: fail-closed, and the
    // error names the recovery, which works.
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    std::fs::write(&d.conf, conf.replace(&format!("tcti={}", other.tcti()), &format!("tcti={}", d.t.tcti()))).unwrap();
    std::fs::write(&pin, "\0\0garbage").unwrap();
    let (code, out) = d.install(&p);
    assert_eq!(code, 3, "{out}");
    let msg = out["error"]["message"].as_str().unwrap();
    assert!(msg.contains("remove the file"), "{msg}");
    std::fs::remove_file(&pin).unwrap();
    let (code, out) = d.install(&p);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read_to_string(&pin).unwrap(), pinned, "the same key is pinned again");
}
