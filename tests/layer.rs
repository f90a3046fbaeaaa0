//! The CI checks of the Yocto layer (scripts/check-layer.sh) pass on the repository and
//! fail on what they are there to catch: a crates.inc that no longer matches Cargo.lock,
//! a Type=dbus unit without BusName=, an activation file naming another bus name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// A copy of what the checks read: Cargo.lock, dbus/, meta-henb-update/.
fn checkout() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().to_path_buf();
    std::fs::copy(Path::new(ROOT).join("Cargo.lock"), r.join("Cargo.lock")).unwrap();
    copy_tree(&Path::new(ROOT).join("dbus"), &r.join("dbus"));
    copy_tree(&Path::new(ROOT).join("meta-henb-update"), &r.join("meta-henb-update"));
    (d, r)
}

fn check(root: &Path) -> Output {
    Command::new(Path::new(ROOT).join("scripts/check-layer.sh"))
        .arg(root)
        .env("OELINT_VENV", Path::new(ROOT).join("target/oelint-venv"))
        .output()
        .unwrap()
}

fn edit(p: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(p).unwrap();
    assert!(s.contains(from), "{} has no '{from}'", p.display());
    std::fs::write(p, s.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_layer_checks_pass_here_and_catch_what_they_are_for() {
    let o = check(Path::new(ROOT));
    assert!(o.status.success(), "check-layer on the repository:\n{}", String::from_utf8_lossy(&o.stderr));

    // A dependency bumped in Cargo.lock without regenerating crates.inc.
    let (_d, r) = checkout();
    edit(&r.join("Cargo.lock"), "name = \"hex\"\nversion = \"0.4.3\"", "name = \"hex\"\nversion = \"0.4.4\"");
    let o = check(&r);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("crates.inc is stale"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A D-Bus unit without BusName=.
    let (_d, r) = checkout();
    edit(&r.join("dbus/henb-update.service"), "BusName=org.henb.Update1\n", "");
    let o = check(&r);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("systemd-analyze verify") && err.contains("BusName"), "{err}");

    // An activation file for another name.
    let (_d, r) = checkout();
    edit(&r.join("dbus/org.henb.Update1.service"), "Name=org.henb.Update1", "Name=org.henb.Update2");
    let o = check(&r);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not the unit's BusName"));

    // A recipe with old override syntax is an oelint finding.
    let (_d, r) = checkout();
    edit(
        &r.join("meta-henb-update/recipes-core/henb-update/henb-update.inc"),
        "RDEPENDS:${PN}-boot",
        "RDEPENDS_${PN}-boot",
    );
    let o = check(&r);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("oelint-adv found problems"));
}
