"""Long backlogs in ``ccmon replay``: a file spanning days shows the open tickets, pending
callbacks and agents' states the live system holds at ``at``, however old (the offline engine
carries open entities: ``streams.cli.replay.offline_engine``), while windowed KPIs still count
only their window. Until then every event more than about a day before ``at`` was rejected
``too_late`` and a ticket opened three days earlier vanished from the backlog.

The real ITSM log (tests/data/itsm_incident_log) is checked in
tests/unit/streams/sources/test_source_tickets.py::test_replayed_backlog_equals_the_raw_rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.errors import InvalidEventError
from kpi_core.events import parse_event, parse_ts
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from streams.cli.replay import replay

AT = parse_ts("2026-11-20T10:00:00Z")
HOUR, DAY = 3600.0, 86400.0


def ev(eid: str, kind: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"event_id": eid, "type": kind, "ts": ts, "tenant": "acme", **fields}


def days_of_events() -> list[dict[str, Any]]:
    """Three days of a small help desk and call queue, in time order."""
    return [
        # ticket t1 opened 3 days before at and still open; t2 opened 3 days before, resolved 2 days before
        ev("t1c", "ticket.created", AT - 3 * DAY, ticket_id="t1", queue="desk"),
        ev("t2c", "ticket.created", AT - 3 * DAY + HOUR, ticket_id="t2", queue="desk"),
        # an agent logged in 2.5 days ago and available since
        ev("s1", "agent.state", AT - 2.5 * DAY, agent_id="a1", state="available", queues=["support"]),
        # a callback requested 2 days before at, never made; another requested and made
        ev("cb1", "callback.requested", AT - 2 * DAY, callback_id="k1", queue="support", customer_id="c1"),
        ev("cb2", "callback.requested", AT - 2 * DAY, callback_id="k2", queue="support", customer_id="c2"),
        ev("cb2a", "callback.attempted", AT - 2 * DAY + 600, callback_id="k2", agent_id="a1"),
        # a missed call 40 h before at: its customer is due a callback since
        ev("m1", "call.offered", AT - 40 * HOUR, call_id="x1", queue="support", customer_id="c3"),
        ev("m2", "call.abandoned", AT - 40 * HOUR + 30, call_id="x1", queue="support"),
        ev("t2r", "ticket.resolved", AT - 2 * DAY, ticket_id="t2", queue="desk"),
        # ticket t3 opened 2 days ago, first reply and resolution today
        ev("t3c", "ticket.created", AT - 2 * DAY, ticket_id="t3", queue="desk"),
        ev("t3p", "ticket.replied", AT - 2 * HOUR, ticket_id="t3", queue="desk", author="agent"),
        ev("t3r", "ticket.resolved", AT - HOUR, ticket_id="t3", queue="desk"),
        # today: one ticket opened 30 minutes ago
        ev("t4c", "ticket.created", AT - 1800, ticket_id="t4", queue="desk"),
    ]


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def value(flat: dict[tuple[str, Any], float], name: str, queue: str, **labels: str) -> float | None:
    return flat.get((name, (("tenant", "acme"), ("queue", queue), *labels.items())))


def live_run(events: list[dict[str, Any]]) -> dict[tuple[str, Any], float]:
    """The live system: each event processed when it happened, with the worker's upkeep."""
    config = Config()
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    for e in sorted(events, key=lambda e: e["ts"]):
        assert engine.handle(parse_event(e), e["ts"]) == "accepted"
        engine.maintain(e["ts"])
    engine.maintain(AT)
    return flatten(snapshot(config, store, AT))


def test_a_replay_spanning_days_shows_the_live_backlog(tmp_path: Path) -> None:
    events = days_of_events()
    result = replay(str(write(tmp_path / "days.jsonl", events)), Config(), AT)
    assert not result.rejected, result.rejected  # was: 10 x too_late
    assert result.accepted == len(events)
    flat = flatten(result.families)
    # open tickets t1 (3 days old) and t4 (30 min), their mean age
    assert value(flat, "ccmon_tickets_open", "desk") == 2
    assert value(flat, "ccmon_open_ticket_age_seconds", "desk") == pytest.approx((3 * DAY + 1800) / 2)
    assert value(flat, "ccmon_tickets_open", "_all") == 2
    # pending callbacks: k1 (2 days) and the missed call's (40 h); the made one is not pending
    assert value(flat, "ccmon_callbacks_pending", "support") == 2
    assert value(flat, "ccmon_oldest_pending_callback_age_seconds", "support") == 2 * DAY
    assert value(flat, "ccmon_callbacks_overdue", "support") == 2
    # the agent logged in 2.5 days ago is still available
    assert value(flat, "ccmon_agents", "support", state="available", reason="none") == 1
    # windowed KPIs count only their window: today's creation, and the old ticket's resolution
    # (with its true creation time, as the live system measures it)
    assert value(flat, "ccmon_tickets_created", "desk", window="today") == 1
    assert value(flat, "ccmon_tickets_resolved", "desk", window="today") == 1
    assert value(flat, "ccmon_ticket_resolution_seconds", "desk", window="today") == 2 * DAY - HOUR
    assert value(flat, "ccmon_ticket_first_response_seconds", "desk", window="today") == 2 * DAY - 2 * HOUR
    assert value(flat, "ccmon_callbacks_made", "support", window="today") == 0
    assert value(flat, "ccmon_callbacks_due", "support", window="today") == 0
    assert value(flat, "ccmon_calls_offered", "support", window="today") == 0
    # and every KPI is what the live system shows at that instant (lifetime counters aside:
    # a replay counts only what its horizon holds, as before)
    live = live_run(events)
    lifetime = ("ccmon_events", "ccmon_last", "ccmon_event_lag", "ccmon_call_wait_seconds")
    kpis = {k: v for k, v in live.items() if not k[0].startswith(lifetime) and not k[0].endswith("_total")}
    # The channel and priority breakdowns export the labels a queue's lifetime totals hold
    # (docs/KPIS.md, "Channel and priority"): the live system's include the old call's, a
    # replay's only its horizon's; such a series is 0 live and absent in the replay.
    breakdown = {
        k for k, v in kpis.items() if ("_by_channel" in k[0] or "_by_priority" in k[0]) and v == 0 and k not in flat
    }
    assert {k: flat.get(k) for k in kpis if k not in breakdown} == {k: v for k, v in kpis.items() if k not in breakdown}


def test_a_shuffled_file_shows_the_same_backlog(tmp_path: Path) -> None:
    events = days_of_events()
    ordered = flatten(replay(str(write(tmp_path / "a.jsonl", events)), Config(), AT).families)
    shuffled = flatten(replay(str(write(tmp_path / "b.jsonl", events[::-1])), Config(), AT).families)
    assert value(shuffled, "ccmon_tickets_open", "desk") == 2
    for name in (
        "ccmon_tickets_open",
        "ccmon_open_ticket_age_seconds",
        "ccmon_callbacks_pending",
        "ccmon_oldest_pending_callback_age_seconds",
    ):
        for queue in ("desk", "support", "_all"):
            assert value(shuffled, name, queue) == value(ordered, name, queue), (name, queue)


def test_surveys_older_than_the_cutoff_stay_too_late(tmp_path: Path) -> None:
    """A survey answer holds nothing open: three days old, it is rejected as before."""
    survey = ev("q1", "survey.response", AT - 3 * DAY, queue="support", survey="csat", score=5)
    result = replay(str(write(tmp_path / "s.jsonl", [survey])), Config(), AT)
    assert dict(result.rejected) == {"too_late": 1}


def test_stamps_older_than_any_open_entity_stay_too_late(tmp_path: Path) -> None:
    """Carried: up to a year (366 days) before ``at``, the longest the live system keeps an open
    ticket after its last event; a null date read as 1970 is still rejected."""
    events = [
        ev("old", "ticket.created", AT - 365 * DAY, ticket_id="t-old", queue="desk"),
        ev("older", "ticket.created", AT - 367 * DAY, ticket_id="t-older", queue="desk"),
        ev("epoch", "call.offered", 0, call_id="x", queue="desk"),
    ]
    result = replay(str(write(tmp_path / "y.jsonl", events)), Config(), AT)
    assert dict(result.rejected) == {"too_late": 2}
    flat = flatten(result.families)
    assert value(flat, "ccmon_tickets_open", "desk") == 1
    assert value(flat, "ccmon_open_ticket_age_seconds", "desk") == 365 * DAY


def test_the_live_engine_still_rejects_events_beyond_the_cutoff() -> None:
    """The worker's engine (no carry) rejects a ticket creation three days old, as before."""
    config = Config()
    engine = Engine(config, MemoryState())
    with pytest.raises(InvalidEventError) as caught:
        engine.process(parse_event(ev("t1c", "ticket.created", AT - 3 * DAY, ticket_id="t1", queue="desk")), AT)
    assert caught.value.reason == "too_late"
