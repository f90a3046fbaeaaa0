//! Packages made by other tools pass our `info`; packages we make pass theirs.
//! Peers: Debian's rauc 1.8, openssl, veritysetup (cryptsetup).

mod common;
use common::*;
use std::process::Command;

/// A system.conf for rauc itself, trusting our test roots with the codesign purpose.
fn rauc_conf(w: &Work) -> std::path::PathBuf {
    let p = w.path("rauc.conf");
    std::fs::write(
        &p,
        format!(
            "[system]\ncompatible=henb-test\nbootloader=noop\n\n[keyring]\npath={}\ncheck-purpose=codesign\n",
            pki().join("keyring.pem").display()
        ),
    )
    .unwrap();
    p
}

fn rauc_bundle(w: &Work, format: &str, signer: &str, out: &str) -> std::path::PathBuf {
    let c = w.content(&format!("c-{out}"), 300_000, &format!("\n[bundle]\nformat={format}\n"));
    let o = w.path(out);
    run_ok(
        Command::new("rauc")
            .arg("bundle")
            .arg(format!("--cert={}", cert(signer).display()))
            .arg(format!("--key={}", key(signer).display()))
            .arg(format!("--intermediate={}", cert("release-ca").display()))
            .arg(&c)
            .arg(&o),
    );
    common::oracle::built(&o)
}

#[test]
fn bundles_made_by_rauc_pass_our_info() {
    let w = Work::new();
    let conf = w.conf("");
    for (format, signer) in
        [("plain", "signer-rsa"), ("plain", "signer-p256"), ("verity", "signer-rsa"), ("verity", "signer-p384")]
    {
        let b = rauc_bundle(&w, format, signer, &format!("{format}-{signer}.raucb"));
        let r = info(&conf, &b, &[]);
        let j = r.ok();
        assert_eq!(j["format"], format, "{format} {signer}");
        assert_eq!(j["compatible"], "henb-test");
        assert_eq!(j["images"][0]["size"], 300_000);
        assert_eq!(j["images"][0]["sha256"], sha256_hex(&pseudo_random(300_000, 7)));
        assert_eq!(j["signers"][0]["status"], "trusted");
        assert!(j["signers"][0]["subject"].as_str().unwrap().contains(signer));
    }
}

#[test]
fn bundles_made_by_us_pass_rauc_info() {
    let w = Work::new();
    let rc = rauc_conf(&w);
    let content = w.content("c", 200_000, "\n[meta.measured-boot]\npcr.9=00\n");
    for (format, signer) in [("plain", "signer-rsa"), ("verity", "signer-p256"), ("verity", "signer-rsa")] {
        let b = w.bundle(format, &content, &[signer], &format!("{format}-{signer}.raucb"), &[]);
        let out = run_ok(Command::new("rauc").arg(format!("--conf={}", rc.display())).arg("info").arg(&b));
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(&format!("Bundle Format: \t{format}")), "{text}");
        assert!(text.contains("Verified"), "{text}");
        // And ours accepts it too, with the meta section kept.
        let j = info(&w.conf(""), &b, &[]);
        assert_eq!(j.ok()["meta"]["measured-boot"]["pcr.9"], "00");
    }
    // The content directory was not modified (rauc rewrites it; we do not).
    assert!(!std::fs::read_to_string(content.join("manifest.raucm")).unwrap().contains("sha256"));
}

#[test]
fn our_verity_tree_satisfies_veritysetup() {
    let w = Work::new();
    let content = w.content("c", 1_000_000, "");
    let b = w.bundle("verity", &content, &["signer-rsa"], "v.raucb", &[]);
    let bytes = std::fs::read(&b).unwrap();
    let n = u64::from_be_bytes(bytes[bytes.len() - 8..].try_into().unwrap()) as usize;
    let cms = &bytes[bytes.len() - 8 - n..bytes.len() - 8];
    std::fs::write(w.path("cms.der"), cms).unwrap();
    let manifest = run_ok(
        Command::new("openssl").args(["cms", "-verify", "-noverify", "-inform", "DER", "-in"]).arg(w.path("cms.der")),
    );
    let m = String::from_utf8(manifest.stdout).unwrap();
    let get = |k: &str| m.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap().to_string();
    let tree: usize = get("verity-size").parse().unwrap();
    let sq = bytes.len() - 8 - n - tree;
    let verify = |file: &std::path::Path| {
        Command::new("veritysetup")
            .args(["verify", "--no-superblock"])
            .arg(format!("--hash-offset={sq}"))
            .arg(format!("--data-blocks={}", sq / 4096))
            .arg(format!("--salt={}", get("verity-salt")))
            .arg(file)
            .arg(file)
            .arg(get("verity-hash"))
            .status()
            .unwrap()
            .success()
    };
    assert!(verify(&b));
    // The oracle is not blind: a flipped data byte fails it, and fails us.
    let mut bad = bytes.clone();
    bad[sq / 2] ^= 0x10;
    std::fs::write(w.path("bad.raucb"), &bad).unwrap();
    assert!(!verify(&w.path("bad.raucb")));
    assert_eq!(info(&w.conf(""), &w.path("bad.raucb"), &[]).err(), ("verity".into(), 9018));
}

#[test]
fn openssl_cms_with_two_signers_is_accepted() {
    let w = Work::new();
    let c = w.content_with_digests("c", 100_000);
    let b = w.openssl_plain(&c, &["signer-rsa", "signer-p256"], "sha256", "two.raucb");
    let j = info(&w.conf(""), &b, &[]);
    let signers = j.ok()["signers"].as_array().unwrap().clone();
    assert_eq!(signers.len(), 2);
    assert!(signers.iter().all(|s| s["status"] == "trusted"));
}

#[test]
fn one_trusted_and_one_untrusted_signer_is_accepted() {
    let w = Work::new();
    let c = w.content_with_digests("c", 100_000);
    let b = w.openssl_plain(&c, &["signer-untrusted", "signer-rsa"], "sha256", "mixed.raucb");
    let j = info(&w.conf(""), &b, &[]);
    let s = j.ok()["signers"].as_array().unwrap().clone();
    let untrusted = s.iter().find(|s| s["subject"].as_str().unwrap().contains("signer-untrusted")).unwrap();
    assert!(untrusted["status"].as_str().unwrap().starts_with("skipped"), "{untrusted}");
    assert!(s.iter().any(|s| s["status"] == "trusted"));
    // Alone, the untrusted signer is not enough.
    let b = w.openssl_plain(&c, &["signer-untrusted"], "sha256", "untrusted.raucb");
    assert_eq!(info(&w.conf(""), &b, &[]).err(), ("untrusted".into(), 9019));
}

/// Flip a byte of the signature value of SignerInfo `index` and re-encode the CMS.
fn flip_signature(cms: &[u8], index: usize) -> Vec<u8> {
    use der::{Decode, Encode};
    let mut ci = cms::content_info::ContentInfo::from_der(cms).unwrap();
    let mut sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
    let mut infos: Vec<_> = sd.signer_infos.0.iter().cloned().collect();
    let mut sig = infos[index].signature.as_bytes().to_vec();
    sig[10] ^= 0x01;
    infos[index].signature = der::asn1::OctetString::new(sig).unwrap();
    sd.signer_infos = cms::signed_data::SignerInfos(der::asn1::SetOfVec::try_from(infos).unwrap());
    ci.content = der::Any::encode_from(&sd).unwrap();
    ci.to_der().unwrap()
}

#[test]
fn a_second_signer_with_flipped_signature_bytes_rejects_the_package() {
    let w = Work::new();
    let c = w.content_with_digests("c", 100_000);
    let b = w.openssl_plain(&c, &["signer-rsa", "signer-p256"], "sha256", "two.raucb");
    let bytes = std::fs::read(&b).unwrap();
    let n = u64::from_be_bytes(bytes[bytes.len() - 8..].try_into().unwrap()) as usize;
    let payload_len = bytes.len() - 8 - n;
    for index in 0..2 {
        let cms = flip_signature(&bytes[payload_len..bytes.len() - 8], index);
        let mut out = bytes[..payload_len].to_vec();
        out.extend(&cms);
        out.extend((cms.len() as u64).to_be_bytes());
        let p = w.path(&format!("flipped{index}.raucb"));
        std::fs::write(&p, out).unwrap();
        // One signer is still valid, but a checkable signature that is wrong is tampering (R4).
        assert_eq!(info(&w.conf(""), &p, &[]).err(), ("bad-signature".into(), 9019), "signer {index}");
    }
}

#[test]
fn rsa_pss_signatures_are_accepted() {
    let w = Work::new();
    let c = w.content_with_digests("c", 50_000);
    let pss = ["-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:32"];
    let b = w.openssl_plain_with(&c, &["signer-rsa"], "sha256", "pss.raucb", &pss);
    info(&w.conf(""), &b, &[]).ok();
}

#[test]
fn every_mksquashfs_compressor_reads_back() {
    let w = Work::new();
    let conf = w.conf("");
    let mut content = w.content("c", 400_000, "");
    // Half zeros, so that the compressors actually compress.
    let mut img = pseudo_random(400_000, 7);
    img[100_000..300_000].fill(0);
    std::fs::write(content.join("rootfs.img"), &img).unwrap();
    for comp in ["gzip", "xz", "zstd", "lz4"] {
        let b = w.bundle("verity", &content, &["signer-rsa"], &format!("{comp}.raucb"), &["--compression", comp]);
        assert_eq!(info(&conf, &b, &[]).ok()["images"][0]["sha256"], sha256_hex(&img), "{comp}");
    }
    // lzo is not built in: a clear refusal, not a crash. The bundle is valid (unsquashfs
    // lists it); Debian's libsquashfs lacks lzo too, so both readers refuse it (made
    // without Work::bundle, whose oracle requires both to read it).
    content = w.content("c2", 50_000, "");
    let b = w.path("lzo.raucb");
    run_ok(
        Command::new(BIN)
            .args(["bundle", "--format", "plain", "--compression", "lzo", "--cert"])
            .arg(cert("signer-rsa"))
            .arg("--key")
            .arg(key("signer-rsa"))
            .arg("--intermediate")
            .arg(cert("release-ca"))
            .arg(&content)
            .arg(&b),
    );
    let listed = run_ok(Command::new("unsquashfs").args(["-l", "-d", "/"]).arg(&b));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("/rootfs.img"));
    for e in [common::oracle::read_backhand(&b).unwrap_err(), common::oracle::read_libsquashfs(&b).unwrap_err()] {
        assert!(e.to_lowercase().contains("compress") || e.to_lowercase().contains("lzo"), "{e}");
    }
    let r = info(&conf, &b, &[]);
    assert_eq!(r.err(), ("squashfs".into(), 9018));
    // The error names what failed (backhand's messages were empty without error-strings).
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("unsupported compression"), "{msg}");
}

/// A rauc bundle using every manifest key rauc 1.8 accepts (checked against `rauc bundle`,
/// which refuses any other): hooks, handler, adaptive (with its hash index), a variant.
#[test]
fn rauc_bundle_with_every_manifest_key() {
    let w = Work::new();
    let c = w.path("all");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("rootfs.img"), pseudo_random(8192, 5)).unwrap();
    std::fs::write(c.join("hook.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        c.join("manifest.raucm"),
        "[update]\ncompatible=henb-test\nversion=1\ndescription=d\nbuild=b1\n\n[bundle]\nformat=verity\n\n\
         [hooks]\nfilename=hook.sh\nhooks=install-check;\n\n[handler]\nfilename=hook.sh\nargs=--x\n\n\
         [image.rootfs]\nfilename=rootfs.img\nhooks=pre-install;\nadaptive=block-hash-index;\n\n\
         [image.appfs.var1]\nfilename=rootfs.img\n",
    )
    .unwrap();
    let o = w.rauc_bundle(&c, "all.raucb");
    let r = info(&w.conf(""), &o, &[]);
    let j = r.ok();
    assert_eq!(j["build"], "b1");
    assert_eq!(j["description"], "d");
    assert_eq!(j["images"][1]["variant"], "var1");
}

/// openssl's signers with every SHA-2 digest on each key type, and a signer identified
/// by subject key identifier (`-keyid`, SignerInfo version 3).
#[test]
fn every_sha2_digest_with_every_key_type_and_keyid_signers() {
    let w = Work::new();
    let conf = w.conf("");
    let c = w.content_with_digests("c", 30_000);
    for signer in ["signer-rsa", "signer-p256", "signer-p384"] {
        for md in ["sha256", "sha384", "sha512"] {
            let b = w.openssl_plain(&c, &[signer], md, &format!("{signer}-{md}.raucb"));
            let r = info(&conf, &b, &[]);
            assert_eq!(r.ok()["signers"][0]["digest-algorithm"], md, "{signer} {md}: {}", r.stderr);
        }
    }
    let b = w.openssl_plain_with(&c, &["signer-p256"], "sha256", "keyid.raucb", &["-keyid"]);
    info(&conf, &b, &[]).ok();
}

/// RFC 5652 §5.4: SignerInfos without signed attributes (`openssl cms -sign -noattr`, as
/// HSM-backed PKCS#7 tools sign): a plain bundle (detached, over the squashfs) and a verity
/// bundle whose manifest rauc's `replace-signature` re-signs that way are accepted by us
/// and by rauc; one changed content byte rejects them (9019).
#[test]
fn signer_infos_without_signed_attributes() {
    let w = Work::new();
    let conf = w.conf("");
    let rc = rauc_conf(&w);
    let c = w.content_with_digests("c", 30_000);
    let rauc_ok = |b: &std::path::Path| {
        Command::new("rauc").arg(format!("--conf={}", rc.display())).arg("info").arg(b).output().unwrap()
    };
    for signer in ["signer-rsa", "signer-p256"] {
        let b = w.openssl_plain_with(&c, &[signer], "sha256", &format!("{signer}.raucb"), &["-noattr"]);
        assert_eq!(info(&conf, &b, &[]).ok()["signers"][0]["status"], "trusted", "{signer}");
        assert!(rauc_ok(&b).status.success(), "{signer}");
        let mut bytes = std::fs::read(&b).unwrap();
        bytes[100] ^= 1; // inside the squashfs
        let t = w.path(&format!("{signer}-tampered.raucb"));
        std::fs::write(&t, &bytes).unwrap();
        assert_eq!(info(&conf, &t, &[]).err(), ("bad-signature".into(), 9019), "{signer}");
    }
    // verity: rauc's bundle, its manifest re-signed with -noattr (attached).
    let b = rauc_bundle(&w, "verity", "signer-p256", "v.raucb");
    let sig = w.path("v.cms");
    run_ok(Command::new("rauc").arg(format!("--conf={}", rc.display())).arg("extract-signature").arg(&b).arg(&sig));
    let manifest = w.path("v.raucm");
    run_ok(
        Command::new("openssl")
            .args(["cms", "-verify", "-noverify", "-inform", "DER", "-in"])
            .arg(&sig)
            .arg("-out")
            .arg(&manifest),
    );
    let new_sig = w.path("v-noattr.cms");
    run_ok(
        Command::new("openssl")
            .args(["cms", "-sign", "-nodetach", "-noattr", "-binary", "-outform", "DER", "-md", "sha256", "-in"])
            .arg(&manifest)
            .arg("-signer")
            .arg(cert("signer-p256"))
            .arg("-inkey")
            .arg(key("signer-p256"))
            .arg("-certfile")
            .arg(cert("release-ca"))
            .arg("-out")
            .arg(&new_sig),
    );
    let nb = w.path("v-noattr.raucb");
    run_ok(
        Command::new("rauc")
            .arg(format!("--conf={}", rc.display()))
            .arg("replace-signature")
            .arg(&b)
            .arg(&new_sig)
            .arg(&nb),
    );
    common::oracle::built(&nb);
    assert!(rauc_ok(&nb).status.success());
    let j = info(&conf, &nb, &[]);
    assert_eq!(j.ok()["format"], "verity");
    assert_eq!(j.ok()["signers"][0]["status"], "trusted");
    // One byte of the signed manifest (inside the CMS) changed: same length, bad signature.
    let mut bytes = std::fs::read(&nb).unwrap();
    let at = bytes.windows(20).rposition(|x| x == b"compatible=henb-test").expect("manifest in the CMS");
    bytes[at + 19] = b'x';
    let t = w.path("v-noattr-tampered.raucb");
    std::fs::write(&t, &bytes).unwrap();
    assert_eq!(info(&conf, &t, &[]).err(), ("bad-signature".into(), 9019));
}
