//! Exception handling: page faults of the app are resolved from its VMAs (demand
//! paging); any other fault of the app is a signal, as Linux raises it
//! (`arch/x86/kernel/traps.c`, `arch/x86/mm/fault.c`): delivered to the app's handler
//! when it has one, else the app ends the way Linux reports a fatal signal (exit
//! status 128 + signal); a fault in the firmware itself is fatal.

use crate::arch::idt::{self, TrapFrame};
use crate::arch::upcall::{self, Outcome};
use crate::kernel::{Kernel, UserMemError};
use crate::syscall::signal::{self, SigInfo};
use x86_64::registers::control::Cr2;

/// Exception vectors (Intel SDM vol. 3A, table 6-1).
const DE: u64 = 0;
const DB: u64 = 1;
const BP: u64 = 3;
const UD: u64 = 6;
const NP: u64 = 11;
const SS: u64 = 12;
const GP: u64 = 13;
const PF: u64 = 14;
const MF: u64 = 16;
const AC: u64 = 17;
const XM: u64 = 19;

/// Dispatch one exception. Demand paging is the common case and stays short; the
/// rest is out of line.
pub fn handle_exception(frame: &mut TrapFrame) {
    if crate::platform::forward_platform_trap(frame) {
        return;
    }
    let user = frame.is_user();
    if user && upcall::in_helper(frame.rip) && upcall::active() {
        handle_helper_exception(frame);
        return;
    }
    if frame.vector == PF && user {
        let va = Cr2::read_raw();
        let present = frame.error_code & 1 != 0;
        let write = frame.error_code & 2 != 0;
        let mut guard = crate::kernel::lock();
        let Some(k) = guard.as_mut() else {
            crate::fatal("page fault before boot finished")
        };
        match k.handle_fault(va, write, present) {
            Ok(true) => return,
            unresolved => return page_fault_signal(k, frame, va, unresolved),
        }
    }
    if user {
        return user_exception(frame);
    }
    firmware_exception(frame)
}

/// A page fault of the app that demand paging cannot resolve: SIGSEGV (no area:
/// SEGV_MAPERR; an area that does not allow the access: SEGV_ACCERR; `bad_area`,
/// `access_error`), or SIGBUS when memory ran out.
#[cold]
#[inline(never)]
fn page_fault_signal(
    k: &mut Kernel,
    frame: &mut TrapFrame,
    va: u64,
    unresolved: Result<bool, UserMemError>,
) {
    let (sig, info) = match unresolved {
        Ok(_) | Err(UserMemError::Fault) => {
            let code = if k.vmas.find(va).is_some() {
                signal::SEGV_ACCERR
            } else {
                signal::SEGV_MAPERR
            };
            if !k.sig.catches(signal::SIGSEGV) {
                let mut msg = crate::fmt::Buf::new();
                msg.push("nacre: app segfault at ")
                    .hex(va)
                    .push(" (rip ")
                    .hex(frame.rip);
                msg.push(", error ").hex(frame.error_code).push(")\n");
                let _ = k.console_write(2, msg.as_bytes());
            }
            let info = SigInfo::fault(code, va, PF, frame.error_code);
            (signal::SIGSEGV, info)
        }
        Err(UserMemError::NoMemory) => {
            // Said even when the app catches SIGBUS (the Go runtime does, and reports
            // only "unexpected signal"): the reason is the guest's size, not the app.
            // Frames end where the hostcall area, the last part of RAM, begins.
            let (frames_end, _) = k.frames.usage();
            let ram = frames_end + nacre_shared_abi::hostcall::HOSTCALL_AREA_SIZE;
            let mut msg = crate::fmt::Buf::new();
            msg.push("nacre: out of guest memory: the app needs more than the guest's ")
                .dec(ram >> 20)
                .push(" MiB; run it with a larger --memory\n");
            let _ = k.console_write(2, msg.as_bytes());
            let info = SigInfo::fault(signal::BUS_ADRERR, va, PF, frame.error_code);
            (signal::SIGBUS, info)
        }
        Err(UserMemError::Platform(e)) => crate::fatal_error(e),
    };
    deliver(k, frame, sig, info);
}

/// Any other exception of the app: its signal.
#[cold]
#[inline(never)]
fn user_exception(frame: &mut TrapFrame) {
    let mut guard = crate::kernel::lock();
    let Some(k) = guard.as_mut() else {
        crate::fatal("exception before boot finished")
    };
    let image = idt::fx_image(frame);
    // SAFETY: the exception stub saved the app's FXSAVE image there, below the frame;
    // it is only read.
    let fx = unsafe { &(*image).0 };
    let (sig, code, at_rip) = fault_signal(frame.vector, fx);
    let addr = if at_rip { frame.rip } else { 0 };
    if !k.sig.catches(sig) {
        let mut msg = crate::fmt::Buf::new();
        msg.push("nacre: app exception ")
            .dec(frame.vector)
            .push(" at rip ")
            .hex(frame.rip)
            .push("\n");
        let _ = k.console_write(2, msg.as_bytes());
    }
    deliver(
        k,
        frame,
        sig,
        SigInfo::fault(code, addr, frame.vector, frame.error_code),
    );
}

/// Deliver a fault's signal: the frame becomes the handler's, or the app ends.
fn deliver(k: &mut Kernel, frame: &mut TrapFrame, sig: u64, info: SigInfo) {
    let image = idt::fx_image(frame);
    signal::deliver::deliver_fault(k, frame, image, sig, info);
}

/// The signal, si_code, and whether si_addr is the faulting instruction, for an
/// exception `vector` of the app other than a page fault (`arch/x86/kernel/traps.c`).
/// `fx` is the app's FXSAVE image, whose x87 status and MXCSR say which
/// floating-point exception it was (`fpu__exception_code`).
pub fn fault_signal(vector: u64, fx: &[u8; 512]) -> (u64, i32, bool) {
    match vector {
        DE => (signal::SIGFPE, signal::FPE_INTDIV, true),
        DB => (signal::SIGTRAP, signal::TRAP_TRACE, true),
        BP => (signal::SIGTRAP, signal::SI_KERNEL, false),
        UD => (signal::SIGILL, signal::ILL_ILLOPN, true),
        NP | SS => (signal::SIGBUS, signal::SI_KERNEL, false),
        AC => (signal::SIGBUS, signal::BUS_ADRALN, false),
        MF | XM => {
            let raised = if vector == MF {
                let cwd = u16::from_le_bytes([fx[0], fx[1]]);
                let swd = u16::from_le_bytes([fx[2], fx[3]]);
                u32::from(swd & !cwd)
            } else {
                let mxcsr = u32::from_le_bytes([fx[24], fx[25], fx[26], fx[27]]);
                !(mxcsr >> 7) & mxcsr
            };
            let code = if raised & 0x01 != 0 {
                signal::FPE_FLTINV
            } else if raised & 0x04 != 0 {
                signal::FPE_FLTDIV
            } else if raised & 0x08 != 0 {
                signal::FPE_FLTOVF
            } else if raised & 0x12 != 0 {
                signal::FPE_FLTUND
            } else if raised & 0x20 != 0 {
                signal::FPE_FLTRES
            } else {
                signal::SI_KERNEL
            };
            (signal::SIGFPE, code, true)
        }
        GP => (signal::SIGSEGV, signal::SI_KERNEL, false),
        // #TS, #BR, #OF and the rest.
        _ => (signal::SIGSEGV, signal::SI_KERNEL, false),
    }
}

/// An exception in the firmware itself: fatal.
fn firmware_exception(frame: &TrapFrame) -> ! {
    let mut msg = crate::fmt::Buf::new();
    msg.push("firmware exception ")
        .dec(frame.vector)
        .push(" at rip ")
        .hex(frame.rip);
    msg.push(" error ")
        .hex(frame.error_code)
        .push(" cr2 ")
        .hex(Cr2::read_raw());
    crate::fatal(msg.as_str())
}

/// An exception raised by a ring-3 copy helper (`arch/upcall.rs`): its final `ud2`
/// ends the upcall; a page fault is demand paging with the kernel the upcalling code
/// lent, or EFAULT for the syscall if it cannot be resolved; anything else is EFAULT.
fn handle_helper_exception(frame: &mut TrapFrame) {
    if frame.vector == 6 && upcall::is_helper_done(frame.rip) {
        upcall::resume(Outcome::Done);
    }
    if frame.vector != 14 {
        upcall::resume(Outcome::Fault);
    }
    let va = Cr2::read_raw();
    // SAFETY: this exception interrupted a helper, so an upcall is in progress and
    // its caller, suspended, lent the kernel for exactly this.
    let Some(k) = (unsafe { upcall::lent_kernel() }) else {
        crate::fatal("helper fault outside an upcall")
    };
    match k.handle_fault(va, frame.error_code & 2 != 0, frame.error_code & 1 != 0) {
        Ok(true) => {}
        Ok(false) | Err(UserMemError::Fault) => upcall::resume(Outcome::Fault),
        Err(UserMemError::NoMemory) => upcall::resume(Outcome::NoMemory),
        Err(UserMemError::Platform(e)) => crate::fatal_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::signal::*;

    #[test]
    fn exceptions_become_the_signals_linux_sends() {
        let fx = [0u8; 512];
        assert_eq!(fault_signal(DE, &fx), (SIGFPE, FPE_INTDIV, true));
        assert_eq!(fault_signal(UD, &fx), (SIGILL, ILL_ILLOPN, true));
        assert_eq!(fault_signal(GP, &fx), (SIGSEGV, SI_KERNEL, false));
        assert_eq!(fault_signal(BP, &fx), (SIGTRAP, SI_KERNEL, false));
        assert_eq!(fault_signal(SS, &fx), (SIGBUS, SI_KERNEL, false));
        assert_eq!(fault_signal(AC, &fx), (SIGBUS, BUS_ADRALN, false));
    }

    #[test]
    fn floating_point_exceptions_are_told_apart_by_the_unmasked_flag() {
        let mut fx = [0u8; 512];
        // MXCSR: divide-by-zero unmasked (ZM, bit 9, clear) and raised (ZE, bit 2).
        let mxcsr: u32 = 0x1F80 & !(1 << 9) | (1 << 2);
        fx[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        assert_eq!(fault_signal(XM, &fx), (SIGFPE, FPE_FLTDIV, true));
        // x87: invalid operation raised (IE) and unmasked (IM clear).
        let mut fx = [0u8; 512];
        fx[0..2].copy_from_slice(&(0x037Fu16 & !1).to_le_bytes());
        fx[2..4].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(fault_signal(MF, &fx), (SIGFPE, FPE_FLTINV, true));
    }
}
