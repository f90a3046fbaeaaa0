//! TR-069 Annex E packages from the independent builder (tests/tools/tr069_build.py,
//! written from the annex's tables, sharing no code with the product), and ours.

mod common;
use common::*;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// Build with the independent builder; returns the package path.
fn independent(w: &Work, out: &str, extra: &[&str], signers: &[(&str, Option<&str>)]) -> PathBuf {
    let img = w.path("rootfs.img");
    if !img.exists() {
        std::fs::write(&img, pseudo_random(500_000, 3)).unwrap();
    }
    let o = w.path(out);
    let mut args: Vec<std::ffi::OsString> = vec!["--out".into(), o.clone().into()];
    for (s, md) in signers {
        args.push("--signer".into());
        args.push(cert(s).into());
        args.push(key(s).into());
        if let Some(md) = md {
            args.push((*md).into());
        }
    }
    args.push("--certfile".into());
    args.push(cert("release-ca").into());
    args.extend(["--compatible", "henb-test", "--version", "2.0.1", "--role", "1"].map(Into::into));
    args.push("--extract".into());
    args.push(format!("/slot/rootfs={}", img.display()).into());
    args.extend(extra.iter().map(Into::into));
    let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = tr069_build(&refs);
    assert!(out.status.success(), "builder: {}", String::from_utf8_lossy(&out.stderr));
    o
}

#[test]
fn independent_package_is_accepted() {
    let w = Work::new();
    std::fs::write(
        w.path("rv.txt"),
        "pcr-bank=sha256\npcr.9=1111111111111111111111111111111111111111111111111111111111111111\n",
    )
    .unwrap();
    let rv = w.path("rv.txt").display().to_string();
    let p = independent(
        &w,
        "p.bin",
        &[
            "--security-version",
            "7",
            "--reference-values",
            &rv,
            "--min-version",
            "1.0",
            "--raw-command",
            "4242",
            "abcd",
            "--reboot",
            "--end",
        ],
        &[("signer-rsa", None)],
    );
    let r = info(&w.conf(""), &p, &[]);
    let j = r.ok();
    assert_eq!(j["format"], "tr069");
    assert_eq!(j["version"], "2.0.1");
    assert_eq!(j["security-version"], 7);
    assert_eq!(j["images"][0]["slot-class"], "rootfs");
    assert_eq!(j["images"][0]["size"], 500_000);
    assert_eq!(j["images"][0]["sha256"], sha256_hex(&pseudo_random(500_000, 3)));
    assert_eq!(j["meta"]["measured-boot"]["pcr-bank"], "sha256");
    assert_eq!(j["constraints"]["min-version"], serde_json::json!([1, 0]));
}

#[test]
fn strictly_conformant_sha1_package_needs_the_legacy_switch() {
    let w = Work::new();
    let p = independent(&w, "legacy.bin", &["--sha1", "--md", "sha1", "--end"], &[("signer-rsa", None)]);
    let r = info(&w.conf(""), &p, &[]);
    let (kind, fault) = r.err();
    assert_eq!((kind.as_str(), fault), ("untrusted", 9019));
    assert!(r.json["error"]["message"].as_str().unwrap().contains("SHA-1 is refused"), "{}", r.json);
    assert_eq!(info(&w.conf(""), &p, &["--tr069-legacy-sha1"]).ok()["images"][0]["digest-algorithm"], "sha1");
    let conf = w.conf("\n[package]\ntr069-legacy-sha1=true\n");
    info(&conf, &p, &[]).ok();
    // SHA-256 signature but SHA-1 file hashes: refused for the file hash, saying why.
    let p = independent(&w, "sha1-files.bin", &["--sha1", "--end"], &[("signer-rsa", None)]);
    let r = info(&w.conf(""), &p, &[]);
    assert_eq!(r.err(), ("sha1-refused".into(), 9019));
    assert!(r.json["error"]["message"].as_str().unwrap().contains("tr069-legacy-sha1"));
}

#[test]
fn sha256_signer_next_to_a_sha1_signer() {
    let w = Work::new();
    let p = independent(&w, "two.bin", &["--end"], &[("signer-rsa", None), ("signer-rsa-b", Some("sha1"))]);
    let j = info(&w.conf(""), &p, &[]);
    let s = j.ok()["signers"].as_array().unwrap().clone();
    assert_eq!(s.iter().filter(|s| s["status"] == "trusted").count(), 1);
    assert!(s.iter().any(|s| s["status"].as_str().unwrap().contains("SHA-1")));
}

#[test]
fn remove_or_move_commands_refuse_the_package() {
    let w = Work::new();
    for extra in [
        &["--remove", "/etc/passwd"][..],
        &["--move", "/a", "/b"],
        &["--add", "/etc/x=/dev/null"],
        &["--extract", "/etc/y=/dev/null"],
    ] {
        let p = independent(&w, "fs.bin", extra, &[("signer-rsa", None)]);
        assert_eq!(info(&w.conf(""), &p, &[]).err(), ("unsupported-command".into(), 9018), "{extra:?}");
    }
}

#[test]
fn role_other_than_software_upgrade_is_refused() {
    let w = Work::new();
    let img = w.path("x");
    std::fs::write(&img, b"x").unwrap();
    let o = w.path("role.bin");
    let out = tr069_build(&[
        "--out".as_ref(),
        o.as_os_str(),
        "--signer".as_ref(),
        cert("signer-rsa").as_os_str(),
        key("signer-rsa").as_os_str(),
        "--certfile".as_ref(),
        cert("release-ca").as_os_str(),
        "--compatible".as_ref(),
        "henb-test".as_ref(),
        "--role".as_ref(),
        "3".as_ref(),
        "--extract".as_ref(),
        format!("/slot/rootfs={}", img.display()).as_ref(),
    ]);
    assert!(out.status.success());
    assert_eq!(info(&w.conf(""), &o, &[]).err().0, "malformed");
}

#[test]
fn our_tr069_packages_verify_with_openssl_and_with_us() {
    let w = Work::new();
    let c = w.content(
        "c",
        123_456,
        "\n[meta.measured-boot]\npcr.8.A=ab\n\n[meta.anti-rollback]\nsecurity-version=3\n\n[meta.other]\nk=v\n",
    );
    let p = w.bundle("tr069", &c, &["signer-rsa", "signer-p384"], "ours.bin", &[]);
    let j = info(&w.conf(""), &p, &[]);
    let j = j.ok();
    assert_eq!(j["format"], "tr069");
    assert_eq!(j["security-version"], 3);
    assert_eq!(j["meta"]["measured-boot"]["pcr.8.A"], "ab");
    assert_eq!(j["meta"]["other"]["k"], "v");
    assert_eq!(j["signers"].as_array().unwrap().len(), 2);
    // openssl checks the detached signature over header || command list.
    let bytes = std::fs::read(&p).unwrap();
    let c_len = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let sig_start = 24 + c_len;
    let sig_len = {
        let l = bytes[sig_start + 1];
        assert_eq!(l & 0x80, 0x80);
        let n = (l & 0x7f) as usize;
        2 + n + bytes[sig_start + 2..sig_start + 2 + n].iter().fold(0usize, |a, b| a << 8 | *b as usize)
    };
    std::fs::write(w.path("signed"), &bytes[..sig_start]).unwrap();
    std::fs::write(w.path("sig.der"), &bytes[sig_start..sig_start + sig_len]).unwrap();
    run_ok(
        Command::new("openssl")
            .args(["cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any", "-out", "/dev/null", "-in"])
            .arg(w.path("sig.der"))
            .arg("-content")
            .arg(w.path("signed"))
            .arg("-CAfile")
            .arg(pki().join("keyring.pem")),
    );
    // Legacy: strictly conformant SHA-1 package, refused by default, accepted with the switch.
    let p = w.bundle("tr069", &c, &["signer-rsa"], "legacy.bin", &["--legacy-sha1"]);
    assert_eq!(info(&w.conf(""), &p, &[]).err().1, 9019);
    info(&w.conf(""), &p, &["--tr069-legacy-sha1"]).ok();
}

#[test]
fn legacy_package_with_sha1_and_sha256_signatures() {
    let w = Work::new();
    let c = w.content("c", 10_000, "");
    let p = w.bundle("tr069", &c, &["signer-rsa"], "both.bin", &["--legacy-sha1", "--also-sha256"]);
    // The SHA-256 signature verifies without the switch; the SHA-1 file hash still needs it.
    assert_eq!(info(&w.conf(""), &p, &[]).err(), ("sha1-refused".into(), 9019));
    let j = info(&w.conf(""), &p, &["--tr069-legacy-sha1"]);
    let s = j.ok()["signers"].as_array().unwrap().clone();
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|s| s["status"] == "trusted"));
    let algs: Vec<_> = s.iter().map(|s| s["digest-algorithm"].as_str().unwrap().to_string()).collect();
    assert!(algs.contains(&"sha1".to_string()) && algs.contains(&"sha256".to_string()));
}

#[test]
fn bundle_takes_the_format_from_the_manifest() {
    let w = Work::new();
    let c = w.content("c", 10_000, "\n[bundle]\nformat=plain\n");
    let o = w.path("auto.raucb");
    run_ok(
        Command::new(BIN)
            .arg("bundle")
            .arg("--cert")
            .arg(cert("signer-rsa"))
            .arg("--key")
            .arg(key("signer-rsa"))
            .arg("--intermediate")
            .arg(cert("release-ca"))
            .arg(&c)
            .arg(&o),
    );
    common::oracle::built(&o);
    assert_eq!(info(&w.conf(""), &o, &[]).ok()["format"], "plain");
}

/// RFC 5652 §5.4: a SignerInfo without signed attributes signs the content itself
/// (`openssl cms -sign -noattr`); such a package is accepted, and one byte changed in the
/// signed command list rejects it (9019).
#[test]
fn signer_infos_without_signed_attributes() {
    let w = Work::new();
    for (signer, md) in [("signer-rsa", "sha256"), ("signer-p256", "sha384"), ("signer-p384", "sha512")] {
        let p = independent(&w, &format!("{signer}.bin"), &["--md", md, "--openssl-arg=-noattr"], &[(signer, None)]);
        let j = info(&w.conf(""), &p, &[]);
        assert_eq!(j.ok()["signers"][0]["status"], "trusted", "{signer}");
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.windows(5).position(|x| x == b"2.0.1").expect("version in the command list");
        bytes[at + 4] = b'2';
        let t = w.path(&format!("{signer}-tampered.bin"));
        std::fs::write(&t, &bytes).unwrap();
        assert_eq!(info(&w.conf(""), &t, &[]).err(), ("bad-signature".into(), 9019), "{signer}");
    }
}
