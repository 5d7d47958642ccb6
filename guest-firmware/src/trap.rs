//! Exception handling: page faults of the app are resolved from its VMAs (demand
//! paging); any other fault of the app ends it the way Linux reports a fatal signal
//! (exit status 128 + signal); a fault in the firmware itself is fatal.

use crate::arch::cpu::read_cr2;
use crate::arch::idt::TrapFrame;
use crate::kernel::{UserMemError, KERNEL};

const SIGILL: u8 = 4;
const SIGTRAP: u8 = 5;
const SIGBUS: u8 = 7;
const SIGFPE: u8 = 8;
const SIGSEGV: u8 = 11;

/// Dispatch one exception.
pub fn handle_exception(frame: &mut TrapFrame) {
    let user = frame.from_user();
    if frame.vector == 14 && user {
        let va = read_cr2();
        let present = frame.error_code & 1 != 0;
        let write = frame.error_code & 2 != 0;
        let mut guard = KERNEL.lock();
        let Some(k) = guard.as_mut() else { crate::fatal("page fault before boot finished") };
        match k.handle_fault(va, write, present) {
            Ok(true) => return,
            Ok(false) | Err(UserMemError::Fault) => {
                let mut msg = crate::fmt::Buf::new();
                let _ = core::fmt::write(
                    &mut msg,
                    format_args!("nacre: app segfault at {va:#x} (rip {:#x}, error {:#x})\n", frame.rip, frame.error_code),
                );
                let _ = k.snp.console_write(2, msg.as_bytes());
                crate::syscall::exit_app(k, 128 + SIGSEGV)
            }
            Err(UserMemError::NoMemory) => {
                let _ = k.snp.console_write(2, b"nacre: out of guest memory\n");
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
        let Some(k) = guard.as_mut() else { crate::fatal("exception before boot finished") };
        let mut msg = crate::fmt::Buf::new();
        let _ = core::fmt::write(
            &mut msg,
            format_args!("nacre: app exception {} at rip {:#x}\n", frame.vector, frame.rip),
        );
        let _ = k.snp.console_write(2, msg.as_bytes());
        crate::syscall::exit_app(k, 128 + sig)
    }
    let mut msg = crate::fmt::Buf::new();
    let _ = core::fmt::write(
        &mut msg,
        format_args!(
            "firmware exception {} at rip {:#x} error {:#x} cr2 {:#x}",
            frame.vector,
            frame.rip,
            frame.error_code,
            read_cr2()
        ),
    );
    crate::fatal(msg.as_str())
}
