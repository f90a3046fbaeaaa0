//! TPM 2.0 policy digests, computed in software (pure): what a policy session's digest
//! becomes after TPM2_PolicyPCR and TPM2_PolicyOR (TPM 2.0 Part 3), SHA-256 bank and
//! session hash. Tests compare them with a real TPM's trial sessions.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// TPM_CC_PolicyPCR.
const CC_POLICY_PCR: u32 = 0x0000_017F;
/// TPM_CC_PolicyOR.
const CC_POLICY_OR: u32 = 0x0000_0171;
/// TPM_CC_PolicyAuthorizeNV.
const CC_POLICY_AUTHORIZE_NV: u32 = 0x0000_0192;
/// TPM_ALG_SHA256.
const ALG_SHA256: u16 = 0x000B;

/// A policy that cannot be expressed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    /// PolicyOR takes 2 to 8 branches.
    #[error("PolicyOR needs 2 to 8 branches, not {0}")]
    OrBranches(usize),
    /// PCR indices are 0..=23, each at most once.
    #[error("invalid PCR selection {0:?}")]
    Pcrs(Vec<u8>),
}

impl crate::fault::Fault for PolicyError {
    fn kind(&self) -> &'static str {
        "policy"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::InternalError
    }
}

/// The marshalled TPML_PCR_SELECTION of one SHA-256 selection of `pcrs` (0..=23).
pub fn pcr_selection(pcrs: &[u8]) -> Result<Vec<u8>, PolicyError> {
    let mut bitmap = [0u8; 3];
    for &p in pcrs {
        if p > 23 || bitmap[p as usize / 8] & (1 << (p % 8)) != 0 {
            return Err(PolicyError::Pcrs(pcrs.to_vec()));
        }
        bitmap[p as usize / 8] |= 1 << (p % 8);
    }
    let mut v = 1u32.to_be_bytes().to_vec();
    v.extend(ALG_SHA256.to_be_bytes());
    v.push(3);
    v.extend(bitmap);
    Ok(v)
}

/// The digest of the expected PCR values, concatenated in ascending PCR order (the order
/// the TPM reads a selection in).
pub fn pcr_values_digest(pcrs: &[(u8, [u8; 32])]) -> [u8; 32] {
    let mut sorted = pcrs.to_vec();
    sorted.sort_by_key(|(i, _)| *i);
    let mut h = Sha256::new();
    for (_, v) in sorted {
        h.update(v);
    }
    h.finalize().into()
}

/// The session digest after TPM2_PolicyPCR on `old` with the PCRs at the given values.
pub fn policy_pcr(old: &[u8; 32], pcrs: &[(u8, [u8; 32])]) -> Result<[u8; 32], PolicyError> {
    let indices: Vec<u8> = pcrs.iter().map(|(i, _)| *i).collect();
    let mut h = Sha256::new();
    h.update(old);
    h.update(CC_POLICY_PCR.to_be_bytes());
    h.update(pcr_selection(&indices)?);
    h.update(pcr_values_digest(pcrs));
    Ok(h.finalize().into())
}

/// One branch: PolicyPCR from a fresh session (the policy of one slot's measurements).
pub fn branch(pcrs: &[(u8, [u8; 32])]) -> Result<[u8; 32], PolicyError> {
    policy_pcr(&[0; 32], pcrs)
}

/// What the policy index holds when no slot is approved (every slot is below the
/// anti-rollback minimum): SHA-256 of the text `henb-update: no slot is approved`. A
/// policy session's digest is an iterated hash of policy commands (or all zeros for a
/// fresh one), so no session can reach this value: nothing unseals.
pub const NOTHING_APPROVED: [u8; 32] = [
    0x63, 0x85, 0x1a, 0x97, 0xac, 0xac, 0x57, 0xe4, 0x95, 0xdd, 0x85, 0xd0, 0x8d, 0xed, 0x7b, 0x8a, 0xe4, 0xfd, 0xc2,
    0x8a, 0x27, 0x8d, 0xfb, 0xd9, 0x46, 0x53, 0x0d, 0x27, 0xb4, 0x7d, 0xd1, 0x8d,
];

/// The session digest after TPM2_PolicyOR of `branches` (which resets it first).
pub fn policy_or(branches: &[[u8; 32]]) -> Result<[u8; 32], PolicyError> {
    if !(2..=8).contains(&branches.len()) {
        return Err(PolicyError::OrBranches(branches.len()));
    }
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(CC_POLICY_OR.to_be_bytes());
    for b in branches {
        h.update(b);
    }
    Ok(h.finalize().into())
}

/// The policy of a sealed secret: PolicyAuthorizeNV resets the session digest to this,
/// whatever came before, from the policy index's name.
pub fn policy_authorize_nv(nv_name: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(CC_POLICY_AUTHORIZE_NV.to_be_bytes());
    h.update(nv_name);
    h.finalize().into()
}

/// TPMA_NV bits (TPM 2.0 Part 2, 13.4).
pub mod nv_attr {
    /// TPMA_NV_OWNERWRITE.
    pub const OWNERWRITE: u32 = 1 << 1;
    /// TPMA_NV_WRITEALL.
    pub const WRITEALL: u32 = 1 << 12;
    /// TPMA_NV_OWNERREAD.
    pub const OWNERREAD: u32 = 1 << 17;
    /// TPMA_NV_AUTHREAD.
    pub const AUTHREAD: u32 = 1 << 18;
    /// TPMA_NV_NO_DA.
    pub const NO_DA: u32 = 1 << 25;
    /// TPMA_NV_WRITTEN.
    pub const WRITTEN: u32 = 1 << 29;
    /// The policy index: readable by anyone, written whole by the owner, outside
    /// dictionary-attack lockout, not lockable, not orderly.
    pub const POLICY_INDEX: u32 = OWNERWRITE | WRITEALL | OWNERREAD | AUTHREAD | NO_DA;
}

/// The name of an ordinary SHA-256 NV index of `size` bytes with `attributes` and an
/// empty authPolicy: nameAlg || SHA-256(TPMS_NV_PUBLIC). It changes when the index is
/// first written (the WRITTEN bit), which is why secrets are sealed only after that.
pub fn nv_name(index: u32, attributes: u32, size: u16) -> Vec<u8> {
    let mut public = index.to_be_bytes().to_vec();
    public.extend(ALG_SHA256.to_be_bytes());
    public.extend(attributes.to_be_bytes());
    public.extend(0u16.to_be_bytes()); // authPolicy: empty
    public.extend(size.to_be_bytes());
    let mut name = ALG_SHA256.to_be_bytes().to_vec();
    name.extend(Sha256::digest(&public));
    name
}

/// The marshalled TPMT_HA the policy index holds (34 bytes).
pub fn tpmt_ha(digest: &[u8; 32]) -> [u8; 34] {
    let mut v = [0u8; 34];
    v[..2].copy_from_slice(&ALG_SHA256.to_be_bytes());
    v[2..].copy_from_slice(digest);
    v
}

/// The digest in a TPMT_HA read back from the index, if it is a SHA-256 one.
pub fn from_tpmt_ha(v: &[u8]) -> Option<[u8; 32]> {
    (v.len() == 34 && v[..2] == ALG_SHA256.to_be_bytes()).then(|| v[2..].try_into().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_bitmap_and_limits() {
        assert_eq!(pcr_selection(&[8, 9]).unwrap(), [0, 0, 0, 1, 0, 0x0B, 3, 0, 0x03, 0]);
        assert_eq!(pcr_selection(&[0, 23]).unwrap()[7..], [0x01, 0, 0x80]);
        assert!(pcr_selection(&[24]).is_err());
        assert!(pcr_selection(&[9, 9]).is_err());
        assert_eq!(policy_or(&[[1; 32]]), Err(PolicyError::OrBranches(1)));
        assert!(policy_or(&[[1; 32]; 9]).is_err());
        // The values digest does not depend on the order the caller lists them in.
        assert_eq!(pcr_values_digest(&[(9, [1; 32]), (8, [2; 32])]), pcr_values_digest(&[(8, [2; 32]), (9, [1; 32])]));
    }

    #[test]
    fn tpmt_ha_round_trip() {
        let d = [7u8; 32];
        assert_eq!(from_tpmt_ha(&tpmt_ha(&d)), Some(d));
        assert_eq!(&tpmt_ha(&d)[..2], &[0, 0x0B]);
        assert_eq!(from_tpmt_ha(&[0u8; 34]), None);
        assert_eq!(from_tpmt_ha(&tpmt_ha(&d)[..33]), None);
        // The WRITTEN bit is part of the name.
        assert_ne!(
            nv_name(0x0101_0300, nv_attr::POLICY_INDEX, 34),
            nv_name(0x0101_0300, nv_attr::POLICY_INDEX | nv_attr::WRITTEN, 34)
        );
        assert_eq!(nv_name(1, 0, 34).len(), 34);
    }

    #[test]
    fn nothing_approved_is_the_hash_of_its_text() {
        let d: [u8; 32] = Sha256::digest(b"henb-update: no slot is approved").into();
        assert_eq!(d, NOTHING_APPROVED);
        assert_ne!(NOTHING_APPROVED, [0u8; 32], "a fresh session's digest");
    }
}
