//! Trust anchors as path validation uses them: the operator root certificates (and, in a
//! keyring, intermediates and CRLs), loaded from PEM or DER. Where they come from (the
//! TPM's root store, a keyring file) is [`crate::trust`]'s business.

use std::fmt;
use thiserror::Error;
use x509_cert::der;
use x509_cert::Certificate;

/// Where the anchors came from (reported as `trust-source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustSource {
    /// A PEM file named in the configuration or on the command line.
    Keyring(String),
    /// NV indices of the TPM.
    Tpm,
}

impl fmt::Display for TrustSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keyring(p) => write!(f, "keyring:{p}"),
            Self::Tpm => f.write_str("tpm"),
        }
    }
}

/// Why anchors could not be loaded.
#[derive(Debug, Error)]
pub enum TrustError {
    /// The keyring text holds no certificate.
    #[error("keyring holds no certificate")]
    Empty,
    /// A PEM block is not a certificate.
    #[error("keyring certificate {index}: {why}")]
    BadCertificate {
        /// 0-based index in the file.
        index: usize,
        /// What failed.
        why: String,
    },
}

impl crate::fault::Fault for TrustError {
    fn kind(&self) -> &'static str {
        "no-trust-anchors"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::InternalError
    }
}

/// A trust store: the certificates of a keyring (or the TPM's roots) and the CRLs that
/// come with it.
///
/// Self-issued certificates are the anchors; the other certificates of a keyring serve as
/// intermediates, or as anchors too where the policy allows partial chains (RAUC's
/// `allow-partial-chain`, OpenSSL's `X509_V_FLAG_PARTIAL_CHAIN`).
pub struct Anchors {
    /// Anchors of self-issued certificates, then of the others (for partial chains).
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    /// Their certificates, index for index.
    ordered: Vec<Certificate>,
    /// How many of `anchors` are self-issued.
    roots: usize,
    /// Every certificate, in file order.
    certs: Vec<Certificate>,
    /// CRLs (DER): from the keyring file and from `add_crls`.
    crls: Vec<Vec<u8>>,
    source: TrustSource,
}

/// PEM blocks labelled `label` in `text`, decoded (RFC 7468).
pub fn pem_blocks(text: &[u8], label: &str) -> Result<Vec<Vec<u8>>, String> {
    let text = String::from_utf8_lossy(text);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(b) = rest.find(&begin) {
        let tail = &rest[b..];
        let e = tail.find(&end).ok_or_else(|| format!("{label} {}: unterminated PEM block", out.len()))?;
        let block = &tail[..e + end.len()];
        let (l, der) = der::pem::decode_vec(block.as_bytes()).map_err(|e| format!("{label} {}: {e}", out.len()))?;
        if l != label {
            return Err(format!("{label} {}: PEM label {l}", out.len()));
        }
        out.push(der);
        rest = &tail[e + end.len()..];
    }
    Ok(out)
}

/// CRLs from a file's bytes: PEM (`X509 CRL` blocks) or one DER CertificateList.
pub fn crls_from_bytes(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let crls = if bytes.starts_with(b"0") { vec![bytes.to_vec()] } else { pem_blocks(bytes, "X509 CRL")? };
    if crls.is_empty() {
        return Err("holds no CRL (PEM 'X509 CRL' or DER)".into());
    }
    for (i, c) in crls.iter().enumerate() {
        super::Crl::parse(c).map_err(|e| format!("CRL {i}: {e}"))?;
    }
    Ok(crls)
}

impl Anchors {
    /// A store from concatenated PEM certificates; `X509 CRL` blocks in the same text are
    /// its CRLs (as in a RAUC keyring).
    pub fn from_pem(text: &[u8], source: TrustSource) -> Result<Self, TrustError> {
        let ders = pem_blocks(text, "CERTIFICATE").map_err(|why| TrustError::BadCertificate { index: 0, why })?;
        let crls = pem_blocks(text, "X509 CRL").map_err(|why| TrustError::BadCertificate { index: 0, why })?;
        let mut a = Self::from_der_list(ders, source)?;
        a.crls = crls;
        Ok(a)
    }

    /// A store from DER certificates.
    pub fn from_der_list(ders: Vec<Vec<u8>>, source: TrustSource) -> Result<Self, TrustError> {
        if ders.is_empty() {
            return Err(TrustError::Empty);
        }
        let mut certs = Vec::new();
        let mut first = Vec::new();
        let mut second = Vec::new();
        for (index, der) in ders.into_iter().enumerate() {
            let bad = |why: String| TrustError::BadCertificate { index, why };
            use x509_cert::der::Decode;
            let cert = Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
            let cd = rustls_pki_types::CertificateDer::from(der);
            let a = webpki::anchor_from_trusted_cert(&cd).map_err(|e| bad(format!("{e:?}")))?.to_owned();
            if super::self_issued(&cert) {
                first.push((a, cert.clone()));
            } else {
                second.push((a, cert.clone()));
            }
            certs.push(cert);
        }
        let roots = first.len();
        let (anchors, ordered) = first.into_iter().chain(second).unzip();
        Ok(Self { anchors, ordered, roots, certs, crls: Vec::new(), source })
    }

    /// Add CRLs (DER) to the store.
    pub fn add_crls(&mut self, crls: impl IntoIterator<Item = Vec<u8>>) {
        self.crls.extend(crls);
    }

    /// The anchors for path validation and their certificates, index for index: the
    /// self-issued ones, or every certificate with `partial`.
    pub fn anchors_for(&self, partial: bool) -> (&[rustls_pki_types::TrustAnchor<'static>], &[Certificate]) {
        let n = if partial { self.anchors.len() } else { self.roots };
        (&self.anchors[..n], &self.ordered[..n])
    }

    /// Certificates of the store that are not self-issued (intermediates of a keyring).
    pub fn intermediates(&self) -> &[Certificate] {
        &self.ordered[self.roots..]
    }

    /// Every certificate of the store.
    pub fn certificates(&self) -> &[Certificate] {
        &self.certs
    }

    /// The store's CRLs (DER).
    pub fn crls(&self) -> &[Vec<u8>] {
        &self.crls
    }

    /// Where they came from.
    pub fn source(&self) -> &TrustSource {
        &self.source
    }
}
