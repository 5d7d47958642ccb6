//! The attestation flow end to end: package -> measure -> attest -> verify on the
//! emulated platforms, each way the verification must fail (wrong nonce, another
//! image, emulated evidence not allowed, a corrupted evidence file), and apps that
//! ask `/dev/sev-guest` or `/dev/tdx_guest` for a report themselves.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use nacre_tests::{
    app_source, build_c_app, build_c_app_musl, describe_output, emulated_keys_dir, nacre,
    on_each_platform, package_with, require_kvm, run_on, scratch_dir, PackageOptions,
    EXIT_NACRE_ERROR,
};

/// `nacre verify` exit status when a check failed.
const EXIT_NOT_VERIFIED: i32 = 1;

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir(tmp(), "attest"))
}

/// The static C hello app packaged with `args`, as `NAME.igvm`.
fn hello_image(name: &str, args: &[&str]) -> PathBuf {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    let app = APP.get_or_init(|| {
        let out = dir().join("hello");
        build_c_app(&app_source("hello.c"), &out);
        out
    });
    package_with(
        app,
        &dir().join(format!("{name}.igvm")),
        &PackageOptions::new().args(args),
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_string()).collect()
}

fn must_succeed(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed\n{}",
        describe_output(&output)
    );
    output
}

/// `nacre measure IMAGE --json`'s measurement for `platform`.
fn measure(image: &Path, platform: &str) -> String {
    let out = must_succeed(
        nacre(
            &strings(&["measure", &image.display().to_string(), "--json"]),
            &[],
        ),
        "nacre measure",
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("measure --json");
    let key = platform.trim_start_matches("emulated-");
    json[key]["measurement"]
        .as_str()
        .unwrap_or_else(|| panic!("no {platform} measurement in {json:#}"))
        .to_string()
}

/// `nacre attest IMAGE --platform P --nonce N -o OUT --json`, which must succeed;
/// returns its summary.
fn attest(image: &Path, platform: &str, nonce: &str, out: &Path) -> serde_json::Value {
    let output = must_succeed(
        nacre(
            &strings(&[
                "attest",
                &image.display().to_string(),
                "--platform",
                platform,
                "--nonce",
                nonce,
                "-o",
                &out.display().to_string(),
                "--json",
            ]),
            &[],
        ),
        "nacre attest",
    );
    serde_json::from_slice(&output.stdout).expect("attest --json prints JSON")
}

/// `nacre verify EVIDENCE ARGS... --json`: the exit code and the JSON verdict (if any).
fn verify(evidence: &Path, args: &[&str]) -> (Output, Option<serde_json::Value>) {
    let mut all = vec![
        "verify".to_string(),
        evidence.display().to_string(),
        "--json".to_string(),
    ];
    all.extend(strings(args));
    let output = nacre(&all, &[]);
    let json = serde_json::from_slice(&output.stdout).ok();
    (output, json)
}

/// The names of the failed checks of a verdict.
fn failed(json: &serde_json::Value) -> Vec<String> {
    json["failed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The detail of check `name`.
fn detail(json: &serde_json::Value, name: &str) -> String {
    json["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .and_then(|c| c["detail"].as_str())
        .unwrap_or_default()
        .to_string()
}

const NONCE: &str = "6e6163726520617474657374206e6f6e6365";

fn attest_flow(platform: &str) {
    let image = hello_image("flow", &[]);
    let other = hello_image("flow-other", &["another", "argument"]);
    let measured = measure(&image, platform);
    let evidence = dir().join(format!("{platform}.evidence.json"));
    let summary = attest(&image, platform, NONCE, &evidence);
    assert_eq!(summary["measurement"], measured.as_str(), "{summary:#}");
    assert_eq!(summary["platform"], platform, "{summary:#}");
    let image_arg = image.display().to_string();

    // The whole flow verifies.
    let (output, json) = verify(
        &evidence,
        &["--image", &image_arg, "--nonce", NONCE, "--allow-emulated"],
    );
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{json:#}\n{}",
        describe_output(&output)
    );
    assert_eq!(json["verified"], true);
    assert_eq!(json["trust"], "emulated");
    let claim = if platform == "emulated-snp" {
        "measurement"
    } else {
        "mr_td"
    };
    assert_eq!(json["claims"][claim], measured.as_str(), "{json:#}");
    // With --image, the policy (SNP) or the TD attributes it governs (TDX) are the
    // ones the image declares.
    let snp = platform == "emulated-snp";
    let policy = if snp { "policy" } else { "td-attributes" };
    assert!(
        detail(&json, policy).contains("as the image declares"),
        "{json:#}"
    );

    // The reference values `nacre measure --policy-out` writes for the image are met by
    // its evidence, each a passed check; another image's are not, by its measurement.
    policy_round_trip(platform, &image, &other, &evidence);

    // What the evidence file carries besides: the ARK's CRL for a report, DCAP
    // collateral for a quote.
    assert_eq!(
        (&summary["crl"], &summary["collateral"]),
        (&snp.into(), &(!snp).into()),
        "{summary:#}"
    );
    if snp {
        snp_crl_is_checked(&evidence, &json, &image_arg);
    } else {
        tdx_collateral_is_appraised(&evidence, &json, &image_arg);
    }

    // Each wrong expectation fails the one check it concerns, by name.
    let other_arg = other.display().to_string();
    for (args, check, needle) in [
        (
            vec!["--image", &image_arg, "--nonce", "00", "--allow-emulated"],
            "report-data",
            "expected",
        ),
        (
            vec!["--image", &other_arg, "--nonce", NONCE, "--allow-emulated"],
            if platform == "emulated-snp" {
                "measurement"
            } else {
                "mrtd"
            },
            "expected",
        ),
        (
            vec!["--image", &image_arg, "--nonce", NONCE],
            if platform == "emulated-snp" {
                "ark-trusted"
            } else {
                "root-trusted"
            },
            "--allow-emulated",
        ),
    ] {
        let (output, json) = verify(&evidence, &args);
        let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
        assert_eq!(
            output.status.code(),
            Some(EXIT_NOT_VERIFIED),
            "{args:?}: {json:#}"
        );
        assert!(
            failed(&json).iter().any(|c| c == check),
            "{args:?}: {check} did not fail: {json:#}"
        );
        assert!(
            detail(&json, check).contains(needle),
            "{args:?}: {check}'s detail lacks {needle:?}: {json:#}"
        );
    }

    // A corrupted evidence file: a flipped digit in the signed report fails the
    // signature; a truncated file is unusable input with a message.
    let text = fs::read_to_string(&evidence).expect("evidence file");
    let key = if platform == "emulated-snp" {
        "\"report\": \""
    } else {
        "\"quote\": \""
    };
    let at = text.find(key).expect("the evidence's hex") + key.len() + 200;
    let mut flipped = text.clone().into_bytes();
    flipped[at] = if flipped[at] == b'0' { b'1' } else { b'0' };
    let corrupt = dir().join(format!("{platform}.corrupt.json"));
    fs::write(&corrupt, &flipped).expect("write");
    let (output, json) = verify(
        &corrupt,
        &["--image", &image_arg, "--nonce", NONCE, "--allow-emulated"],
    );
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(output.status.code(), Some(EXIT_NOT_VERIFIED), "{json:#}");
    let signature = if platform == "emulated-snp" {
        "report-signature"
    } else {
        "quote-signature"
    };
    assert!(failed(&json).iter().any(|c| c == signature), "{json:#}");

    let truncated = dir().join(format!("{platform}.truncated.json"));
    fs::write(&truncated, &text.as_bytes()[..text.len() / 2]).expect("write");
    let (output, _) = verify(
        &truncated,
        &["--image", &image_arg, "--nonce", NONCE, "--allow-emulated"],
    );
    assert_unusable(&output, "not a nacre evidence file");
}

/// `nacre measure IMAGE --policy-out FILE` for `image`; returns FILE.
fn policy_out(image: &Path, name: &str) -> String {
    let path = dir().join(name).display().to_string();
    must_succeed(
        nacre(
            &strings(&[
                "measure",
                &image.display().to_string(),
                "--policy-out",
                &path,
            ]),
            &[],
        ),
        "nacre measure --policy-out",
    );
    path
}

/// The policy `nacre measure --policy-out` writes for `image` passes on evidence of
/// it, check by check; the one of `other` fails its measurement, and only that.
fn policy_round_trip(platform: &str, image: &Path, other: &Path, evidence: &Path) {
    let snp = platform == "emulated-snp";
    let policy = policy_out(image, &format!("{platform}.policy.toml"));
    let (output, json) = verify(
        evidence,
        &["--policy", &policy, "--nonce", NONCE, "--allow-emulated"],
    );
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(output.status.code(), Some(0), "{json:#}");
    let (measurement, names): (&str, &[&str]) = if snp {
        (
            "measurement",
            &[
                "vmpl",
                "policy-section",
                "host-data",
                "family-id",
                "image-id",
                "id-key-digest",
                "author-key-digest",
                "policy-abi-minimum",
                "guest-policy",
            ],
        )
    } else {
        (
            "mrtd",
            &[
                "policy-section",
                "mr-config-id",
                "mr-owner",
                "mr-owner-config",
                "rtmr0",
                "rtmr1",
                "rtmr2",
                "rtmr3",
                "td-attribute-bits",
            ],
        )
    };
    assert!(
        detail(&json, measurement).contains("as expected (the policy's)"),
        "{json:#}"
    );
    for name in names {
        let check = json["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["name"] == *name))
            .unwrap_or_else(|| panic!("no check {name}: {json:#}"));
        assert_eq!(check["passed"], true, "{name}: {json:#}");
    }

    let other_policy = policy_out(other, &format!("{platform}.other.policy.toml"));
    let (output, json) = verify(
        evidence,
        &[
            "--policy",
            &other_policy,
            "--nonce",
            NONCE,
            "--allow-emulated",
        ],
    );
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(output.status.code(), Some(EXIT_NOT_VERIFIED), "{json:#}");
    assert_eq!(failed(&json), [measurement], "{json:#}");
}

/// `output` is of a command refused as unusable input, saying `needle`.
fn assert_unusable(output: &Output, needle: &str) {
    assert_eq!(
        output.status.code(),
        Some(EXIT_NACRE_ERROR),
        "{}",
        describe_output(output)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(needle),
        "no {needle:?}\n{}",
        describe_output(output)
    );
}

/// The emulated ARK's CRL `nacre attest` puts in emulated-snp evidence: the ASK is
/// checked against it, and a CRL that is not one is unusable input.
fn snp_crl_is_checked(evidence: &Path, verdict: &serde_json::Value, image_arg: &str) {
    assert_eq!(
        verdict["revocation"]["source"], "evidence-file",
        "{verdict:#}"
    );
    let ask = detail(verdict, "ask-not-revoked");
    assert!(
        ask.contains("does not list the ASK") && ask.ends_with("chosen by the prover]"),
        "{verdict:#}"
    );
    let args = ["--image", image_arg, "--nonce", NONCE, "--allow-emulated"];
    let mut without: serde_json::Value =
        serde_json::from_slice(&fs::read(evidence).expect("evidence file")).expect("JSON");
    without.as_object_mut().expect("an object").remove("crl");
    let path = dir().join("emulated-snp.no-crl.json");
    fs::write(&path, serde_json::to_vec(&without).expect("JSON")).expect("write");
    revocation_can_be_required(evidence, &path, &args, "ask-not-revoked");
    let not_a_crl = dir().join("not-a-crl.pem");
    fs::write(
        &not_a_crl,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .expect("write");
    let crl_arg = not_a_crl.display().to_string();
    let (output, _) = verify(
        evidence,
        &[
            "--image",
            image_arg,
            "--nonce",
            NONCE,
            "--allow-emulated",
            "--crl",
            &crl_arg,
        ],
    );
    assert_unusable(&output, "as a CRL");
}

/// The DCAP collateral `nacre attest` puts in emulated-tdx evidence: the TCB status
/// is appraised with it, a changed collateral fails that check by name, and evidence
/// without collateral verifies without a TCB status.
fn tdx_collateral_is_appraised(evidence: &Path, verdict: &serde_json::Value, image_arg: &str) {
    assert_eq!(
        detail(verdict, "tcb-status"),
        "TCB status UpToDate [the evidence file's, chosen by the prover]",
        "{verdict:#}"
    );
    assert_eq!(
        verdict["revocation"]["source"], "evidence-file",
        "{verdict:#}"
    );
    let args = ["--image", image_arg, "--nonce", NONCE, "--allow-emulated"];
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(evidence).expect("evidence file")).expect("JSON");

    // The same collateral given by the verifier (`--collateral`, dcap-qvl's JSON).
    let own = dir().join("emulated-tdx.collateral.json");
    fs::write(&own, serde_json::to_vec(&file["collateral"]).expect("JSON")).expect("write");
    let own_arg = own.display().to_string();
    let mut with_own = args.to_vec();
    with_own.extend(["--collateral", &own_arg]);
    let (output, json) = verify(evidence, &with_own);
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(output.status.code(), Some(0), "{json:#}");
    assert_eq!(json["revocation"]["source"], "verifier", "{json:#}");
    assert!(
        detail(&json, "tcb-status").ends_with(&format!("[--collateral {own_arg}]")),
        "{json:#}"
    );

    let mut changed = file.clone();
    let tcb_info = changed["collateral"]["tcb_info"]
        .as_str()
        .expect("the collateral's TCB info")
        .replace("UpToDate", "OutOfDate");
    changed["collateral"]["tcb_info"] = tcb_info.into();
    let path = dir().join("emulated-tdx.changed-collateral.json");
    fs::write(&path, serde_json::to_vec(&changed).expect("JSON")).expect("write");
    let (output, json) = verify(&path, &args);
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(output.status.code(), Some(EXIT_NOT_VERIFIED), "{json:#}");
    assert_eq!(failed(&json), vec!["tcb-status".to_string()], "{json:#}");
    assert!(
        detail(&json, "tcb-status").contains("Signature is invalid for tcb_info"),
        "{json:#}"
    );

    let mut without = file;
    without
        .as_object_mut()
        .expect("an object")
        .remove("collateral");
    let path = dir().join("emulated-tdx.no-collateral.json");
    fs::write(&path, serde_json::to_vec(&without).expect("JSON")).expect("write");
    let (output, json) = verify(&path, &args);
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(output.status.code(), Some(0), "{json:#}");
    assert_eq!(detail(&json, "tcb-status"), "", "{json:#}");
    revocation_can_be_required(evidence, &path, &args, "tcb-status");
}

/// With --require-revocation, evidence with revocation data verifies and `without`
/// it fails `check`.
fn revocation_can_be_required(with: &Path, without: &Path, args: &[&str], check: &str) {
    let mut required = args.to_vec();
    required.push("--require-revocation");
    let (output, json) = verify(with, &required);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{json:?}\n{}",
        describe_output(&output)
    );
    let (output, json) = verify(without, &required);
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(output.status.code(), Some(EXIT_NOT_VERIFIED), "{json:#}");
    assert_eq!(failed(&json), vec![check.to_string()], "{json:#}");
    assert!(
        detail(&json, check).contains("revocation was required"),
        "{json:#}"
    );
    assert_eq!(
        json["revocation"],
        serde_json::json!({"source": null, "required": true}),
        "{json:#}"
    );
}

#[test]
fn package_measure_attest_verify_on_each_emulated_platform() {
    require_kvm();
    on_each_platform(attest_flow);
}

/// `nacre attest IMAGE --platform P --cpus CPUS --nonce N -o OUT --json`, which must
/// succeed; returns its summary.
fn attest_cpus(
    image: &Path,
    platform: &str,
    cpus: &str,
    nonce: &str,
    out: &Path,
) -> serde_json::Value {
    let output = must_succeed(
        nacre(
            &strings(&[
                "attest",
                &image.display().to_string(),
                "--platform",
                platform,
                "--cpus",
                cpus,
                "--nonce",
                nonce,
                "-o",
                &out.display().to_string(),
                "--json",
            ]),
            &[],
        ),
        "nacre attest --cpus",
    );
    serde_json::from_slice(&output.stdout).expect("attest --json prints JSON")
}

/// `nacre measure IMAGE --platform P --cpus CPUS --json`: the platform's object.
fn measure_cpus(image: &Path, platform: &str, cpus: &str) -> serde_json::Value {
    let out = must_succeed(
        nacre(
            &strings(&[
                "measure",
                &image.display().to_string(),
                "--platform",
                platform,
                "--cpus",
                cpus,
                "--json",
            ]),
            &[],
        ),
        "nacre measure --cpus",
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("measure --json");
    json[platform.trim_start_matches("emulated-")].clone()
}

/// On SEV-SNP every vCPU's VMSA is measured: evidence of a guest launched with
/// `--cpus 2` carries the image's measurement for two vCPUs, which `nacre measure
/// --cpus 2` prints and `nacre verify --image --cpus 2` expects; verifying it as a
/// one-vCPU launch fails the measurement check and names the count to pass.
#[test]
fn snp_evidence_of_two_vcpus_verifies_with_cpus_2() {
    require_kvm();
    let image = hello_image("cpus", &[]);
    let image_arg = image.display().to_string();
    let evidence = dir().join("emulated-snp.cpus2.json");
    let summary = attest_cpus(&image, "emulated-snp", "2", NONCE, &evidence);
    assert_eq!(summary["cpus"], 2, "{summary:#}");

    let two = measure_cpus(&image, "emulated-snp", "2");
    assert_eq!(two["cpus"], 2, "{two:#}");
    assert_eq!(
        summary["measurement"], two["measurement"],
        "{summary:#}\n{two:#}"
    );
    let one = measure_cpus(&image, "emulated-snp", "1");
    assert_ne!(one["measurement"], two["measurement"]);
    assert_eq!(
        measure(&image, "emulated-snp"),
        one["measurement"].as_str().unwrap_or("")
    );

    let base = ["--image", &image_arg, "--nonce", NONCE, "--allow-emulated"];
    let mut with_cpus = base.to_vec();
    with_cpus.extend(["--cpus", "2"]);
    let (output, json) = verify(&evidence, &with_cpus);
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{json:#}\n{}",
        describe_output(&output)
    );
    assert_eq!(
        json["claims"]["measurement"], two["measurement"],
        "{json:#}"
    );

    // Without --cpus the expected measurement is the one-vCPU one: only the
    // measurement fails, and it says which --cpus the evidence is of.
    let (output, json) = verify(&evidence, &base);
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(output.status.code(), Some(EXIT_NOT_VERIFIED), "{json:#}");
    assert_eq!(failed(&json), vec!["measurement".to_string()], "{json:#}");
    let hint = "the evidence is of this image launched with --cpus 2; pass --cpus 2";
    assert!(detail(&json, "measurement").contains(hint), "{json:#}");
    let output = nacre(
        &strings(&["verify", &evidence.display().to_string()])
            .into_iter()
            .chain(strings(&base))
            .collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(output.status.code(), Some(EXIT_NOT_VERIFIED));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(hint),
        "{}",
        describe_output(&output)
    );

    // Another wrong count fails the same way, naming the right one.
    let mut four = base.to_vec();
    four.extend(["--cpus", "4"]);
    let (_, json) = verify(&evidence, &four);
    let json = json.expect("a verdict");
    assert_eq!(failed(&json), vec!["measurement".to_string()], "{json:#}");
    assert!(detail(&json, "measurement").contains(hint), "{json:#}");

    // --cpus is for --image only.
    let (output, _) = verify(&evidence, &["--cpus", "2", "--allow-emulated"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        describe_output(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--image"),
        "{}",
        describe_output(&output)
    );
}

/// On TDX the vCPUs are not measured: evidence of a TD with two vCPUs has the image's
/// MRTD, and verifies with or without `--cpus`.
#[test]
fn tdx_evidence_of_two_vcpus_has_the_same_mrtd() {
    require_kvm();
    let image = hello_image("cpus-tdx", &[]);
    let image_arg = image.display().to_string();
    let evidence = dir().join("emulated-tdx.cpus2.json");
    let summary = attest_cpus(&image, "emulated-tdx", "2", NONCE, &evidence);
    assert_eq!(
        summary["measurement"],
        measure(&image, "emulated-tdx").as_str()
    );
    assert_eq!(
        measure_cpus(&image, "emulated-tdx", "2")["measurement"],
        summary["measurement"]
    );
    for cpus in [None, Some("2")] {
        let mut args = vec!["--image", &image_arg, "--nonce", NONCE, "--allow-emulated"];
        if let Some(n) = cpus {
            args.extend(["--cpus", n]);
        }
        let (output, json) = verify(&evidence, &args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {json:?}\n{}",
            describe_output(&output)
        );
    }
}

/// Evidence of a debuggable guest (`nacre package --debug`) fails the debug check,
/// by name, unless the verifier allows debugging.
fn debug_policy_is_refused(platform: &str) {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    let app = APP.get_or_init(|| {
        let out = dir().join("hello-debug");
        build_c_app(&app_source("hello.c"), &out);
        out
    });
    let image = package_with(
        app,
        &dir().join("debug.igvm"),
        &PackageOptions::new().flags(&["--debug"]),
    );
    let evidence = dir().join(format!("{platform}.debug.json"));
    attest(&image, platform, NONCE, &evidence);
    let image_arg = image.display().to_string();
    let base = ["--image", &image_arg, "--nonce", NONCE, "--allow-emulated"];
    let (output, json) = verify(&evidence, &base);
    let json = json.unwrap_or_else(|| panic!("no verdict\n{}", describe_output(&output)));
    assert_eq!(output.status.code(), Some(EXIT_NOT_VERIFIED), "{json:#}");
    let check = if platform == "emulated-snp" {
        "policy-debug"
    } else {
        "td-debug"
    };
    assert_eq!(failed(&json), vec![check.to_string()], "{json:#}");
    assert!(
        detail(&json, check).to_lowercase().contains("debug"),
        "{json:#}"
    );

    let mut allowed = base.to_vec();
    allowed.push("--allow-debug");
    let (output, json) = verify(&evidence, &allowed);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{json:?}\n{}",
        describe_output(&output)
    );
}

#[test]
fn a_debug_policy_fails_verification_unless_allowed() {
    require_kvm();
    on_each_platform(debug_policy_is_refused);
}

#[test]
fn attest_refuses_a_bad_nonce_and_writes_nothing() {
    let image = hello_image("nonce", &[]);
    let out = dir().join("never-written.json");
    for nonce in ["", "xyz", &"00".repeat(1025)] {
        let output = nacre(
            &strings(&[
                "attest",
                &image.display().to_string(),
                "--nonce",
                nonce,
                "-o",
                &out.display().to_string(),
            ]),
            &[],
        );
        assert_eq!(
            output.status.code(),
            Some(EXIT_NACRE_ERROR),
            "{}",
            describe_output(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("--nonce"),
            "{}",
            describe_output(&output)
        );
        assert!(!out.exists());
    }
}

/// The raw report an app wrote to stdout on `platform`: `size` bytes.
fn app_report(image: &Path, platform: &str, size: usize) -> Vec<u8> {
    let output = must_succeed(run_on(image, platform, &[]), "the report app");
    assert_eq!(output.stdout.len(), size, "{}", describe_output(&output));
    output.stdout
}

/// Test app `NAME.c` packaged to run with the one argument `text`.
fn report_app_image(name: &str, text: &str) -> PathBuf {
    let app = dir().join(name);
    build_c_app_musl(&app_source(&format!("{name}.c")), &app);
    package_with(
        &app,
        &dir().join(format!("{name}.igvm")),
        &PackageOptions::new().args(&[text]),
    )
}

#[test]
fn an_app_gets_a_report_with_its_own_report_data_from_dev_sev_guest() {
    require_kvm();
    let image = report_app_image("sev_report", "hello from the app");
    let report = app_report(&image, "emulated-snp", 0x4A0);
    // report_data (0x50..0x90) is the app's text, zero-padded.
    let mut expected = [0u8; 64];
    expected[..18].copy_from_slice(b"hello from the app");
    assert_eq!(&report[0x50..0x90], &expected[..]);
    // The measurement (0x90..0xC0) is the image's.
    let measurement = hex::encode(&report[0x90..0xC0]);
    assert_eq!(measurement, measure(&image, "emulated-snp"));

    // A second run's report differs only where a new launch must differ (the
    // REPORT_ID) and in the signature.
    let again = app_report(&image, "emulated-snp", 0x4A0);
    assert_eq!(report[..0x140], again[..0x140]);
    assert_ne!(
        report[0x140..0x160],
        again[0x140..0x160],
        "REPORT_ID repeats"
    );

    // The bare report verifies with the VCEK of the emulated keys and the values
    // the app asked for.
    let bin = dir().join("app-report.bin");
    fs::write(&bin, &report).expect("write");
    let vcek = emulated_keys_dir()
        .join("snp/vcek.pem")
        .display()
        .to_string();
    let report_data = hex::encode(expected);
    let (output, json) = verify(
        &bin,
        &[
            "--vcek",
            &vcek,
            "--allow-emulated",
            "--measurement",
            &measurement,
            "--report-data",
            &report_data,
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{json:?}\n{}",
        describe_output(&output)
    );
}

#[test]
fn an_app_gets_a_tdreport_with_its_own_report_data_from_dev_tdx_guest() {
    require_kvm();
    let image = report_app_image("tdx_report", "hello from the TD");
    let report = app_report(&image, "emulated-tdx", 1024);
    // REPORTTYPE: TDX (0x81), subtype 0 (docs/specs.md 6.5).
    assert_eq!(report[0], 0x81);
    assert_eq!(report[1], 0);
    // REPORTDATA (0x80..0xC0) is the app's text, zero-padded.
    let mut expected = [0u8; 64];
    expected[..17].copy_from_slice(b"hello from the TD");
    assert_eq!(&report[0x80..0xC0], &expected[..]);
    // MRTD (TDINFO + 0x10 = 0x210) is the image's.
    assert_eq!(
        hex::encode(&report[0x210..0x240]),
        measure(&image, "emulated-tdx")
    );
    // Not debuggable: ATTRIBUTES (0x200) bit 0 clear.
    assert_eq!(report[0x200] & 1, 0);
    // A second launch of the image gets the same report up to the MAC (made with the
    // emulated module's key of that launch).
    let again = app_report(&image, "emulated-tdx", 1024);
    assert_eq!(report[..0xE0], again[..0xE0]);
}

#[test]
fn the_attestation_devices_belong_to_their_platforms() {
    require_kvm();
    // /dev/tdx_guest does not exist on SEV-SNP, /dev/sev-guest not on TDX.
    for (app, platform) in [
        ("tdx_report", "emulated-snp"),
        ("sev_report", "emulated-tdx"),
    ] {
        let bin = dir().join(format!("{app}-other"));
        build_c_app_musl(&app_source(&format!("{app}.c")), &bin);
        let image = package_with(
            &bin,
            &dir().join(format!("{app}-other.igvm")),
            &PackageOptions::new(),
        );
        let output = run_on(&image, platform, &[]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{}",
            describe_output(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("errno 2"),
            "{app} on {platform}: {}",
            describe_output(&output)
        );
    }
}
