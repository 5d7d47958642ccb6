//! What a TDX host needs for the `tdx` platform, checked cheapest first: the kernel's
//! TDX host support, what KVM must offer a TD (docs/kvm-uapi.md 4), the TDX module's
//! capabilities, and for `nacre attest` the quote generation service.

use super::qgs::QgsAddress;
use crate::platform::check::{
    capability, kvm_usable, parameter_on, read_line, skip_all, vm_type, Check, Checks, HostProbe,
    Need,
};
use crate::vmm::uapi::{cap, map_gpa_range, KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_X86_TDX_VM};
use nacre_shared_abi::tdx::attributes;

/// The checks of the `tdx` platform.
pub fn checks(host: &dyn HostProbe) -> Vec<Check> {
    let mut checks = Checks::new();
    let [_, b, c, d] = host.cpuid(0, 0);
    let vendor: Vec<u8> = [b, d, c].iter().flat_map(|w| w.to_le_bytes()).collect();
    let vendor = String::from_utf8_lossy(&vendor).into_owned();
    checks.run(
        "Intel CPU",
        if vendor == "GenuineIntel" {
            Ok(format!("CPUID vendor {vendor}"))
        } else {
            Err(format!(
                "CPUID vendor {vendor:?}; TDX needs an Intel Xeon with TDX"
            ))
        },
    );
    let cpuinfo = host.paths().proc.join("cpuinfo");
    checks.run(
        "TDX host platform",
        match std::fs::read_to_string(&cpuinfo) {
            Ok(text) if text.split_whitespace().any(|w| w == "tdx_host_platform") => {
                Ok(format!("{} has tdx_host_platform", cpuinfo.display()))
            }
            Ok(_) => Err(format!(
                "{} has no tdx_host_platform flag: the kernel found no TDX module (TDX, TME-MK \
                 and SEAMRR enabled in the BIOS? a kernel with TDX host support?)",
                cpuinfo.display()
            )),
            Err(e) => Err(format!("cannot read {}: {e}", cpuinfo.display())),
        },
    );
    let param = host.paths().module_parameter("kvm_intel", "tdx");
    checks.run(
        "kvm_intel.tdx",
        match read_line(&param) {
            Ok(v) if parameter_on(&v) => Ok(format!("{} is {v}", param.display())),
            Ok(v) => Err(format!(
                "{} is {v}: KVM has TDX off (kvm_intel.tdx=1 on the kernel command line)",
                param.display()
            )),
            Err(e) => Err(format!(
                "cannot read {}: {e} (kvm_intel not loaded, or a kernel before 6.16 without \
                 TDX support in KVM)",
                param.display()
            )),
        },
    );
    kvm_checks(host, &mut checks);
    checks.add("quote generation service", Need::Attest, qgs(host));
    checks.into_vec()
}

/// What KVM must offer a TD, and the TDX module's capabilities.
fn kvm_checks(host: &dyn HostProbe, checks: &mut Checks) {
    let later: &[(&str, Need)] = &[
        ("VM type TDX", Need::Run),
        ("guest_memfd", Need::Run),
        ("memory attributes", Need::Run),
        ("KVM_SET_USER_MEMORY_REGION2", Need::Run),
        ("memory fault exits", Need::Run),
        ("KVM_HC_MAP_GPA_RANGE exits", Need::Run),
        ("split irqchip", Need::Run),
        ("TDX module", Need::Run),
    ];
    let Some(kvm) = kvm_usable(host, checks) else {
        skip_all(checks, later, "KVM is not usable");
        return;
    };
    let tdx_vms = vm_type(&*kvm, checks, KVM_X86_TDX_VM, "TDX");
    capability(&*kvm, checks, cap::GUEST_MEMFD, "guest_memfd", 0);
    capability(
        &*kvm,
        checks,
        cap::MEMORY_ATTRIBUTES,
        "memory attributes",
        KVM_MEMORY_ATTRIBUTE_PRIVATE as i64,
    );
    capability(
        &*kvm,
        checks,
        cap::USER_MEMORY2,
        "KVM_SET_USER_MEMORY_REGION2",
        0,
    );
    capability(
        &*kvm,
        checks,
        cap::MEMORY_FAULT_INFO,
        "memory fault exits",
        0,
    );
    capability(
        &*kvm,
        checks,
        cap::EXIT_HYPERCALL,
        "KVM_HC_MAP_GPA_RANGE exits",
        map_gpa_range::EXIT_HYPERCALL_BIT as i64,
    );
    capability(&*kvm, checks, cap::SPLIT_IRQCHIP, "split irqchip", 0);
    if !tdx_vms {
        checks.skip("TDX module", Need::Run, "KVM makes no TDX VMs");
        return;
    }
    checks.run(
        "TDX module",
        match kvm.tdx_capabilities() {
            Ok(caps) => {
                let head = caps.head();
                if head.supported_attrs & attributes::SEPT_VE_DISABLE == 0 {
                    Err(format!(
                        "KVM_TDX_CAPABILITIES: TD attributes {:#x} lack SEPT_VE_DISABLE, which \
                         nacre's TDs set",
                        head.supported_attrs
                    ))
                } else {
                    Ok(format!(
                        "KVM_TDX_CAPABILITIES: TD attributes {:#x}, XFAM {:#x}, {} configurable \
                         CPUID leaves",
                        head.supported_attrs,
                        head.supported_xfam,
                        caps.entries().len()
                    ))
                }
            }
            Err((e, status)) => Err(format!(
                "KVM_TDX_CAPABILITIES on a new TDX VM failed: {e}{}",
                if status != 0 {
                    format!(" (TDX module status {status:#x})")
                } else {
                    String::new()
                }
            )),
        },
    );
}

/// Whether the host's QGS accepts a connection.
fn qgs(host: &dyn HostProbe) -> Result<String, String> {
    let addr = QgsAddress::of_host(host.paths())?;
    let reached = match &addr {
        QgsAddress::Unix(path) => host.connect_unix(path),
        QgsAddress::Vsock { cid, port } => host.connect_vsock(*cid, *port),
    };
    match reached {
        Ok(()) => Ok(format!("{addr} accepts connections")),
        Err(e) => Err(format!("{addr}: {e} (is qgsd running?)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::check::testing::FakeHost;
    use crate::platform::check::{Outcome, Report};
    use crate::vmm::uapi::{CpuidEntry, KvmTdxCapabilities};
    use zerocopy::FromZeros;

    fn outcome(checks: &[Check], name: &str) -> (Outcome, String) {
        let c = checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"));
        (c.outcome, c.detail.clone())
    }

    fn tdx_host() -> FakeHost {
        let mut host = FakeHost::with_kvm(&[
            (cap::VM_TYPES, 0x21),
            (cap::GUEST_MEMFD, 1),
            (cap::MEMORY_ATTRIBUTES, 8),
            (cap::USER_MEMORY2, 1),
            (cap::MEMORY_FAULT_INFO, 1),
            (cap::EXIT_HYPERCALL, 0x1000),
            (cap::SPLIT_IRQCHIP, 1),
        ]);
        host.vendor(b"GenuineIntel");
        host.file("/proc/cpuinfo", "flags\t\t: fpu vme tdx_host_platform\n");
        host.file("/sys/module/kvm_intel/parameters/tdx", "Y\n");
        let caps = KvmTdxCapabilities {
            supported_attrs: attributes::SEPT_VE_DISABLE,
            supported_xfam: 0x6_02E7,
            ..KvmTdxCapabilities::new_zeroed()
        };
        let leaf = CpuidEntry {
            function: 0x8000_0008,
            eax: 0x00FF_0000,
            ..Default::default()
        };
        host.kvm.tdx = Some((caps, vec![leaf]));
        host
    }

    #[test]
    fn a_plain_kvm_host_cannot_run_tdx_and_says_why() {
        let mut host = FakeHost::with_kvm(&[(cap::VM_TYPES, 0x1)]);
        host.vendor(b"GenuineIntel");
        host.file("/proc/cpuinfo", "flags\t\t: fpu vme\n");
        let list = checks(&host);
        assert!(!Report::new("tdx", list.clone()).can_run);
        let (o, detail) = outcome(&list, "VM type TDX");
        assert_eq!(o, Outcome::Fail);
        assert!(detail.contains("0x1"), "{detail}");
        assert_eq!(outcome(&list, "TDX host platform").0, Outcome::Fail);
        assert_eq!(outcome(&list, "kvm_intel.tdx").0, Outcome::Fail);
        assert_eq!(outcome(&list, "TDX module").0, Outcome::Skip);
        assert_eq!(outcome(&list, "quote generation service").0, Outcome::Fail);
    }

    #[test]
    fn a_tdx_host_runs_and_attests_with_a_listening_qgs() {
        let mut host = tdx_host();
        let list = checks(&host);
        let report = Report::new("tdx", list.clone());
        assert!(report.can_run, "{list:#?}");
        let (_, detail) = outcome(&list, "TDX module");
        assert!(detail.contains("0x10000000"), "{detail}");
        if std::env::var_os("NACRE_QGS").is_some() {
            return;
        }
        assert!(!report.can_attest);
        host.file("/etc/qgs.conf", "port = 4050\n");
        host.vsock.push((2, 4050));
        let report = Report::new("tdx", checks(&host));
        assert!(report.can_attest, "{:#?}", report.checks);
    }

    #[test]
    fn a_module_without_sept_ve_disable_or_capabilities_fails() {
        let mut host = tdx_host();
        if let Some((caps, _)) = host.kvm.tdx.as_mut() {
            caps.supported_attrs = 0;
        }
        assert_eq!(outcome(&checks(&host), "TDX module").0, Outcome::Fail);
        host.kvm.tdx = None;
        let (o, detail) = outcome(&checks(&host), "TDX module");
        assert_eq!(o, Outcome::Fail);
        assert!(detail.contains("KVM_TDX_CAPABILITIES"), "{detail}");
    }
}
