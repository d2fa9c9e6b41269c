"""`ccmon simulate --kafka` against the real broker: the same seed sent to a topic and
written to a file gives the same events, in JSON-array envelopes of at most --batch events,
each message holding one partition key's events."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from harness.kafka_topics import read_topic

pytestmark = pytest.mark.integration

ARGS = ["--start", "2026-11-20T08:00:00Z", "--hours", "0.5", "--queues", "2", "--seed", "7", "--quiet"]


def test_simulate_to_kafka_equals_simulate_to_file(kafka_bootstrap: str, tmp_path: Path) -> None:

    path = tmp_path / "day.jsonl"
    subprocess.run(
        [sys.executable, "-m", "streams.cli", "simulate", *ARGS, "--out", str(path)], check=True, timeout=120
    )
    from_file = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(from_file) > 100

    topic = f"sim-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "simulate",
            *ARGS,
            "--kafka",
            kafka_bootstrap,
            "--topic",
            topic,
            "--batch",
            "25",
        ],
        check=True,
        timeout=120,
    )

    from_kafka: list[dict[str, object]] = []
    keys_by_partition: dict[int, set[bytes | None]] = {}
    for message in read_topic(kafka_bootstrap, topic):
        envelope = json.loads(message.value)
        assert isinstance(envelope, list)
        assert 1 <= len(envelope) <= 25
        from_kafka.extend(envelope)
        keys_by_partition.setdefault(message.partition, set()).add(message.key)

    def canonical(events: list[dict[str, object]]) -> list[str]:
        return sorted(json.dumps(e, sort_keys=True) for e in events)

    assert canonical(from_kafka) == canonical(from_file)
    # Every message is keyed, so one entity's events stay in one partition, in order.
    assert all(None not in keys for keys in keys_by_partition.values())
