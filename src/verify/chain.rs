//! Certification path validation for code signing (RFC 5280 §6.1), with revocation from
//! CRLs (RFC 5280 §5, §6.3).
//!
//! One function, [`validate`], serves package verification and `check-chain` alike.
//! rustls-webpki builds the path (trying every candidate issuer, RFC 4158) and checks
//! what it knows: signatures with the algorithm floor (SHA-2, RSA >= 2048, P-256/P-384),
//! validity of every non-anchor certificate, basicConstraints and pathLenConstraint,
//! critical extensions it does not process, nameConstraints (dNSName, iPAddress; every
//! other constrained name form is refused), the extended key usage of every
//! non-anchor certificate and revocation. Each path it accepts is then put through the
//! checks webpki does not do ([`check_path`]); a path that fails them is dropped and
//! path building goes on, so a bad candidate never hides a good one.
//!
//! Pure: certificates, CRLs, the time and the policy come in; nothing is read.

use super::anchors::Anchors;
use super::crl::{revocation, Crl};
use super::{Policy, Purpose};
use const_oid::db::{rfc5280, rfc5912};
use const_oid::ObjectIdentifier as Oid;
use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use std::cell::RefCell;
use std::time::{Duration, SystemTime};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::Certificate;

/// id-kp-emailProtection (RFC 5280 §4.2.1.12): OpenSSL's S/MIME signing purpose.
const KP_EMAIL_PROTECTION: Oid = rfc5912::ID_KP_EMAIL_PROTECTION;
/// id-kp-codeSigning (RFC 5280 §4.2.1.12).
const KP_CODE_SIGNING: Oid = rfc5912::ID_KP_CODE_SIGNING;

/// Extensions a certificate may mark critical: the ones webpki and [`check_path`] process
/// (keyUsage, subjectAltName, basicConstraints, nameConstraints, cRLDistributionPoints,
/// extKeyUsage). Applied by webpki to the path and by us to the anchor.
const PROCESSED: [Oid; 6] = [
    rfc5280::ID_CE_KEY_USAGE,
    rfc5280::ID_CE_SUBJECT_ALT_NAME,
    rfc5280::ID_CE_BASIC_CONSTRAINTS,
    rfc5280::ID_CE_NAME_CONSTRAINTS,
    rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS,
    rfc5280::ID_CE_EXT_KEY_USAGE,
];

/// One check of the validation, as `check-chain` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, in RFC 5280 terms.
    pub check: String,
    /// `ok`, or what failed.
    pub result: String,
}

/// A validated certification path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPath {
    /// The certificates from the signer to the trust anchor.
    pub chain: Vec<Certificate>,
    /// Every check made on it, all `ok`.
    pub checks: Vec<Check>,
}

impl ValidPath {
    /// The subjects from the signer to the trust anchor (RFC 4514 strings).
    pub fn subjects(&self) -> Vec<String> {
        self.chain.iter().map(|c| c.tbs_certificate.subject.to_string()).collect()
    }

    /// The SHA-256 of each certificate's DER SubjectPublicKeyInfo (RFC 5280 4.1.2.7),
    /// signer to anchor, as uppercase colon-separated hex: what RAUC passes to slot hooks
    /// as `RAUC_BUNDLE_SPKI_HASHES` (rauc src/signature.c `get_pubkey_hash`).
    pub fn spki_sha256(&self) -> Vec<String> {
        use sha2::Digest;
        self.chain
            .iter()
            .filter_map(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
            .map(|der| sha2::Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
            .collect()
    }
}

/// Why no path could be validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFailure {
    /// No acceptable path: the signer is not trusted (9019).
    Invalid(String),
    /// A certificate of the only acceptable path is revoked (9019).
    Revoked(String),
    /// Revocation is required and the status of a certificate is unknown: no current CRL
    /// by its issuer (could not check, 9002).
    RevocationUnknown(String),
}

impl std::error::Error for ChainFailure {}

impl crate::fault::Fault for ChainFailure {
    fn kind(&self) -> &'static str {
        match self {
            Self::RevocationUnknown(_) => "revocation-unknown",
            Self::Revoked(_) => "revoked",
            Self::Invalid(_) => "untrusted",
        }
    }
    /// Revocation status unknown: could not check (9002); revoked or invalid: 9019.
    fn fault(&self) -> crate::fault::CwmpFault {
        match self {
            Self::RevocationUnknown(_) => crate::fault::CwmpFault::InternalError,
            _ => crate::fault::CwmpFault::FileAuthenticationFailure,
        }
    }
}

impl std::fmt::Display for ChainFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(w) | Self::Revoked(w) | Self::RevocationUnknown(w) => f.write_str(w),
        }
    }
}

/// Certificates and CRLs to validate with, beyond the trust store.
#[derive(Default)]
pub struct Material<'a> {
    /// Candidate intermediates, in any order, unrelated ones allowed (RFC 5652 §5.1
    /// `certificates`, or `check-chain --intermediates`).
    pub certificates: &'a [Certificate],
    /// CRLs in DER (RFC 5652 §10.2.1 `crls`, or `check-chain --crl`).
    pub crls: &'a [Vec<u8>],
}

/// Validate `leaf` for code signing at `time`: a path to a trust anchor of `store`
/// through `material` (and the store's own intermediates), revocation per
/// `policy.check_crl`, and the signer rules of `policy.purpose`.
///
/// Anchors are self-issued CA certificates of the store, or any certificate of it with
/// `policy.allow_partial_chain`. CRLs are taken from the store and `material`; a CRL
/// whose signature no known certificate of its issuer name verifies is ignored. With
/// `check_crl` every certificate of the path but the anchor needs a current CRL (not past
/// its nextUpdate at `time`) from its issuer; without it, CRLs that are present are still
/// honoured (a revoked certificate is never accepted).
pub fn validate(
    leaf: &Certificate,
    material: &Material<'_>,
    store: &Anchors,
    policy: &Policy,
    time: SystemTime,
) -> Result<ValidPath, ChainFailure> {
    let leaf_der = leaf.to_der().map_err(|e| ChainFailure::Invalid(format!("signer certificate: {e}")))?;
    let leaf_der = CertificateDer::from(leaf_der);
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| ChainFailure::Invalid(format!("signer certificate: {}", webpki_text(&e))))?;
    let intermediates: Vec<CertificateDer<'static>> = material
        .certificates
        .iter()
        .chain(store.intermediates())
        .filter_map(|c| c.to_der().ok())
        .map(CertificateDer::from)
        .collect();
    let (anchors, anchor_certs) = store.anchors_for(policy.allow_partial_chain);
    // Every CRL we were given; which of them count is decided per certificate, with the
    // issuer the path actually has (revocation()).
    let crls: Vec<Crl> = material.crls.iter().chain(store.crls()).filter_map(|d| Crl::parse(d).ok()).collect();
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let ours: RefCell<Option<ChainFailure>> = RefCell::new(None);
    let accepted: RefCell<Option<ValidPath>> = RefCell::new(None);
    let verify_path = |p: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let Some(i) = anchors.iter().position(|a| std::ptr::eq(a, p.anchor())) else {
            return Err(webpki::Error::UnknownIssuer);
        };
        let mut chain = vec![leaf.clone()];
        for c in p.intermediate_certificates() {
            chain.push(Certificate::from_der(c.der().as_ref()).map_err(|_| webpki::Error::BadDer)?);
        }
        chain.push(anchor_certs[i].clone());
        let checked = check_path(&chain, policy, time).map_err(ChainFailure::Invalid).and_then(|mut checks| {
            revocation(&chain, &crls, policy, time).map(|c| {
                checks.push(c);
                checks
            })
        });
        match checked {
            Ok(checks) => {
                *accepted.borrow_mut() = Some(ValidPath { chain, checks });
                Ok(())
            }
            Err(failure) => {
                // Keep the gravest reason over all candidate paths: revoked, then could
                // not check, then invalid.
                let mut kept = ours.borrow_mut();
                let rank = |f: &ChainFailure| match f {
                    ChainFailure::Revoked(_) => 2,
                    ChainFailure::RevocationUnknown(_) => 1,
                    ChainFailure::Invalid(_) => 0,
                };
                if kept.as_ref().is_none_or(|k| rank(&failure) >= rank(k)) {
                    *kept = Some(failure);
                }
                // Ranked high by webpki: our reason is reported unless another candidate
                // path failed in a more specific way.
                Err(webpki::Error::CertDistrusted)
            }
        }
    };
    let result = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        &intermediates,
        UnixTime::since_unix_epoch(secs),
        EkuPolicy(policy.purpose),
        None,
        Some(&verify_path),
    );
    match result {
        Ok(_) => accepted.into_inner().ok_or_else(|| ChainFailure::Invalid("path validation gave no path".into())),
        Err(webpki::Error::CertDistrusted) if ours.borrow().is_some() => {
            Err(ours.into_inner().unwrap_or(ChainFailure::Invalid("no acceptable path".into())))
        }
        Err(e) => Err(ChainFailure::Invalid(webpki_text(&e))),
    }
}

/// The checks of RFC 5280 §6.1 that webpki leaves out, on a path it has accepted
/// (`chain`: signer first, anchor last). Returns every check made.
pub fn check_path(chain: &[Certificate], policy: &Policy, time: SystemTime) -> Result<Vec<Check>, String> {
    let mut checks = vec![Check {
        check: "signatures, validity, basicConstraints cA and pathLenConstraint, critical extensions, \
                nameConstraints and extKeyUsage of the signer and intermediates (rustls-webpki)"
            .into(),
        result: "ok".into(),
    }];
    let mut ok = |check: String| checks.push(Check { check, result: "ok".into() });
    let (anchor, below) = chain.split_last().ok_or("empty path")?;
    let name = |c: &Certificate| c.tbs_certificate.subject.to_string();
    for c in chain {
        let mut seen: Vec<Oid> = Vec::new();
        for e in extensions(c) {
            if seen.contains(&e.extn_id) {
                return Err(format!("'{}' carries extension {} twice (RFC 5280 §4.2)", name(c), e.extn_id));
            }
            seen.push(e.extn_id);
        }
    }
    ok("no extension appears twice in a certificate (§4.2)".into());
    // The anchor: webpki keeps only its name, key and name constraints.
    check_anchor(anchor, below.len().saturating_sub(1), policy, time)
        .map_err(|why| format!("trust anchor '{}' {why}", name(anchor)))?;
    ok("trust anchor: v3, CA, valid at the verification time, pathLenConstraint, no unknown critical extension, \
        extended key usage"
        .into());
    // Every issuer may sign certificates (§4.2.1.3, §6.1.4 (n)).
    for ca in &chain[1..] {
        if let Some(ku) = key_usage(ca)? {
            if !ku.contains(KeyUsages::KeyCertSign) {
                return Err(format!("'{}' issues a certificate but its key usage lacks keyCertSign", name(ca)));
            }
        }
    }
    ok("every issuer's key usage, when present, includes keyCertSign (§6.1.4 (n))".into());
    // Each link: the authority key identifier names the issuer's key (§4.2.1.1).
    for pair in chain.windows(2) {
        let (child, issuer) = (&pair[0], &pair[1]);
        if let Some(aki) = authority_key_identifier(child)? {
            if let (Some(kid), Some(ski)) = (&aki.key_identifier, subject_key_identifier(issuer)?) {
                if kid.as_bytes() != ski.as_slice() {
                    return Err(format!(
                        "'{}' names another issuer key (authorityKeyIdentifier differs from the subjectKeyIdentifier of '{}')",
                        name(child),
                        name(issuer)
                    ));
                }
            }
            if let Some(serial) = &aki.authority_cert_serial_number {
                if *serial != issuer.tbs_certificate.serial_number {
                    return Err(format!(
                        "'{}' names another issuer certificate (authorityCertSerialNumber)",
                        name(child)
                    ));
                }
            }
        }
    }
    ok("authorityKeyIdentifier of each certificate matches its issuer (§4.2.1.1)".into());
    // The signer (§4.2.1.3, §4.2.1.12, RAUC's check-purpose).
    let leaf = &chain[0];
    if let Some(ku) = key_usage(leaf)? {
        let allowed = match policy.purpose {
            Purpose::CodeSign => ku.contains(KeyUsages::DigitalSignature),
            _ => ku.contains(KeyUsages::DigitalSignature) || ku.contains(KeyUsages::NonRepudiation),
        };
        if !allowed {
            return Err(match policy.purpose {
                Purpose::CodeSign => "signer's key usage lacks digitalSignature".into(),
                _ => "signer's key usage allows neither digitalSignature nor nonRepudiation".into(),
            });
        }
    }
    ok("signer's key usage, when present, allows signing".into());
    if policy.purpose == Purpose::CodeSign && !extended_key_usage(leaf)?.is_some_and(|u| u.contains(&KP_CODE_SIGNING)) {
        return Err("signer's extended key usage lacks codeSigning (check-purpose=codesign)".into());
    }
    if policy.purpose != Purpose::Any {
        ok(format!(
            "purpose {}: every extended key usage present includes it{}",
            policy.purpose_name(),
            if policy.purpose == Purpose::CodeSign { ", and the signer has one" } else { "" }
        ));
    }
    Ok(checks)
}

/// The anchor's own checks (webpki sees only its name and key): X.509 v3, no unsupported
/// critical extension, valid at `time`, a CA whose pathLenConstraint allows the
/// `intermediates` below it, and an extended key usage, if any, with the purpose.
fn check_anchor(anchor: &Certificate, intermediates: usize, policy: &Policy, time: SystemTime) -> Result<(), String> {
    if anchor.tbs_certificate.version != x509_cert::Version::V3 {
        return Err("is not an X.509 v3 certificate".into());
    }
    if let Some(e) = extensions(anchor).iter().find(|e| e.critical && !PROCESSED.contains(&e.extn_id)) {
        return Err(format!("has an unsupported critical extension {}", e.extn_id));
    }
    let validity = &anchor.tbs_certificate.validity;
    if time < validity.not_before.to_system_time() {
        return Err("is not yet valid at the verification time".into());
    }
    if time > validity.not_after.to_system_time() {
        return Err("expired at the verification time".into());
    }
    let bc = basic_constraints(anchor)?;
    if !bc.as_ref().is_some_and(|b| b.ca) {
        return Err("is not a CA (basicConstraints cA is not set)".into());
    }
    if let Some(len) = bc.and_then(|b| b.path_len_constraint) {
        if intermediates > usize::from(len) {
            return Err(format!("allows {len} intermediate CAs (pathLenConstraint), the path has {intermediates}"));
        }
    }
    if policy.purpose != Purpose::Any {
        if let Some(eku) = extended_key_usage(anchor)? {
            if !eku.contains(&policy.purpose_oid()) {
                return Err(format!("has an extended key usage without {}", policy.purpose_name()));
            }
        }
    }
    Ok(())
}

/// Is `cert` usable as a trust anchor of a device (a root)? A self-issued X.509 v3 CA
/// certificate whose key usage, when present, includes keyCertSign, with no critical
/// extension we do not process (RFC 5280 §3.2, §4.2.1.3, §4.2.1.9).
pub fn check_root(cert: &Certificate) -> Result<(), String> {
    let tbs = &cert.tbs_certificate;
    if tbs.version != x509_cert::Version::V3 {
        return Err("not an X.509 v3 certificate".into());
    }
    if tbs.subject != tbs.issuer {
        return Err("not self-issued (its issuer is another certificate)".into());
    }
    if !basic_constraints(cert)?.is_some_and(|b| b.ca) {
        return Err("not a CA certificate (basicConstraints cA is not set)".into());
    }
    if key_usage(cert)?.is_some_and(|ku| !ku.contains(KeyUsages::KeyCertSign)) {
        return Err("its key usage lacks keyCertSign".into());
    }
    if let Some(e) = extensions(cert).iter().find(|e| e.critical && !PROCESSED.contains(&e.extn_id)) {
        return Err(format!("unsupported critical extension {}", e.extn_id));
    }
    Ok(())
}

/// Is `cert` self-issued (subject equals issuer, RFC 5280 §3.2)?
pub fn self_issued(cert: &Certificate) -> bool {
    cert.tbs_certificate.subject == cert.tbs_certificate.issuer
}

pub(super) fn extensions(c: &Certificate) -> &[x509_cert::ext::Extension] {
    c.tbs_certificate.extensions.as_deref().unwrap_or_default()
}

pub(super) fn extension<T: for<'a> Decode<'a>>(c: &Certificate, id: Oid, what: &str) -> Result<Option<T>, String> {
    match extensions(c).iter().find(|e| e.extn_id == id) {
        None => Ok(None),
        Some(e) => T::from_der(e.extn_value.as_bytes())
            .map(Some)
            .map_err(|err| format!("'{}': {what}: {err}", c.tbs_certificate.subject)),
    }
}

fn basic_constraints(c: &Certificate) -> Result<Option<BasicConstraints>, String> {
    extension(c, rfc5280::ID_CE_BASIC_CONSTRAINTS, "basicConstraints")
}

pub(super) fn key_usage(c: &Certificate) -> Result<Option<der::flagset::FlagSet<KeyUsages>>, String> {
    Ok(extension::<KeyUsage>(c, rfc5280::ID_CE_KEY_USAGE, "keyUsage")?.map(|k| k.0))
}

fn extended_key_usage(c: &Certificate) -> Result<Option<Vec<Oid>>, String> {
    Ok(extension::<ExtendedKeyUsage>(c, rfc5280::ID_CE_EXT_KEY_USAGE, "extKeyUsage")?.map(|u| u.0))
}

fn authority_key_identifier(c: &Certificate) -> Result<Option<AuthorityKeyIdentifier>, String> {
    extension(c, rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER, "authorityKeyIdentifier")
}

fn subject_key_identifier(c: &Certificate) -> Result<Option<Vec<u8>>, String> {
    Ok(extension::<SubjectKeyIdentifier>(c, rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER, "subjectKeyIdentifier")?
        .map(|s| s.0.as_bytes().to_vec()))
}

impl Policy {
    fn purpose_oid(&self) -> Oid {
        match self.purpose {
            Purpose::CodeSign => KP_CODE_SIGNING,
            _ => KP_EMAIL_PROTECTION,
        }
    }

    fn purpose_name(&self) -> &'static str {
        match self.purpose {
            Purpose::CodeSign => "codeSigning",
            Purpose::SmimeSign => "emailProtection",
            Purpose::Any => "any",
        }
    }
}

/// Applied by webpki to every certificate of the path but the anchor: an extended key
/// usage, if present, must include the purpose (RAUC's check-purpose, OpenSSL's
/// S/MIME signing purpose).
struct EkuPolicy(Purpose);

impl webpki::ExtendedKeyUsageValidator for EkuPolicy {
    #[allow(deprecated)] // the context variant cannot be built outside webpki
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let want: &[u8] = match self.0 {
            Purpose::Any => return Ok(()),
            Purpose::SmimeSign => &[0x2b, 6, 1, 5, 5, 7, 3, 4],
            Purpose::CodeSign => &[0x2b, 6, 1, 5, 5, 7, 3, 3],
        };
        let mut empty = true;
        for id in iter {
            empty = false;
            if id? == webpki::KeyPurposeId::new(want) {
                return Ok(());
            }
        }
        if empty {
            Ok(())
        } else {
            Err(webpki::Error::RequiredEkuNotFound)
        }
    }
}

/// webpki's errors in words (RFC 5280 terms).
#[allow(deprecated)] // match both the old and the context-carrying variants
fn webpki_text(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => "no path to a trust anchor (untrusted root, missing intermediate, or the keyring \
                             holds no self-signed root: allow-partial-chain is off)"
            .into(),
        E::CertExpired { .. } => "a certificate of the path expired at the verification time".into(),
        E::CertNotValidYet { .. } => "a certificate of the path is not yet valid at the verification time".into(),
        E::InvalidCertValidity => "a certificate's notBefore is after its notAfter".into(),
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => {
            "an extended key usage in the path does not include the required purpose".into()
        }
        E::EmptyEkuExtension => "an extended key usage extension is empty".into(),
        E::UnsupportedSignatureAlgorithm | E::UnsupportedSignatureAlgorithmContext(_) => {
            "a certificate of the path is signed with a refused algorithm (SHA-2 with RSA >= 2048 or ECDSA P-256/P-384 required)"
                .into()
        }
        E::UnsupportedSignatureAlgorithmForPublicKey | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "a certificate of the path is signed by a refused key (RSA below 2048 bits, or an unsupported curve)".into()
        }
        E::InvalidSignatureForPublicKey => "a certificate's signature does not verify with its issuer's key".into(),
        E::CaUsedAsEndEntity => "the signer certificate is a CA (basicConstraints cA set)".into(),
        E::EndEntityUsedAsCa => "an issuer is not a CA (basicConstraints cA missing or false)".into(),
        E::PathLenConstraintViolated => "pathLenConstraint of an issuer is exceeded".into(),
        E::UnsupportedCriticalExtension => "a certificate of the path has an unsupported critical extension".into(),
        E::UnsupportedCertVersion => "a certificate of the path is not X.509 v3".into(),
        E::NameConstraintViolation => {
            "a name violates an issuer's nameConstraints (directoryName, rfc822Name and URI constraints are refused)"
                .into()
        }
        E::CertRevoked => "a certificate of the path is revoked".into(),
        E::UnknownRevocationStatus => "no current CRL from the issuer of a certificate of the path (check-crl)".into(),
        E::CrlExpired { .. } => "the issuer's CRL is past its nextUpdate (check-crl)".into(),
        E::IssuerNotCrlSigner => "a CRL's issuer lacks the cRLSign key usage".into(),
        E::MaximumSignatureChecksExceeded | E::MaximumPathBuildCallsExceeded => {
            "path building gave up (too many candidate certificates)".into()
        }
        other => format!("certificate path: {other:?}"),
    }
}
