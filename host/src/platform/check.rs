//! Whether this host can run a platform (`nacre host-check`): each platform's
//! registration names a function that lists its checks, cheapest first, each passed,
//! failed or skipped with the reason; this module gives them the host to look at and
//! the verdict.
//!
//! The host is a [`HostProbe`]: the files under its `/dev`, `/sys`, `/proc`, `/etc`
//! and `/run` ([`HostPaths`], parameters so that tests point them at a fake root),
//! CPUID, and the few read-only questions only an ioctl answers (KVM's capabilities,
//! the SEV firmware's status, the TDX module's capabilities). Nothing here changes the
//! host: the checks open devices, read files and create at most a throw-away VM.

use crate::vmm::uapi::{cap, KvmTdxCapabilities, SevUserDataSnpStatus, WithCpuid};
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

/// What a check decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The host has it.
    Pass,
    /// The host lacks it.
    Fail,
    /// Not looked at, because a check it depends on failed.
    Skip,
}

/// What needs a check to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// `nacre run` (and so everything).
    Run,
    /// `nacre attest` only.
    Attest,
    /// Nothing: the check reports something worth knowing.
    Info,
}

/// One check: what was looked at, what was found, and what needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is checked, e.g. "KVM usable".
    pub name: String,
    /// The outcome.
    #[serde(rename = "result")]
    pub outcome: Outcome,
    /// What needs it to pass.
    pub needed_for: Need,
    /// What was found, or why it was skipped.
    pub detail: String,
}

/// The checks of one platform, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    list: Vec<Check>,
}

impl Checks {
    /// No checks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record the check `name` needed for `need`: passed with `Ok(detail)`, failed
    /// with `Err(detail)`. Returns whether it passed.
    pub fn add(&mut self, name: &str, need: Need, result: Result<String, String>) -> bool {
        let (outcome, detail) = match result {
            Ok(detail) => (Outcome::Pass, detail),
            Err(detail) => (Outcome::Fail, detail),
        };
        self.list.push(Check {
            name: name.into(),
            outcome,
            needed_for: need,
            detail,
        });
        outcome == Outcome::Pass
    }

    /// A check needed to run.
    pub fn run(&mut self, name: &str, result: Result<String, String>) -> bool {
        self.add(name, Need::Run, result)
    }

    /// Record that `name` was not looked at, and why.
    pub fn skip(&mut self, name: &str, need: Need, why: &str) {
        self.list.push(Check {
            name: name.into(),
            outcome: Outcome::Skip,
            needed_for: need,
            detail: format!("skipped: {why}"),
        });
    }

    /// The checks.
    pub fn into_vec(self) -> Vec<Check> {
        self.list
    }
}

/// The verdict on one platform.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The platform's name.
    pub platform: &'static str,
    /// Every check needed to run passed.
    pub can_run: bool,
    /// And every check needed to attest.
    pub can_attest: bool,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// The verdict of `checks` on `platform`: a check that was skipped counts as not
    /// passed, since nothing shows the host has what it checks.
    pub fn new(platform: &'static str, checks: Vec<Check>) -> Self {
        let passed = |need: Need| {
            checks
                .iter()
                .filter(|c| c.needed_for == need)
                .all(|c| c.outcome == Outcome::Pass)
        };
        let can_run = passed(Need::Run);
        let can_attest = can_run && passed(Need::Attest);
        Self {
            platform,
            can_run,
            can_attest,
            checks,
        }
    }

    /// The first check that keeps the platform from running: `"name: detail"`.
    pub fn first_failure(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| c.needed_for == Need::Run && c.outcome != Outcome::Pass)
            .map(|c| format!("{}: {}", c.name, c.detail))
    }
}

/// Where the host keeps what the checks read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// `/dev`.
    pub dev: PathBuf,
    /// `/sys`.
    pub sys: PathBuf,
    /// `/proc`.
    pub proc: PathBuf,
    /// `/etc`.
    pub etc: PathBuf,
    /// `/run` (also reached as `/var/run`).
    pub run: PathBuf,
}

impl HostPaths {
    /// The running system's.
    pub fn system() -> Self {
        Self::under(Path::new("/"))
    }

    /// Those of a system whose root is `root` (a fake one in tests).
    pub fn under(root: &Path) -> Self {
        Self {
            dev: root.join("dev"),
            sys: root.join("sys"),
            proc: root.join("proc"),
            etc: root.join("etc"),
            run: root.join("run"),
        }
    }

    /// `/sys/module/MODULE/parameters/NAME`.
    pub fn module_parameter(&self, module: &str, name: &str) -> PathBuf {
        self.sys
            .join("module")
            .join(module)
            .join("parameters")
            .join(name)
    }
}

/// What the checks ask of a host besides its files.
pub trait HostProbe {
    /// Its paths.
    fn paths(&self) -> &HostPaths;
    /// CPUID `leaf`.`subleaf`: EAX, EBX, ECX, EDX.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// `/dev/kvm` opened read-write.
    fn kvm(&self) -> io::Result<Box<dyn KvmProbe + '_>>;
    /// `SNP_PLATFORM_STATUS` through `/dev/sev` opened read-write: the status, or the
    /// OS error and the firmware's status.
    fn snp_platform_status(&self) -> Result<SevUserDataSnpStatus, (io::Error, u32)>;
    /// Whether something accepts connections on the unix socket at `path`.
    fn connect_unix(&self, path: &Path) -> io::Result<()>;
    /// Whether something accepts connections at vsock address `cid`:`port`.
    fn connect_vsock(&self, cid: u32, port: u32) -> io::Result<()>;
}

/// What the checks ask of KVM.
pub trait KvmProbe {
    /// `KVM_GET_API_VERSION`.
    fn api_version(&self) -> i32;
    /// `KVM_CHECK_EXTENSION(cap)` on `/dev/kvm`: 0 when unsupported.
    fn check_extension(&self, cap: u32) -> i64;
    /// `KVM_GET_DEVICE_ATTR` of a system attribute.
    fn device_attr(&self, group: u32, attr: u64) -> io::Result<u64>;
    /// `KVM_TDX_CAPABILITIES` of a throw-away TDX VM: the OS error and the TDX
    /// module's status on failure.
    fn tdx_capabilities(&self) -> Result<WithCpuid<KvmTdxCapabilities>, (io::Error, u64)>;
}

/// The KVM API version every KVM since Linux 2.6.22 reports (`KVM_API_VERSION`).
pub const KVM_API_VERSION: i32 = 12;

/// The first text line of `path`, trimmed.
pub fn read_line(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Whether a boolean module parameter reads as on (`Y` or `1`).
pub fn parameter_on(value: &str) -> bool {
    matches!(value, "Y" | "y" | "1")
}

/// The check "KVM usable": `/dev/kvm` opens read-write and speaks API version 12.
pub fn kvm_usable<'h>(
    host: &'h dyn HostProbe,
    checks: &mut Checks,
) -> Option<Box<dyn KvmProbe + 'h>> {
    let path = host.paths().dev.join("kvm");
    match host.kvm() {
        Ok(kvm) if kvm.api_version() == KVM_API_VERSION => {
            checks.run(
                "KVM usable",
                Ok(format!("{}, API version {KVM_API_VERSION}", path.display())),
            );
            Some(kvm)
        }
        Ok(kvm) => {
            checks.run(
                "KVM usable",
                Err(format!(
                    "{} speaks API version {}, not {KVM_API_VERSION}",
                    path.display(),
                    kvm.api_version()
                )),
            );
            None
        }
        Err(e) => {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => " (is KVM enabled and its module loaded?)",
                io::ErrorKind::PermissionDenied => " (is this user in the kvm group?)",
                _ => "",
            };
            checks.run(
                "KVM usable",
                Err(format!(
                    "cannot open {} read-write: {e}{hint}",
                    path.display()
                )),
            );
            None
        }
    }
}

/// The check that KVM creates VMs of type `vm_type` (`KVM_CAP_VM_TYPES`; a kernel
/// without the capability creates only the default type, 0).
pub fn vm_type(kvm: &dyn KvmProbe, checks: &mut Checks, vm_type: u32, name: &str) -> bool {
    let types = kvm.check_extension(cap::VM_TYPES);
    let ok = if types == 0 {
        vm_type == 0
    } else {
        types >> vm_type & 1 == 1
    };
    let detail =
        format!("KVM_CAP_VM_TYPES is {types:#x}; {name} VMs are type {vm_type} (bit {vm_type})");
    checks.run(
        &format!("VM type {name}"),
        if ok { Ok(detail) } else { Err(detail) },
    )
}

/// The check that capability `cap` is supported, with `want` the bits it must have
/// (0: any non-zero value).
pub fn capability(
    kvm: &dyn KvmProbe,
    checks: &mut Checks,
    cap: u32,
    name: &str,
    want: i64,
) -> bool {
    let value = kvm.check_extension(cap);
    let ok = if want == 0 {
        value != 0
    } else {
        value & want == want
    };
    let cap_name = cap::name(cap);
    let detail = if want == 0 {
        format!("{cap_name} ({cap}) is {value:#x}")
    } else {
        format!("{cap_name} ({cap}) is {value:#x}; nacre needs bits {want:#x}")
    };
    checks.run(name, if ok { Ok(detail) } else { Err(detail) })
}

/// The list of checks a platform's registration names.
pub type CheckFn = fn(&dyn HostProbe) -> Vec<Check>;

/// A hardware launch's first step: `checks` on `host`, and the first that keeps
/// `platform` from running as the launch's error.
pub fn preflight(
    platform: &'static str,
    checks: CheckFn,
    host: &dyn HostProbe,
) -> Result<(), crate::platform::launch::SetupError> {
    let report = Report::new(platform, checks(host));
    match report.first_failure() {
        None => Ok(()),
        Some(reason) => Err(crate::platform::launch::SetupError::HostNotReady { platform, reason }),
    }
}

/// Skip every check of `names` because `why`.
pub fn skip_all(checks: &mut Checks, names: &[(&str, Need)], why: &str) {
    for (name, need) in names {
        checks.skip(name, *need, why);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake host: files under a temporary root, and CPUID, KVM and the SEV firmware
    //! answering what the test says.

    use super::*;
    use std::collections::HashMap;

    /// KVM's answers.
    #[derive(Debug, Clone, Default)]
    pub struct FakeKvm {
        pub api_version: i32,
        pub caps: HashMap<u32, i64>,
        pub attrs: HashMap<(u32, u64), u64>,
        pub tdx: Option<(KvmTdxCapabilities, Vec<crate::vmm::uapi::CpuidEntry>)>,
    }

    impl KvmProbe for FakeKvm {
        fn api_version(&self) -> i32 {
            self.api_version
        }
        fn check_extension(&self, cap: u32) -> i64 {
            self.caps.get(&cap).copied().unwrap_or(0)
        }
        fn device_attr(&self, group: u32, attr: u64) -> io::Result<u64> {
            self.attrs
                .get(&(group, attr))
                .copied()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENXIO))
        }
        fn tdx_capabilities(&self) -> Result<WithCpuid<KvmTdxCapabilities>, (io::Error, u64)> {
            match &self.tdx {
                Some((head, entries)) => Ok(WithCpuid::with_entries(head, entries)),
                None => Err((io::Error::from_raw_os_error(libc::EINVAL), 0)),
            }
        }
    }

    /// A host whose root is a temporary directory.
    pub struct FakeHost {
        pub root: tempfile::TempDir,
        pub paths: HostPaths,
        pub cpuid: HashMap<(u32, u32), [u32; 4]>,
        pub kvm: FakeKvm,
        pub snp_status: Option<SevUserDataSnpStatus>,
        pub listening: Vec<PathBuf>,
        pub vsock: Vec<(u32, u32)>,
    }

    impl FakeHost {
        /// An empty root: no devices, no modules.
        pub fn new() -> Self {
            let root = tempfile::tempdir().expect("a temporary root");
            let paths = HostPaths::under(root.path());
            Self {
                root,
                paths,
                cpuid: HashMap::new(),
                kvm: FakeKvm::default(),
                snp_status: None,
                listening: Vec::new(),
                vsock: Vec::new(),
            }
        }

        /// Write `text` at `path` under the root.
        pub fn file(&self, path: &str, text: &str) {
            let at = self.root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(at.parent().expect("a parent")).expect("mkdir");
            std::fs::write(at, text).expect("write");
        }

        /// A host with `/dev/kvm` (API 12) and KVM's `caps`.
        pub fn with_kvm(caps: &[(u32, i64)]) -> Self {
            let mut host = Self::new();
            host.file("/dev/kvm", "");
            host.kvm.api_version = KVM_API_VERSION;
            host.kvm.caps = caps.iter().copied().collect();
            host
        }

        /// CPUID vendor string `vendor` (12 bytes) and maximum extended leaf.
        pub fn vendor(&mut self, vendor: &[u8; 12]) {
            let w = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
            self.cpuid.insert((0, 0), [0x20, w(0), w(8), w(4)]);
            self.cpuid.insert((0x8000_0000, 0), [0x8000_0021, 0, 0, 0]);
        }
    }

    impl HostProbe for FakeHost {
        fn paths(&self) -> &HostPaths {
            &self.paths
        }
        fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
            self.cpuid.get(&(leaf, subleaf)).copied().unwrap_or([0; 4])
        }
        fn kvm(&self) -> io::Result<Box<dyn KvmProbe + '_>> {
            std::fs::metadata(self.paths.dev.join("kvm"))?;
            Ok(Box::new(self.kvm.clone()))
        }
        fn snp_platform_status(&self) -> Result<SevUserDataSnpStatus, (io::Error, u32)> {
            std::fs::metadata(self.paths.dev.join("sev")).map_err(|e| (e, 0))?;
            self.snp_status
                .ok_or_else(|| (io::Error::from_raw_os_error(libc::EINVAL), 0))
        }
        fn connect_unix(&self, path: &Path) -> io::Result<()> {
            if self.listening.iter().any(|p| p == path) {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::ENOENT))
            }
        }
        fn connect_vsock(&self, cid: u32, port: u32) -> io::Result<()> {
            if self.vsock.contains(&(cid, port)) {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeHost;
    use super::*;

    #[test]
    fn kvm_that_cannot_be_opened_fails_with_the_path_and_a_hint() {
        let host = FakeHost::new();
        let mut checks = Checks::new();
        assert!(kvm_usable(&host, &mut checks).is_none());
        let list = checks.into_vec();
        assert_eq!(list[0].outcome, Outcome::Fail);
        assert!(list[0].detail.contains("dev/kvm"), "{}", list[0].detail);
        assert!(
            list[0].detail.contains("module loaded"),
            "{}",
            list[0].detail
        );
    }

    #[test]
    fn vm_types_follow_the_capability_mask() {
        let host = FakeHost::with_kvm(&[(cap::VM_TYPES, 0x1)]);
        let kvm = host.kvm().unwrap();
        let mut checks = Checks::new();
        assert!(vm_type(&*kvm, &mut checks, 0, "default"));
        assert!(!vm_type(&*kvm, &mut checks, 4, "SEV-SNP"));
        let list = checks.into_vec();
        assert!(list[1].detail.contains("is 0x1"), "{}", list[1].detail);
        // A kernel without KVM_CAP_VM_TYPES makes default VMs only.
        let old = FakeHost::with_kvm(&[]);
        let kvm = old.kvm().unwrap();
        let mut checks = Checks::new();
        assert!(vm_type(&*kvm, &mut checks, 0, "default"));
        assert!(!vm_type(&*kvm, &mut checks, 5, "TDX"));
    }

    #[test]
    fn a_skipped_check_keeps_the_platform_from_running_but_info_does_not() {
        let mut checks = Checks::new();
        checks.run("a", Ok("fine".into()));
        checks.add("b", Need::Info, Err("odd".into()));
        checks.add("c", Need::Attest, Err("no service".into()));
        let report = Report::new("p", checks.clone().into_vec());
        assert!(report.can_run && !report.can_attest);
        checks.skip("d", Need::Run, "KVM is not usable");
        let report = Report::new("p", checks.into_vec());
        assert!(!report.can_run);
        assert_eq!(
            report.first_failure().as_deref(),
            Some("d: skipped: KVM is not usable")
        );
    }

    #[test]
    fn capabilities_need_their_bits() {
        let host = FakeHost::with_kvm(&[(cap::EXIT_HYPERCALL, 0x1000), (cap::GUEST_MEMFD, 0)]);
        let kvm = host.kvm().unwrap();
        let mut checks = Checks::new();
        assert!(capability(
            &*kvm,
            &mut checks,
            cap::EXIT_HYPERCALL,
            "x",
            1 << 12
        ));
        assert!(!capability(
            &*kvm,
            &mut checks,
            cap::GUEST_MEMFD,
            "guest_memfd",
            0
        ));
        assert!(!capability(
            &*kvm,
            &mut checks,
            cap::EXIT_HYPERCALL,
            "y",
            1 << 13
        ));
    }

    #[test]
    fn module_parameters_read_as_booleans() {
        let host = FakeHost::new();
        host.file("/sys/module/kvm_amd/parameters/sev_snp", "Y\n");
        let path = host.paths.module_parameter("kvm_amd", "sev_snp");
        assert!(parameter_on(&read_line(&path).unwrap()));
        assert!(!parameter_on("N"));
    }
}
