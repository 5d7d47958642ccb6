//! Loading the measured app ELF and entering it in ring 3.

pub mod elf;
pub mod loader;
pub mod vdso;
