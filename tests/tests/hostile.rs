//! The hostile-host suite: each test makes the emulated host lie in one way (a
//! `NACRE_TEST_HOSTILE` hook, docs/design.md "Hostile-host tests") and checks the
//! guest's named reaction: it stops with the rule it enforces (the firmware's
//! termination reason, or the host MMU's rule, as `nacre run` prints them), or the
//! service is denied and what the app sees stays correct. Every scenario, with the
//! lie, the reaction and its test, is listed in docs/threat-model.md ("Hostile-host
//! scenarios"); a few older ones live in `e2e.rs` and `apps.rs`.
//!
//! The guest is the small C app `tests/apps/hostile.c`. Each scenario runs on every
//! emulated platform that has the protocol it lies in. Without its hook every run
//! here would succeed, which is what makes each test able to fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, OnceLock, PoisonError};

use nacre_tests::{
    app_source, build_c_app, describe_output, nacre, nacre_with_stdin, on_each_platform,
    package_with, require_kvm, run_with_env, scratch_dir, PackageOptions, Stats,
    EXIT_GUEST_TERMINATED, EXIT_MEMORY_VIOLATION, EXIT_NACRE_ERROR,
};

const SNP: &str = "emulated-snp";
const TDX: &str = "emulated-tdx";
/// What the app prints and returns in its plain mode.
const HELLO: &str = "hello from the hostile suite\n";
const HELLO_EXIT: i32 = 42;
/// The firmware's termination reasons, as `nacre run` names them (host
/// `cli/run.rs`, `reason`).
const PSC_REFUSED: &str = "a page-state change failed or the host misreported its progress";
const GHCB_REFUSED: &str = "the host refused or misreported a GHCB call";
const APIC_REFUSED: &str = "the host refused a local APIC register access";
const MAP_GPA_REFUSED: &str = "MapGPA failed or the host misreported its progress";
const HOSTCALL_REFUSED: &str = "the host's hostcall reply was malformed";
const MEMORY_MAP_REFUSED: &str = "the host's memory map was refused";
const CPUID_REFUSED: &str = "the host's CPUID contradicts the measured CPUID page";
/// The host MMU's rules (host `mmu/`), as `nacre run` prints them.
const NEVER_VALIDATED: &str = "private access to a page the guest never validated";
const NEVER_ACCEPTED: &str = "private access to a page the guest never accepted";
/// `nacre verify`'s exit status when a check failed.
const EXIT_NOT_VERIFIED: i32 = 1;
/// A nonce for `nacre attest`.
const NONCE: &str = "686f7374696c65206e6f6e6365";
/// EIO, as the app prints a failed report request.
const EIO: i32 = 5;

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir(tmp(), "hostile"))
}

/// The app packaged with `args` (its mode), built and packaged once per mode.
fn image(args: &[&str]) -> PathBuf {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    static IMAGES: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let app = APP.get_or_init(|| {
        let out = dir().join("hostile");
        build_c_app(&app_source("hostile.c"), &out);
        out
    });
    let name = if args.is_empty() {
        "plain".to_string()
    } else {
        args.join("-")
    };
    let mut images = IMAGES.lock().unwrap_or_else(PoisonError::into_inner);
    images
        .entry(name.clone())
        .or_insert_with(|| {
            package_with(
                app,
                &dir().join(format!("{name}.igvm")),
                &PackageOptions::new().args(args),
            )
        })
        .clone()
}

/// `nacre run IMAGE --platform PLATFORM --memory 128M` with `NACRE_TEST_HOSTILE=hook`.
fn lie(hook: &str, platform: &str, image: &Path) -> Output {
    run_with_env(
        image,
        &["--platform", platform, "--memory", "128M"],
        &[("NACRE_TEST_HOSTILE", hook)],
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_no_panic(output: &Output, what: &str) {
    assert!(
        !stderr(output).contains("panicked"),
        "{what}: nacre panicked instead of stopping the guest\n{}",
        describe_output(output)
    );
}

/// The firmware stopped the guest with termination reason `reason` (exit 121), the
/// message it printed containing `firmware` when it could print one (after the app
/// was loaded), and the app printed `app_out`.
fn assert_firmware_stop(output: &Output, reason: &str, firmware: &str, app_out: &str, what: &str) {
    assert_no_panic(output, what);
    assert_eq!(
        output.status.code(),
        Some(EXIT_GUEST_TERMINATED),
        "{what}: the guest must stop itself\n{}",
        describe_output(output)
    );
    let err = stderr(output);
    assert!(
        err.contains(reason),
        "{what}: the stop does not name the rule {reason:?}\n{}",
        describe_output(output)
    );
    assert!(
        err.contains(firmware),
        "{what}: the firmware's message lacks {firmware:?}\n{}",
        describe_output(output)
    );
    assert_eq!(
        stdout(output),
        app_out,
        "{what}: the app's output\n{}",
        describe_output(output)
    );
}

/// The host MMU stopped the guest for breaking memory rule `rule` (exit 120) before
/// the app could finish.
fn assert_memory_stop(output: &Output, rule: &str, what: &str) {
    assert_no_panic(output, what);
    assert_eq!(
        output.status.code(),
        Some(EXIT_MEMORY_VIOLATION),
        "{what}: the host MMU must stop the guest\n{}",
        describe_output(output)
    );
    let err = stderr(output);
    assert!(
        err.contains("private access to GPA 0x") && err.contains(rule),
        "{what}: the stop does not name the GPA, the view and the rule {rule:?}\n{}",
        describe_output(output)
    );
    assert!(
        stdout(output).is_empty(),
        "{what}: the app must not run\n{}",
        describe_output(output)
    );
}

// ---------------------------------------------------------------------------
// Page-state changes (SEV-SNP): the first one through the GHCB, at boot.

fn psc_lie_stops_the_guest(hook: &str) {
    require_kvm();
    let out = lie(hook, SNP, &image(&[]));
    assert_firmware_stop(&out, PSC_REFUSED, "", "", hook);
}

#[test]
fn hostile_psc_progress_going_backwards_stops_the_guest() {
    psc_lie_stops_the_guest("psc-progress-backwards");
}

#[test]
fn hostile_psc_progress_beyond_the_last_entry_stops_the_guest() {
    psc_lie_stops_the_guest("psc-beyond-end");
}

#[test]
fn hostile_psc_claiming_pages_it_did_not_convert_stops_the_guest() {
    psc_lie_stops_the_guest("psc-unconverted-claim");
}

#[test]
fn hostile_psc_header_rewritten_stops_the_guest() {
    psc_lie_stops_the_guest("psc-header-rewrite");
}

#[test]
fn hostile_psc_entry_rewritten_stops_the_guest() {
    psc_lie_stops_the_guest("psc-entry-rewrite");
}

// ---------------------------------------------------------------------------
// The GHCB and the local APIC.

#[test]
fn hostile_ghcb_answer_without_its_valid_bits_stops_the_guest() {
    require_kvm();
    let out = lie("ghcb-valid-bitmap", SNP, &image(&[]));
    assert_firmware_stop(
        &out,
        GHCB_REFUSED,
        "answer to GHCB call 0x7c does not mark its value valid",
        "",
        "an APIC register read answered without RAX and RDX valid",
    );
}

#[test]
fn hostile_ghcb_exit_info_claiming_a_refusal_stops_the_guest() {
    require_kvm();
    let out = lie("ghcb-exit-info", SNP, &image(&[]));
    assert_firmware_stop(
        &out,
        GHCB_REFUSED,
        "GHCB call 0x7b failed",
        "",
        "a served IOIO event claimed refused in SW_EXITINFO1",
    );
}

#[test]
fn hostile_apic_refusal_stops_the_guest() {
    require_kvm();
    on_each_platform(|platform| {
        let out = lie("apic-refused", platform, &image(&[]));
        assert_firmware_stop(
            &out,
            APIC_REFUSED,
            "the host refused local APIC register",
            "",
            "a refused local APIC register",
        );
    });
}

// ---------------------------------------------------------------------------
// MapGPA (TDX): the hostcall area's conversion at boot.

#[test]
fn hostile_map_gpa_retry_outside_the_range_stops_the_td() {
    require_kvm();
    let out = lie("map-gpa-retry-outside", TDX, &image(&[]));
    assert_firmware_stop(&out, MAP_GPA_REFUSED, "", "", "a RETRY past the range");
}

#[test]
fn hostile_map_gpa_retry_going_backwards_stops_the_td() {
    require_kvm();
    let out = lie("map-gpa-retry-backwards", TDX, &image(&[]));
    assert_firmware_stop(
        &out,
        MAP_GPA_REFUSED,
        "",
        "",
        "a RETRY below where the call started",
    );
}

// ---------------------------------------------------------------------------
// Memory the host takes back behind the guest's back.

#[test]
fn hostile_remapped_page_stops_the_guest_at_its_next_access() {
    require_kvm();
    on_each_platform(|platform| {
        let out = lie("remapped-page", platform, &image(&[]));
        let rule = if platform == SNP {
            NEVER_VALIDATED
        } else {
            NEVER_ACCEPTED
        };
        assert_memory_stop(
            &out,
            rule,
            "a validated or accepted page removed and re-added",
        );
    });
}

// ---------------------------------------------------------------------------
// Guest requests to the security processor (SEV-SNP): three report requests from the
// app through /dev/sev-guest.

/// Runs the app's three report requests under `hook`; returns its stdout and how
/// many requests reached the host.
fn reports_under(hook: &str) -> (String, u64) {
    require_kvm();
    let stats = scratch_dir(tmp(), &format!("hostile-{hook}")).join("stats.json");
    let stats_arg = stats.display().to_string();
    let out = run_with_env(
        &image(&["report", "3"]),
        &["--platform", SNP, "--stats-json", &stats_arg],
        &[("NACRE_TEST_HOSTILE", hook)],
    );
    assert_no_panic(&out, hook);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{hook}: a refused report is an error for the app, not a stop\n{}",
        describe_output(&out)
    );
    (stdout(&out), Stats::read(&stats).u64("attest.requests"))
}

/// Every report fails with EIO; the firmware forgot VMPCK0 after the first, so no
/// later request reached the host.
fn a_bad_response_denies_every_report(hook: &str) {
    let (out, requests) = reports_under(hook);
    let refused: String = (1..=3)
        .map(|i| format!("report {i}: errno {EIO}\n"))
        .collect();
    assert_eq!(out, refused, "{hook}");
    assert_eq!(requests, 1, "{hook}: requests after the failure");
}

#[test]
fn hostile_guest_request_with_a_wrong_sequence_number_denies_reports() {
    a_bad_response_denies_every_report("guest-request-seqno");
}

#[test]
fn hostile_guest_request_with_a_bad_tag_denies_reports() {
    a_bad_response_denies_every_report("guest-request-bad-tag");
}

#[test]
fn hostile_guest_request_with_a_wrong_length_denies_reports() {
    a_bad_response_denies_every_report("guest-request-length");
}

/// The replayed response carries the first report (the app's "request 1"), which
/// must never come back as the answer to the second request.
#[test]
fn hostile_guest_request_replay_denies_later_reports() {
    let (out, requests) = reports_under("guest-request-replay");
    assert_eq!(
        out,
        format!("report 1: ok request 1\nreport 2: errno {EIO}\nreport 3: errno {EIO}\n")
    );
    assert_eq!(requests, 2, "requests after the replay");
}

// ---------------------------------------------------------------------------
// Attestation.

/// `nacre attest` under `hook` on `platform`, writing `evidence`.
fn attest_under(hook: &str, platform: &str, evidence: &Path) -> Output {
    let args: Vec<String> = [
        "attest",
        &image(&[]).display().to_string(),
        "--platform",
        platform,
        "--nonce",
        NONCE,
        "-o",
        &evidence.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    nacre(&args, &[("NACRE_TEST_HOSTILE", hook)])
}

/// Evidence for other report data than the verifier's nonce gives: the platform
/// signs what the guest was given, and `nacre verify` fails exactly its report-data
/// check.
#[test]
fn hostile_other_report_data_fails_verification() {
    require_kvm();
    on_each_platform(|platform| {
        let evidence = dir().join(format!("other-report-data-{platform}.json"));
        let out = attest_under("other-report-data", platform, &evidence);
        assert!(
            out.status.success(),
            "nacre attest\n{}",
            describe_output(&out)
        );
        let args: Vec<String> = [
            "verify",
            &evidence.display().to_string(),
            "--image",
            &image(&[]).display().to_string(),
            "--nonce",
            NONCE,
            "--allow-emulated",
            "--json",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        let verdict = nacre(&args, &[]);
        assert_eq!(
            verdict.status.code(),
            Some(EXIT_NOT_VERIFIED),
            "{}",
            describe_output(&verdict)
        );
        let json: serde_json::Value =
            serde_json::from_slice(&verdict.stdout).expect("verify --json prints JSON");
        assert_eq!(json["verified"], false, "{json:#}");
        assert_eq!(
            json["failed"],
            serde_json::json!(["report-data"]),
            "{json:#}"
        );
    });
}

/// A GetQuote answer whose length runs past the guest's buffer: the firmware takes
/// none of it, and `nacre attest` fails naming why, writing no evidence.
#[test]
fn hostile_overlong_quote_fails_attestation() {
    require_kvm();
    let evidence = dir().join("quote-overlong.json");
    let out = attest_under("quote-overlong", TDX, &evidence);
    assert_no_panic(&out, "quote-overlong");
    assert_eq!(
        out.status.code(),
        Some(EXIT_NACRE_ERROR),
        "{}",
        describe_output(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("the guest stopped before it gave evidence") && err.contains(HOSTCALL_REFUSED),
        "{}",
        describe_output(&out)
    );
    assert!(!err.contains("TdFatalError"), "a debug print: {err}");
    assert!(!evidence.exists(), "no evidence file may be written");
}

// ---------------------------------------------------------------------------
// Hostcall replies.

/// A console write answered as one byte longer than sent: the host did write the
/// line, exactly once; the firmware refuses the reply and stops.
#[test]
fn hostile_overlong_write_reply_stops_the_guest() {
    require_kvm();
    on_each_platform(|platform| {
        let out = lie("overlong-write", platform, &image(&[]));
        assert_firmware_stop(
            &out,
            HOSTCALL_REFUSED,
            "malformed hostcall reply",
            HELLO,
            "an overlong write reply",
        );
    });
}

/// A poll answered with an fd the guest did not ask about: the firmware refuses the
/// reply before the app's poll returns.
#[test]
fn hostile_poll_naming_an_unasked_fd_stops_the_guest() {
    require_kvm();
    on_each_platform(|platform| {
        let args: Vec<String> = [
            "run",
            &image(&["poll"]).display().to_string(),
            "--platform",
            platform,
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        let out = nacre_with_stdin(
            &args,
            &[("NACRE_TEST_HOSTILE", "poll-unasked-fd")],
            Some(b"input\n"),
        );
        assert_firmware_stop(
            &out,
            HOSTCALL_REFUSED,
            "malformed hostcall reply",
            "",
            "a poll reply naming an fd not asked about",
        );
    });
}

/// A host whose clock answers go backwards, an hour each: the firmware asks it once
/// and counts time itself, so the app's wall clock starts an hour behind (the host
/// may start it anywhere) and its clocks, read through the vDSO and through the
/// syscall around sleeps, never go back.
#[test]
fn hostile_clock_going_backwards_never_reaches_the_app() {
    require_kvm();
    on_each_platform(|platform| {
        let stats = scratch_dir(tmp(), &format!("hostile-clock-{platform}")).join("stats.json");
        let stats_arg = stats.display().to_string();
        let out = run_with_env(
            &image(&["clock"]),
            &["--platform", platform, "--stats-json", &stats_arg],
            &[("NACRE_TEST_HOSTILE", "clock-backwards")],
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs();
        assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
        let realtime: u64 = stdout(&out)
            .strip_prefix("clock ok, realtime ")
            .and_then(|rest| rest.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("the clocks went back\n{}", describe_output(&out)));
        let behind = now.saturating_sub(realtime);
        assert!(
            (3600 - 60..=3600 + 60).contains(&behind),
            "the app's wall clock is {behind} s behind the host's, not the hour the host \
             lied by\n{}",
            describe_output(&out)
        );
        let clock_calls = Stats::read(&stats)
            .counters("hostcalls")
            .into_iter()
            .find(|(name, _)| name == "clock")
            .map_or(0, |(_, n)| n);
        assert_eq!(clock_calls, 1, "the host's time is asked once");
    });
}

/// A host that sets the vCPU's TSC back three seconds while the app runs (as a
/// hypervisor that controls the guest's TSC offset can, on SEV-SNP without Secure
/// TSC): the clocks, read through the vDSO and through the syscall around sleeps, stop
/// until the TSC catches up and never go back. Needs a KVM that applies the host's TSC
/// writes (hardware virtualization); the PVM backend of the machines these tests run
/// on ignores them, and the scenario then stops with an error instead of passing
/// unplayed. The clocks' floor itself is unit-tested with the firmware
/// (`vdso/vvar.rs`, `floored_clocks_never_go_back_when_the_tsc_does`).
#[test]
#[ignore = "needs a KVM with TSC offsetting (hardware virtualization), not the PVM backend"]
fn hostile_tsc_rewind_never_takes_the_clocks_back() {
    require_kvm();
    on_each_platform(|platform| {
        let out = run_with_env(
            &image(&["clock"]),
            &["--platform", platform],
            &[("NACRE_TEST_HOSTILE", "tsc-rewind")],
        );
        assert!(
            out.status.code() == Some(0) && stdout(&out).starts_with("clock ok, realtime "),
            "the clocks went back\n{}",
            describe_output(&out)
        );
    });
}

// ---------------------------------------------------------------------------
// What the host says at boot.

#[test]
fn hostile_cpuid_contradicting_the_measured_page_stops_the_guest() {
    require_kvm();
    let out = lie("cpuid-mismatch", SNP, &image(&[]));
    assert_firmware_stop(&out, CPUID_REFUSED, "", "", "another C-bit in CPUID");
}

#[test]
fn hostile_overlapping_memory_map_stops_the_guest() {
    require_kvm();
    on_each_platform(|platform| {
        let out = lie("memory-map-overlap", platform, &image(&[]));
        assert_firmware_stop(
            &out,
            MEMORY_MAP_REFUSED,
            "",
            "",
            "a memory map entry inside another",
        );
    });
}

// ---------------------------------------------------------------------------
// Narrowness.

/// A hook for the other platform's protocol changes nothing: the lies are told only
/// where they are named, and the rest of the host behaves.
#[test]
fn hostile_hooks_of_the_other_platform_change_nothing() {
    require_kvm();
    let snp_only = [
        "psc-progress-backwards",
        "psc-beyond-end",
        "psc-unconverted-claim",
        "psc-header-rewrite",
        "psc-entry-rewrite",
        "ghcb-valid-bitmap",
        "ghcb-exit-info",
        "cpuid-mismatch",
    ];
    let tdx_only = ["map-gpa-retry-outside", "map-gpa-retry-backwards"];
    for (hooks, platform) in [(&snp_only[..], TDX), (&tdx_only[..], SNP)] {
        for hook in hooks {
            let out = lie(hook, platform, &image(&[]));
            assert_eq!(
                (out.status.code(), stdout(&out).as_str()),
                (Some(HELLO_EXIT), HELLO),
                "{hook} on {platform}\n{}",
                describe_output(&out)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Sockets

/// `sockets.c` on `port` (and `port + 1`), packaged with the policy that allows them,
/// and what it prints natively there.
fn sockets(port: u16) -> (PathBuf, String) {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    let app = APP
        .get_or_init(|| nacre_tests::built_app(dir(), "sockets.c", nacre_tests::Toolchain::Glibc));
    let p = port.to_string();
    let image = package_with(
        app,
        &dir().join(format!("sockets-{port}.igvm")),
        &nacre_tests::sockets_options(port, &[&p]),
    );
    let native = std::process::Command::new(app)
        .arg(&p)
        .output()
        .expect("run sockets natively");
    assert!(native.status.success(), "native sockets: {native:?}");
    (image, String::from_utf8_lossy(&native.stdout).into_owned())
}

/// The guest stopped itself for a malformed hostcall reply after printing a part of
/// what the app prints natively, every check of it passed.
fn assert_stopped_midway(output: &Output, native: &str, what: &str) {
    assert_no_panic(output, what);
    assert_eq!(
        output.status.code(),
        Some(EXIT_GUEST_TERMINATED),
        "{what}: the guest must stop itself\n{}",
        describe_output(output)
    );
    assert!(
        stderr(output).contains(HOSTCALL_REFUSED),
        "{what}: the stop does not name the rule\n{}",
        describe_output(output)
    );
    let out = stdout(output);
    assert!(
        native.starts_with(&out) && out.lines().count() < native.lines().count(),
        "{what}: the app printed what it does not print natively, or finished\n{}",
        describe_output(output)
    );
}

/// A host that claims a socket receive gave one byte more than was asked: the
/// firmware refuses the reply before using a byte of it and stops the guest.
#[test]
fn hostile_socket_reply_longer_than_asked_stops_the_guest() {
    require_kvm();
    let (image, native) = sockets(18200);
    on_each_platform(|platform| {
        let out = lie("net-overlong-recv", platform, &image);
        assert_stopped_midway(&out, &native, "an overlong socket receive");
    });
}

/// A host that answers an accept with a handle the guest already uses (the
/// listening socket's own): the firmware never lets two descriptors share a host
/// socket and stops the guest.
#[test]
fn hostile_accept_of_a_foreign_handle_stops_the_guest() {
    require_kvm();
    let (image, native) = sockets(18210);
    on_each_platform(|platform| {
        let out = lie("net-foreign-accept", platform, &image);
        assert_stopped_midway(&out, &native, "an accept of a handle in use");
    });
}

/// A host that reports every watched socket ready at once, data or not: no byte is
/// invented and every transfer completes as natively; only the checks of what epoll
/// reports may see a socket reported ready that is not (as Linux allows for poll and
/// epoll, a read then answers EAGAIN).
#[test]
fn hostile_readiness_without_data_invents_nothing() {
    require_kvm();
    let (image, native) = sockets(18220);
    // The checks whose subject is readiness itself: what epoll reports (a listener
    // reported ready that is not counts as one more event).
    let readiness = [
        "edge-nothing-yet",
        "edge-after-data",
        "edge-no-repeat",
        "peer-close-is-eof",
    ];
    on_each_platform(|platform| {
        let out = lie("net-false-readiness", platform, &image);
        assert_no_panic(&out, "false readiness");
        let got = stdout(&out);
        assert_eq!(
            got.lines().count(),
            native.lines().count(),
            "false readiness: every check must run\n{}",
            describe_output(&out)
        );
        for (line, expected) in got.lines().zip(native.lines()) {
            let name = expected.trim_start_matches("ok ");
            if readiness.contains(&name) && line.starts_with(&format!("FAIL {name}:")) {
                continue;
            }
            assert_eq!(line, expected, "false readiness\n{}", describe_output(&out));
        }
    });
}

/// A host that reports readiness and a hang-up for every socket right after the guest
/// closed it (data for a connection that is gone, also when its handle is given to a
/// new socket): the firmware takes reports only for what it asked the host to watch,
/// and the app prints what it prints natively.
#[test]
fn hostile_events_for_closed_sockets_are_ignored() {
    require_kvm();
    let (image, native) = sockets(18230);
    on_each_platform(|platform| {
        let out = lie("net-closed-events", platform, &image);
        assert_no_panic(&out, "events for closed sockets");
        assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
        assert_eq!(stdout(&out), native, "{}", describe_output(&out));
    });
}
