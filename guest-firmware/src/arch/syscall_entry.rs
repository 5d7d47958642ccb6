//! SYSCALL entry: switch to the kernel stack, save the registers the Linux syscall
//! ABI preserves (everything but RAX, RCX, R11) and the SSE state, call
//! [`crate::syscall::dispatch`], restore, SYSRET.

use core::arch::global_asm;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;
use x86_64::VirtAddr;

/// Registers saved on syscall entry, lowest address first.
#[derive(Debug)]
#[repr(C)]
pub struct SyscallFrame {
    pub rax: u64,
    pub r9: u64,
    pub r8: u64,
    pub r10: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r11: u64,
    pub rcx: u64,
}

#[no_mangle]
static mut NACRE_USER_RSP: u64 = 0;
#[no_mangle]
static mut NACRE_KERNEL_RSP: u64 = 0;

global_asm!(
    ".global nacre_syscall_entry",
    "nacre_syscall_entry:",
    "mov [rip + NACRE_USER_RSP], rsp",
    "mov rsp, [rip + NACRE_KERNEL_RSP]",
    "push rcx", "push r11", "push rdi", "push rsi", "push rdx", "push r10", "push r8", "push r9", "push rax",
    "mov rdi, rsp",
    "sub rsp, 520",
    "fxsave64 [rsp]",
    "cld",
    "call {dispatch}",
    "fxrstor64 [rsp]",
    "add rsp, 528",
    "pop r9", "pop r8", "pop r10", "pop rdx", "pop rsi", "pop rdi", "pop r11", "pop rcx",
    "mov rsp, [rip + NACRE_USER_RSP]",
    "sysretq",
    dispatch = sym entry_dispatch,
);

// A syscall that arrived through the trampoline (`nacre_ud_entry` in `idt.rs` sends a
// #UD at the trampoline's address from ring 3 here, past the generic exception path):
// save what the syscall ABI preserves, dispatch, then return as SYSRET would: RAX =
// the result, RIP = the app's RCX, the app's arithmetic and direction flags from its
// R11 (IOPL, IF, TF and the rest stay the firmware's). Frame offsets after the nine
// pushes: rax 0, r9 8, r8 16, r10 24, rdx 32, rsi 40, rdi 48, r11 56, rcx 64, then the
// #UD's RIP 72, CS 80, RFLAGS 88, RSP 96, SS 104.
global_asm!(
    ".global nacre_trampoline_syscall",
    "nacre_trampoline_syscall:",
    "push rcx", "push r11", "push rdi", "push rsi", "push rdx", "push r10", "push r8", "push r9", "push rax",
    "mov rdi, rsp",
    "sub rsp, 512",
    "fxsave64 [rsp]",
    "cld",
    "call {dispatch}",
    "fxrstor64 [rsp]",
    "add rsp, 512",
    "mov rcx, [rsp + 64]",
    "mov [rsp + 72], rcx",
    "mov rcx, [rsp + 56]",
    "and rcx, {user_flags}",
    "mov r11, [rsp + 88]",
    "and r11, {kernel_flags}",
    "or r11, rcx",
    "mov [rsp + 88], r11",
    "add rsp, 8",
    "pop r9", "pop r8", "pop r10", "pop rdx", "pop rsi", "pop rdi", "pop r11", "pop rcx",
    "iretq",
    dispatch = sym entry_dispatch,
    user_flags = const USER_FLAGS,
    kernel_flags = const !USER_FLAGS,
);

/// The RFLAGS bits a syscall returns as the app had them: CF, PF, AF, ZF, SF, DF, OF.
const USER_FLAGS: u64 = 0x0CD5;

extern "C" {
    fn nacre_syscall_entry();
    fn nacre_syscall_trampoline();
}

// The SYSCALL trampoline for the emulated platform, alone in a page that is mapped
// user-accessible. On these machines the host's software virtualization runs the
// guest kernel in an instruction emulator and delivers the app's SYSCALL to LSTAR
// without leaving ring 3 (and it does not deliver INT n from ring 3 either); the
// trampoline's UD2 enters ring 0 as #UD at a known address instead (see `trap.rs`).
// RCX and R11 hold the return RIP and RFLAGS as SYSCALL left them.
//
// The same page holds the ring-3 copy helpers of `arch/upcall.rs`: `rep movsb` or
// `rep stosb` with the operands the upcall loads, then a `ud2` whose address tells the
// #UD handler that the helper is done. The page is padded so that nothing else of the
// firmware shares it.
global_asm!(
    ".section .text.trampoline, \"ax\"",
    ".balign 4096",
    ".global nacre_syscall_trampoline",
    "nacre_syscall_trampoline:",
    "ud2",
    ".balign 64",
    ".global nacre_user_copy",
    "nacre_user_copy:",
    "rep movsb",
    ".global nacre_user_copy_done",
    "nacre_user_copy_done:",
    "ud2",
    ".balign 64",
    ".global nacre_user_fill",
    "nacre_user_fill:",
    "rep stosb",
    ".global nacre_user_fill_done",
    "nacre_user_fill_done:",
    "ud2",
    ".balign 4096",
    ".text",
);

/// The user-accessible alias of the trampoline page, the value of LSTAR on the
/// emulated platform (the firmware itself is mapped supervisor-only).
pub const TRAMPOLINE_VA: u64 = nacre_shared_abi::layout::KERNEL_VA_BASE + 0x6000_0000;

/// Address of the trampoline code in the firmware image.
pub fn trampoline_code_va() -> u64 {
    nacre_syscall_trampoline as *const () as u64
}

/// Address the app executes the trampoline at.
pub fn trampoline_va() -> u64 {
    TRAMPOLINE_VA
}

extern "C" fn entry_dispatch(frame: &mut SyscallFrame) -> u64 {
    crate::syscall::dispatch(frame)
}

/// RFLAGS bits SYSCALL clears on entry (IA32_FMASK): TF, IF, DF, IOPL, NT, AC, as
/// Linux does (`arch/x86/kernel/cpu/common.c`, `idt_syscall_init`).
const SYSCALL_FMASK: RFlags = RFlags::TRAP_FLAG
    .union(RFlags::INTERRUPT_FLAG)
    .union(RFlags::DIRECTION_FLAG)
    .union(RFlags::IOPL_LOW)
    .union(RFlags::IOPL_HIGH)
    .union(RFlags::NESTED_TASK)
    .union(RFlags::ALIGNMENT_CHECK);

/// Enable SYSCALL/SYSRET with the entry above, or with the trampoline when
/// `via_trampoline` (the emulated platforms, see
/// [`crate::platform::Backend::syscall_via_trampoline`]).
///
/// # Safety
/// Call once at boot after the GDT is loaded.
pub unsafe fn init(via_trampoline: bool) {
    // SAFETY: single-threaded boot; nothing reads the kernel stack pointer before the
    // first SYSCALL, which cannot come before this returns.
    unsafe { NACRE_KERNEL_RSP = super::gdt::kernel_stack_top() };
    // SAFETY: setting EFER.SCE (AMD APM vol. 2, 3.1.7) only enables SYSCALL/SYSRET;
    // every other bit is written back as read.
    unsafe { Efer::write_raw(Efer::read_raw() | EferFlags::SYSTEM_CALL_EXTENSIONS.bits()) };
    // SAFETY: the selectors match the GDT in `gdt.rs`: STAR[47:32] = kernel CS (SS =
    // + 8), STAR[63:48] = 0x10, so that SYSRET loads SS = 0x18 | 3 and CS = 0x20 | 3.
    unsafe { Star::write_raw(0x10, super::gdt::KERNEL_CS) };
    let entry = if via_trampoline {
        trampoline_va()
    } else {
        nacre_syscall_entry as *const () as u64
    };
    LStar::write(VirtAddr::new_truncate(entry));
    SFMask::write(SYSCALL_FMASK);
}
