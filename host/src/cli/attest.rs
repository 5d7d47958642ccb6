//! `nacre attest`: boot an image far enough for its firmware to produce evidence of
//! the launch bound to a nonce, and write that evidence with everything a verifier
//! needs to check it.

use super::run::{launch, parse_cpus, parse_size, platform_arg, run_vm, CPUS_HELP};
use crate::platform::launch::LaunchConfig;
use crate::platform::{Registration, Stop};
use anyhow::{bail, Context};
use nacre_shared_abi::boot::HostRequest;
use nacre_shared_abi::hostcall::EvidenceKind;
use nacre_verifier::evidence::{nonce_report_data, parse_nonce, EvidenceFile};
use nacre_verifier::{Evidence, EvidenceKind as VerifiedKind};
use std::path::PathBuf;

/// The firmware's termination reason when the platform gave it no evidence (reason
/// set 3, code 18: `nacre run`'s table of reasons). A TD's fatal error carries the
/// firmware's codes of set 3 in its low byte.
const NO_EVIDENCE: (u8, u8) = (3, 18);

/// Arguments of `nacre attest`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  nonce=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')
  nacre attest hello.igvm --platform emulated-snp --nonce $nonce -o evidence.json
  nacre verify evidence.json --image hello.igvm --nonce $nonce --allow-emulated

  # With more vCPUs, verify with the same --cpus: on SEV-SNP each vCPU's initial
  # state is measured, so the MEASUREMENT depends on the number (`nacre measure --cpus`).
  nacre attest hello.igvm --cpus 4 --nonce $nonce -o evidence.json
  nacre verify evidence.json --image hello.igvm --cpus 4 --nonce $nonce --allow-emulated

The image boots as it would for `nacre run`, but the firmware asks the platform for
evidence before the app starts and the guest stops there: the app never runs. On
emulated-snp the evidence is an attestation report from the security processor,
signed by the VCEK; on emulated-tdx a TDX quote v4 of the TD's TDREPORT. The
evidence's report data is SHA-512(\"nacre attest nonce v1\\0\" || nonce), so a verifier
that chose the nonce knows the evidence is fresh. The evidence file is JSON: the
report or quote in hex and the certificates that chain it to its root; for a report
also the ARK's CRL, for a quote DCAP collateral (TCB info, QE identity, CRLs), with
which `nacre verify` checks revocation and the TCB status.

On the emulated platforms the evidence is signed by emulated key hierarchies, kept
in $NACRE_EMULATED_KEYS, else $XDG_DATA_HOME/nacre/emulated-keys, else
~/.local/share/nacre/emulated-keys (made on first use). `nacre verify` trusts them only
with --allow-emulated.

On the hardware platforms the evidence is the real thing: on snp a report from the
security processor, which KVM asks on the guest's behalf, endorsed by the VCEK and
chain from --snp-certs (AMD's key distribution service issues them); on tdx a quote
from the host's quote generation service (qgsd), which carries its own PCK chain.
`nacre host-check --platform snp|tdx` says whether this host has all of it.

Exit status: 0 when the evidence was written, 125 when there is none (the reason is on
stderr), 2 when the command line is wrong.")]
pub struct AttestArgs {
    /// The image made by `nacre package`.
    pub image: PathBuf,
    /// The platform to boot it on.
    #[arg(long, value_parser = platform_arg(), default_value = "emulated-snp")]
    pub platform: &'static Registration,
    /// The verifier's challenge: 1 to 1024 bytes in hex.
    #[arg(long, value_name = "HEX")]
    pub nonce: String,
    /// Where to write the evidence file: a new path or a regular file, replaced whole
    /// (not a symbolic link, a pipe or a device).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Guest RAM, e.g. 256M, within the same limits as for `nacre run` (default: 256M or
    /// what the image needs).
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_cpus,
        default_value_t = 1,
        hide_default_value = true,
        help = CPUS_HELP
    )]
    pub cpus: u32,
    /// Print a summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// `--platform snp`: the directory with the VCEK (vcek.der or vcek.pem), the ASK and
    /// ARK (cert_chain.pem, or ask.* and ark.*) and the ARK's CRL (crl.der or crl.pem)
    /// that go into the evidence file. Default: $NACRE_SNP_CERTS, else
    /// $XDG_CACHE_HOME/nacre/snp-certs, else ~/.cache/nacre/snp-certs.
    #[arg(long, value_name = "DIR")]
    pub snp_certs: Option<PathBuf>,
}

/// Why the guest stopped, in words, for a boot that ended without evidence: the
/// firmware's termination reason (by the GHCB protocol or a TD's ReportFatalError),
/// the rule the host stopped it for, or what it did instead.
fn why_no_evidence(stop: &Stop, platform: &str) -> String {
    let firmware = |set: u8, code: u8, how: String| {
        let hint = if (set, code) == NO_EVIDENCE {
            format!("; `nacre host-check --platform {platform}` lists what attestation needs")
        } else {
            String::new()
        };
        format!("{} ({how}){hint}", super::run::reason(set, code))
    };
    match stop {
        Stop::GuestTerminated { set, code } => {
            firmware(*set, *code, format!("reason set {set}, code {code}"))
        }
        Stop::TdFatalError { code } => firmware(
            NO_EVIDENCE.0,
            (code & 0xFF) as u8,
            format!("TD fatal error {code:#x}"),
        ),
        Stop::MemoryViolation { gpa, view, rule } => {
            format!("{view} access to GPA {gpa:#x}: {rule}")
        }
        Stop::ProtocolViolation(msg) => msg.clone(),
        Stop::AppExit(status) => format!("the app ran and exited with status {status}"),
        Stop::Evidence { .. } => "it sent evidence".into(),
    }
}

/// Attest; the evidence file is written only when evidence came back.
pub fn run(a: &AttestArgs) -> anyhow::Result<()> {
    crate::files::check_output_apart(&a.output, &[("image", &a.image)])?;
    let nonce = parse_nonce(&a.nonce).map_err(|e| anyhow::anyhow!("--nonce: {e}"))?;
    let report_data = nonce_report_data(&nonce);
    let bytes = crate::files::read_input(&a.image, crate::files::IMAGE)?;
    let config = LaunchConfig {
        cpus: a.cpus,
        request: Some(HostRequest::attest(report_data)),
        endorsements: a.snp_certs.clone(),
        ..LaunchConfig::new(0)
    };
    let (image, mut vm) = launch(&bytes, a.platform, a.memory, config)
        .with_context(|| format!("cannot boot {}", a.image.display()))?;
    let stop = run_vm(&mut vm).with_context(|| format!("cannot run {}", a.image.display()))?;
    let (kind, raw) = match stop {
        Stop::Evidence { kind, bytes } => (kind, bytes),
        other => bail!(
            "the guest stopped before it gave evidence: {}",
            why_no_evidence(&other, a.platform.name)
        ),
    };
    // The guest's bytes are untrusted: they must at least decode as what it says.
    let evidence = Evidence::parse(&raw).context("the guest's evidence does not decode")?;
    let matches = matches!(
        (kind, evidence.kind()),
        (EvidenceKind::SnpReport, VerifiedKind::SnpReport)
            | (EvidenceKind::TdxQuote, VerifiedKind::TdxQuote)
    );
    if !matches {
        let said = match kind {
            EvidenceKind::SnpReport => "an SEV-SNP attestation report",
            EvidenceKind::TdxQuote => "a TDX quote",
        };
        bail!(
            "the guest's evidence is a {}, not {said} as it said",
            evidence.describe()
        );
    }
    let platform = vm.platform.name();
    let endorsements = vm.platform.endorsements(&evidence).map_err(|e| {
        anyhow::anyhow!(
            "cannot endorse the evidence: {e} (`nacre host-check --platform {platform}` \
                 lists what attestation needs)"
        )
    })?;
    let collateral = endorsements.collateral.as_ref();
    let json = EvidenceFile::to_json(platform, &evidence, &raw, &endorsements);
    let text = serde_json::to_string_pretty(&json)? + "\n";
    crate::files::write_output(&a.output, text.as_bytes())?;

    let measurement = hex::encode(evidence.measurement());
    // SEV-SNP measures every vCPU's VMSA: the image's value for this many vCPUs.
    let predicted = hex::encode(image.measurement_for_cpus(a.cpus));
    if a.json {
        let summary = serde_json::json!({
            "evidence": a.output.display().to_string(),
            "platform": platform,
            "kind": evidence.kind().name(),
            "cpus": a.cpus,
            "measurement": measurement,
            "report_data": hex::encode(report_data),
            "collateral": collateral.is_some(),
            "crl": endorsements.crl.is_some(),
        });
        super::write_stdout(&(serde_json::to_string_pretty(&summary)? + "\n"))?;
    } else {
        let mut text = format!(
            "evidence     {} ({})\n",
            a.output.display(),
            evidence.describe()
        );
        text += &format!("platform     {platform}\n");
        text += &format!("vcpus        {}\n", a.cpus);
        text += &format!("measurement  {measurement}\n");
        text += &format!("report data  {}\n", hex::encode(report_data));
        if endorsements.vcek.is_some() {
            text += "certificates the VCEK and its ASK and ARK\n";
        }
        if endorsements.crl.is_some() {
            text += "revocation   the ARK's CRL\n";
        }
        if collateral.is_some() {
            text += "collateral   TCB info, QE identity and CRLs\n";
        }
        super::write_stdout(&text)?;
    }
    if predicted != measurement {
        // The host refuses to launch an image whose measurement differs from its
        // prediction, so this is a platform bug, not a user error.
        bail!("the evidence's measurement {measurement} is not the image's ({predicted})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::memory::View;

    #[test]
    fn a_boot_without_evidence_says_why_in_words() {
        let td = why_no_evidence(&Stop::TdFatalError { code: 12 }, "emulated-tdx");
        assert!(td.contains("hostcall reply was malformed"), "{td}");
        assert!(td.contains("TD fatal error 0xc"), "{td}");
        let snp = why_no_evidence(&Stop::GuestTerminated { set: 3, code: 18 }, "emulated-snp");
        assert!(snp.contains("no attestation evidence"), "{snp}");
        assert!(snp.contains("host-check --platform emulated-snp"), "{snp}");
        let none = why_no_evidence(&Stop::TdFatalError { code: 18 }, "tdx");
        assert!(none.contains("host-check --platform tdx"), "{none}");
        let memory = why_no_evidence(
            &Stop::MemoryViolation {
                gpa: 0x2000,
                view: View::Private,
                rule: "a rule",
            },
            "emulated-snp",
        );
        assert!(
            memory.contains("0x2000") && memory.contains("a rule"),
            "{memory}"
        );
    }

    #[test]
    fn an_output_that_is_not_a_regular_file_is_refused_before_booting() {
        let dir = crate::files::tests::scratch("attest-output");
        let fifo = dir.join("evidence.json");
        crate::files::tests::mkfifo(&fifo);
        let args = AttestArgs {
            // Never read: the output is refused first.
            image: dir.join("missing.igvm"),
            platform: crate::platform::default_platform(),
            nonce: "00".into(),
            output: fifo.clone(),
            memory: None,
            cpus: 1,
            json: false,
            snp_certs: None,
        };
        let err = format!("{:#}", run(&args).unwrap_err());
        assert!(err.contains("is a named pipe (FIFO)"), "{err}");
        assert!(!err.contains("missing.igvm"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
