//! x86-64 architecture support: CPU registers, descriptor tables, exception and
//! syscall entry, and the 32-bit entry paths of SEV-SNP and TDX.

pub mod apic;
pub mod cpu;
pub mod fpu;
pub mod gdt;
pub mod idt;
pub mod smp;
pub mod syscall_entry;
// 32-bit code with absolute addresses: only in the firmware image, never in a test.
#[cfg(not(any(test, feature = "fuzzing")))]
pub mod snp_entry;
#[cfg(not(any(test, feature = "fuzzing")))]
pub mod tdx_entry;
pub mod upcall;
