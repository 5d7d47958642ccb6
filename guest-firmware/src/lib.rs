//! nacre guest firmware.
//!
//! A freestanding ELF that boots on both platforms of one image. On SEV-SNP the host
//! starts it in the 64-bit state of the measured VMSA at `_start`; on TDX the vCPU
//! starts in 32-bit protected mode at the reset vector (`arch/tdx_entry.rs`), which
//! turns on long mode with the measured TDX page tables and jumps to `_start`. It
//! checks the platform named by the measured boot information, builds page tables
//! with the platform's encryption or shared bit, sets up its shared pages, validates
//! or accepts only the memory it uses (lazily, 2 MiB first), loads the measured app
//! and runs it in ring 3 behind a Linux syscall shim. See `docs/design.md`.
//!
//! This library holds all of it but the entry point, the panic handler and the
//! allocator, which the `nacre-firmware` binary (`main.rs`) adds. Built for tests it
//! links `std`, so that its pure parts (page-state change batching, the frame
//! allocator, the ELF and syscall decoders, the file tree, the hostcall checks) run as
//! ordinary unit tests on the build machine; code that executes privileged
//! instructions is never called there. `cargo test --workspace` at the repository
//! root runs them (`tests/tests/firmware_unit.rs`); by hand, in this directory:
//! `RUSTFLAGS= cargo test --lib` (the empty RUSTFLAGS replaces the kernel build flags
//! of `.cargo/config.toml`). The `fuzzing` feature builds the library the same way for
//! the fuzz targets in `tests/fuzz/`, which drive its decoders of host replies as
//! ordinary host code.
#![cfg_attr(not(any(test, feature = "fuzzing")), no_std)]

pub mod app;
pub mod arch;
pub mod boot;
pub mod error;
pub mod fmt;
pub mod fs;
pub mod kernel;
#[cfg(not(any(test, feature = "fuzzing")))]
mod libc_mem;
pub mod mem;
pub mod platform;
pub mod sched;
pub mod syscall;
#[cfg(test)]
pub mod testing;
pub mod time;
pub mod trap;

use error::FwError;
use kernel::KERNEL;

/// Report a fatal firmware error on the console (when there is one) and ask the
/// host to terminate the guest.
pub fn fatal_error(e: FwError) -> ! {
    let mut msg = fmt::Buf::new();
    e.describe(&mut msg);
    report_and_terminate(msg.as_str(), e.term_code())
}

/// Report a fatal firmware bug and terminate.
pub fn fatal(msg: &str) -> ! {
    report_and_terminate(msg, 0xFE)
}

fn report_and_terminate(msg: &str, code: u8) -> ! {
    // A fatal error inside a syscall or fault handler happens with the kernel locked
    // by the code that failed. That code never runs again (this function does not
    // return), so the lock is taken over to print the message. With several vCPUs
    // another may hold it for a moment: wait for it (bounded) rather than share the
    // kernel with it.
    if KERNEL.is_locked()
        && (arch::smp::lock_is_mine_or_wait(|| !KERNEL.is_locked()) || KERNEL.is_locked())
    {
        // SAFETY: the holder is this vCPU's code that failed, suspended below us for
        // good, or a vCPU that did not give the lock up within the timeout (the run
        // ends here either way); nothing either holds is used after this point except
        // through this new guard.
        unsafe { KERNEL.force_unlock() };
    }
    if let Some(mut guard) = KERNEL.try_lock() {
        if let Some(k) = guard.as_mut() {
            let _ = k.console_write(2, b"nacre firmware: fatal: ");
            let _ = k.console_write(2, msg.as_bytes());
            let _ = k.console_write(2, b"\n");
        }
    }
    platform::terminate(code)
}
