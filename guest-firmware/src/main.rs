//! The `nacre-firmware` binary: the entry point `_start`, the panic handler and the
//! (empty) heap around the firmware library (`lib.rs`, which describes the firmware).
#![no_std]
#![no_main]

use core::arch::global_asm;
use nacre_guest_firmware::{boot, fatal, fatal_error, fmt};

const BOOT_STACK_SIZE: usize = 128 * 1024;

#[repr(C, align(4096))]
struct BootStack([u8; BOOT_STACK_SIZE]);

static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

// Every vCPU arrives here (`arch/smp.rs`): the first claims the boot and takes the
// boot stack; each later one takes the next index and waits for its start word, then
// loads the page tables boot built, takes its stack and runs `ap_main`, or parks.
global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "lock bts dword ptr [rip + NACRE_BOOT_CLAIMED], 0",
    "jc 3f",
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
    "3:",
    "mov eax, 1",
    "lock xadd dword ptr [rip + NACRE_AP_NEXT], eax",
    "cmp eax, {max_cpus}",
    "jae 6f",
    "lea rdx, [rip + NACRE_AP_STACKS]",
    "4:",
    "pause",
    "mov rcx, [rdx + rax * 8]",
    "test rcx, rcx",
    "jz 4b",
    "cmp rcx, {park}",
    "je 6f",
    "mov rsi, [rip + NACRE_AP_CR3]",
    "mov cr3, rsi",
    "mov rsp, rcx",
    "xor ebp, ebp",
    "mov rsi, cr0",
    "and rsi, ~0xC",
    "or rsi, 0x2",
    "mov cr0, rsi",
    "mov rsi, cr4",
    "or rsi, 0x600",
    "mov cr4, rsi",
    "mov edi, eax",
    "call {ap_main}",
    // Parked for good, interrupts off. In a TD on hardware HLT raises #VE (and a
    // parked vCPU has no IDT of the firmware's): the VMM halts it instead, told that
    // its interrupts are blocked (TDG.VP.VMCALL<Instruction.HLT>, R12 = 1).
    "6:",
    "cli",
    "cmp byte ptr [rip + NACRE_PARK_VIA_VMM], 0",
    "jne 7f",
    "hlt",
    "jmp 6b",
    "7:",
    "xor eax, eax",
    "mov ecx, 0x1C00",
    "xor r10d, r10d",
    "mov r11d, {vmcall_hlt}",
    "mov r12d, 1",
    ".byte 0x66, 0x0f, 0x01, 0xcc",
    "jmp 6b",
    stack = sym BOOT_STACK,
    size = const BOOT_STACK_SIZE,
    main = sym boot_entry,
    ap_main = sym nacre_guest_firmware::sched::cpu::ap_main,
    max_cpus = const nacre_shared_abi::boot::MAX_CPUS,
    park = const nacre_guest_firmware::arch::smp::PARK,
    vmcall_hlt = const nacre_shared_abi::tdx::vmcall::HLT,
);

extern "C" fn boot_entry() -> ! {
    match boot::boot() {
        Ok(entry) => boot::enter_user(entry),
        Err(e) => fatal_error(e),
    }
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
