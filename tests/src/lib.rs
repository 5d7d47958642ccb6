//! End-to-end harness for nacre.
//!
//! Whole-system tests build small static test apps from `tests/apps/`, package
//! them with the real `nacre` binary and boot them in KVM, then check what a
//! user would see: the app's stdout, the exit code and nacre's statistics.
//!
//! A test that needs `/dev/kvm` calls [`require_kvm`] first: on this project's
//! machines and in CI it fails (never skips) when KVM is unusable.
//!
//! Panicking is how this harness reports a failed step: every panic message
//! says what was being done and includes the command's output.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Exit code of `nacre` when the host stopped the guest for a memory
/// violation.
pub const EXIT_MEMORY_VIOLATION: i32 = 120;
/// Exit code of `nacre` when the guest firmware asked to be terminated.
pub const EXIT_GUEST_TERMINATED: i32 = 121;
/// Exit code of `nacre` for its own errors (bad input, bad image, no KVM).
pub const EXIT_NACRE_ERROR: i32 = 125;

/// How long one `nacre` invocation may take before the harness kills it,
/// unless `NACRE_TEST_TIMEOUT_SECS` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Root of the cargo workspace (the parent of this package).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// Folder holding the test apps' sources.
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apps")
}

/// Path of one test app's source, e.g. `app_source("hello.c")`.
pub fn app_source(name: &str) -> PathBuf {
    apps_dir().join(name)
}

/// The cargo target directory: `CARGO_TARGET_DIR` when set (relative paths
/// are taken from the workspace root, as cargo does), else
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Path of the `nacre` binary, built once per test process.
///
/// When `NACRE_BIN` is set, that binary is used as is. Otherwise this runs
/// `cargo build --release -p nacre-host --bin nacre` in the workspace with the
/// cargo that builds these tests, so it shares their target directory and
/// configuration, and takes the executable's path from cargo's own report of
/// the artifact (falling back to `<target dir>/release/nacre`).
pub fn nacre_bin() -> PathBuf {
    static NACRE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match NACRE.get_or_init(locate_or_build_nacre) {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn locate_or_build_nacre() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("NACRE_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("NACRE_BIN={} is not a file", bin.display()))
        };
    }

    let cargo = env!("CARGO");
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "-p",
            "nacre-host",
            "--bin",
            "nacre",
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start `{cargo} build` for the nacre binary: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build --release -p nacre-host --bin nacre` failed ({}); \
             its diagnostics are on stderr above",
            output.status
        ));
    }

    let reported = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "nacre")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from));
    let bin = reported.unwrap_or_else(|| target_dir().join("release").join("nacre"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built nacre but {} does not exist; set NACRE_BIN to the binary",
            bin.display()
        ))
    }
}

/// Fails the calling test unless `/dev/kvm` can be opened read-write.
///
/// Whole-system tests must fail, not skip, where they cannot run: this
/// project's machines and CI have KVM, so its absence is a broken set-up.
pub fn require_kvm() {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        panic!(
            "this test boots a VM and needs read-write access to /dev/kvm, which failed: {e}.\n\
             Enable KVM (load kvm_intel or kvm_amd) and give this user access to /dev/kvm \
             (e.g. add it to the `kvm` group).{}",
            if ci { " Running under CI=true." } else { "" }
        );
    }
}

/// A fresh, empty scratch directory `base/name` (removed first if present).
///
/// Tests pass `env!("CARGO_TARGET_TMPDIR")` as `base`.
pub fn scratch_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot clear scratch dir {}: {e}", dir.display()));
    }
    fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create scratch dir {}: {e}", dir.display()));
    dir
}

/// How a test app is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Toolchain {
    /// `gcc -static -O2` (glibc).
    Glibc,
    /// `gcc -static -no-pie -O2` (glibc, linked at a fixed address).
    GlibcNoPie,
    /// `musl-gcc -static -O2`.
    Musl,
    /// `diet gcc -O2` (dietlibc, always static).
    Diet,
    /// `rustc -O -C target-feature=+crt-static --edition 2021` (static-pie).
    RustStd,
    /// `CGO_ENABLED=0 go build` (static, linked at a fixed address).
    Go,
}

/// The app built from `tests/apps/<source>` with `toolchain` into
/// `dir/<toolchain>/`, built once per test process. The executable is named after
/// the source's stem: that name is argv\[0\] and `/app/<name>` in the guest.
pub fn built_app(dir: &Path, source: &str, toolchain: Toolchain) -> PathBuf {
    type Key = (PathBuf, String, Toolchain);
    static BUILT: Mutex<BTreeMap<Key, PathBuf>> = Mutex::new(BTreeMap::new());
    // Builds run under the lock: no app is built twice, and the two cores are
    // not shared between compilers.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let key = (dir.to_path_buf(), source.to_string(), toolchain);
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let stem = Path::new(source)
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("app sources have a UTF-8 stem");
    let out_dir = dir.join(format!("{toolchain:?}").to_lowercase());
    fs::create_dir_all(&out_dir).expect("create app build directory");
    let out = out_dir.join(stem);
    let src = app_source(source);
    match toolchain {
        Toolchain::Glibc => build_c_app_with(&src, &out, &["-static", "-O2"]),
        Toolchain::GlibcNoPie => build_c_app_with(&src, &out, &["-static", "-no-pie", "-O2"]),
        Toolchain::Musl => build_c_app_musl(&src, &out),
        Toolchain::Diet => build_c_app_diet(&src, &out),
        Toolchain::RustStd => build_rust_app(&src, &out),
        Toolchain::Go => build_go_app(&src, &out),
    }
    built.insert(key, out.clone());
    out
}

/// Builds a static C test app: `gcc -static -O2 src -o out`.
pub fn build_c_app(src: &Path, out: &Path) {
    build_c_app_with(src, out, &["-static", "-O2"]);
}

/// Builds a C app with the given compiler flags, e.g. without `-static` to get
/// a dynamically linked ELF that `nacre package` must reject.
pub fn build_c_app_with(src: &Path, out: &Path, flags: &[&str]) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_string());
    let mut cmd = Command::new(&cc);
    cmd.args(flags).arg(src).arg("-o").arg(out);
    let output = run_build_tool(&mut cmd, &cc);
    check_built(&output, &format!("{cc} {}", src.display()), out);
}

/// Builds a static C test app against musl instead of glibc:
/// `musl-gcc -static -O2 src -o out` (`MUSL_CC` names another compiler
/// wrapper; Debian ships `musl-gcc` in `musl-tools`).
pub fn build_c_app_musl(src: &Path, out: &Path) {
    let cc = std::env::var("MUSL_CC").unwrap_or_else(|_| "musl-gcc".to_string());
    let mut cmd = Command::new(&cc);
    cmd.args(["-static", "-O2"]).arg(src).arg("-o").arg(out);
    let output = run_build_tool(&mut cmd, &cc);
    check_built(&output, &format!("{cc} {}", src.display()), out);
}

/// Builds a static C test app against dietlibc: `diet gcc -O2 src -o out`
/// (dietlibc links statically; `DIET` names another wrapper; Debian ships
/// `diet` in `dietlibc-dev`).
pub fn build_c_app_diet(src: &Path, out: &Path) {
    let diet = std::env::var("DIET").unwrap_or_else(|_| "diet".to_string());
    let mut cmd = Command::new(&diet);
    cmd.args(["gcc", "-O2"]).arg(src).arg("-o").arg(out);
    let output = run_build_tool(&mut cmd, &diet);
    check_built(&output, &format!("{diet} gcc {}", src.display()), out);
}

/// Builds a static Rust `std` test app:
/// `rustc -O -C target-feature=+crt-static --edition 2021 src -o out`.
pub fn build_rust_app(src: &Path, out: &Path) {
    let rustc = rustc_path();
    let mut cmd = Command::new(&rustc);
    cmd.args([
        "-O",
        "-C",
        "target-feature=+crt-static",
        "--edition",
        "2021",
    ])
    .arg(src)
    .arg("-o")
    .arg(out)
    // Run from the workspace so a rustup proxy picks its pinned toolchain.
    .current_dir(workspace_root());
    let label = rustc.display().to_string();
    let output = run_build_tool(&mut cmd, &label);
    check_built(&output, &format!("{label} {}", src.display()), out);
}

/// Builds a static Go test app from one source file:
/// `CGO_ENABLED=0 go build -o out src` (`GO` names another Go command; Debian ships
/// `go` in `golang-go`). Its build cache lives in the target directory, so the
/// tests need no home directory.
pub fn build_go_app(src: &Path, out: &Path) {
    let go = std::env::var("GO").unwrap_or_else(|_| "go".to_string());
    let cache = target_dir().join("go-build-cache");
    let mut cmd = Command::new(&go);
    cmd.args(["build", "-trimpath", "-o"])
        .arg(out)
        .arg(src)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", &cache)
        .env("GOFLAGS", "")
        .env("GO111MODULE", "off")
        .current_dir(apps_dir());
    let output = run_build_tool(&mut cmd, &go);
    check_built(&output, &format!("{go} build {}", src.display()), out);
}

/// `RUSTC` when set, else the `rustc` next to the cargo building these tests,
/// else `rustc` from `PATH`.
fn rustc_path() -> PathBuf {
    if let Some(rustc) = std::env::var_os("RUSTC").filter(|r| !r.is_empty()) {
        return PathBuf::from(rustc);
    }
    let beside_cargo = Path::new(env!("CARGO")).with_file_name("rustc");
    if beside_cargo.is_file() {
        beside_cargo
    } else {
        PathBuf::from("rustc")
    }
}

fn run_build_tool(cmd: &mut Command, name: &str) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{name}` (is it installed?): {e}"))
}

fn check_built(output: &Output, what: &str, out: &Path) {
    assert!(
        output.status.success(),
        "building `{what}` failed ({})\n{}",
        output.status,
        describe_output(output)
    );
    assert!(
        out.is_file(),
        "building `{what}` reported success but {} is missing",
        out.display()
    );
}

/// `e_type` of an ELF executable linked at a fixed address (`-no-pie`).
pub const ET_EXEC: u16 = 2;
/// `e_type` of a position-independent ELF (PIE and static-pie executables).
pub const ET_DYN: u16 = 3;
/// `p_type` of the program header naming a dynamic loader.
const PT_INTERP: u32 = 3;

/// The `e_type` of the 64-bit little-endian ELF at `path`: [`ET_EXEC`] or
/// [`ET_DYN`] for executables. Panics if the file is not such an ELF.
pub fn elf_type(path: &Path) -> u16 {
    let bytes = read_elf64(path);
    le_u16(&bytes, 16)
}

/// Whether the ELF at `path` asks for a dynamic loader (has a `PT_INTERP`
/// program header). A static-pie executable is [`ET_DYN`] without one.
pub fn elf_has_interp(path: &Path) -> bool {
    let bytes = read_elf64(path);
    let phoff = usize::try_from(le_u64(&bytes, 32)).expect("e_phoff fits in usize");
    let phentsize = usize::from(le_u16(&bytes, 54));
    let phnum = usize::from(le_u16(&bytes, 56));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        assert!(
            at + 4 <= bytes.len(),
            "{}: program header {i} lies past the end of the file",
            path.display()
        );
        le_u32(&bytes, at) == PT_INTERP
    })
}

/// The bytes of a 64-bit little-endian ELF file, with its header checked.
fn read_elf64(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    // ELF64 header: magic, EI_CLASS = ELFCLASS64 (2), EI_DATA = ELFDATA2LSB (1),
    // 64 bytes in all.
    assert!(
        bytes.len() >= 64 && bytes.starts_with(b"\x7fELF") && bytes[4] == 2 && bytes[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    bytes
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Everything `nacre package` puts into an image besides the app itself.
#[derive(Debug, Clone, Default)]
pub struct PackageOptions {
    /// The app's arguments after argv\[0\], one `--arg` each.
    pub args: Vec<String>,
    /// Environment variables, one `--env KEY=VALUE` each.
    pub env: Vec<(String, String)>,
    /// Host files or directories and where the guest sees them, one
    /// `--file HOST_PATH:GUEST_PATH` each.
    pub files: Vec<(PathBuf, String)>,
    /// Further `nacre package` flags, passed as they are (e.g.
    /// `--page-validation 4k`, or `--debug` for a debuggable guest policy).
    pub flags: Vec<String>,
}

impl PackageOptions {
    /// No arguments, no environment, no files, no flags.
    pub fn new() -> Self {
        Self::default()
    }

    /// The given arguments and environment variables, no files, no flags.
    pub fn with_args_and_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        env.iter()
            .fold(Self::new().args(args), |options, (key, value)| {
                options.env(key, value)
            })
    }

    /// Adds arguments for the app.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_string()));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Packages the host file or directory `host` as `guest` in the image.
    pub fn file(mut self, host: &Path, guest: &str) -> Self {
        self.files.push((host.to_path_buf(), guest.to_string()));
        self
    }

    /// Adds `nacre package` flags.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| (*f).to_string()));
        self
    }

    /// The `nacre package APP -o IMAGE ...` command line.
    fn command_line(&self, app: &Path, image: &Path) -> Vec<String> {
        let mut cli: Vec<String> = vec![
            "package".into(),
            app.display().to_string(),
            "-o".into(),
            image.display().to_string(),
        ];
        for arg in &self.args {
            cli.push("--arg".into());
            cli.push(arg.clone());
        }
        for (key, value) in &self.env {
            cli.push("--env".into());
            cli.push(format!("{key}={value}"));
        }
        for (host, guest) in &self.files {
            cli.push("--file".into());
            cli.push(format!("{}:{guest}", host.display()));
        }
        cli.extend(self.flags.iter().cloned());
        cli
    }
}

/// Runs `nacre package APP -o IMAGE [--arg A]... [--env K=V]...` and returns
/// its output without judging it (for tests of rejected input).
pub fn package_output(app: &Path, image: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let options = PackageOptions::with_args_and_env(args, env);
    package_with_output(app, image, &options)
}

/// Runs `nacre package APP -o IMAGE` with `options` and returns its output
/// without judging it.
pub fn package_with_output(app: &Path, image: &Path, options: &PackageOptions) -> Output {
    nacre(&options.command_line(app, image), &[])
}

/// Packages `app` into `<app>.igvm` next to it and returns the image's path;
/// panics with nacre's output if packaging fails.
pub fn package(app: &Path, args: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let options = PackageOptions::with_args_and_env(args, env);
    package_with(app, &app.with_extension("igvm"), &options)
}

/// Packages `app` with `options` into `image` and returns the image's path;
/// panics with nacre's output if packaging fails.
pub fn package_with(app: &Path, image: &Path, options: &PackageOptions) -> PathBuf {
    let output = package_with_output(app, image, options);
    assert!(
        output.status.success(),
        "`nacre {}` failed ({})\n{}",
        options.command_line(app, image).join(" "),
        output.status,
        describe_output(&output)
    );
    assert!(
        image.is_file(),
        "`nacre package` succeeded but wrote no image at {}",
        image.display()
    );
    image.to_path_buf()
}

/// Runs `nacre run IMAGE EXTRA_ARGS...` and returns its output.
pub fn run(image: &Path, extra_args: &[&str]) -> Output {
    run_with_env(image, extra_args, &[])
}

/// Runs `nacre run IMAGE EXTRA_ARGS...` with extra environment variables
/// (e.g. the `NACRE_TEST_*` hooks of hostile-host tests).
pub fn run_with_env(image: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cli: Vec<String> = vec!["run".into(), image.display().to_string()];
    cli.extend(extra_args.iter().map(|a| (*a).to_string()));
    nacre(&cli, env)
}

/// Runs `nacre run IMAGE EXTRA_ARGS...` with `stdin` as the app's standard
/// input (closed once it is all written) and returns its output.
pub fn run_with_stdin(image: &Path, extra_args: &[&str], stdin: &[u8]) -> Output {
    let mut cli: Vec<String> = vec!["run".into(), image.display().to_string()];
    cli.extend(extra_args.iter().map(|a| (*a).to_string()));
    nacre_with_stdin(&cli, &[], Some(stdin))
}

/// Runs `nacre` with `args` and `env`, stdin closed, killing it if it takes
/// longer than `NACRE_TEST_TIMEOUT_SECS` (default 120 s).
pub fn nacre(args: &[String], env: &[(&str, &str)]) -> Output {
    nacre_with_stdin(args, env, None)
}

/// The emulated security processor's keys every test's `nacre` uses
/// (`NACRE_EMULATED_KEYS`): made by the first run that needs them, in the target
/// directory, so that tests never write to the user's own key directory.
pub fn emulated_keys_dir() -> PathBuf {
    target_dir().join("nacre-test-emulated-keys")
}

/// Runs `nacre` like [`nacre`], feeding it `stdin` when given (then closing
/// it), else with stdin closed from the start. `NACRE_EMULATED_KEYS` is
/// [`emulated_keys_dir`] unless `env` says otherwise.
pub fn nacre_with_stdin(args: &[String], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let bin = nacre_bin();
    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .env("NACRE_EMULATED_KEYS", emulated_keys_dir())
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let label = format!("nacre {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", bin.display()));
    let feeder = child.stdin.take().zip(stdin).map(|(mut pipe, bytes)| {
        let bytes = bytes.to_vec();
        thread::spawn(move || {
            // An app that exits before reading everything closes the pipe;
            // the test then sees the missing bytes in its output.
            let _ = pipe.write_all(&bytes);
        })
    });
    let output = wait_with_timeout(child, timeout(), &label);
    if let Some(feeder) = feeder {
        // The pipe is closed once nacre has exited, so the feeder has ended.
        let _ = feeder.join();
    }
    output
}

fn timeout() -> Duration {
    std::env::var("NACRE_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

/// Collects a child's stdout and stderr while waiting for it; kills it and
/// panics if it outlives `limit`.
fn wait_with_timeout(mut child: Child, limit: Duration, label: &str) -> Output {
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let start = Instant::now();
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > limit => {
                // Best effort: the child may exit between try_wait and kill.
                let _ = child.kill();
                let _ = child.wait();
                let out = join(stdout);
                let err = join(stderr);
                panic!(
                    "`{label}` did not finish within {} s and was killed\n\
                     --- stdout ---\n{}\n--- stderr ---\n{}",
                    limit.as_secs(),
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("cannot wait for `{label}`: {e}"),
        }
    };
    Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    }
}

fn drain<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error leaves what was read so far, which is all a test needs.
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join(handle: Option<thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// The exit status, stdout and stderr of a command, for assertion messages.
pub fn describe_output(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The statistics `nacre run --stats-json FILE` wrote: one flat JSON object
/// whose keys are dotted names such as `psc.calls`.
#[derive(Debug, Clone)]
pub struct Stats {
    map: serde_json::Map<String, serde_json::Value>,
}

impl Stats {
    /// Reads and parses a stats file; panics if it is missing or not a JSON
    /// object.
    pub fn read(path: &Path) -> Self {
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read stats file {}: {e}", path.display()));
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(map)) => Self { map },
            Ok(other) => panic!(
                "stats file {} holds {other}, not a JSON object",
                path.display()
            ),
            Err(e) => panic!("stats file {} is not JSON: {e}\n{text}", path.display()),
        }
    }

    /// The raw value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.map.get(key)
    }

    /// `key` as a non-negative integer; panics if missing or of another type.
    pub fn u64(&self, key: &str) -> u64 {
        match self.get(key) {
            Some(value) => value.as_u64().unwrap_or_else(|| {
                panic!("stats key `{key}` is {value}, not a non-negative integer")
            }),
            None => panic!("stats have no key `{key}`; keys: {:?}", self.keys()),
        }
    }

    /// `key` as a number; panics if missing or not a number.
    pub fn f64(&self, key: &str) -> f64 {
        match self.get(key) {
            Some(value) => value
                .as_f64()
                .unwrap_or_else(|| panic!("stats key `{key}` is {value}, not a number")),
            None => panic!("stats have no key `{key}`; keys: {:?}", self.keys()),
        }
    }

    /// `key` as a JSON object of counters (name -> count); panics if missing,
    /// not an object, or holding anything but non-negative integers.
    pub fn counters(&self, key: &str) -> Vec<(String, u64)> {
        let Some(value) = self.get(key) else {
            panic!("stats have no key `{key}`; keys: {:?}", self.keys());
        };
        let Some(object) = value.as_object() else {
            panic!("stats key `{key}` is {value}, not an object");
        };
        object
            .iter()
            .map(|(name, count)| {
                let count = count.as_u64().unwrap_or_else(|| {
                    panic!("stats `{key}.{name}` is {count}, not a non-negative integer")
                });
                (name.clone(), count)
            })
            .collect()
    }

    /// All top-level keys.
    pub fn keys(&self) -> Vec<&str> {
        self.map.keys().map(String::as_str).collect()
    }
}

/// The emulated platforms every whole-system app test runs on.
pub const EMULATED_PLATFORMS: [&str; 2] = ["emulated-snp", "emulated-tdx"];

/// `nacre run IMAGE --platform PLATFORM EXTRA...`.
pub fn run_on(image: &Path, platform: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--platform", platform];
    args.extend_from_slice(extra);
    run(image, &args)
}

/// Runs `check` once per emulated platform, all of them even when one fails, and
/// fails with every platform's failure.
pub fn on_each_platform(mut check: impl FnMut(&str)) {
    let failures: Vec<String> = EMULATED_PLATFORMS
        .iter()
        .filter_map(|platform| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(platform)))
                .err()
                .map(|payload| format!("=== on {platform} ===\n{}", panic_message(&*payload)))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "failed on {} of {} platforms:\n{}",
        failures.len(),
        EMULATED_PLATFORMS.len(),
        failures.join("\n")
    );
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "(no message)".to_string())
}

/// The vCPU counts multi-threaded apps are run with (`nacre run --cpus`).
pub const CPU_COUNTS: [&str; 3] = ["1", "2", "4"];

/// Runs `check` once per emulated platform and vCPU count of [`CPU_COUNTS`], all of
/// them even when one fails, and fails with every failure.
pub fn on_each_platform_and_cpus(mut check: impl FnMut(&str, &str)) {
    on_each_platform(|platform| {
        let failures: Vec<String> = CPU_COUNTS
            .iter()
            .filter_map(|cpus| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(platform, cpus)))
                    .err()
                    .map(|payload| {
                        format!("--- with --cpus {cpus} ---\n{}", panic_message(&*payload))
                    })
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}

/// What one check of a check-list app printed: such an app prints one line per
/// check, `ok NAME`, `skip NAME` or `FAIL NAME: DETAIL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Skip,
    Fail(String),
}

/// The check lines of an app's stdout by name (other lines are ignored); a
/// name printed twice is an error.
pub fn check_results(stdout: &str) -> Result<BTreeMap<String, Outcome>, String> {
    let mut results = BTreeMap::new();
    for line in stdout.lines() {
        let (name, outcome) = if let Some(name) = line.strip_prefix("ok ") {
            (name.to_string(), Outcome::Ok)
        } else if let Some(name) = line.strip_prefix("skip ") {
            (name.to_string(), Outcome::Skip)
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            let (name, detail) = rest.split_once(": ").unwrap_or((rest, ""));
            (name.to_string(), Outcome::Fail(detail.to_string()))
        } else {
            continue;
        };
        if results.insert(name.clone(), outcome).is_some() {
            return Err(format!("check {name:?} is reported twice"));
        }
    }
    Ok(results)
}

/// Asserts that the run printed exactly the checks `expected`, each `ok`
/// except those in `skipped` (which must say `skip`), and exited 0.
pub fn assert_checks(output: &Output, expected: &[&str], skipped: &[&str], what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results = check_results(&stdout)
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", describe_output(output)));
    let mut problems = Vec::new();
    for name in expected {
        let want = if skipped.contains(name) {
            Outcome::Skip
        } else {
            Outcome::Ok
        };
        match results.get(*name) {
            None => problems.push(format!("{name}: not reported")),
            Some(Outcome::Fail(detail)) => problems.push(format!("{name}: FAIL: {detail}")),
            Some(got) if *got != want => {
                problems.push(format!("{name}: {got:?}, expected {want:?}"));
            }
            Some(_) => {}
        }
    }
    for name in results.keys() {
        if !expected.contains(&name.as_str()) {
            problems.push(format!("{name}: reported but not listed in this test"));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: {} of {} checks went wrong:\n  {}\n{}",
        problems.len(),
        expected.len(),
        problems.join("\n  "),
        describe_output(output)
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what}: every check passed but the exit code is not 0\n{}",
        describe_output(output)
    );
}

/// The image options of `tests/apps/sockets.c` on `port` with `args`: the network
/// policy that lets it listen on `port` (TCP and UDP) and `port + 1`, and connect to
/// them on the IPv4 and IPv6 loopback.
pub fn sockets_options(port: u16, args: &[&str]) -> PackageOptions {
    let (p, q) = (port.to_string(), (port + 1).to_string());
    let rules = [
        ("--listen", p.clone()),
        ("--listen", format!("{p}/udp")),
        ("--listen", q.clone()),
        ("--connect", format!("127.0.0.1:{p}")),
        ("--connect", format!("127.0.0.1:{p}/udp")),
        ("--connect", format!("127.0.0.1:{q}")),
        ("--connect", format!("[::1]:{p}")),
    ];
    let flags: Vec<String> = rules
        .into_iter()
        .flat_map(|(flag, rule)| [flag.to_owned(), rule])
        .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    PackageOptions::new().args(args).flags(&flags)
}

/// Build the cargo project `tests/apps/NAME` static (`+crt-static`) into the target
/// directory's `apps-TARGET`, outside the workspace; the binary's path, or a panic with
/// cargo's output.
pub fn build_cargo_app(name: &str, target: &str) -> PathBuf {
    let target = target_dir().join(target);
    let output = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(app_source(&format!("{name}/Cargo.toml")))
        .arg("--target-dir")
        .arg(&target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("start cargo for {name}: {e}"));
    assert!(
        output.status.success(),
        "building {name} failed\n{}",
        describe_output(&output)
    );
    target.join("release").join(name)
}
