#!/usr/bin/env bash
# Install ccmon (editable) into the current Python, with optional extras:
#   deploy/local/install.sh            runtime only
#   deploy/local/install.sh test       + test dependencies
# The build backend is installed once and used without pip's build isolation, so a second
# run downloads nothing.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
pip=("$python" -m pip install --quiet --disable-pip-version-check)
"$python" -c 'import setuptools, wheel, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 68)' 2>/dev/null ||
  "${pip[@]}" "setuptools>=68" wheel
target="$repo"
[ -n "${1:-}" ] && target="$repo[$1]"
"${pip[@]}" --no-build-isolation -e "$target"
