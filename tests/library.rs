//! The library seen from the installer's side: what a Sink receives, and policy options
//! that need hand-made CMS structures.

mod common;
use common::*;
use henb_update::package::{verify, Context, Image, PackageError, Sink};
use henb_update::trust::{Anchors, TrustSource};
use henb_update::verify::{Policy, Purpose};
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

fn anchors() -> Anchors {
    Anchors::from_pem(&std::fs::read(pki().join("keyring.pem")).unwrap(), TrustSource::Keyring("test".into())).unwrap()
}

fn ctx(a: &Anchors) -> Context<'_> {
    Context {
        anchors: a,
        policy: Policy { purpose: Purpose::CodeSign, ..Default::default() },
        now: SystemTime::now(),
        variant: None,
        install_images_only: false,
        check_whole_tree: true,
        check_ahead: false,
    }
}

#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    bytes: Vec<u8>,
}

impl Sink for Recorder {
    fn begin(&mut self, i: &Image) -> io::Result<()> {
        self.events.push(format!("begin {}", i.slot_class));
        Ok(())
    }
    fn write(&mut self, d: &[u8]) -> io::Result<()> {
        self.bytes.extend_from_slice(d);
        Ok(())
    }
    fn end(&mut self, i: &Image) -> io::Result<()> {
        self.events.push(format!("end {}", i.slot_class));
        Ok(())
    }
}

#[test]
fn the_sink_gets_exactly_the_image_bytes() {
    let w = Work::new();
    let a = anchors();
    let c = w.content("c", 3_000_000, "");
    for format in ["plain", "verity", "tr069"] {
        let p = w.bundle(format, &c, &["signer-rsa"], &format!("{format}.pkg"), &[]);
        let mut r = Recorder::default();
        let pkg = verify(Arc::new(std::fs::read(&p).unwrap()), &ctx(&a), &mut r).unwrap();
        assert_eq!(r.events, ["begin rootfs", "end rootfs"], "{format}");
        assert_eq!(r.bytes, pseudo_random(3_000_000, 7), "{format}");
        assert_eq!(pkg.images[0].size, 3_000_000);
    }
}

#[test]
fn refused_tr069_commands_never_reach_the_sink() {
    let w = Work::new();
    let a = anchors();
    let img = w.path("img");
    std::fs::write(&img, pseudo_random(10_000, 1)).unwrap();
    let p = w.path("rm.bin");
    let out = tr069_build(&[
        "--out".as_ref(),
        p.as_os_str(),
        "--signer".as_ref(),
        cert("signer-rsa").as_os_str(),
        key("signer-rsa").as_os_str(),
        "--certfile".as_ref(),
        cert("release-ca").as_os_str(),
        "--compatible".as_ref(),
        "henb-test".as_ref(),
        "--extract".as_ref(),
        format!("/slot/rootfs={}", img.display()).as_ref(),
        "--remove".as_ref(),
        "/etc/shadow".as_ref(),
    ]);
    assert!(out.status.success());
    let mut r = Recorder::default();
    let e = verify(Arc::new(std::fs::read(&p).unwrap()), &ctx(&a), &mut r).unwrap_err();
    assert!(matches!(e, PackageError::Tr069(henb_update::package::tr069::Tr069Error::Unsupported { .. })), "{e}");
    assert!(r.events.is_empty() && r.bytes.is_empty(), "the sink was called: {:?}", r.events);
}

#[test]
fn a_failing_sink_fails_the_package_as_an_internal_error() {
    struct Broken;
    impl Sink for Broken {
        fn begin(&mut self, _: &Image) -> io::Result<()> {
            Ok(())
        }
        fn write(&mut self, _: &[u8]) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
        fn end(&mut self, _: &Image) -> io::Result<()> {
            Ok(())
        }
    }
    let w = Work::new();
    let a = anchors();
    let c = w.content("c", 100_000, "");
    for format in ["plain", "verity", "tr069"] {
        let p = w.bundle(format, &c, &["signer-rsa"], &format!("{format}.pkg"), &[]);
        let e = verify(Arc::new(std::fs::read(&p).unwrap()), &ctx(&a), &mut Broken).unwrap_err();
        use henb_update::fault::Fault;
        assert_eq!((e.kind(), e.fault().code()), ("write", 9002), "{format}: {e}");
    }
}

/// A CMS signed by the (now expired) signer with a signingTime inside its validity:
/// accepted only with use-bundle-signing-time.
#[test]
fn use_bundle_signing_time_checks_validity_at_the_signing_time() {
    use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
    use der::{DecodePem, Encode};
    use p256::pkcs8::DecodePrivateKey;
    let w = Work::new();
    let c = w.content_with_digests("c", 20_000);
    let sq = w.mksquashfs(&c, "sq");
    let payload = std::fs::read(&sq).unwrap();
    let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&payload)).to_vec();
    let signer_cert = x509_cert::Certificate::from_pem(std::fs::read(cert("signer-expired")).unwrap()).unwrap();
    let inter = x509_cert::Certificate::from_pem(std::fs::read(cert("release-ca")).unwrap()).unwrap();
    let k = p256::ecdsa::SigningKey::from_pkcs8_pem(&std::fs::read_to_string(key("signer-expired")).unwrap()).unwrap();
    let eci = EncapsulatedContentInfo { econtent_type: const_oid::db::rfc5911::ID_DATA, econtent: None };
    let sha256 = spki::AlgorithmIdentifierOwned { oid: const_oid::db::rfc5912::ID_SHA_256, parameters: None };
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: signer_cert.tbs_certificate.issuer.clone(),
        serial_number: signer_cert.tbs_certificate.serial_number.clone(),
    });
    let mut sib = SignerInfoBuilder::new(&k, sid, sha256.clone(), &eci, Some(&digest)).unwrap();
    let when = x509_cert::time::Time::UtcTime(
        der::asn1::UtcTime::from_unix_duration(std::time::Duration::from_secs(1_591_000_000)).unwrap(),
    );
    let attr = x509_cert::attr::Attribute {
        oid: const_oid::db::rfc5911::ID_SIGNING_TIME,
        values: der::asn1::SetOfVec::try_from(vec![der::Any::encode_from(&when).unwrap()]).unwrap(),
    };
    sib.add_signed_attribute(attr).unwrap();
    let mut b = SignedDataBuilder::new(&eci);
    b.add_digest_algorithm(sha256).unwrap();
    b.add_certificate(CertificateChoices::Certificate(signer_cert)).unwrap();
    b.add_certificate(CertificateChoices::Certificate(inter)).unwrap();
    b.add_signer_info::<_, p256::ecdsa::DerSignature>(sib).unwrap();
    let cms = b.build().unwrap().to_der().unwrap();
    let bundle = w.path("old.raucb");
    assemble(&sq, &cms, &bundle);
    let now = w.conf("");
    let r = info(&now, &bundle, &[]);
    assert_eq!(r.err().1, 9019);
    assert!(r.json["error"]["message"].as_str().unwrap().contains("expired"));
    let then = w.conf("use-bundle-signing-time=true\n");
    info(&then, &bundle, &[]).ok();
}
