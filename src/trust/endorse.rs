//! Root rollover without a factory visit: a new operator root is accepted only when a
//! current root signs it (a CMS SignedData over the new root's DER). Pure: the caller
//! reads the current roots from the TPM.

use crate::verify::{SignatureCheck, SignedCms};
use thiserror::Error;
use x509_cert::der::Decode;
use x509_cert::Certificate;

/// Why a root endorsement was refused.
#[derive(Debug, Error)]
pub enum EndorsementError {
    /// Not a DER CMS SignedData.
    #[error("endorsement is not a valid CMS SignedData: {0}")]
    Malformed(String),
    /// A signature that can be checked is wrong.
    #[error("endorsement signature does not verify: {0}")]
    BadSignature(String),
    /// No signature by a current root covers the new root.
    #[error("the new root is not endorsed by a current root: {0}")]
    NotEndorsed(String),
}

impl crate::fault::Fault for EndorsementError {
    fn kind(&self) -> &'static str {
        "endorsement"
    }
    /// No valid signature by a current root covers the new root (9019).
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::FileAuthenticationFailure
    }
}

/// Root rollover: `cms` must carry a signature, by the key of one of `current_roots`
/// (DER), over exactly `new_root` (DER; attached or detached). Returns the endorsing
/// root's subject.
///
/// Errors: [`EndorsementError`].
pub fn check_endorsement(cms: &[u8], new_root: &[u8], current_roots: &[Vec<u8>]) -> Result<String, EndorsementError> {
    let cms = SignedCms::parse(cms).map_err(|e| EndorsementError::Malformed(e.to_string()))?;
    if let Some(content) = cms.content() {
        if content != new_root {
            return Err(EndorsementError::NotEndorsed("the endorsement signs other content".into()));
        }
    }
    let roots: Vec<Certificate> = current_roots.iter().filter_map(|d| Certificate::from_der(d).ok()).collect();
    let mut why = Vec::new();
    let mut endorser = None;
    for check in crate::verify::signature_checks(&cms, &roots, new_root).map_err(EndorsementError::BadSignature)? {
        match check {
            SignatureCheck::NoSigner(sid) => why.push(format!("{sid} is not a current root")),
            SignatureCheck::Covers { subject } => endorser = Some(subject),
            SignatureCheck::OtherContent { .. } => {
                return Err(EndorsementError::BadSignature("it signs a different certificate".into()))
            }
            SignatureCheck::Skipped { subject, why: w } => why.push(format!("{subject}: {w}")),
        }
    }
    endorser.ok_or_else(|| {
        EndorsementError::NotEndorsed(if why.is_empty() { "no signature".into() } else { why.join("; ") })
    })
}
