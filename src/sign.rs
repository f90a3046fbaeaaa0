//! Making CMS SignedData (build hosts): RSA PKCS#1 v1.5 and ECDSA P-256/P-384 signers,
//! several per package, attached (verity manifests) or detached (plain bundles, TR-069).

use crate::digest::DigestAlg;
use crate::verify::digest_oid;
use anyhow::{anyhow, bail, Context};
use cms::builder::{create_signing_time_attribute, SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use const_oid::db::rfc5911;
use der::{Any, Decode, DecodePem, Encode, Tag};
use pkcs8::DecodePrivateKey;
use spki::{AlgorithmIdentifierOwned, EncodePublicKey};
use std::path::Path;
use x509_cert::Certificate;

enum Key {
    Rsa(rsa::RsaPrivateKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A signer certificate with its private key.
pub struct SigningKey {
    cert: Certificate,
    key: Key,
    legacy_sha1: bool,
}

impl SigningKey {
    /// Load a PEM certificate and its unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let cert =
            Certificate::from_pem(&cert_pem).with_context(|| format!("{}: not a PEM certificate", cert.display()))?;
        let key_pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
        let key = parse_key(&key_pem).with_context(|| format!("{}", key.display()))?;
        let spki = match &key {
            Key::Rsa(k) => k.to_public_key().to_public_key_der(),
            Key::P256(k) => k.verifying_key().to_public_key_der(),
            Key::P384(k) => k.verifying_key().to_public_key_der(),
        }
        .map_err(|e| anyhow!("public key: {e}"))?;
        if spki.as_bytes() != cert.tbs_certificate.subject_public_key_info.to_der()? {
            bail!("the private key does not belong to the certificate");
        }
        Ok(Self { cert, key, legacy_sha1: false })
    }

    /// Sign with SHA-1 (RSA only): strictly conformant TR-069 packages for legacy peers.
    pub fn with_legacy_sha1(mut self) -> anyhow::Result<Self> {
        if !matches!(self.key, Key::Rsa(_)) {
            bail!("SHA-1 legacy signatures need an RSA key (TR-069 Annex E)");
        }
        self.legacy_sha1 = true;
        Ok(self)
    }

    /// The digest this signer uses.
    pub fn digest(&self) -> DigestAlg {
        match (&self.key, self.legacy_sha1) {
            (Key::Rsa(_), true) => DigestAlg::Sha1,
            (Key::Rsa(_) | Key::P256(_), _) => DigestAlg::Sha256,
            (Key::P384(_), _) => DigestAlg::Sha384,
        }
    }

    /// The certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }
}

fn parse_key(pem: &str) -> anyhow::Result<Key> {
    if pem.contains("ENCRYPTED PRIVATE KEY") {
        bail!("encrypted private keys are not supported");
    }
    if pem.contains("BEGIN RSA PRIVATE KEY") {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        return Ok(Key::Rsa(rsa::RsaPrivateKey::from_pkcs1_pem(pem)?));
    }
    if pem.contains("BEGIN EC PRIVATE KEY") {
        if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
            return Ok(Key::P256(k.into()));
        }
        return Ok(Key::P384(
            p384::SecretKey::from_sec1_pem(pem).map_err(|e| anyhow!("EC key (P-256 or P-384 expected): {e}"))?.into(),
        ));
    }
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
        return Ok(Key::Rsa(k));
    }
    if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        return Ok(Key::P256(k));
    }
    if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        return Ok(Key::P384(k));
    }
    bail!("not an unencrypted RSA, P-256 or P-384 private key in PEM")
}

/// What the signatures cover.
pub enum CmsContent<'a> {
    /// The content is carried inside the CMS.
    Attached(&'a [u8]),
    /// The content stays outside; its digests, one per algorithm the signers use.
    Detached(&'a [(DigestAlg, Vec<u8>)]),
}

/// A DER ContentInfo with one SignerInfo per key, the signers' certificates and
/// `intermediates`, and `crls` in its `crls` field.
pub fn sign(
    signers: &[SigningKey],
    intermediates: &[Certificate],
    crls: &[x509_cert::crl::CertificateList],
    content: CmsContent<'_>,
) -> anyhow::Result<Vec<u8>> {
    if signers.is_empty() {
        bail!("at least one --cert/--key pair is needed");
    }
    let econtent = match content {
        CmsContent::Attached(b) => Some(Any::new(Tag::OctetString, b)?),
        CmsContent::Detached(_) => None,
    };
    let eci = EncapsulatedContentInfo { econtent_type: rfc5911::ID_DATA, econtent };
    let mut b = SignedDataBuilder::new(&eci);
    let mut seen = Vec::new();
    for c in signers.iter().map(|s| &s.cert).chain(intermediates) {
        let der = c.to_der()?;
        if !seen.contains(&der) {
            b.add_certificate(CertificateChoices::Certificate(c.clone())).map_err(|e| anyhow!("{e}"))?;
            seen.push(der);
        }
    }
    for crl in crls {
        b.add_crl(cms::revocation::RevocationInfoChoice::Crl(crl.clone())).map_err(|e| anyhow!("{e}"))?;
    }
    let mut algs = Vec::new();
    for s in signers {
        let alg = s.digest();
        let digest_alg = AlgorithmIdentifierOwned { oid: digest_oid(alg), parameters: None };
        if !algs.contains(&alg) {
            b.add_digest_algorithm(digest_alg.clone()).map_err(|e| anyhow!("{e}"))?;
            algs.push(alg);
        }
        let md = match content {
            CmsContent::Detached(d) => Some(
                d.iter()
                    .find(|(a, _)| *a == alg)
                    .map(|(_, v)| v.as_slice())
                    .ok_or_else(|| anyhow!("no {alg} digest"))?,
            ),
            CmsContent::Attached(_) => None,
        };
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: s.cert.tbs_certificate.issuer.clone(),
            serial_number: s.cert.tbs_certificate.serial_number.clone(),
        });
        let time = create_signing_time_attribute().map_err(|e| anyhow!("{e}"))?;
        macro_rules! add {
            ($key:expr, $sig:ty) => {{
                let mut sib = SignerInfoBuilder::new($key, sid, digest_alg, &eci, md).map_err(|e| anyhow!("{e}"))?;
                sib.add_signed_attribute(time).map_err(|e| anyhow!("{e}"))?;
                b.add_signer_info::<_, $sig>(sib).map_err(|e| anyhow!("signing: {e}"))?;
            }};
        }
        match (&s.key, alg) {
            (Key::Rsa(k), DigestAlg::Sha1) => {
                let k = rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(k.clone());
                add!(&k, rsa::pkcs1v15::Signature)
            }
            (Key::Rsa(k), _) => {
                let k = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k.clone());
                add!(&k, rsa::pkcs1v15::Signature)
            }
            (Key::P256(k), _) => add!(k, p256::ecdsa::DerSignature),
            (Key::P384(k), _) => add!(k, p384::ecdsa::DerSignature),
        }
    }
    let ci = b.build().map_err(|e| anyhow!("{e}"))?;
    let der = ci.to_der()?;
    // Self-check: what we wrote must parse.
    cms::content_info::ContentInfo::from_der(&der)?;
    Ok(der)
}
