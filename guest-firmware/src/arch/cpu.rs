//! CPUID, the hardware random number instructions and HLT. MSRs, control registers,
//! XCR0 and TLB invalidation go through the `x86_64` crate's wrappers.

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

/// End the guest without the platform: with an empty IDT, the next exception becomes a
/// triple fault, which every hypervisor turns into a shutdown of the VM. For the one
/// case where no platform is known yet: an interrupt controller in the hypervisor
/// makes `hlt` wait there, not end the run.
pub fn triple_fault() -> ! {
    let empty = x86_64::structures::DescriptorTablePointer {
        limit: 0,
        base: x86_64::VirtAddr::zero(),
    };
    // SAFETY: loading an empty IDT and raising #UD ends the guest; nothing runs after.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        asm!("ud2", options(nomem, nostack, noreturn));
    }
}

/// Stop this CPU forever, after the platform was asked to end the guest.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT only stops the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
