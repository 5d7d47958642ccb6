//! A Rust `std` test app for nacre: one binary whose first argument picks the
//! part of the guest's Linux interface it exercises, the way ordinary Rust
//! programs use it (files, arguments and environment, clocks, randomness,
//! large allocations, panics).
//!
//! Build: `rustc -O -C target-feature=+crt-static --edition 2021 rust_std.rs`
//! (on x86_64-unknown-linux-gnu this gives a static-pie executable).
//!
//! Modes (`rust_std MODE ARGS...`) and what they print on stdout:
//!
//! - `hello`: `hello from rust std`.
//! - `fs DIR`: every entry below DIR, found with `std::fs::read_dir`, sorted
//!   bytewise by its path relative to DIR: `d <path>` for a directory,
//!   `f <size> <hash> <path>` for anything else, where the file was read whole
//!   with `std::fs::read`, size is its length (which must equal the size
//!   `std::fs::metadata` reports) and hash its FNV-1a 64-bit hash as 16
//!   lowercase hex digits. Then `missing: <kind>` with the `io::ErrorKind` of
//!   opening `DIR/does-not-exist` (`NotFound`), `cwd: <current_dir>` and
//!   `exe: <current_exe>`.
//! - `env ARGS...`: `arg <i> <value>` for each argument after the mode, `i`
//!   being its index in argv (so the first is `arg 2`); then
//!   `env <KEY>=<VALUE>` for each environment variable whose name starts with
//!   `NACRE_`, sorted.
//! - `time`: `monotonic ok` when a 50 ms `std::thread::sleep` took between
//!   50 ms and 5 s by `Instant` (else `monotonic bad <elapsed>`, exit 2);
//!   `wall clock ok` when `SystemTime::now()` is after 2020-01-01 (else
//!   `wall clock bad`, exit 3); `monotonic steps ok` when 1000 consecutive
//!   `Instant::now()` readings never go backwards (else
//!   `monotonic steps bad`, exit 4).
//! - `hashmap`: inserts k -> k*k for k in 0..10000 into a `HashMap` and prints
//!   `sum 333283335000` (the sum of the values); then `hash <16 hex digits>`,
//!   the hash of "nacre" under a fresh `RandomState`, which differs from run to
//!   run because std seeds it from getrandom.
//! - `vec`: fills a 1 GiB `Vec<u8>` with byte i = i % 251 and prints
//!   `sum 134217724496`.
//! - `panic`: prints `about to panic`, then panics with "nacre test panic":
//!   the message goes to stderr and the exit code is 101.
//!
//! Exit code 0 unless stated above; 1 (with a message on stderr) when a file
//! operation of `fs` fails; 2 with a usage message for an unknown mode.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// 2020-01-01T00:00:00Z as seconds since the UNIX epoch.
const YEAR_2020: u64 = 1_577_836_800;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("", String::as_str);
    let code = match (mode, args.len()) {
        ("hello", 2) => {
            println!("hello from rust std");
            0
        }
        ("fs", 3) => fs_mode(Path::new(&args[2])),
        ("env", _) => env_mode(),
        ("time", 2) => time_mode(),
        ("hashmap", 2) => hashmap_mode(),
        ("vec", 2) => vec_mode(),
        ("panic", 2) => panic_mode(),
        _ => {
            eprintln!("usage: rust_std hello|fs DIR|env ARGS...|time|hashmap|vec|panic");
            2
        }
    };
    ExitCode::from(code)
}

/// FNV-1a, 64-bit: offset basis 0xcbf29ce484222325, prime 0x100000001b3.
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Adds every entry below `root.join(rel)` to `out` as (relative path, is a
/// directory).
fn collect(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, bool)>) -> Result<(), String> {
    let dir = root.join(rel);
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
        let child = rel.join(entry.file_name());
        let is_dir = entry
            .file_type()
            .map_err(|e| format!("file type of {}: {e}", entry.path().display()))?
            .is_dir();
        out.push((child.clone(), is_dir));
        if is_dir {
            collect(root, &child, out)?;
        }
    }
    Ok(())
}

fn fs_mode(root: &Path) -> u8 {
    match list_tree(root) {
        Ok(()) => {}
        Err(message) => {
            eprintln!("rust_std: {message}");
            return 1;
        }
    }
    match std::fs::File::open(root.join("does-not-exist")) {
        Ok(_) => println!("missing: opened"),
        Err(e) => println!("missing: {:?}", e.kind()),
    }
    match std::env::current_dir() {
        Ok(cwd) => println!("cwd: {}", cwd.display()),
        Err(e) => println!("cwd: error {:?}", e.kind()),
    }
    match std::env::current_exe() {
        Ok(exe) => println!("exe: {}", exe.display()),
        Err(e) => println!("exe: error {:?}", e.kind()),
    }
    0
}

fn list_tree(root: &Path) -> Result<(), String> {
    let mut entries = Vec::new();
    collect(root, Path::new(""), &mut entries)?;
    entries.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
    for (rel, is_dir) in entries {
        if is_dir {
            println!("d {}", rel.display());
            continue;
        }
        let path = root.join(&rel);
        let data = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("metadata {}: {e}", path.display()))?
            .len();
        if size != data.len() as u64 {
            return Err(format!(
                "{}: metadata says {size} bytes but {} were read",
                path.display(),
                data.len()
            ));
        }
        println!("f {size} {:016x} {}", fnv1a64(&data), rel.display());
    }
    Ok(())
}

fn env_mode() -> u8 {
    for (i, arg) in std::env::args_os().enumerate().skip(2) {
        println!("arg {i} {}", arg.to_string_lossy());
    }
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .filter(|(k, _)| k.starts_with("NACRE_"))
        .collect();
    vars.sort();
    for (key, value) in vars {
        println!("env {key}={value}");
    }
    0
}

fn time_mode() -> u8 {
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let elapsed = start.elapsed();
    if elapsed >= Duration::from_millis(50) && elapsed < Duration::from_secs(5) {
        println!("monotonic ok");
    } else {
        println!("monotonic bad {elapsed:?}");
        return 2;
    }

    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since_epoch) if since_epoch.as_secs() > YEAR_2020 => println!("wall clock ok"),
        _ => {
            println!("wall clock bad");
            return 3;
        }
    }

    let mut previous = Instant::now();
    for _ in 0..1000 {
        let next = Instant::now();
        if next < previous {
            println!("monotonic steps bad");
            return 4;
        }
        previous = next;
    }
    println!("monotonic steps ok");
    0
}

fn hashmap_mode() -> u8 {
    let mut map: HashMap<u64, u64> = HashMap::new();
    for key in 0..10_000u64 {
        map.insert(key, key * key);
    }
    let sum: u64 = map.values().sum();
    println!("sum {sum}");
    let hash = RandomState::new().hash_one("nacre");
    println!("hash {hash:016x}");
    0
}

fn vec_mode() -> u8 {
    let mut buffer = vec![0u8; 1 << 30];
    for (i, byte) in buffer.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    // Keep the optimiser from computing the sum without the memory.
    let buffer = std::hint::black_box(buffer);
    let sum: u64 = buffer.iter().map(|&b| u64::from(b)).sum();
    println!("sum {sum}");
    0
}

fn panic_mode() -> u8 {
    println!("about to panic");
    // Best effort: a failed flush only loses the line the test then misses.
    let _ = std::io::stdout().flush();
    panic!("nacre test panic");
}
