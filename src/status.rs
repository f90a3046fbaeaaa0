//! What the agent remembers across reboots, in `<data-directory>/status.json`: per slot
//! what was installed and its TR-181 FirmwareImage status, the last install's result with
//! its CWMP fault code, and the install waiting for confirmation after the reboot.
//!
//! Versioned (`format`), unknown fields refused, written atomically (temp, fsync, rename,
//! fsync directory). `tests/fixtures/status-v1.json` proves old files still load.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The format written by this version.
pub const FORMAT: u32 = 1;

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
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
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
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
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
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
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

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Status {
    /// File format version.
    pub format: u32,
    /// By slot name (`rootfs.1`).
    pub slots: BTreeMap<String, SlotStatus>,
    /// The last install's result.
    pub last_result: Option<InstallResult>,
    /// The install waiting for confirmation.
    pub pending: Option<Pending>,
}

impl Default for Status {
    fn default() -> Self {
        Self { format: FORMAT, slots: BTreeMap::new(), last_result: None, pending: None }
    }
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

/// `<dir>/status.json`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("status.json")
}

impl Status {
    /// Load (a missing file is an empty status).
    pub fn load(dir: &Path) -> Result<Self, StatusError> {
        let p = path(dir);
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(StatusError::Io { path: p, source }),
        };
        let s: Status =
            serde_json::from_slice(&text).map_err(|e| StatusError::Invalid { path: p.clone(), why: e.to_string() })?;
        if s.format > FORMAT {
            return Err(StatusError::Invalid {
                path: p,
                why: format!("format {} is newer than this agent's {FORMAT}", s.format),
            });
        }
        Ok(s)
    }

    /// Write atomically. Changes in memory are not persisted until this is called.
    pub fn commit(&self, dir: &Path) -> Result<(), StatusError> {
        let p = path(dir);
        std::fs::create_dir_all(dir).map_err(|source| StatusError::Io { path: dir.into(), source })?;
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
        assert!(serde_json::from_str::<Status>(
            r#"{"format":1,"slots":{},"last-result":null,"pending":null,"extra":1}"#
        )
        .is_err());
    }
}
