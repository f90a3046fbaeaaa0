//! Operator roots in TPM NV indices (R3), and their rollover.
//!
//! Each root certificate (DER) lives in its own NV index from a configured range
//! (`[tpm] root-index`, `root-slots`; default 0x01010100..0x01010103). The indices are
//! readable without authorization and writable only with owner authorization; `--lock`
//! freezes an index with NV_WriteLock (WRITEDEFINE: until it is deleted). A new root
//! joins only when a current root endorses it (signs its DER); the old one is retired
//! later. Nothing here decides trust in a package: it only supplies [`Anchors`].

use super::endorse::{check_endorsement, EndorsementError};
use super::{Anchors, TrustError, TrustSource};
use crate::tpm::{NvKind, Tpm, TpmError};
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_cert::der::Decode;
use x509_cert::Certificate;

/// Default first root index (owner range).
pub const DEFAULT_ROOT_INDEX: u32 = 0x0101_0100;
/// Default number of root slots (two are needed for a rollover).
pub const DEFAULT_ROOT_SLOTS: u32 = 4;

/// The range of NV indices that hold roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootStore {
    /// First index.
    pub first: u32,
    /// Number of indices.
    pub slots: u32,
}

impl Default for RootStore {
    fn default() -> Self {
        Self { first: DEFAULT_ROOT_INDEX, slots: DEFAULT_ROOT_SLOTS }
    }
}

/// One provisioned root.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RootEntry {
    /// NV index.
    pub index: String,
    /// Certificate subject.
    pub subject: String,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
    /// Write-locked.
    pub locked: bool,
    /// The certificate (DER).
    #[serde(skip)]
    pub der: Vec<u8>,
}

/// Root store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The TPM failed: could not check.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// A certificate is not a usable root.
    #[error("{0}")]
    BadRoot(String),
    /// No free slot in the range.
    #[error("all {slots} root slots from {first:#010x} are in use: retire a root first")]
    Full {
        /// First index.
        first: u32,
        /// Slots.
        slots: u32,
    },
    /// The root is already provisioned.
    #[error("root '{0}' is already provisioned")]
    Duplicate(String),
    /// No such root.
    #[error("no provisioned root matches '{0}'")]
    NotFound(String),
    /// A locked root cannot be replaced or retired.
    #[error("root at {0:#010x} is locked: it cannot be replaced or retired")]
    Locked(u32),
    /// Retiring would leave no root.
    #[error("refusing to retire the last operator root")]
    LastRoot,
    /// The endorsement does not vouch for the new root.
    #[error(transparent)]
    Endorsement(#[from] EndorsementError),
    /// The stored roots do not form a usable anchor set.
    #[error(transparent)]
    Anchors(#[from] TrustError),
}

impl crate::fault::Fault for StoreError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Tpm(e) => e.kind(),
            Self::Anchors(_) => "no-trust-anchors",
            Self::Endorsement(_) => "endorsement",
            _ => "root-store",
        }
    }
    /// A request the store refuses (a bad or duplicate root, a full store, a locked or
    /// last root, a root too large for this TPM, a missing endorsement) is denied; a TPM
    /// that fails, or roots in it that do not load, could not be checked.
    fn fault(&self) -> crate::fault::CwmpFault {
        use crate::fault::CwmpFault;
        match self {
            Self::Tpm(crate::tpm::TpmError::TooLarge { .. }) => CwmpFault::RequestDenied,
            Self::Tpm(e) => e.fault(),
            Self::Anchors(_) => CwmpFault::InternalError,
            Self::Endorsement(_) => CwmpFault::FileAuthenticationFailure,
            _ => CwmpFault::RequestDenied,
        }
    }
}

fn check_root(der: &[u8]) -> Result<Certificate, StoreError> {
    let cert = Certificate::from_der(der).map_err(|e| StoreError::BadRoot(format!("not a DER certificate: {e}")))?;
    let cd = rustls_pki_types::CertificateDer::from(der.to_vec());
    webpki::anchor_from_trusted_cert(&cd)
        .map_err(|e| StoreError::BadRoot(format!("not usable as a trust anchor: {e:?}")))?;
    // A TPM-held anchor is always a root CA (RFC 5280 §3.2, §4.2.1.3, §4.2.1.9): partial
    // chains are a keyring option, never the Trusted Environment's.
    crate::verify::check_root(&cert)
        .map_err(|why| StoreError::BadRoot(format!("'{}' is not a root CA: {why}", cert.tbs_certificate.subject)))?;
    Ok(cert)
}

impl RootStore {
    fn indices(&self) -> impl Iterator<Item = u32> {
        let first = self.first;
        (0..self.slots).map(move |i| first + i)
    }

    /// The provisioned roots.
    pub fn list(&self, tpm: &mut Tpm) -> Result<Vec<RootEntry>, StoreError> {
        let mut out = Vec::new();
        for index in self.indices() {
            let Some(info) = tpm.nv_info(index)? else { continue };
            if !info.written {
                continue;
            }
            let der = tpm.nv_read(index)?;
            let subject = Certificate::from_der(&der)
                .map(|c| c.tbs_certificate.subject.to_string())
                .unwrap_or_else(|e| format!("<unreadable: {e}>"));
            out.push(RootEntry {
                index: format!("{index:#010x}"),
                subject,
                sha256: hex::encode(Sha256::digest(&der)),
                locked: info.write_locked,
                der,
            });
        }
        Ok(out)
    }

    /// Anchors from every provisioned root.
    pub fn anchors(&self, tpm: &mut Tpm) -> Result<Anchors, StoreError> {
        let roots = self.list(tpm)?;
        Ok(Anchors::from_der_list(roots.into_iter().map(|r| r.der).collect(), TrustSource::Tpm)?)
    }

    fn free_slot(&self, tpm: &mut Tpm) -> Result<u32, StoreError> {
        for index in self.indices() {
            if tpm.nv_info(index)?.is_none() {
                return Ok(index);
            }
        }
        Err(StoreError::Full { first: self.first, slots: self.slots })
    }

    fn write_root(&self, tpm: &mut Tpm, der: &[u8], lock: bool) -> Result<u32, StoreError> {
        let cert = check_root(der)?;
        let fp = hex::encode(Sha256::digest(der));
        if self.list(tpm)?.iter().any(|r| r.sha256 == fp) {
            return Err(StoreError::Duplicate(cert.tbs_certificate.subject.to_string()));
        }
        let index = self.free_slot(tpm)?;
        tpm.nv_define(index, der.len(), NvKind::Data, &format!("root certificate '{}'", cert.tbs_certificate.subject))?;
        if let Err(e) = tpm.nv_write(index, der) {
            let _ = tpm.nv_undefine(index); // leave no half-written root behind
            return Err(e.into());
        }
        if lock {
            tpm.nv_write_lock(index)?;
        }
        Ok(index)
    }

    /// Factory provisioning: each root into its own free index, optionally locked.
    pub fn provision(&self, tpm: &mut Tpm, roots: &[Vec<u8>], lock: bool) -> Result<Vec<u32>, StoreError> {
        roots.iter().map(|der| self.write_root(tpm, der, lock)).collect()
    }

    /// Add `new_root` when `endorsement` (CMS) is a current root's signature over it.
    pub fn rollover(&self, tpm: &mut Tpm, new_root: &[u8], endorsement: &[u8]) -> Result<(u32, String), StoreError> {
        let current: Vec<Vec<u8>> = self.list(tpm)?.into_iter().map(|r| r.der).collect();
        let endorser = check_endorsement(endorsement, new_root, &current)?;
        Ok((self.write_root(tpm, new_root, false)?, endorser))
    }

    /// Remove the root whose index or SHA-256 fingerprint (or a unique prefix) is `which`.
    pub fn retire(&self, tpm: &mut Tpm, which: &str) -> Result<RootEntry, StoreError> {
        let roots = self.list(tpm)?;
        let which_l = which.to_ascii_lowercase();
        let matches: Vec<&RootEntry> = roots
            .iter()
            .filter(|r| r.index == which_l || (which_l.len() >= 8 && r.sha256.starts_with(&which_l)))
            .collect();
        let [root] = matches.as_slice() else { return Err(StoreError::NotFound(which.to_string())) };
        let index = u32::from_str_radix(root.index.trim_start_matches("0x"), 16).expect("formatted by list");
        if root.locked {
            return Err(StoreError::Locked(index));
        }
        if roots.len() == 1 {
            return Err(StoreError::LastRoot);
        }
        tpm.nv_undefine(index)?;
        Ok((*root).clone())
    }
}
