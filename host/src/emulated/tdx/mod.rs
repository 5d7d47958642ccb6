//! The emulated TDX hardware: the TDX module (its Secure EPT, the MRTD, TDG.VP.INFO
//! and the TDREPORT MAC), the quoting enclave, the Intel-style PCK hierarchy and the
//! DCAP collateral made with it.

pub mod collateral;
pub mod keys;
pub mod module;
pub mod quoting;
pub mod sept;
