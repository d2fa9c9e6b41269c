"""Asking Kafka about consumer groups with the plain client: the workers' group's lag per
partition (:class:`LagProbe`, for the exporter and the stuck-partition watchdog) and how many
members a group has now (``ccmon rebuild --clear`` refuses while the workers' group has any)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.settings import Settings

log = logging.getLogger("ccmon.kafka")


def group_members(settings: Settings, client_id: str, logger: logging.Logger = log) -> int | None:
    """How many members the consumer group ``settings.group_id`` has now (``None`` when it
    cannot be told: the reason is logged on ``logger``)."""
    import kafka

    from streams.security import kafka_client_kwargs

    try:
        admin = kafka.KafkaAdminClient(
            bootstrap_servers=settings.kafka_servers,
            client_id=client_id,
            request_timeout_ms=10000,
            **kafka_client_kwargs(settings),
        )
    except Exception as exc:
        logger.warning("cannot describe consumer group %s: %s", settings.group_id, exc)
        return None
    try:
        info = admin.describe_groups([settings.group_id]).get(settings.group_id, {})
        return len(info.get("members") or [])
    except Exception as exc:
        logger.warning("cannot describe consumer group %s: %s", settings.group_id, exc)
        return None
    finally:
        admin.close()


class LagProbe:
    """The consumer group's lag per partition (log end offset minus committed offset), read
    from Kafka with the plain client: it holds for the whole group, whichever worker owns a
    partition, and goes on being right when the workers stall."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: Any = None
        #: The committed offsets of the last measurement (``None``: nothing committed yet).
        self.committed: dict[tuple[str, int], int | None] = {}

    def measure(self) -> dict[tuple[str, int], float]:
        import kafka

        from streams.security import kafka_client_kwargs

        topic = self.settings.events_topic
        if self._consumer is None:
            self._consumer = kafka.KafkaConsumer(
                bootstrap_servers=self.settings.kafka_servers,
                group_id=self.settings.group_id,
                enable_auto_commit=False,
                client_id="ccmon-lag-probe",
                request_timeout_ms=10000,
                **kafka_client_kwargs(self.settings),
            )
        consumer = self._consumer
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [kafka.TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        lag: dict[tuple[str, int], float] = {}
        committed_offsets: dict[tuple[str, int], int | None] = {}
        for tp in tps:
            committed = consumer.committed(tp)
            position = committed if committed is not None else starts[tp]
            lag[(topic, tp.partition)] = float(max(0, ends[tp] - position))
            committed_offsets[(topic, tp.partition)] = committed
        self.committed = committed_offsets
        return lag

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
