"""An agent's ``agent_calls`` record in Redis in the format before the day counts (``calls``:
every fact of the day, issue #16) at an upgrade: :func:`kpi_core.kpis.live_agents` reads it,
and the worker's next batch that touches the agent converts it, taking back a fact it held."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kpi_core.config import config_from_dict
from kpi_core.engine import AGENT_CALLS, DAY
from kpi_core.events import parse_ts
from kpi_core.kpis import live_agents
from streams.redis.state import RedisState
from streams.worker import BatchProcessor, Message

pytestmark = pytest.mark.integration

AT = parse_ts("2026-11-20T10:00:00Z")  # local midnight (UTC) is AT - 10 h
CONFIG = config_from_dict({"tenants": {"acme": {}}})


def batch(events: list[dict[str, Any]], first: int) -> list[Message]:
    raw = [{"event_id": f"e{first + i}", "tenant": "acme", "queue": "q", **e} for i, e in enumerate(events)]
    return [Message("events", 0, first, None, json.dumps(raw).encode(), AT)]


def test_an_old_agent_calls_record_in_redis_is_read_and_converted(redis_client: Any, redis_prefix: str) -> None:
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT)
    processor = BatchProcessor(CONFIG, state, lambda: AT)
    first = [
        {"type": "agent.state", "ts": AT - 3600, "agent_id": "a", "state": "on_call", "queues": ["q"]},
        {"type": "call.offered", "ts": AT - 900, "call_id": "c1"},
        {"type": "call.answered", "ts": AT - 890, "call_id": "c1", "agent_id": "a"},
        {"type": "call.ended", "ts": AT - 800, "call_id": "c1", "talk_seconds": 90},
        {"type": "call.offered", "ts": AT - 600, "call_id": "x"},
        {"type": "call.ring_no_answer", "ts": AT - 590, "call_id": "x", "agent_id": "a"},
        {"type": "call.offered", "ts": AT - 300, "call_id": "y"},
        {"type": "call.answered", "ts": AT - 290, "call_id": "y", "agent_id": "a"},
    ]
    assert processor.process(batch(first, 0)).accepted == len(first)
    # The record as the version before wrote it: every fact the calls' records gave the agent.
    old = {}
    for call in ("c1", "x", "y"):
        record = state.get_record("call", "acme", call)
        assert record is not None
        old.update(record["agents"]["a"])
    assert sorted(f[0] for f in old.values()) == ["handled", "missed", "talk"]
    state.put_record(AGENT_CALLS, "acme", "a", {"calls": old}, AT + DAY)

    def row() -> tuple[Any, ...]:
        (found,) = live_agents(CONFIG, state, AT, "acme")
        return found["current_call"], found["handled_today"], found["missed_today"]

    assert row() == ("y", 1, 1)
    # Late: c1's caller had hung up before the answer (c1 is no longer handled); y ends.
    second = [
        {"type": "call.abandoned", "ts": AT - 895, "call_id": "c1"},
        {"type": "call.ended", "ts": AT - 100, "call_id": "y", "talk_seconds": 190},
    ]
    assert processor.process(batch(second, 100)).accepted == len(second)
    record = state.get_record(AGENT_CALLS, "acme", "a")
    assert record is not None and "calls" not in record and record["facts"] == {}
    assert record["counts"] == {str(int(AT - 10 * 3600)): [1, 1]}
    assert row() == (None, 1, 1)
