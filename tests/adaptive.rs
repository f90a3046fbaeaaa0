//! Adaptive updates (`adaptive=block-hash-index`): ext4 images made by Debian's mke2fs,
//! bundles made by Debian's rauc 1.8 and by us, installed from a file and from nginx
//! (through a counting proxy of ours), into file slots, with swtpm roots and
//! grub-editenv reading the boot order.

mod common;
use common::device::{grub_list, Device};
use common::web::{FaultProxy, Nginx, NginxOptions};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: usize = 1 << 20;

/// Files of an ext4 image: `count` files of pseudo-random bytes, 16 to 200 KiB, seeded
/// by their number; `changed` lists the files whose content differs (same size).
fn files(count: usize, changed: &[usize]) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let size = 16 * 1024 + (i * 7919 % 184) * 1024 + i;
            let seed = if changed.contains(&i) { 10_000 + i as u64 } else { i as u64 };
            (format!("f{i:03}.bin"), pseudo_random(size, seed))
        })
        .collect()
}

/// An ext4 image of `kib` KiB holding `files`, made reproducibly by mke2fs (fixed UUID,
/// hash seed, times): unchanged files land in the same blocks.
fn ext4(w: &common::Work, name: &str, files: &[(String, Vec<u8>)], kib: usize) -> Vec<u8> {
    let root = w.path(&format!("{name}.root"));
    std::fs::create_dir_all(&root).unwrap();
    let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    for (n, data) in files {
        std::fs::write(root.join(n), data).unwrap();
        std::fs::File::options().write(true).open(root.join(n)).unwrap().set_modified(t).unwrap();
    }
    std::fs::File::open(&root).unwrap().set_modified(t).unwrap();
    let img = w.path(name);
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-U", "4f3c1a9e-0d2b-4c55-9a51-6d1e2f3a4b5c"])
            .args(["-E", "hash_seed=0b6f7a2c-1d3e-4f50-8a9b-0c1d2e3f4a5b,root_owner=0:0"])
            .args(["-O", "^metadata_csum_seed"])
            .arg("-d")
            .arg(&root)
            .arg(&img)
            .arg(format!("{kib}K"))
            .env("E2FSPROGS_FAKE_TIME", "1600000000"),
    );
    std::fs::read(&img).unwrap()
}

/// Who builds the bundles.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bundler {
    Rauc,
    Ours,
}

/// A verity bundle of `image` (adaptive `methods`) built by `by`.
fn bundle(w: &common::Work, by: Bundler, image: &[u8], methods: &str, name: &str) -> PathBuf {
    bundle_as(w, by, "verity", image, methods, name, &[])
}

/// A `format` bundle of `image` (adaptive `methods`) built by `by`, with our bundler's
/// `extra` arguments.
fn bundle_as(
    w: &common::Work,
    by: Bundler,
    format: &str,
    image: &[u8],
    methods: &str,
    name: &str,
    extra: &[&str],
) -> PathBuf {
    let c = w.path(&format!("{name}.content"));
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("rootfs.ext4"), image).unwrap();
    std::fs::write(
        c.join("manifest.raucm"),
        format!(
            "[update]\ncompatible=henb-test\nversion=2.0\n\n[bundle]\nformat={format}\n\n\
             [image.rootfs]\nfilename=rootfs.ext4\nadaptive={methods}\n"
        ),
    )
    .unwrap();
    match by {
        Bundler::Ours => w.bundle(format, &c, &["signer-rsa"], name, extra),
        Bundler::Rauc => w.rauc_bundle(&c, name),
    }
}

/// Where the bundles come from.
enum From {
    File,
    /// nginx (kept running) behind a counting proxy.
    Nginx(#[allow(dead_code)] Nginx, FaultProxy),
}

impl From {
    fn start(d: &Device, nginx: bool) -> Self {
        if !nginx {
            return Self::File;
        }
        let www = d.w.path("www");
        std::fs::create_dir_all(&www).unwrap();
        let n = Nginx::start(d.w.dir.path(), &www, NginxOptions::default());
        let p = FaultProxy::start(n.port, common::web::Fault::None);
        Self::Nginx(n, p)
    }

    /// The argument `install` gets for `bundle`, and the proxy's count before.
    fn publish(&self, d: &Device, bundle: &Path) -> (String, u64) {
        match self {
            Self::File => (bundle.display().to_string(), 0),
            Self::Nginx(_, p) => {
                let name = bundle.file_name().unwrap().to_str().unwrap();
                std::fs::copy(bundle, d.w.path("www").join(name)).unwrap();
                (p.url(name), p.forwarded())
            }
        }
    }

    fn forwarded(&self) -> u64 {
        match self {
            Self::File => 0,
            Self::Nginx(_, p) => p.forwarded(),
        }
    }
}

struct Installed {
    moved: serde_json::Value,
    /// Bytes the proxy forwarded (0 from a file).
    forwarded: u64,
    bundle_len: u64,
}

/// Install `bundle` (from `src`); it must succeed and slot B must then hold `image`.
fn install_ok(d: &Device, src: &From, bundle: &Path, image: &[u8], what: &str) -> Installed {
    let (arg, before) = src.publish(d, bundle);
    let o = d.cli(&["install", "--json", &arg]);
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert!(o.status.success(), "{what}: {out} {}", String::from_utf8_lossy(&o.stderr));
    let slot = std::fs::read(d.w.path("slotB")).unwrap();
    assert!(slot[..image.len()] == *image, "{what}: slot B does not hold the image");
    assert!(grub_list(d).contains("ORDER=B A\n"), "{what}");
    // The next install starts from the same boot order.
    run_ok(Command::new("grub-editenv").arg(d.w.path("grubenv")).args(["set", "ORDER=A B"]));
    let moved = out["moved"].clone();
    let m = |k: &str| moved[k].as_u64().unwrap();
    assert_eq!(m("reused") + m("zero") + m("from-package"), image.len() as u64, "{what}: {moved}");
    Installed { moved, forwarded: src.forwarded() - before, bundle_len: std::fs::metadata(bundle).unwrap().len() }
}

/// The four cases the issue names, in one device: A (booted) holds v1.
fn cases(by: Bundler, nginx: bool) {
    let d = Device::new(false);
    let v1 = ext4(&d.w, "v1.ext4", &files(60, &[]), 16 << 10);
    let v2 = ext4(&d.w, "v2.ext4", &files(60, &[7]), 16 << 10); // 1 file in 60: about 2 %
                                                                // Resized, and not a whole number of squashfs blocks: its tail is in a fragment.
    let v3 = ext4(&d.w, "v3.ext4", &files(60, &[7]), (20 << 10) + 12);
    std::fs::File::options().write(true).open(d.w.path("slotA")).unwrap().write_all_at(&v1, 0).unwrap();
    let src = From::start(&d, nginx);
    let b1 = bundle(&d.w, by, &v1, "block-hash-index", "v1.raucb");
    let b2 = bundle(&d.w, by, &v2, "block-hash-index", "v2.raucb");
    let b3 = bundle(&d.w, by, &v3, "block-hash-index", "v3.raucb");
    let tag = format!("{by:?}, nginx {nginx}");

    // Identical image: every block is on the device; only metadata is fetched.
    let i = install_ok(&d, &src, &b1, &v1, &format!("{tag}: identical"));
    assert_eq!(i.moved["from-package"], 0, "{tag}: identical: {}", i.moved);
    if nginx {
        // The trailer, CMS, squashfs tables, the index (0.8 % of the image) and the tree.
        assert!(i.forwarded * 10 < i.bundle_len, "{tag}: identical: {} of {}", i.forwarded, i.bundle_len);
    }
    // B now holds v1 and its index: 2 % of the files changed.
    let i = install_ok(&d, &src, &b2, &v2, &format!("{tag}: 2% changed"));
    let from = i.moved["from-package"].as_u64().unwrap();
    assert!(from > 0 && from * 10 < v2.len() as u64, "{tag}: 2% changed: {}", i.moved);
    if nginx {
        assert!(i.forwarded * 10 < i.bundle_len, "{tag}: 2% changed: {} of {}", i.forwarded, i.bundle_len);
    }
    // A resized file system.
    let i = install_ok(&d, &src, &b3, &v3, &format!("{tag}: resized"));
    assert!(i.moved["reused"].as_u64().unwrap() > 0, "{tag}: resized: {}", i.moved);
    // A target holding garbage (its stored index is now stale): blocks come from A.
    std::fs::File::options()
        .write(true)
        .open(d.w.path("slotB"))
        .unwrap()
        .write_all_at(&pseudo_random(24 * MIB, 99), 0)
        .unwrap();
    let i = install_ok(&d, &src, &b2, &v2, &format!("{tag}: garbage in the target"));
    let from = i.moved["from-package"].as_u64().unwrap();
    assert!(from * 10 < v2.len() as u64, "{tag}: garbage in the target: {}", i.moved);
}

use std::os::unix::fs::FileExt;

#[test]
fn rauc_bundles_install_adaptively_from_a_file() {
    cases(Bundler::Rauc, false);
}

#[test]
fn rauc_bundles_install_adaptively_from_nginx() {
    cases(Bundler::Rauc, true);
}

#[test]
fn our_bundles_install_adaptively_from_a_file() {
    cases(Bundler::Ours, false);
}

#[test]
fn our_bundles_install_adaptively_from_nginx() {
    cases(Bundler::Ours, true);
}

/// Our bundler writes the index rauc writes, and rauc reads our bundle.
#[test]
fn our_index_is_raucs_and_rauc_reads_our_bundles() {
    let w = common::Work::new();
    let img = ext4(&w, "i.ext4", &files(20, &[]), 8 << 10);
    let ours = bundle(&w, Bundler::Ours, &img, "block-hash-index", "ours.raucb");
    let theirs = bundle(&w, Bundler::Rauc, &img, "block-hash-index", "theirs.raucb");
    let cat =
        |b: &Path| run_ok(Command::new("unsquashfs").arg("-cat").arg(b).arg("rootfs.ext4.block-hash-index")).stdout;
    let index = cat(&ours);
    assert_eq!(index.len(), img.len() / 4096 * 32);
    assert_eq!(index, cat(&theirs));
    assert_eq!(&index[..32], &sha2_of(&img[..4096])[..]);
    let rc = w.path("rauc.conf");
    std::fs::write(
        &rc,
        format!(
            "[system]\ncompatible=henb-test\nbootloader=noop\n\n[keyring]\npath={}\ncheck-purpose=codesign\n",
            cert("root").display()
        ),
    )
    .unwrap();
    let o = Command::new("rauc").arg(format!("--conf={}", rc.display())).arg("info").arg(&ours).output().unwrap();
    assert!(o.status.success(), "rauc info: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Adaptive:  block-hash-index"));
    // Our info shows the methods.
    let conf = w.conf("");
    let i = info(&conf, &theirs, &[]);
    assert_eq!(i.ok()["images"][0]["adaptive"], serde_json::json!(["block-hash-index"]));
}

fn sha2_of(b: &[u8]) -> Vec<u8> {
    hex::decode(sha256_hex(b)).unwrap()
}

/// As rauc: an image that is not a whole number of 4 KiB blocks has no index (the bundle
/// is not built), and an unknown method is refused by the bundler.
#[test]
fn the_bundler_refuses_what_rauc_refuses() {
    let w = common::Work::new();
    for (size, methods, want) in [
        (5000, "block-hash-index", "multiple of 4096"),
        (8192, "block-hash-index;lzip-delta", "unsupported adaptive method 'lzip-delta'"),
    ] {
        let c = w.path(&format!("c{size}"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("rootfs.ext4"), pseudo_random(size, 1)).unwrap();
        std::fs::write(
            c.join("manifest.raucm"),
            format!("[update]\ncompatible=henb-test\n\n[image.rootfs]\nfilename=rootfs.ext4\nadaptive={methods}\n"),
        )
        .unwrap();
        let o = Command::new(common::BIN)
            .args(["bundle", "--format", "verity", "--cert"])
            .arg(cert("signer-rsa"))
            .arg("--key")
            .arg(key("signer-rsa"))
            .arg(&c)
            .arg(w.path(&format!("b{size}")))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{size} {methods}: {err}");
        assert!(!w.path(&format!("b{size}")).exists());
    }
}

/// A method this agent does not know is ignored: the image is installed whole (RAUC's
/// rule), from a bundle made with mksquashfs and openssl.
#[test]
fn an_unknown_adaptive_method_installs_the_whole_image() {
    let d = Device::new(false);
    let c = d.w.content_with_digests("c", 3 * MIB);
    let m = std::fs::read_to_string(c.join("manifest.raucm")).unwrap();
    std::fs::write(c.join("manifest.raucm"), m + "adaptive=lzip-delta;\n").unwrap();
    let b = d.w.openssl_plain(&c, &["signer-rsa"], "sha256", "u.raucb");
    let (code, out) = d.install(&b);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["moved"]["from-package"], 3 * MIB as u64);
    assert_eq!(out["moved"]["reused"], 0);
}

/// A slot changed after its index was made: the blocks that no longer match are fetched
/// instead, never written unverified.
#[test]
fn a_block_that_no_longer_matches_its_index_is_fetched_instead() {
    let d = Device::new(false);
    let v1 = ext4(&d.w, "v1.ext4", &files(40, &[]), 12 << 10);
    std::fs::File::options().write(true).open(d.w.path("slotA")).unwrap().write_all_at(&v1, 0).unwrap();
    let o = d.cli(&["slot", "index"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.w.path("data/slot.rootfs.0/hash-unknown/block-hash-index").exists());
    // 3 blocks of file data in A change after the index was made.
    let first_data = (0..v1.len() / 4096).find(|&b| v1[b * 4096..b * 4096 + 4096] == files(40, &[])[5].1[..4096]);
    let at = first_data.expect("file 5 starts at a block") as u64 * 4096;
    std::fs::File::options().write(true).open(d.w.path("slotA")).unwrap().write_all_at(&[0xee; 3 * 4096], at).unwrap();
    let src = From::start(&d, true);
    let b = bundle(&d.w, Bundler::Ours, &v1, "block-hash-index", "v1.raucb");

    // The 3 changed blocks come from the bundle, the rest from A.
    let i = install_ok(&d, &src, &b, &v1, "changed slot");
    assert_eq!(i.moved["from-package"], 3 * 4096, "{}", i.moved);
    // B's index is stored under its image's SHA-256; marked bad, it goes.
    let b_index = d.w.path(&format!("data/slot.rootfs.1/hash-{}/block-hash-index", sha256_hex(&v1)));
    assert_eq!(std::fs::read(&b_index).unwrap().len(), v1.len() / 4096 * 32);
    let o = d.cli(&["mark", "bad", "other"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_dir(d.w.path("data/slot.rootfs.1")).unwrap().count(), 0);
}

/// With the re-hash of reused blocks switched off (a test switch standing for a bug in
/// the reuse path), the image's signed digest refuses what was assembled (9018) and
/// nothing is activated.
#[cfg(feature = "failpoints")]
#[test]
fn the_signed_digest_catches_a_block_reused_unverified() {
    let d = Device::new(false);
    let v1 = ext4(&d.w, "v1.ext4", &files(40, &[]), 12 << 10);
    std::fs::File::options().write(true).open(d.w.path("slotA")).unwrap().write_all_at(&v1, 0).unwrap();
    let b = bundle(&d.w, Bundler::Ours, &v1, "block-hash-index", "v1.raucb");
    let o = d
        .cmd_as("A", &["install", "--json", b.to_str().unwrap()])
        .env("HENB_FAILPOINT", "adaptive.reuse-unchecked")
        .output()
        .unwrap();
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(out["error"]["cwmp-fault"], 9018, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("differs from the signed"), "{out}");
    let l = grub_list(&d);
    assert!(l.contains("ORDER=A B\n") && l.contains("B_OK=0\n"), "{l}");
    // No index is stored for what was written.
    assert_eq!(std::fs::read_dir(d.w.path("data/slot.rootfs.1")).map(|r| r.count()).unwrap_or(0), 0);
}

/// A plain adaptive bundle (squashfs blocks of 4 KiB) from a file: its blocks are read
/// from the authenticated payload.
#[test]
fn a_plain_adaptive_bundle_with_small_blocks_installs() {
    let d = Device::new(false);
    let v1 = ext4(&d.w, "v1.ext4", &files(30, &[]), 8 << 10);
    let v2 = ext4(&d.w, "v2.ext4", &files(30, &[3]), 8 << 10);
    std::fs::File::options().write(true).open(d.w.path("slotA")).unwrap().write_all_at(&v1, 0).unwrap();
    let b = bundle_as(&d.w, Bundler::Ours, "plain", &v2, "block-hash-index", "p.raucb", &["--block-size", "4K"]);
    let i = install_ok(&d, &From::File, &b, &v2, "plain, 4K blocks");
    let from = i.moved["from-package"].as_u64().unwrap();
    let changed = files(30, &[3])[3].1.len() as u64;
    assert!(from >= changed && from < changed + 8 * 4096, "{}", i.moved);
}

/// Connections cut every 64 KiB: an adaptive install resumes its planned ranges.
#[test]
fn an_adaptive_install_resumes_after_cuts() {
    let d = Device::new(false);
    let mut c = std::fs::read_to_string(&d.conf).unwrap();
    c.push_str("\n[download]\nretry-delay=0.05\nidle-timeout=2\nretries=5\n");
    std::fs::write(&d.conf, c).unwrap();
    let v1 = ext4(&d.w, "v1.ext4", &files(40, &[]), 12 << 10);
    let v2 = ext4(&d.w, "v2.ext4", &files(40, &[1, 2, 3, 4]), 12 << 10);
    std::fs::File::options().write(true).open(d.w.path("slotA")).unwrap().write_all_at(&v1, 0).unwrap();
    let www = d.w.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let b = bundle(&d.w, Bundler::Rauc, &v2, "block-hash-index", "v2.raucb");
    std::fs::copy(&b, www.join("v2.raucb")).unwrap();
    let nginx = Nginx::start(d.w.dir.path(), &www, NginxOptions::default());
    let proxy = FaultProxy::start(nginx.port, common::web::Fault::CutEvery(64 << 10));
    let o = d.cli(&["install", "--json", &proxy.url("v2.raucb")]);
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert!(o.status.success(), "{out} {}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(d.w.path("slotB")).unwrap()[..v2.len()] == v2[..]);
    assert!(out["moved"]["reused"].as_u64().unwrap() > 0, "{out}");
    assert!(out["moved"]["fetched"].as_u64().unwrap() * 3 < b.metadata().unwrap().len(), "{out}");
}

/// A block of the bundle changed on the server, in the part an adaptive install fetches:
/// the verity tree refuses it (9018, kind verity) and nothing is activated.
#[test]
fn a_tampered_block_fetched_adaptively_is_refused() {
    let d = Device::new(false);
    let v1 = ext4(&d.w, "v1.ext4", &files(30, &[]), 8 << 10);
    let v2 = ext4(&d.w, "v2.ext4", &files(30, &[3]), 8 << 10);
    std::fs::File::options().write(true).open(d.w.path("slotA")).unwrap().write_all_at(&v1, 0).unwrap();
    let b = bundle_as(&d.w, Bundler::Ours, "verity", &v2, "block-hash-index", "v2.raucb", &["--block-size", "4K"]);
    // The changed file's bytes are stored as they are (random data in 4 KiB blocks does
    // not compress).
    let mut bytes = std::fs::read(&b).unwrap();
    let needle = &files(30, &[3])[3].1[..4096];
    let at = bytes.windows(4096).position(|w| w == needle).expect("the changed file in the bundle");
    bytes[at + 100] ^= 1;
    std::fs::write(&b, bytes).unwrap();
    let src = From::start(&d, true);
    let (arg, _) = src.publish(&d, &b);
    let o = d.cli(&["install", "--json", &arg]);
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(out["error"]["cwmp-fault"], 9018, "{out}");
    assert_eq!(out["error"]["kind"], "verity", "{out}");
    assert!(grub_list(&d).contains("ORDER=A B\n"));
}
