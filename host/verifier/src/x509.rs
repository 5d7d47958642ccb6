//! The X.509 certificates of attestation chains: decoding (DER, PEM, PEM bundles),
//! the two signature schemes the chains use, validity periods and extensions.
//!
//! AMD's ARK, ASK and VCEK are signed with RSASSA-PSS, SHA-384, MGF1 with SHA-384 and
//! a 48-byte salt (docs/specs.md 4.5); Intel's SGX/TDX PCK chain with ECDSA P-256 and
//! SHA-256 (docs/specs.md 6.6). Nothing else is accepted.

use std::time::SystemTime;

use rsa::pkcs1::{DecodeRsaPublicKey, RsaPssParams};
use rsa::signature::Verifier;
use sha2::{Digest, Sha256, Sha384};
use thiserror::Error;
use x509_cert::der::asn1::BitString;
use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Reader, SliceReader, Tag, Tagged};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::name::Name;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use super::time::format_rfc3339;

/// id-RSASSA-PSS (RFC 4055 section 3.1).
pub const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// rsaEncryption (RFC 8017 appendix C).
pub const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-mgf1 (RFC 4055 section 2.2).
pub const OID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
/// id-sha384 (RFC 4055 section 2.1).
pub const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
/// ecdsa-with-SHA256 (RFC 5758 section 3.2).
pub const OID_ECDSA_WITH_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// id-ecPublicKey (RFC 5480 section 2.1.1).
pub const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 (RFC 5480 section 2.1.1.1).
pub const OID_SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1 (RFC 5480 section 2.1.1.1).
pub const OID_SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// basicConstraints (RFC 5280 section 4.2.1.9).
pub const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
/// keyUsage (RFC 5280 section 4.2.1.3).
pub const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
/// commonName (RFC 4519 section 2.3).
pub const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// organizationName (RFC 4519 section 2.19).
pub const OID_ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");

/// The salt length of AMD's RSASSA-PSS signatures: 48 bytes, the SHA-384 output
/// (docs/specs.md 4.5).
pub const AMD_PSS_SALT_LEN: usize = 48;

/// A certificate that cannot be decoded or a signature that does not verify.
#[derive(Debug, Error)]
pub enum X509Error {
    /// The bytes are not a DER certificate.
    #[error("not a DER X.509 certificate")]
    Der(#[source] x509_cert::der::Error),
    /// A PEM block is malformed.
    #[error("a PEM certificate block is malformed: {0}")]
    Pem(String),
    /// A PEM block that is not a certificate.
    #[error("a PEM block is labelled {0:?}, not CERTIFICATE")]
    PemLabel(String),
    /// Neither DER nor a PEM certificate.
    #[error("neither a DER certificate nor a PEM one (no \"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate,
    /// Unsupported signature algorithm.
    #[error("signature algorithm {0} is not supported (only RSASSA-PSS SHA-384 and ECDSA P-256 SHA-256 are)")]
    SignatureAlgorithm(ObjectIdentifier),
    /// RSASSA-PSS parameters other than SHA-384, MGF1-SHA-384, salt 48.
    #[error("RSASSA-PSS parameters are not SHA-384, MGF1 with SHA-384 and a 48-byte salt: {0}")]
    PssParameters(String),
    /// A key of the wrong kind for the signature.
    #[error("the issuer's key is not {expected}")]
    KeyKind {
        /// The kind of key needed.
        expected: &'static str,
    },
    /// A public key that does not decode.
    #[error("the {kind} public key is malformed")]
    Key {
        /// The kind of key.
        kind: &'static str,
    },
    /// The signature bytes do not decode.
    #[error("the signature is malformed")]
    SignatureEncoding,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// The issuer named in the certificate is not the signer's subject.
    #[error("the certificate names issuer \"{named}\", not \"{signer}\"")]
    IssuerName {
        /// The issuer the certificate names.
        named: String,
        /// The subject of the would-be signer.
        signer: String,
    },
    /// The signer is not a certification authority.
    #[error("\"{0}\" is not a certification authority (basicConstraints cA is not true)")]
    NotCa(String),
}

/// A decoded certificate with the DER it came from.
#[derive(Clone, Debug)]
pub struct Cert {
    der: Vec<u8>,
    cert: Certificate,
}

impl PartialEq for Cert {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for Cert {}

impl Cert {
    /// Decode a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, X509Error> {
        let cert = Certificate::from_der(der).map_err(X509Error::Der)?;
        // The signed part must be recoverable byte for byte.
        tbs_bytes(der).map_err(X509Error::Der)?;
        Ok(Self {
            der: der.to_vec(),
            cert,
        })
    }

    /// Decode one certificate given as PEM (the first block) or DER.
    pub fn from_der_or_pem(bytes: &[u8]) -> Result<Self, X509Error> {
        if find(bytes, b"-----BEGIN ").is_none() {
            return if bytes.first() == Some(&0x30) {
                Self::from_der(bytes)
            } else {
                Err(X509Error::NoCertificate)
            };
        }
        Self::bundle_from_pem(bytes)?
            .into_iter()
            .next()
            .ok_or(X509Error::NoCertificate)
    }

    /// Decode every `CERTIFICATE` PEM block of `text`, in order; text between
    /// blocks is ignored.
    pub fn bundle_from_pem(text: &[u8]) -> Result<Vec<Self>, X509Error> {
        let blocks = pem::parse_many(text).map_err(|e| X509Error::Pem(e.to_string()))?;
        // `parse_many` skips what it cannot read as a whole block; a block begun and
        // never ended is an error here, not nothing.
        let begun = text.windows(11).filter(|w| w == b"-----BEGIN ").count();
        if begun > blocks.len() {
            return Err(X509Error::Pem(
                "a block has no \"-----END\" line, or is malformed".into(),
            ));
        }
        if blocks.is_empty() {
            return Err(X509Error::NoCertificate);
        }
        blocks
            .iter()
            .map(|block| match block.tag() {
                "CERTIFICATE" => Self::from_der(block.contents()),
                other => Err(X509Error::PemLabel(other.to_owned())),
            })
            .collect()
    }

    /// Whether the subject or the issuer has the organization (O) `org`.
    pub fn names_organization(&self, org: &str) -> bool {
        let tbs = &self.cert.tbs_certificate;
        [&tbs.subject, &tbs.issuer].into_iter().any(|name| {
            name.0
                .iter()
                .flat_map(|rdn| rdn.0.iter())
                .any(|atv| atv.oid == OID_ORGANIZATION && atv.value.value() == org.as_bytes())
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The decoded certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The subject's common name, or the whole subject when it has none.
    pub fn subject_name(&self) -> String {
        display_name(&self.cert.tbs_certificate.subject)
    }

    /// The issuer's common name, or the whole issuer when it has none.
    pub fn issuer_name(&self) -> String {
        display_name(&self.cert.tbs_certificate.issuer)
    }

    /// Start of the validity period.
    pub fn not_before(&self) -> SystemTime {
        self.cert
            .tbs_certificate
            .validity
            .not_before
            .to_system_time()
    }

    /// End of the validity period.
    pub fn not_after(&self) -> SystemTime {
        self.cert
            .tbs_certificate
            .validity
            .not_after
            .to_system_time()
    }

    /// Whether `at` lies in the validity period (both ends included); `Err` says
    /// which end it is outside of.
    pub fn valid_at(&self, at: SystemTime) -> Result<String, String> {
        let (from, to) = (self.not_before(), self.not_after());
        let period = format!(
            "valid from {} to {}",
            format_rfc3339(from),
            format_rfc3339(to)
        );
        if at < from {
            Err(format!(
                "not yet valid at {} ({period})",
                format_rfc3339(at)
            ))
        } else if at > to {
            Err(format!("expired at {} ({period})", format_rfc3339(at)))
        } else {
            Ok(format!("{period}; checked at {}", format_rfc3339(at)))
        }
    }

    /// The value (the contents of `extnValue`) of the extension `oid`.
    pub fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// Whether basicConstraints marks the certificate as a CA.
    pub fn is_ca(&self) -> bool {
        self.extension(OID_BASIC_CONSTRAINTS)
            .and_then(|v| BasicConstraints::from_der(v).ok())
            .is_some_and(|bc| bc.ca)
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo (the form Intel pins its root by).
    pub fn spki_sha256(&self) -> Result<[u8; 32], X509Error> {
        use x509_cert::der::Encode;
        let spki = self
            .cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(X509Error::Der)?;
        Ok(Sha256::digest(spki).into())
    }

    /// The subject key as an ECDSA P-384 verifying key.
    pub fn p384_key(&self) -> Result<p384::ecdsa::VerifyingKey, X509Error> {
        let bits = self.ec_key_bits(OID_SECP384R1, "ECDSA P-384")?;
        p384::ecdsa::VerifyingKey::from_sec1_bytes(bits).map_err(|_| X509Error::Key {
            kind: "ECDSA P-384",
        })
    }

    /// The subject key as an ECDSA P-256 verifying key.
    pub fn p256_key(&self) -> Result<p256::ecdsa::VerifyingKey, X509Error> {
        let bits = self.ec_key_bits(OID_SECP256R1, "ECDSA P-256")?;
        p256::ecdsa::VerifyingKey::from_sec1_bytes(bits).map_err(|_| X509Error::Key {
            kind: "ECDSA P-256",
        })
    }

    fn ec_key_bits(&self, curve: ObjectIdentifier, kind: &'static str) -> Result<&[u8], X509Error> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        let named = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if spki.algorithm.oid != OID_EC_PUBLIC_KEY || named != Some(curve) {
            return Err(X509Error::KeyKind { expected: kind });
        }
        spki.subject_public_key
            .as_bytes()
            .ok_or(X509Error::Key { kind })
    }

    fn rsa_key(&self) -> Result<rsa::RsaPublicKey, X509Error> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != OID_RSA_ENCRYPTION && spki.algorithm.oid != OID_RSASSA_PSS {
            return Err(X509Error::KeyKind { expected: "RSA" });
        }
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or(X509Error::Key { kind: "RSA" })?;
        rsa::RsaPublicKey::from_pkcs1_der(bits).map_err(|_| X509Error::Key { kind: "RSA" })
    }

    /// Verify that `issuer` issued this certificate: the names chain, the issuer is
    /// a CA, and the issuer's key verifies the signature (RSASSA-PSS SHA-384 with
    /// MGF1-SHA-384 and salt 48, or ECDSA P-256 SHA-256).
    pub fn verify_issued_by(&self, issuer: &Cert) -> Result<(), X509Error> {
        if self.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(X509Error::IssuerName {
                named: self.cert.tbs_certificate.issuer.to_string(),
                signer: issuer.cert.tbs_certificate.subject.to_string(),
            });
        }
        if !issuer.is_ca() {
            return Err(X509Error::NotCa(issuer.subject_name()));
        }
        self.verify_signature_by(issuer)
    }

    /// Verify only the signature of this certificate with `issuer`'s key.
    pub fn verify_signature_by(&self, issuer: &Cert) -> Result<(), X509Error> {
        let tbs = tbs_bytes(&self.der).map_err(X509Error::Der)?;
        verify_signed(
            tbs,
            &self.cert.signature_algorithm,
            &self.cert.signature,
            issuer,
        )
    }
}

/// Verify `signature`, made with `algorithm` over `tbs`, with `issuer`'s key:
/// RSASSA-PSS SHA-384 with MGF1-SHA-384 and salt 48, or ECDSA P-256 SHA-256.
pub(crate) fn verify_signed(
    tbs: &[u8],
    algorithm: &AlgorithmIdentifierOwned,
    signature: &BitString,
    issuer: &Cert,
) -> Result<(), X509Error> {
    let signature = signature.as_bytes().ok_or(X509Error::SignatureEncoding)?;
    if algorithm.oid == OID_RSASSA_PSS {
        check_amd_pss_params(algorithm.parameters.as_ref())?;
        let key = issuer.rsa_key()?;
        let encoded = signature;
        let signature =
            rsa::pss::Signature::try_from(signature).map_err(|_| X509Error::SignatureEncoding)?;
        let verifier = rsa::pss::VerifyingKey::<Sha384>::new_with_salt_len(key, AMD_PSS_SALT_LEN);
        signature_math(issuer, tbs, encoded, || {
            verifier.verify(tbs, &signature).is_ok()
        })
    } else if algorithm.oid == OID_ECDSA_WITH_SHA256 {
        let key = issuer.p256_key()?;
        let encoded = signature;
        let signature = p256::ecdsa::Signature::from_der(signature)
            .map_err(|_| X509Error::SignatureEncoding)?;
        signature_math(issuer, tbs, encoded, || key.verify(tbs, &signature).is_ok())
    } else {
        Err(X509Error::SignatureAlgorithm(algorithm.oid))
    }
}

/// The verdict of `verify` (the arithmetic of one signature check, the key, message and
/// signature already decoded) as `BadSignature` or success.
///
/// Fuzz builds (the `fuzzing` feature, `tests/fuzz`) remember the last verdicts by
/// the exact bytes of issuer certificate, message and signature: the certificate
/// chains the fuzz targets verify are the same on every input, and RSA-4096
/// arithmetic would otherwise take most of their time. The verdict for given bytes
/// never changes, so what is checked stays the same; only the arithmetic is not
/// repeated.
fn signature_math(
    issuer: &Cert,
    tbs: &[u8],
    signature: &[u8],
    verify: impl FnOnce() -> bool,
) -> Result<(), X509Error> {
    #[cfg(feature = "fuzzing")]
    let verified = fuzz_memo::remembered(&[issuer.der(), tbs, signature], verify);
    #[cfg(not(feature = "fuzzing"))]
    let verified = {
        let _ = (issuer, tbs, signature);
        verify()
    };
    if verified {
        Ok(())
    } else {
        Err(X509Error::BadSignature)
    }
}

/// See [`signature_math`]: verdicts by the SHA-256 of their inputs, at most
/// `CAPACITY` at once.
#[cfg(feature = "fuzzing")]
mod fuzz_memo {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use sha2::{Digest, Sha256};

    const CAPACITY: usize = 4096;

    static VERDICTS: Mutex<Option<HashMap<[u8; 32], bool>>> = Mutex::new(None);

    pub(super) fn remembered(parts: &[&[u8]], verify: impl FnOnce() -> bool) -> bool {
        let mut hash = Sha256::new();
        for part in parts {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        let key: [u8; 32] = hash.finalize().into();
        let mut verdicts = VERDICTS.lock().unwrap_or_else(|e| e.into_inner());
        let verdicts = verdicts.get_or_insert_with(HashMap::new);
        if let Some(&verified) = verdicts.get(&key) {
            return verified;
        }
        let verified = verify();
        if verdicts.len() >= CAPACITY {
            verdicts.clear();
        }
        verdicts.insert(key, verified);
        verified
    }
}

/// The RSASSA-PSS parameters AMD signs with: SHA-384, MGF1 with SHA-384, salt 48,
/// trailer field 1 (docs/specs.md 4.5).
fn check_amd_pss_params(parameters: Option<&x509_cert::der::Any>) -> Result<(), X509Error> {
    let params: RsaPssParams<'_> = parameters
        .ok_or_else(|| X509Error::PssParameters("none given".into()))?
        .decode_as()
        .map_err(|e| X509Error::PssParameters(e.to_string()))?;
    let mgf_hash = params.mask_gen.parameters.as_ref().map(|p| p.oid);
    if params.hash.oid != OID_SHA384
        || params.mask_gen.oid != OID_MGF1
        || mgf_hash != Some(OID_SHA384)
        || usize::from(params.salt_len) != AMD_PSS_SALT_LEN
    {
        let mgf_hash = mgf_hash.map_or_else(|| "no hash".to_owned(), |oid| oid.to_string());
        return Err(X509Error::PssParameters(format!(
            "hash {}, mask generation {} with {mgf_hash}, salt {}",
            params.hash.oid, params.mask_gen.oid, params.salt_len
        )));
    }
    Ok(())
}

/// The first element of the SEQUENCE `der` exactly as encoded: a certificate's
/// TBSCertificate or a CRL's TBSCertList, the bytes the signature covers.
pub(crate) fn tbs_bytes(der: &[u8]) -> Result<&[u8], x509_cert::der::Error> {
    let mut reader = SliceReader::new(der)?;
    let tbs = reader.sequence(|outer| {
        let tbs = outer.tlv_bytes()?;
        let rest = outer.remaining_len();
        outer.read_slice(rest)?;
        Ok(tbs)
    })?;
    reader.finish(tbs)
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The common name of `name`, or its RFC 4514 form when it has none.
pub(crate) fn display_name(name: &Name) -> String {
    for rdn in name.0.iter().rev() {
        for atv in rdn.0.iter() {
            if atv.oid != OID_COMMON_NAME {
                continue;
            }
            let value = &atv.value;
            let text = match value.tag() {
                Tag::Utf8String => value
                    .decode_as::<Utf8StringRef<'_>>()
                    .map(|s| s.to_string()),
                Tag::PrintableString => value
                    .decode_as::<PrintableStringRef<'_>>()
                    .map(|s| s.to_string()),
                Tag::Ia5String => value.decode_as::<Ia5StringRef<'_>>().map(|s| s.to_string()),
                _ => continue,
            };
            if let Ok(text) = text {
                return text;
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verdict stands for the exact bytes it was reached on (the `fuzzing` feature
    /// remembers verdicts): a good signature verifies again, and the same certificate
    /// with one bit of its signature changed fails afterwards, and again.
    #[test]
    fn a_verdict_is_for_the_exact_bytes() {
        let (ark, ask) =
            crate::roots::amd_built_in_pem(nacre_shared_abi::snp::report::SnpProduct::Milan);
        let ark = Cert::from_der_or_pem(ark).expect("Milan ARK");
        let ask = Cert::from_der_or_pem(ask).expect("Milan ASK");
        for _ in 0..2 {
            ask.verify_issued_by(&ark)
                .expect("AMD's ARK signed the ASK");
        }
        let mut der = ask.der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 1;
        let forged = Cert::from_der(&der).expect("still a certificate");
        for _ in 0..2 {
            assert!(matches!(
                forged.verify_issued_by(&ark),
                Err(X509Error::BadSignature)
            ));
        }
        ask.verify_issued_by(&ark)
            .expect("the original still verifies");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            Cert::from_der_or_pem(b""),
            Err(X509Error::NoCertificate)
        ));
        assert!(matches!(
            Cert::from_der_or_pem(&[0x30, 0x03, 1, 2, 3]),
            Err(X509Error::Der(_))
        ));
        assert!(matches!(
            Cert::from_der_or_pem(
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
            ),
            Err(X509Error::Pem(_))
        ));
        assert!(matches!(
            Cert::bundle_from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            Err(X509Error::PemLabel(_))
        ));
        assert!(matches!(
            Cert::bundle_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n"),
            Err(X509Error::Pem(_))
        ));
    }
}
