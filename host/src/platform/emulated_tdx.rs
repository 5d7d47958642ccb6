//! The emulated TDX platform: the TDX module's part in software. TDCALLs arrive
//! through the doorbell (the firmware's #UD handler forwards them); this module
//! answers TDG.VP.INFO and TDG.MEM.PAGE.ACCEPT as the TDX module does, and the
//! TDG.VP.VMCALL sub-functions the guest uses (MapGPA, ReportFatalError, I/O, CPUID,
//! MSRs) as KVM and a VMM do (`arch/x86/kvm/vmx/tdx.c`, SPECS.md 6.1-6.3). Private
//! memory is the S-EPT and mirror table of [`TdxMmu`]; the launch measurement (MRTD)
//! is accumulated as pages are added, as TDH.MEM.PAGE.ADD and TDH.MR.EXTEND do.

use super::Stop;
use crate::mmu::attributes::Kind;
use crate::mmu::tdp::Level;
use crate::mmu::tdx::{AcceptResult, TdxMmu};
use crate::mmu::Access;
use crate::stats::Stats;
use crate::vmm::memory::{GuestMemory, MemoryError, View};
use kvm_bindings::kvm_regs;
use nacre_loader::measure::tdx::Mrtd;
use nacre_shared_abi::hostcall::HOSTCALL_PORT;
use nacre_shared_abi::layout::{EMULATED_TDX_GPAW, PAGE_SIZE_2M, PAGE_SIZE_4K};
use nacre_shared_abi::tdx::{leaf, status, vmcall, AcceptLevel};

/// The shared bit as a GPA mask (`1 << (GPAW - 1)`, SPECS.md 6.3).
pub const SHARED_BIT: u64 = 1 << (EMULATED_TDX_GPAW - 1);

/// TDG.VP.VMCALL status for a sub-function the VMM does not implement (Linux
/// `arch/x86/include/asm/shared/tdx.h`, `TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED`).
pub const VMCALL_SUBFUNC_UNSUPPORTED: u64 = 0x8000_0000_0000_0003;

/// KVM converts MapGPA in chunks of at most this size and checks for pending
/// interrupts between them, answering RETRY with the next GPA (`TDX_MAP_GPA_MAX_LEN`,
/// `arch/x86/kvm/vmx/tdx.c`).
pub const MAP_GPA_CHUNK: u64 = PAGE_SIZE_2M;

/// Instruction.IO direction "write" (GHCI 1.5, TDG.VP.VMCALL<Instruction.IO>: R13 = 1
/// for OUT).
const IO_WRITE: u64 = 1;

/// TDX counters (`tdx.*` and `sept.*` in `--stats-json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TdxCounters {
    /// MapGPA calls.
    pub map_gpa_calls: u64,
    /// MapGPA calls answered RETRY.
    pub map_gpa_retries: u64,
}

/// State of the emulated TDX platform for one VM.
#[derive(Debug)]
pub struct EmulatedTdx {
    /// Guest RAM.
    pub mem: GuestMemory,
    /// Attributes, shared TDP, mirror table and S-EPT.
    pub mmu: TdxMmu,
    /// `--strict-memory`.
    pub strict_memory: bool,
    /// Counters of exits and hostcalls.
    pub stats: Stats,
    /// TDX-specific counters.
    pub tdx: TdxCounters,
    /// MRTD as the emulated TDX module accumulates it while pages are added.
    pub mrtd: Mrtd,
    /// MRTD after TDH.MR.FINALIZE (set when the TD is built).
    pub mrtd_final: Option<[u8; 48]>,
    /// Test hook (`NACRE_TEST_MAP_GPA_PAGES`): convert at most this many pages per
    /// MapGPA call before answering RETRY, as KVM does between chunks when an
    /// interrupt is pending.
    pub map_gpa_budget: Option<u64>,
    /// The console and clocks the hostcalls serve (and when the first arrived).
    pub host: super::hostcall::HostcallHost,
}

impl EmulatedTdx {
    /// Platform state over `mem`: every page private by attribute and not in the S-EPT.
    pub fn new(mem: GuestMemory) -> Self {
        let pages = mem.size() / PAGE_SIZE_4K;
        Self {
            mem,
            mmu: TdxMmu::new(pages, Level::L1G),
            strict_memory: false,
            stats: Stats::default(),
            tdx: TdxCounters::default(),
            mrtd: Mrtd::new(),
            mrtd_final: None,
            map_gpa_budget: None,
            host: super::hostcall::HostcallHost::default(),
        }
    }

    /// TDH.MEM.PAGE.ADD of a launch page (its contents already in RAM), and
    /// TDH.MR.EXTEND over it when `measure`.
    pub fn add_page(&mut self, gpa: u64, measure: bool) -> Result<(), String> {
        let mut page = [0u8; PAGE_SIZE_4K as usize];
        self.mem
            .read(gpa, &mut page)
            .map_err(|e| format!("page {gpa:#x}: {e}"))?;
        let st = self
            .mmu
            .launch_page(&self.mem, gpa / PAGE_SIZE_4K)
            .map_err(|e| format!("page {gpa:#x}: {e}"))?;
        if st != status::SUCCESS {
            return Err(format!(
                "page {gpa:#x} cannot be added: TDH.MEM.PAGE.ADD status {st:#x}"
            ));
        }
        self.mrtd.add_page(gpa, measure.then_some(&page));
        Ok(())
    }

    /// One TDCALL, with the vCPU's registers as the instruction had them; updates
    /// them as the TDX module (or, for TDG.VP.VMCALL, the VMM) would.
    pub fn tdcall(&mut self, regs: &mut kvm_regs) -> Result<Option<Stop>, MemoryError> {
        match regs.rax {
            leaf::VP_INFO => {
                regs.rax = status::SUCCESS;
                regs.rcx = u64::from(EMULATED_TDX_GPAW);
                regs.rdx = 0; // TD attributes: none (no DEBUG)
                regs.r8 = (1 << 32) | 1; // max_vcpus << 32 | num_vcpus
                regs.r9 = 0; // vCPU index
                regs.r10 = 0;
                regs.r11 = 0;
                Ok(None)
            }
            leaf::MEM_PAGE_ACCEPT => match self.accept(regs.rcx)? {
                Ok(st) => {
                    regs.rax = st;
                    Ok(None)
                }
                Err(stop) => Ok(Some(stop)),
            },
            leaf::VP_VMCALL => self.vmcall(regs),
            _ => {
                regs.rax = status::OPERAND_INVALID;
                Ok(None)
            }
        }
    }

    /// TDG.MEM.PAGE.ACCEPT: the S-EPT decides (the MMU resolves EPT violations by
    /// AUG or DEMOTE and retries, as KVM and the guest do). An accept of a GPA whose
    /// attribute is shared is a memory-fault exit: converted to private as a VMM does
    /// on KVM_EXIT_MEMORY_FAULT and retried, or with `--strict-memory` a stop.
    fn accept(&mut self, rcx: u64) -> Result<Result<u64, Stop>, MemoryError> {
        let Some((gpa, level)) = AcceptLevel::decode(rcx) else {
            return Ok(Ok(status::OPERAND_INVALID));
        };
        for _ in 0..2 {
            match self.mmu.accept(&self.mem, gpa, level)? {
                AcceptResult::Status(s) => return Ok(Ok(s)),
                AcceptResult::Violation(rule) => {
                    return Ok(Err(Stop::MemoryViolation {
                        gpa,
                        view: View::Private,
                        rule,
                    }))
                }
                AcceptResult::Mismatch if self.strict_memory => {
                    return Ok(Err(Stop::MemoryViolation {
                        gpa,
                        view: View::Private,
                        rule: crate::mmu::tdx::rule::SHARED_TO_PRIVATE,
                    }))
                }
                AcceptResult::Mismatch => {
                    self.mmu.count_implicit_conversion();
                    self.mmu.map_gpa(
                        &self.mem,
                        gpa / PAGE_SIZE_4K,
                        level.bytes() / PAGE_SIZE_4K,
                        true,
                    )?;
                }
            }
        }
        Ok(Ok(status::OPERAND_BUSY))
    }

    fn vmcall(&mut self, regs: &mut kvm_regs) -> Result<Option<Stop>, MemoryError> {
        // TDG.VP.VMCALL itself succeeds; the sub-function's status is R10.
        regs.rax = status::SUCCESS;
        if regs.r10 != 0 {
            regs.r10 = vmcall::INVALID_OPERAND;
            return Ok(None);
        }
        match regs.r11 {
            vmcall::IO => self.io(regs),
            vmcall::MAP_GPA => {
                self.map_gpa(regs)?;
                Ok(None)
            }
            vmcall::REPORT_FATAL_ERROR => Ok(Some(Stop::TdFatalError { code: regs.r12 })),
            vmcall::CPUID => {
                let r = std::arch::x86_64::__cpuid_count(regs.r12 as u32, regs.r13 as u32);
                regs.r12 = u64::from(r.eax);
                regs.r13 = u64::from(r.ebx);
                regs.r14 = u64::from(r.ecx);
                regs.r15 = u64::from(r.edx);
                regs.r10 = vmcall::SUCCESS;
                Ok(None)
            }
            // No MSR is emulated for a TD here: every RDMSR/WRMSR request is refused.
            vmcall::RDMSR | vmcall::WRMSR => {
                regs.r10 = vmcall::INVALID_OPERAND;
                Ok(None)
            }
            _ => {
                regs.r10 = VMCALL_SUBFUNC_UNSUPPORTED;
                Ok(None)
            }
        }
    }

    /// Instruction.IO: R12 = size, R13 = direction, R14 = port, R15 = data. The only
    /// device is the hostcall doorbell (a 32-bit write of the buffer's page number);
    /// reads float high.
    fn io(&mut self, regs: &mut kvm_regs) -> Result<Option<Stop>, MemoryError> {
        self.stats.exit("io");
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
        let buffer = (regs.r15 & 0xFFFF_FFFF) * PAGE_SIZE_4K;
        let mmu = &self.mmu;
        super::hostcall::serve(
            &self.mem,
            &mut self.stats,
            &mut self.host,
            |gfn, n| mmu.is_shared(gfn, n),
            buffer,
        )
    }

    /// MapGPA with KVM's checks and chunking (`tdx_map_gpa`): INVALID_OPERAND for an
    /// empty, wrapping or out-of-RAM range or one whose ends disagree on the shared
    /// bit, ALIGN_ERROR for an unaligned one; then 2 MiB chunks, each an attribute
    /// change in the host MMU; RETRY with R11 = the next GPA when the budget runs out.
    fn map_gpa(&mut self, regs: &mut kvm_regs) -> Result<(), MemoryError> {
        self.tdx.map_gpa_calls += 1;
        let (gpa, size) = (regs.r12, regs.r13);
        let end = gpa.wrapping_add(size);
        let legal = |a: u64| a < (1 << EMULATED_TDX_GPAW);
        if size == 0
            || end <= gpa
            || !legal(gpa)
            || !legal(end - 1)
            || (gpa & SHARED_BIT) != ((end - 1) & SHARED_BIT)
        {
            regs.r10 = vmcall::INVALID_OPERAND;
            return Ok(());
        }
        if !gpa.is_multiple_of(PAGE_SIZE_4K) || !size.is_multiple_of(PAGE_SIZE_4K) {
            regs.r10 = vmcall::ALIGN_ERROR;
            return Ok(());
        }
        let tag = gpa & SHARED_BIT;
        let (start, stop) = (gpa & !SHARED_BIT, (end - 1) & !SHARED_BIT);
        if stop >= self.mem.size() {
            regs.r10 = vmcall::INVALID_OPERAND;
            return Ok(());
        }
        let kind = if tag != 0 {
            Kind::Shared
        } else {
            Kind::Private
        };
        let mut at = start;
        let mut budget = self.map_gpa_budget.unwrap_or(u64::MAX);
        while at <= stop {
            if budget == 0 {
                self.tdx.map_gpa_retries += 1;
                regs.r10 = vmcall::RETRY;
                regs.r11 = at | tag;
                return Ok(());
            }
            let next = ((at / MAP_GPA_CHUNK) + 1) * MAP_GPA_CHUNK;
            let n = ((next.min(stop + 1) - at) / PAGE_SIZE_4K).min(budget);
            budget -= n;
            let to_private = kind == Kind::Private;
            if self
                .mmu
                .map_gpa(&self.mem, at / PAGE_SIZE_4K, n, to_private)?
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

    /// A guest access that hit a closed view: the host MMU's EPT-violation path.
    /// `addr` is the faulting GPA with the shared bit as the view.
    pub fn memory_fault(&mut self, addr: u64) -> Result<Option<Stop>, MemoryError> {
        let (view, kind, gpa) = if addr & SHARED_BIT != 0 {
            (View::Shared, Kind::Shared, addr & !SHARED_BIT)
        } else {
            (View::Private, Kind::Private, addr)
        };
        Ok(
            match self
                .mmu
                .access(&self.mem, gpa / PAGE_SIZE_4K, kind, self.strict_memory)?
            {
                Access::Ok { .. } => None,
                Access::Violation(rule) => Some(Stop::MemoryViolation { gpa, view, rule }),
            },
        )
    }
}
