#!/usr/bin/env bash
# Debian packages the test suite runs for real, installed only when missing:
# Prometheus + promtool and Alertmanager + amtool (alert rules, dashboards' queries),
# Chromium (the wallboard browser test). Called by deploy/local/test.sh.
# Also the pinned helm of the chart tests (install-helm.sh: built with go install, cached), and the
# pinned Alertmanager >= 0.26 of the Microsoft Teams delivery test (install-alertmanager.sh, the same way).
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/install-helm.sh"
bash "$(dirname "${BASH_SOURCE[0]}")/install-alertmanager.sh"
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v chromium >/dev/null || missing+=(chromium)
[ "${#missing[@]}" = 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing ${missing[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
