//! Bundles whose squashfs region is larger than 4 GiB (sparse files): sizes are u64
//! everywhere, and a byte changed beyond 4 GiB is still caught (RAUC's CVE-2026-34155
//! signed only the first bytes of such payloads).

mod common;
use common::*;
use henb_update::package::verity;
use henb_update::sign::{self, CmsContent, SigningKey};
use henb_update::source::{FileSource, Source};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;

const BIG: u64 = (4 << 30) + 64 * 1024;

fn big_squashfs(w: &Work, content: &std::path::Path) -> std::path::PathBuf {
    let sq = w.mksquashfs(content, "big.sqfs");
    // squashfs allows padding after bytes_used: make the region > 4 GiB, sparse.
    OpenOptions::new().write(true).open(&sq).unwrap().set_len(BIG).unwrap();
    sq
}

fn flip_at(path: &std::path::Path, at: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 1;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn plain_bundle_over_4_gib() {
    let w = Work::new();
    let c = w.content_with_digests("c", 10_000);
    let sq = big_squashfs(&w, &c);
    let cms = w.path("big.cms");
    run_ok(
        Command::new("openssl")
            .args(["cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256", "-in"])
            .arg(&sq)
            .arg("-out")
            .arg(&cms)
            .arg("-signer")
            .arg(cert("signer-rsa"))
            .arg("-inkey")
            .arg(key("signer-rsa"))
            .arg("-certfile")
            .arg(cert("release-ca")),
    );
    let cms = std::fs::read(&cms).unwrap();
    let f = OpenOptions::new().write(true).open(&sq).unwrap();
    f.write_all_at(&cms, BIG).unwrap();
    f.write_all_at(&(cms.len() as u64).to_be_bytes(), BIG + cms.len() as u64).unwrap();
    drop(f);
    let conf = w.conf("");
    assert_eq!(info(&conf, &sq, &[]).ok()["format"], "plain");
    flip_at(&sq, BIG - 4096 + 17);
    assert_eq!(info(&conf, &sq, &[]).err(), ("digest-mismatch".into(), 9019));
}

#[test]
fn verity_bundle_over_4_gib() {
    let w = Work::new();
    let c = w.content_with_digests("c", 10_000);
    let sq = big_squashfs(&w, &c);
    let f = OpenOptions::new().read(true).write(true).open(&sq).unwrap();
    let tree = verity::Geometry::new(BIG).tree_bytes();
    f.set_len(BIG + tree).unwrap();
    let salt = [0x42u8; 32];
    let src = FileSource::new(f.try_clone().unwrap()).unwrap();
    let out = FileSource::new(f.try_clone().unwrap()).unwrap();
    let root = verity::build_tree(&src, BIG, &salt, &out, &mut |b, o| f.write_all_at(b, o), BIG).unwrap();
    let manifest = std::fs::read_to_string(c.join("manifest.raucm")).unwrap()
        + &format!(
            "\n[bundle]\nformat=verity\nverity-hash={}\nverity-salt={}\nverity-size={tree}\n",
            hex::encode(root),
            hex::encode(salt)
        );
    let signer = SigningKey::load(&cert("signer-rsa"), &key("signer-rsa")).unwrap();
    let inter = x509_cert::Certificate::load_pem_chain(&std::fs::read(cert("release-ca")).unwrap()).unwrap();
    let cms = sign::sign(&[signer], &inter, &[], CmsContent::Attached(manifest.as_bytes())).unwrap();
    let end = BIG + tree;
    f.write_all_at(&cms, end).unwrap();
    f.write_all_at(&(cms.len() as u64).to_be_bytes(), end + cms.len() as u64).unwrap();
    assert!(src.len() > 4 << 30);
    drop(f);
    let conf = w.conf("");
    assert_eq!(info(&conf, &sq, &[]).ok()["format"], "verity");
    flip_at(&sq, BIG - 4096 + 17);
    assert_eq!(info(&conf, &sq, &[]).err(), ("verity".into(), 9018));
}
