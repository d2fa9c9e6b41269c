#!/usr/bin/env bash
# Install ccmon (editable) into the project's virtual environment, made when missing:
#   deploy/local/install.sh            runtime only
#   deploy/local/install.sh test       + test dependencies
#   deploy/local/install.sh dev        + lint tools
# The environment is CCMON_VENV (default <repo>/.venv), made by PYTHON (default python3) with
# `-m venv`, so Debian's and Ubuntu's own Python (which refuse a system-wide pip install:
# externally-managed-environment) work as any other; where that Python lacks its venv module,
# Debian's python3-venv is installed. Prints nothing on success but pip's own errors.
# The build backend is installed once and used without pip's build isolation, so a second
# run downloads nothing. The install compiles the engine with mypyc when a C compiler is at
# hand (setup.py; CCMON_NATIVE=0 skips it, =1 requires it), ~45 s on 2 cores.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
base="${PYTHON:-python3}"
venv="${CCMON_VENV:-$repo/.venv}"

say() { printf '%s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  command -v "$base" >/dev/null || { say "install.sh: $base not found: install Python 3.11 or newer"; exit 1; }
  "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { say "install.sh: ccmon needs Python 3.11 or newer, $base is $("$base" -V 2>&1)"; exit 1; }
  say "making the project's virtual environment $venv ($("$base" -V 2>&1))"
  if ! "$base" -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    # Debian and Ubuntu ship the venv module (and ensurepip) separately.
    command -v apt-get >/dev/null || { say "install.sh: '$base -m venv' failed; install Python's venv module"; exit 1; }
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    minor="$("$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    say "installing python3-venv (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq "python$minor-venv" >/dev/null 2>&1 || $sudo apt-get install -y -qq python3-venv >/dev/null 2>&1 || {
      $sudo apt-get update -qq >/dev/null
      $sudo apt-get install -y -qq "python$minor-venv" >/dev/null 2>&1 || $sudo apt-get install -y -qq python3-venv >/dev/null
    }
    "$base" -m venv "$venv"
  fi
fi
python="$venv/bin/python"
pip=("$python" -m pip install --quiet --disable-pip-version-check)
# The compiled engine (setup.py) needs a C compiler and Python's headers; on Debian and Ubuntu
# they are installed when missing (gcc; python3.X-dev for the distribution's own Python).
# Elsewhere, or with CCMON_NATIVE=0, ccmon installs interpreted (the same results, slower).
headers() { "$python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; }
if [ "${CCMON_NATIVE:-auto}" != 0 ] && command -v apt-get >/dev/null && { ! command -v cc >/dev/null || ! headers; }; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  packages=(gcc libc6-dev)
  headers || packages+=("python$minor-dev")
  say "installing ${packages[*]} (apt-get) to compile the engine"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    $sudo apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 || say "install.sh: could not install ${packages[*]}"
  }
fi
# The build's requirements (pyproject.toml [build-system]: setuptools, wheel, and the pinned mypy
# whose mypyc compiles the engine, setup.py), installed once and used without build isolation.
mapfile -t build_requires < <("$python" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' "$repo/pyproject.toml")
"${pip[@]}" "${build_requires[@]}"
target="$repo"
[ -n "${1:-}" ] && target="$repo[$1]"
"${pip[@]}" --no-build-isolation -e "$target"
