//! `nacre verify`.

use crate::attest::{self, time, Cert, Evidence, Expectations, Inputs, TrustAnchors};
use anyhow::Context;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Exit status when the evidence was read but a check failed.
pub const EXIT_NOT_VERIFIED: u8 = 1;

/// Arguments of `nacre verify`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # An SEV-SNP report (raw 0x4A0 bytes or hex) and the VCEK that signed it; the chain
  # ASK -> ARK is AMD's built-in one for the VCEK's product (Milan, Genoa, Turin):
  nacre verify report.bin --vcek vcek.der --measurement 7a1e5c26...841f

  # The chain from AMD's key distribution service instead (its ARK must still be AMD's):
  nacre verify report.hex --vcek vcek.pem --cert-chain cert_chain.pem

  # A TDX quote (version 4 or 5); its PCK chain is inside it and must end at Intel's
  # SGX Root CA. With collateral, dcap-qvl computes the TCB status:
  nacre verify quote.dat --measurement <MRTD hex> --report-data <nonce hex> --collateral collateral.json

  # Evidence from years ago: check the certificates at that time, print JSON:
  nacre verify quote.dat --at 2023-07-01T00:00:00Z --json

Every check is listed with what it saw. Exit status: 0 when every check passed,
1 when one failed (each failed check is named on stderr, or under \"failed\" in the
JSON), 125 when the input is unusable (unreadable, truncated, unknown version, bad
hex or DER, an SNP report without --vcek).")]
pub struct VerifyArgs {
    /// The evidence: an SEV-SNP attestation report or a TDX quote, raw or as hex text.
    pub evidence: PathBuf,
    /// SNP: the VCEK certificate that signed the report (DER or PEM).
    #[arg(long, value_name = "FILE")]
    pub vcek: Option<PathBuf>,
    /// SNP: a PEM bundle of the ASK then the ARK, instead of the built-in chain of the
    /// VCEK's product. Its ARK must be AMD's built-in one.
    #[arg(long, value_name = "FILE")]
    pub cert_chain: Option<PathBuf>,
    /// The expected launch measurement (SNP) or MRTD (TDX): 48 bytes in hex.
    #[arg(long, value_name = "HEX")]
    pub measurement: Option<String>,
    /// The expected report data: up to 64 bytes in hex; a shorter value must match
    /// the start of the field and the rest must be zero.
    #[arg(long, value_name = "HEX")]
    pub report_data: Option<String>,
    /// Accept a guest that the host may debug (SNP policy DEBUG, TD attribute DEBUG).
    #[arg(long)]
    pub allow_debug: bool,
    /// Check the certificates' validity at this time instead of now (RFC 3339,
    /// e.g. 2024-05-01T12:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// TDX: collateral (TCB info, QE identity, CRLs) as the JSON dcap-qvl writes for
    /// its QuoteCollateralV3; the TCB status must be UpToDate.
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Hex given for `option` (values are checked here, not by the argument parser, so
/// that a bad one is an unusable-input error like a bad file).
fn parse_hex(option: &str, text: Option<&str>) -> anyhow::Result<Option<Vec<u8>>> {
    text.map(|t| {
        attest::decode_hex(t.as_bytes())
            .map_err(|e| anyhow::anyhow!("{option} {t:?} is not hex: {e}"))
    })
    .transpose()
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// Verify the evidence; returns the exit status (0 verified, 1 not verified).
pub fn run(a: &VerifyArgs) -> anyhow::Result<u8> {
    let bytes = read(&a.evidence, "evidence")?;
    let evidence = Evidence::parse(&bytes)
        .with_context(|| format!("cannot use {} as evidence", a.evidence.display()))?;
    let roots = TrustAnchors::built_in()?;
    let mut inputs = Inputs::new(&roots);
    if let Some(at) = &a.at {
        inputs.at = time::parse_rfc3339(at).context("--at")?;
    }
    inputs.expect = Expectations {
        measurement: parse_hex("--measurement", a.measurement.as_deref())?,
        report_data: parse_hex("--report-data", a.report_data.as_deref())?,
        allow_debug: a.allow_debug,
    };
    if let Some(path) = &a.vcek {
        let vcek = Cert::from_der_or_pem(&read(path, "VCEK")?)
            .with_context(|| format!("cannot use {} as the VCEK", path.display()))?;
        inputs.vcek = Some(vcek);
    }
    if let Some(path) = &a.cert_chain {
        let chain = attest::snp::SnpChain::from_pem(&read(path, "certificate chain")?)
            .with_context(|| format!("cannot use {} as the ASK and ARK", path.display()))?;
        inputs.cert_chain = Some(chain);
    }
    if let Some(path) = &a.collateral {
        let collateral = attest::tdx::collateral_from_json(&read(path, "collateral")?)
            .with_context(|| format!("cannot use {} as collateral", path.display()))?;
        inputs.collateral = Some(collateral);
    }
    let verification = attest::verify(&evidence, &inputs)
        .with_context(|| format!("cannot verify {}", a.evidence.display()))?;

    if a.json {
        let text = serde_json::to_string_pretty(&verification.to_json())?;
        write_stdout(&(text + "\n"))?;
    } else {
        write_stdout(&render(&evidence, &verification))?;
        for check in verification.failures() {
            eprintln!(
                "nacre verify: check {} failed: {}",
                check.name, check.detail
            );
        }
    }
    Ok(if verification.passed() {
        0
    } else {
        EXIT_NOT_VERIFIED
    })
}

/// Write to stdout; a reader that went away early (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the result to stdout")
        }
        _ => Ok(()),
    }
}

/// The human form: the decoded fields, every check, the verdict.
pub fn render(evidence: &Evidence, v: &attest::Verification) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}, certificates checked at {}",
        evidence.describe(),
        time::format_rfc3339(v.at)
    );
    let width = v.claims.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for claim in &v.claims {
        let _ = writeln!(out, "  {:width$}  {}", claim.name, claim.value);
    }
    out.push_str("checks:\n");
    let width = v.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for check in &v.checks {
        let mark = if check.passed { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "  {mark}  {:width$}  {}", check.name, check.detail);
    }
    let failed = v.failures().count();
    if v.passed() {
        let _ = writeln!(out, "verified: all {} checks passed", v.checks.len());
    } else {
        let names: Vec<&str> = v.failures().map(|c| c.name).collect();
        let _ = writeln!(
            out,
            "NOT verified: {failed} of {} checks failed ({})",
            v.checks.len(),
            names.join(", ")
        );
    }
    out
}
