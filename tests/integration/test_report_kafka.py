"""``ccmon report --kafka`` against the real broker: the golden events produced to a new topic
(two partitions, envelopes, Kafka timestamps = the events' times, as a live feed stamps them)
give the same report as the file; messages stamped outside ``--from`` minus the lateness
horizon .. ``--to`` plus it are not read, and the read ends."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from harness.kafka_topics import create_topics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "basic.jsonl"
FLAGS = ["--from", "2026-11-20T09:00:00Z", "--to", "2026-11-20T11:00:00Z", "--interval", "30m"]
TO = 1795172400  # 2026-11-20T11:00:00Z
#: The default config's lateness horizon (a ``today`` window: 25 h) + max_future_seconds.
MARGIN = 25 * 3600 + 300


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "report", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_report_from_kafka_equals_report_from_the_file(kafka_bootstrap: str) -> None:
    import kafka

    lines = [line for line in GOLDEN.read_text().splitlines() if line.strip()]
    topic = f"report-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, topic, f"{topic}-dlq", partitions=2)
    producer = kafka.KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for i in range(0, len(lines), 3):  # envelopes of up to three events, stamped with the first one's time
        events = [json.loads(line) for line in lines[i : i + 3]]
        producer.send(
            topic, value=json.dumps(events).encode(), key=str(i % 2).encode(), timestamp_ms=int(events[0]["ts"] * 1000)
        )
    # In the range by event time, but stamped too early and too late to be read: they would
    # add two offered calls if they were.
    stray = {"type": "call.offered", "ts": 1795165500, "queue": "support"}
    for stamp, name in ((1795165200 - MARGIN - 3600, "early"), (TO + MARGIN + 3600, "late")):
        producer.send(
            topic,
            value=json.dumps({**stray, "event_id": name, "call_id": name}).encode(),
            key=b"0",
            timestamp_ms=stamp * 1000,
        )
    producer.flush(60)
    producer.close()

    from_file = report(str(GOLDEN), *FLAGS)
    assert from_file.returncode == 0, from_file.stderr
    started = time.monotonic()
    from_kafka = report("--kafka", kafka_bootstrap, "--topic", topic, *FLAGS)
    assert from_kafka.returncode == 0, from_kafka.stderr
    assert time.monotonic() - started < 60  # it stops at the range's end, never waits for more
    assert from_kafka.stdout == from_file.stdout
    assert from_kafka.stdout.splitlines()[1].split(",")[3:5] == ["support", "10"]
    assert "48 applied, 0 duplicates, 0 rejected" in from_kafka.stderr

    # A week later: nothing of the topic is stamped then, and the report says why it is empty.
    later = report(
        "--kafka",
        kafka_bootstrap,
        "--topic",
        topic,
        "--from",
        "2026-11-27T09:00:00Z",
        "--to",
        "2026-11-27T10:00:00Z",
        "--interval",
        "1h",
    )
    assert later.returncode == 0 and later.stdout.count("\n") == 1  # the header only
    assert (
        f"none of the {len(range(0, len(lines), 3)) + 2} messages of topic {topic!r} is stamped between" in later.stderr
    )


def test_a_missing_topic_is_a_clear_error(kafka_bootstrap: str) -> None:
    topic = f"report-missing-{uuid.uuid4().hex[:8]}"
    proc = report("--kafka", kafka_bootstrap, "--topic", topic, *FLAGS)
    assert proc.returncode == 2
    assert f"--topic: topic {topic!r} does not exist" in proc.stderr
