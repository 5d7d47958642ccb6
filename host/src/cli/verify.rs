//! `nacre verify`.

use super::run::parse_cpus;
use crate::platform;
use anyhow::Context;
use nacre_loader::LoadedImage;
use nacre_shared_abi::boot::MAX_CPUS;
use nacre_verifier::crl::Crl;
use nacre_verifier::evidence::{nonce_report_data, parse_nonce, EvidenceFile};
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

Every check is listed with what it saw. Exit status: 0 when every check passed,
1 when one failed (each failed check is named on stderr, or under \"failed\" in the
JSON), 125 when the input is unusable (unreadable, truncated, unknown version, bad
hex or DER, an SNP report without --vcek).")]
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
    /// e.g. 2024-05-01T12:00:00Z).
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

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
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
    let bytes = read(path, "image")?;
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

/// Verify the evidence; returns the exit status (0 verified, 1 not verified).
pub fn run(a: &VerifyArgs) -> anyhow::Result<u8> {
    let bytes = read(&a.evidence, "evidence")?;
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
        reference: None,
    };
    // The certificates: the options', else the evidence file's.
    let file_vcek = file.as_ref().and_then(|f| f.vcek.as_deref());
    let file_chain = file.as_ref().and_then(|f| f.cert_chain.as_deref());
    if let Some(path) = &a.vcek {
        let vcek = Cert::from_der_or_pem(&read(path, "VCEK")?)
            .with_context(|| format!("cannot use {} as the VCEK", path.display()))?;
        inputs.vcek = Some(vcek);
    } else if let Some(pem) = file_vcek {
        let vcek = Cert::from_der_or_pem(pem.as_bytes())
            .with_context(|| format!("cannot use the VCEK in {}", a.evidence.display()))?;
        inputs.vcek = Some(vcek);
    }
    if let Some(path) = &a.cert_chain {
        let chain = nacre_verifier::snp::SnpChain::from_pem(&read(path, "certificate chain")?)
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
        let crl = Crl::from_der_or_pem(&read(path, "CRL")?)
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
        let collateral = nacre_verifier::tdx::collateral_from_json(&read(path, "collateral")?)
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

    if a.json {
        let mut json = verification.to_json();
        // Where the revocation data came from, for scripts: "verifier" (--crl,
        // --collateral), "evidence-file" (the prover's choice), or null (none).
        json["revocation"] = serde_json::json!({
            "source": revocation_from.as_ref().map(RevocationSource::json_name),
            "required": a.require_revocation,
        });
        let text = serde_json::to_string_pretty(&json)?;
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

    /// The demo image, loaded for `platform`.
    fn demo_image(platform: nacre_loader::PlatformKind) -> LoadedImage {
        let files = crate::cli::package::file_tree("hello", &[]).expect("a file tree");
        let bytes =
            crate::cli::package::build(crate::DEMO_APP, "hello", &[], &[], &files, 0, false)
                .expect("an image");
        nacre_loader::load_image(&bytes, platform).expect("it loads")
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
    fn emulated_evidence_verifies_only_with_allow_emulated() {
        let dir = scratch("cli-verify");
        let k = keys();
        std::fs::write(dir.join("report.bin"), signed_report(k, [1; 48], [2; 64])).expect("write");
        std::fs::write(dir.join("vcek.der"), k.vcek_der()).expect("write");
        let base = dir.join("keys");
        let key_dir = base.join(emulated::SNP_FOLDER);
        std::fs::create_dir_all(&key_dir).expect("mkdir");
        let root = k.root();
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
        let keys_arg = base.display().to_string();

        assert_eq!(run(&args(&dir, &[])).ok(), Some(EXIT_NOT_VERIFIED));
        let allowed = args(&dir, &["--allow-emulated", "--emulated-keys", &keys_arg]);
        assert_eq!(run(&allowed).ok(), Some(0));

        // The verdict line says the evidence is emulated.
        let evidence = Evidence::parse(&std::fs::read(dir.join("report.bin")).expect("read"))
            .expect("an SNP report");
        let roots = TrustAnchors::built_in().expect("roots").recognize_snp(
            crate::emulated::snp::keys::trusted_root(emulated::load_root(&key_dir).expect("root")),
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
}
