//! Bulk copies in ring 3.
//!
//! Where ring 0 runs in KVM's instruction emulator (`docs/design.md`), every iteration
//! of a ring-0 `rep movs` costs about a microsecond, so a ring-0 copy moves some
//! 8 MB/s; ring 3 runs natively. Copies between the app's memory and the I/O windows
//! (the shared hostcall data pages, the packaged files) therefore run in ring 3: the
//! firmware *upcalls* a tiny helper in the user-accessible trampoline page, which does
//! `rep movsb` (or `rep stosb`) and then executes `ud2` at a known address. The #UD
//! handler sees that address and resumes the firmware where it upcalled, as if the
//! upcall were an ordinary function call ([`copy`], [`fill`]).
//!
//! How it works: [`nacre_upcall`] saves the callee-saved registers and the stack pointer
//! and points TSS.RSP0 at that stack pointer, so that the exception which ends the
//! helper (taken from ring 3, so on RSP0) lands below everything the upcalling code still
//! needs; then it IRETQs to the helper. [`resume`] reloads the saved stack pointer and
//! registers and returns from [`nacre_upcall`] with a status. The exception frame the
//! helper's `ud2` pushed is simply abandoned.
//!
//! Page faults of the helper (the app's buffer is demand-paged) go to the ordinary
//! fault handler, which needs the kernel: the upcalling code holds the kernel lock and
//! lends its `&mut Kernel` for the duration of the upcall ([`lent_kernel`]). A fault that
//! cannot be resolved ends the upcall with EFAULT instead of killing the app, so
//! syscalls keep Linux's semantics for bad buffers.
//!
//! The helper only ever touches the two ranges it is given, and the firmware checks
//! those against the app's areas before upcalling.

use crate::kernel::Kernel;
use core::arch::global_asm;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Copies shorter than this are done in ring 0: an upcall costs about as much as a
/// ring-0 copy of this many bytes where ring 0 is emulated.
pub const MIN_UPCALL_BYTES: u64 = 256;

/// Saved kernel stack pointer of the upcall in progress.
#[no_mangle]
static mut NACRE_UPCALL_RSP: u64 = 0;

/// The kernel lent to fault handlers while an upcall runs; null otherwise.
static LENT: AtomicPtr<Kernel> = AtomicPtr::new(core::ptr::null_mut());
/// The vCPU whose upcall is in progress (only the holder of the kernel upcalls, so
/// there is at most one).
static UPCALL_CPU: AtomicUsize = AtomicUsize::new(0);

global_asm!(
    // The helpers themselves (nacre_user_copy, nacre_user_fill) live in the trampoline
    // page, `arch/syscall_entry.rs`.
    // nacre_upcall(rip = rdi, user rdi = rsi, user rsi = rdx, user rcx = rcx, user rax = r8,
    // this vCPU's TSS.RSP0 field = r9)
    ".global nacre_upcall",
    "nacre_upcall:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + NACRE_UPCALL_RSP], rsp",
    "mov [r9], rsp",
    "push {user_ss}",
    "push 0",
    "push 2",
    "push {user_cs}",
    "push rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rax, r8",
    // Hand nothing of the kernel's to ring 3.
    "xor edx, edx",
    "xor ebx, ebx",
    "xor ebp, ebp",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "xor r10d, r10d",
    "xor r11d, r11d",
    "xor r12d, r12d",
    "xor r13d, r13d",
    "xor r14d, r14d",
    "xor r15d, r15d",
    "iretq",
    // nacre_upcall_resume(status = rdi): return `status` from nacre_upcall.
    ".global nacre_upcall_resume",
    "nacre_upcall_resume:",
    "mov rsp, [rip + NACRE_UPCALL_RSP]",
    "mov rax, rdi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    user_ss = const super::gdt::USER_DS as u64,
    user_cs = const super::gdt::USER_CS as u64,
);

extern "C" {
    fn nacre_upcall(rip: u64, rdi: u64, rsi: u64, rcx: u64, rax: u64, rsp0: *mut u64) -> u64;
    fn nacre_upcall_resume(status: u64) -> !;
    fn nacre_user_copy();
    fn nacre_user_copy_done();
    fn nacre_user_fill();
    fn nacre_user_fill_done();
    fn nacre_user_xsave();
    fn nacre_user_xsave_done();
    fn nacre_user_fxsave();
    fn nacre_user_fxsave_done();
    fn nacre_user_xrstor();
    fn nacre_user_xrstor_done();
    fn nacre_user_fxrstor();
    fn nacre_user_fxrstor_done();
    fn nacre_user_helpers_end();
    fn nacre_fpu_init_state();
}

/// How an upcall ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Outcome {
    /// The helper finished.
    Done = 0,
    /// The helper touched memory it may not (EFAULT).
    Fault = 1,
    /// Demand paging ran out of guest memory (ENOMEM).
    NoMemory = 2,
}

/// The user-accessible address of a helper symbol.
fn helper_va(sym: unsafe extern "C" fn()) -> u64 {
    let base = super::syscall_entry::trampoline_code_va();
    super::syscall_entry::TRAMPOLINE_VA + (sym as *const () as u64 - base)
}

/// Whether `rip` lies in a helper (a fault there belongs to an upcall).
pub fn in_helper(rip: u64) -> bool {
    let start = helper_va(nacre_user_copy);
    let end = helper_va(nacre_user_helpers_end);
    (start..end).contains(&rip)
}

/// Whether an upcall is in progress (an exception at a helper address while none is
/// comes from the app jumping there itself, and is the app's own fault).
pub fn active() -> bool {
    !LENT.load(Ordering::Relaxed).is_null()
        && UPCALL_CPU.load(Ordering::Relaxed) == super::gdt::cpu_index()
}

/// Whether `rip` is where a helper ends (its `ud2`).
pub fn is_helper_done(rip: u64) -> bool {
    [
        nacre_user_copy_done as unsafe extern "C" fn(),
        nacre_user_fill_done,
        nacre_user_xsave_done,
        nacre_user_fxsave_done,
        nacre_user_xrstor_done,
        nacre_user_fxrstor_done,
    ]
    .into_iter()
    .any(|done| rip == helper_va(done))
}

/// The kernel the upcalling code lent, for the fault handler of a helper fault.
///
/// # Safety
/// Call only from an exception handler that interrupted a helper (see [`in_helper`]):
/// the lender is suspended inside [`nacre_upcall`] and does not touch the kernel
/// until the upcall ends, so the returned reference is the only live one.
pub unsafe fn lent_kernel() -> Option<&'static mut Kernel> {
    let p = LENT.load(Ordering::Relaxed);
    // SAFETY: the caller's contract; the pointer came from a `&mut Kernel` whose owner
    // is suspended for the whole upcall.
    unsafe { p.as_mut() }
}

/// End the upcall in progress with `outcome` (from the #UD or fault handler that
/// interrupted a helper). Never returns: execution continues in [`copy`] or [`fill`].
pub fn resume(outcome: Outcome) -> ! {
    // SAFETY: only reached from a handler of an exception raised by a helper, so an
    // upcall is in progress and NACRE_UPCALL_RSP holds its saved kernel stack, which
    // lies above everything the exception pushed.
    unsafe { nacre_upcall_resume(outcome as u64) }
}

/// Run a helper. Upcalls nest: a page fault in one helper can need a fill of its own
/// (a reused frame is zeroed in ring 3), so the outer upcall's saved stack pointer,
/// lent kernel and RSP0 are kept here and put back when the inner one ends.
fn run(k: &mut Kernel, rip: u64, rdi: u64, rsi: u64, rcx: u64, rax: u64) -> Outcome {
    // SAFETY: plain reads of a static only the upcall code writes, and only the
    // holder of the kernel upcalls (one chain of upcalls at a time, on its vCPU).
    let outer_rsp = unsafe { (&raw const NACRE_UPCALL_RSP).read() };
    let outer_lent = LENT.swap(k, Ordering::Relaxed);
    UPCALL_CPU.store(super::gdt::cpu_index(), Ordering::Relaxed);
    let outer_rsp0 = super::gdt::rsp0();
    // SAFETY: the helper runs in ring 3 on the current address space and touches only
    // `[rdi, rdi + rcx)` and, for a copy, `[rsi, rsi + rcx)`, which the caller checked
    // lie in the app's areas or the I/O windows. It ends with a #UD (or an unresolvable
    // fault) whose handler calls `resume`, which restores the registers saved here.
    let status = unsafe { nacre_upcall(rip, rdi, rsi, rcx, rax, super::gdt::rsp0_ptr()) };
    // SAFETY: a plain write of a static only the upcall code touches, by the holder of
    // the kernel; the outer upcall (if any) is suspended until this returns.
    unsafe { (&raw mut NACRE_UPCALL_RSP).write(outer_rsp) };
    LENT.store(outer_lent, Ordering::Relaxed);
    super::gdt::set_rsp0(outer_rsp0);
    match status {
        0 => Outcome::Done,
        2 => Outcome::NoMemory,
        _ => Outcome::Fault,
    }
}

/// Copy `len` bytes from user address `src` to user address `dst` in ring 3.
pub fn copy(k: &mut Kernel, dst: u64, src: u64, len: u64) -> Outcome {
    if len == 0 {
        return Outcome::Done;
    }
    run(k, helper_va(nacre_user_copy), dst, src, len, 0)
}

/// The FPU helpers of `arch/fpu.rs`, in the trampoline page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FpuHelper {
    /// Zero the XSAVE header at RDI, XSAVE the features in EAX there, mark x87 and
    /// SSE present, XRSTOR the initial state at RSI.
    XSave,
    /// FXSAVE at RDI, FXRSTOR the initial state at RSI.
    FxSave,
    /// XRSTOR the features in EAX from RSI (initial), then those in ECX from RDI.
    XRestore,
    /// XRSTOR the features in EAX (if any) from RSI (initial), then FXRSTOR from RDI.
    FxRestore,
}

/// Run an FPU helper with the given RDI, RSI, RCX and RAX. The helper touches the
/// 64-byte-aligned XSAVE area (or 16-byte-aligned FXSAVE image) at RDI, which the
/// caller mapped as the app's own memory (writable for a save), and reads the
/// initial state at RSI ([`fpu_init_state_va`]). Its faults are the app's: a
/// malformed area in a restore ends the upcall with [`Outcome::Fault`].
///
/// The save helpers also run from exception handlers on IST1 (a fault delivered as
/// a signal): given such an area none of their instructions can raise an exception
/// that uses IST1 (#PF and #UD have no IST stack). The restore helpers, whose XRSTOR
/// raises #GP (IST1) for a malformed area, run only from rt_sigreturn, on the
/// kernel stack.
pub fn fpu(k: &mut Kernel, helper: FpuHelper, rdi: u64, rsi: u64, rcx: u64, rax: u64) -> Outcome {
    let rip = helper_va(match helper {
        FpuHelper::XSave => nacre_user_xsave,
        FpuHelper::FxSave => nacre_user_fxsave,
        FpuHelper::XRestore => nacre_user_xrstor,
        FpuHelper::FxRestore => nacre_user_fxrstor,
    });
    run(k, rip, rdi, rsi, rcx, rax)
}

/// The user-accessible address of the initial FPU state (an XSAVE area with an empty
/// XSTATE_BV, 64-byte aligned).
pub fn fpu_init_state_va() -> u64 {
    helper_va(nacre_fpu_init_state)
}

/// Fill `len` bytes at user address `dst` with `byte` in ring 3.
pub fn fill(k: &mut Kernel, dst: u64, byte: u8, len: u64) -> Outcome {
    if len == 0 {
        return Outcome::Done;
    }
    run(k, helper_va(nacre_user_fill), dst, 0, len, u64::from(byte))
}
