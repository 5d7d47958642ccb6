//! Whole-system tests on the `emulated-snp` and `emulated-tdx` platforms: real images
//! of the test apps in `tests/apps/`, packaged once and booted on both platforms by
//! the real `nacre` binary in KVM. They need `/dev/kvm` and fail without it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use nacre_tests::{
    app_source, build_c_app, build_c_app_with, build_rust_app, describe_output, nacre, package,
    package_output, package_with, require_kvm, run, run_with_env, scratch_dir, PackageOptions,
    Stats, EXIT_GUEST_TERMINATED, EXIT_NACRE_ERROR,
};

const PLATFORM: [&str; 2] = ["--platform", "emulated-snp"];
const TDX: [&str; 2] = ["--platform", "emulated-tdx"];
/// Every emulated platform: each app test runs the same image on all of them.
const PLATFORMS: [[&str; 2]; 2] = [PLATFORM, TDX];
const C_HELLO_STDOUT: &str = "hello from nacre\n";
const C_HELLO_EXIT: i32 = 42;
const RUST_HELLO_EXIT: i32 = 7;

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The static C hello app, built once for all tests of this binary.
fn c_hello_app() -> PathBuf {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        let out = scratch_dir(tmp(), "e2e-apps-c").join("hello");
        build_c_app(&app_source("hello.c"), &out);
        out
    })
    .clone()
}

/// The packaged C hello image (no arguments, no environment), built once.
fn c_hello_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| package(&c_hello_app(), &[], &[]))
        .clone()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_exit(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: expected exit code {code}\n{}",
        describe_output(output)
    );
}

fn assert_no_panic(output: &Output, what: &str) {
    assert!(
        !stderr(output).contains("panicked"),
        "{what}: nacre panicked instead of reporting an error\n{}",
        describe_output(output)
    );
}

/// Runs `args` and returns the stats it wrote with `--stats-json`.
fn run_for_stats(image: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, Stats) {
    let stats_path = scratch_dir(tmp(), name).join("stats.json");
    let stats_arg = stats_path.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--stats-json", &stats_arg]);
    let output = run_with_env(image, &all, env);
    assert!(
        stats_path.is_file(),
        "`nacre run --stats-json` wrote no stats file\n{}",
        describe_output(&output)
    );
    (output, Stats::read(&stats_path))
}

#[test]
fn c_hello_prints_and_returns_its_exit_code() {
    require_kvm();
    for platform in PLATFORMS {
        let output = run(&c_hello_image(), &platform);
        assert_exit(
            &output,
            C_HELLO_EXIT,
            &format!("C hello on {}", platform[1]),
        );
        assert_eq!(
            stdout(&output),
            C_HELLO_STDOUT,
            "{}",
            describe_output(&output)
        );
    }
}

/// One image boots whatever C-bit position the SEV-SNP platform reports: the firmware
/// reads it from the CPUID page. The emulated security processor measures every launch
/// and the host refuses to start a guest whose measurement is not the image's (`nacre
/// measure`), so each boot is also a launch with the one predicted measurement.
#[test]
fn one_image_boots_with_any_c_bit_position() {
    require_kvm();
    for bit in ["47", "46", "32"] {
        let output = run_with_env(
            &c_hello_image(),
            &PLATFORM,
            &[("NACRE_EMULATED_SNP_C_BIT", bit)],
        );
        assert_exit(&output, C_HELLO_EXIT, &format!("C hello with C-bit {bit}"));
        assert_eq!(
            stdout(&output),
            C_HELLO_STDOUT,
            "{}",
            describe_output(&output)
        );
    }
    // Positions the emulated platform cannot take are refused with the reason.
    for bit in ["51", "31", "x"] {
        let output = run_with_env(
            &c_hello_image(),
            &PLATFORM,
            &[("NACRE_EMULATED_SNP_C_BIT", bit)],
        );
        assert_exit(&output, EXIT_NACRE_ERROR, &format!("C-bit {bit}"));
        assert!(
            stderr(&output).contains("32 to 47"),
            "{}",
            describe_output(&output)
        );
        assert_no_panic(&output, &format!("C-bit {bit}"));
    }
}

/// Large guests: 4 GiB on SNP (it takes up to 64 GiB, more than CI hosts can back); on
/// TDX RAM ends below the reset vector's 2 MiB region (4094 MiB). More than a platform
/// boots is refused, naming its limit, before a VM is made.
#[test]
fn c_hello_boots_with_the_most_memory_each_platform_takes() {
    require_kvm();
    for (platform, memory) in [(PLATFORM, "4G"), (TDX, "4094M")] {
        let mut args = platform.to_vec();
        args.extend(["--memory", memory]);
        let output = run(&c_hello_image(), &args);
        assert_exit(&output, C_HELLO_EXIT, &format!("C hello with {memory}"));
        assert_eq!(
            stdout(&output),
            C_HELLO_STDOUT,
            "{}",
            describe_output(&output)
        );
    }
    let mut args = TDX.to_vec();
    args.extend(["--memory", "4G"]);
    let output = run(&c_hello_image(), &args);
    assert_exit(&output, EXIT_NACRE_ERROR, "4G on emulated-tdx");
    assert!(
        stderr(&output).contains("at most 4094 MiB"),
        "{}",
        describe_output(&output)
    );
    assert_no_panic(&output, "4G on emulated-tdx");
    // More than the SNP firmware maps (74G used to end as "guest memory exhausted",
    // 16T as a KVM error).
    for memory in ["65G", "74G", "16T"] {
        let output = run(&c_hello_image(), &["--memory", memory]);
        assert_exit(
            &output,
            EXIT_NACRE_ERROR,
            &format!("{memory} on emulated-snp"),
        );
        assert!(
            stderr(&output).contains("boots at most 64 GiB of guest memory"),
            "{}",
            describe_output(&output)
        );
    }
}

#[test]
fn stats_flag_keeps_stdout_for_the_app() {
    require_kvm();
    for platform in PLATFORMS {
        let mut args = platform.to_vec();
        args.push("--stats");
        let output = run(&c_hello_image(), &args);
        assert_exit(&output, C_HELLO_EXIT, "C hello with --stats");
        assert_eq!(
            stdout(&output),
            C_HELLO_STDOUT,
            "--stats must not write to the app's stdout\n{}",
            describe_output(&output)
        );
        assert!(
            !output.stderr.is_empty(),
            "--stats printed nothing\n{}",
            describe_output(&output)
        );
    }
}

#[test]
fn rust_hello_gets_args_env_and_heap() {
    require_kvm();
    let dir = scratch_dir(tmp(), "e2e-apps-rust");
    let app = dir.join("hello_rust");
    build_rust_app(&app_source("hello_rust.rs"), &app);
    let image = package(&app, &["one", "two words"], &[("NACRE_GREETING", "hi")]);

    for platform in PLATFORMS {
        // The app allocates 64 MiB on its heap; give it room beyond that.
        let mut args = platform.to_vec();
        args.extend(["--memory", "256M"]);
        let output = run(&image, &args);

        assert_exit(
            &output,
            RUST_HELLO_EXIT,
            &format!("Rust hello on {}", platform[1]),
        );
        let expected = "hello from rust\n\
                        arg[1]=one\n\
                        arg[2]=two words\n\
                        env NACRE_GREETING=hi\n\
                        sum=8556380160\n";
        assert_eq!(stdout(&output), expected, "{}", describe_output(&output));
    }

    // The most strings an app can be given (256 with argv[0] and the environment
    // string) reach it; one more is refused when packaging, not at boot as it was.
    let many: Vec<String> = (1..=254).map(|i| format!("a{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let image = package_with(
        &app,
        &dir.join("many.igvm"),
        &PackageOptions::with_args_and_env(&many, &[("NACRE_GREETING", "many")]),
    );
    let output = run(&image, &["--memory", "256M"]);
    assert_exit(&output, RUST_HELLO_EXIT, "Rust hello with 254 arguments");
    let text = stdout(&output);
    assert!(
        text.contains("arg[254]=a254\nenv NACRE_GREETING=many\n"),
        "{}",
        describe_output(&output)
    );
    let mut more = many.clone();
    more.push("one-too-many");
    let output = package_output(
        &app,
        &dir.join("more.igvm"),
        &more,
        &[("NACRE_GREETING", "many")],
    );
    assert_exit(&output, EXIT_NACRE_ERROR, "packaging 257 strings");
    assert!(
        stderr(&output).contains("an app can be given at most 256"),
        "{}",
        describe_output(&output)
    );
    assert!(!dir.join("more.igvm").exists());
}

#[test]
fn stats_json_has_every_key_with_sane_values() {
    require_kvm();
    let (output, stats) = run_for_stats(&c_hello_image(), "e2e-stats", &PLATFORM, &[]);
    assert_exit(&output, C_HELLO_EXIT, "C hello with --stats-json");
    assert_eq!(
        stdout(&output),
        C_HELLO_STDOUT,
        "{}",
        describe_output(&output)
    );

    let exits = stats.counters("exits");
    assert!(
        exits.iter().any(|(_, count)| *count > 0),
        "no exits counted: {exits:?}"
    );

    let psc_calls = stats.u64("psc.calls");
    let psc_4k = stats.u64("psc.entries_4k");
    let psc_2m = stats.u64("psc.entries_2m");
    assert!(
        psc_calls > 0,
        "psc.calls is 0: boot made no page-state change"
    );
    assert!(
        psc_4k + psc_2m >= psc_calls,
        "{psc_calls} PSC calls carried only {psc_4k} 4K + {psc_2m} 2M entries"
    );

    let validated_4k = stats.u64("pvalidate.4k");
    let validated_2m = stats.u64("pvalidate.2m");
    assert!(
        validated_4k + validated_2m > 0,
        "the guest validated no memory"
    );
    let _ = stats.u64("pvalidate.size_mismatch");

    // Host MMU counters: the boot faulted its memory in through the TDP.
    for key in [
        "rmp.psmash",
        "rmp.rmpupdate",
        "tdp.zaps",
        "tdp.maps_1g",
        "tdp.fault_retries",
        "memory.implicit_conversions",
    ] {
        let _ = stats.u64(key);
    }
    let faults = stats.u64("tdp.faults");
    let maps = stats.u64("tdp.maps_4k") + stats.u64("tdp.maps_2m") + stats.u64("tdp.maps_1g");
    assert!(faults > 0, "tdp.faults is 0");
    assert_eq!(faults, maps, "every fault installs exactly one mapping");
    assert!(
        stats.u64("rmp.rmpupdate") > 0,
        "rmp.rmpupdate is 0: nothing was assigned"
    );

    let unsupported = stats.counters("syscalls.unsupported");
    assert!(
        unsupported.iter().all(|(name, _)| !name.is_empty()),
        "unnamed unsupported syscall: {unsupported:?}"
    );

    let boot_ms = stats.f64("boot_ms");
    assert!(
        boot_ms > 0.0 && boot_ms < 60_000.0,
        "boot_ms = {boot_ms} is not a plausible boot time"
    );
}

/// boot_ms ends when the firmware enters the app: an app that sleeps before its first
/// output does not count its sleep as boot time (it once did: boot_ms was the time to
/// the first write, the whole run for such an app).
#[test]
fn boot_time_ends_when_the_app_is_entered() {
    require_kvm();
    let dir = scratch_dir(tmp(), "e2e-late-output");
    let app = dir.join("late_output");
    build_c_app(&app_source("late_output.c"), &app);
    let image = package(&app, &[], &[]);
    for platform in PLATFORMS {
        let (output, stats) = run_for_stats(&image, "e2e-late-output-stats", &platform, &[]);
        assert_exit(&output, 0, &format!("late output on {}", platform[1]));
        assert_eq!(stdout(&output), "late\n", "{}", describe_output(&output));
        let (boot, run) = (stats.f64("boot_ms"), stats.f64("run_ms"));
        assert!(boot > 0.0, "boot_ms = {boot}");
        assert!(
            boot + 400.0 < run,
            "boot_ms = {boot} includes the app's 500 ms sleep (run_ms = {run})"
        );
        assert!(
            stats
                .counters("hostcalls")
                .contains(&("app_entry".to_owned(), 1)),
            "{:?}",
            stats.counters("hostcalls")
        );
    }
}

/// A guest that validates page by page inside memory the host assigned as one 2 MiB
/// RMP entry: its first 4 KiB PVALIDATE is a size-mismatch fault that the host resolves
/// with a PSMASH (and a zap of the 2 MiB mapping), and the guest runs on to the app's
/// normal output and exit code.
#[test]
fn validating_4k_inside_a_2m_rmp_entry_psmashes_and_runs_on() {
    require_kvm();
    let image = c_hello_image_4k();
    let (output, stats) = run_for_stats(&image, "e2e-psmash-run", &PLATFORM, &[]);
    assert_exit(&output, C_HELLO_EXIT, "C hello validating at 4 KiB");
    assert_eq!(
        stdout(&output),
        C_HELLO_STDOUT,
        "{}",
        describe_output(&output)
    );
    assert!(
        stats.u64("rmp.psmash") >= 1,
        "no PSMASH: rmp.psmash = {}",
        stats.u64("rmp.psmash")
    );
    assert_eq!(stats.u64("pvalidate.2m"), 0, "the guest validated at 2 MiB");
    assert!(
        stats.u64("pvalidate.4k") >= 512,
        "fewer than one region of 4K validations"
    );
    // After the split the pages are mapped at 4 KiB, one fault each.
    assert!(stats.u64("tdp.maps_4k") >= 512);

    // The same image packaged the default way validates at 2 MiB and needs no PSMASH.
    let (_, default_stats) = run_for_stats(&c_hello_image(), "e2e-psmash-default", &PLATFORM, &[]);
    assert_eq!(default_stats.u64("rmp.psmash"), 0);
    assert!(default_stats.u64("tdp.maps_2m") >= 1);
}

/// Hostile host (assumption 1): the host finishes one PSC entry per GHCB call
/// and the guest must resume from the progress it reports. The image that works page
/// by page sends multi-entry descriptors (one 4 KiB entry per page).
#[test]
fn psc_partial_progress_is_resumed() {
    require_kvm();
    let image = c_hello_image_4k();
    let (normal, normal_stats) = run_for_stats(&image, "e2e-psc-normal", &PLATFORM, &[]);
    assert_exit(&normal, C_HELLO_EXIT, "C hello");

    let (budget, budget_stats) = run_for_stats(
        &image,
        "e2e-psc-budget",
        &PLATFORM,
        &[("NACRE_TEST_PSC_BUDGET", "1")],
    );
    assert_exit(&budget, C_HELLO_EXIT, "C hello with a PSC budget of 1");
    assert_eq!(
        stdout(&budget),
        C_HELLO_STDOUT,
        "{}",
        describe_output(&budget)
    );

    let normal_calls = normal_stats.u64("psc.calls");
    let budget_calls = budget_stats.u64("psc.calls");
    assert!(
        budget_calls > normal_calls,
        "with one entry per call the guest made {budget_calls} PSC calls, \
         not more than the {normal_calls} of a normal run"
    );
}

/// `nacre package` on bad input: exit 125, a message naming the problem,
/// no panic and no image left behind.
fn assert_package_rejects(app: &Path, dir: &Path, needle: &str) {
    let image = dir.join("rejected.igvm");
    let output = package_output(app, &image, &[], &[]);
    let what = format!("nacre package {}", app.display());
    assert_exit(&output, EXIT_NACRE_ERROR, &what);
    assert_no_panic(&output, &what);
    assert!(
        stderr(&output).to_lowercase().contains(needle),
        "{what}: stderr should say \"{needle}\"\n{}",
        describe_output(&output)
    );
    assert!(
        !image.exists(),
        "{what}: a rejected app left an image behind at {}",
        image.display()
    );
}

#[test]
fn package_rejects_a_text_file() {
    let dir = scratch_dir(tmp(), "e2e-reject-text");
    let app = dir.join("notes.txt");
    fs::write(&app, "this is not a program\n").expect("write test file");
    assert_package_rejects(&app, &dir, "not an elf");
}

#[test]
fn package_rejects_a_truncated_elf() {
    let dir = scratch_dir(tmp(), "e2e-reject-truncated");
    let bytes = fs::read(c_hello_app()).expect("read C hello");
    let app = dir.join("hello-truncated");
    fs::write(&app, &bytes[..bytes.len() / 2]).expect("write truncated copy");
    assert_package_rejects(&app, &dir, "truncated");
}

#[test]
fn package_rejects_a_dynamically_linked_elf() {
    let dir = scratch_dir(tmp(), "e2e-reject-dynamic");
    let app = dir.join("hello-dynamic");
    build_c_app_with(&app_source("hello.c"), &app, &["-O2"]);
    assert_package_rejects(&app, &dir, "dynamically linked");
}

#[test]
fn package_rejects_a_non_x86_64_elf() {
    let dir = scratch_dir(tmp(), "e2e-reject-machine");
    let mut bytes = fs::read(c_hello_app()).expect("read C hello");
    // e_machine (ELF header bytes 18..20, little endian) = EM_AARCH64.
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    let app = dir.join("hello-aarch64");
    fs::write(&app, &bytes).expect("write patched copy");
    assert_package_rejects(&app, &dir, "not x86-64");
}

/// `nacre run` on a damaged image: exit 125 with a message, never a panic and
/// never a booted guest.
fn assert_run_rejects(image: &Path, what: &str) {
    let output = run(image, &PLATFORM);
    assert_exit(&output, EXIT_NACRE_ERROR, what);
    assert_no_panic(&output, what);
    assert!(
        !output.stderr.is_empty(),
        "{what}: nacre gave no message\n{}",
        describe_output(&output)
    );
    assert!(
        !stdout(&output).contains("hello from nacre"),
        "{what}: the damaged image booted\n{}",
        describe_output(&output)
    );
}

#[test]
fn run_rejects_an_image_with_flipped_bytes() {
    require_kvm();
    let dir = scratch_dir(tmp(), "e2e-corrupt-flipped");
    let mut bytes = fs::read(c_hello_image()).expect("read image");
    let middle = bytes.len() / 2;
    let end = (middle + 64).min(bytes.len());
    for byte in &mut bytes[middle..end] {
        *byte ^= 0xff;
    }
    let image = dir.join("flipped.igvm");
    fs::write(&image, &bytes).expect("write corrupt image");
    assert_run_rejects(&image, "nacre run on an image with flipped bytes");
}

#[test]
fn run_rejects_a_truncated_image() {
    require_kvm();
    let dir = scratch_dir(tmp(), "e2e-corrupt-truncated");
    let bytes = fs::read(c_hello_image()).expect("read image");
    let image = dir.join("truncated.igvm");
    fs::write(&image, &bytes[..bytes.len() / 2]).expect("write truncated image");
    assert_run_rejects(&image, "nacre run on a truncated image");
}

#[test]
fn run_rejects_an_empty_file() {
    require_kvm();
    let dir = scratch_dir(tmp(), "e2e-corrupt-empty");
    let image = dir.join("empty.igvm");
    fs::write(&image, b"").expect("write empty image");
    assert_run_rejects(&image, "nacre run on an empty file");
}

/// On a host without SEV-SNP or TDX (where CI runs), the hardware platforms refuse
/// before any VM is made, with exit 125, the check that failed, and a pointer to
/// `nacre host-check`. On a host that has them, this test has nothing to show.
#[test]
fn hardware_platforms_refuse_on_a_host_without_them_and_point_to_host_check() {
    let image = c_hello_image();
    for platform in ["snp", "tdx"] {
        if host_check(platform).status.code() == Some(0) {
            eprintln!("skipped: this host can run {platform} (nacre host-check)");
            continue;
        }
        let output = run(&image, &["--platform", platform]);
        assert_exit(&output, 125, "nacre run on a hardware platform");
        let err = stderr(&output);
        assert!(
            err.contains(&format!("{platform} cannot run on this host"))
                && err.contains(&format!("nacre host-check --platform {platform}")),
            "{}",
            describe_output(&output)
        );
    }
}

/// `nacre host-check --platform PLATFORM`.
fn host_check(platform: &str) -> std::process::Output {
    nacre(
        &[
            "host-check".to_string(),
            "--platform".to_string(),
            platform.to_string(),
        ],
        &[],
    )
}

#[test]
fn demo_runs_the_embedded_example() {
    require_kvm();
    let output = nacre(&["demo".to_string()], &[]);
    assert_exit(&output, 0, "nacre demo");
    assert_no_panic(&output, "nacre demo");
    assert!(
        stdout(&output).contains("hello from nacre"),
        "nacre demo did not show the app's output\n{}",
        describe_output(&output)
    );
    // It ends with attest and verify.
    assert!(
        stdout(&output).contains("verified (emulated evidence): all")
            && stderr(&output).contains("nacre demo: done"),
        "nacre demo did not attest and verify\n{}",
        describe_output(&output)
    );
}

/// Runs the C hello under a hostile-host hook and checks the guest is stopped with
/// exit 120 and a message naming the GPA, the view and the rule.
fn assert_hostile_stop(hook: &str, extra: &[&str], gpa_and_view: &str, rule: &str) {
    nacre_tests::require_kvm();
    let image = c_hello_image();
    let mut args = vec!["--memory", "128M"];
    if !extra.contains(&"--platform") {
        args.extend(PLATFORM);
    }
    args.extend_from_slice(extra);
    let out = nacre_tests::run_with_env(&image, &args, &[("NACRE_TEST_HOSTILE", hook)]);
    assert_exit(&out, 120, hook);
    let err = stderr(&out);
    assert!(
        err.contains(gpa_and_view) && err.contains(rule),
        "{hook}: stderr: {err}"
    );
    assert!(
        !stdout(&out).contains("hello from nacre"),
        "{hook}: the app must not run"
    );
}

/// A hostile host leaves the boot-handoff page unvalidated: the guest's first read of
/// it must stop the guest.
#[test]
fn touching_unvalidated_private_memory_is_stopped() {
    assert_hostile_stop(
        "unvalidated-boot-info",
        &[],
        "private access to GPA 0x1000",
        "never validated",
    );
}

/// A hostile host leaves the parameter page shared. The guest reads it through its
/// private view: as on KVM, the memory-fault exit converts the page to private, and the
/// fresh page the guest never validated stops it.
#[test]
fn touching_shared_memory_as_private_is_converted_then_stopped() {
    assert_hostile_stop(
        "shared-param-page",
        &[],
        "private access to GPA 0x2000",
        "never validated",
    );
}

/// The same with `--strict-memory`: the wrong-view access itself stops the guest.
#[test]
fn touching_shared_memory_as_private_is_stopped_when_strict() {
    assert_hostile_stop(
        "shared-param-page",
        &["--strict-memory"],
        "private access to GPA 0x2000",
        "not assigned to the guest (it is shared)",
    );
}

/// Packages the C hello with `--page-validation 4k`, once.
fn c_hello_image_4k() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let image = scratch_dir(tmp(), "e2e-image-4k").join("hello-4k.igvm");
            let cli: Vec<String> = [
                "package",
                &c_hello_app().display().to_string(),
                "-o",
                &image.display().to_string(),
                "--page-validation",
                "4k",
            ]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
            let out = nacre(&cli, &[]);
            assert!(out.status.success(), "{}", describe_output(&out));
            image
        })
        .clone()
}

/// On TDX the boot accepts its memory with TDG.MEM.PAGE.ACCEPT (2 MiB first), the
/// hostcall area goes shared with one MapGPA, and `--stats-json` reports the TDX
/// and S-EPT counters.
#[test]
fn tdx_stats_json_counts_accepts_map_gpa_and_the_sept() {
    require_kvm();
    let (output, stats) = run_for_stats(&c_hello_image(), "e2e-tdx-stats", &TDX, &[]);
    assert_exit(&output, C_HELLO_EXIT, "C hello on TDX with --stats-json");
    assert_eq!(
        stdout(&output),
        C_HELLO_STDOUT,
        "{}",
        describe_output(&output)
    );
    assert!(stats.u64("tdx.accept_2m") >= 1, "no 2 MiB accept");
    assert_eq!(stats.u64("tdx.accept_size_mismatch"), 0);
    let _ = stats.u64("tdx.accept_4k");
    assert_eq!(
        stats.u64("tdx.map_gpa_calls"),
        1,
        "one MapGPA for the hostcall area"
    );
    assert_eq!(stats.u64("tdx.map_gpa_retries"), 0);
    // Every accepted 2 MiB region was AUGed by the host first.
    assert!(stats.u64("sept.aug") >= stats.u64("tdx.accept_2m"));
    // The hostcall area (the last 2 MiB of RAM) was never added or accepted: it went
    // shared without any page leaving the S-EPT.
    assert_eq!(stats.u64("sept.remove"), 0);
    assert_eq!(stats.u64("tdx.map_gpa_pages"), 512);
    // A TD has no SNP protocol: its counters are not there at all.
    for key in ["psc.calls", "pvalidate.4k", "pvalidate.2m", "rmp.psmash"] {
        assert!(stats.get(key).is_none(), "{key} in a TD's stats");
    }
}

/// Accepting page by page inside memory the host AUGed as one 2 MiB page works at
/// 4 KiB only; the 2 MiB default needs no 4 KiB accept at all.
#[test]
fn tdx_accepting_4k_runs_on() {
    require_kvm();
    let (output, stats) = run_for_stats(&c_hello_image_4k(), "e2e-tdx-4k", &TDX, &[]);
    assert_exit(&output, C_HELLO_EXIT, "C hello accepting at 4 KiB on TDX");
    assert_eq!(
        stdout(&output),
        C_HELLO_STDOUT,
        "{}",
        describe_output(&output)
    );
    assert_eq!(stats.u64("tdx.accept_2m"), 0, "the guest accepted at 2 MiB");
    assert!(
        stats.u64("tdx.accept_4k") >= 512,
        "fewer than one region of 4K accepts"
    );
    assert_eq!(stats.u64("tdx.accept_already"), 0);
}

/// MapGPA answered RETRY part-way (as KVM does when an interrupt is pending between
/// chunks): the guest resumes from the GPA the host returns, and every page is
/// converted exactly once.
#[test]
fn tdx_map_gpa_retry_is_resumed() {
    require_kvm();
    let (output, stats) = run_for_stats(
        &c_hello_image(),
        "e2e-tdx-map-gpa-retry",
        &TDX,
        &[("NACRE_TEST_MAP_GPA_PAGES", "128")],
    );
    assert_exit(&output, C_HELLO_EXIT, "C hello with MapGPA retries");
    assert_eq!(
        stdout(&output),
        C_HELLO_STDOUT,
        "{}",
        describe_output(&output)
    );
    // The 512 pages of the hostcall area at 128 per call: 4 calls, 3 of them answered
    // RETRY.
    assert_eq!(stats.u64("tdx.map_gpa_calls"), 4);
    assert_eq!(stats.u64("tdx.map_gpa_retries"), 3);
    assert_eq!(stats.u64("tdx.map_gpa_pages"), 512);
}

/// A host that adds a page behind the guest's back: the guest's accept finds it
/// accepted already, which its own record says it never did, and the TD stops with
/// ReportFatalError.
#[test]
fn tdx_second_accept_is_detected_and_stops_the_guest() {
    require_kvm();
    let out = nacre_tests::run_with_env(
        &c_hello_image(),
        &TDX,
        &[("NACRE_TEST_HOSTILE", "pre-accepted-page")],
    );
    assert_exit(&out, 121, "pre-accepted page");
    let err = stderr(&out);
    assert!(
        err.contains("ReportFatalError") || err.contains("fatal error"),
        "stderr: {err}"
    );
    assert!(err.contains("never validated or accepted"), "stderr: {err}");
    assert!(
        !stdout(&out).contains("hello from nacre"),
        "the app must not run"
    );
}

/// On TDX too, a guest read through the wrong view (the shared parameter page read
/// with the shared bit clear) is converted and then stopped because the page was never
/// accepted, or stopped at once with `--strict-memory`.
#[test]
fn tdx_wrong_view_access_is_converted_then_stopped_or_stopped_when_strict() {
    assert_hostile_stop(
        "shared-param-page",
        &TDX,
        "private access to GPA 0x2000",
        "never accepted",
    );
    let mut strict = TDX.to_vec();
    strict.push("--strict-memory");
    assert_hostile_stop(
        "shared-param-page",
        &strict,
        "private access to GPA 0x2000",
        "not assigned to the guest (it is shared)",
    );
}

/// The stdin echo app, built once.
fn cat_stdin_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let app = scratch_dir(tmp(), "e2e-apps-cat").join("cat_stdin");
            build_c_app(&app_source("cat_stdin.c"), &app);
            package(&app, &[], &[])
        })
        .clone()
}

/// Hostile host (assumption 1): a console read answered with one byte more than the
/// guest asked for is a malformed reply; the firmware stops the guest before it copies
/// any of it to the app.
#[test]
fn an_overlong_read_reply_stops_the_guest() {
    require_kvm();
    for platform in PLATFORMS {
        let mut cli: Vec<String> = vec!["run".into(), cat_stdin_image().display().to_string()];
        cli.extend(platform.iter().map(|s| (*s).to_string()));
        let out = nacre_tests::nacre_with_stdin(
            &cli,
            &[("NACRE_TEST_HOSTILE", "overlong-read")],
            Some(b"some input\n"),
        );
        assert_exit(&out, EXIT_GUEST_TERMINATED, "overlong read reply");
        assert!(
            stderr(&out).contains("hostcall reply was malformed"),
            "{}",
            describe_output(&out)
        );
        assert!(
            stdout(&out).is_empty(),
            "no input may reach the app\n{}",
            describe_output(&out)
        );
    }
}

/// Hostile host: a host that returns from every sleep at once cannot shorten a sleep;
/// the firmware checks its own clock and asks again.
#[test]
fn an_early_wake_does_not_shorten_a_sleep() {
    require_kvm();
    let dir = scratch_dir(tmp(), "e2e-early-wake");
    let app = dir.join("rust_std");
    build_rust_app(&app_source("rust_std.rs"), &app);
    let image = package(&app, &["time"], &[]);
    for platform in PLATFORMS {
        let (out, stats) = run_for_stats(
            &image,
            &format!("e2e-early-wake-{}", platform[1]),
            &platform,
            &[("NACRE_TEST_HOSTILE", "early-wake")],
        );
        assert_exit(&out, 0, "time with a host that wakes early");
        assert!(
            stdout(&out).contains("monotonic ok"),
            "{}",
            describe_output(&out)
        );
        let sleeps = stats
            .counters("hostcalls")
            .into_iter()
            .find(|(name, _)| name == "sleep")
            .map_or(0, |(_, n)| n);
        assert!(
            sleeps > 1,
            "the guest asked the host to sleep {sleeps} times; an early wake must make it ask again"
        );
    }
}

/// An app that jumps to the end of a ring-3 copy helper while no copy is running gets
/// SIGILL for its own illegal instruction (exit 132); the firmware never resumes a copy
/// it did not start. (ud2 0 of the page is the SYSCALL trampoline; 1 and 2 end the copy
/// and fill helpers.)
#[test]
fn jumping_into_a_copy_helper_is_the_apps_own_fault() {
    require_kvm();
    let dir = scratch_dir(tmp(), "e2e-helper-jump");
    let app = dir.join("helper_jump");
    build_c_app(&app_source("helper_jump.c"), &app);
    for n in ["1", "2"] {
        let image = dir.join(format!("helper_jump_{n}.igvm"));
        let image =
            nacre_tests::package_with(&app, &image, &nacre_tests::PackageOptions::new().args(&[n]));
        for platform in PLATFORMS {
            let out = run(&image, &platform);
            let what = format!("jump to helper ud2 {n} on {}", platform[1]);
            assert_exit(&out, 128 + 4, &what);
            assert!(
                stdout(&out).starts_with(&format!("jumping to ud2 {n} at 0xffffffffe00000")),
                "{what}\n{}",
                describe_output(&out)
            );
            assert!(
                stderr(&out).contains("app exception 6"),
                "{what}\n{}",
                describe_output(&out)
            );
        }
    }
}
