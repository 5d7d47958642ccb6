//! x86-64 architecture support: CPU registers, descriptor tables, exception and
//! syscall entry.

pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod syscall_entry;
