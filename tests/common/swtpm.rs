//! One real swtpm per test (TPM 2.0 on loopback TCP, state in a temp dir, killed on drop).
//! TCP rather than a unix socket: tss-esapi 7.7's TCTI parser only knows host and port
//! for `swtpm:`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub struct Swtpm {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

static NEXT: AtomicU16 = AtomicU16::new(0);

impl Swtpm {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("swtpm-").tempdir().unwrap();
        let seed = (std::process::id() as u16).wrapping_mul(97);
        for _ in 0..50 {
            // Even ports in 12000..32000, below Linux's ephemeral range (32768..60999) so
            // that no client connection of a parallel test holds one: server on port,
            // control on port + 1.
            let n = NEXT.fetch_add(1, Ordering::SeqCst).wrapping_add(seed);
            let port = 12000 + (n % 10000) * 2;
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
                .arg("--tpmstate")
                .arg(format!("dir={}", dir.path().display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("swtpm (apt-get install swtpm)");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if child.try_wait().unwrap().is_some() {
                    break; // port taken: try another
                }
                if TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                    return Self { dir, child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start swtpm");
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// What a reboot does to the TPM: re-initialize, then TPM2_Startup(CLEAR).
    pub fn reset(&self) {
        let ok = Command::new("swtpm_ioctl")
            .arg("--tcp")
            .arg(format!("127.0.0.1:{}", self.port + 1))
            .arg("-i")
            .status()
            .unwrap();
        assert!(ok.success(), "swtpm_ioctl -i");
        // With startup-clear swtpm may already have started up; "already initialized" is fine.
        let _ = Command::new("tpm2_startup").args(["-c", "-T", &self.tcti()]).env("TSS2_LOG", "all+none").output();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A system.conf using this TPM (no keyring: anchors come from the TPM).
    pub fn conf(&self, extra: &str) -> PathBuf {
        let p = self.dir.path().join("system.conf");
        std::fs::write(
            &p,
            format!(
                "[system]\ncompatible=henb-test\ndata-directory={}\n\n[keyring]\ncheck-purpose=codesign\n\n[tpm]\ntcti={}\n{extra}",
                self.dir.path().join("data").display(),
                self.tcti()
            ),
        )
        .unwrap();
        p
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
