#!/usr/bin/env bash
# Real local services for ccmon, no Docker: a single-node Apache Kafka broker (KRaft) from
# Maven Central's jars, and Debian's redis-server, each on its own port.
#
#   deploy/local/services.sh up       fetch (cached) + start both, wait until ready (idempotent)
#   deploy/local/services.sh down     stop both (SIGTERM, then SIGKILL after 30 s)
#   deploy/local/services.sh status   what runs where; exit 0 when both are up, 3 otherwise
#   deploy/local/services.sh env      KAFKA_BOOTSTRAP=... and REDIS_URL=... (eval-able)
#   deploy/local/services.sh fetch    only fetch and cache Apache Kafka's jars
#   deploy/local/services.sh reset    down, then wipe the data dirs (not the jar cache)
#
# Knobs (environment): CCMON_KAFKA_PORT (19092), CCMON_KAFKA_CONTROLLER_PORT (19093),
# CCMON_REDIS_PORT (16379), CCMON_SERVICES_DIR (<repo>/.services: data, logs, pid files),
# CCMON_CACHE_DIR (~/.cache/ccmon: the jars), CCMON_KAFKA_HEAP (512m).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
pom="$here/kafka-pom.xml"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"

kafka_port="${CCMON_KAFKA_PORT:-19092}"
controller_port="${CCMON_KAFKA_CONTROLLER_PORT:-19093}"
redis_port="${CCMON_REDIS_PORT:-16379}"
services_dir="${CCMON_SERVICES_DIR:-$repo/.services}"
cache_dir="${CCMON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ccmon}"
heap="${CCMON_KAFKA_HEAP:-512m}"

libs="$cache_dir/kafka-$kafka_version/libs"
kafka_dir="$services_dir/kafka"
redis_dir="$services_dir/redis"
kafka_pid_file="$kafka_dir/kafka.pid"
redis_pid_file="$redis_dir/redis.pid"
kafka_log="$kafka_dir/kafka.log"
redis_log="$redis_dir/redis.log"

say() { printf '%s\n' "$*" >&2; }
die() { say "services.sh: $*"; exit 1; }

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

apt_install() {
  # Install Debian packages, refreshing the package lists first when they are missing.
  command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  say "installing $* (apt-get)"
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
  fi
}

need_tools() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v redis-server >/dev/null || apt_install redis-server
  command -v redis-cli >/dev/null || apt_install redis-tools
}

fetch() {
  if [ -f "$libs/.complete" ]; then
    say "Apache Kafka $kafka_version jars: cached in $libs"
    return
  fi
  command -v mvn >/dev/null || apt_install maven
  say "fetching Apache Kafka $kafka_version and its runtime dependencies from Maven Central"
  rm -rf "$libs"
  mkdir -p "$libs"
  mvn -q -B -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime >"$cache_dir/mvn.log" 2>&1 ||
    { cat "$cache_dir/mvn.log" >&2; die "maven could not fetch the Kafka jars"; }
  ls "$libs"/kafka_2.13-"$kafka_version".jar >/dev/null || die "kafka_2.13-$kafka_version.jar missing after fetch"
  touch "$libs/.complete"
  say "cached $(find "$libs" -name '*.jar' | wc -l) jars in $libs"
}

pid_alive() {  # pid file -> 0 when its process runs
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

port_busy() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

write_kafka_config() {
  mkdir -p "$kafka_dir/data"
  cat >"$kafka_dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$kafka_dir/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=48
EOF
  sed "s:@KAFKA_LOG@:$kafka_log:" "$here/log4j.properties" >"$kafka_dir/log4j.properties"
}

kafka_up() {
  if pid_alive "$kafka_pid_file"; then
    say "Kafka: already running (pid $(cat "$kafka_pid_file"), 127.0.0.1:$kafka_port)"
    return
  fi
  for port in "$kafka_port" "$controller_port"; do
    port_busy "$port" && die "port $port is in use by another program; set CCMON_KAFKA_PORT / CCMON_KAFKA_CONTROLLER_PORT"
  done
  fetch
  write_kafka_config
  local cp="$libs/*"
  if [ ! -f "$kafka_dir/data/meta.properties" ]; then
    [ -f "$kafka_dir/cluster.id" ] || java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$kafka_dir/cluster.id"
    say "formatting KRaft storage in $kafka_dir/data"
    java -cp "$cp" -Dlog4j.configuration="file:$kafka_dir/log4j.properties" kafka.tools.StorageTool format \
      -t "$(cat "$kafka_dir/cluster.id")" -c "$kafka_dir/server.properties" >"$kafka_dir/format.log" 2>&1 ||
      { cat "$kafka_dir/format.log" >&2; die "kafka storage format failed"; }
  fi
  say "starting Apache Kafka $kafka_version (KRaft) on 127.0.0.1:$kafka_port"
  : >"$kafka_log"
  nohup setsid java -Xmx"$heap" -Xms"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$kafka_dir/log4j.properties" \
    -cp "$cp" kafka.Kafka "$kafka_dir/server.properties" >"$kafka_dir/stdout.log" 2>&1 </dev/null &
  echo $! >"$kafka_pid_file"
  printf 'waiting for the broker to answer metadata requests' >&2
  if ! python3 "$here/kafka_ready.py" "127.0.0.1:$kafka_port" --timeout 90 --pid "$(cat "$kafka_pid_file")"; then
    tail -n 30 "$kafka_log" "$kafka_dir/stdout.log" >&2 || true
    die "Kafka did not become ready (logs: $kafka_log)"
  fi
}

redis_up() {
  if pid_alive "$redis_pid_file"; then
    say "Redis: already running (pid $(cat "$redis_pid_file"), 127.0.0.1:$redis_port)"
    return
  fi
  port_busy "$redis_port" && die "port $redis_port is in use by another program; set CCMON_REDIS_PORT"
  mkdir -p "$redis_dir"
  cat >"$redis_dir/redis.conf" <<EOF
port $redis_port
bind 127.0.0.1
daemonize yes
pidfile $redis_pid_file
logfile $redis_log
dir $redis_dir
save ""
appendonly no
EOF
  say "starting Redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$redis_port"
  redis-server "$redis_dir/redis.conf"
  for _ in $(seq 1 50); do
    if [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ]; then
      return
    fi
    sleep 0.2
  done
  tail -n 20 "$redis_log" >&2 || true
  die "Redis did not answer PING (log: $redis_log)"
}

stop_pid() {  # name, pid file
  local name="$1" file="$2"
  if ! pid_alive "$file"; then
    rm -f "$file"
    say "$name: not running"
    return
  fi
  local pid
  pid="$(cat "$file")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$file"; say "$name: stopped"; return; }
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$file"
  say "$name: killed after 30 s"
}

logs() {
  say "logs: Kafka $kafka_log, Redis $redis_log"
}

status() {
  local rc=0
  if pid_alive "$kafka_pid_file"; then
    say "Kafka: running, pid $(cat "$kafka_pid_file"), 127.0.0.1:$kafka_port"
  else
    say "Kafka: stopped"
    rc=3
  fi
  if pid_alive "$redis_pid_file"; then
    say "Redis: running, pid $(cat "$redis_pid_file"), 127.0.0.1:$redis_port"
  else
    say "Redis: stopped"
    rc=3
  fi
  logs
  return "$rc"
}

case "${1:-}" in
  up)
    need_tools
    mkdir -p "$services_dir" "$cache_dir"
    kafka_up
    redis_up
    logs
    say "ready: KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port REDIS_URL=redis://127.0.0.1:$redis_port/0"
    ;;
  down)
    stop_pid Kafka "$kafka_pid_file"
    stop_pid Redis "$redis_pid_file"
    logs
    ;;
  status) status ;;
  env)
    echo "KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port"
    echo "REDIS_URL=redis://127.0.0.1:$redis_port/0"
    ;;
  fetch) mkdir -p "$cache_dir"; fetch ;;
  reset)
    "$0" down
    rm -rf "$kafka_dir" "$redis_dir"
    say "wiped $kafka_dir and $redis_dir"
    ;;
  -h | --help | help) usage ;;
  *) usage; exit 2 ;;
esac
