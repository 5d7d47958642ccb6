//! Small wrappers around privileged and informational CPU instructions.

use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

/// Result of CPUID.
#[derive(Debug, Clone, Copy)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Execute CPUID for `leaf`/`subleaf`. Never faults in a VM.
pub fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: CPUID only writes the four output registers; RBX is saved and restored
    // around it because LLVM reserves it.
    unsafe {
        asm!(
            "mov {tmp:r}, rbx",
            "cpuid",
            "xchg {tmp:r}, rbx",
            tmp = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    Cpuid { eax, ebx, ecx, edx }
}

/// Read an MSR.
///
/// # Safety
/// `msr` must exist (or be handled by the hypervisor); reading an unknown MSR raises #GP.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR is readable.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Write an MSR.
///
/// # Safety
/// Writing an MSR can change paging, syscall entry or other global state; the caller
/// must make sure the new value keeps memory safety.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller upholds the contract above.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
}

/// Read CR2 (the faulting address of the last page fault).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Load CR3.
///
/// # Safety
/// `value` must point at page tables that map all code and data in use.
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller guarantees the new tables are complete.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Read CR4.
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Write CR4.
///
/// # Safety
/// The new value must only enable features the CPU supports and that keep the
/// current execution valid.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller upholds the contract.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Set XCR0.
///
/// # Safety
/// CR4.OSXSAVE must be set and `value` must be a subset of CPUID 0xD.0 EAX/EDX.
pub unsafe fn xsetbv0(value: u64) {
    // SAFETY: the caller upholds the contract.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nomem, nostack, preserves_flags));
    }
}

/// Invalidate the TLB entry for one virtual address.
pub fn invlpg(va: u64) {
    // SAFETY: INVLPG only drops a TLB entry.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// One hardware random 64-bit value from RDRAND (retried), or RDSEED where RDRAND is
/// missing or keeps failing. Returns `None` if the CPU has neither or both keep
/// failing. Support: CPUID.1:ECX[30] (RDRAND), CPUID.(7,0):EBX[18] (RDSEED), Intel SDM
/// vol. 2B.
pub fn hw_random() -> Option<u64> {
    // CPUID exits to the hypervisor: ask once. Bit 0: RDRAND, bit 1: RDSEED, bit 7:
    // known.
    static SOURCES: AtomicU8 = AtomicU8::new(0);
    let mut sources = SOURCES.load(Ordering::Relaxed);
    if sources == 0 {
        sources = 0x80
            | u8::from(cpuid(1, 0).ecx & (1 << 30) != 0)
            | (u8::from(cpuid(7, 0).ebx & (1 << 18) != 0) << 1);
        SOURCES.store(sources, Ordering::Relaxed);
    }
    if sources & 1 != 0 {
        for _ in 0..64 {
            let (v, ok): (u64, u8);
            // SAFETY: RDRAND is supported and only writes its outputs.
            unsafe {
                asm!("rdrand {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack))
            };
            if ok != 0 {
                return Some(v);
            }
        }
    }
    if sources & 2 != 0 {
        for _ in 0..1024 {
            let (v, ok): (u64, u8);
            // SAFETY: RDSEED is supported and only writes its outputs.
            unsafe {
                asm!("rdseed {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack))
            };
            if ok != 0 {
                return Some(v);
            }
        }
    }
    None
}

/// Stop this CPU forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT only stops the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
