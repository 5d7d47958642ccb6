//! A parallel iterator on rayon's thread pool: sums, sorts and counts in parallel
//! and prints results that do not depend on how the work was split, so a native
//! run and a run under nacre print the same.

use rayon::prelude::*;

fn main() {
    let threads = rayon::current_num_threads();
    let sum: u64 = (0..5_000_000u64).into_par_iter().map(|x| x * x % 7919).sum();
    let mut v: Vec<u64> = (0..1_000_000u64)
        .map(|x| x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40)
        .collect();
    v.par_sort_unstable();
    let sorted = v.par_windows(2).all(|w| w[0] <= w[1]);
    let primes = (2..200_000u32)
        .into_par_iter()
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count();
    let (a, b) = rayon::join(|| (0..1000u64).sum::<u64>(), || (0..2000u64).sum::<u64>());
    println!("pool has threads: {}", threads >= 1);
    println!("sum {sum}");
    println!("sorted {sorted} first {} last {}", v[0], v[v.len() - 1]);
    println!("primes {primes}");
    println!("join {a} {b}");
}
