//! Clocks as apps read them: through the vDSO nacre maps into every app
//! (AT_SYSINFO_EHDR), with glibc, musl and dietlibc, on both emulated
//! platforms by the real `nacre` binary in KVM (these tests need `/dev/kvm`
//! and fail without it).
//!
//! - `clocks.c` (glibc and musl) finds the vDSO from its auxiliary vector,
//!   checks its ELF header, dynamic table, both hash tables and symbol
//!   versions with its own small parser, calls its functions directly, and
//!   reads every clock the vDSO serves many times through the libc. It makes
//!   no clock syscall on purpose, so `--stats-json` must count none: the vDSO
//!   answered every read. Its `syscalls` mode reads the same clocks through
//!   the syscalls between two vDSO reads, and the counts must be exactly the
//!   calls it made.
//! - `diet_clock.c`: a dietlibc program (`diet gcc`) starts and reads clocks,
//!   also without a clock syscall (dietlibc finds the vDSO's functions
//!   through its section headers).
//!
//! - `timerfd.c` (glibc and musl): timerfd_create, timerfd_settime (relative
//!   and absolute, one-shot and interval, old values), timerfd_gettime, reads
//!   of the expiration count (blocking, non-blocking, short), readv, poll and
//!   ppoll, dup, fstat and close, with Linux's errors.
//!
//! The `native_*` tests run the same binaries on the host, where every check
//! must pass too: when one of those fails, the app is wrong, not nacre.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use nacre_tests::{
    assert_checks, built_app, describe_output, on_each_platform, package_with, require_kvm, run_on,
    scratch_dir, PackageOptions, Stats, Toolchain,
};

/// The checks `clocks` prints, in its order.
const CLOCKS_CHECKS: [&str; 25] = [
    "vdso_auxv",
    "vdso_elf_header",
    "vdso_symbols_sysv_hash",
    "vdso_symbols_gnu_hash",
    "vdso_has_no_unknown_name",
    "vdso_functions_agree_with_libc",
    "realtime_never_goes_back",
    "realtime_resolution",
    "monotonic_never_goes_back",
    "monotonic_resolution",
    "monotonic_raw_never_goes_back",
    "monotonic_raw_resolution",
    "realtime_coarse_never_goes_back",
    "realtime_coarse_resolution",
    "monotonic_coarse_never_goes_back",
    "monotonic_coarse_resolution",
    "boottime_never_goes_back",
    "boottime_resolution",
    "realtime_after_2020",
    "gettimeofday_and_time_agree",
    "realtime_coarse_agrees",
    "monotonic_coarse_agrees",
    "boottime_not_behind_monotonic",
    "clocks_advance_alike_across_a_sleep",
    "sched_getcpu",
];

/// The checks `clocks syscalls` prints, in its order.
const CLOCKS_SYSCALLS_CHECKS: [&str; 9] = [
    "vdso_auxv",
    "vdso_elf_header",
    "vdso_symbols_sysv_hash",
    "vdso_symbols_gnu_hash",
    "vdso_has_no_unknown_name",
    "syscall_clock_gettime_between_vdso_reads",
    "syscall_gettimeofday_between_vdso_reads",
    "syscall_time_between_vdso_reads",
    "clock_gettime_invalid_clock",
];

/// Syscalls `clocks syscalls` makes on purpose (`SYSCALL_READS` in
/// `clocks.c`, plus the unknown clock that the vDSO hands to the syscall).
const SYSCALL_READS: u64 = 5;
const SYSCALLS_MADE: [(&str, u64); 3] = [
    ("clock_gettime", SYSCALL_READS + 1),
    ("gettimeofday", SYSCALL_READS),
    ("time", SYSCALL_READS),
];

/// The syscalls a clock read through a working vDSO never makes.
const VDSO_SERVED: [&str; 4] = ["clock_gettime", "gettimeofday", "time", "getcpu"];

/// What the dietlibc app prints first, and its checks in order.
const DIET_HELLO: &str = "hello from dietlibc";
const DIET_CHECKS: [&str; 4] = [
    "monotonic_never_goes_back",
    "realtime_after_2020",
    "gettimeofday_and_time_agree",
    "nanosleep_advances_monotonic",
];

/// The checks `timerfd` prints, in its order.
const TIMERFD_CHECKS: [&str; 24] = [
    "create_flags",
    "create_on_each_clock",
    "create_invalid",
    "fstat",
    "gettime_disarmed",
    "read_nonblocking_eagain",
    "read_short_buffer_einval",
    "one_shot_relative",
    "interval_counts_expirations",
    "interval_blocking_reads",
    "abstime_monotonic",
    "abstime_realtime",
    "abstime_in_the_past_expires_at_once",
    "boottime_relative",
    "settime_returns_the_old_value",
    "settime_invalid",
    "cancel_on_set_accepted",
    "poll_waits_for_expiry",
    "poll_timeout_before_expiry",
    "ppoll_earliest_of_two",
    "dup_shares_the_timer",
    "readv_split_count",
    "not_a_file",
    "close",
];

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The app built from `tests/apps/<source>` with `toolchain`, once per test run.
fn app(source: &str, toolchain: Toolchain) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    built_app(
        DIR.get_or_init(|| scratch_dir(tmp(), "clocks-bin")),
        source,
        toolchain,
    )
}

/// Packages `app` with `args` into `<scratch>/clocks-images/<name>.igvm`.
fn image(app: &Path, name: &str, args: &[&str]) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch_dir(tmp(), "clocks-images"));
    package_with(
        app,
        &dir.join(format!("{name}.igvm")),
        &PackageOptions::new().args(args),
    )
}

/// Runs `image` on `platform` with `--stats-json` and returns its output and
/// the syscall counts (`syscalls`, by name).
fn run_with_syscall_counts(
    image: &Path,
    platform: &str,
    name: &str,
) -> (Output, BTreeMap<String, u64>) {
    let (output, stats) = run_with_stats(image, platform, name);
    let counts = stats.counters("syscalls").into_iter().collect();
    (output, counts)
}

/// Runs `image` on `platform` with `--stats-json` and returns its output and
/// statistics.
fn run_with_stats(image: &Path, platform: &str, name: &str) -> (Output, Stats) {
    let stats_path = scratch_dir(tmp(), &format!("clocks-stats-{name}-{platform}")).join("s.json");
    let stats_arg = stats_path.display().to_string();
    let output = run_on(image, platform, &["--stats-json", &stats_arg]);
    let stats = Stats::read(&stats_path);
    assert!(
        stats.u64("syscalls.total") > 0,
        "{name}: the stats count no syscall at all\n{}",
        describe_output(&output)
    );
    (output, stats)
}

/// Asserts that the run made none of the syscalls a working vDSO serves.
fn assert_vdso_served(counts: &BTreeMap<String, u64>, output: &Output, what: &str) {
    let made: Vec<String> = VDSO_SERVED
        .iter()
        .filter_map(|name| counts.get(*name).map(|n| format!("{name}: {n}")))
        .collect();
    assert!(
        made.is_empty(),
        "{what}: the vDSO should have served every clock read, but the app made {}\n\
         all syscalls: {counts:?}\n{}",
        made.join(", "),
        describe_output(output)
    );
}

fn run_native(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

// ---------------------------------------------------------------------------
// glibc and musl

#[test]
fn vdso_serves_every_clock_read_for_glibc_and_musl() {
    require_kvm();
    for libc in [Toolchain::Glibc, Toolchain::Musl] {
        let name = format!("clocks-{libc:?}").to_lowercase();
        let image = image(&app("clocks.c", libc), &name, &[]);
        on_each_platform(|platform| {
            let what = format!("clocks ({libc:?})");
            let (output, counts) = run_with_syscall_counts(&image, platform, &name);
            assert_checks(&output, &CLOCKS_CHECKS, &[], &what);
            assert_vdso_served(&counts, &output, &what);
        });
    }
}

/// The firmware's clock syscalls and the vDSO are one clock: every syscall
/// reading falls between the vDSO readings around it, and the counts show
/// exactly the syscalls the app made (the vDSO made none of its own).
#[test]
fn clock_syscalls_agree_with_the_vdso() {
    require_kvm();
    for libc in [Toolchain::Glibc, Toolchain::Musl] {
        let name = format!("clocks-syscalls-{libc:?}").to_lowercase();
        let image = image(&app("clocks.c", libc), &name, &["syscalls"]);
        on_each_platform(|platform| {
            let what = format!("clocks syscalls ({libc:?})");
            let (output, counts) = run_with_syscall_counts(&image, platform, &name);
            assert_checks(&output, &CLOCKS_SYSCALLS_CHECKS, &[], &what);
            for (syscall, made) in SYSCALLS_MADE {
                assert_eq!(
                    counts.get(syscall).copied().unwrap_or(0),
                    made,
                    "{what}: syscalls.{syscall}; all syscalls: {counts:?}\n{}",
                    describe_output(&output)
                );
            }
            assert_eq!(counts.get("getcpu"), None, "{what}: {counts:?}");
        });
    }
}

#[test]
fn native_clocks_checks_pass() {
    for libc in [Toolchain::Glibc, Toolchain::Musl] {
        let clocks = app("clocks.c", libc);
        let output = run_native(&clocks, &[]);
        assert_checks(
            &output,
            &CLOCKS_CHECKS,
            &[],
            &format!("native clocks ({libc:?})"),
        );
        let output = run_native(&clocks, &["syscalls"]);
        assert_checks(
            &output,
            &CLOCKS_SYSCALLS_CHECKS,
            &[],
            &format!("native clocks syscalls ({libc:?})"),
        );
    }
}

// ---------------------------------------------------------------------------
// dietlibc

fn assert_diet_output(output: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(DIET_HELLO),
        "{what}: the first line\n{}",
        describe_output(output)
    );
    assert_checks(output, &DIET_CHECKS, &[], what);
}

/// A static dietlibc program starts under nacre, and its clock reads go
/// through the vDSO too.
#[test]
fn dietlibc_program_starts_and_reads_clocks() {
    require_kvm();
    let image = image(&app("diet_clock.c", Toolchain::Diet), "diet-clock", &[]);
    on_each_platform(|platform| {
        let (output, counts) = run_with_syscall_counts(&image, platform, "diet-clock");
        assert_diet_output(&output, "diet_clock");
        assert_vdso_served(&counts, &output, "diet_clock");
    });
}

#[test]
fn native_dietlibc_program_passes() {
    let output = run_native(&app("diet_clock.c", Toolchain::Diet), &[]);
    assert_diet_output(&output, "native diet_clock");
}

// ---------------------------------------------------------------------------
// timerfd

#[test]
fn timerfd_checks_pass() {
    require_kvm();
    for libc in [Toolchain::Glibc, Toolchain::Musl] {
        let name = format!("timerfd-{libc:?}").to_lowercase();
        let image = image(&app("timerfd.c", libc), &name, &[]);
        on_each_platform(|platform| {
            let what = format!("timerfd ({libc:?})");
            let (output, stats) = run_with_stats(&image, platform, &name);
            assert_checks(&output, &TIMERFD_CHECKS, &[], &what);
            let unsupported = stats.counters("syscalls.unsupported");
            assert!(
                unsupported.is_empty(),
                "{what}: unsupported syscalls {unsupported:?}\n{}",
                describe_output(&output)
            );
        });
    }
}

/// A blocking read of a timer that nothing can arm would never return: the app
/// is stopped with a message and exit code 137 instead of hanging.
#[test]
fn blocking_read_of_a_disarmed_timerfd_stops_the_app() {
    require_kvm();
    let image = image(
        &app("timerfd.c", Toolchain::Glibc),
        "timerfd-read-disarmed",
        &["read-disarmed"],
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_eq!(
            (output.status.code(), output.stdout.as_slice()),
            (Some(128 + 9), &b"reading\n"[..]),
            "timerfd read-disarmed\n{}",
            describe_output(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("timerfd that is not armed"),
            "timerfd read-disarmed: stderr should say why\n{}",
            describe_output(&output)
        );
    });
}

#[test]
fn native_timerfd_checks_pass() {
    for libc in [Toolchain::Glibc, Toolchain::Musl] {
        let output = run_native(&app("timerfd.c", libc), &[]);
        assert_checks(
            &output,
            &TIMERFD_CHECKS,
            &[],
            &format!("native timerfd ({libc:?})"),
        );
    }
}
