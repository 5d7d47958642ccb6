//! Platform backends. `emulated-snp` plays the SEV-SNP hardware's part in software
//! on a plain KVM VM (DESIGN.md 3.1); hardware backends come later.

pub mod emulated_snp;
