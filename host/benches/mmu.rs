//! MMU benchmark: what the host MMU's operations cost on the real backing, against
//! a `memset` of the same amount of memory measured in the same run.
//!
//! Every operation runs on an [`SnpMmu`] over 1 GiB of guest RAM (262144 pages, backing
//! up to 1 GiB mappings as on the emulated SNP platform) and a [`GuestMemory`] of the
//! same size, so each one pays for the `mprotect` of the two views and the
//! `fallocate` hole punching it really causes:
//!
//! - `fault 4K`: a private fault that maps 4 KiB. Each 2 MiB region is faulted,
//!   validated with a 2 MiB PVALIDATE and then a 4 KiB PVALIDATE (which PSMASHes it),
//!   so every page has a validated 4 KiB RMP entry; the whole range is invalidated and
//!   every page faulted again, each fault opening one page of the private view;
//! - `fault 2M`: the first private fault on a fresh 2 MiB region (assign the region in
//!   the RMP at 2 MiB, map 2 MiB);
//! - `PSC 4K`: on those 4 KiB pages, mapped and holding data, `set_attributes` of one
//!   page to shared and back to private (each conversion is one operation);
//! - `PSC 2M`: the same for whole 2 MiB regions, faulted, validated and holding data;
//! - `PSMASH`: splitting the 2 MiB RMP entry of a freshly faulted region (and zapping
//!   its 2 MiB mapping).
//!
//! The `memset` next to each is a fill of 4 KiB or 2 MiB, whichever the operation
//! covers, marching through a 64 MiB buffer touched beforehand (larger than the
//! caches, as the memory an operation covers usually is). Each round sets up fresh
//! guests, times every operation over the whole of guest RAM (or a stated part of it)
//! and then as many memsets; the table shows the median over rounds of the time per
//! operation and the ratio of the medians. The stats of the MMU are checked after each
//! timed loop, so a setup that stopped taking the path it names fails loudly.
//!
//! Run with `cargo bench -p nacre-host --bench mmu`.
//! Environment: `NACRE_BENCH_RUNS` (default 5) sets the number of rounds;
//! `NACRE_BENCH_JSON=PATH` also writes the numbers as JSON to PATH.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use nacre_host::mmu::attributes::Kind;
use nacre_host::mmu::snp::{Fault, GuestRmpResult, SnpMmu, SnpMmuStats};
use nacre_host::mmu::tdp::Level;
use nacre_host::vmm::memory::GuestMemory;
use nacre_shared_abi::snp::rmp::RmpPageSize;

const DEFAULT_RUNS: usize = 5;
/// Guest RAM: 1 GiB in 4 KiB pages.
const GUEST_PAGES: u64 = 262_144;
/// 4 KiB pages in a 2 MiB region.
const PAGES_2M: u64 = 512;
/// 2 MiB regions in guest RAM.
const REGIONS: u64 = GUEST_PAGES / PAGES_2M;
const BYTES_4K: usize = 4096;
const BYTES_2M: usize = 2 << 20;
/// Pages whose 4 KiB page-state changes are timed each round (the first 256 MiB).
const PSC_4K_PAGES: u64 = 65_536;
/// Fresh guests per round for the 2 MiB fault and PSMASH (512 operations each).
const FRESH_GUESTS: usize = 4;
/// The memset buffer: larger than the last-level cache.
const MEMSET_BUFFER: usize = 64 << 20;

/// One row of the table: samples of one operation and of its memset, per round.
struct Row {
    name: &'static str,
    bytes: usize,
    ops_per_round: u64,
    op_ns: Vec<f64>,
    memset_ns: Vec<f64>,
}

impl Row {
    fn new(name: &'static str, bytes: usize) -> Self {
        Self {
            name,
            bytes,
            ops_per_round: 0,
            op_ns: Vec::new(),
            memset_ns: Vec::new(),
        }
    }

    /// Record one round: `ops` operations took `op_total_ns`; then time as many
    /// memsets of the row's size.
    fn record(&mut self, ops: u64, op_total_ns: f64, buf: &mut [u8]) {
        self.ops_per_round = ops;
        self.op_ns.push(op_total_ns / ops as f64);
        self.memset_ns.push(memset_ns(buf, self.bytes, ops));
    }

    fn op_median(&self) -> f64 {
        median(&self.op_ns)
    }

    fn memset_median(&self) -> f64 {
        median(&self.memset_ns)
    }

    fn ratio(&self) -> f64 {
        self.op_median() / self.memset_median()
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
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

fn runs() -> usize {
    match std::env::var("NACRE_BENCH_RUNS") {
        Ok(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => panic!("NACRE_BENCH_RUNS={text} is not a positive number"),
        },
        Err(_) => DEFAULT_RUNS,
    }
}

/// Nanoseconds per fill of `len` bytes, over `count` fills marching through `buf`.
fn memset_ns(buf: &mut [u8], len: usize, count: u64) -> f64 {
    let chunks = buf.len() / len;
    let start = Instant::now();
    for i in 0..count {
        let off = (i as usize % chunks) * len;
        let chunk = &mut buf[off..off + len];
        chunk.fill(black_box(i as u8));
        black_box(chunk);
    }
    start.elapsed().as_secs_f64() * 1e9 / count as f64
}

/// A fresh guest: 1 GiB of RAM, every page private, hypervisor-owned and unmapped.
fn guest() -> (GuestMemory, SnpMmu) {
    let mem = GuestMemory::new(GUEST_PAGES * BYTES_4K as u64).expect("cannot create guest RAM");
    (mem, SnpMmu::new(GUEST_PAGES, Level::L1G))
}

fn heads() -> impl Iterator<Item = u64> {
    (0..REGIONS).map(|r| r * PAGES_2M)
}

fn gpa(gfn: u64) -> u64 {
    gfn * BYTES_4K as u64
}

/// Change of each counter between two snapshots.
fn delta(after: SnpMmuStats, before: SnpMmuStats) -> SnpMmuStats {
    SnpMmuStats {
        faults: after.faults - before.faults,
        fault_retries: after.fault_retries - before.fault_retries,
        zaps: after.zaps - before.zaps,
        maps_4k: after.maps_4k - before.maps_4k,
        maps_2m: after.maps_2m - before.maps_2m,
        maps_1g: after.maps_1g - before.maps_1g,
        psmash: after.psmash - before.psmash,
        rmpupdate: after.rmpupdate - before.rmpupdate,
        implicit_conversions: after.implicit_conversions - before.implicit_conversions,
        conversions: after.conversions - before.conversions,
        reclaim_refused: after.reclaim_refused - before.reclaim_refused,
    }
}

/// Fill guest pages `[gfn, gfn + n)` with a nonzero pattern, 2 MiB at a time.
fn populate(mem: &GuestMemory, gfn: u64, n: u64) {
    let chunk = vec![0xa5u8; BYTES_2M];
    let mut at = gfn;
    while at < gfn + n {
        let pages = (gfn + n - at).min(PAGES_2M);
        mem.write(gpa(at), &chunk[..pages as usize * BYTES_4K])
            .expect("cannot populate guest RAM");
        at += pages;
    }
}

/// Whether the first page of each 2 MiB region of `[gfn, gfn + n)` reads as zeros.
fn discarded(mem: &GuestMemory, gfn: u64, n: u64) -> bool {
    let mut page = vec![0xffu8; BYTES_4K];
    (gfn..gfn + n).step_by(PAGES_2M as usize).all(|g| {
        mem.read(gpa(g), &mut page).expect("cannot read guest RAM");
        page.iter().all(|&b| b == 0)
    })
}

/// 4 KiB faults, then 4 KiB page-state changes on the pages they mapped.
fn round_4k(fault: &mut Row, psc: &mut Row, buf: &mut [u8]) {
    let (mem, mmu) = guest();

    // Every region: 2 MiB fault, 2 MiB PVALIDATE, then a 4 KiB PVALIDATE that PSMASHes
    // the entry, so all its pages have validated 4 KiB entries.
    let before = mmu.stats();
    for head in heads() {
        let f = mmu.fault(&mem, head, Kind::Private).expect("fault");
        assert!(
            matches!(f, Fault::Mapped(m) if m.level == Level::L2M),
            "setup fault of {head:#x}: {f:?}"
        );
        let v = mmu
            .pvalidate(&mem, head, RmpPageSize::Size2M, true)
            .expect("pvalidate 2M");
        assert_eq!(v, GuestRmpResult::Done { changed: true });
        let v = mmu
            .pvalidate(&mem, head, RmpPageSize::Size4K, true)
            .expect("pvalidate 4K");
        assert_eq!(v, GuestRmpResult::Done { changed: false });
    }
    assert_eq!(delta(mmu.stats(), before).psmash, REGIONS);
    let zapped = mmu.invalidate(&mem, 0, GUEST_PAGES).expect("invalidate");
    assert_eq!(
        zapped, REGIONS,
        "one 4 KiB mapping per region after the PSMASH"
    );
    mmu.inspect(|_, tdp, rmp| {
        for g in 0..GUEST_PAGES {
            let e = rmp.entry(g).expect("in range");
            assert!(
                e.assigned && e.validated && e.size == RmpPageSize::Size4K,
                "page {g:#x} after setup: {e:?}"
            );
            assert!(tdp.lookup(g).is_none(), "page {g:#x} still mapped");
        }
    });

    // Timed: fault every page, each mapping 4 KiB.
    let before = mmu.stats();
    let start = Instant::now();
    for g in 0..GUEST_PAGES {
        match mmu.fault(&mem, g, Kind::Private).expect("fault") {
            Fault::Mapped(m) if m.level == Level::L4K => {}
            f => panic!("fault of {g:#x}: {f:?}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64() * 1e9;
    let d = delta(mmu.stats(), before);
    assert_eq!(
        (d.faults, d.maps_4k, d.maps_2m, d.maps_1g, d.fault_retries),
        (GUEST_PAGES, GUEST_PAGES, 0, 0, 0),
        "4 KiB faults: {d:?}"
    );
    assert_eq!((d.rmpupdate, d.psmash), (0, 0), "4 KiB faults: {d:?}");
    for head in heads() {
        assert_eq!(mmu.reachable(head + 7), (true, false));
    }
    fault.record(GUEST_PAGES, elapsed, buf);

    // Timed: each page to shared and back, with data in it.
    populate(&mem, 0, PSC_4K_PAGES);
    let before = mmu.stats();
    let start = Instant::now();
    for g in 0..PSC_4K_PAGES {
        let to_shared = mmu.set_attributes(&mem, g, 1, Kind::Shared).expect("psc");
        let to_private = mmu.set_attributes(&mem, g, 1, Kind::Private).expect("psc");
        assert_eq!((to_shared, to_private), (Some(1), Some(1)), "psc of {g:#x}");
    }
    let elapsed = start.elapsed().as_secs_f64() * 1e9;
    let d = delta(mmu.stats(), before);
    assert_eq!(
        (
            d.conversions,
            d.zaps,
            d.rmpupdate,
            d.psmash,
            d.faults,
            d.reclaim_refused
        ),
        (2 * PSC_4K_PAGES, PSC_4K_PAGES, PSC_4K_PAGES, 0, 0, 0),
        "4 KiB page-state changes: {d:?}"
    );
    assert!(
        discarded(&mem, 0, PSC_4K_PAGES),
        "converted pages kept data"
    );
    assert!(mmu.rmp_entry(0).is_some_and(|e| !e.assigned));
    psc.record(2 * PSC_4K_PAGES, elapsed, buf);
}

/// 2 MiB faults on fresh regions, then PSMASH of the 2 MiB entries they created.
fn round_fault_2m(fault: &mut Row, psmash: &mut Row, buf: &mut [u8]) {
    let (mut fault_ns, mut psmash_ns) = (0.0, 0.0);
    for _ in 0..FRESH_GUESTS {
        let (mem, mmu) = guest();

        let before = mmu.stats();
        let start = Instant::now();
        for head in heads() {
            match mmu.fault(&mem, head, Kind::Private).expect("fault") {
                Fault::Mapped(m) if m.level == Level::L2M => {}
                f => panic!("fault of {head:#x}: {f:?}"),
            }
        }
        fault_ns += start.elapsed().as_secs_f64() * 1e9;
        let d = delta(mmu.stats(), before);
        assert_eq!(
            (d.faults, d.maps_2m, d.maps_4k, d.rmpupdate, d.fault_retries),
            (REGIONS, REGIONS, 0, REGIONS, 0),
            "2 MiB faults: {d:?}"
        );
        for head in heads() {
            let e = mmu.rmp_entry(head + 1).expect("in range");
            assert!(e.assigned && e.size == RmpPageSize::Size2M, "{e:?}");
        }

        let before = mmu.stats();
        let start = Instant::now();
        for head in heads() {
            let r = mmu.psmash(&mem, head).expect("psmash");
            assert_eq!(r, Ok(()), "psmash of {head:#x}");
        }
        psmash_ns += start.elapsed().as_secs_f64() * 1e9;
        let d = delta(mmu.stats(), before);
        assert_eq!(
            (d.psmash, d.zaps, d.rmpupdate, d.faults),
            (REGIONS, REGIONS, 0, 0),
            "PSMASH: {d:?}"
        );
        for head in heads() {
            let e = mmu.rmp_entry(head + 1).expect("in range");
            assert!(e.assigned && e.size == RmpPageSize::Size4K, "{e:?}");
        }
    }
    let ops = REGIONS * FRESH_GUESTS as u64;
    fault.record(ops, fault_ns, buf);
    psmash.record(ops, psmash_ns, buf);
}

/// 2 MiB page-state changes on faulted, validated regions holding data.
fn round_psc_2m(psc: &mut Row, buf: &mut [u8]) {
    let (mem, mmu) = guest();
    for head in heads() {
        let f = mmu.fault(&mem, head, Kind::Private).expect("fault");
        assert!(
            matches!(f, Fault::Mapped(m) if m.level == Level::L2M),
            "{f:?}"
        );
        let v = mmu
            .pvalidate(&mem, head, RmpPageSize::Size2M, true)
            .expect("pvalidate 2M");
        assert_eq!(v, GuestRmpResult::Done { changed: true });
    }
    populate(&mem, 0, GUEST_PAGES);

    let before = mmu.stats();
    let start = Instant::now();
    for head in heads() {
        let to_shared = mmu
            .set_attributes(&mem, head, PAGES_2M, Kind::Shared)
            .expect("psc");
        let to_private = mmu
            .set_attributes(&mem, head, PAGES_2M, Kind::Private)
            .expect("psc");
        assert_eq!(
            (to_shared, to_private),
            (Some(PAGES_2M), Some(PAGES_2M)),
            "psc of {head:#x}"
        );
    }
    let elapsed = start.elapsed().as_secs_f64() * 1e9;
    let d = delta(mmu.stats(), before);
    assert_eq!(
        (
            d.conversions,
            d.zaps,
            d.rmpupdate,
            d.psmash,
            d.faults,
            d.reclaim_refused
        ),
        (2 * GUEST_PAGES, REGIONS, REGIONS, 0, 0, 0),
        "2 MiB page-state changes: {d:?}"
    );
    assert!(discarded(&mem, 0, GUEST_PAGES), "converted pages kept data");
    psc.record(2 * REGIONS, elapsed, buf);
}

fn write_json(path: &Path, runs: usize, rows: &[Row]) {
    let mut results = serde_json::Map::new();
    for row in rows {
        results.insert(
            row.name.to_string(),
            serde_json::json!({
                "bytes": row.bytes,
                "ops_per_round": row.ops_per_round,
                "median_ns_per_op": row.op_median(),
                "median_memset_ns": row.memset_median(),
                "ratio": row.ratio(),
                "samples_ns_per_op": row.op_ns,
                "memset_samples_ns": row.memset_ns,
            }),
        );
    }
    let report = serde_json::json!({
        "runs": runs,
        "guest_pages": GUEST_PAGES,
        "results": results,
    });
    let text = serde_json::to_string_pretty(&report).expect("a JSON value always serialises");
    fs::write(path, text + "\n").unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    println!("wrote {}", path.display());
}

fn main() {
    let runs = runs();
    let mut buf = vec![0x5au8; MEMSET_BUFFER];
    let mut rows = [
        Row::new("fault 4K", BYTES_4K),
        Row::new("fault 2M", BYTES_2M),
        Row::new("PSC 4K", BYTES_4K),
        Row::new("PSC 2M", BYTES_2M),
        Row::new("PSMASH", BYTES_2M),
    ];

    println!("mmu benchmark: {runs} rounds, 1 GiB guest RAM on GuestMemory");
    for _ in 0..runs {
        let [fault_4k, fault_2m, psc_4k, psc_2m, psmash] = &mut rows;
        round_4k(fault_4k, psc_4k, &mut buf);
        round_fault_2m(fault_2m, psmash, &mut buf);
        round_psc_2m(psc_2m, &mut buf);
    }

    println!();
    println!(
        "{:<12} {:>10} {:>10} {:>12} {:>8}",
        "operation", "ops/round", "ns/op", "memset ns", "ratio"
    );
    for row in &rows {
        println!(
            "{:<12} {:>10} {:>10.0} {:>12.0} {:>8.2}",
            row.name,
            row.ops_per_round,
            row.op_median(),
            row.memset_median(),
            row.ratio()
        );
    }

    if let Some(path) = std::env::var_os("NACRE_BENCH_JSON").filter(|p| !p.is_empty()) {
        write_json(Path::new(&path), runs, &rows);
    }
}
