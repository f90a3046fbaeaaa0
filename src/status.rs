//! What the agent remembers across reboots, in its status file (`[system] statusfile`,
//! default `<data-directory>/status.json`): per slot
//! what was installed and its TR-181 FirmwareImage status, the last install's result with
//! its CWMP fault code, and the install waiting for confirmation after the reboot.
//!
//! Format 2 adds the queue of TransferComplete results the CWMP client has not
//! acknowledged yet and the install in progress (so an interrupted one is reported).
//!
//! Versioned (`format`), written atomically (temp, fsync, rename, fsync directory).
//! `tests/fixtures/status-v1.json` proves old files still load. Fields are only ever added
//! within a format, and fields this version does not know are ignored: a device that
//! falls back to an older slot runs an older agent on what the newer one wrote.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The format written by this version.
pub const FORMAT: u32 = 2;

/// At most this many unacknowledged results are kept (the oldest go first).
pub const MAX_TRANSFERS: usize = 32;

/// TR-181 `Device.DeviceInfo.FirmwareImage.{i}.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FirmwareStatus {
    /// Nothing installed by the agent.
    NoImage,
    /// Booted.
    Active,
    /// Being written.
    Downloading,
    /// Being verified.
    Validating,
    /// Installed and verified, not booted.
    Available,
    /// The package could not be read.
    DownloadFailed,
    /// The package was refused.
    ValidationFailed,
    /// Writing the slot failed.
    InstallationFailed,
    /// The new slot did not come up (fallback).
    ActivationFailed,
}

/// Per slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SlotStatus {
    /// TR-181 status.
    pub status: FirmwareStatus,
    /// Version of the installed package.
    pub version: Option<String>,
    /// Its compatible string.
    pub compatible: Option<String>,
    /// SHA-256 of the image written (hex).
    pub sha256: Option<String>,
    /// Its security version.
    pub security_version: Option<u32>,
    /// When it was installed (Unix seconds).
    pub installed_at: Option<u64>,
}

/// The outcome of an install, in TransferComplete terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstallResult {
    /// The Download's CommandKey, if one was given.
    pub command_key: Option<String>,
    /// 0 on success, else the CWMP fault code.
    pub fault_code: u32,
    /// FaultString (empty on success).
    pub fault_string: String,
    /// Stable failure kind (empty on success).
    pub kind: String,
    /// Target slot.
    pub slot: Option<String>,
    /// Unix seconds.
    pub start_time: u64,
    /// Unix seconds.
    pub complete_time: u64,
}

/// An install that switched slots and waits for the new slot to be confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Pending {
    /// The Download's CommandKey.
    pub command_key: Option<String>,
    /// The slot that should come up.
    pub slot: String,
    /// Its bootname.
    pub bootname: String,
    /// Security version to commit once it is confirmed good.
    pub security_version: Option<u32>,
    /// Unix seconds.
    pub start_time: u64,
}

/// An install that has started and not finished: if the agent finds one, it was
/// interrupted (killed, power cut).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Job {
    /// The Download's CommandKey.
    pub command_key: Option<String>,
    /// Target slot.
    pub slot: Option<String>,
    /// Unix seconds.
    pub start_time: u64,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Status {
    /// File format version.
    pub format: u32,
    /// By slot name (`rootfs.1`).
    pub slots: BTreeMap<String, SlotStatus>,
    /// The last install's result.
    pub last_result: Option<InstallResult>,
    /// The install waiting for confirmation.
    pub pending: Option<Pending>,
    /// Results for the CWMP client's TransferComplete, oldest first, until acknowledged
    /// (only Downloads with a CommandKey).
    #[serde(default)]
    pub transfers: Vec<InstallResult>,
    /// The install in progress.
    #[serde(default)]
    pub job: Option<Job>,
    /// Set when a damaged file was replaced by a fresh one: what was known about the
    /// slots is gone, so a slot without an entry is not made primary until an install
    /// writes it.
    #[serde(default)]
    pub reset: Option<Reset>,
}

/// A damaged status file that was set aside and replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Reset {
    /// Unix seconds.
    pub at: u64,
    /// What was wrong with it.
    pub why: String,
    /// Where its bytes are kept (`status.json.damaged-<unix seconds>`), if they could be.
    pub kept_as: Option<PathBuf>,
}

/// At most this many damaged copies are kept (the oldest go first).
pub const MAX_DAMAGED_COPIES: usize = 3;

impl Default for Status {
    fn default() -> Self {
        Self {
            format: FORMAT,
            slots: BTreeMap::new(),
            last_result: None,
            pending: None,
            transfers: Vec::new(),
            job: None,
            reset: None,
        }
    }
}

/// What reading the file found.
enum Read {
    Missing,
    Good(Box<Status>),
    /// Not a status file this version can use: why.
    Damaged(String),
}

/// Status file failures (could not check: internal error).
#[derive(Debug, Error)]
pub enum StatusError {
    /// I/O.
    #[error("status file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a status file this version understands.
    #[error("status file {path}: {why}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl crate::fault::Fault for StatusError {
    fn kind(&self) -> &'static str {
        "status"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::InternalError
    }
}

/// `<dir>/status.json`, the default status file.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("status.json")
}

/// The directory of a status file and its name.
fn parts(file: &Path) -> (&Path, String) {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    (dir, file.file_name().map_or_else(|| "status.json".into(), |n| n.to_string_lossy().into_owned()))
}

/// The lock beside a status file: `status.lock` for `status.json`, else `<name>.lock`
/// (a `statusfile` ending in `.lock` is refused when the configuration loads).
fn lock_path(file: &Path) -> PathBuf {
    let (dir, name) = parts(file);
    dir.join(if name == "status.json" { "status.lock".to_string() } else { format!("{name}.lock") })
}

/// Keep only the newest [`MAX_DAMAGED_COPIES`] damaged copies (a device whose storage
/// keeps failing must not fill its data partition with them), never `keep`. Newest by
/// the time in the name (`status.json.damaged-<unix seconds>[.<n>]`): a renamed or linked
/// file keeps its old modification time.
fn prune_damaged(file: &Path, keep: Option<&Path>) {
    let (dir, base) = parts(file);
    let prefix = format!("{base}.damaged-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let order = |name: &str| -> Option<(u64, u64)> {
        let rest = name.strip_prefix(prefix.as_str())?;
        let (at, n) = rest.split_once('.').unwrap_or((rest, "0"));
        Some((at.parse().ok()?, n.parse().ok()?))
    };
    let mut copies: Vec<((u64, u64), PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((order(&e.file_name().to_string_lossy())?, e.path())))
        .collect();
    copies.sort();
    let excess = copies.len().saturating_sub(MAX_DAMAGED_COPIES);
    for (_, p) in copies.into_iter().take(excess).filter(|(_, p)| Some(p.as_path()) != keep) {
        let r = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
        if let Err(e) = r {
            tracing::warn!("{}: {e}", p.display());
        }
    }
}

impl Status {
    /// Load (a missing file is an empty status). A file that is not a status file this
    /// version can use (empty, cut short, not JSON, missing fields, an unknown format, a
    /// directory or a link in its place) is healed under the status lock: set aside as
    /// `status.json.damaged-<unix seconds>`, replaced by a fresh status that says so
    /// ([`Status::reset`], and a `status-reset` last result for the CWMP client), and
    /// that fresh status returned. Field damage never stops the next update.
    ///
    /// Errors: [`StatusError`] only when the data directory cannot be read or written.
    pub fn load(file: &Path) -> Result<Self, StatusError> {
        match Self::read(file)? {
            Read::Missing => Ok(Self::default()),
            Read::Good(s) => Ok(*s),
            Read::Damaged(_) => Self::update(file, |s| s.clone()),
        }
    }

    fn read(file: &Path) -> Result<Read, StatusError> {
        let (dir, _) = parts(file);
        let p = file.to_path_buf();
        if dir.exists() {
            crate::fsutil::private_dir(dir).map_err(|source| StatusError::Io { path: dir.into(), source })?;
        }
        // A file named by `[system] statusfile` that is a directory, or RAUC's own status
        // (a key file), is the configuration's mistake, not field damage: never set aside.
        let configured = p.file_name().is_some_and(|n| n != "status.json");
        if configured && std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            return Err(StatusError::Invalid {
                path: p,
                why: "is a directory: [system] statusfile names a file".into(),
            });
        }
        let text = match crate::fsutil::read_state(&p) {
            Ok(t) if configured && t.first() == Some(&b'[') => {
                return Err(StatusError::Invalid {
                    path: p,
                    why: "holds RAUC's status (a key file): [system] statusfile must name a file of henb-update's own"
                        .into(),
                })
            }
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::Missing),
            // Not a regular file (a directory, a FIFO), or a symbolic link (O_NOFOLLOW).
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput || e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Ok(Read::Damaged("not a regular file".into()))
            }
            Err(source) => return Err(StatusError::Io { path: p, source }),
        };
        let s: Status = match serde_json::from_slice(&text) {
            Ok(s) => s,
            // serde_json names line and column, never the content.
            Err(e) => return Ok(Read::Damaged(format!("not a status file: {e}"))),
        };
        if s.format == 0 || s.format > FORMAT {
            return Ok(Read::Damaged(format!("format {} (this agent reads 1 to {FORMAT})", s.format)));
        }
        Ok(Read::Good(Box::new(s)))
    }

    /// [`Status::load`] with the status lock held: heals a damaged file.
    fn load_locked(file: &Path) -> Result<Self, StatusError> {
        let (dir, name) = parts(file);
        let why = match Self::read(file)? {
            Read::Missing => return Ok(Self::default()),
            Read::Good(s) => return Ok(*s),
            Read::Damaged(why) => why,
        };
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let p = file.to_path_buf();
        let kept = (0..100)
            .map(|n| dir.join(if n == 0 { format!("{name}.damaged-{at}") } else { format!("{name}.damaged-{at}.{n}") }))
            .find(|k| std::fs::symlink_metadata(k).is_err());
        // The damaged bytes get a second name first and the fresh status replaces the
        // first atomically, so `status.json` is never missing (a missing file would read
        // as a new device, without the reset marker). A directory has to move first.
        let io = |source| StatusError::Io { path: p.clone(), source };
        let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        let kept_as = match kept {
            Some(k) if is_dir => {
                crate::fsutil::rename_durably(&p, &k).map_err(io)?;
                Some(k)
            }
            Some(k) => {
                // link(2) without AT_SYMLINK_FOLLOW: a symbolic link is kept as itself.
                std::fs::hard_link(&p, &k).map_err(io)?;
                Some(k)
            }
            None => None,
        };
        tracing::error!(
            "status file {}: {why}; kept as {}; starting from a fresh status",
            p.display(),
            kept_as.as_ref().map_or("(not kept)".into(), |k| k.display().to_string())
        );
        let mut s = Self::default();
        s.complete(InstallResult {
            command_key: None,
            fault_code: crate::fault::CwmpFault::InternalError.code(),
            fault_string: format!(
                "the status file was damaged ({why}) and was replaced: results not yet reported and the pending confirmation are lost; slots the agent has not written since are not activated"
            ),
            kind: "status-reset".into(),
            slot: None,
            start_time: at,
            complete_time: at,
        });
        s.reset = Some(Reset { at, why, kept_as: kept_as.clone() });
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            // rename(2) replaces the link itself, but say so plainly: never write through it.
            std::fs::remove_file(&p).map_err(io)?;
        }
        s.commit(file)?;
        prune_damaged(file, kept_as.as_deref());
        Ok(s)
    }

    /// Record `r` as the last result and, when it answers a Download (it has a
    /// CommandKey), queue it for TransferComplete.
    pub fn complete(&mut self, r: InstallResult) {
        if r.command_key.is_some() {
            self.transfers.push(r.clone());
            if self.transfers.len() > MAX_TRANSFERS {
                let dropped = self.transfers.remove(0);
                tracing::warn!("dropping the unacknowledged result for CommandKey {:?}", dropped.command_key);
            }
        }
        self.last_result = Some(r);
    }

    /// The client has sent TransferComplete for `command_key`: forget the oldest result
    /// with that key. False if there was none.
    pub fn acknowledge(&mut self, command_key: &str) -> bool {
        match self.transfers.iter().position(|t| t.command_key.as_deref() == Some(command_key)) {
            Some(i) => {
                self.transfers.remove(i);
                true
            }
            None => false,
        }
    }

    /// An install that was started and never finished (the agent was killed or the power
    /// went): report it as failed, once. True if there was one.
    pub fn settle_interrupted(&mut self, now: u64) -> bool {
        let Some(job) = self.job.take() else { return false };
        if let Some(s) = job.slot.as_ref().and_then(|s| self.slots.get_mut(s)) {
            if matches!(s.status, FirmwareStatus::Downloading | FirmwareStatus::Validating) {
                s.status = FirmwareStatus::InstallationFailed;
            }
        }
        self.complete(InstallResult {
            command_key: job.command_key,
            fault_code: crate::fault::CwmpFault::InternalError.code(),
            fault_string: "the install was interrupted (the agent stopped or the power failed); nothing was activated"
                .into(),
            kind: "interrupted".into(),
            slot: None,
            start_time: job.start_time,
            complete_time: now,
        });
        true
    }

    /// Read, change and write back under the lock beside the file (`status.lock`), so
    /// that concurrent writers (an install, the CWMP client acknowledging a result,
    /// `mark`) never lose each other's changes. The lock is held only for the
    /// read-modify-write.
    pub fn update<T>(file: &Path, f: impl FnOnce(&mut Status) -> T) -> Result<T, StatusError> {
        let (dir, _) = parts(file);
        crate::fsutil::private_dir(dir).map_err(|source| StatusError::Io { path: dir.into(), source })?;
        let lock_path = lock_path(file);
        let lock = crate::fsutil::open_lock(&lock_path)
            .map_err(|source| StatusError::Io { path: lock_path.clone(), source })?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| StatusError::Io { path: lock_path, source: e.into() })?;
        let mut s = Status::load_locked(file)?;
        let t = f(&mut s);
        s.commit(file)?;
        Ok(t)
    }

    /// Write atomically to `file`. Changes in memory are not persisted until this is
    /// called.
    pub fn commit(&self, file: &Path) -> Result<(), StatusError> {
        let (dir, _) = parts(file);
        let p = file.to_path_buf();
        crate::fsutil::private_dir(dir).map_err(|source| StatusError::Io { path: dir.into(), source })?;
        let text = serde_json::to_vec_pretty(self).expect("status serializes");
        crate::fsutil::write_atomic(&p, &text).map_err(|source| StatusError::Io { path: p, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_files_still_load() {
        let s: Status = serde_json::from_str(include_str!("../tests/fixtures/status-v1.json")).unwrap();
        assert_eq!(s.format, 1);
        assert_eq!(s.slots["rootfs.1"].status, FirmwareStatus::Available);
        assert_eq!(s.last_result.as_ref().unwrap().fault_code, 0);
        assert_eq!(s.pending.as_ref().unwrap().bootname, "B");
        assert!(s.transfers.is_empty() && s.job.is_none());
        // What a later agent adds (on a device that fell back to this one) is ignored.
        let s: Status = serde_json::from_str(
            r#"{"format":2,"slots":{"rootfs.0":{"status":"Active","later":[1]}},"last-result":null,"pending":null,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(s.slots["rootfs.0"].status, FirmwareStatus::Active);
    }

    fn result(key: Option<&str>, fault: u32) -> InstallResult {
        InstallResult {
            command_key: key.map(Into::into),
            fault_code: fault,
            fault_string: String::new(),
            kind: String::new(),
            slot: None,
            start_time: 1,
            complete_time: 2,
        }
    }

    #[test]
    fn transfers_are_queued_until_acknowledged_and_bounded() {
        let mut s = Status::default();
        s.complete(result(None, 0));
        assert!(s.transfers.is_empty(), "no CommandKey: no TransferComplete");
        assert!(s.last_result.is_some());
        for i in 0..MAX_TRANSFERS + 3 {
            s.complete(result(Some(&format!("k{i}")), 0));
        }
        assert_eq!(s.transfers.len(), MAX_TRANSFERS);
        assert_eq!(s.transfers[0].command_key.as_deref(), Some("k3"));
        assert!(s.acknowledge("k5"));
        assert!(!s.acknowledge("k5"));
        assert!(!s.acknowledge("k0"));
        // An interrupted job is reported once.
        s.job = Some(Job { command_key: Some("int".into()), slot: None, start_time: 5 });
        assert!(s.settle_interrupted(9));
        assert!(!s.settle_interrupted(9));
        let last = s.transfers.last().unwrap();
        assert_eq!(
            (last.command_key.as_deref(), last.fault_code, last.kind.as_str()),
            (Some("int"), 9002, "interrupted")
        );
    }
}
