//! The generic microVMM: guest memory with its two views, and the vCPU loop that runs
//! KVM and hands each exit to [`crate::exits`].

pub mod memory;
pub mod uapi;
pub mod vcpu;
