//! Which digest and signature algorithms a SignerInfo may use, mapped onto ring.
//!
//! Policy: SHA-256/384/512; RSA PKCS#1 v1.5 and PSS (salt length = digest length,
//! MGF1 with the same digest) with keys of 2048 bits or more; ECDSA P-256 and P-384.
//! MD5 is never accepted; SHA-1 only when the caller enables the legacy switch.

use crate::digest::DigestAlg;
use const_oid::ObjectIdentifier as Oid;
use der::{Decode, Encode, Tagged};
use ring::signature::{self as rs, VerificationAlgorithm};
use spki::AlgorithmIdentifierOwned;

const MD5: Oid = Oid::new_unwrap("1.2.840.113549.2.5");
const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const RSA_SHA1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
const RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
const RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
const RSA_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
const RSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
const MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");
const EC_PUBKEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
const P384: Oid = Oid::new_unwrap("1.3.132.0.34");

/// OID of a digest algorithm (for the bundler).
pub fn digest_oid(alg: DigestAlg) -> Oid {
    match alg {
        DigestAlg::Sha1 => SHA1,
        DigestAlg::Sha256 => SHA256,
        DigestAlg::Sha384 => SHA384,
        DigestAlg::Sha512 => SHA512,
    }
}

/// The digest algorithm named by a SignerInfo's `digestAlgorithm`.
pub fn digest_alg(id: &AlgorithmIdentifierOwned, allow_sha1: bool) -> Result<DigestAlg, String> {
    null_or_absent(id)?;
    match id.oid {
        SHA256 => Ok(DigestAlg::Sha256),
        SHA384 => Ok(DigestAlg::Sha384),
        SHA512 => Ok(DigestAlg::Sha512),
        SHA1 if allow_sha1 => Ok(DigestAlg::Sha1),
        SHA1 => Err("digest SHA-1 is refused (collision-prone; only the TR-069 legacy switch allows it)".into()),
        MD5 => Err("digest MD5 is refused".into()),
        o => Err(format!("digest algorithm {o} is not supported")),
    }
}

/// The public key of a signer certificate, as ring wants it.
pub struct PublicKey<'a> {
    kind: KeyKind,
    bits: &'a [u8],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
}

impl<'a> PublicKey<'a> {
    /// Interpret a certificate's SubjectPublicKeyInfo; refuses weak or unknown keys.
    pub fn from_spki(spki: &'a spki::SubjectPublicKeyInfoOwned) -> Result<Self, String> {
        let bits = spki.subject_public_key.as_bytes().ok_or("public key is not a whole number of bytes")?;
        let kind = match spki.algorithm.oid {
            RSA => {
                let n = rsa_modulus_bits(bits).ok_or("RSA public key does not parse")?;
                if n < 2048 {
                    return Err(format!("RSA key of {n} bits is refused (2048 or more required)"));
                }
                KeyKind::Rsa
            }
            EC_PUBKEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<Oid>().ok())
                    .ok_or("EC key without a named curve")?;
                match curve {
                    P256 => KeyKind::P256,
                    P384 => KeyKind::P384,
                    c => return Err(format!("elliptic curve {c} is not supported")),
                }
            }
            o => return Err(format!("public key algorithm {o} is not supported")),
        };
        Ok(Self { kind, bits })
    }

    /// Choose how to verify this key's signatures with this signature algorithm and digest.
    pub fn algorithm(&self, sig: &AlgorithmIdentifierOwned, digest: DigestAlg) -> Result<SigAlg, String> {
        use DigestAlg::*;
        let named_digest = match sig.oid {
            RSA | EC_PUBKEY => None,
            RSA_SHA1 => Some(Sha1),
            RSA_SHA256 | ECDSA_SHA256 => Some(Sha256),
            RSA_SHA384 | ECDSA_SHA384 => Some(Sha384),
            RSA_SHA512 | ECDSA_SHA512 => Some(Sha512),
            RSA_PSS => Some(pss_digest(sig)?),
            o => return Err(format!("signature algorithm {o} is not supported")),
        };
        if named_digest.is_some_and(|d| d != digest) {
            return Err("signature algorithm and digest algorithm disagree".into());
        }
        match sig.oid {
            RSA_PSS => {}
            RSA | RSA_SHA1 | RSA_SHA256 | RSA_SHA384 | RSA_SHA512 => null_or_absent(sig)?,
            _ if sig.parameters.is_some() => return Err("ECDSA signature algorithm with parameters".into()),
            _ => {}
        }
        let is_rsa_sig = matches!(sig.oid, RSA | RSA_SHA1 | RSA_SHA256 | RSA_SHA384 | RSA_SHA512 | RSA_PSS);
        if is_rsa_sig != (self.kind == KeyKind::Rsa) {
            return Err("signature algorithm does not match the certificate's key".into());
        }
        let ring: &'static dyn VerificationAlgorithm = match (self.kind, sig.oid == RSA_PSS, digest) {
            // ECDSA with every SHA-2 digest, through the p256/p384 crates on the prehash
            // (ring lacks the SHA-512 combinations).
            (KeyKind::P256 | KeyKind::P384, _, d) if d != Sha1 => return Ok(SigAlg::Ecdsa(digest)),
            (KeyKind::Rsa, false, Sha1) => &rs::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            (KeyKind::Rsa, false, Sha256) => &rs::RSA_PKCS1_2048_8192_SHA256,
            (KeyKind::Rsa, false, Sha384) => &rs::RSA_PKCS1_2048_8192_SHA384,
            (KeyKind::Rsa, false, Sha512) => &rs::RSA_PKCS1_2048_8192_SHA512,
            (KeyKind::Rsa, true, Sha256) => &rs::RSA_PSS_2048_8192_SHA256,
            (KeyKind::Rsa, true, Sha384) => &rs::RSA_PSS_2048_8192_SHA384,
            (KeyKind::Rsa, true, Sha512) => &rs::RSA_PSS_2048_8192_SHA512,
            (_, _, d) => return Err(format!("{d} is not supported with this key type")),
        };
        Ok(SigAlg::Ring(ring, RsaScheme { digest, pss: sig.oid == RSA_PSS }))
    }

    /// Check `signature` over `message`.
    pub fn verify(&self, alg: &SigAlg, message: &[u8], signature: &[u8]) -> bool {
        match alg {
            SigAlg::Ring(a, _) => a.verify(self.bits.into(), message.into(), signature.into()).is_ok(),
            SigAlg::Ecdsa(d) => self.verify_digest(alg, &d.digest(message), signature),
        }
    }

    /// Check `signature` over a message of which only the digest (`alg`'s digest
    /// algorithm) is known: SignerInfos without signed attributes sign the content itself
    /// (RFC 5652 §5.4), whose digest is computed while it streams.
    pub fn verify_digest(&self, alg: &SigAlg, digest: &[u8], signature: &[u8]) -> bool {
        use signature::hazmat::PrehashVerifier;
        match (alg, self.kind) {
            (SigAlg::Ring(_, scheme), KeyKind::Rsa) => scheme.verify(self.bits, digest, signature),
            (SigAlg::Ecdsa(_), KeyKind::P256) => {
                let (Ok(k), Ok(sig)) = (
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(self.bits),
                    p256::ecdsa::Signature::from_der(signature),
                ) else {
                    return false;
                };
                k.verify_prehash(digest, &sig).is_ok()
            }
            (SigAlg::Ecdsa(_), KeyKind::P384) => {
                let (Ok(k), Ok(sig)) = (
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(self.bits),
                    p384::ecdsa::Signature::from_der(signature),
                ) else {
                    return false;
                };
                k.verify_prehash(digest, &sig).is_ok()
            }
            _ => false,
        }
    }
}

/// How a signature is verified.
pub enum SigAlg {
    /// A ring algorithm over the message (RSA PKCS#1 v1.5 and PSS, 2048 bits or more),
    /// and the same scheme for a message known only by its digest.
    Ring(&'static dyn VerificationAlgorithm, RsaScheme),
    /// ECDSA (P-256 or P-384 from the key) over the message's digest.
    Ecdsa(DigestAlg),
}

/// An RSA signature scheme over a digest (the `rsa` crate: ring verifies whole messages only).
#[derive(Clone, Copy)]
pub struct RsaScheme {
    digest: DigestAlg,
    pss: bool,
}

impl RsaScheme {
    fn verify(self, pkcs1_key: &[u8], digest: &[u8], signature: &[u8]) -> bool {
        use rsa::pkcs1::der::Decode as _;
        use rsa::BigUint;
        let Ok(k) = rsa::pkcs1::RsaPublicKey::from_der(pkcs1_key) else { return false };
        let (n, e) =
            (BigUint::from_bytes_be(k.modulus.as_bytes()), BigUint::from_bytes_be(k.public_exponent.as_bytes()));
        // 8192 bits at most, as ring's RSA_*_2048_8192 algorithms (the floor is checked in from_spki).
        let Ok(key) = rsa::RsaPublicKey::new_with_max_size(n, e, 8192) else { return false };
        if digest.len() != self.digest.output_len() {
            return false;
        }
        let r = match (self.pss, self.digest) {
            (false, DigestAlg::Sha1) => key.verify(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), digest, signature),
            (false, DigestAlg::Sha256) => key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest, signature),
            (false, DigestAlg::Sha384) => key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha384>(), digest, signature),
            (false, DigestAlg::Sha512) => key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha512>(), digest, signature),
            (true, DigestAlg::Sha256) => key.verify(rsa::Pss::new::<sha2::Sha256>(), digest, signature),
            (true, DigestAlg::Sha384) => key.verify(rsa::Pss::new::<sha2::Sha384>(), digest, signature),
            (true, DigestAlg::Sha512) => key.verify(rsa::Pss::new::<sha2::Sha512>(), digest, signature),
            (true, DigestAlg::Sha1) => return false,
        };
        r.is_ok()
    }
}

/// Verify `signature` over `message` with the key of `spki` under the signature
/// algorithm `alg` (as in a certificate or CRL: RFC 5280 §4.1.1.2, §5.1.1.2).
/// `Ok(false)`: a checkable signature that is wrong; `Err`: it cannot be checked here
/// (algorithm or key refused or unknown, e.g. SHA-1 or SHA-224).
pub fn verify_signed(
    spki: &spki::SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, String> {
    let key = PublicKey::from_spki(spki)?;
    let digest = match alg.oid {
        RSA_SHA256 | ECDSA_SHA256 => DigestAlg::Sha256,
        RSA_SHA384 | ECDSA_SHA384 => DigestAlg::Sha384,
        RSA_SHA512 | ECDSA_SHA512 => DigestAlg::Sha512,
        RSA_PSS => pss_digest(alg)?,
        o => return Err(format!("signature algorithm {o} is not supported")),
    };
    let sig_alg = key.algorithm(alg, digest)?;
    Ok(key.verify(&sig_alg, message, signature))
}

/// RFC 4055 / 5754: these identifiers carry NULL or no parameters; anything else is refused.
fn null_or_absent(id: &AlgorithmIdentifierOwned) -> Result<(), String> {
    match &id.parameters {
        None => Ok(()),
        Some(p) if p.tag() == der::Tag::Null && p.value().is_empty() => Ok(()),
        Some(_) => Err(format!("algorithm {} with parameters other than NULL", id.oid)),
    }
}

fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let mut reader = der::SliceReader::new(pkcs1).ok()?;
    let header = der::Header::decode(&mut reader).ok()?;
    if header.tag != der::Tag::Sequence {
        return None;
    }
    let n = der::asn1::UintRef::decode(&mut reader).ok()?;
    let bytes = n.as_bytes();
    let lead = bytes.first().map(|b| 8 - b.leading_zeros() as usize).unwrap_or(0);
    Some(bytes.len().saturating_sub(1) * 8 + lead)
}

/// RSASSA-PSS parameters: the hash must be one we support, MGF1 must use the same hash,
/// and the salt must be as long as the hash (what ring verifies).
fn pss_digest(sig: &AlgorithmIdentifierOwned) -> Result<DigestAlg, String> {
    #[derive(der::Sequence)]
    struct PssParams {
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        hash: Option<AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
        mgf: Option<AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
        salt: Option<u32>,
        #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
        trailer: Option<u32>,
    }
    let params = sig.parameters.as_ref().ok_or("RSASSA-PSS without parameters")?;
    let p = PssParams::from_der(&params.to_der().map_err(|e| e.to_string())?)
        .map_err(|e| format!("RSASSA-PSS parameters: {e}"))?;
    let hash = p.hash.ok_or("RSASSA-PSS with the SHA-1 default hash is refused")?;
    let d = digest_alg(&hash, false)?;
    let mgf = p.mgf.ok_or("RSASSA-PSS with the default MGF is refused")?;
    let mgf_hash = mgf
        .parameters
        .as_ref()
        .and_then(|a| a.decode_as::<AlgorithmIdentifierOwned>().ok())
        .ok_or("RSASSA-PSS MGF without a hash")?;
    if mgf.oid != MGF1 || digest_alg(&mgf_hash, false)? != d {
        return Err("RSASSA-PSS must use MGF1 with the same digest".into());
    }
    if p.salt.unwrap_or(20) as usize != d.output_len() {
        return Err("RSASSA-PSS salt length must equal the digest length".into());
    }
    if p.trailer.unwrap_or(1) != 1 {
        return Err("RSASSA-PSS trailer field must be 1".into());
    }
    Ok(d)
}
