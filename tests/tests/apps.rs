//! Whole-system tests of ordinary programs under nacre: unmodified static C
//! programs (glibc and musl) and a Rust `std` program from `tests/apps/`, with
//! a file tree packaged as `/data`, each run on both emulated
//! platforms by the real `nacre` binary in KVM. They need `/dev/kvm` and fail
//! without it.
//!
//! Every expected output is computed here from the host's copy of the packaged
//! files or from a formula, never taken from a guest run. The `native_*` tests
//! run the same apps directly on the host against the same expectations (they
//! need no KVM): when one of those fails the app or the expectation is wrong,
//! not nacre.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use nacre_tests::{
    app_source, built_app, elf_has_interp, elf_type, on_each_platform, on_each_platform_and_cpus,
    package_with, require_kvm, run_on, run_with_stdin, scratch_dir, PackageOptions, Stats,
    Toolchain, ET_DYN, ET_EXEC,
};
use sha2::{Digest, Sha256};

/// Every emulated platform: each test runs the same image on all of them.
/// Where the fixture tree is packaged in the guest.
const GUEST_DATA: &str = "/data";
/// A path under [`GUEST_DATA`] that the fixture does not have.
const MISSING: &str = "does-not-exist";
/// Exit code of a process killed by SIGABRT, as a shell reports it.
const EXIT_SIGABRT: i32 = 128 + 6;
/// Exit code of a Rust program whose main thread panicked.
const EXIT_RUST_PANIC: i32 = 101;
/// Bytes the `cat_stdin` test sends through the console (about 300 KiB, not a
/// multiple of any buffer size).
const CAT_STDIN_BYTES: usize = 300 * 1024 + 17;
/// Length of the `Vec<u8>` the Rust `vec` mode fills.
const RUST_VEC_BYTES: u64 = 1 << 30;
/// Output of the C hello app and its exit code.
const C_HELLO_STDOUT: &str = "hello from nacre\n";
const C_HELLO_EXIT: i32 = 42;

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

// ---------------------------------------------------------------------------
// The fixture tree

/// One file: its path below the fixture root and its contents.
struct FixtureFile {
    rel: &'static str,
    contents: Vec<u8>,
    mode: u32,
}

/// Deterministic bytes of every value (xorshift64), so that a byte lost,
/// doubled or reordered anywhere changes the result.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

/// The files of the fixture: sizes around the apps' 64 KiB read chunk, one
/// larger than 1 MiB, an empty one, one readable by its owner only, nested
/// directories and a name with a space.
fn fixture_files() -> Vec<FixtureFile> {
    let file = |rel, contents, mode| FixtureFile {
        rel,
        contents,
        mode,
    };
    vec![
        file("empty", Vec::new(), 0o644),
        file("hello.txt", b"hello from a packaged file\n".to_vec(), 0o644),
        file("odd.bin", pseudo_random_bytes(4097, 1), 0o644),
        file("big.bin", pseudo_random_bytes((3 << 19) + 123, 2), 0o644),
        file("secret.txt", b"for the owner only\n".to_vec(), 0o600),
        file("with space.txt", b"a name with a space\n".to_vec(), 0o644),
        file("nested/chunk.bin", pseudo_random_bytes(64 << 10, 3), 0o644),
        file(
            "nested/chunk-plus-one.bin",
            pseudo_random_bytes((64 << 10) + 1, 4),
            0o755,
        ),
        file("nested/deeper/leaf.txt", b"a leaf\n".to_vec(), 0o444),
        file(
            "nested/deeper/deepest/note",
            b"three levels down\n".to_vec(),
            0o644,
        ),
    ]
}

/// Directories of the fixture that hold no file.
const FIXTURE_EMPTY_DIRS: [&str; 1] = ["empty-dir"];

/// The host directory packaged as [`GUEST_DATA`], written once per test run.
fn fixture() -> PathBuf {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let root = scratch_dir(tmp(), "apps-fixture").join("data");
            for dir in FIXTURE_EMPTY_DIRS {
                fs::create_dir_all(root.join(dir)).expect("create fixture directory");
            }
            for file in fixture_files() {
                let path = root.join(file.rel);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).expect("create fixture directory");
                }
                fs::write(&path, &file.contents).expect("write fixture file");
                fs::set_permissions(&path, fs::Permissions::from_mode(file.mode))
                    .expect("set fixture file mode");
            }
            root
        })
        .clone()
}

/// One entry below a host directory, found with `std::fs`.
struct TreeEntry {
    /// Path relative to the walked directory, `/`-separated.
    rel: String,
    /// Contents for a file, `None` for a directory.
    contents: Option<Vec<u8>>,
}

/// Every entry below `root`, sorted by relative path (bytewise).
fn host_tree(root: &Path) -> Vec<TreeEntry> {
    fn visit(dir: &Path, prefix: &str, out: &mut Vec<TreeEntry>) {
        for entry in fs::read_dir(dir).expect("read fixture directory") {
            let entry = entry.expect("read fixture directory entry");
            let name = entry.file_name().into_string().expect("UTF-8 fixture name");
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            if fs::symlink_metadata(&path).expect("stat fixture").is_dir() {
                out.push(TreeEntry {
                    rel: rel.clone(),
                    contents: None,
                });
                visit(&path, &rel, out);
            } else {
                let contents = fs::read(&path).expect("read fixture file");
                out.push(TreeEntry {
                    rel,
                    contents: Some(contents),
                });
            }
        }
    }
    let mut out = Vec::new();
    visit(root, "", &mut out);
    out.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    out
}

/// Paths of the fixture's files relative to its root, sorted.
fn fixture_file_rels() -> Vec<String> {
    host_tree(&fixture())
        .into_iter()
        .filter(|e| e.contents.is_some())
        .map(|e| e.rel)
        .collect()
}

// ---------------------------------------------------------------------------
// Expected outputs, computed on the host

/// What `sha256sum DIR/REL...` prints for the fixture's files `rels`, `shown`
/// being how the app sees the fixture's root.
fn expected_sha256sum(shown: &str, rels: &[String]) -> String {
    let root = fixture();
    rels.iter()
        .map(|rel| {
            let contents = fs::read(root.join(rel)).expect("read fixture file");
            format!(
                "{}  {shown}/{rel}\n",
                hex::encode(Sha256::digest(&contents))
            )
        })
        .collect()
}

/// What `walk DIR` prints for the fixture.
fn expected_walk() -> String {
    let mut lines: Vec<String> = host_tree(&fixture())
        .into_iter()
        .map(|entry| match entry.contents {
            None => format!("d 0 {}", entry.rel),
            Some(contents) => format!("f {} {}", contents.len(), entry.rel),
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|line| line + "\n").collect()
}

/// FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
fn fnv1a64(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in data {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// What `rust_std fs DIR` prints for the fixture, run from `cwd` as `exe`.
fn expected_rust_fs(cwd: &str, exe: &str) -> String {
    let mut out = String::new();
    for entry in host_tree(&fixture()) {
        match entry.contents {
            None => out += &format!("d {}\n", entry.rel),
            Some(contents) => {
                out += &format!(
                    "f {} {:016x} {}\n",
                    contents.len(),
                    fnv1a64(&contents),
                    entry.rel
                );
            }
        }
    }
    out + &format!("missing: NotFound\ncwd: {cwd}\nexe: {exe}\n")
}

/// Arguments and environment the Rust `env` test packages, and what the app
/// prints for them: arguments by argv index (the mode is argv\[1\]), then the
/// `NACRE_` variables sorted.
const RUST_ENV_ARGS: [&str; 4] = ["env", "one", "two words", "--dash"];
const RUST_ENV_VARS: [(&str, &str); 4] = [
    ("NACRE_B", "2"),
    ("NACRE_A", "1=x"),
    ("OTHER", "not listed"),
    ("NACRE_EMPTY", ""),
];

fn expected_rust_env() -> String {
    let mut out: String = RUST_ENV_ARGS
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, arg)| format!("arg {} {arg}\n", i + 1))
        .collect();
    let mut vars: Vec<_> = RUST_ENV_VARS
        .iter()
        .filter(|(key, _)| key.starts_with("NACRE_"))
        .collect();
    vars.sort();
    for (key, value) in vars {
        out += &format!("env {key}={value}\n");
    }
    out
}

/// Sum of (i % 251) for i in 0..len.
fn mod_251_sum(len: u64) -> u64 {
    let cycle: u64 = (0..251).sum();
    (len / 251) * cycle + (0..len % 251).sum::<u64>()
}

fn expected_rust_vec() -> String {
    format!("sum {}\n", mod_251_sum(RUST_VEC_BYTES))
}

fn expected_rust_hashmap_sum() -> String {
    format!("sum {}\n", (0..10_000u64).map(|k| k * k).sum::<u64>())
}

const RUST_TIME_STDOUT: &str = "monotonic ok\nwall clock ok\nmonotonic steps ok\n";

/// The `hash <16 hex digits>` line of the `hashmap` mode, after its sum line.
fn hashmap_hash_line(stdout: &str) -> String {
    let expected_sum = expected_rust_hashmap_sum();
    let Some(rest) = stdout.strip_prefix(&expected_sum) else {
        panic!("hashmap: stdout should start with {expected_sum:?}:\n{stdout}");
    };
    let line = rest.strip_suffix('\n').unwrap_or(rest);
    let digits = line.strip_prefix("hash ").unwrap_or("");
    assert!(
        digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_hexdigit()),
        "hashmap: after the sum, stdout should be one `hash <16 hex digits>` line:\n{stdout}"
    );
    line.to_string()
}

// ---------------------------------------------------------------------------
// Building, packaging and running

/// The app built from `tests/apps/<source>` with `toolchain`, once per test run.
fn app(source: &str, toolchain: Toolchain) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    built_app(
        DIR.get_or_init(|| scratch_dir(tmp(), "apps-bin")),
        source,
        toolchain,
    )
}

/// Packages `app` with `options` into `<scratch>/apps-images/<name>.igvm`.
fn image(app: &Path, name: &str, options: &PackageOptions) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch_dir(tmp(), "apps-images"));
    package_with(app, &dir.join(format!("{name}.igvm")), options)
}

/// Package options with the fixture as [`GUEST_DATA`] and `args`.
fn with_data(args: &[&str]) -> PackageOptions {
    PackageOptions::new()
        .file(&fixture(), GUEST_DATA)
        .args(args)
}

/// At most `limit` bytes of `bytes` as text, saying how much was left out;
/// binary data shows as its first 256 bytes, escaped.
fn excerpt(bytes: &[u8], limit: usize) -> String {
    let is_text = std::str::from_utf8(bytes)
        .is_ok_and(|s| s.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'));
    if !is_text {
        let shown = &bytes[..bytes.len().min(256)];
        format!(
            "({} bytes of binary data, the first {} escaped:)\n{}",
            bytes.len(),
            shown.len(),
            shown.escape_ascii()
        )
    } else if bytes.len() <= limit {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        format!(
            "{}\n... ({} more bytes)",
            String::from_utf8_lossy(&bytes[..limit]),
            bytes.len() - limit
        )
    }
}

/// The exit status and the start of stdout and stderr, for failure messages.
fn summary(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        excerpt(&output.stdout, 4096),
        excerpt(&output.stderr, 4096)
    )
}

/// Checks the exit code and the exact stdout of a run.
fn assert_run(output: &Output, exit: i32, stdout: &[u8], what: &str) {
    assert_eq!(
        output.status.code(),
        Some(exit),
        "{what}: expected exit code {exit}\n{}",
        summary(output)
    );
    if output.stdout != stdout {
        let first_difference = output
            .stdout
            .iter()
            .zip(stdout)
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| output.stdout.len().min(stdout.len()));
        panic!(
            "{what}: stdout differs from the expected {} bytes at byte {first_difference} \
             (got {} bytes)\n--- expected stdout ---\n{}\n{}",
            stdout.len(),
            output.stdout.len(),
            excerpt(stdout, 4096),
            summary(output)
        );
    }
}

fn assert_stderr_contains(output: &Output, needle: &str, what: &str) {
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(needle),
        "{what}: stderr should contain {needle:?}\n{}",
        summary(output)
    );
}

// ---------------------------------------------------------------------------
// C apps on glibc

#[test]
fn c_sha256sum_hashes_packaged_files() {
    require_kvm();
    let rels = fixture_file_rels();
    let paths: Vec<String> = rels.iter().map(|r| format!("{GUEST_DATA}/{r}")).collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let image = image(
        &app("sha256sum.c", Toolchain::Glibc),
        "sha256sum-all",
        &with_data(&args),
    );
    let expected = expected_sha256sum(GUEST_DATA, &rels);
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 0, expected.as_bytes(), "sha256sum of /data");
    });
}

#[test]
fn c_sha256sum_reports_a_missing_file() {
    require_kvm();
    let present = format!("{GUEST_DATA}/hello.txt");
    let missing = format!("{GUEST_DATA}/{MISSING}");
    let image = image(
        &app("sha256sum.c", Toolchain::Glibc),
        "sha256sum-missing",
        &with_data(&[&present, &missing]),
    );
    let expected = expected_sha256sum(GUEST_DATA, &["hello.txt".to_string()]);
    let message = format!("sha256sum: {missing}: No such file or directory\n");
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        let what = "sha256sum of a present and a missing file";
        assert_run(&output, 1, expected.as_bytes(), what);
        assert_stderr_contains(&output, &message, what);
    });
}

#[test]
fn c_cat_stdin_echoes_its_input() {
    require_kvm();
    let image = image(
        &app("cat_stdin.c", Toolchain::Glibc),
        "cat-stdin",
        &PackageOptions::new(),
    );
    let input = pseudo_random_bytes(CAT_STDIN_BYTES, 5);
    on_each_platform(|platform| {
        let output = run_with_stdin(&image, &["--platform", platform], &input);
        assert_run(&output, 0, &input, "cat_stdin of 300 KiB");
    });
}

#[test]
fn c_walk_lists_the_packaged_tree() {
    require_kvm();
    let image = image(
        &app("walk.c", Toolchain::Glibc),
        "walk",
        &with_data(&[GUEST_DATA]),
    );
    let expected = expected_walk();
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 0, expected.as_bytes(), "walk /data");
    });
}

#[test]
fn c_exit_code_becomes_nacres_exit_code() {
    require_kvm();
    let app = app("exit_code.c", Toolchain::Glibc);
    for code in [0, 3, 255] {
        let arg = code.to_string();
        let image = image(
            &app,
            &format!("exit-code-{code}"),
            &PackageOptions::new().args(&[&arg]),
        );
        let expected = format!("exiting with {code}\n");
        on_each_platform(|platform| {
            let output = run_on(&image, platform, &[]);
            assert_run(&output, code, expected.as_bytes(), "exit_code");
        });
    }
}

#[test]
fn c_abort_exits_like_sigabrt() {
    require_kvm();
    let image = image(
        &app("abort.c", Toolchain::Glibc),
        "abort",
        &PackageOptions::new(),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, EXIT_SIGABRT, b"about to abort\n", "abort()");
    });
}

/// `gcc -static -no-pie` gives an ELF linked at a fixed address (ET_EXEC);
/// nacre loads it where it was linked.
#[test]
fn c_non_pie_hello_is_et_exec_and_boots() {
    require_kvm();
    let app = app("hello.c", Toolchain::GlibcNoPie);
    assert_eq!(
        elf_type(&app),
        ET_EXEC,
        "{} should be ET_EXEC",
        app.display()
    );
    let image = image(&app, "hello-no-pie", &PackageOptions::new());
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(
            &output,
            C_HELLO_EXIT,
            C_HELLO_STDOUT.as_bytes(),
            "non-PIE hello",
        );
    });
}

// ---------------------------------------------------------------------------
// C apps on musl

#[test]
fn musl_sha256sum_hashes_packaged_files() {
    require_kvm();
    let rels = fixture_file_rels();
    let paths: Vec<String> = rels.iter().map(|r| format!("{GUEST_DATA}/{r}")).collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let image = image(
        &app("sha256sum.c", Toolchain::Musl),
        "musl-sha256sum-all",
        &with_data(&args),
    );
    let expected = expected_sha256sum(GUEST_DATA, &rels);
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 0, expected.as_bytes(), "musl sha256sum of /data");
    });
}

#[test]
fn musl_walk_lists_the_packaged_tree() {
    require_kvm();
    let image = image(
        &app("walk.c", Toolchain::Musl),
        "musl-walk",
        &with_data(&[GUEST_DATA]),
    );
    let expected = expected_walk();
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 0, expected.as_bytes(), "musl walk /data");
    });
}

// ---------------------------------------------------------------------------
// Signals

/// The exit code a shell would report for a native run: the code, or 128 plus
/// the signal that killed it.
fn native_exit_code(output: &Output) -> i32 {
    output
        .status
        .code()
        .or_else(|| output.status.signal().map(|s| 128 + s))
        .expect("a native process exits or is killed")
}

/// `signals checks` (handlers, frames, masks, the alternate stack, restarts and
/// interruptions): every check passes natively, and nacre prints the same lines.
#[test]
fn c_signals_checks_match_native() {
    require_kvm();
    let program = app("signals.c", Toolchain::Glibc);
    checks_match_native(&program, &["checks"], "signals-checks", 20);
}

#[test]
fn musl_signals_checks_match_native() {
    require_kvm();
    let program = app("signals.c", Toolchain::Musl);
    checks_match_native(&program, &["checks"], "musl-signals-checks", 20);
}

/// Default actions and fatal delivery failures end the app as Linux ends it:
/// the same exit code (128 + signal) and the same output.
#[test]
fn c_signal_default_actions_match_native() {
    require_kvm();
    let program = app("signals.c", Toolchain::Glibc);
    let modes = [
        ("abort", EXIT_SIGABRT),
        ("abort-handler", EXIT_SIGABRT),
        ("segv", 128 + 11),
        ("bad-altstack", 128 + 11),
        ("bad-altstack-caught", 3),
        ("bad-sigreturn", 128 + 11),
    ];
    for (mode, code) in modes {
        let native = run_native(&program, &[mode], b"");
        assert_eq!(native_exit_code(&native), code, "native {mode}: {native:?}");
        let image = image(
            &program,
            &format!("signals-{mode}"),
            &PackageOptions::new().args(&[mode]),
        );
        on_each_platform(|platform| {
            let output = run_on(&image, platform, &[]);
            assert_run(&output, code, &native.stdout, mode);
        });
    }
}

// ---------------------------------------------------------------------------
// Threads

/// A checks app (`ok NAME` / `FAIL NAME: ...` lines): every check passes natively,
/// and nacre prints the same lines on each platform, with each vCPU count.
fn checks_match_native(program: &Path, args: &[&str], name: &str, min_checks: usize) {
    let native = run_native(program, args, b"");
    let listed = String::from_utf8_lossy(&native.stdout).into_owned();
    assert!(
        native.status.success()
            && listed.lines().count() >= min_checks
            && listed.lines().all(|line| line.starts_with("ok ")),
        "{name}: the checks must pass natively first\n{}",
        summary(&native)
    );
    let image = image(program, name, &PackageOptions::new().args(args));
    on_each_platform_and_cpus(|platform, cpus| {
        let output = run_on(&image, platform, &["--cpus", cpus]);
        assert_run(&output, 0, &native.stdout, name);
    });
}

#[test]
fn c_pthreads_match_native() {
    require_kvm();
    checks_match_native(&app("threads.c", Toolchain::Glibc), &[], "threads", 10);
}

#[test]
fn musl_pthreads_match_native() {
    require_kvm();
    checks_match_native(&app("threads.c", Toolchain::Musl), &[], "musl-threads", 10);
}

/// Two threads fault on the same fresh page at once (4 KiB pages of a small area, and
/// the first page of 2 MiB regions the firmware maps whole): the second fault finds
/// the page there, and neither thread's writes are lost (they were: the second fault
/// mapped a new zeroed page over the first, or failed as "out of guest memory" under
/// a 2 MiB mapping, and a page was zeroed while another thread could already write
/// to it).
#[test]
fn pages_faulted_by_two_threads_at_once_lose_nothing() {
    require_kvm();
    let program = app("fault_race.c", Toolchain::Glibc);
    checks_match_native(&program, &[], "fault-race", 2);
    // The firmware's memory counters: each round maps 8 MiB (four 2 MiB regions) and
    // unmaps them before the next, so the most in use is at least that, and what is
    // in use at the exit is at least that much less.
    let image = image(&program, "fault-race-stats", &PackageOptions::new());
    on_each_platform(|platform| {
        let stats_path = scratch_dir(tmp(), &format!("fault-race-stats-{platform}")).join("s.json");
        let stats_arg = stats_path.display().to_string();
        let output = run_on(
            &image,
            platform,
            &["--cpus", "2", "--stats-json", &stats_arg],
        );
        assert_eq!(output.status.code(), Some(0), "{}", summary(&output));
        let stats = Stats::read(&stats_path);
        let (used, peak) = (stats.u64("memory.used_kib"), stats.u64("memory.peak_kib"));
        assert!(peak >= 8 << 10, "memory.peak_kib {peak}");
        assert!(
            used + (8 << 10) <= peak,
            "memory.used_kib {used}, peak {peak}"
        );
    });
}

/// Hostile host: a stream of interrupts nobody asked for (the timer's vector, the
/// wake-up vector, vectors nothing uses) while threads run, block and are
/// preempted on `cpus` vCPUs: the firmware acknowledges them and only looks at its
/// own clock more often; every check still prints what it prints natively.
fn threads_under_an_interrupt_storm(cpus: &str) {
    require_kvm();
    let program = app("threads.c", Toolchain::Glibc);
    let native = run_native(&program, &[], b"");
    assert!(
        native.status.success(),
        "native threads\n{}",
        summary(&native)
    );
    let image = image(
        &program,
        &format!("threads-storm-{cpus}"),
        &PackageOptions::new(),
    );
    on_each_platform(|platform| {
        let output = nacre_tests::run_with_env(
            &image,
            &["--platform", platform, "--cpus", cpus],
            &[("NACRE_TEST_HOSTILE", "interrupt-storm")],
        );
        assert_run(
            &output,
            0,
            &native.stdout,
            &format!("threads on {cpus} vCPUs under an interrupt storm"),
        );
    });
}

#[test]
fn hostile_interrupt_storm_changes_no_thread_result() {
    threads_under_an_interrupt_storm("1");
}

/// A page one thread unmaps or makes inaccessible faults at once in another thread
/// that keeps reading it, which never sees the frame's next use; with several vCPUs
/// the firmware shoots the other vCPUs' TLB entries down for it. (On machines whose
/// KVM shadows the guest's page tables, the hypervisor drops stale translations too,
/// so the count of shoot-downs is what shows the firmware's part.)
#[test]
fn unmapped_pages_fault_in_every_thread_at_once() {
    require_kvm();
    let program = app("unmap_threads.c", Toolchain::Glibc);
    checks_match_native(&program, &[], "unmap-threads", 2);
    let image = image(&program, "unmap-threads-stats", &PackageOptions::new());
    on_each_platform(|platform| {
        let stats_path = scratch_dir(tmp(), &format!("unmap-stats-{platform}")).join("stats.json");
        let stats_arg = stats_path.display().to_string();
        let output = run_on(
            &image,
            platform,
            &["--cpus", "2", "--stats-json", &stats_arg],
        );
        assert_eq!(output.status.code(), Some(0), "{}", summary(&output));
        let shootdowns = Stats::read(&stats_path).u64("tlb.shootdowns");
        assert!(
            shootdowns >= 2,
            "an munmap and an mprotect with another vCPU running shoot its TLB down: \
             {shootdowns}"
        );
    });
}

/// Every way a static program counts CPUs (sysconf, get_nprocs, the affinity mask,
/// /proc/cpuinfo, /sys/devices/system/cpu) gives the number of vCPUs, with glibc and
/// musl, and sched_getcpu names one of them.
#[test]
fn cpu_counts_are_the_vcpus() {
    require_kvm();
    for toolchain in [Toolchain::Glibc, Toolchain::Musl] {
        let program = app("cpus.c", toolchain);
        let image = image(
            &program,
            &format!("cpus-{toolchain:?}"),
            &PackageOptions::new(),
        );
        on_each_platform(|platform| {
            for cpus in ["1", "3"] {
                let output = run_on(&image, platform, &["--cpus", cpus]);
                let expected: String = [
                    "sysconf_onln",
                    "sysconf_conf",
                    "get_nprocs",
                    "affinity",
                    "cpuinfo",
                    "online",
                    "possible",
                ]
                .iter()
                .map(|name| format!("{name} {cpus}\n"))
                .chain(["getcpu_in_range 1\n".to_string()])
                .collect();
                assert_run(&output, 0, expected.as_bytes(), &format!("cpus {cpus}"));
            }
        });
    }
}

/// Hostile host: it says it made two vCPUs but never runs the second: boot waits
/// for it, then stops the run with a message naming it; the app never starts.
#[test]
fn hostile_ap_never_started_stops_the_run_with_a_message() {
    require_kvm();
    let program = app("threads.c", Toolchain::Glibc);
    let image = image(&program, "threads-ap", &PackageOptions::new());
    on_each_platform(|platform| {
        let output = nacre_tests::run_with_env(
            &image,
            &["--platform", platform, "--cpus", "2"],
            &[("NACRE_TEST_HOSTILE", "ap-never-started")],
        );
        assert!(
            !output.status.success() && output.stdout.is_empty(),
            "a vCPU that never starts ends the run before the app\n{}",
            summary(&output)
        );
        assert_stderr_contains(&output, "vCPU 1 never ran", "the missing vCPU");
    });
}

/// Hostile host: the interrupt storm while threads run on two vCPUs.
#[test]
fn hostile_interrupt_storm_on_two_vcpus_changes_no_thread_result() {
    threads_under_an_interrupt_storm("2");
}

#[test]
fn hostile_missing_timer_leaves_blocking_threads_working() {
    require_kvm();
    let program = app("threads.c", Toolchain::Glibc);
    let native = run_native(&program, &["blocking"], b"");
    assert!(
        native.status.success(),
        "native threads\n{}",
        summary(&native)
    );
    let image = image(
        &program,
        "threads-blocking",
        &PackageOptions::new().args(&["blocking"]),
    );
    on_each_platform(|platform| {
        let output = nacre_tests::run_with_env(
            &image,
            &["--platform", platform],
            &[("NACRE_TEST_HOSTILE", "no-timer")],
        );
        assert_run(&output, 0, &native.stdout, "threads without a timer");
        // Asked for two vCPUs, it says it runs on one: the second would have neither
        // a timer nor a way to be woken.
        let output = nacre_tests::run_with_env(
            &image,
            &["--platform", platform, "--cpus", "2"],
            &[("NACRE_TEST_HOSTILE", "no-timer")],
        );
        assert_run(&output, 0, &native.stdout, "two vCPUs without a timer");
        assert_stderr_contains(&output, "the app runs on one vCPU", "the fallback");
    });
}

#[test]
fn rust_std_threads_match_native() {
    require_kvm();
    checks_match_native(
        &app("rust_threads.rs", Toolchain::RustStd),
        &[],
        "rust-threads",
        8,
    );
}

/// `tests/apps/rayon_sum`, a cargo project using rayon's thread pool, built static
/// once per test run.
fn rayon_sum() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| nacre_tests::build_cargo_app("rayon_sum", "apps-rayon"))
        .clone()
}

/// A parallel iterator from a thread-pool crate (rayon), with its default pool
/// (as many threads as CPUs) and with four threads on nacre's one vCPU.
#[test]
fn rust_rayon_parallel_iterators_match_native() {
    require_kvm();
    let program = rayon_sum();
    let native = run_native(&program, &[], b"");
    assert!(
        native.status.success(),
        "native rayon_sum\n{}",
        summary(&native)
    );
    for (name, threads) in [("rayon", None), ("rayon-4", Some("4"))] {
        let mut options = PackageOptions::new();
        if let Some(n) = threads {
            options = options.env("RAYON_NUM_THREADS", n);
        }
        let image = image(&program, name, &options);
        on_each_platform_and_cpus(|platform, cpus| {
            let output = run_on(&image, platform, &["--memory", "512M", "--cpus", cpus]);
            assert_run(&output, 0, &native.stdout, name);
        });
    }
}

/// One mode of `goroutines.go` prints what it prints natively, on each platform.
fn go_mode_matches_native(mode: &str) {
    require_kvm();
    let program = app("goroutines.go", Toolchain::Go);
    let native = run_native(&program, &[mode], b"");
    assert!(
        native.status.success() && !native.stdout.is_empty(),
        "goroutines {mode} natively\n{}",
        summary(&native)
    );
    let image = image(
        &program,
        &format!("goroutines-{mode}"),
        &PackageOptions::new().args(&[mode]),
    );
    on_each_platform_and_cpus(|platform, cpus| {
        let output = run_on(&image, platform, &["--memory", "512M", "--cpus", cpus]);
        assert_run(&output, 0, &native.stdout, &format!("goroutines {mode}"));
    });
}

#[test]
fn go_hello_matches_native() {
    go_mode_matches_native("hello");
}

#[test]
fn go_channels_waitgroup_and_mutex_match_native() {
    go_mode_matches_native("channels");
}

#[test]
fn go_parallel_computation_matches_native() {
    go_mode_matches_native("parallel");
}

/// The same computation with GOMAXPROCS=4: four Go processors, so four busy OS
/// threads, take turns on the one vCPU.
#[test]
fn go_parallel_computation_with_four_procs_matches_native() {
    require_kvm();
    let program = app("goroutines.go", Toolchain::Go);
    let native = run_native(&program, &["parallel"], b"");
    assert!(native.status.success(), "native\n{}", summary(&native));
    let image = image(
        &program,
        "goroutines-parallel-4",
        &PackageOptions::new()
            .args(&["parallel"])
            .env("GOMAXPROCS", "4"),
    );
    on_each_platform(|platform| {
        let stats_path = scratch_dir(tmp(), &format!("go-procs-{platform}")).join("stats.json");
        let stats_arg = stats_path.display().to_string();
        let output = run_on(
            &image,
            platform,
            &["--memory", "512M", "--stats-json", &stats_arg],
        );
        assert_run(
            &output,
            0,
            &native.stdout,
            "goroutines parallel, GOMAXPROCS=4",
        );
        // More processors ran on threads of their own than the default one would
        // (with GOMAXPROCS=1 the runtime makes 2 threads: sysmon and one more; it
        // makes the others as the work needs them).
        let created = Stats::read(&stats_path).u64("threads.created");
        assert!(created >= 3, "GOMAXPROCS=4 made only {created} threads");
    });
}

/// time.Sleep, timers, tickers and time.After: the Go runtime sleeps in
/// epoll_pwait with a timeout and breaks the sleep by writing to a pipe.
#[test]
fn go_sleep_and_timers_match_native() {
    go_mode_matches_native("sleep");
}

/// Goroutines in tight loops that never yield: the runtime preempts them (and
/// the time slices let its other threads run) while a timer ends the test.
#[test]
fn go_tight_loop_is_preempted() {
    go_mode_matches_native("spin");
}

// ---------------------------------------------------------------------------
// Writable files

/// A copy of `from` at `to` (directories, files and their permission bits).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy directory");
    for entry in fs::read_dir(from).expect("read fixture directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
    let mode = fs::metadata(from).expect("fixture metadata").permissions();
    fs::set_permissions(to, mode).expect("set directory mode");
}

/// `tests/apps/tmpfs.c` built with `toolchain`: natively in a scratch directory
/// and on a copy of the fixture, in the guest in /tmp and on the packaged fixture
/// (changed through copy-up); the checks print the same on both platforms.
fn tmpfs_matches_native(toolchain: Toolchain, name: &str) {
    require_kvm();
    let program = app("tmpfs.c", toolchain);
    let base = scratch_dir(tmp(), &format!("{name}-native"));
    let (scratch, data) = (base.join("scratch"), base.join("data"));
    fs::create_dir_all(&scratch).expect("create scratch directory");
    copy_tree(&fixture(), &data);
    let native = run_native(
        &program,
        &[
            scratch.to_str().expect("utf-8"),
            data.to_str().expect("utf-8"),
        ],
        b"",
    );
    let listed = String::from_utf8_lossy(&native.stdout).into_owned();
    assert!(
        native.status.success()
            && listed.lines().count() >= 140
            && listed.lines().all(|line| line.starts_with("ok ")),
        "{name}: the checks must pass natively first\n{}",
        summary(&native)
    );
    let image = image(&program, name, &with_data(&["/tmp", GUEST_DATA]));
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &["--memory", "256M"]);
        assert_run(&output, 0, &native.stdout, name);
    });
}

#[test]
fn c_writable_files_match_native() {
    tmpfs_matches_native(Toolchain::Glibc, "tmpfs");
}

#[test]
fn musl_writable_files_match_native() {
    tmpfs_matches_native(Toolchain::Musl, "musl-tmpfs");
}

/// `tests/apps/sqlite.c`, linked statically with the system's libsqlite3.a.
fn sqlite_app() -> PathBuf {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        let out = scratch_dir(tmp(), "apps-sqlite-bin").join("sqlite");
        let output = Command::new("gcc")
            .args(["-static", "-O2"])
            .arg(app_source("sqlite.c"))
            .arg("-o")
            .arg(&out)
            .args(["-lsqlite3", "-lm"])
            .output()
            .expect("run gcc (Debian: gcc, libsqlite3-dev)");
        assert!(
            output.status.success(),
            "gcc sqlite.c -lsqlite3 (Debian: libsqlite3-dev)\n{}",
            summary(&output)
        );
        out
    })
    .clone()
}

/// SQLite opens a packaged database read-write (copied up), inserts in a
/// transaction with its rollback journal beside the database, queries, and writes
/// a second database into /tmp: the same rows as natively on a copy.
#[test]
fn sqlite_writes_a_packaged_database_as_natively() {
    require_kvm();
    let program = sqlite_app();
    let base = scratch_dir(tmp(), "sqlite-native");
    let (pkg, native) = (base.join("pkg"), base.join("native"));
    fs::create_dir_all(&pkg).expect("create package directory");
    fs::create_dir_all(&native).expect("create native directory");
    let db = pkg.join("db.sqlite");
    let made = run_native(&program, &["create", db.to_str().expect("utf-8")], b"");
    assert!(made.status.success(), "create\n{}", summary(&made));
    fs::copy(&db, native.join("db.sqlite")).expect("copy the database");
    let expected = run_native(
        &program,
        &[
            "update",
            native.join("db.sqlite").to_str().expect("utf-8"),
            native.join("copy.sqlite").to_str().expect("utf-8"),
        ],
        b"",
    );
    assert!(
        expected.status.success() && expected.stdout.ends_with(b"2273\n"),
        "sqlite natively\n{}",
        summary(&expected)
    );
    let image = image(
        &program,
        "sqlite",
        &PackageOptions::new().file(&pkg, GUEST_DATA).args(&[
            "update",
            "/data/db.sqlite",
            "/tmp/copy.sqlite",
        ]),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &["--memory", "256M"]);
        assert_run(&output, 0, &expected.stdout, "sqlite");
    });
}

/// Debian's static busybox extracts a packaged ustar archive (directories, files,
/// a symbolic link) into /tmp, listing what it makes as it does natively.
#[test]
fn busybox_tar_extracts_into_tmp_as_natively() {
    require_kvm();
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "a static busybox at /bin/busybox (Debian: busybox-static)"
    );
    let base = scratch_dir(tmp(), "busybox-tar");
    let (src, pkg, out) = (base.join("src"), base.join("pkg"), base.join("out"));
    copy_tree(&fixture(), &src.join("tree"));
    std::os::unix::fs::symlink("../hello.txt", src.join("tree/nested/link"))
        .expect("make a symbolic link");
    fs::create_dir_all(&pkg).expect("create package directory");
    fs::create_dir_all(&out).expect("create output directory");
    let archive = pkg.join("archive.tar");
    let made = Command::new(busybox)
        .args(["tar", "-c", "-f"])
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg("tree")
        .output()
        .expect("run busybox tar -c");
    assert!(made.status.success(), "busybox tar -c\n{}", summary(&made));
    let extract = |archive: &str, into: &str| -> Vec<String> {
        ["tar", "-x", "-v", "-f", archive, "-C", into]
            .iter()
            .map(|s| (*s).to_string())
            .collect()
    };
    let args = extract(
        archive.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let native = run_native(busybox, &args, b"");
    assert!(
        native.status.success() && !native.stdout.is_empty(),
        "busybox tar -x natively\n{}",
        summary(&native)
    );
    // The extracted tree is the fixture.
    for entry in host_tree(&fixture()) {
        let copy = out.join("tree").join(&entry.rel);
        if let Some(contents) = entry.contents {
            assert_eq!(fs::read(&copy).ok(), Some(contents), "{}", entry.rel);
        }
    }
    let guest_args = extract("/data/archive.tar", "/tmp");
    let guest_args: Vec<&str> = guest_args.iter().map(String::as_str).collect();
    let image = image(
        busybox,
        "busybox-tar",
        &PackageOptions::new()
            .file(&pkg, GUEST_DATA)
            .args(&guest_args),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &["--memory", "256M"]);
        assert_run(&output, 0, &native.stdout, "busybox tar -x");
    });
}

/// A small guest fills /tmp: writes end with ENOSPC (not a crash), statfs says it
/// is full, and removing the file makes room again.
#[test]
fn filling_tmp_ends_with_enospc_and_unlink_frees_it() {
    require_kvm();
    let program = app("tmpfs.c", Toolchain::Glibc);
    let image = image(
        &program,
        "tmpfs-fill",
        &PackageOptions::new().args(&["fill", "/tmp"]),
    );
    let expected = "ok filled\nok statfs-full\nok still-full\nok unlink\nok write-again\n";
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &["--memory", "64M"]);
        assert_run(&output, 0, expected.as_bytes(), "tmpfs fill");
    });
}

// ---------------------------------------------------------------------------
// Pipes, eventfd, epoll, poll and select

#[test]
fn c_pipes_eventfd_epoll_match_native() {
    require_kvm();
    checks_match_native(&app("pipes.c", Toolchain::Glibc), &[], "pipes", 25);
}

#[test]
fn musl_pipes_eventfd_epoll_match_native() {
    require_kvm();
    checks_match_native(&app("pipes.c", Toolchain::Musl), &[], "musl-pipes", 25);
}

/// A write to a pipe without readers sends SIGPIPE, whose default action ends
/// the app as it ends a native run (exit 141 as a shell reports it).
#[test]
fn c_pipe_without_readers_ends_the_app_with_sigpipe() {
    require_kvm();
    let program = app("pipes.c", Toolchain::Glibc);
    let native = run_native(&program, &["sigpipe"], b"");
    assert_eq!(native_exit_code(&native), 128 + 13, "native: {native:?}");
    let image = image(
        &program,
        "pipes-sigpipe",
        &PackageOptions::new().args(&["sigpipe"]),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 128 + 13, &native.stdout, "pipes sigpipe");
    });
}

// ---------------------------------------------------------------------------
// Sockets

/// TCP and UDP over IPv4 and IPv6 through the host's sockets: echo between threads,
/// a 4 MiB transfer with poll, non-blocking connect, epoll level and edge triggered,
/// options, names and errors, printed the same as natively.
fn sockets_match_native(toolchain: Toolchain, name: &str, port: u16) {
    require_kvm();
    let program = app("sockets.c", toolchain);
    let p = port.to_string();
    let native = run_native(&program, &[&p], b"");
    let listed = String::from_utf8_lossy(&native.stdout).into_owned();
    assert!(
        native.status.success() && listed.lines().count() >= 25,
        "{name}: the checks must pass natively first\n{}",
        summary(&native)
    );
    let image = image(&program, name, &nacre_tests::sockets_options(port, &[&p]));
    on_each_platform_and_cpus(|platform, cpus| {
        let output = run_on(&image, platform, &["--cpus", cpus]);
        assert_run(&output, 0, &native.stdout, name);
    });
}

#[test]
fn c_sockets_match_native() {
    sockets_match_native(Toolchain::Glibc, "sockets", 18080);
}

#[test]
fn musl_sockets_match_native() {
    sockets_match_native(Toolchain::Musl, "musl-sockets", 18090);
}

/// What the measured policy does not allow is refused: a connect with
/// ECONNREFUSED and a bind with EACCES in the app, each with a message on nacre's
/// stderr naming the rule that is missing.
#[test]
fn sockets_outside_the_policy_are_refused() {
    require_kvm();
    let program = app("sockets.c", Toolchain::Glibc);
    let image = image(
        &program,
        "sockets-denied",
        &nacre_tests::sockets_options(18100, &["18100", "denied", "18109"]),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(
            &output,
            0,
            b"connect ECONNREFUSED\nbind EACCES\n",
            "sockets denied",
        );
        assert_stderr_contains(&output, "127.0.0.1:18109", "sockets denied");
    });
}

/// A read of a pipe that only the reading thread could write to would never
/// return (it hangs natively): the app is stopped with a message and exit 137.
#[test]
fn c_read_of_a_pipe_no_thread_can_write_stops_the_app() {
    require_kvm();
    let image = image(
        &app("pipes.c", Toolchain::Glibc),
        "pipes-stuck",
        &PackageOptions::new().args(&["stuck"]),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 128 + 9, b"reading\n", "pipes stuck");
        assert_stderr_contains(&output, "empty pipe that no other thread", "pipes stuck");
    });
}

// ---------------------------------------------------------------------------
// Rust std

fn rust_std() -> PathBuf {
    app("rust_std.rs", Toolchain::RustStd)
}

/// The Rust app is static-pie (ET_DYN without an interpreter), which nacre
/// relocates itself.
#[test]
fn rust_std_is_static_pie_and_boots() {
    require_kvm();
    let app = rust_std();
    assert_eq!(elf_type(&app), ET_DYN, "{} should be ET_DYN", app.display());
    assert!(
        !elf_has_interp(&app),
        "{} should have no PT_INTERP",
        app.display()
    );
    let image = image(&app, "rust-hello", &PackageOptions::new().args(&["hello"]));
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 0, b"hello from rust std\n", "rust_std hello");
    });
}

#[test]
fn rust_fs_reads_the_packaged_tree() {
    require_kvm();
    let image = image(&rust_std(), "rust-fs", &with_data(&["fs", GUEST_DATA]));
    let expected = expected_rust_fs("/", "/app/rust_std");
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 0, expected.as_bytes(), "rust_std fs /data");
    });
}

#[test]
fn rust_env_sees_packaged_args_and_env() {
    require_kvm();
    let options = PackageOptions::with_args_and_env(&RUST_ENV_ARGS, &RUST_ENV_VARS);
    let image = image(&rust_std(), "rust-env", &options);
    let expected = expected_rust_env();
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 0, expected.as_bytes(), "rust_std env");
    });
}

#[test]
fn rust_time_clocks_are_sane() {
    require_kvm();
    let image = image(
        &rust_std(),
        "rust-time",
        &PackageOptions::new().args(&["time"]),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 0, RUST_TIME_STDOUT.as_bytes(), "rust_std time");
    });
}

/// std seeds `RandomState` from getrandom: two boots of the same image hash
/// the same string differently.
#[test]
fn rust_hashmap_seed_differs_between_runs() {
    require_kvm();
    let image = image(
        &rust_std(),
        "rust-hashmap",
        &PackageOptions::new().args(&["hashmap"]),
    );
    on_each_platform(|platform| {
        let lines: Vec<String> = (0..2)
            .map(|_| {
                let output = run_on(&image, platform, &[]);
                assert_eq!(
                    output.status.code(),
                    Some(0),
                    "rust_std hashmap\n{}",
                    summary(&output)
                );
                hashmap_hash_line(&String::from_utf8_lossy(&output.stdout))
            })
            .collect();
        assert_ne!(
            lines[0], lines[1],
            "two runs hashed \"nacre\" alike: the RandomState seed is not random"
        );
    });
}

#[test]
fn rust_vec_fills_one_gib() {
    require_kvm();
    let image = image(
        &rust_std(),
        "rust-vec",
        &PackageOptions::new().args(&["vec"]),
    );
    let expected = expected_rust_vec();
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &["--memory", "2G"]);
        assert_run(&output, 0, expected.as_bytes(), "rust_std vec (1 GiB)");
    });
}

#[test]
fn rust_panic_exits_101_with_the_message_on_stderr() {
    require_kvm();
    let image = image(
        &rust_std(),
        "rust-panic",
        &PackageOptions::new().args(&["panic"]),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        let what = "rust_std panic";
        assert_run(&output, EXIT_RUST_PANIC, b"about to panic\n", what);
        assert_stderr_contains(&output, "panicked", what);
        assert_stderr_contains(&output, "nacre test panic", what);
    });
}

// ---------------------------------------------------------------------------
// Statistics

/// Syscalls the shim does not implement are counted by name in
/// `syscalls.unsupported` (an object, empty when there were none).
#[test]
fn unsupported_syscalls_are_counted_in_stats_json() {
    require_kvm();
    let image = image(
        &rust_std(),
        "rust-stats",
        &PackageOptions::new().args(&["hello"]),
    );
    on_each_platform(|platform| {
        let stats_path = scratch_dir(tmp(), &format!("apps-stats-{platform}")).join("stats.json");
        let stats_arg = stats_path.display().to_string();
        let output = run_on(&image, platform, &["--stats-json", &stats_arg]);
        assert_run(&output, 0, b"hello from rust std\n", "rust_std hello");
        let unsupported = Stats::read(&stats_path).counters("syscalls.unsupported");
        assert!(
            unsupported
                .iter()
                .all(|(name, count)| !name.is_empty() && *count > 0),
            "syscalls.unsupported lists an unnamed or uncounted syscall: {unsupported:?}"
        );
    });
}

/// A restartable sequence preempted inside its critical section goes to its abort
/// handler with its descriptor cleared (`rseq_abort.c` spins in the section while
/// another thread wants the vCPU; natively the result depends on the cores free).
#[test]
fn rseq_critical_sections_are_aborted_when_preempted() {
    require_kvm();
    let image = image(
        &app("rseq_abort.c", Toolchain::Glibc),
        "rseq-abort",
        &PackageOptions::new().env("GLIBC_TUNABLES", "glibc.pthread.rseq=0"),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert_run(&output, 0, b"aborted 1\n", "rseq_abort");
    });
}

/// A thread blocked reading stdin lets the others run: the input comes a second
/// after the start, and a worker thread must have run meanwhile.
#[test]
fn a_thread_waiting_for_stdin_lets_others_run() {
    require_kvm();
    let image = image(
        &app("stdin_threads.c", Toolchain::Glibc),
        "stdin-threads",
        &PackageOptions::new(),
    );
    on_each_platform(|platform| {
        let mut child = Command::new(nacre_tests::nacre_bin())
            .args(["run", "--platform", platform])
            .arg(&image)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nacre");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        std::thread::sleep(std::time::Duration::from_secs(1));
        stdin.write_all(b"hi\n").expect("write stdin");
        drop(stdin);
        let output = child.wait_with_output().expect("wait for nacre");
        assert_run(
            &output,
            0,
            b"read 3, worker ran while waiting: 1\n",
            "stdin_threads",
        );
    });
}

/// The firmware's thread counters reach `--stats-json`: `bench_threads create 20`
/// makes exactly 20 threads, and every thread switches in and out at least once.
#[test]
fn thread_counters_reach_stats_json() {
    require_kvm();
    let program = app("bench_threads.c", Toolchain::Glibc);
    let image = image(
        &program,
        "threads-stats",
        &PackageOptions::new().args(&["create", "20"]),
    );
    on_each_platform(|platform| {
        let stats_path =
            scratch_dir(tmp(), &format!("threads-stats-{platform}")).join("stats.json");
        let stats_arg = stats_path.display().to_string();
        let output = run_on(&image, platform, &["--stats-json", &stats_arg]);
        assert_eq!(output.status.code(), Some(0), "{}", summary(&output));
        let stats = Stats::read(&stats_path);
        assert_eq!(stats.u64("threads.created"), 20, "threads.created");
        assert!(
            stats.u64("threads.switches") >= 40,
            "20 threads joined one by one switch at least twice each: {}",
            stats.u64("threads.switches")
        );
        let clones: u64 = stats
            .counters("syscalls")
            .iter()
            .filter(|(name, _)| name == "clone3" || name == "clone")
            .map(|(_, count)| count)
            .sum();
        assert_eq!(clones, 20, "clone and clone3 calls");
        assert!(
            stats.u64("futex.waits") >= 1,
            "a join of a running thread waits"
        );
        let by_kind = ["interrupts.timer", "interrupts.wake", "interrupts.other"]
            .iter()
            .map(|key| stats.u64(key))
            .sum::<u64>();
        assert_eq!(by_kind, stats.u64("interrupts"), "interrupts by kind");
        // On two vCPUs a new thread wakes the idle one.
        let output = run_on(
            &image,
            platform,
            &["--cpus", "2", "--stats-json", &stats_arg],
        );
        assert_eq!(output.status.code(), Some(0), "{}", summary(&output));
        let stats = Stats::read(&stats_path);
        assert_eq!(stats.u64("cpus"), 2, "cpus");
        assert_eq!(
            stats.u64("threads.created"),
            20,
            "threads.created on two vCPUs"
        );
        assert!(
            stats.u64("interrupts.wake") >= 1,
            "wake-ups between vCPUs: {}",
            stats.u64("interrupts.wake")
        );
        let _ = stats.u64("tlb.shootdowns");
    });
}

// ---------------------------------------------------------------------------
// The same apps natively, against the same expectations

/// Runs `program ARGS...` on the host from `/`, feeding it `stdin`.
fn run_native(program: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        // An app that does not read its input closes the pipe early.
        let _ = pipe.write_all(&input);
    });
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", program.display()));
    let _ = feeder.join();
    output
}

#[test]
fn native_c_apps_print_what_the_tests_expect() {
    let root = fixture();
    let shown = root.display().to_string();
    let rels = fixture_file_rels();
    let paths: Vec<String> = rels.iter().map(|r| format!("{shown}/{r}")).collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    for toolchain in [Toolchain::Glibc, Toolchain::Musl] {
        let what = format!("native {toolchain:?}");
        let output = run_native(&app("sha256sum.c", toolchain), &args, b"");
        let expected = expected_sha256sum(&shown, &rels);
        assert_run(
            &output,
            0,
            expected.as_bytes(),
            &format!("{what} sha256sum"),
        );

        let missing = format!("{shown}/{MISSING}");
        let output = run_native(&app("sha256sum.c", toolchain), &[&missing], b"");
        assert_run(&output, 1, b"", &format!("{what} sha256sum missing"));
        assert_stderr_contains(
            &output,
            &format!("sha256sum: {missing}: No such file or directory\n"),
            &what,
        );

        let output = run_native(&app("walk.c", toolchain), &[&shown], b"");
        assert_run(
            &output,
            0,
            expected_walk().as_bytes(),
            &format!("{what} walk"),
        );
    }

    let input = pseudo_random_bytes(CAT_STDIN_BYTES, 5);
    let output = run_native(&app("cat_stdin.c", Toolchain::Glibc), &[], &input);
    assert_run(&output, 0, &input, "native cat_stdin");

    for code in [0, 3, 255] {
        let arg = code.to_string();
        let output = run_native(&app("exit_code.c", Toolchain::Glibc), &[&arg], b"");
        let expected = format!("exiting with {code}\n");
        assert_run(&output, code, expected.as_bytes(), "native exit_code");
    }

    let output = run_native(&app("abort.c", Toolchain::Glibc), &[], b"");
    assert_eq!(output.status.signal(), Some(6), "native abort: {output:?}");
    assert_eq!(output.stdout, b"about to abort\n", "native abort");

    let hello = app("hello.c", Toolchain::GlibcNoPie);
    let output = run_native(&hello, &[], b"");
    assert_run(
        &output,
        C_HELLO_EXIT,
        C_HELLO_STDOUT.as_bytes(),
        "native hello",
    );
}

#[test]
fn native_rust_std_prints_what_the_tests_expect() {
    let app = rust_std();
    let shown = fixture().display().to_string();

    let output = run_native(&app, &["hello"], b"");
    assert_run(&output, 0, b"hello from rust std\n", "native hello");

    let exe = fs::canonicalize(&app).expect("canonical app path");
    let expected = expected_rust_fs("/", &exe.display().to_string());
    let output = run_native(&app, &["fs", &shown], b"");
    assert_run(&output, 0, expected.as_bytes(), "native fs");

    let mut cmd = Command::new(&app);
    cmd.args(RUST_ENV_ARGS).env_clear().envs(RUST_ENV_VARS);
    let output = cmd.output().expect("run rust_std env");
    assert_run(&output, 0, expected_rust_env().as_bytes(), "native env");

    let output = run_native(&app, &["time"], b"");
    assert_run(&output, 0, RUST_TIME_STDOUT.as_bytes(), "native time");

    let lines: Vec<String> = (0..2)
        .map(|_| {
            let output = run_native(&app, &["hashmap"], b"");
            assert_eq!(output.status.code(), Some(0), "{}", summary(&output));
            hashmap_hash_line(&String::from_utf8_lossy(&output.stdout))
        })
        .collect();
    assert_ne!(lines[0], lines[1], "native hashmap: seeds were equal");

    let output = run_native(&app, &["vec"], b"");
    assert_run(&output, 0, expected_rust_vec().as_bytes(), "native vec");

    let output = run_native(&app, &["panic"], b"");
    assert_run(
        &output,
        EXIT_RUST_PANIC,
        b"about to panic\n",
        "native panic",
    );
    assert_stderr_contains(&output, "nacre test panic", "native panic");
}
