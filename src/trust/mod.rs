//! Trust anchors: the operator root certificates signatures must chain to.
//!
//! On a device they come from the TPM (R3: roots in the Trusted Environment), see
//! [`store`]; a PEM keyring is used only where the configuration names one explicitly
//! (RAUC's `[keyring] path=`: build hosts, development) or `info --keyring` asks for it.

pub mod store;

use std::fmt;
use thiserror::Error;
use x509_cert::der::{DecodePem, Encode};
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

/// A set of trust anchors.
pub struct Anchors {
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    certs: Vec<Certificate>,
    source: TrustSource,
}

impl Anchors {
    /// Anchors from concatenated PEM certificates.
    pub fn from_pem(text: &[u8], source: TrustSource) -> Result<Self, TrustError> {
        let text = String::from_utf8_lossy(text);
        let mut ders = Vec::new();
        let mut rest = text.as_ref();
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        while let Some(b) = rest.find(BEGIN) {
            let tail = &rest[b..];
            let e = tail
                .find(END)
                .ok_or(TrustError::BadCertificate { index: ders.len(), why: "unterminated PEM block".into() })?;
            let block = &tail[..e + END.len()];
            let cert = Certificate::from_pem(block.as_bytes())
                .map_err(|e| TrustError::BadCertificate { index: ders.len(), why: e.to_string() })?;
            ders.push(cert.to_der().map_err(|e| TrustError::BadCertificate { index: ders.len(), why: e.to_string() })?);
            rest = &tail[e + END.len()..];
        }
        Self::from_der_list(ders, source)
    }

    /// Anchors from DER certificates.
    pub fn from_der_list(ders: Vec<Vec<u8>>, source: TrustSource) -> Result<Self, TrustError> {
        if ders.is_empty() {
            return Err(TrustError::Empty);
        }
        let mut anchors = Vec::new();
        let mut certs = Vec::new();
        for (index, der) in ders.into_iter().enumerate() {
            let bad = |why: String| TrustError::BadCertificate { index, why };
            use x509_cert::der::Decode;
            certs.push(Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?);
            let cd = rustls_pki_types::CertificateDer::from(der);
            let a = webpki::anchor_from_trusted_cert(&cd).map_err(|e| bad(format!("{e:?}")))?.to_owned();
            anchors.push(a);
        }
        Ok(Self { anchors, certs, source })
    }

    /// For the path validator.
    pub fn webpki(&self) -> &[rustls_pki_types::TrustAnchor<'static>] {
        &self.anchors
    }

    /// The anchor certificates.
    pub fn certificates(&self) -> &[Certificate] {
        &self.certs
    }

    /// Where they came from.
    pub fn source(&self) -> &TrustSource {
        &self.source
    }
}
