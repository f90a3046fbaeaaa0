//! A device for install tests: two file-backed slots A and B (booted: A), a GRUB or
//! U-Boot environment, the operator root in a real swtpm.
#![allow(dead_code)]

use super::swtpm::Swtpm;
use super::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Device {
    pub t: Swtpm,
    pub w: Work,
    pub conf: PathBuf,
}

pub const SLOT: u64 = 64 << 20;

impl Device {
    /// Two file slots A and B (booted: A), a GRUB (or U-Boot) environment, roots in swtpm.
    pub fn new(uboot: bool) -> Self {
        let t = Swtpm::start();
        let w = Work::new();
        for s in ["slotA", "slotB"] {
            std::fs::File::create(w.path(s)).unwrap().set_len(SLOT).unwrap(); // sparse
        }
        let boot = if uboot {
            let cfg = w.path("fw_env.config");
            std::fs::write(w.path("env"), vec![0u8; 0x4000]).unwrap();
            std::fs::write(&cfg, format!("{} 0x0 0x4000\n", w.path("env").display())).unwrap();
            std::fs::write(w.path("defaults"), "bootcmd=boot\n").unwrap();
            run_ok(
                Command::new("fw_setenv")
                    .arg("-c")
                    .arg(&cfg)
                    .arg("-f")
                    .arg(w.path("defaults"))
                    .args(["BOOT_ORDER", "A B"]),
            );
            run_ok(Command::new("fw_setenv").arg("-c").arg(&cfg).args(["BOOT_A_LEFT", "3"]));
            run_ok(Command::new("fw_setenv").arg("-c").arg(&cfg).args(["BOOT_B_LEFT", "3"]));
            format!("bootloader=uboot\n\n[uboot]\nenv-config={}\n", cfg.display())
        } else {
            let g = w.path("grubenv");
            run_ok(Command::new("grub-editenv").arg(&g).arg("create"));
            run_ok(Command::new("grub-editenv").arg(&g).args([
                "set",
                "ORDER=A B",
                "A_OK=1",
                "A_TRY=0",
                "B_OK=1",
                "B_TRY=0",
            ]));
            format!("bootloader=grub\ngrubenv={}\n", g.display())
        };
        let conf = w.path("system.conf");
        std::fs::write(
            &conf,
            format!(
                "[system]\ncompatible=henb-test\ndata-directory={data}\n{boot}\n[keyring]\ncheck-purpose=codesign\n\n[tpm]\ntcti={tcti}\n\n\
                 [slot.rootfs.0]\ndevice={a}\ntype=ext4\nbootname=A\n\n[slot.rootfs.1]\ndevice={b}\ntype=ext4\nbootname=B\n",
                data = w.path("data").display(),
                tcti = t.tcti(),
                a = w.path("slotA").display(),
                b = w.path("slotB").display(),
            ),
        )
        .unwrap();
        let d = Device { t, w, conf };
        let out = d.cli(&["trust", "provision", "--root", cert("root").to_str().unwrap()]);
        assert!(out.status.success(), "trust provision: {}", String::from_utf8_lossy(&out.stderr));
        d
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as("A", args)
    }

    /// Run the agent as if `bootname` was booted.
    pub fn cli_as(&self, bootname: &str, args: &[&str]) -> Output {
        self.cmd_as(bootname, args).output().unwrap()
    }

    pub fn cmd_as(&self, bootname: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--conf").arg(&self.conf).arg("--override-boot-slot").arg(bootname).args(args);
        c
    }

    /// Turn measured boot on (`[measured-boot]`, required). swtpm starts with an empty
    /// owner authorization, which measured boot refuses unless the configuration allows
    /// it: unless a test gave an `owner-auth-file`, this sets
    /// `[tpm] allow-empty-owner-auth=true` (what only development images do).
    pub fn enable_measured_boot(&self) {
        let mut c = std::fs::read_to_string(&self.conf).unwrap();
        if !c.contains("owner-auth-file=") {
            c = c.replacen("[tpm]\n", "[tpm]\nallow-empty-owner-auth=true\n", 1);
        }
        c.push_str("\n[measured-boot]\nrequired=true\n");
        std::fs::write(&self.conf, c).unwrap();
    }

    pub fn install(&self, pkg: &Path) -> (i32, serde_json::Value) {
        let o = self.cli(&["install", "--json", "--command-key", "ck-1", pkg.to_str().unwrap()]);
        (o.status.code().unwrap_or(-1), serde_json::from_slice(&o.stdout).unwrap_or_default())
    }

    pub fn boot_env(&self) -> Vec<u8> {
        std::fs::read(if self.w.path("grubenv").exists() { self.w.path("grubenv") } else { self.w.path("env") })
            .unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.cli(&["status", "--json"]).stdout).unwrap()
    }
}

pub fn grub_list(d: &Device) -> String {
    String::from_utf8(run_ok(Command::new("grub-editenv").arg(d.w.path("grubenv")).arg("list")).stdout).unwrap()
}
