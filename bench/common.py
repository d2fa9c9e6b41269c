"""Shared plumbing of the benchmarks: the services, topics, producing, processes, results.

Nothing here measures anything; each ``bench_*.py`` script does, and prints a JSON document
of its numbers (``--json FILE``) that ``bench/run_all.py`` aggregates.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
OUT = BENCH / "out"
SERVICES = REPO / "deploy" / "local" / "services.sh"


# -- services --------------------------------------------------------------------------------
def services_env() -> tuple[str, str]:
    """``(KAFKA_BOOTSTRAP, REDIS_URL)`` as deploy/local/services.sh names them."""
    done = subprocess.run(["bash", str(SERVICES), "env"], capture_output=True, text=True, check=True)
    env = dict(line.split("=", 1) for line in done.stdout.split())
    return os.environ.get("KAFKA_BOOTSTRAP", env["KAFKA_BOOTSTRAP"]), os.environ.get("REDIS_URL", env["REDIS_URL"])


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def services_reachable() -> bool:
    kafka, redis_url = services_env()
    host, port = kafka.split(",")[0].rsplit(":", 1)
    match = re.match(r"redis://(?:[^@]*@)?([^:/]+):(\d+)", redis_url)
    redis_ok = match is not None and _reachable(match.group(1), int(match.group(2)))
    return _reachable(host, int(port)) and redis_ok


def ensure_services() -> bool:
    """Start Kafka and Redis with ``services.sh up`` when they do not answer (idempotent).
    Returns whether this call started them. Never stops anything."""
    if services_reachable():
        return False
    print("Kafka/Redis not reachable: deploy/local/services.sh up", file=sys.stderr)
    subprocess.run(["bash", str(SERVICES), "up"], check=True)
    return True


# -- Kafka -----------------------------------------------------------------------------------
def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def create_topic(kafka: str, topic: str, partitions: int) -> None:
    import kafka as kafka_lib

    admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True)
    finally:
        admin.close()


def delete_topics(kafka: str, topics: Iterable[str]) -> None:
    """Remove the benchmark's own topics (never anybody else's: names carry a uuid)."""
    import kafka as kafka_lib

    names = [t for t in topics if re.search(r"-[0-9a-f]{10}", t)]
    if not names:
        return
    with contextlib.suppress(Exception):
        admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
        try:
            existing = set(admin.list_topics())
            gone = [t for t in names if t in existing]
            if gone:
                admin.delete_topics(gone)
        finally:
            admin.close()


def entity_key(event: dict[str, Any]) -> str:
    """The entity an event belongs to (as ``streams.kafka.produce.partition_key``)."""
    from streams.kafka.produce import partition_key

    return partition_key(event) or str(event.get("event_id", ""))


def partition_of(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as ccmon's KafkaSink uses."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def envelopes(
    events: Iterable[dict[str, Any]], partitions: int, per_message: int = 100
) -> Iterator[tuple[int, bytes, bytes, int]]:
    """``(partition, key, value, n)``: JSON-array envelopes of <= ``per_message`` events of one
    partition each, the partition picked by each event's entity key (one entity's events stay
    in one partition, in order), as ``ccmon simulate --kafka`` writes them."""
    buffers: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for event in events:
        key = entity_key(event)
        part = partition_of(key, partitions)
        buf = buffers.setdefault(part, [])
        buf.append((key, event))
        if len(buf) >= per_message:
            yield _envelope(part, buffers.pop(part))
    for part in sorted(buffers):
        yield _envelope(part, buffers[part])


def _envelope(part: int, items: list[tuple[str, dict[str, Any]]]) -> tuple[int, bytes, bytes, int]:
    value = json.dumps([e for _k, e in items], separators=(",", ":")).encode()
    return part, items[0][0].encode(), value, len(items)


def producer(kafka: str, **overrides: Any) -> Any:
    import kafka as kafka_lib

    options: dict[str, Any] = {"acks": 1, "linger_ms": 20, "batch_size": 1 << 20, "max_request_size": 8 << 20}
    options.update(overrides)
    return kafka_lib.KafkaProducer(bootstrap_servers=kafka, **options)


def produce_envelopes(
    kafka: str, topic: str, events: Sequence[dict[str, Any]], partitions: int = 4, per_message: int = 100
) -> int:
    """Create ``topic`` and write ``events`` to it as envelopes; returns the message count."""
    create_topic(kafka, topic, partitions)
    prod = producer(kafka)
    messages = 0
    for part, key, value, _n in envelopes(events, partitions, per_message):
        prod.send(topic, key=key, value=value, partition=part)
        messages += 1
    prod.flush(300)
    prod.close()
    return messages


def produce_single(
    kafka: str, topic: str, events: Sequence[dict[str, Any]], key_field: str, partitions: int = 4
) -> int:
    """Create ``topic`` and write one event per message, keyed by ``event[key_field]`` (else
    its entity), in the given order."""
    create_topic(kafka, topic, partitions)
    prod = producer(kafka)
    for event in events:
        key = str(event.get(key_field) or entity_key(event))
        prod.send(
            topic,
            key=key.encode(),
            value=json.dumps(event, separators=(",", ":")).encode(),
            partition=partition_of(key, partitions),
        )
    prod.flush(300)
    prod.close()
    return len(events)


# -- ccmon processes ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ccmon(args: Sequence[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """``python -m streams.cli ARGS`` in its own process group, output to ``log``."""
    out: Any = subprocess.DEVNULL
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )


def worker_args(kafka: str, redis_url: str, topic: str, prefix: str, group: str, clock: str = "wall") -> list[str]:
    return [
        "worker",
        "--kafka",
        kafka,
        "--redis",
        redis_url,
        "--topic",
        topic,
        "--dlq-topic",
        f"{topic}-dlq",
        "--group",
        group,
        "--redis-prefix",
        prefix,
        "--web-port",
        "0",
        "--clock",
        clock,
        "--log-level",
        os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
        "--insecure-dev",
    ]  # throwaway state: no customer key secret needed (one in the environment wins)


def exporter_args(redis_url: str, prefix: str, port: int, clock: str = "wall") -> list[str]:
    return [
        "exporter",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--redis",
        redis_url,
        "--redis-prefix",
        prefix,
        "--clock",
        clock,
        "--log-level",
        "WARNING",
    ]


def stop(processes: Iterable[subprocess.Popen[bytes] | None], timeout: float = 30) -> None:
    """SIGTERM to each process we started (by its own pid), SIGKILL after ``timeout``."""
    alive = [p for p in processes if p is not None and p.poll() is None]
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in alive:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def scrape(port: int, path: str = "/metrics", timeout: float = 120) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        return bytes(response.read())


def wait_http(port: int, deadline_seconds: float = 60) -> None:
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            scrape(port, "/healthz", timeout=5)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def sample_values(text: str, name: str) -> dict[str, float]:
    """``{labels text: value}`` of every sample of metric ``name`` in Prometheus text."""
    out: dict[str, float] = {}
    prefix = name + "{"
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, _sep, value = line[len(name) :].rpartition(" ")
            out[labels] = float(value)
        elif line.startswith(name + " "):
            out[""] = float(line.rsplit(" ", 1)[1])
    return out


def labels_of(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', text))


def redis_cpu(redis_url: str) -> dict[str, Any]:
    """The Redis server's CPU so far (``INFO cpu``: user + system seconds, main thread and
    all) and the time spent in each command (``INFO commandstats``: microseconds). A run's
    cost is the difference of two readings: nothing is reset, so other clients of a shared
    Redis count too (the exporter, :class:`Counted`'s polls: small next to the batches)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        cpu = client.info("cpu")
        stats = client.info("commandstats")
    finally:
        client.close()
    return {
        "cpu_seconds": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "usec": {name.removeprefix("cmdstat_"): int(row["usec"]) for name, row in stats.items()},
    }


def redis_cpu_delta(before: dict[str, Any], after: dict[str, Any], events: int) -> dict[str, Any]:
    """Per event, between two :func:`redis_cpu` readings: the server's CPU, the time in scripts
    (``EVAL``/``EVALSHA``: the worker's batch script and the exporter's reads) and each
    command's time above 1 % of the CPU. Redis 7 also counts the commands a script calls under
    their own names (``HINCRBY``... inside ``EVAL``), so command times overlap and are not summed."""
    usec = {k: v - before["usec"].get(k, 0) for k, v in after["usec"].items()}
    cpu = after["cpu_seconds"] - before["cpu_seconds"]
    top = {k: v / events for k, v in sorted(usec.items(), key=lambda kv: -kv[1]) if v > cpu * 1e6 / 100}
    return {
        "cpu_us_per_event": cpu * 1e6 / events,
        "script_us_per_event": (usec.get("eval", 0) + usec.get("evalsha", 0)) / events,
        "commands_us_per_event": top,
    }


class Counted:
    """Events the worker group has applied, read from Redis (the pipeline counters that
    ``ccmon_events_total``, ``_rejected_total`` and ``_duplicate_total`` show on /metrics):
    a few small reads, so it can be polled often without stealing the worker's CPU the way
    rendering /metrics would."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        import redis

        from kpi_core.config import Config
        from streams.redis.state import RedisState

        self.state = RedisState(redis.Redis.from_url(redis_url), Config(), prefix=prefix)

    def __call__(self) -> float:
        counts = self.state.counts()
        return sum(sum(counts.get(name, {}).values()) for name in ("events", "rejected", "duplicates"))


def drain_rate(
    count: Any, total: int, timeout: float, poll: float = 0.1, processes: Sequence[subprocess.Popen[bytes]] = ()
) -> dict[str, float]:
    """Poll ``count()`` until ``total`` events are counted. Returns the steady rate (between
    10 % and 90 % counted: start-up and the group's join excluded), first-to-last rate, and
    seconds from the call to the first event counted."""
    started = time.perf_counter()
    marks: dict[float, float] = {}
    first: tuple[float, float] | None = None
    done = 0.0
    while True:
        done = count()
        now = time.perf_counter()
        if done > 0 and first is None:
            first = (now, done)
        for share in (0.1, 0.9):
            if share not in marks and done >= share * total:
                marks[share] = now
        if done >= total:
            break
        if now - started > timeout:
            raise RuntimeError(f"stuck at {done:,.0f} of {total:,} events after {timeout:.0f} s")
        for p in processes:
            if p.poll() is not None:
                raise RuntimeError(f"process {p.args!r} exited with {p.returncode} at {done:,.0f} of {total:,} events")
        time.sleep(poll)
    assert first is not None
    steady = 0.8 * total / max(marks[0.9] - marks[0.1], 1e-9)
    return {
        "steady": steady,
        "first_to_last": (total - first[1]) / max(now - first[0], 1e-9),
        "to_first": first[0] - started,
        "seconds": now - started,
    }


def clear_prefix(redis_url: str, prefix: str) -> int:
    """Delete the keys of a benchmark's own prefix (``prefix:*``), nothing else."""
    import redis

    if not re.search(r"-[0-9a-f]{10}$", prefix):
        raise ValueError(f"refusing to clear a prefix that is not a benchmark's own: {prefix!r}")
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
    for i in range(0, len(keys), 2000):
        client.unlink(*keys[i : i + 2000])
    return len(keys)


# -- results ---------------------------------------------------------------------------------
def write_json(path: str | None, document: dict[str, Any]) -> None:
    text = json.dumps(document, indent=2, sort_keys=True)
    if path:
        Path(path).write_text(text + "\n")
    else:
        print(text)


def cell(values: Sequence[float], fmt: str, unit: str = "") -> str:
    """``median (min-max)`` of ``values`` (one value: just it)."""
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{format(med, fmt)}{unit}"
    return f"{format(med, fmt)}{unit} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
