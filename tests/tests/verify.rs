//! `nacre verify` as a user runs it, on the real evidence in `tests/vectors`: an
//! SEV-SNP report from a Milan machine with its VCEK, and a TDX quote v4. No KVM
//! needed.

use std::path::PathBuf;
use std::process::Output;

use nacre_tests::{describe_output, nacre, workspace_root, EXIT_NACRE_ERROR};

const MILAN_MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";
const TDX_MRTD: &str = "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb";
/// Inside the validity of every certificate of both vectors.
const AT: &str = "2024-01-01T00:00:00Z";

fn vector(path: &str) -> String {
    let path: PathBuf = workspace_root().join("tests/vectors").join(path);
    assert!(path.is_file(), "missing test vector {}", path.display());
    path.display().to_string()
}

fn verify(args: &[&str]) -> Output {
    let mut all = vec!["verify".to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    nacre(&all, &[])
}

fn snp(extra: &[&str]) -> Output {
    let report = vector("virtee-sev/report_milan.hex");
    let vcek = vector("virtee-sev/vcek_milan.der");
    let mut args = vec![report.as_str(), "--vcek", vcek.as_str(), "--at", AT];
    args.extend(extra);
    verify(&args)
}

fn assert_exit(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: expected exit code {code}\n{}",
        describe_output(output)
    );
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("panicked"),
        "{what}: nacre panicked\n{}",
        describe_output(output)
    );
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", describe_output(output)))
}

#[test]
fn snp_report_verifies_with_the_built_in_and_the_given_chain() {
    let output = snp(&["--measurement", MILAN_MEASUREMENT]);
    assert_exit(&output, 0, "the Milan report");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("verified: all 17 checks passed"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    report-signature"), "{stdout}");

    let ask_ark = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("milan_chain.pem");
    let bundle = [
        std::fs::read(vector("virtee-sev/milan_ask.pem")).expect("ASK"),
        std::fs::read(vector("virtee-sev/milan_ark.pem")).expect("ARK"),
    ]
    .concat();
    std::fs::write(&ask_ark, bundle).expect("write the chain");
    let chain = ask_ark.display().to_string();
    let output = snp(&["--cert-chain", &chain, "--json"]);
    assert_exit(&output, 0, "the Milan report with its chain");
    let v = json(&output);
    assert_eq!(v["verified"], true);
    assert_eq!(v["claims"]["measurement"], MILAN_MEASUREMENT);
}

#[test]
fn snp_failed_checks_are_named_and_exit_1() {
    let mut wrong = MILAN_MEASUREMENT.to_owned();
    wrong.replace_range(0..2, "00");
    let output = snp(&["--measurement", &wrong]);
    assert_exit(&output, 1, "a wrong measurement");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("check measurement failed"), "{stderr}");

    let output = snp(&["--report-data", "00", "--json"]);
    assert_exit(&output, 1, "wrong report data, JSON");
    assert_eq!(json(&output)["failed"], serde_json::json!(["report-data"]));

    // The VCEK expired in 2030: checked later, it fails its validity check.
    let report = vector("virtee-sev/report_milan.hex");
    let vcek = vector("virtee-sev/vcek_milan.der");
    let output = verify(&[
        &report,
        "--vcek",
        &vcek,
        "--at",
        "2031-01-01T00:00:00Z",
        "--json",
    ]);
    assert_exit(&output, 1, "after the VCEK expired");
    assert_eq!(
        json(&output)["failed"],
        serde_json::json!(["vcek-validity"])
    );
}

#[test]
fn tdx_quote_verifies_and_names_a_wrong_mrtd() {
    let quote = vector("go-tdx-guest/tdx_prod_quote_SPR_E4.dat");
    let output = verify(&[&quote, "--at", AT, "--measurement", TDX_MRTD]);
    assert_exit(&output, 0, "the TDX quote");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ok    qe-report-data"), "{stdout}");
    assert!(
        stdout.contains("verified: all 13 checks passed"),
        "{stdout}"
    );

    let output = verify(&[
        &quote,
        "--at",
        AT,
        "--measurement",
        MILAN_MEASUREMENT,
        "--json",
    ]);
    assert_exit(&output, 1, "the TDX quote with a wrong MRTD");
    let v = json(&output);
    assert_eq!(v["evidence"], "tdx-quote");
    assert_eq!(v["failed"], serde_json::json!(["mrtd"]));
    assert_eq!(v["claims"]["mr_td"], TDX_MRTD);
}

#[test]
fn unusable_input_exits_125() {
    let report = vector("virtee-sev/report_milan.hex");
    let vcek = vector("virtee-sev/vcek_milan.der");
    let quote = vector("go-tdx-guest/tdx_prod_quote_SPR_E4.dat");
    for (args, what) in [
        (vec![report.as_str()], "an SNP report without --vcek"),
        (vec![vcek.as_str()], "a certificate as evidence"),
        (
            vec![report.as_str(), "--vcek", report.as_str()],
            "a report as the VCEK",
        ),
        (vec![quote.as_str(), "--at", "yesterday"], "a bad --at"),
        (vec![quote.as_str(), "--measurement", "xyz"], "bad hex"),
        (
            vec![quote.as_str(), "--vcek", vcek.as_str()],
            "a VCEK for a TDX quote",
        ),
        (
            vec![quote.as_str(), "--collateral", quote.as_str()],
            "a quote as collateral",
        ),
        (vec!["/nonexistent/evidence"], "a missing file"),
    ] {
        let output = verify(&args);
        assert_exit(&output, EXIT_NACRE_ERROR, what);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("nacre: error:"), "{what}: {stderr}");
    }
}

#[test]
fn a_policy_adds_a_named_check_per_field_and_a_bad_one_exits_125() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("verify-policy");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write the policy");
        path.display().to_string()
    };
    // The Milan report's own values pass, each a check of its own.
    let good = write(
        "milan.toml",
        &format!(
            "[snp]\nmeasurement = \"{MILAN_MEASUREMENT}\"\nvmpl = 0\nhost_data = \"{}\"\n\n\
             [snp.guest_policy]\ndebug = false\nsmt = true\n\n\
             [snp.reported_tcb_minimum]\nsnp = 8\nmicrocode = 115\n",
            "00".repeat(32)
        ),
    );
    let output = snp(&["--policy", &good, "--json"]);
    assert_exit(&output, 0, "the Milan report under its own values");
    let v = json(&output);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for name in [
        "vmpl",
        "measurement",
        "policy-section",
        "host-data",
        "guest-policy",
        "reported-tcb-minimum",
    ] {
        assert!(names.contains(&name), "{name}: {v:#}");
    }

    // A TCB minimum above the report's fails that check only, exit status 1.
    let newer = write("newer.toml", "[snp.reported_tcb_minimum]\nsnp = 9\n");
    let output = snp(&["--policy", &newer]);
    assert_exit(&output, 1, "a newer SNP firmware required");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("check reported-tcb-minimum failed")
            && stderr.contains("SNP at least 9, the report has 8"),
        "{stderr}"
    );

    // A TDX-only policy cannot be met by an SEV-SNP report; nor the reverse.
    let tdx_only = write("tdx.toml", &format!("[tdx]\nmrtd = \"{TDX_MRTD}\"\n"));
    let output = snp(&["--policy", &tdx_only, "--json"]);
    assert_exit(&output, 1, "a TDX policy for an SNP report");
    assert_eq!(
        json(&output)["failed"],
        serde_json::json!(["policy-section"])
    );
    let quote = vector("go-tdx-guest/tdx_prod_quote_SPR_E4.dat");
    let output = verify(&[&quote, "--at", AT, "--policy", &tdx_only, "--json"]);
    assert_exit(&output, 0, "the quote under its MRTD");
    assert!(json(&output)["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .any(|c| c["name"] == "mrtd"));

    // Policies that do not read are unusable input, naming what is wrong.
    for (text, says) in [
        (
            "[snp]\nvmpl = 0\nhostdata = \"00\"\n",
            "unknown field `hostdata`",
        ),
        (
            "[tdx]\nrtmr0 = \"abcd\"\n",
            "expected 96 hex digits (48 bytes)",
        ),
        ("[snp.guest_policy]\ndebug = \"no\"\n", "invalid type"),
        ("not toml at all", "TOML parse error"),
    ] {
        let bad = write("bad.toml", text);
        let output = snp(&["--policy", &bad]);
        assert_exit(&output, EXIT_NACRE_ERROR, text);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("as a reference-value policy") && stderr.contains(says),
            "{text:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{}", describe_output(&output));
    }
}

#[test]
fn help_says_what_is_checked_by_default_and_with_a_policy() {
    let output = nacre(&["verify".to_owned(), "--help".to_owned()], &[]);
    assert_exit(&output, 0, "verify --help");
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "Checked by default",
        "VMPL 0",
        "--policy <FILE>",
        "HOST_DATA",
        "MRCONFIGID",
        "docs/policy.md",
        "--policy-out",
    ] {
        assert!(help.contains(needle), "{needle}:\n{help}");
    }
}
