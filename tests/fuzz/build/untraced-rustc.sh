#!/usr/bin/env bash
# RUSTC_WRAPPER for campaign builds of the fuzz targets (ci/fuzz-campaign.sh): compiles
# the crates named below without libFuzzer's coverage instrumentation (cargo-fuzz's
# `-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`), every other crate
# and every other flag (the sanitizer, debug assertions, overflow checks) as given.
#
# These are the arithmetic of the cryptography the verifier targets check real
# signatures with (RSA-4096 for AMD's certificates, P-384 and P-256, SHA-2,
# AES-GCM). Their code runs, in full, on every input; only the tracing of its every
# comparison goes, which took most of those targets' time (a big-number
# multiplication spent five times its own time in __sanitizer_cov_trace_cmp8) and
# tells the fuzzer nothing about the decoders around it, whose coverage stays.
#
# Usage (what cargo does): untraced-rustc.sh RUSTC ARGS...

untraced=" num_bigint_dig crypto_bigint p256 p384 primeorder sha2 aes polyval ghash "

rustc="$1"
shift
crate=""
prev=""
for arg in "$@"; do
    if [ "$prev" = --crate-name ]; then
        crate="$arg"
        break
    fi
    prev="$arg"
done

if [ -z "$crate" ] || [[ "$untraced" != *" $crate "* ]]; then
    exec "$rustc" "$@"
fi

args=()
for arg in "$@"; do
    case "$arg" in
    -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-*) ;;
    *) args+=("$arg") ;;
    esac
done
exec "$rustc" "${args[@]}"
