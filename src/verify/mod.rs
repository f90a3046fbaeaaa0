//! CMS SignedData verification: may these bytes be installed?
//!
//! Pure: takes the CMS bytes, the trust anchors, the policy and the time, and never
//! touches a file, a clock or the TPM. Verification runs in two stages so that the
//! expensive part (hashing a large payload) only starts once a trusted signer exists:
//! [`check_signers`] verifies every SignerInfo's signature over its signed attributes and
//! its certificate chain; [`Pending::finish`] then compares each signer's messageDigest
//! with the content digests the caller computed.
//!
//! Rules (R2, R4 of TS 33.320): at least one SignerInfo must fully verify and chain to a
//! trust anchor. A SignerInfo we cannot check (unsupported algorithm, weak key, no
//! certificate, untrusted or invalid chain) is skipped. A SignerInfo we can check but that
//! fails cryptographically (bad signature, wrong messageDigest) rejects the package,
//! whatever its chain: it is evidence of tampering.

mod algs;
pub mod anchors;
mod chain;
mod crl;
mod signer;

pub use algs::digest_oid;
pub use chain::{check_path, check_root, self_issued, validate, ChainFailure, Check, Material, ValidPath};
pub use crl::Crl;

use crate::digest::DigestAlg;
use crate::fault::{CwmpFault, Fault};
pub use anchors::Anchors;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use const_oid::db::{rfc5280, rfc5911};
use const_oid::ObjectIdentifier as Oid;
use der::{Decode, Encode};
use serde::Serialize;
use signer::{check_one, identifies, sid_text};
pub use signer::{check_signer, common_name, signature_checks, SignatureCheck};
use std::time::SystemTime;
use thiserror::Error;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

/// The certificate purpose a signer must have (RAUC's `check-purpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purpose {
    /// RAUC's default (OpenSSL's S/MIME signing purpose): an extended key usage, if
    /// present, must include emailProtection.
    #[default]
    SmimeSign,
    /// The signer must carry extended key usage codeSigning; CAs that carry an extended
    /// key usage must include it too.
    CodeSign,
    /// No extended-key-usage check.
    Any,
}

impl Purpose {
    /// Parse RAUC's names (`smimesign`, `codesign`, `any`).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "smimesign" => Some(Self::SmimeSign),
            "codesign" => Some(Self::CodeSign),
            "any" => Some(Self::Any),
            _ => None,
        }
    }
}

/// How signatures are judged (RAUC's `[keyring]` options plus our legacy switch).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Required certificate purpose.
    pub purpose: Purpose,
    /// Check certificate validity at the CMS signingTime instead of the time passed in.
    pub use_signing_time: bool,
    /// If set, the signer's common name must be one of these.
    pub allowed_signer_cns: Option<Vec<String>>,
    /// Accept SHA-1 digests (TR-069 legacy packages only).
    pub allow_sha1: bool,
    /// Accept a path that ends at a trusted certificate that is not self-issued (RAUC's
    /// `allow-partial-chain`; off: anchors are self-issued CA roots).
    pub allow_partial_chain: bool,
    /// Every certificate of the path but the anchor needs a current CRL from its issuer
    /// (RAUC's `check-crl`); without one the signer could not be checked (9002).
    pub check_crl: bool,
}

/// Outcome for one SignerInfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SignerReport {
    /// Subject of the signer certificate (or the signer identifier when not found).
    pub subject: String,
    /// Issuer of the signer certificate.
    pub issuer: String,
    /// Digest algorithm of the SignerInfo.
    pub digest_algorithm: String,
    /// `trusted`, or `skipped: <why>`.
    pub status: String,
    /// The validated certification path, signer to anchor (subjects), when trusted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// The signer was skipped only because revocation could not be checked.
    #[serde(skip)]
    pub revocation_unknown: bool,
    /// SHA-256 of each SubjectPublicKeyInfo of the validated path (signer to anchor),
    /// uppercase colon-separated hex ([`chain::ValidPath::spki_sha256`]).
    #[serde(skip)]
    pub spki_sha256: Vec<String>,
}

impl SignerReport {
    /// True when this signer counted.
    pub fn trusted(&self) -> bool {
        self.status == "trusted"
    }
}

/// Why a package's signature was refused.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The signature block is not a DER CMS ContentInfo holding SignedData.
    #[error("signature block is not a valid CMS SignedData: {0}")]
    Malformed(String),
    /// SignedData with no SignerInfo at all.
    #[error("the SignedData carries no signature")]
    NoSigners,
    /// A checkable signature did not verify.
    #[error("signature of signer '{signer}' does not verify: {why}")]
    BadSignature {
        /// Signer subject.
        signer: String,
        /// What failed.
        why: String,
    },
    /// A signer's messageDigest does not match the content.
    #[error("content does not match the digest signed by '{signer}' ({alg})")]
    DigestMismatch {
        /// Signer subject.
        signer: String,
        /// Digest algorithm.
        alg: DigestAlg,
    },
    /// No signer is both valid and trusted.
    #[error("no signature from a trusted signer: {}", reports_text(.0))]
    NoTrustedSigner(Vec<SignerReport>),
    /// No signer is trusted, and for at least one the revocation status could not be
    /// established (`check-crl` with no current CRL): could not check.
    #[error("could not check revocation: {}", reports_text(.0))]
    RevocationUnknown(Vec<SignerReport>),
}

fn reports_text(r: &[SignerReport]) -> String {
    r.iter().map(|r| format!("'{}' {}", r.subject, r.status)).collect::<Vec<_>>().join("; ")
}

impl Fault for VerifyError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed-signature",
            Self::NoSigners => "no-signature",
            Self::BadSignature { .. } => "bad-signature",
            Self::DigestMismatch { .. } => "digest-mismatch",
            Self::NoTrustedSigner(_) => "untrusted",
            Self::RevocationUnknown(_) => "revocation-unknown",
        }
    }
    fn fault(&self) -> CwmpFault {
        match self {
            Self::Malformed(_) => CwmpFault::FileCorrupted,
            Self::RevocationUnknown(_) => CwmpFault::InternalError,
            _ => CwmpFault::FileAuthenticationFailure,
        }
    }
}

/// A parsed CMS SignedData.
pub struct SignedCms {
    sd: SignedData,
}

impl SignedCms {
    /// Parse a DER ContentInfo holding SignedData (trailing bytes are an error).
    pub fn parse(der: &[u8]) -> Result<Self, VerifyError> {
        let ci = ContentInfo::from_der(der).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if ci.content_type != rfc5911::ID_SIGNED_DATA {
            return Err(VerifyError::Malformed(format!("content type {} is not signedData", ci.content_type)));
        }
        let sd: SignedData = ci.content.decode_as().map_err(|e| VerifyError::Malformed(e.to_string()))?;
        Ok(Self { sd })
    }

    /// The encapsulated content (attached signatures), if any.
    pub fn content(&self) -> Option<&[u8]> {
        let ec = self.sd.encap_content_info.econtent.as_ref()?;
        // eContent is an OCTET STRING inside [0] EXPLICIT; `Any` holds the OCTET STRING.
        ec.decode_as::<der::asn1::OctetStringRef<'_>>().ok().map(|o| o.as_bytes())
    }

    /// True when the SignedData encapsulates its content.
    pub fn is_attached(&self) -> bool {
        self.sd.encap_content_info.econtent.is_some()
    }

    /// CRLs carried in the SignedData (RFC 5652 §10.2.1 `crls`), DER.
    pub fn crls(&self) -> Vec<Vec<u8>> {
        use cms::revocation::RevocationInfoChoice;
        self.sd
            .crls
            .as_ref()
            .map(|s| {
                s.0.iter()
                    .filter_map(|c| match c {
                        RevocationInfoChoice::Crl(c) => c.to_der().ok(),
                        RevocationInfoChoice::Other(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn certificates(&self) -> Vec<&Certificate> {
        self.sd
            .certificates
            .as_ref()
            .map(|s| {
                s.0.iter()
                    .filter_map(|c| match c {
                        CertificateChoices::Certificate(c) => Some(c),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Candidate {
    alg: DigestAlg,
    check: ContentCheck,
    report_index: usize,
}

/// How a sound SignerInfo binds the content (RFC 5652 §5.4).
pub(crate) enum ContentCheck {
    /// Signed attributes: their messageDigest must equal the content's digest.
    MessageDigest(Vec<u8>),
    /// No signed attributes: the signature is over the content itself, checked once its
    /// digest is known.
    Signature {
        /// The signer's certificate (its key).
        cert: Box<Certificate>,
        /// The SignerInfo's signatureAlgorithm.
        algorithm: spki::AlgorithmIdentifierOwned,
        /// The signature value.
        signature: Vec<u8>,
    },
}

impl ContentCheck {
    /// Does the content with this digest (of `alg`) satisfy the signer?
    fn holds(&self, alg: DigestAlg, digest: &[u8]) -> bool {
        match self {
            Self::MessageDigest(md) => md == digest,
            Self::Signature { cert, algorithm, signature } => {
                algs::PublicKey::from_spki(&cert.tbs_certificate.subject_public_key_info)
                    .and_then(|k| k.algorithm(algorithm, alg).map(|a| (k, a)))
                    .is_ok_and(|(k, a)| k.verify_digest(&a, digest, signature))
            }
        }
    }
}

/// Signers whose signatures verified, waiting for the content digests.
pub struct Pending {
    candidates: Vec<Candidate>,
    reports: Vec<SignerReport>,
}

impl Pending {
    /// Digest algorithms the caller must compute over the content.
    pub fn needed_digests(&self) -> Vec<DigestAlg> {
        let mut v: Vec<DigestAlg> = self.candidates.iter().map(|c| c.alg).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Check every sound signer against the content digests: its messageDigest must
    /// equal the digest, or (no signed attributes) its signature must verify over it. Any
    /// mismatch rejects. Returns the per-signer reports.
    pub fn finish(self, digests: &[(DigestAlg, Vec<u8>)]) -> Result<Vec<SignerReport>, VerifyError> {
        for c in &self.candidates {
            let got = digests.iter().find(|(a, _)| *a == c.alg).map(|(_, d)| d.as_slice());
            if !got.is_some_and(|d| c.check.holds(c.alg, d)) {
                let signer = self.reports[c.report_index].subject.clone();
                return Err(match c.check {
                    ContentCheck::MessageDigest(_) => VerifyError::DigestMismatch { signer, alg: c.alg },
                    ContentCheck::Signature { .. } => VerifyError::BadSignature {
                        signer,
                        why: "signature value does not match the content and the signer's key".into(),
                    },
                });
            }
        }
        Ok(self.reports)
    }
}

/// Stage one: check every SignerInfo's signature and chain. Fails when a checkable
/// signature is wrong, or when no signer is trusted.
pub fn check_signers(
    cms: &SignedCms,
    anchors: &Anchors,
    policy: &Policy,
    now: SystemTime,
) -> Result<Pending, VerifyError> {
    let infos = &cms.sd.signer_infos.0;
    if infos.is_empty() {
        return Err(VerifyError::NoSigners);
    }
    // digestAlgorithms is not signed; it must say exactly what the SignerInfos use, so
    // that no byte of the signature block can change unnoticed.
    let mut listed: Vec<Oid> = cms.sd.digest_algorithms.iter().map(|a| a.oid).collect();
    let mut used: Vec<Oid> = infos.iter().map(|si| si.digest_alg.oid).collect();
    for v in [&mut listed, &mut used] {
        v.sort();
        v.dedup();
    }
    // Versions are not signed either; RFC 5652 fixes them, so any other value is refused.
    use cms::content_info::CmsVersion;
    for si in infos.iter() {
        let want = match si.sid {
            SignerIdentifier::IssuerAndSerialNumber(_) => CmsVersion::V1,
            SignerIdentifier::SubjectKeyIdentifier(_) => CmsVersion::V3,
        };
        if si.version != want {
            return Err(VerifyError::Malformed(format!(
                "SignerInfo version {:?} does not match its signer identifier",
                si.version
            )));
        }
    }
    let other_certs = cms
        .sd
        .certificates
        .as_ref()
        .is_some_and(|s| s.0.iter().any(|c| !matches!(c, CertificateChoices::Certificate(_))));
    let v3 = infos.iter().any(|si| si.version == CmsVersion::V3)
        || cms.sd.encap_content_info.econtent_type != rfc5911::ID_DATA;
    let want = if other_certs {
        None // attribute or other certificate types: versions 3 to 5, not used by any signer we know
    } else if v3 {
        Some(CmsVersion::V3)
    } else {
        Some(CmsVersion::V1)
    };
    if want.is_some_and(|w| w != cms.sd.version) {
        return Err(VerifyError::Malformed(format!(
            "SignedData version {:?} is not the one RFC 5652 requires",
            cms.sd.version
        )));
    }
    if listed != used {
        return Err(VerifyError::Malformed(
            "digestAlgorithms does not list exactly the signers' digest algorithms".into(),
        ));
    }
    let certs = cms.certificates();
    let owned: Vec<Certificate> = certs.iter().map(|c| (*c).clone()).collect();
    let crls = cms.crls();
    let material = Material { certificates: &owned, crls: &crls };
    let mut reports = Vec::new();
    let mut candidates = Vec::new();
    for si in infos.iter() {
        let cert = certs.iter().copied().find(|c| identifies(&si.sid, c));
        let alg_name = si.digest_alg.oid.to_string();
        let mut report = SignerReport {
            subject: cert.map(|c| c.tbs_certificate.subject.to_string()).unwrap_or_else(|| sid_text(&si.sid)),
            issuer: cert.map(|c| c.tbs_certificate.issuer.to_string()).unwrap_or_default(),
            digest_algorithm: alg_name,
            status: String::new(),
            path: Vec::new(),
            revocation_unknown: false,
            spki_sha256: Vec::new(),
        };
        match check_one(cms, si, cert, &material, anchors, policy, now, &mut report) {
            Ok(Some(((alg, check), trusted))) => {
                if trusted {
                    report.status = "trusted".into();
                }
                candidates.push(Candidate { alg, check, report_index: reports.len() });
            }
            Ok(None) => {}
            Err(why) => return Err(VerifyError::BadSignature { signer: report.subject, why }),
        }
        reports.push(report);
    }
    if !reports.iter().any(SignerReport::trusted) {
        if reports.iter().any(|r| r.revocation_unknown) {
            return Err(VerifyError::RevocationUnknown(reports));
        }
        return Err(VerifyError::NoTrustedSigner(reports));
    }
    Ok(Pending { candidates, reports })
}
