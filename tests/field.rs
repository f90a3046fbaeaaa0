//! Step 10: what the field does to a device. Damaged state files, bootloader environments
//! written by other tools in other layouts, configuration typos. Each case goes through
//! the real binary; bootloader results are read back by the real tools (grub-editenv,
//! fw_printenv).

mod common;
use common::device::{Device, SLOT};
use common::*;
use std::path::Path;
use std::process::Command;

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

fn damaged_copies(data: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("status.json.damaged-"))
        .collect();
    v.sort();
    v
}

/// Finding 1: a damaged status file (a storage fault, a full disk, a manual edit) never
/// stops the next update. For each kind of damage: `status`, `install` of a good package
/// and `mark good` succeed; the damaged bytes are kept beside it; the reset is reported
/// once as the last result; and a slot the agent has not written since is not activated
/// on the strength of what the lost file said.
#[test]
fn a_damaged_status_file_never_stops_the_next_update() {
    let d = Device::new(false);
    let c = d.w.content("c", 200_000, "");
    let p = d.w.bundle("verity", &c, &["signer-rsa"], "u.raucb", &[]);
    let data = d.w.path("data");
    let status = data.join("status.json");
    type Damage<'a> = Box<dyn Fn(&[u8]) + 'a>;
    let cases: Vec<(&str, Damage)> = vec![
        ("empty", Box::new(|_| std::fs::write(&status, b"").unwrap())),
        ("cut to 37 bytes", Box::new(|good| std::fs::write(&status, &good[..37]).unwrap())),
        ("{}", Box::new(|_| std::fs::write(&status, b"{}").unwrap())),
        ("a newer format", Box::new(|_| std::fs::write(&status, br#"{"format":99,"slots":{}}"#).unwrap())),
        (
            "format 0",
            Box::new(|_| {
                std::fs::write(&status, br#"{"format":0,"slots":{},"last-result":null,"pending":null}"#).unwrap()
            }),
        ),
        ("garbage bytes", Box::new(|_| std::fs::write(&status, pseudo_random(600, 5)).unwrap())),
        (
            "wrong types",
            Box::new(|_| std::fs::write(&status, br#"{"format":2,"slots":[1,2],"last-result":7}"#).unwrap()),
        ),
        (
            "a directory",
            Box::new(|_| {
                std::fs::remove_file(&status).unwrap();
                std::fs::create_dir(&status).unwrap();
                std::fs::write(status.join("x"), b"x").unwrap();
            }),
        ),
        (
            "a symbolic link",
            Box::new(|_| {
                std::fs::remove_file(&status).unwrap();
                std::os::unix::fs::symlink("/etc/hostname", &status).unwrap();
            }),
        ),
    ];
    for (what, damage) in &cases {
        assert_eq!(d.install(&p).0, 0, "{what}: a normal install first");
        let good = std::fs::read(&status).unwrap();
        damage(&good);
        let before = std::fs::symlink_metadata(&status).map(|m| m.file_type().is_dir()).unwrap();
        let damaged_bytes = if before { None } else { std::fs::read(&status).ok() };

        let o = d.cli(&["status", "--json"]);
        assert!(o.status.success(), "{what}: status: {}", String::from_utf8_lossy(&o.stderr));
        let s = json(&o);
        assert_eq!(s["last-result"]["kind"], "status-reset", "{what}: reported: {s}");
        assert_eq!(s["last-result"]["fault-code"], 9002, "{what}");
        let copies = damaged_copies(&data);
        let kept = copies.last().unwrap_or_else(|| panic!("{what}: the damaged copy is kept"));
        if let Some(b) = &damaged_bytes {
            if !std::fs::symlink_metadata(kept).unwrap().file_type().is_symlink() {
                assert_eq!(&std::fs::read(kept).unwrap(), b, "{what}: its bytes, unchanged");
            }
        }
        assert!(copies.len() <= 3, "{what}: at most three damaged copies are kept: {copies:?}");
        // Reported once: a second status does not reset again.
        let n = damaged_copies(&data).len();
        assert!(d.cli(&["status"]).status.success());
        assert_eq!(damaged_copies(&data).len(), n, "{what}: healed once");

        // B was written before the damage, but what the file said about it is gone.
        let o = d.cli(&["mark", "active", "other"]);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("slot-unknown"), "{what}");

        let (code, out) = d.install(&p);
        assert_eq!(code, 0, "{what}: install after the damage: {out}");
        let o = d.cli(&["mark", "good"]);
        assert!(o.status.success(), "{what}: mark good: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(d.status()["slots"][1]["status"], "Available", "{what}");
        std::fs::write(d.w.path("slotB"), vec![0u8; SLOT as usize]).unwrap();
    }
}

fn run(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout).unwrap()
}

/// A GRUB environment block as another tool or an older GRUB wrote it: the signature,
/// `lines` verbatim, `#` padding to `size`.
fn foreign_block(lines: &str, size: usize) -> Vec<u8> {
    let mut b = b"# GRUB Environment Block\n".to_vec();
    b.extend_from_slice(lines.as_bytes());
    assert!(b.len() <= size, "{} > {size}", b.len());
    b.resize(size, b'#');
    b
}

/// What grub-editenv does to a copy of `before` when told to set RAUC's variables to the
/// values `ours` lists, in the order it lists them: byte-identical to our block when we
/// changed it only the way grub-editenv would (values in place, new variables appended,
/// the rest of the layout kept).
fn grub_editenv_equivalent(d: &Device, before: &[u8], ours: &Path) -> Vec<u8> {
    let copy = d.w.path("grubenv-theirs");
    std::fs::write(&copy, before).unwrap();
    let listed = run(Command::new("grub-editenv").arg(ours).arg("list"));
    let mut c = Command::new("grub-editenv");
    c.arg(&copy).arg("set");
    let rauc = ["ORDER=", "A_OK=", "A_TRY=", "B_OK=", "B_TRY="];
    for l in listed.lines().filter(|l| rauc.iter().any(|r| l.starts_with(r))) {
        c.arg(l);
    }
    run_ok(&mut c);
    std::fs::read(&copy).unwrap()
}

/// Finding 2: GRUB environments in other layouts are edited the way grub-editenv edits
/// them: a pre-2.06 block without the warning line and about 60 bytes free, foreign
/// variables, escapes and comment lines, a 2048-byte block. Each result is byte-identical
/// to what grub-editenv makes of the same change and is read back by `grub-editenv list`;
/// a change that truly does not fit is refused and leaves the file byte-identical.
#[test]
fn grub_environments_in_foreign_layouts_are_edited_as_grub_editenv_does() {
    let d = Device::new(false);
    let g = d.w.path("grubenv");
    let kernelopts = format!("kernelopts=root=/dev/mapper/rootvg-root ro {}\n", "console=ttyS0,115200n8 ".repeat(28));
    let nearly_full = format!("ORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=0\n{kernelopts}");
    let foreign = "# written by the vendor's flasher, do not remove\nsaved_entry=gnulinux-advanced>gnulinux-5.10\\\\x\nORDER=A B\nA_OK=1\nA_TRY=0\n# a comment between variables\nB_OK=1\nB_TRY=0\nnote=line one\\\nline two\nboot_once=\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("pre-2.06, nearly full", foreign_block(&nearly_full, 1024)),
        ("foreign variables, escapes and comments", foreign_block(foreign, 1024)),
        ("2048 bytes", foreign_block(foreign, 2048)),
        ("our variables missing, appended", foreign_block("saved_entry=0\nORDER=A B\n", 1024)),
    ];
    for (what, block) in &cases {
        let free = block.iter().rev().take_while(|c| **c == b'#').count();
        std::fs::write(&g, block).unwrap();
        let o = d.cli(&["mark", "active", "other"]);
        assert!(o.status.success(), "{what} ({free} bytes free): {}", String::from_utf8_lossy(&o.stderr));
        let ours = std::fs::read(&g).unwrap();
        assert_eq!(ours.len(), block.len(), "{what}: the size is kept");
        let listed = run(Command::new("grub-editenv").arg(&g).arg("list"));
        assert!(
            listed.contains("ORDER=B A\n") && listed.contains("B_OK=1\n") && listed.contains("B_TRY=0\n"),
            "{what}: {listed}"
        );
        assert_eq!(ours, grub_editenv_equivalent(&d, block, &g), "{what}: as grub-editenv would have written it");
        if *what != "our variables missing, appended" {
            // Every line that is not ours is still there, byte for byte.
            let text = String::from_utf8_lossy(block);
            for l in text.lines().filter(|l| !l.starts_with(['O', 'A', 'B']) && !l.chars().all(|c| c == '#')) {
                assert!(String::from_utf8_lossy(&ours).contains(l), "{what}: {l:?} kept");
            }
        }
    }
    // The last of two lines of one name is what GRUB loads: it gets the new value and the
    // earlier one goes, so GRUB cannot read a stale order.
    std::fs::write(&g, foreign_block("ORDER=B A\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=0\nORDER=B A\n", 1024)).unwrap();
    assert!(d.cli(&["mark", "active", "A"]).status.success());
    let listed = run(Command::new("grub-editenv").arg(&g).arg("list"));
    assert_eq!(listed.matches("ORDER=").count(), 1, "{listed}");
    assert!(listed.contains("ORDER=A B\n"), "{listed}");
    // Truly full: B_TRY is missing and there is no room for it. Refused, byte-identical.
    let tight = "ORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=1\n";
    let filler = format!("p={}\n", "y".repeat(1024 - 25 - tight.len() - 3));
    let block = foreign_block(&(tight.to_string() + &filler), 1024);
    assert_eq!(block.iter().rev().take_while(|c| **c == b'#').count(), 0);
    std::fs::write(&g, &block).unwrap();
    let o = d.cli(&["mark", "active", "other"]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("need") && err.contains("1024"), "{err}");
    assert_eq!(std::fs::read(&g).unwrap(), block, "refused: byte-identical");
    run(Command::new("grub-editenv").arg(&g).arg("list"));
}

/// The entries stored in one environment copy (after CRC and, when redundant, the flag).
fn stored_entries(file: &Path, header: usize) -> Vec<Vec<u8>> {
    let b = std::fs::read(file).unwrap();
    b[header..].split(|c| *c == 0).take_while(|e| !e.is_empty()).map(<[u8]>::to_vec).collect()
}

/// Finding 2's U-Boot side: a U-Boot environment (single and redundant) that holds
/// foreign variables, one with bytes that are not UTF-8, keeps them byte for byte and in
/// their order when the agent changes the boot order; `fw_printenv` reads the result and
/// the copy it picks has everything.
#[test]
fn uboot_environments_keep_foreign_variables_and_their_order() {
    use std::os::unix::ffi::OsStrExt;
    for redundant in [false, true] {
        let d = Device::new(true);
        let cfg = d.w.path("fw_env.config");
        let mut text = format!("{} 0x0 0x4000\n", d.w.path("env").display());
        if redundant {
            std::fs::write(d.w.path("env2"), vec![0u8; 0x4000]).unwrap();
            text += &format!("{} 0x0 0x4000\n", d.w.path("env2").display());
        }
        std::fs::write(&cfg, text).unwrap();
        let defaults = d.w.path("vendor-defaults");
        let mut v = b"bootcmd=run distro_bootcmd; echo 'done'\nethaddr=02:00:00:00:00:01\nzz_last=1\nBOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n".to_vec();
        v.extend_from_slice(b"blob=\xff\xfe\x80binary\n");
        std::fs::write(&defaults, &v).unwrap();
        std::fs::write(d.w.path("env"), vec![0u8; 0x4000]).unwrap();
        run_ok(Command::new("fw_setenv").arg("-c").arg(&cfg).arg("-f").arg(&defaults).args(["zz_last", "1"]));
        let header = if redundant { 5 } else { 4 };
        let current = |d: &Device| {
            // The copy fw_printenv uses: for a redundant pair, the one with the newer flag.
            let (a, b) = (d.w.path("env"), d.w.path("env2"));
            if !redundant {
                return a;
            }
            let (fa, fb) = (std::fs::read(&a).unwrap()[4], std::fs::read(&b).unwrap()[4]);
            if (fb > fa && !(fa == 0 && fb == 255)) || (fa == 255 && fb == 0) {
                b
            } else {
                a
            }
        };
        let ours = |e: &Vec<u8>| e.starts_with(b"BOOT_");
        let before: Vec<Vec<u8>> = stored_entries(&current(&d), header).into_iter().filter(|e| !ours(e)).collect();
        assert!(before.iter().any(|e| e.starts_with(b"blob=\xff")), "fw_setenv stored the binary value");
        for args in [["mark", "active", "other"], ["mark", "active", "A"]] {
            let o = d.cli(&args);
            assert!(o.status.success(), "{redundant}: {args:?}: {}", String::from_utf8_lossy(&o.stderr));
            let after: Vec<Vec<u8>> = stored_entries(&current(&d), header).into_iter().filter(|e| !ours(e)).collect();
            assert_eq!(after, before, "redundant={redundant}: foreign entries, bytes and order kept");
            let printed = run_ok(Command::new("fw_printenv").arg("-c").arg(&cfg)).stdout;
            for e in &before {
                let line = [e.as_slice(), b"\n"].concat();
                assert!(
                    printed.windows(line.len()).any(|w| w == line.as_slice()),
                    "{}",
                    std::ffi::OsStr::from_bytes(e).to_string_lossy()
                );
            }
        }
        let o = run_ok(Command::new("fw_printenv").arg("-c").arg(&cfg).arg("BOOT_ORDER"));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "BOOT_ORDER=A B\n");
    }
}

/// Finding 3 and 4: configuration typos and misplaced keys never weaken the policy in
/// silence. Each broken file is refused by `config check` and by a command that loads it,
/// and each problem names file, line and key.
#[test]
fn broken_configurations_are_refused_naming_file_line_and_key() {
    let w = Work::new();
    let base = "[system]\ncompatible=acme-henb\nbootloader=noop\n";
    // (file text, line, key, words the message must have)
    let cases: &[(&str, usize, &str, &str)] = &[
        ("[system]\ncompatibel=acme\n", 2, "[system] compatibel", "did you mean 'compatible'"),
        ("[System]\ncompatible=acme\n", 1, "", "did you mean [system]"),
        ("[system]\nbootloader=grub\n", 1, "[system] compatible", "required"),
        ("[system]\ncompatible=\n", 2, "[system] compatible", "empty"),
        (
            "[system]\ncompatible=acme\n[tpm]\nallowed-signer-cns=ops\n",
            4,
            "[tpm] allowed-signer-cns",
            "belongs in [keyring]",
        ),
        (
            "[system]\ncompatible=acme\n[keyring]\ncheck-purpse=codesign\n",
            4,
            "[keyring] check-purpse",
            "did you mean 'check-purpose'",
        ),
        (
            "[system]\ncompatible=acme\n[keyring]\ncheck-purpose=codesgin\n",
            4,
            "[keyring] check-purpose",
            "smimesign, codesign or any",
        ),
        (
            "[system]\ncompatible=acme\n[keyring]\ncheck-purpose=codesign  # RAUC's default\n",
            4,
            "[keyring] check-purpose",
            "no inline comments",
        ),
        ("[system]\ncompatible=acme # board\n", 2, "[system] compatible", "no inline comments"),
        (
            "[system]\ncompatible=acme\n[keyring]\nallowed-signer-cns=\n",
            4,
            "[keyring] allowed-signer-cns",
            "empty list",
        ),
        ("[system]\ncompatible=acme\nboot-attempts=0\n", 3, "[system] boot-attempts", "1 to 255"),
        ("[system]\ncompatible=acme\nboot-attempts=three\n", 3, "[system] boot-attempts", "1 to 255"),
        ("[system]\ncompatible=acme\nbootloader=lilo\n", 3, "[system] bootloader", "grub, uboot, barebox, efi"),
        ("[system]\ncompatible=acme\nbundle-hooks=maybe\n", 3, "[system] bundle-hooks", "run or refuse"),
        (
            "[system]\ncompatible=acme\nmax-bundle-download-size=1048576\n",
            3,
            "[system] max-bundle-download-size",
            "not supported by henb-update",
        ),
        (
            "[system]\ncompatible=acme\n[streaming]\nsend-headers=boot-id\n",
            4,
            "[streaming] send-headers",
            "not supported by henb-update",
        ),
        ("[system]\ncompatible=acme\n[casync]\nstorepath=/x\n", 3, "", "[casync] section is not supported"),
        ("[system]\ncompatible=acme\n[tpm]\ntcti=swtpm:path=/run/swtpm.sock\n", 4, "[tpm] tcti", "supported forms"),
        ("[system]\ncompatible=acme\n[tpm]\ntcti=tabrmd:bus_type=user\n", 4, "[tpm] tcti", "supported forms"),
        ("[system]\ncompatible=acme\n[tpm]\nroot-index=0x81000000\n", 4, "[tpm] root-index", "owner NV index"),
        ("[system]\ncompatible=acme\n[tpm]\nroot-slots=1\n", 4, "[tpm] root-slots", "2 to 64"),
        ("[system]\ncompatible=acme\n[measured-boot]\npcrs=8;24\n", 4, "[measured-boot] pcrs", "0 to 23"),
        ("[system]\ncompatible=acme\n[measured-boot]\n", 3, "[tpm] owner-auth-file", "allow-empty-owner-auth"),
        (
            "[system]\ncompatible=acme\n[tpm]\nallow-empty-owner-auth=yes\n",
            4,
            "[tpm] allow-empty-owner-auth",
            "true or false",
        ),
        (
            "[system]\ncompatible=acme\n[keyring]\nuse-bundle-signing-time=yes\n",
            4,
            "[keyring] use-bundle-signing-time",
            "true or false",
        ),
        (
            "[system]\ncompatible=acme\n[slot.rootfs.0]\ndevice=/dev/vda2\nextra-mount-opts=ro\n",
            5,
            "[slot.rootfs.0] extra-mount-opts",
            "not supported by henb-update",
        ),
        (
            "[system]\ncompatible=acme\n[slot.rootfs.0]\ndevice=/dev/vda2\nbootnmae=A\n",
            5,
            "[slot.rootfs.0] bootnmae",
            "did you mean 'bootname'",
        ),
        ("[system]\ncompatible=acme\n[slot.rootfs]\ndevice=/dev/vda2\n", 3, "", "[slot.<class>.<index>]"),
        (
            "[system]\ncompatible=acme\n[slot.rootfs.0]\ndevice=/dev/vda2\nparent=rootfs.9\n",
            5,
            "[slot.rootfs.0] parent",
            "no such slot",
        ),
        ("[system]\ncompatible=acme\nbootloader=custom\n", 1, "[handlers] bootloader-custom-backend", "needs"),
        (
            "[system]\ncompatible=acme\n[service]\nrauc-compatible=maybe\n",
            4,
            "[service] rauc-compatible",
            "true or false",
        ),
        ("[system]\ncompatible=acme\ncompatible=other\n", 3, "", "duplicate"),
    ];
    assert!(cases.len() >= 20);
    for (i, (text, line, key, says)) in cases.iter().enumerate() {
        let f = w.path(&format!("broken-{i}.conf"));
        std::fs::write(&f, text).unwrap();
        let o = Command::new(BIN).arg("--conf").arg(&f).args(["config", "check", "--json"]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{text:?}: {}", String::from_utf8_lossy(&o.stderr));
        let j = json(&o);
        assert_eq!(j["valid"], false);
        let p = j["problems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["line"] == *line)
            .unwrap_or_else(|| panic!("{text:?}: no problem at line {line}: {j}"));
        if !key.is_empty() {
            assert_eq!(p["key"], *key, "{text:?}: {j}");
        }
        assert!(p["what"].as_str().unwrap().contains(says), "{text:?}: {j}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("{}:{line}: ", f.display())), "{text:?}: file:line in {err}");
        // A command that loads the file refuses it the same way.
        let o = Command::new(BIN).arg("--conf").arg(&f).arg("status").output().unwrap();
        assert_eq!(o.status.code(), Some(3), "{text:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("{}:{line}: ", f.display())), "{text:?}");
    }
    // Every problem of a file in one run, in file order.
    let f = w.path("several.conf");
    std::fs::write(&f, "[system]\ncompatibel=x\nboot-attempts=0\n[tpm]\ntcti=foo\n[Keyring]\n").unwrap();
    let o = Command::new(BIN).arg("--conf").arg(&f).args(["config", "check", "--json"]).output().unwrap();
    let lines: Vec<u64> =
        json(&o)["problems"].as_array().unwrap().iter().map(|p| p["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 2, 3, 5, 6], "{}", String::from_utf8_lossy(&o.stdout));
    // And a good one passes.
    let f = w.path("good.conf");
    std::fs::write(&f, format!("{base}[tpm]\ntcti=swtpm:host=127.0.0.1,port=2321\n")).unwrap();
    let o = Command::new(BIN).arg("--conf").arg(&f).args(["config", "check"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
