//! `nacre host-check` as a user runs it: on any host with KVM the emulated platforms
//! can run; the hardware platforms' verdict is whatever this host is, and the exit
//! status, the text and the JSON must agree on it.

use nacre_tests::{describe_output, nacre, require_kvm};
use std::process::Output;

fn host_check(args: &[&str]) -> Output {
    let mut all = vec!["host-check".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    nacre(&all, &[])
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e})\n{}", describe_output(output)))
}

#[test]
fn every_platform_is_listed_and_the_emulated_ones_can_run() {
    require_kvm();
    let output = host_check(&["--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        describe_output(&output)
    );
    let v = json(&output);
    let platforms = v["platforms"].as_array().expect("platforms");
    let names: Vec<_> = platforms.iter().map(|p| p["platform"].as_str()).collect();
    assert_eq!(
        names,
        [
            Some("emulated-snp"),
            Some("emulated-tdx"),
            Some("snp"),
            Some("tdx")
        ]
    );
    for p in &platforms[..2] {
        assert_eq!(p["can_run"], true, "{p:#}");
    }
    for p in platforms {
        let checks = p["checks"].as_array().expect("checks");
        assert!(!checks.is_empty());
        for c in checks {
            assert!(
                ["pass", "fail", "skip"].contains(&c["result"].as_str().unwrap_or("")),
                "{c}"
            );
            assert!(c["detail"].as_str().is_some_and(|d| !d.is_empty()), "{c}");
        }
    }
}

/// The exit status of `--platform P` is the JSON's verdict; a platform that cannot
/// run names the check that failed first in the text.
#[test]
fn the_exit_status_follows_the_verdict_of_the_platform_asked_for() {
    require_kvm();
    for platform in ["emulated-snp", "emulated-tdx", "snp", "tdx"] {
        let output = host_check(&["--platform", platform, "--json"]);
        let v = json(&output);
        assert_eq!(v["platforms"].as_array().map(Vec::len), Some(1));
        let can_run = v["platforms"][0]["can_run"] == true;
        let want = if can_run { 0 } else { 1 };
        assert_eq!(
            output.status.code(),
            Some(want),
            "{}",
            describe_output(&output)
        );
        let text = host_check(&["--platform", platform]);
        let stdout = String::from_utf8_lossy(&text.stdout);
        let verdict = stdout.lines().next().unwrap_or("");
        if can_run {
            assert!(
                verdict.starts_with(&format!("{platform}: can run")),
                "{stdout}"
            );
        } else {
            assert!(
                verdict.starts_with(&format!("{platform}: cannot run: ")),
                "{stdout}"
            );
            assert!(stdout.contains("  FAIL  "), "{stdout}");
        }
    }
}

#[test]
fn an_unknown_platform_is_a_usage_error() {
    let output = host_check(&["--platform", "sgx"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        describe_output(&output)
    );
}
