"""Series retention (config ``[limits] series_retention_days``) in MemoryState: the names
exported stay within ``[limits]`` at all times, a name idle longer than the retention retires
(state, registry entry, /metrics) and is counted in ``ccmon_series_retired_total{kind}``, a
name displaced by newer ones retires at the next upkeep, and a retired name that comes back
is a new name. tests/integration/test_series_retention.py does the same on the real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from kpi_core.config import config_from_dict
from kpi_core.engine import AGENTS, ALL, Engine, series_retention_seconds
from kpi_core.errors import ConfigError
from kpi_core.events import parse_event
from kpi_core.kpis import flatten, queues_of, snapshot
from kpi_core.state import KB_SCOPE_PREFIX, RETIRED_SCOPE, MemoryState, retirable

AT = 1795003200.0
DAY = 86400.0


def offer(queue: str, now: float, tenant: str = "default", n: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"o-{tenant}-{queue}-{now:.0f}-{n}",
        "type": "call.offered",
        "ts": now - 60,
        "queue": queue,
        "call_id": f"c-{now:.0f}-{n}",
        "tenant": tenant,
    }


def setup(raw: dict[str, Any]) -> tuple[Any, MemoryState, Engine]:
    config = config_from_dict(raw)
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    return config, store, Engine(config, store)


def exported_queues(config: Any, store: MemoryState, at: float) -> dict[str, set[str]]:
    """tenant -> queue labels in the snapshot (without ``_all``)."""
    result: dict[str, set[str]] = {}
    for (_name, labels), _value in flatten(snapshot(config, store, at)).items():
        found = dict(labels)
        if "queue" in found and found["queue"] != ALL:
            result.setdefault(found["tenant"], set()).add(found["queue"])
    return result


def retired(config: Any, store: MemoryState, at: float) -> dict[str, float]:
    flat = flatten(snapshot(config, store, at))
    return {dict(labels)["kind"]: v for (name, labels), v in flat.items() if name == "ccmon_series_retired_total"}


def test_exported_queues_never_exceed_the_limit_day_after_day() -> None:
    """The finding: queues_per_tenant = 3, three new queue names a day (26 h apart, past the
    state horizon): exported queues went 3, 6, 9... Now never more than 3, before and after
    each upkeep, and the displaced ones are retired and counted."""
    config, store, engine = setup({"limits": {"queues_per_tenant": 3, "tenants": 2}})
    for day in range(12):
        now = AT + day * (DAY + 7200)
        outcomes = [engine.handle(parse_event(offer(f"d{day}-q{i}", now, n=i)), now) for i in range(3)]
        assert outcomes == ["accepted"] * 3
        fresh = {f"d{day}-q{i}" for i in range(3)}
        assert exported_queues(config, store, now) == {"default": fresh}
        assert queues_of(config, store) == {"default": sorted(fresh)}
        engine.maintain(now + 60)
        assert set(store.scopes()["default"]) == fresh | ({RETIRED_SCOPE} if day else set())
        assert retired(config, store, now + 60) == ({"queue": 3.0 * day} if day else {})
        # The tenant's counter keeps what retired queues counted: it never goes down.
        flat = flatten(snapshot(config, store, now + 60))
        assert flat[("ccmon_calls_offered_total", (("tenant", "default"), ("queue", ALL)))] == 3 * (day + 1)
        assert store.series_oldest("queue", "default", 100)[0] == 3


def test_an_idle_queue_retires_after_the_retention_and_comes_back_as_a_new_name() -> None:
    config, store, engine = setup({"limits": {"series_retention_days": 8}})
    assert series_retention_seconds(config) == 8 * DAY
    engine.handle(parse_event(offer("once", AT)), AT)
    for week in range(5):  # a weekly queue survives: an event every 7 days
        now = AT + week * 7 * DAY
        assert engine.handle(parse_event(offer("weekly", now)), now) == "accepted"
        engine.maintain(now + 3600)
        at = now + 3600
        flat = flatten(snapshot(config, store, at))
        assert flat[("ccmon_calls_offered_total", (("tenant", "default"), ("queue", "weekly")))] == week + 1
        if week == 0:
            assert queues_of(config, store) == {"default": ["once", "weekly"]}
    # "once" had one event at AT: still there 8 days minus a bit later, gone after 8 days.
    store2_config, store2, engine2 = setup({})
    engine2.handle(parse_event(offer("once", AT)), AT)
    engine2.maintain(AT + 8 * DAY - 3600)
    assert queues_of(store2_config, store2) == {"default": ["once"]}
    engine2.maintain(AT + 8 * DAY + 1)
    assert queues_of(store2_config, store2) == {}
    assert store2.totals("default", "once") == {}
    assert store2.series_seen("queue", "default", "once") is None
    assert retired(store2_config, store2, AT + 8 * DAY + 1) == {"queue": 1.0, "tenant": 1.0}
    assert retired(config, store, AT + 29 * DAY) == {"queue": 1.0}  # "once"; "weekly" never
    engine2.maintain(AT + 8 * DAY + 2)  # idempotent
    assert retired(store2_config, store2, AT + 8 * DAY + 2) == {"queue": 1.0, "tenant": 1.0}
    # Back after retirement: a new name, counted from zero.
    later = AT + 9 * DAY
    assert engine2.handle(parse_event(offer("once", later, n=1)), later) == "accepted"
    flat = flatten(snapshot(store2_config, store2, later))
    assert flat[("ccmon_calls_offered_total", (("tenant", "default"), ("queue", "once")))] == 1


def test_a_name_admitted_again_meanwhile_is_not_retired() -> None:
    config, store, engine = setup({})
    engine.handle(parse_event(offer("q", AT)), AT)
    seen = store.series_seen("queue", "default", "q")
    assert seen == AT
    later = AT + 2 * 3600
    engine.handle(parse_event(offer("q", later, n=1)), later)  # re-admitted: the registry moves
    assert store.series_retire("queue", "default", {"q": AT}) == 0  # the upkeep's stale view
    assert queues_of(config, store) == {"default": ["q"]}
    assert store.series_retire("queue", "default", {"q": later}) == 1
    assert store.series_retire("queue", "default", {"q": later}) == 0
    assert queues_of(config, store) == {}


def test_agents_articles_and_tenants_retire_with_their_state() -> None:
    config, store, engine = setup({"limits": {"tenants": 1, "series_retention_days": 3}})
    events = [
        {
            "event_id": "s1",
            "type": "agent.state",
            "ts": AT - 30,
            "agent_id": "ann",
            "state": "available",
            "queues": ["q"],
        },
        {"event_id": "k1", "type": "kb.viewed", "ts": AT - 20, "article_id": "howto", "session_id": "s"},
        offer("q", AT),
    ]
    assert [engine.handle(parse_event(e), AT) for e in events] == ["accepted"] * 3
    assert store.live_size(AGENTS, "default", ALL) == 1
    assert KB_SCOPE_PREFIX + "howto" in store.scopes()["default"]
    # Only the agent stays active: the article and the queue retire, the agent does not.
    mid = AT + 2 * DAY
    agent_again = {"event_id": "s2", "type": "agent.state", "ts": mid - 30, "agent_id": "ann", "state": "away"}
    assert engine.handle(parse_event(agent_again), mid) == "accepted"
    engine.maintain(AT + 3 * DAY + 10)
    assert set(store.scopes()["default"]) == {ALL, RETIRED_SCOPE}
    assert store.live(AGENTS, "default", ALL) == {"away\x1fann": mid - 30}
    # Then the agent and the tenant (its last event at mid) retire too: nothing of it is left.
    engine.maintain(mid + 3 * DAY + 10)
    assert store.scopes() == {}
    assert all(not names for names in store._series.values())
    assert store.live(AGENTS, "default", ALL) == {}
    assert retired(config, store, mid + 3 * DAY + 10) == {"agent": 1.0, "article": 1.0, "queue": 1.0, "tenant": 1.0}
    # With the tenant's place free again, a new tenant gets in.
    later = mid + 3 * DAY + 20
    assert engine.handle(parse_event(offer("x", later, tenant="other")), later) == "accepted"


def test_tenants_beyond_the_limit_are_not_exported_before_the_upkeep() -> None:
    config, store, engine = setup({"limits": {"tenants": 2}})
    for day, tenants in enumerate((["a", "b"], ["c"], ["d", "e"])):
        now = AT + day * (DAY + 7200)
        for tenant in tenants:
            assert engine.handle(parse_event(offer("q", now, tenant=tenant)), now) == "accepted"
        shown = set(exported_queues(config, store, now))
        assert len(shown) <= 2 and set(tenants) <= shown
    engine.maintain(AT + 2 * (DAY + 7200) + 60)
    assert set(store.scopes()) == {"d", "e"}


def test_configured_names_never_retire() -> None:
    config, store, engine = setup({"tenants": {"acme": {"queues": {"vip": {}}}}, "limits": {"queues_per_tenant": 1}})
    engine.handle(parse_event(offer("vip", AT, tenant="acme")), AT)
    engine.handle(parse_event(offer("other", AT, tenant="acme")), AT)
    engine.maintain(AT + 30 * DAY)
    assert queues_of(config, store) == {"acme": ["vip"]}
    assert store.totals("acme", "vip")["offered"] == 1


def test_retirable_takes_the_oldest_prefix() -> None:
    oldest = [("a", 10.0), ("b", 20.0), ("c", 30.0), ("d", 40.0)]
    assert retirable(oldest, 4, 10, since=35.0, before=15.0) == [("a", 10.0)]  # below the limit: retention only
    assert retirable(oldest, 4, 2, since=35.0, before=15.0) == [("a", 10.0), ("b", 20.0)]  # 2 newer ones
    assert retirable(oldest, 4, 1, since=25.0, before=0.0) == [("a", 10.0), ("b", 20.0)]  # c is within the horizon


def test_the_retention_is_at_least_the_horizon() -> None:
    config = config_from_dict({"limits": {"series_retention_days": 2}, "engine": {"repeat_caller_seconds": 5 * DAY}})
    assert series_retention_seconds(config) == 5 * DAY + 3600


@pytest.mark.parametrize("value", [0, 1, 3661, 2.5, "8", True])
def test_a_bad_retention_names_the_field(value: object) -> None:
    with pytest.raises(ConfigError, match=r"limits\.series_retention_days") as info:
        config_from_dict({"limits": {"series_retention_days": value}})
    assert repr(value) in str(info.value)


def test_a_scope_without_a_registry_entry_retires_once_no_bucket_is_kept() -> None:
    config, store, engine = setup({})
    engine.handle(parse_event(offer("legacy", AT)), AT)
    del store._series[("queue", "default")]["legacy"]  # state from before the registry kept it
    engine.maintain(AT + 5 * 3600)  # the call has waited too long: expired (written to the queue)
    assert queues_of(config, store) == {"default": ["legacy"]}  # a bucket is kept: not idle
    engine.maintain(AT + 3 * DAY)
    assert queues_of(config, store) == {}
    assert retired(config, store, AT + 3 * DAY) == {"queue": 1.0}
