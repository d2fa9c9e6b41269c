"""End to end on the real services: golden events into Kafka -> ``ccmon worker`` -> Redis ->
``ccmon exporter`` -> /metrics over HTTP, with malformed messages dead-lettered.

One worker and one exporter for the whole module (a consumer group takes a while to join);
each run has its own topics, consumer group and Redis key prefix.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AT = "2026-11-20T10:00:00Z"
AT_EPOCH = 1795168800
SETTLE_TIMEOUT = 90.0
#: Malformed messages and the reason each is rejected for.
MALFORMED: list[tuple[bytes, str]] = [
    (b"{this is not json", "invalid_json"),
    (b'{"event_id": "m2", "type": "call.teleported", "ts": 1795165200, "queue": "support"}', "unknown_type"),
    (b'{"event_id": "m3", "type": "call.offered", "ts": "yesterday", "queue": "support", "call_id": "x"}',
     "bad_timestamp"),
]  # fmt: skip
#: Inside an array envelope: a bad element among good ones.
BAD_ELEMENT = {"event_id": "m4", "type": "survey.response", "ts": 1795165300, "queue": "support",
               "survey": "csat", "score": 9}  # fmt: skip  # score_out_of_range on a 1-5 scale
BAD_ELEMENT_REASON = "score_out_of_range"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def entity_key(event: dict[str, Any]) -> bytes:
    for field in ("call_id", "ticket_id", "callback_id", "agent_id", "session_id", "contact_id"):
        if event.get(field):
            return str(event[field]).encode()
    return str(event["event_id"]).encode()


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Stop ``process`` with ``sig`` (SIGKILL after ``timeout`` s); its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return int(process.returncode)


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delete_topics(kafka: str, *topics: str) -> None:
    """Delete a run's topics, best effort (they are unique to the run)."""
    import kafka as kafka_lib

    try:
        admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
        admin.delete_topics(list(topics))
        admin.close()
    except Exception:  # best effort: the topics are unique to the run
        pass


class Pipeline:
    def __init__(self, kafka: str, redis_url: str, tmp: Path) -> None:
        run = uuid.uuid4().hex[:10]
        self.kafka = kafka
        self.redis_url = redis_url
        self.topic = f"ccmon-e2e-{run}"
        self.dlq = f"ccmon-e2e-{run}-dlq"
        self.group = f"ccmon-e2e-{run}"
        self.prefix = f"e2e-{run}"
        self.port = free_port()
        self.tmp = tmp
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: dict[str, Path] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "streams.cli", *args], stdout=out,
                                       stderr=subprocess.STDOUT, env=env)  # fmt: skip
        self.processes.append(process)
        return process

    def log_tail(self) -> str:
        return "\n".join(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}" for name, path in self.logs.items())

    def drop_redis_keys(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)

    def close(self) -> None:
        """Stop the processes, drop the run's Redis keys and its topics (best effort)."""
        for process in self.processes:
            stop(process)
        self.drop_redis_keys()
        delete_topics(self.kafka, self.topic, self.dlq)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The KPI samples of /metrics (without the exporter's own timing)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            samples = samples_of(response.read().decode())
        return {key: value for key, value in samples.items() if not key[0].startswith("ccmon_exporter_")}


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    import kafka

    p = Pipeline(kafka_bootstrap, redis_url, tmp_path_factory.mktemp("e2e"))
    admin = kafka.KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics({p.topic: {"num_partitions": 4, "replication_factor": 1},
                         p.dlq: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)  # fmt: skip
    admin.close()

    golden = Path(__file__).resolve().parents[1] / "golden" / "basic.jsonl"
    events = [json.loads(line) for line in golden.read_bytes().splitlines() if line.strip()]
    producer = kafka.KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    # Every third event alone in its message; the rest in array envelopes per entity key.
    envelopes: dict[bytes, list[dict[str, Any]]] = {}
    for i, event in enumerate(events):
        key = entity_key(event)
        if i % 3 == 0:
            producer.send(p.topic, key=key, value=json.dumps(event).encode())
        else:
            envelopes.setdefault(key, []).append(event)
    for key, group in envelopes.items():
        producer.send(p.topic, key=key, value=json.dumps(group).encode())
    for raw, _reason in MALFORMED:
        producer.send(p.topic, key=b"bad", value=raw)
    producer.send(p.topic, key=b"bad", value=json.dumps([BAD_ELEMENT]).encode())
    producer.flush(30)
    producer.close()

    common = ["--redis", redis_url, "--redis-prefix", p.prefix, "--clock", f"fixed:{AT_EPOCH}"]
    p.start("worker", "worker", "--kafka", kafka_bootstrap, "--topic", p.topic, "--dlq-topic", p.dlq,
            "--group", p.group, "--web-port", str(free_port()), "--batch-within", "0.1", *common)  # fmt: skip
    p.start("exporter", "exporter", "--host", "127.0.0.1", "--port", str(p.port), *common)
    try:
        yield p
    finally:
        p.close()


#: The pipeline counters that account for an event: applied or rejected.
ACCOUNTED = ("ccmon_events_total", "ccmon_events_rejected_total")


def settled(p: Any, expected_events: int, counters: tuple[str, ...] = ACCOUNTED,
            timeout: float = SETTLE_TIMEOUT) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # fmt: skip
    """/metrics once ``counters`` account for ``expected_events`` and two scrapes agree
    (``p``: anything with ``processes``, ``metrics()`` and ``log_tail()``)."""
    deadline = time.monotonic() + timeout
    previous: dict[Any, float] | None = None
    while time.monotonic() < deadline:
        for process in p.processes:
            assert process.poll() is None, f"a process exited ({process.args!r}):\n{p.log_tail()}"
        try:
            current = p.metrics()
        except OSError:
            time.sleep(0.5)
            continue
        counted = sum(v for (name, _), v in current.items() if name in counters)
        if counted >= expected_events and current == previous:
            return current
        previous = current
        time.sleep(1.0)
    pytest.fail(f"the counts did not settle within {timeout:.0f} s:\n{p.log_tail()}")


def test_golden_values_through_kafka_and_redis(pipeline: Pipeline, golden_lines: list[bytes],
                                               golden_expected: dict[Any, float]) -> None:  # fmt: skip
    expected_events = len(golden_lines) + len(MALFORMED) + 1
    got = settled(pipeline, expected_events)
    for (name, labels), value in golden_expected.items():
        for queue in ("support", "_all"):
            key = (name, tuple(sorted((k, queue if k == "queue" else v) for k, v in labels)))
            assert key in got, f"missing {key}"
            assert got[key] == pytest.approx(value, rel=1e-12), key
    assert sum(v for (name, _), v in got.items() if name == "ccmon_events_total") == len(golden_lines)
    assert sum(v for (name, _), v in got.items() if name == "ccmon_events_duplicate_total") == 0
    rejected = {dict(labels)["reason"]: v for (name, labels), v in got.items() if name == "ccmon_events_rejected_total"}
    assert rejected == {reason: 1 for reason in [*(r for _raw, r in MALFORMED), BAD_ELEMENT_REASON]}
    # Nothing but the golden tenant and queue.
    assert {dict(labels).get("tenant") for (_name, labels) in got} <= {"default", None}
    assert {dict(labels).get("queue") for (_name, labels) in got} <= {"support", "_all", None}


def test_malformed_messages_are_dead_lettered(pipeline: Pipeline, golden_lines: list[bytes]) -> None:
    import kafka

    settled(pipeline, len(golden_lines) + len(MALFORMED) + 1)
    consumer = kafka.KafkaConsumer(pipeline.dlq, bootstrap_servers=pipeline.kafka, auto_offset_reset="earliest",
                                   enable_auto_commit=False, consumer_timeout_ms=5000)  # fmt: skip
    dead: dict[str, bytes] = {}
    deadline = time.monotonic() + 30
    while len(dead) < len(MALFORMED) + 1 and time.monotonic() < deadline:
        for record in consumer:
            headers = dict(record.headers or [])
            dead[headers["ccmon-reason"].decode()] = record.value
            assert headers["ccmon-error"]
            if len(dead) == len(MALFORMED) + 1:
                break
    consumer.close()
    want = {reason: raw for raw, reason in MALFORMED}
    want[BAD_ELEMENT_REASON] = json.dumps(BAD_ELEMENT).encode()
    assert set(dead) == set(want), dead
    for reason, raw in want.items():
        if reason == BAD_ELEMENT_REASON:
            assert json.loads(dead[reason]) == BAD_ELEMENT  # the element alone, re-serialised
        else:
            assert dead[reason] == raw  # unchanged


def test_worker_keeps_retrying_a_dead_broker(redis_url: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--kafka", f"127.0.0.1:{port}", "--redis", redis_url,
             "--redis-prefix", f"dead-{uuid.uuid4().hex[:8]}", "--web-port", str(free_port())],
            stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    try:
        # Until its first failed attempt is logged (a loaded machine starts Python slowly), then
        # a little longer: it must still be running, retrying.
        deadline = time.monotonic() + 60
        while "cannot reach Kafka" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.5)
        time.sleep(3)
        assert process.poll() is None, log.read_text()
    finally:
        stop(process)
    text = log.read_text()
    assert f"127.0.0.1:{port}" in text
    assert "cannot reach Kafka" in text
    assert "Traceback" not in text


def test_consumer_lag_is_served(pipeline: Pipeline, golden_lines: list[bytes]) -> None:
    """The worker measures its group's lag (every 10 s) and the exporter serves it: all
    consumed, so 0 on every partition of the events topic."""
    settled(pipeline, len(golden_lines) + len(MALFORMED) + 1)
    deadline = time.monotonic() + 40
    lag: dict[str, float] = {}
    while time.monotonic() < deadline:
        lag = {dict(labels)["partition"]: value for (name, labels), value in pipeline.metrics().items()
               if name == "ccmon_consumer_lag" and dict(labels)["topic"] == pipeline.topic}  # fmt: skip
        if len(lag) == 4 and not any(lag.values()):
            break
        time.sleep(1)
    assert lag == {"0": 0, "1": 0, "2": 0, "3": 0}
