//! The machine side of threads: each thread's kernel stack and state block, the
//! stack switch, and the first return of a new thread to the app.
//!
//! Every thread but the first has a slot of [`SLOT_SIZE`] bytes in the kernel's
//! address space at `KSTACK_VA + slot * SLOT_SIZE`: its [`ThreadBlock`] in the first
//! page, unmapped guard pages, then its kernel stack, which ends at the slot's end.
//! A stack that overflows runs into the guard and faults instead of overwriting the
//! block or another thread's stack. Slots are mapped the first time a thread uses
//! them and never unmapped: a later thread in the same slot reuses the pages, so only
//! the first thread creation in a slot pays for the mapping.
//!
//! The first thread (slot 0) runs on the static kernel stack of `arch/gdt.rs` with a
//! static block.
//!
//! A switch saves the callee-saved registers on the outgoing thread's kernel stack,
//! stores its stack pointer in its block, loads the incoming thread's and pops its
//! registers: the incoming thread returns from its own earlier switch (or, the first
//! time, starts in [`nacre_thread_start`]). Ring 0 never takes interrupts, so a switch
//! happens only where the firmware calls it.

use super::ThreadBlock;
use crate::arch::fpu::FXSAVE_SIZE;
use crate::arch::idt::TrapFrame;
use crate::kernel::Kernel;
use core::arch::global_asm;
use core::mem::size_of;

/// Where the slots start: a range of the kernel's address space nothing else uses
/// (`docs/memory-map.md`).
pub const KSTACK_VA: u64 = 0xFFFF_FFFF_D000_0000;
/// One thread's slot: its block, guard pages and kernel stack.
pub const SLOT_SIZE: u64 = 64 * 1024;
/// Pages of the block at the start of a slot.
pub const BLOCK_PAGES: u64 = 1;
/// Pages of kernel stack at the end of a slot.
pub const STACK_PAGES: u64 = 8;

const _: () = assert!(size_of::<ThreadBlock>() as u64 <= BLOCK_PAGES * 4096);
const _: () = assert!((BLOCK_PAGES + STACK_PAGES) * 4096 < SLOT_SIZE);

/// The address of slot `slot`'s block.
pub fn block_va(slot: usize) -> u64 {
    KSTACK_VA + slot as u64 * SLOT_SIZE
}

/// The top of slot `slot`'s kernel stack.
pub fn stack_top(slot: usize) -> u64 {
    block_va(slot) + SLOT_SIZE
}

/// The lowest address of slot `slot`'s kernel stack.
pub fn stack_bottom(slot: usize) -> u64 {
    stack_top(slot) - STACK_PAGES * 4096
}

/// Bytes a new thread's first return takes at the top of its stack: the register
/// frame, the FXSAVE image above it, padding that keeps both 16-byte aligned.
pub const START_FRAME: u64 = 704;
const _: () = assert!(size_of::<TrapFrame>() as u64 + FXSAVE_SIZE <= START_FRAME);
const _: () = assert!(size_of::<TrapFrame>().is_multiple_of(16) && START_FRAME.is_multiple_of(16));

/// What [`nacre_switch`] pops: six callee-saved registers and the return address.
const SWITCH_FRAME: u64 = 7 * 8;

global_asm!(
    // nacre_switch(save = rdi: where to store this thread's RSP, next = rsi: the
    // incoming thread's saved RSP).
    ".global nacre_switch",
    "nacre_switch:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rdi], rsp",
    "mov rsp, rsi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    // A new thread's first run: RSP points at its register frame (the FXSAVE image
    // follows it), built by `prepare_start`. Finish the switch in Rust, then return
    // to the app as a syscall with exit work returns.
    ".global nacre_thread_start",
    "nacre_thread_start:",
    "call {started}",
    "jmp nacre_syscall_full_return",
    // A vCPU's idle context's first run (`prepare_idle`).
    ".global nacre_idle_start",
    "nacre_idle_start:",
    "call {idle_started}",
    "ud2",
    started = sym super::thread_started,
    idle_started = sym super::cpu::idle_started,
);

extern "C" {
    /// `kernel` is not used by the switch itself: passing it tells the compiler that
    /// the call may change the kernel state (the threads that run meanwhile do), so
    /// that nothing of it is kept in registers across the call.
    fn nacre_switch(save: *mut u64, next: u64, kernel: *mut u8);
    fn nacre_thread_start();
    fn nacre_idle_start();
}

/// Switch from the running thread, whose stack pointer is saved at `save`, to the
/// thread whose saved stack pointer is `next`. Returns when another switch comes back
/// to this thread, with the kernel `k` as the threads that ran meanwhile left it.
///
/// # Safety
/// `next` is a stack pointer saved by this function or prepared by
/// [`prepare_start`], of a thread that is not running; `save` is the running thread's
/// slot in its block. Ring 0 takes no interrupts, so nothing runs between the two
/// halves of the switch.
pub unsafe fn switch(k: &mut Kernel, save: *mut u64, next: u64) {
    // SAFETY: the caller's contract.
    unsafe { nacre_switch(save, next, (k as *mut Kernel).cast()) }
}

/// Lay out an idle context's first run at the top of its stack `top`: what
/// [`switch`] pops to land in `cpu::idle_started`. Returns the stack pointer to switch
/// to.
///
/// # Safety
/// `top` is the 16-byte aligned top of a mapped stack that no running code uses.
pub unsafe fn prepare_idle(top: u64) -> u64 {
    let switch_rsp = top - SWITCH_FRAME;
    // SAFETY: the caller's contract: the words lie in an unused mapped stack. After
    // the switch's RET, RSP is `top`, 16-byte aligned, so the stub's CALL enters
    // `idle_started` with the alignment the ABI gives a function.
    unsafe {
        let regs = switch_rsp as *mut u64;
        for i in 0..6 {
            regs.add(i).write(0);
        }
        regs.add(6).write(nacre_idle_start as *const () as u64);
    }
    switch_rsp
}

/// Lay out a new thread's first return at the top of its kernel stack: `frame` (the
/// app's registers, as the parent's syscall left them but for the child's RAX and
/// RSP), `image` (the parent's FXSAVE image), and under them what [`switch`] pops to
/// land in [`nacre_thread_start`]. Returns the stack pointer to switch to.
///
/// # Safety
/// `top` is the top of a mapped kernel stack of at least [`START_FRAME`] +
/// [`SWITCH_FRAME`] bytes that no running code uses.
pub unsafe fn prepare_start(top: u64, frame: &TrapFrame, image: &[u8; 512]) -> u64 {
    let tf = top - START_FRAME;
    let switch_rsp = tf - SWITCH_FRAME;
    // SAFETY: the caller's contract: the range lies in an unused mapped stack; the
    // frame and image are 16-byte aligned there (top is page aligned, START_FRAME
    // and the frame's size are multiples of 16).
    unsafe {
        core::ptr::copy_nonoverlapping(frame as *const TrapFrame, tf as *mut TrapFrame, 1);
        core::ptr::copy_nonoverlapping(
            image.as_ptr(),
            (tf + size_of::<TrapFrame>() as u64) as *mut u8,
            image.len(),
        );
        let regs = switch_rsp as *mut u64;
        for i in 0..6 {
            regs.add(i).write(0);
        }
        regs.add(6).write(nacre_thread_start as *const () as u64);
    }
    switch_rsp
}
