//! `nacre measure`: the launch measurement each platform computes for an image, which
//! the attestation reports of its guests carry, without running it: on SEV-SNP for the
//! number of vCPUs the guest is launched with (`--cpus`), since every vCPU's VMSA is
//! measured; on TDX the same for any number.

use super::run::parse_cpus;
use crate::platform;
use anyhow::Context;
use nacre_loader::measure::MEASUREMENT_SIZE;
use nacre_loader::{image_platforms, load_image, ImageError, MeasuredRegion, PlatformKind};
use nacre_shared_abi::snp::report::GuestPolicy;
use nacre_verifier::policy::{
    AbiVersion, Bytes, GuestPolicyBits, ReferencePolicy, SnpReference, TdAttributeBits,
    TdxReference, SHA384_SIZE,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Arguments of `nacre measure`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  nacre measure hello.igvm
      snp measurement f563b4cc0bfa7af5...   (96 hex digits each)
      tdx mrtd        bd4201580f043a26...
  nacre measure hello.igvm --platform snp --json
  nacre measure hello.igvm --explain
  nacre measure hello.igvm --platform snp --cpus 4   (for `nacre run/attest --cpus 4`)

The SEV-SNP value is the launch digest the AMD security processor computes while the
host adds the image's pages: the guest's attestation reports carry it as MEASUREMENT.
The TDX value is the MRTD the TDX module computes: TD reports and quotes carry it as
MRTD. A verifier compares that field with this value. Both depend only on the image:
packaging the same inputs again gives the same values, and any change to the firmware,
the app, its arguments, environment or files changes them.

The SEV-SNP value also depends on the number of vCPUs the guest is launched with: at
SNP_LAUNCH_FINISH the security processor measures the initial state (VMSA page) of
every vCPU, one after the other at the same GPA, so a guest launched with --cpus 4 has
another MEASUREMENT than the same image with --cpus 1. nacre starts every vCPU in the
boot processor's state, so the value for N vCPUs is the one for 1 continued with N - 1
more updates of the same VMSA page. Pass the --cpus that `nacre run` or `nacre attest`
is given (default 1). The TDX value does not depend on it: MRTD covers only the pages
added to the TD, and making its vCPUs adds nothing to it.

--explain lists, in launch order, every region each platform measures: what it holds,
its guest-physical address range, how the platform takes its pages (SEV-SNP page type
NORMAL, ZERO, UNMEASURED or VMSA; TDX PAGE.ADD+MR.EXTEND or PAGE.ADD), the page count
and the SHA-384 of its contents, so that a value that differs can be traced to the
pages that differ. On SEV-SNP it ends with one VMSA row per vCPU. Then comes the
image's network policy (`nacre package --listen/--connect`, packaged as
/etc/nacre/network and so measured with the files): the ports the app may listen on
and where it may connect, or none.

--policy-out FILE writes the reference values the image implies, for each platform
printed, as a policy for `nacre verify --policy FILE` (TOML, docs/policy.md):
  SEV-SNP: the measurement (for --cpus), VMPL 0, the guest policy's bits and ABI as the
           image declares them, and zero HOST_DATA, FAMILY_ID, IMAGE_ID and ID and
           author key digests (nacre launches without an ID block or host data);
  TDX:     the MRTD, the TD attributes as the image declares them, and zero
           MRCONFIGID, MROWNER, MROWNERCONFIG (nacre's launch sets none) and RTMR0-3
           (nacre's firmware extends none).
What the platform decides (TCB levels, PLATFORM_INFO, MRSEAM, XFAM, TEE_TCB_SVN) is
left for the relying party to add. FILE is replaced atomically; a FILE that exists
and is not a regular file (a directory, a device, a symbolic link) is refused.

Exit status: 0, 125 when the image cannot be used, 2 when the command line is wrong.")]
pub struct MeasureArgs {
    /// The image made by `nacre package`.
    pub image: PathBuf,
    /// The platform whose measurement to print (a platform's measurement is that of
    /// the image part it boots: `emulated-snp` and `snp` have the same); `all` is
    /// every platform the image serves.
    #[arg(long, value_parser = measure_target(), default_value = "all")]
    pub platform: MeasurePlatform,
    /// Print one JSON object with an object per platform (`snp`, `tdx`).
    #[arg(long)]
    pub json: bool,
    /// Also list the measured regions of each platform.
    #[arg(long)]
    pub explain: bool,
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_cpus,
        default_value_t = 1,
        hide_default_value = true,
        help = CPUS_HELP
    )]
    pub cpus: u32,
    /// Also write the reference values the image implies for the platforms printed
    /// (for --cpus vCPUs) to FILE, as a policy for `nacre verify --policy`.
    #[arg(long, value_name = "FILE")]
    pub policy_out: Option<PathBuf>,
}

/// `--cpus` in `nacre measure --help`.
pub const CPUS_HELP: &str = "The number of vCPUs the guest is launched with (`nacre run/attest \
    --cpus`), 1 to 16 (default 1). The SEV-SNP measurement covers one VMSA per vCPU, so it \
    differs for each number; the TDX MRTD is the same for all";

const _: () = assert!(
    nacre_shared_abi::boot::MAX_CPUS == 16,
    "CPUS_HELP names the range"
);

/// `--platform`: the image part one platform boots, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasurePlatform {
    /// The part of this kind.
    Kind(PlatformKind),
    /// Every part the image has.
    All,
}

/// Parse `--platform`: a registered platform's name, or `all`.
fn measure_target() -> impl clap::builder::TypedValueParser<Value = MeasurePlatform> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        platform::PLATFORMS
            .iter()
            .map(|p| PossibleValue::new(p.name).help(p.about))
            .chain([PossibleValue::new("all").help("every platform the image serves")]),
    )
    .map(|name: String| match platform::by_name(&name) {
        Some(p) => MeasurePlatform::Kind(p.image),
        None => MeasurePlatform::All,
    })
}

/// One platform's launch measurement of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformMeasurement {
    /// The platform.
    pub platform: PlatformKind,
    /// The number of vCPUs it is for.
    pub cpus: u32,
    /// The SEV-SNP launch digest or the TDX MRTD of a guest with `cpus` vCPUs.
    pub measurement: [u8; MEASUREMENT_SIZE],
    /// What it covers, in launch order (on SEV-SNP a VMSA region per vCPU); empty when
    /// not asked for ([`measure_bytes_with`]).
    pub regions: Vec<MeasuredRegion>,
    /// The guest policy the image declares for the platform (not measured;
    /// [`nacre_loader::LoadedImage::guest_policy`]).
    pub guest_policy: u64,
    /// Whether that policy lets the host debug the guest.
    pub debug: bool,
    /// The image's network policy, a rule per line (`crate::network::describe`), or
    /// why it cannot be read, then the name servers its `/etc/resolv.conf` names.
    /// Measured: both are packaged files.
    pub network: Vec<String>,
}

impl PlatformMeasurement {
    /// The platform's name in the output: `snp` or `tdx`.
    pub fn key(&self) -> &'static str {
        self.platform.name()
    }

    /// The attestation report field that carries the value: `measurement` (SEV-SNP
    /// MEASUREMENT) or `mrtd` (TDX MRTD).
    pub fn report_field(&self) -> &'static str {
        self.platform.measurement_field()
    }
}

/// The measurements of the image `bytes` on `platform` for a guest with `cpus` vCPUs,
/// SEV-SNP first, with their regions. A platform the image does not serve, or an image
/// that does not load, is an error.
pub fn measure_bytes(
    bytes: &[u8],
    platform: MeasurePlatform,
    cpus: u32,
) -> Result<Vec<PlatformMeasurement>, ImageError> {
    measure_bytes_with(bytes, platform, cpus, true)
}

/// [`measure_bytes`], with the regions only when `regions` is set (`--explain`): each
/// region's SHA-384 reads every byte of its pages once more, which for an image of
/// many pages costs more than the measurement itself (a run of pages that share their
/// data is hashed once for SEV-SNP's digest, but a region's digest is over all of it).
/// Without them [`PlatformMeasurement::regions`] is empty.
pub fn measure_bytes_with(
    bytes: &[u8],
    platform: MeasurePlatform,
    cpus: u32,
    regions: bool,
) -> Result<Vec<PlatformMeasurement>, ImageError> {
    let platforms = match platform {
        MeasurePlatform::Kind(kind) => vec![kind],
        MeasurePlatform::All => image_platforms(bytes)?,
    };
    platforms
        .into_iter()
        .map(|platform| {
            let image = load_image(bytes, platform)?;
            Ok(PlatformMeasurement {
                platform,
                cpus,
                measurement: image.measurement_for_cpus(cpus),
                regions: if regions {
                    image.measured_regions_for_cpus(cpus)
                } else {
                    Vec::new()
                },
                guest_policy: image.guest_policy,
                debug: image.debug(),
                network: match crate::network::image_policy(&image) {
                    Ok(policy) => crate::network::describe(policy.as_deref()),
                    Err(e) => vec![format!("cannot be read: {e:#}")],
                }
                .into_iter()
                .chain(crate::network::name_servers(&image))
                .collect(),
            })
        })
        .collect()
}

/// Text output: a line `PLATFORM FIELD HEX` per platform, each followed by its region
/// table when `explain` is set (with more than one vCPU, the VMSA rows name their vCPU
/// and a last line says how the vCPUs are measured).
pub fn render_text(measurements: &[PlatformMeasurement], explain: bool) -> String {
    let mut out = String::new();
    for m in measurements {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{} {:<11} {}",
            m.key(),
            m.report_field(),
            hex::encode(m.measurement)
        );
        if explain {
            let _ = writeln!(
                out,
                "    {:<14}  {:<31}  {:<18}  {:>6}  SHA-384 of the contents",
                "what", "GPA range", "page type", "pages"
            );
            for r in &m.regions {
                let range = format!("{:#x}..{:#x}", r.gpa_start, r.gpa_end);
                let digest = r
                    .sha384
                    .map_or_else(|| "(the host's, not measured)".to_owned(), hex::encode);
                let what = match r.vcpu {
                    Some(vcpu) if m.cpus > 1 => format!("{} vCPU {vcpu}", r.what.name()),
                    _ => r.what.name().to_owned(),
                };
                let _ = writeln!(
                    out,
                    "    {what:<14}  {:<31}  {:<18}  {:>6}  {digest}",
                    range,
                    r.page_type.name(),
                    r.pages
                );
            }
            if m.cpus > 1 {
                let _ = writeln!(out, "    {}", cpus_note(m.platform, m.cpus));
            }
            let _ = writeln!(
                out,
                "    network policy ({}, measured with the files):",
                nacre_shared_abi::net_policy::POLICY_PATH
            );
            for rule in &m.network {
                let _ = writeln!(out, "        {rule}");
            }
        }
    }
    out
}

/// How the vCPUs enter the measurement of `platform`, for `--explain` with `cpus` > 1.
fn cpus_note(platform: PlatformKind, cpus: u32) -> String {
    match platform {
        PlatformKind::Snp => format!(
            "{cpus} vCPUs: {cpus} VMSA pages, one per vCPU, the BSP's first, all the image's \
             VMSA at the same GPA"
        ),
        PlatformKind::Tdx => {
            format!("{cpus} vCPUs: not measured, MRTD is the same for any number of vCPUs")
        }
    }
}

/// One platform's object in the JSON output.
#[derive(Debug, Serialize)]
struct JsonMeasurement<'a> {
    /// The attestation report field that carries the value.
    report_field: &'static str,
    /// The number of vCPUs the value is for.
    cpus: u32,
    /// The value, in hex.
    measurement: String,
    /// The guest policy, in hex (not measured).
    guest_policy: String,
    /// Whether the policy lets the host debug the guest.
    debug: bool,
    /// The regions, with `--explain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    regions: Option<&'a [MeasuredRegion]>,
    /// The network policy's rules, with `--explain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<&'a [String]>,
}

/// JSON output: `{"snp": {...}, "tdx": {...}}`, each with the report field the value
/// goes in, the number of vCPUs it is for, the measurement in hex, the image's guest policy for the platform in hex and
/// whether it allows debugging, and, when `explain` is set, the regions.
pub fn render_json(
    measurements: &[PlatformMeasurement],
    explain: bool,
) -> serde_json::Result<String> {
    let object: BTreeMap<&str, JsonMeasurement<'_>> = measurements
        .iter()
        .map(|m| {
            let entry = JsonMeasurement {
                report_field: m.report_field(),
                cpus: m.cpus,
                measurement: hex::encode(m.measurement),
                guest_policy: format!("{:#x}", m.guest_policy),
                debug: m.debug,
                regions: explain.then_some(&m.regions[..]),
                network: explain.then_some(&m.network[..]),
            };
            (m.key(), entry)
        })
        .collect();
    serde_json::to_string_pretty(&object)
}

/// The reference values `measurements` imply for `nacre verify --policy`: per platform,
/// what the image fixes and nacre's launch keeps as the image says.
///
/// SEV-SNP: the measurement, VMPL 0 (nacre's firmware asks for its evidence from
/// VMPL 0), every named guest policy bit and the ABI as the image declares them, and
/// zero HOST_DATA, FAMILY_ID, IMAGE_ID, ID and author key digests: nacre's
/// SNP_LAUNCH_FINISH gives no ID block and no host data (docs/specs.md 4.2, 5.6).
/// TDX: the MRTD, every named TD attribute as the image declares them, and zero
/// MRCONFIGID, MROWNER and MROWNERCONFIG (nacre's KVM_TDX_INIT_VM sets none) and RTMRs
/// (nacre's firmware never extends one; docs/specs.md 6.5-6.7).
pub fn implied_policy(measurements: &[PlatformMeasurement]) -> ReferencePolicy {
    let mut policy = ReferencePolicy::default();
    for m in measurements {
        match m.platform {
            PlatformKind::Snp => {
                policy.snp = Some(SnpReference {
                    measurement: Some(Bytes(m.measurement)),
                    vmpl: Some(0),
                    host_data: Some(Bytes([0; 32])),
                    family_id: Some(Bytes([0; 16])),
                    image_id: Some(Bytes([0; 16])),
                    id_key_digest: Some(Bytes([0; SHA384_SIZE])),
                    author_key_digest: Some(Bytes([0; SHA384_SIZE])),
                    policy_abi_minimum: Some(AbiVersion::of_policy(GuestPolicy(m.guest_policy))),
                    guest_policy: Some(GuestPolicyBits::exactly(m.guest_policy)),
                    ..SnpReference::default()
                });
            }
            PlatformKind::Tdx => {
                let zero = Some(Bytes([0; SHA384_SIZE]));
                policy.tdx = Some(TdxReference {
                    mrtd: Some(Bytes(m.measurement)),
                    mr_config_id: zero,
                    mr_owner: zero,
                    mr_owner_config: zero,
                    rtmr0: zero,
                    rtmr1: zero,
                    rtmr2: zero,
                    rtmr3: zero,
                    td_attributes: Some(TdAttributeBits::exactly(
                        nacre_loader::image::td_attributes(m.guest_policy),
                    )),
                    ..TdxReference::default()
                });
            }
        }
    }
    policy
}

/// The policy file `nacre measure --policy-out` writes for `image`: the comment
/// saying where it comes from and what it leaves out, then the policy.
pub fn policy_text(image: &Path, measurements: &[PlatformMeasurement]) -> String {
    let cpus = measurements.first().map_or(1, |m| m.cpus);
    let name = image.file_name().map_or_else(
        || image.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let comment = format!(
        "Reference values for `nacre verify --policy`, as `nacre measure --cpus {cpus}` \
         derives them\nfrom the image {name}.\n\n\
         nacre launches every image without an ID block and without host data or TD owner\n\
         values, and its firmware extends no RTMR, so those fields are zero. What the\n\
         platform decides is not here: add the minimum TCB levels, PLATFORM_INFO bits,\n\
         MRSEAM, XFAM or TEE_TCB_SVN you require (docs/policy.md)."
    );
    implied_policy(measurements).to_toml(&comment)
}

/// Run `nacre measure`.
pub fn run(a: &MeasureArgs) -> anyhow::Result<()> {
    if let Some(out) = &a.policy_out {
        crate::files::check_output_apart(out, &[("image", &a.image)]).context("--policy-out")?;
    }
    let bytes = crate::files::read_input(&a.image, crate::files::IMAGE)?;
    let measurements = measure_bytes_with(&bytes, a.platform, a.cpus, a.explain)
        .with_context(|| format!("cannot measure {}", a.image.display()))?;
    if let Some(out) = &a.policy_out {
        let text = policy_text(&a.image, &measurements);
        crate::files::write_output(out, text.as_bytes()).context("--policy-out")?;
    }
    if a.json {
        super::write_stdout(&(render_json(&measurements, a.explain)? + "\n"))?;
    } else {
        super::write_stdout(&render_text(&measurements, a.explain))?;
    }
    if let Some(out) = &a.policy_out {
        let platforms: Vec<&str> = measurements.iter().map(PlatformMeasurement::key).collect();
        crate::say!(
            "nacre: wrote the reference values of {} ({}) to {}; check evidence with \
             `nacre verify EVIDENCE --policy {}`",
            a.image.display(),
            platforms.join(", "),
            out.display(),
            out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// The bundled demo app packaged with the real firmware.
    fn image() -> &'static [u8] {
        static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
        IMAGE.get_or_init(|| {
            let files = crate::cli::package::file_tree("hello", &[]).unwrap();
            crate::cli::package::build(crate::DEMO_APP, "hello", &[], &[], &files, 0, false)
                .unwrap()
        })
    }

    #[test]
    fn every_platform_by_default() {
        let all = measure_bytes(image(), MeasurePlatform::All, 1).unwrap();
        let platforms: Vec<PlatformKind> = all.iter().map(|m| m.platform).collect();
        assert_eq!(platforms, [PlatformKind::Snp, PlatformKind::Tdx]);
        for m in &all {
            let loaded = load_image(image(), m.platform).unwrap();
            assert_eq!(m.measurement, loaded.measurement());
            assert_eq!(m.regions, loaded.measured_regions());
        }
        assert_eq!(
            all[1].measurement,
            load_image(image(), PlatformKind::Tdx)
                .unwrap()
                .mrtd
                .unwrap()
        );
        let snp = measure_bytes(image(), MeasurePlatform::Kind(PlatformKind::Snp), 1).unwrap();
        assert_eq!(snp[..], all[..1]);
        let tdx = measure_bytes(image(), MeasurePlatform::Kind(PlatformKind::Tdx), 1).unwrap();
        assert_eq!(tdx[..], all[1..]);
    }

    #[test]
    fn text_is_one_line_per_platform() {
        let all = measure_bytes(image(), MeasurePlatform::All, 1).unwrap();
        let text = render_text(&all, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for (line, m) in lines.iter().zip(&all) {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                words,
                [m.key(), m.report_field(), &hex::encode(m.measurement)]
            );
        }
    }

    #[test]
    fn explain_lists_every_region() {
        let all = measure_bytes(image(), MeasurePlatform::All, 1).unwrap();
        let text = render_text(&all, true);
        // Per platform: its line, the header, a row per region, the network policy's
        // heading and its one line (none).
        let rows = 2 + 2 + 4 + all.iter().map(|m| m.regions.len()).sum::<usize>();
        assert_eq!(text.lines().count(), rows, "{text}");
        assert!(text.contains("none: the app has no network"), "{text}");
        for needle in [
            "boot info",
            "firmware",
            "file tree",
            "parameter page",
            "VMSA",
            "TDX reset page",
            "UNMEASURED",
            "PAGE.ADD+MR.EXTEND",
            "0xfffffffff000..0x1000000000000",
        ] {
            assert!(text.contains(needle), "{needle}:\n{text}");
        }
    }

    #[test]
    fn json_has_an_object_per_platform() {
        let all = measure_bytes(image(), MeasurePlatform::All, 1).unwrap();
        let parse = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();
        let json = parse(render_json(&all, false).unwrap());
        assert_eq!(json["snp"]["report_field"], "measurement");
        assert_eq!(json["tdx"]["report_field"], "mrtd");
        for m in &all {
            assert_eq!(json[m.key()]["measurement"], hex::encode(m.measurement));
            assert_eq!(json[m.key()]["debug"], false);
            assert!(json[m.key()].get("regions").is_none());
        }
        assert_eq!(json["snp"]["guest_policy"], "0x30000");
        assert_eq!(json["tdx"]["guest_policy"], "0x2");
        let explained = parse(render_json(&all, true).unwrap());
        let regions = explained["snp"]["regions"].as_array().unwrap();
        assert_eq!(regions.len(), all[0].regions.len());
        assert_eq!(regions[0]["what"], "boot-info");
    }

    #[test]
    fn cpus_change_the_snp_measurement_and_not_the_mrtd() {
        let one = measure_bytes(image(), MeasurePlatform::All, 1).unwrap();
        let snp = load_image(image(), PlatformKind::Snp).unwrap();
        for cpus in [2, 16] {
            let more = measure_bytes(image(), MeasurePlatform::All, cpus).unwrap();
            assert_eq!(more[0].cpus, cpus);
            assert_eq!(more[0].measurement, snp.measurement_for_cpus(cpus));
            assert_ne!(more[0].measurement, one[0].measurement, "{cpus} vCPUs");
            assert_eq!(
                more[0].regions.len(),
                one[0].regions.len() + cpus as usize - 1
            );
            assert_eq!(more[1].measurement, one[1].measurement, "{cpus} vCPUs");
            assert_eq!(more[1].regions, one[1].regions);
        }
    }

    #[test]
    fn explain_names_a_vmsa_per_vcpu() {
        let all = measure_bytes(image(), MeasurePlatform::All, 3).unwrap();
        let text = render_text(&all, true);
        // Per platform: its line, the header, a row per region, the note on vCPUs, the
        // network policy (two lines).
        let rows = 2 + 2 + 2 + 4 + all.iter().map(|m| m.regions.len()).sum::<usize>();
        assert_eq!(text.lines().count(), rows, "{text}");
        for needle in [
            "VMSA vCPU 0",
            "VMSA vCPU 1",
            "VMSA vCPU 2",
            "3 vCPUs: 3 VMSA pages, one per vCPU",
            "3 vCPUs: not measured",
        ] {
            assert!(text.contains(needle), "{needle}:\n{text}");
        }
        assert!(!text.contains("VMSA vCPU 3"), "{text}");
        // With one vCPU the table is as it always was.
        let one = render_text(
            &measure_bytes(image(), MeasurePlatform::All, 1).unwrap(),
            true,
        );
        assert!(!one.contains("vCPU"), "{one}");
    }

    #[test]
    fn json_says_how_many_vcpus() {
        let all = measure_bytes(image(), MeasurePlatform::All, 2).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&all, true).unwrap()).unwrap();
        assert_eq!(json["snp"]["cpus"], 2);
        assert_eq!(json["tdx"]["cpus"], 2);
        assert_eq!(json["snp"]["measurement"], hex::encode(all[0].measurement));
        let regions = json["snp"]["regions"].as_array().unwrap();
        let vcpus: Vec<&serde_json::Value> = regions.iter().filter_map(|r| r.get("vcpu")).collect();
        assert_eq!(vcpus, [0, 1]);
    }

    fn cpus_of(args: &[&str]) -> Result<u32, String> {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            crate::cli::Command::Measure(a) => Ok(a.cpus),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cpus_default_to_one_and_outside_one_to_sixteen_are_refused() {
        assert_eq!(cpus_of(&["nacre", "measure", "x.igvm"]), Ok(1));
        assert_eq!(
            cpus_of(&["nacre", "measure", "x.igvm", "--cpus", "16"]),
            Ok(16)
        );
        for bad in ["0", "17", "two"] {
            let e = cpus_of(&["nacre", "measure", "x.igvm", "--cpus", bad]).unwrap_err();
            assert!(e.contains("1 to 16"), "{bad}: {e}");
        }
        assert!(CPUS_HELP.contains("default 1"));
        assert!(CPUS_HELP.contains("one VMSA per vCPU"));
    }

    #[test]
    fn bad_images_are_errors() {
        let err = measure_bytes(b"not an image", MeasurePlatform::All, 1).unwrap_err();
        assert!(matches!(err, ImageError::NotIgvm), "{err}");
        let mut corrupt = image().to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let err = measure_bytes(&corrupt, MeasurePlatform::All, 1).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    /// A new empty directory for test `name`.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nacre-measure-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_implied_policy_is_the_images_measurement_and_declared_policy() {
        let all = measure_bytes(image(), MeasurePlatform::All, 2).unwrap();
        let policy = implied_policy(&all);
        let snp = policy.snp.as_ref().unwrap();
        assert_eq!(snp.measurement, Some(Bytes(all[0].measurement)));
        assert_eq!(snp.vmpl, Some(0));
        assert_eq!(snp.host_data, Some(Bytes([0; 32])));
        let bits = snp.guest_policy.unwrap();
        assert_eq!(bits.smt, Some(true));
        assert_eq!(bits.debug, Some(false));
        assert_eq!(bits.migrate_ma, Some(false));
        // Nothing the platform decides.
        assert_eq!(snp.current_tcb_minimum, None);
        assert_eq!(snp.platform_info, None);
        let tdx = policy.tdx.as_ref().unwrap();
        assert_eq!(tdx.mrtd, Some(Bytes(all[1].measurement)));
        assert_eq!(tdx.rtmr3, Some(Bytes([0; 48])));
        let attributes = tdx.td_attributes.unwrap();
        assert_eq!(attributes.sept_ve_disable, Some(true));
        assert_eq!(attributes.debug, Some(false));
        assert_eq!(attributes.migratable, Some(false));
        assert_eq!((tdx.xfam, tdx.mr_seam), (None, None));

        // One platform asked for, one table; the text reads back as the policy.
        let tdx_only = measure_bytes(image(), MeasurePlatform::Kind(PlatformKind::Tdx), 1).unwrap();
        let text = policy_text(Path::new("/some/where/hello.igvm"), &tdx_only);
        assert!(text.contains("# from the image hello.igvm."), "{text}");
        let read = ReferencePolicy::from_toml(&text).unwrap();
        assert_eq!(read, implied_policy(&tdx_only));
        assert!(read.snp.is_none());

        // A debuggable image implies a debuggable guest.
        let files = crate::cli::package::file_tree("hello", &[]).unwrap();
        let debug = crate::cli::package::build(crate::DEMO_APP, "hello", &[], &[], &files, 0, true)
            .unwrap();
        let policy = implied_policy(&measure_bytes(&debug, MeasurePlatform::All, 1).unwrap());
        assert_eq!(policy.snp.unwrap().guest_policy.unwrap().debug, Some(true));
        assert_eq!(policy.tdx.unwrap().td_attributes.unwrap().debug, Some(true));
    }

    #[test]
    fn the_policy_file_is_refused_before_measuring_unless_regular() {
        let dir = scratch("policy-out");
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let target = dir.join("p.toml");
        std::fs::write(&target, "[tdx]\n").unwrap();
        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.join("fifo");
        crate::files::tests::mkfifo(&fifo);
        for (out, what) in [
            (&sub, "is a directory"),
            (&link, "is a symbolic link"),
            (&fifo, "is a named pipe (FIFO)"),
        ] {
            let a = MeasureArgs {
                // Never read: the output is refused first.
                image: dir.join("missing.igvm"),
                platform: MeasurePlatform::All,
                json: false,
                explain: false,
                cpus: 1,
                policy_out: Some(out.clone()),
            };
            let err = format!("{:#}", run(&a).unwrap_err());
            assert!(err.contains("--policy-out"), "{err}");
            assert!(err.contains(what), "{err}");
        }
        // None was touched: the link still points at the file, which kept its text.
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "[tdx]\n");
        assert!(sub.is_dir());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
