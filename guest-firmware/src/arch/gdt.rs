//! The GDT and the TSSs: kernel and user segments laid out for SYSCALL/SYSRET, and one
//! TSS per vCPU with its interrupt stacks. Every exception runs on IST1 (the
//! precompiled `core` assumes a red zone, so nothing may be pushed onto an interrupted
//! kernel stack).
//!
//! All vCPUs share the GDT; vCPU `i` loads the TSS descriptor at [`TSS_SEL`] + 16 * i,
//! so its task register names it: [`cpu_index`] reads it back with STR, which is how
//! the firmware tells the vCPUs apart (the app owns FS and GS).

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

/// Most vCPUs.
pub const MAX_CPUS: usize = nacre_shared_abi::boot::MAX_CPUS as usize;
/// GDT entries: five segments, then two per TSS.
const GDT_ENTRIES: usize = 5 + 2 * MAX_CPUS;

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

const EMPTY_TSS: Tss = Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};

/// Each vCPU's TSS; [`super::upcall`] points RSP0 below an upcalling kernel stack.
static mut TSS: [Tss; MAX_CPUS] = [EMPTY_TSS; MAX_CPUS];

static mut GDT: [u64; GDT_ENTRIES] = {
    let mut g = [0; GDT_ENTRIES];
    g[1] = 0x00AF_9B00_0000_FFFF; // 0x08 kernel code: L, P, DPL0, exec/read
    g[2] = 0x00CF_9300_0000_FFFF; // 0x10 kernel data
    g[3] = 0x00CF_F300_0000_FFFF; // 0x18 user data, DPL3
    g[4] = 0x00AF_FB00_0000_FFFF; // 0x20 user code, DPL3, L
    g // 0x28 + 16 * i: vCPU i's TSS (low, high)
};

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Top of the kernel stack used for syscalls and for interrupts from ring 3 (TSS.RSP0).
pub fn kernel_stack_top() -> u64 {
    (&raw const KERNEL_STACK) as u64 + STACK_SIZE as u64
}

/// This vCPU's index (0: the one that booted), from its task register. Before the
/// TSS is loaded (early boot, which only the first vCPU runs) it is 0.
#[inline]
pub fn cpu_index() -> usize {
    #[cfg(any(test, feature = "fuzzing"))]
    return 0;
    #[cfg(not(any(test, feature = "fuzzing")))]
    {
        let sel: u16;
        // SAFETY: STR only reads the task register.
        unsafe { asm!("str {0:x}", out(reg) sel, options(nomem, nostack, preserves_flags)) };
        usize::from(sel.saturating_sub(TSS_SEL) / 16).min(MAX_CPUS - 1)
    }
}

/// The address of this vCPU's TSS.RSP0 (for the upcall stub).
pub fn rsp0_ptr() -> *mut u64 {
    let tss = (&raw mut TSS).cast::<Tss>().wrapping_add(cpu_index());
    // The field is 4-byte aligned only (the TSS is packed): written with unaligned stores.
    (tss as *mut u8).wrapping_add(4).cast()
}

/// This vCPU's TSS.RSP0.
pub fn rsp0() -> u64 {
    // SAFETY: the field of this vCPU's TSS, which only this vCPU writes.
    unsafe { rsp0_ptr().read_unaligned() }
}

/// Set this vCPU's TSS.RSP0, the stack exceptions and interrupts from ring 3 start on.
pub fn set_rsp0(rsp0: u64) {
    // SAFETY: this vCPU's own TSS, which the CPU only reads when it takes an exception
    // from ring 3, which cannot happen while ring 0 runs this store.
    unsafe { rsp0_ptr().write_unaligned(rsp0) }
}

/// The descriptor pair of a 64-bit available TSS at `addr`.
fn tss_descriptor(addr: u64) -> (u64, u64) {
    let limit = (size_of::<Tss>() - 1) as u64;
    let low = (limit & 0xFFFF)
        | ((addr & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, 64-bit available TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((addr >> 24) & 0xFF) << 56);
    (low, addr >> 32)
}

/// Load the GDT and TSS and reload every segment register.
///
/// # Safety
/// Call once, early, on the boot CPU before any user code runs.
pub unsafe fn init() {
    let ist1_top = (&raw const IST1_STACK) as u64 + STACK_SIZE as u64;
    // SAFETY: single-threaded boot: no other vCPU has left its entry code yet, and
    // nothing else references the TSSs or the GDT. Every vCPU's descriptor is
    // written now, so the other vCPUs only read the GDT.
    unsafe {
        let gdt = &raw mut GDT;
        for i in 0..MAX_CPUS {
            let addr = (&raw const TSS).cast::<Tss>().wrapping_add(i) as u64;
            let (low, high) = tss_descriptor(addr);
            (*gdt)[5 + 2 * i] = low;
            (*gdt)[6 + 2 * i] = high;
        }
        let tss = (&raw mut TSS).cast::<Tss>();
        (*tss).ist[0] = ist1_top;
        (*tss).rsp[0] = kernel_stack_top();
        load(0);
    }
}

/// Load the GDT and vCPU `index`'s TSS on a vCPU that is not the first, with
/// `ist1_top` the top of its own exception stack.
///
/// # Safety
/// Once on that vCPU, after [`init`] ran on the first, with `ist1_top` the top of a
/// mapped stack only this vCPU uses.
pub unsafe fn init_ap(index: usize, ist1_top: u64) {
    // SAFETY: vCPU `index`'s TSS is written by this vCPU alone, before it loads it.
    unsafe {
        let tss = (&raw mut TSS).cast::<Tss>().wrapping_add(index);
        (*tss).ist[0] = ist1_top;
        load(index);
    }
}

/// LGDT, reload the segments, LTR of TSS `index`.
///
/// # Safety
/// The GDT holds the descriptors (`init`).
unsafe fn load(index: usize) {
    let gdt = &raw mut GDT;
    let ptr = Pointer {
        limit: (size_of::<[u64; GDT_ENTRIES]>() - 1) as u16,
        base: gdt as u64,
    };
    // SAFETY: the caller's contract; the selectors are the GDT's.
    unsafe {
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
            tss = in(reg) TSS_SEL + 16 * index as u16,
            tmp = out(reg) _,
        );
    }
}
