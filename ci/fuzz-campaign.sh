#!/usr/bin/env bash
# Fuzz every target of tests/fuzz (cargo-fuzz, libFuzzer) for a given time or number
# of runs each, and print the executions of each. Fails when a target crashes; the
# crashing input is kept and named.
#
#   bash ci/fuzz-campaign.sh --time 600            # 10 minutes per target
#   bash ci/fuzz-campaign.sh --runs 1000000 snp_ghcb tdx_tdcall
#   bash ci/fuzz-campaign.sh --time 3600 --jobs 2  # two targets at a time
#
# Options:
#   --time SECONDS   per target (default 60)
#   --runs N         per target instead of a time
#   --jobs J         targets fuzzed at once (default 1)
#   --work DIR       where the growing corpus, crashes and logs go (default
#                    target/fuzz-campaign; kept between campaigns, so a later one
#                    starts where this one stopped)
#   --dev            build without optimization (quicker to build, slower to run)
#   --sanitizer S    cargo-fuzz's sanitizer: address (default), none, ... A build
#                    without AddressSanitizer runs the safe-Rust decoders (the
#                    verifier, the loader) about twice as fast; it goes to a target
#                    folder of its own so that the two builds do not replace each other.
#   TARGET...        only these targets (default: all, as `cargo fuzz list` names them)
#
# The committed seeds (tests/fuzz/corpus/TARGET) are read, never written: what a
# campaign finds goes to the work folder. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`).

set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

toolchain="${NACRE_FUZZ_TOOLCHAIN:-nightly}"
time_limit=60
runs=""
jobs=1
work="$repo_root/target/fuzz-campaign"
build_flags=()
targets=()

while [ $# -gt 0 ]; do
    case "$1" in
    --time) time_limit="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --dev) build_flags+=(--dev); shift ;;
    --sanitizer)
        build_flags+=(--sanitizer "$2")
        if [ "$2" != address ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
            export CARGO_TARGET_DIR="$repo_root/tests/fuzz/target/sanitizer-$2"
        fi
        shift 2
        ;;
    -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done

fuzz=(cargo "+$toolchain" fuzz)
fuzz_dir=tests/fuzz

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir "$fuzz_dir")
fi

echo "building ${#targets[@]} fuzz targets (cargo +$toolchain fuzz build ${build_flags[*]})"
"${fuzz[@]}" build --fuzz-dir "$fuzz_dir" "${build_flags[@]}"
# The targets are run as built (what `cargo fuzz run` would run), with no cargo
# process around them.
triple="$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')"
profile=release
if [[ " ${build_flags[*]} " == *" --dev "* ]]; then
    profile=debug
fi
bin_dir="${CARGO_TARGET_DIR:-$repo_root/$fuzz_dir/target}/$triple/$profile"

mkdir -p "$work/logs"
if [ -n "$runs" ]; then
    limit=(-runs="$runs")
    echo "fuzzing each target for $runs runs, $jobs at a time"
else
    limit=(-max_total_time="$time_limit")
    echo "fuzzing each target for $time_limit s, $jobs at a time"
fi

# One target: its growing corpus in $work, the committed seeds read-only, crashes in
# $work/artifacts/TARGET. libFuzzer's last lines say how many runs it made.
fuzz_one() {
    local target="$1" corpus="$work/corpus/$1" artifacts="$work/artifacts/$1/"
    mkdir -p "$corpus" "$artifacts"
    "$bin_dir/$target" "$corpus" "$fuzz_dir/corpus/$target" \
        "${limit[@]}" -artifact_prefix="$artifacts" -print_final_stats=1 \
        -rss_limit_mb=4096 -timeout=30 \
        >"$work/logs/$target.log" 2>&1
}

status=0
running=0
for target in "${targets[@]}"; do
    fuzz_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

printf '\n%-20s %14s %9s %9s  %s\n' target executions seconds exec/s result
total=0
for target in "${targets[@]}"; do
    log="$work/logs/$target.log"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
    if [ -z "$execs" ]; then
        # A crash ends the run before the final statistics: the last status line.
        execs="$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    fi
    crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | head -n 1)"
    if [ -n "$crash" ] || ! grep -q '^Done [0-9]* runs' "$log"; then
        result="FAILED: ${crash:-see $log}"
        status=1
    else
        result=ok
    fi
    execs="${execs:-0}"
    rate=""
    if [ -n "$secs" ] && [ "$secs" -gt 0 ]; then
        rate=$((execs / secs))
    fi
    printf '%-20s %14s %9s %9s  %s\n' "$target" "$execs" "${secs:--}" "${rate:--}" "$result"
    total=$((total + execs))
done
printf '%-20s %14s\n' total "$total"

if [ "$status" -ne 0 ]; then
    echo "fuzzing found crashes: reproduce one with" >&2
    echo "  cargo +$toolchain fuzz run --fuzz-dir $fuzz_dir TARGET FILE" >&2
    for target in "${targets[@]}"; do
        grep -B2 -A20 -E 'panicked|ERROR: (libFuzzer|AddressSanitizer)' \
            "$work/logs/$target.log" 2>/dev/null | head -n 40 >&2 || true
    done
fi
exit "$status"
