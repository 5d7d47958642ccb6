//! The host's model of guest memory on the emulated platforms: the software RMP that
//! plays the part of the SEV-SNP hardware (DESIGN.md 3.1 and 4).

pub mod rmp;
