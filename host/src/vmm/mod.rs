//! The microVMM: guest memory with its two views, KVM objects, the vCPU loop.

pub mod memory;
pub mod run;
pub mod setup;
