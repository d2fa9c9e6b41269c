"""Producing events to Kafka: JSON-array envelopes, one partition's events per message.

Used by ``ccmon simulate`` and every ``ccmon source`` that writes to Kafka.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kpi_core.errors import ConfigError

#: What a producer writes: an event (a dict), or a line of text sent as it is (a malformed
#: record the worker must reject on its own).
Record = dict[str, Any] | str


def dumps(record: Record) -> str:
    """One JSONL line (without the newline) for a record."""
    if isinstance(record, str):
        return record
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


ENTITY_KEYS = ("call_id", "callback_id", "ticket_id", "agent_id", "session_id", "contact_id", "event_id")


def partition_key(record: Record) -> str:
    """The entity a record belongs to: its call, callback, ticket, agent, session..."""
    if isinstance(record, dict):
        for key in ENTITY_KEYS:
            value = record.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


class KafkaSink:
    """Writes records to Kafka as JSON-array envelopes of up to ``batch`` events, grouped
    per partition: each record's entity key (:func:`partition_key`) picks the partition the
    way Kafka's default partitioner would (murmur2), and every message carries events of one
    partition only, sent to that partition with the first event's key.

    ``producer`` is a ``kafka.KafkaProducer`` (or anything with ``send``, ``flush`` and
    ``partitions_for``), so tests can pass a fake.
    """

    def __init__(self, producer: Any, topic: str, batch: int = 100) -> None:
        if batch < 1:
            raise ConfigError("--batch", f"must be >= 1, got {batch}")
        self.producer = producer
        self.topic = topic
        self.batch = batch
        partitions = producer.partitions_for(topic)
        if not partitions:
            raise ConfigError("--topic", f"topic {topic!r} has no partitions (does it exist?)")
        self.partitions = sorted(partitions)
        self._buffers: dict[int, list[tuple[str, str]]] = {}
        self.messages = 0
        self.events = 0

    def partition_for(self, key: str) -> int:
        try:
            from kafka.partitioner.default import murmur2
        except ImportError:  # pragma: no cover - kafka-python is a dependency
            import zlib

            return self.partitions[zlib.crc32(key.encode()) % len(self.partitions)]
        return self.partitions[(murmur2(key.encode()) & 0x7FFFFFFF) % len(self.partitions)]

    def write(self, records: Iterable[Record]) -> None:
        for record in records:
            key = partition_key(record)
            partition = self.partition_for(key)
            buffer = self._buffers.setdefault(partition, [])
            buffer.append((key, dumps(record)))
            if len(buffer) >= self.batch:
                self._send(partition)

    def _send(self, partition: int) -> None:
        buffer = self._buffers.pop(partition, None)
        if not buffer:
            return
        value = ("[" + ",".join(_as_array_item(text) for _key, text in buffer) + "]").encode("utf-8")
        self.producer.send(self.topic, value=value, key=buffer[0][0].encode("utf-8"), partition=partition)
        self.messages += 1
        self.events += len(buffer)

    def flush(self) -> None:
        for partition in list(self._buffers):
            self._send(partition)
        self.producer.flush()


def _as_array_item(text: str) -> str:
    """A record as an element of a JSON array. A malformed (non-JSON) record becomes a JSON
    string, which the worker rejects as ``not_an_object`` on its own, without spoiling the
    rest of the envelope."""
    try:
        json.loads(text)
    except ValueError:
        return json.dumps(text)
    return text
