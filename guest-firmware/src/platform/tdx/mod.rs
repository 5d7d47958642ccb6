//! Intel TDX: detection, TDG.VP.INFO, memory acceptance (TDG.MEM.PAGE.ACCEPT), MapGPA,
//! the hostcall doorbell through TDVMCALL Instruction.IO, TDG.MR.REPORT and GetQuote,
//! and ReportFatalError.
//!
//! TDCALLs go through the `tdx-guest` crate. On TDX hardware the TDX module executes
//! them; on the emulated platform the instruction raises #UD and [`trap`] forwards it
//! to the host through the TDCALL doorbell with its registers unchanged.

pub mod trap;
pub mod ve;

use super::hostcall::HostcallArea;
use super::{
    Backend, Evidence, GuestDevice, GuestPlatform, GuestReport, PageState, PteMasks, ReportError,
    Validation,
};
use crate::error::FwError;
use crate::mem::paging::{PageTables, TableAlloc};
use core::arch::asm;
use nacre_shared_abi::boot::BootInfo;
use nacre_shared_abi::hostcall::{EvidenceKind, HOSTCALL_PORT};
use nacre_shared_abi::layout::{
    INITIAL_PT_GPA, INITIAL_PT_PAGES, KERNEL_VA_BASE, PAGE_SIZE_4K, TDX_MAX_GUEST_MEMORY,
};
use nacre_shared_abi::tdx::{shared_bit, status, vmcall, AcceptLevel};
use nacre_shared_abi::tdx_report::get_quote::{self, QuoteBufHeader, HEADER_SIZE};
use nacre_shared_abi::tdx_report::{REPORT_DATA_SIZE, TDREPORT_SIZE};
use tdx_guest::tdcall::TdCallError;
use tdx_guest::tdvmcall::{IoSize, TdVmcallError};
use zerocopy::{FromBytes, IntoBytes};

/// CPUID leaf whose EBX, EDX, ECX spell "IntelTDX    " in a TD (Linux
/// `arch/x86/coco/tdx/tdx.c`, `TDX_CPUID_LEAF_ID` and `TDX_IDENT`).
pub const TDX_CPUID_LEAF: u32 = 0x21;
/// The signature, in EBX, EDX, ECX order.
pub const TDX_IDENT: [u8; 12] = *b"IntelTDX    ";

/// How many times an OPERAND_BUSY accept is retried before it is an error (td-shim
/// retries 5 times, docs/specs.md 6.3).
const BUSY_RETRIES: u32 = 8;
/// How many RETRY answers in a row without forward progress a MapGPA tolerates.
const MAP_GPA_STALLS: u32 = 16;

/// TDG.MR.REPORT's operands in private memory: the TDREPORT_STRUCT the module writes
/// (1024-byte aligned) and the REPORTDATA it reads (64-byte aligned), both in the
/// firmware's measured image, whose GPA is its address minus `KERNEL_VA_BASE`.
#[repr(C, align(1024))]
struct MrReportBuffers {
    report: [u8; TDREPORT_SIZE],
    data: [u8; REPORT_DATA_SIZE],
}

static MR_REPORT: spin::Mutex<MrReportBuffers> = spin::Mutex::new(MrReportBuffers {
    report: [0; TDREPORT_SIZE],
    data: [0; REPORT_DATA_SIZE],
});

/// The launch pages besides the image: the initial page tables (one page more than
/// SNP's: they also identity-map the reset page).
const LAUNCH_PAGES: [(u64, u64); 1] = [(INITIAL_PT_GPA, INITIAL_PT_PAGES * PAGE_SIZE_4K)];

/// Where in the hostcall data area the GetQuote buffer lies: its second half, so
/// that the quote can be moved to the start for the `Evidence` hostcall.
const QUOTE_BUFFER_OFFSET: u64 = 1 << 20;
/// Size of the GetQuote buffer: a quote with its PCK chain is a few KiB.
const QUOTE_BUFFER_SIZE: u64 = 64 << 10;

/// TDX platform state.
#[derive(Debug)]
pub struct Tdx {
    backend: Backend,
    /// `1 << (GPAW - 1)`.
    shared_bit: u64,
    /// MapGPA answers of RETRY that were resumed (diagnostics).
    pub map_gpa_retries: u64,
}

/// What the firmware uses of TDG.VP.INFO.
#[derive(Debug, Clone, Copy)]
pub struct VpInfo {
    /// Guest physical address width (48 or 52).
    pub gpaw: u32,
}

/// Whether CPUID says this is a TD (CPUID.0x21 signature, as Linux checks it).
pub fn cpuid_says_td() -> bool {
    if crate::arch::cpu::cpuid(0, 0).eax < TDX_CPUID_LEAF {
        return false;
    }
    let r = crate::arch::cpu::cpuid(TDX_CPUID_LEAF, 0);
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&r.edx.to_le_bytes());
    sig[8..12].copy_from_slice(&r.ecx.to_le_bytes());
    sig == TDX_IDENT
}

/// TDG.VP.INFO: the GPA width (which gives the shared bit) and the TD attributes.
pub fn vp_info() -> Result<VpInfo, FwError> {
    let info = tdx_guest::tdcall::get_tdinfo().map_err(|_| FwError::NotTdx)?;
    let gpaw = u64::from(info.gpaw) as u32;
    if shared_bit(gpaw).is_none() {
        return Err(FwError::NotTdx);
    }
    Ok(VpInfo { gpaw })
}

/// The outcome of one TDG.MEM.PAGE.ACCEPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Accepted (and zeroed by the TDX module).
    Done,
    /// TDX_PAGE_ALREADY_ACCEPTED: a warning on hardware, but the caller's own record
    /// decides whether it is acceptable (it never is for the firmware).
    AlreadyAccepted,
    /// TDX_PAGE_SIZE_MISMATCH: the page is mapped at a smaller size; accept at 4 KiB.
    SizeMismatch,
    /// Any other status (its class, bits 63:32).
    Failed(u64),
}

/// TDG.MEM.PAGE.ACCEPT of the page at private GPA `gpa` at `level`, retrying
/// TDX_OPERAND_BUSY a few times.
///
/// # Safety
/// The page must not be in use: accepting zeroes it.
pub unsafe fn accept(gpa: u64, level: AcceptLevel) -> Accept {
    let Some(rcx) = level.rcx(gpa) else {
        return Accept::Failed(u64::MAX);
    };
    accept_with(|| {
        // SAFETY: the caller owns the page; the operand was checked by `rcx`.
        unsafe { tdx_guest::tdcall::accept_page(rcx & 7, rcx & !7) }
    })
}

/// The outcome of TDG.MEM.PAGE.ACCEPT as `call` makes it, retrying TDX_OPERAND_BUSY up
/// to [`BUSY_RETRIES`] times.
fn accept_with(mut call: impl FnMut() -> Result<(), TdCallError>) -> Accept {
    let mut busy = 0;
    loop {
        return match call() {
            Ok(()) => Accept::Done,
            Err(TdCallError::TdxPageAlreadyAccepted) => Accept::AlreadyAccepted,
            Err(TdCallError::TdxPageSizeMismatch) => Accept::SizeMismatch,
            Err(TdCallError::TdxOperandBusy) if busy < BUSY_RETRIES => {
                busy += 1;
                continue;
            }
            Err(e) => Accept::Failed(class_of(&e)),
        };
    }
}

/// The status class the crate decoded (for error messages).
fn class_of(e: &TdCallError) -> u64 {
    match e {
        TdCallError::TdxOperandBusy => status::CLASS_OPERAND_BUSY,
        TdCallError::TdxOperandInvalid => status::CLASS_OPERAND_INVALID,
        TdCallError::TdxPageSizeMismatch => status::class(status::PAGE_SIZE_MISMATCH),
        _ => 0xFFFF_FFFF,
    }
}

impl Tdx {
    /// Check CPUID leaf 0x21 ("IntelTDX    "; the image must have been built without
    /// a C-bit) and ask TDG.VP.INFO for the GPA width, which gives the shared bit.
    pub fn detect(bi: &BootInfo, backend: Backend) -> Result<Self, FwError> {
        if bi.c_bit != 0 || !cpuid_says_td() {
            return Err(FwError::NotTdx);
        }
        let info = vp_info()?;
        let shared = shared_bit(info.gpaw).ok_or(FwError::NotTdx)?;
        Ok(Self::new(backend, shared))
    }

    /// Platform state for a TD whose shared bit is `shared_bit`.
    pub fn new(backend: Backend, shared_bit: u64) -> Self {
        Self {
            backend,
            shared_bit,
            map_gpa_retries: 0,
        }
    }

    /// TDG.MR.REPORT: the TDREPORT_STRUCT of this TD for `report_data`, copied out of
    /// the buffer the TDX module wrote. `Err` carries the status class.
    pub fn td_report(
        &mut self,
        report_data: &[u8; REPORT_DATA_SIZE],
    ) -> Result<[u8; TDREPORT_SIZE], u64> {
        let mut buf = MR_REPORT.lock();
        buf.data = *report_data;
        let gpa = (&raw const *buf) as u64 - KERNEL_VA_BASE;
        let data_gpa = gpa + TDREPORT_SIZE as u64;
        tdx_guest::tdcall::get_report(gpa, data_gpa).map_err(|e| class_of(&e))?;
        // SAFETY: `buf.report` is ours (the lock is held); the TDX module wrote it
        // outside the compiler's view, so it is read with a volatile copy.
        Ok(unsafe { core::ptr::read_volatile(&raw const buf.report) })
    }

    /// TDVMCALL GetQuote on the shared buffer at `gpa` (without the shared bit) of
    /// `size` bytes, which holds a `QuoteBufHeader` and the TDREPORT. The host
    /// fills in the quote (or leaves `status` IN_FLIGHT while it works).
    pub fn get_quote(&mut self, gpa: u64, size: u64) -> Result<(), FwError> {
        tdx_guest::tdvmcall::get_quote(gpa | self.shared_bit, size).map_err(|e| {
            FwError::Attestation {
                code: vmcall_status(&e),
            }
        })
    }

    /// Ring the hostcall doorbell: a 32-bit TDVMCALL Instruction.IO write of the
    /// hostcall area's page number to `HOSTCALL_PORT`.
    pub fn ring_hostcall_io(&mut self, page: u64) -> Result<(), FwError> {
        let page = u32::try_from(page).map_err(|_| FwError::Hostcall)?;
        tdx_guest::tdvmcall::io_write(IoSize::Size4, HOSTCALL_PORT, page)
            .map_err(|_| FwError::Hostcall)
    }

    /// TDVMCALL MapGPA over the whole range `[gpa, gpa + len)`: to shared when `shared`,
    /// else to private. The host may answer RETRY with the GPA to resume from; that
    /// GPA must lie in the range and not go backwards (a host that stalls or rewinds
    /// is refused).
    pub fn map_gpa(&mut self, gpa: u64, len: u64, shared: bool) -> Result<(), FwError> {
        self.map_gpa_with(gpa, len, shared, tdx_guest::tdvmcall::map_gpa)
    }

    /// [`Self::map_gpa`] with `call` making each TDVMCALL MapGPA: its answer, or the
    /// GPA in R11 and the error of a call that failed (RETRY with the GPA to resume
    /// from). Every answer is the host's and is checked here; the unit tests and the
    /// fuzz targets (`tests/fuzz/`) play the host through `call`.
    pub fn map_gpa_with(
        &mut self,
        gpa: u64,
        len: u64,
        shared: bool,
        mut call: impl FnMut(u64, u64) -> Result<(), (u64, TdVmcallError)>,
    ) -> Result<(), FwError> {
        let tag = if shared { self.shared_bit } else { 0 };
        let end = gpa + len;
        let mut at = gpa;
        let mut stalls = 0;
        while at < end {
            match call(at | tag, end - at) {
                Ok(()) => return Ok(()),
                Err((resume, TdVmcallError::TdxRetry)) => {
                    let resume_gpa = resume & !self.shared_bit;
                    let ok = resume & self.shared_bit == tag
                        && resume_gpa >= at
                        && resume_gpa < end
                        && resume_gpa.is_multiple_of(PAGE_SIZE_4K);
                    if !ok {
                        return Err(FwError::MapGpa {
                            gpa: at,
                            status: vmcall::RETRY,
                            resume,
                        });
                    }
                    if resume_gpa == at {
                        stalls += 1;
                        if stalls > MAP_GPA_STALLS {
                            return Err(FwError::MapGpa {
                                gpa: at,
                                status: vmcall::RETRY,
                                resume,
                            });
                        }
                    } else {
                        stalls = 0;
                    }
                    self.map_gpa_retries += 1;
                    at = resume_gpa;
                }
                Err((_, e)) => {
                    return Err(FwError::MapGpa {
                        gpa: at,
                        status: vmcall_status(&e),
                        resume: 0,
                    })
                }
            }
        }
        Ok(())
    }
}

/// Whether the CPU virtualizes x2APIC register `msr` for a TD, so that the guest
/// reaches it with plain RDMSR/WRMSR while the VMM cannot emulate it: TPR (0x808),
/// PPR (0x80A), EOI (0x80B) and the ISR, TMR and IRR banks (0x810 to 0x827; Linux
/// `arch/x86/kvm/vmx/tdx.c`, `tdx_has_emulated_msr`). Every other local APIC register
/// raises #VE and is the VMM's, through TDVMCALL<Instruction.RDMSR/WRMSR>.
pub fn cpu_virtualizes(msr: u32) -> bool {
    matches!(msr, 0x808 | 0x80A | 0x80B | 0x810..=0x827)
}

/// TDVMCALL<Instruction.RDMSR> (`write` = `None`) or <Instruction.WRMSR> of `msr`
/// (docs/specs.md 6.2: R12 the MSR, R13 the value written, R11 the value read); `Err` with the TDVMCALL status when the VMM refuses.
pub fn vmcall_msr(msr: u32, write: Option<u64>) -> Result<u64, u64> {
    // SAFETY: the caller names a local APIC register, which the VMM emulates; the
    // call changes nothing in the TD but what the VMM returns in R11.
    unsafe {
        match write {
            Some(v) => tdx_guest::tdvmcall::wrmsr(msr, v).map(|()| 0),
            None => tdx_guest::tdvmcall::rdmsr(msr),
        }
    }
    .map_err(|e| vmcall_status(&e))
}

fn vmcall_status(e: &TdVmcallError) -> u64 {
    match e {
        TdVmcallError::TdxRetry => vmcall::RETRY,
        TdVmcallError::TdxOperandInvalid => vmcall::INVALID_OPERAND,
        TdVmcallError::TdxGpaInuse => vmcall::GPA_INUSE,
        TdVmcallError::TdxAlignError => vmcall::ALIGN_ERROR,
        _ => u64::MAX,
    }
}

/// Wait for an interrupt in a TD on hardware, where HLT raises #VE: TDVMCALL
/// <Instruction.HLT> with R12 = 0 ("interrupts not blocked", so that the VMM resumes
/// the vCPU when one is pending although RFLAGS.IF is 0 here), then interrupts on for
/// one instruction to take it, as Linux's `tdx_safe_halt` does. An interrupt that
/// arrives before the call stays pending and ends the wait at once.
pub fn halt_until_interrupt() {
    // SAFETY: TDCALL leaf 0 (TDG.VP.VMCALL), RCX exposes R10-R12 to the VMM, R11 =
    // Instruction.HLT, R12 = 0 (docs/specs.md 6.2); it changes only RAX and the exposed
    // registers, declared as clobbered. Then STI; NOP; CLI lets a pending interrupt
    // in on this stack (every vector has a gate; the handler returns here).
    unsafe {
        asm!(
            ".byte 0x66, 0x0f, 0x01, 0xcc",
            "sti",
            "nop",
            "cli",
            inout("rax") 0u64 => _,
            inout("rcx") 0x1C00u64 => _,
            inout("r10") 0u64 => _,
            inout("r11") vmcall::HLT => _,
            inout("r12") 0u64 => _,
        );
    }
}

/// TDVMCALL ReportFatalError with `code` (no message page), then stop. The host ends
/// the TD; should it resume us, we halt.
pub fn report_fatal_error(code: u64) -> ! {
    // SAFETY: TDCALL leaf 0 (TDG.VP.VMCALL), RCX exposes R10-R13 to the VMM, R11 =
    // ReportFatalError, R12 = the error code without the "message" bit 63 (docs/specs.md
    // 6.2). It changes only RAX and the exposed registers, declared as clobbered.
    unsafe {
        asm!(
            ".byte 0x66, 0x0f, 0x01, 0xcc",
            inout("rax") 0u64 => _,
            inout("rcx") 0x3C00u64 => _,
            inout("r10") 0u64 => _,
            inout("r11") vmcall::REPORT_FATAL_ERROR => _,
            inout("r12") code & !vmcall::FATAL_ERROR_HAS_MESSAGE => _,
            inout("r13") 0u64 => _,
            options(nostack),
        );
    }
    crate::arch::cpu::halt_forever()
}

/// The quote length a GetQuote buffer header reports (GHCI, GetQuote: the header the
/// host writes back), `None` while the host still has the request in flight. Only the
/// header's own fields are checked; the quote itself is the verifier's to check.
pub fn quote_len(header: &QuoteBufHeader) -> Result<Option<u64>, FwError> {
    if header.status == get_quote::status::IN_FLIGHT {
        return Ok(None);
    }
    if header.version != get_quote::VERSION || header.status != get_quote::status::SUCCESS {
        return Err(FwError::Attestation {
            code: header.status,
        });
    }
    let len = u64::from(header.out_len);
    if len == 0 || len > QUOTE_BUFFER_SIZE - HEADER_SIZE as u64 {
        return Err(FwError::Hostcall);
    }
    Ok(Some(len))
}

impl GuestPlatform for Tdx {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn pte_masks(&self) -> PteMasks {
        PteMasks {
            private: 0,
            shared: self.shared_bit,
        }
    }

    fn ram_limit(&self) -> u64 {
        TDX_MAX_GUEST_MEMORY
    }

    fn launch_pages(&self) -> &'static [(u64, u64)] {
        &LAUNCH_PAGES
    }

    /// TDG.MEM.PAGE.ACCEPT zeroes the page.
    fn fresh_memory_is_zero(&self) -> bool {
        true
    }

    fn guest_device(&self) -> GuestDevice {
        GuestDevice::TdxGuest
    }

    /// There is no GHCB: nothing to map in advance.
    fn prepare_tables(
        &mut self,
        _pt: &mut PageTables,
        _alloc: &mut dyn TableAlloc,
    ) -> Result<(), FwError> {
        Ok(())
    }

    /// TDG.VP.INFO was all [`Tdx::detect`] needed; there are no shared pages to set up.
    fn setup(&mut self, _pt: &mut PageTables, _cpus: u32) -> Result<(), FwError> {
        Ok(())
    }

    fn rescinded_pages(&self) -> (u64, u64) {
        (0, 0)
    }

    /// TDVMCALL MapGPA over the whole range (always 4 KiB granular to the guest).
    fn page_state_change(
        &mut self,
        gpa: u64,
        len: u64,
        state: PageState,
        _allow_2m: bool,
    ) -> Result<(), FwError> {
        self.map_gpa(gpa, len, state == PageState::Shared)
    }

    unsafe fn validate_4k(&mut self, gpa: u64) -> Result<(), FwError> {
        // SAFETY: `validate_4k`'s caller guarantees the page holds nothing in use, so
        // accepting (which zeroes it) loses nothing: `accept`'s contract.
        match unsafe { accept(gpa, AcceptLevel::L4K) } {
            Accept::Done => Ok(()),
            Accept::AlreadyAccepted => Err(FwError::AlreadyValidated { gpa }),
            Accept::SizeMismatch => Err(FwError::Accept {
                gpa,
                status: status::class(status::PAGE_SIZE_MISMATCH),
            }),
            Accept::Failed(status) => Err(FwError::Accept { gpa, status }),
        }
    }

    unsafe fn validate_2m(&mut self, gpa: u64) -> Result<Validation, FwError> {
        // SAFETY: as in `validate_4k`, for the 2 MiB page the caller guarantees.
        match unsafe { accept(gpa, AcceptLevel::L2M) } {
            Accept::Done => Ok(Validation::Done),
            Accept::AlreadyAccepted => Err(FwError::AlreadyValidated { gpa }),
            Accept::SizeMismatch => Ok(Validation::SizeMismatch),
            Accept::Failed(status) => Err(FwError::Accept { gpa, status }),
        }
    }

    /// Memory the TD has not accepted is private already (the host added it so): no
    /// MapGPA is needed before TDG.MEM.PAGE.ACCEPT.
    unsafe fn accept_range(
        &mut self,
        gpa: u64,
        len: u64,
        four_k_only: bool,
    ) -> Result<u64, FwError> {
        // SAFETY: `accept_range`'s caller guarantees the range holds nothing in use,
        // which is `validate_range`'s contract.
        unsafe { self.validate_range(gpa, len, four_k_only) }
    }

    fn ring_hostcall(&mut self, page: u64) -> Result<(), FwError> {
        self.ring_hostcall_io(page)
    }

    /// The TDREPORT_STRUCT (TDG.MR.REPORT); a TD report has no VMPL.
    fn guest_report(
        &mut self,
        report_data: &[u8; REPORT_DATA_SIZE],
        _vmpl: u32,
        _io: &HostcallArea,
    ) -> Result<GuestReport, ReportError> {
        let report = self
            .td_report(report_data)
            .map_err(|_| ReportError::Failed)?;
        Ok(GuestReport::new(&report))
    }

    /// A quote: TDG.MR.REPORT, then TDVMCALL GetQuote on the TDREPORT placed in the
    /// second half of the hostcall data area; then a first look at whether it is done.
    fn evidence(
        &mut self,
        report_data: &[u8; REPORT_DATA_SIZE],
        io: &mut HostcallArea,
    ) -> Result<Evidence, FwError> {
        let report = self
            .td_report(report_data)
            .map_err(|code| FwError::Attestation { code })?;
        let header = QuoteBufHeader {
            version: get_quote::VERSION,
            status: get_quote::status::SUCCESS,
            in_len: report.len() as u32,
            out_len: 0,
        };
        io.put(QUOTE_BUFFER_OFFSET, header.as_bytes())?;
        io.put(QUOTE_BUFFER_OFFSET + HEADER_SIZE as u64, &report)?;
        self.get_quote(io.data_gpa() + QUOTE_BUFFER_OFFSET, QUOTE_BUFFER_SIZE)?;
        self.evidence_poll(io)
    }

    /// The GetQuote buffer's header, copied into private memory: in flight, or the
    /// quote's length, after which the quote is moved to the start of the data area
    /// through private memory (the two ranges do not overlap: the buffer starts 1 MiB
    /// in).
    fn evidence_poll(&mut self, io: &mut HostcallArea) -> Result<Evidence, FwError> {
        let mut raw = [0u8; HEADER_SIZE];
        io.get(QUOTE_BUFFER_OFFSET, &mut raw)?;
        let header = QuoteBufHeader::read_from_bytes(&raw).map_err(|_| FwError::Hostcall)?;
        let Some(len) = quote_len(&header)? else {
            return Ok(Evidence::Pending {
                status: header.status,
            });
        };
        let mut chunk = [0u8; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len() as u64);
            let part = &mut chunk[..n as usize];
            io.get(QUOTE_BUFFER_OFFSET + HEADER_SIZE as u64 + done, part)?;
            io.put(done, part)?;
            done += n;
        }
        Ok(Evidence::Ready {
            kind: EvidenceKind::TdxQuote,
            len,
        })
    }

    fn terminate(&self, code: u8) -> ! {
        report_fatal_error(u64::from(code))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_registers_the_cpu_virtualizes_skip_the_vmm() {
        for msr in [0x808, 0x80A, 0x80B, 0x810, 0x817, 0x818, 0x820, 0x827] {
            assert!(super::cpu_virtualizes(msr), "{msr:#x}");
        }
        for msr in [0x1B, 0x6E0, 0x802, 0x80F, 0x828, 0x830, 0x832, 0x83E] {
            assert!(!super::cpu_virtualizes(msr), "{msr:#x}");
        }
    }

    use super::*;
    use std::vec::Vec;

    const SHARED: u64 = 1 << 47;
    const MIB: u64 = 1 << 20;

    fn tdx() -> Tdx {
        Tdx::new(Backend::Doorbell, SHARED)
    }

    /// A MapGPA host that answers RETRY with each of `resumes` in turn, then success;
    /// it records the (GPA, size) of every call.
    fn map_gpa(
        t: &mut Tdx,
        gpa: u64,
        len: u64,
        shared: bool,
        resumes: &[u64],
    ) -> (Result<(), FwError>, Vec<(u64, u64)>) {
        let mut calls = Vec::new();
        let mut next = resumes.iter();
        let r = t.map_gpa_with(gpa, len, shared, |at, size| {
            calls.push((at, size));
            match next.next() {
                Some(&resume) => Err((resume, TdVmcallError::TdxRetry)),
                None => Ok(()),
            }
        });
        (r, calls)
    }

    #[test]
    fn map_gpa_covers_the_range_in_one_call_with_the_shared_bit() {
        let (r, calls) = map_gpa(&mut tdx(), 0x3FE0_0000, 2 * MIB, true, &[]);
        assert_eq!(r, Ok(()));
        assert_eq!(calls, [(0x3FE0_0000 | SHARED, 2 * MIB)]);
        let (_, calls) = map_gpa(&mut tdx(), 0x3FE0_0000, 2 * MIB, false, &[]);
        assert_eq!(calls, [(0x3FE0_0000, 2 * MIB)], "to private: no shared bit");
    }

    #[test]
    fn map_gpa_resumes_where_the_host_says_while_it_moves_forward() {
        let mut t = tdx();
        let base = 0x1000_0000;
        let resumes = [
            SHARED | (base + MIB),
            SHARED | (base + MIB),
            SHARED | (base + 3 * MIB / 2),
        ];
        let (r, calls) = map_gpa(&mut t, base, 2 * MIB, true, &resumes);
        assert_eq!(r, Ok(()));
        assert_eq!(
            calls,
            [
                (SHARED | base, 2 * MIB),
                (SHARED | (base + MIB), MIB),
                (SHARED | (base + MIB), MIB),
                (SHARED | (base + 3 * MIB / 2), MIB / 2),
            ]
        );
        assert_eq!(t.map_gpa_retries, 3);
    }

    #[test]
    fn map_gpa_refuses_a_resume_outside_the_range_or_going_back() {
        let base = 0x1000_0000;
        let bad = [
            SHARED | (base - 4096),    // before the range
            SHARED | (base + 2 * MIB), // at its end
            SHARED | (base + 0x800),   // not page-aligned
            base + MIB,                // without the shared bit
        ];
        for resume in bad {
            let (r, _) = map_gpa(&mut tdx(), base, 2 * MIB, true, &[resume]);
            assert_eq!(
                r,
                Err(FwError::MapGpa {
                    gpa: base,
                    status: vmcall::RETRY,
                    resume
                }),
                "{resume:#x}"
            );
        }
        let back = [SHARED | (base + MIB), SHARED | (base + 4096)];
        let (r, _) = map_gpa(&mut tdx(), base, 2 * MIB, true, &back);
        assert!(matches!(r, Err(FwError::MapGpa { gpa, .. }) if gpa == base + MIB));
    }

    #[test]
    fn map_gpa_gives_up_on_a_host_that_stalls() {
        let base = 0x1000_0000;
        let stall = [SHARED | base; MAP_GPA_STALLS as usize + 1];
        let (r, calls) = map_gpa(&mut tdx(), base, 2 * MIB, true, &stall);
        assert!(matches!(r, Err(FwError::MapGpa { .. })));
        assert_eq!(calls.len(), MAP_GPA_STALLS as usize + 1);
        let (r, _) = map_gpa(&mut tdx(), base, 2 * MIB, true, &stall[1..]);
        assert_eq!(r, Ok(()), "one stall fewer is tolerated");
    }

    #[test]
    fn map_gpa_reports_the_hosts_error() {
        let r = tdx().map_gpa_with(0x1000_0000, MIB, true, |_, _| {
            Err((0, TdVmcallError::TdxOperandInvalid))
        });
        assert_eq!(
            r,
            Err(FwError::MapGpa {
                gpa: 0x1000_0000,
                status: vmcall::INVALID_OPERAND,
                resume: 0
            })
        );
    }

    #[test]
    fn accept_retries_a_busy_operand_a_few_times() {
        let mut n = 0;
        let r = accept_with(|| {
            n += 1;
            if n < 3 {
                Err(TdCallError::TdxOperandBusy)
            } else {
                Ok(())
            }
        });
        assert_eq!((r, n), (Accept::Done, 3));
        let mut n = 0;
        let r = accept_with(|| {
            n += 1;
            Err(TdCallError::TdxOperandBusy)
        });
        assert_eq!(r, Accept::Failed(status::CLASS_OPERAND_BUSY));
        assert_eq!(n, BUSY_RETRIES + 1);
    }

    #[test]
    fn accept_outcomes_are_named_after_the_status() {
        assert_eq!(
            accept_with(|| Err(TdCallError::TdxPageAlreadyAccepted)),
            Accept::AlreadyAccepted
        );
        assert_eq!(
            accept_with(|| Err(TdCallError::TdxPageSizeMismatch)),
            Accept::SizeMismatch
        );
        assert_eq!(
            accept_with(|| Err(TdCallError::TdxOperandInvalid)),
            Accept::Failed(status::CLASS_OPERAND_INVALID)
        );
    }

    fn header(version: u64, status: u64, out_len: u32) -> QuoteBufHeader {
        QuoteBufHeader {
            version,
            status,
            in_len: TDREPORT_SIZE as u32,
            out_len,
        }
    }

    #[test]
    fn a_quote_header_is_checked_before_its_length_is_used() {
        use get_quote::status::{IN_FLIGHT, SUCCESS};
        let v = get_quote::VERSION;
        assert_eq!(quote_len(&header(v, IN_FLIGHT, 0)), Ok(None));
        assert_eq!(quote_len(&header(v, SUCCESS, 5000)), Ok(Some(5000)));
        assert_eq!(
            quote_len(&header(v, 0x8000_0000_0000_0001, 5000)),
            Err(FwError::Attestation {
                code: 0x8000_0000_0000_0001
            })
        );
        assert_eq!(
            quote_len(&header(v + 1, SUCCESS, 5000)),
            Err(FwError::Attestation { code: SUCCESS })
        );
        assert_eq!(quote_len(&header(v, SUCCESS, 0)), Err(FwError::Hostcall));
        let too_long = (QUOTE_BUFFER_SIZE - HEADER_SIZE as u64 + 1) as u32;
        assert_eq!(
            quote_len(&header(v, SUCCESS, too_long)),
            Err(FwError::Hostcall)
        );
    }

    #[test]
    fn the_td_platform_says_what_boot_needs() {
        let t = tdx();
        assert_eq!(
            t.pte_masks(),
            PteMasks {
                private: 0,
                shared: SHARED
            }
        );
        assert!(t.fresh_memory_is_zero());
        assert_eq!(t.ram_limit(), TDX_MAX_GUEST_MEMORY);
        assert_eq!(t.guest_device(), GuestDevice::TdxGuest);
        assert_eq!(t.rescinded_pages(), (0, 0));
    }
}
