"""Asking Kafka about consumer groups with the plain client: how many members a group has now
(``ccmon rebuild --clear`` refuses while the workers' group has any)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.settings import Settings

log = logging.getLogger("ccmon.kafka")


def group_members(settings: Settings, client_id: str, logger: logging.Logger = log) -> int | None:
    """How many members the consumer group ``settings.group_id`` has now (``None`` when it
    cannot be told: the reason is logged on ``logger``)."""
    import kafka

    from streams.security import kafka_client_kwargs

    try:
        admin = kafka.KafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id=client_id,
                                       request_timeout_ms=10000, **kafka_client_kwargs(settings))  # fmt: skip
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
