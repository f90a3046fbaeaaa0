//! The CI checks of the Yocto layer (scripts/check-layer.sh) pass on the repository and
//! fail on what they are there to catch, each shown on a copy of the layer with one
//! defect: generated files that do not follow from the pinned commit, a pinned commit that
//! lacks a file, command or option the layer uses, a kas file on the wrong bitbake branch
//! or without a layer a dependency needs, docs that add the layers differently, a README or
//! SECURITY file yocto-check-layer refuses, broken units and bus files, oelint findings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const RECIPE: &str = "meta-henb-update/recipes-core/henb-update/henb-update_git.bb";
const CLASS: &str = "meta-henb-update/classes-recipe/henb_bundle.bbclass";
const KAS: &str = "meta-henb-update/kas/henb-demo.yml";
const LAYER_CONF: &str = "meta-henb-update/conf/layer.conf";
const GUIDE: &str = "docs/integrator-guide.md";
const LAYER_README: &str = "meta-henb-update/README.md";

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

/// A copy of what the checks read: Cargo.lock, dbus/, meta-henb-update/, the integrator
/// guide. The pinned commit is read from this repository's .git.
fn checkout() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().to_path_buf();
    std::fs::copy(Path::new(ROOT).join("Cargo.lock"), r.join("Cargo.lock")).unwrap();
    copy_tree(&Path::new(ROOT).join("dbus"), &r.join("dbus"));
    copy_tree(&Path::new(ROOT).join("meta-henb-update"), &r.join("meta-henb-update"));
    std::fs::create_dir_all(r.join("docs")).unwrap();
    std::fs::copy(Path::new(ROOT).join(GUIDE), r.join(GUIDE)).unwrap();
    (d, r)
}

fn check(root: &Path) -> Output {
    Command::new(Path::new(ROOT).join("scripts/check-layer.sh"))
        .arg(root)
        .env("OELINT_VENV", Path::new(ROOT).join("target/oelint-venv"))
        .env("HENB_GIT_DIR", Path::new(ROOT).join(".git"))
        .env("HENB_UPDATE_BIN", env!("CARGO_BIN_EXE_henb-update"))
        .output()
        .unwrap()
}

fn edit(p: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(p).unwrap();
    assert!(s.contains(from), "{} has no '{from}'", p.display());
    std::fs::write(p, s.replacen(from, to, 1)).unwrap();
}

/// The checks fail on a copy with `defect` applied, and say `expected`.
fn fails(defect: impl FnOnce(&Path), expected: &[&str]) {
    let (_d, r) = checkout();
    defect(&r);
    let o = check(&r);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the checks passed:\n{err}");
    for e in expected {
        assert!(err.contains(e), "no '{e}' in:\n{err}");
    }
}

fn pinned() -> String {
    let s = std::fs::read_to_string(Path::new(ROOT).join(RECIPE)).unwrap();
    s.lines().find_map(|l| l.strip_prefix("SRCREV = \"")).unwrap().trim_end_matches('"').to_string()
}

#[test]
fn the_layer_checks_pass_here() {
    let o = check(Path::new(ROOT));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "check-layer on the repository:\n{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("has the license, files and") && out.contains("documents are consistent"), "{out}");
}

#[test]
fn generated_files_must_follow_from_the_pinned_commit() {
    // Another SRCREV (the layer's first pin: 226 crates, no LICENSE) without regenerating.
    fails(
        |r| edit(&r.join(RECIPE), &pinned(), "e5503ffd8f56c9827e6ad6bf6a6b587158235e20"),
        &["crates.inc or licenses.inc is stale", "LICENSE is not in SRCREV e5503ffd8f56"],
    );
    // A crate dropped from crates.inc; a license dropped from licenses.inc.
    let dir = "meta-henb-update/recipes-core/henb-update";
    fails(
        |r| edit(&r.join(dir).join("henb-update-crates.inc"), "crate://crates.io/hex/", "crate://crates.io/hax/"),
        &["henb-update-crates.inc does not match the pinned commit"],
    );
    fails(
        |r| edit(&r.join(dir).join("henb-update-licenses.inc"), " & Zlib", ""),
        &["henb-update-licenses.inc does not match the pinned commit"],
    );
}

#[test]
fn the_pinned_commit_must_have_what_the_layer_uses() {
    // A commit that is not in the repository.
    fails(|r| edit(&r.join(RECIPE), &pinned(), &"1".repeat(40)), &["is not a commit of"]);
    // PV that is not the pinned version.
    fails(|r| edit(&r.join(RECIPE), "PV = \"", "PV = \"9."), &["is not the version of SRCREV"]);
    // A license checksum that does not match the commit's LICENSE.
    let inc = "meta-henb-update/recipes-core/henb-update/henb-update.inc";
    fails(|r| edit(&r.join(inc), "md5=3b83ef96", "md5=3b83ef97"), &["LIC_FILES_CHKSUM: LICENSE at SRCREV"]);
    // A file the recipe installs from ${S} that the commit does not have.
    fails(
        |r| edit(&r.join(inc), "${S}/dbus/org.henb.Update1.conf", "${S}/dbus/org.henb.Update2.conf"),
        &["installs ${S}/dbus/org.henb.Update2.conf"],
    );
    // A command, an option, and an option gathered in a shell variable the agent lacks.
    fails(
        |r| edit(&r.join(CLASS), "    henb-update reference-values --", "    henb-update reference-value --"),
        &["`henb-update reference-value` is not a command of SRCREV"],
    );
    fails(|r| edit(&r.join(CLASS), "--grub-config ", "--grub-cfg "), &["has no option --grub-cfg"]);
    fails(
        |r| edit(&r.join(CLASS), "intermediate=\"--intermediate ", "intermediate=\"--chain "),
        &["`henb-update bundle` of SRCREV", "has no option --chain"],
    );
    let provision = "meta-henb-update/recipes-core/henb-update/files/henb-provision";
    fails(|r| edit(&r.join(provision), "policy init --package", "policy init --bundle"), &["has no option --bundle"]);
    let unit = "meta-henb-update/recipes-core/henb-update/files/henb-update-mark-good.service";
    fails(
        |r| edit(&r.join(unit), "ExecStart=/usr/bin/henb-update mark good", "ExecStart=/usr/bin/henb-update mark fine"),
        &["`henb-update mark fine` is not a command"],
    );
}

#[test]
fn the_kas_file_and_docs_must_name_what_the_series_needs() {
    fails(
        |r| edit(&r.join(KAS), "branch: \"2.18\"", "branch: \"2.16\""),
        &["bitbake branch '2.16', but wrynose requires '2.18'"],
    );
    fails(
        |r| edit(&r.join(KAS), "      meta-python:\n", ""),
        &["collection 'meta-python' is needed", "add-layer adds"],
    );
    fails(
        |r| {
            edit(
                &r.join(KAS),
                "branch: wrynose\n    layers:\n      meta-oe:",
                "branch: scarthgap\n    layers:\n      meta-oe:",
            )
        },
        &["meta-openembedded is on branch 'scarthgap'"],
    );
    fails(
        |r| edit(&r.join(LAYER_CONF), "\"core tpm-layer\"", "\"core\""),
        &["DEPENDS on tpm2-tss, which tpm-layer provides"],
    );
    // The guide's local.conf differs from the kas file's.
    fails(|r| edit(&r.join(GUIDE), "DISTRO_FEATURES:append = \" tpm\"\n", ""), &["the local.conf block"]);
    // The guide adds meta-tpm before meta-python, which it depends on.
    fails(
        |r| {
            edit(
                &r.join(GUIDE),
                "../meta-openembedded/meta-python ../meta-security/meta-tpm",
                "../meta-security/meta-tpm ../meta-openembedded/meta-python",
            )
        },
        &["add-layer adds meta-tpm before ['meta-python']"],
    );
}

#[test]
fn readme_and_security_must_pass_yocto_check_layer() {
    let without = |word: &'static str, by: &'static str| {
        move |r: &Path| {
            let p = r.join(LAYER_README);
            let s = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, s.replace(word, by).replace(&word.to_uppercase(), by)).unwrap();
        }
    };
    fails(without("aintainer", "wner"), &["no 'maintainer'"]);
    fails(without("atch", "hange"), &["no 'patch'"]);
    fails(
        |r| {
            edit(
                &r.join(LAYER_README),
                "## Maintainers\n\n- henb-update maintainers <maintainers@henb-update.org>",
                "## Maintainers\n\nus",
            )
        },
        &["no maintainer email address"],
    );
    fails(
        |r| edit(&r.join(LAYER_README), "# meta-henb-update", "# meta-henb-update (README)"),
        &["contains the word README"],
    );
    fails(|r| std::fs::remove_file(r.join("meta-henb-update/SECURITY.md")).unwrap(), &["no non-empty SECURITY file"]);
}

#[test]
fn units_bus_files_and_recipes_are_checked() {
    // A D-Bus unit without BusName=.
    fails(
        |r| edit(&r.join("dbus/henb-update.service"), "BusName=org.henb.Update1\n", ""),
        &["systemd-analyze verify", "BusName"],
    );
    // An activation file for another name.
    fails(
        |r| edit(&r.join("dbus/org.henb.Update1.service"), "Name=org.henb.Update1", "Name=org.henb.Update2"),
        &["is not the unit's BusName"],
    );
    // A recipe with old override syntax is an oelint finding.
    fails(
        |r| {
            edit(
                &r.join("meta-henb-update/recipes-core/henb-update/henb-update.inc"),
                "RDEPENDS:${PN}-boot",
                "RDEPENDS_${PN}-boot",
            )
        },
        &["oelint-adv found problems"],
    );
}
