"""The cardinality guard on the real Redis, through the worker's batch processor: a flood of
invented queue names within one batch, across batches and across two workers admits exactly
the limit, dead-letters the rest as ``too_many_series``, counts them, and leaves Redis with
keys for the admitted queues only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kpi_core.config import config_from_dict
from kpi_core.kpis import flatten, queues_of, snapshot
from streams.redis.keys import encode
from streams.redis.state import RedisState
from streams.worker import BatchProcessor, Message

pytestmark = pytest.mark.integration

AT = 1795003200.0
CONFIG = config_from_dict({"limits": {"queues_per_tenant": 5}})


def envelope(offset: int, queues: list[str]) -> Message:
    events = [
        {"event_id": f"e-{q}-{offset}", "type": "call.offered", "ts": AT - 30, "queue": q, "call_id": f"c-{q}-{offset}"}
        for q in queues
    ]
    return Message("events", 0, offset, None, json.dumps(events).encode(), AT)


def test_a_flood_of_queue_names_admits_exactly_the_limit(redis_client: Any, redis_prefix: str) -> None:
    clock = lambda: AT  # noqa: E731
    first = BatchProcessor(CONFIG, RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock), clock)
    second = BatchProcessor(CONFIG, RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock), clock)
    # One batch with 3 legitimate queues and 40 invented ones: the first five names win.
    result = first.process([envelope(0, ["support", "sales", "billing"] + [f"junk-{i}" for i in range(40)])])
    assert result.accepted == 5
    assert [d.reason for d in result.dead] == ["too_many_series"] * 38
    assert all(dict(d.headers)["ccmon-reason"] == b"too_many_series" for d in result.dead)
    # Another worker, another batch: admitted names still work, new ones are still refused.
    result = second.process([envelope(1, ["support", "junk-0", "junk-1", "junk-2", "junk-3", "fresh"])])
    assert result.accepted == 3
    assert [json.loads(d.value)["queue"] for d in result.dead] == ["junk-2", "junk-3", "fresh"]

    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock)
    admitted = ["billing", "junk-0", "junk-1", "sales", "support"]
    assert queues_of(CONFIG, state) == {"default": admitted}
    flat = flatten(snapshot(CONFIG, state, AT))
    assert flat[("ccmon_events_rejected_total", (("reason", "too_many_series"),))] == 41
    assert flat[("ccmon_calls_offered_total", (("tenant", "default"), ("queue", "_all")))] == 8
    # Redis holds keys for the admitted queues only.
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{redis_prefix}:*", count=1000)]
    scoped = {part for key in keys for part in key.split(":") if part in {encode(f"junk-{i}") for i in range(40)}}
    assert scoped == {"junk-0", "junk-1"}
