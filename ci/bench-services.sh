#!/usr/bin/env bash
# Benchmark the services path (not a test): the C epoll server (tests/apps/http_server.c)
# and the Go net/http server (tests/apps/http_server.go), natively and under nacre on
# each emulated platform, in the same run. For each: requests per second and the
# p50/p99 latency ApacheBench reports (REQUESTS keep-alive requests over CONCURRENCY
# connections), the throughput of a 1 GiB transfer (16 GETs of a 64 MiB body with curl),
# and, under nacre, the hostcalls per request (`nacre run --stats-json`: every
# hostcall over the requests served; each is one exit to the host). Ratios are against the native run of the same
# server in this run.
#
#   bash ci/bench-services.sh                 # 5000 requests over 50 connections
#   REQUESTS=10000 CONCURRENCY=100 bash ci/bench-services.sh
#
# Needs gcc, go (CGO_ENABLED=0), ab (apache2-utils), curl and /dev/kvm, and a release
# build of nacre (built here if missing). Absolute numbers on a machine whose KVM
# emulates ring 0 (the PVM backend) say nothing about hardware virtualization.

set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
requests="${REQUESTS:-5000}"
concurrency="${CONCURRENCY:-50}"
port="${PORT:-18480}"
work="$(mktemp -d)"
trap 'rm -rf "$work"; [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true' EXIT

for tool in gcc go ab curl python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing" >&2; exit 2; }
done
cargo build --release -q -p nacre-host
nacre="$repo_root/target/release/nacre"
gcc -static -O2 -o "$work/c_server" tests/apps/http_server.c
CGO_ENABLED=0 go build -o "$work/go_server" tests/apps/http_server.go

wait_listening() {
    for _ in $(seq 300); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "error: nothing listens on port $port" >&2
    return 1
}

# Start the server command and wait until it listens.
start_server() {
    "$@" >"$work/server.out" 2>"$work/server.err" &
    server_pid=$!
    wait_listening
}

# Stop it (GET /quit) and wait for it.
stop_server() {
    curl -s "http://127.0.0.1:$port/quit" >/dev/null
    wait "$server_pid"
    server_pid=""
}

# The load on a server the command starts. Prints "rps p50_ms p99_ms".
measure_load() {
    start_server "$@"
    ab -q -k -n "$requests" -c "$concurrency" "http://127.0.0.1:$port/bench" >"$work/ab.txt"
    stop_server
    grep -q "^Failed requests: *0$" "$work/ab.txt" || { echo "error: ab saw failures" >&2; cat "$work/ab.txt" >&2; exit 1; }
    awk '/^Requests per second:/ { rps = $4 } $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
         END { print rps, p50, p99 }' "$work/ab.txt"
}

# 1 GiB from a server the command starts, 64 MiB per GET. Prints MB/s.
measure_transfer() {
    start_server "$@"
    local start end size
    start="$(date +%s.%N)"
    for _ in $(seq 16); do
        size="$(curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:$port/big/67108864")"
        [ "$size" = 67108864 ] || { echo "error: a 64 MiB body came back as $size bytes" >&2; exit 1; }
    done
    end="$(date +%s.%N)"
    stop_server
    python3 -c "print(f'{1024 / ($end - $start):.1f}')"
}

# Hostcalls per request of a run's --stats-json: every hostcall is one exit to the
# host (a GHCB IOIO event on SEV-SNP, a TDVMCALL on TDX).
hostcalls_per_request() {
    python3 - "$1" "$requests" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
calls = sum(v for v in stats.get("hostcalls", {}).values() if isinstance(v, (int, float)))
print(f"{calls / int(sys.argv[2]):.1f}")
PY
}

printf '%-8s %-13s %9s %8s %8s %8s %9s %8s %9s\n' server where req/s ratio p50_ms p99_ms MB/s ratio calls/req
for server in c go; do
    app="$work/${server}_server"
    read -r n_rps n_p50 n_p99 < <(measure_load "$app" "$port")
    n_mbps="$(measure_transfer "$app" "$port")"
    printf '%-8s %-13s %9s %8s %8s %8s %9s %8s %9s\n' "$server" native "$n_rps" 1.00 "$n_p50" "$n_p99" "$n_mbps" 1.00 -
    "$nacre" package "$app" -o "$work/$server.igvm" --arg "$port" --listen "$port" 2>/dev/null
    for platform in emulated-snp emulated-tdx; do
        run=("$nacre" run "$work/$server.igvm" --platform "$platform" --memory 512M)
        read -r rps p50 p99 < <(measure_load "${run[@]}" --stats-json "$work/stats.json")
        exits="$(hostcalls_per_request "$work/stats.json")"
        mbps="$(measure_transfer "${run[@]}")"
        ratio="$(python3 -c "print(f'{$rps / $n_rps:.4f}')")"
        mratio="$(python3 -c "print(f'{$mbps / $n_mbps:.4f}')")"
        printf '%-8s %-13s %9s %8s %8s %8s %9s %8s %9s\n' "$server" "$platform" "$rps" "$ratio" "$p50" "$p99" "$mbps" "$mratio" "$exits"
    done
done
