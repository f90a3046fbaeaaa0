//! The TrE (R3): operator roots in TPM NV indices, rollover, anti-rollback, on a real
//! swtpm per test; tpm2-tools as a second reader.

mod common;
use common::swtpm::Swtpm;
use common::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cli(conf: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--conf").arg(conf).args(args).output().unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn provision(t: &Swtpm, roots: &[&str], extra: &[&str]) -> String {
    let mut args = vec!["trust".to_string(), "provision".into()];
    for r in roots {
        args.push("--root".into());
        args.push(cert(r).display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(cli(&t.conf(""), &refs))
}

fn der(pem: &Path) -> Vec<u8> {
    ok(Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(pem).output().unwrap());
    Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(pem).output().unwrap().stdout
}

fn list(t: &Swtpm) -> serde_json::Value {
    serde_json::from_str(&ok(cli(&t.conf(""), &["trust", "list", "--json"]))).unwrap()
}

fn package(w: &Work, signer: &str, name: &str, sv: Option<u32>) -> PathBuf {
    let extra = sv.map(|v| format!("\n[meta.anti-rollback]\nsecurity-version={v}\n")).unwrap_or_default();
    let c = w.content(&format!("c-{name}"), 20_000, &extra);
    w.bundle("verity", &c, &[signer], name, &[])
}

#[test]
fn packages_verify_against_roots_held_in_the_tpm() {
    let t = Swtpm::start();
    let w = Work::new();
    provision(&t, &["root", "root-ec"], &[]);
    let roots = list(&t);
    assert_eq!(roots.as_array().unwrap().len(), 2);
    assert_eq!(roots[0]["index"], "0x01010100");
    assert_eq!(roots[0]["sha256"], sha256_hex(&der(&cert("root"))));
    let a = package(&w, "signer-rsa", "a.raucb", None); // release-ca -> root
    let b = package(&w, "signer-ec-root", "b.raucb", None); // directly under root-ec
    let conf = t.conf("");
    for p in [&a, &b] {
        let r = info(&conf, p, &[]);
        assert_eq!(r.ok()["trust-source"], "tpm");
    }
    // Remove a root: what it signed is refused, the rest still verifies.
    ok(cli(&conf, &["trust", "retire", roots[1]["sha256"].as_str().unwrap()]));
    assert_eq!(info(&conf, &b, &[]).err(), ("untrusted".into(), 9019));
    info(&conf, &a, &[]).ok();
    // The last root cannot be retired.
    assert!(!cli(&conf, &["trust", "retire", "0x01010100"]).status.success());
    // A keyring named explicitly is used instead, and says so.
    let r = info(&conf, &b, &["--keyring", pki().join("keyring.pem").to_str().unwrap()]);
    assert!(r.ok()["trust-source"].as_str().unwrap().starts_with("keyring:"));
}

#[test]
fn a_locked_root_is_frozen_and_tpm2_tools_reads_it_back() {
    let t = Swtpm::start();
    provision(&t, &["root"], &["--lock"]);
    let roots = list(&t);
    assert_eq!(roots[0]["locked"], true);
    // Owner-authorized write: the TPM itself answers NV_LOCKED.
    let mut tpm =
        henb_update::tpm::Tpm::open(henb_update::tpm::TpmConfig { tcti: t.tcti(), ..Default::default() }).unwrap();
    let e = tpm.nv_write(0x0101_0100, b"attacker").unwrap_err();
    assert!(e.is_locked(), "{e}");
    drop(tpm);
    // tpm2_nvread (a peer) reads the same DER, without authorization.
    let out = t.dir().join("root.der");
    let r = Command::new("tpm2_nvread")
        .args(["-T", &t.tcti(), "0x01010100", "-C", "0x01010100", "-o"])
        .arg(&out)
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), der(&cert("root")));
    // Locked roots cannot be retired (nor, so, replaced).
    provision(&t, &["root-ec"], &[]);
    let r = cli(&t.conf(""), &["trust", "retire", "0x01010100"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("locked"));
}

/// A root CA made here with an RSA key of `bits` and `names` SAN entries.
fn big_root(w: &Work, name: &str, bits: u32, names: usize) -> PathBuf {
    let san: Vec<String> = (0..names).map(|i| format!("DNS:host-{i}.example.operator.invalid")).collect();
    let key = w.path(&format!("{name}.key"));
    let crt = w.path(&format!("{name}.pem"));
    let mut c = Command::new("openssl");
    c.args([
        "req",
        "-x509",
        "-newkey",
        &format!("rsa:{bits}"),
        "-nodes",
        "-days",
        "3650",
        "-subj",
        &format!("/CN={name}"),
    ])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&crt)
    .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
    if names > 0 {
        c.args(["-addext", &format!("subjectAltName={}", san.join(","))]);
    }
    ok(c.output().unwrap());
    crt
}

#[test]
fn nv_io_is_chunked_and_oversized_roots_get_a_clear_error() {
    let t = Swtpm::start();
    let w = Work::new();
    // Larger than one NV_Read/NV_Write (1024 bytes on swtpm), smaller than an index (2048).
    let mid = big_root(&w, "mid-root", 4096, 10);
    let mid_der = der(&mid);
    assert!(mid_der.len() > 1024 && mid_der.len() < 2048, "{}", mid_der.len());
    ok(cli(&t.conf(""), &["trust", "provision", "--root", mid.to_str().unwrap()]));
    let out = t.dir().join("mid.der");
    let r = Command::new("tpm2_nvread")
        .args(["-T", &t.tcti(), "0x01010100", "-C", "0x01010100", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), mid_der);
    // Larger than the TPM's TPM_PT_NV_INDEX_MAX: our message, not a TPM code.
    let big = big_root(&w, "big-root", 4096, 40);
    assert!(der(&big).len() > 2048);
    let r = cli(&t.conf(""), &["trust", "provision", "--root", big.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(msg.contains("does not fit an NV index of this TPM (at most 2048 bytes)"), "{msg}");
    assert_eq!(list(&t).as_array().unwrap().len(), 1, "nothing half-written");
}

#[test]
fn root_rollover_needs_an_endorsement_by_a_current_root() {
    let t = Swtpm::start();
    let w = Work::new();
    let conf = t.conf("");
    provision(&t, &["root"], &[]);
    let new_der = w.path("new.der");
    std::fs::write(&new_der, der(&cert("root-ec"))).unwrap();
    let endorse = |signer: &str, out: &str| {
        let p = w.path(out);
        ok(Command::new("openssl")
            .args(["cms", "-sign", "-binary", "-outform", "DER", "-in"])
            .arg(&new_der)
            .arg("-signer")
            .arg(cert(signer))
            .arg("-inkey")
            .arg(key(signer))
            .arg("-out")
            .arg(&p)
            .output()
            .unwrap());
        p
    };
    let b = package(&w, "signer-ec-root", "b.raucb", None);
    assert_eq!(info(&conf, &b, &[]).err().1, 9019, "root-ec is not trusted yet");
    // Not endorsed by a current root: refused.
    let bad = endorse("untrusted-root", "bad.p7s");
    let r =
        cli(&conf, &["trust", "rollover", cert("root-ec").to_str().unwrap(), "--endorsement", bad.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not endorsed"));
    // An endorsement of another certificate by the right key: refused too.
    std::fs::write(&new_der, der(&cert("untrusted-root"))).unwrap();
    let other = endorse("root", "other.p7s");
    std::fs::write(&new_der, der(&cert("root-ec"))).unwrap();
    assert!(!cli(
        &conf,
        &["trust", "rollover", cert("root-ec").to_str().unwrap(), "--endorsement", other.to_str().unwrap()]
    )
    .status
    .success());
    assert_eq!(list(&t).as_array().unwrap().len(), 1);
    // Endorsed by the current root: accepted; both roots trusted during the overlap.
    let good = endorse("root", "good.p7s");
    ok(cli(&conf, &["trust", "rollover", cert("root-ec").to_str().unwrap(), "--endorsement", good.to_str().unwrap()]));
    let a = package(&w, "signer-rsa", "a.raucb", None);
    info(&conf, &a, &[]).ok();
    info(&conf, &b, &[]).ok();
    // Retire the old root: only the new one remains.
    ok(cli(&conf, &["trust", "retire", "0x01010100"]));
    assert_eq!(info(&conf, &a, &[]).err().1, 9019);
    info(&conf, &b, &[]).ok();
}

#[test]
fn anti_rollback_counter_only_goes_up_and_survives_a_reset() {
    let t = Swtpm::start();
    let w = Work::new();
    let conf = t.conf("");
    provision(&t, &["root"], &[]);
    let sv = |n: u32| package(&w, "signer-rsa", &format!("sv{n}.raucb"), Some(n));
    let (v2, v3) = (sv(2), sv(3));
    let unversioned = package(&w, "signer-rsa", "none.raucb", None);
    assert_eq!(info(&conf, &v2, &[]).ok()["minimum-security-version"], 0);
    info(&conf, &unversioned, &[]).ok();
    assert!(ok(cli(&conf, &["security-version", "--raise", "3"])).contains('3'));
    let r = info(&conf, &v2, &[]);
    assert_eq!(r.err(), ("downgrade".into(), 9001));
    assert!(r.json["error"]["message"].as_str().unwrap().contains("below the device's minimum 3"));
    assert_eq!(info(&conf, &unversioned, &[]).err().1, 9001, "no security version counts as 0");
    info(&conf, &v3, &[]).ok();
    // Never decreases, not even on request.
    assert!(ok(cli(&conf, &["security-version", "--raise", "1", "--json"])).contains("\"minimum-security-version\":3"));
    t.reset();
    assert!(ok(cli(&conf, &["security-version"])).contains("minimum security version: 3"));
    assert_eq!(info(&conf, &v2, &[]).err().1, 9001);
}

#[test]
fn tpm_unreachable_means_could_not_check() {
    let t = Swtpm::start();
    let w = Work::new();
    let port = t.port;
    drop(t); // nothing listens there any more
    let conf = w.path("gone.conf");
    std::fs::write(&conf, format!("[system]\ncompatible=henb-test\n[tpm]\ntcti=swtpm:host=127.0.0.1,port={port}\n"))
        .unwrap();
    let p = package(&w, "signer-rsa", "p.raucb", None);
    let r = info(&conf, &p, &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.err(), ("tpm-unreachable".into(), 9002));
    assert!(r.json["error"]["message"].as_str().unwrap().starts_with("could not check"));
    for args in [
        &["trust", "list"][..],
        &["security-version"],
        &["trust", "provision", "--root", cert("root").to_str().unwrap()],
    ] {
        assert_eq!(cli(&conf, args).status.code(), Some(3), "{args:?}");
    }
}

#[test]
fn writes_need_the_owner_authorization() {
    let t = Swtpm::start();
    let r = Command::new("tpm2_changeauth")
        .args(["-T", &t.tcti(), "-c", "owner", "s3cret"])
        .env("TSS2_LOG", "all+none")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Without the owner authorization: the TPM refuses (could not provision).
    let r = cli(&t.conf(""), &["trust", "provision", "--root", cert("root").to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(3), "{}", String::from_utf8_lossy(&r.stderr));
    // With it (a file, trailing newline ignored): provisioned; reading needs no authorization.
    let auth = t.dir().join("owner-auth");
    std::fs::write(&auth, "s3cret\n").unwrap();
    let conf = t.conf(&format!("owner-auth-file={}\n", auth.display()));
    // Step 11: a secret others can read is refused before it is used (could not check).
    let r = cli(&conf, &["trust", "provision", "--root", cert("root").to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(3), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("group or others may read it"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(cli(&conf, &["trust", "provision", "--root", cert("root").to_str().unwrap()]));
    let w = Work::new();
    let no_auth = t.conf(""); // rewrites system.conf without the auth file
    info(&no_auth, &package(&w, "signer-rsa", "p.raucb", None), &[]).ok();
}

/// The software policy digests (tpm::policy) equal the TPM's own trial-session
/// digests, for PolicyPCR over 1, 2 and 3 PCRs and for PolicyOR of 2 and 3 branches.
#[test]
fn software_policy_digests_equal_the_tpms_trial_sessions() {
    use henb_update::tpm::policy;
    let t = Swtpm::start();
    let mut tpm =
        henb_update::tpm::Tpm::open(henb_update::tpm::TpmConfig { tcti: t.tcti(), ..Default::default() }).unwrap();
    let value = |seed: u64| -> [u8; 32] { pseudo_random(32, seed).try_into().unwrap() };
    let selections: [&[u8]; 3] = [&[9], &[8, 9], &[4, 8, 9]];
    let mut branches = Vec::new();
    for (n, pcrs) in selections.iter().enumerate() {
        let vals: Vec<(u8, [u8; 32])> = pcrs.iter().map(|&i| (i, value(i as u64 * 31 + n as u64))).collect();
        let soft = policy::branch(&vals).unwrap();
        assert_eq!(tpm.trial_policy_pcr(&vals).unwrap(), soft, "PolicyPCR over {pcrs:?}");
        branches.push(soft);
    }
    for k in [2, 3] {
        assert_eq!(
            tpm.trial_policy_or(&branches[..k]).unwrap(),
            policy::policy_or(&branches[..k]).unwrap(),
            "PolicyOR of {k}"
        );
    }
    // Duplicated branches are accepted (OR(new, new) after a confirmed update).
    let same = [branches[0], branches[0]];
    assert_eq!(tpm.trial_policy_or(&same).unwrap(), policy::policy_or(&same).unwrap());
}

/// The policy index's name and PolicyAuthorizeNV computed in software equal the TPM's;
/// a secret sealed to PolicyAuthorizeNV unseals only while the PCRs match an approved
/// branch, and follows the index when it is rewritten (no re-sealing).
#[test]
fn policy_index_name_authorize_nv_and_sealing_match_the_tpm() {
    use henb_update::tpm::policy::{self, nv_attr};
    use henb_update::tpm::{NvKind, Tpm, TpmConfig};
    let t = Swtpm::start();
    let mut tpm = Tpm::open(TpmConfig { tcti: t.tcti(), ..Default::default() }).unwrap();
    let index = 0x0101_0300;
    tpm.nv_define(index, 34, NvKind::Policy, "policy").unwrap();
    assert_eq!(tpm.nv_name(index).unwrap(), policy::nv_name(index, nv_attr::POLICY_INDEX, 34));
    // PCR 8 after one extend with d, as a bootloader does: H(0^32 || d).
    let d: [u8; 32] = pseudo_random(32, 8).try_into().unwrap();
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(d);
    let pcr8: [u8; 32] = h.finalize().into();
    let good = policy::branch(&[(8, pcr8)]).unwrap();
    let other = policy::branch(&[(8, [1; 32])]).unwrap();
    tpm.nv_write(index, &policy::tpmt_ha(&policy::policy_or(&[good, other]).unwrap())).unwrap();
    let name = tpm.nv_name(index).unwrap();
    assert_eq!(name, policy::nv_name(index, nv_attr::POLICY_INDEX | nv_attr::WRITTEN, 34));
    assert_eq!(tpm.trial_policy_authorize_nv(index).unwrap(), policy::policy_authorize_nv(&name));
    let (public, private) = tpm.seal(b"device credential", policy::policy_authorize_nv(&name)).unwrap();
    let attempt = vec![(vec![8u8], vec![good, other])];
    // PCR 8 still zero: no branch matches.
    assert!(tpm.unseal(&public, &private, index, &attempt).is_err());
    let ext = Command::new("tpm2_pcrextend")
        .arg(format!("8:sha256={}", hex::encode(d)))
        .args(["-T", &t.tcti()])
        .env("TSS2_LOG", "all+none")
        .status()
        .unwrap();
    assert!(ext.success());
    assert_eq!(tpm.pcr_read(&[8]).unwrap(), vec![(8, pcr8)]);
    assert_eq!(tpm.unseal(&public, &private, index, &attempt).unwrap(), b"device credential");
    // The index approves only `other` now: the same PCRs no longer unseal...
    tpm.nv_write(index, &policy::tpmt_ha(&policy::policy_or(&[other, other]).unwrap())).unwrap();
    assert!(tpm.unseal(&public, &private, index, &[(vec![8u8], vec![other, other])]).is_err());
    assert!(tpm.unseal(&public, &private, index, &attempt).is_err());
    // ...and approving them again brings the secret back without re-sealing.
    tpm.nv_write(index, &policy::tpmt_ha(&policy::policy_or(&[other, good]).unwrap())).unwrap();
    assert_eq!(tpm.unseal(&public, &private, index, &[(vec![8u8], vec![other, good])]).unwrap(), b"device credential");
}

/// TPM-held anchors are always roots (step 8): `trust provision` refuses an intermediate,
/// a self-signed certificate that is not a CA, and a root whose key usage lacks
/// keyCertSign; nothing is written for them.
#[test]
fn provisioning_refuses_anything_but_a_root_ca() {
    let t = Swtpm::start();
    let w = Work::new();
    let self_signed = |name: &str, exts: &[&str]| {
        let key = w.path(&format!("{name}.key"));
        let crt = w.path(&format!("{name}.pem"));
        let mut c = Command::new("openssl");
        c.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt);
        for e in exts {
            c.args(["-addext", e]);
        }
        ok(c.output().unwrap());
        crt
    };
    let no_keycertsign = self_signed(
        "no-keycertsign",
        &["basicConstraints=critical,CA:TRUE", "keyUsage=critical,digitalSignature,cRLSign"],
    );
    let not_ca = self_signed("not-ca", &["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]);
    for (what, path) in
        [("not self-issued", cert("release-ca")), ("keyCertSign", no_keycertsign), ("not a CA certificate", not_ca)]
    {
        let r = cli(&t.conf(""), &["trust", "provision", "--root", path.to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(1), "{what}");
        let msg = String::from_utf8_lossy(&r.stderr);
        assert!(msg.contains("is not a root CA") && msg.contains(what), "{what}: {msg}");
    }
    // Nothing was written; a real root still goes in.
    let r = cli(&t.conf(""), &["trust", "list", "--json"]);
    assert!(
        String::from_utf8_lossy(&r.stdout).trim() == "[]"
            || !r.status.success()
            || list(&t).as_array().unwrap().is_empty()
    );
    provision(&t, &["root"], &[]);
    assert_eq!(list(&t).as_array().unwrap().len(), 1);
}
