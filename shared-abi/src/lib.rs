//! Every byte that crosses a boundary in nacre, defined once.
//!
//! This crate is `no_std` and is linked into both the host (`nacre`) and the guest
//! firmware. It holds:
//! - [`layout`]: the guest-physical memory map that the loader, the host and the
//!   firmware agree on;
//! - [`boot`]: the loader-to-firmware boot handoff (measured) and the host parameter
//!   page (unmeasured, validated by the firmware);
//! - [`filetree`]: the read-only file tree packaged into the measured image, its
//!   decoder and the Linux path walk over it;
//! - [`doorbell`]: the I/O-port doorbell that replaces trapping instructions
//!   (PVALIDATE, RMPADJUST, VMGEXIT, TDCALL) on the emulated platforms;
//! - [`hostcall`]: the shared console/exit buffer between firmware and host;
//! - [`net`]: sockets through the host (the Net hostcall and its readiness interrupt);
//! - [`net_policy`]: the measured network policy (which ports, which destinations);
//! - [`snp`]: AMD SEV-SNP wire formats (GHCB, GHCB MSR protocol, page-state change,
//!   PVALIDATE return codes) as specified by the GHCB specification (AMD 56421) and
//!   the Linux headers that implement it, and the attestation report with its guest
//!   policy and TCB_VERSION (SNP firmware ABI, AMD 56860);
//! - [`tdx`]: Intel TDX TDCALL leaves and statuses, GHCI TDG.VP.VMCALL sub-functions,
//!   page-acceptance levels and the shared bit;
//! - [`tdx_report`]: the Intel TDX TDREPORT_STRUCT and the GetQuote shared buffer;
//! - [`tdx_quote`]: the TDX quote (version 4 and 5) that GetQuote returns.
//!
//! Every layout has its offsets and size asserted at compile time.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod boot;
pub mod doorbell;
pub mod filetree;
pub mod hostcall;
pub mod layout;
pub mod net;
pub mod net_policy;
pub mod snp;
pub mod tdx;
pub mod tdx_quote;
pub mod tdx_report;
