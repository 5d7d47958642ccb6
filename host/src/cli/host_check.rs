//! `nacre host-check`: whether this host can run each platform, check by check, with
//! what each found (modelled on `snphost ok`). Read-only; the basic checks need no
//! root.

use super::run::platform_arg;
use crate::platform::check::{HostPaths, HostProbe, Need, Outcome, Report};
use crate::platform::hardware::probe::SystemProbe;
use crate::platform::{self, Registration};

/// Exit status when the platform asked for (or, without `--platform`, every platform)
/// cannot run here.
pub const EXIT_CANNOT_RUN: u8 = 1;

/// Arguments of `nacre host-check`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  nacre host-check                       # every platform
  nacre host-check --platform snp        # exit 0 only if SEV-SNP guests can run here
  nacre host-check --platform tdx --json

Each check passes, fails or is skipped (a check it depends on failed), with what it
found. A platform can run when every check it needs to run passes; `nacre attest` also
needs the checks marked (attest). Checks marked (info) decide nothing. The checks only
read: files under /dev, /sys, /proc, /etc and /run, CPUID, and read-only ioctls of
/dev/kvm and /dev/sev (the TDX module's capabilities come from a throw-away VM).

Exit status: 0 when the platform asked for can run (without --platform: when one of
them can), 1 when it cannot, 125 on an error of nacre's own, 2 when the command line is
wrong.")]
pub struct HostCheckArgs {
    /// Check this platform only.
    #[arg(long, value_parser = platform_arg())]
    pub platform: Option<&'static Registration>,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The reports of the platforms `only` names (every one when `None`) on `host`.
pub fn reports(host: &dyn HostProbe, only: Option<&Registration>) -> Vec<Report> {
    platform::PLATFORMS
        .iter()
        .filter(|p| only.is_none_or(|o| o.name == p.name))
        .map(|p| Report::new(p.name, (p.check)(host)))
        .collect()
}

/// The reports as text.
pub fn render(reports: &[Report]) -> String {
    let mut out = String::new();
    let width = reports
        .iter()
        .flat_map(|r| r.checks.iter())
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for r in reports {
        let verdict = match (r.can_run, r.can_attest) {
            (true, true) => "can run and attest".to_string(),
            (true, false) => "can run, cannot attest".to_string(),
            (false, _) => format!("cannot run: {}", r.first_failure().unwrap_or_default()),
        };
        out += &format!("{}: {verdict}\n", r.platform);
        for c in &r.checks {
            let result = match c.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "skip",
            };
            let need = match c.needed_for {
                Need::Run => "",
                Need::Attest => " (attest)",
                Need::Info => " (info)",
            };
            let name = format!("{}{need}", c.name);
            out += &format!("  {result}  {name:<w$}  {}\n", c.detail, w = width + 9);
        }
    }
    out
}

/// The reports as JSON.
pub fn to_json(reports: &[Report]) -> serde_json::Value {
    serde_json::json!({ "platforms": reports })
}

/// The exit status for `reports`: 0 when one of them can run.
pub fn exit_status(reports: &[Report]) -> u8 {
    if reports.iter().any(|r| r.can_run) {
        0
    } else {
        EXIT_CANNOT_RUN
    }
}

/// Check this host; returns the exit status.
pub fn run(a: &HostCheckArgs) -> anyhow::Result<u8> {
    let probe = SystemProbe::new(HostPaths::system());
    let reports = reports(&probe, a.platform);
    let text = if a.json {
        serde_json::to_string_pretty(&to_json(&reports))? + "\n"
    } else {
        render(&reports)
    };
    super::write_stdout(&text)?;
    Ok(exit_status(&reports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::check::testing::FakeHost;
    use crate::vmm::uapi::cap;

    /// A host like the development machines: KVM with default VMs only, MSR exits,
    /// no guest_memfd, an Intel CPU without TDX.
    fn plain_kvm() -> FakeHost {
        let mut host = FakeHost::with_kvm(&[
            (cap::VM_TYPES, 0x1),
            (cap::X86_USER_SPACE_MSR, 0b111),
            (cap::X86_MSR_FILTER, 1),
            (cap::USER_MEMORY2, 1),
            (cap::MEMORY_FAULT_INFO, 1),
            (cap::EXIT_HYPERCALL, 0x1000),
        ]);
        host.vendor(b"GenuineIntel");
        host.file("/proc/cpuinfo", "flags\t\t: fpu vme vmx\n");
        host
    }

    #[test]
    fn on_plain_kvm_the_emulated_platforms_pass_and_the_hardware_ones_say_why_not() {
        let host = plain_kvm();
        let reports = reports(&host, None);
        let names: Vec<_> = reports.iter().map(|r| r.platform).collect();
        assert_eq!(names, ["emulated-snp", "emulated-tdx", "snp", "tdx"]);
        let by = |n: &str| reports.iter().find(|r| r.platform == n).unwrap();
        assert!(by("emulated-snp").can_run && by("emulated-tdx").can_run);
        assert!(!by("snp").can_run && !by("tdx").can_run);
        let text = render(&reports);
        assert!(text.contains("snp: cannot run: "), "{text}");
        assert!(text.contains("KVM_CAP_VM_TYPES is 0x1"), "{text}");
        assert_eq!(exit_status(&reports), 0);
        let only = super::reports(&host, platform::by_name("tdx"));
        assert_eq!(only.len(), 1);
        assert_eq!(exit_status(&only), EXIT_CANNOT_RUN);
    }

    #[test]
    fn without_kvm_nothing_runs() {
        let host = FakeHost::new();
        let reports = reports(&host, None);
        assert!(reports.iter().all(|r| !r.can_run));
        assert_eq!(exit_status(&reports), EXIT_CANNOT_RUN);
    }

    #[test]
    fn json_lists_every_check_with_its_result() {
        let host = plain_kvm();
        let json = to_json(&reports(&host, platform::by_name("snp")));
        let p = &json["platforms"][0];
        assert_eq!(p["platform"], "snp");
        assert_eq!(p["can_run"], false);
        let checks = p["checks"].as_array().unwrap();
        let vm_type = checks
            .iter()
            .find(|c| c["name"] == "VM type SEV-SNP")
            .unwrap();
        assert_eq!(vm_type["result"], "fail");
        assert_eq!(vm_type["needed_for"], "run");
        assert!(checks.iter().any(|c| c["result"] == "skip"));
    }
}
