//! System configuration in RAUC's system.conf syntax. This step reads `[system]
//! compatible` and `[keyring]`; later steps add slots, bootloader and TPM.

use crate::package::keyfile::{self, KeyFile};
use crate::verify::{Policy, Purpose};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Default location.
pub const DEFAULT_PATH: &str = "/etc/henb-update/system.conf";

/// A configuration error, naming file, line and key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Could not read the file.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Syntax or value error.
    #[error("{path}:{line}: {what}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Line (0 when unknown).
        line: usize,
        /// What is wrong.
        what: String,
    },
}

/// The parts of system.conf this step uses.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[system] compatible`.
    pub compatible: Option<String>,
    /// `[keyring] path`.
    pub keyring: Option<PathBuf>,
    /// Signature policy from `[keyring]` and `[package]`.
    pub policy: Policy,
    /// `[tpm]`: how to reach the TPM, where the roots and the counter live.
    pub tpm: TpmSection,
    /// Keys this step does not know yet (reported, not fatal).
    pub unknown: Vec<String>,
}

/// The `[tpm]` section.
#[derive(Debug, Clone, Default)]
pub struct TpmSection {
    /// `tcti=` (default `device:/dev/tpmrm0`).
    pub tcti: Option<String>,
    /// `owner-auth-file=`: a file holding the owner hierarchy authorization.
    pub owner_auth_file: Option<PathBuf>,
    /// `root-index=` (first NV index of the root store).
    pub root_index: Option<u32>,
    /// `root-slots=`.
    pub root_slots: Option<u32>,
    /// `counter-index=` (anti-rollback counter; its base is the next index).
    pub counter_index: Option<u32>,
}

fn nv_index(v: &str) -> Option<u32> {
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok()?,
        None => v.parse().ok()?,
    };
    // Owner-range NV indices (TPM_HT_NV_INDEX = 0x01, below the platform/TCG ranges).
    (0x0100_0000..0x0140_0000).contains(&n).then_some(n)
}

impl Config {
    /// Load and parse a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parse text; `path` is for messages and relative keyring paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let kf =
            KeyFile::parse(text).map_err(|e| ConfigError::Invalid { path: path.into(), line: e.line, what: e.what })?;
        let mut c = Config::default();
        for g in &kf.groups {
            for e in &g.entries {
                let invalid = |what: String| ConfigError::Invalid { path: path.into(), line: e.line, what };
                match (g.name.as_str(), e.key.as_str()) {
                    ("system", "compatible") => c.compatible = Some(e.value.clone()),
                    ("keyring", "path") => {
                        let p = PathBuf::from(&e.value);
                        c.keyring = Some(if p.is_relative() { path.parent().unwrap_or(Path::new(".")).join(p) } else { p });
                    }
                    ("keyring", "check-purpose") => {
                        c.policy.purpose = Purpose::from_name(&e.value)
                            .ok_or_else(|| invalid(format!("[keyring] check-purpose={} (smimesign, codesign or any)", e.value)))?
                    }
                    ("keyring", "use-bundle-signing-time") => c.policy.use_signing_time = bool_value(&e.value).ok_or_else(|| invalid("[keyring] use-bundle-signing-time: true or false".into()))?,
                    ("keyring", "allowed-signer-cns") => c.policy.allowed_signer_cns = Some(keyfile::list(&e.value)),
                    ("package", "tr069-legacy-sha1") => c.policy.allow_sha1 = bool_value(&e.value).ok_or_else(|| invalid("[package] tr069-legacy-sha1: true or false".into()))?,
                    ("keyring", "directory" | "check-crl" | "allow-partial-chain") => {
                        return Err(invalid(format!("[keyring] {} is not supported (trust anchors come from 'path'; partial chains are never accepted)", e.key)))
                    }
                    ("tpm", "tcti") => c.tpm.tcti = Some(e.value.clone()),
                    ("tpm", "owner-auth-file") => c.tpm.owner_auth_file = Some(PathBuf::from(&e.value)),
                    ("tpm", "root-index") => {
                        c.tpm.root_index = Some(nv_index(&e.value).ok_or_else(|| invalid(format!("[tpm] root-index={}: an owner NV index 0x01000000..0x013fffff", e.value)))?)
                    }
                    ("tpm", "counter-index") => {
                        c.tpm.counter_index = Some(nv_index(&e.value).ok_or_else(|| invalid(format!("[tpm] counter-index={}: an owner NV index 0x01000000..0x013fffff", e.value)))?)
                    }
                    ("tpm", "root-slots") => {
                        c.tpm.root_slots = Some(e.value.parse().ok().filter(|n| (2..=64).contains(n)).ok_or_else(|| invalid(format!("[tpm] root-slots={}: 2 to 64", e.value)))?)
                    }
                    (g, k) => c.unknown.push(format!("{}:{}: [{g}] {k}", path.display(), e.line)),
                }
            }
        }
        Ok(c)
    }
}

fn bool_value(v: &str) -> Option<bool> {
    match v {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}
