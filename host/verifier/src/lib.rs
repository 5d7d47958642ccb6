//! nacre's verifier: AMD SEV-SNP attestation reports and Intel TDX quotes (version 4,
//! and 5 with a TDX body) checked offline, the part of nacre a remote party runs.
//!
//! It depends on nothing that produces evidence: the formats it reads are in
//! `nacre-shared-abi`, the roots it trusts are the vendors' ([`roots`]) or ones its
//! caller gives ([`roots::EmulatedRoot`]).
//!
//! A verification runs every check it can and records each one ([`Check`]: a name,
//! whether it passed, and what was seen); the verdict passes only if every check
//! passed. Input that cannot be verified at all (truncated, an unknown version, bad
//! hex, a certificate that does not decode) is an error instead.
//!
//! ```no_run
//! use nacre_verifier::{self as verifier, Evidence, Expectations, Inputs, TrustAnchors};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let roots = TrustAnchors::built_in()?;
//! let evidence = Evidence::parse(&std::fs::read("quote.dat")?)?;
//! let mut inputs = Inputs::new(&roots);
//! inputs.expect = Expectations { measurement: Some(vec![0; 48]), ..Default::default() };
//! let verification = verifier::verify(&evidence, &inputs)?;
//! for check in verification.failures() {
//!     eprintln!("{}: {}", check.name, check.detail);
//! }
//! # Ok(()) }
//! ```
//!
//! Evidence under an emulated root verifies only when the caller gave that root in
//! the [`TrustAnchors`], and the verification then says so ([`Trust::Emulated`]).
//!
//! A reference-value policy ([`policy::ReferencePolicy`], a TOML file) in
//! [`Expectations::reference`] adds a named check for each report field it names.
//!
//! Sources: docs/specs.md 4.2-4.5 (SNP report, policy, TCB_VERSION, certificate chain) and
//! 6.5-6.6 (TDREPORT, quote v4/v5).

#![forbid(unsafe_code)]

pub mod crl;
pub mod evidence;
pub mod policy;
pub mod roots;
pub mod snp;
pub mod tdx;
pub mod time;
pub mod x509;

use std::time::SystemTime;

use nacre_shared_abi::snp::report::{AttestationReport, ATTESTATION_REPORT_SIZE};
use thiserror::Error;

pub use roots::TrustAnchors;
pub use x509::Cert;

/// Size of an SNP measurement and of a TDX MRTD (SHA-384).
pub const MEASUREMENT_SIZE: usize = 48;
/// Size of the report data in an SNP report and a TDX quote.
pub const REPORT_DATA_SIZE: usize = 64;

/// Why evidence or the inputs for its verification are unusable.
#[derive(Debug, Error)]
pub enum AttestError {
    /// Neither an SNP report nor a TDX quote.
    #[error(
        "the evidence is neither an SNP attestation report ({ATTESTATION_REPORT_SIZE:#x} bytes, \
         raw or as hex) nor a TDX quote (version 4 or 5, ECDSA P-256 attestation key): {len} bytes"
    )]
    UnknownEvidence {
        /// Length of the (decoded) input.
        len: usize,
    },
    /// Hex text that does not decode.
    #[error("the evidence looks like hex text but is not: {0}")]
    Hex(String),
    /// An SNP report that does not decode.
    #[error("malformed SNP attestation report: {0}")]
    Report(nacre_shared_abi::snp::report::ReportError),
    /// An expected value of the wrong length.
    #[error("the expected {what} must be {max} bytes{}, not {got}", if *.shorter_ok { " or fewer" } else { "" })]
    ExpectedLength {
        /// Which value.
        what: &'static str,
        /// Its size.
        max: usize,
        /// Whether shorter values are compared with the start of the field.
        shorter_ok: bool,
        /// The length given.
        got: usize,
    },
    /// An input that only applies to the other platform, or a missing one.
    #[error("{0}")]
    Inputs(String),
    /// SNP verification could not run.
    #[error(transparent)]
    Snp(#[from] snp::SnpError),
    /// TDX verification could not run.
    #[error(transparent)]
    Tdx(#[from] tdx::TdxError),
}

/// The evidence, told apart by its bytes.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// An SEV-SNP ATTESTATION_REPORT.
    Snp(Box<AttestationReport>),
    /// A TDX quote.
    Tdx(Box<tdx::Quote>),
}

impl Evidence {
    /// Tell an SNP report from a TDX quote and decode it. Either may be raw bytes
    /// or hex text (whitespace allowed anywhere).
    ///
    /// A TDX quote starts with version 4 or 5 (u16) and attestation key type 2
    /// (ECDSA P-256, u16); an SNP report is exactly 0x4A0 bytes starting with its
    /// version (u32, 2 to 5), so its bytes 2 and 3 are zero.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        let decoded;
        let bytes = if looks_like_hex(bytes) {
            decoded = decode_hex(bytes).map_err(AttestError::Hex)?;
            &decoded[..]
        } else {
            bytes
        };
        let u16_at = |at: usize| {
            bytes
                .get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        if matches!(u16_at(0), Some(4 | 5)) && u16_at(2) == Some(tdx::ATT_KEY_TYPE_ECDSA_P256) {
            return Ok(Self::Tdx(Box::new(tdx::Quote::parse(bytes)?)));
        }
        if bytes.len() == ATTESTATION_REPORT_SIZE {
            let report = AttestationReport::from_bytes(bytes).map_err(AttestError::Report)?;
            return Ok(Self::Snp(Box::new(report)));
        }
        Err(AttestError::UnknownEvidence { len: bytes.len() })
    }

    /// Which kind of evidence this is.
    pub fn kind(&self) -> EvidenceKind {
        match self {
            Self::Snp(_) => EvidenceKind::SnpReport,
            Self::Tdx(_) => EvidenceKind::TdxQuote,
        }
    }

    /// The launch measurement it carries: the SNP MEASUREMENT or the TDX MRTD.
    pub fn measurement(&self) -> [u8; MEASUREMENT_SIZE] {
        match self {
            Self::Snp(r) => r.measurement,
            Self::Tdx(q) => q.body.mr_td,
        }
    }

    /// What the evidence is, for people.
    pub fn describe(&self) -> String {
        match self {
            Self::Snp(r) => format!("SEV-SNP attestation report version {}", r.version),
            Self::Tdx(q) => format!("TDX quote version {} ({})", q.version, q.body_kind()),
        }
    }
}

/// Values the evidence must carry, and what it may be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// The launch measurement (SNP) or MRTD (TDX), 48 bytes.
    pub measurement: Option<Vec<u8>>,
    /// The report data, up to 64 bytes: a shorter value is compared with the start
    /// of the field and the rest must be zero.
    pub report_data: Option<Vec<u8>>,
    /// Accept a guest that the host may debug (SNP policy DEBUG, TD attribute DEBUG)
    /// or profile (TD attributes bits 4-6).
    pub allow_debug: bool,
    /// What the image declares: the SNP guest policy, which the report's POLICY must
    /// equal, or the TD attributes, whose DEBUG, SEPT_VE_DISABLE and MIGRATABLE
    /// bits the quote's must have.
    pub policy: Option<u64>,
    /// Reference values of report fields ([`policy`]): each one the policy names is a
    /// check of its own; its measurement is the expected one (and must agree with
    /// [`Self::measurement`] when both are given), its SNP VMPL the one the `vmpl`
    /// check requires instead of 0.
    pub reference: Option<policy::ReferencePolicy>,
}

impl Expectations {
    /// Check the lengths of the expected values.
    pub fn validate(&self) -> Result<(), AttestError> {
        if let Some(m) = &self.measurement {
            if m.len() != MEASUREMENT_SIZE {
                return Err(AttestError::ExpectedLength {
                    what: "measurement",
                    max: MEASUREMENT_SIZE,
                    shorter_ok: false,
                    got: m.len(),
                });
            }
        }
        if let Some(d) = &self.report_data {
            if d.is_empty() || d.len() > REPORT_DATA_SIZE {
                return Err(AttestError::ExpectedLength {
                    what: "report data",
                    max: REPORT_DATA_SIZE,
                    shorter_ok: true,
                    got: d.len(),
                });
            }
        }
        Ok(())
    }

    /// The measurement `kind` of evidence must carry: [`Self::measurement`], else the
    /// reference policy's (`snp.measurement` or `tdx.mrtd`); `Err` says how the two
    /// differ when both are given.
    pub fn expected_measurement(&self, kind: EvidenceKind) -> Result<Option<Vec<u8>>, String> {
        let (key, from_policy) = match kind {
            EvidenceKind::SnpReport => (
                "snp.measurement",
                self.reference
                    .as_ref()
                    .and_then(|p| p.snp.as_ref())
                    .and_then(|s| s.measurement),
            ),
            EvidenceKind::TdxQuote => (
                "tdx.mrtd",
                self.reference
                    .as_ref()
                    .and_then(|p| p.tdx.as_ref())
                    .and_then(|t| t.mrtd),
            ),
        };
        match (&self.measurement, from_policy) {
            (Some(given), Some(policy)) if given[..] != policy.0[..] => Err(format!(
                "the expected measurement {} (--measurement or --image) and the policy's {key} \
                 {policy} differ",
                hex::encode(given)
            )),
            (Some(given), _) => Ok(Some(given.clone())),
            (None, policy) => Ok(policy.map(|p| p.0.to_vec())),
        }
    }

    /// The check of an expected measurement of `kind` of evidence, if one was given
    /// (or the policy has one).
    pub(crate) fn measurement_check(
        &self,
        name: &'static str,
        kind: EvidenceKind,
        actual: &[u8],
    ) -> Option<Check> {
        let expected = match self.expected_measurement(kind) {
            Ok(expected) => expected?,
            Err(conflict) => return Some(Check::fail(name, conflict)),
        };
        let source = if self.measurement.is_none() {
            " (the policy's)"
        } else {
            ""
        };
        Some(if expected[..] == *actual {
            Check::pass(name, format!("{} as expected{source}", hex::encode(actual)))
        } else {
            Check::fail(
                name,
                format!(
                    "expected {}{source}, the evidence has {}",
                    hex::encode(&expected),
                    hex::encode(actual)
                ),
            )
        })
    }

    /// The check of expected report data, if some was given.
    pub(crate) fn report_data_check(&self, name: &'static str, actual: &[u8]) -> Option<Check> {
        let expected = self.report_data.as_ref()?;
        let mut padded = [0u8; REPORT_DATA_SIZE];
        let n = expected.len().min(REPORT_DATA_SIZE);
        padded[..n].copy_from_slice(&expected[..n]);
        Some(if padded[..] == *actual {
            Check::pass(name, format!("{} as expected", hex::encode(actual)))
        } else {
            Check::fail(
                name,
                format!(
                    "expected {}{}, the evidence has {}",
                    hex::encode(expected),
                    if n < REPORT_DATA_SIZE {
                        " (zero-padded to 64 bytes)"
                    } else {
                        ""
                    },
                    hex::encode(actual)
                ),
            )
        })
    }
}

/// Everything a verification needs besides the evidence.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The roots to trust.
    pub roots: &'a TrustAnchors,
    /// When the certificates must be valid.
    pub at: SystemTime,
    /// Expected values and allowances.
    pub expect: Expectations,
    /// SNP: the VCEK that signed the report (required).
    pub vcek: Option<Cert>,
    /// SNP: the ASK and ARK to use instead of the built-in ones of the VCEK's product.
    pub cert_chain: Option<snp::SnpChain>,
    /// SNP: the ARK's CRL, to check that the ASK is not revoked.
    pub crl: Option<crl::Crl>,
    /// TDX: collateral for the TCB status (dcap-qvl's QuoteCollateralV3).
    pub collateral: Option<tdx::Collateral>,
    /// Fail the revocation check (`ask-not-revoked`, `tcb-status`) when there is no
    /// CRL or collateral to run it with, instead of leaving it out.
    pub require_revocation: bool,
}

impl<'a> Inputs<'a> {
    /// No expectations, certificates valid now.
    pub fn new(roots: &'a TrustAnchors) -> Self {
        Self {
            roots,
            at: SystemTime::now(),
            expect: Expectations::default(),
            vcek: None,
            cert_chain: None,
            crl: None,
            collateral: None,
            require_revocation: false,
        }
    }
}

/// Verify `evidence` with `inputs`: every check is run and recorded.
pub fn verify(evidence: &Evidence, inputs: &Inputs<'_>) -> Result<Verification, AttestError> {
    inputs.expect.validate()?;
    inputs
        .expect
        .expected_measurement(evidence.kind())
        .map_err(AttestError::Inputs)?;
    match evidence {
        Evidence::Snp(report) => {
            if inputs.collateral.is_some() {
                return Err(AttestError::Inputs(
                    "collateral applies to TDX quotes only; this is an SNP report".into(),
                ));
            }
            let vcek = inputs.vcek.as_ref().ok_or_else(|| {
                AttestError::Inputs(
                    "an SNP report needs the VCEK certificate that signed it (--vcek FILE)".into(),
                )
            })?;
            let mut v = snp::verify_report(
                report,
                vcek,
                inputs.cert_chain.as_ref(),
                inputs.crl.as_ref(),
                inputs.roots,
                &inputs.expect,
                inputs.at,
            )?;
            if inputs.require_revocation && inputs.crl.is_none() {
                v.checks.push(Check::fail(
                    snp::check::ASK_NOT_REVOKED,
                    "no CRL of the ARK to check the ASK against (revocation was required)",
                ));
            }
            Ok(v)
        }
        Evidence::Tdx(quote) => {
            if inputs.vcek.is_some() || inputs.cert_chain.is_some() || inputs.crl.is_some() {
                return Err(AttestError::Inputs(
                    "a VCEK, an AMD certificate chain and AMD's CRL apply to SNP reports only; \
                     this is a TDX quote (its PCK chain is inside it, revocation comes with \
                     collateral)"
                        .into(),
                ));
            }
            let mut v = tdx::verify_quote(
                quote,
                inputs.roots,
                &inputs.expect,
                inputs.at,
                inputs.collateral.as_ref(),
            )?;
            if inputs.require_revocation && inputs.collateral.is_none() {
                v.checks.push(Check::fail(
                    tdx::check::TCB_STATUS,
                    "no collateral to appraise the TCB and revocation with (revocation was \
                     required)",
                ));
            }
            Ok(v)
        }
    }
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// A stable name (`report-signature`, `measurement`, ...).
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

impl Check {
    /// A passed check.
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            passed: true,
            detail: detail.into(),
        }
    }

    /// A failed check.
    pub fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            passed: false,
            detail: detail.into(),
        }
    }

    /// Passed when `result` is `Ok`; the detail is the `Ok` or `Err` text.
    pub fn from_result(name: &'static str, result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self::pass(name, detail),
            Err(detail) => Self::fail(name, detail),
        }
    }
}

/// A decoded field of the evidence, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Field name.
    pub name: &'static str,
    /// Its value, as text (hex for byte strings).
    pub value: String,
}

/// Which kind of evidence was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceKind {
    /// An SEV-SNP attestation report.
    SnpReport,
    /// A TDX quote.
    TdxQuote,
}

impl EvidenceKind {
    /// Stable name (`snp-report`, `tdx-quote`).
    pub fn name(self) -> &'static str {
        match self {
            Self::SnpReport => "snp-report",
            Self::TdxQuote => "tdx-quote",
        }
    }
}

/// What a verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The roots of AMD or Intel: evidence from the hardware.
    Hardware,
    /// A root the caller gave in place of a vendor's ([`roots::EmulatedRoot`]):
    /// evidence from an emulated platform, which proves nothing about hardware.
    Emulated,
}

impl Trust {
    /// Stable name (`hardware`, `emulated`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Hardware => "hardware",
            Self::Emulated => "emulated",
        }
    }
}

/// The outcome of a verification: the decoded fields and every check.
#[derive(Debug, Clone)]
pub struct Verification {
    /// What was verified.
    pub kind: EvidenceKind,
    /// The root the evidence chains to, as its certificates name it: emulated when
    /// they name an emulated root. Whether that root is trusted is the
    /// `ark-trusted` (or `root-trusted`) check.
    pub trust: Trust,
    /// When the certificates were checked to be valid.
    pub at: SystemTime,
    /// Decoded fields.
    pub claims: Vec<Claim>,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl Verification {
    /// Whether every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The claim named `name`.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value.as_str())
    }

    /// As JSON: `{"evidence", "verified": bool, "trust": "hardware" | "emulated", "at",
    /// "claims": {..}, "checks": [..], "failed": [names]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let claims: serde_json::Map<String, serde_json::Value> = self
            .claims
            .iter()
            .map(|c| (c.name.to_owned(), c.value.clone().into()))
            .collect();
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|c| serde_json::json!({"name": c.name, "passed": c.passed, "detail": c.detail}))
            .collect();
        let failed: Vec<&str> = self.failures().map(|c| c.name).collect();
        serde_json::json!({
            "evidence": self.kind.name(),
            "verified": self.passed(),
            "trust": self.trust.name(),
            "at": time::format_rfc3339(self.at),
            "claims": claims,
            "checks": checks,
            "failed": failed,
        })
    }
}

/// Decode hex text; ASCII whitespace anywhere is ignored, and so is a leading `0x`.
pub fn decode_hex(text: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let digits = digits
        .strip_prefix(b"0x")
        .or_else(|| digits.strip_prefix(b"0X"))
        .unwrap_or(&digits);
    if digits.is_empty() {
        return Err("no hex digits".into());
    }
    hex::decode(digits).map_err(|e| e.to_string())
}

/// Whether `bytes` is text made only of hex digits and whitespace (with an
/// optional `0x`): binary evidence never is, since it holds zero bytes.
fn looks_like_hex(bytes: &[u8]) -> bool {
    let text = bytes.trim_ascii_start();
    let text = text
        .strip_prefix(b"0x")
        .or_else(|| text.strip_prefix(b"0X"))
        .unwrap_or(text);
    !text.is_empty()
        && text
            .iter()
            .all(|c| c.is_ascii_hexdigit() || c.is_ascii_whitespace())
}

#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod test_vectors {
    //! The real vectors in `tests/vectors` (see its README), or the folder
    //! `NACRE_VECTORS` names. Missing vectors fail the tests.

    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    /// Folder `name` of the vectors.
    pub fn dir(name: &str) -> PathBuf {
        let base = std::env::var_os("NACRE_VECTORS").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors"),
            PathBuf::from,
        );
        let dir = base.join(name);
        assert!(
            dir.is_dir(),
            "the test vectors are missing: {} (set NACRE_VECTORS to the vectors folder)",
            dir.display()
        );
        dir
    }

    /// The bytes of `file` in vector folder `folder`.
    pub fn read(folder: &str, file: &str) -> Vec<u8> {
        let path = dir(folder).join(file);
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// The middle of a certificate's validity period.
    pub fn middle_of(cert: &super::Cert) -> SystemTime {
        let from = cert.not_before();
        let span = cert
            .not_after()
            .duration_since(from)
            .unwrap_or(Duration::ZERO);
        from + span / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(
            decode_hex(b" 0x0a Ff\n10 ").as_deref(),
            Ok(&[0x0a, 0xff, 0x10][..])
        );
        assert!(decode_hex(b"abc").is_err());
        assert!(decode_hex(b"zz").is_err());
        assert!(decode_hex(b"  ").is_err());
    }

    #[test]
    fn unknown_evidence_is_an_error() {
        for bytes in [&b""[..], b"\x00\x01", &[0u8; 100], b"hello"] {
            assert!(Evidence::parse(bytes).is_err(), "{bytes:?}");
        }
        assert!(matches!(Evidence::parse(b"abc"), Err(AttestError::Hex(_))));
        let mut report = vec![0u8; ATTESTATION_REPORT_SIZE];
        report[0] = 9;
        assert!(matches!(
            Evidence::parse(&report),
            Err(AttestError::Report(_))
        ));
    }

    #[test]
    fn expected_lengths_are_checked() {
        let ok = Expectations {
            measurement: Some(vec![0; 48]),
            report_data: Some(vec![1; 32]),
            allow_debug: false,
            policy: None,
            reference: None,
        };
        assert!(ok.validate().is_ok());
        let short = Expectations {
            measurement: Some(vec![0; 47]),
            ..Default::default()
        };
        assert!(matches!(
            short.validate(),
            Err(AttestError::ExpectedLength { got: 47, .. })
        ));
        let long = Expectations {
            report_data: Some(vec![0; 65]),
            ..Default::default()
        };
        assert!(matches!(
            long.validate(),
            Err(AttestError::ExpectedLength { got: 65, .. })
        ));
        let data = ok.report_data_check("report-data", &[[1u8; 32], [0u8; 32]].concat());
        assert!(data.is_some_and(|c| c.passed));
        let data = ok.report_data_check("report-data", &[1u8; 64]);
        assert!(data.is_some_and(|c| !c.passed));
    }
}
