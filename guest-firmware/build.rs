//! Links the firmware as a freestanding static ELF with `linker.ld`, and builds the
//! vDSO it maps into apps (`vdso/`): `vdso.rs` compiled by this build's rustc as
//! position-independent code for x86_64-unknown-linux-gnu (the firmware's own target:
//! no other is installed), linked by the C compiler's GNU ld with `vdso.lds` into
//! `$OUT_DIR/vdso.so`, which `src/app/vdso.rs` embeds.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    for arg in [
        "-nostdlib",
        "-nostartfiles",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    build_vdso(&Path::new(&dir).join("vdso"), &out);
}

/// Compile and link the vDSO into `out/vdso.so`.
fn build_vdso(src: &Path, out: &Path) {
    for f in ["vdso.rs", "vvar.rs", "vdso.lds"] {
        println!("cargo:rerun-if-changed={}", src.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let obj = out.join("vdso.o");
    let mut cmd = Command::new(&rustc);
    cmd.args(["--edition", "2021", "--crate-type", "lib", "--crate-name"])
        .arg("nacre_vdso")
        .args(["--emit", "obj", "-o"])
        .arg(&obj)
        // Position-independent, optimized, and nothing that calls out of line:
        // no overflow checks, no debug assertions, no unwinding.
        .args([
            "-C",
            "relocation-model=pic",
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "overflow-checks=off",
            "-C",
            "debug-assertions=off",
            "-C",
            "debuginfo=0",
            "-C",
            "target-cpu=x86-64",
            "-D",
            "warnings",
        ])
        .arg(src.join("vdso.rs"));
    // This build's flags are the firmware's (kernel code model, no SSE): not the vDSO's.
    cmd.env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run(&mut cmd, "compiling the vDSO (vdso/vdso.rs)");

    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let so = out.join("vdso.so");
    let mut link = Command::new(&cc);
    link.args(["-shared", "-nostdlib", "-o"])
        .arg(&so)
        .arg(&obj)
        .arg(format!("-Wl,-T,{}", src.join("vdso.lds").display()))
        .args([
            // Both hash tables: musl reads DT_HASH, glibc either.
            "-Wl,--hash-style=both",
            "-Wl,-soname=linux-vdso.so.1",
            // Every symbol resolved inside the object, and no writable data: the
            // vDSO runs unrelocated.
            "-Wl,--no-undefined",
            "-Wl,-Bsymbolic",
            "-Wl,-z,max-page-size=4096",
            "-Wl,-z,common-page-size=4096",
            "-Wl,--eh-frame-hdr",
            "-Wl,--build-id=none",
            "-Wl,-z,noexecstack",
        ]);
    run(&mut link, "linking the vDSO (vdso/vdso.lds)");
}

fn run(cmd: &mut Command, what: &str) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
