//! The confidential-computing platform the firmware runs on. The platform kind comes
//! from the measured boot handoff, never from the host; SEV-SNP is implemented here
//! (on hardware or on the emulated platform, which differ only in how trapping
//! instructions are issued: see `shared-abi/src/doorbell.rs`).

pub mod snp;
