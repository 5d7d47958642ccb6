//! The hypervisor's side of SEV-SNP for the `emulated-snp` platform: what KVM and the
//! CPU do when the guest executes PVALIDATE, RMPADJUST or VMGEXIT (through the
//! doorbells), one module per GHCB exit code or protocol (AMD GHCB specification
//! 56421; KVM `arch/x86/kvm/svm/sev.c`).
//!
//! Handlers work on an [`SnpContext`]: one guest's memory and MMU, its GHCB state and
//! counters, and the services behind the narrow interfaces (the hostcalls, the
//! security processor).

pub mod guest_request;
pub mod ioio;
pub mod msr_protocol;
pub mod psc;
pub mod pvalidate;
pub mod vmgexit;

use super::RunError;
use crate::mmu::snp::SnpMmu;
use crate::platform::hostcall::HostcallHost;
use crate::platform::hostile::Lies;
use crate::platform::Stop;
use crate::stats::{Counters, RunCounters};
use crate::vmm::memory::GuestMemory;
use crate::vmm::vcpu::Vcpu;
use guest_request::SecurityProcessor;
use nacre_shared_abi::doorbell::Doorbell;
use nacre_shared_abi::snp::{
    MSR_GHCB, MSR_SEV_STATUS, SEV_STATUS_SEV, SEV_STATUS_SEV_ES, SEV_STATUS_SEV_SNP,
};

/// The value the emulated SEV_STATUS MSR reads: SEV, SEV-ES and SEV-SNP active (AMD
/// APM vol. 2, 15.34.10, MSR C001_0131h).
pub const SEV_STATUS: u64 = SEV_STATUS_SEV | SEV_STATUS_SEV_ES | SEV_STATUS_SEV_SNP;

/// A vCPU's GHCB as the hypervisor tracks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GhcbState {
    /// The GHCB MSR (0xC001_0130) as the guest sees it.
    pub msr: u64,
    /// The GPA the guest registered through the MSR protocol.
    pub gpa: Option<u64>,
}

/// SNP protocol counters (`psc.*`, `pvalidate.*`, `attest.requests`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnpCounters {
    /// GHCB page-state-change calls (NAE) and MSR-protocol PSC requests.
    pub psc_calls: u64,
    /// 4 KiB PSC entries completed.
    pub psc_entries_4k: u64,
    /// 2 MiB PSC entries completed.
    pub psc_entries_2m: u64,
    /// PVALIDATEs at 4 KiB.
    pub pvalidate_4k: u64,
    /// PVALIDATEs at 2 MiB.
    pub pvalidate_2m: u64,
    /// PVALIDATEs answered FAIL_SIZEMISMATCH.
    pub pvalidate_size_mismatch: u64,
    /// SNP guest requests (attestation reports) served.
    pub guest_requests: u64,
}

impl Counters for SnpCounters {
    fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("psc.calls", self.psc_calls),
            ("psc.entries_4k", self.psc_entries_4k),
            ("psc.entries_2m", self.psc_entries_2m),
            ("pvalidate.4k", self.pvalidate_4k),
            ("pvalidate.2m", self.pvalidate_2m),
            ("pvalidate.size_mismatch", self.pvalidate_size_mismatch),
            ("attest.requests", self.guest_requests),
        ]
    }
}

/// What the SNP exit handlers work on.
#[derive(Debug)]
pub struct SnpContext<'a> {
    /// Guest RAM.
    pub mem: &'a GuestMemory,
    /// The host MMU (attributes, TDP, RMP).
    pub mmu: &'a SnpMmu,
    /// The exiting vCPU's GHCB.
    pub ghcb: &'a mut GhcbState,
    /// SNP counters.
    pub counters: &'a mut SnpCounters,
    /// Exits, hostcalls.
    pub run: &'a mut RunCounters,
    /// The console and clocks of the hostcalls.
    pub host: &'a mut HostcallHost,
    /// The security processor guest requests go to, if the platform has one.
    pub sp: Option<&'a mut dyn SecurityProcessor>,
    /// Test hook: finish at most this many PSC entries per call.
    pub psc_budget: Option<usize>,
    /// `--strict-memory`.
    pub strict_memory: bool,
    /// The C-bit position (CPUID 0x8000_001F EBX bits 5:0).
    pub c_bit: u8,
    /// The lie a hostile-host test asked for, if any.
    pub lies: &'a mut Lies,
}

impl SnpContext<'_> {
    /// The C-bit as a GPA mask.
    pub fn c_bit_mask(&self) -> u64 {
        1 << self.c_bit
    }
}

/// A doorbell on the SNP platform: PVALIDATE, RMPADJUST or VMGEXIT.
pub fn doorbell(
    ctx: &mut SnpContext<'_>,
    vcpu: &mut dyn Vcpu,
    bell: Doorbell,
) -> Result<Option<Stop>, RunError> {
    match bell {
        Doorbell::Vmgexit => {
            ctx.run.exit("vmgexit");
            vmgexit::handle(ctx, vcpu)
        }
        Doorbell::Pvalidate => {
            ctx.run.exit("pvalidate");
            pvalidate::pvalidate_exit(ctx, vcpu)
        }
        Doorbell::Rmpadjust => {
            ctx.run.exit("rmpadjust");
            pvalidate::rmpadjust_exit(ctx, vcpu)
        }
        Doorbell::Tdcall => {
            // Not an SNP instruction (it raises #UD): answer FAIL_INPUT in EAX, as the
            // firmware's TDX path expects of a platform without a TDX module.
            let mut regs = vcpu.regs()?;
            regs.rax = 1;
            vcpu.set_regs(&regs)?;
            Ok(None)
        }
    }
}

/// RDMSR of the MSRs an SNP guest's hypervisor intercepts: `Some(value)` or `None`
/// for #GP.
pub fn rdmsr(ghcb: &GhcbState, index: u32) -> Option<u64> {
    match index {
        MSR_SEV_STATUS => Some(SEV_STATUS),
        MSR_GHCB => Some(ghcb.msr),
        _ => None,
    }
}

/// WRMSR of the MSRs an SNP guest's hypervisor intercepts: `false` for #GP.
pub fn wrmsr(ghcb: &mut GhcbState, index: u32, value: u64) -> bool {
    match index {
        MSR_GHCB => {
            ghcb.msr = value;
            true
        }
        _ => false,
    }
}
