//! Verifying an SEV-SNP attestation report with the VCEK that signed it.
//!
//! The chain is ARK (self-signed) -> ASK -> VCEK, all RSASSA-PSS SHA-384; the ARK
//! must be the trusted one of the VCEK's product. The report is signed with ECDSA
//! P-384 SHA-384 over bytes `[0, 0x2A0)`, R and S little-endian in 72-byte fields.
//! The VCEK's extensions must agree with the report: its TCB security patch levels
//! with `reported_tcb` decoded for the product, its hwID with `chip_id` (docs/specs.md
//! 4.2-4.5).
//!
//! Certificates that name an emulated root the caller gave
//! ([`crate::roots::EmulatedRoot`]) are checked the same way against its ARK, and only
//! when the caller gave the ARK; the verification is then marked emulated.

use std::time::SystemTime;

use nacre_shared_abi::snp::report::{
    AttestationReport, GuestPolicy, SigningKey, SnpProduct, TcbVersion,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
};
use p384::ecdsa::signature::Verifier;
use thiserror::Error;
use x509_cert::der::asn1::{Ia5StringRef, Utf8StringRef};
use x509_cert::der::{Decode, Tag};

use super::crl::Crl;
use super::policy;
use super::roots::{AmdRoot, EmulatedRoot, TrustAnchors};
use super::time;
use super::x509::{Cert, X509Error};
use super::{Check, Claim, EvidenceKind, Expectations, Trust, Verification};

/// Names of the SNP checks, in the order they run.
pub mod check {
    /// `signature_algo` is 1 (ECDSA P-384 with SHA-384).
    pub const SIGNATURE_ALGORITHM: &str = "signature-algorithm";
    /// Every byte the report's version reserves is zero.
    pub const RESERVED_ZERO: &str = "reserved-zero";
    /// `signer_info` says the VCEK signed the report.
    pub const SIGNING_KEY: &str = "signing-key";
    /// The ARK is the trusted root of the VCEK's product (for evidence from nacre's
    /// emulated security processor: its emulated root, if emulated evidence is
    /// accepted).
    pub const ARK_TRUSTED: &str = "ark-trusted";
    /// The ARK signs itself.
    pub const ARK_SELF_SIGNED: &str = "ark-self-signed";
    /// The ARK signs the ASK.
    pub const ASK_SIGNED_BY_ARK: &str = "ask-signed-by-ark";
    /// The ASK signs the VCEK.
    pub const VCEK_SIGNED_BY_ASK: &str = "vcek-signed-by-ask";
    /// The ARK is valid at the verification time.
    pub const ARK_VALIDITY: &str = "ark-validity";
    /// The ASK is valid at the verification time.
    pub const ASK_VALIDITY: &str = "ask-validity";
    /// The VCEK is valid at the verification time.
    pub const VCEK_VALIDITY: &str = "vcek-validity";
    /// The VCEK's key verifies the report's signature.
    pub const REPORT_SIGNATURE: &str = "report-signature";
    /// The VCEK's TCB extensions equal `reported_tcb`.
    pub const REPORTED_TCB: &str = "reported-tcb";
    /// The VCEK's hwID equals `chip_id`.
    pub const CHIP_ID: &str = "chip-id";
    /// Policy bit 17 (reserved) is 1.
    pub const POLICY_RESERVED_BIT: &str = "policy-reserved-bit";
    /// Policy bit 19 (DEBUG) is 0, unless debugging is allowed.
    pub const POLICY_DEBUG: &str = "policy-debug";
    /// The measurement is the expected one.
    pub const MEASUREMENT: &str = "measurement";
    /// The report data is the expected one.
    pub const REPORT_DATA: &str = "report-data";
    /// With an image: the report's POLICY is the one the image declares.
    pub const POLICY: &str = "policy";
    /// VMPL is 0, or the reference policy's `snp.vmpl` (run on every report).
    pub const VMPL: &str = crate::policy::check::VMPL;
    /// With the ARK's CRL: it is the ARK's, current, and does not list the ASK.
    pub const ASK_NOT_REVOKED: &str = "ask-not-revoked";
}

/// VCEK extension OIDs, arc 1.3.6.1.4.1.3704.1 (docs/specs.md 4.5).
pub mod vcek_oid {
    use x509_cert::der::oid::ObjectIdentifier;

    /// structVersion (INTEGER).
    pub const STRUCT_VERSION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.1");
    /// productName (IA5String, e.g. "Milan-B0", "Turin").
    pub const PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
    /// blSPL: boot loader security patch level.
    pub const BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
    /// teeSPL: PSP OS security patch level.
    pub const TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
    /// snpSPL: SNP firmware security patch level.
    pub const SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
    /// spl_4 to spl_7: reserved security patch levels (zero on Milan and Genoa).
    pub const SPL_4_TO_7: [ObjectIdentifier; 4] = [
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.4"),
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.5"),
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.6"),
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.7"),
    ];
    /// ucodeSPL: microcode security patch level.
    pub const UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
    /// fmcSPL: FMC security patch level (Turin).
    pub const FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
    /// hwID: the chip ID (64 bytes; 8 on Turin).
    pub const HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
}

/// Why an SNP verification cannot run.
#[derive(Debug, Error)]
pub enum SnpError {
    /// The VCEK names no product this verifier knows.
    #[error(
        "the VCEK names no known product (productName {}, issuer \"{issuer}\"); Milan, Genoa \
         and Turin are known",
        product_name.as_deref().map_or("absent".to_owned(), |n| format!("{n:?}"))
    )]
    UnknownProduct {
        /// The productName extension, if any.
        product_name: Option<String>,
        /// The VCEK's issuer.
        issuer: String,
    },
    /// The trust anchors have no root for the product.
    #[error("no trusted AMD root for {0}")]
    NoRoot(SnpProduct),
    /// A certificate chain that is not ASK then ARK.
    #[error(
        "the certificate chain must hold two certificates, the ASK then the ARK; it holds {0}"
    )]
    ChainLength(usize),
    /// A certificate does not decode.
    #[error("cannot decode the {which}")]
    Certificate {
        /// Which certificate.
        which: &'static str,
        /// Why.
        #[source]
        source: X509Error,
    },
}

/// The ASK and ARK given with a report instead of the built-in ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpChain {
    /// The AMD SEV Key, which signs the VCEK.
    pub ask: Cert,
    /// The AMD Root Key; it must be the trusted root of the product.
    pub ark: Cert,
}

impl SnpChain {
    /// Decode a PEM bundle of the ASK then the ARK (as AMD's key distribution
    /// service serves `cert_chain`); the self-issued one is taken as the ARK
    /// whichever its place.
    pub fn from_pem(bundle: &[u8]) -> Result<Self, SnpError> {
        let certs = Cert::bundle_from_pem(bundle).map_err(|source| SnpError::Certificate {
            which: "certificate chain",
            source,
        })?;
        let [first, second]: [Cert; 2] = certs
            .try_into()
            .map_err(|certs: Vec<Cert>| SnpError::ChainLength(certs.len()))?;
        let self_issued = |c: &Cert| {
            let tbs = &c.certificate().tbs_certificate;
            tbs.issuer == tbs.subject
        };
        Ok(if self_issued(&first) && !self_issued(&second) {
            Self {
                ask: second,
                ark: first,
            }
        } else {
            Self {
                ask: first,
                ark: second,
            }
        })
    }
}

/// The product a VCEK belongs to: from its productName extension ("Milan-B0",
/// "Genoa", "Turin"), else from its issuer ("SEV-Milan").
pub fn vcek_product(vcek: &Cert) -> Result<SnpProduct, SnpError> {
    let product_name = vcek.extension(vcek_oid::PRODUCT_NAME).and_then(decode_text);
    let issuer = vcek.issuer_name();
    let by_name = product_name.as_deref().and_then(|name| {
        let family = name.split('-').next().unwrap_or(name);
        SnpProduct::ALL.into_iter().find(|p| p.name() == family)
    });
    let by_issuer = || {
        SnpProduct::ALL
            .into_iter()
            .find(|p| issuer == format!("SEV-{}", p.name()))
    };
    by_name.or_else(by_issuer).ok_or(SnpError::UnknownProduct {
        product_name,
        issuer,
    })
}

/// The TCB security patch levels a VCEK was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcekTcb {
    /// blSPL.
    pub bootloader: Option<u8>,
    /// teeSPL.
    pub tee: Option<u8>,
    /// snpSPL.
    pub snp: Option<u8>,
    /// ucodeSPL.
    pub microcode: Option<u8>,
    /// fmcSPL (Turin).
    pub fmc: Option<u8>,
}

impl VcekTcb {
    /// Read the SPL extensions of `vcek`; an absent or malformed one is `None`.
    pub fn of(vcek: &Cert) -> Self {
        let spl = |oid| vcek.extension(oid).and_then(|v| u8::from_der(v).ok());
        Self {
            bootloader: spl(vcek_oid::BL_SPL),
            tee: spl(vcek_oid::TEE_SPL),
            snp: spl(vcek_oid::SNP_SPL),
            microcode: spl(vcek_oid::UCODE_SPL),
            fmc: spl(vcek_oid::FMC_SPL),
        }
    }
}

/// The hwID extension of a VCEK: the raw chip ID bytes (a DER OCTET STRING around
/// them is accepted too).
pub fn vcek_hw_id(vcek: &Cert, product: SnpProduct) -> Option<Vec<u8>> {
    let value = vcek.extension(vcek_oid::HW_ID)?;
    let len = product.chip_id_len();
    if value.len() == len {
        return Some(value.to_vec());
    }
    match value {
        [0x04, n, rest @ ..] if usize::from(*n) == len && rest.len() == len => Some(rest.to_vec()),
        _ => None,
    }
}

/// Verify `report` with `vcek`, the ASK and ARK of `chain` (else the built-in ones
/// of the VCEK's product), certificates valid at `at`, and `expect`.
///
/// When the VCEK or the chain names an emulated root of `roots`, the root is that one
/// and the verification is [`Trust::Emulated`]; if `roots` only recognizes it, the
/// `ark-trusted` check fails with its refusal.
pub fn verify_report(
    report: &AttestationReport,
    vcek: &Cert,
    chain: Option<&SnpChain>,
    crl: Option<&Crl>,
    roots: &TrustAnchors,
    expect: &Expectations,
    at: SystemTime,
) -> Result<Verification, SnpError> {
    let product = vcek_product(vcek)?;
    let mut certs = vec![vcek];
    if let Some(c) = chain {
        certs.extend([&c.ask, &c.ark]);
    }
    // Certificates that name an emulated root rest on it, whatever else they say;
    // the names only pick the root, which must still sign them.
    let emulated = roots.emulated_snp(&certs);
    let trust = if emulated.is_some() {
        Trust::Emulated
    } else {
        Trust::Hardware
    };
    let emulated_root = emulated
        .and_then(|e| e.root.as_ref())
        .filter(|r| r.product == product);
    let root = match emulated_root {
        Some(root) => root,
        None => roots.amd(product).ok_or(SnpError::NoRoot(product))?,
    };
    let signer = emulated.map_or("the hardware", |e| e.signer.as_str());
    let ask = chain.map_or(&root.ask, |c| &c.ask);
    let mut checks = Vec::new();

    checks.push(
        if report.signature_algo == SIGNATURE_ALGO_ECDSA_P384_SHA384 {
            Check::pass(check::SIGNATURE_ALGORITHM, "1 (ECDSA P-384 with SHA-384)")
        } else {
            Check::fail(
                check::SIGNATURE_ALGORITHM,
                format!(
                    "{} (only 1, ECDSA P-384 with SHA-384, is defined)",
                    report.signature_algo
                ),
            )
        },
    );
    checks.push(match report.first_nonzero_reserved() {
        None => Check::pass(
            check::RESERVED_ZERO,
            format!("every byte version {} reserves is zero", report.version),
        ),
        Some(offset) => Check::fail(
            check::RESERVED_ZERO,
            format!(
                "byte {offset:#x} is reserved in version {} but not zero",
                report.version
            ),
        ),
    });
    checks.push(match report.signer().signing_key() {
        Ok(SigningKey::Vcek) => Check::pass(check::SIGNING_KEY, "VCEK"),
        Ok(SigningKey::Vlek) => Check::fail(
            check::SIGNING_KEY,
            "signed with a VLEK; only VCEK-signed reports are verified",
        ),
        Ok(SigningKey::None) => Check::fail(check::SIGNING_KEY, "the report is not signed"),
        Err(v) => Check::fail(check::SIGNING_KEY, format!("reserved signing key {v}")),
    });

    checks.push(ark_trusted(root, chain, emulated, product));
    checks.push(signed_by(check::ARK_SELF_SIGNED, &root.ark, &root.ark));
    checks.push(signed_by(check::ASK_SIGNED_BY_ARK, ask, &root.ark));
    checks.push(signed_by(check::VCEK_SIGNED_BY_ASK, vcek, ask));
    checks.push(Check::from_result(
        check::ARK_VALIDITY,
        root.ark.valid_at(at),
    ));
    checks.push(Check::from_result(check::ASK_VALIDITY, ask.valid_at(at)));
    checks.push(Check::from_result(check::VCEK_VALIDITY, vcek.valid_at(at)));
    if let Some(crl) = crl {
        checks.push(Check::from_result(
            check::ASK_NOT_REVOKED,
            ask_not_revoked(crl, &root.ark, ask, at),
        ));
    }

    checks.push(Check::from_result(
        check::REPORT_SIGNATURE,
        report_signature(report, vcek),
    ));
    checks.push(Check::from_result(
        check::REPORTED_TCB,
        tcb_matches(report, vcek, product),
    ));
    checks.push(Check::from_result(
        check::CHIP_ID,
        chip_id_matches(report, vcek, product),
    ));

    let policy = report.guest_policy();
    checks.push(if policy.reserved_bit_set() {
        Check::pass(check::POLICY_RESERVED_BIT, "bit 17 is 1")
    } else {
        Check::fail(
            check::POLICY_RESERVED_BIT,
            format!("policy {:#x}: reserved bit 17 must be 1", policy.0),
        )
    });
    checks.push(match (policy.debug(), expect.allow_debug) {
        (false, _) => Check::pass(check::POLICY_DEBUG, "debugging is not allowed"),
        (true, true) => Check::pass(
            check::POLICY_DEBUG,
            "the policy allows debugging (accepted: debug allowed)",
        ),
        (true, false) => Check::fail(
            check::POLICY_DEBUG,
            format!(
                "policy {:#x} allows debugging (bit 19): the host can read and write the \
                 guest's memory",
                policy.0
            ),
        ),
    });
    if let Some(declared) = expect.policy {
        let described = |p: u64| describe_policy(GuestPolicy(p));
        checks.push(if declared == policy.0 {
            Check::pass(
                check::POLICY,
                format!("{}, as the image declares", described(policy.0)),
            )
        } else {
            Check::fail(
                check::POLICY,
                format!(
                    "the image declares policy {}, the guest was launched with {}",
                    described(declared),
                    described(policy.0)
                ),
            )
        });
    }
    checks.push(policy::check::snp_vmpl(
        report,
        expect.reference.as_ref().and_then(|p| p.snp.as_ref()),
    ));
    checks.extend(expect.measurement_check(
        check::MEASUREMENT,
        EvidenceKind::SnpReport,
        &report.measurement,
    ));
    checks.extend(expect.report_data_check(check::REPORT_DATA, &report.report_data));
    checks.extend(policy::check::snp(
        expect.reference.as_ref(),
        report,
        product,
    ));

    Ok(Verification {
        kind: EvidenceKind::SnpReport,
        trust,
        at,
        claims: claims(report, product, signer, trust, root),
        checks,
    })
}

/// The `ask-not-revoked` check: `crl` is `ark`'s, current at `at`, and does not
/// list `ask`. (AMD revokes ASKs this way; VCEKs are superseded by TCB versions,
/// not revoked.)
fn ask_not_revoked(crl: &Crl, ark: &Cert, ask: &Cert, at: SystemTime) -> Result<String, String> {
    crl.verify_issued_by(ark)
        .map_err(|e| format!("the CRL is not the ARK's: {e}"))?;
    let current = crl
        .current_at(at)
        .map_err(|e| format!("the ARK's CRL is {e}"))?;
    let serial = hex::encode(ask.certificate().tbs_certificate.serial_number.as_bytes());
    match crl.revocation_of(ask) {
        Some(when) => Err(format!(
            "the ARK's CRL revokes the ASK (serial {serial}) as of {}",
            time::format_rfc3339(when)
        )),
        None => Ok(format!(
            "the ARK's CRL ({current}) does not list the ASK (serial {serial})"
        )),
    }
}

/// The `ark-trusted` check: the ARK is `root`'s, which for evidence under an
/// emulated root must be that root, given by the caller.
fn ark_trusted(
    root: &AmdRoot,
    chain: Option<&SnpChain>,
    emulated: Option<&EmulatedRoot<AmdRoot>>,
    product: SnpProduct,
) -> Check {
    let name = check::ARK_TRUSTED;
    let trusted = root.ark.subject_name();
    let Some(emulated) = emulated else {
        return match chain {
            None => Check::pass(name, format!("built-in {trusted} (no chain given)")),
            Some(c) if c.ark == root.ark => {
                Check::pass(name, format!("the given ARK is the trusted {trusted}"))
            }
            Some(c) => Check::fail(
                name,
                format!(
                    "the given ARK (\"{}\") is not the trusted {trusted}",
                    c.ark.subject_name()
                ),
            ),
        };
    };
    match &emulated.root {
        None => return Check::fail(name, emulated.refusal.clone()),
        Some(r) if r.product != product => {
            return Check::fail(
                name,
                format!(
                    "signed by {} as a {product}, but the trusted emulated root is not a \
                     {product}'s",
                    emulated.signer
                ),
            )
        }
        Some(_) => {}
    }
    let what = format!(
        "{trusted}, the root of {} (emulated evidence accepted)",
        emulated.signer
    );
    match chain {
        None => Check::pass(name, format!("{what}; no chain given")),
        Some(c) if c.ark == root.ark => Check::pass(name, format!("the given ARK is {what}")),
        Some(c) => Check::fail(
            name,
            format!(
                "the given ARK (\"{}\") is not the trusted emulated {trusted}: emulated keys \
                 of another host?",
                c.ark.subject_name()
            ),
        ),
    }
}

fn signed_by(name: &'static str, cert: &Cert, issuer: &Cert) -> Check {
    let what = format!(
        "\"{}\" signed by \"{}\"",
        cert.subject_name(),
        issuer.subject_name()
    );
    match cert.verify_issued_by(issuer) {
        Ok(()) => Check::pass(name, format!("{what} (RSASSA-PSS SHA-384)")),
        Err(e) => Check::fail(name, format!("{what}: {e}")),
    }
}

fn report_signature(report: &AttestationReport, vcek: &Cert) -> Result<String, String> {
    let key = vcek
        .p384_key()
        .map_err(|e| format!("cannot use the VCEK's key: {e}"))?;
    let r = report
        .signature
        .r_big_endian()
        .ok_or("R has non-zero bytes above its 48 significant ones")?;
    let s = report
        .signature
        .s_big_endian()
        .ok_or("S has non-zero bytes above its 48 significant ones")?;
    let signature = p384::ecdsa::Signature::from_slice(&[r, s].concat())
        .map_err(|_| "R or S is not a valid P-384 scalar".to_owned())?;
    key.verify(report.signed_bytes(), &signature)
        .map(|()| "ECDSA P-384 SHA-384 over bytes [0, 0x2A0) verifies with the VCEK".to_owned())
        .map_err(|_| "the signature over bytes [0, 0x2A0) does not verify with the VCEK".to_owned())
}

fn tcb_matches(
    report: &AttestationReport,
    vcek: &Cert,
    product: SnpProduct,
) -> Result<String, String> {
    let tcb = TcbVersion::decode(report.reported_tcb, product);
    let spl = VcekTcb::of(vcek);
    let mut pairs = vec![
        ("blSPL", spl.bootloader, tcb.bootloader),
        ("teeSPL", spl.tee, tcb.tee),
        ("snpSPL", spl.snp, tcb.snp),
        ("ucodeSPL", spl.microcode, tcb.microcode),
    ];
    if let Some(fmc) = tcb.fmc {
        pairs.push(("fmcSPL", spl.fmc, fmc));
    }
    let mut mismatches = Vec::new();
    for (name, in_cert, in_report) in &pairs {
        match in_cert {
            None => mismatches.push(format!("the VCEK has no {name}")),
            Some(v) if v != in_report => {
                mismatches.push(format!("VCEK {name} {v} but the report says {in_report}"))
            }
            Some(_) => {}
        }
    }
    let summary = pairs
        .iter()
        .map(|(name, _, v)| format!("{name} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    if mismatches.is_empty() {
        Ok(format!(
            "reported_tcb ({product} layout) {summary} = the VCEK's"
        ))
    } else {
        Err(mismatches.join("; "))
    }
}

fn chip_id_matches(
    report: &AttestationReport,
    vcek: &Cert,
    product: SnpProduct,
) -> Result<String, String> {
    let len = product.chip_id_len();
    let hw_id = vcek_hw_id(vcek, product)
        .ok_or_else(|| format!("the VCEK has no {len}-byte hwID extension"))?;
    let chip_id = &report.chip_id[..len];
    if report.signer().mask_chip_key() {
        return Err("the report masks its chip ID (MASK_CHIP_KEY)".into());
    }
    if hw_id == chip_id {
        Ok(format!(
            "{} ({len} bytes on {product})",
            hex::encode(chip_id)
        ))
    } else {
        Err(format!(
            "the VCEK's hwID is {} but the report's chip_id is {}",
            hex::encode(&hw_id),
            hex::encode(chip_id)
        ))
    }
}

fn decode_text(der: &[u8]) -> Option<String> {
    match der.first().copied() {
        Some(t) if t == u8::from(Tag::Ia5String) => {
            Ia5StringRef::from_der(der).ok().map(|s| s.to_string())
        }
        Some(t) if t == u8::from(Tag::Utf8String) => {
            Utf8StringRef::from_der(der).ok().map(|s| s.to_string())
        }
        _ => None,
    }
}

/// Describe a TCB_VERSION as `product` lays it out.
pub fn describe_tcb(raw: u64, product: SnpProduct) -> String {
    let t = TcbVersion::decode(raw, product);
    let fmc = t.fmc.map(|f| format!("FMC {f}, ")).unwrap_or_default();
    format!(
        "{} ({fmc}boot loader {}, TEE {}, SNP {}, microcode {})",
        hex::encode(raw.to_le_bytes()),
        t.bootloader,
        t.tee,
        t.snp,
        t.microcode
    )
}

fn describe_policy(policy: GuestPolicy) -> String {
    let flags: Vec<&str> = [
        (GuestPolicy::SMT, "SMT"),
        (GuestPolicy::MIGRATE_MA, "MIGRATE_MA"),
        (GuestPolicy::DEBUG, "DEBUG"),
        (GuestPolicy::SINGLE_SOCKET, "SINGLE_SOCKET"),
        (GuestPolicy::CXL_ALLOW, "CXL_ALLOW"),
        (GuestPolicy::MEM_AES_256_XTS, "MEM_AES_256_XTS"),
        (GuestPolicy::RAPL_DIS, "RAPL_DIS"),
        (
            GuestPolicy::CIPHERTEXT_HIDING_DRAM,
            "CIPHERTEXT_HIDING_DRAM",
        ),
        (GuestPolicy::PAGE_SWAP_DISABLE, "PAGE_SWAP_DISABLE"),
    ]
    .into_iter()
    .filter(|(bit, _)| policy.has(*bit))
    .map(|(_, name)| name)
    .collect();
    format!(
        "{:#x} (ABI {}.{}{}{})",
        policy.0,
        policy.abi_major(),
        policy.abi_minor(),
        if flags.is_empty() { "" } else { ", " },
        flags.join(", ")
    )
}

fn claims(
    r: &AttestationReport,
    product: SnpProduct,
    signer: &str,
    trust: Trust,
    root: &AmdRoot,
) -> Vec<Claim> {
    let claim = |name, value: String| Claim { name, value };
    let signing_key = match r.signer().signing_key() {
        Ok(SigningKey::Vcek) => "VCEK".to_owned(),
        Ok(SigningKey::Vlek) => "VLEK".to_owned(),
        Ok(SigningKey::None) => "none".to_owned(),
        Err(v) => format!("reserved ({v})"),
    };
    let mut claims = vec![
        claim("product", product.name().to_owned()),
        claim(
            "trust",
            match trust {
                Trust::Hardware => format!("hardware (AMD's {})", root.ark.subject_name()),
                Trust::Emulated => format!("emulated: signed by {signer}, not by hardware"),
            },
        ),
        claim("version", r.version.to_string()),
        claim("guest_svn", r.guest_svn.to_string()),
        claim("policy", describe_policy(r.guest_policy())),
        claim("family_id", hex::encode(r.family_id)),
        claim("image_id", hex::encode(r.image_id)),
        claim("vmpl", r.vmpl.to_string()),
        claim("signature_algo", r.signature_algo.to_string()),
        claim("current_tcb", describe_tcb(r.current_tcb, product)),
        claim("platform_info", format!("{:#x}", r.platform_info)),
        claim(
            "signer_info",
            format!(
                "{:#x} (signing key {signing_key}, author key {}, chip ID {})",
                r.signer_info,
                if r.signer().author_key_en() {
                    "enabled"
                } else {
                    "not used"
                },
                if r.signer().mask_chip_key() {
                    "masked"
                } else {
                    "present"
                }
            ),
        ),
        claim("report_data", hex::encode(r.report_data)),
        claim("measurement", hex::encode(r.measurement)),
        claim("host_data", hex::encode(r.host_data)),
        claim("id_key_digest", hex::encode(r.id_key_digest)),
        claim("author_key_digest", hex::encode(r.author_key_digest)),
        claim("report_id", hex::encode(r.report_id)),
        claim("report_id_ma", hex::encode(r.report_id_ma)),
        claim("reported_tcb", describe_tcb(r.reported_tcb, product)),
    ];
    if r.version >= 3 {
        claims.push(claim(
            "cpuid",
            format!(
                "family {:#x}, model {:#x}, stepping {:#x}",
                r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step
            ),
        ));
    }
    claims.extend([
        claim("chip_id", hex::encode(&r.chip_id[..product.chip_id_len()])),
        claim("committed_tcb", describe_tcb(r.committed_tcb, product)),
        claim(
            "current_firmware",
            format!(
                "{}.{} build {}",
                r.current_major, r.current_minor, r.current_build
            ),
        ),
        claim(
            "committed_firmware",
            format!(
                "{}.{} build {}",
                r.committed_major, r.committed_minor, r.committed_build
            ),
        ),
        claim("launch_tcb", describe_tcb(r.launch_tcb, product)),
    ]);
    if r.version >= 5 {
        claims.push(claim(
            "launch_mit_vector",
            format!("{:#x}", r.launch_mit_vector),
        ));
        claims.push(claim(
            "current_mit_vector",
            format!("{:#x}", r.current_mit_vector),
        ));
    }
    claims
}

#[cfg(test)]
mod tests;
