"""The two exactness examples of issue #16, as event streams both stores are tested on
(tests/unit/kpi_core/test_exact_aggregation.py on MemoryState, tests/integration/test_redis_exact.py
on Redis)."""

from __future__ import annotations

from typing import Any

from kpi_core.events import Event, parse_event, parse_ts

AT = parse_ts("2026-11-20T10:00:00Z")


def parsed(raw: list[dict[str, Any]]) -> list[Event]:
    """Events with ids fixed by their place in ``raw`` (so a reordering keeps them)."""
    return [parse_event({"event_id": f"x{i:04d}", **e}) for i, e in enumerate(raw)]


def transferred_then_answered() -> list[Event]:
    """Answered 5 s after the offer, transferred 180 s after it: the answer is the outcome
    (the first terminal event), so the longest wait is 5 s."""
    return parsed(
        [
            {"type": "call.offered", "ts": AT - 600, "call_id": "c", "queue": "q"},
            {"type": "call.answered", "ts": AT - 595, "call_id": "c", "queue": "q", "agent_id": "a1"},
            {"type": "call.transferred", "ts": AT - 420, "call_id": "c", "queue": "q", "to_queue": "b"},
        ]
    )


def retraction_stream() -> list[Event]:
    """Three outcomes in one 10 s bucket: call a answered after 6.063 s; call b answered after
    437.682 s, superseded by its earlier abandonment (arriving last), which retracts it."""
    return parsed(
        [
            {"type": "call.offered", "ts": AT - 200, "call_id": "a", "queue": "q"},
            {
                "type": "call.answered",
                "ts": AT - 95,
                "call_id": "a",
                "queue": "q",
                "agent_id": "a1",
                "wait_seconds": 6.063,
            },
            {"type": "call.offered", "ts": AT - 600, "call_id": "b", "queue": "q"},
            {
                "type": "call.answered",
                "ts": AT - 93,
                "call_id": "b",
                "queue": "q",
                "agent_id": "a2",
                "wait_seconds": 437.682,
            },
            {"type": "call.abandoned", "ts": AT - 97, "call_id": "b", "queue": "q", "wait_seconds": 10},
        ]
    )
