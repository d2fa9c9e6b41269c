"""The cardinality guard (config ``[limits]``): a flood of invented tenants, queues, agents or
articles is rejected as ``too_many_series`` and changes nothing; configured names are never
limited; a name unseen for the state horizon stops counting."""

from __future__ import annotations

from typing import Any

import pytest

from kpi_core.config import config_from_dict
from kpi_core.engine import Engine
from kpi_core.errors import ConfigError
from kpi_core.events import parse_event
from kpi_core.kpis import flatten, queues_of, snapshot
from kpi_core.state import MemoryState

AT = 1795003200.0


def offer(i: int, queue: str, tenant: str = "default", ts: float = AT - 60, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"o{i}-{queue}-{tenant}",
        "type": "call.offered",
        "ts": ts,
        "queue": queue,
        "call_id": f"c{i}-{queue}",
        "tenant": tenant,
        **extra,
    }


def run(config_raw: dict[str, Any], raw: list[dict[str, Any]], now: float = AT) -> tuple[MemoryState, list[str]]:
    config = config_from_dict(config_raw)
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    outcomes = [engine.handle(parse_event(e), now) for e in raw]
    return store, outcomes


def test_queues_beyond_the_limit_are_rejected_and_change_nothing() -> None:
    limits = {"limits": {"queues_per_tenant": 3}}
    flood = [offer(i, f"q{i}") for i in range(10)]
    store, outcomes = run(limits, flood)
    assert outcomes == ["accepted"] * 3 + ["too_many_series"] * 7
    config = config_from_dict(limits)
    assert queues_of(config, store) == {"default": ["q0", "q1", "q2"]}
    flat = flatten(snapshot(config, store, AT))
    assert flat[("ccmon_events_rejected_total", (("reason", "too_many_series"),))] == 7
    # Admitted queues keep working; the same events without the flood give the same KPIs.
    more = [offer(20 + i, f"q{i % 3}") for i in range(6)]
    _, out = run(limits, more)
    assert out == ["accepted"] * 6
    store_a, _ = run(limits, flood + more)
    store_b, _ = run(limits, flood[:3] + more)
    without_counts = lambda f: {k: v for k, v in f.items() if not k[0].startswith("ccmon_events_")}  # noqa: E731
    assert without_counts(flatten(snapshot(config, store_a, AT))) == without_counts(
        flatten(snapshot(config, store_b, AT))
    )


def test_configured_queues_and_tenants_are_never_limited() -> None:
    raw = {
        "limits": {"queues_per_tenant": 1, "tenants": 1},
        "tenants": {"acme": {"queues": {"vip": {}, "gold": {}}}, "bank": {}},
    }
    events = [
        offer(1, "vip", "acme"),
        offer(2, "gold", "acme"),
        offer(3, "other", "acme"),
        offer(4, "more", "acme"),
        offer(5, "x", "bank"),
        offer(6, "y", "newco"),
        offer(7, "z", "newer"),
    ]
    _, outcomes = run(raw, events)
    assert outcomes == [
        "accepted",
        "accepted",
        "accepted",
        "too_many_series",
        "accepted",
        "accepted",
        "too_many_series",
    ]


def test_every_queue_an_event_names_counts() -> None:
    raw = {"limits": {"queues_per_tenant": 2}}
    transfer = {
        "event_id": "t",
        "type": "call.transferred",
        "ts": AT - 50,
        "queue": "a",
        "call_id": "c",
        "to_queue": "b",
    }
    agent = {
        "event_id": "s",
        "type": "agent.state",
        "ts": AT - 40,
        "agent_id": "ag",
        "state": "available",
        "queues": ["a", "c"],
    }
    _, outcomes = run(raw, [transfer, agent])
    assert outcomes == ["accepted", "too_many_series"]


def test_agents_and_articles_are_limited_per_tenant() -> None:
    raw = {"limits": {"agents_per_tenant": 2, "articles_per_tenant": 1}}
    states = [
        {
            "event_id": f"s{i}",
            "type": "agent.state",
            "ts": AT - 30,
            "agent_id": f"agent{i}",
            "state": "available",
            "queues": ["q"],
        }
        for i in range(3)
    ]
    views = [
        {"event_id": f"v{i}", "type": "kb.viewed", "ts": AT - 30, "article_id": f"art{i}", "session_id": f"s{i}"}
        for i in range(2)
    ]
    _, outcomes = run(raw, states + views)
    assert outcomes == ["accepted", "accepted", "too_many_series", "accepted", "too_many_series"]
    _, outcomes = run(raw, [*states[:2], {**states[2], "tenant": "other", "event_id": "o"}])
    assert outcomes == ["accepted"] * 3  # per tenant


def test_a_duplicate_of_an_admitted_event_is_a_duplicate_not_a_rejection() -> None:
    raw = {"limits": {"queues_per_tenant": 1}}
    _, outcomes = run(raw, [offer(1, "a"), offer(1, "a"), offer(2, "b")])
    assert outcomes == ["accepted", "duplicate", "too_many_series"]


def test_a_name_unseen_for_the_horizon_frees_its_place() -> None:
    config = config_from_dict({"limits": {"queues_per_tenant": 1}})
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    assert engine.handle(parse_event(offer(1, "old")), AT) == "accepted"
    assert engine.handle(parse_event(offer(2, "new")), AT) == "too_many_series"
    later = AT + config.horizon_seconds + 7200
    assert engine.handle(parse_event(offer(3, "new", ts=later - 10)), later) == "accepted"
    assert engine.handle(parse_event(offer(4, "old", ts=later - 5)), later) == "too_many_series"


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True, 10**8])
def test_bad_limits_name_the_field(value: object) -> None:
    with pytest.raises(ConfigError, match=r"limits\.queues_per_tenant"):
        config_from_dict({"limits": {"queues_per_tenant": value}})


def test_unknown_limit_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"limits\.queues\b"):
        config_from_dict({"limits": {"queues": 5}})
