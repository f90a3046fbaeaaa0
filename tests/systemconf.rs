//! A RAUC user's real system.conf (step 17): the corpus in `tests/fixtures/systemconf`
//! loads, or is refused with every problem in one run; each configuration of the corpus
//! that loads drives `install`, `status` and `mark` against real tools: sgdisk (GPT) and
//! sfdisk (MBR) read the boot regions' tables, mtools the vfat slots, debugfs and dumpe2fs
//! the ext4 slots, dt-utils' barebox-state the barebox state, grub-editenv and
//! fw_printenv the environments; the device's handlers run with RAUC's variables.

mod common;
use common::device::Device;
use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/systemconf");

fn corpus(name: &str) -> String {
    std::fs::read_to_string(Path::new(CORPUS).join(name)).unwrap()
}

#[test]
fn the_corpus_loads_or_is_refused_with_every_problem_at_once() {
    let w = Work::new();
    let mut seen = 0;
    for e in std::fs::read_dir(CORPUS).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "conf") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&p).unwrap();
        let expected: Vec<String> =
            text.lines().filter_map(|l| l.strip_prefix("# expect: ")).map(str::to_string).collect();
        assert!(!expected.is_empty(), "{}: no '# expect:' line", p.display());
        let conf = w.path(p.file_name().unwrap().to_str().unwrap());
        std::fs::write(&conf, text.replace("@W@", &w.dir.path().display().to_string())).unwrap();
        let o = Command::new(BIN).args(["config", "check", "--json", "--conf"]).arg(&conf).output().unwrap();
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let got: Vec<String> = j["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("error {}: {}", p["line"], p["what"].as_str().unwrap()))
            .collect();
        if expected == ["loads"] {
            assert_eq!((o.status.code(), got.len()), (Some(0), 0), "{}: {j}", p.display());
        } else {
            assert_eq!(o.status.code(), Some(1), "{}: {j}", p.display());
            assert_eq!(got, expected, "{}", p.display());
        }
    }
    assert!(seen >= 10, "the corpus has {seen} files");
}

/// A device of the corpus file `name`: the test's swtpm roots, `[tpm]`, our keyring
/// policy in place of the file's keyring path, and a data directory and mountprefix in
/// the test's directory unless the file names them.
fn device(name: &str) -> Device {
    let d = Device::new(false);
    let w = d.w.dir.path().display().to_string();
    let mut c = corpus(name).replace("@W@", &w);
    c = c.lines().filter(|l| !l.starts_with("path=")).collect::<Vec<_>>().join("\n") + "\n";
    let mut system = String::new();
    if !c.contains("data-directory=") {
        system += &format!("data-directory={w}/data\n");
    }
    if !c.contains("mountprefix=") {
        system += &format!("mountprefix={w}/mnt\n");
    }
    c = c.replacen("[system]\n", &format!("[system]\n{system}"), 1);
    c = if c.contains("[keyring]\n") {
        c.replacen("[keyring]\n", "[keyring]\ncheck-purpose=codesign\n", 1)
    } else {
        c + "\n[keyring]\ncheck-purpose=codesign\n"
    };
    c += &format!("\n[tpm]\ntcti={}\n", d.t.tcti());
    std::fs::write(&d.conf, c).unwrap();
    std::fs::create_dir_all(d.w.path("mnt")).unwrap();
    d
}

/// A verity bundle made by `rauc bundle` for `compatible`, with `images` as
/// `(manifest section, file name, bytes)`.
fn bundle(d: &Device, name: &str, compatible: &str, images: &[(&str, &str, &[u8])]) -> PathBuf {
    let c = d.w.path(name);
    std::fs::create_dir_all(&c).unwrap();
    let mut m = format!("[update]\ncompatible={compatible}\nversion=2.0.{}\n\n[bundle]\nformat=verity\n", name.len());
    for (section, file, bytes) in images {
        std::fs::write(c.join(file), bytes).unwrap();
        m += &format!("\n[{section}]\nfilename={file}\n");
    }
    std::fs::write(c.join("manifest.raucm"), m).unwrap();
    std::fs::write(c.join("padding"), pseudo_random(16384, 1)).unwrap();
    d.w.rauc_bundle(&c, &format!("{name}.raucb"))
}

fn install_as(d: &Device, booted: &str, b: &Path) -> (i32, serde_json::Value) {
    let o = d.cli_as(booted, &["install", "--json", "--command-key", "ck-1", b.to_str().unwrap()]);
    (o.status.code().unwrap_or(-1), serde_json::from_slice(&o.stdout).unwrap_or_default())
}

fn status_as(d: &Device, booted: &str) -> serde_json::Value {
    let o = d.cli_as(booted, &["status", "--json"]);
    assert!(o.status.success(), "status: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn error(out: &serde_json::Value) -> (String, u64, String) {
    let e = &out["error"];
    (
        e["kind"].as_str().unwrap_or_default().to_string(),
        e["cwmp-fault"].as_u64().unwrap_or_default(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn sparse(p: &Path, size: u64) {
    std::fs::File::create(p).unwrap().set_len(size).unwrap();
}

fn text(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

fn read_at(p: &Path, at: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    std::fs::File::open(p).unwrap().read_exact_at(&mut b, at).unwrap();
    b
}

/// An ext4 image of 8 MiB holding `/etc/release`.
fn ext4(d: &Device, name: &str, release: &str) -> Vec<u8> {
    let dir = d.w.path(&format!("{name}.d"));
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/release"), release).unwrap();
    let img = d.w.path(&format!("{name}.ext4"));
    run_ok(Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"]).arg(&dir).arg(&img).arg("8M"));
    std::fs::read(img).unwrap()
}

fn grub(d: &Device, p: &Path) {
    run_ok(Command::new("grub-editenv").arg(p).arg("create"));
    run_ok(Command::new("grub-editenv").arg(p).args(["set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=1", "B_TRY=0"]));
    let _ = d;
}

/// A U-Boot environment in `env` (`fw_env.config` names it, as the corpus files do):
/// `BOOT_ORDER` the bootnames in order, 3 attempts each; read back by fw_printenv.
fn uboot_env(d: &Device, bootnames: &[&str]) {
    let w = |n: &str| d.w.path(n);
    std::fs::write(w("env"), vec![0u8; 0x4000]).unwrap();
    std::fs::write(w("fw_env.config"), format!("{} 0x0 0x4000\n", w("env").display())).unwrap();
    std::fs::write(w("defaults"), "bootcmd=boot\n").unwrap();
    let setenv = || {
        let mut c = Command::new("fw_setenv");
        c.arg("-c").arg(w("fw_env.config"));
        c
    };
    run_ok(setenv().arg("-f").arg(w("defaults")).args(["BOOT_ORDER", &bootnames.join(" ")]));
    for b in bootnames {
        run_ok(setenv().args([format!("BOOT_{b}_LEFT"), "3".into()]));
    }
}

fn script(p: &Path, body: &str) {
    std::fs::write(p, format!("#!/bin/sh\n{body}")).unwrap();
    run_ok(Command::new("chmod").arg("755").arg(p));
}

fn env_of(p: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `sgdisk -i n`: first and last sector and the unique GUID of GPT entry `n`.
fn gpt_entry(disk: &Path, n: u32) -> (u64, u64, String) {
    let out = text(Command::new("sgdisk").arg("-i").arg(n.to_string()).arg(disk));
    let field = |name: &str| {
        out.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {out}")).trim().to_string()
    };
    let num = |s: String| s.split_whitespace().next().unwrap().parse().unwrap();
    (num(field("First sector:")), num(field("Last sector:")), field("Partition unique GUID:"))
}

#[test]
fn gpt_switch_gateway_with_its_handlers() {
    let d = device("gateway-gpt-switch.conf");
    let w = |n: &str| d.w.path(n);
    grub(&d, &w("grubenv"));
    sparse(&w("rootfs0"), 64 << 20);
    sparse(&w("rootfs1"), 64 << 20);
    // A 16 MiB disk: partition 1 (the bootloader) in the first half of the region
    // 1 MiB..3 MiB, partition 2 (data) after it.
    sparse(&w("disk"), 16 << 20);
    run_ok(Command::new("sgdisk").args(["-n1:2048:4095", "-c1:boot", "-n2:8192:16383", "-c2:data"]).arg(w("disk")));
    let (_, _, guid1) = gpt_entry(&w("disk"), 1);
    let log = w("handlers.log");
    script(
        &w("system-info.sh"),
        "echo RAUC_SYSTEM_VARIANT=rev-b\necho RAUC_SYSTEM_SERIAL=0042\necho RAUC_SITE=lab\necho 'not a variable'\necho HOME=/x\n",
    );
    script(&w("pre-install.sh"), &format!("env > {}.pre\n", log.display()));
    script(
        &w("post-install.sh"),
        &format!(
            "grub-editenv {} list | grep ORDER >> {log}\nsgdisk -i 1 {} | grep 'First sector' >> {log}\n",
            w("grubenv").display(),
            w("disk").display(),
            log = log.display()
        ),
    );
    let boot_v2 = pseudo_random(300_000, 21);
    let root_v2 = ext4(&d, "v2", "v2\n");
    let b = bundle(
        &d,
        "gw2",
        "gateway-henb",
        &[("image.rootfs", "rootfs.ext4", &root_v2), ("image.bootloader", "boot.img", &boot_v2)],
    );
    let (code, out) = install_as(&d, "A", &b);
    assert_eq!(code, 0, "{out}");
    // The image went into the second half; only then was entry 1 switched to it.
    assert_eq!(read_at(&w("disk"), 2 << 20, boot_v2.len()), boot_v2);
    assert_eq!(gpt_entry(&w("disk"), 1), (4096, 6143, guid1.clone()), "entry 1 points at the second half");
    assert_eq!(gpt_entry(&w("disk"), 2).0, 8192, "partition 2 untouched");
    let verify = text(Command::new("sgdisk").arg("-v").arg(w("disk")));
    assert!(verify.contains("No problems found"), "{verify}");
    assert!(text(Command::new("grub-editenv").arg(w("grubenv")).arg("list")).contains("ORDER=B A\n"));
    // The post-install handler ran before the switches.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ORDER=A B\nFirst sector: 2048 (at 1024.0 KiB)\n");
    // The pre-install handler's environment: RAUC's, with the system-info variables.
    let env = env_of(&PathBuf::from(format!("{}.pre", log.display())));
    assert_eq!(env["RAUC_SYSTEM_VARIANT"], "rev-b");
    assert_eq!(env["RAUC_SYSTEM_SERIAL"], "0042");
    assert_eq!(env["RAUC_SITE"], "lab");
    assert_eq!(env["RAUC_SYSTEM_COMPATIBLE"], "gateway-henb");
    assert_eq!(Path::new(&env["RAUC_SYSTEM_CONFIG"]), d.conf);
    assert_eq!(env["RAUC_CURRENT_BOOTNAME"], "A");
    assert_eq!(env["RAUC_SLOTS"], "1 2 3");
    assert_eq!(env["RAUC_TARGET_SLOTS"], "1 3");
    assert_eq!(env["RAUC_SLOT_TYPE_1"], "boot-gpt-switch");
    assert_eq!(env["RAUC_IMAGE_NAME_1"], "boot.img");
    assert_eq!(env["RAUC_IMAGE_DIGEST_3"], sha256_hex(&root_v2));
    assert_eq!(env["RAUC_MF_VERSION"], "2.0.3");
    assert_eq!(env["RAUC_TRANSACTION_ID"].len(), 36);
    for k in env.keys() {
        assert!(k.starts_with("RAUC_") || ["PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&k.as_str()), "{k} leaked");
    }
    let s = status_as(&d, "A");
    assert_eq!(s["primary"], "B", "{s}");
    // Booted from B, the next install goes back to the first half.
    let b3 = bundle(
        &d,
        "gw3x",
        "gateway-henb",
        &[("image.rootfs", "rootfs.ext4", &root_v2), ("image.bootloader", "boot.img", &boot_v2[..1000])],
    );
    let (code, out) = install_as(&d, "B", &b3);
    assert_eq!(code, 0, "{out}");
    assert_eq!(gpt_entry(&w("disk"), 1), (2048, 4095, guid1.clone()));
    assert_eq!(read_at(&w("disk"), 1 << 20, 1000), boot_v2[..1000]);

    // A pre-install handler that refuses (the product's downgrade barrier): nothing
    // changes, 9001 with its message.
    script(
        &w("pre-install.sh"),
        "echo 'checking' >&2\necho \"downgrade barrier: $RAUC_MF_VERSION is too old\" >&2\nexit 1\n",
    );
    let before = (std::fs::read(w("disk")).unwrap(), std::fs::read(w("grubenv")).unwrap());
    let (code, out) = install_as(&d, "A", &b);
    assert_ne!(code, 0);
    let (kind, fault, message) = error(&out);
    assert_eq!((kind.as_str(), fault), ("handler-refused", 9001), "{out}");
    assert!(message.contains("downgrade barrier: 2.0.3 is too old"), "{message}");
    assert_eq!((std::fs::read(w("disk")).unwrap(), std::fs::read(w("grubenv")).unwrap()), before, "changed");

    // A failing post-install handler: 9002, the boot order and the region's entry as
    // they were (the image is in the other half, unused).
    script(&w("pre-install.sh"), "exit 0\n");
    script(&w("post-install.sh"), "echo 'cannot notify the supervisor' >&2\nexit 2\n");
    let (code, out) = install_as(&d, "A", &b);
    assert_ne!(code, 0);
    let (kind, fault, message) = error(&out);
    assert_eq!((kind.as_str(), fault), ("handler-failed", 9002), "{out}");
    assert!(message.contains("cannot notify the supervisor"), "{message}");
    assert_eq!(gpt_entry(&w("disk"), 1), (2048, 4095, guid1));
    let env = text(Command::new("grub-editenv").arg(w("grubenv")).arg("list"));
    assert!(env.contains("ORDER=A B\n") && env.contains("B_OK=0\n"), "{env}");

    // A system-info handler that fails stops the agent from loading its configuration.
    script(&w("system-info.sh"), "echo 'no EEPROM' >&2\nexit 4\n");
    let o = d.cli(&["status"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("system-info handler failed: exit code 4: no EEPROM"));
}

#[test]
fn mbr_switch_appliance_installs_without_activating() {
    let d = device("appliance-mbr-switch.conf");
    let w = |n: &str| d.w.path(n);
    sparse(&w("rootfs0"), 8 << 20);
    sparse(&w("rootfs1"), 8 << 20);
    sparse(&w("disk"), 16 << 20);
    let mut sf = Command::new("sfdisk");
    sf.arg("-q").arg(w("disk")).stdin(std::process::Stdio::piped());
    let mut child = sf.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=2048, type=c\nstart=8192, size=8192, type=83\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    // The custom backend, named relative to the configuration's directory.
    let state = w("backend.state");
    std::fs::write(&state, "A").unwrap();
    script(
        &w("backend.sh"),
        &format!(
            "S={s}\ncase \"$1\" in get-primary) cat $S;; set-primary) printf %s \"$2\" > $S; echo \"set-primary $2\" >> $S.log;; \
             get-state) echo good;; set-state) echo \"set-state $2 $3\" >> $S.log;; esac\n",
            s = state.display()
        ),
    );
    let boot = pseudo_random(200_000, 22);
    let root = pseudo_random(500_000, 23);
    let b = bundle(
        &d,
        "appl",
        "appliance-henb",
        &[("image.rootfs", "rootfs.img", &root), ("image.bootloader", "boot.img", &boot)],
    );
    let (code, out) = install_as(&d, "A", &b);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["activated"], false, "{out}");
    assert_eq!(read_at(&w("rootfs1"), 0, root.len()), root);
    assert_eq!(read_at(&w("disk"), 2 << 20, boot.len()), boot);
    let j: serde_json::Value =
        serde_json::from_str(&text(Command::new("sfdisk").arg("--json").arg(w("disk")))).unwrap();
    let parts = j["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!((parts[0]["start"].as_u64(), parts[0]["size"].as_u64()), (Some(4096), Some(2048)), "{j}");
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[1]["start"].as_u64(), Some(8192));
    // activate-installed=false: stored, the backend never asked to switch.
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "A");
    let log = std::fs::read_to_string(w("backend.state.log")).unwrap_or_default();
    assert!(!log.contains("set-primary"), "{log}");
    let s = status_as(&d, "A");
    let b_slot = s["slots"].as_array().unwrap().iter().find(|x| x["name"] == "rootfs.1").unwrap().clone();
    assert_eq!(b_slot["status"], "Available", "{s}");
    assert_eq!(s["last-result"]["fault-code"], 0, "{s}");
    assert_eq!(s["pending"], serde_json::Value::Null, "decided now: {s}");
    // `mark active` switches later, through the backend.
    let o = d.cli(&["mark", "active", "other"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "B");
}

#[test]
fn raw_fallback_region_and_the_variant_image() {
    let d = device("imx-raw-fallback.conf");
    let w = |n: &str| d.w.path(n);
    sparse(&w("rootfs0"), 64 << 20);
    sparse(&w("rootfs1"), 64 << 20);
    uboot_env(&d, &["system0", "system1"]);
    // The disk holds the old bootloader in both halves, and data around the region.
    let region = (32u64 << 10, 4u64 << 20);
    let mut disk = pseudo_random(8 << 20, 24);
    let old = pseudo_random(100_000, 25);
    disk[region.0 as usize..region.0 as usize + old.len()].copy_from_slice(&old);
    std::fs::write(w("disk"), &disk).unwrap();
    let boot = pseudo_random(150_000, 26);
    let generic = ext4(&d, "generic", "generic\n");
    let rev_c = ext4(&d, "revc", "rev-c\n");
    let b = bundle(
        &d,
        "imx",
        "imx-henb",
        &[
            ("image.rootfs", "rootfs.ext4", &generic),
            ("image.rootfs.rev-c", "rootfs-rev-c.ext4", &rev_c),
            ("image.bootloader", "boot.img", &boot),
        ],
    );
    let (code, out) = install_as(&d, "system0", &b);
    assert_eq!(code, 0, "{out}");
    let half = region.1 / 2;
    assert_eq!(read_at(&w("disk"), region.0, boot.len()), boot, "primary half");
    assert_eq!(read_at(&w("disk"), region.0 + half, boot.len()), boot, "fallback half");
    let after = std::fs::read(w("disk")).unwrap();
    assert_eq!(after[..region.0 as usize], disk[..region.0 as usize], "before the region");
    assert_eq!(after[(region.0 + region.1) as usize..], disk[(region.0 + region.1) as usize..], "after the region");
    // variant-name=rev-c chose its image.
    let o = run_ok(Command::new("debugfs").arg("-R").arg("cat /etc/release").arg(w("rootfs1")));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "rev-c\n");
    let env = text(Command::new("fw_printenv").arg("-c").arg(w("fw_env.config")));
    assert!(env.contains("BOOT_ORDER=system1 system0\n"), "{env}");
    assert_eq!(status_as(&d, "system0")["primary"], "system1");
    // A failing post-install handler: the fallback half holds the new bootloader (written
    // from the stream, header last), the primary half the old one, untouched.
    let boot2 = pseudo_random(150_000, 29);
    let b2 = bundle(
        &d,
        "imx2",
        "imx-henb",
        &[("image.rootfs", "rootfs.ext4", &generic), ("image.bootloader", "boot.img", &boot2)],
    );
    script(&w("post.sh"), "exit 5\n");
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    std::fs::write(&d.conf, format!("{conf}\n[handlers]\npost-install={}\n", w("post.sh").display())).unwrap();
    let (code, out) = install_as(&d, "system0", &b2);
    assert_ne!(code, 0, "{out}");
    assert_eq!(error(&out).0, "handler-failed", "{out}");
    assert_eq!(read_at(&w("disk"), region.0, boot.len()), boot, "the primary half is untouched");
    assert_eq!(read_at(&w("disk"), region.0 + half, boot2.len()), boot2, "the fallback half was written");
    // A device that booted from the fallback (its primary half blank): the primary half
    // is written first, but its header waits for every check; a failing post-install
    // handler leaves it headerless, so the ROM still boots the fallback, untouched.
    std::fs::File::options().write(true).open(w("disk")).unwrap().write_all_at(&[0u8; 512], region.0).unwrap();
    let fallback = read_at(&w("disk"), region.0 + half, half as usize);
    let (code, out) = install_as(&d, "system0", &b2);
    assert_eq!(error(&out).0, "handler-failed", "{code} {out}");
    assert!(read_at(&w("disk"), region.0, 512).iter().all(|b| *b == 0), "the primary half has no header");
    assert_eq!(read_at(&w("disk"), region.0 + 512, boot2.len() - 512), boot2[512..], "its body is written");
    assert_eq!(read_at(&w("disk"), region.0 + half, half as usize), fallback, "the fallback half is untouched");
    std::fs::write(&d.conf, &conf).unwrap();
    // Every check passed: the primary half's header, then the copy to the fallback.
    let (code, out) = install_as(&d, "system0", &b2);
    assert_eq!(code, 0, "{out}");
    assert_eq!(read_at(&w("disk"), region.0, boot2.len()), boot2, "primary half");
    assert_eq!(read_at(&w("disk"), region.0 + half, boot2.len()), boot2, "fallback half");
    // An image larger than half the region is refused before anything is written.
    let big = pseudo_random((half + 1) as usize, 27);
    let b = bundle(
        &d,
        "big",
        "imx-henb",
        &[("image.rootfs", "rootfs.ext4", &generic), ("image.bootloader", "boot.img", &big)],
    );
    let before = std::fs::read(w("disk")).unwrap();
    let (code, out) = install_as(&d, "system0", &b);
    assert_ne!(code, 0, "{out}");
    assert!(error(&out).2.contains("does not fit"), "{out}");
    assert_eq!(std::fs::read(w("disk")).unwrap(), before);
}

/// The device tree of a barebox state (bootstate for A and B) whose backend is the
/// partition `uuid`, which dt-utils finds as /dev/disk/by-partuuid/<uuid>.
fn barebox_state(d: &Device, uuid: &str) {
    let node = |b: &str, at: u32| {
        format!(
            "{b} {{ #address-cells = <1>; #size-cells = <1>;\n\
             remaining_attempts@{a:x} {{ reg = <{a:#x} 0x4>; type = \"uint32\"; default = <3>; }};\n\
             priority@{p:x} {{ reg = <{p:#x} 0x4>; type = \"uint32\"; default = <20>; }}; }};\n",
            a = at,
            p = at + 4
        )
    };
    let dts = format!(
        "/dts-v1/;\n/ {{\n aliases {{ state = &state; }};\n disk {{ compatible = \"henb,test-disk\"; partitions {{ compatible = \"fixed-partitions\"; \
         #address-cells = <1>; #size-cells = <1>;\n  statepart: partition@0 {{ partuuid = \"{uuid}\"; reg = <0 0x100000>; }}; }}; }};\n \
         state: state {{ magic = <0x4d433230>; compatible = \"barebox,state\"; backend-type = \"raw\"; backend = <&statepart>;\n \
         backend-storage-type = \"direct\"; backend-stridesize = <0x40>; #address-cells = <1>; #size-cells = <1>;\n \
         bootstate {{ #address-cells = <1>; #size-cells = <1>;\n{}{} }}; }};\n}};\n",
        node("A", 0),
        node("B", 8)
    );
    std::fs::write(d.w.path("state.dts"), dts).unwrap();
    run_ok(
        Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
            .arg(d.w.path("state.dtb"))
            .arg(d.w.path("state.dts")),
    );
}

/// Removes the by-partuuid link of a test.
struct Link(PathBuf);
impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bb_get(d: &Device, var: &str) -> String {
    text(Command::new("barebox-state").arg("-i").arg(d.w.path("state.dtb")).arg("-g").arg(var)).trim().to_string()
}

#[test]
fn barebox_state_per_slot_status_and_resize() {
    let d = device("distrokit-barebox.conf");
    let w = |n: &str| d.w.path(n);
    let mut rnd = [0u8; 16];
    rnd.copy_from_slice(&pseudo_random(16, std::process::id() as u64 ^ 0x5eed));
    let h = hex::encode(rnd);
    let uuid = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
    barebox_state(&d, &uuid);
    sparse(&w("state.bin"), 1 << 20);
    std::fs::create_dir_all("/dev/disk/by-partuuid").unwrap();
    let link = Link(PathBuf::from(format!("/dev/disk/by-partuuid/{uuid}")));
    std::os::unix::fs::symlink(w("state.bin"), &link.0).unwrap();
    // barebox's defaults: both slots priority 20, 3 attempts; make A the primary.
    run_ok(Command::new("barebox-state").arg("-i").arg(w("state.dtb")).args(["-s", "bootstate.B.priority=10"]));
    sparse(&w("rootfs0"), 64 << 20);
    sparse(&w("rootfs1"), 64 << 20);
    assert_eq!(status_as(&d, "A")["primary"], "A");
    let root = ext4(&d, "root", "distro\n");
    let b = bundle(&d, "dk", "distrokit-henb", &[("image.rootfs", "rootfs.ext4", &root)]);
    let (code, out) = install_as(&d, "A", &b);
    assert_eq!(code, 0, "{out}");
    // RAUC's barebox semantics, read back by barebox-state: boot-attempts-primary=4.
    assert_eq!(
        (bb_get(&d, "bootstate.B.priority"), bb_get(&d, "bootstate.B.remaining_attempts")),
        ("20".into(), "4".into())
    );
    assert_eq!(bb_get(&d, "bootstate.A.priority"), "10");
    assert_eq!(status_as(&d, "A")["primary"], "B");
    // statusfile=per-slot: RAUC's slot.raucs in the written slot's root.
    let o = run_ok(Command::new("debugfs").arg("-R").arg("cat /slot.raucs").arg(w("rootfs1")));
    let raucs = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(raucs.starts_with("[slot]\nbundle.compatible=distrokit-henb\nbundle.version=2.0.2\n"), "{raucs}");
    assert!(raucs.contains(&format!("sha256={}\n", sha256_hex(&root))) && raucs.contains("status=ok\n"), "{raucs}");
    // resize=true: the 8 MiB file system now fills the 64 MiB slot.
    let fs = text(Command::new("dumpe2fs").arg("-h").arg(w("rootfs1")));
    let field = |n: &str| -> u64 { fs.lines().find_map(|l| l.strip_prefix(n)).unwrap().trim().parse().unwrap() };
    assert_eq!(field("Block count:") * field("Block size:"), 64 << 20, "{fs}");
    // mark: bad takes the priority and the attempts; good gives the attempts back.
    let o = d.cli_as("B", &["mark", "bad", "A"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        (bb_get(&d, "bootstate.A.priority"), bb_get(&d, "bootstate.A.remaining_attempts")),
        ("0".into(), "0".into())
    );
    let o = d.cli_as("B", &["mark", "good", "booted"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(bb_get(&d, "bootstate.B.remaining_attempts"), "2", "boot-attempts=2 for a good slot");
    let s = status_as(&d, "B");
    let states: Vec<_> = s["slots"].as_array().unwrap().iter().map(|x| x["boot-state"].clone()).collect();
    assert_eq!(states, [serde_json::json!("bad"), serde_json::json!("good")], "{s}");
    drop(link);
}

/// A FAT image holding `config.txt`, made by mkfs.vfat and mcopy.
fn vfat(d: &Device, name: &str, config: &str) -> Vec<u8> {
    let img = d.w.path(&format!("{name}.vfat"));
    let _ = std::fs::remove_file(&img);
    run_ok(Command::new("mkfs.vfat").args(["-C", "-n", "BOOT"]).arg(&img).arg("4096"));
    std::fs::write(d.w.path("config.txt"), config).unwrap();
    run_ok(Command::new("mcopy").arg("-i").arg(&img).arg(d.w.path("config.txt")).arg("::/config.txt"));
    std::fs::read(img).unwrap()
}

#[test]
fn vfat_child_slots_of_a_uboot_board() {
    let d = device("raspberrypi-uboot-vfat.conf");
    let w = |n: &str| d.w.path(n);
    for s in ["rootfs0", "rootfs1"] {
        sparse(&w(s), 64 << 20);
    }
    for s in ["boot0", "boot1"] {
        sparse(&w(s), 8 << 20);
    }
    uboot_env(&d, &["A", "B"]);
    let root = ext4(&d, "rpi", "rpi\n");
    let boot = vfat(&d, "boot", "arm_64bit=1\n");
    let b = bundle(
        &d,
        "rpi",
        "raspberrypi4-henb",
        &[("image.rootfs", "rootfs.ext4", &root), ("image.boot", "boot.vfat", &boot)],
    );
    let (code, out) = install_as(&d, "A", &b);
    assert_eq!(code, 0, "{out}");
    let cfg = text(Command::new("mtype").arg("-i").arg(w("boot1")).arg("::/config.txt"));
    assert_eq!(cfg, "arm_64bit=1\n");
    assert_eq!(std::fs::metadata(w("boot0")).unwrap().len(), 8 << 20);
    assert!(std::fs::read(w("boot0")).unwrap().iter().all(|b| *b == 0), "the booted group's boot slot untouched");
    let env = text(Command::new("fw_printenv").arg("-c").arg(w("fw_env.config")));
    assert!(env.contains("BOOT_ORDER=B A\n"), "{env}");
    let s = status_as(&d, "A");
    let boot1 = s["slots"].as_array().unwrap().iter().find(|x| x["name"] == "boot.1").unwrap().clone();
    assert_eq!(boot1["device"], w("boot1").display().to_string());
}

#[test]
fn relative_paths_and_the_status_file_where_configured() {
    let d = device("qemu-grub-ext4.conf");
    let w = |n: &str| d.w.path(n);
    // grubenv, data-directory, statusfile and slot B's device are relative: from the
    // file's directory.
    grub(&d, &w("grubenv"));
    sparse(&w("rootfs0"), 64 << 20);
    sparse(&w("rootfs1"), 64 << 20);
    let root = ext4(&d, "q", "q\n");
    let b = bundle(&d, "q", "qemux86-64-henb", &[("image.rootfs", "rootfs.ext4", &root)]);
    // Run from another directory: relative means the configuration's, not ours.
    let o = d
        .cmd_as("A", &["install", "--json", "--command-key", "ck-1", b.to_str().unwrap()])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(text(Command::new("grub-editenv").arg(w("grubenv")).arg("list")).contains("ORDER=B A\n"));
    let central: serde_json::Value = serde_json::from_slice(&std::fs::read(w("data/central.raucs")).unwrap()).unwrap();
    assert_eq!(central["pending"]["bootname"], "B", "{central}");
    assert!(!w("data/status.json").exists(), "the status went where configured");
    let s = status_as(&d, "A");
    assert_eq!(s["pending"]["bootname"], "B");
    assert!(text(Command::new("debugfs").args(["-R", "cat /etc/release"]).arg(w("rootfs1"))).contains('q'));
}

#[test]
fn a_mounted_slot_is_updated_only_by_an_install_hook_with_allow_mounted() {
    let d = Device::new(false);
    let w = |n: &str| d.w.path(n);
    let old = {
        let dir = w("old.d");
        std::fs::create_dir_all(&dir).unwrap();
        let img = w("old.ext4");
        run_ok(Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-d"]).arg(&dir).arg(&img).arg("8M"));
        std::fs::read(img).unwrap()
    };
    let mut slot = old;
    slot.resize(64 << 20, 0);
    std::fs::write(w("slotB"), slot).unwrap();
    let lo = text(Command::new("losetup").args(["-f", "--show"]).arg(w("slotB"))).trim().to_string();
    std::fs::create_dir_all(w("m")).unwrap();
    run_ok(Command::new("mount").arg(&lo).arg(w("m")));
    struct Undo(String, PathBuf);
    impl Drop for Undo {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.1).status();
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _undo = Undo(lo.clone(), w("m"));
    std::fs::create_dir_all(w("mnt")).unwrap();
    let conf = std::fs::read_to_string(&d.conf).unwrap().replace(&w("slotB").display().to_string(), &lo).replacen(
        "[system]\n",
        &format!("[system]\nmountprefix={}\n", w("mnt").display()),
        1,
    );
    std::fs::write(&d.conf, &conf).unwrap();
    let image = pseudo_random(300_000, 28);
    let make = |name: &str, hooks: &str, image: &[u8]| {
        let content = w(name);
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(content.join("rootfs.img"), image).unwrap();
        std::fs::write(
            content.join("hook.sh"),
            "#!/bin/sh\ncase \"$1\" in slot-install) printf 'BY-HOOK' | dd of=\"$RAUC_SLOT_DEVICE\" bs=1 seek=65536 conv=notrunc status=none;; *) exit 1;; esac\n",
        )
        .unwrap();
        run_ok(Command::new("chmod").arg("755").arg(content.join("hook.sh")));
        std::fs::write(
            content.join("manifest.raucm"),
            format!("[update]\ncompatible=henb-test\nversion=1\n\n[bundle]\nformat=verity\n\n{hooks}[image.rootfs]\nfilename=rootfs.img\n{}", if hooks.is_empty() { "" } else { "hooks=install\n" }),
        )
        .unwrap();
        d.w.rauc_bundle(&content, &format!("{name}.raucb"))
    };
    let plain = make("plain", "", &image);
    let hooked = make("hooked", "[hooks]\nfilename=hook.sh\n\n", &image);
    let before = std::fs::read(&lo).unwrap();
    // A mounted slot is refused (RAUC: "already mounted"), whatever the bundle.
    for b in [&plain, &hooked] {
        let (code, out) = d.install(b);
        assert_ne!(code, 0, "{out}");
        let m = error(&out).2;
        assert!(m.contains("is in use (mounted at") && m.contains(&w("m").display().to_string()), "{out}");
    }
    // allow-mounted=true: only a bundle's install hook may update it.
    std::fs::write(&d.conf, conf.replacen("bootname=B\n", "bootname=B\nallow-mounted=true\n", 1)).unwrap();
    let (code, out) = d.install(&plain);
    assert_ne!(code, 0, "{out}");
    assert!(error(&out).2.contains("may only be updated by a bundle's install hook"), "{out}");
    assert_eq!(std::fs::read(&lo).unwrap(), before, "nothing written");
    // The hook's image must still fit the slot.
    // (Mostly zeros, but not only: rauc refuses a squashfs of 4096 bytes.)
    let mut big = vec![0u8; (64 << 20) + 4096];
    big[..65536].copy_from_slice(&pseudo_random(65536, 30));
    let big = make("big", "[hooks]\nfilename=hook.sh\n\n", &big);
    let (code, out) = d.install(&big);
    assert_ne!(code, 0, "{out}");
    assert!(error(&out).2.contains("does not fit slot"), "{out}");
    assert_eq!(std::fs::read(&lo).unwrap(), before, "nothing written");
    let (code, out) = d.install(&hooked);
    assert_eq!(code, 0, "{out}");
    assert_eq!(read_at(Path::new(&lo), 65536, 7), b"BY-HOOK");
}
