//! Exception handling: page faults of the app are resolved from its VMAs (demand
//! paging); any other fault of the app ends it the way Linux reports a fatal signal
//! (exit status 128 + signal); a fault in the firmware itself is fatal.

use crate::arch::idt::TrapFrame;
use crate::arch::upcall::{self, Outcome};
use crate::kernel::{UserMemError, KERNEL};
use x86_64::registers::control::Cr2;

const SIGILL: u8 = 4;
const SIGTRAP: u8 = 5;
const SIGBUS: u8 = 7;
const SIGFPE: u8 = 8;
const SIGSEGV: u8 = 11;

/// Dispatch one exception.
pub fn handle_exception(frame: &mut TrapFrame) {
    if crate::platform::forward_platform_trap(frame) {
        return;
    }
    let user = frame.is_user();
    if user && upcall::in_helper(frame.rip) && upcall::active() {
        handle_helper_exception(frame);
        return;
    }
    if frame.vector == 14 && user {
        let va = Cr2::read_raw();
        let present = frame.error_code & 1 != 0;
        let write = frame.error_code & 2 != 0;
        let mut guard = KERNEL.lock();
        let Some(k) = guard.as_mut() else {
            crate::fatal("page fault before boot finished")
        };
        match k.handle_fault(va, write, present) {
            Ok(true) => return,
            Ok(false) | Err(UserMemError::Fault) => {
                let mut msg = crate::fmt::Buf::new();
                msg.push("nacre: app segfault at ")
                    .hex(va)
                    .push(" (rip ")
                    .hex(frame.rip);
                msg.push(", error ").hex(frame.error_code).push(")\n");
                let _ = k.console_write(2, msg.as_bytes());
                crate::syscall::exit_app(k, 128 + SIGSEGV)
            }
            Err(UserMemError::NoMemory) => {
                let _ = k.console_write(2, b"nacre: out of guest memory\n");
                crate::syscall::exit_app(k, 128 + SIGBUS)
            }
            Err(UserMemError::Platform(e)) => crate::fatal_error(e),
        }
    }
    if user {
        let sig = match frame.vector {
            0 | 16 | 19 => SIGFPE,
            1 | 3 => SIGTRAP,
            6 => SIGILL,
            17 => SIGBUS,
            _ => SIGSEGV,
        };
        let mut guard = KERNEL.lock();
        let Some(k) = guard.as_mut() else {
            crate::fatal("exception before boot finished")
        };
        let mut msg = crate::fmt::Buf::new();
        msg.push("nacre: app exception ")
            .dec(frame.vector)
            .push(" at rip ")
            .hex(frame.rip)
            .push("\n");
        let _ = k.console_write(2, msg.as_bytes());
        crate::syscall::exit_app(k, 128 + sig)
    }
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
