//! The committed seed corpus (`corpus/TARGET/seed-NAME`) is what `nacre_fuzz::seeds`
//! makes from the repository's fixtures (the seeds of freshly made emulated keys are
//! only checked to exist). With `NACRE_FUZZ_WRITE_SEEDS=1` this writes it instead
//! (those seeds only when missing):
//!
//! ```sh
//! NACRE_FUZZ_WRITE_SEEDS=1 cargo +nightly test --manifest-path tests/fuzz/Cargo.toml --test seeds
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// The targets, as Cargo.toml lists them.
fn targets() -> BTreeSet<String> {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|name| *name != "nacre-fuzz")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_target_has_the_seeds_the_fixtures_make() {
    let scratch = std::env::temp_dir().join(format!("nacre-fuzz-seeds-{}", std::process::id()));
    let seeds = nacre_fuzz::seeds::all(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let write = std::env::var_os("NACRE_FUZZ_WRITE_SEEDS").is_some();
    let targets = targets();
    let seeded: BTreeSet<String> = seeds.iter().map(|s| s.target.to_owned()).collect();
    assert_eq!(
        seeded, targets,
        "targets without seeds, or seeds without a target"
    );
    for seed in &seeds {
        let dir = corpus().join(seed.target);
        let path = dir.join(format!("seed-{}", seed.name));
        assert!(
            seed.bytes.len() <= 256 << 10,
            "{} is large: {} bytes",
            path.display(),
            seed.bytes.len()
        );
        if write {
            // Seeds of freshly made keys differ every time: they are written only
            // when missing, so that rewriting the corpus changes only what changed.
            if seed.reproducible || !path.exists() {
                std::fs::create_dir_all(&dir).expect("the corpus folder");
                std::fs::write(&path, &seed.bytes).expect("a seed");
            }
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (NACRE_FUZZ_WRITE_SEEDS=1 writes it)",
                path.display()
            )
        });
        if seed.reproducible {
            assert!(
                committed == seed.bytes,
                "{} is not what the fixtures make (NACRE_FUZZ_WRITE_SEEDS=1 rewrites it)",
                path.display()
            );
        }
    }
}
