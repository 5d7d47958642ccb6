//! The hardware platforms on real hardware: the C hello app runs, on one vCPU and on
//! two, and `nacre attest` gives evidence of the image's measurement (on SEV-SNP, for
//! that many vCPUs) that `nacre verify` accepts. These tests
//! run only on a host whose KVM has SEV-SNP or TDX on (`tests/build.rs`); elsewhere
//! cargo lists them as ignored, never as passed. On such a host each first asks
//! `nacre host-check` and fails with its answer if the platform cannot run.

use nacre_tests::{build_c_app, describe_output, nacre, package, run, scratch_dir};
use std::path::{Path, PathBuf};
use std::process::Output;

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The C hello app packaged as `nacre package` makes it.
#[cfg_attr(not(any(snp_host, tdx_host)), allow(dead_code))]
fn hello_image() -> PathBuf {
    let app = scratch_dir(tmp(), "hardware-hello").join("hello");
    build_c_app(&nacre_tests::app_source("hello.c"), &app);
    package(&app, &[], &[])
}

#[cfg_attr(not(any(snp_host, tdx_host)), allow(dead_code))]
fn nacre_args(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    nacre(&args, &[])
}

/// Fail unless `nacre host-check --platform PLATFORM` says the platform can run
/// (and with `attest`, attest) here.
#[cfg_attr(not(any(snp_host, tdx_host)), allow(dead_code))]
fn require(platform: &str, attest: bool) {
    let output = nacre_args(&["host-check", "--platform", platform, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let key = if attest { "can_attest" } else { "can_run" };
    assert!(
        json["platforms"][0][key] == true,
        "this host looks like a {platform} host, but nacre host-check disagrees:\n{}",
        String::from_utf8_lossy(&nacre_args(&["host-check", "--platform", platform]).stdout)
    );
}

#[cfg_attr(not(any(snp_host, tdx_host)), allow(dead_code))]
fn runs_hello(platform: &str, cpus: &str) {
    require(platform, false);
    let output = run(&hello_image(), &["--platform", platform, "--cpus", cpus]);
    assert_eq!(
        output.status.code(),
        Some(42),
        "{}",
        describe_output(&output)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from nacre\n",
        "{}",
        describe_output(&output)
    );
}

#[cfg_attr(not(any(snp_host, tdx_host)), allow(dead_code))]
fn attests_hello(platform: &str, cpus: &str) {
    require(platform, true);
    let image = hello_image();
    let dir = scratch_dir(tmp(), &format!("hardware-attest-{platform}-{cpus}"));
    let evidence = dir.join("evidence.json");
    let nonce = "6e6163726520686172647761726520746573742031";
    let image_arg = image.display().to_string();
    let evidence_arg = evidence.display().to_string();
    let output = nacre_args(&[
        "attest",
        &image_arg,
        "--platform",
        platform,
        "--cpus",
        cpus,
        "--nonce",
        nonce,
        "-o",
        &evidence_arg,
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        describe_output(&output)
    );
    let output = nacre_args(&[
        "verify",
        &evidence_arg,
        "--image",
        &image_arg,
        "--cpus",
        cpus,
        "--nonce",
        nonce,
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        describe_output(&output)
    );
}

#[test]
#[cfg_attr(
    not(snp_host),
    ignore = "needs an SEV-SNP host (nacre host-check --platform snp says what this one lacks)"
)]
fn snp_runs_the_c_hello_app() {
    runs_hello("snp", "1");
}

#[test]
#[cfg_attr(
    not(snp_host),
    ignore = "needs an SEV-SNP host (nacre host-check --platform snp says what this one lacks)"
)]
fn snp_runs_the_c_hello_app_on_two_vcpus() {
    runs_hello("snp", "2");
}

#[test]
#[cfg_attr(
    not(snp_host),
    ignore = "needs an SEV-SNP host with its VCEK (nacre host-check --platform snp)"
)]
fn snp_attests_with_the_images_measurement() {
    attests_hello("snp", "1");
}

/// Every vCPU's VMSA is measured: the report's MEASUREMENT is the image's for two.
#[test]
#[cfg_attr(
    not(snp_host),
    ignore = "needs an SEV-SNP host with its VCEK (nacre host-check --platform snp)"
)]
fn snp_attests_two_vcpus_with_the_images_measurement_for_two() {
    attests_hello("snp", "2");
}

#[test]
#[cfg_attr(
    not(tdx_host),
    ignore = "needs a TDX host (nacre host-check --platform tdx says what this one lacks)"
)]
fn tdx_runs_the_c_hello_app() {
    runs_hello("tdx", "1");
}

#[test]
#[cfg_attr(
    not(tdx_host),
    ignore = "needs a TDX host (nacre host-check --platform tdx says what this one lacks)"
)]
fn tdx_runs_the_c_hello_app_on_two_vcpus() {
    runs_hello("tdx", "2");
}

#[test]
#[cfg_attr(
    not(tdx_host),
    ignore = "needs a TDX host with a quote generation service (nacre host-check --platform tdx)"
)]
fn tdx_attests_with_the_images_measurement() {
    attests_hello("tdx", "1");
}
