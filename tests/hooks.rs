//! RAUC bundle hooks (`[hooks]`, `[image.*] hooks=`), with bundles made by Debian's
//! `rauc bundle` and installed into file-backed slots (swtpm for the roots, grub-editenv
//! as the reader of the boot order): install-check refuses with its message or accepts
//! another compatible; an install hook writes the slot; pre- and post-install hooks run
//! around the write with an ext4 slot mounted; a failing hook leaves the boot order; a
//! hook that hangs is killed, a flood of output is drained in bounded memory; code taken
//! from bytes that changed after verification never runs; `bundle-hooks=refuse`; the
//! agent killed while a hook runs.

mod common;
use common::bus::Bus;
use common::device::{grub_list, Device, SLOT};
use common::switchfs::SwitchFs;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A device whose hooks' private directories go under the test's directory; `raw`:
/// slots of type raw (not mounted for hooks).
fn device(system: &str, raw: bool) -> Device {
    let d = Device::new(false);
    let mut c = std::fs::read_to_string(&d.conf).unwrap();
    c = c.replacen("[system]\n", &format!("[system]\nmountprefix={}\n{system}", d.w.path("mnt").display()), 1);
    if raw {
        c = c.replace("type=ext4", "type=raw");
    }
    std::fs::write(&d.conf, c).unwrap();
    d
}

/// A verity bundle made by `rauc bundle`: `manifest` after `[update]` (which names
/// `compatible`), `hook.sh` with `script`, and `rootfs.img` holding `image` (none: no file).
fn bundle(d: &Device, name: &str, compatible: &str, manifest: &str, script: &str, image: Option<&[u8]>) -> PathBuf {
    bundle_as(d, "verity", name, compatible, manifest, script, image)
}

fn bundle_as(
    d: &Device,
    format: &str,
    name: &str,
    compatible: &str,
    manifest: &str,
    script: &str,
    image: Option<&[u8]>,
) -> PathBuf {
    let c = d.w.path(name);
    std::fs::create_dir_all(&c).unwrap();
    if let Some(i) = image {
        std::fs::write(c.join("rootfs.img"), i).unwrap();
    }
    std::fs::write(
        c.join("manifest.raucm"),
        format!("[update]\ncompatible={compatible}\nversion=1.2.3\n\n[bundle]\nformat={format}\n\n{manifest}"),
    )
    .unwrap();
    std::fs::write(c.join("hook.sh"), format!("#!/bin/sh\nLOG={}\n{script}", d.w.path("hook.log").display())).unwrap();
    // rauc bundle wants more than 4 KiB of squashfs.
    std::fs::write(c.join("padding"), pseudo_random(16384, 1)).unwrap();
    run_ok(Command::new("chmod").arg("755").arg(c.join("hook.sh")));
    d.w.rauc_bundle(&c, &format!("{name}.raucb"))
}

fn log(d: &Device) -> String {
    std::fs::read_to_string(d.w.path("hook.log")).unwrap_or_default()
}

fn error(out: &serde_json::Value) -> (String, u64, String) {
    let e = &out["error"];
    (
        e["kind"].as_str().unwrap_or_default().to_string(),
        e["cwmp-fault"].as_u64().unwrap_or_default(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

const CHECK: &str = "[hooks]\nfilename=hook.sh\nhooks=install-check\n\n[image.rootfs]\nfilename=rootfs.img\n";

#[test]
fn install_check_refuses_with_its_message_or_accepts_another_compatible() {
    let d = device("", true);
    let image = pseudo_random(300_000, 3);
    // RAUC's documented example: refuse with exit 10 and a last line on stderr.
    let veto = bundle(
        &d,
        "veto",
        "henb-test",
        CHECK,
        "case \"$1\" in install-check) env > $LOG; echo 'checking the board' >&2; \
         echo 'not for this board (rev A)' >&2; exit 10;; esac\nexit 1\n",
        Some(&image),
    );
    let before = (d.boot_env(), std::fs::read(d.w.path("slotB")).unwrap());
    let out = d
        .cmd_as("A", &["install", "--json", &veto.display().to_string()])
        .env("HENB_TEST_SECRET", "x")
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{j}");
    let (kind, fault, message) = error(&j);
    assert_eq!((kind.as_str(), fault), ("hook-refused", 9001), "{j}");
    assert!(message.ends_with("not for this board (rev A)"), "{message}");
    assert_eq!(d.boot_env(), before.0, "boot order changed");
    assert_eq!(std::fs::read(d.w.path("slotB")).unwrap(), before.1, "slot written");
    assert_eq!(d.status()["last-result"]["kind"], "hook-refused");
    // Its environment: RAUC's install-hook interface and PATH, nothing of the agent's.
    let env: std::collections::BTreeMap<String, String> =
        log(&d).lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(env["RAUC_SYSTEM_COMPATIBLE"], "henb-test");
    assert_eq!(env["RAUC_MF_COMPATIBLE"], "henb-test");
    assert_eq!(env["RAUC_MF_VERSION"], "1.2.3");
    assert_eq!(env["RAUC_SYSTEM_VARIANT"], "");
    assert_eq!(Path::new(&env["RAUC_MOUNT_PREFIX"]), d.w.path("mnt"));
    for k in env.keys() {
        assert!(k.starts_with("RAUC_") || ["PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&k.as_str()), "{k} leaked");
    }
    // The hook replaces the compatible check: a bundle for another board that its
    // install-check accepts installs.
    let other = bundle(
        &d,
        "other",
        "henb-other-board",
        CHECK,
        "case \"$1\" in install-check) [ \"$RAUC_SYSTEM_COMPATIBLE\" = henb-test ] && exit 0; exit 10;; esac\nexit 1\n",
        Some(&image),
    );
    let (code, out) = d.install(&other);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read(d.w.path("slotB")).unwrap()[..image.len()], image[..]);
    assert!(grub_list(&d).contains("ORDER=B A\n"));
    // The private directory is gone after the install.
    assert_eq!(std::fs::read_dir(d.w.path("mnt")).unwrap().count(), 0);
}

#[test]
fn an_install_hook_writes_the_slot_itself() {
    let d = device("", true);
    let image = pseudo_random(200_000, 4);
    let script = "case \"$1\" in slot-install) env > $LOG; \
                  { printf 'HOOK:%s:%s\\n' \"$RAUC_SLOT_NAME\" \"$RAUC_SLOT_BOOTNAME\"; cat \"$RAUC_IMAGE_NAME\"; } \
                  | dd of=\"$RAUC_SLOT_DEVICE\" conv=notrunc status=none;; *) exit 1;; esac\n";
    let b = bundle(
        &d,
        "inst",
        "henb-test",
        "[hooks]\nfilename=hook.sh\n\n[image.rootfs]\nfilename=rootfs.img\nhooks=install\n",
        script,
        Some(&image),
    );
    let (code, out) = d.install(&b);
    assert_eq!(code, 0, "{out}");
    let slot = std::fs::read(d.w.path("slotB")).unwrap();
    let head = b"HOOK:rootfs.1:B\n";
    assert_eq!(&slot[..head.len()], head, "the hook's write is in the slot");
    assert_eq!(&slot[head.len()..head.len() + image.len()], &image[..], "followed by the verified image");
    let env = log(&d);
    assert!(env.contains(&format!("RAUC_IMAGE_DIGEST={}\n", sha256_hex(&image))), "{env}");
    assert!(env.contains("RAUC_SLOT_CLASS=rootfs\n") && env.contains("RAUC_SLOT_TYPE=raw\n"), "{env}");
    assert!(env.contains(&format!("RAUC_IMAGE_SIZE={}\n", image.len())), "{env}");
    assert!(env.contains(&format!("RAUC_SLOT_DEVICE={}\n", d.w.path("slotB").display())), "{env}");
    assert!(grub_list(&d).contains("ORDER=B A\n"), "activated");
    // An install hook without an image file (RAUC allows it there only).
    let d = device("", true);
    let script = "case \"$1\" in slot-install) printf 'NOFILE:%s' \"$RAUC_IMAGE_NAME\" \
                  | dd of=\"$RAUC_SLOT_DEVICE\" conv=notrunc status=none;; *) exit 1;; esac\n";
    let b =
        bundle(&d, "nofile", "henb-test", "[hooks]\nfilename=hook.sh\n\n[image.rootfs]\nhooks=install\n", script, None);
    let (code, out) = d.install(&b);
    assert_eq!(code, 0, "{out}");
    assert_eq!(&std::fs::read(d.w.path("slotB")).unwrap()[..8], b"NOFILE:\0");
}

#[test]
fn a_failing_hook_leaves_the_boot_order_and_the_target_bad() {
    let d = device("", true);
    let image = pseudo_random(100_000, 5);
    for (which, written) in [("post-install", true), ("pre-install", false)] {
        std::fs::write(d.w.path("slotB"), vec![0u8; SLOT as usize]).unwrap();
        let script = format!(
            "case \"$1\" in slot-{which}) echo ran >> $LOG; echo 'cannot migrate the configuration' >&2; exit 3;; esac\nexit 0\n"
        );
        let manifest = format!("[hooks]\nfilename=hook.sh\n\n[image.rootfs]\nfilename=rootfs.img\nhooks={which}\n");
        let b = bundle(&d, which, "henb-test", &manifest, &script, Some(&image));
        let before = grub_list(&d);
        let (code, out) = d.install(&b);
        assert_ne!(code, 0, "{which}: {out}");
        let (kind, fault, message) = error(&out);
        assert_eq!((kind.as_str(), fault), ("hook-failed", 9002), "{which}: {out}");
        assert!(message.contains(&format!("slot-{which} hook failed: exit code 3: cannot migrate")), "{message}");
        let after = grub_list(&d);
        assert!(after.contains("ORDER=A B\n") && after.contains("B_OK=0\n"), "{which}: {before} -> {after}");
        assert_eq!(d.status()["primary"], "A");
        let slot = std::fs::read(d.w.path("slotB")).unwrap();
        assert_eq!(slot[..image.len()] == image[..], written, "{which}: the image is written only before post-install");
    }
    assert_eq!(log(&d), "ran\nran\n");
}

/// An ext4 image of `files` (name, text) made by mke2fs -d.
fn ext4(d: &Device, name: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let dir = d.w.path(&format!("{name}.d"));
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    for (f, t) in files {
        std::fs::write(dir.join(f), t).unwrap();
    }
    let img = d.w.path(&format!("{name}.ext4"));
    run_ok(Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"]).arg(&dir).arg(&img).arg("8M"));
    std::fs::read(img).unwrap()
}

fn debugfs_cat(dev: &Path, file: &str) -> String {
    let o = run_ok(Command::new("debugfs").arg("-R").arg(format!("cat {file}")).arg(dev));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pre_and_post_install_hooks_see_the_ext4_slot_mounted() {
    let d = device("", false);
    // The slot holds the old system, with a configuration to carry over.
    let old = ext4(&d, "old", &[("etc/config", "operator=1\n")]);
    let mut slot = old.clone();
    slot.resize(SLOT as usize, 0);
    std::fs::write(d.w.path("slotB"), slot).unwrap();
    let new = ext4(&d, "new", &[("etc/release", "v2\n")]);
    let script = "case \"$1\" in \
        slot-pre-install) cp \"$RAUC_SLOT_MOUNT_POINT/etc/config\" \"$RAUC_BUNDLE_MOUNT_POINT/saved\" && echo pre >> $LOG;; \
        slot-post-install) cp \"$RAUC_BUNDLE_MOUNT_POINT/saved\" \"$RAUC_SLOT_MOUNT_POINT/etc/config\" && \
            cat \"$RAUC_SLOT_MOUNT_POINT/etc/release\" >> $LOG && echo post >> $LOG;; \
        *) exit 1;; esac\n";
    let manifest = "[hooks]\nfilename=hook.sh\n\n[image.rootfs]\nfilename=rootfs.img\nhooks=pre-install;post-install\n";
    let b = bundle(&d, "prepost", "henb-test", manifest, script, Some(&new));
    let (code, out) = d.install(&b);
    assert_eq!(code, 0, "{out}");
    assert_eq!(log(&d), "pre\nv2\npost\n");
    let slot = d.w.path("slotB");
    assert_eq!(debugfs_cat(&slot, "/etc/release"), "v2\n");
    assert_eq!(debugfs_cat(&slot, "/etc/config"), "operator=1\n", "the configuration was carried over");
    assert!(grub_list(&d).contains("ORDER=B A\n"));
}

#[test]
fn a_hook_that_hangs_is_killed_and_a_flood_of_output_is_drained() {
    let d = device("", true);
    let mut c = std::fs::read_to_string(&d.conf).unwrap();
    c.push_str("\n[install]\nhook-timeout=2\n");
    std::fs::write(&d.conf, c).unwrap();
    let image = pseudo_random(100_000, 6);
    let manifest = "[hooks]\nfilename=hook.sh\n\n[image.rootfs]\nfilename=rootfs.img\nhooks=post-install\n";
    let script = "sleep 600 & echo $! > $LOG.pid\nsleep 600\n";
    let b = bundle(&d, "hang", "henb-test", manifest, script, Some(&image));
    let started = std::time::Instant::now();
    let (code, out) = d.install(&b);
    assert_ne!(code, 0);
    assert!(started.elapsed().as_secs() < 60, "the timeout did not stop it");
    let (kind, fault, _) = error(&out);
    assert_eq!((kind.as_str(), fault), ("hook-timeout", 9002), "{out}");
    assert!(grub_list(&d).contains("ORDER=A B\n"));
    // Its background child went with it (gone, or a zombie nobody reaped).
    let pid = std::fs::read_to_string(d.w.path("hook.log.pid")).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "the hook's child still runs: {stat}");

    // 100 MB on stdout without a newline and a million lines on stderr, then success
    // (with time for it on a loaded machine).
    let c = std::fs::read_to_string(&d.conf).unwrap().replace("hook-timeout=2\n", "hook-timeout=300\n");
    std::fs::write(&d.conf, c).unwrap();
    let script = "head -c 100000000 /dev/zero | tr '\\0' x; yes 'error output' | head -n 1000000 >&2; exit 0\n";
    let b = bundle(&d, "flood", "henb-test", manifest, script, Some(&image));
    let o = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(BIN)
        .arg("--conf")
        .arg(&d.conf)
        .args(["--override-boot-slot", "A", "install"])
        .arg(&b)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let kib: u64 = err.lines().last().unwrap().trim().parse().unwrap();
    assert!(kib < 64 << 10, "peak RSS {kib} KiB for 100 MB of hook output");
    assert!(grub_list(&d).contains("ORDER=B A\n"));
}

#[test]
fn bundle_hooks_refuse_refuses_any_bundle_with_code_before_writing() {
    let d = device("bundle-hooks=refuse\n", true);
    let image = pseudo_random(50_000, 8);
    let check = bundle(&d, "check", "henb-test", CHECK, "echo ran >> $LOG; exit 0\n", Some(&image));
    let inst = bundle(
        &d,
        "inst",
        "henb-test",
        "[hooks]\nfilename=hook.sh\n\n[image.rootfs]\nfilename=rootfs.img\nhooks=install\n",
        "echo ran >> $LOG; exit 0\n",
        Some(&image),
    );
    for b in [check, inst] {
        let before = (d.boot_env(), std::fs::read(d.w.path("slotB")).unwrap());
        let (code, out) = d.install(&b);
        assert_eq!(code, 1, "{out}");
        let (kind, fault, message) = error(&out);
        assert_eq!((kind.as_str(), fault), ("hooks-refused", 9001), "{out}");
        assert!(message.contains("bundle-hooks=refuse"), "{message}");
        assert_eq!(d.boot_env(), before.0);
        assert_eq!(std::fs::read(d.w.path("slotB")).unwrap(), before.1);
    }
    assert_eq!(log(&d), "", "no hook ran");
}

/// A custom handler replaces the installer: refused, not ignored.
#[test]
fn a_custom_handler_is_refused() {
    let d = device("", true);
    let image = pseudo_random(50_000, 9);
    let b = bundle(
        &d,
        "handler",
        "henb-test",
        "[handler]\nfilename=hook.sh\nargs=--all\n\n[image.rootfs]\nfilename=rootfs.img\n",
        "echo ran >> $LOG; exit 0\n",
        Some(&image),
    );
    let (code, out) = d.install(&b);
    assert_eq!(code, 1, "{out}");
    assert_eq!(error(&out).0, "handler-unsupported", "{out}");
    assert_eq!(log(&d), "");
}

/// The bytes a hook runs are the bytes verified: a verity bundle whose hook changes on
/// the file system after the first full read (FUSE, tests/tools/switchfs.py) is refused
/// when the changed block is read, and the changed hook never runs.
#[test]
fn a_hook_changed_after_verification_never_runs() {
    let d = device("", true);
    let image = pseudo_random(50_000, 10);
    let c = d.w.path("sw");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("rootfs.img"), &image).unwrap();
    std::fs::write(
        c.join("manifest.raucm"),
        format!("[update]\ncompatible=henb-test\nversion=1\n\n[bundle]\nformat=verity\n\n{CHECK}"),
    )
    .unwrap();
    let script = format!("#!/bin/sh\necho genuine >> {}\nexit 0\n", d.w.path("hook.log").display());
    std::fs::write(c.join("hook.sh"), &script).unwrap();
    run_ok(Command::new("chmod").arg("755").arg(c.join("hook.sh")));
    // Uncompressed, so that the script's bytes can be found in the bundle.
    let genuine = d.w.rauc_bundle_with(&c, "genuine.raucb", &["--mksquashfs-args=-noI -noD -noF -noX"]);
    let bytes = std::fs::read(&genuine).unwrap();
    let at = bytes.windows(12).position(|w| w == b"echo genuine").expect("the script in the bundle");
    let mut swapped = bytes.clone();
    swapped[at..at + 12].copy_from_slice(b"echo swapped");
    let switched = d.w.path("switched.raucb");
    std::fs::write(&switched, &swapped).unwrap();
    let Some(fs) = SwitchFs::mount(&d.w, &[("b.raucb", &genuine, &switched)]) else {
        eprintln!("FUSE is not available here (no /dev/fuse)");
        return;
    };
    let before = (d.boot_env(), std::fs::read(d.w.path("slotB")).unwrap());
    let (code, out) = d.install(&fs.dir.join("b.raucb"));
    assert_ne!(code, 0, "{out}");
    assert!([9018, 9019].contains(&error(&out).1), "{out}");
    assert_eq!(log(&d), "", "no hook ran");
    assert_eq!(d.boot_env(), before.0);
    assert_eq!(std::fs::read(d.w.path("slotB")).unwrap(), before.1);
    drop(fs);
    // The genuine bundle from local storage runs the genuine hook.
    assert_eq!(d.install(&genuine).0, 0);
    assert_eq!(log(&d), "genuine\n");
}

/// The agent killed while a hook runs (failpoint `hook.running`): the hook goes with it,
/// the boot order is as it was, and a retried install succeeds.
#[cfg(feature = "failpoints")]
#[test]
fn killed_while_a_hook_runs() {
    use std::os::unix::process::ExitStatusExt;
    let d = device("", true);
    let image = pseudo_random(100_000, 11);
    let manifest = "[hooks]\nfilename=hook.sh\nhooks=install-check\n\n[image.rootfs]\nfilename=rootfs.img\nhooks=pre-install;post-install\n";
    let script = "sleep 2; echo \"$1\" >> $LOG\n";
    let b = bundle(&d, "crash", "henb-test", manifest, script, Some(&image));
    for (n, hook) in [(1, "install-check"), (2, "slot-pre-install"), (3, "slot-post-install")] {
        let before = grub_list(&d);
        let o = d
            .cmd_as("A", &["install", b.to_str().unwrap()])
            .env("HENB_FAILPOINT", format!("hook.running@{n}"))
            .output()
            .unwrap();
        assert_eq!(o.status.signal(), Some(6), "{hook}: {}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(std::time::Duration::from_secs(3));
        assert!(!log(&d).contains(hook), "{hook}: the hook outlived the agent: {}", log(&d));
        let after = grub_list(&d);
        assert!(after.contains("ORDER=A B\n"), "{hook}: {before} -> {after}");
        assert!(d.cli(&["status", "--json"]).status.success());
        std::fs::write(d.w.path("hook.log"), "").unwrap();
    }
    let (code, out) = d.install(&b);
    assert_eq!(code, 0, "{out}");
    assert_eq!(log(&d), "install-check\nslot-pre-install\nslot-post-install\n");
    assert!(grub_list(&d).contains("ORDER=B A\n"));
}

/// Debian's rauc 1.8 as the reference: its own service on a private bus, with two raw
/// file slots like the device's (plain bundles: rauc mounts those with a loop device; its
/// verity bundles need device-mapper, which a container may lack).
struct Rauc {
    _bus: Bus,
    child: std::process::Child,
    address: String,
    dir: PathBuf,
}

impl Rauc {
    fn start(w: &Work) -> Self {
        let dir = w.path("rauc");
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        for s in ["slotA", "slotB"] {
            std::fs::File::create(dir.join(s)).unwrap().set_len(SLOT).unwrap();
        }
        std::fs::write(
            dir.join("system.conf"),
            format!(
                "[system]\ncompatible=henb-test\nbootloader=noop\nmountprefix={d}/mnt\n\n[keyring]\npath={k}\n\
                 check-purpose=codesign\n\n[slot.rootfs.0]\ndevice={d}/slotA\ntype=raw\nbootname=A\n\n\
                 [slot.rootfs.1]\ndevice={d}/slotB\ntype=raw\nbootname=B\n",
                d = dir.display(),
                k = pki().join("keyring.pem").display()
            ),
        )
        .unwrap();
        let bus = Bus::start();
        let child = Command::new("rauc")
            .arg(format!("--conf={}", dir.join("system.conf").display()))
            .args(["--override-boot-slot=A", "service"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rauc");
        bus.wait_for("de.pengutronix.rauc");
        Rauc { address: bus.address(), _bus: bus, child, dir }
    }

    /// `rauc install`: whether it succeeded, and what it printed.
    fn install(&self, bundle: &Path) -> (bool, String) {
        let o = Command::new("rauc")
            .arg("install")
            .arg(bundle)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .output()
            .unwrap();
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }
}

impl Drop for Rauc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The two bundles, made by `rauc bundle`, installed by rauc and by the agent:
/// the same refusal message from install-check, the same install-check environment, the
/// same bytes in the slot from the install hook.
#[test]
fn rauc_and_the_agent_agree_on_install_check_and_install_hooks() {
    let d = device("", true);
    let rauc = Rauc::start(&d.w);
    let image = pseudo_random(300_000, 12);
    let veto = bundle_as(
        &d,
        "plain",
        "veto",
        "henb-test",
        CHECK,
        "case \"$1\" in install-check) env | grep '^RAUC_' | cut -d= -f1 | sort > $LOG; \
         echo 'not for this board (rev A)' >&2; exit 10;; esac\nexit 1\n",
        Some(&image),
    );
    let (ok, said) = rauc.install(&veto);
    assert!(!ok && said.contains("Bundle rejected: Hook returned: not for this board (rev A)"), "{said}");
    let rauc_env = log(&d);
    let (code, out) = d.install(&veto);
    assert_eq!(code, 1, "{out}");
    assert!(
        error(&out).2.ends_with("Hook returned: not for this board (rev A)")
            || error(&out).2.ends_with("not for this board (rev A)"),
        "{out}"
    );
    assert_eq!(log(&d), rauc_env, "the install-check environment differs from rauc's");
    assert!(rauc_env.contains("RAUC_MF_COMPATIBLE\n") && rauc_env.contains("RAUC_SYSTEM_COMPATIBLE\n"), "{rauc_env}");

    let script = "case \"$1\" in slot-install) env | grep '^RAUC_' | sort > $LOG; \
                  { printf 'HOOK:%s:%s:%s\\n' \"$RAUC_SLOT_NAME\" \"$RAUC_SLOT_BOOTNAME\" \"$RAUC_IMAGE_DIGEST\"; \
                    cat \"$RAUC_IMAGE_NAME\"; } | dd of=\"$RAUC_SLOT_DEVICE\" conv=notrunc status=none;; *) exit 1;; esac\n";
    let inst = bundle_as(
        &d,
        "plain",
        "inst",
        "henb-test",
        "[hooks]\nfilename=hook.sh\n\n[image.rootfs]\nfilename=rootfs.img\nhooks=install\n",
        script,
        Some(&image),
    );
    let (ok, said) = rauc.install(&inst);
    assert!(ok, "{said}");
    let env_of = |text: String| -> std::collections::BTreeMap<String, String> {
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let theirs_env = env_of(log(&d));
    let (code, out) = d.install(&inst);
    assert_eq!(code, 0, "{out}");
    let ours_env = env_of(log(&d));
    assert_eq!(theirs_env.keys().collect::<Vec<_>>(), ours_env.keys().collect::<Vec<_>>(), "slot-install environment");
    // Paths differ (two systems); everything else is the same, RAUC_BUNDLE_SPKI_HASHES too.
    for (k, v) in &theirs_env {
        if !["RAUC_BUNDLE_MOUNT_POINT", "RAUC_MOUNT_PREFIX", "RAUC_SLOT_DEVICE", "RAUC_IMAGE_NAME"]
            .contains(&k.as_str())
        {
            assert_eq!(&ours_env[k], v, "{k}");
        }
    }
    assert_eq!(theirs_env["RAUC_BUNDLE_SPKI_HASHES"].split(' ').count(), 3, "{theirs_env:?}");
    let theirs = std::fs::read(rauc.dir.join("slotB")).unwrap();
    let ours = std::fs::read(d.w.path("slotB")).unwrap();
    assert!(theirs.starts_with(b"HOOK:rootfs.1:B:"), "{:?}", &theirs[..40]);
    assert_eq!(theirs, ours, "the install hook wrote other bytes under the agent than under rauc");
}

/// A plain bundle is read again after its hash, held still by a read lease: once someone
/// opens it for writing (here its own install-check hook, in the background), no further
/// hook of it runs and nothing is written.
#[test]
fn no_hook_runs_once_a_plain_bundle_was_opened_for_writing() {
    let d = device("", true);
    let image = pseudo_random(200_000, 13);
    let path = d.w.path("lease.raucb");
    let manifest =
        "[hooks]\nfilename=hook.sh\nhooks=install-check\n\n[image.rootfs]\nfilename=rootfs.img\nhooks=pre-install\n";
    let script = format!(
        "case \"$1\" in install-check) ( : >> {p} ) & sleep 1; exit 0;; slot-pre-install) echo pre >> $LOG;; esac\n",
        p = path.display()
    );
    let b = bundle_as(&d, "plain", "lease", "henb-test", manifest, &script, Some(&image));
    std::fs::rename(&b, &path).unwrap();
    let before = (d.boot_env(), std::fs::read(d.w.path("slotB")).unwrap());
    let (code, out) = d.install(&path);
    assert_ne!(code, 0, "{out}");
    assert_eq!(error(&out).0, "package-modified", "{out}");
    assert_eq!(log(&d), "", "the pre-install hook ran");
    let env = grub_list(&d);
    assert!(env.contains("ORDER=A B\n") && env.contains("B_OK=0\n"), "target marked bad, order kept: {env}");
    assert_ne!(d.boot_env(), before.0, "the target was marked bad before the write");
    assert_eq!(std::fs::read(d.w.path("slotB")).unwrap(), before.1, "nothing written");
}
