"""End to end on the real services: golden events into Kafka -> ``ccmon worker`` -> Redis ->
``ccmon exporter`` -> /metrics over HTTP, with malformed messages dead-lettered.

One worker and one exporter for the whole module (a consumer group takes a while to join);
each run has its own topics, consumer group and Redis key prefix.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import create_topics, entity_key, read_topic
from harness.pipeline import Pipeline, settled
from harness.processes import free_port, stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AT = "2026-11-20T10:00:00Z"
AT_EPOCH = 1795168800
#: Malformed messages and the reason each is rejected for.
MALFORMED: list[tuple[bytes, str]] = [
    (b"{this is not json", "invalid_json"),
    (b'{"event_id": "m2", "type": "call.teleported", "ts": 1795165200, "queue": "support"}', "unknown_type"),
    (
        b'{"event_id": "m3", "type": "call.offered", "ts": "yesterday", "queue": "support", "call_id": "x"}',
        "bad_timestamp",
    ),
]
#: Inside an array envelope: a bad element among good ones.
BAD_ELEMENT = {
    "event_id": "m4",
    "type": "survey.response",
    "ts": 1795165300,
    "queue": "support",
    "survey": "csat",
    "score": 9,
}  # score_out_of_range on a 1-5 scale
BAD_ELEMENT_REASON = "score_out_of_range"


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    import kafka

    p = Pipeline(kafka_bootstrap, redis_url, tmp_path_factory.mktemp("e2e"))
    create_topics(kafka_bootstrap, p.topic, p.dlq, keep_forever=False)

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

    p.start("worker", *p.worker_args(at=AT_EPOCH, web_port=free_port(), batch_within="0.1"))
    p.start("exporter", *p.exporter_args(at=AT_EPOCH, host="127.0.0.1"))
    try:
        yield p
    finally:
        p.close()


def test_golden_values_through_kafka_and_redis(
    pipeline: Pipeline, golden_lines: list[bytes], golden_expected: dict[Any, float]
) -> None:
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
    settled(pipeline, len(golden_lines) + len(MALFORMED) + 1)
    dead: dict[str, bytes] = {}
    for record in read_topic(pipeline.kafka, pipeline.dlq, at_least=len(MALFORMED) + 1, timeout=30):
        headers = dict(record.headers or [])
        dead[headers["ccmon-reason"].decode()] = record.value
        assert headers["ccmon-error"]
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
            [
                sys.executable,
                "-m",
                "streams.cli",
                "worker",
                "--kafka",
                f"127.0.0.1:{port}",
                "--redis",
                redis_url,
                "--redis-prefix",
                f"dead-{uuid.uuid4().hex[:8]}",
                "--web-port",
                str(free_port()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
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
        lag = {
            dict(labels)["partition"]: value
            for (name, labels), value in pipeline.metrics().items()
            if name == "ccmon_consumer_lag" and dict(labels)["topic"] == pipeline.topic
        }
        if len(lag) == 4 and not any(lag.values()):
            break
        time.sleep(1)
    assert lag == {"0": 0, "1": 0, "2": 0, "3": 0}
