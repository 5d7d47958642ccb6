//! TDCALL: RAX names the leaf (Intel TDX module ABI, TDCALL leaves; docs/specs.md
//! 6.1). The TDX module's own leaves (TDG.VP.INFO, TDG.MEM.PAGE.ACCEPT,
//! TDG.MR.REPORT) go to [`TdxModule`] and the S-EPT; TDG.VP.VMCALL is an exit to the
//! VMM ([`super::tdvmcall`]).

use super::{tdvmcall, TdxContext};
use crate::exits::RunError;
use crate::mmu::attributes::Kind;
use crate::mmu::tdx::{rule, AcceptResult};
use crate::mmu::HypervisorMmu;
use crate::platform::Stop;
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use crate::vmm::vcpu::Vcpu;
use kvm_bindings::kvm_regs;
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::tdx::{leaf, status, AcceptLevel};
use nacre_shared_abi::tdx_report::{REPORT_DATA_SIZE, TDREPORT_SIZE};

/// What TDG.VP.INFO reports (Intel TDX module ABI, TDG.VP.INFO leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VpInfo {
    /// The guest-physical address width (RCX bits 5:0).
    pub gpaw: u32,
    /// The TD's ATTRIBUTES (RDX).
    pub attributes: u64,
    /// The number of vCPUs (R8 bits 31:0).
    pub num_vcpus: u32,
    /// The most vCPUs the TD may have (R8 bits 63:32).
    pub max_vcpus: u32,
    /// This vCPU's index (R9 bits 31:0).
    pub vcpu_index: u32,
}

/// The TDX module's leaves as the TDCALL handler reaches them: where the emulated
/// module plugs in (on TDX hardware the CPU's module answers without an exit).
pub trait TdxModule: Send + std::fmt::Debug {
    /// TDG.VP.INFO for vCPU `vcpu`.
    fn vp_info(&self, vcpu: u32) -> VpInfo;
    /// TDG.MR.REPORT: the MACed TDREPORT_STRUCT of this TD with `report_data`, or
    /// the TDCALL status that refuses it.
    fn report(&mut self, report_data: &[u8; REPORT_DATA_SIZE]) -> Result<[u8; TDREPORT_SIZE], u64>;
}

/// One TDCALL by vCPU `vcpu`, with the registers as the instruction had them; updates
/// them as the TDX module (or, for TDG.VP.VMCALL, the VMM) would.
pub fn handle(
    ctx: &mut TdxContext<'_>,
    vcpu: &mut dyn Vcpu,
    regs: &mut kvm_regs,
) -> Result<Option<Stop>, RunError> {
    match regs.rax {
        leaf::VP_INFO => {
            let info = ctx.module.vp_info(vcpu.index());
            regs.rax = status::SUCCESS;
            regs.rcx = u64::from(info.gpaw);
            regs.rdx = info.attributes;
            regs.r8 = (u64::from(info.max_vcpus) << 32) | u64::from(info.num_vcpus);
            regs.r9 = u64::from(info.vcpu_index);
            regs.r10 = 0;
            regs.r11 = 0;
            Ok(None)
        }
        leaf::MEM_PAGE_ACCEPT => match accept(ctx, regs.rcx)? {
            Ok(st) => {
                regs.rax = st;
                Ok(None)
            }
            Err(stop) => Ok(Some(stop)),
        },
        leaf::VP_VMCALL => tdvmcall::handle(ctx, vcpu, regs),
        leaf::MR_REPORT => {
            regs.rax = mr_report(ctx, regs.rcx, regs.rdx, regs.r8)?;
            Ok(None)
        }
        _ => {
            regs.rax = status::OPERAND_INVALID;
            Ok(None)
        }
    }
}

/// TDG.MEM.PAGE.ACCEPT of the GPA and level in RCX: the S-EPT decides (the MMU
/// resolves EPT violations by AUG or DEMOTE and retries, as KVM and the guest do). An
/// accept of a GPA whose attribute is shared is a memory-fault exit: converted to
/// private as a VMM does on KVM_EXIT_MEMORY_FAULT and retried, or with
/// `--strict-memory` a stop.
pub fn accept(ctx: &mut TdxContext<'_>, rcx: u64) -> Result<Result<u64, Stop>, MemoryError> {
    let Some((gpa, level)) = AcceptLevel::decode(rcx) else {
        return Ok(Ok(status::OPERAND_INVALID));
    };
    for _ in 0..2 {
        match ctx.mmu.accept(ctx.mem, gpa, level)? {
            AcceptResult::Status(s) => return Ok(Ok(s)),
            AcceptResult::Violation(rule) => {
                return Ok(Err(Stop::MemoryViolation {
                    gpa,
                    view: View::Private,
                    rule,
                }))
            }
            AcceptResult::Mismatch if ctx.strict_memory => {
                return Ok(Err(Stop::MemoryViolation {
                    gpa,
                    view: View::Private,
                    rule: rule::SHARED_TO_PRIVATE,
                }))
            }
            AcceptResult::Mismatch => {
                ctx.mmu.count_implicit_conversion();
                ctx.mmu.convert(
                    ctx.mem,
                    gpa / PAGE_SIZE_4K,
                    level.bytes() / PAGE_SIZE_4K,
                    Kind::Private,
                )?;
            }
        }
    }
    Ok(Ok(status::OPERAND_BUSY))
}

/// Whether `[gpa, gpa + len)` is private memory the TD can reach now (accepted, or
/// added at launch): where TDG.MR.REPORT's operands must be.
fn private_reachable(ctx: &TdxContext<'_>, gpa: u64, len: u64) -> bool {
    if gpa & ctx.shared_bit() != 0 || gpa.checked_add(len).is_none_or(|e| e > ctx.mem.size()) {
        return false;
    }
    let (first, last) = (gpa / PAGE_SIZE_4K, (gpa + len - 1) / PAGE_SIZE_4K);
    (first..=last).all(|gfn| ctx.mmu.reachable(gfn).0)
}

/// TDG.MR.REPORT: RCX = GPA of the TDREPORT_STRUCT to write (1024-byte aligned), RDX
/// = GPA of the REPORTDATA (64-byte aligned), R8 = report subtype (0), both in private
/// memory the TD can reach. Returns the TDCALL status.
pub fn mr_report(
    ctx: &mut TdxContext<'_>,
    out: u64,
    data: u64,
    subtype: u64,
) -> Result<u64, MemoryError> {
    ctx.counters.mr_reports += 1;
    if subtype != 0
        || !out.is_multiple_of(TDREPORT_SIZE as u64)
        || !data.is_multiple_of(REPORT_DATA_SIZE as u64)
        || !private_reachable(ctx, out, TDREPORT_SIZE as u64)
        || !private_reachable(ctx, data, REPORT_DATA_SIZE as u64)
    {
        return Ok(status::OPERAND_INVALID);
    }
    let mut report_data = [0u8; REPORT_DATA_SIZE];
    ctx.mem.read(data, &mut report_data)?;
    match ctx.module.report(&report_data) {
        Ok(report) => {
            ctx.mem.write(out, &report)?;
            Ok(status::SUCCESS)
        }
        Err(status) => Ok(status),
    }
}

/// TDCALL (`66 0F 01 CC`, Intel SDM vol. 2, TDCALL).
const TDCALL: [u8; 4] = [0x66, 0x0F, 0x01, 0xCC];

/// #UD.
const VECTOR_UD: u8 = 6;

/// KVM could not emulate an instruction. TDCALL outside a TD raises #UD; where KVM
/// emulates the guest's ring 0 (its PVM backend) it cannot emulate TDCALL and exits
/// instead of raising it. If the instruction at RIP is a TDCALL, the #UD is injected
/// here, so the firmware's handler forwards the TDCALL as it does wherever the CPU
/// raises the #UD itself: `Ok(true)`.
pub fn undefined_opcode(
    mem: &GuestMemory,
    shared_bit: u64,
    vcpu: &mut dyn Vcpu,
) -> Result<bool, RunError> {
    let regs = vcpu.regs()?;
    let Some(gpa) = vcpu.translate(regs.rip)? else {
        return Ok(false);
    };
    let mut insn = [0u8; 4];
    if mem.read(gpa & !shared_bit, &mut insn).is_err() || insn != TDCALL {
        return Ok(false);
    }
    vcpu.inject_exception(VECTOR_UD)?;
    Ok(true)
}
