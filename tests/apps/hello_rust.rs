//! A Rust `std` test app for nacre.
//!
//! It exercises what a typical static Rust program needs from the guest:
//! stdout, argv, the environment, a large heap allocation and a clean exit
//! through `std::process::exit`.
//!
//! Build: `rustc -O -C target-feature=+crt-static --edition 2021 hello_rust.rs`
//!
//! Expected output for `hello_rust one "two words"` with `NACRE_GREETING=hi`:
//!
//! ```text
//! hello from rust
//! arg[1]=one
//! arg[2]=two words
//! env NACRE_GREETING=hi
//! sum=8556380160
//! ```
//!
//! and exit code 7.

use std::io::Write;

/// Size of the heap buffer: large enough that the allocator has to ask the
/// guest for fresh memory (mmap) instead of reusing a small arena.
const BUFFER_BYTES: usize = 64 << 20;

fn main() {
    let mut out = std::io::stdout().lock();
    writeln!(out, "hello from rust").expect("stdout is writable");

    for (i, arg) in std::env::args().enumerate().skip(1) {
        writeln!(out, "arg[{i}]={arg}").expect("stdout is writable");
    }

    let greeting = std::env::var("NACRE_GREETING").unwrap_or_else(|_| "<unset>".to_string());
    writeln!(out, "env NACRE_GREETING={greeting}").expect("stdout is writable");

    // Fill every byte so each page is really touched, then read them all back.
    let mut buffer = vec![0u8; BUFFER_BYTES];
    for (i, byte) in buffer.iter_mut().enumerate() {
        *byte = (i % 256) as u8;
    }
    let sum: u64 = buffer.iter().map(|&b| u64::from(b)).sum();
    writeln!(out, "sum={sum}").expect("stdout is writable");

    out.flush().expect("stdout is writable");
    drop(out);
    std::process::exit(7);
}
