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
