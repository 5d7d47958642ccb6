//! Intel TDX quotes (version 4, and version 5 with a TDX 1.0 or 1.5 body): the wire
//! format and its verification.
//!
//! Layout: Intel's DCAP quote format as implemented by go-tdx-guest `abi/abi.go` and
//! dcap-qvl `src/quote.rs`, checked against real quotes (docs/specs.md 6.5, 6.6). All
//! integers are little-endian; the ECDSA signatures and keys are big-endian `r || s`
//! and `x || y`, 32 bytes each.
//!
//! Verification: the attestation key signs the header and body (ECDSA P-256
//! SHA-256); the PCK certificate's key signs the quoting enclave's (QE) report; the
//! QE report binds the attestation key (SHA-256 of the key and the QE
//! authentication data is the start of its report data); the PCK certificate chains
//! to the trusted Intel SGX Root CA. With collateral (TCB info, QE identity, CRLs),
//! dcap-qvl computes the platform's TCB status.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use core::mem::size_of;
pub use nacre_shared_abi::tdx_quote::*;
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};
use thiserror::Error;
use zerocopy::{FromBytes, IntoBytes};

use super::roots::{EmulatedRoot, TrustAnchors};
use super::x509::{Cert, X509Error};
use super::{Check, Claim, EvidenceKind, Expectations, Trust, Verification};

/// TD attribute bit 0: DEBUG (docs/specs.md 6.4).
pub const TD_ATTRIBUTE_DEBUG: u64 = 1 << 0;
/// TD attributes bits 4 to 6: HGS_PLUS_PROF, PERF_PROF and PMT_PROF, profiling by
/// the host (docs/specs.md 6.4).
pub const TD_ATTRIBUTES_PROFILING: u64 = 0b111 << 4;
/// TD attribute bit 28: SEPT_VE_DISABLE (docs/specs.md 6.4).
pub const TD_ATTRIBUTE_SEPT_VE_DISABLE: u64 = 1 << 28;
/// TD attribute bit 29: MIGRATABLE (docs/specs.md 6.4).
pub const TD_ATTRIBUTE_MIGRATABLE: u64 = 1 << 29;

/// Collateral for the TCB status: dcap-qvl's `QuoteCollateralV3` (TCB info, QE
/// identity, CRLs and their issuer chains).
pub type Collateral = dcap_qvl::QuoteCollateralV3;

/// Why a quote cannot be verified.
#[derive(Debug, Error)]
pub enum TdxError {
    /// The quote ends early.
    #[error("the quote is truncated: {what} needs {needed} bytes at offset {offset:#x}, {available} are left")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where.
        offset: usize,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A size field that covers more than its parts.
    #[error("{what} has {extra} bytes more than its parts (its size field says so)")]
    Unaccounted {
        /// Which structure.
        what: &'static str,
        /// Bytes its size covers that none of its parts does.
        extra: usize,
    },
    /// A version other than 4 or 5.
    #[error("quote version {0} is not supported (4 and 5 are)")]
    Version(u16),
    /// An attestation key other than ECDSA P-256.
    #[error("attestation key type {0} is not supported (2, ECDSA P-256, is)")]
    AttestationKeyType(u16),
    /// Not a TDX quote.
    #[error("TEE type {0:#x} is not TDX (0x81); SGX quotes are not verified here")]
    TeeType(u32),
    /// A version 5 body type other than TDX 1.0 or 1.5.
    #[error("quote body type {0} is not a TD report (2, TDX 1.0, or 3, TDX 1.5)")]
    BodyType(u16),
    /// A version 5 body size that does not fit its type.
    #[error("a body of type {body_type} is {expected} bytes, not {size}")]
    BodySize {
        /// The type.
        body_type: u16,
        /// Its size.
        expected: usize,
        /// The size in the quote.
        size: u32,
    },
    /// Certification data of an unexpected type.
    #[error("the {what} has certification data type {found}, expected {expected}")]
    CertDataType {
        /// Where.
        what: &'static str,
        /// Type expected.
        expected: u16,
        /// Type found.
        found: u16,
    },
    /// The PCK certificate chain does not decode.
    #[error("the PCK certificate chain in the quote does not decode")]
    PckChain(#[source] X509Error),
    /// A PCK chain without the PCK certificate and its CA, or too long.
    #[error("the PCK certificate chain holds {0} certificates; expected the PCK certificate, its CA and optionally the root")]
    PckChainLength(usize),
    /// Collateral that is not dcap-qvl's JSON.
    #[error("the collateral is not dcap-qvl QuoteCollateralV3 JSON")]
    Collateral(#[source] serde_json::Error),
}

/// A parsed TDX quote.
#[derive(Debug, Clone)]
pub struct Quote {
    /// Quote version, 4 or 5.
    pub version: u16,
    /// The header.
    pub header: QuoteHeader,
    /// The TD quote body (the TDX 1.0 fields).
    pub body: TdQuoteBody,
    /// The TDX 1.5 additions, for a version 5 quote of body type 3.
    pub body15: Option<TdQuoteBody15>,
    /// ECDSA P-256 signature (`r || s`, big-endian) over [`Quote::signed_bytes`].
    pub signature: [u8; P256_PAIR_SIZE],
    /// The attestation public key (`x || y`, big-endian).
    pub attestation_key: [u8; P256_PAIR_SIZE],
    /// The quoting enclave's report.
    pub qe_report: QeReport,
    /// ECDSA P-256 signature of the QE report by the PCK key.
    pub qe_report_signature: [u8; P256_PAIR_SIZE],
    /// QE authentication data.
    pub qe_auth_data: Vec<u8>,
    /// The PCK certificate chain, PEM (PCK certificate, its CA, the root).
    pub pck_chain_pem: Vec<u8>,
    /// Bytes after the signed data, ignored (not covered by any signature).
    pub trailing: usize,
    raw: Vec<u8>,
    signed_len: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TdxError> {
        let available = self.bytes.len().saturating_sub(self.at);
        if n > available {
            return Err(TdxError::Truncated {
                what,
                offset: self.at,
                needed: n,
                available,
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], TdxError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TdxError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, TdxError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn read<T: FromBytes>(&mut self, what: &'static str) -> Result<T, TdxError> {
        let at = self.at;
        let bytes = self.take(size_of::<T>(), what)?;
        T::read_from_bytes(bytes).map_err(|_| TdxError::Truncated {
            what,
            offset: at,
            needed: size_of::<T>(),
            available: bytes.len(),
        })
    }

    /// Every byte was read.
    fn finish(&self, what: &'static str) -> Result<(), TdxError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            extra => Err(TdxError::Unaccounted { what, extra }),
        }
    }

    /// A sub-cursor over the next `n` bytes.
    fn sub(&mut self, n: usize, what: &'static str) -> Result<Cursor<'a>, TdxError> {
        Ok(Cursor {
            bytes: self.take(n, what)?,
            at: 0,
        })
    }
}

fn usize_of(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Quote {
    /// Parse a quote. Bytes after the signed data are tolerated (and counted in
    /// [`Quote::trailing`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, TdxError> {
        let mut c = Cursor { bytes, at: 0 };
        let header: QuoteHeader = c.read("the header")?;
        match header.version {
            QUOTE_VERSION_4 | QUOTE_VERSION_5 => {}
            v => return Err(TdxError::Version(v)),
        }
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256 {
            return Err(TdxError::AttestationKeyType(header.att_key_type));
        }
        if header.tee_type != TEE_TYPE_TDX {
            return Err(TdxError::TeeType(header.tee_type));
        }
        let body_type = if header.version == QUOTE_VERSION_5 {
            let body_type = c.u16("the body type")?;
            let size = c.u32("the body size")?;
            let expected = match body_type {
                BODY_TYPE_TDX10 => TD_QUOTE_BODY_SIZE,
                BODY_TYPE_TDX15 => TD_QUOTE_BODY15_SIZE,
                other => return Err(TdxError::BodyType(other)),
            };
            if usize_of(size) != expected {
                return Err(TdxError::BodySize {
                    body_type,
                    expected,
                    size,
                });
            }
            body_type
        } else {
            BODY_TYPE_TDX10
        };
        let body: TdQuoteBody = c.read("the TD quote body")?;
        let body15 = if body_type == BODY_TYPE_TDX15 {
            Some(c.read::<TdQuoteBody15>("the TDX 1.5 body")?)
        } else {
            None
        };
        let signed_len = c.at;

        let signed_data_len = c.u32("the signed data size")?;
        let mut signed = c.sub(usize_of(signed_data_len), "the signed data")?;
        let trailing = bytes.len() - c.at;
        let signature = signed.array("the quote signature")?;
        let attestation_key = signed.array("the attestation key")?;
        let cert_type = signed.u16("the certification data type")?;
        if cert_type != CERT_DATA_QE_REPORT {
            return Err(TdxError::CertDataType {
                what: "signed data",
                expected: CERT_DATA_QE_REPORT,
                found: cert_type,
            });
        }
        let cert_size = signed.u32("the certification data size")?;
        let mut cert = signed.sub(usize_of(cert_size), "the QE report certification data")?;
        let qe_report: QeReport = cert.read("the QE report")?;
        let qe_report_signature = cert.array("the QE report signature")?;
        let auth_len = cert.u16("the QE authentication data size")?;
        let qe_auth_data = cert
            .take(usize::from(auth_len), "the QE authentication data")?
            .to_vec();
        let inner_type = cert.u16("the PCK chain certification data type")?;
        if inner_type != CERT_DATA_PCK_CHAIN {
            return Err(TdxError::CertDataType {
                what: "QE report certification data",
                expected: CERT_DATA_PCK_CHAIN,
                found: inner_type,
            });
        }
        let chain_size = cert.u32("the PCK chain size")?;
        let pck_chain_pem = cert
            .take(usize_of(chain_size), "the PCK certificate chain")?
            .to_vec();
        // The size fields are not signed: bytes they cover beyond the parts would be
        // unchecked data inside the quote.
        cert.finish("the QE report certification data")?;
        signed.finish("the signed data")?;
        Ok(Self {
            version: header.version,
            header,
            body,
            body15,
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem,
            trailing,
            raw: bytes.to_vec(),
            signed_len,
        })
    }

    /// The bytes the attestation key signs: the header and the body (`[0, 0x278)`
    /// in version 4; `[0, 0x36 + body size)` in version 5).
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..self.signed_len]
    }

    /// The whole quote as given.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The body's kind, for people.
    pub fn body_kind(&self) -> &'static str {
        if self.body15.is_some() {
            "TDX 1.5 body"
        } else {
            "TDX 1.0 body"
        }
    }

    /// The TD attributes as a number.
    pub fn td_attributes(&self) -> u64 {
        u64::from_le_bytes(self.body.td_attributes)
    }

    /// The PCK certificate chain: the PCK certificate, its CA, and the root when the
    /// quote carries it.
    pub fn pck_chain(&self) -> Result<Vec<Cert>, TdxError> {
        let certs = Cert::bundle_from_pem(&self.pck_chain_pem).map_err(TdxError::PckChain)?;
        if !(2..=3).contains(&certs.len()) {
            return Err(TdxError::PckChainLength(certs.len()));
        }
        Ok(certs)
    }
}

/// Decode collateral from the JSON dcap-qvl writes for a `QuoteCollateralV3`.
pub fn collateral_from_json(bytes: &[u8]) -> Result<Collateral, TdxError> {
    serde_json::from_slice(bytes).map_err(TdxError::Collateral)
}

/// Names of the TDX checks, in the order they run.
pub mod check {
    /// The QE vendor is Intel.
    pub const QE_VENDOR_ID: &str = "qe-vendor-id";
    /// The attestation key signs the header and body.
    pub const QUOTE_SIGNATURE: &str = "quote-signature";
    /// The PCK key signs the QE report.
    pub const QE_REPORT_SIGNATURE: &str = "qe-report-signature";
    /// The QE report binds the attestation key and the QE authentication data.
    pub const QE_REPORT_DATA: &str = "qe-report-data";
    /// The QE is Intel's TD quoting enclave (MRSIGNER, ISVPRODID).
    pub const QE_IDENTITY: &str = "qe-identity";
    /// The PCK certificate's CA signs it.
    pub const PCK_SIGNED_BY_CA: &str = "pck-signed-by-ca";
    /// The trusted Intel SGX Root CA signs the PCK CA.
    pub const CA_SIGNED_BY_ROOT: &str = "ca-signed-by-root";
    /// The chain's root, if it has one, is the trusted one.
    pub const ROOT_TRUSTED: &str = "root-trusted";
    /// The PCK certificate is valid at the verification time.
    pub const PCK_VALIDITY: &str = "pck-validity";
    /// The PCK CA is valid at the verification time.
    pub const CA_VALIDITY: &str = "ca-validity";
    /// The root is valid at the verification time.
    pub const ROOT_VALIDITY: &str = "root-validity";
    /// The TD attribute DEBUG is 0, unless debugging is allowed.
    pub const TD_DEBUG: &str = "td-debug";
    /// With an image: the TD attributes it governs (DEBUG, SEPT_VE_DISABLE,
    /// MIGRATABLE) are the ones it declares.
    pub const TD_ATTRIBUTES: &str = "td-attributes";
    /// MRTD is the expected measurement.
    pub const MRTD: &str = "mrtd";
    /// The report data is the expected one.
    pub const REPORT_DATA: &str = "report-data";
    /// With collateral: dcap-qvl verifies it and the TCB status is UpToDate.
    pub const TCB_STATUS: &str = "tcb-status";

    /// The checks every verification runs, in order (MRTD and report data only with
    /// expectations, the TCB status only with collateral).
    pub const ALWAYS: [&str; 12] = [
        QE_VENDOR_ID,
        QUOTE_SIGNATURE,
        QE_REPORT_SIGNATURE,
        QE_REPORT_DATA,
        QE_IDENTITY,
        PCK_SIGNED_BY_CA,
        CA_SIGNED_BY_ROOT,
        ROOT_TRUSTED,
        PCK_VALIDITY,
        CA_VALIDITY,
        ROOT_VALIDITY,
        TD_DEBUG,
    ];
}

/// Verify `quote` against `roots` with certificates valid at `at`, `expect`, and,
/// when given, `collateral` for the TCB status.
pub fn verify_quote(
    quote: &Quote,
    roots: &TrustAnchors,
    expect: &Expectations,
    at: SystemTime,
    collateral: Option<&Collateral>,
) -> Result<Verification, TdxError> {
    let chain = quote.pck_chain()?;
    let (pck, ca) = (&chain[0], &chain[1]);
    // A chain that names an emulated root is checked against that root, and only
    // when the caller trusts it; the names only pick the root.
    let emulated = roots.emulated_tdx(&chain);
    let (root, trust) = match emulated {
        None => (roots.intel(), Trust::Hardware),
        Some(EmulatedRoot {
            root: Some(root), ..
        }) => (root, Trust::Emulated),
        Some(_) => (roots.intel(), Trust::Emulated),
    };
    let mut checks = Vec::new();

    checks.push(if quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID {
        Check::pass(check::QE_VENDOR_ID, "Intel")
    } else {
        Check::fail(
            check::QE_VENDOR_ID,
            format!("{} is not Intel's", hex::encode(quote.header.qe_vendor_id)),
        )
    });
    checks.push(Check::from_result(
        check::QUOTE_SIGNATURE,
        p256_raw_verify(
            &quote.attestation_key,
            quote.signed_bytes(),
            &quote.signature,
        )
        .map(|()| {
            format!(
                "ECDSA P-256 SHA-256 over bytes [0, {:#x}) verifies with the attestation key",
                quote.signed_bytes().len()
            )
        })
        .map_err(|e| format!("with the attestation key: {e}")),
    ));
    checks.push(Check::from_result(
        check::QE_REPORT_SIGNATURE,
        qe_report_signature(quote, pck),
    ));
    checks.push(Check::from_result(check::QE_REPORT_DATA, qe_binding(quote)));
    let qe = &quote.qe_report;
    checks.push(
        if qe.mr_signer == INTEL_QE_MRSIGNER && qe.isv_prod_id == INTEL_TD_QE_ISVPRODID {
            Check::pass(
                check::QE_IDENTITY,
                format!(
                    "Intel's TD quoting enclave (MRSIGNER {}, ISVPRODID {}, ISVSVN {})",
                    hex::encode(qe.mr_signer),
                    qe.isv_prod_id,
                    qe.isv_svn
                ),
            )
        } else {
            Check::fail(
                check::QE_IDENTITY,
                format!(
                    "MRSIGNER {} ISVPRODID {}: not Intel's TD quoting enclave",
                    hex::encode(qe.mr_signer),
                    qe.isv_prod_id
                ),
            )
        },
    );
    checks.push(ecdsa_signed_by(check::PCK_SIGNED_BY_CA, pck, ca));
    checks.push(ecdsa_signed_by(check::CA_SIGNED_BY_ROOT, ca, root));
    checks.push(match chain.get(2) {
        _ if emulated.is_some_and(|e| e.root.is_none()) => Check::fail(
            check::ROOT_TRUSTED,
            emulated.map_or_else(String::new, |e| e.refusal.clone()),
        ),
        Some(given) if given == root && trust == Trust::Emulated => Check::pass(
            check::ROOT_TRUSTED,
            format!(
                "the quote's root is \"{}\", the root of {} (emulated evidence accepted)",
                root.subject_name(),
                emulated.map_or("", |e| e.signer.as_str())
            ),
        ),
        Some(given) if given == root => Check::pass(
            check::ROOT_TRUSTED,
            format!(
                "the quote's root is the trusted \"{}\"",
                root.subject_name()
            ),
        ),
        Some(given) => Check::fail(
            check::ROOT_TRUSTED,
            format!(
                "the quote's root \"{}\" is not the trusted \"{}\"",
                given.subject_name(),
                root.subject_name()
            ),
        ),
        None => Check::pass(
            check::ROOT_TRUSTED,
            format!(
                "the quote's chain stops at its CA; the trusted \"{}\" was used",
                root.subject_name()
            ),
        ),
    });
    checks.push(Check::from_result(check::PCK_VALIDITY, pck.valid_at(at)));
    checks.push(Check::from_result(check::CA_VALIDITY, ca.valid_at(at)));
    checks.push(Check::from_result(check::ROOT_VALIDITY, root.valid_at(at)));

    let observed = quote.td_attributes() & (TD_ATTRIBUTE_DEBUG | TD_ATTRIBUTES_PROFILING);
    let what = match (
        observed & TD_ATTRIBUTE_DEBUG != 0,
        observed & TD_ATTRIBUTES_PROFILING != 0,
    ) {
        (true, true) => {
            "DEBUG (bit 0) and profiling (bits 4-6): the host can read and write the TD's state"
        }
        (true, false) => "DEBUG (bit 0): the host can read and write the TD's state",
        _ => "profiling (bits 4-6): the host can observe the TD's execution",
    };
    checks.push(match (observed, expect.allow_debug) {
        (0, _) => Check::pass(check::TD_DEBUG, "the TD is neither debuggable nor profiled"),
        (_, true) => Check::pass(
            check::TD_DEBUG,
            format!("the TD has {what} (accepted: debug allowed)"),
        ),
        (_, false) => Check::fail(
            check::TD_DEBUG,
            format!("TD attributes {:#x} have {what}", quote.td_attributes()),
        ),
    });
    if let Some(declared) = expect.policy {
        let governed = TD_ATTRIBUTE_DEBUG | TD_ATTRIBUTE_SEPT_VE_DISABLE | TD_ATTRIBUTE_MIGRATABLE;
        let (want, have) = (declared & governed, quote.td_attributes() & governed);
        checks.push(if want == have {
            Check::pass(
                check::TD_ATTRIBUTES,
                format!(
                    "DEBUG, SEPT_VE_DISABLE and MIGRATABLE as the image declares: {}",
                    attribute_names(have)
                ),
            )
        } else {
            Check::fail(
                check::TD_ATTRIBUTES,
                format!(
                    "the image declares {} of DEBUG, SEPT_VE_DISABLE and MIGRATABLE, the TD \
                     was launched with {}",
                    attribute_names(want),
                    attribute_names(have)
                ),
            )
        });
    }
    checks.extend(expect.measurement_check(check::MRTD, EvidenceKind::TdxQuote, &quote.body.mr_td));
    checks.extend(expect.report_data_check(check::REPORT_DATA, &quote.body.report_data));
    checks.extend(super::policy::check::tdx(expect.reference.as_ref(), quote));
    if let Some(collateral) = collateral {
        checks.push(tcb_status(quote, root, at, collateral));
    }

    let mut claims = claims(quote);
    claims.insert(
        0,
        Claim {
            name: "trust",
            value: match trust {
                Trust::Hardware => format!("hardware (Intel's \"{}\")", root.subject_name()),
                Trust::Emulated => format!(
                    "emulated: quoted by {}, not by hardware",
                    emulated.map_or("", |e| e.signer.as_str())
                ),
            },
        },
    );
    claims.push(Claim {
        name: "pck_certificate",
        value: format!(
            "\"{}\" issued by \"{}\"",
            pck.subject_name(),
            ca.subject_name()
        ),
    });
    Ok(Verification {
        kind: EvidenceKind::TdxQuote,
        trust,
        at,
        claims,
        checks,
    })
}

/// Verify a raw big-endian `r || s` P-256 signature with a raw `x || y` key.
fn p256_raw_verify(
    key: &[u8; P256_PAIR_SIZE],
    message: &[u8],
    signature: &[u8; P256_PAIR_SIZE],
) -> Result<(), String> {
    let mut sec1 = [0u8; P256_PAIR_SIZE + 1];
    sec1[0] = 0x04;
    sec1[1..].copy_from_slice(key);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| "the key is not a P-256 point".to_owned())?;
    verify_with(&key, message, signature)
}

fn verify_with(
    key: &p256::ecdsa::VerifyingKey,
    message: &[u8],
    signature: &[u8; P256_PAIR_SIZE],
) -> Result<(), String> {
    let signature = p256::ecdsa::Signature::from_slice(signature)
        .map_err(|_| "r or s is not a valid P-256 scalar".to_owned())?;
    key.verify(message, &signature)
        .map_err(|_| "the signature does not verify".to_owned())
}

fn qe_report_signature(quote: &Quote, pck: &Cert) -> Result<String, String> {
    let key = pck
        .p256_key()
        .map_err(|e| format!("cannot use the PCK certificate's key: {e}"))?;
    verify_with(&key, quote.qe_report.as_bytes(), &quote.qe_report_signature)
        .map(|()| "the PCK certificate's key signs the QE report (ECDSA P-256 SHA-256)".to_owned())
        .map_err(|e| format!("with the PCK certificate's key: {e}"))
}

fn qe_binding(quote: &Quote) -> Result<String, String> {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(quote.attestation_key)
        .chain_update(&quote.qe_auth_data)
        .finalize()
        .into();
    let (bound, rest) = quote.qe_report.report_data.split_at(32);
    if bound != digest {
        return Err(format!(
            "QE report_data starts with {}, but SHA-256(attestation key || QE auth data) is {}",
            hex::encode(bound),
            hex::encode(digest)
        ));
    }
    if rest.iter().any(|&b| b != 0) {
        return Err("QE report_data bytes 32..64 are not zero".into());
    }
    Ok(format!(
        "QE report_data = SHA-256(attestation key || {}-byte QE auth data) {}",
        quote.qe_auth_data.len(),
        hex::encode(digest)
    ))
}

fn ecdsa_signed_by(name: &'static str, cert: &Cert, issuer: &Cert) -> Check {
    let what = format!(
        "\"{}\" signed by \"{}\"",
        cert.subject_name(),
        issuer.subject_name()
    );
    match cert.verify_issued_by(issuer) {
        Ok(()) => Check::pass(name, format!("{what} (ECDSA P-256 SHA-256)")),
        Err(e) => Check::fail(name, format!("{what}: {e}")),
    }
}

/// The TCB status dcap-qvl appraises with `collateral`, which must chain to `root`
/// (the root the PCK chain was checked against).
fn tcb_status(quote: &Quote, root: &Cert, at: SystemTime, collateral: &Collateral) -> Check {
    // dcap-qvl checks the root against the root CA's CRL as a certificate that names
    // itself as its issuer, and panics (webpki asserts it) when it does not: such a
    // root anchors no appraisal.
    let tbs = &root.certificate().tbs_certificate;
    if tbs.issuer != tbs.subject {
        return Check::fail(
            check::TCB_STATUS,
            format!(
                "the root \"{}\" is not self-issued (its issuer is \"{}\"): no collateral \
                 can be appraised under it",
                root.subject_name(),
                root.issuer_name()
            ),
        );
    }
    let now = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Whether a debuggable or profiled TD (the attributes dcap-qvl's allow_debug
    // covers) is acceptable is the td-debug check's to say, once; the appraisal judges
    // the TCB and dcap-qvl's other TD attribute rules (SEPT_VE_DISABLE set,
    // MIGRATABLE and reserved bits clear).
    //
    // dcap-qvl takes a PCK chain in the collateral over the quote's: the quote's is
    // the one the checks above verified, so it is the one appraised.
    let collateral = Collateral {
        pck_certificate_chain: None,
        ..collateral.clone()
    };
    let verifier =
        dcap_qvl::verify::QuoteVerifier::<dcap_qvl::configs::RustCryptoConfig>::new_with_config(
            root.der().to_vec(),
        )
        .allow_debug(true);
    match verifier.verify(quote.raw(), &collateral, now) {
        Ok(report) => {
            let advisories = if report.advisory_ids.is_empty() {
                String::new()
            } else {
                format!(" (advisories {})", report.advisory_ids.join(", "))
            };
            let detail = format!("TCB status {}{advisories}", report.status);
            if report.status == "UpToDate" {
                Check::pass(check::TCB_STATUS, detail)
            } else {
                Check::fail(check::TCB_STATUS, format!("{detail}; only UpToDate passes"))
            }
        }
        Err(e) => {
            let causes: Vec<String> = e.chain().map(ToString::to_string).collect();
            Check::fail(
                check::TCB_STATUS,
                format!(
                    "dcap-qvl's appraisal with the collateral failed: {}",
                    dcap_error_text(&causes, e.downcast_ref::<webpki::Error>())
                ),
            )
        }
    }
}

/// The causes of a dcap-qvl error (`causes`, outermost first), as one sentence. They
/// are sentences but for the error of the certificate and CRL checks dcap-qvl leaves
/// to webpki (`webpki`), whose text is its Rust debug form (`CrlExpired { time:
/// UnixTime(..), .. }`): that one is put in words.
fn dcap_error_text(causes: &[String], webpki: Option<&webpki::Error>) -> String {
    let raw = webpki.map(ToString::to_string);
    causes
        .iter()
        .map(|cause| match (webpki, &raw) {
            (Some(e), Some(raw)) if cause == raw => webpki_error_text(e),
            _ => without_oid_debug(cause),
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// `cause` with each OID in its Rust debug form, as dcap-qvl names a missing PCK
/// certificate extension (`[ObjectIdentifier(1.2.840.113741.1.13.1), ..]`), reduced to
/// its dotted numbers.
fn without_oid_debug(cause: &str) -> String {
    const DEBUG: &str = "ObjectIdentifier(";
    let mut out = String::new();
    let mut rest = cause;
    while let Some(at) = rest.find(DEBUG) {
        out.push_str(&rest[..at]);
        rest = &rest[at + DEBUG.len()..];
        if let Some(end) = rest.find(')') {
            out.push_str(&rest[..end]);
            rest = &rest[end + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// A webpki error in words.
fn webpki_error_text(e: &webpki::Error) -> String {
    use webpki::Error as E;
    let at = |secs: u64| crate::time::format_rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
    match e {
        E::CertExpired { time, not_after } => format!(
            "a certificate expired at {} (checked at {})",
            at(not_after.as_secs()),
            at(time.as_secs())
        ),
        E::CertNotValidYet { time, not_before } => format!(
            "a certificate is not valid before {} (checked at {})",
            at(not_before.as_secs()),
            at(time.as_secs())
        ),
        E::CrlExpired { time, next_update } => format!(
            "a CRL is out of date: its next update was due at {} (checked at {})",
            at(next_update.as_secs()),
            at(time.as_secs())
        ),
        E::CertRevoked => "a certificate is revoked".to_owned(),
        E::UnknownIssuer => "a certificate's issuer is not among the trusted ones".to_owned(),
        E::UnknownRevocationStatus => {
            "a certificate's revocation status is unknown: no CRL covers it".to_owned()
        }
        E::InvalidSignatureForPublicKey => {
            "a signature does not verify with its issuer's public key".to_owned()
        }
        E::InvalidCrlSignatureForPublicKey => {
            "a CRL's signature does not verify with its issuer's public key".to_owned()
        }
        E::IssuerNotCrlSigner => "a CRL's issuer is not allowed to sign CRLs".to_owned(),
        E::BadDer => "malformed DER".to_owned(),
        E::BadDerTime => "a malformed DER time".to_owned(),
        other => variant_words(&other.to_string()),
    }
}

/// `MaximumPathDepthExceeded { .. }` as "maximum path depth exceeded": the name of an
/// enum variant from its debug form, in lowercase words.
fn variant_words(debug: &str) -> String {
    let name = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or(debug);
    let mut words = String::new();
    for (i, c) in name.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

/// The names of the policy-governed attributes set in `attributes`, or "none".
fn attribute_names(attributes: u64) -> String {
    let names: Vec<&str> = [
        (TD_ATTRIBUTE_DEBUG, "DEBUG"),
        (TD_ATTRIBUTE_SEPT_VE_DISABLE, "SEPT_VE_DISABLE"),
        (TD_ATTRIBUTE_MIGRATABLE, "MIGRATABLE"),
    ]
    .into_iter()
    .filter(|(bit, _)| attributes & bit != 0)
    .map(|(_, name)| name)
    .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn claims(q: &Quote) -> Vec<Claim> {
    let claim = |name, value: String| Claim { name, value };
    let b = &q.body;
    let attributes = q.td_attributes();
    let mut flags = Vec::new();
    if attributes & TD_ATTRIBUTE_DEBUG != 0 {
        flags.push("DEBUG");
    }
    if attributes & TD_ATTRIBUTES_PROFILING != 0 {
        flags.push("PROFILING");
    }
    if attributes & TD_ATTRIBUTE_SEPT_VE_DISABLE != 0 {
        flags.push("SEPT_VE_DISABLE");
    }
    let mut claims = vec![
        claim("version", q.version.to_string()),
        claim("body", q.body_kind().to_owned()),
        claim("qe_svn", q.header.qe_svn.to_string()),
        claim("pce_svn", q.header.pce_svn.to_string()),
        claim("tee_tcb_svn", hex::encode(b.tee_tcb_svn)),
        claim("mr_seam", hex::encode(b.mr_seam)),
        claim("mr_signer_seam", hex::encode(b.mr_signer_seam)),
        claim("seam_attributes", hex::encode(b.seam_attributes)),
        claim(
            "td_attributes",
            format!(
                "{}{}",
                hex::encode(b.td_attributes),
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", flags.join(", "))
                }
            ),
        ),
        claim("xfam", hex::encode(b.xfam)),
        claim("mr_td", hex::encode(b.mr_td)),
        claim("mr_config_id", hex::encode(b.mr_config_id)),
        claim("mr_owner", hex::encode(b.mr_owner)),
        claim("mr_owner_config", hex::encode(b.mr_owner_config)),
        claim("rtmr0", hex::encode(b.rtmr[0])),
        claim("rtmr1", hex::encode(b.rtmr[1])),
        claim("rtmr2", hex::encode(b.rtmr[2])),
        claim("rtmr3", hex::encode(b.rtmr[3])),
        claim("report_data", hex::encode(b.report_data)),
    ];
    if let Some(b15) = &q.body15 {
        claims.push(claim("tee_tcb_svn2", hex::encode(b15.tee_tcb_svn2)));
        claims.push(claim("mr_service_td", hex::encode(b15.mr_service_td)));
    }
    claims.push(claim(
        "qe_report",
        format!(
            "ISVPRODID {}, ISVSVN {}, MRENCLAVE {}",
            q.qe_report.isv_prod_id,
            q.qe_report.isv_svn,
            hex::encode(q.qe_report.mr_enclave)
        ),
    ));
    if q.trailing > 0 {
        claims.push(claim(
            "trailing_bytes",
            format!(
                "{} (after the signed data; not covered by any signature, ignored)",
                q.trailing
            ),
        ));
    }
    claims
}

#[cfg(test)]
mod tests;
