//! `bundle --reference-values`: the values are checked, signed into the package as
//! `[meta.measured-boot]` (RAUC manifest or TR-069 vendor command 1001), and shown by `info`.

mod common;
use common::*;
use std::process::Command;

#[test]
fn reference_values_are_signed_into_both_formats() {
    let w = Work::new();
    let c = w.content("c", 10_000, "");
    let rv = w.path("rv.txt");
    let (a, b) = ("aa".repeat(32), "bb".repeat(32));
    std::fs::write(&rv, format!("pcr-bank=sha256\npcr.9={a}\npcr.8.A={b}\ncomponent.kernel={a}\n")).unwrap();
    for format in ["verity", "tr069"] {
        let p = w.bundle(
            format,
            &c,
            &["signer-rsa"],
            &format!("u.{format}"),
            &["--reference-values", rv.to_str().unwrap()],
        );
        let r = info(&w.conf(""), &p, &[]);
        let m = &r.ok()["meta"]["measured-boot"];
        assert_eq!(m["pcr.9"], a.as_str(), "{format}");
        assert_eq!(m["pcr.8.A"], b.as_str(), "{format}");
    }
    // A file that does not parse as reference values: nothing is built.
    std::fs::write(&rv, "pcr.9=00\n").unwrap();
    let out = Command::new(BIN)
        .args(["bundle", "--format", "verity", "--cert"])
        .arg(cert("signer-rsa"))
        .arg("--key")
        .arg(key("signer-rsa"))
        .arg("--reference-values")
        .arg(&rv)
        .arg(&c)
        .arg(w.path("bad.raucb"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a SHA-256 value"));
    assert!(!w.path("bad.raucb").exists());
    // Values given in the manifest and on the command line: refused, not merged.
    std::fs::write(&rv, format!("pcr.9={a}\n")).unwrap();
    let c2 = w.content("c2", 1000, &format!("\n[meta.measured-boot]\npcr.9={b}\n"));
    let out = Command::new(BIN)
        .args(["bundle", "--format", "tr069", "--cert"])
        .arg(cert("signer-rsa"))
        .arg("--key")
        .arg(key("signer-rsa"))
        .arg("--reference-values")
        .arg(&rv)
        .arg(&c2)
        .arg(w.path("dup.bin"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in one place only"));
}
