//! SEV-SNP: the GHCB (MSR protocol and page), page-state changes, PVALIDATE and the
//! hostcall doorbell.

pub mod ghcb;
pub mod guest_request;
pub mod instr;
pub mod psc;

pub use ghcb::Snp;
