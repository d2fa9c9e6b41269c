"""KPIs by channel and by priority (docs/KPIS.md, "Channel and priority"): a hand-computed
case over two queues, three channels and three priorities with ``[limits]`` folding the rest
into ``other``; ``_all`` from summed components; targets per queue and channel; the existing
families' series unchanged; the ``priority`` field's validation."""

from __future__ import annotations

import random
from typing import Any

import pytest
from harness.paths import REPO

from kpi_core.config import config_from_dict
from kpi_core.engine import Engine, series_retention_seconds
from kpi_core.errors import ConfigError, InvalidEventError
from kpi_core.events import parse_event
from kpi_core.kpis import Labels, flatten, snapshot
from kpi_core.state import MemoryState

AT = 1795003200.0  # 2026-11-20T10:00:00Z
TENANT = "acme"
LIMITS = {"limits": {"max_channels": 2, "max_priorities": 2}}


def _call(
    cid: str, queue: str, ago: float, outcome: str, wait: float, channel: str | None = None, priority: int | None = None
) -> list[dict[str, Any]]:
    offer: dict[str, Any] = {
        "event_id": f"{cid}-o",
        "type": "call.offered",
        "ts": AT - ago,
        "queue": queue,
        "call_id": cid,
        "tenant": TENANT,
    }
    if channel is not None:
        offer["channel"] = channel
    if priority is not None:
        offer["priority"] = priority
    terminal: dict[str, Any] = {
        "event_id": f"{cid}-t",
        "type": f"call.{outcome}",
        "ts": AT - ago + wait,
        "call_id": cid,
        "tenant": TENANT,
    }
    if outcome == "answered":
        terminal["agent_id"] = "a1"
    return [offer, terminal]


def _ticket(
    tid: str, queue: str, ago: float, reply_after: float, channel: str, priority: int | None = None
) -> list[dict[str, Any]]:
    created: dict[str, Any] = {
        "event_id": f"{tid}-c",
        "type": "ticket.created",
        "ts": AT - ago,
        "queue": queue,
        "ticket_id": tid,
        "tenant": TENANT,
        "channel": channel,
    }
    if priority is not None:
        created["priority"] = priority
    reply = {
        "event_id": f"{tid}-r",
        "type": "ticket.replied",
        "ts": AT - ago + reply_after,
        "ticket_id": tid,
        "author": "agent",
        "tenant": TENANT,
        "channel": channel,
    }
    return [created, reply]


#: sales: voice c1 (p9, answered in 10 s), c2 (p9, answered in 30 s), c6 (no priority, short
#: abandon at 3 s); chat c3 (p5, abandoned at 40 s), c4 (p1, answered in 5 s); email c5 (no
#: priority, answered in 50 s). support: chat c7 (p9, answered in 12 s); tickets t1 (email, p5,
#: first reply after 150 s) and t2 (chat, no priority, after 200 s). All inside the last 5 min.
EVENTS: list[dict[str, Any]] = [
    *_call("c1", "sales", 200, "answered", 10, priority=9),
    *_call("c2", "sales", 190, "answered", 30, "voice", 9),
    *_call("c3", "sales", 180, "abandoned", 40, "chat", 5),
    *_call("c4", "sales", 170, "answered", 5, "chat", 1),
    *_call("c5", "sales", 160, "answered", 50, "email"),
    *_call("c6", "sales", 150, "abandoned", 3, "voice"),
    *_call("c7", "support", 140, "answered", 12, "chat", 9),
    *_ticket("t1", "support", 250, 150, "email", 5),
    *_ticket("t2", "support", 240, 200, "chat"),
]


def run(raw: list[dict[str, Any]], config_raw: dict[str, Any] | None = None) -> dict[tuple[str, Labels], float]:
    config = config_from_dict(config_raw if config_raw is not None else LIMITS)
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    outcomes = [engine.handle(parse_event(e), AT) for e in raw]
    assert set(outcomes) == {"accepted"}, outcomes
    return flatten(snapshot(config, store, AT))


def by(
    flat: dict[tuple[str, Labels], float], name: str, label: str, window: str = "5m"
) -> dict[tuple[str, str], float]:
    """``(queue, label value) -> value`` of family ``name`` for ``window``."""
    out = {}
    for (metric, labels), value in flat.items():
        d = dict(labels)
        if metric == name and d.get("window") == window and d["tenant"] == TENANT:
            out[(d["queue"], d[label])] = value
    return out


def test_hand_computed_channel_breakdown() -> None:
    flat = run(EVENTS)
    # Channels present: voice, chat, email; max_channels = 2 keeps voice and chat, email -> other.
    assert by(flat, "ccmon_calls_offered_by_channel", "channel") == {
        ("sales", "voice"): 3,
        ("sales", "chat"): 2,
        ("sales", "other"): 1,
        ("support", "chat"): 1,
        ("support", "other"): 0,
        ("_all", "voice"): 3,
        ("_all", "chat"): 3,
        ("_all", "other"): 1,
    }
    assert by(flat, "ccmon_calls_abandoned_by_channel", "channel")[("_all", "chat")] == 1
    # Default formula: answered_within / (answered + abandoned - short abandons).
    assert by(flat, "ccmon_service_level_by_channel_ratio", "channel") == {
        ("sales", "voice"): 1 / 2,
        ("sales", "chat"): 1 / 2,
        ("sales", "other"): 0.0,
        ("support", "chat"): 1.0,
        ("_all", "voice"): 1 / 2,
        ("_all", "chat"): 2 / 3,
        ("_all", "other"): 0.0,
    }
    assert by(flat, "ccmon_average_speed_of_answer_by_channel_seconds", "channel") == {
        ("sales", "voice"): 20.0,
        ("sales", "chat"): 5.0,
        ("sales", "other"): 50.0,
        ("support", "chat"): 12.0,
        ("_all", "voice"): 20.0,
        ("_all", "chat"): 8.5,
        ("_all", "other"): 50.0,
    }
    assert by(flat, "ccmon_abandon_rate_by_channel_ratio", "channel") == {
        ("sales", "voice"): 0.0,
        ("sales", "chat"): 1 / 2,
        ("sales", "other"): 0.0,
        ("support", "chat"): 0.0,
        ("_all", "voice"): 0.0,
        ("_all", "chat"): 1 / 3,
        ("_all", "other"): 0.0,
    }
    assert by(flat, "ccmon_tickets_created_by_channel", "channel") == {
        ("sales", "voice"): 0,
        ("sales", "chat"): 0,
        ("sales", "other"): 0,
        ("support", "chat"): 1,
        ("support", "other"): 1,
        ("_all", "voice"): 0,
        ("_all", "chat"): 1,
        ("_all", "other"): 1,
    }
    assert by(flat, "ccmon_ticket_first_response_by_channel_seconds", "channel") == {
        ("support", "chat"): 200.0,
        ("support", "other"): 150.0,
        ("_all", "chat"): 200.0,
        ("_all", "other"): 150.0,
    }
    # The same in every window (all of it happened in the last 5 minutes).
    assert by(flat, "ccmon_calls_offered_by_channel", "channel", "today") == by(
        flat, "ccmon_calls_offered_by_channel", "channel"
    )


def test_hand_computed_priority_breakdown() -> None:
    flat = run(EVENTS)
    # Priorities present: 9, 5, 1; max_priorities = 2 keeps 9 and 5 (most urgent first), 1 -> other.
    # Calls and tickets without a priority are in no priority series.
    assert by(flat, "ccmon_calls_offered_by_priority", "priority") == {
        ("sales", "9"): 2,
        ("sales", "5"): 1,
        ("sales", "other"): 1,
        ("support", "9"): 1,
        ("support", "5"): 0,
        ("_all", "9"): 3,
        ("_all", "5"): 1,
        ("_all", "other"): 1,
    }
    assert by(flat, "ccmon_service_level_by_priority_ratio", "priority") == {
        ("sales", "9"): 1 / 2,
        ("sales", "5"): 0.0,
        ("sales", "other"): 1.0,
        ("support", "9"): 1.0,
        ("_all", "9"): 2 / 3,
        ("_all", "5"): 0.0,
        ("_all", "other"): 1.0,
    }
    asa = by(flat, "ccmon_average_speed_of_answer_by_priority_seconds", "priority")
    assert asa == {
        ("sales", "9"): 20.0,
        ("sales", "other"): 5.0,
        ("support", "9"): 12.0,
        ("_all", "9"): pytest.approx(52 / 3),
        ("_all", "other"): 5.0,
    }
    assert by(flat, "ccmon_abandon_rate_by_priority_ratio", "priority")[("_all", "5")] == 1.0
    assert by(flat, "ccmon_tickets_created_by_priority", "priority")[("support", "5")] == 1
    assert by(flat, "ccmon_ticket_first_response_by_priority_seconds", "priority") == {
        ("support", "5"): 150.0,
        ("_all", "5"): 150.0,
    }


def test_breakdown_is_the_same_whatever_the_arrival_order() -> None:
    expected = run(EVENTS)
    for seed in range(5):
        shuffled = list(EVENTS)
        random.Random(seed).shuffle(shuffled)
        assert run(shuffled) == expected


def test_existing_series_are_unchanged_and_limits_zero_turn_the_breakdown_off() -> None:
    with_breakdown = run(EVENTS, {})  # default limits: every channel and priority its own label
    off = run(EVENTS, {"limits": {"max_channels": 0, "max_priorities": 0}})
    assert not any("_by_channel" in name or "_by_priority" in name for name, _labels in off)
    new = {key for key in with_breakdown if "_by_channel" in key[0] or "_by_priority" in key[0]}
    assert new and {key: v for key, v in with_breakdown.items() if key not in new} == off
    assert by(with_breakdown, "ccmon_calls_offered_by_channel", "channel")[("_all", "email")] == 1
    assert by(with_breakdown, "ccmon_calls_offered_by_priority", "priority")[("sales", "1")] == 1
    # The totals over channels equal the queue's own (every call has a channel).
    offered = by(with_breakdown, "ccmon_calls_offered_by_channel", "channel")
    assert (
        sum(v for (q, _c), v in offered.items() if q == "sales")
        == off[("ccmon_calls_offered", (("tenant", TENANT), ("queue", "sales"), ("window", "5m")))]
        == 6
    )


def test_targets_per_queue_and_channel() -> None:
    raw = {
        "defaults": {"channels": {"chat": {"targets": {"service_level": 0.7}}}},
        "tenants": {
            TENANT: {
                "queues": {
                    "sales": {
                        "channels": {
                            "chat": {"targets": {"asa_seconds": 30}},
                            "email": {"targets": {"first_response_seconds": 3600, "service_level": 0.5}},
                        }
                    }
                }
            }
        },
    }
    flat = run(EVENTS, raw)
    targets = {
        (name, dict(labels)["queue"], dict(labels)["channel"]): value
        for (name, labels), value in flat.items()
        if name.startswith("ccmon_target_") and name.endswith(("_by_channel_ratio", "_by_channel_seconds"))
    }
    assert targets == {
        ("ccmon_target_service_level_by_channel_ratio", "sales", "chat"): 0.7,
        ("ccmon_target_average_speed_of_answer_by_channel_seconds", "sales", "chat"): 30.0,
        ("ccmon_target_service_level_by_channel_ratio", "sales", "email"): 0.5,
        ("ccmon_target_ticket_first_response_by_channel_seconds", "sales", "email"): 3600.0,
        ("ccmon_target_service_level_by_channel_ratio", "support", "chat"): 0.7,
        ("ccmon_target_service_level_by_channel_ratio", "_all", "chat"): 0.7,
    }
    # The queues' own targets keep their labels.
    assert flat[("ccmon_target_service_level_ratio", (("tenant", TENANT), ("queue", "sales")))] == 0.8


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"channels": {"fax": {}}}, "tenants.acme.queues.sales.channels.fax", "unknown channel"),
        (
            {"channels": {"chat": {"targets": {"service_level": 1.5}}}},
            "tenants.acme.queues.sales.channels.chat.targets.service_level",
            "must be a number in [0, 1], got 1.5",
        ),
        (
            {"channels": {"chat": {"targets": {"csat": 0.9}}}},
            "tenants.acme.queues.sales.channels.chat.targets.csat",
            "unknown field",
        ),
        (
            {"channels": {"chat": {"service_level_target": 0.9}}},
            "tenants.acme.queues.sales.channels.chat.service_level_target",
            "expected one of: targets",
        ),
        ({"channels": "chat"}, "tenants.acme.queues.sales.channels", "must be a table, got 'chat'"),
    ],
)
def test_bad_channel_targets_name_the_field(raw: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"tenants": {TENANT: {"queues": {"sales": raw}}}})
    assert caught.value.field == field and message in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_channels", 6),
        ("max_channels", -1),
        ("max_priorities", 11),
        ("max_priorities", 2.0),
        ("max_channels", True),
    ],
)
def test_bad_breakdown_limits_name_the_field(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"limits": {name: value}})
    assert caught.value.field == f"limits.{name}" and repr(value) in str(caught.value)


def _offer(**extra: Any) -> dict[str, Any]:
    return {"event_id": "e", "type": "call.offered", "ts": AT, "queue": "q", "call_id": "c", **extra}


@pytest.mark.parametrize("value", [True, False, 5.5, "5", 10, -1, [1]])
def test_a_bad_priority_rejects_the_event(value: object) -> None:
    for raw in (
        _offer(priority=value),
        {"event_id": "e", "type": "ticket.created", "ts": AT, "queue": "q", "ticket_id": "t", "priority": value},
    ):
        with pytest.raises(InvalidEventError) as caught:
            parse_event(raw)
        assert caught.value.reason == "invalid_field:priority" and repr(value) in caught.value.message


def test_priority_is_kept_on_offers_and_ticket_creations() -> None:
    assert parse_event(_offer(priority=0)).priority == 0
    assert parse_event(_offer(priority=9)).priority == 9
    assert parse_event(_offer()).priority is None
    created = {"event_id": "e", "type": "ticket.created", "ts": AT, "queue": "q", "ticket_id": "t", "priority": 3}
    assert parse_event(created).priority == 3


def test_breakdown_series_retire_with_their_queue() -> None:
    config = config_from_dict(LIMITS)
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    for raw in EVENTS:
        engine.handle(parse_event(raw), AT)

    def breakdown(at: float) -> set[str]:
        return {
            dict(labels)["queue"]
            for (name, labels), _v in flatten(snapshot(config, store, at)).items()
            if "_by_channel" in name or "_by_priority" in name
        }

    assert breakdown(AT) == {"sales", "support", "_all"}
    later = AT + series_retention_seconds(config) + 3600
    assert breakdown(later) == {"sales", "support", "_all"}  # lifetime totals keep the labels...
    engine.maintain(later)
    assert breakdown(later) == set()  # ...until the queues retire, their breakdown with them


_RENDER = """
import json, sys
from kpi_core.config import config_from_dict
from kpi_core.engine import Engine
from kpi_core.events import parse_event
from kpi_core.exposition import render
from kpi_core.kpis import snapshot
from kpi_core.state import MemoryState
given = json.load(sys.stdin)
config = config_from_dict(given["config"])
store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
engine = Engine(config, store)
for raw in given["events"]:
    engine.process(parse_event(raw), given["at"])
sys.stdout.write(render(snapshot(config, store, given["at"])))
"""


@pytest.mark.slow
def test_breakdown_samples_come_in_one_order_whatever_the_hash_seed() -> None:
    """Two processes (or one restarted) render the same state byte for byte: the breakdown
    values come in their order (channels as CHANNEL_ORDER, priorities most urgent first), not
    in a set's, which follows the string-hash seed."""
    import json
    import os
    import subprocess
    import sys

    given = json.dumps({"config": {"limits": {"max_channels": 5, "max_priorities": 10}}, "events": EVENTS, "at": AT})
    pages = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", _RENDER], input=given, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        pages.append(done.stdout)
    assert 'channel="email"' in pages[0] and 'priority="9"' in pages[0]
    assert pages[0] == pages[1] == pages[2]
    lines = [
        line
        for line in pages[0].splitlines()
        if line.startswith("ccmon_calls_offered_by_channel{") and 'queue="sales"' in line and 'window="5m"' in line
    ]
    assert [line.split('channel="')[1].split('"')[0] for line in lines] == ["voice", "chat", "email"]
