#!/usr/bin/env bash
# The pinned helm the chart tests run (tests/deploy/test_helm_chart.py: helm lint, helm template
# of deploy/helm/ccmon). Built from source with the Go toolchain (`go install`, through the Go
# module proxy) into ~/.cache/ccmon/helm/bin and reused while it is the pinned version. The
# first build takes a few minutes of CPU. Called by deploy/local/install-test-tools.sh.
#   CCMON_HELM_DIR   where the binary goes (default ~/.cache/ccmon/helm/bin)
set -euo pipefail
HELM_MODULE=helm.sh/helm/v4
HELM_VERSION=v4.3.2
bin_dir="${CCMON_HELM_DIR:-$HOME/.cache/ccmon/helm/bin}"
helm="$bin_dir/helm"

if ! command -v go >/dev/null; then
  echo "install-helm.sh: the Go toolchain (go) is not on PATH; it builds helm $HELM_VERSION" >&2
  exit 1
fi

# `helm version` of a `go install` build says only "v4.3": the module version is in the binary's
# build information.
built_version() {
  go version -m "$1" 2>/dev/null | awk -v m="$HELM_MODULE" '$1 == "mod" && $2 == m { print $3 }'
}

if [ -x "$helm" ] && [ "$(built_version "$helm")" = "$HELM_VERSION" ]; then
  exit 0
fi
mkdir -p "$bin_dir"
echo "building helm $HELM_VERSION into $bin_dir (go install; a few minutes)" >&2
GOBIN="$bin_dir" GOFLAGS="${GOFLAGS:-} -trimpath" go install "$HELM_MODULE/cmd/helm@$HELM_VERSION"
found="$(built_version "$helm")"
if [ "$found" != "$HELM_VERSION" ]; then
  echo "install-helm.sh: $helm is ${found:-not a Go build of $HELM_MODULE}, expected $HELM_VERSION" >&2
  exit 1
fi
