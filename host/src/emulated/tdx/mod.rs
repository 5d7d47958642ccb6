//! The emulated TDX hardware: the Secure EPT of the TDX module, the module's
//! TDREPORT, the quoting enclave, the Intel-style PCK hierarchy and the DCAP
//! collateral made with it.

pub mod collateral;
pub mod keys;
pub mod sept;
