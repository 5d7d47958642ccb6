//! `nacre verify`.

use super::run::parse_cpus;
use crate::{files, platform};
use anyhow::Context;
use nacre_loader::LoadedImage;
use nacre_shared_abi::boot::MAX_CPUS;
use nacre_verifier::crl::Crl;
use nacre_verifier::evidence::{nonce_report_data, parse_nonce, EvidenceFile};
use nacre_verifier::policy::ReferencePolicy;
use nacre_verifier::{self, time, Cert, Evidence, Expectations, Inputs, Trust, TrustAnchors};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the data of a revocation check came from.
enum RevocationSource {
    /// An option of the verifier's: its text, e.g. `--crl crl.der`.
    Verifier(String),
    /// The evidence file: the prover's choice.
    EvidenceFile,
}

impl RevocationSource {
    /// How the check's detail names it.
    fn label(&self) -> &str {
        match self {
            Self::Verifier(option) => option,
            Self::EvidenceFile => "the evidence file's, chosen by the prover",
        }
    }

    /// `revocation.source` in the JSON output.
    fn json_name(&self) -> &'static str {
        match self {
            Self::Verifier(_) => "verifier",
            Self::EvidenceFile => "evidence-file",
        }
    }
}

/// Exit status when the evidence was read but a check failed.
pub const EXIT_NOT_VERIFIED: u8 = 1;

/// Arguments of `nacre verify`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # Evidence from `nacre attest`: it must be of this image and bind this nonce:
  nacre verify evidence.json --image hello.igvm --nonce 5eed... --allow-emulated

  # Evidence from `nacre attest --cpus 4`: on SEV-SNP every vCPU's initial state is
  # measured, so the image's measurement for 4 vCPUs is the expected one:
  nacre verify evidence.json --image hello.igvm --cpus 4 --nonce 5eed... --allow-emulated

  # An SEV-SNP report (raw 0x4A0 bytes or hex) and the VCEK that signed it; the chain
  # ASK -> ARK is AMD's built-in one for the VCEK's product (Milan, Genoa, Turin):
  nacre verify report.bin --vcek vcek.der --measurement 7a1e5c26...841f

  # The chain from AMD's key distribution service instead (its ARK must still be AMD's),
  # and the ARK's CRL from it, so that a revoked ASK fails:
  nacre verify report.hex --vcek vcek.pem --cert-chain cert_chain.pem --crl crl.der

  # A TDX quote (version 4 or 5); its PCK chain is inside it and must end at Intel's
  # SGX Root CA. With collateral (from Intel's PCS or a PCCS, as dcap-qvl's
  # QuoteCollateralV3 JSON), dcap-qvl appraises the TCB status; `nacre attest` puts
  # collateral in emulated-tdx evidence files itself:
  nacre verify quote.dat --measurement <MRTD hex> --report-data <nonce hex> --collateral collateral.json

  # Evidence from years ago: check the certificates at that time, print JSON:
  nacre verify quote.dat --at 2023-07-01T00:00:00Z --json

  # A report from the emulated-snp platform, signed by this host's emulated security
  # processor (its keys are only read, never created, by verify):
  nacre verify report.bin --vcek vcek.der --allow-emulated

  # Reference values beyond the launch: a policy names the expected value or minimum
  # of report fields (HOST_DATA, the TCB levels, MRCONFIGID, the RTMRs, ...), each a
  # check of its own; `nacre measure IMAGE --policy-out FILE` writes what an image implies:
  nacre verify evidence.json --policy hello.policy.toml --nonce 5eed... --allow-emulated

Checked by default: the signatures and the certificate chain up to the vendor's
built-in root (AMD's ARK of the VCEK's product, Intel's SGX Root CA), each
certificate's validity, the report's signature algorithm, signing key and reserved
bytes, its TCB and chip ID against the VCEK (SNP) or the quoting enclave's identity
and binding (TDX), the guest policy's reserved bit, that the guest is not debuggable
(unless --allow-debug), and on SEV-SNP that the report was asked for from VMPL 0
(check `vmpl`: a report from a less privileged VMPL does not speak for the launch).
The measurement and the report data are compared only when given (--image,
--measurement or --policy; --nonce or --report-data), revocation only with a CRL or
collateral.

Every other field is compared only when a policy (--policy FILE, TOML) names it:
SEV-SNP HOST_DATA, FAMILY_ID, IMAGE_ID, the ID and author key digests, GUEST_SVN,
the guest policy's bits and ABI, PLATFORM_INFO, the current, committed, launch and
reported TCB; TDX MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0-3, MRSEAM, MRSIGNERSEAM,
XFAM, the TD attributes and TEE_TCB_SVN. Each key of the policy is a check named after
it (`host_data` is `host-data`, `[snp.current_tcb_minimum]` is `current-tcb-minimum`;
`[tdx.td_attributes]` is `td-attribute-bits`, since `td-attributes` is --image's).
A policy's snp.vmpl replaces the default 0; its measurement must agree with
--measurement or the image's. docs/policy.md describes the format.

Every check is listed with what it saw. Exit status: 0 when every check passed,
1 when one failed (each failed check is named on stderr, or under \"failed\" in the
JSON), 125 when the input is unusable (unreadable, truncated, unknown version, bad
hex or DER, an SNP report without --vcek, a policy that is not valid), 2 when the
command line is wrong.")]
pub struct VerifyArgs {
    /// The evidence: a file `nacre attest` wrote, or a bare SEV-SNP attestation report
    /// or TDX quote, raw or as hex text.
    pub evidence: PathBuf,
    /// SNP: the VCEK certificate that signed the report (DER or PEM), instead of the
    /// one in the evidence file.
    #[arg(long, value_name = "FILE")]
    pub vcek: Option<PathBuf>,
    /// SNP: a PEM bundle of the ASK then the ARK, instead of the built-in chain of the
    /// VCEK's product. Its ARK must be AMD's built-in one (or, with --allow-emulated,
    /// the emulated one).
    #[arg(long, value_name = "FILE")]
    pub cert_chain: Option<PathBuf>,
    /// The image the evidence must be of: its measurement on the evidence's platform
    /// for --cpus vCPUs (what `nacre measure --cpus` prints) is the expected one, and
    /// the guest policy (SNP) or the TD attributes it governs (TDX) must be the ones it
    /// declares.
    #[arg(long, value_name = "IMAGE", conflicts_with = "measurement")]
    pub image: Option<PathBuf>,
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_cpus,
        default_value_t = 1,
        hide_default_value = true,
        requires = "image",
        help = CPUS_HELP
    )]
    pub cpus: u32,
    /// The nonce given to `nacre attest` (hex): the report data must bind it.
    #[arg(long, value_name = "HEX", conflicts_with = "report_data")]
    pub nonce: Option<String>,
    /// The expected launch measurement (SNP) or MRTD (TDX): 48 bytes in hex.
    #[arg(long, value_name = "HEX")]
    pub measurement: Option<String>,
    /// The expected report data: up to 64 bytes in hex; a shorter value must match
    /// the start of the field and the rest must be zero.
    #[arg(long, value_name = "HEX")]
    pub report_data: Option<String>,
    /// Accept a guest that the host may debug (SNP policy DEBUG, TD attribute DEBUG)
    /// or profile (TD attributes bits 4-6).
    #[arg(long)]
    pub allow_debug: bool,
    /// Accept evidence from nacre's emulated platforms (signed by the emulated
    /// security processor or quoted by the emulated TDX platform), whose roots are
    /// made once per host. Such evidence proves nothing about hardware; the verdict
    /// says "verified (emulated evidence)". Without this flag it fails.
    #[arg(long)]
    pub allow_emulated: bool,
    /// With --allow-emulated: the emulated keys' directory whose roots to trust (only
    /// snp/ark.pem, snp/ask.pem and tdx/root-ca.pem are read), instead of
    /// $NACRE_EMULATED_KEYS, else $XDG_DATA_HOME/nacre/emulated-keys, else
    /// ~/.local/share/nacre/emulated-keys.
    #[arg(long, value_name = "DIR", requires = "allow_emulated")]
    pub emulated_keys: Option<PathBuf>,
    /// Check the certificates' validity at this time instead of now (RFC 3339,
    /// e.g. 2024-05-01T12:00:00Z; 1970 or later).
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// SNP: the ARK's certificate revocation list (DER or PEM), as AMD's key
    /// distribution service serves it (`/vcek/v1/{Milan,Genoa,Turin}/crl`), instead
    /// of the evidence file's: it must be current and must not list the ASK.
    /// Without either, revocation is not checked.
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// TDX: collateral (TCB info, QE identity, CRLs) as the JSON dcap-qvl writes for
    /// its QuoteCollateralV3, instead of the evidence file's; the TCB status must be
    /// UpToDate. Without either, the TCB status is not checked.
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// Fail unless revocation is checked: an SEV-SNP report needs the ARK's CRL, a
    /// TDX quote collateral (given here or in the evidence file). Without this flag a
    /// verification without them leaves the check out. Note that the evidence file's
    /// are the prover's choice (any signed and still current one); a verifier that
    /// cares passes fresh ones of its own.
    #[arg(long)]
    pub require_revocation: bool,
    /// A reference-value policy (TOML; docs/policy.md): the expected value or minimum
    /// of report fields, in an `[snp]` table for SEV-SNP reports and a `[tdx]` table for
    /// TDX quotes. Each key it gives is a check named after the key; a policy without a
    /// table for the evidence's platform fails (`policy-section`). An unknown key, hex
    /// of the wrong length or a value out of range is an error (exit status 125).
    /// `nacre measure IMAGE --policy-out FILE` writes the policy an image implies.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Print the result as JSON on stdout: the claims, every check, the failed ones,
    /// and where revocation data came from (`revocation.source`: "verifier",
    /// "evidence-file" or null).
    #[arg(long)]
    pub json: bool,
}

impl VerifyArgs {
    /// Verify `evidence` with no expectations and no options.
    pub fn new(evidence: PathBuf) -> Self {
        Self {
            evidence,
            vcek: None,
            cert_chain: None,
            image: None,
            cpus: 1,
            nonce: None,
            measurement: None,
            report_data: None,
            allow_debug: false,
            allow_emulated: false,
            emulated_keys: None,
            at: None,
            crl: None,
            collateral: None,
            require_revocation: false,
            policy: None,
            json: false,
        }
    }
}

/// Hex given for `option` (values are checked here, not by the argument parser, so
/// that a bad one is an unusable-input error like a bad file).
fn parse_hex(option: &str, text: Option<&str>) -> anyhow::Result<Option<Vec<u8>>> {
    text.map(|t| {
        nacre_verifier::decode_hex(t.as_bytes())
            .map_err(|e| anyhow::anyhow!("{option} {t:?} is not hex: {e}"))
    })
    .transpose()
}

/// Read an input of `kind`, called `what` in messages.
fn read(path: &Path, what: &'static str, kind: files::Input) -> anyhow::Result<Vec<u8>> {
    Ok(files::read_input(path, files::Input { what, ..kind })?)
}

/// `--cpus` in `nacre verify --help`.
pub const CPUS_HELP: &str = "With --image: the number of vCPUs the guest was launched with \
    (`nacre attest --cpus`), 1 to 16 (default 1). An SEV-SNP MEASUREMENT covers one VMSA \
    per vCPU, so the expected one is the image's for that many (`nacre measure --cpus`); \
    a TDX MRTD is the same for any number";

const _: () = assert!(MAX_CPUS == 16, "CPUS_HELP names the range");

/// The image at `path` loaded for the platform the evidence comes from.
fn load_image_for(path: &Path, evidence: &Evidence) -> anyhow::Result<LoadedImage> {
    let kind = platform::image_kind_of(evidence.kind())
        .with_context(|| format!("no platform makes {}", evidence.describe()))?;
    let bytes = read(path, "image", files::IMAGE)?;
    nacre_loader::load_image(&bytes, kind)
        .with_context(|| format!("cannot use {} as the image", path.display()))
}

/// What `image` declares for a guest launched with `cpus` vCPUs: the measurement
/// `nacre measure --cpus` predicts, and the SNP guest policy or TD attributes.
fn image_expectations(image: &LoadedImage, cpus: u32) -> (Vec<u8>, u64) {
    let policy = image.td_attributes().unwrap_or(image.guest_policy);
    (image.measurement_for_cpus(cpus).to_vec(), policy)
}

/// When `actual` is not `image`'s measurement for `cpus` vCPUs but is its measurement
/// for another number (1 to [`MAX_CPUS`]; only an SEV-SNP one depends on it), what to
/// add to the failed check: the evidence is of this image with that many vCPUs.
fn other_cpus_hint(image: &LoadedImage, cpus: u32, actual: &[u8]) -> Option<String> {
    if image.measurement_for_cpus(cpus)[..] == *actual {
        return None;
    }
    let launched = (1..=MAX_CPUS)
        .filter(|&n| n != cpus)
        .find(|&n| image.measurement_for_cpus(n)[..] == *actual)?;
    let default = if launched == 1 {
        " or leave --cpus out"
    } else {
        ""
    };
    Some(format!(
        " (the evidence is of this image launched with --cpus {launched}; pass --cpus \
         {launched}{default}, since an SEV-SNP measurement covers one VMSA per vCPU)"
    ))
}

/// The reference-value policy of `--policy`.
fn read_policy(path: &Path) -> anyhow::Result<ReferencePolicy> {
    ReferencePolicy::from_bytes(&read(path, "policy", files::POLICY)?)
        .with_context(|| format!("cannot use {} as a reference-value policy", path.display()))
}

/// What a verification found, before it is printed.
struct Verdict {
    evidence: Evidence,
    verification: nacre_verifier::Verification,
    revocation_from: Option<RevocationSource>,
}

/// Verify the evidence; returns the exit status (0 verified, 1 not verified).
pub fn run(a: &VerifyArgs) -> anyhow::Result<u8> {
    let Verdict {
        evidence,
        verification,
        revocation_from,
    } = verdict(a)?;
    if a.json {
        let mut json = verification.to_json();
        // Where the revocation data came from, for scripts: "verifier" (--crl,
        // --collateral), "evidence-file" (the prover's choice), or null (none).
        json["revocation"] = serde_json::json!({
            "source": revocation_from.as_ref().map(RevocationSource::json_name),
            "required": a.require_revocation,
        });
        let text = serde_json::to_string_pretty(&json)?;
        super::write_stdout(&(text + "\n"))?;
    } else {
        super::write_stdout(&render(&evidence, &verification))?;
        for check in verification.failures() {
            crate::say!(
                "nacre verify: check {} failed: {}",
                check.name,
                check.detail
            );
        }
    }
    Ok(if verification.passed() {
        0
    } else {
        EXIT_NOT_VERIFIED
    })
}

/// Read every input `a` names and verify the evidence.
fn verdict(a: &VerifyArgs) -> anyhow::Result<Verdict> {
    let bytes = read(&a.evidence, "evidence", files::EVIDENCE)?;
    let (evidence, file) = if EvidenceFile::looks_like(&bytes) {
        let file = EvidenceFile::parse(&bytes)
            .with_context(|| format!("cannot use {} as evidence", a.evidence.display()))?;
        (file.evidence.clone(), Some(file))
    } else {
        let evidence = Evidence::parse(&bytes)
            .with_context(|| format!("cannot use {} as evidence", a.evidence.display()))?;
        (evidence, None)
    };
    let keys = match (&a.emulated_keys, a.allow_emulated) {
        (_, false) => None,
        (Some(dir), true) => Some(dir.clone()),
        (None, true) => Some(
            platform::emulated_keys_dir()
                .map_err(anyhow::Error::msg)
                .context("--allow-emulated")?,
        ),
    };
    let roots = platform::verifier_roots(TrustAnchors::built_in()?, &evidence, keys.as_deref())
        .map_err(anyhow::Error::msg)
        .context("--allow-emulated")?;
    let mut inputs = Inputs::new(&roots);
    if let Some(at) = &a.at {
        inputs.at = time::parse_rfc3339(at).context("--at")?;
    }
    let image = a
        .image
        .as_deref()
        .map(|path| load_image_for(path, &evidence))
        .transpose()?;
    let (measurement, policy) = match &image {
        Some(image) => {
            let (measurement, policy) = image_expectations(image, a.cpus);
            (Some(measurement), Some(policy))
        }
        None => (parse_hex("--measurement", a.measurement.as_deref())?, None),
    };
    let report_data = match &a.nonce {
        Some(text) => Some(
            nonce_report_data(&parse_nonce(text).map_err(|e| anyhow::anyhow!("--nonce: {e}"))?)
                .to_vec(),
        ),
        None => parse_hex("--report-data", a.report_data.as_deref())?,
    };
    inputs.expect = Expectations {
        measurement,
        report_data,
        allow_debug: a.allow_debug,
        policy,
        reference: a.policy.as_deref().map(read_policy).transpose()?,
    };
    // The certificates: the options', else the evidence file's.
    let file_vcek = file.as_ref().and_then(|f| f.vcek.as_deref());
    let file_chain = file.as_ref().and_then(|f| f.cert_chain.as_deref());
    if let Some(path) = &a.vcek {
        let vcek = Cert::from_der_or_pem(&read(path, "VCEK", files::CERTIFICATE)?)
            .with_context(|| format!("cannot use {} as the VCEK", path.display()))?;
        inputs.vcek = Some(vcek);
    } else if let Some(pem) = file_vcek {
        let vcek = Cert::from_der_or_pem(pem.as_bytes())
            .with_context(|| format!("cannot use the VCEK in {}", a.evidence.display()))?;
        inputs.vcek = Some(vcek);
    }
    if let Some(path) = &a.cert_chain {
        let chain = read(path, "certificate chain", files::CERTIFICATE)?;
        let chain = nacre_verifier::snp::SnpChain::from_pem(&chain)
            .with_context(|| format!("cannot use {} as the ASK and ARK", path.display()))?;
        inputs.cert_chain = Some(chain);
    } else if let Some(pem) = file_chain {
        let chain = nacre_verifier::snp::SnpChain::from_pem(pem.as_bytes()).with_context(|| {
            format!(
                "cannot use the certificate chain in {}",
                a.evidence.display()
            )
        })?;
        inputs.cert_chain = Some(chain);
    }
    // Revocation data: the options', else the evidence file's, which the prover chose;
    // the check says which.
    let mut revocation_from = None;
    if let Some(path) = &a.crl {
        let crl = Crl::from_der_or_pem(&read(path, "CRL", files::CRL)?)
            .with_context(|| format!("cannot use {} as a CRL", path.display()))?;
        inputs.crl = Some(crl);
        revocation_from = Some(RevocationSource::Verifier(format!(
            "--crl {}",
            path.display()
        )));
    } else if let Some(pem) = file.as_ref().and_then(|f| f.crl.as_deref()) {
        let crl = Crl::from_der_or_pem(pem.as_bytes())
            .with_context(|| format!("cannot use the CRL in {}", a.evidence.display()))?;
        inputs.crl = Some(crl);
        revocation_from = Some(RevocationSource::EvidenceFile);
    }
    if let Some(path) = &a.collateral {
        let collateral = read(path, "collateral", files::COLLATERAL)?;
        let collateral = nacre_verifier::tdx::collateral_from_json(&collateral)
            .with_context(|| format!("cannot use {} as collateral", path.display()))?;
        inputs.collateral = Some(collateral);
        revocation_from = Some(RevocationSource::Verifier(format!(
            "--collateral {}",
            path.display()
        )));
    } else if let Some(collateral) = file.as_ref().and_then(|f| f.collateral.clone()) {
        inputs.collateral = Some(collateral);
        revocation_from = Some(RevocationSource::EvidenceFile);
    }
    inputs.require_revocation = a.require_revocation;
    let mut verification = nacre_verifier::verify(&evidence, &inputs)
        .with_context(|| format!("cannot verify {}", a.evidence.display()))?;
    // A measurement that is the image's for another number of vCPUs: say which.
    if let Some(image) = &image {
        for check in &mut verification.checks {
            let measurement = [
                nacre_verifier::snp::check::MEASUREMENT,
                nacre_verifier::tdx::check::MRTD,
            ]
            .contains(&check.name);
            if measurement && !check.passed {
                if let Some(hint) = other_cpus_hint(image, a.cpus, &evidence.measurement()) {
                    check.detail.push_str(&hint);
                }
            }
        }
    }
    if let Some(from) = &revocation_from {
        for check in &mut verification.checks {
            if [
                nacre_verifier::snp::check::ASK_NOT_REVOKED,
                nacre_verifier::tdx::check::TCB_STATUS,
            ]
            .contains(&check.name)
            {
                check.detail.push_str(&format!(" [{}]", from.label()));
            }
        }
    }

    Ok(Verdict {
        evidence,
        verification,
        revocation_from,
    })
}

/// The human form: the decoded fields, every check, the verdict.
pub fn render(evidence: &Evidence, v: &nacre_verifier::Verification) -> String {
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
        let verdict = match v.trust {
            Trust::Hardware => "verified",
            Trust::Emulated => "verified (emulated evidence)",
        };
        let _ = writeln!(out, "{verdict}: all {} checks passed", v.checks.len());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulated::snp::keys as emulated;
    use crate::emulated::snp::keys::fixture::{keys, scratch, signed_report};
    use clap::Parser;
    use nacre_shared_abi::snp::report::AttestationReport;
    use nacre_verifier::Verification;

    fn args(dir: &Path, extra: &[&str]) -> VerifyArgs {
        let mut all = vec![
            "nacre".to_owned(),
            "verify".to_owned(),
            dir.join("report.bin").display().to_string(),
            "--vcek".to_owned(),
            dir.join("vcek.der").display().to_string(),
        ];
        all.extend(extra.iter().map(|a| (*a).to_owned()));
        match crate::cli::Cli::try_parse_from(all)
            .expect("valid arguments")
            .command
        {
            crate::cli::Command::Verify(a) => a,
            other => panic!("not verify: {other:?}"),
        }
    }

    /// The demo image.
    fn demo_bytes() -> &'static [u8] {
        static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        IMAGE.get_or_init(|| {
            let files = crate::cli::package::file_tree("hello", &[]).expect("a file tree");
            crate::cli::package::build(crate::DEMO_APP, "hello", &[], &[], &files, 0, false)
                .expect("an image")
        })
    }

    /// The demo image, loaded for `platform`.
    fn demo_image(platform: nacre_loader::PlatformKind) -> LoadedImage {
        nacre_loader::load_image(demo_bytes(), platform).expect("it loads")
    }

    #[test]
    fn the_expected_measurement_is_the_images_for_the_vcpus() {
        let snp = demo_image(nacre_loader::PlatformKind::Snp);
        let (one, policy) = image_expectations(&snp, 1);
        assert_eq!(one, snp.measurement().to_vec());
        assert_eq!(policy, snp.guest_policy);
        let (two, _) = image_expectations(&snp, 2);
        assert_eq!(two, snp.measurement_for_cpus(2).to_vec());
        assert_ne!(one, two);
        let tdx = demo_image(nacre_loader::PlatformKind::Tdx);
        assert_eq!(image_expectations(&tdx, 2).0, image_expectations(&tdx, 1).0);
    }

    #[test]
    fn a_measurement_of_another_vcpu_count_is_named() {
        let snp = demo_image(nacre_loader::PlatformKind::Snp);
        let two = snp.measurement_for_cpus(2);
        let hint = other_cpus_hint(&snp, 1, &two).expect("a hint");
        assert!(
            hint.contains("the evidence is of this image launched with --cpus 2; pass --cpus 2"),
            "{hint}"
        );
        let hint = other_cpus_hint(&snp, 3, &snp.measurement()).expect("a hint");
        assert!(
            hint.contains("launched with --cpus 1; pass --cpus 1 or leave --cpus out"),
            "{hint}"
        );
        // The right count, another image, a TDX MRTD: nothing to say.
        assert_eq!(other_cpus_hint(&snp, 2, &two), None);
        assert_eq!(other_cpus_hint(&snp, 1, &[7; 48]), None);
        let tdx = demo_image(nacre_loader::PlatformKind::Tdx);
        assert_eq!(other_cpus_hint(&tdx, 2, &[7; 48]), None);
    }

    #[test]
    fn cpus_needs_an_image_and_one_to_sixteen() {
        let parse = |extra: &[&str]| {
            let mut all = vec!["nacre", "verify", "e.json"];
            all.extend_from_slice(extra);
            crate::cli::Cli::try_parse_from(all).map(|cli| match cli.command {
                crate::cli::Command::Verify(a) => a.cpus,
                other => panic!("not verify: {other:?}"),
            })
        };
        assert_eq!(parse(&[]).ok(), Some(1));
        assert_eq!(parse(&["--image", "x.igvm"]).ok(), Some(1));
        assert_eq!(parse(&["--image", "x.igvm", "--cpus", "4"]).ok(), Some(4));
        let alone = parse(&["--cpus", "2"]).expect_err("--cpus without --image");
        assert!(alone.to_string().contains("--image"), "{alone}");
        for bad in ["0", "17"] {
            let e = parse(&["--image", "x.igvm", "--cpus", bad]).expect_err("out of range");
            assert!(e.to_string().contains("1 to 16"), "{bad}: {e}");
        }
    }

    #[test]
    fn endless_or_special_inputs_are_refused_unread() {
        // /dev/zero used to be read until memory ran out.
        let e = run(&VerifyArgs::new(PathBuf::from("/dev/zero"))).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("cannot read the evidence /dev/zero: it is a character device"),
            "{e}"
        );
        let dir = scratch("cli-verify-input");
        let k = keys();
        std::fs::write(dir.join("report.bin"), signed_report(k, [1; 48], [2; 64])).expect("write");
        for (option, what) in [
            ("--vcek", "VCEK"),
            ("--crl", "CRL"),
            ("--cert-chain", "certificate chain"),
        ] {
            let mut all = vec!["nacre", "verify"];
            let report = dir.join("report.bin").display().to_string();
            all.extend([report.as_str(), option, "/dev/zero"]);
            let crate::cli::Command::Verify(a) = crate::cli::Cli::try_parse_from(all)
                .expect("valid arguments")
                .command
            else {
                panic!("not verify");
            };
            let e = format!("{:#}", run(&a).unwrap_err());
            assert!(
                e.contains(&format!(
                    "cannot read the {what} /dev/zero: it is a character device"
                )),
                "{e}"
            );
        }
        let big = dir.join("big.json");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(files::EVIDENCE.max + 1))
            .expect("a sparse file");
        let e = format!("{:#}", run(&VerifyArgs::new(big)).unwrap_err());
        assert!(e.contains("larger than 16 MiB"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The emulated SNP roots of the test hierarchy in the emulated keys' base
    /// directory `base`, as `nacre verify --emulated-keys base` reads them.
    fn write_snp_roots(base: &Path) {
        let key_dir = base.join(emulated::SNP_FOLDER);
        std::fs::create_dir_all(&key_dir).expect("mkdir");
        let root = keys().root();
        for (file, cert) in [
            (emulated::files::ARK_CERT, &root.ark),
            (emulated::files::ASK_CERT, &root.ask),
        ] {
            let pem = x509_cert::der::pem::encode_string(
                "CERTIFICATE",
                x509_cert::der::pem::LineEnding::LF,
                cert.der(),
            )
            .expect("PEM");
            std::fs::write(key_dir.join(file), pem).expect("write");
        }
    }

    #[test]
    fn emulated_evidence_verifies_only_with_allow_emulated() {
        let dir = scratch("cli-verify");
        let k = keys();
        std::fs::write(dir.join("report.bin"), signed_report(k, [1; 48], [2; 64])).expect("write");
        std::fs::write(dir.join("vcek.der"), k.vcek_der()).expect("write");
        let base = dir.join("keys");
        write_snp_roots(&base);
        let keys_arg = base.display().to_string();

        assert_eq!(run(&args(&dir, &[])).ok(), Some(EXIT_NOT_VERIFIED));
        let allowed = args(&dir, &["--allow-emulated", "--emulated-keys", &keys_arg]);
        assert_eq!(run(&allowed).ok(), Some(0));

        // The verdict line says the evidence is emulated.
        let evidence = Evidence::parse(&std::fs::read(dir.join("report.bin")).expect("read"))
            .expect("an SNP report");
        let roots = TrustAnchors::built_in().expect("roots").recognize_snp(
            crate::emulated::snp::keys::trusted_root(
                emulated::load_root(&base.join(emulated::SNP_FOLDER)).expect("root"),
            ),
        );
        let mut inputs = Inputs::new(&roots);
        inputs.vcek = Some(k.vcek().clone());
        let v = nacre_verifier::verify(&evidence, &inputs).expect("runs");
        let text = render(&evidence, &v);
        assert!(
            text.contains("verified (emulated evidence): all 16 checks passed"),
            "{text}"
        );

        // verify never makes keys: a missing directory is an error and stays missing.
        let absent = dir.join("absent");
        let absent_arg = absent.display().to_string();
        let err = run(&args(
            &dir,
            &["--allow-emulated", "--emulated-keys", &absent_arg],
        ))
        .expect_err("no keys there");
        assert!(format!("{err:#}").contains("no emulated keys"), "{err:#}");
        assert!(!absent.exists());

        // --emulated-keys alone is a usage error.
        assert!(crate::cli::Cli::try_parse_from([
            "nacre",
            "verify",
            "report.bin",
            "--emulated-keys",
            "dir"
        ])
        .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `nacre verify EVIDENCE ARGS...`'s verification (every input read as `run`
    /// reads it), or its error.
    fn verification_of(evidence: &Path, extra: &[&str]) -> anyhow::Result<Verification> {
        let mut all = vec![
            "nacre".to_owned(),
            "verify".to_owned(),
            evidence.display().to_string(),
        ];
        all.extend(extra.iter().map(|a| (*a).to_owned()));
        let a = match crate::cli::Cli::try_parse_from(all)
            .expect("valid arguments")
            .command
        {
            crate::cli::Command::Verify(a) => a,
            other => panic!("not verify: {other:?}"),
        };
        verdict(&a).map(|v| v.verification)
    }

    /// The check `name` of `v`, which must be there once.
    fn named<'a>(v: &'a Verification, name: &str) -> &'a nacre_verifier::Check {
        let found: Vec<_> = v.checks.iter().filter(|c| c.name == name).collect();
        assert_eq!(found.len(), 1, "{name}: {:#?}", v.checks);
        found[0]
    }

    /// Only check `name` failed, and its detail holds each of `needles`.
    fn only_failure(v: &Verification, name: &str, needles: &[&str]) {
        let failed: Vec<&str> = v.failures().map(|c| c.name).collect();
        assert_eq!(failed, [name], "{:#?}", v.checks);
        let detail = &named(v, name).detail;
        for needle in needles {
            assert!(
                detail.contains(needle),
                "{name}: {needle:?} not in {detail}"
            );
        }
    }

    fn passed_all(v: &Verification) {
        assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    }

    /// The policy `nacre measure --policy-out` writes for the demo image, in `dir`.
    fn demo_policy(dir: &Path) -> (PathBuf, ReferencePolicy) {
        let measurements = crate::cli::measure::measure_bytes(
            demo_bytes(),
            crate::cli::measure::MeasurePlatform::All,
            1,
        )
        .expect("the demo image measures");
        let path = dir.join("demo.policy.toml");
        let text = crate::cli::measure::policy_text(Path::new("demo.igvm"), &measurements);
        crate::files::write_output(&path, text.as_bytes()).expect("write the policy");
        let policy = ReferencePolicy::from_bytes(&std::fs::read(&path).expect("read"))
            .expect("the written policy reads back");
        (path, policy)
    }

    fn write_policy(dir: &Path, name: &str, policy: &ReferencePolicy) -> String {
        let path = dir.join(name);
        std::fs::write(&path, policy.to_toml("")).expect("write");
        path.display().to_string()
    }

    #[test]
    fn resigned_snp_evidence_fails_the_named_check_of_a_changed_field() {
        use crate::emulated::snp::keys::fixture::signed_report_with;
        let dir = scratch("cli-verify-snp-policy");
        let k = keys();
        let base = dir.join("keys");
        write_snp_roots(&base);
        std::fs::write(dir.join("vcek.der"), k.vcek_der()).expect("write");
        let image = demo_image(nacre_loader::PlatformKind::Snp);
        let (policy_path, policy) = demo_policy(&dir);
        let policy_arg = policy_path.display().to_string();
        let common = |policy: &str| {
            vec![
                "--vcek".to_owned(),
                dir.join("vcek.der").display().to_string(),
                "--allow-emulated".to_owned(),
                "--emulated-keys".to_owned(),
                base.display().to_string(),
                "--policy".to_owned(),
                policy.to_owned(),
            ]
        };
        let run_with = |name: &str, edit: &dyn Fn(&mut AttestationReport), policy: &str| {
            let path = dir.join(name);
            std::fs::write(
                &path,
                signed_report_with(k, |r| {
                    // Evidence of the demo image as the emulated processor reports it.
                    r.measurement = image.measurement();
                    r.policy = image.guest_policy;
                    edit(r);
                }),
            )
            .expect("write");
            let args = common(policy);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            verification_of(&path, &args).expect("verification runs")
        };

        // The evidence of the image meets the policy `nacre measure` writes for it.
        let v = run_with("good.bin", &|_| {}, &policy_arg);
        passed_all(&v);
        for name in [
            "vmpl",
            "measurement",
            "host-data",
            "guest-policy",
            "family-id",
        ] {
            assert!(named(&v, name).passed, "{name}");
        }

        // Re-signed with another VMPL: `vmpl` fails, with the policy and without.
        for vmpl in [1, 3] {
            let edit = move |r: &mut AttestationReport| r.vmpl = vmpl;
            let v = run_with("vmpl.bin", &edit, &policy_arg);
            only_failure(&v, "vmpl", &["expected 0", &format!("VMPL {vmpl}")]);
            let path = dir.join("vmpl.bin").display().to_string();
            let no_policy = verification_of(
                Path::new(&path),
                &[
                    "--vcek",
                    &dir.join("vcek.der").display().to_string(),
                    "--allow-emulated",
                    "--emulated-keys",
                    &base.display().to_string(),
                ],
            )
            .expect("runs");
            only_failure(&no_policy, "vmpl", &["the default"]);
            // A policy that names that VMPL accepts it.
            let mut other = policy.clone();
            if let Some(snp) = other.snp.as_mut() {
                snp.vmpl = Some(vmpl);
            }
            let other_arg = write_policy(&dir, "vmpl.toml", &other);
            passed_all(&run_with("vmpl.bin", &edit, &other_arg));
        }

        // Re-signed with host data: `host-data` fails and names both values.
        let edit = |r: &mut AttestationReport| r.host_data = [0x42; 32];
        let v = run_with("host-data.bin", &edit, &policy_arg);
        only_failure(
            &v,
            "host-data",
            &["host_data", &"00".repeat(32), &"42".repeat(32)],
        );
        let mut other = policy.clone();
        if let Some(snp) = other.snp.as_mut() {
            snp.host_data = Some(nacre_verifier::policy::Bytes([0x42; 32]));
        }
        let other_arg = write_policy(&dir, "host-data.toml", &other);
        passed_all(&run_with("host-data.bin", &edit, &other_arg));

        // A debuggable launch fails the policy's DEBUG bit as well as policy-debug.
        let edit = |r: &mut AttestationReport| r.policy |= 1 << 19;
        let v = run_with("debug.bin", &edit, &policy_arg);
        let failed: Vec<&str> = v.failures().map(|c| c.name).collect();
        assert_eq!(failed, ["policy-debug", "guest-policy"], "{:#?}", v.checks);

        // The policy's measurement and --measurement must agree.
        let args = common(&policy_arg);
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        let zeros = "00".repeat(48);
        args.extend(["--measurement", &zeros]);
        let err = verification_of(&dir.join("good.bin"), &args).expect_err("they differ");
        assert!(format!("{err:#}").contains("snp.measurement"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn resigned_tdx_evidence_fails_the_named_check_of_a_changed_field() {
        use crate::emulated::tdx::keys::fixture::{keys_in, quote_of};
        use nacre_shared_abi::tdx_report::TdInfo;
        use zerocopy::FromZeros;
        let dir = scratch("cli-verify-tdx-policy");
        let base = dir.join("keys");
        let k = keys_in(&base);
        let image = demo_image(nacre_loader::PlatformKind::Tdx);
        let (policy_path, policy) = demo_policy(&dir);
        let policy_arg = policy_path.display().to_string();
        let keys_arg = base.display().to_string();
        let run_with = |name: &str, edit: &dyn Fn(&mut TdInfo), policy: &str| {
            // A TD of the demo image as the emulated TDX module reports it.
            let mut td = TdInfo::new_zeroed();
            td.attributes = image.td_attributes().expect("a TDX image");
            td.xfam = 0xe7;
            td.mr_td = image.measurement();
            edit(&mut td);
            let path = dir.join(name);
            std::fs::write(&path, quote_of(&k, &td, &[7; 64])).expect("write");
            verification_of(
                &path,
                &[
                    "--allow-emulated",
                    "--emulated-keys",
                    &keys_arg,
                    "--policy",
                    policy,
                ],
            )
            .expect("verification runs")
        };

        let v = run_with("good.dat", &|_| {}, &policy_arg);
        passed_all(&v);
        for name in [
            "mrtd",
            "mr-config-id",
            "rtmr0",
            "rtmr3",
            "td-attribute-bits",
        ] {
            assert!(named(&v, name).passed, "{name}");
        }

        // Re-quoted with MRCONFIGID set by the host: `mr-config-id` fails.
        let edit = |td: &mut TdInfo| td.mr_config_id = [0xc0; 48];
        let v = run_with("config.dat", &edit, &policy_arg);
        only_failure(
            &v,
            "mr-config-id",
            &["mr_config_id", &"00".repeat(48), &"c0".repeat(48)],
        );
        let mut other = policy.clone();
        if let Some(tdx) = other.tdx.as_mut() {
            tdx.mr_config_id = Some(nacre_verifier::policy::Bytes([0xc0; 48]));
        }
        let other_arg = write_policy(&dir, "config.toml", &other);
        passed_all(&run_with("config.dat", &edit, &other_arg));

        // Re-quoted with an extended RTMR: that RTMR's check fails.
        for i in 0..4 {
            let edit = move |td: &mut TdInfo| td.rtmr[i] = [0x5e; 48];
            let v = run_with("rtmr.dat", &edit, &policy_arg);
            only_failure(&v, &format!("rtmr{i}"), &[&"5e".repeat(48)]);
        }
        let edit = |td: &mut TdInfo| td.rtmr[2] = [0x5e; 48];
        let mut other = policy.clone();
        if let Some(tdx) = other.tdx.as_mut() {
            tdx.rtmr2 = Some(nacre_verifier::policy::Bytes([0x5e; 48]));
        }
        let other_arg = write_policy(&dir, "rtmr.toml", &other);
        passed_all(&run_with("rtmr.dat", &edit, &other_arg));

        // A migratable TD fails the policy's attribute bits.
        let edit = |td: &mut TdInfo| td.attributes |= 1 << 29;
        let v = run_with("migratable.dat", &edit, &policy_arg);
        assert!(!named(&v, "td-attribute-bits").passed, "{:#?}", v.checks);

        // A policy of SEV-SNP reference values only cannot be met by a quote.
        let snp_only = ReferencePolicy {
            tdx: None,
            ..policy.clone()
        };
        let snp_arg = write_policy(&dir, "snp-only.toml", &snp_only);
        let v = run_with("good.dat", &|_| {}, &snp_arg);
        only_failure(&v, "policy-section", &["no [tdx] table"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_policy_that_is_not_valid_is_unusable_input_naming_the_key() {
        let dir = scratch("cli-verify-bad-policy");
        let k = keys();
        std::fs::write(dir.join("report.bin"), signed_report(k, [1; 48], [2; 64])).expect("write");
        std::fs::write(dir.join("vcek.der"), k.vcek_der()).expect("write");
        for (text, needle) in [
            ("[snp]\nhost_dat = \"00\"\n", "unknown field `host_dat`"),
            (
                "[snp]\nhost_data = \"00\"\n",
                "expected 64 hex digits (32 bytes)",
            ),
            (
                "[tdx]\nrtmr1 = \"xyz\"\n",
                "expected 96 hex digits (48 bytes)",
            ),
            ("[snp]\nvmpl = 7\n", "VMPLs are 0 to 3"),
            ("[snp.current_tcb_minimum]\nsnp = \"8\"\n", "invalid type"),
            ("", "needs an [snp] table"),
        ] {
            let path = dir.join("policy.toml");
            std::fs::write(&path, text).expect("write");
            let err = run(&args(&dir, &["--policy", &path.display().to_string()]))
                .expect_err("not a valid policy");
            let message = format!("{err:#}");
            assert!(message.contains("as a reference-value policy"), "{message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
        let missing = dir.join("absent.toml").display().to_string();
        let err = run(&args(&dir, &["--policy", &missing])).expect_err("no file");
        assert!(
            format!("{err:#}").contains("cannot read the policy"),
            "{err:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
