//! SYSCALL entry: switch to the kernel stack, save the registers the Linux syscall
//! ABI does not keep for the callee (RAX, the arguments, RCX, R11) and the SSE
//! state, call [`crate::syscall::dispatch`], restore, SYSRET.
//!
//! The callee-saved registers (RBX, RBP, R12-R15) are left to the Rust code, which
//! gives them back unchanged, so a syscall saves nine registers and no more. On the
//! way out one byte, the signal layer's exit hint for this vCPU (found through the
//! task register), says whether there may be exit work (a signal to deliver, an rt_sigreturn, an armed timer); only then does the
//! exit path ask [`crate::syscall::prepare_exit`], and only if there is work does it
//! store the rest, building a [`TrapFrame`] of the app's whole register state below
//! the FXSAVE image, and call [`crate::syscall::exit_work`], which may rewrite any of
//! it; then it returns to the app with IRETQ, which, unlike SYSRET, restores RCX and
//! R11 too.

use super::fpu::FxImage;
use super::gdt::MAX_CPUS;
use super::idt::TrapFrame;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::registers::model_specific::{Efer, EferFlags, KernelGsBase, LStar, SFMask, Star};
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

/// Each vCPU's syscall stack words: the kernel stack pointer its SYSCALL entry
/// starts on, and a word that carries the app's RSP across the stack switch. The
/// SYSCALL entry reaches its vCPU's pair through IA32_KERNEL_GS_BASE (SWAPGS).
#[no_mangle]
static mut NACRE_SYSCALL_STACKS: [[u64; 2]; MAX_CPUS] = [[0; 2]; MAX_CPUS];

/// RFLAGS.IF when the app runs with interrupts on (time slices), else 0: the
/// trampoline path returns with it set. The #UD that enters that path was raised
/// after the SYSCALL instruction had masked IF in ring 3 (`SYSCALL_FMASK`), so the
/// interrupt flag of the #UD's frame is not the app's.
#[no_mangle]
static mut NACRE_USER_IF: u64 = 0;

/// Whether syscalls arrive through the trampoline (set once at boot).
static VIA_TRAMPOLINE: AtomicBool = AtomicBool::new(false);

// The SYSCALL path keeps the app's RSP on the thread's kernel stack, above the
// SyscallFrame (the vCPU's second stack word only carries it across the stack switch),
// so that a thread that blocks in a syscall returns with its own. SWAPGS makes GS
// point at the vCPU's stack words for three instructions; the firmware addresses
// nothing else through GS, so the app's GS base is back before anything else runs.
//
// Frame offsets of the exit-work paths: the TrapFrame (176 bytes) is built below the
// FXSAVE image, which sits below the SyscallFrame.
//   SYSCALL:    TrapFrame 0, image 176, SyscallFrame 688 (image + 512), the app's
//               RSP 760.
//   trampoline: TrapFrame 0, image 176, SyscallFrame 688 (image + 512), then the #UD's
//               RIP 760, CS 768, RFLAGS 776, RSP 784, SS 792.
// TrapFrame offsets: r15 0, r14 8, r13 16, r12 24, rbp 64, rbx 104, rax 112.
global_asm!(
    ".global nacre_syscall_entry",
    "nacre_syscall_entry:",
    "swapgs",
    "mov gs:[8], rsp",
    "mov rsp, gs:[0]",
    "push qword ptr gs:[8]",
    "swapgs",
    "push rcx", "push r11", "push rdi", "push rsi", "push rdx", "push r10", "push r8", "push r9", "push rax",
    "mov rdi, rsp",
    "sub rsp, 512",
    "fxsave64 [rsp]",
    "cld",
    "call {dispatch}",
    // This vCPU's exit hint: its index is TR / 16 - 2 (TR = 0x28 + 16 * index).
    "str cx",
    "movzx ecx, cx",
    "shr ecx, 4",
    "lea rdx, [rip + {hint}]",
    "cmp byte ptr [rdx + rcx - 2], 0",
    "jne 4f",
    "5:",
    "fxrstor64 [rsp]",
    "add rsp, 520",
    "pop r9", "pop r8", "pop r10", "pop rdx", "pop rsi", "pop rdi", "pop r11", "pop rcx",
    "pop rsp",
    "sysretq",
    "4:",
    "push rax",
    "sub rsp, 8",
    "call {prepare}",
    "add rsp, 8",
    "test al, al",
    "pop rax",
    "jz 5b",
    "sub rsp, 176",
    "mov [rsp], r15", "mov [rsp + 8], r14", "mov [rsp + 16], r13", "mov [rsp + 24], r12",
    "mov [rsp + 64], rbp", "mov [rsp + 104], rbx", "mov [rsp + 112], rax",
    "mov rdi, rsp",
    "lea rsi, [rsp + 176]",
    "lea rdx, [rsp + 688]",
    "mov rcx, [rsp + 760]",
    "mov r8, [rdx + 56]",
    "call {exit_work}",
    "jmp nacre_syscall_full_return",
    dispatch = sym entry_dispatch,
    hint = sym crate::syscall::signal::NACRE_EXIT_HINTS,
    prepare = sym entry_prepare_exit,
    exit_work = sym entry_exit_work,
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
    // This vCPU's exit hint: its index is TR / 16 - 2 (TR = 0x28 + 16 * index).
    "str cx",
    "movzx ecx, cx",
    "shr ecx, 4",
    "lea rdx, [rip + {hint}]",
    "cmp byte ptr [rdx + rcx - 2], 0",
    "jne 4f",
    "5:",
    "fxrstor64 [rsp]",
    "add rsp, 512",
    "mov rcx, [rsp + 64]",
    "mov [rsp + 72], rcx",
    "mov rcx, [rsp + 56]",
    "and rcx, {user_flags}",
    "mov r11, [rsp + 88]",
    "and r11, {kernel_flags}",
    "or r11, rcx",
    "or r11, [rip + NACRE_USER_IF]",
    "mov [rsp + 88], r11",
    "add rsp, 8",
    "pop r9", "pop r8", "pop r10", "pop rdx", "pop rsi", "pop rdi", "pop r11", "pop rcx",
    "iretq",
    "4:",
    "push rax",
    "sub rsp, 8",
    "call {prepare}",
    "add rsp, 8",
    "test al, al",
    "pop rax",
    "jz 5b",
    "sub rsp, 176",
    "mov [rsp], r15", "mov [rsp + 8], r14", "mov [rsp + 16], r13", "mov [rsp + 24], r12",
    "mov [rsp + 64], rbp", "mov [rsp + 104], rbx", "mov [rsp + 112], rax",
    "mov rdi, rsp",
    "lea rsi, [rsp + 176]",
    "lea rdx, [rsp + 688]",
    "mov rcx, [rsp + 784]",
    "mov r8, [rsp + 776]",
    "call {exit_work}",
    // Both paths: the image at TrapFrame + 176; the rest of the stack is abandoned.
    ".global nacre_syscall_full_return",
    "nacre_syscall_full_return:",
    "fxrstor64 [rsp + 176]",
    "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
    "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
    "add rsp, 16",
    "iretq",
    dispatch = sym entry_dispatch,
    hint = sym crate::syscall::signal::NACRE_EXIT_HINTS,
    prepare = sym entry_prepare_exit,
    exit_work = sym entry_exit_work,
    user_flags = const USER_FLAGS,
    kernel_flags = const !USER_FLAGS,
);

// The exit paths find their vCPU's exit hint at TR / 16 - 2.
const _: () = assert!(super::gdt::TSS_SEL / 16 == 2 && !super::gdt::TSS_SEL.is_multiple_of(16));

/// The RFLAGS bits a syscall returns as the app had them: CF, PF, AF, ZF, SF, DF, OF.
const USER_FLAGS: u64 = 0x0CD5;

/// The `vector` a [`TrapFrame`] built by the syscall exit path carries (no exception
/// has a vector this large).
pub const SYSCALL_VECTOR: u64 = 0x100;

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
    // The FPU helpers of `arch/fpu.rs`. XSAVE and XRSTOR take their feature mask in
    // EDX:EAX; the upcall zeroes RDX and every feature nacre enables is below bit 32.
    // Save for a signal frame (RDI: the frame's XSAVE area, RSI: the initial state,
    // EAX: the features): zero the header, XSAVE, mark x87 and SSE present, then load
    // the initial state for the handler.
    ".balign 64",
    ".global nacre_user_xsave",
    "nacre_user_xsave:",
    "mov qword ptr [rdi + 512], 0",
    "mov qword ptr [rdi + 520], 0",
    "mov qword ptr [rdi + 528], 0",
    "mov qword ptr [rdi + 536], 0",
    "mov qword ptr [rdi + 544], 0",
    "mov qword ptr [rdi + 552], 0",
    "mov qword ptr [rdi + 560], 0",
    "mov qword ptr [rdi + 568], 0",
    "xsave64 [rdi]",
    "or byte ptr [rdi + 512], 3",
    "xrstor64 [rsi]",
    ".global nacre_user_xsave_done",
    "nacre_user_xsave_done:",
    "ud2",
    // The same without XSAVE: FXSAVE, then the initial x87 and SSE state.
    ".balign 64",
    ".global nacre_user_fxsave",
    "nacre_user_fxsave:",
    "fxsave64 [rdi]",
    "fxrstor64 [rsi]",
    ".global nacre_user_fxsave_done",
    "nacre_user_fxsave_done:",
    "ud2",
    // Restore from a signal frame's XSAVE area (RDI): the features in EAX from the
    // initial state (RSI), then those in ECX from the frame.
    ".balign 64",
    ".global nacre_user_xrstor",
    "nacre_user_xrstor:",
    "xrstor64 [rsi]",
    "mov eax, ecx",
    "xrstor64 [rdi]",
    ".global nacre_user_xrstor_done",
    "nacre_user_xrstor_done:",
    "ud2",
    // Restore from a signal frame's FXSAVE image (RDI): the extended features in EAX
    // (none without XSAVE) from the initial state (RSI), then x87 and SSE.
    ".balign 64",
    ".global nacre_user_fxrstor",
    "nacre_user_fxrstor:",
    "test eax, eax",
    "jz 2f",
    "xrstor64 [rsi]",
    "2:",
    "fxrstor64 [rdi]",
    ".global nacre_user_fxrstor_done",
    "nacre_user_fxrstor_done:",
    "ud2",
    ".global nacre_user_helpers_end",
    "nacre_user_helpers_end:",
    // The initial FPU state as an XSAVE area in the standard format: the x87 control
    // word and MXCSR of a reset CPU (for FXRSTOR, which loads them as they are),
    // everything else zero, and an XSTATE_BV of zero (for XRSTOR: every feature in
    // its initial configuration; MXCSR still comes from here).
    ".balign 64",
    ".global nacre_fpu_init_state",
    "nacre_fpu_init_state:",
    ".short 0x037f",
    ".zero 22",
    ".long 0x1f80",
    ".zero 548",
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

/// The exit path's call when the exit hint is set: whether there is exit work.
extern "C" fn entry_prepare_exit() -> bool {
    crate::syscall::prepare_exit()
}

/// The exit path's call when there is exit work: complete `tf` (the
/// entry stub stored the callee-saved registers and the result) from the syscall's
/// frame, the app's RSP and the RFLAGS the plain exit would give it (`base_rflags`,
/// whose arithmetic and direction flags the app's R11 replaces, as on that exit).
extern "C" fn entry_exit_work(
    tf: &mut TrapFrame,
    image: *mut FxImage,
    sys: &SyscallFrame,
    user_rsp: u64,
    base_rflags: u64,
) {
    tf.r11 = sys.r11;
    tf.r10 = sys.r10;
    tf.r9 = sys.r9;
    tf.r8 = sys.r8;
    tf.rdi = sys.rdi;
    tf.rsi = sys.rsi;
    tf.rdx = sys.rdx;
    tf.rcx = sys.rcx;
    tf.vector = SYSCALL_VECTOR;
    tf.error_code = 0;
    tf.rip = sys.rcx;
    tf.cs = u64::from(super::gdt::USER_CS);
    tf.rflags = (base_rflags & !USER_FLAGS) | (sys.r11 & USER_FLAGS) | user_if();
    tf.rsp = user_rsp;
    tf.ss = u64::from(super::gdt::USER_DS);
    // SAFETY: both entry stubs pass the FXSAVE image they keep on this thread's
    // kernel stack, below the syscall's frame, which nothing else refers to.
    unsafe { crate::syscall::exit_work(tf, image, sys.rax) };
}

/// Whether syscalls arrive through the trampoline (for the vCPUs that start after
/// boot chose).
pub fn via_trampoline() -> bool {
    VIA_TRAMPOLINE.load(Ordering::Relaxed)
}

/// RFLAGS.IF if the app runs with interrupts on, else 0.
pub fn user_if() -> u64 {
    // SAFETY: a plain read of a static written once at boot.
    unsafe { (&raw const NACRE_USER_IF).read() }
}

/// Let the app run with interrupts on (time slices): every return to it sets IF.
pub fn set_user_interrupts() {
    // SAFETY: written once at boot, before the app runs.
    unsafe { (&raw mut NACRE_USER_IF).write(1 << 9) };
}

/// The app's RSP at the syscall in progress.
pub fn user_rsp() -> u64 {
    // Either entry put it at the top of the running thread's kernel stack: the
    // SYSCALL entry pushes it first; the #UD that entered the trampoline path came
    // from ring 3, so the CPU pushed its frame there (TSS.RSP0, which only an upcall
    // moves, and none is in progress between syscalls): SS, then RSP.
    let below_top = if VIA_TRAMPOLINE.load(Ordering::Relaxed) {
        16
    } else {
        8
    };
    let rsp_slot = (kernel_stack_top() - below_top) as *const u64;
    // SAFETY: the slot lies in the running thread's kernel stack, written by the
    // entry of the syscall in progress and not overwritten while it runs (the
    // syscall's own frames sit below it).
    unsafe { rsp_slot.read() }
}

/// This vCPU's syscall stack words.
fn stack_words() -> *mut [u64; 2] {
    (&raw mut NACRE_SYSCALL_STACKS)
        .cast::<[u64; 2]>()
        .wrapping_add(super::gdt::cpu_index())
}

/// The top of the running thread's kernel stack, where syscalls start.
pub fn kernel_stack_top() -> u64 {
    // SAFETY: a plain read of this vCPU's word, which only this vCPU writes.
    unsafe { (*stack_words())[0] }
}

/// Make `top` the kernel stack syscalls start on (the thread switched to).
pub fn set_kernel_stack(top: u64) {
    // SAFETY: a plain write of this vCPU's word; its SYSCALL entry reads it only when
    // ring 3 enters ring 0, which cannot happen while ring 0 runs this.
    unsafe { (*stack_words())[0] = top };
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
/// `stack_top` is where this vCPU's syscalls start until a thread switch says
/// otherwise.
///
/// # Safety
/// Call once on each vCPU after its GDT and TSS are loaded, before it runs the app.
pub unsafe fn init(via_trampoline: bool, stack_top: u64) {
    set_kernel_stack(stack_top);
    KernelGsBase::write(VirtAddr::new_truncate(stack_words() as u64));
    // SAFETY: setting EFER.SCE (AMD APM vol. 2, 3.1.7) only enables SYSCALL/SYSRET;
    // every other bit is written back as read.
    unsafe { Efer::write_raw(Efer::read_raw() | EferFlags::SYSTEM_CALL_EXTENSIONS.bits()) };
    // SAFETY: the selectors match the GDT in `gdt.rs`: STAR[47:32] = kernel CS (SS =
    // + 8), STAR[63:48] = 0x10, so that SYSRET loads SS = 0x18 | 3 and CS = 0x20 | 3.
    unsafe { Star::write_raw(0x10, super::gdt::KERNEL_CS) };
    VIA_TRAMPOLINE.store(via_trampoline, Ordering::Relaxed);
    let entry = if via_trampoline {
        trampoline_va()
    } else {
        nacre_syscall_entry as *const () as u64
    };
    LStar::write(VirtAddr::new_truncate(entry));
    SFMask::write(SYSCALL_FMASK);
}
