//! App benchmark: what running under nacre costs ordinary programs, against
//! the same programs run natively in the same benchmark run.
//!
//! Five workloads, each timed natively and as `nacre run IMAGE --platform
//! emulated-snp|emulated-tdx`, interleaved round by round so that drift in
//! the machine's load affects them alike:
//!
//! - `write`: `bench_write` writes 256 MiB to stdout in 1 MiB `write(2)`
//!   calls, stdout on /dev/null; whole-process wall time.
//! - `touch`: `bench_touch` mallocs 1 GiB, writes one byte per 4 KiB page and
//!   reads them back (nacre runs with `--memory 2G`); whole-process wall time,
//!   and stdout must be the expected sum.
//! - `startup`: the C hello app; the time from spawning the process to the
//!   first byte arriving on its stdout pipe.
//! - `clock-vdso`: `bench_clock` calls clock_gettime(CLOCK_MONOTONIC) 5
//!   million times through the libc, which reads the clock in the vDSO, and
//!   reports the mean nanoseconds per call (timed inside the app, so boot and
//!   exit do not count).
//! - `clock-syscall`: the same as the raw syscall, 1000 times: what a clock
//!   read costs without the vDSO.
//! - `futex-pingpong`: `bench_threads` hands a token between two threads
//!   through futexes; nanoseconds per round trip (two waits, two wakes, two
//!   switches).
//! - `thread-create`: `bench_threads` creates and joins threads one after
//!   another; nanoseconds per thread.
//! - `cpu-2threads`: two threads compute side by side; nanoseconds of wall
//!   time per unit of work (nacre runs them on one vCPU, natively they have the
//!   machine's cores); `cpu-2threads-2cpus` the same with `nacre run --cpus 2`,
//!   and the ratio of the two is the speed-up a second vCPU gives.
//!
//! It prints the median and minimum of each command (milliseconds, or
//! nanoseconds per call for the clock workloads) and the ratios of medians
//! nacre/native. There are no targets: slowness is reported, never fatal. A
//! run that fails (wrong exit code or output, or killed after the timeout) is
//! reported with its error in place of its numbers and that command is not
//! run again; everything else is still measured and printed, and the
//! benchmark then exits with status 1.
//!
//! Run with `cargo bench -p nacre-tests --bench apps`.
//! Environment: `NACRE_BENCH_RUNS` (default 5) sets the number of rounds;
//! `NACRE_BENCH_JSON=PATH` also writes the numbers as JSON to PATH;
//! `NACRE_BENCH_TIMEOUT_SECS` (default 300) bounds one run.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nacre_tests::{
    app_source, build_c_app, nacre_bin, package, package_with, require_kvm, scratch_dir,
    PackageOptions,
};

const DEFAULT_RUNS: usize = 5;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Exit code and output of the C hello app.
const HELLO_EXIT: i32 = 42;
const HELLO_STDOUT: &[u8] = b"hello from nacre\n";
/// Memory `bench_touch` allocates and the page size it touches.
const TOUCH_BYTES: u64 = 1 << 30;
const TOUCH_PAGE: u64 = 4096;
/// Guest RAM for the touch workload: the 1 GiB buffer plus room.
const TOUCH_GUEST_MEMORY: &str = "2G";
/// Calls `bench_clock` times: through the vDSO and as raw syscalls.
const CLOCK_VDSO_CALLS: &str = "5000000";
const CLOCK_SYSCALL_CALLS: &str = "1000";
/// Units of work of the thread workloads, natively and under nacre (whose ring 0
/// is slow where it is emulated, so fewer units keep a run short; the results are
/// per unit).
const PINGPONG_NATIVE: &str = "100000";
const PINGPONG_NACRE: &str = "2000";
const CREATE_NATIVE: &str = "5000";
const CREATE_NACRE: &str = "200";
const CPU_UNITS: &str = "200000000";
/// What `bench_clock` prints before its result.
const NS_PER_CALL: &str = "ns_per_call ";
/// The runners, in table order; `native` first, the denominator of ratios.
const NATIVE: &str = "native";
const PLATFORMS: [(&str, &str); 2] = [("snp", "emulated-snp"), ("tdx", "emulated-tdx")];

/// What is timed for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// From spawning to the process's exit; stdout goes to /dev/null.
    WholeProcess,
    /// From spawning to the process's exit; stdout must equal the expected.
    WholeProcessChecked,
    /// From spawning to the first byte on stdout; stdout must equal the expected.
    FirstByte,
    /// What the program measured itself: the number after [`NS_PER_CALL`] on its
    /// stdout, in nanoseconds per call.
    ReportedNsPerCall,
}

impl Measure {
    /// The unit of the samples, as a JSON key suffix.
    fn unit(self) -> &'static str {
        match self {
            Measure::ReportedNsPerCall => "ns_per_call",
            _ => "ms",
        }
    }
}

/// One command to time.
struct Subject {
    workload: &'static str,
    runner: &'static str,
    program: PathBuf,
    args: Vec<String>,
    measure: Measure,
    expected_exit: i32,
    expected_stdout: Vec<u8>,
    samples: Vec<f64>,
    /// Why the command stopped being run, after its first failure.
    error: Option<String>,
}

impl Subject {
    fn name(&self) -> String {
        format!("{}/{}", self.workload, self.runner)
    }

    fn command_line(&self) -> String {
        let mut words = vec![self.program.display().to_string()];
        words.extend(self.args.iter().cloned());
        words.join(" ")
    }

    /// Runs the command once, unless it failed before, recording the sample
    /// or the failure.
    fn sample(&mut self, limit: Duration, record: bool) {
        if self.error.is_some() {
            return;
        }
        match self.time_once(limit) {
            Ok(ms) if record => self.samples.push(ms),
            Ok(_) => {}
            Err(e) => {
                println!("{}: FAILED: {e}", self.name());
                self.error = Some(e);
            }
        }
    }

    /// Runs the command once and returns the measured value: milliseconds, or
    /// nanoseconds per call for [`Measure::ReportedNsPerCall`].
    fn time_once(&self, limit: Duration) -> Result<f64, String> {
        let stdout = if self.measure == Measure::WholeProcess {
            Stdio::null()
        } else {
            Stdio::piped()
        };
        let start = Instant::now();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", self.command_line()))?;
        let stdout = child.stdout.take().map(|pipe| {
            thread::spawn(move || {
                let mut pipe = pipe;
                read_noting_first_byte(&mut pipe)
            })
        });
        let stderr = child.stderr.take().map(|mut pipe| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                // A read error leaves what was read, enough for a message.
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        });
        let waited = wait_until(&mut child, start + limit);
        let end = Instant::now();
        let (out, first_byte) = stdout
            .and_then(|h| h.join().ok())
            .unwrap_or((Vec::new(), None));
        let err = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        let describe = |what: String| {
            let mut message = format!("`{}` {what}", self.command_line());
            if !err.is_empty() {
                message += &format!(
                    "\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&err[..err.len().min(4096)])
                );
            }
            message
        };

        let status = waited.map_err(describe)?;
        if status.code() != Some(self.expected_exit) {
            return Err(describe(format!(
                "exited with {status} instead of {}",
                self.expected_exit
            )));
        }
        if self.measure == Measure::ReportedNsPerCall {
            let text = String::from_utf8_lossy(&out);
            return text
                .lines()
                .find_map(|line| line.strip_prefix(NS_PER_CALL))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .ok_or_else(|| {
                    describe(format!("printed {text:?}, without a `{NS_PER_CALL}` line"))
                });
        }
        if self.measure != Measure::WholeProcess && out != self.expected_stdout {
            return Err(describe(format!(
                "printed {:?} instead of {:?}",
                String::from_utf8_lossy(&out[..out.len().min(200)]),
                String::from_utf8_lossy(&self.expected_stdout)
            )));
        }
        let stop = match self.measure {
            Measure::WholeProcess | Measure::WholeProcessChecked | Measure::ReportedNsPerCall => {
                end
            }
            Measure::FirstByte => first_byte.ok_or_else(|| describe("printed nothing".into()))?,
        };
        Ok(stop.duration_since(start).as_secs_f64() * 1000.0)
    }

    fn median(&self) -> f64 {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return f64::NAN;
        }
        if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        }
    }

    fn min(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .min_by(f64::total_cmp)
            .unwrap_or(f64::NAN)
    }
}

/// Reads a pipe to its end and returns the bytes and when the first arrived.
fn read_noting_first_byte(pipe: &mut impl Read) -> (Vec<u8>, Option<Instant>) {
    let mut bytes = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                first.get_or_insert_with(Instant::now);
                bytes.extend_from_slice(&buf[..n]);
            }
        }
    }
    (bytes, first)
}

/// Waits for `child` to exit, killing it at `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<std::process::ExitStatus, String> {
    // A waiting thread blocks until the child ends without reaping it (WNOWAIT), so
    // the benchmark wakes once then (polling would wake it thousands of times a
    // second and take CPU time from what it measures); this thread sleeps until then
    // or the deadline, and alone reaps or kills the child, whose pid therefore stays
    // its own meanwhile.
    let pid = child.id();
    let (done, ended) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        // SAFETY: waitid writes only into `info`, which lives for the call.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; P_PID with the child's pid, WEXITED | WNOWAIT leaves it
        // to be reaped by the caller of `wait_until`.
        unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        let _ = done.send(());
    });
    let timeout = deadline.saturating_duration_since(Instant::now());
    let result = if ended.recv_timeout(timeout).is_ok() {
        child
            .wait()
            .map_err(|e| format!("cannot be waited for: {e}"))
    } else {
        // Best effort: the child may exit between the timeout and the kill.
        let _ = child.kill();
        let _ = child.wait();
        Err("did not finish in time and was killed".into())
    };
    let _ = waiter.join();
    result
}

/// A ratio of medians, `NaN` when either side has no samples.
struct Ratio {
    name: String,
    value: f64,
}

fn positive_env(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|text| match text.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{name}={text} is not a positive number"),
        })
}

fn runs() -> usize {
    positive_env("NACRE_BENCH_RUNS").map_or(DEFAULT_RUNS, |n| {
        usize::try_from(n).expect("NACRE_BENCH_RUNS fits in usize")
    })
}

fn timeout() -> Duration {
    positive_env("NACRE_BENCH_TIMEOUT_SECS").map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

/// Builds `tests/apps/<source>` with `gcc -static -O2` into `dir` and
/// packages it; returns the app and its image.
fn prepare(dir: &Path, source: &str) -> (PathBuf, PathBuf) {
    let app = build(dir, source);
    let image = package(&app, &[], &[]);
    (app, image)
}

/// Builds `tests/apps/<source>` with `gcc -static -O2` into `dir`.
fn build(dir: &Path, source: &str) -> PathBuf {
    let stem = Path::new(source)
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("app sources have a UTF-8 stem");
    let app = dir.join(stem);
    build_c_app(&app_source(source), &app);
    app
}

/// Packages `app` with the arguments `args` as `dir/<name>.igvm`.
fn package_args(dir: &Path, app: &Path, name: &str, args: &[&str]) -> PathBuf {
    package_with(
        app,
        &dir.join(format!("{name}.igvm")),
        &PackageOptions::new().args(args),
    )
}

/// The native command (`app ARGS...`) and one `nacre run` per platform (the
/// image holds the same arguments) for one workload.
#[allow(clippy::too_many_arguments)]
fn workload(
    name: &'static str,
    app: &Path,
    native_args: &[&str],
    image: &Path,
    extra: &[&str],
    measure: Measure,
    expected_exit: i32,
    expected_stdout: &[u8],
) -> Vec<Subject> {
    let subject = |runner, program: PathBuf, args: Vec<String>| Subject {
        workload: name,
        runner,
        program,
        args,
        measure,
        expected_exit,
        expected_stdout: expected_stdout.to_vec(),
        samples: Vec::new(),
        error: None,
    };
    let native_args = native_args.iter().map(|a| (*a).to_string()).collect();
    let mut subjects = vec![subject(NATIVE, app.to_path_buf(), native_args)];
    for (runner, platform) in PLATFORMS {
        let mut args = vec![
            "run".to_string(),
            image.display().to_string(),
            "--platform".into(),
            platform.into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_string()));
        subjects.push(subject(runner, nacre_bin(), args));
    }
    subjects
}

fn fmt_value(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else {
        format!("{value:.2}")
    }
}

fn write_json(path: &Path, runs: usize, subjects: &[Subject], ratios: &[Ratio]) {
    let mut timings = serde_json::Map::new();
    for subject in subjects {
        let unit = subject.measure.unit();
        timings.insert(
            subject.name(),
            serde_json::json!({
                format!("median_{unit}"): subject.median(),
                format!("min_{unit}"): subject.min(),
                format!("samples_{unit}"): subject.samples,
                "error": subject.error,
            }),
        );
    }
    let mut ratio_map = serde_json::Map::new();
    for ratio in ratios {
        // NaN (a side without samples) becomes null.
        ratio_map.insert(ratio.name.clone(), serde_json::json!(ratio.value));
    }
    let report = serde_json::json!({
        "runs": runs,
        "timings": timings,
        "ratios": ratio_map,
    });
    let text = serde_json::to_string_pretty(&report).expect("a JSON value always serialises");
    fs::write(path, text + "\n").unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    println!("wrote {}", path.display());
}

fn main() {
    require_kvm();
    let runs = runs();
    let limit = timeout();
    let dir = scratch_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "bench-apps");

    let (write_app, write_image) = prepare(&dir, "bench_write.c");
    let (touch_app, touch_image) = prepare(&dir, "bench_touch.c");
    let (hello_app, hello_image) = prepare(&dir, "hello.c");
    let clock_app = build(&dir, "bench_clock.c");
    let clock_vdso_args = ["vdso", CLOCK_VDSO_CALLS];
    let clock_syscall_args = ["syscall", CLOCK_SYSCALL_CALLS];
    let clock_vdso_image = package_args(&dir, &clock_app, "clock-vdso", &clock_vdso_args);
    let clock_syscall_image = package_args(&dir, &clock_app, "clock-syscall", &clock_syscall_args);
    let threads_app = build(&dir, "bench_threads.c");
    let thread_image = |name: &str, args: &[&str]| package_args(&dir, &threads_app, name, args);
    let pingpong_image = thread_image("futex-pingpong", &["pingpong", PINGPONG_NACRE]);
    let create_image = thread_image("thread-create", &["create", CREATE_NACRE]);
    let cpu_image = thread_image("cpu-2threads", &["cpu", CPU_UNITS]);
    let touch_sum: u64 = (0..TOUCH_BYTES / TOUCH_PAGE).map(|page| page % 251).sum();
    let touch_stdout = format!("sum {touch_sum}\n");

    let mut subjects: Vec<Subject> = [
        workload(
            "write",
            &write_app,
            &[],
            &write_image,
            &[],
            Measure::WholeProcess,
            0,
            b"",
        ),
        workload(
            "touch",
            &touch_app,
            &[],
            &touch_image,
            &["--memory", TOUCH_GUEST_MEMORY],
            Measure::WholeProcessChecked,
            0,
            touch_stdout.as_bytes(),
        ),
        workload(
            "startup",
            &hello_app,
            &[],
            &hello_image,
            &[],
            Measure::FirstByte,
            HELLO_EXIT,
            HELLO_STDOUT,
        ),
        workload(
            "clock-vdso",
            &clock_app,
            &clock_vdso_args,
            &clock_vdso_image,
            &[],
            Measure::ReportedNsPerCall,
            0,
            b"",
        ),
        workload(
            "clock-syscall",
            &clock_app,
            &clock_syscall_args,
            &clock_syscall_image,
            &[],
            Measure::ReportedNsPerCall,
            0,
            b"",
        ),
        workload(
            "futex-pingpong",
            &threads_app,
            &["pingpong", PINGPONG_NATIVE],
            &pingpong_image,
            &[],
            Measure::ReportedNsPerCall,
            0,
            b"",
        ),
        workload(
            "thread-create",
            &threads_app,
            &["create", CREATE_NATIVE],
            &create_image,
            &[],
            Measure::ReportedNsPerCall,
            0,
            b"",
        ),
        workload(
            "cpu-2threads",
            &threads_app,
            &["cpu", CPU_UNITS],
            &cpu_image,
            &[],
            Measure::ReportedNsPerCall,
            0,
            b"",
        ),
        workload(
            "cpu-2threads-2cpus",
            &threads_app,
            &["cpu", CPU_UNITS],
            &cpu_image,
            &["--cpus", "2"],
            Measure::ReportedNsPerCall,
            0,
            b"",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();

    println!(
        "app benchmark: {runs} rounds; write and touch: whole-process wall time, \
         startup: spawn to first stdout byte, clock and threads: nanoseconds per call \
         or unit of work as the app measured them"
    );
    // One untimed round warms the page cache and checks every command works.
    for subject in &mut subjects {
        subject.sample(limit, false);
    }
    for _ in 0..runs {
        for subject in &mut subjects {
            subject.sample(limit, true);
        }
    }

    println!();
    println!(
        "{:<22} {:>12} {:>12} {:>6}  unit",
        "", "median", "min", "runs"
    );
    for subject in &subjects {
        print!(
            "{:<22} {:>12} {:>12} {:>6}  {}",
            subject.name(),
            fmt_value(subject.median()),
            fmt_value(subject.min()),
            subject.samples.len(),
            subject.measure.unit()
        );
        match &subject.error {
            Some(_) => println!("  FAILED (see above)"),
            None => println!(),
        }
    }

    let median_of = |workload: &str, runner: &str| {
        subjects
            .iter()
            .find(|s| s.workload == workload && s.runner == runner)
            .map_or(f64::NAN, Subject::median)
    };
    let ratios: Vec<Ratio> = [
        "write",
        "touch",
        "startup",
        "clock-vdso",
        "clock-syscall",
        "futex-pingpong",
        "thread-create",
        "cpu-2threads",
        "cpu-2threads-2cpus",
    ]
    .into_iter()
    .flat_map(|workload| {
        PLATFORMS
            .into_iter()
            .map(move |(runner, _)| (workload, runner))
    })
    .map(|(workload, runner)| Ratio {
        name: format!("{workload} {runner}/{NATIVE}"),
        value: median_of(workload, runner) / median_of(workload, NATIVE),
    })
    // The speed-up two vCPUs give two threads of computation: time per unit of
    // work with `--cpus 1` over that with `--cpus 2` (target: at least 1.8).
    .chain(PLATFORMS.into_iter().map(|(runner, _)| Ratio {
        name: format!("cpu-2threads {runner} cpus1/cpus2"),
        value: median_of("cpu-2threads", runner) / median_of("cpu-2threads-2cpus", runner),
    }))
    .collect();
    println!();
    println!("{:<28} {:>10}", "ratio of medians", "value");
    for ratio in &ratios {
        if ratio.value.is_nan() {
            println!("{:<28} {:>10}", ratio.name, "n/a");
        } else {
            println!("{:<28} {:>9.2}x", ratio.name, ratio.value);
        }
    }

    if let Some(path) = std::env::var_os("NACRE_BENCH_JSON").filter(|p| !p.is_empty()) {
        write_json(Path::new(&path), runs, &subjects, &ratios);
    }

    let failed: Vec<String> = subjects
        .iter()
        .filter(|s| s.error.is_some())
        .map(Subject::name)
        .collect();
    if !failed.is_empty() {
        println!(
            "\n{} of {} commands failed: {}",
            failed.len(),
            subjects.len(),
            failed.join(", ")
        );
        std::process::exit(1);
    }
}
