//! The whole story on a booting machine: QEMU (TCG) + OVMF + GRUB measuring into a swtpm,
//! the image from images/build.sh, the agent inside driving updates through its D-Bus
//! service. Each scenario asserts on what the guest reports on its serial console
//! ("HENB key=value" lines: slot, PCR values, exit codes, fault codes), never on log
//! wording. Serial logs are kept in target/vm-logs/ (the failing one is named in the
//! panic message).
//!
//! Needs the release build of the agent (scripts/test.sh builds it first; so does this
//! test if it is missing) and the packages scripts/setup.sh installs.

mod common;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What one boot reported.
struct Boot {
    name: String,
    lines: Vec<(String, String)>,
    log: PathBuf,
}

impl Boot {
    fn get(&self, k: &str) -> Option<&str> {
        self.lines.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<&str> {
        self.lines.iter().filter(|(key, _)| key == k).map(|(_, v)| v.as_str()).collect()
    }
    #[track_caller]
    fn expect(&self, k: &str, v: &str) {
        assert_eq!(self.get(k), Some(v), "VM scenario '{}': {k}; serial log: {}", self.name, self.log.display());
    }
    fn json(&self, k: &str) -> Vec<serde_json::Value> {
        self.all(k).iter().filter_map(|v| serde_json::from_str(v).ok()).collect()
    }
    fn transfers(&self) -> Vec<(String, u64, String)> {
        self.json("transfer")
            .iter()
            .map(|t| {
                (
                    t["command-key"].as_str().unwrap_or_default().to_string(),
                    t["fault-code"].as_u64().unwrap_or(u64::MAX),
                    t["fault-string"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
    fn completed(&self) -> serde_json::Value {
        self.json("download")
            .into_iter()
            .find(|v| v.get("completed").is_some())
            .map(|v| v["completed"].clone())
            .unwrap_or_default()
    }
}

struct Vm {
    dir: PathBuf,
    logs: PathBuf,
    n: usize,
}

impl Vm {
    fn build() -> Vm {
        let agent = Path::new(ROOT).join("target/release/henb-update");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo).args(["build", "--release", "--locked", "-q"]).current_dir(ROOT).status().unwrap();
        assert!(ok.success(), "cargo build --release");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm");
        let _ = std::fs::remove_dir_all(dir.join("tpm"));
        let o = Command::new(Path::new(ROOT).join("images/build.sh")).arg(&dir).arg(&agent).output().unwrap();
        assert!(o.status.success(), "images/build.sh: {}", String::from_utf8_lossy(&o.stderr));
        for b in ["factory", "update", "wrong-rv"] {
            common::oracle::built(&dir.join(format!("work/{b}.raucb")));
        }
        std::fs::create_dir_all(dir.join("tpm")).unwrap();
        let o = Command::new("swtpm_setup")
            .args(["--tpm2", "--pcr-banks", "sha256", "--overwrite", "--tpmstate"])
            .arg(dir.join("tpm"))
            .output()
            .unwrap();
        assert!(o.status.success(), "swtpm_setup: {}", String::from_utf8_lossy(&o.stderr));
        let logs = Path::new(ROOT).join("target/vm-logs");
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).unwrap();
        Vm { dir, logs, n: 0 }
    }

    /// Boot once with `scenario`; `cut` decides, per serial line, to pull the power.
    fn boot(&mut self, scenario: &str, cut: &dyn Fn(&str) -> bool) -> Boot {
        self.n += 1;
        let name = format!("{}-{}", self.n, scenario.replace(':', "-"));
        let log = self.logs.join(format!("{name}.log"));
        let sock = self.dir.join("tpm/swtpm-sock");
        let _ = std::fs::remove_file(&sock);
        let mut tpm = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.dir.join("tpm").display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm");
        let t0 = Instant::now();
        while !sock.exists() {
            assert!(t0.elapsed() < Duration::from_secs(10), "swtpm did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut qemu = Command::new("qemu-system-x86_64")
            .args(["-nodefaults", "-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", "1", "-display", "none"])
            .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
            .args(["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=1,file={}", self.dir.join("OVMF_VARS.fd").display()))
            .arg("-drive")
            .arg(format!("if=virtio,format=raw,file={}", self.dir.join("disk.img").display()))
            .arg("-drive")
            .arg(format!("if=virtio,format=raw,readonly=on,file={}", self.dir.join("packages.img").display()))
            .arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", sock.display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"])
            .arg("-fw_cfg")
            .arg(format!("name=opt/henb/scenario,string={scenario}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64");
        let out = qemu.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).split(b'\n') {
                let Ok(l) = l else { break };
                if tx.send(String::from_utf8_lossy(&l).trim_end_matches('\r').to_string()).is_err() {
                    break;
                }
            }
        });
        let mut text = String::new();
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut pulled = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => {
                    text.push_str(&l);
                    text.push('\n');
                    if let Some(rest) = l.find("HENB ").map(|i| &l[i + 5..]) {
                        if let Some((k, v)) = rest.split_once('=') {
                            lines.push((k.to_string(), v.to_string()));
                        }
                    }
                    if !pulled && cut(&l) {
                        let _ = qemu.kill(); // the power cut
                        pulled = true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline {
                        let _ = qemu.kill();
                        std::fs::write(&log, &text).unwrap();
                        panic!("VM scenario '{name}': no power-off within 300 s; serial log: {}", log.display());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = qemu.wait();
        let _ = tpm.kill();
        let _ = tpm.wait();
        std::fs::write(&log, &text).unwrap();
        eprintln!("VM scenario '{name}': {} report lines, serial log {}", lines.len(), log.display());
        Boot { name, lines, log }
    }

    fn reference(&self, version: u32) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.dir.join(format!("rv-v{version}")))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_ascii_uppercase()))
            .collect()
    }
}

fn never(_: &str) -> bool {
    false
}

#[test]
fn measured_ab_boot_update_fallback_tamper_and_power_cut() {
    let mut vm = Vm::build();
    let v1 = vm.reference(1);
    let v2 = vm.reference(2);

    // Factory boot of A: provisioned from the factory package, boot-check against the
    // values predicted at build time, the device credential sealed, slot confirmed.
    let b = vm.boot("boot", &never);
    b.expect("slot", "A");
    b.expect("pcr8", &v1["pcr.8.A"]);
    b.expect("pcr9", &v1["pcr.9"]);
    b.expect("provisioned", "0");
    b.expect("boot-check", "0");
    b.expect("sealed", "0");
    b.expect("unseal", "ok");
    b.expect("mark-good", "0");

    // v2 over D-Bus with an fd: installed into B, boots next; no TransferComplete yet.
    let b = vm.boot("install:update", &never);
    b.expect("slot", "A");
    let c = b.completed();
    assert_eq!(
        (c["cwmp-fault"].as_u64(), c["reboot-required"].as_bool()),
        (Some(0), Some(true)),
        "{}",
        b.log.display()
    );
    b.expect("download-rc", "0");
    assert!(b.get("grubenv-after").unwrap_or_default().contains("ORDER=B A"), "{}", b.log.display());

    // B boots: GRUB's measurements equal v2's committed values, the secret unseals without
    // re-sealing, TransferComplete 0 for the Download, delivered once.
    let b = vm.boot("boot", &never);
    b.expect("slot", "B");
    b.expect("version", "2");
    b.expect("pcr8", &v2["pcr.8.B"]);
    b.expect("pcr9", &v2["pcr.9"]);
    b.expect("boot-check", "0");
    b.expect("unseal", "ok");
    b.expect("mark-good", "0");
    assert_eq!(
        b.transfers().iter().map(|t| (t.0.as_str(), t.1)).collect::<Vec<_>>(),
        [("ck-update", 0)],
        "{}",
        b.log.display()
    );
    let mut update_reports = 1;

    // A tampered package: refused before any reboot, boot order untouched.
    let b = vm.boot("install:tampered", &never);
    b.expect("slot", "B");
    assert_eq!(b.completed()["cwmp-fault"].as_u64(), Some(9018), "{}", b.log.display());
    b.expect("download-rc", "1");
    assert_eq!(b.get("grubenv-after"), b.get("grubenv"), "the boot environment changed: {}", b.log.display());
    update_reports += b.transfers().iter().filter(|t| t.0 == "ck-update").count();

    // Signed, but its reference values do not match its kernel/initrd: installed into A...
    let b = vm.boot("install:wrong-rv", &never);
    b.expect("slot", "B");
    assert_eq!(b.transfers().iter().map(|t| (t.0.as_str(), t.1)).collect::<Vec<_>>(), [("ck-tampered", 9018)]);
    assert_eq!(b.completed()["cwmp-fault"].as_u64(), Some(0), "{}", b.log.display());
    // ...A boots, boot-check fails (PCR 9 is not what was signed), A is marked bad...
    let b = vm.boot("boot", &never);
    b.expect("slot", "A");
    b.expect("boot-check", "1");
    assert_ne!(b.get("pcr9"), Some(v1["pcr.9"].as_str()), "{}", b.log.display());
    let bc: serde_json::Value = serde_json::from_str(b.get("boot-check-json").unwrap_or("{}")).unwrap_or_default();
    assert_eq!(bc["mismatches"][0]["pcr"], 9, "{}", b.log.display());
    // ...GRUB falls back to B: the secret still unseals, ActivationFailed is reported.
    let b = vm.boot("boot", &never);
    b.expect("slot", "B");
    b.expect("boot-check", "0");
    b.expect("unseal", "ok");
    let t = b.transfers();
    assert_eq!(
        t.iter().map(|t| (t.0.as_str(), t.1)).collect::<Vec<_>>(),
        [("ck-wrong-rv", 9010)],
        "{}",
        b.log.display()
    );
    assert!(t[0].2.contains("activation failed"), "{}", t[0].2);

    // Power cut in the middle of writing the slot: the next boot is B, healthy, and the
    // interrupted Download is reported once.
    let cut = |l: &str| {
        l.contains("HENB download=") && l.contains("\"Writing:") && {
            let p = l.split("\"percent\":").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next());
            p.and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p >= 30)
        }
    };
    let b = vm.boot("install:update", &cut);
    b.expect("slot", "B");
    assert!(b.get("download-rc").is_none(), "the power was not cut during the write: {}", b.log.display());
    let b = vm.boot("boot", &never);
    b.expect("slot", "B");
    b.expect("boot-check", "0");
    b.expect("unseal", "ok");
    let t = b.transfers();
    assert_eq!(t.iter().map(|t| (t.0.as_str(), t.1)).collect::<Vec<_>>(), [("ck-update", 9002)], "{}", b.log.display());
    assert!(t[0].2.contains("interrupted"), "{}", t[0].2);
    assert_eq!(update_reports, 1, "TransferComplete 0 for ck-update was reported more than once");

    // Flash slots and UEFI boot entries (guest/hw.conf): a package into UBI volumes (ubivol,
    // ubifs), a raw NAND partition with a bad block and a JFFS2 image on NAND, on nandsim,
    // and a NOR-style MTD (mtdram: erased, then written in order); read back by the kernel's UBI, nanddump and
    // the MTD; B made primary through BootNext with efibootmgr...
    let image = |n: &str| std::fs::read(vm.dir.join(format!("hw-{n}"))).unwrap();
    let (rootfs, app, boot, nor) = (image("rootfs.img"), image("app.ubifs"), image("boot.img"), image("firmware.img"));
    let jffs2 = image("data.jffs2");
    let sizes = format!("{}:{}:{}:{}:{}", rootfs.len(), app.len(), boot.len(), nor.len(), jffs2.len());
    let b = vm.boot(&format!("hw:{sizes}"), &never);
    b.expect("hw-install-rc", "0");
    b.expect("hw-rootfs", &common::sha256_hex(&rootfs));
    b.expect("hw-app", &common::sha256_hex(&app));
    b.expect("hw-boot", &common::sha256_hex(&boot));
    b.expect("hw-badblocks", "1");
    b.expect("hw-nor", &common::sha256_hex(&nor));
    b.expect("hw-nor-type", "ram");
    b.expect("hw-jffs2", &common::sha256_hex(&jffs2));
    let ubi1 = b.get("hw-ubi1").unwrap_or_default();
    assert!(ubi1.contains("State: OK") && ubi1.contains("Type: static"), "{ubi1}: {}", b.log.display());
    let num_a = b.get("hw-numA").unwrap_or_default().to_string();
    let num_b = b.get("hw-numB").unwrap_or_default().to_string();
    assert_eq!((num_a.len(), num_b.len()), (4, 4), "{}", b.log.display());
    assert!(b.all("efi").contains(&format!("BootNext: {num_b}").as_str()), "{}", b.log.display());
    let status: serde_json::Value = serde_json::from_str(b.get("hw-status").unwrap_or("{}")).unwrap_or_default();
    assert_eq!(status["primary"], "B", "{}", b.log.display());
    // ...the firmware boots that entry once; good puts it first in BootOrder, bad takes A out.
    let b = vm.boot("hw-next", &never);
    assert!(b.all("efi").contains(&format!("BootCurrent: {num_b}").as_str()), "{}", b.log.display());
    assert!(!b.all("efi").iter().any(|l| l.starts_with("BootNext")), "{}", b.log.display());
    b.expect("hw-mark-good", "0");
    b.expect("hw-mark-bad", "0");
    let order = b.all("efi-after").into_iter().find_map(|l| l.strip_prefix("BootOrder: ")).unwrap_or_default();
    assert!(order.starts_with(&num_b), "{order}: {}", b.log.display());
    assert!(!order.contains(&num_a), "{order}: {}", b.log.display());
    let status: serde_json::Value = serde_json::from_str(b.get("hw-status").unwrap_or("{}")).unwrap_or_default();
    assert_eq!(status["primary"], "B", "{}", b.log.display());
    // A slot marked bad is not left in BootNext (it would boot once more).
    b.expect("hw-mark-active", "0");
    b.expect("hw-next-set", "1");
    b.expect("hw-mark-bad-again", "0");
    b.expect("hw-next-after-bad", "0");
}
