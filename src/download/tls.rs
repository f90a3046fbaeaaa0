//! TLS for downloads: rustls with ring, the server checked against the system's CAs or
//! the request's `tls-ca`, an optional client certificate (mutual TLS), and the errors
//! TLS ends a download with.

use super::{Options, TransferError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for `o`; `cert_requested` is set when a server asks for a
/// client certificate.
///
/// Errors: [`TransferError::Options`] for unusable PEM, a key without a certificate or
/// the reverse, or no CA at all.
pub(super) fn client_config(o: &Options, cert_requested: Arc<AtomicBool>) -> Result<ClientConfig, TransferError> {
    let bad = |m: String| TransferError::Options(m);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?;
    let builder = if o.tls_no_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        match &o.tls_ca {
            Some(pem) => {
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|e| bad(format!("tls-ca: {e}")))?;
                    roots.add(c).map_err(|e| bad(format!("tls-ca: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(bad("tls-ca holds no certificate".into()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    let key = match (&o.tls_cert, &o.tls_key) {
        (Some(c), Some(k)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(c)
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("tls-cert: {e}")))?;
            if chain.is_empty() {
                return Err(bad("tls-cert holds no certificate".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(k).map_err(|e| bad(format!("tls-key: {e}")))?;
            let signer =
                rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(format!("tls-key: {e}")))?;
            let ck = CertifiedKey::new(chain, signer);
            ck.keys_match().map_err(|e| bad(format!("tls-cert and tls-key: {e}")))?;
            Some(Arc::new(ck))
        }
        (None, None) => None,
        _ => return Err(bad("tls-cert and tls-key go together".into())),
    };
    Ok(builder.with_client_cert_resolver(Arc::new(ClientCert { key, requested: cert_requested })))
}

/// Answers a server's CertificateRequest with the configured certificate (or none) and
/// notes that it was asked.
#[derive(Debug)]
struct ClientCert {
    key: Option<Arc<CertifiedKey>>,
    requested: Arc<AtomicBool>,
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.requested.store(true, Ordering::Relaxed);
        self.key.clone()
    }
    fn has_certs(&self) -> bool {
        // Always: a request for a certificate is then noticed even when none is configured.
        true
    }
}

/// `tls-no-verify`: any server certificate, the handshake signatures still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS failure no retry changes: the server's certificate is not trusted (9015), or
/// the server refused ours (9012, by its alert).
pub(super) fn classify(e: &reqwest::Error) -> Option<TransferError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return match t {
                rustls::Error::InvalidCertificate(ce) => Some(TransferError::Contact(format!(
                    "the server's certificate is not trusted: {}",
                    certificate_problem(ce)
                ))),
                rustls::Error::AlertReceived(a) if refuses_client_certificate(*a) => {
                    Some(TransferError::Authentication(format!(
                        "the server refused the client certificate (TLS alert {a:?})"
                    )))
                }
                other => Some(TransferError::Contact(format!("TLS: {other}"))),
            };
        }
        // rustls errors reach reqwest wrapped in io::Error.
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                    cur = Some(t);
                    continue;
                }
            }
        }
        cur = c.source();
    }
    None
}

fn certificate_problem(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => "it does not chain to a trusted CA (tls-ca, or the system's)".into(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired".into(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not valid for the server's name".into()
        }
        other => format!("{other:?}"),
    }
}

fn refuses_client_certificate(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
    )
}
