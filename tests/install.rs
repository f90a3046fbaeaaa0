//! Installing into file-backed slots with a real swtpm for the roots, Debian's
//! grub-editenv and fw_printenv as readers of the boot order.

mod common;
use common::device::{grub_list, Device, SLOT};
use common::switchfs::SwitchFs;
use common::*;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn install_each_format_into_the_inactive_slot() {
    for format in ["verity", "plain", "tr069"] {
        let d = Device::new(false);
        let c = d.w.content("c", 3_000_000, "\n[meta.anti-rollback]\nsecurity-version=1\n");
        let p = d.w.bundle(format, &c, &["signer-rsa"], "u.pkg", &[]);
        let (code, out) = d.install(&p);
        assert_eq!(code, 0, "{format}: {out}");
        assert_eq!(out["slot"], "rootfs.1");
        let slot = std::fs::read(d.w.path("slotB")).unwrap();
        assert_eq!(sha256_hex(&slot[..3_000_000]), sha256_hex(&pseudo_random(3_000_000, 7)), "{format}");
        assert_eq!(std::fs::read(d.w.path("slotA")).unwrap(), vec![0u8; SLOT as usize], "the booted slot is untouched");
        let l = grub_list(&d);
        assert!(l.contains("ORDER=B A\n") && l.contains("B_OK=1\n") && l.contains("B_TRY=0\n"), "{format}: {l}");
        let s = d.status();
        assert_eq!(s["primary"], "B");
        assert_eq!(s["slots"][1]["version"], "1.2.3");
        assert_eq!(s["last-result"]["fault-code"], 0);
        assert_eq!(s["last-result"]["command-key"], "ck-1");
        assert_eq!(s["pending"]["bootname"], "B");
    }
}

#[test]
fn install_with_uboot_and_confirm_after_the_reboot() {
    let d = Device::new(true);
    let c = d.w.content("c", 1_000_000, "\n[meta.anti-rollback]\nsecurity-version=4\n");
    let p = d.w.bundle("verity", &c, &["signer-p256"], "u.raucb", &[]);
    assert_eq!(d.install(&p).0, 0);
    let env =
        String::from_utf8(run_ok(Command::new("fw_printenv").arg("-c").arg(d.w.path("fw_env.config"))).stdout).unwrap();
    assert!(
        env.contains("BOOT_ORDER=B A\n") && env.contains("BOOT_B_LEFT=3\n") && env.contains("bootcmd=boot\n"),
        "{env}"
    );
    // The reboot: B comes up and confirms itself; the anti-rollback minimum follows.
    d.t.reset();
    let o = Command::new(BIN)
        .arg("--conf")
        .arg(&d.conf)
        .args(["--override-boot-slot", "B", "mark", "good"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(BIN).arg("--conf").arg(&d.conf).args(["security-version"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("minimum security version: 4"));
    let s: serde_json::Value = serde_json::from_slice(
        &Command::new(BIN)
            .arg("--conf")
            .arg(&d.conf)
            .args(["--override-boot-slot", "B", "status", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(s["pending"], serde_json::Value::Null);
    assert_eq!(s["slots"][1]["status"], "Active");
}

/// Refusals decided before anything is written leave the boot environment byte-identical
/// and record the fault.
#[test]
fn refusals_before_writing_change_nothing() {
    let d = Device::new(false);
    let c = d.w.content("c", 500_000, "\n[meta.anti-rollback]\nsecurity-version=1\n");
    let good_plain = std::fs::read(d.w.bundle("plain", &c, &["signer-rsa"], "p.raucb", &[])).unwrap();
    let mut tampered_plain = good_plain.clone();
    tampered_plain[300_000] ^= 1; // payload: plain bundles are authenticated before writing
    let untrusted = d.w.bundle("verity", &c, &["signer-untrusted"], "untrusted.raucb", &[]);
    let other = d.w.content("o", 1000, "").join("manifest.raucm");
    std::fs::write(&other, "[update]\ncompatible=other\nversion=1\n\n[image.rootfs]\nfilename=rootfs.img\n").unwrap();
    let foreign = d.w.bundle("verity", other.parent().unwrap(), &["signer-rsa"], "foreign.raucb", &[]);
    let too_big = d.w.content("big", (SLOT + 4096) as usize, "");
    let too_big = d.w.bundle("verity", &too_big, &["signer-rsa"], "big.raucb", &[]);
    let tampered = d.w.path("tampered.raucb");
    std::fs::write(&tampered, &tampered_plain).unwrap();
    let verity = std::fs::read(d.w.bundle("verity", &c, &["signer-rsa"], "v.raucb", &[])).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = d.w.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let truncated = write("truncated.raucb", &verity[..verity.len() - 100]);
    let mut appended = verity.clone();
    appended.extend([0u8; 4096]);
    let appended = write("appended.raucb", &appended);
    let n = u64::from_be_bytes(verity[verity.len() - 8..].try_into().unwrap()) as usize;
    let mut cms_flip = verity.clone();
    let at = verity.len() - 8 - n / 2;
    cms_flip[at] ^= 1;
    let cms_flip = write("cms.raucb", &cms_flip);
    let expired =
        d.w.openssl_plain(&d.w.content_with_digests("cd", 10_000), &["signer-expired"], "sha256", "expired.raucb");
    let sha1 = d.w.bundle("tr069", &c, &["signer-rsa"], "sha1.tr069", &["--legacy-sha1"]);
    let cases: Vec<(PathBuf, &str, u64)> = vec![
        (tampered, "digest-mismatch", 9019),
        (untrusted, "untrusted", 9019),
        (foreign, "incompatible", 9001),
        (too_big, "slot", 9001),
        (truncated, "", 0),
        (appended, "", 0),
        (cms_flip, "", 0),
        (expired, "untrusted", 9019),
        (sha1, "untrusted", 9019),
    ];
    for (pkg, kind, fault) in cases {
        let before = (d.boot_env(), std::fs::read(d.w.path("slotB")).unwrap());
        let (code, out) = d.install(&pkg);
        assert_ne!(code, 0);
        let got = (out["error"]["kind"].as_str().unwrap(), out["error"]["cwmp-fault"].as_u64().unwrap());
        if kind.is_empty() {
            // Structural damage: whichever check sees it first; a format or signature fault.
            assert!([9017, 9018, 9019].contains(&got.1), "{out}");
        } else {
            assert_eq!(got, (kind, fault), "{out}");
        }
        let (kind, fault) = got;
        assert_eq!(d.boot_env(), before.0, "{kind}: boot environment changed");
        assert_eq!(std::fs::read(d.w.path("slotB")).unwrap(), before.1, "{kind}: slot written");
        let s = d.status();
        assert_eq!(s["last-result"]["fault-code"], fault);
        assert_eq!(s["last-result"]["kind"], kind);
        assert_eq!(s["primary"], "A");
    }
    // Downgrade: after the minimum is raised to 2, a security version 1 package is refused.
    assert!(d.cli(&["security-version", "--raise", "2"]).status.success());
    let before = d.boot_env();
    let (_, out) = d.install(&d.w.path("p.raucb"));
    assert_eq!(out["error"]["kind"], "downgrade");
    assert_eq!(d.boot_env(), before);
}

/// Tampering that only the data shows (a verity data block, a verity tree block, a
/// TR-069 image byte) is found before anything is written: the boot environment and the
/// slot stay byte-identical, and the fault is recorded.
#[test]
fn tampered_data_is_refused_before_writing() {
    let d = Device::new(false);
    let c = d.w.content("c", 2_000_000, "");
    for (format, at) in [("verity", 1_000_000usize), ("verity-tree", 0), ("tr069", 1000)] {
        let p = d.w.bundle(format.trim_end_matches("-tree"), &c, &["signer-rsa"], &format!("u.{format}"), &[]);
        let mut b = std::fs::read(&p).unwrap();
        let at = match format {
            "tr069" => b.len() - at,
            "verity-tree" => {
                // The tree sits right before the CMS: flip its last byte.
                let n = u64::from_be_bytes(b[b.len() - 8..].try_into().unwrap()) as usize;
                b.len() - 8 - n - 1
            }
            _ => at,
        };
        b[at] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let before = (d.boot_env(), std::fs::read(d.w.path("slotB")).unwrap());
        let (code, out) = d.install(&p);
        assert_eq!(code, 1, "{out}");
        assert_eq!(out["error"]["cwmp-fault"], 9018, "{format}: {out}");
        assert_eq!(d.boot_env(), before.0, "{format}: boot environment changed");
        assert_eq!(std::fs::read(d.w.path("slotB")).unwrap(), before.1, "{format}: slot written");
        assert_eq!(d.status()["last-result"]["fault-code"], 9018);
        assert_eq!(d.status()["primary"], "A");
    }
}

#[test]
fn a_package_open_for_writing_is_refused_and_a_second_install_is_busy() {
    let d = Device::new(false);
    let c = d.w.content("c", 200_000, "");
    let p = d.w.bundle("verity", &c, &["signer-rsa"], "u.raucb", &[]);
    let before = d.boot_env();
    let writer = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    let (code, out) = d.install(&p);
    assert_eq!((code, out["error"]["kind"].as_str()), (3, Some("access")), "{out}");
    assert_eq!(d.boot_env(), before);
    drop(writer);
    // Another install holds the lock: busy (9001).
    let lock = std::fs::File::create(d.w.path("data").join("install.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let (_, out) = d.install(&p);
    assert_eq!((out["error"]["kind"].as_str(), out["error"]["cwmp-fault"].as_u64()), (Some("busy"), Some(9001)));
    drop(held);
    assert_eq!(d.install(&p).0, 0);
}

/// The package changes while it is installed: an open for writing breaks the lease (the
/// writer waits; the install is refused), a file renamed over the path is never read
/// (the install keeps its descriptor). Refused, or installed from the original bytes;
/// never a mix.
#[test]
fn a_package_changed_during_the_install_is_refused_or_installed_intact() {
    let d = Device::new(false);
    let size = 48_000_000;
    let c = d.w.content("c", size, "");
    let p = d.w.bundle("plain", &c, &["signer-rsa"], "u.raucb", &[]);
    let original = pseudo_random(size, 7);
    // 1. A writer opens the package while the install runs.
    let child = Command::new(BIN)
        .arg("--conf")
        .arg(&d.conf)
        .args(["--override-boot-slot", "A", "install", "--json", p.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the target is being written (status commits "Downloading" just before).
    let status = d.w.path("data").join("status.json");
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&status).unwrap_or_default().contains("Downloading") {
        assert!(t0.elapsed().as_secs() < 30, "install never started writing");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut writer = std::fs::OpenOptions::new().write(true).open(&p).unwrap(); // waits for the lease
    use std::io::Write;
    writer.write_all(b"tampered").unwrap();
    let out = child.wait_with_output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let slot = std::fs::read(d.w.path("slotB")).unwrap();
    eprintln!("writer during install: {}", if out.status.success() { "installed intact" } else { "refused" });
    if out.status.success() {
        assert_eq!(&slot[..size], &original[..], "installed, so from the original bytes");
    } else {
        assert_eq!(j["error"]["kind"], "package-modified", "{j}");
        assert!(grub_list(&d).contains("ORDER=A B\n"));
    }
    // 2. Another file renamed over the path mid-install: the original is installed.
    let p2 = d.w.bundle("plain", &c, &["signer-rsa"], "u2.raucb", &[]);
    let child = Command::new(BIN)
        .arg("--conf")
        .arg(&d.conf)
        .args(["--override-boot-slot", "A", "install", p2.to_str().unwrap()])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::fs::write(d.w.path("evil"), b"not a package").unwrap();
    std::fs::rename(d.w.path("evil"), &p2).unwrap();
    let st = child.wait_with_output().unwrap().status;
    assert!(st.success());
    assert_eq!(&std::fs::read(d.w.path("slotB")).unwrap()[..size], &original[..]);
}

#[test]
fn optional_read_back_of_the_written_slot() {
    let d = Device::new(false);
    let mut conf = std::fs::read_to_string(&d.conf).unwrap();
    conf.push_str("\n[install]\nverify-written=true\n");
    std::fs::write(&d.conf, conf).unwrap();
    let c = d.w.content("c", 3_000_000, "");
    let p = d.w.bundle("verity", &c, &["signer-rsa"], "u.raucb", &[]);
    assert_eq!(d.install(&p).0, 0);
    assert_eq!(std::fs::read(d.w.path("slotB")).unwrap()[..3_000_000], pseudo_random(3_000_000, 7)[..]);
}

/// Step 9, finding 8: a FIFO (or a character device, or a directory) given as the
/// package never blocks `info` or `install`: refused at once as not a regular file or
/// block device (could not check, 9016), the slot and boot order untouched.
#[test]
fn special_files_are_refused_without_blocking() {
    let d = Device::new(false);
    let fifo = d.w.path("pkg.fifo");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let env_before = d.boot_env();
    for (path, what) in
        [(fifo.clone(), "a FIFO"), (PathBuf::from("/dev/null"), "a character device"), (d.w.path(""), "a directory")]
    {
        for args in [vec!["info", "--json"], vec!["install", "--json", "--command-key", "k"]] {
            let mut c = d.cmd_as("A", &args);
            let mut child =
                c.arg(&path).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break s;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{args:?} on {what} blocked");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            };
            let out = child.wait_with_output().unwrap();
            assert_eq!(status.code(), Some(3), "{args:?} {what}");
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let msg = j["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.contains(what), "{args:?}: {j}");
            assert_eq!(j["error"]["cwmp-fault"], 9016, "{args:?}: {j}");
        }
    }
    assert_eq!(d.boot_env(), env_before);
}

/// Step 9, finding 7: a data directory that another user could write into is refused
/// (install and status: could not check), and a lock or state file planted as a symlink
/// is never followed: the file it points to keeps its bytes.
#[test]
fn data_directory_is_private_and_links_in_it_are_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let d = Device::new(false);
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    let data = conf.lines().find_map(|l| l.strip_prefix("data-directory=")).map(PathBuf::from).expect("data-directory");
    let c = d.w.content("c", 10_000, "");
    let pkg = d.w.bundle("verity", &c, &["signer-rsa"], "p.raucb", &[]);
    // A root-only file elsewhere, and symlinks to it planted in the data directory.
    let victim = d.w.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::create_dir_all(&data).unwrap();
    for name in ["install.lock", "status.lock"] {
        let _ = std::fs::remove_file(data.join(name));
        std::os::unix::fs::symlink(&victim, data.join(name)).unwrap();
    }
    let (code, j) = d.install(&pkg);
    assert_eq!(code, 3, "{j}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    for name in ["install.lock", "status.lock"] {
        std::fs::remove_file(data.join(name)).unwrap();
    }
    // World-writable: refused before anything is written.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let env_before = d.boot_env();
    let (code, j) = d.install(&pkg);
    assert_eq!(code, 3, "{j}");
    assert!(j["error"]["message"].as_str().unwrap_or_default().contains("writable by group or others"), "{j}");
    assert_eq!(d.boot_env(), env_before);
    assert_ne!(d.cli(&["status", "--json"]).status.code(), Some(0));
    // Put right, the same install goes through.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, j) = d.install(&pkg);
    assert_eq!(code, 0, "{j}");
}

/// `rootfs.img` of `size` bytes from `seed`, listed with its digest under `[image.rootfs]`.
fn content_of(d: &Device, name: &str, size: usize, seed: u64) -> PathBuf {
    let c = d.w.path(name);
    std::fs::create_dir_all(&c).unwrap();
    let img = pseudo_random(size, seed);
    std::fs::write(c.join("rootfs.img"), &img).unwrap();
    std::fs::write(
        c.join("manifest.raucm"),
        format!(
            "[update]\ncompatible=henb-test\nversion=6.6.6\n\n[image.rootfs]\nfilename=rootfs.img\nsha256={}\nsize={size}\n",
            sha256_hex(&img)
        ),
    )
    .unwrap();
    c
}

/// `forged` squashfs padded to `genuine`'s payload, followed by `genuine`'s CMS and
/// trailer: a genuine signature next to contents nobody signed.
fn behind_genuine_cms(genuine: &std::path::Path, forged: &std::path::Path, out: &std::path::Path) {
    let g = std::fs::read(genuine).unwrap();
    let cms_len = u64::from_be_bytes(g[g.len() - 8..].try_into().unwrap()) as usize;
    let payload = g.len() - 8 - cms_len;
    let mut b = std::fs::read(forged).unwrap();
    assert!(b.len() <= payload, "the forged squashfs ({}) must fit the payload ({payload})", b.len());
    b.resize(payload, 0);
    b.extend_from_slice(&g[payload..]);
    std::fs::write(out, b).unwrap();
}

/// The review's finding 2: a plain bundle is hashed in one pass and read again for the
/// manifest and images; on a FUSE file system that switched to an unsigned squashfs after
/// the hash pass, the unsigned image was installed and made primary. Plain bundles are
/// now refused on such file systems (before a byte is read twice); verity bundles, whose
/// every block is checked as it is used, still install from them.
#[test]
fn a_plain_bundle_on_a_file_system_that_can_change_between_reads_is_refused() {
    let d = Device::new(false);
    let genuine = d.w.bundle("plain", &content_of(&d, "c-genuine", 1 << 20, 1), &["signer-rsa"], "genuine.raucb", &[]);
    let forged_sqfs = d.w.mksquashfs(&content_of(&d, "c-forged", (1 << 20) - 16384, 2), "forged.sqfs");
    let switched = d.w.path("switched.raucb");
    behind_genuine_cms(&genuine, &forged_sqfs, &switched);
    let verity = d.w.bundle("verity", &content_of(&d, "c-verity", 1 << 20, 3), &["signer-rsa"], "v.raucb", &[]);
    let Some(fs) = SwitchFs::mount(&d.w, &[("plain.raucb", &genuine, &switched), ("verity.raucb", &verity, &verity)])
    else {
        eprintln!(
            "FUSE is not available here (no /dev/fuse): the file-system check itself is shown by \
             source::tests::plain_bundles_are_read_only_from_local_file_systems"
        );
        return;
    };
    let env = d.boot_env();
    let plain = fs.dir.join("plain.raucb");
    for args in [vec!["install", "--json", "--command-key", "k"], vec!["info", "--json"]] {
        let mut a = args.clone();
        a.push(plain.to_str().unwrap());
        let o = d.cli(&a);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        assert_eq!(o.status.code(), Some(3), "{args:?}: {j}");
        assert_eq!(j["error"]["kind"], "unsafe-file-system", "{args:?}: {j}");
        assert_eq!(j["error"]["cwmp-fault"], 9016);
        assert!(j["error"]["message"].as_str().unwrap().contains("FUSE"), "{j}");
    }
    assert_eq!(d.boot_env(), env, "nothing activated");
    assert!(std::fs::read(d.w.path("slotB")).unwrap().iter().all(|b| *b == 0), "nothing written");
    // The same genuine bundle from local storage installs: the refusal is the storage's.
    assert_eq!(d.install(&genuine).0, 0);
    // A verity bundle from the FUSE mount installs.
    let (code, out) = d.install(&fs.dir.join("verity.raucb"));
    assert_eq!(code, 0, "{out}");
}

/// The review's finding 6: a genuine CMS copied next to a small squashfs listing a large
/// sparse image. Nothing of it is parsed before its hash is known: refused as a
/// signature mismatch, by `info` as by `install`.
#[test]
fn unauthenticated_contents_are_never_parsed() {
    let d = Device::new(false);
    let genuine = d.w.bundle("plain", &content_of(&d, "c-genuine", 300_000, 1), &["signer-rsa"], "genuine.raucb", &[]);
    let c = d.w.path("c-sparse");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::File::create(c.join("rootfs.img")).unwrap().set_len(1 << 30).unwrap();
    std::fs::write(
        c.join("manifest.raucm"),
        "[update]\ncompatible=henb-test\nversion=9\n\n[image.rootfs]\nfilename=rootfs.img\nsha256=00000000000000000000000000000000000000000000000000000000000000ff\nsize=1073741824\n",
    )
    .unwrap();
    let sq = d.w.mksquashfs(&c, "sparse.sqfs");
    let forged = d.w.path("forged.raucb");
    behind_genuine_cms(&genuine, &sq, &forged);
    for args in [vec!["info", "--json"], vec!["install", "--json"]] {
        let mut a = args.clone();
        a.push(forged.to_str().unwrap());
        let o = d.cli(&a);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        assert_eq!(j["error"]["kind"], "digest-mismatch", "{args:?}: {j}");
        assert_eq!(j["error"]["cwmp-fault"], 9019);
    }
}

/// The review's finding 9: `[image.rootfs]` and `[image.rootfs.var2]` were both written
/// into one slot. RAUC's rule: the device's variant picks its image, else the default.
#[test]
fn one_image_per_slot_chosen_by_the_device_variant() {
    let d = Device::new(false);
    let c = d.w.path("c-variants");
    std::fs::create_dir_all(&c).unwrap();
    let (default, var2) = (pseudo_random(200_000, 11), pseudo_random(150_000, 12));
    std::fs::write(c.join("default.img"), &default).unwrap();
    std::fs::write(c.join("var2.img"), &var2).unwrap();
    std::fs::write(
        c.join("manifest.raucm"),
        "[update]\ncompatible=henb-test\nversion=2\n\n[image.rootfs]\nfilename=default.img\n\n[image.rootfs.var2]\nfilename=var2.img\n",
    )
    .unwrap();
    let p = d.w.bundle("verity", &c, &["signer-rsa"], "variants.raucb", &[]);
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    for (variant, image) in [(Some("var2"), &var2), (Some("var3"), &default), (None, &default)] {
        let text = match variant {
            Some(v) => conf.replacen("[system]\n", &format!("[system]\nvariant-name={v}\n"), 1),
            None => conf.clone(),
        };
        std::fs::write(&d.conf, text).unwrap();
        let (code, out) = d.install(&p);
        assert_eq!(code, 0, "{variant:?}: {out}");
        let slot = std::fs::read(d.w.path("slotB")).unwrap();
        assert_eq!(&slot[..image.len()], &image[..], "{variant:?}: the chosen image, once");
        assert_eq!(d.status()["slots"][1]["sha256"], sha256_hex(image), "{variant:?}");
        let o = d.cli(&["info", "--json", p.to_str().unwrap()]);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["images"].as_array().unwrap().len(), 2, "info lists every variant's image, as rauc info: {j}");
        std::fs::write(d.w.path("slotB"), vec![0u8; SLOT as usize]).unwrap();
    }
    // A variant file that cannot be read (or is empty) is not "no variant": the device
    // cannot tell which image is its own, so nothing is chosen or written.
    let vf = d.w.path("variant");
    std::fs::write(&d.conf, conf.replacen("[system]\n", &format!("[system]\nvariant-file={}\n", vf.display()), 1))
        .unwrap();
    let env = d.boot_env();
    for contents in [None, Some("\n")] {
        if let Some(c) = contents {
            std::fs::write(&vf, c).unwrap();
        }
        let (code, out) = d.install(&p);
        assert_eq!(code, 3, "{contents:?}: {out}");
        assert_eq!(out["error"]["kind"], "variant", "{out}");
        assert_eq!(out["error"]["cwmp-fault"], 9002, "{out}");
        assert_eq!(d.boot_env(), env);
        assert!(std::fs::read(d.w.path("slotB")).unwrap().iter().all(|b| *b == 0), "nothing written");
        let o = d.cli(&["info", "--json", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(3), "info: {}", String::from_utf8_lossy(&o.stderr));
    }
    std::fs::write(&d.conf, conf).unwrap();
}
