//! check-chain's certificate input: arbitrary bytes as the signer certificate, as a
//! candidate intermediate of a genuine signer, and as a CRL, through the one signer check
//! of package verification (`verify::check_signer`: webpki path building, our RFC 5280
//! checks, CRL selection). No input may panic.
#![no_main]
use henb_update::trust::{Anchors, TrustSource};
use henb_update::verify::{check_signer, Material, Policy, Purpose};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use x509_cert::der::{Decode, DecodePem};
use x509_cert::Certificate;

fuzz_target!(|data: &[u8]| {
    static ANCHORS: OnceLock<Anchors> = OnceLock::new();
    static SIGNER: OnceLock<Certificate> = OnceLock::new();
    let anchors = ANCHORS.get_or_init(|| {
        Anchors::from_pem(include_bytes!("../fuzz-root.pem"), TrustSource::Keyring("fuzz".into())).unwrap()
    });
    let signer = SIGNER.get_or_init(|| Certificate::from_pem(include_bytes!("../fuzz-signer.pem")).unwrap());
    let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    // One of two policies per input (by its length), to keep executions cheap.
    let policies = if data.len() % 2 == 0 {
        [Policy::default()]
    } else {
        [Policy { purpose: Purpose::CodeSign, check_crl: true, allow_partial_chain: true, ..Policy::default() }]
    };
    // The bytes as a certificate: the signer, and an intermediate of the genuine signer.
    if let Ok(cert) = Certificate::from_der(data) {
        for p in &policies {
            let _ = check_signer(&cert, &Material::default(), anchors, p, now);
            let certs = [cert.clone()];
            let _ = check_signer(signer, &Material { certificates: &certs, crls: &[] }, anchors, p, now);
        }
        let _ = henb_update::verify::check_root(&cert);
    }
    // The bytes as a CRL next to the genuine signer (only what parses as a CRL, v1 or v2,
    // gets that far: the rest is refused by the same parse inside).
    if henb_update::verify::Crl::parse(data).is_ok() {
        let crls = [data.to_vec()];
        for p in &policies {
            let _ = check_signer(signer, &Material { certificates: &[], crls: &crls }, anchors, p, now);
        }
    }
});
