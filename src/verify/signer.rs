//! One SignerInfo: is its signature sound (RFC 5652 §5.4 to §5.6), and may its signer
//! sign packages (the chain, the key, the common name)?

use super::*;

pub(crate) type Checked = ((DigestAlg, ContentCheck), bool);

/// A signature that verified (or, without signed attributes, that is checkable against
/// the content): digest algorithm, the content check, signingTime.
pub(crate) type Sound = (DigestAlg, ContentCheck, Option<SystemTime>);

/// Is this SignerInfo's signature sound? `Ok(Some(..))`: it verified; `Ok(None)`: it
/// cannot be checked (the reason is in `report.status`); `Err`: checkable and wrong.
pub(crate) fn sound_signature(
    cms: &SignedCms,
    si: &SignerInfo,
    cert: Option<&Certificate>,
    allow_sha1: bool,
    report: &mut SignerReport,
) -> Result<Option<Sound>, String> {
    let skip = |report: &mut SignerReport, why: String| {
        report.status = format!("skipped: {why}");
        Ok(None)
    };
    let alg = match algs::digest_alg(&si.digest_alg, allow_sha1) {
        Ok(a) => a,
        Err(why) => return skip(report, why),
    };
    report.digest_algorithm = alg.name().into();
    let Some(cert) = cert else {
        return skip(report, "signer certificate is not in the SignedData".into());
    };
    let key = match algs::PublicKey::from_spki(&cert.tbs_certificate.subject_public_key_info) {
        Ok(k) => k,
        Err(why) => return skip(report, why),
    };
    let sig_alg = match key.algorithm(&si.signature_algorithm, alg) {
        Ok(a) => a,
        Err(why) => return skip(report, why),
    };
    let Some(attrs) = &si.signed_attrs else {
        // RFC 5652 §5.3: signedAttrs MUST be present unless the content type is id-data;
        // without them the signature is over the content itself (§5.4).
        if cms.sd.encap_content_info.econtent_type != rfc5911::ID_DATA {
            return Err("SignerInfo without signed attributes over content that is not id-data".into());
        }
        let check = ContentCheck::Signature {
            cert: Box::new(cert.clone()),
            algorithm: si.signature_algorithm.clone(),
            signature: si.signature.as_bytes().to_vec(),
        };
        return Ok(Some((alg, check, None)));
    };
    // Signed attributes: exactly one contentType equal to eContentType, exactly one messageDigest.
    let single = |oid: Oid| -> Result<Option<&der::Any>, String> {
        let mut found = attrs.iter().filter(|a| a.oid == oid);
        let a = match (found.next(), found.next()) {
            (None, _) => return Ok(None),
            (Some(a), None) => a,
            _ => return Err(format!("signed attribute {oid} appears twice")),
        };
        match a.values.len() {
            1 => Ok(a.values.get(0)),
            _ => Err(format!("signed attribute {oid} must have exactly one value")),
        }
    };
    let ct = single(rfc5911::ID_CONTENT_TYPE)?.ok_or("signed attributes lack contentType")?;
    let ct: Oid = ct.decode_as().map_err(|e| format!("contentType: {e}"))?;
    if ct != cms.sd.encap_content_info.econtent_type {
        return Err("signed contentType differs from the encapsulated content type".into());
    }
    let md = single(rfc5911::ID_MESSAGE_DIGEST)?.ok_or("signed attributes lack messageDigest")?;
    let md = md.decode_as::<der::asn1::OctetString>().map_err(|e| format!("messageDigest: {e}"))?.as_bytes().to_vec();
    if md.len() != alg.output_len() {
        return Err(format!("messageDigest has {} bytes, {alg} has {}", md.len(), alg.output_len()));
    }
    let signing_time = match single(rfc5911::ID_SIGNING_TIME)? {
        None => None,
        Some(t) => Some(
            t.to_der()
                .and_then(|d| x509_cert::time::Time::from_der(&d))
                .map_err(|e| format!("signingTime: {e}"))?
                .to_system_time(),
        ),
    };
    let signed = attrs.to_der().map_err(|e| e.to_string())?;
    if !key.verify(&sig_alg, &signed, si.signature.as_bytes()) {
        return Err("signature value does not match the signed attributes and the signer's key".into());
    }
    Ok(Some((alg, ContentCheck::MessageDigest(md), signing_time)))
}

/// `Ok(Some(((alg, check), trusted)))` when the signature is sound, `Ok(None)` when the
/// signer could not be checked (status set), `Err` when it is checkable and wrong.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_one(
    cms: &SignedCms,
    si: &SignerInfo,
    cert: Option<&Certificate>,
    material: &Material<'_>,
    anchors: &Anchors,
    policy: &Policy,
    now: SystemTime,
    report: &mut SignerReport,
) -> Result<Option<Checked>, String> {
    let Some((alg, check, signing_time)) = sound_signature(cms, si, cert, policy.allow_sha1, report)? else {
        return Ok(None);
    };
    let Some(cert) = cert else { return Ok(None) };
    // The signature is sound; now: is the signer trusted?
    let time = if policy.use_signing_time {
        match signing_time {
            Some(t) => t,
            None => {
                report.status = "skipped: use-bundle-signing-time is set but the signature has no signingTime".into();
                return Ok(Some(((alg, check), false)));
            }
        }
    } else {
        now
    };
    match check_signer(cert, material, anchors, policy, time) {
        Ok(valid) => {
            report.path = valid.subjects();
            report.spki_sha256 = valid.spki_sha256();
            Ok(Some(((alg, check), true)))
        }
        Err(failure) => {
            report.revocation_unknown = matches!(failure, ChainFailure::RevocationUnknown(_));
            report.status = format!("skipped: {failure}");
            Ok(Some(((alg, check), false)))
        }
    }
}

/// May `cert` sign packages at `time`? Its key is one we accept (RSA >= 2048, P-256,
/// P-384), a path to an anchor of `anchors` validates (RFC 5280 §6, [`chain::validate`])
/// and its common name is allowed. The one signer check of package verification and of
/// `check-chain`.
pub fn check_signer(
    cert: &Certificate,
    material: &Material<'_>,
    anchors: &Anchors,
    policy: &Policy,
    time: SystemTime,
) -> Result<ValidPath, ChainFailure> {
    algs::PublicKey::from_spki(&cert.tbs_certificate.subject_public_key_info)
        .map_err(|why| ChainFailure::Invalid(format!("signer key: {why}")))?;
    let mut valid = chain::validate(cert, material, anchors, policy, time)?;
    if let Some(cns) = &policy.allowed_signer_cns {
        let cn = common_name(cert);
        if !cn.as_ref().is_some_and(|cn| cns.iter().any(|a| a == cn)) {
            return Err(ChainFailure::Invalid(format!("common name {cn:?} is not in allowed-signer-cns")));
        }
        valid.checks.push(Check { check: format!("common name {cn:?} is in allowed-signer-cns"), result: "ok".into() });
    }
    Ok(valid)
}

pub(crate) fn identifies(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(is) => {
            is.issuer == cert.tbs_certificate.issuer && is.serial_number == cert.tbs_certificate.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => cert
            .tbs_certificate
            .extensions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|e| e.extn_id == rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
            .any(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).is_ok_and(|s| s.0 == ski.0)),
    }
}

pub(crate) fn sid_text(sid: &SignerIdentifier) -> String {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(is) => {
            format!("issuer '{}' serial {}", is.issuer, is.serial_number)
        }
        SignerIdentifier::SubjectKeyIdentifier(s) => {
            format!("key id {}", hex::encode(s.0.as_bytes()))
        }
    }
}

/// The first common name in a certificate's subject.
pub fn common_name(cert: &Certificate) -> Option<String> {
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == const_oid::db::rfc4519::CN {
                if let Ok(s) = atv.value.decode_as::<der::asn1::Utf8StringRef<'_>>() {
                    return Some(s.as_str().to_string());
                }
                if let Ok(s) = atv.value.decode_as::<der::asn1::PrintableStringRef<'_>>() {
                    return Some(s.as_str().to_string());
                }
            }
        }
    }
    None
}

/// One SignerInfo checked against a set of candidate signers, over given content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// No candidate is the signer it names (its sid, as text).
    NoSigner(String),
    /// The candidate's signature covers the content.
    Covers {
        /// The signer's subject.
        subject: String,
    },
    /// The signature verifies, over other content.
    OtherContent {
        /// The signer's subject.
        subject: String,
    },
    /// The signature cannot be checked (an algorithm or attribute this agent refuses).
    Skipped {
        /// The signer's subject.
        subject: String,
        /// Why.
        why: String,
    },
}

/// Check every SignerInfo of `cms` whose signer is among `candidates` (matched by sid,
/// RFC 5652 §5.3) over `content` (RFC 5652 §5.4 and §5.6, signed attributes included).
/// No chain, no validity period: for callers that hold the signers themselves (root
/// endorsement, where they are the current roots).
///
/// Errors: a signature that can be checked and is wrong (the message says why).
pub fn signature_checks(
    cms: &SignedCms,
    candidates: &[Certificate],
    content: &[u8],
) -> Result<Vec<SignatureCheck>, String> {
    let mut out = Vec::new();
    for si in cms.sd.signer_infos.0.iter() {
        let Some(signer) = candidates.iter().find(|c| identifies(&si.sid, c)) else {
            out.push(SignatureCheck::NoSigner(sid_text(&si.sid)));
            continue;
        };
        let mut report = SignerReport {
            subject: signer.tbs_certificate.subject.to_string(),
            issuer: String::new(),
            digest_algorithm: String::new(),
            status: String::new(),
            path: Vec::new(),
            revocation_unknown: false,
            spki_sha256: Vec::new(),
        };
        let subject = report.subject.clone();
        out.push(match sound_signature(cms, si, Some(signer), false, &mut report)? {
            Some((alg, check, _)) if check.holds(alg, &alg.digest(content)) => SignatureCheck::Covers { subject },
            Some(_) => SignatureCheck::OtherContent { subject },
            None => SignatureCheck::Skipped { subject, why: report.status },
        });
    }
    Ok(out)
}
