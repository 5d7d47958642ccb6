#!/usr/bin/env bash
# Print the KVM/SEV UAPI values nacre pins in host/src/vmm/uapi.rs, from the
# kernel headers of a Debian linux-libc-dev package (default: 7.2.13-1, from sid),
# without installing it. Not part of CI: run it by hand when the pinned values are
# to be checked against another kernel's headers, and compare with docs/kvm-uapi.md.
#
#   bash ci/uapi-probe/run.sh [VERSION]
set -euo pipefail
version="${1:-7.2.13-1}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb http://deb.debian.org/debian sid main" >"$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1)
apt-get "${apt_opts[@]}" update >/dev/null
(cd "$work" && apt-get "${apt_opts[@]}" download "linux-libc-dev=$version" >/dev/null)
dpkg-deb -x "$work"/linux-libc-dev_*.deb "$work/root"
inc="$work/root/usr/include"
gcc -I"$inc" -I"$inc/x86_64-linux-gnu" "$here/probe.c" -o "$work/probe"
"$work/probe"
