"""``ccmon source tickets --kafka`` against the real broker: the whole ITSM incident log sent
to a fresh 3-partition topic arrives as the same events the JSONL output holds, in JSON-array
envelopes of at most --batch events, keyed by ticket, each ticket's events in one partition and
in the order of the log (~10 s)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import read_topic
from realdata import real_data

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATA = real_data("itsm_incident_log/incident_event_log.zip")
MAPPING = REPO / "deploy" / "sources" / "itsm_incident_log.toml"
COMMAND = [
    sys.executable,
    "-m",
    "streams.cli",
    "source",
    "tickets",
    str(DATA),
    "--mapping",
    str(MAPPING),
    "--tenant",
    "itsm",
]


def test_tickets_to_kafka_equal_tickets_to_a_file(kafka_bootstrap: str, tmp_path: Path) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    out = tmp_path / "tickets.jsonl"
    subprocess.run([*COMMAND, "--out", str(out)], check=True, capture_output=True, timeout=120)
    from_file = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(from_file) == 62_857

    topic = f"src-tickets-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    try:
        proc = subprocess.run(
            [*COMMAND, "--kafka", kafka_bootstrap, "--topic", topic, "--batch", "200"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"-> kafka {kafka_bootstrap} topic {topic}; 2 rows not mapped" in proc.stderr

        from_kafka: list[dict[str, Any]] = []
        partition_of: dict[str, set[int]] = {}
        per_ticket: dict[str, list[str]] = {}
        for message in read_topic(kafka_bootstrap, topic):
            envelope = json.loads(message.value)
            assert isinstance(envelope, list) and 1 <= len(envelope) <= 200
            assert message.key == envelope[0]["ticket_id"].encode()
            for event in envelope:
                from_kafka.append(event)
                partition_of.setdefault(event["ticket_id"], set()).add(message.partition)
                per_ticket.setdefault(event["ticket_id"], []).append(event["event_id"])
    finally:
        admin.delete_topics([topic])
        admin.close()

    def canonical(events: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps(e, sort_keys=True) for e in events)

    assert canonical(from_kafka) == canonical(from_file)
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert len({p for parts in partition_of.values() for p in parts}) == 3
    in_file: dict[str, list[str]] = {}
    for event in from_file:
        in_file.setdefault(event["ticket_id"], []).append(event["event_id"])
    assert per_ticket == in_file  # a ticket's events in the log's order
