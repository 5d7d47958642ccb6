//! Boot benchmark: how long a whole `nacre run` of the C hello app takes,
//! against a floor measured in the same run.
//!
//! Five commands are timed as whole processes, interleaved round by round so
//! that drift in the machine's load affects them alike:
//!
//! - `bare`: `nacre-bare-vm`, which creates a KVM VM with 128 MiB of RAM and
//!   runs one `hlt` (the least any VMM process can do);
//! - `128M`, `4G`: `nacre run hello.igvm --platform emulated-snp --memory ...`;
//! - `tdx128M`, `tdx4094M`: the same image with `--platform emulated-tdx` (4094 MiB
//!   is the most RAM an emulated TD has).
//!
//! It prints the median and minimum of each and the ratios of medians next to
//! the targets: `nacre run` within 3x of the bare VM on either platform, and the
//! large guest within 1.2x of the 128 MiB one (boot must not grow with guest
//! memory). A missed
//! target is reported, not fatal: this is a measurement, not a test.
//!
//! Run with `cargo bench -p nacre-tests --bench boot`.
//! Environment: `NACRE_BENCH_RUNS` (default 20) sets the number of rounds;
//! `NACRE_BENCH_JSON=PATH` also writes the numbers as JSON to PATH.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nacre_tests::{app_source, build_c_app, nacre_bin, package, require_kvm, scratch_dir};

const DEFAULT_RUNS: usize = 20;
/// Target for `nacre run` over the bare VM floor.
const TARGET_OVER_BARE: f64 = 3.0;
/// Target for a 4 GiB guest over a 128 MiB one.
const TARGET_4G_OVER_128M: f64 = 1.2;
/// Exit code of the C hello app.
const HELLO_EXIT: i32 = 42;

/// One command to time, with the exit code it must end with.
struct Subject {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    expected_exit: i32,
    samples_ms: Vec<f64>,
}

impl Subject {
    fn new(name: &'static str, program: PathBuf, args: Vec<String>, expected_exit: i32) -> Self {
        Self {
            name,
            program,
            args,
            expected_exit,
            samples_ms: Vec::new(),
        }
    }

    /// Runs the command once as a whole process and returns its wall time.
    fn time_once(&self) -> f64 {
        let start = Instant::now();
        let output = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(
            output.status.code(),
            Some(self.expected_exit),
            "{} {} exited with {} instead of {}\n{}",
            self.program.display(),
            self.args.join(" "),
            output.status,
            self.expected_exit,
            String::from_utf8_lossy(&output.stderr)
        );
        elapsed
    }

    fn median(&self) -> f64 {
        let mut sorted = self.samples_ms.clone();
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
        self.samples_ms
            .iter()
            .copied()
            .min_by(f64::total_cmp)
            .unwrap_or(f64::NAN)
    }
}

/// A ratio of medians and the target it is held to.
struct Ratio {
    name: &'static str,
    value: f64,
    target: f64,
}

impl Ratio {
    fn passes(&self) -> bool {
        self.value <= self.target
    }
}

fn runs() -> usize {
    match std::env::var("NACRE_BENCH_RUNS") {
        Ok(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => panic!("NACRE_BENCH_RUNS={text} is not a positive number"),
        },
        Err(_) => DEFAULT_RUNS,
    }
}

fn prepare_image(dir: &Path) -> PathBuf {
    let app = dir.join("hello");
    build_c_app(&app_source("hello.c"), &app);
    package(&app, &[], &[])
}

fn nacre_run_args(image: &Path, platform: &str, memory: &str) -> Vec<String> {
    vec![
        "run".into(),
        image.display().to_string(),
        "--platform".into(),
        platform.into(),
        "--memory".into(),
        memory.into(),
    ]
}

fn write_json(path: &Path, runs: usize, subjects: &[Subject], ratios: &[Ratio]) {
    let mut timings = serde_json::Map::new();
    for subject in subjects {
        timings.insert(
            subject.name.to_string(),
            serde_json::json!({
                "median_ms": subject.median(),
                "min_ms": subject.min(),
                "samples_ms": subject.samples_ms,
            }),
        );
    }
    let mut ratio_map = serde_json::Map::new();
    for ratio in ratios {
        ratio_map.insert(
            ratio.name.to_string(),
            serde_json::json!({
                "value": ratio.value,
                "target": ratio.target,
                "pass": ratio.passes(),
            }),
        );
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
    let dir = scratch_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "bench-boot");
    let nacre = nacre_bin();
    let image = prepare_image(&dir);

    let mut subjects = [
        Subject::new(
            "bare",
            PathBuf::from(env!("CARGO_BIN_EXE_nacre-bare-vm")),
            Vec::new(),
            0,
        ),
        Subject::new(
            "128M",
            nacre.clone(),
            nacre_run_args(&image, "emulated-snp", "128M"),
            HELLO_EXIT,
        ),
        Subject::new(
            "4G",
            nacre.clone(),
            nacre_run_args(&image, "emulated-snp", "4G"),
            HELLO_EXIT,
        ),
        // The same image as a TD; 4094 MiB is the most RAM an emulated TD has.
        Subject::new(
            "tdx128M",
            nacre.clone(),
            nacre_run_args(&image, "emulated-tdx", "128M"),
            HELLO_EXIT,
        ),
        Subject::new(
            "tdx4094M",
            nacre,
            nacre_run_args(&image, "emulated-tdx", "4094M"),
            HELLO_EXIT,
        ),
    ];

    println!("boot benchmark: {runs} rounds, whole processes, wall time");
    // One untimed round warms the page cache and checks every command works.
    for subject in &subjects {
        subject.time_once();
    }
    for _ in 0..runs {
        for subject in &mut subjects {
            let sample = subject.time_once();
            subject.samples_ms.push(sample);
        }
    }

    println!();
    println!("{:<9} {:>12} {:>12}", "", "median ms", "min ms");
    for subject in &subjects {
        println!(
            "{:<9} {:>12.2} {:>12.2}",
            subject.name,
            subject.median(),
            subject.min()
        );
    }

    let [bare, m128, g4, t128, t4] = &subjects;
    let ratios = [
        Ratio {
            name: "128M/bare",
            value: m128.median() / bare.median(),
            target: TARGET_OVER_BARE,
        },
        Ratio {
            name: "4G/bare",
            value: g4.median() / bare.median(),
            target: TARGET_OVER_BARE,
        },
        Ratio {
            name: "4G/128M",
            value: g4.median() / m128.median(),
            target: TARGET_4G_OVER_128M,
        },
        Ratio {
            name: "tdx128M/bare",
            value: t128.median() / bare.median(),
            target: TARGET_OVER_BARE,
        },
        Ratio {
            name: "tdx4094M/tdx128M",
            value: t4.median() / t128.median(),
            target: TARGET_4G_OVER_128M,
        },
    ];
    println!();
    println!("{:<16} {:>8} {:>8}", "ratio", "value", "target");
    for ratio in &ratios {
        println!(
            "{:<16} {:>8.2} {:>7.1}x  {}",
            ratio.name,
            ratio.value,
            ratio.target,
            if ratio.passes() { "PASS" } else { "MISS" }
        );
    }

    if let Some(path) = std::env::var_os("NACRE_BENCH_JSON").filter(|p| !p.is_empty()) {
        write_json(Path::new(&path), runs, &subjects, &ratios);
    }
}
