//! The emulated TDX platform: the TDX module's part in software. TDCALLs arrive
//! through the doorbell (the firmware's #UD handler forwards them); this module
//! answers TDG.VP.INFO and TDG.MEM.PAGE.ACCEPT as the TDX module does, and the
//! TDG.VP.VMCALL sub-functions the guest uses (MapGPA, ReportFatalError, I/O, CPUID,
//! MSRs) as KVM and a VMM do (`arch/x86/kvm/vmx/tdx.c`, SPECS.md 6.1-6.3). Private
//! memory is the S-EPT and mirror table of [`TdxMmu`]; the launch measurement (MRTD)
//! is accumulated as pages are added, as TDH.MEM.PAGE.ADD and TDH.MR.EXTEND do.

use super::Stop;
use crate::emulated::tdx::keys::{
    emulated_tee_tcb_info, EmulatedTdxKeys, QuotingEnclave, TdxReportKey,
};
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
use nacre_shared_abi::tdx_report::get_quote::{self, QuoteBufHeader, HEADER_SIZE};
use nacre_shared_abi::tdx_report::{TdInfo, REPORT_DATA_SIZE, TDREPORT_SIZE};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

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
    /// TDG.MR.REPORT calls.
    pub mr_reports: u64,
    /// GetQuote calls.
    pub get_quotes: u64,
}

/// The largest GetQuote buffer the host takes (Linux's driver uses 8 KiB).
const MAX_QUOTE_BUFFER: u64 = 1 << 20;

/// XFAM of the emulated TD: the XSAVE features the CPU supports (CPUID leaf 0xD,
/// subleaf 0, EDX:EAX; Intel SDM vol. 1, 13.2), which the TD may enable.
fn xfam() -> u64 {
    let r = std::arch::x86_64::__cpuid_count(0xD, 0);
    (u64::from(r.edx) << 32) | u64::from(r.eax)
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
    /// The TD's ATTRIBUTES (TDG.VP.INFO, TDINFO; SPECS.md 6.4).
    pub td_attributes: u64,
    /// The emulated TDX module's key for TDREPORT MACs (made when the TD is built).
    pub report_key: Option<TdxReportKey>,
    /// The emulated quoting enclave's keys (loaded on the first GetQuote).
    pub quoting_keys: crate::emulated::LazyKeys<EmulatedTdxKeys>,
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
            td_attributes: 0,
            report_key: None,
            quoting_keys: crate::emulated::LazyKeys::default(),
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
                regs.rdx = self.td_attributes;
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
            leaf::MR_REPORT => {
                regs.rax = self.mr_report(regs.rcx, regs.rdx, regs.r8)?;
                Ok(None)
            }
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
            vmcall::GET_QUOTE => {
                regs.r10 = self.get_quote(regs.r12, regs.r13)?;
                Ok(None)
            }
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

    /// Whether `[gpa, gpa + len)` is private memory the TD can reach now (accepted,
    /// or added at launch): where TDG.MR.REPORT's operands must be.
    fn private_reachable(&self, gpa: u64, len: u64) -> bool {
        if gpa & SHARED_BIT != 0 || gpa.checked_add(len).is_none_or(|e| e > self.mem.size()) {
            return false;
        }
        let (first, last) = (gpa / PAGE_SIZE_4K, (gpa + len - 1) / PAGE_SIZE_4K);
        (first..=last).all(|gfn| self.mmu.reachable(gfn).0)
    }

    /// TDG.MR.REPORT: RCX = GPA of the TDREPORT_STRUCT to write (1024-byte aligned),
    /// RDX = GPA of the REPORTDATA (64-byte aligned), R8 = report subtype (0), both
    /// in private memory the TD can reach. Returns the TDCALL status.
    fn mr_report(&mut self, out: u64, data: u64, subtype: u64) -> Result<u64, MemoryError> {
        self.tdx.mr_reports += 1;
        let (Some(key), Some(mr_td)) = (self.report_key.as_ref(), self.mrtd_final) else {
            return Ok(status::OPERAND_INVALID);
        };
        if subtype != 0
            || !out.is_multiple_of(TDREPORT_SIZE as u64)
            || !data.is_multiple_of(REPORT_DATA_SIZE as u64)
            || !self.private_reachable(out, TDREPORT_SIZE as u64)
            || !self.private_reachable(data, REPORT_DATA_SIZE as u64)
        {
            return Ok(status::OPERAND_INVALID);
        }
        let mut report_data = [0u8; REPORT_DATA_SIZE];
        self.mem.read(data, &mut report_data)?;
        let mut td_info = TdInfo::new_zeroed();
        td_info.attributes = self.td_attributes;
        td_info.xfam = xfam();
        td_info.mr_td = mr_td;
        let report = key.td_report(&td_info, &emulated_tee_tcb_info(), &report_data);
        self.mem.write(out, &report)?;
        Ok(status::SUCCESS)
    }

    /// TDG.VP.VMCALL GetQuote: R12 = the shared GPA of the buffer (4 KiB aligned),
    /// R13 = its size (a multiple of 4 KiB). The buffer holds a GetQuote header and the
    /// TDREPORT; the quoting enclave's quote replaces it. Answered at once, never left
    /// IN_FLIGHT. Returns the sub-function status (R10); the quote's own status is
    /// in the buffer.
    fn get_quote(&mut self, gpa: u64, size: u64) -> Result<u64, MemoryError> {
        self.tdx.get_quotes += 1;
        let base = gpa & !SHARED_BIT;
        if gpa & SHARED_BIT == 0
            || !base.is_multiple_of(PAGE_SIZE_4K)
            || size == 0
            || !size.is_multiple_of(PAGE_SIZE_4K)
            || size > MAX_QUOTE_BUFFER
            || base.checked_add(size).is_none_or(|e| e > self.mem.size())
            || !self.mmu.is_shared(base / PAGE_SIZE_4K, size / PAGE_SIZE_4K)
        {
            return Ok(vmcall::INVALID_OPERAND);
        }
        let mut raw = [0u8; HEADER_SIZE];
        self.mem.read(base, &mut raw)?;
        let Ok(mut header) = QuoteBufHeader::read_from_bytes(&raw) else {
            return Ok(vmcall::INVALID_OPERAND);
        };
        let room = size - HEADER_SIZE as u64;
        if header.version != get_quote::VERSION || u64::from(header.in_len) > room {
            header.status = get_quote::status::ERROR;
            header.out_len = 0;
            self.mem.write(base, header.as_bytes())?;
            return Ok(vmcall::SUCCESS);
        }
        let mut td_report = vec![0u8; header.in_len as usize];
        self.mem.read(base + HEADER_SIZE as u64, &mut td_report)?;
        // The quoting enclave refuses a report whose MAC does not verify (EVERIFYREPORT2
        // on hardware); without keys the quoting service is unavailable (the reason is
        // printed once).
        let (status, quote) = match (self.report_key.as_ref(), self.quoting_keys.get()) {
            (Some(report_key), Some(keys)) => {
                match QuotingEnclave::new().quote(keys, report_key, &td_report) {
                    Ok(quote) if quote.len() as u64 <= room => {
                        (get_quote::status::SUCCESS, Some(quote))
                    }
                    Ok(_) | Err(_) => (get_quote::status::ERROR, None),
                }
            }
            _ => (get_quote::status::SERVICE_UNAVAILABLE, None),
        };
        header.status = status;
        header.out_len = 0;
        if let Some(quote) = quote {
            self.mem.write(base + HEADER_SIZE as u64, &quote)?;
            header.out_len = quote.len() as u32;
        }
        self.mem.write(base, header.as_bytes())?;
        Ok(vmcall::SUCCESS)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::tdx::Quote;
    use crate::emulated::snp::keys::fixture::scratch;
    use std::sync::OnceLock;

    /// One emulated TDX key hierarchy for these tests.
    fn keys_dir() -> &'static std::path::Path {
        static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
        DIR.get_or_init(|| {
            let dir = scratch("tdx-platform").join("tdx");
            EmulatedTdxKeys::load_or_create(&dir).expect("keys");
            dir
        })
    }

    /// A TD with a report key and an MRTD, page 0x10 private and accepted, pages
    /// 0x20..0x30 shared, and the quoting keys of [`keys_dir`].
    fn td() -> EmulatedTdx {
        let mut tdx = EmulatedTdx::new(GuestMemory::new(64 << 20).expect("memfd"));
        tdx.report_key = Some(TdxReportKey::generate().expect("report key"));
        tdx.mrtd_final = Some([7; 48]);
        tdx.add_page(0x10_000, false).expect("added");
        tdx.mmu.map_gpa(&tdx.mem, 0x20, 16, false).expect("shared");
        tdx.quoting_keys = crate::emulated::LazyKeys::new(
            "test keys",
            Box::new(|| EmulatedTdxKeys::load(keys_dir()).map_err(|e| e.to_string())),
        );
        tdx
    }

    #[test]
    fn mr_report_writes_a_maced_report_of_the_td_into_private_memory() {
        let mut tdx = td();
        tdx.mem.write(0x10_400, &[0x5A; 64]).unwrap();
        assert_eq!(
            tdx.mr_report(0x10_000, 0x10_400, 0).unwrap(),
            status::SUCCESS
        );
        let mut report = [0u8; TDREPORT_SIZE];
        tdx.mem.read(0x10_000, &mut report).unwrap();
        let checked = tdx
            .report_key
            .as_ref()
            .unwrap()
            .verify(&report)
            .expect("MAC");
        assert_eq!(checked.report_mac.report_data, [0x5A; 64]);
        assert_eq!(checked.td_info.mr_td, [7; 48]);
        assert_eq!(checked.td_info.attributes, 0);

        // Misaligned, another subtype, a shared or unaccepted page, outside RAM, or
        // with the shared bit: OPERAND_INVALID, and nothing written.
        tdx.mem.write(0x20_000, &[0xEE; 1024]).unwrap();
        for (out, data, subtype) in [
            (0x10_040, 0x10_400, 0),
            (0x10_000, 0x10_404, 0),
            (0x10_000, 0x10_400, 1),
            (0x20_000, 0x10_400, 0),
            (0x10_000, 0x20_000, 0),
            (0x30_000, 0x10_400, 0),
            (64 << 20, 0x10_400, 0),
            (0x10_000 | SHARED_BIT, 0x10_400, 0),
            (!0x3FF, 0x10_400, 0),
        ] {
            assert_eq!(
                tdx.mr_report(out, data, subtype).unwrap(),
                status::OPERAND_INVALID,
                "{out:#x} {data:#x} {subtype}"
            );
        }
        let mut shared = [0u8; 1024];
        tdx.mem.read(0x20_000, &mut shared).unwrap();
        assert_eq!(shared, [0xEE; 1024]);
    }

    /// A GetQuote buffer at shared page 0x20 with `header` and `body`.
    fn buffer(tdx: &EmulatedTdx, header: &QuoteBufHeader, body: &[u8]) {
        tdx.mem.write(0x20_000, header.as_bytes()).unwrap();
        tdx.mem.write(0x20_000 + HEADER_SIZE as u64, body).unwrap();
    }

    fn header_at(tdx: &EmulatedTdx) -> QuoteBufHeader {
        let mut raw = [0u8; HEADER_SIZE];
        tdx.mem.read(0x20_000, &mut raw).unwrap();
        QuoteBufHeader::read_from_bytes(&raw).unwrap()
    }

    fn request(in_len: u32) -> QuoteBufHeader {
        QuoteBufHeader {
            version: get_quote::VERSION,
            status: 0,
            in_len,
            out_len: 0,
        }
    }

    #[test]
    fn get_quote_turns_a_td_report_into_a_quote_and_refuses_anything_else() {
        let mut tdx = td();
        assert_eq!(
            tdx.mr_report(0x10_000, 0x10_400, 0).unwrap(),
            status::SUCCESS
        );
        let mut report = [0u8; TDREPORT_SIZE];
        tdx.mem.read(0x10_000, &mut report).unwrap();
        let gpa = 0x20_000 | SHARED_BIT;

        buffer(&tdx, &request(1024), &report);
        assert_eq!(tdx.get_quote(gpa, 0x10_000).unwrap(), vmcall::SUCCESS);
        let h = header_at(&tdx);
        assert_eq!((h.version, h.status), (1, get_quote::status::SUCCESS));
        let mut quote = vec![0u8; h.out_len as usize];
        tdx.mem
            .read(0x20_000 + HEADER_SIZE as u64, &mut quote)
            .unwrap();
        let quote = Quote::parse(&quote).expect("a quote");
        assert_eq!(quote.body.mr_td, [7; 48]);

        // Buffers the VMM refuses outright.
        for (gpa, size) in [
            (0x20_000, 0x1000),
            (0x20_800 | SHARED_BIT, 0x1000),
            (gpa, 0),
            (gpa, 0x1800),
            (0x10_000 | SHARED_BIT, 0x1000),
            (gpa, 0x20_000),
            ((64 << 20) | SHARED_BIT, 0x1000),
        ] {
            assert_eq!(
                tdx.get_quote(gpa, size).unwrap(),
                vmcall::INVALID_OPERAND,
                "{gpa:#x} {size:#x}"
            );
        }

        // Requests the quoting service answers with an error status.
        let mut flipped = report;
        flipped[0x210] ^= 1;
        for (header, body) in [
            (
                QuoteBufHeader {
                    version: 2,
                    ..request(1024)
                },
                &report[..],
            ),
            (request(0x1_0000), &report[..]),
            (request(1024), &flipped[..]),
            (request(1000), &report[..1000]),
        ] {
            buffer(&tdx, &header, body);
            assert_eq!(tdx.get_quote(gpa, 0x1000).unwrap(), vmcall::SUCCESS);
            let h = header_at(&tdx);
            assert_eq!(
                (h.status, h.out_len),
                (get_quote::status::ERROR, 0),
                "{header:?}"
            );
        }

        // No keys: the service is unavailable.
        tdx.quoting_keys =
            crate::emulated::LazyKeys::new("no keys", Box::new(|| Err("none here".into())));
        buffer(&tdx, &request(1024), &report);
        assert_eq!(tdx.get_quote(gpa, 0x10_000).unwrap(), vmcall::SUCCESS);
        assert_eq!(
            header_at(&tdx).status,
            get_quote::status::SERVICE_UNAVAILABLE
        );
        assert_eq!(tdx.tdx.get_quotes, 1 + 7 + 4 + 1);
    }
}
