#!/usr/bin/env bash
# The one test command (README, `make test`, .ci/run): installs ccmon with its test and lint
# extras, runs the linters (ruff check, ruff format --check, mypy: a finding fails the run), starts the real Apache Kafka
# and Redis (deploy/local/services.sh), runs every test, and stops the services again if it
# started them. Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
venv="${CCMON_VENV:-$repo/.venv}"
python="$venv/bin/python"  # made by install.sh (PYTHON: the interpreter that makes it)
export PATH="$venv/bin:$PATH"  # `ccmon` itself, for the tests that run the command

echo "== installing ccmon and its test and lint dependencies"
bash deploy/local/install.sh dev
bash deploy/local/install-test-tools.sh

echo "== lint: ruff check, ruff format --check and mypy (make lint)"
"$python" -m ruff check kpi_core streams tests bench
"$python" -m ruff format --check kpi_core streams tests bench
"$python" -m mypy

started=0
if ! bash deploy/local/services.sh status >/dev/null 2>&1; then
  echo "== starting Apache Kafka and Redis"
  bash deploy/local/services.sh up
  started=1
else
  echo "== Apache Kafka and Redis already running"
  bash deploy/local/services.sh status
fi
stop() {
  if [ "$started" = 1 ]; then
    echo "== stopping Apache Kafka and Redis"
    bash deploy/local/services.sh down || true
  fi
}
trap stop EXIT
eval "$(bash deploy/local/services.sh env)"
export KAFKA_BOOTSTRAP REDIS_URL

echo "== pytest (KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP)"
set +e
# CCMON_TEST_WORKERS: pytest-xdist processes (0: one process, no xdist); a test module stays
# in one process (--dist loadfile), so module-scoped fixtures (servers, topics) are made once.
# Tests marked `serial` (they measure rates or growth) run afterwards, alone.
workers="${CCMON_TEST_WORKERS:-3}"
if [ "$workers" = 0 ]; then
  "$python" -m pytest --durations=30 "$@"
  rc=$?
else
  "$python" -m pytest -n "$workers" --dist loadfile --durations=30 -m "not serial" "$@"
  rc=$?
  "$python" -m pytest -p no:xdist -m serial "$@"
  rc_serial=$?
  # 5: nothing selected. Only a failure when neither run selected anything.
  if [ "$rc" = 5 ] && [ "$rc_serial" != 5 ]; then rc=$rc_serial; fi
  if [ "$rc" = 0 ] && [ "$rc_serial" != 5 ]; then rc=$rc_serial; fi
fi
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
