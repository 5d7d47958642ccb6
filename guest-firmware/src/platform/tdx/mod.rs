//! Intel TDX: detection, TDG.VP.INFO, memory acceptance (TDG.MEM.PAGE.ACCEPT), MapGPA,
//! the hostcall doorbell through TDVMCALL Instruction.IO, TDG.MR.REPORT and GetQuote,
//! and ReportFatalError.
//!
//! TDCALLs go through the `tdx-guest` crate. On TDX hardware the TDX module executes
//! them; on the emulated platform the instruction raises #UD and [`trap`] forwards it
//! to the host through the TDCALL doorbell with its registers unchanged.

pub mod trap;

use crate::error::FwError;
use core::arch::asm;
use nacre_shared_abi::hostcall::HOSTCALL_PORT;
use nacre_shared_abi::layout::{KERNEL_VA_BASE, PAGE_SIZE_4K};
use nacre_shared_abi::tdx::{shared_bit, status, vmcall, AcceptLevel};
use nacre_shared_abi::tdx_report::{REPORT_DATA_SIZE, TDREPORT_SIZE};
use tdx_guest::tdcall::TdCallError;
use tdx_guest::tdvmcall::{IoSize, TdVmcallError};

/// CPUID leaf whose EBX, EDX, ECX spell "IntelTDX    " in a TD (Linux
/// `arch/x86/coco/tdx/tdx.c`, `TDX_CPUID_LEAF_ID` and `TDX_IDENT`).
pub const TDX_CPUID_LEAF: u32 = 0x21;
/// The signature, in EBX, EDX, ECX order.
pub const TDX_IDENT: [u8; 12] = *b"IntelTDX    ";

/// How many times an OPERAND_BUSY accept is retried before it is an error (td-shim
/// retries 5 times, SPECS.md 6.3).
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

/// TDX platform state.
#[derive(Debug)]
pub struct Tdx {
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
pub fn detect() -> bool {
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
    let mut busy = 0;
    loop {
        // SAFETY: the caller owns the page; the operand was checked by `rcx`.
        let r = unsafe { tdx_guest::tdcall::accept_page(rcx & 7, rcx & !7) };
        return match r {
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
    /// Platform state for a TD whose shared bit is `shared_bit`.
    pub fn new(shared_bit: u64) -> Self {
        Self {
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
    pub fn ring_hostcall(&mut self, page: u64) -> Result<(), FwError> {
        let page = u32::try_from(page).map_err(|_| FwError::Hostcall)?;
        tdx_guest::tdvmcall::io_write(IoSize::Size4, HOSTCALL_PORT, page)
            .map_err(|_| FwError::Hostcall)
    }

    /// TDVMCALL MapGPA over the whole range `[gpa, gpa + len)`: to shared when `shared`,
    /// else to private. The host may answer RETRY with the GPA to resume from; that
    /// GPA must lie in the range and not go backwards (a host that stalls or rewinds
    /// is refused).
    pub fn map_gpa(&mut self, gpa: u64, len: u64, shared: bool) -> Result<(), FwError> {
        let tag = if shared { self.shared_bit } else { 0 };
        let end = gpa + len;
        let mut at = gpa;
        let mut stalls = 0;
        while at < end {
            match tdx_guest::tdvmcall::map_gpa(at | tag, end - at) {
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

fn vmcall_status(e: &TdVmcallError) -> u64 {
    match e {
        TdVmcallError::TdxRetry => vmcall::RETRY,
        TdVmcallError::TdxOperandInvalid => vmcall::INVALID_OPERAND,
        TdVmcallError::TdxGpaInuse => vmcall::GPA_INUSE,
        TdVmcallError::TdxAlignError => vmcall::ALIGN_ERROR,
        _ => u64::MAX,
    }
}

/// TDVMCALL ReportFatalError with `code` (no message page), then stop. The host ends
/// the TD; should it resume us, we halt.
pub fn report_fatal_error(code: u64) -> ! {
    // SAFETY: TDCALL leaf 0 (TDG.VP.VMCALL), RCX exposes R10-R13 to the VMM, R11 =
    // ReportFatalError, R12 = the error code without the "message" bit 63 (SPECS.md
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
