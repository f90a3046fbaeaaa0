//! A private system bus per test: Debian's dbus-daemon with
//! `tests/fixtures/private-system-bus.conf.in` (the system bus's default policy and our
//! `dbus/org.henb.Update1.conf` included verbatim), killed on drop.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Bus {
    dir: tempfile::TempDir,
    child: Child,
}

impl Bus {
    pub fn start() -> Self {
        cwmp_gid(); // the policy names it: it must exist when the daemon loads the policy
        let dir = tempfile::Builder::new().prefix("bus-").tempdir().unwrap();
        // Reachable by an unprivileged user (the policy test connects as nobody).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.henb.Update1.conf");
        let conf = dir.path().join("bus.conf");
        let template = include_str!("../fixtures/private-system-bus.conf.in");
        let text = template
            .replace("@SOCKET@", &dir.path().join("bus.sock").display().to_string())
            .replace("@POLICY@", &policy.display().to_string());
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (apt-get install dbus-daemon)");
        let sock = dir.path().join("bus.sock");
        let t0 = Instant::now();
        while !sock.exists() {
            assert!(t0.elapsed() < Duration::from_secs(10), "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bus { dir, child }
    }

    pub fn address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus.sock").display())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Wait until `name` has an owner on this bus.
    pub fn wait_for(&self, name: &str) {
        let t0 = Instant::now();
        loop {
            let o = Command::new("dbus-send")
                .arg(format!("--bus={}", self.address()))
                .args(["--print-reply", "--dest=org.freedesktop.DBus", "/", "org.freedesktop.DBus.NameHasOwner"])
                .arg(format!("string:{name}"))
                .output()
                .unwrap();
            if String::from_utf8_lossy(&o.stdout).contains("boolean true") {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{name} did not appear on the bus");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's service on a bus, killed on drop.
pub struct Service {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Service {
    /// Start `henb-update service` for `conf` as if `bootname` were booted.
    pub fn start(bus: &Bus, conf: &Path, bootname: &str, env: &[(&str, &str)]) -> Self {
        let stderr = bus.dir().join(format!("service-{}.log", std::process::id()));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&stderr).unwrap();
        let mut c = Command::new(super::BIN);
        c.arg("--conf").arg(conf).args(["--override-boot-slot", bootname, "service"]);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()).env("TSS2_LOG", "all+none").stdout(Stdio::null()).stderr(log);
        // As dbus/henb-update.service runs it.
        c.env("MALLOC_ARENA_MAX", "2");
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        bus.wait_for("org.henb.Update1");
        Service { child, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        let _ = nix_kill(self.child.id());
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    Command::new("kill").arg(pid.to_string()).status().map(|_| ())
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gid of group `cwmp` (the CWMP client's group in the shipped bus policy), created
/// on this machine if it has none. dbus-daemon resolves the policy's group name when it
/// loads it, so the group must exist before [`Bus::start`].
pub fn cwmp_gid() -> u32 {
    let get = || {
        let o = Command::new("getent").args(["group", "cwmp"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).split(':').nth(2).and_then(|g| g.trim().parse().ok())
    };
    if let Some(g) = get() {
        return g;
    }
    let _ = Command::new("groupadd").args(["--system", "cwmp"]).status();
    get().expect("group cwmp (groupadd needs root)")
}

/// The unprivileged uid the tests' CWMP client runs as: `nobody` (dbus-daemon refuses
/// a uid without a passwd entry), with group `cwmp` added.
pub const CWMP_UID: u32 = 65534;

/// `program` run as the CWMP client: uid [`CWMP_UID`], member of group `cwmp` only.
pub fn as_cwmp(program: &str) -> Command {
    let gid = cwmp_gid();
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={CWMP_UID}")).arg(format!("--regid={CWMP_UID}")).arg(format!("--groups={gid}")).arg(program);
    c
}

/// `busctl call` on `bus` as the CWMP client: (success, stdout, stderr).
pub fn cwmp_call(
    bus: &Bus,
    dest: &str,
    path: &str,
    iface: &str,
    method: &str,
    args: &[&str],
) -> (bool, String, String) {
    let o = as_cwmp("busctl")
        .arg(format!("--address={}", bus.address()))
        .args(["call", dest, path, iface, method])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
