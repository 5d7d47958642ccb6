//! PVALIDATE and RMPADJUST through their doorbells: the operands are in the vCPU's
//! registers (RAX = the page's virtual address, RCX = page size, RDX = validate or
//! the RMPADJUST attributes; AMD APM vol. 3, PVALIDATE and RMPADJUST), the results go
//! back into RAX and rFLAGS.CF. The guest's page walk gives the GPA, whose C-bit says
//! the access is private; the RMP decides, through the host MMU.

use super::SnpContext;
use crate::exits::RunError;
use crate::mmu::attributes::Kind;
use crate::mmu::snp::{GuestRmpResult, SnpMmu};
use crate::mmu::HypervisorMmu;
use crate::platform::Stop;
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use crate::vmm::vcpu::Vcpu;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::snp::rmp::{PvalidateResult, RmpError, RmpPageSize, RMP_SUCCESS};

/// rFLAGS.CF.
const RFLAGS_CF: u64 = 1;

/// The PVALIDATE doorbell.
pub fn pvalidate_exit(
    ctx: &mut SnpContext<'_>,
    vcpu: &mut dyn Vcpu,
) -> Result<Option<Stop>, RunError> {
    let mut regs = vcpu.regs()?;
    let translated = vcpu.translate(regs.rax)?;
    let r = match pvalidate(ctx, translated, regs.rcx, regs.rdx)? {
        Ok(r) => r,
        Err(stop) => return Ok(Some(stop)),
    };
    regs.rax = u64::from(r.rax);
    regs.rflags = (regs.rflags & !RFLAGS_CF) | u64::from(r.cf);
    vcpu.set_regs(&regs)?;
    Ok(None)
}

/// The RMPADJUST doorbell.
pub fn rmpadjust_exit(
    ctx: &mut SnpContext<'_>,
    vcpu: &mut dyn Vcpu,
) -> Result<Option<Stop>, RunError> {
    let mut regs = vcpu.regs()?;
    let translated = vcpu.translate(regs.rax)?;
    let rax = match rmpadjust(ctx, translated, regs.rcx, regs.rdx)? {
        Ok(rax) => rax,
        Err(stop) => return Ok(Some(stop)),
    };
    regs.rax = u64::from(rax);
    vcpu.set_regs(&regs)?;
    Ok(None)
}

/// PVALIDATE of the page the guest's walk translated to `translated` (a GPA with the
/// C-bit), or `None` if the VA is unmapped. `Err(stop)` when the nested walk hit a
/// shared page under `--strict-memory`.
pub fn pvalidate(
    ctx: &mut SnpContext<'_>,
    translated: Option<u64>,
    size_operand: u64,
    validate: u64,
) -> Result<Result<PvalidateResult, Stop>, MemoryError> {
    let fail = |e: RmpError| {
        Ok(Ok(PvalidateResult {
            rax: e.code(),
            cf: false,
        }))
    };
    let c_bit = ctx.c_bit_mask();
    let (Some(size), Some(gpa_c)) = (RmpPageSize::from_operand(size_operand), translated) else {
        return fail(RmpError::FailInput);
    };
    if validate > 1 || gpa_c & c_bit == 0 {
        // PVALIDATE of a page mapped shared: the access is not private.
        return fail(RmpError::FailInput);
    }
    let gpa = gpa_c & !c_bit;
    if !gpa.is_multiple_of(size.bytes()) {
        return fail(RmpError::FailInput);
    }
    match size {
        RmpPageSize::Size4K => ctx.counters.pvalidate_4k += 1,
        RmpPageSize::Size2M => ctx.counters.pvalidate_2m += 1,
    }
    let gfn = gpa / PAGE_SIZE_4K;
    let pages = size.bytes() / PAGE_SIZE_4K;
    let r = guest_rmp(
        ctx.mem,
        ctx.mmu,
        ctx.strict_memory,
        gpa,
        pages,
        |mmu, mem| mmu.pvalidate(mem, gfn, size, validate == 1),
    )?;
    Ok(r.map(|r| match r {
        GuestRmpResult::Done { changed } => PvalidateResult {
            rax: RMP_SUCCESS,
            cf: !changed,
        },
        GuestRmpResult::Fail(e) => {
            if e == RmpError::FailSizeMismatch {
                ctx.counters.pvalidate_size_mismatch += 1;
            }
            PvalidateResult {
                rax: e.code(),
                cf: false,
            }
        }
        // guest_rmp resolved every mismatch.
        GuestRmpResult::Mismatch => PvalidateResult {
            rax: RmpError::FailInput.code(),
            cf: false,
        },
    }))
}

/// RMPADJUST (by a VMPL0 caller) of the page `translated` maps; returns EAX.
pub fn rmpadjust(
    ctx: &mut SnpContext<'_>,
    translated: Option<u64>,
    size_operand: u64,
    attrs: u64,
) -> Result<Result<u32, Stop>, MemoryError> {
    let c_bit = ctx.c_bit_mask();
    let (Some(size), Some(gpa_c)) = (RmpPageSize::from_operand(size_operand), translated) else {
        return Ok(Ok(RmpError::FailInput.code()));
    };
    let gpa = gpa_c & !c_bit;
    if gpa_c & c_bit == 0 || !gpa.is_multiple_of(size.bytes()) {
        return Ok(Ok(RmpError::FailInput.code()));
    }
    let gfn = gpa / PAGE_SIZE_4K;
    let pages = size.bytes() / PAGE_SIZE_4K;
    let r = guest_rmp(
        ctx.mem,
        ctx.mmu,
        ctx.strict_memory,
        gpa,
        pages,
        |mmu, mem| mmu.rmpadjust(mem, gfn, size, attrs),
    )?;
    Ok(r.map(|r| match r {
        GuestRmpResult::Done { .. } => RMP_SUCCESS,
        GuestRmpResult::Fail(e) => e.code(),
        GuestRmpResult::Mismatch => RmpError::FailInput.code(),
    }))
}

/// Run a guest RMP instruction; a nested walk that lands on a shared page is a
/// memory-fault exit: converted to private (then the instruction runs again) or,
/// under `--strict-memory`, a stop.
fn guest_rmp(
    mem: &GuestMemory,
    mmu: &SnpMmu,
    strict: bool,
    gpa: u64,
    pages: u64,
    mut op: impl FnMut(&SnpMmu, &GuestMemory) -> Result<GuestRmpResult, MemoryError>,
) -> Result<Result<GuestRmpResult, Stop>, MemoryError> {
    let gfn = gpa / PAGE_SIZE_4K;
    let mut r = op(mmu, mem)?;
    if r == GuestRmpResult::Mismatch {
        if strict {
            return Ok(Err(Stop::MemoryViolation {
                gpa,
                view: View::Private,
                rule: crate::mmu::rule::PRIVATE_TO_SHARED,
            }));
        }
        if mmu.convert(mem, gfn, pages, Kind::Private)?.is_some() {
            mmu.count_implicit_conversion();
        }
        r = op(mmu, mem)?;
    }
    Ok(Ok(r))
}
