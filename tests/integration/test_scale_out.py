"""Two workers in one consumer group on four partitions; one is killed with SIGKILL while
events flow and restarted. The KPIs the exporter then serves equal `ccmon replay` of the
same events: nothing lost, nothing counted twice (a batch replayed after the crash is
recognised by its event ids, written in the same Redis transaction as its counts)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import assigned, create_topics, entity_key, simulate
from harness.pipeline import Pipeline
from harness.processes import free_port
from harness.samples import NOT_KPIS, samples_of

from kpi_core.events import parse_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTLE_TIMEOUT = 180.0


def produce(kafka: str, topic: str, lines: list[bytes], per_message: int = 20) -> None:
    """Envelopes of up to ``per_message`` events, keyed by entity, in file order per key."""
    import kafka as kafka_lib

    producer = kafka_lib.KafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    pending: dict[bytes, list[Any]] = {}
    for line in lines:
        event = json.loads(line)
        key = entity_key(event)
        group = pending.setdefault(key, [])
        group.append(event)
        if len(group) >= per_message:
            producer.send(topic, key=key, value=json.dumps(pending.pop(key)).encode())
    for key, group in pending.items():
        producer.send(topic, key=key, value=json.dumps(group).encode())
    producer.flush(60)
    producer.close()


@pytest.fixture
def run(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    create_topics(kafka_bootstrap, p.topic, p.dlq, keep_forever=False)
    try:
        yield p
    finally:
        p.stop_processes()
        p.drop_redis_keys()


def events_total(p: Pipeline) -> float:
    try:
        return sum(v for (name, _), v in p.metrics().items() if name == "ccmon_events_total")
    except OSError:
        return 0.0


def test_sigkill_mid_stream_loses_and_doubles_nothing(run: Pipeline, tmp_path: Path) -> None:
    p = run
    lines = simulate(tmp_path / "day.jsonl")
    assert len(lines) > 1000
    at = math.ceil(max(parse_line(line).ts for line in lines) / 60) * 60 + 60
    half = len(lines) // 2
    worker_args = p.worker_args(at=at, batch_size=5, batch_within="0.1", session_timeout=6)
    p.start("exporter", *p.exporter_args(at=at, host="127.0.0.1"))
    a = p.start("worker-a", *worker_args, "--web-port", str(free_port()))
    p.start("worker-b", *worker_args, "--web-port", str(free_port()))

    # Both workers must own partitions before events arrive: with the first half already in
    # the topic, the first to join would read it all, and killing a worker that never held a
    # partition proves nothing.
    deadline = time.monotonic() + 90
    while not all(assigned(p.logs[name], p.topic) for name in ("worker-a", "worker-b")):
        assert time.monotonic() < deadline, f"the group did not split the partitions:\n{p.log_tail()}"
        assert all(proc.poll() is None for proc in p.processes), f"a process exited:\n{p.log_tail()}"
        time.sleep(0.2)
    produce(p.kafka, p.topic, lines[:half])

    # Kill A with SIGKILL as soon as processing is under way, while it holds partitions.
    deadline = time.monotonic() + 90
    while events_total(p) < 1:
        assert time.monotonic() < deadline, f"no progress:\n{p.log_tail()}"
        time.sleep(0.05)
    a_partitions = assigned(p.logs["worker-a"], p.topic)
    assert a_partitions, f"worker A holds no partition of {p.topic} at the kill:\n{p.log_tail()}"
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    killed_at = events_total(p)
    produce(p.kafka, p.topic, lines[half:])
    p.start("worker-a-again", *worker_args, "--web-port", str(free_port()))

    replay = subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", str(tmp_path / "day.jsonl"), "--at", str(at), "--quiet"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    want = {k: v for k, v in samples_of(replay.stdout.decode()).items() if k[0] not in NOT_KPIS}
    want_events = sum(v for (name, _), v in want.items() if name == "ccmon_events_total")
    assert killed_at < want_events  # the kill really happened mid-stream

    deadline = time.monotonic() + SETTLE_TIMEOUT
    got: dict[Any, float] = {}
    previous: dict[Any, float] | None = None
    while time.monotonic() < deadline:
        try:
            current = p.metrics()
        except OSError:
            time.sleep(0.5)
            continue
        got = {k: v for k, v in current.items() if k[0] not in NOT_KPIS}
        if sum(v for (name, _), v in got.items() if name == "ccmon_events_total") >= want_events and got == previous:
            break
        previous = got
        time.sleep(1.0)
    else:
        pytest.fail(f"the counts did not settle within {SETTLE_TIMEOUT:.0f} s:\n{p.log_tail()}")

    duplicates = sum(v for (name, _), v in current.items() if name == "ccmon_events_duplicate_total")
    print(
        f"events {want_events:.0f}, A killed holding partitions {a_partitions} after {killed_at:.0f} counted, "
        f"redelivered as duplicates {duplicates:.0f}"
    )
    missing = {k: v for k, v in want.items() if k not in got}
    extra = {k: v for k, v in got.items() if k not in want}
    wrong = {k: (got[k], v) for k, v in want.items() if k in got and abs(got[k] - v) > 1e-9 * max(1.0, abs(v))}
    assert not missing and not extra and not wrong, (
        f"missing {list(missing.items())[:5]}\nextra {list(extra.items())[:5]}\nwrong {list(wrong.items())[:10]}"
    )
