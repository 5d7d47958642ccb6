//! `nacre measure` on a real image of the C hello app: the launch measurement of each
//! platform, that the TDX one is what the emulated TDX module computes, and that
//! `--explain` accounts for every page the launch adds. Only the TDX run needs
//! `/dev/kvm`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use nacre_tests::{
    app_source, build_c_app, describe_output, nacre, nacre_bin, package_with, require_kvm, run_on,
    scratch_dir, PackageOptions, EXIT_NACRE_ERROR,
};

/// The GPA every SEV-SNP VMSA is measured at (docs/specs.md 5.1).
const SNP_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The static C hello app, built once.
fn hello_app() -> PathBuf {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        let out = scratch_dir(tmp(), "measure-app").join("hello");
        build_c_app(&app_source("hello.c"), &out);
        out
    })
    .clone()
}

/// The hello app packaged with `options` into `measure-images/NAME.igvm`.
fn image(name: &str, options: &PackageOptions) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch_dir(tmp(), "measure-images"));
    package_with(&hello_app(), &dir.join(format!("{name}.igvm")), options)
}

/// The hello image without arguments, packaged once.
fn hello_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| image("hello", &PackageOptions::new()))
        .clone()
}

/// `nacre measure IMAGE ARGS...`.
fn measure(image: &Path, args: &[&str]) -> Output {
    let mut cli = vec!["measure".to_string(), image.display().to_string()];
    cli.extend(args.iter().map(|a| (*a).to_string()));
    nacre(&cli, &[])
}

/// `nacre measure IMAGE --json ARGS...`, which must succeed, parsed.
fn measure_json(image: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = measure(image, &all);
    assert!(
        output.status.success(),
        "nacre measure --json failed\n{}",
        describe_output(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "nacre measure --json printed no JSON: {e}\n{}",
            describe_output(&output)
        )
    })
}

/// The measurement of `platform` in `json`, checked to be 96 lowercase hex digits.
fn measurement(json: &serde_json::Value, platform: &str) -> String {
    let value = json[platform]["measurement"]
        .as_str()
        .unwrap_or_else(|| panic!("no {platform} measurement in {json:#}"));
    assert_eq!(value.len(), 96, "{platform}: {value}");
    assert!(
        value
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{platform}: {value} is not lowercase hex"
    );
    value.to_string()
}

#[test]
fn json_gives_96_hex_digits_per_platform() {
    let json = measure_json(&hello_image(), &[]);
    let object = json.as_object().expect("a JSON object");
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["snp", "tdx"],
        "every platform the image serves: {json:#}"
    );
    let snp = measurement(&json, "snp");
    let tdx = measurement(&json, "tdx");
    assert_ne!(snp, tdx);
    assert_eq!(json["snp"]["report_field"], "measurement");
    assert_eq!(json["tdx"]["report_field"], "mrtd");

    // One platform at a time gives the same values.
    let only = measure_json(&hello_image(), &["--platform", "snp"]);
    assert_eq!(only.as_object().map(|o| o.len()), Some(1), "{only:#}");
    assert_eq!(measurement(&only, "snp"), snp);
    let only = measure_json(&hello_image(), &["--platform", "tdx"]);
    assert_eq!(measurement(&only, "tdx"), tdx);
}

#[test]
fn text_is_one_line_per_platform() {
    let json = measure_json(&hello_image(), &[]);
    let output = measure(&hello_image(), &[]);
    assert!(output.status.success(), "{}", describe_output(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["snp", "measurement", &measurement(&json, "snp")],
            vec!["tdx", "mrtd", &measurement(&json, "tdx")],
        ],
        "{text}"
    );
}

/// The emulated platforms' names, as `nacre run` and `nacre attest` take them, pick the
/// platform whose measurement they share.
#[test]
fn emulated_platform_names_are_accepted() {
    for (alias, platform) in [("emulated-snp", "snp"), ("emulated-tdx", "tdx")] {
        assert_eq!(
            measure_json(&hello_image(), &["--platform", alias]),
            measure_json(&hello_image(), &["--platform", platform]),
            "{alias}"
        );
    }
}

/// The host adds the image's pages to the emulated TD and compares the MRTD its TDX
/// module computed with the one the image predicts, refusing to start the TD when they
/// differ. `nacre measure` prints that prediction, so the app running is the check that
/// the printed MRTD is the module's.
#[test]
fn tdx_mrtd_is_the_one_the_emulated_td_accepts() {
    require_kvm();
    let image = hello_image();
    measurement(&measure_json(&image, &["--platform", "tdx"]), "tdx");
    let output = run_on(&image, "emulated-tdx", &[]);
    assert_eq!(
        output.status.code(),
        Some(42),
        "the emulated TD refused or failed the image\n{}",
        describe_output(&output)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from nacre\n"
    );
}

#[test]
fn same_inputs_measure_the_same_and_any_change_is_seen() {
    let first = measure_json(&hello_image(), &[]);
    let again = measure_json(&image("hello-again", &PackageOptions::new()), &[]);
    assert_eq!(first, again, "two packagings of the same inputs");
    let data = scratch_dir(tmp(), "measure-data");
    fs::write(data.join("a.txt"), b"a").expect("write a fixture file");
    for (name, options) in [
        ("argument", PackageOptions::new().args(&["x"])),
        ("environment", PackageOptions::new().env("K", "v")),
        ("file-tree", PackageOptions::new().file(&data, "/data")),
        (
            "page-validation",
            PackageOptions::new().flags(&["--page-validation", "4k"]),
        ),
    ] {
        let other = measure_json(&image(name, &options), &[]);
        for platform in ["snp", "tdx"] {
            assert_ne!(
                measurement(&other, platform),
                measurement(&first, platform),
                "{name} on {platform}"
            );
        }
    }
}

/// `nacre package --debug` changes the guest policy, which neither launch measurement
/// covers: both measurements stay, and `--json` shows each platform's policy.
#[test]
fn debug_changes_the_policy_not_the_measurement() {
    let plain = measure_json(&hello_image(), &[]);
    let debug = measure_json(
        &image("hello-debug", &PackageOptions::new().flags(&["--debug"])),
        &[],
    );
    for platform in ["snp", "tdx"] {
        assert_eq!(
            measurement(&debug, platform),
            measurement(&plain, platform),
            "{platform}"
        );
        assert_eq!(plain[platform]["debug"], false, "{plain:#}");
        assert_eq!(debug[platform]["debug"], true, "{debug:#}");
    }
    // SEV-SNP: SMT and the reserved bit 17, plus DEBUG (bit 19). TDX: DEBUG_ALLOWED.
    assert_eq!(plain["snp"]["guest_policy"], "0x30000");
    assert_eq!(debug["snp"]["guest_policy"], "0xb0000");
    assert_eq!(plain["tdx"]["guest_policy"], "0x2");
    assert_eq!(debug["tdx"]["guest_policy"], "0x3");
}

#[test]
fn package_help_says_what_debug_gives_away() {
    let output = nacre(&["package".to_string(), "--help".to_string()], &[]);
    assert!(output.status.success(), "{}", describe_output(&output));
    let help = String::from_utf8_lossy(&output.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "--debug",
        "read and change the guest's memory",
        "SEV-SNP guest policy DEBUG",
        "TD attribute DEBUG",
        "--allow-debug",
    ] {
        assert!(help.contains(needle), "{needle}:\n{help}");
    }
}

/// What one platform's launch adds, read from the IGVM file itself: page GPA -> whether
/// its contents are measured.
#[derive(Debug, Default)]
struct IgvmPages {
    snp: BTreeMap<u64, &'static str>,
    tdx: BTreeMap<u64, &'static str>,
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Walk the IGVM variable headers (format version 1: a 24-byte fixed header, then
/// headers of `{u32 type, u32 length, body padded to 8}`) for the page data, parameter
/// insert and VP context directives of each platform. Page types as `nacre measure`
/// names them: a page with file data is NORMAL, one without is ZERO; the parameter
/// page is UNMEASURED; the VP context is the VMSA, measured at its own GPA.
fn igvm_pages(image: &Path) -> IgvmPages {
    const SUPPORTED_PLATFORM: u32 = 0x1;
    const PAGE_DATA: u32 = 0x302;
    const PARAMETER_INSERT: u32 = 0x303;
    const VP_CONTEXT: u32 = 0x304;
    const SEV_SNP: u8 = 2;
    const TDX: u8 = 3;
    let bytes = fs::read(image).expect("read the image");
    assert_eq!(&bytes[..4], b"IGVM");
    let start = le_u32(&bytes, 8) as usize;
    let end = start + le_u32(&bytes, 12) as usize;
    let (mut snp_mask, mut tdx_mask) = (0, 0);
    let mut pages = IgvmPages::default();
    let mut at = start;
    while at < end {
        let (kind, len) = (le_u32(&bytes, at), le_u32(&bytes, at + 4) as usize);
        let body = &bytes[at + 8..at + 8 + len];
        let on = |mask: u32| [(snp_mask & mask != 0), (tdx_mask & mask != 0)];
        let mut add = |platforms: [bool; 2], gpa: u64, snp: &'static str| {
            if platforms[0] {
                assert!(pages.snp.insert(gpa, snp).is_none(), "{gpa:#x} twice");
            }
            if platforms[1] {
                let tdx = if snp == "UNMEASURED" {
                    "PAGE.ADD"
                } else {
                    "PAGE.ADD+MR.EXTEND"
                };
                assert!(pages.tdx.insert(gpa, tdx).is_none(), "{gpa:#x} twice");
            }
        };
        match kind {
            SUPPORTED_PLATFORM => match body[5] {
                SEV_SNP => snp_mask = le_u32(body, 0),
                TDX => tdx_mask = le_u32(body, 0),
                other => panic!("unexpected platform type {other}"),
            },
            PAGE_DATA => {
                // IGVM_VHS_PAGE_DATA: data_type (u16) at 20; 1 is SECRETS, 2 CPUID_DATA.
                // A page without file data is a NORMAL page of zeros, as the IGVM format
                // asks.
                let data_type = u16::from_le_bytes([body[20], body[21]]);
                let page_type = match data_type {
                    1 => "SECRETS",
                    2 => "CPUID",
                    _ => "NORMAL",
                };
                add(on(le_u32(body, 8)), le_u64(body, 0), page_type);
            }
            PARAMETER_INSERT => add(on(le_u32(body, 8)), le_u64(body, 0), "UNMEASURED"),
            VP_CONTEXT => {
                // IGVM_VHS_VP_CONTEXT: gpa (u64) at 0, compatibility mask at 8. The file
                // says where KVM measures the VMSA, as QEMU's IGVM loader requires.
                assert_eq!(on(le_u32(body, 8)), [true, false]);
                assert_eq!(le_u64(body, 0), SNP_VMSA_GPA);
                add([true, false], SNP_VMSA_GPA, "VMSA");
            }
            _ => {}
        }
        at += 8 + len.div_ceil(8) * 8;
    }
    pages
}

#[test]
fn explain_regions_cover_every_measured_page_exactly_once() {
    let image = image(
        "explain",
        &PackageOptions::new()
            .args(&["one", "two"])
            .file(&app_source("hello.c"), "/src/hello.c"),
    );
    let json = measure_json(&image, &["--explain"]);
    let expected = igvm_pages(&image);
    for (platform, expected) in [("snp", &expected.snp), ("tdx", &expected.tdx)] {
        let regions = json[platform]["regions"]
            .as_array()
            .unwrap_or_else(|| panic!("no {platform} regions in {json:#}"));
        let mut covered: BTreeMap<u64, &str> = BTreeMap::new();
        let mut kinds = Vec::new();
        for r in regions {
            let gpa = |key: &str| {
                let text = r[key].as_str().unwrap_or_else(|| panic!("{key} in {r}"));
                u64::from_str_radix(text.trim_start_matches("0x"), 16).expect("a hex GPA")
            };
            let (start, end) = (gpa("gpa_start"), gpa("gpa_end"));
            let pages = r["pages"].as_u64().expect("a page count");
            assert_eq!(end - start, pages * 4096, "{platform}: {r}");
            let page_type = r["page_type"].as_str().expect("a page type");
            for page in (start..end).step_by(4096) {
                assert!(
                    covered.insert(page, page_type).is_none(),
                    "{platform}: page {page:#x} is in two regions"
                );
            }
            let digest = &r["sha384"];
            if ["UNMEASURED", "SECRETS", "CPUID", "PAGE.ADD"].contains(&page_type) {
                assert!(digest.is_null(), "{platform}: {r}");
            } else {
                assert_eq!(digest.as_str().map(str::len), Some(96), "{platform}: {r}");
            }
            kinds.push(r["what"].as_str().expect("what").to_string());
        }
        let expected: BTreeMap<u64, &str> = expected.iter().map(|(&g, &t)| (g, t)).collect();
        assert_eq!(covered, expected, "{platform}");
        kinds.dedup();
        let mut want = vec!["boot-info"];
        if platform == "snp" {
            want.extend(["secrets-page", "cpuid-page"]);
        }
        want.extend(["page-tables", "firmware", "app", "args", "file-tree"]);
        want.extend(match platform {
            "snp" => ["parameter-page", "vmsa"],
            _ => ["tdx-reset-page", "parameter-page"],
        });
        assert_eq!(kinds, want, "{platform}");
    }
}

#[test]
fn explain_text_has_a_row_per_region() {
    let json = measure_json(&hello_image(), &["--explain"]);
    let output = measure(&hello_image(), &["--explain"]);
    assert!(output.status.success(), "{}", describe_output(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let regions = |p: &str| json[p]["regions"].as_array().map_or(0, Vec::len);
    // Per platform: its line, the table's header, a row per region, the network
    // policy's heading and its one line (none).
    assert_eq!(
        text.lines().count(),
        2 * 4 + regions("snp") + regions("tdx"),
        "{text}"
    );
    assert!(text.contains("(the host's, not measured)"), "{text}");
    assert!(text.contains("none: the app has no network"), "{text}");
    assert_eq!(json["snp"]["network"][0], "none: the app has no network");
}

/// `--listen`, `--connect` and `--dns` are measured (the policy and `/etc/resolv.conf`
/// are packaged files) and `--explain` shows them, the same on both platforms.
#[test]
fn the_network_policy_is_measured_and_explained() {
    let open = image(
        "network",
        &PackageOptions::new().flags(&[
            "--listen",
            "8080",
            "--listen",
            "5353/udp",
            "--connect",
            "10.0.0.0/8:443",
            "--connect",
            "[::1]:*",
            "--dns",
            "10.0.0.53",
        ]),
    );
    let json = measure_json(&open, &["--explain"]);
    let plain = measure_json(&hello_image(), &[]);
    for platform in ["snp", "tdx"] {
        assert_ne!(
            measurement(&json, platform),
            measurement(&plain, platform),
            "{platform}"
        );
        assert_eq!(
            json[platform]["network"],
            serde_json::json!([
                "listen tcp 8080",
                "listen udp 5353",
                "connect tcp 10.0.0.0/8 443",
                "connect tcp ::1/128 *",
                "connect udp 10.0.0.53/32 53",
                "connect tcp 10.0.0.53/32 53",
                "name server 10.0.0.53 (/etc/resolv.conf)"
            ]),
            "{json:#}"
        );
    }
    let output = measure(&open, &["--explain"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("        connect tcp 10.0.0.0/8 443"),
        "{text}"
    );
    // A rule that does not parse is a usage error at packaging, naming the flag.
    let bad = scratch_dir(tmp(), "measure-bad-policy").join("bad.igvm");
    let output = nacre_tests::package_with_output(
        &hello_app(),
        &bad,
        &PackageOptions::new().flags(&["--connect", "10.0.0.1:http"]),
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        describe_output(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--connect \"10.0.0.1:http\": the port"),
        "{stderr}"
    );
    assert!(!bad.exists());
}

#[test]
fn bad_images_are_refused_with_status_125() {
    let dir = scratch_dir(tmp(), "measure-bad");
    let junk = dir.join("junk.igvm");
    fs::write(&junk, b"this is not an image").expect("write");
    let truncated = dir.join("truncated.igvm");
    let bytes = fs::read(hello_image()).expect("read the image");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let corrupt = dir.join("corrupt.igvm");
    fs::write(&corrupt, &flipped).expect("write");
    for (path, says) in [
        (junk, "not an IGVM image"),
        (truncated, "truncated"),
        (corrupt, "corrupt"),
        (dir.join("missing.igvm"), "cannot read"),
    ] {
        let output = measure(&path, &["--json"]);
        assert_eq!(
            output.status.code(),
            Some(EXIT_NACRE_ERROR),
            "{}",
            describe_output(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(output.stdout.is_empty(), "{}", describe_output(&output));
    }
}

/// On SEV-SNP every vCPU's VMSA is measured, so `--cpus` changes the SNP value (and
/// `--json` says for how many); the TDX MRTD is the same for any count.
#[test]
fn cpus_change_the_snp_measurement_and_not_the_mrtd() {
    let one = measure_json(&hello_image(), &[]);
    assert_eq!(one["snp"]["cpus"], 1, "{one:#}");
    assert_eq!(measure_json(&hello_image(), &["--cpus", "1"]), one);
    let mut snp = vec![measurement(&one, "snp")];
    for cpus in ["2", "16"] {
        let more = measure_json(&hello_image(), &["--cpus", cpus]);
        for platform in ["snp", "tdx"] {
            assert_eq!(more[platform]["cpus"].to_string(), cpus, "{more:#}");
        }
        assert_eq!(
            measurement(&more, "tdx"),
            measurement(&one, "tdx"),
            "{cpus}"
        );
        snp.push(measurement(&more, "snp"));
    }
    snp.sort();
    snp.dedup();
    assert_eq!(snp.len(), 3, "{snp:?}");

    // --explain lists a VMSA per vCPU.
    let output = measure(&hello_image(), &["--cpus", "3", "--explain"]);
    assert!(output.status.success(), "{}", describe_output(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for vcpu in 0..3 {
        assert!(text.contains(&format!("VMSA vCPU {vcpu}")), "{text}");
    }
    assert!(text.contains("3 VMSA pages, one per vCPU"), "{text}");
    let json = measure_json(&hello_image(), &["--cpus", "3", "--explain"]);
    let vmsas = json["snp"]["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .filter(|r| r["what"] == "vmsa")
        .count();
    assert_eq!(vmsas, 3, "{json:#}");
}

#[test]
fn cpus_outside_one_to_sixteen_are_refused() {
    for bad in ["0", "17"] {
        let output = measure(&hello_image(), &["--cpus", bad]);
        assert!(!output.status.success(), "{}", describe_output(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--cpus") && stderr.contains("the number of vCPUs must be 1 to 16"),
            "{bad}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{}", describe_output(&output));
    }
    let output = nacre(&["measure".to_string(), "--help".to_string()], &[]);
    let help = String::from_utf8_lossy(&output.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "--cpus",
        "one VMSA per vCPU",
        "every vCPU",
        "MRTD is the same for all",
    ] {
        assert!(help.contains(needle), "{needle}:\n{help}");
    }
}

#[test]
fn help_teaches_with_an_example() {
    let output = nacre(&["measure".to_string(), "--help".to_string()], &[]);
    assert!(output.status.success(), "{}", describe_output(&output));
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "nacre measure hello.igvm",
        "--explain",
        "MEASUREMENT",
        "MRTD",
    ] {
        assert!(help.contains(needle), "{needle}:\n{help}");
    }
}

#[test]
fn policy_out_writes_the_images_reference_values_and_refuses_a_directory() {
    let dir = scratch_dir(tmp(), "measure-policy-out");
    let path = dir.join("hello.policy.toml");
    let arg = path.display().to_string();
    let output = measure(
        &hello_image(),
        &["--json", "--cpus", "2", "--policy-out", &arg],
    );
    assert!(output.status.success(), "{}", describe_output(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let text = fs::read_to_string(&path).expect("the policy file");
    // The measurements printed are the policy's: the SEV-SNP one for 2 vCPUs.
    for (platform, key) in [("snp", "measurement"), ("tdx", "mrtd")] {
        let value = json[platform]["measurement"].as_str().expect("hex");
        assert!(
            text.contains(&format!("{key} = \"{value}\"")),
            "{key}:\n{text}"
        );
    }
    for needle in [
        "[snp]",
        "vmpl = 0",
        "[snp.guest_policy]",
        "debug = false",
        "[tdx]",
        "[tdx.td_attributes]",
        "sept_ve_disable = true",
        "--cpus 2",
    ] {
        assert!(text.contains(needle), "{needle}:\n{text}");
    }
    // One platform asked for, one table.
    let output = measure(&hello_image(), &["--platform", "tdx", "--policy-out", &arg]);
    assert!(output.status.success(), "{}", describe_output(&output));
    let text = fs::read_to_string(&path).expect("the policy file");
    assert!(text.contains("[tdx]") && !text.contains("[snp]"), "{text}");

    let output = measure(
        &hello_image(),
        &["--policy-out", &dir.display().to_string()],
    );
    assert_eq!(
        output.status.code(),
        Some(EXIT_NACRE_ERROR),
        "{}",
        describe_output(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is a directory; nacre writes its output only to a regular file"),
        "{stderr}"
    );
    assert!(dir.is_dir());
}

/// Standard output or error that cannot be written (a full disk, here `/dev/full`) is
/// nacre's error, said on stderr, with status 125, not an abort; a reader that stops
/// early (`| head`) is no error.
#[test]
fn unwritable_output_is_an_error_not_an_abort() {
    use std::process::{Command, Stdio};
    let image = hello_image();
    let full = || {
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full")
    };
    for json in [false, true] {
        let mut cmd = Command::new(nacre_bin());
        cmd.arg("measure").arg(&image);
        if json {
            cmd.arg("--json");
        }
        let output = cmd.stdout(full()).output().expect("run nacre");
        assert_eq!(
            output.status.code(),
            Some(EXIT_NACRE_ERROR),
            "{}",
            describe_output(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cannot write the result to standard output"),
            "{stderr}"
        );
    }
    // The error message itself cannot be written: still status 125.
    let output = Command::new(nacre_bin())
        .args(["measure", "/nonexistent.igvm"])
        .stderr(full())
        .output()
        .expect("run nacre");
    assert_eq!(output.status.code(), Some(EXIT_NACRE_ERROR), "{output:?}");
    // A reader that has gone.
    let mut child = Command::new(nacre_bin())
        .arg("measure")
        .arg(&image)
        .args(["--explain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nacre");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        describe_output(&output)
    );
}
