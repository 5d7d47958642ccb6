//! The GDT and TSS: kernel and user segments laid out for SYSCALL/SYSRET, and the
//! interrupt stacks. Every exception runs on IST1 (the precompiled `core` assumes a
//! red zone, so nothing may be pushed onto an interrupted kernel stack).

use core::arch::asm;
use core::mem::size_of;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3); SYSRET loads SS = STAR[63:48] + 8.
pub const USER_DS: u16 = 0x18 | 3;
/// User code selector (RPL 3); SYSRET loads CS = STAR[63:48] + 16.
pub const USER_CS: u16 = 0x20 | 3;
/// TSS selector.
pub const TSS_SEL: u16 = 0x28;

const STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

static mut IST1_STACK: Stack = Stack([0; STACK_SIZE]);
static mut KERNEL_STACK: Stack = Stack([0; STACK_SIZE]);

#[repr(C, packed(4))]
pub(crate) struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

const _: () = assert!(size_of::<Tss>() == 104);

/// The TSS; [`super::upcall`] points its RSP0 below an upcalling kernel stack.
pub(crate) static mut TSS: Tss = Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};

static mut GDT: [u64; 7] = [
    0,
    0x00AF_9B00_0000_FFFF, // 0x08 kernel code: L, P, DPL0, exec/read
    0x00CF_9300_0000_FFFF, // 0x10 kernel data
    0x00CF_F300_0000_FFFF, // 0x18 user data, DPL3
    0x00AF_FB00_0000_FFFF, // 0x20 user code, DPL3, L
    0,                     // 0x28 TSS low
    0,                     // 0x30 TSS high
];

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Top of the kernel stack used for syscalls and for interrupts from ring 3 (TSS.RSP0).
pub fn kernel_stack_top() -> u64 {
    (&raw const KERNEL_STACK) as u64 + STACK_SIZE as u64
}

/// TSS.RSP0.
pub fn rsp0() -> u64 {
    // SAFETY: single CPU; a plain read of the TSS field.
    unsafe {
        let tss = &raw const TSS;
        (*tss).rsp[0]
    }
}

/// Set TSS.RSP0, the stack exceptions and interrupts from ring 3 start on.
pub fn set_rsp0(rsp0: u64) {
    // SAFETY: single CPU; the TSS is only read by the CPU when it takes an exception
    // from ring 3, which cannot happen while ring 0 runs this store.
    unsafe {
        let tss = &raw mut TSS;
        (*tss).rsp[0] = rsp0;
    }
}

/// Load the GDT and TSS and reload every segment register.
///
/// # Safety
/// Call once, early, on the boot CPU before any user code runs.
pub unsafe fn init() {
    let tss_addr = (&raw const TSS) as u64;
    let ist1_top = (&raw const IST1_STACK) as u64 + STACK_SIZE as u64;
    // SAFETY: single-threaded boot; nothing else references TSS or GDT yet.
    unsafe {
        let tss = &raw mut TSS;
        (*tss).ist[0] = ist1_top;
        (*tss).rsp[0] = kernel_stack_top();
        let limit = (size_of::<Tss>() - 1) as u64;
        let low = (limit & 0xFFFF)
            | ((tss_addr & 0xFF_FFFF) << 16)
            | (0x89 << 40) // present, 64-bit available TSS
            | (((limit >> 16) & 0xF) << 48)
            | (((tss_addr >> 24) & 0xFF) << 56);
        let gdt = &raw mut GDT;
        (*gdt)[5] = low;
        (*gdt)[6] = tss_addr >> 32;
        let ptr = Pointer {
            limit: (size_of::<[u64; 7]>() - 1) as u16,
            base: gdt as u64,
        };
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "xor {tmp:e}, {tmp:e}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            cs = in(reg) u64::from(KERNEL_CS),
            ds = in(reg) KERNEL_DS,
            tss = in(reg) TSS_SEL,
            tmp = out(reg) _,
        );
    }
}
