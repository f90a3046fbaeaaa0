//! Measured boot (R5): the reference values a signed package carries become the TPM
//! policy that sealed device secrets answer to.
//!
//! The pattern is systemd-pcrlock's: a policy NV index holds the approved policy digest,
//! PolicyOR over one PolicyPCR branch per approved slot. Secrets are sealed once to
//! PolicyAuthorizeNV(index), so rewriting the index re-targets them without re-sealing.
//! Before a switch the index approves OR(booted, target); after the new slot is confirmed,
//! OR(new, new); after a fallback, OR(old, old).
//!
//! [`reference`] and the policy digests ([`crate::tpm::policy`]) are pure; [`record`] is
//! the file the digest is made from; this module puts them together with the TPM
//! ([`MeasuredBoot`]).

pub mod eventlog;
pub mod grub;
pub mod record;
pub mod reference;

use crate::tpm::policy;

use crate::fault::{CwmpFault, Fault};
use crate::tpm::owner::TpmOwner;
use crate::tpm::{NvKind, Tpm, TpmError};
use record::{Record, RecordError, SlotValues};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub use crate::config::DEFAULT_POLICY_INDEX;

/// A PCR that does not hold its reference value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrMismatch {
    /// PCR index.
    pub pcr: u8,
    /// The committed reference value.
    pub expected: [u8; 32],
    /// What the TPM holds.
    pub actual: [u8; 32],
}

impl std::fmt::Display for PcrMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PCR {}: expected {}, measured {}", self.pcr, hex::encode(self.expected), hex::encode(self.actual))
    }
}

/// Measured-boot failures.
#[derive(Debug, Error)]
pub enum MeasuredBootError {
    /// The TPM failed or is unreachable.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// The record failed or disagrees with the index.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// `policy init` has not run.
    #[error("measured boot is not initialized (policy index {0:#010x} is empty): run 'henb-update policy init'")]
    NotInitialized(u32),
    /// No reference values for a slot.
    #[error("no reference values are committed for slot {0}")]
    NoValues(String),
    /// The index exists with attributes other than the policy index's.
    #[error("NV index {0:#010x} is not a policy index (unexpected attributes or size): refusing to use it")]
    NotPolicyIndex(u32),
    /// The booted slot does not measure as its reference values.
    #[error("slot {slot} does not measure as its reference values: {}", .mismatches.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; "))]
    Mismatch {
        /// Bootname.
        slot: String,
        /// Each PCR that differs.
        mismatches: Vec<PcrMismatch>,
    },
    /// A sealed secret's file.
    #[error("secret {name}: {why}")]
    Secret {
        /// Secret name.
        name: String,
        /// What failed.
        why: String,
    },
}

impl Fault for MeasuredBootError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Tpm(e) => e.kind(),
            Self::Record(_) => "measured-boot-record",
            Self::NotInitialized(_) => "measured-boot-not-initialized",
            Self::NoValues(_) => "no-reference-values",
            Self::NotPolicyIndex(_) => "measured-boot-index",
            Self::Mismatch { .. } => "measurement-mismatch",
            Self::Secret { .. } => "secret",
        }
    }
    fn fault(&self) -> CwmpFault {
        match self {
            // The slot was checked and does not measure as its values: refused.
            Self::Mismatch { .. } => CwmpFault::RequestDenied,
            _ => CwmpFault::InternalError,
        }
    }
}

/// The measured-boot policy of one device: where the index is, where the record is.
#[derive(Debug, Clone)]
pub struct MeasuredBoot {
    /// Policy NV index.
    pub index: u32,
    /// Data directory (record and sealed secrets).
    pub dir: PathBuf,
    /// Packages must carry reference values; slots must have them.
    pub required: bool,
    /// The anti-rollback counter, when the device enforces it: a slot whose security
    /// version is below its minimum never gets a branch.
    pub counter: Option<crate::rollback::Counter>,
}

/// Valid secret names: what can safely be a file name.
fn secret_path(dir: &Path, name: &str) -> Result<PathBuf, MeasuredBootError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(MeasuredBootError::Secret {
            name: name.into(),
            why: "a name is 1 to 64 of A-Z a-z 0-9 . _ - and does not start with '.'".into(),
        });
    }
    Ok(dir.join("secrets").join(format!("{name}.sealed")))
}

const SEALED_MAGIC: &[u8; 8] = b"HENBSEAL";

impl MeasuredBoot {
    /// From the configuration: `None` when measured boot is not configured.
    pub fn from_config(conf: &crate::config::Config) -> Option<Self> {
        conf.measured_boot.as_ref().map(|m| Self {
            index: m.policy_index,
            dir: conf.data_directory.clone(),
            required: m.required,
            counter: crate::rollback::Counter::from_config(conf),
        })
    }

    /// The anti-rollback minimum (0 when the device does not enforce one, or its counter
    /// is not provisioned yet).
    pub fn minimum(&self, tpm: &mut Tpm) -> Result<u64, MeasuredBootError> {
        match self.counter.map(|c| c.minimum(tpm)) {
            // Not defined is an error, not 0 (see install::confirm::Booted::minimum).
            None => Ok(0),
            Some(r) => Ok(r?),
        }
    }

    /// The digest the index holds; `None` when it is undefined or never written.
    fn held(&self, tpm: &mut Tpm) -> Result<Option<[u8; 32]>, MeasuredBootError> {
        match tpm.nv_info(self.index)? {
            None => Ok(None),
            Some(i) if i.size != 34 || i.counter || i.write_locked => {
                Err(MeasuredBootError::NotPolicyIndex(self.index))
            }
            Some(i) if !i.written => Ok(None),
            Some(_) => {
                let v = tpm.nv_read(self.index)?;
                policy::from_tpmt_ha(&v).map(Some).ok_or(MeasuredBootError::NotPolicyIndex(self.index))
            }
        }
    }

    /// The record, settled against the index (a policy write cut short by a power loss is
    /// resolved here). `Ok(None)` when measured boot was never initialized.
    pub fn load(&self, tpm: &mut Tpm) -> Result<Option<Record>, MeasuredBootError> {
        let held = self.held(tpm)?;
        let mut rec = match Record::load(&self.dir) {
            // Never initialized (no index): nothing is sealed to what the record said, so
            // a damaged one is set aside and measured boot starts from nothing.
            Err(RecordError::Damaged { .. }) if held.is_none() => {
                Record::set_aside(&self.dir)?;
                return Ok(None);
            }
            r => r?,
        };
        let Some(held) = held else {
            return if rec.policy.is_empty() {
                Ok(None)
            } else {
                Err(RecordError::Invalid(format!("the record has a policy but index {:#010x} is empty", self.index))
                    .into())
            };
        };
        if rec.policy.is_empty()
            && rec.next_policy.is_none()
            && (rec.slots.is_empty() || held != policy::NOTHING_APPROVED)
        {
            return Err(RecordError::Invalid(format!(
                "index {:#010x} holds a policy but there is no record of it (run 'henb-update policy init')",
                self.index
            ))
            .into());
        }
        if rec.settle(&held)? {
            rec.commit(&self.dir)?;
        }
        Ok(Some(rec))
    }

    fn load_initialized(&self, tpm: &mut Tpm) -> Result<Record, MeasuredBootError> {
        self.load(tpm)?.ok_or(MeasuredBootError::NotInitialized(self.index))
    }

    /// Approve exactly `slots`: record the intent, write the index (one atomic 34-byte
    /// write), record the result.
    fn write_policy(&self, tpm: &mut Tpm, rec: &mut Record, slots: Vec<String>) -> Result<(), MeasuredBootError> {
        // Anti-rollback is a property of slots: one below the minimum is never approved,
        // whoever asks (mark, a fallback, an install from it).
        let minimum = self.minimum(tpm)?;
        let (slots, below): (Vec<String>, Vec<String>) = slots
            .into_iter()
            .partition(|s| rec.slots.get(s).is_none_or(|v| u64::from(v.security_version.unwrap_or(0)) >= minimum));
        for s in &below {
            tracing::warn!("slot {s} is below the anti-rollback minimum {minimum}: it gets no policy branch");
        }
        if rec.policy == slots && rec.next_policy.is_none() && self.held(tpm)?.is_some() {
            return Ok(());
        }
        let digest = rec.digest(&slots)?;
        rec.next_policy = Some(slots.clone());
        rec.commit(&self.dir)?;
        crate::failpoint::hit("policy.recorded");
        if tpm.nv_info(self.index)?.is_none() {
            tpm.nv_define(self.index, 34, NvKind::Policy, "measured-boot policy")?;
        }
        tpm.nv_write(self.index, &policy::tpmt_ha(&digest))?;
        crate::failpoint::hit("policy.written");
        rec.policy = slots;
        rec.next_policy = None;
        rec.commit(&self.dir)?;
        tracing::info!("measured-boot policy now approves slots {}", rec.policy.join(", "));
        Ok(())
    }

    /// Write the approved set again, so that slots now below the anti-rollback minimum
    /// leave the policy (after the minimum rose). Nothing to do when measured boot was
    /// never initialized or no approved slot is below the minimum.
    ///
    /// Errors: [`MeasuredBootError`] from the TPM or the record.
    pub fn reapply(&self, tpm: &mut Tpm) -> Result<(), MeasuredBootError> {
        let Some(mut rec) = self.load(tpm)? else { return Ok(()) };
        let approved = rec.policy.clone();
        self.write_policy(tpm, &mut rec, approved)
    }

    /// Provisioning: commit `values` for `bootname` (the booted slot) and approve only it.
    /// Returns the policy digest.
    pub fn init(&self, tpm: &mut Tpm, bootname: &str, values: SlotValues) -> Result<[u8; 32], MeasuredBootError> {
        let mut rec = match Record::load(&self.dir) {
            // The recovery its error names: start again from the booted slot.
            Err(RecordError::Damaged { .. }) => {
                Record::set_aside(&self.dir)?;
                Record::load(&self.dir)?
            }
            r => r?,
        };
        // Whatever was approved before is replaced; other slots' values are kept for
        // information but no longer approved.
        rec.next_policy = None;
        rec.policy.clear();
        rec.slots.insert(bootname.to_string(), values);
        self.write_policy(tpm, &mut rec, vec![bootname.to_string()])?;
        Ok(rec.digest(&rec.policy)?)
    }

    /// Approve exactly `slots` (which must have committed values).
    pub fn approve_only(&self, tpm: &mut Tpm, slots: &[&str]) -> Result<(), MeasuredBootError> {
        let mut rec = self.load_initialized(tpm)?;
        if let Some(s) = slots.iter().find(|s| !rec.slots.contains_key(**s)) {
            return Err(MeasuredBootError::NoValues(s.to_string()));
        }
        self.write_policy(tpm, &mut rec, slots.iter().map(|s| s.to_string()).collect())
    }

    /// Before an install writes `target`: take it out of the approved policy, and make
    /// sure the booted slot can be approved afterwards. `Ok(false)`: measured boot is
    /// not initialized and not required, nothing to do.
    pub fn prepare(&self, tpm: &mut Tpm, booted: &str, target: &str) -> Result<bool, MeasuredBootError> {
        let Some(rec) = self.load(tpm)? else {
            return if self.required { Err(MeasuredBootError::NotInitialized(self.index)) } else { Ok(false) };
        };
        if !rec.slots.contains_key(booted) {
            return Err(MeasuredBootError::NoValues(booted.into()));
        }
        let mut rec = rec;
        if rec.policy.iter().any(|s| s == target) || !rec.policy.iter().any(|s| s == booted) {
            self.write_policy(tpm, &mut rec, vec![booted.to_string()])?;
        }
        Ok(true)
    }

    /// After `target` is written and verified: commit its values and approve
    /// OR(booted, target). The bootloader may be switched only after this returns.
    pub fn approve(
        &self,
        tpm: &mut Tpm,
        booted: &str,
        target: &str,
        values: SlotValues,
    ) -> Result<(), MeasuredBootError> {
        let mut rec = self.load_initialized(tpm)?;
        if rec.policy.iter().any(|s| s == target) {
            // Never change the values of a slot the index approves (prepare took it out).
            self.write_policy(tpm, &mut rec, vec![booted.to_string()])?;
        }
        rec.slots.insert(target.to_string(), values);
        rec.commit(&self.dir)?;
        self.write_policy(tpm, &mut rec, vec![booted.to_string(), target.to_string()])
    }

    /// Compare the TPM's PCRs with `bootname`'s committed values. `Ok(None)`: no values
    /// committed for it (and not required).
    pub fn check(&self, tpm: &mut Tpm, bootname: &str) -> Result<Option<Vec<PcrMismatch>>, MeasuredBootError> {
        let rec = match self.load(tpm)? {
            Some(r) => r,
            None if self.required => return Err(MeasuredBootError::NotInitialized(self.index)),
            None => return Ok(None),
        };
        let Some(values) = rec.slots.get(bootname) else {
            return if self.required { Err(MeasuredBootError::NoValues(bootname.into())) } else { Ok(None) };
        };
        let expected = values.expected()?;
        let indices: Vec<u8> = expected.iter().map(|(i, _)| *i).collect();
        let actual = tpm.pcr_read(&indices)?;
        Ok(Some(
            expected
                .iter()
                .zip(actual)
                .filter(|((_, e), (_, a))| e != a)
                .map(|((i, e), (_, a))| PcrMismatch { pcr: *i, expected: *e, actual: a })
                .collect(),
        ))
    }

    /// Seal `data` (at most 128 bytes) as secret `name`, to PolicyAuthorizeNV(index).
    pub fn seal(&self, tpm: &mut Tpm, name: &str, data: &[u8]) -> Result<(), MeasuredBootError> {
        let path = secret_path(&self.dir, name)?;
        self.load_initialized(tpm)?;
        let tpm_name = tpm.nv_name(self.index)?;
        let expected = policy::nv_name(self.index, policy::nv_attr::POLICY_INDEX | policy::nv_attr::WRITTEN, 34);
        if tpm_name != expected {
            return Err(MeasuredBootError::NotPolicyIndex(self.index));
        }
        let (public, private) = tpm.seal(data, policy::policy_authorize_nv(&tpm_name))?;
        let mut file = SEALED_MAGIC.to_vec();
        for part in [&public, &private] {
            file.extend((part.len() as u16).to_be_bytes());
            file.extend(part.iter());
        }
        let secret = |why: String| MeasuredBootError::Secret { name: name.into(), why };
        std::fs::create_dir_all(path.parent().expect("secrets dir")).map_err(|e| secret(e.to_string()))?;
        crate::fsutil::write_atomic(&path, &file).map_err(|e| secret(e.to_string()))
    }

    /// Unseal secret `name`: works only while the PCRs match an approved slot's values.
    pub fn unseal(&self, tpm: &mut Tpm, name: &str) -> Result<Vec<u8>, MeasuredBootError> {
        let path = secret_path(&self.dir, name)?;
        let secret = |why: String| MeasuredBootError::Secret { name: name.into(), why };
        let file = std::fs::read(&path).map_err(|e| secret(format!("{}: {e}", path.display())))?;
        let parts = parse_sealed(&file).ok_or_else(|| secret(format!("{}: not a sealed secret", path.display())))?;
        let rec = self.load_initialized(tpm)?;
        let branches = rec.branches(&rec.policy)?;
        let mut attempts: Vec<(Vec<u8>, Vec<[u8; 32]>)> = Vec::new();
        for s in &rec.policy {
            let pcrs: Vec<u8> = rec.slots[s].pcrs.keys().copied().collect();
            if !attempts.iter().any(|(p, _)| *p == pcrs) {
                attempts.push((pcrs, branches.clone()));
            }
        }
        Ok(tpm.unseal(parts.0, parts.1, self.index, &attempts)?)
    }
}

fn take(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
    Some((b.get(2..2 + n)?, &b[2 + n..]))
}

fn parse_sealed(f: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = f.strip_prefix(SEALED_MAGIC.as_slice())?;
    let (public, rest) = take(rest)?;
    let (private, rest) = take(rest)?;
    rest.is_empty().then_some((public, private))
}

/// The measured-boot steps of an install, run on the TPM owner thread.
pub struct Approver {
    /// The TPM.
    pub owner: TpmOwner,
    /// The policy.
    pub mb: MeasuredBoot,
}

impl Approver {
    /// See [`MeasuredBoot::prepare`].
    pub fn prepare(&self, booted: &str, target: &str) -> Result<bool, MeasuredBootError> {
        let (mb, b, t) = (self.mb.clone(), booted.to_string(), target.to_string());
        self.owner.call(move |tpm| mb.prepare(tpm, &b, &t))
    }

    /// See [`MeasuredBoot::approve`].
    pub fn approve(&self, booted: &str, target: &str, values: SlotValues) -> Result<(), MeasuredBootError> {
        let (mb, b, t) = (self.mb.clone(), booted.to_string(), target.to_string());
        self.owner.call(move |tpm| mb.approve(tpm, &b, &t, values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_files_and_names() {
        let mut f = SEALED_MAGIC.to_vec();
        f.extend([0, 2, 1, 2, 0, 1, 3]);
        assert_eq!(parse_sealed(&f), Some((&[1u8, 2][..], &[3u8][..])));
        assert_eq!(parse_sealed(&f[..f.len() - 1]), None);
        f.push(0);
        assert_eq!(parse_sealed(&f), None);
        let d = Path::new("/d");
        assert!(secret_path(d, "device-credential").is_ok());
        for bad in ["", "../x", ".hidden", "a/b", &"x".repeat(65)] {
            assert!(secret_path(d, bad).is_err(), "{bad}");
        }
    }
}
