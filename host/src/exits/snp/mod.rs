//! Handlers for SEV-SNP guest requests: one module per GHCB exit code or MSR-protocol
//! family (STYLE.md habit 1).

pub mod msr_protocol;
pub mod psc;
