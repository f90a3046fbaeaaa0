//! Certificate revocation lists (RFC 5280 §5, §6.3): parsing, and the revocation check
//! of a validated path.

use super::algs;
use super::chain::{key_usage, ChainFailure, Check};
use super::Policy;
use const_oid::db::rfc5280;
use der::{Decode, Encode};
use std::time::SystemTime;
use x509_cert::ext::pkix::KeyUsages;
use x509_cert::Certificate;

/// A CRL (RFC 5280 §5.1), v1 or v2: x509-cert 0.2 reads only v2 (its `version` is not
/// optional), and `openssl ca` writes v1 CRLs unless it keeps a crlNumber.
pub struct Crl {
    raw: RawCrl,
    tbs: TbsCrl,
}

#[derive(der::Sequence)]
struct RawCrl {
    tbs: der::Any,
    signature_algorithm: spki::AlgorithmIdentifierOwned,
    signature: der::asn1::BitString,
}

#[derive(der::Sequence)]
struct TbsCrl {
    version: Option<x509_cert::Version>,
    signature: spki::AlgorithmIdentifierOwned,
    issuer: x509_cert::name::Name,
    this_update: x509_cert::time::Time,
    next_update: Option<x509_cert::time::Time>,
    revoked_certificates: Option<Vec<x509_cert::crl::RevokedCert>>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    crl_extensions: Option<x509_cert::ext::Extensions>,
}

impl Crl {
    /// Parse a DER CertificateList (RFC 5280 §5.1), version 1 or 2.
    pub fn parse(der_bytes: &[u8]) -> Result<Self, String> {
        let raw = RawCrl::from_der(der_bytes).map_err(|e| format!("not a DER CRL: {e}"))?;
        let tbs: TbsCrl = raw.tbs.decode_as().map_err(|e| format!("not a DER CRL: {e}"))?;
        if tbs.version.is_some_and(|v| v != x509_cert::Version::V2) {
            return Err("CRL version other than 1 or 2".into());
        }
        Ok(Self { raw, tbs })
    }
}

/// Revocation of every certificate of `chain` but the anchor (RFC 5280 §6.3), from the
/// CRLs in its issuer's name whose signature the issuer of the path verifies (a CRL
/// signed otherwise is not the issuer's and is ignored) and whose issuer may sign CRLs:
/// - a certificate listed by any such CRL is revoked, whatever the CRL's dates;
/// - a CRL in the issuer's name that lists the certificate but whose signature cannot be
///   checked here (an algorithm we refuse) makes the status unknown: never ignored;
/// - with `check_crl`, a certificate needs a current complete CRL from its issuer
///   (thisUpdate <= time <= nextUpdate; no issuingDistributionPoint, no deltaCRLIndicator,
///   no unknown critical extension), else its status is unknown.
pub(super) fn revocation(
    chain: &[Certificate],
    crls: &[Crl],
    policy: &Policy,
    time: SystemTime,
) -> Result<Check, ChainFailure> {
    let mut checked = 0;
    for pair in chain.windows(2) {
        let (cert, issuer) = (&pair[0], &pair[1]);
        let serial = &cert.tbs_certificate.serial_number;
        let name = || cert.tbs_certificate.subject.to_string();
        let may_sign_crls =
            key_usage(issuer).ok().is_some_and(|ku| ku.is_none_or(|ku| ku.contains(KeyUsages::CRLSign)));
        let mut current = false;
        for crl in crls.iter().filter(|c| c.tbs.issuer == cert.tbs_certificate.issuer) {
            let lists =
                crl.tbs.revoked_certificates.as_ref().is_some_and(|r| r.iter().any(|e| e.serial_number == *serial));
            let (Ok(tbs), Some(sig)) = (crl.raw.tbs.to_der(), crl.raw.signature.as_bytes()) else { continue };
            match algs::verify_signed(
                &issuer.tbs_certificate.subject_public_key_info,
                &crl.raw.signature_algorithm,
                &tbs,
                sig,
            ) {
                Err(why) if lists => {
                    return Err(ChainFailure::RevocationUnknown(format!(
                        "a CRL in the name of the issuer of '{}' lists it, but its signature cannot be checked: {why}",
                        name()
                    )))
                }
                Err(_) | Ok(false) => continue,
                Ok(true) if !may_sign_crls => continue,
                Ok(true) => {}
            }
            if lists {
                return Err(ChainFailure::Revoked(format!("'{}' is revoked by its issuer's CRL", name())));
            }
            let tl = &crl.tbs;
            let complete = tl.crl_extensions.as_deref().unwrap_or_default().iter().all(|e| {
                e.extn_id != rfc5280::ID_CE_ISSUING_DISTRIBUTION_POINT
                    && e.extn_id != rfc5280::ID_CE_DELTA_CRL_INDICATOR
                    && (!e.critical
                        || e.extn_id == rfc5280::ID_CE_CRL_NUMBER
                        || e.extn_id == rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER)
            });
            let in_time =
                tl.this_update.to_system_time() <= time && tl.next_update.is_some_and(|n| time <= n.to_system_time());
            current |= complete && in_time;
        }
        if policy.check_crl && !current {
            return Err(ChainFailure::RevocationUnknown(format!(
                "no current CRL from the issuer of '{}' (check-crl): missing, not yet valid or past its nextUpdate",
                name()
            )));
        }
        checked += 1;
    }
    Ok(Check {
        check: format!(
            "revocation of {checked} certificate(s): no CRL of their issuers lists them{}",
            if policy.check_crl { ", and each has a current CRL (check-crl)" } else { "" }
        ),
        result: "ok".into(),
    })
}
