//! AMD SEV-SNP wire formats: the GHCB page, the GHCB MSR protocol, page-state
//! changes, the return codes of PVALIDATE and friends, and the attestation report.
//! Sources are cited per constant; docs/specs.md sections 1-4 collect them.

pub mod cpuid_page;
pub mod ghcb;
pub mod guest_msg;
pub mod msr_protocol;
pub mod psc;
pub mod report;
pub mod rmp;

/// GHCB MSR (`MSR_AMD64_SEV_ES_GHCB`, Linux `asm/msr-index.h`).
pub const MSR_GHCB: u32 = 0xC001_0130;
/// SEV_STATUS MSR (`MSR_AMD64_SEV`, Linux `asm/msr-index.h`).
pub const MSR_SEV_STATUS: u32 = 0xC001_0131;

/// SEV_STATUS bit 0: SEV enabled (svsm `cpuarch/src/sev_status.rs`).
pub const SEV_STATUS_SEV: u64 = 1 << 0;
/// SEV_STATUS bit 1: SEV-ES enabled.
pub const SEV_STATUS_SEV_ES: u64 = 1 << 1;
/// SEV_STATUS bit 2: SEV-SNP enabled.
pub const SEV_STATUS_SEV_SNP: u64 = 1 << 2;
