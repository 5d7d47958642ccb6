//! TDG.VP.VMCALL: the TD's exit to the VMM. R10 = 0 selects the GHCI's sub-functions,
//! numbered in R11; their status goes back in R10 (GHCI 1.5, 2.4 and 3; docs/specs.md
//! 6.2). One function per sub-function the VMM implements.

use super::{get_quote, map_gpa, TdxContext};
use crate::exits::apic::{self, Reach};
use crate::exits::RunError;
use crate::platform::hostcall;
use crate::platform::hostile::Hostile;
use crate::platform::Stop;
use crate::vmm::memory::MemoryError;
use crate::vmm::vcpu::Vcpu;
use kvm_bindings::kvm_regs;
use nacre_shared_abi::hostcall::HOSTCALL_PORT;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::tdx::{status, vmcall};

/// TDG.VP.VMCALL status for a sub-function the VMM does not implement (Linux
/// `arch/x86/include/asm/shared/tdx.h`, `TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED`).
pub const VMCALL_SUBFUNC_UNSUPPORTED: u64 = 0x8000_0000_0000_0003;

/// Instruction.IO direction "write" (GHCI 1.5, TDG.VP.VMCALL<Instruction.IO>: R13 = 1
/// for OUT).
const IO_WRITE: u64 = 1;

/// One TDG.VP.VMCALL by `vcpu` with the TD's registers.
pub fn handle(
    ctx: &mut TdxContext<'_>,
    vcpu: &mut dyn Vcpu,
    regs: &mut kvm_regs,
) -> Result<Option<Stop>, RunError> {
    crate::platform::hostile::rewind_tsc(
        ctx.lies,
        ctx.host.app_entered.is_some(),
        vcpu,
        ctx.host.tsc_khz,
    )?;
    // TDG.VP.VMCALL itself succeeds; the sub-function's status is R10.
    regs.rax = status::SUCCESS;
    if regs.r10 != 0 {
        regs.r10 = vmcall::INVALID_OPERAND;
        return Ok(None);
    }
    match regs.r11 {
        vmcall::IO => Ok(io(ctx, regs)?),
        vmcall::MAP_GPA => {
            map_gpa::handle(ctx, regs)?;
            Ok(None)
        }
        vmcall::REPORT_FATAL_ERROR => Ok(Some(Stop::TdFatalError { code: regs.r12 })),
        vmcall::GET_QUOTE => {
            regs.r10 = get_quote::handle(ctx, regs.r12, regs.r13)?;
            Ok(None)
        }
        vmcall::CPUID => {
            cpuid(regs);
            Ok(None)
        }
        vmcall::RDMSR | vmcall::WRMSR => {
            msr(ctx, vcpu, regs)?;
            Ok(None)
        }
        _ => {
            regs.r10 = VMCALL_SUBFUNC_UNSUPPORTED;
            Ok(None)
        }
    }
}

/// Instruction.RDMSR (R12 the MSR; the value back in R11) or Instruction.WRMSR (R13
/// the value): only the local APIC's registers a TD's VMM emulates ([`apic`]);
/// anything else is INVALID_OPERAND, as KVM answers an MSR access it refuses
/// (`arch/x86/kvm/vmx/tdx.c`, `tdx_complete_emulated_msr`).
fn msr(ctx: &mut TdxContext<'_>, vcpu: &mut dyn Vcpu, regs: &mut kvm_regs) -> Result<(), RunError> {
    ctx.run.exit("apic-msr");
    let write = (regs.r11 == vmcall::WRMSR).then_some(regs.r13);
    let answer = match u32::try_from(regs.r12) {
        // A hostile host may refuse a register it emulates.
        Ok(_) if ctx.lies.once(Hostile::ApicRefused) => None,
        Ok(index) => apic::access(Reach::Tdx, vcpu, index, write)?,
        Err(_) => None,
    };
    match answer {
        Some(value) => {
            regs.r10 = vmcall::SUCCESS;
            if write.is_none() {
                regs.r11 = value;
            }
        }
        None => regs.r10 = vmcall::INVALID_OPERAND,
    }
    Ok(())
}

/// Instruction.CPUID: R12 = leaf, R13 = subleaf; EAX, EBX, ECX, EDX in R12-R15. The
/// host's CPUID, as a VMM without a CPUID policy of its own answers.
fn cpuid(regs: &mut kvm_regs) {
    let r = std::arch::x86_64::__cpuid_count(regs.r12 as u32, regs.r13 as u32);
    regs.r12 = u64::from(r.eax);
    regs.r13 = u64::from(r.ebx);
    regs.r14 = u64::from(r.ecx);
    regs.r15 = u64::from(r.edx);
    regs.r10 = vmcall::SUCCESS;
}

/// Instruction.IO: R12 = size, R13 = direction, R14 = port, R15 = data. The only
/// device is the hostcall doorbell (a 32-bit write of the buffer's page number);
/// reads float high.
fn io(ctx: &mut TdxContext<'_>, regs: &mut kvm_regs) -> Result<Option<Stop>, MemoryError> {
    ctx.run.exit("io");
    let (size, write, port) = (regs.r12, regs.r13 == IO_WRITE, regs.r14);
    if !matches!(size, 1 | 2 | 4) || regs.r13 > 1 || port > 0xFFFF {
        regs.r10 = vmcall::INVALID_OPERAND;
        return Ok(None);
    }
    regs.r10 = vmcall::SUCCESS;
    if !write {
        regs.r11 = (1u64 << (8 * size)) - 1;
        return Ok(None);
    }
    if port != u64::from(HOSTCALL_PORT) || size != 4 {
        regs.r10 = vmcall::INVALID_OPERAND;
        return Ok(None);
    }
    let area = (regs.r15 & 0xFFFF_FFFF) * PAGE_SIZE_4K;
    hostcall::serve(ctx.mem, ctx.mmu, ctx.run, ctx.host, area)
}
