//! The D-Bus service on a private system bus (Debian's dbus-daemon with our policy file),
//! with swtpm roots, file slots and a GRUB environment: what a CWMP client sees.

mod common;
use common::bus::{cwmp_call, Bus, Service};
use common::device::{grub_list, Device};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use zbus::{Connection, Fd, Proxy, Variant};

const IFACE: &str = "org.henb.Update1";
const PATH: &str = "/org/henb/Update1";
const UPGRADE: &str = "1 Firmware Upgrade Image";
const STORED: &str = "6 Stored Firmware Image";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn client(bus: &Bus) -> (Connection, Proxy<'static>) {
    let conn = zbus::connection::Builder::address(bus.address().as_str()).build().await.unwrap();
    let p = Proxy::new(&conn, IFACE, PATH, IFACE).await.unwrap();
    (conn, p)
}

/// One signal of our interface, decoded.
#[derive(Debug, Clone, PartialEq)]
enum Sig {
    Progress(i32, String),
    Completed { job: String, key: String, fault: u32, text: String, reboot: bool },
    Transfer { key: String, fault: u32, text: String },
}

fn decode(m: &zbus::Message) -> Option<Sig> {
    let h = m.header();
    let body = m.body();
    match h.member()?.as_str() {
        "ProgressChanged" => body.deserialize::<(i32, String, i32)>().ok().map(|(p, s, _)| Sig::Progress(p, s)),
        "DownloadCompleted" => body
            .deserialize::<(String, String, u32, String, bool)>()
            .ok()
            .map(|(job, key, fault, text, reboot)| Sig::Completed { job, key, fault, text, reboot }),
        "TransferComplete" => body
            .deserialize::<(String, u32, String, u64, u64)>()
            .ok()
            .map(|(key, fault, text, _, _)| Sig::Transfer { key, fault, text }),
        _ => None,
    }
}

async fn download(p: &Proxy<'_>, file: &Path, file_type: &str, key: &str) -> zbus::Result<(u32, String)> {
    let f = std::fs::File::open(file).unwrap();
    p.call("Download", &(Fd::from(f.as_fd()), file_type, key, HashMap::<&str, Variant>::new())).await
}

/// Signals until the DownloadCompleted of `job` (and, unless it needs a reboot, its
/// TransferComplete).
async fn until_done(signals: &mut zbus::proxy::SignalStream<'_>, job: &str) -> Vec<Sig> {
    let mut out = Vec::new();
    let mut completed: Option<bool> = None;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(120), signals.next())
            .await
            .expect("no signal within 120 s")
            .expect("signal stream ended");
        let Some(s) = decode(&m) else { continue };
        if let Sig::Completed { job: j, reboot, .. } = &s {
            if j == job {
                completed = Some(*reboot);
            }
        }
        let is_transfer = matches!(s, Sig::Transfer { .. });
        out.push(s);
        match completed {
            Some(true) => return out,                 // TransferComplete after the reboot
            Some(false) if is_transfer => return out, // TransferComplete now
            Some(false) if out.iter().any(|x| matches!(x, Sig::Completed { key, .. } if key.is_empty())) => return out,
            _ => {}
        }
    }
}

fn completed(sigs: &[Sig]) -> (u32, bool) {
    sigs.iter()
        .find_map(|s| match s {
            Sig::Completed { fault, reboot, .. } => Some((*fault, *reboot)),
            _ => None,
        })
        .expect("DownloadCompleted")
}

fn transfers_of(sigs: &[Sig]) -> Vec<(String, u32)> {
    sigs.iter()
        .filter_map(|s| match s {
            Sig::Transfer { key, fault, .. } => Some((key.clone(), *fault)),
            _ => None,
        })
        .collect()
}

async fn pending(p: &Proxy<'_>) -> Vec<(String, u32, String, u64, u64)> {
    p.call("PendingTransfers", &()).await.unwrap()
}

fn package(d: &Device, name: &str, size: usize) -> std::path::PathBuf {
    let c = d.w.content(&format!("c-{name}"), size, "");
    d.w.bundle("verity", &c, &["signer-rsa"], name, &[])
}

fn tamper(src: &Path, dst: &Path, at: usize) {
    let mut b = std::fs::read(src).unwrap();
    b[at] ^= 0x40;
    std::fs::write(dst, b).unwrap();
}

#[test]
fn download_over_an_fd_reports_progress_and_the_result_in_cwmp_terms() {
    let d = Device::new(false);
    let bus = Bus::start();
    let _svc = Service::start(&bus, &d.conf, "A", &[]);
    let good = package(&d, "good.raucb", 3_000_000);
    let bad_sig = d.w.path("bad-sig.raucb");
    let len = std::fs::metadata(&good).unwrap().len() as usize;
    tamper(&good, &bad_sig, len - 300); // inside the CMS signature
    let bad_data = d.w.path("bad-data.raucb");
    tamper(&good, &bad_data, 1_000_000); // inside the image
    rt().block_on(async {
        let (_c, p) = client(&bus).await;
        let mut signals = p.receive_all_signals().await.unwrap();
        // Stored only: TransferComplete right away, with 0.
        let (status, job) = download(&p, &good, STORED, "ck-stored").await.unwrap();
        assert_eq!(status, 1, "DownloadResponse Status 1: the result follows in TransferComplete");
        let sigs = until_done(&mut signals, &job).await;
        let percents: Vec<i32> =
            sigs.iter().filter_map(|s| if let Sig::Progress(p, _) = s { Some(*p) } else { None }).collect();
        assert!(percents.len() >= 3 && percents.windows(2).all(|w| w[0] <= w[1]), "progress in order: {percents:?}");
        assert_eq!(percents.last(), Some(&100));
        let at = sigs.iter().position(|s| matches!(s, Sig::Completed { .. })).unwrap();
        assert!(sigs[..at].iter().all(|s| matches!(s, Sig::Progress(..))), "progress before the result: {sigs:?}");
        assert_eq!(completed(&sigs), (0, false));
        assert_eq!(transfers_of(&sigs), [("ck-stored".to_string(), 0)]);
        assert!(grub_list(&d).contains("ORDER=A B\n"), "stored, not activated");

        // Tampered: refused with the fault code, nothing changes.
        let before = (d.boot_env(), std::fs::read(d.w.path("slotB")).unwrap());
        for (pkg, fault) in [(&bad_sig, 9019), (&bad_data, 9018)] {
            let (_, job) = download(&p, pkg, UPGRADE, "ck-bad").await.unwrap();
            let sigs = until_done(&mut signals, &job).await;
            assert_eq!(completed(&sigs).0, fault, "{sigs:?}");
            assert_eq!(transfers_of(&sigs), [("ck-bad".to_string(), fault)]);
            assert_eq!(d.boot_env(), before.0, "boot environment changed");
            assert!(std::fs::read(d.w.path("slotB")).unwrap() == before.1, "slot B changed");
            let last_error: String = p.get_property("LastError").await.unwrap();
            assert!(last_error.starts_with(&format!("{fault} ")), "LastError carries the fault code: {last_error}");
        }
        // Activated: installed, boots next; TransferComplete waits for the reboot.
        let (_, job) = download(&p, &good, UPGRADE, "ck-up").await.unwrap();
        let sigs = until_done(&mut signals, &job).await;
        assert_eq!(completed(&sigs), (0, true));
        assert!(transfers_of(&sigs).is_empty());
        assert!(grub_list(&d).contains("ORDER=B A\n"));
        let keys: Vec<String> = pending(&p).await.into_iter().map(|t| t.0).collect();
        assert_eq!(keys, ["ck-stored", "ck-bad", "ck-bad"]);
        // Refusals before any work: an unknown FileType (9003), a FIFO instead of a file.
        let e = download(&p, &good, "3 Vendor Configuration File", "x").await.unwrap_err();
        assert!(e.to_string().contains("InvalidArguments") && e.to_string().contains("9003"), "{e}");
        let op: String = p.get_property("Operation").await.unwrap();
        assert_eq!(op, "idle");
    });
}

#[test]
fn a_second_download_is_busy_and_a_killed_install_is_reported_once() {
    let d = Device::new(false);
    let bus = Bus::start();
    let big = package(&d, "big.raucb", 48 << 20);
    rt().block_on(async {
        let svc = Service::start(&bus, &d.conf, "A", &[]);
        let (_c, p) = client(&bus).await;
        let mut signals = p.receive_all_signals().await.unwrap();
        let (_, job) = download(&p, &big, STORED, "ck-1").await.unwrap();
        let e = download(&p, &big, STORED, "ck-2").await.unwrap_err();
        assert!(
            e.to_string().contains("org.henb.Update1.Error.RequestDenied") && e.to_string().contains("9001"),
            "{e}"
        );
        // One writer of slots and the boot order: Mark during the install is busy.
        let e = p.call::<_, _, (String, String)>("Mark", &("active", "other")).await.unwrap_err();
        assert!(e.to_string().contains("9001 busy"), "{e}");
        until_done(&mut signals, &job).await;
        svc.stop();
    });
    // Killed in the middle of writing the slot, then restarted.
    let svc = Service::start(&bus, &d.conf, "A", &[("HENB_FAILPOINT", "install.write@3")]);
    rt().block_on(async {
        let (_c, p) = client(&bus).await;
        let _ = download(&p, &big, UPGRADE, "ck-killed").await.unwrap();
    });
    let mut svc = svc;
    let t0 = std::time::Instant::now();
    while svc.child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the failpoint was not reached");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(svc);
    assert!(grub_list(&d).contains("ORDER=A B\n"), "nothing activated");
    // The half-written B cannot be made primary or good, by the CLI or over D-Bus.
    for state in ["active", "good"] {
        let o = d.cli(&["mark", state, "other"]);
        assert_eq!(o.status.code(), Some(1), "mark {state} other: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("(slot-incomplete)"));
    }
    let svc = Service::start(&bus, &d.conf, "A", &[]);
    rt().block_on(async {
        let (_c, p) = client(&bus).await;
        let e = p.call::<_, _, (String, String)>("Mark", &("active", "other")).await.unwrap_err();
        assert!(e.to_string().contains("not completely written"), "{e}");
    });
    svc.stop();
    assert!(grub_list(&d).contains("ORDER=A B\n") && grub_list(&d).contains("B_OK=0\n"), "{}", grub_list(&d));
    for round in 0..2 {
        let svc = Service::start(&bus, &d.conf, "A", &[]);
        rt().block_on(async {
            let (_c, p) = client(&bus).await;
            let t = pending(&p).await;
            let killed: Vec<_> = t.iter().filter(|t| t.0 == "ck-killed").collect();
            if round == 0 {
                assert_eq!(killed.len(), 1, "{t:?}");
                assert_eq!(killed[0].1, 9002);
                assert!(killed[0].2.contains("interrupted"), "{}", killed[0].2);
                let found: bool = p.call("AcknowledgeTransfer", &("ck-killed",)).await.unwrap();
                assert!(found);
            } else {
                assert!(killed.is_empty(), "reported twice: {t:?}");
            }
        });
        svc.stop();
    }
}

#[test]
fn transfer_complete_after_the_reboot_success_or_activation_failed() {
    for fallback in [false, true] {
        let d = Device::new(false);
        let bus = Bus::start();
        let good = package(&d, "good.raucb", 1_000_000);
        let svc = Service::start(&bus, &d.conf, "A", &[]);
        rt().block_on(async {
            let (_c, p) = client(&bus).await;
            let mut signals = p.receive_all_signals().await.unwrap();
            let (_, job) = download(&p, &good, UPGRADE, "ck-reboot").await.unwrap();
            assert_eq!(completed(&until_done(&mut signals, &job).await), (0, true));
            assert!(pending(&p).await.is_empty());
        });
        svc.stop();
        // The reboot: either B comes up and is confirmed, or the bootloader gave up on it.
        let booted = if fallback {
            assert!(d.cli(&["mark", "bad", "B"]).status.success());
            "A"
        } else {
            "B"
        };
        let svc = Service::start(&bus, &d.conf, booted, &[]);
        rt().block_on(async {
            let (_c, p) = client(&bus).await;
            let mut signals = p.receive_all_signals().await.unwrap();
            if !fallback {
                let (slot, _): (String, String) = p.call("Mark", &("good", "booted")).await.unwrap();
                assert_eq!(slot, "rootfs.1");
                let m = tokio::time::timeout(Duration::from_secs(10), signals.next()).await.unwrap().unwrap();
                assert_eq!(decode(&m), Some(Sig::Transfer { key: "ck-reboot".into(), fault: 0, text: String::new() }));
            }
            let t = pending(&p).await;
            assert_eq!(t.len(), 1, "{t:?}");
            assert_eq!(t[0].0, "ck-reboot");
            if fallback {
                assert_eq!(t[0].1, 9010);
                assert!(t[0].2.contains("activation failed"), "{}", t[0].2);
                let imgs: Vec<HashMap<String, zbus::OwnedVariant>> = p.call("FirmwareImages", &()).await.unwrap();
                let b = imgs.iter().find(|i| String::try_from(i["Name"].clone()).unwrap() == "B").unwrap();
                assert_eq!(String::try_from(b["Status"].clone()).unwrap(), "ActivationFailed");
            } else {
                assert_eq!(t[0].1, 0);
                let v: String = p.get_property("SoftwareVersion").await.unwrap();
                assert_eq!(v, "1.2.3", "the booted slot's installed version");
            }
            let _: bool = p.call("AcknowledgeTransfer", &("ck-reboot",)).await.unwrap();
        });
        svc.stop();
        let svc = Service::start(&bus, &d.conf, booted, &[]);
        rt().block_on(async {
            let (_c, p) = client(&bus).await;
            assert!(pending(&p).await.is_empty(), "delivered once");
        });
        svc.stop();
    }
}

#[test]
fn debian_rauc_talks_to_the_rauc_compatible_face() {
    let d = Device::new(false);
    let mut conf = std::fs::read_to_string(&d.conf).unwrap();
    conf.push_str("\n[service]\nrauc-compatible=true\n");
    std::fs::write(&d.conf, conf).unwrap();
    let bus = Bus::start();
    let _svc = Service::start(&bus, &d.conf, "A", &[]);
    bus.wait_for("de.pengutronix.rauc");
    let rauc = |args: &[&str]| {
        Command::new("rauc")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .env_remove("DBUS_STARTER_BUS_TYPE")
            .output()
            .unwrap()
    };
    let o = rauc(&["status", "--output-format=json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["compatible"], "henb-test");
    assert_eq!(s["booted"], "A");
    assert_eq!(s["boot_primary"], "rootfs.0");
    let o = rauc(&["status"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let good = package(&d, "good.raucb", 2_000_000);
    let o = rauc(&["install", good.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "rauc install: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("succeeded"));
    assert!(grub_list(&d).contains("ORDER=B A\n"));
    let s: serde_json::Value = serde_json::from_slice(&rauc(&["status", "--output-format=json"]).stdout).unwrap();
    assert_eq!(s["boot_primary"], "rootfs.1");
    // A tampered bundle: rauc install fails (exit 1) and says why.
    let bad = d.w.path("bad.raucb");
    tamper(&good, &bad, 1_000_000);
    let o = rauc(&["install", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    let o = rauc(&["status", "mark-good", "other"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_bus_policy_refuses_an_unprivileged_caller() {
    let d = Device::new(false);
    let bus = Bus::start();
    let _svc = Service::start(&bus, &d.conf, "A", &[]);
    let send = |uid: Option<u32>, args: &[&str]| {
        let mut c = match uid {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}")).arg(format!("--regid={u}")).arg("--clear-groups").arg("dbus-send");
                c
            }
            None => Command::new("dbus-send"),
        };
        c.arg(format!("--bus={}", bus.address())).args(["--print-reply", "--dest=org.henb.Update1"]).args(args);
        c.output().unwrap()
    };
    let nobody = Some(65534);
    let pending = ["/org/henb/Update1", "org.henb.Update1.PendingTransfers"];
    let mark = ["/org/henb/Update1", "org.henb.Update1.Mark", "string:bad", "string:other"];
    let get =
        ["/org/henb/Update1", "org.freedesktop.DBus.Properties.Get", "string:org.henb.Update1", "string:BootSlot"];
    let intro = ["/org/henb/Update1", "org.freedesktop.DBus.Introspectable.Introspect"];
    for m in [&pending[..], &mark[..]] {
        let o = send(nobody, m);
        assert!(!o.status.success(), "nobody may not call {m:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("AccessDenied"), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for m in [&get[..], &intro[..]] {
        let o = send(nobody, m);
        assert!(o.status.success(), "nobody may read {m:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(send(None, &pending).status.success(), "root may call");
    assert!(grub_list(&d).contains("B_OK=1\n"), "the refused Mark changed nothing");
}

#[test]
fn the_interface_xml_is_what_the_service_introspects() {
    let d = Device::new(false);
    let bus = Bus::start();
    let _svc = Service::start(&bus, &d.conf, "A", &[]);
    let live = rt().block_on(async {
        let (c, _) = client(&bus).await;
        let m = c
            .call_method(Some(IFACE), PATH, Some("org.freedesktop.DBus.Introspectable"), "Introspect", &())
            .await
            .unwrap();
        m.body().deserialize::<String>().unwrap()
    });
    let file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.henb.Update1.xml")).unwrap();
    let iface = |x: &str| -> String {
        let a = x.find("<interface name=\"org.henb.Update1\">").expect("our interface");
        let b = a + x[a..].find("</interface>").unwrap() + "</interface>".len();
        x[a..b].lines().map(str::trim).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(iface(&file), iface(&live), "dbus/org.henb.Update1.xml differs from the live introspection");
}

#[test]
fn fifty_downloads_in_a_row_leak_nothing_and_every_result_arrives() {
    let d = Device::new(false);
    let bus = Bus::start();
    let good = package(&d, "good.raucb", 500_000);
    let bad = d.w.path("bad.raucb");
    tamper(&good, &bad, 200_000);
    let svc = Service::start(&bus, &d.conf, "A", &[]);
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    // Anonymous resident memory (heap and stacks): what a leak grows. File-backed pages
    // (libraries the TCTI loader maps per connection) come and go with the page cache.
    // Measured from download 20 on: the allocator's arenas settle in the first ones (run
    // alone over 150 downloads the growth plateaus at about 250 KiB).
    let rss_kib = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines().find(|l| l.starts_with("RssAnon:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    rt().block_on(async {
        let (_c, p) = client(&bus).await;
        let mut signals = p.receive_all_signals().await.unwrap();
        let mut base = (0, 0);
        for i in 0..50 {
            let (pkg, fault) = if i % 2 == 0 { (&good, 0) } else { (&bad, 9018) };
            let key = format!("k{i}");
            let (_, job) = download(&p, pkg, STORED, &key).await.unwrap();
            let sigs = until_done(&mut signals, &job).await;
            assert_eq!(completed(&sigs).0, fault, "download {i}");
            assert_eq!(transfers_of(&sigs), [(key.clone(), fault)], "download {i}");
            let _: bool = p.call("AcknowledgeTransfer", &(key.as_str(),)).await.unwrap();
            if i == 19 {
                base = (fds(svc.pid()), rss_kib(svc.pid()));
            }
        }
        let (f, r) = (fds(svc.pid()), rss_kib(svc.pid()));
        let threads = std::fs::read_dir(format!("/proc/{}/task", svc.pid())).unwrap().count();
        eprintln!("after 20: {} fds, {} KiB; after 50: {f} fds, {r} KiB, {threads} threads", base.0, base.1);
        assert_eq!(f, base.0, "file descriptors leaked");
        assert!(r < base.1 + 1024, "memory grew by {} KiB", r - base.1);
        assert!(pending(&p).await.is_empty());
    });
}

/// A world-traversable directory (the CWMP client runs as nobody) with the client's own
/// package in it, and a 0700 directory holding a package the client must not reach.
fn client_files(d: &Device) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("henb-cwmp-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let good = package(d, "good.raucb", 300_000);
    let own = dir.path().join("own.raucb");
    std::fs::copy(&good, &own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(&good, private.join("pkg.raucb")).unwrap();
    (dir, own, private)
}

/// The review's finding 3: DownloadPath and the RAUC face's path methods opened files
/// with root's rights for a CWMP client (group cwmp), telling whether a file exists in a
/// 0700 directory, its size and its last bytes, also through LastError; Download reopened
/// O_PATH and write-only descriptors as root.
#[test]
fn paths_are_opened_with_the_callers_rights_and_descriptors_as_passed() {
    let d = Device::new(false);
    let mut conf = std::fs::read_to_string(&d.conf).unwrap();
    conf.push_str("\n[service]\nrauc-compatible=true\n");
    std::fs::write(&d.conf, conf).unwrap();
    let (_dir, own, private) = client_files(&d);
    let bus = Bus::start();
    let _svc = Service::start(&bus, &d.conf, "A", &[]);
    let henb = |method: &str, sig: &str, args: &[&str]| {
        let mut a = vec![sig];
        a.extend_from_slice(args);
        cwmp_call(&bus, IFACE, PATH, IFACE, method, &a)
    };
    let rauc = |method: &str, sig: &str, args: &[&str]| {
        let mut a = vec![sig];
        a.extend_from_slice(args);
        cwmp_call(&bus, "de.pengutronix.rauc", "/", "de.pengutronix.rauc.Installer", method, &a)
    };
    let mut answers = Vec::new();
    for name in ["pkg.raucb", "missing.raucb"] {
        let target = private.join(name);
        let t = target.to_str().unwrap();
        for (done, _, err) in [
            henb("DownloadPath", "sssa{sv}", &[t, UPGRADE, "ck-x", "0"]),
            rauc("InstallBundle", "sa{sv}", &[t, "0"]),
            rauc("InspectBundle", "sa{sv}", &[t, "0"]),
            rauc("Info", "s", &[t]),
        ] {
            assert!(!done, "{t}");
            assert!(err.contains("9016 access") && err.contains("Permission denied"), "{err}");
            answers.push(err.replace(name, "NAME"));
        }
    }
    assert_eq!(answers[..4], answers[4..], "a file and no file must look the same to the caller");
    assert!(!answers.iter().any(|a| a.contains("signature size") || a.contains("bytes")), "{answers:?}");
    let last_error = |bus: &Bus| {
        let o = Command::new("dbus-send")
            .arg(format!("--bus={}", bus.address()))
            .args(["--print-reply", "--dest=org.henb.Update1", PATH, "org.freedesktop.DBus.Properties.Get"])
            .args([&format!("string:{IFACE}"), "string:LastError"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(last_error(&bus).contains("string \"\""), "{}", last_error(&bus));
    assert!(grub_list(&d).contains("ORDER=A B\n"));

    // Descriptors: used as passed, so they must be open for reading (and only reading).
    rt().block_on(async {
        use std::os::unix::fs::OpenOptionsExt;
        let (_c, p) = client(&bus).await;
        let secret = private.join("pkg.raucb");
        let o_path = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_PATH).open(&secret).unwrap();
        let write_only = std::fs::OpenOptions::new().write(true).open(&secret).unwrap();
        let read_write = std::fs::OpenOptions::new().read(true).write(true).open(&secret).unwrap();
        for (f, why) in [(o_path, "O_PATH"), (write_only, "write-only"), (read_write, "open for writing")] {
            let e = p
                .call::<_, _, (u32, String)>(
                    "Download",
                    &(Fd::from(f.as_fd()), UPGRADE, "ck-fd", HashMap::<&str, Variant>::new()),
                )
                .await
                .unwrap_err();
            assert!(e.to_string().contains("9016 access") && e.to_string().contains(why), "{e}");
        }
        assert!(pending(&p).await.is_empty(), "nothing was started");
    });

    // The client's own file: installed.
    rt().block_on(async {
        let (_c, p) = client(&bus).await;
        let mut signals = p.receive_all_signals().await.unwrap();
        let (done, out, err) = henb("DownloadPath", "sssa{sv}", &[own.to_str().unwrap(), STORED, "ck-own", "0"]);
        assert!(done, "{err}");
        let job = out.split('"').nth(1).unwrap().to_string();
        let sigs = until_done(&mut signals, &job).await;
        assert_eq!(completed(&sigs).0, 0, "{sigs:?}");
    });
}

/// The review's finding 6: an inspection ran inside the engine, so PendingTransfers
/// waited for it (and timed out on a large package). Now it runs beside it.
#[test]
fn an_inspection_does_not_hold_up_the_other_requests() {
    let d = Device::new(false);
    let mut conf = std::fs::read_to_string(&d.conf).unwrap();
    conf.push_str("\n[service]\nrauc-compatible=true\n");
    std::fs::write(&d.conf, conf).unwrap();
    let big = package(&d, "big.raucb", 48 << 20);
    let bus = Bus::start();
    let _svc = Service::start(&bus, &d.conf, "A", &[]);
    rt().block_on(async {
        let (c, p) = client(&bus).await;
        let installer = Proxy::new(&c, "de.pengutronix.rauc", "/", "de.pengutronix.rauc.Installer").await.unwrap();
        let order = std::sync::Mutex::new(Vec::new());
        let inspect = async {
            let r: zbus::Result<HashMap<String, zbus::OwnedVariant>> =
                installer.call("InspectBundle", &(big.to_str().unwrap(), HashMap::<&str, Variant>::new())).await;
            order.lock().unwrap().push("inspect");
            r
        };
        let others = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t = pending(&p).await;
            order.lock().unwrap().push("pending-transfers");
            t
        };
        let (inspected, _) = tokio::join!(inspect, others);
        let info = inspected.unwrap();
        assert_eq!(String::try_from(info["compatible"].clone()).unwrap(), "henb-test");
        assert_eq!(*order.lock().unwrap(), ["pending-transfers", "inspect"]);
    });
}

/// A descriptor passed over D-Bus shares its open file description with the client,
/// which could drop a lease taken on it, write through another descriptor and take the
/// lease again before the agent looks. The agent reads through a description of its own,
/// whose lease the write breaks: refused.
#[test]
fn a_client_that_drops_the_lease_on_its_shared_descriptor_and_writes_is_refused() {
    use std::os::fd::AsRawFd;
    let d = Device::new(false);
    let big = package(&d, "big.raucb", 48 << 20);
    let bus = Bus::start();
    let _svc = Service::start(&bus, &d.conf, "A", &[]);
    rt().block_on(async {
        let (_c, p) = client(&bus).await;
        let mut signals = p.receive_all_signals().await.unwrap();
        let f = std::fs::File::open(&big).unwrap();
        let (_, job): (u32, String) = p
            .call("Download", &(Fd::from(f.as_fd()), UPGRADE, "ck-lease", HashMap::<&str, Variant>::new()))
            .await
            .unwrap();
        let status = d.w.path("data").join("status.json");
        let t0 = std::time::Instant::now();
        while !std::fs::read_to_string(&status).unwrap_or_default().contains("Downloading") {
            assert!(t0.elapsed() < Duration::from_secs(60), "the install never started writing");
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: fcntl on a descriptor this test owns, with an integer argument.
        let lease = |arg: nix::libc::c_int| unsafe { nix::libc::fcntl(f.as_raw_fd(), nix::libc::F_SETLEASE, arg) };
        lease(nix::libc::F_UNLCK); // the agent's lease is on its own description: untouched
        {
            use std::io::{Seek, Write};
            let mut w = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
            w.seek(std::io::SeekFrom::Start(1 << 20)).unwrap();
            w.write_all(b"unsigned").unwrap();
        }
        lease(nix::libc::F_RDLCK);
        let sigs = until_done(&mut signals, &job).await;
        let text = sigs
            .iter()
            .find_map(|s| match s {
                Sig::Completed { text, fault, .. } => Some(format!("{fault} {text}")),
                _ => None,
            })
            .unwrap();
        assert!(text.starts_with("9016 9016 package-modified"), "{text}");
    });
    assert!(grub_list(&d).contains("ORDER=A B\n"), "nothing activated");
}
