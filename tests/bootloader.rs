//! Bootloader backends against their real readers: Debian's grub-editenv and
//! libubootenv's fw_printenv/fw_setenv. RAUC's variable semantics, atomic writes.

mod common;
use common::*;
use henb_update::bootloader::grubenv::{self, GrubEnv};
use henb_update::bootloader::ubootenv::UbootEnv;
use henb_update::bootloader::{custom::Custom, BootState, Bootloader, Slots};
use std::path::Path;
use std::process::Command;

fn slots() -> Slots {
    Slots { bootnames: vec!["A".into(), "B".into()], boot_attempts: 3, boot_attempts_primary: 3 }
}

fn grub_list(p: &Path) -> String {
    String::from_utf8(run_ok(Command::new("grub-editenv").arg(p).arg("list")).stdout).unwrap()
}

#[test]
fn grubenv_is_what_grub_editenv_writes_and_reads() {
    let w = Work::new();
    let p = w.path("grubenv");
    // grub-editenv's own block survives a parse and re-serialize byte for byte.
    run_ok(Command::new("grub-editenv").arg(&p).arg("create"));
    run_ok(Command::new("grub-editenv").arg(&p).args(["set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=1", "B_TRY=0"]));
    let theirs = std::fs::read(&p).unwrap();
    let env = grubenv::parse(&theirs, "t").unwrap();
    assert_eq!(grubenv::serialize(&env, theirs.len(), "t").unwrap(), theirs);
    // Our transitions, read back by grub-editenv.
    let mut g = GrubEnv::new(&p, slots());
    assert_eq!(g.primary().unwrap().as_deref(), Some("A"));
    g.set_state("B", false).unwrap();
    assert!(grub_list(&p).contains("B_OK=0\nB_TRY=0\n"));
    g.set_primary("B").unwrap();
    let l = grub_list(&p);
    assert!(l.contains("ORDER=B A\n") && l.contains("B_OK=1\n") && l.contains("B_TRY=0\n"), "{l}");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1024);
    // GRUB's boot script marks a try (B_TRY=1) and falls back: we see it as not good.
    run_ok(Command::new("grub-editenv").arg(&p).args(["set", "B_TRY=1"]));
    assert_eq!(g.state("B").unwrap(), BootState::Bad);
    assert_eq!(g.primary().unwrap().as_deref(), Some("A"));
    g.set_state("A", true).unwrap();
    assert_eq!(g.state("A").unwrap(), BootState::Good);
}

#[test]
fn grubenv_is_created_when_missing_and_refused_when_damaged() {
    let w = Work::new();
    let p = w.path("grubenv");
    GrubEnv::new(&p, slots()).set_primary("A").unwrap();
    assert!(grub_list(&p).contains("ORDER=A B"));
    std::fs::write(&p, vec![b'x'; 1024]).unwrap();
    assert!(GrubEnv::new(&p, slots()).set_primary("B").is_err());
    assert_eq!(std::fs::read(&p).unwrap(), vec![b'x'; 1024], "a damaged block is not overwritten");
}

fn uboot_setup(w: &Work, redundant: bool) -> std::path::PathBuf {
    let cfg = w.path("fw_env.config");
    let mut text = format!("{} 0x0 0x4000\n", w.path("env1").display());
    std::fs::write(w.path("env1"), vec![0u8; 0x4000]).unwrap();
    if redundant {
        text += &format!("{} 0x0 0x4000\n", w.path("env2").display());
        std::fs::write(w.path("env2"), vec![0u8; 0x4000]).unwrap();
    }
    std::fs::write(&cfg, text).unwrap();
    std::fs::write(w.path("defaults"), "bootcmd=run distro_bootcmd\nbootdelay=2\n").unwrap();
    // U-Boot's own tooling initializes the environment, as at the factory.
    run_ok(Command::new("fw_setenv").arg("-c").arg(&cfg).arg("-f").arg(w.path("defaults")).args(["BOOT_ORDER", "A B"]));
    for b in ["A", "B"] {
        run_ok(Command::new("fw_setenv").arg("-c").arg(&cfg).args([&format!("BOOT_{b}_LEFT"), "3"]));
    }
    cfg
}

fn printenv(cfg: &Path) -> String {
    String::from_utf8(run_ok(Command::new("fw_printenv").arg("-c").arg(cfg)).stdout).unwrap()
}

#[test]
fn uboot_env_single_and_redundant_read_by_fw_printenv() {
    for redundant in [false, true] {
        let w = Work::new();
        let cfg = uboot_setup(&w, redundant);
        let mut u = UbootEnv::open(&cfg, slots()).unwrap();
        assert_eq!(u.primary().unwrap().as_deref(), Some("A"));
        // Several writes, so the redundant copies alternate (and their flags advance).
        u.set_state("B", false).unwrap();
        let e = printenv(&cfg);
        assert!(e.contains("BOOT_ORDER=A\n") && e.contains("BOOT_B_LEFT=0\n"), "{e}");
        u.set_state("B", true).unwrap();
        u.set_primary("B").unwrap();
        let e = printenv(&cfg);
        assert!(e.contains("BOOT_ORDER=B A\n") && e.contains("BOOT_B_LEFT=3\n"), "{e}");
        assert!(e.contains("bootcmd=run distro_bootcmd\n"), "U-Boot's own variables are kept: {e}");
        // fw_setenv's changes (U-Boot counting down) are what we read next.
        run_ok(Command::new("fw_setenv").arg("-c").arg(&cfg).args(["BOOT_B_LEFT", "0"]));
        assert_eq!(u.state("B").unwrap(), BootState::Bad);
        assert_eq!(u.primary().unwrap().as_deref(), Some("A"));
        for _ in 0..5 {
            u.set_primary("A").unwrap();
            u.set_primary("B").unwrap();
        }
        assert!(printenv(&cfg).contains("BOOT_ORDER=B A\n"));
    }
}

#[test]
fn redundant_env_survives_a_torn_write() {
    let w = Work::new();
    let cfg = uboot_setup(&w, true);
    let mut u = UbootEnv::open(&cfg, slots()).unwrap();
    u.set_primary("B").unwrap(); // goes to the copy that was not current
                                 // Tear the copy just written (the one whose flag is one ahead): the old copy is
                                 // current again, for us and for fw_printenv.
    let (mut a, mut b) = (std::fs::read(w.path("env1")).unwrap(), std::fs::read(w.path("env2")).unwrap());
    let newer = if a[4] == b[4].wrapping_add(1) { &mut a } else { &mut b };
    newer[100] ^= 0xff;
    std::fs::write(w.path("env1"), &a).unwrap();
    std::fs::write(w.path("env2"), &b).unwrap();
    assert_eq!(u.primary().unwrap().as_deref(), Some("A"), "the torn copy is ignored");
    assert!(printenv(&cfg).contains("BOOT_ORDER=A B\n"), "fw_printenv agrees");
}

#[test]
fn uboot_env_without_a_valid_copy_is_not_overwritten() {
    let w = Work::new();
    let cfg = w.path("fw_env.config");
    std::fs::write(&cfg, format!("{} 0x0 0x4000\n", w.path("env1").display())).unwrap();
    std::fs::write(w.path("env1"), vec![0u8; 0x4000]).unwrap();
    let mut u = UbootEnv::open(&cfg, slots()).unwrap();
    let e = u.set_primary("A").unwrap_err();
    assert!(e.to_string().contains("no environment copy has a valid CRC"), "{e}");
    assert_eq!(std::fs::read(w.path("env1")).unwrap(), vec![0u8; 0x4000]);
}

#[test]
fn custom_backend_gets_rauc_subcommands_as_arguments() {
    let w = Work::new();
    let script = w.path("backend.sh");
    let log = w.path("calls");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {log}\ncase \"$1\" in\n get-primary) echo B ;;\n get-state) [ \"$2\" = A ] && echo good || echo bad ;;\nesac\n",
            log = log.display()
        ),
    )
    .unwrap();
    run_ok(Command::new("chmod").arg("+x").arg(&script));
    let mut c = Custom::new(script, std::time::Duration::from_secs(30));
    assert_eq!(c.primary().unwrap().as_deref(), Some("B"));
    assert_eq!(c.state("A").unwrap(), BootState::Good);
    assert_eq!(c.state("B; rm -rf /").unwrap(), BootState::Bad);
    c.set_state("B", false).unwrap();
    c.set_primary("A").unwrap();
    let calls = std::fs::read_to_string(log).unwrap();
    assert_eq!(calls, "get-primary\nget-state A\nget-state B; rm -rf /\nset-state B bad\nset-primary A\n");
    // Run as hooks are: a backend that hangs is killed at its timeout.
    let hang = w.path("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\nsleep 600\n").unwrap();
    run_ok(Command::new("chmod").arg("+x").arg(&hang));
    let started = std::time::Instant::now();
    let e = Custom::new(hang, std::time::Duration::from_secs(1)).primary().unwrap_err().to_string();
    assert!(e.contains("did not finish within 1 s"), "{e}");
    assert!(started.elapsed().as_secs() < 30);
}
