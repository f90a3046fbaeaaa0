//! The squashfs oracle itself (tests/common/oracle.rs): backhand, as the product reads
//! bundles, and libsquashfs (squashfs-ng) must see every inode type mksquashfs writes the
//! same way (named pipes and sockets are refused by the product), and the comparison
//! must notice a difference when there is one.

mod common;
use common::oracle::{compare, differences, read_backhand, read_libsquashfs};
use common::*;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;

/// A tree with the inode types a bundle may hold (fifos and sockets are added by the
/// tests that need them), odd sizes (empty, one block, block + fragment, sparse),
/// nested directories, a hard link and unusual permissions and owners.
fn tree(w: &Work) -> std::path::PathBuf {
    let d = w.path("tree");
    std::fs::create_dir_all(d.join("a/b/c")).unwrap();
    std::fs::write(d.join("manifest.raucm"), "[update]\ncompatible=henb-test\nversion=1\n").unwrap();
    std::fs::write(d.join("empty"), b"").unwrap();
    std::fs::write(d.join("a/block"), pseudo_random(128 * 1024, 1)).unwrap();
    std::fs::write(d.join("a/b/frag"), pseudo_random(128 * 1024 + 777, 2)).unwrap();
    let mut sparse = vec![0u8; 600 * 1024];
    sparse[300_000] = 1;
    std::fs::write(d.join("a/b/c/sparse"), sparse).unwrap();
    std::fs::hard_link(d.join("a/block"), d.join("a/b/hardlink")).unwrap();
    symlink("../block", d.join("a/b/up")).unwrap();
    symlink("/absolute/nowhere", d.join("dangling")).unwrap();
    std::fs::set_permissions(d.join("a/b/frag"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::fs::set_permissions(d.join("a/b/c"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

#[test]
fn both_readers_see_every_inode_type_alike() {
    let w = Work::new();
    let d = tree(&w);
    for (i, comp) in ["gzip", "xz", "zstd", "lz4"].iter().enumerate() {
        let sq = w.path(&format!("t.{comp}"));
        run_ok(
            Command::new("mksquashfs")
                .arg(&d)
                .arg(&sq)
                .args(["-noappend", "-quiet", "-no-progress", "-comp", comp])
                .args([
                    "-force-uid",
                    "1234",
                    "-force-gid",
                    "567",
                    "-p",
                    "chr c 600 0 0 1 3",
                    "-p",
                    "blk b 640 0 0 8 1",
                ]),
        );
        let n = compare(&sq).unwrap_or_else(|e| panic!("{comp}: {e}"));
        // root, manifest, empty, a, a/block, a/b, a/b/c, frag, sparse, hardlink, up,
        // dangling, and the two devices.
        assert_eq!(n, 14, "{comp}");
        let seen = read_libsquashfs(&sq).unwrap();
        let kinds: Vec<_> = seen.values().map(|s| s.what.split(' ').next().unwrap().to_string()).collect();
        for k in ["file", "dir", "symlink", "device"] {
            assert!(kinds.iter().any(|x| x == k), "{comp}: no {k} in {seen:?}");
        }
        let frag = &seen[std::path::Path::new("/a/b/frag")];
        assert_eq!((frag.mode, frag.uid, frag.gid), (0o4750, 1234, 567), "{comp}");
        assert_eq!(seen[std::path::Path::new("/a/b/up")].what, "symlink ../block");
        // The same bytes as the source files.
        let sha = sha256_hex(&std::fs::read(d.join("a/b/c/sparse")).unwrap());
        assert_eq!(seen[std::path::Path::new("/a/b/c/sparse")].what, format!("file 614400 {sha}"), "{comp}");
        if i == 0 {
            // A bundle around it (plain: squashfs + CMS + size) reads the same.
            let b = w.path("t.raucb");
            let mut bytes = std::fs::read(&sq).unwrap();
            bytes.resize(bytes.len().next_multiple_of(4096), 0);
            bytes.extend([0x30, 0x03, 0x02, 0x01, 0x00]);
            bytes.extend(5u64.to_be_bytes());
            std::fs::write(&b, bytes).unwrap();
            assert_eq!(compare(&b), Ok(14));
        }
    }
}

#[test]
fn the_comparison_notices_a_changed_byte_mode_and_missing_file() {
    let w = Work::new();
    let d = tree(&w);
    let sq = |name: &str| {
        let p = w.path(name);
        run_ok(Command::new("mksquashfs").arg(&d).arg(&p).args(["-noappend", "-quiet", "-no-progress", "-all-root"]));
        p
    };
    let before = sq("before.sqfs");
    let mut f = std::fs::read(d.join("a/b/frag")).unwrap();
    f[128 * 1024 + 5] ^= 1;
    std::fs::write(d.join("a/b/frag"), f).unwrap();
    std::fs::set_permissions(d.join("empty"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(d.join("dangling")).unwrap();
    let after = sq("after.sqfs");
    let diff = differences(&read_backhand(&before).unwrap(), &read_libsquashfs(&after).unwrap());
    let paths: Vec<_> = diff.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(paths, ["/a/b/frag", "/dangling", "/empty"], "{diff:#?}");
    // Unreadable input is reported by the reader that refuses it, never a panic.
    let cut = w.path("cut.sqfs");
    std::fs::write(&cut, &std::fs::read(&before).unwrap()[..4096]).unwrap();
    assert!(compare(&cut).unwrap_err().starts_with("backhand: "));
    assert!(read_libsquashfs(&cut).is_err());
}

/// Found by the differential fuzz target (fuzz/fuzz_targets/squashfs_diff.rs): a
/// directory entry whose type is 0 (no inode type). libsquashfs and unsquashfs take the
/// type from the inode and read the whole tree; backhand stopped reading the root
/// directory there without an error and listed an empty filesystem. The product now
/// refuses a tree with fewer names than inodes, through `info` as for any bundle.
#[test]
fn a_directory_listing_backhand_cuts_short_is_refused() {
    let w = Work::new();
    let c = w.content_with_digests("c", 10_000);
    std::fs::write(c.join("zz-last"), b"after the manifest").unwrap();
    let sq = w.path("cut.sqfs");
    // -noI: metadata uncompressed, so the entry can be edited in place.
    run_ok(Command::new("mksquashfs").arg(&c).arg(&sq).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-all-root",
        "-noI",
    ]));
    let mut bytes = std::fs::read(&sq).unwrap();
    let name = b"manifest.raucm";
    let at = bytes.windows(name.len()).position(|x| x == name).expect("the entry's name") - 4;
    assert_eq!(&bytes[at..at + 4], &[2, 0, 13, 0], "type 2 (file), name size - 1");
    bytes[at] = 0;
    std::fs::write(&sq, &bytes).unwrap();
    let theirs = read_libsquashfs(&sq).expect("libsquashfs reads it");
    assert!(theirs.contains_key(std::path::Path::new("/zz-last")), "{theirs:?}");
    let ours = read_backhand(&sq).unwrap_err();
    assert!(ours.starts_with("squashfs directory tree: "), "{ours}");
    let b = w.sign_plain(&sq, &["signer-rsa"], "sha256", "cut.raucb", &[]);
    let r = info(&w.conf(""), &b, &[]);
    assert_eq!(r.err(), ("squashfs".into(), 9018));
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("directory listing is cut short"), "{msg}");
}

/// Found by `squashfs_diff`: a directory entry typed as a named pipe whose inode is a
/// regular file. backhand takes a fifo's or socket's type from the entry alone, so it
/// listed a fifo where libsquashfs (which uses the inode) read the file. Bundles have no
/// use for either: the product refuses them, whatever the entry says.
#[test]
fn named_pipes_and_sockets_are_refused() {
    let w = Work::new();
    let d = tree(&w);
    for (name, pseudo) in [("pipe", "pipe i 644 0 0 f"), ("sock", "sock i 755 0 0 s")] {
        let sq = w.path(&format!("{name}.sqfs"));
        run_ok(Command::new("mksquashfs").arg(&d).arg(&sq).args(["-noappend", "-quiet", "-no-progress", "-p", pseudo]));
        let theirs = read_libsquashfs(&sq).expect("libsquashfs reads it");
        assert!(theirs.contains_key(std::path::Path::new(&format!("/{name}"))));
        let ours = read_backhand(&sq).unwrap_err();
        assert!(ours.contains(&format!("'/{name}' is a named pipe or socket")), "{ours}");
    }
}
