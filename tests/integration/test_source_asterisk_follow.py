"""``ccmon source asterisk --follow`` on a live, growing, rotated queue_log file, stopped and
restarted (and the file rotated while it was stopped): every line's events arrive in the
real Kafka exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def call_lines(n0: int, n: int, t0: int = 1795000000) -> list[str]:
    """``n`` calls (offered, answered, completed): three lines each."""
    lines = []
    for i in range(n0, n0 + n):
        t = t0 + 60 * i
        lines += [f"{t}|c{i}|support|NONE|ENTERQUEUE||tel-{i:04d}|1",
                  f"{t + 5}|c{i}|support|SIP/80{i % 10}|CONNECT|5|b{i}|2",
                  f"{t + 65}|c{i}|support|SIP/80{i % 10}|COMPLETECALLER|5|60|1"]  # fmt: skip
    return lines


def append(path: Path, lines: list[str]) -> None:
    with path.open("a") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()


def start(log: Path, state: Path, kafka: str, topic: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "source", "asterisk", str(log), "--follow", "--poll", "0.2",
         "--state", str(state), "--kafka", kafka, "--topic", topic, "--batch", "7"],
        stdout=subprocess.DEVNULL, stderr=out.open("ab"),
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def consumed(kafka: str, topic: str, want: int, timeout: float = 60.0) -> list[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=1000, group_id=None)  # fmt: skip
    ids: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(ids) < want and time.monotonic() < deadline:
            for message in consumer:
                ids += [event["event_id"] for event in json.loads(message.value)]
        time.sleep(1.5)  # anything extra (a duplicate) would arrive now
        for message in consumer:
            ids += [event["event_id"] for event in json.loads(message.value)]
    finally:
        consumer.close()
    return ids


def test_live_rotated_file_arrives_in_kafka_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"asterisk-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()
    log, state, err = tmp_path / "queue_log", tmp_path / "state.json", tmp_path / "source.err"
    append(log, call_lines(0, 10))

    proc = start(log, state, kafka_bootstrap, topic, err)
    try:
        time.sleep(1.5)
        append(log, call_lines(10, 10))                   # growing
        time.sleep(0.8)
        os.rename(log, tmp_path / "queue_log.1")          # rotated by logrotate...
        append(tmp_path / "queue_log.1", call_lines(20, 3))  # ...Asterisk still wrote a few to the old one
        append(log, call_lines(23, 7))                    # then reopened the new file
        time.sleep(1.5)
        append(log, ["1795000000|x|support"])  # a bad line: reported, skipped
        append(log, call_lines(30, 5))
        time.sleep(1.0)
    finally:
        stop(proc)
    # While the source is stopped: more lines, then another rotation.
    append(log, call_lines(35, 5))
    os.rename(log, tmp_path / "queue_log.2")
    append(log, call_lines(40, 5))
    proc = start(log, state, kafka_bootstrap, topic, err)
    try:
        time.sleep(2.0)
    finally:
        stop(proc)

    expected = 45 * 5  # per call: offered, answered, on_call, ended, available
    ids = consumed(kafka_bootstrap, topic, expected)
    assert len(ids) == expected, err.read_text()[-2000:]
    assert len(set(ids)) == expected  # once each
    assert "skipped: too_few_fields" in err.read_text()
