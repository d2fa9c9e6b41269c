#!/usr/bin/env bash
# The pinned Alertmanager (and its amtool) the Microsoft Teams delivery test runs
# (tests/integration/test_alerts_delivery.py: msteams_configs needs Alertmanager >= 0.26, Debian's
# is 0.25). Built from source with the Go toolchain (`go install`, through the Go module proxy)
# into ~/.cache/ccmon/alertmanager/bin and reused while it is the pinned version. The first build
# takes a few minutes of CPU. Called by deploy/local/install-test-tools.sh.
#   CCMON_ALERTMANAGER_DIR   where the binaries go (default ~/.cache/ccmon/alertmanager/bin)
set -euo pipefail
AM_MODULE=github.com/prometheus/alertmanager
AM_VERSION=v0.28.1
bin_dir="${CCMON_ALERTMANAGER_DIR:-$HOME/.cache/ccmon/alertmanager/bin}"
tools=(alertmanager amtool)

if ! command -v go >/dev/null; then
  echo "install-alertmanager.sh: the Go toolchain (go) is not on PATH; it builds Alertmanager $AM_VERSION" >&2
  exit 1
fi

# `alertmanager --version` of a `go install` build says "version  (branch: , ...)": the module
# version is in the binary's build information.
built_version() {
  go version -m "$1" 2>/dev/null | awk -v m="$AM_MODULE" '$1 == "mod" && $2 == m { print $3 }'
}

packages=()
stale=()
for tool in "${tools[@]}"; do
  if ! [ -x "$bin_dir/$tool" ] || [ "$(built_version "$bin_dir/$tool")" != "$AM_VERSION" ]; then
    packages+=("$AM_MODULE/cmd/$tool@$AM_VERSION")
    stale+=("$bin_dir/$tool")
  fi
done
[ "${#packages[@]}" = 0 ] && exit 0
mkdir -p "$bin_dir"
# go install overwrites only a Go binary: another file there (a script, a non-Go build) goes first.
rm -f "${stale[@]}"
echo "building ${packages[*]} into $bin_dir (go install; a few minutes)" >&2
GOBIN="$bin_dir" GOFLAGS="${GOFLAGS:-} -trimpath" go install "${packages[@]}"
for tool in "${tools[@]}"; do
  found="$(built_version "$bin_dir/$tool")"
  if [ "$found" != "$AM_VERSION" ]; then
    echo "install-alertmanager.sh: $bin_dir/$tool is ${found:-not a Go build of $AM_MODULE}, expected $AM_VERSION" >&2
    exit 1
  fi
done
