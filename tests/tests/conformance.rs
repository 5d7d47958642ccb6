//! Linux conformance of the syscall layer: two C apps from `tests/apps/` run
//! lists of checks, each printing `ok NAME` or `FAIL NAME: DETAIL`, and exit 0
//! only when every check passed.
//!
//! - `memory.c`: mmap, munmap, mremap, madvise, mprotect, brk, file and device
//!   mappings, malloc; and, in its `lazy` mode, the cost of a large mapping that
//!   is barely touched (memory is accepted on first touch, so mapping 16 GiB and
//!   touching 10 MiB accepts about 10 MiB, in a VM of 256 MiB).
//! - `posix.c`: files and descriptors on the packaged tree, the
//!   working directory, `/proc/self`, `/dev`, the console, clocks, identity,
//!   limits, signals and membarrier.
//!
//! Each runs on both emulated platforms by the real `nacre` binary in KVM
//! (these tests need `/dev/kvm` and fail without it). Every check name the apps
//! must print is listed here, so a check that disappears fails the test as a
//! failing check does. The `native_*` tests run the same binaries on the host
//! (no KVM needed), where every check that is not specific to nacre must pass:
//! when one of those fails, the app is wrong, not nacre.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use nacre_tests::{
    assert_checks, built_app, describe_output, on_each_platform, package_with, require_kvm, run_on,
    run_with_stdin, scratch_dir, PackageOptions, Stats, Toolchain,
};

/// Every emulated platform: each test runs the same image on all of them.
/// Where the fixture tree is packaged in the guest.
const GUEST_DATA: &str = "/data";

/// The checks `memory checks FILE` prints, in its order.
const MEMORY_CHECKS: [&str; 27] = [
    "mmap_file_read_only",
    "mmap_file_offset",
    "mmap_file_private_write",
    "mmap_dev_zero",
    "mmap_anon_zero",
    "mmap_zero_length_einval",
    "munmap_keeps_other_mapping",
    "munmap_middle_keeps_edges",
    "munmap_untouched_edge",
    "munmap_unaligned_einval",
    "map_fixed_over_part",
    "map_fixed_noreplace_eexist",
    "map_fixed_noreplace_free",
    "mremap_grow_in_place_aligned",
    "mremap_grow_in_place_unaligned",
    "mremap_move_aligned",
    "mremap_move_unaligned",
    "mremap_shrink",
    "mremap_fixed",
    "madvise_dontneed_zeroes",
    "mprotect_read_then_write",
    "mprotect_untouched_edge",
    "mprotect_unmapped_enomem",
    "brk_grow_shrink",
    "brk_regrow_zero",
    "malloc_1g_reuse",
    "read_into_reused_pages",
];
/// The packaged file the file-mapping checks map: more than two pages, not a
/// whole number of them.
const MAPPED_FILE: &str = "mapped.bin";
const MAPPED_FILE_BYTES: usize = 3 * 4096 + 123;
/// Guest RAM for the memory checks: `malloc_1g_reuse` touches 1 GiB twice,
/// which fits only if the first gigabyte is given back.
const MEMORY_CHECKS_RAM: &str = "2G";

/// Guest RAM for the lazy-acceptance runs, far less than the 16 GiB mapped.
const LAZY_RAM: &str = "256M";
/// MiB that `memory lazy N` touches in the second run (the first touches 0).
const LAZY_TOUCHED_MIB: u64 = 10;
/// Most extra acceptance those MiB may cost: 2 MiB granularity at both ends of
/// the range and the page tables that map it.
const LAZY_MAX_EXTRA_MIB: u64 = 16;

/// The checks `posix DIR` prints, in its order.
const POSIX_CHECKS: [&str; 55] = [
    "getcwd_at_start",
    "open_read_close",
    "dup_shares_offset",
    "dup2_onto_open_fd",
    "dup3_cloexec",
    "fcntl_dupfd_minimum",
    "fcntl_getfl_access_mode",
    "lseek",
    "pread_keeps_offset",
    "readv_two_buffers",
    "fstat",
    "stat_and_lstat",
    "fstatat",
    "statx",
    "readdir",
    "access_read",
    "open_missing_enoent",
    "open_trailing_slash_enotdir",
    "read_directory_eisdir",
    "chdir_relative_open",
    "fchdir",
    "proc_self_exe_link",
    "proc_self_exe_is_elf",
    "proc_self_maps_stack",
    "dev_null",
    "dev_zero",
    "dev_urandom",
    "getrandom",
    "isatty_stdin",
    "tiocgwinsz_enotty",
    "write_zero_bytes",
    "writev_stdout",
    "poll_stdin",
    "clock_monotonic_steps",
    "clock_realtime_after_2020",
    "gettimeofday_matches_realtime",
    "nanosleep_30ms",
    "clock_nanosleep_abstime",
    "clock_getres",
    "uname",
    "getpid",
    "getuid",
    "sched_getaffinity",
    "getrlimit_nofile",
    "sigaction_read_back",
    "sigprocmask_block_raise",
    "sig_ign_raise",
    "kill_signal_zero",
    "sigaltstack_read_back",
    "socketpair_enosys",
    "prctl_get_name",
    "prctl_set_name",
    "sysinfo",
    "membarrier_query",
    "membarrier_private_expedited",
];
/// The posix checks of what nacre promises beyond Linux (pid 1, uid 0, no
/// socketpair yet): `NACRE_NATIVE=1` skips them on the host.
const POSIX_NACRE_ONLY: [&str; 3] = ["getpid", "getuid", "socketpair_enosys"];
/// What the test feeds the posix app on stdin (its `poll_stdin` check reads
/// exactly this) and the line its `writev_stdout` check prints.
const POSIX_STDIN: &[u8] = b"stdin for the poll check\n";
const POSIX_WRITEV_LINE: &str = "writev: first second third";

/// The posix fixture: path below the packaged directory, contents, mode.
const POSIX_FIXTURE: [(&str, &str, u32); 3] = [
    ("hello.txt", "hello, nacre\n", 0o644),
    ("private.txt", "owner and group\n", 0o640),
    ("sub/two.txt", "two\n", 0o644),
];

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

// ---------------------------------------------------------------------------
// Fixtures, apps and images

/// Deterministic bytes of every value (xorshift64).
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

/// The host directory packaged as [`GUEST_DATA`] for the memory app.
fn memory_fixture() -> PathBuf {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let root = scratch_dir(tmp(), "conformance-memory-fixture");
            fs::write(
                root.join(MAPPED_FILE),
                pseudo_random_bytes(MAPPED_FILE_BYTES, 7),
            )
            .expect("write the mapped file");
            root
        })
        .clone()
}

/// The host directory packaged as [`GUEST_DATA`] for the posix app, as an
/// absolute path without symbolic links (the posix app compares `getcwd`
/// with it when run natively).
fn posix_fixture() -> PathBuf {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let root = scratch_dir(tmp(), "conformance-posix-fixture");
            for (rel, contents, mode) in POSIX_FIXTURE {
                let path = root.join(rel);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).expect("create fixture directory");
                }
                fs::write(&path, contents).expect("write fixture file");
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .expect("set fixture file mode");
            }
            fs::canonicalize(&root).expect("canonical fixture path")
        })
        .clone()
}

/// The app built from `tests/apps/<source>` with `gcc -static -O2`, once per
/// test run, named after the source's stem (its argv\[0\] and `/app/<name>`).
fn app(source: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    built_app(
        DIR.get_or_init(|| scratch_dir(tmp(), "conformance-bin")),
        source,
        Toolchain::Glibc,
    )
}

/// Packages `app` with `options` into `<scratch>/conformance-images/<name>.igvm`.
fn image(app: &Path, name: &str, options: &PackageOptions) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch_dir(tmp(), "conformance-images"));
    package_with(app, &dir.join(format!("{name}.igvm")), options)
}

fn memory_checks_image() -> PathBuf {
    let mapped = format!("{GUEST_DATA}/{MAPPED_FILE}");
    image(
        &app("memory.c"),
        "memory-checks",
        &PackageOptions::new()
            .file(&memory_fixture(), GUEST_DATA)
            .args(&["checks", &mapped]),
    )
}

fn posix_image() -> PathBuf {
    image(
        &app("posix.c"),
        "posix",
        &PackageOptions::new()
            .file(&posix_fixture(), GUEST_DATA)
            .args(&[GUEST_DATA]),
    )
}

/// Runs `program ARGS...` on the host from `/`, with `env` added and `stdin`
/// fed to it.
fn run_native(program: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
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

fn assert_writev_line(output: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().any(|line| line == POSIX_WRITEV_LINE),
        "{what}: stdout has no line {POSIX_WRITEV_LINE:?}\n{}",
        describe_output(output)
    );
}

// ---------------------------------------------------------------------------
// Memory

#[test]
fn memory_checks_pass() {
    require_kvm();
    let image = memory_checks_image();
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &["--memory", MEMORY_CHECKS_RAM]);
        assert_checks(&output, &MEMORY_CHECKS, &[], "memory checks");
    });
}

/// Bytes of private memory the guest made usable during a run: validated
/// (SNP) or accepted (TDX), in 2 MiB and 4 KiB pages.
fn accepted_bytes(stats: &Stats, platform: &str) -> u64 {
    let (key_2m, key_4k) = match platform {
        "emulated-snp" => ("pvalidate.2m", "pvalidate.4k"),
        "emulated-tdx" => ("tdx.accept_2m", "tdx.accept_4k"),
        other => panic!("no acceptance counters known for platform {other}"),
    };
    stats.u64(key_2m) * (2 << 20) + stats.u64(key_4k) * (4 << 10)
}

/// Mapping 16 GiB costs nothing until it is touched: touching 10 MiB of it
/// accepts about 10 MiB more than touching none, in a 256 MiB VM.
#[test]
fn memory_lazy_acceptance_follows_touched_pages() {
    require_kvm();
    let memory = app("memory.c");
    let touched = [0, LAZY_TOUCHED_MIB];
    let images: Vec<PathBuf> = touched
        .iter()
        .map(|mib| {
            let arg = mib.to_string();
            image(
                &memory,
                &format!("memory-lazy-{mib}"),
                &PackageOptions::new().args(&["lazy", &arg]),
            )
        })
        .collect();
    on_each_platform(|platform| {
        let dir = scratch_dir(tmp(), &format!("conformance-lazy-{platform}"));
        let accepted: Vec<u64> = touched
            .iter()
            .zip(&images)
            .map(|(mib, image)| {
                let stats_path = dir.join(format!("lazy-{mib}.json"));
                let stats_arg = stats_path.display().to_string();
                let output = run_on(
                    image,
                    platform,
                    &["--memory", LAZY_RAM, "--stats-json", &stats_arg],
                );
                let expected = format!("touched {mib} MiB of 16 GiB\n");
                assert!(
                    output.status.code() == Some(0) && output.stdout == expected.as_bytes(),
                    "memory lazy {mib}: expected exit 0 and {expected:?}\n{}",
                    describe_output(&output)
                );
                accepted_bytes(&Stats::read(&stats_path), platform)
            })
            .collect();
        let extra = accepted[1].saturating_sub(accepted[0]);
        let (min, max) = (LAZY_TOUCHED_MIB << 20, LAZY_MAX_EXTRA_MIB << 20);
        assert!(
            (min..=max).contains(&extra),
            "touching {LAZY_TOUCHED_MIB} MiB of a 16 GiB mapping accepted {extra} more bytes \
             ({} MiB) than touching none; expected {LAZY_TOUCHED_MIB} to {LAZY_MAX_EXTRA_MIB} MiB \
             (accepted: {} bytes with 0 MiB touched, {} bytes with {LAZY_TOUCHED_MIB} MiB)",
            extra >> 20,
            accepted[0],
            accepted[1]
        );
    });
}

/// An app that touches more memory than the guest has dies of SIGBUS (exit 135), and
/// nacre says how much the guest had and what to do about it.
#[test]
fn memory_exhaustion_names_the_size_and_the_remedy() {
    require_kvm();
    let image = image(
        &app("memory.c"),
        "memory-exhausted",
        &PackageOptions::new().args(&["lazy", "200"]),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &["--memory", "64M"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.code() == Some(135)
                && stderr.contains(
                    "out of guest memory: the app needs more than the guest's 64 MiB; \
                     run it with a larger --memory"
                ),
            "expected SIGBUS (135) and a message naming 64 MiB and --memory\n{}",
            describe_output(&output)
        );
    });
}

/// The tree of [`packaged_times_and_link_counts_are_the_hosts`]: path (directories end
/// in `/`) and modification time (seconds, nanoseconds).
const TIMES_FIXTURE: [(&str, i64, u32); 6] = [
    ("a/", 1_600_000_000, 5),
    ("a/b/", 1_500_000_000, 999_999_999),
    ("a/b/one.txt", 1_400_000_000, 0),
    ("a/c/", 1_300_000_000, 123_456_789),
    ("a/two.txt", 1_200_000_000, 42),
    ("three.txt", 1_100_000_000, 7),
];

/// Packaged files and directories keep their modification times (nanoseconds too), and
/// a directory's link count is 2 plus its subdirectories (not plus its entries): `walk
/// -l` prints the same under nacre as natively over the host directory, and what the
/// fixture was made with.
#[test]
fn packaged_times_and_link_counts_are_the_hosts() {
    require_kvm();
    let root = scratch_dir(tmp(), "conformance-times-fixture");
    for (rel, _, _) in TIMES_FIXTURE {
        let path = root.join(rel);
        if rel.ends_with('/') {
            fs::create_dir_all(&path).expect("fixture directory");
        } else {
            fs::write(&path, rel).expect("fixture file");
        }
    }
    // Children first: setting a file's time leaves its directory's alone, but creating
    // it did not.
    for (rel, sec, nsec) in TIMES_FIXTURE.iter().rev() {
        let when = std::time::UNIX_EPOCH + std::time::Duration::new(*sec as u64, *nsec);
        fs::File::open(root.join(rel))
            .and_then(|f| f.set_modified(when))
            .expect("set the fixture's time");
    }
    let root_time = (1_000_000_000u64, 1u32);
    fs::File::open(&root)
        .and_then(|f| {
            f.set_modified(
                std::time::UNIX_EPOCH + std::time::Duration::new(root_time.0, root_time.1),
            )
        })
        .expect("set the fixture's time");
    // The expected lines, and "." itself: one subdirectory (a), so 3 links.
    let mut expected: Vec<String> = TIMES_FIXTURE
        .iter()
        .map(|(rel, sec, nsec)| {
            let name = rel.trim_end_matches('/');
            if rel.ends_with('/') {
                let subdirs = TIMES_FIXTURE
                    .iter()
                    .filter(|(other, _, _)| {
                        other.ends_with('/')
                            && other.trim_end_matches('/').rsplit_once('/').map(|p| p.0)
                                == Some(name)
                    })
                    .count();
                format!("d 0 {} {sec}.{nsec:09} {name}", 2 + subdirs)
            } else {
                format!("f {} 1 {sec}.{nsec:09} {name}", name.len())
            }
        })
        .collect();
    expected.push(format!("d 0 3 {}.{:09} .", root_time.0, root_time.1));
    expected.sort();
    let expected = expected.join("\n") + "\n";

    let walk = app("walk.c");
    let native = run_native(&walk, &["-l", &root.display().to_string()], &[], b"");
    assert_eq!(
        String::from_utf8_lossy(&native.stdout),
        expected,
        "natively\n{}",
        describe_output(&native)
    );
    let image = image(
        &walk,
        "walk-times",
        &PackageOptions::new()
            .file(&root, GUEST_DATA)
            .args(&["-l", GUEST_DATA]),
    );
    on_each_platform(|platform| {
        let output = run_on(&image, platform, &[]);
        assert!(
            output.status.code() == Some(0) && output.stdout == expected.as_bytes(),
            "expected exit 0 and\n{expected}\n{}",
            describe_output(&output)
        );
    });
}

/// User and group lookups find the app's user and `nobody` in the image's default
/// `/etc/passwd` and `/etc/group` (glibc's and musl's), and a packaged `/etc/passwd`
/// replaces the default one.
#[test]
fn user_lookups_answer_from_the_default_databases() {
    require_kvm();
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch_dir(tmp(), "conformance-users"));
    let own = dir.join("passwd");
    fs::write(&own, "app:x:0:0::/:/bin/false\n").expect("write a passwd file");
    for toolchain in [Toolchain::Glibc, Toolchain::Musl] {
        let users = built_app(dir, "users.c", toolchain);
        let default = image(
            &users,
            &format!("users-{toolchain:?}"),
            &PackageOptions::new(),
        );
        let replaced = image(
            &users,
            &format!("users-own-{toolchain:?}"),
            &PackageOptions::new().file(&own, "/etc/passwd"),
        );
        on_each_platform(|platform| {
            for (image, expected) in [
                (&default, "root root\nnobody 65534\n"),
                (&replaced, "app root\nnobody -1\n"),
            ] {
                let output = run_on(image, platform, &[]);
                assert!(
                    output.status.code() == Some(0) && output.stdout == expected.as_bytes(),
                    "{toolchain:?}: expected {expected:?}\n{}",
                    describe_output(&output)
                );
            }
        });
    }
}

// ---------------------------------------------------------------------------
// POSIX

#[test]
fn posix_checks_pass() {
    require_kvm();
    let image = posix_image();
    on_each_platform(|platform| {
        let output = run_with_stdin(&image, &["--platform", platform], POSIX_STDIN);
        assert_writev_line(&output, "posix");
        assert_checks(&output, &POSIX_CHECKS, &[], "posix checks");
    });
}

/// `nacre run --stats` names the syscalls the app made that nacre does not
/// implement: the posix app's `socketpair`.
#[test]
fn unsupported_syscalls_are_listed_by_stats() {
    require_kvm();
    let image = posix_image();
    on_each_platform(|platform| {
        let output = run_with_stdin(&image, &["--platform", platform, "--stats"], POSIX_STDIN);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.lines().any(|line| line == "ok socketpair_enosys"),
            "posix: socketpair() should have failed with ENOSYS\n{}",
            describe_output(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("syscalls.unsupported.socketpair"),
            "`nacre run --stats` should list syscalls.unsupported.socketpair on stderr\n{}",
            describe_output(&output)
        );
    });
}

// ---------------------------------------------------------------------------
// The same apps natively

#[test]
fn native_memory_checks_pass() {
    let mapped = memory_fixture().join(MAPPED_FILE);
    let mapped = mapped.to_str().expect("UTF-8 fixture path");
    let output = run_native(&app("memory.c"), &["checks", mapped], &[], b"");
    assert_checks(&output, &MEMORY_CHECKS, &[], "native memory checks");

    let arg = LAZY_TOUCHED_MIB.to_string();
    let output = run_native(&app("memory.c"), &["lazy", &arg], &[], b"");
    let expected = format!("touched {LAZY_TOUCHED_MIB} MiB of 16 GiB\n");
    assert!(
        output.status.code() == Some(0) && output.stdout == expected.as_bytes(),
        "native memory lazy: expected exit 0 and {expected:?}\n{}",
        describe_output(&output)
    );
}

#[test]
fn native_posix_checks_pass() {
    let dir = posix_fixture();
    let dir = dir.to_str().expect("UTF-8 fixture path");
    let output = run_native(
        &app("posix.c"),
        &[dir],
        &[("NACRE_NATIVE", "1")],
        POSIX_STDIN,
    );
    assert_writev_line(&output, "native posix");
    assert_checks(
        &output,
        &POSIX_CHECKS,
        &POSIX_NACRE_ONLY,
        "native posix checks",
    );
}
