//! What the agent remembers about the measured-boot policy, in
//! `<data-directory>/measured-boot.json`: each slot's committed reference values (by
//! bootname) and which slots the policy in the TPM approves.
//!
//! The TPM index holds only a digest; this record is what the digest is made of. An
//! update of the policy is two-phase so a power cut at any point is recoverable: the new
//! branch list is recorded as `next-policy` first, then the index is written, then the
//! record says `policy`. On load, whichever of the two lists gives the digest the index
//! holds is the truth ([`Record::settle`]).
//!
//! Fields are only added within a format and unknown ones are ignored: an older agent (on
//! a slot the device fell back to) reads what a newer one wrote. What it cannot interpret
//! it cannot approve either: the digest it computes must equal the index's.

use crate::tpm::policy::{self, PolicyError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The format written by this version.
pub const FORMAT: u32 = 1;

/// Where a slot's values came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The signed package installed into the slot.
    Package,
    /// The PCRs as measured at provisioning (`policy init --from-pcrs`).
    Measured,
}

/// One slot's committed reference values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SlotValues {
    /// Expected final PCR values (SHA-256 bank), hex.
    pub pcrs: BTreeMap<u8, String>,
    /// Per-component digests (logged, not sealed to), hex.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// Where they came from.
    pub origin: Origin,
    /// The package version, when they came from one.
    #[serde(default)]
    pub version: Option<String>,
    /// The security version (anti-rollback) of what the slot holds; none counts as 0. A
    /// slot below the device's minimum never has a branch in the policy.
    #[serde(default)]
    pub security_version: Option<u32>,
}

impl SlotValues {
    /// From parsed values.
    pub fn new(
        pcrs: &[(u8, [u8; 32])],
        components: &BTreeMap<String, [u8; 32]>,
        origin: Origin,
        version: Option<String>,
        security_version: Option<u32>,
    ) -> Self {
        Self {
            pcrs: pcrs.iter().map(|(i, v)| (*i, hex::encode(v))).collect(),
            components: components.iter().map(|(k, v)| (k.clone(), hex::encode(v))).collect(),
            origin,
            version,
            security_version,
        }
    }

    /// The expected PCR values, ascending.
    pub fn expected(&self) -> Result<Vec<(u8, [u8; 32])>, RecordError> {
        self.pcrs
            .iter()
            .map(|(i, v)| {
                hex::decode(v)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .map(|d| (*i, d))
                    .ok_or_else(|| RecordError::Invalid(format!("PCR {i}: not a SHA-256 value")))
            })
            .collect()
    }

    /// This slot's policy branch (PolicyPCR over its expected values).
    pub fn branch(&self) -> Result<[u8; 32], RecordError> {
        Ok(policy::branch(&self.expected()?)?)
    }
}

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Record {
    /// File format version.
    pub format: u32,
    /// Committed reference values by bootname.
    pub slots: BTreeMap<String, SlotValues>,
    /// Bootnames whose branches the policy index approves (PolicyOR in this order).
    pub policy: Vec<String>,
    /// A policy being written: recorded before the index is, cleared after.
    #[serde(default)]
    pub next_policy: Option<Vec<String>>,
}

/// Record failures.
#[derive(Debug, Error)]
pub enum RecordError {
    /// I/O on the file.
    #[error("measured-boot record {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a record this version understands, or inconsistent.
    #[error("measured-boot record: {0}")]
    Invalid(String),
    /// The file is damaged (empty, cut short, not JSON, an unknown format, not a regular
    /// file). Fail closed: it guards sealed secrets. The recovery is named.
    #[error("measured-boot record {path}: {why}; sealed secrets cannot be checked against it: on the booted slot run 'henb-update policy init' to start again (then seal the secrets again)")]
    Damaged {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A branch list names a slot without values.
    #[error("measured-boot record: no reference values for slot {0}")]
    NoValues(String),
    /// The policy cannot be expressed.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl crate::fault::Fault for RecordError {
    fn kind(&self) -> &'static str {
        "measured-boot-record"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::InternalError
    }
}

/// `<dir>/measured-boot.json`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("measured-boot.json")
}

impl Record {
    /// Load (a missing file is an empty record).
    ///
    /// Errors: [`RecordError::Damaged`] for a file this version cannot use,
    /// [`RecordError::Io`] when it cannot be read.
    pub fn load(dir: &Path) -> Result<Self, RecordError> {
        let p = path(dir);
        let damaged = |why: String| RecordError::Damaged { path: p.clone(), why };
        let text = match crate::fsutil::read_state(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { format: FORMAT, ..Self::default() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput || e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(damaged("not a regular file".into()))
            }
            Err(source) => return Err(RecordError::Io { path: p, source }),
        };
        // serde_json names line and column, never the content.
        let r: Record = serde_json::from_slice(&text).map_err(|e| damaged(format!("not a record: {e}")))?;
        if r.format != FORMAT {
            return Err(damaged(format!("format {} is not {FORMAT}", r.format)));
        }
        Ok(r)
    }

    /// Move a damaged record aside (`measured-boot.json.damaged-<unix seconds>`) so that
    /// a fresh one can be started; its bytes are kept for the operator.
    ///
    /// Errors: [`RecordError::Io`].
    pub fn set_aside(dir: &Path) -> Result<PathBuf, RecordError> {
        let p = path(dir);
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let kept = (0..)
            .map(|n| dir.join(format!("measured-boot.json.damaged-{at}.{n}")))
            .find(|k| std::fs::symlink_metadata(k).is_err())
            .expect("an unused name");
        crate::fsutil::rename_durably(&p, &kept).map_err(|source| RecordError::Io { path: p, source })?;
        tracing::error!("damaged measured-boot record kept as {}", kept.display());
        Ok(kept)
    }

    /// Write atomically (temp, fsync, rename, fsync directory).
    pub fn commit(&self, dir: &Path) -> Result<(), RecordError> {
        let p = path(dir);
        crate::fsutil::private_dir(dir).map_err(|source| RecordError::Io { path: dir.into(), source })?;
        let text = serde_json::to_vec_pretty(self).expect("record serializes");
        crate::fsutil::write_atomic(&p, &text).map_err(|source| RecordError::Io { path: p, source })
    }

    /// The policy digest approving `slots` (one slot is OR(x, x): PolicyOR needs two;
    /// no slot is [`policy::NOTHING_APPROVED`], which no policy session can reach).
    pub fn digest(&self, slots: &[String]) -> Result<[u8; 32], RecordError> {
        if slots.is_empty() {
            return Ok(policy::NOTHING_APPROVED);
        }
        Ok(policy::policy_or(&self.branches(slots)?)?)
    }

    /// The PolicyOR branch list for `slots`.
    pub fn branches(&self, slots: &[String]) -> Result<Vec<[u8; 32]>, RecordError> {
        let mut b = slots
            .iter()
            .map(|s| self.slots.get(s).ok_or_else(|| RecordError::NoValues(s.clone()))?.branch())
            .collect::<Result<Vec<_>, _>>()?;
        if b.len() == 1 {
            b.push(b[0]);
        }
        Ok(b)
    }

    /// Decide which recorded list the index's digest `held` belongs to, after a power cut
    /// maybe: `next-policy` if it matches (the write happened), else `policy`. Returns
    /// whether the record changed; an index matching neither is an error.
    pub fn settle(&mut self, held: &[u8; 32]) -> Result<bool, RecordError> {
        if let Some(next) = self.next_policy.take() {
            if self.digest(&next).ok().as_ref() == Some(held) {
                self.policy = next;
                return Ok(true);
            }
            if self.digest(&self.policy)? == *held {
                return Ok(true);
            }
            return Err(RecordError::Invalid(
                "the policy index holds a digest that neither the recorded nor the pending policy gives".into(),
            ));
        }
        if self.digest(&self.policy)? != *held {
            return Err(RecordError::Invalid(format!(
                "the policy index does not hold the recorded policy (slots {})",
                self.policy.join(", ")
            )));
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(v: u8) -> SlotValues {
        SlotValues::new(&[(8, [v; 32]), (9, [0x99; 32])], &BTreeMap::new(), Origin::Package, None, None)
    }

    #[test]
    fn fields_a_later_version_adds_are_ignored() {
        let mut r = Record { format: FORMAT, ..Record::default() };
        r.slots.insert("A".into(), values(1));
        r.policy = vec!["A".into()];
        let mut j = serde_json::to_value(&r).unwrap();
        j["later"] = serde_json::json!(1);
        j["slots"]["A"]["later"] = serde_json::json!({"x": 2});
        let back: Record = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn settles_on_whichever_list_the_index_holds() {
        let mut r = Record { format: FORMAT, ..Record::default() };
        r.slots.insert("A".into(), values(1));
        r.slots.insert("B".into(), values(2));
        r.policy = vec!["A".into()];
        let old = r.digest(&r.policy).unwrap();
        let new = r.digest(&["A".into(), "B".into()]).unwrap();
        assert_eq!(old, policy::policy_or(&[values(1).branch().unwrap(); 2]).unwrap());
        // Power cut before the index write: the old list stands.
        r.next_policy = Some(vec!["A".into(), "B".into()]);
        assert!(r.clone().settle(&old).unwrap());
        let mut s = r.clone();
        s.settle(&old).unwrap();
        assert_eq!(s.policy, ["A"]);
        // After it: the new one.
        let mut s = r.clone();
        s.settle(&new).unwrap();
        assert_eq!(s.policy, ["A", "B"]);
        assert!(s.next_policy.is_none());
        // Neither: refused.
        assert!(r.clone().settle(&[0; 32]).is_err());
        assert!(s.clone().settle(&old).is_err());
        assert!(!s.settle(&new).unwrap());
        assert!(matches!(r.digest(&["C".into()]), Err(RecordError::NoValues(_))));
    }
}
