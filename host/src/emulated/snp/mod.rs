//! The emulated SEV-SNP hardware: the RMP, the security processor and the AMD-style
//! key hierarchy that signs its attestation reports.

pub mod keys;
pub mod rmp;
pub mod sp;
