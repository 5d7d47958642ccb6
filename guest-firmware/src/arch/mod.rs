//! x86-64 architecture support: CPU registers, descriptor tables, exception and
//! syscall entry, and the TDX 32-bit entry path.

pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod syscall_entry;
pub mod tdx_entry;
pub mod upcall;
