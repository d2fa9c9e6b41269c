"""KPIs by channel and priority through the production path: the worker's batch processor
writes to the real Redis (the batch script), the exporter serves /metrics from it, and the
breakdown series equal what the engine computes over MemoryState for the same events (and
the hand-computed values of tests/unit/kpi_core/test_channel_breakdown.py's kind)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness.samples import Samples, samples_of

from kpi_core.config import config_from_dict
from kpi_core.engine import Engine, series_retention_seconds
from kpi_core.events import parse_event
from kpi_core.exposition import render
from kpi_core.kpis import snapshot
from kpi_core.state import MemoryState
from streams.exporter import build_app
from streams.redis.state import RedisState
from streams.web import serve
from streams.worker import BatchProcessor, Message

pytestmark = pytest.mark.integration

AT = 1795003200.0  # 2026-11-20T10:00:00Z
CONFIG = config_from_dict(
    {
        "limits": {"max_channels": 2},
        "tenants": {"acme": {"queues": {"sales": {"channels": {"chat": {"targets": {"service_level": 0.9}}}}}}},
    }
)


def _events() -> list[dict[str, Any]]:
    """sales: voice p9 answered in 10 s, voice p2 answered in 40 s, chat p9 abandoned at 30 s,
    email answered in 5 s (folded into ``other``: max_channels = 2); support: an email ticket
    (priority 4) first answered after 120 s."""
    out: list[dict[str, Any]] = []
    for cid, ago, outcome, wait, channel, priority in (
        ("c1", 200, "answered", 10, "voice", 9),
        ("c2", 190, "answered", 40, None, 2),
        ("c3", 180, "abandoned", 30, "chat", 9),
        ("c4", 170, "answered", 5, "email", None),
    ):
        offer = {
            "event_id": f"{cid}-o",
            "type": "call.offered",
            "ts": AT - ago,
            "tenant": "acme",
            "queue": "sales",
            "call_id": cid,
            **({"channel": channel} if channel else {}),
            **({"priority": priority} if priority is not None else {}),
        }
        out.append(offer)
        out.append(
            {
                "event_id": f"{cid}-t",
                "type": f"call.{outcome}",
                "ts": AT - ago + wait,
                "tenant": "acme",
                "call_id": cid,
                **({"agent_id": "a1"} if outcome == "answered" else {}),
            }
        )
    out.append(
        {
            "event_id": "t1-c",
            "type": "ticket.created",
            "ts": AT - 250,
            "tenant": "acme",
            "queue": "support",
            "ticket_id": "t1",
            "channel": "email",
            "priority": 4,
        }
    )
    out.append(
        {
            "event_id": "t1-r",
            "type": "ticket.replied",
            "ts": AT - 130,
            "tenant": "acme",
            "ticket_id": "t1",
            "author": "agent",
        }
    )
    return out


def samples(text: str) -> Samples:
    return {
        key: value for key, value in samples_of(text).items() if "_by_channel" in key[0] or "_by_priority" in key[0]
    }


def test_worker_to_redis_to_exporter_shows_the_breakdown(redis_client: Any, redis_prefix: str) -> None:
    import urllib.request

    events = _events()
    clock = lambda: AT  # noqa: E731
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock)
    processor = BatchProcessor(CONFIG, state, clock)
    lines = [json.dumps(e).encode() for e in events]
    batch = [Message("events", 0, i, b"k", line, AT) for i, line in enumerate(lines[:5])]
    batch.append(Message("events", 1, 0, None, b"[" + b",".join(lines[5:]) + b"]", AT))
    result = processor.process(batch)
    assert result.accepted == len(events) and not result.dead

    server = serve(build_app(CONFIG, state, clock, redis_client.ping))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            got = samples(response.read().decode())
    finally:
        server.stop()

    memory = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
    engine = Engine(CONFIG, memory)
    for event in events:
        engine.handle(parse_event(event), AT)
    assert got == samples(render(snapshot(CONFIG, memory, AT)))

    def value(name: str, queue: str, **labels: str) -> float:
        key = tuple(sorted({"tenant": "acme", "queue": queue, **labels}.items()))
        return got[(name, key)]

    assert value("ccmon_calls_offered_by_channel", "sales", window="5m", channel="voice") == 2
    assert value("ccmon_calls_offered_by_channel", "sales", window="5m", channel="other") == 1  # email
    assert value("ccmon_service_level_by_channel_ratio", "_all", window="1h", channel="voice") == 0.5
    assert value("ccmon_abandon_rate_by_channel_ratio", "_all", window="1h", channel="chat") == 1.0
    assert value("ccmon_calls_offered_by_priority", "_all", window="today", priority="9") == 2
    assert value("ccmon_average_speed_of_answer_by_priority_seconds", "sales", window="5m", priority="2") == 40
    assert value("ccmon_ticket_first_response_by_priority_seconds", "_all", window="5m", priority="4") == 120
    assert value("ccmon_ticket_first_response_by_channel_seconds", "support", window="5m", channel="other") == 120
    assert value("ccmon_target_service_level_by_channel_ratio", "sales", channel="chat") == 0.9

    # Series retention on Redis: support (not configured) retires with its breakdown; sales
    # (configured, never retired) keeps its labels from the lifetime totals.
    later = AT + series_retention_seconds(CONFIG) + 3600
    assert Engine(CONFIG, state).retire_series(later) == {"queue": 1, "agent": 1}  # support; agent a1
    queues = {dict(labels)["queue"] for labels in (key[1] for key in samples(render(snapshot(CONFIG, state, later))))}
    assert queues == {"sales", "_all"}
