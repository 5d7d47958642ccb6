//! The local APIC registers a confidential guest reaches through its hypervisor: on
//! SEV-SNP an MSR NAE event through the GHCB, on TDX TDVMCALL<Instruction.RDMSR/WRMSR>
//! (docs/specs.md 1.3 and 6.2). KVM's in-kernel local APIC answers them: the emulated
//! platforms pass each to the exiting vCPU's KVM MSRs, as KVM does in the kernel for
//! a guest on hardware (`arch/x86/kvm/svm/sev.c`, `sev_handle_vmgexit` with
//! `SVM_EXIT_MSR`; `arch/x86/kvm/vmx/tdx.c`, `tdx_complete_emulated_msr`).
//! Every other MSR is refused: the emulated platforms emulate no MSR for a guest but
//! these.

use super::RunError;
use crate::vmm::vcpu::Vcpu;

/// IA32_APIC_BASE (Intel SDM vol. 4, table 2-2).
pub const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE (Intel SDM vol. 4, table 2-2).
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// The x2APIC registers, MSRs 0x800 to 0x8FF (Intel SDM vol. 3A, 11.12.1).
pub const X2APIC_MSRS: std::ops::RangeInclusive<u32> = 0x800..=0x8FF;

/// Which local APIC registers a guest of a platform may reach through its hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// SEV-SNP: every one (the hypervisor intercepts them all).
    Snp,
    /// TDX: all but those the CPU virtualizes (TPR, PPR, EOI, ISR, TMR, IRR), which the
    /// VMM cannot emulate, and IA32_APIC_BASE is read-only (`arch/x86/kvm/vmx/tdx.c`,
    /// `tdx_has_emulated_msr`, `tdx_is_read_only_msr`).
    Tdx,
}

/// Whether a guest of `reach` may read (`write` = false) or write MSR `msr` through
/// its hypervisor.
pub fn allowed(reach: Reach, msr: u32, write: bool) -> bool {
    let apic = msr == IA32_APIC_BASE || msr == IA32_TSC_DEADLINE || X2APIC_MSRS.contains(&msr);
    match reach {
        Reach::Snp => apic,
        Reach::Tdx => {
            let cpu_virtualized = matches!(msr, 0x808 | 0x80A | 0x80B | 0x810..=0x827);
            apic && !cpu_virtualized && !(write && msr == IA32_APIC_BASE)
        }
    }
}

/// The guest's RDMSR (`write` = `None`) or WRMSR of `msr` through its hypervisor, done
/// on `vcpu`'s local APIC in KVM: `Some(value)` (0 for a write), or `None` when the
/// register is not one the guest may reach that way or KVM refuses the access (the
/// guest then gets the platform's error answer, as a #GP on hardware).
pub fn access(
    reach: Reach,
    vcpu: &mut dyn Vcpu,
    msr: u32,
    write: Option<u64>,
) -> Result<Option<u64>, RunError> {
    if !allowed(reach, msr, write.is_some()) {
        return Ok(None);
    }
    vcpu.msr(msr, write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exits::testing::FakeVcpu;

    #[test]
    fn the_local_apic_is_all_a_guest_reaches() {
        for reach in [Reach::Snp, Reach::Tdx] {
            assert!(allowed(reach, 0x830, true), "ICR");
            assert!(allowed(reach, IA32_TSC_DEADLINE, true));
            assert!(allowed(reach, 0x832, false), "LVT timer");
            assert!(!allowed(reach, 0xC000_0080, false), "EFER");
            assert!(!allowed(reach, 0x7FF, true));
            assert!(!allowed(reach, 0x900, true));
        }
        assert!(
            allowed(Reach::Snp, 0x80B, true),
            "EOI is intercepted on SNP"
        );
        assert!(
            !allowed(Reach::Tdx, 0x80B, true),
            "the CPU virtualizes EOI for a TD"
        );
        assert!(!allowed(Reach::Tdx, 0x820, false), "IRR");
        assert!(allowed(Reach::Tdx, IA32_APIC_BASE, false));
        assert!(
            !allowed(Reach::Tdx, IA32_APIC_BASE, true),
            "read-only for a TD"
        );
        assert!(allowed(Reach::Snp, IA32_APIC_BASE, true));
    }

    #[test]
    fn an_access_reaches_kvm_only_when_allowed_and_reports_refusals() {
        let mut vcpu = FakeVcpu::identity();
        vcpu.refused_msrs.push(0x83F);
        assert_eq!(
            access(Reach::Snp, &mut vcpu, 0x830, Some(0x21)).unwrap(),
            Some(0)
        );
        assert_eq!(vcpu.msrs.get(&0x830), Some(&0x21));
        assert_eq!(
            access(Reach::Snp, &mut vcpu, 0x830, None).unwrap(),
            Some(0x21)
        );
        assert_eq!(access(Reach::Snp, &mut vcpu, 0x83F, Some(1)).unwrap(), None);
        assert_eq!(access(Reach::Tdx, &mut vcpu, 0x80B, Some(0)).unwrap(), None);
        assert_eq!(vcpu.msrs.get(&0x80B), None, "never reached KVM");
        assert_eq!(access(Reach::Snp, &mut vcpu, 0x10, None).unwrap(), None);
    }
}
