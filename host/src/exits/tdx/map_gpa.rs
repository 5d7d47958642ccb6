//! `TDG.VP.VMCALL<MapGPA>`: R12 = the GPA (its shared bit says which way), R13 = the
//! size. Checked and chunked as KVM does (`tdx_map_gpa`, `TDX_MAP_GPA_MAX_LEN`), each
//! chunk an attribute change in the host MMU, with RETRY and the next GPA in R11 when
//! the VMM stops early (GHCI 1.5, 3.2).

use super::TdxContext;
use crate::mmu::attributes::Kind;
use crate::mmu::HypervisorMmu;
use crate::platform::hostile::Hostile;
use crate::vmm::memory::MemoryError;
use kvm_bindings::kvm_regs;
use nacre_shared_abi::layout::{PAGE_SIZE_2M, PAGE_SIZE_4K};
use nacre_shared_abi::tdx::vmcall;

/// KVM converts MapGPA in chunks of at most this size and checks for pending
/// interrupts between them, answering RETRY with the next GPA (`TDX_MAP_GPA_MAX_LEN`,
/// `arch/x86/kvm/vmx/tdx.c`).
pub const MAP_GPA_CHUNK: u64 = PAGE_SIZE_2M;

/// How many pages the first MapGPA of [`Hostile::MapGpaRetryBackwards`] converts
/// before its RETRY.
const HOSTILE_FIRST_PAGES: u64 = 128;

/// MapGPA with KVM's checks: INVALID_OPERAND for an empty, wrapping or out-of-RAM
/// range or one whose ends disagree on the shared bit, ALIGN_ERROR for an unaligned
/// one; then 2 MiB chunks; RETRY with R11 = the next GPA when the budget runs out.
pub fn handle(ctx: &mut TdxContext<'_>, regs: &mut kvm_regs) -> Result<(), MemoryError> {
    ctx.counters.map_gpa_calls += 1;
    let (gpa, size) = (regs.r12, regs.r13);
    let shared_bit = ctx.shared_bit();
    let end = gpa.wrapping_add(size);
    let legal = |a: u64| a < (1 << ctx.gpaw);
    if size == 0
        || end <= gpa
        || !legal(gpa)
        || !legal(end - 1)
        || (gpa & shared_bit) != ((end - 1) & shared_bit)
    {
        regs.r10 = vmcall::INVALID_OPERAND;
        return Ok(());
    }
    if !gpa.is_multiple_of(PAGE_SIZE_4K) || !size.is_multiple_of(PAGE_SIZE_4K) {
        regs.r10 = vmcall::ALIGN_ERROR;
        return Ok(());
    }
    let tag = gpa & shared_bit;
    let (start, stop) = (gpa & !shared_bit, (end - 1) & !shared_bit);
    if stop >= ctx.mem.size() {
        regs.r10 = vmcall::INVALID_OPERAND;
        return Ok(());
    }
    let kind = if tag != 0 {
        Kind::Shared
    } else {
        Kind::Private
    };
    let mut at = start;
    let mut budget = ctx.map_gpa_budget.unwrap_or(u64::MAX);
    // A hostile host's RETRY answers: outside the range, or going backwards.
    if ctx.lies.once(Hostile::MapGpaRetryOutside) {
        ctx.counters.map_gpa_retries += 1;
        regs.r10 = vmcall::RETRY;
        regs.r11 = (stop + 1) | tag;
        return Ok(());
    }
    match ctx.lies.turn(Hostile::MapGpaRetryBackwards) {
        Some(0) => budget = budget.min(HOSTILE_FIRST_PAGES),
        Some(1) => {
            ctx.counters.map_gpa_retries += 1;
            regs.r10 = vmcall::RETRY;
            regs.r11 = start.saturating_sub(PAGE_SIZE_4K) | tag;
            return Ok(());
        }
        _ => {}
    }
    while at <= stop {
        if budget == 0 {
            ctx.counters.map_gpa_retries += 1;
            regs.r10 = vmcall::RETRY;
            regs.r11 = at | tag;
            return Ok(());
        }
        let next = ((at / MAP_GPA_CHUNK) + 1) * MAP_GPA_CHUNK;
        let n = ((next.min(stop + 1) - at) / PAGE_SIZE_4K).min(budget);
        budget -= n;
        if ctx
            .mmu
            .convert(ctx.mem, at / PAGE_SIZE_4K, n, kind)?
            .is_none()
        {
            regs.r10 = vmcall::INVALID_OPERAND;
            return Ok(());
        }
        at += n * PAGE_SIZE_4K;
    }
    regs.r10 = vmcall::SUCCESS;
    Ok(())
}
