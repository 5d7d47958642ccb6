//! One small wrapper per trapping instruction (PVALIDATE, VMGEXIT). On the emulated
//! platform ([`Backend::Doorbell`]) each is an `out imm8, al` doorbell that leaves the
//! architectural operand registers in place for the host (shared-abi `doorbell.rs`).

use crate::platform::Backend;
use core::arch::asm;
use nacre_shared_abi::doorbell::{DOORBELL_PVALIDATE, DOORBELL_VMGEXIT};
use nacre_shared_abi::snp::rmp::{PvalidateResult, RmpPageSize};

/// PVALIDATE (AMD APM vol. 3, "PVALIDATE") the page of `size` at guest virtual address
/// `va`, through `backend`.
///
/// # Safety
/// `va` must map the page's private GPA. Rescinding (`validate == false`) makes every
/// later private access to the page fault: the caller must own the page and stop using
/// it as private memory. Validating makes the page's current contents the guest's:
/// nothing may be using it.
pub unsafe fn pvalidate(
    backend: Backend,
    va: u64,
    size: RmpPageSize,
    validate: bool,
) -> PvalidateResult {
    let rax: u64;
    let cf: u8;
    if backend == Backend::Doorbell {
        // SAFETY: the doorbell is an I/O write the host completes; it changes only
        // RAX and RFLAGS, which are declared as outputs (flags are not preserved).
        unsafe {
            asm!(
                "out {port}, al",
                "setc {cf}",
                port = const DOORBELL_PVALIDATE,
                cf = out(reg_byte) cf,
                inout("rax") va => rax,
                in("rcx") size.operand(),
                in("rdx") u64::from(validate),
                options(nostack),
            );
        }
    } else {
        // SAFETY: PVALIDATE (F2 0F 01 FF) with RAX = VA, RCX = size, RDX = validate;
        // it writes EAX and rFLAGS only.
        unsafe {
            asm!(
                ".byte 0xF2, 0x0F, 0x01, 0xFF",
                "setc {cf}",
                cf = out(reg_byte) cf,
                inout("rax") va => rax,
                in("rcx") size.operand(),
                in("rdx") u64::from(validate),
                options(nostack),
            );
        }
    }
    PvalidateResult {
        rax: rax as u32,
        cf: cf != 0,
    }
}

/// Exit to the hypervisor with the GHCB MSR as it stands (VMGEXIT, GHCB specification
/// 2.3), through `backend`.
///
/// # Safety
/// The GHCB MSR must hold a request the caller is ready to have answered: the host
/// may rewrite the registered GHCB page and the GHCB MSR.
pub unsafe fn vmgexit(backend: Backend) {
    if backend == Backend::Doorbell {
        // SAFETY: the doorbell changes no guest register; the host may write shared
        // memory and the GHCB MSR, which the caller expects.
        unsafe {
            asm!("out {port}, al", port = const DOORBELL_VMGEXIT, in("al") 0u8, options(nostack))
        };
    } else {
        // SAFETY: VMGEXIT (`rep vmmcall`) with the GHCB MSR set up by the caller.
        unsafe { asm!("rep vmmcall", options(nostack)) };
    }
}
