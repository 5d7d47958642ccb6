#!/usr/bin/env bash
# nacre's CI: every check a change must pass, in the order a developer would
# run them. Any failing step fails the whole run.
#
#   bash .ci/run          (or: bash ci/run.sh)
#
# On a fresh Debian machine it installs what is missing and can be installed
# (a C compiler, static glibc, musl and dietlibc for the test apps); it cannot
# download Rust toolchains, so it stops with a clear message if a pinned one is
# absent.
# Under CI=true a missing or unusable /dev/kvm is an error, because the
# whole-system tests boot real VMs.

set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

ci="${CI:-false}"

step() {
    printf '\n==> %s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

apt_updated=false
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "cannot install $* automatically (no apt-get); install it and re-run"
    if [ "$apt_updated" = false ]; then
        echo "running apt-get update"
        as_root apt-get update
        apt_updated=true
    fi
    echo "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# The channel a rust-toolchain.toml in directory $1 pins, or nothing.
pinned_channel() {
    local file="$1/rust-toolchain.toml"
    [ -f "$file" ] || return 0
    local channels
    channels="$(sed -n 's/^[[:space:]]*channel[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$file")"
    printf '%s\n' "${channels%%$'\n'*}"
}

# Fails unless rustup has toolchain $1 with rustfmt and clippy (needed by $2).
require_toolchain() {
    local channel="$1" who="$2" components component
    # Listings are captured first: `grep -q` closing a pipe early would make
    # the listing command fail under pipefail.
    if ! grep -Eq "^${channel}(-x86_64-unknown-linux-gnu)?( |$)" <<<"$toolchains"; then
        die "toolchain '$channel' (pinned by $who) is not installed, and toolchains cannot be downloaded here. Installed: $(tr '\n' ' ' <<<"$toolchains")"
    fi
    components="$(rustup component list --toolchain "$channel" --installed)"
    for component in rustfmt clippy; do
        if ! grep -q "^${component}" <<<"$components"; then
            die "toolchain '$channel' (pinned by $who) lacks the $component component"
        fi
    done
    echo "toolchain $channel: ok ($who)"
}

step "Tools"
echo "repository: $repo_root (CI=$ci)"

if ! command -v gcc >/dev/null 2>&1; then
    apt_install gcc libc6-dev
fi
# Static test apps need libc.a; gcc prints the bare name when it has none.
if [ "$(gcc -print-file-name=libc.a)" = "libc.a" ]; then
    apt_install libc6-dev
fi
gcc_version="$(gcc --version)"
echo "${gcc_version%%$'\n'*}"
# The musl builds of the test apps use Debian's musl-gcc wrapper.
if ! command -v musl-gcc >/dev/null 2>&1; then
    apt_install musl-tools
fi
echo "musl-gcc: $(command -v musl-gcc)"
# The Go test apps use Debian's Go toolchain (static with CGO_ENABLED=0).
if ! command -v go >/dev/null 2>&1; then
    apt_install golang-go
fi
echo "go: $(go version)"
# The dietlibc builds of the test apps use Debian's `diet` wrapper.
if ! command -v diet >/dev/null 2>&1; then
    apt_install dietlibc-dev
fi
echo "diet: $(command -v diet)"
# The writable-files tests run Debian's static busybox (tar) and link SQLite
# statically.
if [ ! -x /bin/busybox ]; then
    apt_install busybox-static
fi
echo "busybox: /bin/busybox"
if [ ! -f "$(gcc -print-file-name=libsqlite3.a)" ] ||
    [ "$(gcc -print-file-name=libsqlite3.a)" = "libsqlite3.a" ]; then
    apt_install libsqlite3-dev
fi
echo "libsqlite3.a: $(gcc -print-file-name=libsqlite3.a)"
# The service tests load the servers with ApacheBench and fetch with curl.
if ! command -v ab >/dev/null 2>&1; then
    apt_install apache2-utils
fi
echo "ab: $(command -v ab)"
if ! command -v curl >/dev/null 2>&1; then
    apt_install curl
fi
echo "curl: $(command -v curl)"
# The fuzz targets link libFuzzer, which libfuzzer-sys compiles as C++.
if ! command -v g++ >/dev/null 2>&1; then
    apt_install g++
fi
echo "g++: $(command -v g++)"

command -v cargo >/dev/null 2>&1 ||
    die "cargo is not installed, and toolchains cannot be downloaded here"
if command -v rustup >/dev/null 2>&1; then
    toolchains="$(rustup toolchain list)"
    grep -q '^nightly' <<<"$toolchains" ||
        die "no nightly toolchain is installed (guest-firmware needs one), and toolchains cannot be downloaded here"
    workspace_channel="$(pinned_channel .)"
    if [ -n "$workspace_channel" ]; then
        require_toolchain "$workspace_channel" "rust-toolchain.toml"
    fi
    firmware_channel="$(pinned_channel guest-firmware)"
    if [ -n "$firmware_channel" ]; then
        require_toolchain "$firmware_channel" "guest-firmware/rust-toolchain.toml"
    fi
else
    echo "rustup not found: using the Rust toolchain on PATH"
fi
cargo --version
(cd guest-firmware && cargo --version)

step "KVM"
if [ -e /dev/kvm ] && (exec 3<>/dev/kvm) 2>/dev/null; then
    echo "/dev/kvm: usable"
elif [ "$ci" = "true" ]; then
    die "/dev/kvm is missing or cannot be opened read-write; the whole-system tests need it"
else
    echo "warning: /dev/kvm is missing or not usable: the whole-system tests will fail" >&2
fi

step "test vectors"
# tests/vectors holds unmodified copies of the published known-answer vectors; when
# the published set sits next to the checkout, every copy must still match it.
published="$repo_root/../shared/vectors"
if [ -d "$published" ]; then
    while IFS= read -r -d '' copy; do
        rel="${copy#"$repo_root/tests/vectors/"}"
        cmp -s "$copy" "$published/$rel" || die "tests/vectors/$rel differs from $published/$rel"
    done < <(find "$repo_root/tests/vectors" -mindepth 2 -type f -print0)
    echo "tests/vectors matches $published"
else
    echo "no published vector set at $published; using the copies in tests/vectors"
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "(cd guest-firmware && cargo fmt -- --check)"
(cd guest-firmware && cargo fmt -- --check)

step "(cd tests/fuzz && cargo +nightly fmt -- --check)"
(cd tests/fuzz && cargo +nightly fmt -- --check)

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# --all-targets: the firmware library's host unit tests too (they run under
# `cargo test --workspace`, through tests/tests/firmware_unit.rs).
step "(cd guest-firmware && cargo clippy --all-targets -- -D warnings)"
(cd guest-firmware && cargo clippy --all-targets -- -D warnings)

step "RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps"
RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps

step "cargo test --workspace --release"
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
cargo test --workspace --release 2>&1 | tee "$test_log"

# cargo prints one "test result:" line per test binary; add them up so the
# last line of the run says how many tests ran in total.
totals="$(awk '/^test result:/ { passed += $4; failed += $6 }
               END { printf "%d passed, %d failed", passed, failed }' "$test_log")"

# Every fuzz target of tests/fuzz (cargo-fuzz, libFuzzer, the nightly toolchain) runs
# from its committed seeds for a few seconds: a crash fails the run and names the
# input. ci/fuzz-campaign.sh runs the long campaigns. NACRE_FUZZ_SECONDS changes the
# time per target.
fuzz_seconds="${NACRE_FUZZ_SECONDS:-4}"
step "fuzzing: every target of tests/fuzz for ${fuzz_seconds}s"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz --version
fuzz_work="$(mktemp -d)"
trap 'rm -f "$test_log"; rm -rf "$fuzz_work"' EXIT
bash ci/fuzz-campaign.sh --time "$fuzz_seconds" --jobs 2 --work "$fuzz_work"

printf '\nAll checks passed.\n'
printf 'tests: %s\n' "$totals"
