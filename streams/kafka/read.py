"""Reading a topic's past with the plain Kafka client (``ccmon rebuild``, ``ccmon report
--kafka``): a consumer outside any group, a plan per partition (from the first message stamped
at or after an instant up to the first one stamped after another, or the end offsets taken when
the read starts), and the messages of those offsets in batches.

Nothing is committed: the reader has no group. A read that stops advancing (every partition
still short of its end and no record for :data:`STALL_SECONDS`) fails instead of hanging.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kafka.errors import KafkaError

from kpi_core.errors import CcmonError
from streams.worker import Message

if TYPE_CHECKING:
    from streams.settings import Settings

#: Seconds without a single new record before a read gives up on the partitions left.
STALL_SECONDS = 60.0


class KafkaReadError(CcmonError):
    """The read cannot start or go on (Kafka unreachable, topic missing, no progress)."""


@dataclass
class PartitionPlan:
    partition: int
    start: int  # first offset read
    end: int  # end offset when the read started (exclusive)
    earliest: int  # first offset the topic still holds
    latest: int  # the topic's end offset when the read started (``end`` unless a later message was stamped too late)

    @property
    def messages(self) -> int:
        return max(0, self.end - self.start)


def consumer(settings: Settings, client_id: str) -> Any:
    """A ``KafkaConsumer`` without a group, with the settings' servers and security; raises
    :class:`KafkaReadError` (or the security settings' own error) when Kafka cannot be used."""
    import kafka

    from streams import security

    try:
        with security.kafka_failures() as failures:  # also keeps kafka-python's own retries out of the log
            client = kafka.KafkaConsumer(
                bootstrap_servers=settings.kafka_servers,
                group_id=None,
                enable_auto_commit=False,
                client_id=client_id,
                request_timeout_ms=30000,
                max_poll_records=settings.batch_size,
                **security.kafka_client_kwargs(settings),
            )
    except (KafkaError, OSError) as exc:
        refused = security.kafka_config_error(settings, failures)
        if refused is not None:  # a wrong password or certificate
            raise refused from None
        raise KafkaReadError(
            f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc or type(exc).__name__}"
            f"{security.last_failure(settings, failures)}"
        ) from None
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # its own retries while reading are noisy
    return client


def plan(client: Any, topic: str, read_from: float, read_to: float | None = None) -> list[PartitionPlan]:
    """Each partition's offsets from the first message stamped at or after ``read_from`` (epoch
    seconds) up to the first one stamped after ``read_to``, or its end offset now (without
    ``read_to``, or when none is stamped that late). Empty when the topic does not exist (or has
    no partitions): the caller says so in its own words."""
    import kafka

    partitions = client.partitions_for_topic(topic)
    if not partitions:
        return []
    tps = [kafka.TopicPartition(topic, p) for p in sorted(partitions)]
    ends = client.end_offsets(tps)
    earliest = client.beginning_offsets(tps)
    found = client.offsets_for_times({tp: int(read_from * 1000) for tp in tps})
    after = client.offsets_for_times({tp: int(read_to * 1000) + 1 for tp in tps}) if read_to is not None else {}
    plans = []
    for tp in tps:
        first, last = found.get(tp), after.get(tp)
        # None: no message at or after that time, so nothing of the range to read.
        start = ends[tp] if first is None else first.offset
        end = ends[tp] if last is None else min(last.offset, ends[tp])
        plans.append(PartitionPlan(tp.partition, start, max(start, end), earliest[tp], ends[tp]))
    return plans


def timestamp_at(client: Any, topic: str, partition: int, offset: int) -> float | None:
    """The Kafka timestamp (epoch seconds) of the message at ``offset``; None when none comes."""
    import kafka

    tp = kafka.TopicPartition(topic, partition)
    client.assign([tp])
    client.seek(tp, offset)
    try:
        records = client.poll(timeout_ms=10000, max_records=1).get(tp, [])
    finally:
        client.assign([])
    return records[0].timestamp / 1000.0 if records else None


def read(
    client: Any, topic: str, plans: list[PartitionPlan], batch_size: int, stall_seconds: float = STALL_SECONDS
) -> Iterator[list[Message]]:
    """Batches of at most ``batch_size`` messages, from each plan's start to its end; raises
    :class:`KafkaReadError` when no record comes for ``stall_seconds``."""
    import kafka

    todo = {kafka.TopicPartition(topic, p.partition): p for p in plans if p.messages}
    if not todo:
        return
    client.assign(list(todo))
    for tp, first in todo.items():
        client.seek(tp, first.start)
    batch: list[Message] = []
    last_progress = time.monotonic()
    while todo:
        polled = client.poll(timeout_ms=1000, max_records=batch_size)
        for tp, records in polled.items():
            wanted = todo.get(tp)
            if wanted is None:
                continue
            for record in records:
                if record.offset >= wanted.end:
                    break
                batch.append(message(record))
            last_progress = time.monotonic()
        for tp in list(todo):
            if client.position(tp) >= todo[tp].end:
                client.pause(tp)
                del todo[tp]
        while len(batch) >= batch_size:
            yield batch[:batch_size]
            batch = batch[batch_size:]
        if todo and time.monotonic() - last_progress > stall_seconds:
            stuck = ", ".join(f"{tp.partition} at {client.position(tp)} of {todo[tp].end}" for tp in todo)
            raise KafkaReadError(f"no message read for {stall_seconds:.0f} s (partitions {stuck}); is the broker up?")
    if batch:
        yield batch


def message(record: Any) -> Message:
    """The worker's :class:`~streams.worker.Message` of a kafka-python record."""
    timestamp = record.timestamp / 1000.0 if record.timestamp is not None and record.timestamp >= 0 else None
    return Message(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value if record.value is not None else b"",
        timestamp=timestamp,
    )
