//! nacre's host side: the CLI's building blocks, the microVMM on KVM, the platform
//! backends and the hypervisor MMU model. See `docs/design.md`.

/// `eprintln!` that cannot panic: a message standard error cannot take (a full disk,
/// a closed descriptor) is lost instead of aborting nacre.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod cli;
pub mod emulated;
pub mod exits;
pub mod files;
pub mod mmu;
pub mod network;
pub mod platform;
pub mod stats;
pub mod vmm;

/// The guest firmware ELF, built from `guest-firmware/` by `build.rs`.
pub const FIRMWARE_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nacre-firmware.elf"));
/// The bundled demo app (`tests/apps/hello.c`, static), built by `build.rs`.
pub const DEMO_APP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo-hello"));
