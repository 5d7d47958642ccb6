#!/usr/bin/env bash
# Fuzz every target of tests/fuzz (cargo-fuzz, libFuzzer) for a given time or number
# of runs each, print the executions of each and add them to the campaign's ledger.
# Fails when a target crashes; the crashing input is kept and named.
#
#   bash ci/fuzz-campaign.sh --time 600            # 10 minutes per target
#   bash ci/fuzz-campaign.sh --runs 1000000 snp_ghcb tdx_tdcall
#   bash ci/fuzz-campaign.sh --time 3600 --jobs 2  # two targets at a time
#   bash ci/fuzz-campaign.sh --summary             # the ledger's totals, no fuzzing
#
# Options:
#   --time SECONDS   per target (default 60)
#   --runs N         per target instead of a time
#   --jobs J         targets fuzzed at once (default 1)
#   --work DIR       where the growing corpus, crashes, logs and the ledger go
#                    (default target/fuzz-campaign; kept between campaigns, so a
#                    later one starts where this one stopped)
#   --dev            build without optimization (quicker to build, slower to run)
#   --sanitizer S    cargo-fuzz's sanitizer: address (default), none, ... A build
#                    without AddressSanitizer runs the safe-Rust decoders (the
#                    verifier, the loader) about twice as fast. Each sanitizer's
#                    build goes to tests/fuzz/target/campaign-S (or $CARGO_TARGET_DIR),
#                    with the arithmetic of cryptography run uninstrumented
#                    (tests/fuzz/build/untraced-rustc.sh).
#   --no-trace-compares
#                    build without libFuzzer's tracing of comparisons (cargo-fuzz's
#                    option of that name), for targets whose oracles walk large
#                    structures after every call (tdx_tdcall audits the whole MMU,
#                    and spends most of its time in that tracing). Coverage still
#                    guides the fuzzer; it solves comparisons less well. The build
#                    goes to campaign-S+notc, the ledger says S+notc.
#   --summary        print the ledger's executions per target (all runs, every
#                    sanitizer) and whether each reached the goal; fuzz nothing
#   --goal N         the executions --summary asks of each target (default 10000000)
#   TARGET...        only these targets (default: all, as `cargo fuzz list` names them)
#
# The ledger, WORK/ledger.tsv, gets one line per target per run, written when the
# target's run ends: its UTC date, the commit fuzzed (with "-dirty" when the work tree
# had changes), the target, the sanitizer ("+notc" without comparison tracing, "+dev"
# without optimization), the executions and seconds libFuzzer counted, and the result
# ("ok", "crash FILE" or "failed LOG"; a crashed run counts the executions of its last
# status line). Lines are only ever appended, so the totals add up every campaign run
# in WORK.
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
sanitizer=address
variant=""
summary=""
goal=10000000
targets=()

while [ $# -gt 0 ]; do
    case "$1" in
    --time) time_limit="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --dev) build_flags+=(--dev); shift ;;
    --no-trace-compares) build_flags+=(--no-trace-compares); variant="+notc"; shift ;;
    --sanitizer)
        build_flags+=(--sanitizer "$2")
        sanitizer="$2"
        shift 2
        ;;
    --summary) summary=1; shift ;;
    --goal) goal="$2"; shift 2 ;;
    -h | --help) sed -n '2,47p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done

fuzz=(cargo "+$toolchain" fuzz)
fuzz_dir=tests/fuzz
ledger="$work/ledger.tsv"

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir "$fuzz_dir")
fi

# The ledger's totals per target: executions, seconds, runs and failed runs over every
# line, and whether the executions reached the goal.
if [ -n "$summary" ]; then
    if [ ! -f "$ledger" ]; then
        echo "no ledger in $work yet" >&2
    fi
    printf '%-20s %14s %9s %5s %6s  %s\n' target executions seconds runs failed \
        "goal $goal"
    short=0
    for target in "${targets[@]}"; do
        read -r execs secs nruns crashed < <(awk -F '\t' -v t="$target" '
            $3 == t { e += $5; s += $6; n++; if ($7 != "ok") c++ }
            END { printf "%d %d %d %d\n", e, s, n, c }' "$ledger" 2>/dev/null ||
            echo "0 0 0 0")
        if [ "$execs" -ge "$goal" ]; then
            reached=reached
        else
            reached="short by $((goal - execs))"
            short=$((short + 1))
        fi
        printf '%-20s %14s %9s %5s %6s  %s\n' "$target" "$execs" "$secs" "$nruns" \
            "$crashed" "$reached"
    done
    echo "$short of ${#targets[@]} targets short of $goal executions"
    exit 0
fi

# The campaign's build leaves the arithmetic of cryptography uninstrumented (see
# tests/fuzz/build/untraced-rustc.sh), in a target folder of its own per sanitizer so
# that it and `cargo fuzz build`'s do not replace each other.
export RUSTC_WRAPPER="$repo_root/$fuzz_dir/build/untraced-rustc.sh"
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    export CARGO_TARGET_DIR="$repo_root/$fuzz_dir/target/campaign-$sanitizer$variant"
fi
sanitizer="$sanitizer$variant"
echo "building ${#targets[@]} fuzz targets (cargo +$toolchain fuzz build ${build_flags[*]})"
"${fuzz[@]}" build --fuzz-dir "$fuzz_dir" "${build_flags[@]}"
# The targets are run as built (what `cargo fuzz run` would run), with no cargo
# process around them.
triple="$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')"
profile=release
if [[ " ${build_flags[*]} " == *" --dev "* ]]; then
    profile=debug
    sanitizer="$sanitizer+dev"
fi
bin_dir="$CARGO_TARGET_DIR/$triple/$profile"
commit="$(git rev-parse --short=12 HEAD)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    commit="$commit-dirty"
fi

mkdir -p "$work/logs"
if [ ! -f "$ledger" ]; then
    printf 'date\tcommit\ttarget\tsanitizer\texecutions\tseconds\tresult\n' >"$ledger"
fi
if [ -n "$runs" ]; then
    limit=(-runs="$runs")
    echo "fuzzing each target for $runs runs, $jobs at a time"
else
    limit=(-max_total_time="$time_limit")
    echo "fuzzing each target for $time_limit s, $jobs at a time"
fi

# What a target's log says of its run: "executions seconds result" (result "ok",
# "crash FILE" or "failed LOG"). libFuzzer's last lines say how many runs it made.
outcome() {
    local target="$1" log="$work/logs/$1.log" execs secs crash
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
    if [ -z "$execs" ]; then
        # A crash ends the run before the final statistics: the last status line.
        execs="$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    fi
    if [ -z "$secs" ]; then
        # No "Done" line: the time the run took, from the log's own timestamps.
        secs=$(($(stat -c %Y "$log") - $(sed -n 's/^start \([0-9]*\)$/\1/p' "$log" | head -n 1)))
    fi
    # libFuzzer also keeps an input that once took longer than -report_slow_units
    # (10 s) as slow-unit-*: with the fuzzer at nice 19 beside a build, that is the
    # machine's load, not a failure (a run that hangs ends as a timeout-* instead).
    crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" |
        grep -v '/slow-unit-[0-9a-f]*$' | head -n 1 || true)"
    if [ -n "$crash" ]; then
        echo "${execs:-0} $secs crash $crash"
    elif ! grep -q '^Done [0-9]* runs' "$log"; then
        echo "${execs:-0} $secs failed $log"
    else
        echo "${execs:-0} $secs ok"
    fi
}

# One target: its growing corpus in $work, the committed seeds read-only, crashes in
# $work/artifacts/TARGET; its line goes to the ledger as soon as it ends.
fuzz_one() {
    local target="$1" corpus="$work/corpus/$1" artifacts="$work/artifacts/$1/"
    local log="$work/logs/$1.log" execs secs result
    mkdir -p "$corpus" "$artifacts"
    echo "start $(date +%s)" >"$log"
    "$bin_dir/$target" "$corpus" "$fuzz_dir/corpus/$target" \
        "${limit[@]}" -artifact_prefix="$artifacts" -print_final_stats=1 \
        -rss_limit_mb=4096 -timeout=30 \
        >>"$log" 2>&1 || true
    read -r execs secs result < <(outcome "$target")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" \
        "$target" "$sanitizer" "$execs" "$secs" "$result" >>"$ledger"
}

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

status=0
printf '\n%-20s %14s %9s %9s  %s\n' target executions seconds exec/s result
total=0
for target in "${targets[@]}"; do
    read -r execs secs result < <(outcome "$target")
    if [ "$result" != ok ]; then
        result="FAILED: ${result#* }"
        status=1
    fi
    rate=-
    if [ "$secs" -gt 0 ]; then
        rate=$((execs / secs))
    fi
    printf '%-20s %14s %9s %9s  %s\n' "$target" "$execs" "$secs" "$rate" "$result"
    total=$((total + execs))
done
printf '%-20s %14s\n' total "$total"
echo "ledger: $ledger (bash ci/fuzz-campaign.sh --work $work --summary)"

if [ "$status" -ne 0 ]; then
    echo "fuzzing found crashes: reproduce one with" >&2
    echo "  cargo +$toolchain fuzz run --fuzz-dir $fuzz_dir TARGET FILE" >&2
    for target in "${targets[@]}"; do
        grep -B2 -A20 -E 'panicked|ERROR: (libFuzzer|AddressSanitizer)' \
            "$work/logs/$target.log" 2>/dev/null | head -n 40 >&2 || true
    done
fi
exit "$status"
