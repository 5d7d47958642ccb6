//! Sets `cfg(snp_host)` and `cfg(tdx_host)` on a machine whose KVM has SEV-SNP or TDX
//! on (the module parameter `kvm_amd.sev_snp` with `/dev/sev`, or `kvm_intel.tdx`),
//! so that the tests that need the hardware (`tests/hardware.rs`) run there and are
//! listed as ignored everywhere else. Each of them asks `nacre host-check` first and
//! fails with its answer if the host is not ready after all.
//!
//! The probe runs when this file changes or `NACRE_HARDWARE_TESTS` does (a fresh
//! target directory on each machine, as CI has, gives a fresh probe).

use std::path::Path;

fn on(parameter: &str) -> bool {
    std::fs::read_to_string(parameter).is_ok_and(|v| matches!(v.trim(), "Y" | "y" | "1"))
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(snp_host)");
    println!("cargo::rustc-check-cfg=cfg(tdx_host)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=NACRE_HARDWARE_TESTS");
    if on("/sys/module/kvm_amd/parameters/sev_snp") && Path::new("/dev/sev").exists() {
        println!("cargo::rustc-cfg=snp_host");
    }
    if on("/sys/module/kvm_intel/parameters/tdx") {
        println!("cargo::rustc-cfg=tdx_host");
    }
}
