//! VMGEXIT: the GHCB MSR protocol when the GHCB MSR holds a request, else a call
//! through the registered GHCB page, dispatched by its exit code (`sw_exit_code`) to
//! one handler per Non-Automatic-Exit event (AMD GHCB specification 56421, 4.1 and
//! table 6; KVM `sev_handle_vmgexit`).

use super::guest_request;
use super::ioio;
use super::msr_protocol::{handle_msr_protocol, MsrProtocolHost, MsrProtocolOutcome};
use super::psc;
use super::SnpContext;
use crate::exits::apic::{self, Reach};
use crate::exits::RunError;
use crate::platform::hostile::Hostile;
use crate::platform::Stop;
use crate::vmm::memory::MemoryError;
use crate::vmm::vcpu::Vcpu;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::snp::ghcb::{
    exit_code, Ghcb, GhcbErrorCode, GhcbField, RESULT_BAD_INPUT, RESULT_OK,
};
use nacre_shared_abi::snp::msr_protocol::{MsrPscOp, HV_FEATURE_SNP};
use zerocopy::{FromBytes, IntoBytes};

/// The GHCBInfo bits of the GHCB MSR (11:0): non-zero for an MSR-protocol request
/// (GHCB specification 2.3.1).
const GHCB_INFO_MASK: u64 = 0xFFF;

/// One VMGEXIT by `vcpu`.
pub fn handle(ctx: &mut SnpContext<'_>, vcpu: &mut dyn Vcpu) -> Result<Option<Stop>, RunError> {
    if ctx.ghcb.msr & GHCB_INFO_MASK != 0 {
        return Ok(msr_protocol(ctx));
    }
    let gpa = ctx.ghcb.msr;
    if Some(gpa) != ctx.ghcb.gpa {
        return Ok(Some(Stop::ProtocolViolation(format!(
            "VMGEXIT with GHCB GPA {gpa:#x} that was never registered"
        ))));
    }
    if gpa
        .checked_add(PAGE_SIZE_4K)
        .is_none_or(|e| e > ctx.mem.size())
        || !ctx.mmu.is_shared(gpa / PAGE_SIZE_4K, 1)
    {
        return Ok(Some(Stop::ProtocolViolation(format!(
            "GHCB at {gpa:#x} is not a shared page"
        ))));
    }
    // The guest may change the page at any time: work on a private copy.
    let mut page = [0u8; 4096];
    ctx.mem.read(gpa, &mut page)?;
    let mut g =
        Ghcb::read_from_bytes(&page).map_err(|_| MemoryError::OutOfRange { gpa, len: 4096 })?;
    let stop = call(ctx, gpa, &mut g, vcpu)?;
    ctx.mem.write(gpa, g.as_bytes())?;
    Ok(stop)
}

/// SW_EXITINFO2 of an MSR access the hypervisor refuses: the #GP it would inject
/// (vector 13, event type 3 "exception", valid bit 31; AMD APM vol. 2, 15.20 EVENTINJ),
/// with SW_EXITINFO1 = 1, as KVM answers (`arch/x86/kvm/svm/svm.c`,
/// `svm_complete_emulated_msr`).
pub const MSR_REFUSED_GP: u64 = (1 << 31) | (3 << 8) | 13;

/// The MSR event (SW_EXITCODE 0x7C, docs/specs.md 1.3): RCX the MSR, SW_EXITINFO1 0
/// to read or 1 to write RDX:RAX. Only the local APIC's registers are emulated
/// ([`apic`]); anything else gets the #GP answer.
fn msr(
    ctx: &mut SnpContext<'_>,
    g: &mut Ghcb,
    info1: u64,
    vcpu: &mut dyn Vcpu,
) -> Result<Option<Stop>, RunError> {
    ctx.run.exit("apic-msr");
    let write = match info1 {
        0 => None,
        1 if g.is_valid(GhcbField::Rax) && g.is_valid(GhcbField::Rdx) => {
            Some((g.rax & 0xFFFF_FFFF) | (g.rdx << 32))
        }
        1 => {
            refuse(g, GhcbErrorCode::MissingInput);
            return Ok(None);
        }
        _ => {
            refuse(g, GhcbErrorCode::InvalidEvent);
            return Ok(None);
        }
    };
    if !g.is_valid(GhcbField::Rcx) {
        refuse(g, GhcbErrorCode::MissingInput);
        return Ok(None);
    }
    let Ok(index) = u32::try_from(g.rcx) else {
        g.sw_exit_info_1 = RESULT_BAD_INPUT;
        g.sw_exit_info_2 = MSR_REFUSED_GP;
        return Ok(None);
    };
    let refused = ctx.lies.once(Hostile::ApicRefused);
    let answer = if refused {
        None
    } else {
        apic::access(Reach::Snp, vcpu, index, write)?
    };
    match answer {
        Some(value) => {
            if write.is_none() {
                g.rax = value & 0xFFFF_FFFF;
                g.rdx = value >> 32;
                // A hostile host may answer without marking the value valid.
                if !ctx.lies.once(Hostile::GhcbValidBitmap) {
                    g.set_valid(GhcbField::Rax);
                    g.set_valid(GhcbField::Rdx);
                }
            }
        }
        None => {
            g.sw_exit_info_1 = RESULT_BAD_INPUT;
            g.sw_exit_info_2 = MSR_REFUSED_GP;
        }
    }
    Ok(None)
}

/// Refuse a GHCB call: SW_EXITINFO1 = 1 (bad input), SW_EXITINFO2 = the reason (GHCB
/// specification, table 5).
pub fn refuse(g: &mut Ghcb, code: GhcbErrorCode) {
    g.sw_exit_info_1 = RESULT_BAD_INPUT;
    g.sw_exit_info_2 = code as u64;
}

/// A call through the GHCB page at `gpa`, on the private copy `g`, which is written
/// back afterwards.
pub fn call(
    ctx: &mut SnpContext<'_>,
    gpa: u64,
    g: &mut Ghcb,
    vcpu: &mut dyn Vcpu,
) -> Result<Option<Stop>, RunError> {
    if g.protocol_version != 2 || g.ghcb_usage != 0 {
        refuse(g, GhcbErrorCode::InvalidUsage);
        return Ok(None);
    }
    if !g.is_valid(GhcbField::SwExitCode)
        || !g.is_valid(GhcbField::SwExitInfo1)
        || !g.is_valid(GhcbField::SwExitInfo2)
    {
        refuse(g, GhcbErrorCode::MissingInput);
        return Ok(None);
    }
    crate::platform::hostile::rewind_tsc(
        ctx.lies,
        ctx.host.app_entered.is_some(),
        vcpu,
        ctx.host.tsc_khz,
    )?;
    let (code, info1, info2) = (g.sw_exit_code, g.sw_exit_info_1, g.sw_exit_info_2);
    g.sw_exit_info_1 = RESULT_OK;
    g.sw_exit_info_2 = 0;
    match code {
        exit_code::PSC => Ok(psc::nae(ctx, gpa, g)?),
        exit_code::IOIO => {
            let stop = ioio::nae(ctx, g, info1)?;
            // A hostile host may claim it refused the event it served.
            if stop.is_none() && ctx.lies.once(Hostile::GhcbExitInfo) {
                refuse(g, GhcbErrorCode::InvalidInput);
            }
            Ok(stop)
        }
        exit_code::MSR => msr(ctx, g, info1, vcpu),
        exit_code::HV_FEATURES => {
            g.sw_exit_info_2 = HV_FEATURE_SNP;
            Ok(None)
        }
        exit_code::GUEST_REQUEST => Ok(guest_request::nae(ctx, g, info1, info2)?),
        exit_code::TERM_REQUEST => Ok(Some(Stop::GuestTerminated {
            set: (info1 & 0xF) as u8,
            code: ((info1 >> 4) & 0xFF) as u8,
        })),
        _ => {
            refuse(g, GhcbErrorCode::InvalidEvent);
            Ok(None)
        }
    }
}

/// The GHCB MSR protocol: the answer goes back into the GHCB MSR.
fn msr_protocol(ctx: &mut SnpContext<'_>) -> Option<Stop> {
    let value = ctx.ghcb.msr;
    match handle_msr_protocol(value, &mut MsrHost { ctx }) {
        MsrProtocolOutcome::Reply(v) => {
            ctx.ghcb.msr = v;
            None
        }
        MsrProtocolOutcome::Terminate { set, code } => Some(Stop::GuestTerminated { set, code }),
        MsrProtocolOutcome::Malformed(v) => Some(Stop::ProtocolViolation(format!(
            "malformed GHCB MSR protocol request {v:#x}"
        ))),
    }
}

/// Answers for the MSR protocol.
struct MsrHost<'c, 'a> {
    ctx: &'c mut SnpContext<'a>,
}

impl MsrProtocolHost for MsrHost<'_, '_> {
    fn c_bit(&self) -> u8 {
        self.ctx.c_bit
    }

    fn cpuid(&mut self, leaf: u32, register: u8) -> u32 {
        let r = std::arch::x86_64::__cpuid(leaf);
        match register {
            0 => r.eax,
            1 => r.ebx,
            2 => r.ecx,
            _ => r.edx,
        }
    }

    fn register_ghcb(&mut self, gfn: u64) -> bool {
        let ok = gfn < self.ctx.mmu.pages();
        if ok {
            self.ctx.ghcb.gpa = Some(gfn * PAGE_SIZE_4K);
        }
        ok
    }

    fn page_state_change(&mut self, gfn: u64, op: MsrPscOp) -> Result<(), ()> {
        self.ctx.counters.psc_calls += 1;
        let r = psc::change(self.ctx, gfn, 1, op);
        if r.is_ok() {
            self.ctx.counters.psc_entries_4k += 1;
        }
        r
    }

    fn hv_features(&self) -> u64 {
        HV_FEATURE_SNP
    }
}
