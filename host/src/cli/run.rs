//! `nacre run`.

use super::{EXIT_GUEST_TERMINATED, EXIT_MEMORY_VIOLATION};
use crate::exits::RunError;
use crate::platform::hostile::Hostile;
use crate::platform::launch::{check_memory, HostMemory, LaunchConfig};
use crate::platform::net::{NetConfig, NetPolicy, Publish};
use crate::platform::{self, Registration, Stop, Vm};
use crate::stats::Stats;
use crate::vmm::vcpu;
use anyhow::Context;
use nacre_shared_abi::boot::MAX_CPUS;
use std::path::PathBuf;
use std::time::Instant;

/// `--platform`: one of the registered platforms, listed with what each is in `--help`.
pub fn platform_arg() -> impl clap::builder::TypedValueParser<Value = &'static Registration> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(
        platform::PLATFORMS
            .iter()
            .map(|p| clap::builder::PossibleValue::new(p.name).help(p.about)),
    )
    .map(|name: String| platform::by_name(&name).unwrap_or_else(platform::default_platform))
}

/// Arguments of `nacre run`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  nacre run hello.igvm --memory 512M --stats

Exit status: the app's own (0-255) when it ran to its end; 120 when the host stopped
the guest for breaking a confidential-memory rule, 121 when the guest firmware asked to
be terminated, 125 on an error of nacre's own (the reason is on stderr), 2 when the
command line is wrong.")]
pub struct RunArgs {
    /// The image made by `nacre package`.
    pub image: PathBuf,
    /// The platform to run on.
    #[arg(long, value_parser = platform_arg(), default_value = "emulated-snp")]
    pub platform: &'static Registration,
    /// Guest RAM, e.g. 256M or 4G: a multiple of 2 MiB, from 64 MiB to 64 GiB on
    /// emulated-snp and snp, to 4094 MiB on emulated-tdx and tdx, and no more than this
    /// host can back. Default: 256M or what the image needs.
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
    /// Print counters (exits, page-state changes, validations, the app's syscalls and the
    /// unsupported ones) to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Write the counters as JSON to FILE: a new path or a regular file, replaced whole
    /// (not a symbolic link, a pipe or a device).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Stop the guest (exit 120, naming the GPA and the rule) when it touches a page
    /// through the wrong view (private memory as shared or shared as private), instead
    /// of converting the page as KVM lets a VMM do on a memory-fault exit.
    #[arg(long)]
    pub strict_memory: bool,
    #[arg(
        long,
        value_name = "[HOST_ADDR:]HOST_PORT:GUEST_PORT",
        value_parser = Publish::parse,
        help = PUBLISH_HELP
    )]
    pub publish: Vec<Publish>,
}

/// `--publish` in `--help`.
pub const PUBLISH_HELP: &str = "Publish a port the app listens on (TCP or UDP) on the host, \
    as docker run -p: a bind to GUEST_PORT in the guest binds HOST_ADDR:HOST_PORT on the host \
    (HOST_ADDR 127.0.0.1 when left out; an IPv6 address in brackets, as [::1]:8080:80). \
    Repeatable, once per guest port. Other ports are bound on the host as the app gives \
    them. The image's network policy still decides which ports the app may listen on";

/// `--cpus` in `--help` (`nacre run`, `nacre attest`, `nacre demo`).
pub const CPUS_HELP: &str = "Number of vCPUs, 1 to 16 (default 1). Each is a thread of nacre's \
    on the host, and the guest runs the app's threads on all of them. The snp and tdx \
    hardware platforms launch that many too, but have never run on hardware; on SEV-SNP the \
    number is part of the launch measurement (nacre measure --cpus)";

const _: () = assert!(MAX_CPUS == 16, "CPUS_HELP names the range");

/// Parse `--cpus`: 1 to [`MAX_CPUS`].
pub fn parse_cpus(s: &str) -> Result<u32, String> {
    let range = || format!("the number of vCPUs must be 1 to {MAX_CPUS}");
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number; {}", range()))?;
    if (1..=MAX_CPUS).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} vCPUs: {}", range()))
    }
}

/// Parse `128M`, `4G`, `512MiB`, `1073741824`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|e: std::num::ParseIntError| {
        if *e.kind() == std::num::IntErrorKind::PosOverflow {
            format!("{s:?} is too large")
        } else {
            format!("{s:?} is not a size like 256M or 4G")
        }
    })?;
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Load an image and launch its VM on `platform` with `memory` bytes of RAM (default:
/// [`DEFAULT_MEMORY`] or what the image needs) and the rest of `config` (vCPUs, the
/// host's request, endorsements, the network; its own `memory` is replaced).
pub fn launch(
    bytes: &[u8],
    platform: &Registration,
    memory: Option<u64>,
    config: LaunchConfig,
) -> anyhow::Result<(nacre_loader::LoadedImage, Vm)> {
    let image = nacre_loader::load_image(bytes, platform.image)?;
    let memory = memory.unwrap_or(DEFAULT_MEMORY.max(image.min_memory));
    // Before anything is made: what the platform boots, what this host can back.
    check_memory(
        platform,
        memory,
        image.min_memory,
        HostMemory::probe().as_ref(),
    )?;
    // The network policy is the image's (measured), whatever the caller had.
    let text = crate::network::image_policy(&image)?;
    let mut config = LaunchConfig { memory, ..config };
    config.net.policy = match &text {
        Some(text) => NetPolicy::from_rules(
            &nacre_shared_abi::net_policy::Policy::parse(text.as_bytes())
                .map_err(|(line, e)| anyhow::anyhow!("the network policy, line {line}: {e}"))?,
        ),
        None => NetPolicy::default(),
    };
    let vm = (platform.launch)(&image, &config)?;
    Ok((image, vm))
}

/// Run `vm`'s vCPUs, each on a host thread of its own, until the guest stops
/// ([`vcpu::run`]); under the hostile-host hook [`Hostile::ApNeverStarted`] only the
/// boot processor. When KVM or the host fails (not the guest), the error names
/// `nacre host-check` for the platform.
pub fn run_vm(vm: &mut Vm) -> anyhow::Result<Stop> {
    let name = vm.platform.name();
    let running = if Hostile::from_env() == Some(Hostile::ApNeverStarted) {
        vm.vcpus.len().min(1)
    } else {
        vm.vcpus.len()
    };
    vcpu::run(&mut vm.vcpus[..running], &mut *vm.platform).map_err(|e| {
        let host = matches!(
            e,
            RunError::Kvm(_) | RunError::Memory(_) | RunError::Thread(_)
        );
        let e = anyhow::Error::from(e);
        if host {
            e.context(format!(
                "the host failed while running the guest (`nacre host-check --platform \
                 {name}` checks this host)"
            ))
        } else {
            e
        }
    })
}

/// The counters of a run that started at `start`.
pub fn stats(vm: &mut Vm, start: Instant) -> Stats {
    let mut stats = Stats {
        cpus: vm.vcpus.len() as u32,
        run: vm.platform.run_counters().clone(),
        counters: vm.platform.counters(),
        ..Stats::default()
    };
    stats.boot_ms = boot_ms(start, vm.platform.hostcalls().app_entered);
    stats.run_ms = start.elapsed().as_secs_f64() * 1e3;
    stats
}

/// Milliseconds from `start` until the firmware entered the app (`entered`), 0 when it
/// never did.
pub fn boot_ms(start: Instant, entered: Option<Instant>) -> f64 {
    entered.map_or(0.0, |t| t.duration_since(start).as_secs_f64() * 1e3)
}

/// Default guest RAM.
pub const DEFAULT_MEMORY: u64 = 256 << 20;

/// Run an image; returns the process exit status.
pub fn run(a: &RunArgs, start: Instant) -> anyhow::Result<u8> {
    if let Some(path) = &a.stats_json {
        crate::files::check_output_apart(path, &[("image", &a.image)]).context("--stats-json")?;
    }
    Publish::check_all(&a.publish).map_err(|e| super::UsageError(format!("--publish: {e}")))?;
    let bytes = crate::files::read_input(&a.image, crate::files::IMAGE)?;
    run_bytes(&bytes, a, start).with_context(|| format!("cannot run {}", a.image.display()))
}

/// Run image bytes.
pub fn run_bytes(bytes: &[u8], a: &RunArgs, start: Instant) -> anyhow::Result<u8> {
    let config = LaunchConfig {
        cpus: a.cpus,
        strict_memory: a.strict_memory,
        // The policy is the image's ([`launch`]).
        net: NetConfig {
            publish: a.publish.clone(),
            ..NetConfig::default()
        },
        ..LaunchConfig::new(0)
    };
    let (_, mut vm) = launch(bytes, a.platform, a.memory, config)?;
    let result = run_vm(&mut vm);
    let stats = stats(&mut vm, start);
    if a.stats {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), stats.render().as_bytes());
    }
    if let Some(path) = &a.stats_json {
        let text = serde_json::to_string_pretty(&stats.to_json())?;
        crate::files::write_output(path, (text + "\n").as_bytes()).context("--stats-json")?;
    }
    match result? {
        Stop::AppExit(code) => Ok(code),
        Stop::MemoryViolation { gpa, view, rule } => {
            crate::say!("nacre: guest stopped: {view} access to GPA {gpa:#x}: {rule}");
            Ok(EXIT_MEMORY_VIOLATION)
        }
        Stop::GuestTerminated { set, code } => {
            crate::say!(
                "nacre: the guest firmware asked to terminate (reason set {set}, code {code}): {}{}",
                reason(set, code),
                advice(set, code, &vm, a.platform)
            );
            Ok(EXIT_GUEST_TERMINATED)
        }
        Stop::ProtocolViolation(msg) => {
            crate::say!("nacre: guest stopped: {msg}");
            Ok(EXIT_GUEST_TERMINATED)
        }
        Stop::Evidence { .. } => {
            // Only `nacre attest` asks for evidence; the host refuses it otherwise.
            crate::say!("nacre: guest stopped: it sent attestation evidence");
            Ok(EXIT_GUEST_TERMINATED)
        }
        Stop::TdFatalError { code } => {
            let nacre = (code & 0xFF) as u8;
            crate::say!(
                "nacre: the TD reported a fatal error (code {code:#x}): {}{}",
                reason(3, nacre),
                advice(3, nacre, &vm, a.platform)
            );
            Ok(EXIT_GUEST_TERMINATED)
        }
    }
}

/// What the user can do about termination reason `(set, code)` of `vm`, after a
/// separator; empty when there is nothing to say.
fn advice(set: u8, code: u8, vm: &Vm, platform: &Registration) -> String {
    if (set, code) == OUT_OF_MEMORY {
        format!(
            "; {}",
            out_of_memory_advice(vm.platform.memory().size(), platform)
        )
    } else {
        String::new()
    }
}

/// The firmware's termination reason for guest memory exhausted (`FwError::OutOfMemory`).
pub const OUT_OF_MEMORY: (u8, u8) = (3, 10);

/// What to do when the guest ran out of its `memory` bytes of RAM on `platform`.
pub fn out_of_memory_advice(memory: u64, platform: &Registration) -> String {
    let had = crate::platform::launch::size_text(memory);
    if memory >= platform.max_memory {
        return format!(
            "the guest had {had} of RAM, the most {} boots: the app must need less",
            platform.name
        );
    }
    // Double it, within the platform's limit and the 2 MiB granularity.
    let more = memory.saturating_mul(2).min(platform.max_memory) & !((2 << 20) - 1);
    format!(
        "the guest had {had} of RAM; give it more with --memory (e.g. --memory {}M, at most {} on {})",
        more >> 20,
        crate::platform::launch::size_text(platform.max_memory),
        platform.name
    )
}

/// Explain a termination reason (docs/specs.md 1.4; set 3 is the firmware's `FwError`).
pub fn reason(set: u8, code: u8) -> &'static str {
    match (set, code) {
        (0, 0) => "general failure",
        (0, 1) => "GHCB protocol version unsupported",
        (0, 2) => "SEV-SNP not active",
        (1, 0) => "GHCB registration failed",
        (1, 1) => "page-state change failed",
        (1, 2) => "PVALIDATE failed",
        (3, 1) => "the measured boot information is invalid",
        (3, 2) => "the host's memory map was refused",
        (3, 3) => "not running on SEV-SNP, or the C-bit disagrees with the image",
        (3, 4) => "the host broke the GHCB MSR protocol",
        (3, 5) => "the host refused or misreported a GHCB call",
        (3, 6) => "a page-state change failed or the host misreported its progress",
        (3, 7) => "PVALIDATE failed",
        (3, 8) => "the platform reported a page as validated or accepted that the firmware never validated or accepted",
        (3, 9) => "the firmware would have validated a page twice",
        (3, 10) => "guest memory exhausted",
        (3, 11) => "the app ELF is malformed",
        (3, 12) => "the host's hostcall reply was malformed",
        (3, 13) => "not running as a TD, or TDG.VP.INFO is unusable",
        (3, 14) => "TDG.MEM.PAGE.ACCEPT failed",
        (3, 15) => "MapGPA failed or the host misreported its progress",
        (3, 16) => "the CPU gives no random numbers (RDRAND), which the app's start-up needs",
        (3, 17) => "the host's request in the parameter page was refused",
        (3, 18) => "the platform gave no attestation evidence",
        (3, 19) => "the host refused a local APIC register access",
        (3, 20) => "the host's CPUID contradicts the measured CPUID page",
        (3, 0xFE) => "firmware bug",
        _ => "unknown reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn sizes_parse_and_bad_ones_say_why() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size(" 4gib "), Ok(4 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        for (bad, why) in [
            ("", "is not a size like 256M"),
            ("M", "is not a size like 256M"),
            ("-1G", "is not a size like 256M"),
            ("4X", "unknown size unit"),
            ("99999999999999999999", "is too large"),
            ("99999999999999999999G", "is too large"),
            ("16777216T", "is too large"),
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    fn cpus_of(args: &[&str]) -> Result<u32, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        Ok(match cli.command {
            Command::Run(a) => a.cpus,
            Command::Attest(a) => a.cpus,
            Command::Demo(a) => a.cpus,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn cpus_default_to_one_and_take_one_to_max_cpus() {
        assert_eq!(cpus_of(&["nacre", "run", "x.igvm"]), Ok(1));
        assert_eq!(cpus_of(&["nacre", "run", "x.igvm", "--cpus", "4"]), Ok(4));
        assert_eq!(
            cpus_of(&["nacre", "attest", "x.igvm", "--nonce", "00", "-o", "e.json"]),
            Ok(1)
        );
        assert_eq!(
            cpus_of(&[
                "nacre", "attest", "x.igvm", "--nonce", "00", "-o", "e.json", "--cpus", "16"
            ]),
            Ok(16)
        );
        assert_eq!(cpus_of(&["nacre", "demo"]), Ok(1));
        assert_eq!(cpus_of(&["nacre", "demo", "--cpus", "2"]), Ok(2));
        assert_eq!(parse_cpus("1"), Ok(1));
        assert_eq!(parse_cpus(&MAX_CPUS.to_string()), Ok(MAX_CPUS));
    }

    #[test]
    fn cpus_outside_the_range_are_refused_naming_it() {
        for bad in ["0", "17", "-1", "two", "", "99999999999"] {
            let e = parse_cpus(bad).unwrap_err();
            assert!(e.contains("1 to 16"), "{bad:?}: {e}");
            let arg = format!("--cpus={bad}");
            let e = cpus_of(&["nacre", "run", "x.igvm", &arg]).unwrap_err();
            assert!(e.contains("1 to 16"), "{bad:?}: {e}");
        }
    }

    /// Every termination code the firmware reports (guest-firmware `error.rs`,
    /// `FwError::term_code`) is named.
    #[test]
    fn out_of_memory_advice_names_the_size_and_a_larger_one() {
        let snp = platform::by_name("emulated-snp").unwrap();
        let tdx = platform::by_name("emulated-tdx").unwrap();
        assert_eq!(
            out_of_memory_advice(256 << 20, snp),
            "the guest had 256 MiB of RAM; give it more with --memory (e.g. --memory 512M, \
             at most 64 GiB on emulated-snp)"
        );
        // Doubling stops at the platform's limit, on its 2 MiB granularity.
        assert!(out_of_memory_advice(3 << 30, tdx).contains("--memory 4094M"));
        assert_eq!(
            out_of_memory_advice(tdx.max_memory, tdx),
            "the guest had 4094 MiB of RAM, the most emulated-tdx boots: the app must need less"
        );
        assert_eq!(
            reason(OUT_OF_MEMORY.0, OUT_OF_MEMORY.1),
            "guest memory exhausted"
        );
    }

    #[test]
    fn every_firmware_termination_code_has_a_reason() {
        for code in 1..=20 {
            assert_ne!(reason(3, code), "unknown reason", "code {code}");
        }
        assert_eq!(reason(3, 21), "unknown reason");
    }

    #[test]
    fn a_stats_json_that_is_not_a_regular_file_is_refused_before_booting() {
        let dir = crate::files::tests::scratch("stats-json");
        let target = dir.join("stats.json");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink("stats.json", &link).unwrap();
        let args = RunArgs {
            // Never read: the output is refused first.
            image: dir.join("missing.igvm"),
            platform: platform::default_platform(),
            memory: None,
            cpus: 1,
            stats: false,
            stats_json: Some(link),
            strict_memory: false,
            publish: Vec::new(),
        };
        let err = format!("{:#}", run(&args, Instant::now()).unwrap_err());
        assert!(err.contains("--stats-json"), "{err}");
        assert!(err.contains("is a symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn endless_or_special_images_are_refused_unread() {
        // /dev/zero used to be read until memory ran out.
        let args = RunArgs {
            image: PathBuf::from("/dev/zero"),
            platform: platform::default_platform(),
            memory: None,
            cpus: 1,
            stats: false,
            stats_json: None,
            strict_memory: false,
            publish: Vec::new(),
        };
        let e = format!("{:#}", run(&args, Instant::now()).unwrap_err());
        assert!(
            e.contains("cannot read the image /dev/zero: it is a character device"),
            "{e}"
        );
        let measure = crate::cli::measure::MeasureArgs {
            image: PathBuf::from("/dev/zero"),
            platform: crate::cli::measure::MeasurePlatform::All,
            json: false,
            explain: false,
            cpus: 1,
            policy_out: None,
        };
        let e = format!("{:#}", crate::cli::measure::run(&measure).unwrap_err());
        assert!(e.contains("it is a character device"), "{e}");
        let dir = crate::files::tests::scratch("attest-input");
        let attest = crate::cli::attest::AttestArgs {
            image: PathBuf::from("/dev/zero"),
            platform: platform::default_platform(),
            nonce: "00".into(),
            output: dir.join("evidence.json"),
            memory: None,
            cpus: 1,
            json: false,
            snp_certs: None,
        };
        let e = format!("{:#}", crate::cli::attest::run(&attest).unwrap_err());
        assert!(e.contains("it is a character device"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn publish_of(args: &[&str]) -> Result<Vec<Publish>, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Run(a) => Ok(a.publish),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_is_repeatable_and_malformed_values_are_refused_in_words() {
        assert_eq!(publish_of(&["nacre", "run", "x.igvm"]), Ok(Vec::new()));
        let both = publish_of(&[
            "nacre",
            "run",
            "x.igvm",
            "--publish",
            "8080:80",
            "--publish=[::1]:9443:443",
        ])
        .unwrap();
        assert_eq!(
            both,
            vec![
                Publish {
                    host: "127.0.0.1:8080".parse().unwrap(),
                    guest_port: 80
                },
                Publish {
                    host: "[::1]:9443".parse().unwrap(),
                    guest_port: 443
                }
            ]
        );
        for bad in ["80", "8080:http", "host:1:2", "0:80"] {
            let e = publish_of(&["nacre", "run", "x.igvm", "--publish", bad]).unwrap_err();
            assert!(e.contains("--publish"), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
        // A guest port published twice is refused before the image is read.
        let args = RunArgs {
            image: PathBuf::from("/nonexistent.igvm"),
            platform: platform::default_platform(),
            memory: None,
            cpus: 1,
            stats: false,
            stats_json: None,
            strict_memory: false,
            publish: both
                .iter()
                .map(|p| Publish {
                    guest_port: 80,
                    ..*p
                })
                .collect(),
        };
        let e = run(&args, Instant::now()).unwrap_err();
        assert!(
            e.downcast_ref::<crate::cli::UsageError>().is_some(),
            "{e:#}"
        );
        assert_eq!(
            format!("{e:#}"),
            "--publish: guest port 80 is published more than once"
        );
        let help = PUBLISH_HELP;
        for part in [
            "docker run -p",
            "127.0.0.1",
            "[::1]:8080:80",
            "Repeatable",
            "policy",
        ] {
            assert!(help.contains(part), "{part}: {help}");
        }
    }

    #[test]
    fn cpus_help_says_what_it_does_and_the_default() {
        let help = CPUS_HELP;
        assert!(help.contains("default 1"), "{help}");
        assert!(help.contains("1 to 16"), "{help}");
        assert!(help.contains("never run on hardware"), "{help}");
        assert!(!help.contains("only 1"), "{help}");
    }
}
