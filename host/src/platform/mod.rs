//! Platform backends. `emulated-snp` and `emulated-tdx` play the SEV-SNP hardware's
//! and the TDX module's part in software on a plain KVM VM (DESIGN.md 3.1); hardware
//! backends come later.

pub mod emulated_snp;
pub mod emulated_tdx;
pub mod hostcall;

use crate::vmm::memory::View;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The app exited with this status.
    AppExit(u8),
    /// The guest asked to be terminated (GHCB termination request).
    GuestTerminated {
        /// Reason set.
        set: u8,
        /// Reason code.
        code: u8,
    },
    /// The host stopped the guest for breaking a memory rule.
    MemoryViolation {
        /// Guest physical address (without the C-bit).
        gpa: u64,
        /// View of the access.
        view: View,
        /// The rule.
        rule: &'static str,
    },
    /// The guest broke the GHCB protocol (or a TDX guest the GHCI) in a way KVM
    /// terminates for.
    ProtocolViolation(String),
    /// The guest sent the attestation evidence the host asked for (`nacre attest`).
    Evidence {
        /// What it is.
        kind: nacre_shared_abi::hostcall::EvidenceKind,
        /// The evidence, as the guest sent it (untrusted until verified).
        bytes: Vec<u8>,
    },
    /// A TD reported a fatal error (TDG.VP.VMCALL ReportFatalError) with this code.
    TdFatalError {
        /// R12 of the call; nacre's firmware puts its reason code in bits 7:0.
        code: u64,
    },
}
