"""Kafka for a test of its own: topics (create, delete), events keyed by their entity and sent
as JSON-array envelopes, a simulated day, and a worker's partition assignment."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kpi_core.events import parse_line


def create_topics(kafka: str, topic: str, dlq: str, partitions: int = 4, keep_forever: bool = True) -> None:
    """The events topic and its DLQ. ``keep_forever``: ``retention.ms=-1`` on the events topic
    (the tests stamp messages with event times days old, which a time-based retention could
    delete mid-test); else the broker's defaults."""
    import kafka as kafka_lib

    configs = {"configs": {"retention.ms": "-1"}} if keep_forever else {}
    admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
    admin.create_topics(
        {
            topic: {"num_partitions": partitions, "replication_factor": 1, **configs},
            dlq: {"num_partitions": 1, "replication_factor": 1},
        },
        wait_for_metadata=True,
    )
    admin.close()


def delete_topics(kafka: str, *topics: str) -> None:
    """Delete a run's topics, best effort (they are unique to the run)."""
    import kafka as kafka_lib

    try:
        admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
        admin.delete_topics(list(topics))
        admin.close()
    except Exception:  # best effort: the topics are unique to the run
        pass


def read_topic(kafka: str, topic: str, at_least: int = 0, timeout: float = 60.0, **config: Any) -> list[Any]:
    """Every message on ``topic``, from the beginning to its end offsets, once it holds at least
    ``at_least`` messages; in partition order. ``config``: more KafkaConsumer settings (TLS,
    SASL, fetch sizes). The partitions are assigned explicitly: a subscription without a group
    waits for a metadata refresh that a loaded machine can miss, and then reads nothing."""
    import kafka as kafka_lib

    consumer = kafka_lib.KafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False, group_id=None, **config)
    try:
        deadline = time.monotonic() + timeout
        while not (numbers := consumer.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"topic {topic} has no partitions after {timeout} s"
            time.sleep(0.1)
        partitions = [kafka_lib.TopicPartition(topic, n) for n in sorted(numbers)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: dict[int, list[Any]] = {tp.partition: [] for tp in partitions}
        while True:
            ends = consumer.end_offsets(partitions)
            read = sum(map(len, records.values()))
            if read >= at_least and all(consumer.position(tp) >= end for tp, end in ends.items()):
                return [record for n in sorted(records) for record in records[n]]
            assert time.monotonic() < deadline, f"topic {topic}: {read} messages read in {timeout} s, {ends}"
            for tp, batch in consumer.poll(timeout_ms=200).items():
                records[tp.partition] += batch
    finally:
        consumer.close()


def entity_key(event: dict[str, Any]) -> bytes:
    """The Kafka key of an event: its entity (call, ticket...), as producers should key them."""
    for field in ("call_id", "ticket_id", "callback_id", "agent_id", "session_id", "contact_id"):
        if event.get(field):
            return str(event[field]).encode()
    return str(event["event_id"]).encode()


def envelopes(lines: Sequence[bytes], per_message: int = 20) -> list[tuple[bytes, bytes, int]]:
    """``(key, value, timestamp_ms)`` messages: JSON arrays of up to ``per_message`` events
    of one entity key, in file order per key, stamped with their newest event's time."""
    pending: dict[bytes, list[Any]] = {}
    out: list[tuple[bytes, bytes, int]] = []

    def flush(key: bytes) -> None:
        group = pending.pop(key)
        newest = max(parse_line(json.dumps(e).encode()).ts for e in group)
        out.append((key, json.dumps(group).encode(), int(newest * 1000)))

    for line in lines:
        event = json.loads(line)
        key = entity_key(event)
        pending.setdefault(key, []).append(event)
        if len(pending[key]) >= per_message:
            flush(key)
    for key in list(pending):
        flush(key)
    return out


def produce_timed(kafka: str, topic: str, lines: Sequence[bytes], per_message: int = 20) -> int:
    """Send ``lines`` as :func:`envelopes` (Kafka timestamp = newest event time, as
    ``ccmon rebuild`` expects of a producer); returns the number of messages."""
    import kafka as kafka_lib

    producer = kafka_lib.KafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    messages = envelopes(lines, per_message)
    for key, value, timestamp_ms in messages:
        producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms)
    producer.flush(60)
    producer.close()
    return len(messages)


class Flow(threading.Thread):
    """Produces ``lines`` in time order, 100 at a time, spread over ``seconds``; every send is
    confirmed (a broker that is away meanwhile only delays them: the producer retries)."""

    def __init__(self, kafka: str, topic: str, lines: Sequence[bytes], seconds: float) -> None:
        super().__init__(daemon=True)
        self.kafka, self.topic, self.lines, self.seconds = kafka, topic, lines, seconds
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        import kafka as kafka_lib

        try:
            producer = kafka_lib.KafkaProducer(bootstrap_servers=self.kafka, acks="all", linger_ms=5)
            chunks = [self.lines[i : i + 100] for i in range(0, len(self.lines), 100)]
            for chunk in chunks:
                futures = [producer.send(self.topic, key=key, value=value) for key, value, _ts in envelopes(chunk)]
                producer.flush(180)
                for future in futures:
                    future.get(timeout=1)
                self.sent += len(futures)
                time.sleep(self.seconds / len(chunks))
            producer.close()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout: float = 240) -> int:
        """Wait for the last send; the number of messages sent."""
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        assert self.error is None, f"the producer failed: {self.error!r}"
        return self.sent


def simulate(path: Path) -> list[bytes]:
    """``ccmon simulate``'s 1.5 h of two queues (seed 11) into ``path``; its lines."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "simulate",
            "--start",
            "2026-11-20T08:00:00Z",
            "--hours",
            "1.5",
            "--queues",
            "2",
            "--seed",
            "11",
            "--quiet",
            "--out",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def assigned(log: Path, topic: str) -> str | None:
    """The partitions of ``topic`` in a worker's latest assignment (from Faust's log table),
    ``None`` before its first assignment, ``""`` when it was given none of them."""
    text = log.read_text(errors="replace")
    last = text.rfind("Setting newly assigned partitions")
    if last < 0:
        return None
    found = re.search(r"\| " + re.escape(topic) + r" +\| (\{[^}]*\}) +\|", text[last:])
    return found.group(1) if found else ""
