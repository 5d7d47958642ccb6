//! What an SEV-SNP host needs for the `snp` platform, checked cheapest first (the
//! checks `snphost ok` makes that need no root, and what KVM must offer:
//! docs/kvm-uapi.md 3).

use super::certs;
use crate::platform::check::{
    capability, kvm_usable, parameter_on, read_line, skip_all, vm_type, Check, Checks, HostProbe,
    Need,
};
use crate::vmm::uapi::{
    cap, map_gpa_range, sev_attr, KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_X86_SNP_VM,
};

/// CPUID 0x8000_001F EAX: SEV (bit 1), SEV-ES (bit 3), SEV-SNP (bit 4) (AMD APM vol. 3,
/// E.4.17).
const SEV_BITS: [(u32, &str); 3] = [(1, "SEV"), (3, "SEV-ES"), (4, "SEV-SNP")];

/// The oldest SEV firmware API with SEV-SNP guests KVM supports (1.51).
const MIN_FIRMWARE: (u8, u8) = (1, 51);

/// The C-bit position the host reports: CPUID 0x8000_001F EBX bits 5:0, or `None` if the
/// CPU has no such leaf.
pub fn c_bit(host: &dyn HostProbe) -> Option<u8> {
    let max_ext = host.cpuid(0x8000_0000, 0)[0];
    (max_ext >= 0x8000_001F).then(|| (host.cpuid(0x8000_001F, 0)[1] & 0x3F) as u8)
}

/// The checks of the `snp` platform.
pub fn checks(host: &dyn HostProbe) -> Vec<Check> {
    let mut checks = Checks::new();
    let vendor = vendor(host);
    let amd = checks.run(
        "AMD CPU",
        if vendor == "AuthenticAMD" {
            Ok(format!("CPUID vendor {vendor}"))
        } else {
            Err(format!(
                "CPUID vendor {vendor:?}; SEV-SNP needs an AMD EPYC CPU"
            ))
        },
    );
    if amd {
        sev_cpuid(host, &mut checks);
    } else {
        skip_all(
            &mut checks,
            &[("SEV-SNP in CPUID", Need::Run), ("C-bit", Need::Info)],
            "not an AMD CPU",
        );
    }
    let param = host.paths().module_parameter("kvm_amd", "sev_snp");
    checks.run(
        "kvm_amd.sev_snp",
        match read_line(&param) {
            Ok(v) if parameter_on(&v) => Ok(format!("{} is {v}", param.display())),
            Ok(v) => Err(format!(
                "{} is {v}: KVM has SEV-SNP off (kvm_amd.sev_snp=1; SNP enabled in the BIOS \
                 and the firmware initialized)",
                param.display()
            )),
            Err(e) => Err(format!(
                "cannot read {}: {e} (kvm_amd not loaded, or a kernel before 6.11 without \
                 SEV-SNP host support)",
                param.display()
            )),
        },
    );
    kvm_checks(host, &mut checks);
    sev_device(host, &mut checks);
    let dir = certs::default_dir();
    checks.add(
        "SNP certificates",
        Need::Attest,
        match dir.as_deref().map(certs::vcek_in) {
            Some(Some(vcek)) => Ok(format!("VCEK at {}", vcek.display())),
            Some(None) => Err(format!(
                "no vcek.der or vcek.pem in {} (nacre attest --snp-certs DIR names another; \
                 the VCEK of this chip and TCB comes from AMD's key distribution service)",
                dir.as_deref()
                    .map_or_else(String::new, |d| d.display().to_string())
            )),
            None => Err("no certificate directory (set NACRE_SNP_CERTS or HOME)".into()),
        },
    );
    checks.into_vec()
}

fn vendor(host: &dyn HostProbe) -> String {
    let [_, b, c, d] = host.cpuid(0, 0);
    let bytes: Vec<u8> = [b, d, c].iter().flat_map(|w| w.to_le_bytes()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn sev_cpuid(host: &dyn HostProbe, checks: &mut Checks) {
    let Some(c_bit) = c_bit(host) else {
        checks.run("SEV-SNP in CPUID", Err("no CPUID leaf 0x8000_001F".into()));
        checks.skip("C-bit", Need::Info, "no CPUID leaf 0x8000_001F");
        return;
    };
    let eax = host.cpuid(0x8000_001F, 0)[0];
    let missing: Vec<&str> = SEV_BITS
        .iter()
        .filter(|(bit, _)| eax >> bit & 1 == 0)
        .map(|(_, name)| *name)
        .collect();
    let has_snp = checks.run(
        "SEV-SNP in CPUID",
        if missing.is_empty() {
            Ok(format!(
                "CPUID 0x8000_001F EAX {eax:#x}: SEV, SEV-ES, SEV-SNP"
            ))
        } else {
            Err(format!(
                "CPUID 0x8000_001F EAX {eax:#x} lacks {} (enabled in the BIOS?)",
                missing.join(", ")
            ))
        },
    );
    if has_snp {
        checks.add(
            "C-bit",
            Need::Info,
            Ok(format!(
                "bit {c_bit}, which the host puts in the guest's CPUID page (the firmware \
                 reads it there: one image serves every position)"
            )),
        );
    } else {
        checks.skip("C-bit", Need::Info, "the CPU reports no SEV-SNP");
    }
}

/// What KVM must offer an SNP VM.
fn kvm_checks(host: &dyn HostProbe, checks: &mut Checks) {
    let later: &[(&str, Need)] = &[
        ("VM type SEV-SNP", Need::Run),
        ("guest_memfd", Need::Run),
        ("memory attributes", Need::Run),
        ("KVM_SET_USER_MEMORY_REGION2", Need::Run),
        ("memory fault exits", Need::Run),
        ("KVM_HC_MAP_GPA_RANGE exits", Need::Run),
        ("split irqchip", Need::Run),
        ("VMSA features", Need::Run),
    ];
    let Some(kvm) = kvm_usable(host, checks) else {
        skip_all(checks, later, "KVM is not usable");
        return;
    };
    vm_type(&*kvm, checks, KVM_X86_SNP_VM, "SEV-SNP");
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
    checks.run(
        "VMSA features",
        match kvm.device_attr(sev_attr::GROUP, sev_attr::VMSA_FEATURES) {
            Ok(mask) => Ok(format!(
                "KVM_X86_SEV_VMSA_FEATURES {mask:#x} (nacre's images ask for none)"
            )),
            Err(e) => Err(format!(
                "KVM_GET_DEVICE_ATTR(KVM_X86_SEV_VMSA_FEATURES): {e}"
            )),
        },
    );
}

/// `/dev/sev` and the firmware's SNP status.
fn sev_device(host: &dyn HostProbe, checks: &mut Checks) {
    let path = host.paths().dev.join("sev");
    checks.run(
        "SEV firmware",
        match host.snp_platform_status() {
            Ok(s) if s.state != 1 => Err(format!(
                "SNP_PLATFORM_STATUS through {}: state {} (not initialized; the ccp driver \
                 initializes SNP when KVM's sev_snp is on)",
                path.display(),
                s.state
            )),
            Ok(s) if (s.api_major, s.api_minor) < MIN_FIRMWARE => Err(format!(
                "firmware API {}.{} (build {}); SEV-SNP guests need {}.{} or later",
                s.api_major, s.api_minor, s.build_id, MIN_FIRMWARE.0, MIN_FIRMWARE.1
            )),
            Ok(s) => Ok(format!(
                "{}: SNP initialized, firmware API {}.{} build {}, {} guests, TCB {:#018x}",
                path.display(),
                s.api_major,
                s.api_minor,
                s.build_id,
                s.guest_count,
                s.current_tcb_version
            )),
            Err((e, fw)) => Err(format!(
                "SNP_PLATFORM_STATUS through {} failed: {e}{}",
                path.display(),
                if fw != 0 {
                    format!(" (firmware status {fw:#x})")
                } else {
                    String::new()
                }
            )),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::check::testing::FakeHost;
    use crate::platform::check::{Outcome, Report};
    use crate::vmm::uapi::SevUserDataSnpStatus;

    fn outcome(checks: &[Check], name: &str) -> (Outcome, String) {
        let c = checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"));
        (c.outcome, c.detail.clone())
    }

    /// A host like the development machines: plain KVM, VM types 0x1, no guest_memfd.
    fn plain_kvm_host() -> FakeHost {
        let mut host = FakeHost::with_kvm(&[(cap::VM_TYPES, 0x1), (cap::USER_MEMORY2, 1)]);
        host.vendor(b"AuthenticAMD");
        host
    }

    /// An SEV-SNP host as KVM 6.11+ shows one.
    fn snp_host() -> FakeHost {
        let mut host = FakeHost::with_kvm(&[
            (cap::VM_TYPES, 0x1F),
            (cap::GUEST_MEMFD, 1),
            (cap::MEMORY_ATTRIBUTES, 8),
            (cap::USER_MEMORY2, 1),
            (cap::MEMORY_FAULT_INFO, 1),
            (cap::EXIT_HYPERCALL, 0x1000),
            (cap::SPLIT_IRQCHIP, 1),
        ]);
        host.vendor(b"AuthenticAMD");
        host.cpuid.insert((0x8000_001F, 0), [0x1_B, 0x33, 509, 1]);
        host.file("/sys/module/kvm_amd/parameters/sev_snp", "Y\n");
        host.file("/dev/sev", "");
        host.kvm
            .attrs
            .insert((sev_attr::GROUP, sev_attr::VMSA_FEATURES), 0x3E);
        host.snp_status = Some(SevUserDataSnpStatus {
            api_major: 1,
            api_minor: 55,
            state: 1,
            build_id: 29,
            ..Default::default()
        });
        host
    }

    #[test]
    fn a_plain_kvm_host_cannot_run_snp_and_says_why() {
        let host = plain_kvm_host();
        let list = checks(&host);
        let report = Report::new("snp", list.clone());
        assert!(!report.can_run);
        assert_eq!(outcome(&list, "KVM usable").0, Outcome::Pass);
        let (o, detail) = outcome(&list, "VM type SEV-SNP");
        assert_eq!(o, Outcome::Fail);
        assert!(detail.contains("KVM_CAP_VM_TYPES is 0x1"), "{detail}");
        let (o, detail) = outcome(&list, "guest_memfd");
        assert_eq!(o, Outcome::Fail);
        assert!(
            detail.contains("KVM_CAP_GUEST_MEMFD (234) is 0x0"),
            "{detail}"
        );
        let (o, detail) = outcome(&list, "kvm_amd.sev_snp");
        assert_eq!(o, Outcome::Fail);
        assert!(detail.contains("kvm_amd/parameters/sev_snp"), "{detail}");
        assert_eq!(outcome(&list, "SEV-SNP in CPUID").0, Outcome::Fail);
        assert_eq!(outcome(&list, "SEV firmware").0, Outcome::Fail);
    }

    #[test]
    fn a_complete_snp_host_passes_with_the_c_bit_reported() {
        let host = snp_host();
        let list = checks(&host);
        let report = Report::new("snp", list.clone());
        assert!(report.can_run, "{list:#?}");
        let (_, detail) = outcome(&list, "C-bit");
        assert!(detail.contains("bit 51"), "{detail}");
        let (_, detail) = outcome(&list, "SEV firmware");
        assert!(detail.contains("1.55"), "{detail}");
    }

    #[test]
    fn each_missing_kvm_feature_is_named() {
        for (cap, value, name) in [
            (cap::GUEST_MEMFD, 0, "guest_memfd"),
            (cap::MEMORY_ATTRIBUTES, 0, "memory attributes"),
            (cap::EXIT_HYPERCALL, 0, "KVM_HC_MAP_GPA_RANGE exits"),
            (cap::MEMORY_FAULT_INFO, 0, "memory fault exits"),
            (cap::SPLIT_IRQCHIP, 0, "split irqchip"),
        ] {
            let mut host = snp_host();
            host.kvm.caps.insert(cap, value);
            let list = checks(&host);
            assert_eq!(outcome(&list, name).0, Outcome::Fail, "{name}");
            assert!(!Report::new("snp", list).can_run);
        }
    }

    #[test]
    fn old_or_uninitialized_firmware_fails() {
        let mut host = snp_host();
        host.snp_status = Some(SevUserDataSnpStatus {
            api_major: 1,
            api_minor: 49,
            state: 1,
            ..Default::default()
        });
        let (o, detail) = outcome(&checks(&host), "SEV firmware");
        assert_eq!(o, Outcome::Fail);
        assert!(detail.contains("1.51"), "{detail}");
        host.snp_status = Some(SevUserDataSnpStatus {
            api_major: 1,
            api_minor: 55,
            state: 0,
            ..Default::default()
        });
        assert_eq!(outcome(&checks(&host), "SEV firmware").0, Outcome::Fail);
    }

    #[test]
    fn an_intel_host_skips_the_sev_cpuid_checks() {
        let mut host = snp_host();
        host.vendor(b"GenuineIntel");
        let list = checks(&host);
        assert_eq!(outcome(&list, "AMD CPU").0, Outcome::Fail);
        assert_eq!(outcome(&list, "SEV-SNP in CPUID").0, Outcome::Skip);
    }
}
