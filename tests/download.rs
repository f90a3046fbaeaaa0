//! Installing straight from a file server: Debian's nginx (HTTP, HTTPS, mutual TLS, Basic
//! authentication) and lighttpd (Digest) on 127.0.0.1, a fault proxy of our own between
//! them and the agent, swtpm roots, file slots and grub-editenv as the boot order's reader.

mod common;
use common::bus::{Bus, Service};
use common::device::{grub_list, Device, SLOT};
use common::web::{self, FaultProxy, Lighttpd, Nginx, NginxOptions, TlsPki};
use common::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A device whose downloads retry fast (the defaults wait seconds).
fn device() -> Device {
    let d = Device::new(false);
    let mut c = std::fs::read_to_string(&d.conf).unwrap();
    c.push_str("\n[download]\nretry-delay=0.05\nidle-timeout=2\nretries=3\nconnect-timeout=5\n");
    std::fs::write(&d.conf, c).unwrap();
    d
}

/// `format` package of an image of `size` bytes in `<work>/www/<name>`.
fn publish(d: &Device, format: &str, size: usize, name: &str) -> PathBuf {
    let c = d.w.content(&format!("c-{name}"), size, "\n[meta.anti-rollback]\nsecurity-version=1\n");
    let p = d.w.bundle(format, &c, &["signer-rsa"], name, &[]);
    let www = d.w.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let dst = www.join(name);
    std::fs::rename(&p, &dst).unwrap();
    dst
}

fn install(d: &Device, url: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["install", "--json", "--command-key", "ck-net"];
    args.extend_from_slice(extra);
    args.push(url);
    let o = d.cli(&args);
    (
        o.status.code().unwrap_or(-1),
        serde_json::from_slice(&o.stdout).unwrap_or_default(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn image_in_slot_b(d: &Device, size: usize) -> bool {
    let slot = std::fs::read(d.w.path("slotB")).unwrap();
    sha256_hex(&slot[..size]) == sha256_hex(&pseudo_random(size, 7))
}

/// The running system as it is before a failed install: the booted slot, the boot order
/// and A's state (a failure while writing leaves the target B marked bad, nothing else).
fn untouched(d: &Device) -> impl Fn(&str) + '_ {
    let slot_a = std::fs::read(d.w.path("slotA")).unwrap();
    move |what: &str| {
        assert!(std::fs::read(d.w.path("slotA")).unwrap() == slot_a, "{what}: the booted slot changed");
        let l = grub_list(d);
        assert!(l.contains("ORDER=A B\n") && l.contains("A_OK=1\n") && l.contains("A_TRY=0\n"), "{what}: {l}");
    }
}

#[test]
fn verity_and_tr069_packages_install_from_nginx_and_boot() {
    for format in ["verity", "tr069"] {
        let d = device();
        publish(&d, format, 3_000_000, "u.pkg");
        let nginx = Nginx::start(d.w.dir.path(), &d.w.path("www"), NginxOptions::default());
        let (code, out, err) = install(&d, &nginx.url("u.pkg"), &[]);
        assert_eq!(code, 0, "{format}: {out} {err}");
        assert_eq!(out["slot"], "rootfs.1");
        assert!(image_in_slot_b(&d, 3_000_000), "{format}");
        assert_eq!(std::fs::read(d.w.path("slotA")).unwrap(), vec![0u8; SLOT as usize]);
        assert!(grub_list(&d).contains("ORDER=B A\n"), "{format}");
        let s = d.status();
        assert_eq!(s["last-result"]["fault-code"], 0);
        assert_eq!(s["last-result"]["command-key"], "ck-net");
        let (start, end) = (s["last-result"]["start-time"].as_u64(), s["last-result"]["complete-time"].as_u64());
        assert!(start.is_some() && end >= start, "{s}");
        // The reboot: B comes up and confirms itself; the Download completes with 0.
        d.t.reset();
        let o = d.cli_as("B", &["mark", "good"]);
        assert!(o.status.success(), "{format}: {}", String::from_utf8_lossy(&o.stderr));
        let s: serde_json::Value = serde_json::from_slice(&d.cli_as("B", &["status", "--json"]).stdout).unwrap();
        assert_eq!(s["booted"], "rootfs.1", "{s}");
        assert_eq!(s["slots"][1]["status"], "Active", "{s}");
        assert_eq!(s["last-result"]["command-key"], "ck-net", "{s}");
        assert_eq!(s["last-result"]["fault-code"], 0, "{s}");
    }
}

#[test]
fn a_plain_bundle_is_refused_for_streaming_with_a_clear_error() {
    let d = device();
    publish(&d, "plain", 1_000_000, "p.raucb");
    let nginx = Nginx::start(d.w.dir.path(), &d.w.path("www"), NginxOptions::default());
    let check = untouched(&d);
    let (code, out, _) = install(&d, &nginx.url("p.raucb"), &[]);
    assert_ne!(code, 0);
    let m = out["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains("plain bundle refused") && m.contains("file server"), "{out}");
    assert_eq!(
        (out["error"]["kind"].as_str(), out["error"]["cwmp-fault"].as_u64()),
        (Some("plain-streamed"), Some(9001))
    );
    assert_eq!(code, 1, "refused, not could-not-check");
    check("plain");
}

#[test]
fn https_mutual_tls_basic_and_digest_authentication() {
    let d = device();
    publish(&d, "verity", 2_000_000, "u.raucb");
    let pki = TlsPki::new(&d.w.path("tls"));
    let p = |n: &str| pki.path(n).to_str().unwrap().to_string();
    std::fs::write(d.w.path("password"), "s3cret\n").unwrap();
    std::fs::write(d.w.path("wrong"), "guess\n").unwrap();
    let pw = d.w.path("password").to_str().unwrap().to_string();
    let wrong = d.w.path("wrong").to_str().unwrap().to_string();
    let root = d.w.path("www");
    let opts =
        NginxOptions { tls: Some(&pki), client_cert: true, basic: Some(("acs", "s3cret")), ..Default::default() };
    let nginx = Nginx::start(d.w.dir.path(), &root, opts);
    let url = nginx.url("u.raucb");
    let (ca, client, client_key) = (p("ca.pem"), p("client.pem"), p("client.key"));
    let (stranger, stranger_key) = (p("stranger.pem"), p("stranger.key"));
    let mtls = ["--tls-ca", &ca, "--tls-cert", &client, "--tls-key", &client_key];
    let strange = ["--tls-ca", &ca, "--tls-cert", &stranger, "--tls-key", &stranger_key];
    let info = |url: &str, extra: &[&str]| {
        let mut a = vec!["info", "--json"];
        a.extend_from_slice(extra);
        a.push(url);
        let o = d.cli(&a);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        (o.status.code().unwrap_or(-1), v)
    };
    let fault = |v: &serde_json::Value| v["error"]["cwmp-fault"].as_u64().unwrap_or(0);
    // Each missing piece gets its fault: the server's certificate untrusted (system CAs
    // only), no client certificate, one from another CA, no or wrong credentials.
    let user = ["--username", "acs", "--password-file", &pw];
    let cases: Vec<(Vec<&str>, u64, &str)> = vec![
        ([&mtls[2..], &user[..]].concat(), 9015, "server certificate not trusted"),
        ([&mtls[..2], &user[..]].concat(), 9012, "no client certificate"),
        ([&strange[..], &user[..]].concat(), 9012, "client certificate of another CA"),
        (mtls.to_vec(), 9012, "no credentials"),
        ([&mtls[..], &["--username", "acs", "--password-file", &wrong][..]].concat(), 9012, "wrong password"),
    ];
    for (args, want, what) in cases {
        let (code, v) = info(&url, &args);
        assert_ne!(code, 0, "{what}");
        assert_eq!(fault(&v), want, "{what}: {v}");
    }
    let (code, v) = info(&url, &[&mtls[..], &user[..]].concat());
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["format"], "verity");
    // tls-no-verify only where the configuration allows it.
    let no_verify = [&["--tls-no-verify"][..], &mtls[2..], &user[..]].concat();
    let (_, v) = info(&url, &no_verify);
    assert_eq!(fault(&v), 9003, "tls-no-verify refused: {v}");
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    std::fs::write(&d.conf, conf.replace("[download]\n", "[download]\nallow-tls-no-verify=true\n")).unwrap();
    let (code, v) = info(&url, &no_verify);
    assert_eq!(code, 0, "tls-no-verify allowed: {v}");
    std::fs::write(&d.conf, std::fs::read_to_string(&d.conf).unwrap().replace("allow-tls-no-verify=true\n", ""))
        .unwrap();
    // An install over HTTPS with mutual TLS and Basic authentication.
    let (code, out, err) = install(&d, &url, &[&mtls[..], &user[..]].concat());
    assert_eq!(code, 0, "{out} {err}");
    assert!(image_in_slot_b(&d, 2_000_000));
    // Digest authentication (lighttpd).
    let light = Lighttpd::start(d.w.dir.path(), &root, "acs", "s3cret");
    let (code, v) = info(&light.url("u.raucb"), &user);
    assert_eq!(code, 0, "digest: {v}");
    let (_, v) = info(&light.url("u.raucb"), &["--username", "acs", "--password-file", &wrong]);
    assert_eq!(fault(&v), 9012, "digest, wrong password: {v}");
}

#[test]
fn a_cut_connection_resumes_and_fetches_at_most_five_percent_more() {
    let d = device();
    let bundle = publish(&d, "verity", 12_000_000, "u.raucb");
    let nginx = Nginx::start(d.w.dir.path(), &d.w.path("www"), NginxOptions::default());
    let proxy = FaultProxy::start(nginx.port, web::Fault::CutEvery(1 << 20));
    let (code, out, err) = install(&d, &proxy.url("u.raucb"), &[]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(image_in_slot_b(&d, 12_000_000));
    let size = std::fs::metadata(&bundle).unwrap().len();
    let ratio = proxy.forwarded() as f64 / size as f64;
    eprintln!("forwarded {} bytes for a {size} byte bundle: {ratio:.4}", proxy.forwarded());
    assert!(proxy.forwarded() >= size - size / 10, "the proxy saw the transfer: {}", proxy.forwarded());
    assert!(ratio <= 1.05, "forwarded {ratio:.3} times the bundle");
    assert!(err.contains("retrying"), "the cuts were resumed: {err}");
}

#[test]
fn a_block_switched_after_the_signature_was_fetched_is_refused() {
    for format in ["verity", "tr069"] {
        let d = device();
        let size = 16_000_000;
        let bundle = publish(&d, format, size, "u.pkg");
        let nginx = Nginx::start(d.w.dir.path(), &d.w.path("www"), NginxOptions::default());
        let proxy = FaultProxy::start(nginx.port, web::Fault::None);
        // Late in the image, switched once 2 MB went out (after the header, the
        // signature and the first image bytes), keeping size, ETag and Last-Modified.
        let at = (size as u64 * 3 / 4) & !4095;
        let b = bundle.clone();
        proxy.when_forwarded(2_000_000, move || web::switch_bytes(&b, at, 4096));
        let check = untouched(&d);
        let (code, out, err) = install(&d, &proxy.url("u.pkg"), &[]);
        assert_ne!(code, 0, "{format}: {err}");
        let f = out["error"]["cwmp-fault"].as_u64().unwrap_or(0);
        assert!(f == 9018 || f == 9019, "{format}: {out}");
        check(format);
        let s = d.status();
        assert_eq!(s["last-result"]["fault-code"].as_u64(), Some(f), "{format}: {s}");
        assert_ne!(s["primary"], "B");
    }
}

#[test]
fn transport_failures_get_their_fault_codes_and_change_nothing() {
    let d = device();
    let bundle = publish(&d, "verity", 3_000_000, "u.raucb");
    let size = std::fs::metadata(&bundle).unwrap().len();
    let nginx = Nginx::start(d.w.dir.path(), &d.w.path("www"), NginxOptions::default());
    let basic = Nginx::start(
        d.w.dir.path(),
        &d.w.path("www"),
        NginxOptions { basic: Some(("acs", "pw")), ..Default::default() },
    );
    let stall = FaultProxy::start(nginx.port, web::Fault::StallAfter(1 << 20));
    let trickle = FaultProxy::start(nginx.port, web::Fault::TrickleAfter(1 << 20));
    let overflow = FaultProxy::start(nginx.port, web::Fault::Overflow(4096));
    let closed = format!("http://127.0.0.1:{}/u.raucb", web::free_port());
    let small = (size - 1).to_string();
    let cases: Vec<(String, Vec<&str>, u64, &str)> = vec![
        (nginx.url("missing.raucb"), vec![], 9016, "404"),
        (nginx.url("unavailable.raucb"), vec![], 9010, "503 until the retries ran out"),
        (basic.url("u.raucb"), vec![], 9012, "401"),
        (closed, vec![], 9015, "nobody listens"),
        ("ftp://127.0.0.1/u.raucb".into(), vec![], 9013, "ftp"),
        (stall.url("u.raucb"), vec![], 9017, "a server that stalls"),
        (trickle.url("u.raucb"), vec![], 9017, "a server that trickles"),
        (overflow.url("u.raucb"), vec![], 9010, "more bytes than asked"),
        (nginx.url("u.raucb"), vec!["--file-size", &small], 9010, "larger than file-size"),
        (nginx.url("moved/moved/moved/moved/u.raucb"), vec![], 9010, "too many redirects"),
    ];
    let check = untouched(&d);
    for (url, extra, want, what) in cases {
        let (code, out, err) = install(&d, &url, &extra);
        assert_ne!(code, 0, "{what}");
        assert_eq!(out["error"]["cwmp-fault"].as_u64(), Some(want), "{what}: {out} {err}");
        check(what);
        assert_eq!(d.status()["last-result"]["fault-code"].as_u64(), Some(want), "{what}");
    }
    // A redirect within the limit is followed.
    let (code, out, err) = install(&d, &nginx.url("moved/u.raucb"), &[]);
    assert_eq!(code, 0, "{out} {err}");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn download_url_over_d_bus_and_rauc_install_https() {
    use futures_util::StreamExt;
    use zbus::Variant;
    let d = device();
    let pki = TlsPki::new(&d.w.path("tls"));
    // RAUC's [streaming] tls-ca: the CA the device trusts for file servers (rauc 1.8's
    // client has no streaming arguments).
    let mut conf = std::fs::read_to_string(&d.conf).unwrap();
    conf.push_str(&format!(
        "\n[service]\nrauc-compatible=true\n\n[streaming]\ntls-ca={}\n",
        pki.path("ca.pem").display()
    ));
    std::fs::write(&d.conf, conf).unwrap();
    publish(&d, "verity", 2_000_000, "u.raucb");
    let nginx = Nginx::start(
        d.w.dir.path(),
        &d.w.path("www"),
        NginxOptions { tls: Some(&pki), basic: Some(("acs", "pw")), ..Default::default() },
    );
    let bus = Bus::start();
    let _svc = Service::start(&bus, &d.conf, "A", &[]);
    bus.wait_for("de.pengutronix.rauc");
    let ca = pki.path("ca.pem").to_str().unwrap().to_string();
    rt().block_on(async {
        let conn = zbus::connection::Builder::address(bus.address().as_str()).build().await.unwrap();
        let p = zbus::Proxy::new(&conn, "org.henb.Update1", "/org/henb/Update1", "org.henb.Update1").await.unwrap();
        let mut signals = p.receive_all_signals().await.unwrap();
        let mut opts = HashMap::new();
        opts.insert("username", Variant::from("acs"));
        opts.insert("password", Variant::from("pw"));
        opts.insert("tls-ca", Variant::from(ca.as_str()));
        let (status, job): (u32, String) =
            p.call("DownloadUrl", &(nginx.url("u.raucb"), "6 Stored Firmware Image", "ck-url", &opts)).await.unwrap();
        assert_eq!(status, 1);
        let mut progress = Vec::new();
        let fault = loop {
            let m = tokio::time::timeout(Duration::from_secs(120), signals.next()).await.unwrap().unwrap();
            let h = m.header();
            match h.member().map(|m| m.as_str().to_string()).as_deref() {
                Some("ProgressChanged") => progress.push(m.body().deserialize::<(i32, String, i32)>().unwrap()),
                Some("DownloadCompleted") => {
                    let (j, _, fault, text, _): (String, String, u32, String, bool) = m.body().deserialize().unwrap();
                    assert_eq!(j, job);
                    assert_eq!(fault, 0, "{text}");
                    break fault;
                }
                _ => {}
            }
        };
        assert_eq!(fault, 0);
        assert!(progress.iter().any(|(_, m, _)| m.contains("MiB")), "progress in bytes: {progress:?}");
        assert_eq!(progress.last().map(|p| p.0), Some(100));
        // Unknown options and a scheme other than http(s) are refused at once.
        let mut bad = HashMap::new();
        bad.insert("color", Variant::from("red"));
        let e = p
            .call::<_, _, (u32, String)>("DownloadUrl", &(nginx.url("u.raucb"), "1 Firmware Upgrade Image", "k", &bad))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("InvalidArguments"), "{e}");
        // A malformed header is refused at the call, naming the header, never its value
        // (LastError and the signals are world-readable).
        let mut hdr = HashMap::new();
        hdr.insert("http-headers", Variant::from(vec!["X-Token: t0ken\r\nInjected: 1"]));
        let e = p
            .call::<_, _, (u32, String)>("DownloadUrl", &(nginx.url("u.raucb"), "1 Firmware Upgrade Image", "k", &hdr))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("InvalidArguments") && e.to_string().contains("X-Token"), "{e}");
        assert!(!e.to_string().contains("t0ken"), "the header's value is not echoed: {e}");
        let none = HashMap::<&str, Variant>::new();
        let e = p
            .call::<_, _, (u32, String)>(
                "DownloadUrl",
                &("ftp://127.0.0.1/u.raucb", "1 Firmware Upgrade Image", "k", &none),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("UnsupportedProtocolForFileTransfer") && e.to_string().contains("9013"), "{e}");
    });
    assert!(image_in_slot_b(&d, 2_000_000));
    // The command line's D-Bus client hands a URL over with DownloadUrl.
    std::fs::write(d.w.path("password"), "pw\n").unwrap();
    let o = Command::new(BIN)
        .args(["download", "--json", "--no-activate", "--command-key", "ck-cli", "--username", "acs"])
        .arg("--password-file")
        .arg(d.w.path("password"))
        .args(["--tls-ca", &ca, &nginx.url("u.raucb")])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out} {}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("\"cwmp-fault\":0") && out.contains("ck-cli"), "{out}");
    // Debian's rauc: `rauc install https://...`, the server trusted by [streaming] tls-ca.
    let open = Nginx::start(d.w.dir.path(), &d.w.path("www"), NginxOptions { tls: Some(&pki), ..Default::default() });
    let o = Command::new("rauc")
        .args(["install", &open.url("u.raucb")])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .env_remove("DBUS_STARTER_BUS_TYPE")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "rauc install https: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(grub_list(&d).contains("ORDER=B A\n"));
}

#[test]
fn a_file_republished_during_the_download_fails_cleanly() {
    // New bytes with a new ETag and Last-Modified once 2 MB went out: the next Range
    // request's If-Range gets the whole new file (200), which is refused, not mixed in.
    let d = device();
    let bundle = publish(&d, "verity", 16_000_000, "u.raucb");
    let nginx = Nginx::start(d.w.dir.path(), &d.w.path("www"), NginxOptions::default());
    let proxy = FaultProxy::start(nginx.port, web::Fault::None);
    let b = bundle.clone();
    proxy.when_forwarded(2_000_000, move || web::republish_bytes(&b, 12_000_000, 4096));
    let check = untouched(&d);
    let (code, out, err) = install(&d, &proxy.url("u.raucb"), &[]);
    assert_ne!(code, 0, "{err}");
    assert_eq!(out["error"]["cwmp-fault"].as_u64(), Some(9010), "{out}");
    assert!(out["error"]["message"].as_str().unwrap_or_default().contains("changed"), "{out}");
    check("republished");
}

#[test]
fn credentials_and_headers_stay_with_the_origin_they_were_given_for() {
    // A asks for Basic credentials, then redirects to B (another origin): B must see
    // neither the Authorization nor the X-Token header; the install goes on from B.
    let d = device();
    publish(&d, "verity", 1_000_000, "u.raucb");
    let root = d.w.path("www");
    let b = Nginx::start(d.w.dir.path(), &root, NginxOptions::default());
    let redirect = format!(
        "location /x/ {{ try_files /nonexistent @away; }}\n  location @away {{ return 302 {}; }}",
        b.url("u.raucb")
    );
    let a = Nginx::start(
        d.w.dir.path(),
        &root,
        NginxOptions { basic: Some(("acs", "s3cret")), extra: &redirect, ..Default::default() },
    );
    std::fs::write(d.w.path("password"), "s3cret\n").unwrap();
    let pw = d.w.path("password").to_str().unwrap().to_string();
    let args = ["--username", "acs", "--password-file", &pw, "--http-header", "X-Token: t0ken"];
    let (code, out, err) = install(&d, &a.url("x/u.raucb"), &args);
    assert_eq!(code, 0, "{out} {err}");
    let (la, lb) = (a.log(), b.log());
    assert!(la.contains("auth=[Basic ") && la.contains("token=[t0ken]"), "A got both: {la}");
    assert!(lb.contains("GET /u.raucb"), "B served the file: {lb}");
    assert!(!lb.contains("Basic") && !lb.contains("t0ken"), "B saw A's credentials or header: {lb}");
}

#[test]
fn a_refused_package_is_not_downloaded() {
    // Admission needs no image byte: an incompatible verity bundle is refused after its
    // trailer, signature and squashfs tables, long before its 12 MB image would come.
    let d = device();
    let bundle = publish(&d, "verity", 12_000_000, "u.raucb");
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    std::fs::write(&d.conf, conf.replace("compatible=henb-test", "compatible=other-device")).unwrap();
    let nginx = Nginx::start(d.w.dir.path(), &d.w.path("www"), NginxOptions::default());
    let proxy = FaultProxy::start(nginx.port, web::Fault::None);
    let check = untouched(&d);
    let (code, out, err) = install(&d, &proxy.url("u.raucb"), &[]);
    assert_eq!(code, 1, "{out} {err}");
    assert_eq!(out["error"]["kind"], "incompatible", "{out}");
    let size = std::fs::metadata(&bundle).unwrap().len();
    assert!(proxy.forwarded() < size / 10, "forwarded {} of {size} bytes for a refused package", proxy.forwarded());
    check("refused");
}
