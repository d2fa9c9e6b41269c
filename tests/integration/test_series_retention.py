"""Series retention on the real Redis, over thirteen days: the finding was that with
``queues_per_tenant = 3`` and the clock moved a day at a time, the exported queues went 3 -> 18
in six days (lifetime totals and scope lists never expired; the guard only bounds new names
per ~25 h). Now ``/metrics`` (the exporter app's real text) never shows more names than
``[limits]``, names displaced by newer ones and names idle past ``series_retention_days``
retire at the upkeep (two workers running it: counted once), ``ccmon_series_retired_total``
counts them by kind, and no Redis key of a retired name is left."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kpi_core.config import config_from_dict
from kpi_core.engine import Engine
from kpi_core.events import parse_event
from kpi_core.kpis import queues_of
from kpi_core.state import MemoryState
from streams.exporter import build_app
from streams.redis.keys import encode
from streams.redis.state import RedisState
from streams.worker import BatchProcessor, Message

pytestmark = pytest.mark.integration

AT = 1795003200.0
DAY = 86400.0
STEP = DAY + 7200  # a day and two hours: past the state horizon (25 h), so new names get in
# Retention: the default (8 days).
CONFIG = config_from_dict({"limits": {"queues_per_tenant": 3, "tenants": 3}})


def envelope(offset: int, events: list[dict[str, Any]], at: float) -> Message:
    return Message("events", 0, offset, None, json.dumps(events).encode(), at)


def offer(tenant: str, queue: str, now: float, n: int) -> dict[str, Any]:
    # Call ids do not hold the queue name: a call's record is the call's, not the queue's.
    return {
        "event_id": f"e-{tenant}-{queue}-{n}",
        "type": "call.offered",
        "ts": now - 30,
        "tenant": tenant,
        "queue": queue,
        "call_id": f"call-{n}",
    }


def scrape(app: Callable[..., Any]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The exporter's /metrics, parsed: family name -> labels -> value."""
    status: list[str] = []
    body = b"".join(app({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}, lambda s, h: status.append(s)))
    assert status == ["200 OK"]
    result: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            result.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return result


def exported(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> dict[str, set[str]]:
    """tenant -> every queue label any series carries (without ``_all``)."""
    found: dict[str, set[str]] = {}
    for samples in metrics.values():
        for labels in samples:
            named = dict(labels)
            if "tenant" in named:
                queues = found.setdefault(named["tenant"], set())
                if "queue" in named and named["queue"] != "_all":
                    queues.add(named["queue"])
    return found


def expired_bucket(key: str, now: float) -> bool:
    """A bucket (or its multiset hash) past its expiry by the engine's clock. Redis still holds
    it because its TTL runs in real seconds (at least MIN_TTL_SECONDS) while this test moves
    the clock 26 h a step; in service it is gone, by TTL, before its name can retire."""
    parts = key.split(":")
    if len(parts) < 5 or parts[-4] not in ("b", "bx") or parts[-3] not in ("f", "c"):
        return False
    keep = (
        CONFIG.longest_sliding_seconds + 3600 + CONFIG.bucket_seconds
        if parts[-3] == "f"
        else CONFIG.horizon_seconds + 3600 + CONFIG.coarse_bucket_seconds
    )
    return int(parts[-1]) + keep < now


def test_exported_names_stay_within_the_limits_over_thirteen_days(redis_client: Any, redis_prefix: str) -> None:
    now = AT
    clock = lambda: now  # noqa: E731
    workers = [
        BatchProcessor(CONFIG, RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock), clock)
        for _ in range(2)
    ]
    app = build_app(CONFIG, RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock), clock)
    # MemoryState (replay, demo) fed the same events at the same times must agree.
    memory = MemoryState(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)
    engine = Engine(CONFIG, memory)
    n = 0
    for day in range(12):
        now = AT + day * STEP
        # "flood": three new queue names a day; "steady": one queue, busy every day; a new
        # guest tenant a day; on day 0 "steady" also has a queue and an agent that go idle.
        events = [offer("flood", f"d{day}-q{i}", now, n + i) for i in range(3)]
        events += [offer("steady", "main", now, n + 3), offer(f"guest{day}", "g", now, n + 4)]
        if day == 0:
            events += [
                offer("steady", "once", now, n + 5),
                {
                    "event_id": "agent-1",
                    "type": "agent.state",
                    "ts": now - 20,
                    "tenant": "steady",
                    "agent_id": "ann",
                    "state": "available",
                    "queues": ["main"],
                },
            ]
        n += 10
        result = workers[day % 2].process([envelope(day, events, now)])
        assert result.accepted == len(events) and not result.dead
        assert [engine.handle(parse_event(e), now) for e in events] == ["accepted"] * len(events)

        metrics = scrape(app)
        shown = exported(metrics)
        assert len(shown) <= 3, (day, sorted(shown))
        assert all(len(queues) <= 3 for queues in shown.values()), (day, shown)
        assert shown["flood"] == {f"d{day}-q{i}" for i in range(3)}
        assert f"guest{day}" in shown and "steady" in shown
        # Before the upkeep, yesterday's flood queues are displaced (not shown) and not retired
        # yet: the tenant's counter still holds what they counted.
        assert metrics["ccmon_calls_offered_total"][(("queue", "_all"), ("tenant", "flood"))] == 3 * (day + 1)

        now += 60
        for worker in workers:  # two workers' upkeep: retirement is idempotent
            worker.maintain()
        engine.maintain(now)
        metrics = scrape(app)
        assert queues_of(CONFIG, memory) == queues_of(CONFIG, workers[0].state)
        assert memory.counts().get("series_retired") == workers[0].state.counts().get("series_retired")
        retired = {dict(labels)["kind"]: v for labels, v in metrics.get("ccmon_series_retired_total", {}).items()}
        # Displaced flood queues and guest tenants retire at the next day's upkeep; the idle
        # queue and agent of "steady" after the retention (8 days: at day 8, 8 x 26 h).
        want = {"queue": 3.0 * day + (day >= 8), "tenant": float(day), "agent": float(day >= 8)}
        assert retired == {k: v for k, v in want.items() if v}, day
        shown = exported(metrics)
        assert set(shown) == {"flood", "steady", f"guest{day}"}
        assert shown["steady"] == ({"main"} if day >= 8 else {"main", "once"})
        # The tenants' counters never go down: what retired queues counted stays in _all.
        offered = metrics["ccmon_calls_offered_total"]
        assert offered[(("queue", "_all"), ("tenant", "flood"))] == 3 * (day + 1)
        assert offered[(("queue", "_all"), ("tenant", "steady"))] == day + 2

        # No key of a retired name is left in Redis.
        keys = [k.decode() for k in redis_client.scan_iter(match=f"{redis_prefix}:*", count=1000)]
        keys = [k for k in keys if not expired_bucket(k, now)]
        parts = {part for key in keys for part in key.split(":")}
        gone_queues = {encode(f"d{d}-q{i}") for d in range(day) for i in range(3)} | ({"once"} if day >= 8 else set())
        assert not parts & gone_queues, (day, [k for k in keys if set(k.split(":")) & gone_queues])
        for d in range(day):
            left = [k for k in keys if f"{{t:guest{d}}}" in k]
            # Only the retired tenant's call record (expires by TTL) and its pipeline counters
            # (kept: ccmon_events_total must not go down) remain.
            assert all(":rec:call:" in k or ":count" in k for k in left), left
        agents = [k for k in keys if ":live:agents:" in k and "{t:steady}" in k]
        members = {m.decode() for key in agents for m in redis_client.zrange(key, 0, -1)}
        assert members == (set() if day >= 8 else {"available\x1fann"})
        series = redis_client.zrange(f"{redis_prefix}:{{t:flood}}:series:queue", 0, -1)
        assert sorted(m.decode() for m in series) == sorted(f"d{day}-q{i}" for i in range(3))


def test_retirement_is_exact_with_workers_racing(redis_client: Any, redis_prefix: str) -> None:
    """Two workers retiring the same displaced names at the same time retire and count each
    once; a name admitted again after the upkeep looked (its registry time moved) is left."""
    import threading

    now = AT
    clock = lambda: now  # noqa: E731
    config = config_from_dict({"limits": {"queues_per_tenant": 40}})
    workers = [
        BatchProcessor(config, RedisState(redis_client, config, prefix=redis_prefix, clock=clock), clock)
        for _ in range(2)
    ]
    old = [offer("t", f"old{i}", now, i) for i in range(40)]
    assert workers[0].process([envelope(0, old, now)]).accepted == 40
    now = AT + STEP
    new = [offer("t", f"new{i}", now, 100 + i) for i in range(40)]
    assert workers[1].process([envelope(1, new, now)]).accepted == 40
    state = workers[0].state
    # The upkeep's view is stale for old0: it got an event (was admitted again) since.
    assert state.series_retire("queue", "t", {"old0": AT - 1}) == 0
    assert state.series_seen("queue", "t", "old0") == AT
    now += 60
    barrier = threading.Barrier(2)

    def upkeep(worker: BatchProcessor) -> None:
        barrier.wait()
        worker.engine.retire_series(now)

    threads = [threading.Thread(target=upkeep, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.counts()["series_retired"] == {"queue": 40.0}
    assert sorted(state.scopes()["t"]) == sorted(["\x1fretired", *(f"new{i}" for i in range(40))])
    assert state.series_oldest("queue", "t", 100)[0] == 40
    # Back after retirement: a new name again, at the limit now, so refused.
    now += 60
    back = workers[0].process([envelope(2, [offer("t", "old1", now, 999)], now)])
    assert back.accepted == 0 and [d.reason for d in back.dead] == ["too_many_series"]


def test_scopes_left_without_a_registry_entry_retire_once_idle(redis_client: Any, redis_prefix: str) -> None:
    """State from before the registry kept names for the retention (it trimmed them ~49 h
    after their last admission): a queue with no registry entry retires once no bucket of it
    is kept (its bucket index has expired), and not before."""
    now = AT
    clock = lambda: now  # noqa: E731
    worker = BatchProcessor(CONFIG, RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock), clock)
    events = [offer("t", "legacy", now, 1), offer("t", "recent", now, 2)]
    assert worker.process([envelope(0, events, now)]).accepted == 2
    now += 5 * 3600
    worker.maintain()  # the calls have waited too long: expired (written to their queues)
    tag = f"{redis_prefix}:{{t:t}}"
    redis_client.zrem(f"{tag}:series:queue", "legacy", "recent")  # what the old trim did
    redis_client.delete(f"{tag}:bi:c:legacy", f"{tag}:bi:f:legacy")  # expired, as in service
    now += 3 * DAY
    worker.maintain()
    state = worker.state
    assert state.scopes()["t"] == ["\x1fretired", "recent"]
    assert state.counts()["series_retired"] == {"queue": 1.0}
    assert not [k for k in redis_client.scan_iter(match=f"{tag}:*legacy*") if not expired_bucket(k.decode(), now)]
