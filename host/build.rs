//! Builds the guest firmware (a separate cargo workspace pinned to the nightly
//! toolchain) and the bundled demo app, and hands both to the crate as bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("host/ sits in the workspace root")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let fw_dir = root.join("guest-firmware");
    for p in [
        "src",
        "vdso",
        "Cargo.toml",
        "Cargo.lock",
        "linker.ld",
        "build.rs",
        ".cargo/config.toml",
        "rust-toolchain.toml",
    ] {
        println!("cargo:rerun-if-changed={}", fw_dir.join(p).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("shared-abi/src").display()
    );
    let demo_src = root.join("tests/apps/hello.c");
    println!("cargo:rerun-if-changed={}", demo_src.display());

    build_firmware(&fw_dir, &root.join("target/firmware"), &out);
    build_demo(&demo_src, &out.join("demo-hello"));
}

fn build_firmware(fw_dir: &Path, target_dir: &Path, out: &Path) {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fw_dir)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(target_dir)
        .env("RUSTUP_TOOLCHAIN", "nightly");
    // Do not leak this build's compiler settings into the firmware's own build.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&k);
        }
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest firmware");
    assert!(
        status.success(),
        "building guest-firmware with the nightly toolchain failed"
    );
    let elf = target_dir.join("x86_64-unknown-linux-gnu/release/nacre-firmware");
    std::fs::copy(&elf, out.join("nacre-firmware.elf")).expect("copy the firmware ELF");
}

fn build_demo(src: &Path, dst: &Path) {
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dst)
        .arg(src)
        .status()
        .expect("gcc is needed to build the bundled demo app (apt-get install gcc)");
    assert!(status.success(), "gcc -static failed for the demo app");
}
