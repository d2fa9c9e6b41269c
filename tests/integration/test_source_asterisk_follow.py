"""``ccmon source asterisk --follow`` on a live, growing queue_log file into the real Kafka:
rotated while followed (logrotate ``create``: the new file exists, empty, while Asterisk still
writes to the old one), rotated again twice while the source was stopped, restarted from
``--state``: every line's events arrive exactly once. Killed with SIGKILL instead: nothing is
lost (what was sent but not yet recorded in the state is sent again, with the same ids, which
the engine counts once). ~15 s."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.kafka_topics import read_topic
from harness.processes import stop

from streams.sources.asterisk import map_file

pytestmark = pytest.mark.integration


def call_lines(n0: int, n: int, t0: int = 1795000000) -> list[str]:
    """``n`` calls (offered, answered, completed): three lines each."""
    lines = []
    for i in range(n0, n0 + n):
        t = t0 + 60 * i
        lines += [
            f"{t}|c{i}|support|NONE|ENTERQUEUE||tel-{i:04d}|1",
            f"{t + 5}|c{i}|support|SIP/80{i % 10}|CONNECT|5|b{i}|2",
            f"{t + 65}|c{i}|support|SIP/80{i % 10}|COMPLETECALLER|5|60|1",
        ]
    return lines


class Log:
    """The queue_log being written, and every line ever written to it (for the expectation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written: list[str] = []

    def append(self, lines: list[str], path: Path | None = None) -> None:
        with (path or self.path).open("a") as handle:
            handle.write("".join(line + "\n" for line in lines))
        self.written += lines

    def expected_ids(self, tmp: Path) -> Counter[str]:
        every = tmp / "every_line_once"
        every.write_text("".join(line + "\n" for line in self.written))
        return Counter(event["event_id"] for event in map_file(str(every)))


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"asterisk-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):  # best effort: the topic is unique to this test
            admin.delete_topics([name])
        admin.close()


def start(log: Path, state: Path, kafka: str, topic: str, err: Path, batch: int = 7) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "source",
            "asterisk",
            str(log),
            "--follow",
            "--poll",
            "0.2",
            "--state",
            str(state),
            "--kafka",
            kafka,
            "--topic",
            topic,
            "--batch",
            str(batch),
        ],
        stdout=subprocess.DEVNULL,
        stderr=err.open("ab"),
    )


def caught_up(log: Path, state: Path, timeout: float = 60.0) -> None:
    """Wait until the saved position is the end of ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            saved = json.loads(state.read_text())
        except (OSError, ValueError):
            saved = {}
        stat = log.stat()
        if saved.get("inode") == stat.st_ino and saved.get("offset") == stat.st_size:
            return
        time.sleep(0.1)
    pytest.fail(f"the source did not reach the end of {log} within {timeout:.0f} s")


def consumed(kafka: str, topic: str, timeout: float = 60.0) -> Counter[str]:
    """Event ids on the topic (the source has stopped: everything it sent is there)."""
    messages = read_topic(kafka, topic, timeout=timeout)
    return Counter(event["event_id"] for message in messages for event in json.loads(message.value))


def test_live_rotated_file_arrives_in_kafka_once(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    log, state, err = Log(tmp_path / "queue_log"), tmp_path / "state.json", tmp_path / "source.err"
    log.append(call_lines(0, 10))
    proc = start(log.path, state, kafka_bootstrap, topic, err)
    try:
        # The source has opened the file and read what it held (a loaded machine may take
        # seconds to start it; a file rotated before the source ever opened it is not its to read).
        caught_up(log.path, state)
        log.append(call_lines(10, 10))  # growing
        time.sleep(0.8)
        os.rename(log.path, tmp_path / "queue_log.1")  # logrotate: rename, create the new file...
        log.path.touch()
        time.sleep(0.8)  # ... polled meanwhile: the new file is there, empty
        log.append(call_lines(20, 3), tmp_path / "queue_log.1")  # ... Asterisk still writes to the old one
        time.sleep(0.8)
        log.append(call_lines(23, 7))  # ... until it reopens
        time.sleep(1.5)
        log.append(["1795000000|x|support"])  # a bad line: reported, skipped
        log.append(call_lines(30, 5))
        caught_up(log.path, state)
    finally:
        assert stop(proc, timeout=30) == 0
    # While the source is stopped: more lines, then two rotations (.1 -> .2, queue_log -> .1).
    log.append(call_lines(35, 5))
    os.rename(tmp_path / "queue_log.1", tmp_path / "queue_log.2")
    os.rename(log.path, tmp_path / "queue_log.1")
    log.append(call_lines(40, 5))
    time.sleep(0.05)
    os.rename(tmp_path / "queue_log.1", tmp_path / "queue_log.2")  # (the older .2 is overwritten:
    os.rename(log.path, tmp_path / "queue_log.1")  # it had been read to its end)
    log.append(call_lines(45, 5))
    proc = start(log.path, state, kafka_bootstrap, topic, err)
    try:
        caught_up(log.path, state)
    finally:
        assert stop(proc, timeout=30) == 0

    expected = log.expected_ids(tmp_path)
    assert sum(expected.values()) == len(expected) == 50 * 5  # per call: offered, answered, on_call, ended, available
    ids = consumed(kafka_bootstrap, topic)
    assert ids == expected, err.read_text()[-3000:]  # every event, once
    stderr = err.read_text()
    assert "queue_log:22: skipped: too_few_fields" in stderr  # line 22 of the file after the rotation
    assert "was rotated while stopped: resuming in" in stderr


def test_a_killed_source_loses_nothing(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    """SIGKILL in the middle of reading a long file: events are in Kafka, the state does not
    have them yet. The restarted source sends them again (same ids: the engine counts them
    once) and loses nothing, also of the lines written while it was down."""
    from kafka import KafkaConsumer, TopicPartition

    log, state, err = Log(tmp_path / "queue_log"), tmp_path / "state.json", tmp_path / "source.err"
    log.append(call_lines(0, 20000))  # 60,000 lines: a few seconds of reading, one checkpoint at 50,000
    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    partitions = [TopicPartition(topic, p) for p in range(3)]
    proc = start(log.path, state, kafka_bootstrap, topic, err, batch=50)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sent = sum(probe.end_offsets(partitions).values())
            saved = json.loads(state.read_text())["offset"] if state.exists() else 0
            if sent and not saved:
                proc.send_signal(signal.SIGKILL)
                break
            assert not saved, "the first 50,000 lines were read before the kill: make the file longer"
            time.sleep(0.02)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        log.append(call_lines(20000, 100))  # while it is down
        proc = start(log.path, state, kafka_bootstrap, topic, err, batch=50)
        time.sleep(1.0)
        log.append(call_lines(20100, 100))
        caught_up(log.path, state)
    finally:
        assert stop(proc, timeout=30) == 0
        probe.close()

    expected = log.expected_ids(tmp_path)
    ids = consumed(kafka_bootstrap, topic, timeout=120)
    assert set(ids) == set(expected), err.read_text()[-3000:]  # nothing lost, nothing else
    resent = sum(ids.values()) - len(expected)
    assert resent > 0 and set(ids.values()) <= {1, 2}  # what was sent before the kill, once more
    print(f"{len(expected):,} events, {resent:,} sent again after the SIGKILL")
