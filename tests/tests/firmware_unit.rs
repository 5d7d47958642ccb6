//! The guest firmware's own unit tests, run as part of the workspace's tests.
//!
//! The firmware is a separate cargo workspace built with the pinned nightly (see
//! `host/build.rs`), so `cargo test --workspace` does not reach it. Its library's
//! pure parts (page-state change batching, the frame allocator, page tables, the ELF,
//! syscall and file-tree decoders, the hostcall checks) have host unit tests; this
//! test runs them with the firmware's toolchain, in a target directory of their own
//! under the workspace's, and fails when they fail or when fewer than
//! [`MIN_FIRMWARE_TESTS`] ran.

use std::process::Command;

use nacre_tests::{describe_output, target_dir, workspace_root};

/// The firmware must keep at least this many unit tests.
const MIN_FIRMWARE_TESTS: u32 = 60;

/// "test result: ok. N passed; ..." lines of libtest's output: the sum of N.
fn passed(stdout: &str) -> Option<u32> {
    let counts: Vec<u32> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

#[test]
fn firmware_unit_tests_pass() {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root().join("guest-firmware"))
        .args(["test", "--lib", "--locked", "--target-dir"])
        .arg(target_dir().join("firmware-tests"))
        .env("RUSTUP_TOOLCHAIN", "nightly");
    // Do not leak this build's settings into the firmware's (as `host/build.rs`).
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") || k.starts_with("RUSTC") || k == "RUSTDOCFLAGS" {
            cmd.env_remove(&k);
        }
    }
    // An empty RUSTFLAGS replaces the firmware's build.rustflags (kernel code model,
    // no SSE, static relocation): the tests are an ordinary program of this machine.
    cmd.env("RUSTFLAGS", "");
    let output = cmd
        .output()
        .expect("cannot run cargo (the rustup proxy) to test the guest firmware");
    // Shown when the test fails or with --nocapture; prefixed so that nothing counting
    // "test result:" lines counts the firmware's twice.
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("firmware: {line}");
    }
    assert!(
        output.status.success(),
        "the guest firmware's unit tests failed\n{}",
        describe_output(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let n = passed(&stdout).unwrap_or_else(|| {
        panic!(
            "no test result in the firmware's test output\n{}",
            describe_output(&output)
        )
    });
    assert!(
        n >= MIN_FIRMWARE_TESTS,
        "only {n} firmware unit tests ran; at least {MIN_FIRMWARE_TESTS} must"
    );
}

#[test]
fn test_results_are_counted_from_libtests_summary() {
    let out = "running 2 tests\ntest a ... ok\n\ntest result: ok. 87 passed; 0 failed; \
               0 ignored; 0 measured; 0 filtered out; finished in 0.18s\n";
    assert_eq!(passed(out), Some(87));
    assert_eq!(
        passed("test result: ok. 3 passed;\ntest result: ok. 4 passed;"),
        Some(7)
    );
    assert_eq!(passed("test result: FAILED. 3 passed; 1 failed;"), None);
    assert_eq!(passed(""), None);
}
