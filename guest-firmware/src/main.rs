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
#![no_std]
#![no_main]

mod app;
mod arch;
mod boot;
mod error;
mod fmt;
mod fs;
mod kernel;
mod libc_mem;
mod mem;
mod platform;
mod syscall;
mod time;
mod trap;

use core::arch::global_asm;
use error::FwError;
use kernel::KERNEL;

const BOOT_STACK_SIZE: usize = 128 * 1024;

#[repr(C, align(4096))]
struct BootStack([u8; BOOT_STACK_SIZE]);

static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "lea rsp, [rip + {stack} + {size}]",
    "xor ebp, ebp",
    // Make sure SSE is usable before any Rust code runs (the precompiled `core`
    // uses it): CR0.EM = 0, CR0.TS = 0, CR0.MP = 1, CR4.OSFXSR = CR4.OSXMMEXCPT = 1.
    "mov rax, cr0",
    "and rax, ~0xC",
    "or rax, 0x2",
    "mov cr0, rax",
    "mov rax, cr4",
    "or rax, 0x600",
    "mov cr4, rax",
    "call {main}",
    "ud2",
    stack = sym BOOT_STACK,
    size = const BOOT_STACK_SIZE,
    main = sym boot_entry,
);

extern "C" fn boot_entry() -> ! {
    match boot::boot() {
        Ok(entry) => boot::enter_user(entry),
        Err(e) => fatal_error(e),
    }
}

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
    // return), so the lock is taken over to print the message.
    if KERNEL.is_locked() {
        // SAFETY: single CPU; the holder is suspended below us for good, and nothing
        // it holds is used after this point except through this new guard.
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

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut msg = fmt::Buf::new();
    msg.push("panic");
    if let Some(l) = info.location() {
        msg.push(" at ")
            .push(l.file())
            .push(":")
            .dec(u64::from(l.line()));
    }
    fatal(msg.as_str())
}

/// `tdx-guest` links the `alloc` crate (its console helpers format into strings). The
/// firmware has no heap and never calls those helpers, so every allocation fails.
struct NoHeap;

// SAFETY: `alloc` never returns memory, so there is nothing to keep consistent.
unsafe impl core::alloc::GlobalAlloc for NoHeap {
    unsafe fn alloc(&self, _: core::alloc::Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: core::alloc::Layout) {}
}

#[global_allocator]
static NO_HEAP: NoHeap = NoHeap;

/// The precompiled `core` refers to the unwinding personality routine; the firmware
/// aborts on panic and never unwinds, so it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
