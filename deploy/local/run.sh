#!/usr/bin/env bash
# `make run`: install ccmon, start the real Apache Kafka and Redis, then a ccmon worker and
# the exporter on :9108 in the foreground. Ctrl-C stops the worker and the exporter; the
# services keep running (deploy/local/services.sh down stops them).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
venv="${CCMON_VENV:-$repo/.venv}"
python="$venv/bin/python"  # made by install.sh (PYTHON: the interpreter that makes it)
export PATH="$venv/bin:$PATH"  # `ccmon` itself, for the tests that run the command
port="${CCMON_EXPORTER_PORT:-9108}"

bash deploy/local/install.sh
bash deploy/local/services.sh up
eval "$(bash deploy/local/services.sh env)"
export CCMON_KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP" CCMON_REDIS_URL="$REDIS_URL"
export CCMON_CONFIG="${CCMON_CONFIG:-$repo/deploy/config/ccmon.toml}"
# The worker names customer records in Redis by an HMAC keyed with this secret: without one
# given, a local one is made once and kept with the services' data (another one would orphan
# the customer records written so far).
if [[ -z "${CCMON_CUSTOMER_KEY_SECRET:-}${CCMON_CUSTOMER_KEY_SECRET_FILE:-}" ]]; then
  secret_file="${CCMON_SERVICES_DIR:-$repo/.services}/customer-key-secret"
  if [[ ! -s "$secret_file" ]]; then
    mkdir -p "$(dirname "$secret_file")"
    (umask 077 && "$python" -c 'import secrets; print(secrets.token_hex(32))' > "$secret_file")
  fi
  export CCMON_CUSTOMER_KEY_SECRET_FILE="$secret_file"
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$python" -m streams.cli exporter --port "$port" &
pids+=($!)
"$python" -m streams.cli worker &
pids+=($!)
echo "ccmon is running: worker consuming ccmon.events on $KAFKA_BOOTSTRAP, state in $REDIS_URL"
echo "metrics: http://127.0.0.1:$port/metrics   (Ctrl-C to stop)"
wait -n "${pids[@]}"
