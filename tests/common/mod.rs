//! Shared test helpers: a test PKI made by openssl, content directories, and runs of
//! the real binary. Packages come from independent producers (openssl, rauc, mksquashfs,
//! tests/tools/tr069_build.py) as well as from our own `bundle`.
#![allow(dead_code)]

pub mod oracle;
pub mod tpmproxy;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_henb-update");

/// The test PKI (tests/pki/make-pki.sh), made once per test binary.
pub fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under target/tmp (cargo clean removes it), one per test binary run.
        let d = tempfile::Builder::new().prefix("pki-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap().keep();
        let dir = d.join("pki");
        run_ok(Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pki/make-pki.sh")).arg(&dir));
        dir
    })
}

pub fn cert(name: &str) -> PathBuf {
    pki().join(format!("{name}.cert.pem"))
}
pub fn key(name: &str) -> PathBuf {
    pki().join(format!("{name}.key.pem"))
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A work directory for one test.
pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Self {
        Self { dir: tempfile::Builder::new().prefix("henb-test-").tempdir().unwrap() }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A content dir with `manifest.raucm` (no digests: bundlers fill them in) and an
    /// image of `size` pseudo-random bytes.
    pub fn content(&self, name: &str, size: usize, manifest_extra: &str) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("rootfs.img"), pseudo_random(size, 7)).unwrap();
        std::fs::write(
            d.join("manifest.raucm"),
            format!("[update]\ncompatible=henb-test\nversion=1.2.3\n\n[image.rootfs]\nfilename=rootfs.img\n{manifest_extra}"),
        )
        .unwrap();
        d
    }

    /// The same content with size and sha256 filled in by the test (for bundles made
    /// with mksquashfs + openssl).
    pub fn content_with_digests(&self, name: &str, size: usize) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        let img = pseudo_random(size, 9);
        std::fs::write(d.join("rootfs.img"), &img).unwrap();
        std::fs::write(
            d.join("manifest.raucm"),
            format!("[update]\ncompatible=henb-test\nversion=1.2.3\n\n[image.rootfs]\nfilename=rootfs.img\nsha256={}\nsize={}\n", sha256_hex(&img), img.len()),
        )
        .unwrap();
        d
    }

    /// A system.conf with our keyring and the codesign purpose.
    pub fn conf(&self, extra: &str) -> PathBuf {
        let p = self.path("system.conf");
        std::fs::write(
            &p,
            format!(
                "[system]\ncompatible=henb-test\n\n[keyring]\npath={}\ncheck-purpose=codesign\n{extra}",
                pki().join("keyring.pem").display()
            ),
        )
        .unwrap();
        p
    }

    /// `henb-update bundle` with the given signer names.
    pub fn bundle(&self, format: &str, content: &Path, signers: &[&str], out: &str, extra: &[&str]) -> PathBuf {
        let o = self.path(out);
        let mut c = Command::new(BIN);
        c.args(["bundle", "--format", format]);
        for s in signers {
            c.arg("--cert").arg(cert(s)).arg("--key").arg(key(s));
        }
        c.arg("--intermediate").arg(cert("release-ca")).args(extra).arg(content).arg(&o);
        run_ok(&mut c);
        oracle::built(&o)
    }

    /// A bundle made by Debian's rauc (`rauc bundle`), signed by signer-rsa with the
    /// release CA as intermediate; its format is the manifest's.
    pub fn rauc_bundle(&self, content: &Path, out: &str) -> PathBuf {
        self.rauc_bundle_with(content, out, &[])
    }

    /// The same, with more `rauc bundle` options (`--mksquashfs-args=...`).
    pub fn rauc_bundle_with(&self, content: &Path, out: &str, extra: &[&str]) -> PathBuf {
        let o = self.path(out);
        run_ok(
            Command::new("rauc")
                .arg("bundle")
                .arg(format!("--cert={}", cert("signer-rsa").display()))
                .arg(format!("--key={}", key("signer-rsa").display()))
                .arg(format!("--intermediate={}", cert("release-ca").display()))
                .args(extra)
                .arg(content)
                .arg(&o),
        );
        oracle::built(&o)
    }

    /// A squashfs of `content`, made as rauc makes it.
    pub fn mksquashfs(&self, content: &Path, name: &str) -> PathBuf {
        let sq = self.path(name);
        run_ok(Command::new("mksquashfs").arg(content).arg(&sq).args([
            "-noappend",
            "-all-root",
            "-no-xattrs",
            "-quiet",
            "-no-progress",
        ]));
        oracle::built(&sq)
    }

    /// A plain bundle made without our code: mksquashfs + `openssl cms -sign`.
    pub fn openssl_plain(&self, content: &Path, signers: &[&str], md: &str, out: &str) -> PathBuf {
        self.openssl_plain_with(content, signers, md, out, &[])
    }

    /// The same, with extra `openssl cms` options after the signers (`-keyopt ...`, `-keyid`).
    pub fn openssl_plain_with(&self, content: &Path, signers: &[&str], md: &str, out: &str, extra: &[&str]) -> PathBuf {
        let sq = self.mksquashfs(content, &format!("{out}.sqfs"));
        self.sign_plain(&sq, signers, md, out, extra)
    }

    /// A plain bundle of a given squashfs image, signed with `openssl cms -sign`.
    pub fn sign_plain(&self, sq: &Path, signers: &[&str], md: &str, out: &str, extra: &[&str]) -> PathBuf {
        let cms = self.path(&format!("{out}.cms"));
        let mut c = Command::new("openssl");
        c.args(["cms", "-sign", "-binary", "-outform", "DER", "-md", md]).arg("-in").arg(sq).arg("-out").arg(&cms);
        for s in signers {
            c.arg("-signer").arg(cert(s)).arg("-inkey").arg(key(s));
        }
        c.args(extra);
        c.arg("-certfile").arg(cert("release-ca"));
        run_ok(&mut c);
        let o = self.path(out);
        assemble(sq, &std::fs::read(&cms).unwrap(), &o);
        o
    }
}

/// squashfs (or payload) file + CMS + trailer.
pub fn assemble(payload: &Path, cms: &[u8], out: &Path) {
    let mut b = std::fs::read(payload).unwrap();
    assert_eq!(b.len() % 4096, 0, "payload must be 4 KiB aligned");
    b.extend(cms);
    b.extend((cms.len() as u64).to_be_bytes());
    std::fs::write(out, b).unwrap();
}

pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Result of `henb-update info --json`.
pub struct Info {
    pub code: i32,
    pub json: serde_json::Value,
    pub stderr: String,
}

impl Info {
    pub fn ok(&self) -> &serde_json::Value {
        assert_eq!(self.code, 0, "info failed: {}", self.stderr);
        &self.json
    }
    /// (kind, cwmp-fault) of a failure.
    pub fn err(&self) -> (String, u64) {
        assert_ne!(self.code, 0, "info accepted what it should refuse: {}", self.json);
        assert_ne!(self.code, 101, "info panicked: {}", self.stderr);
        let e = &self.json["error"];
        (e["kind"].as_str().unwrap_or_default().to_string(), e["cwmp-fault"].as_u64().unwrap_or_default())
    }
}

pub fn info(conf: &Path, package: &Path, extra: &[&str]) -> Info {
    let out =
        Command::new(BIN).arg("--conf").arg(conf).args(["info", "--json"]).args(extra).arg(package).output().unwrap();
    Info {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run tests/tools/tr069_build.py (the independent TR-069 builder).
pub fn tr069_build(args: &[&std::ffi::OsStr]) -> Output {
    Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/tr069_build.py"))
        .args(args)
        .output()
        .unwrap()
}

pub mod bus;
pub mod device;
pub mod switchfs;
pub mod swtpm;
pub mod web;
