//! RAUC bundle hooks: the one executable a bundle names in `[hooks] filename`, called
//! with the hook's name as its only argument (RAUC 1.8, docs/using.rst "Hooks",
//! docs/reference.rst "Hooks (Interface)", src/install.c `run_bundle_hook`,
//! src/update_handler.c `run_slot_hook`):
//!
//! | argument | when | environment |
//! |---|---|---|
//! | `install-check` | instead of the compatible check, before anything changes; exit 10 or more refuses the bundle with the last line the hook wrote to stderr | `RAUC_SYSTEM_COMPATIBLE`, `RAUC_SYSTEM_VARIANT`, `RAUC_MF_COMPATIBLE`, `RAUC_MF_VERSION`, `RAUC_MOUNT_PREFIX` |
//! | `slot-pre-install` | before an image is written into its slot (mountable slots mounted) | the slot's: `RAUC_SLOT_NAME`, `_STATE`, `_CLASS`, `_TYPE`, `_DEVICE`, `_BOOTNAME`, `_PARENT`, `_MOUNT_POINT`; the image's `RAUC_IMAGE_NAME`, `_SIZE`, `_DIGEST`, `_CLASS`; `RAUC_SYSTEM_*`, `RAUC_MOUNT_PREFIX`, `RAUC_BUNDLE_MOUNT_POINT`, `RAUC_BUNDLE_SPKI_HASHES` |
//! | `slot-install` | instead of the installer's write | the same |
//! | `slot-post-install` | after the image was written and verified (mounted) | the same |
//!
//! How this agent runs them, beyond RAUC:
//! - the executable (and, for `slot-install`, the image) is copied from the
//!   authenticated bundle into a fresh private directory (0700, the agent's) under
//!   `[system] mountprefix`: `RAUC_BUNDLE_MOUNT_POINT` names that directory, which holds
//!   those files only (the bundle itself is never mounted);
//! - a clean environment (the variables above and a fixed `PATH`), standard input
//!   `/dev/null`, no descriptor of the agent's (every one above 2 is closed), a process
//!   group of its own that is killed when the hook ends, when `[install] hook-timeout`
//!   passes, or when the agent dies;
//! - standard output and error go to the agent's log, line by line, at most
//!   [`crate::process::LOGGED`] bytes of them; the rest is read and dropped.

pub mod handler;

use crate::config::{Config, SlotConf};
use crate::fault::{CwmpFault, Fault};
use crate::package::{Authenticated, Image, Package, PackageError};
use crate::process::RunError;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Largest hook executable copied out of a bundle: 64 MiB.
pub const MAX_EXECUTABLE: u64 = 64 << 20;

/// Space left free in `mountprefix` beyond an install hook's image: 1 MiB.
const HEADROOM: u64 = 1 << 20;

/// Why a hook failed or refused.
#[derive(Debug, Error)]
pub enum HookError {
    /// `install-check` refused the bundle (exit 10 or more): 9001.
    #[error("bundle refused by its install-check hook: {0}")]
    Refused(String),
    /// The hook ran and failed (exit 1 to 9, or killed by a signal).
    #[error("{hook} hook failed: {why}")]
    Failed {
        /// Hook argument (`slot-post-install`).
        hook: String,
        /// Exit status and its last line of error output.
        why: String,
    },
    /// The hook was still running after `[install] hook-timeout`: killed.
    #[error("{hook} hook did not finish within {seconds} s ([install] hook-timeout): killed")]
    Timeout {
        /// Hook argument.
        hook: String,
        /// The timeout.
        seconds: u64,
    },
    /// The hook could not be started.
    #[error("{hook} hook could not be started: {source}")]
    Start {
        /// Hook argument.
        hook: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A file the hook needs could not be taken from the bundle (missing, too large, or
    /// its bytes failed verification).
    #[error("copying '{name}' out of the bundle for its hook: {source}")]
    Extract {
        /// File in the bundle.
        name: String,
        /// Cause.
        #[source]
        source: PackageError,
    },
    /// The private directory or a slot mount could not be set up.
    #[error("{0}")]
    Setup(String),
    /// `[handlers] pre-install` exited other than 0: the device refuses the package.
    #[error("refused by the pre-install handler: {0}")]
    HandlerRefused(String),
    /// A system handler (`[handlers] system-info`, `post-install`) failed, could not be
    /// started or timed out.
    #[error("{0}")]
    Handler(RunError),
    /// The package file was opened for writing after it was authenticated: nothing of it
    /// is run.
    #[error("the package file was opened for writing while it was being installed: its hooks are not run")]
    PackageModified,
}

impl From<RunError> for HookError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Start { what, source } => Self::Start { hook: what, source },
            RunError::Timeout { what, seconds } => Self::Timeout { hook: what, seconds },
            RunError::Failed { what, why } => Self::Failed { hook: what, why },
        }
    }
}

impl Fault for HookError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Refused(_) => "hook-refused",
            Self::HandlerRefused(_) => "handler-refused",
            Self::Handler(RunError::Timeout { .. }) => "handler-timeout",
            Self::Handler(_) => "handler-failed",
            Self::Timeout { .. } => "hook-timeout",
            Self::Extract { source, .. } => source.kind(),
            Self::PackageModified => "package-modified",
            _ => "hook-failed",
        }
    }
    /// A refusal by install-check is the bundle's decision that it does not apply here
    /// (9001, as a compatible mismatch); a file whose bytes fail verification is the
    /// package's fault; a hook that fails is an installation failure (9002).
    fn fault(&self) -> CwmpFault {
        match self {
            Self::Refused(_) | Self::HandlerRefused(_) => CwmpFault::RequestDenied,
            Self::Extract { source, .. } => source.fault(),
            Self::PackageModified => CwmpFault::UnableToAccessFile,
            _ => CwmpFault::InternalError,
        }
    }
}

/// Which slot hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotHook {
    /// `slot-pre-install`.
    PreInstall,
    /// `slot-install`.
    Install,
    /// `slot-post-install`.
    PostInstall,
}

impl SlotHook {
    /// The argument the executable gets.
    pub fn arg(self) -> &'static str {
        match self {
            Self::PreInstall => "slot-pre-install",
            Self::Install => "slot-install",
            Self::PostInstall => "slot-post-install",
        }
    }
}

/// A bundle's hooks, ready to run: the executable copied out of the bundle into a
/// private directory, and what every hook's environment holds.
pub struct Hooks {
    /// Removed on drop, unless a slot is still mounted in it.
    dir: Option<tempfile::TempDir>,
    exe: PathBuf,
    timeout: Duration,
    mount_prefix: PathBuf,
    /// `RAUC_SYSTEM_COMPATIBLE`, `RAUC_SYSTEM_VARIANT`, then the system-info handler's
    /// variables.
    system: Vec<(String, String)>,
    /// `RAUC_BUNDLE_SPKI_HASHES`: the validated path of the first trusted signer.
    spki: String,
}

impl Drop for Hooks {
    /// The private directory goes, unless a slot mount in it could not be undone:
    /// removing it would then delete the slot's files.
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(dir.path()).map(|m| m.dev()).ok();
        let mounted = std::fs::read_dir(dir.path().join("slots"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::metadata(e.path()).map(|m| Some(m.dev()) != dev).unwrap_or(true));
        if mounted {
            let kept = dir.keep();
            tracing::warn!("{}: a slot is still mounted in it; left in place", kept.display());
        }
    }
}

impl Hooks {
    /// The hooks of `a`, if its manifest names a hook executable: a private directory
    /// under `[system] mountprefix` and the executable copied into it from the
    /// authenticated bundle.
    ///
    /// Errors: [`HookError::Setup`] (the directory), [`HookError::Extract`] (the file).
    pub fn prepare(a: &Authenticated, conf: &Config, variant: Option<&str>) -> Result<Option<Self>, HookError> {
        if !a.package().has_code() {
            return Ok(None);
        }
        let Some(name) = a.package().hooks.as_ref().and_then(|h| h.filename.clone()) else { return Ok(None) };
        let setup = |what: &str, e: io::Error| HookError::Setup(format!("{what}: {e}"));
        let prefix = &conf.mount_prefix;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(prefix)
            .map_err(|e| setup(&format!("creating {}", prefix.display()), e))?;
        private(prefix)?;
        // mkdtemp: a new directory of ours, 0700; nothing in it can be replaced by others.
        // bundle/: what the hooks see of the bundle; slots/: where slots are mounted.
        let dir = tempfile::Builder::new()
            .prefix("bundle-")
            .tempdir_in(prefix)
            .map_err(|e| setup(&format!("creating a directory in {}", prefix.display()), e))?;
        for sub in ["bundle", "slots"] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir.path().join(sub))
                .map_err(|e| setup(&format!("creating {}", dir.path().join(sub).display()), e))?;
        }
        let hooks = Self {
            exe: dir.path().join("bundle").join(&name),
            dir: Some(dir),
            timeout: conf.hook_timeout,
            mount_prefix: prefix.clone(),
            system: {
                let mut env = vec![
                    ("RAUC_SYSTEM_COMPATIBLE".into(), conf.compatible.clone().unwrap_or_default()),
                    ("RAUC_SYSTEM_VARIANT".into(), variant.unwrap_or_default().to_string()),
                ];
                handler::extend_system_info(&mut env, conf);
                env
            },
            spki: a.package().signers.iter().find(|s| s.trusted()).map(|s| s.spki_sha256.join(" ")).unwrap_or_default(),
        };
        let mut f =
            hooks.create(&name).map_err(|e| HookError::Extract { name: name.clone(), source: PackageError::Io(e) })?;
        let fail = |source| HookError::Extract { name: name.clone(), source };
        a.copy_file(&name, &mut f, MAX_EXECUTABLE).map_err(fail)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o500)).map_err(|e| fail(PackageError::Io(e)))?;
        Ok(Some(hooks))
    }

    /// The private directory.
    fn dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new("/nonexistent"))
    }

    /// What the hooks see of the bundle (`RAUC_BUNDLE_MOUNT_POINT`): the executable, and
    /// an install hook's image while it runs.
    pub fn bundle_dir(&self) -> PathBuf {
        self.dir().join("bundle")
    }

    /// A new file `name` (a relative path checked by the manifest parser) under
    /// [`Hooks::bundle_dir`]: 0600, never an existing file or a link.
    ///
    /// Errors: it exists (an image named as the executable), or I/O.
    pub fn create(&self, name: &str) -> io::Result<std::fs::File> {
        let path = self.bundle_dir().join(name);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
    }

    /// Where an image's copy goes for its install hook (`RAUC_IMAGE_NAME`: the bundle's
    /// file name under [`Hooks::bundle_dir`], as in RAUC's bundle mount), after checking
    /// that `mountprefix` has room for it.
    ///
    /// Errors: [`HookError::Setup`] when it has not.
    pub fn image_path(&self, image: &Image) -> Result<PathBuf, HookError> {
        let st = nix::sys::statvfs::statvfs(self.dir())
            .map_err(|e| HookError::Setup(format!("{}: {e}", self.dir().display())))?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free < image.size.saturating_add(HEADROOM) {
            return Err(HookError::Setup(format!(
                "the install hook's image '{}' needs {} bytes, {} has {free} free: set [system] mountprefix \
                 to a directory on a disk with room",
                image.filename,
                image.size,
                self.mount_prefix.display()
            )));
        }
        Ok(self.bundle_dir().join(&image.filename))
    }

    /// An empty directory of ours to mount `slot` on for its hook.
    pub fn mount_point(&self, slot: &SlotConf) -> Result<PathBuf, HookError> {
        let p = self.dir().join("slots").join(&slot.name);
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => Ok(p),
            // Made for this slot's earlier hook, and empty again (unmounted).
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists
                    && std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none()) =>
            {
                Ok(p)
            }
            Err(e) => Err(HookError::Setup(format!("creating {}: {e}", p.display()))),
        }
    }

    /// Run `install-check`: Ok when it exits 0.
    ///
    /// Errors: [`HookError::Refused`] (exit 10 or more, with its last line of error
    /// output, or the exit code), or a failure.
    pub fn install_check(&self, pkg: &Package) -> Result<(), HookError> {
        // RAUC's install-hook interface: no bundle mount point.
        let mut env = self.system.clone();
        env.push(("RAUC_MF_COMPATIBLE".into(), pkg.compatible.clone()));
        env.push(("RAUC_MF_VERSION".into(), pkg.version.clone().unwrap_or_default()));
        env.push(("RAUC_MOUNT_PREFIX".into(), self.mount_prefix.display().to_string()));
        run(&self.exe, "install-check", &env, self.timeout, true)
    }

    /// Run a slot hook for `image` going into `slot` (`parent`: the slot's parent, whose
    /// bootname a child slot reports), with the slot mounted at `mount` if it is.
    ///
    /// `image_file`: for `slot-install`, where the image was copied to.
    ///
    /// Errors: [`HookError`].
    pub fn slot(
        &self,
        which: SlotHook,
        slot: &SlotConf,
        parent: Option<&SlotConf>,
        image: &Image,
        image_file: Option<&Path>,
        mount: Option<&Path>,
    ) -> Result<(), HookError> {
        let mut env = self.common();
        let bootname = parent.unwrap_or(slot).bootname.clone().unwrap_or_default();
        // As RAUC: the image's path in the bundle's directory (present for slot-install).
        let image_name = match (image_file, image.filename.is_empty()) {
            (Some(f), _) => f.display().to_string(),
            (None, true) => String::new(),
            (None, false) => self.bundle_dir().join(&image.filename).display().to_string(),
        };
        env.extend([
            ("RAUC_SLOT_NAME".into(), slot.name.clone()),
            ("RAUC_SLOT_STATE".into(), "inactive".into()),
            ("RAUC_SLOT_CLASS".into(), slot.class.clone()),
            ("RAUC_SLOT_TYPE".into(), slot.kind.name().to_string()),
            ("RAUC_SLOT_DEVICE".into(), slot.device.display().to_string()),
            ("RAUC_SLOT_BOOTNAME".into(), bootname),
            ("RAUC_SLOT_PARENT".into(), slot.parent.clone().unwrap_or_default()),
            ("RAUC_IMAGE_NAME".into(), image_name),
            ("RAUC_IMAGE_SIZE".into(), image.size.to_string()),
            ("RAUC_IMAGE_DIGEST".into(), hex::encode(&image.digest)),
            ("RAUC_IMAGE_CLASS".into(), image.slot_class.clone()),
        ]);
        if let Some(m) = mount {
            env.push(("RAUC_SLOT_MOUNT_POINT".into(), m.display().to_string()));
        }
        if let Some(r) = slot.region.filter(|_| slot.kind.has_region()) {
            // RAUC's RAUC_BOOT_PARTITION_* name the half being written (read from the disk,
            // as the writer reads it; an unreadable one leaves them out, and the write
            // then fails on it).
            let place = crate::slot::region::place(slot, image.size, (image.digest_algorithm, image.digest.clone()));
            env.extend(crate::slot::region::hook_env(&r, place.as_ref().ok()));
        }
        run(&self.exe, which.arg(), &env, self.timeout, false)
    }

    fn common(&self) -> Vec<(String, String)> {
        let mut env = self.system.clone();
        env.push(("RAUC_MOUNT_PREFIX".into(), self.mount_prefix.display().to_string()));
        env.push(("RAUC_BUNDLE_MOUNT_POINT".into(), self.bundle_dir().display().to_string()));
        env.push(("RAUC_BUNDLE_SPKI_HASHES".into(), self.spki.clone()));
        env
    }
}

/// Run `exe arg` with exactly `env` (and `PATH`), as the module describes. With
/// `check`, exit 10 or more is [`HookError::Refused`] (install-check).
///
/// Errors: [`HookError`].
pub fn run(exe: &Path, arg: &str, env: &[(String, String)], timeout: Duration, check: bool) -> Result<(), HookError> {
    tracing::info!("running the bundle's hook: {arg}");
    let ended = crate::process::exec(exe, &[arg], env, timeout, arg, false)?;
    match ended.status.code() {
        Some(c) if check && c >= 10 => {
            Err(HookError::Refused(ended.message.unwrap_or_else(|| format!("exit code {c}"))))
        }
        _ => Ok(ended.success(arg).map(drop)?),
    }
}

/// `mountprefix` must be ours alone: a directory (not a link), owned by the agent's
/// user, writable by nobody else; otherwise another user could replace what a hook runs
/// between its copy and its start.
fn private(dir: &Path) -> Result<(), HookError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).map_err(|e| HookError::Setup(format!("{}: {e}", dir.display())))?;
    if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
        return Err(HookError::Setup(format!(
            "[system] mountprefix {} must be a directory of the agent's user that nobody else can write",
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn script(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("hook");
        std::fs::write(&p, format!("#!/bin/sh\n{text}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_hook_gets_no_descriptor_and_no_variable_of_the_agent() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        // A descriptor without close-on-exec, as a C library might leave one.
        let f = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: descriptor 200 is not in use by this test binary.
        let leaked = unsafe { nix::unistd::dup2_raw(&f, 200) }.unwrap();
        let hook = script(
            d.path(),
            &format!("echo \"$HOME:$RAUC_X\" > {o}; exec ls /proc/self/fd >> {o}\n", o = out.display()),
        );
        let env = [("RAUC_X".to_string(), "given".to_string())];
        run(&hook, "install-check", &env, Duration::from_secs(30), true).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(":given"), "HOME leaked or RAUC_X missing");
        let fds: Vec<i32> = lines.map(|l| l.parse().unwrap()).collect();
        assert!(!fds.contains(&200), "{fds:?}");
        assert!(f.as_raw_fd() >= 0);
        drop(leaked);
    }

    #[test]
    fn exit_codes_and_the_last_line_of_error_output() {
        let d = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(30);
        let hook = script(d.path(), "printf 'first\\nsecond' >&2; exit \"$1\"\n");
        // install-check: 10 and above refuse with the last line (no newline needed).
        let e = run(&hook, "10", &[], t, true).unwrap_err();
        assert!(matches!(&e, HookError::Refused(m) if m == "second"), "{e}");
        assert_eq!(e.fault(), CwmpFault::RequestDenied);
        // Below 10, or any code for a slot hook: failed, 9002.
        let e = run(&hook, "3", &[], t, true).unwrap_err();
        assert_eq!((e.kind(), e.fault()), ("hook-failed", CwmpFault::InternalError));
        assert!(e.to_string().contains("exit code 3: second"), "{e}");
        let e = run(&hook, "12", &[], t, false).unwrap_err();
        assert!(matches!(e, HookError::Failed { .. }), "{e}");
        assert!(run(&hook, "0", &[], t, true).is_ok());
        let e = run(&d.path().join("missing"), "x", &[], t, false).unwrap_err();
        assert!(matches!(e, HookError::Start { .. }), "{e}");
        // Without "#!": run by /bin/sh, as rauc (GLib) does.
        let bare = d.path().join("bare");
        std::fs::write(&bare, "exit \"$1\"\n").unwrap();
        std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(run(&bare, "0", &[], t, true).is_ok());
        assert!(matches!(run(&bare, "11", &[], t, true), Err(HookError::Refused(_))));
    }
}
