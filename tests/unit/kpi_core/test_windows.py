"""Windows as timeline tables: window edges, 'today' in non-UTC zones and on DST days, late
events, lateness rejection, and calls waiting that expire.

Each row is a sequence of events (offsets in seconds from ``at``, in arrival order) and the
expected KPI per window at ``at``. ``at`` is always a whole minute and events whole seconds,
where KPIS.md requires exact results.
"""

from __future__ import annotations

import math
import random
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from harness.reference import lateness_cutoff, run_engine, series

from kpi_core.config import Config, TenantConfig, Window, config_from_dict
from kpi_core.engine import Engine
from kpi_core.events import parse_event, parse_ts
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from kpi_core.windows import bucket_start, cover, local_midnight, window_range

AT = parse_ts("2026-11-20T10:00:00Z")
WINDOWS = ("5m", "15m", "1h", "today")


def offered(ts: float, call_id: str, queue: str = "q", **extra: Any) -> dict[str, Any]:
    return {"type": "call.offered", "ts": ts, "call_id": call_id, "queue": queue, **extra}


def zoned(zone: str, **engine: Any) -> Config:
    config = config_from_dict({"engine": engine}) if engine else Config()
    return Config(
        windows=config.windows,
        tenants=MappingProxyType({"default": TenantConfig(timezone=zone)}),
    )


def per_window(
    flat: dict[Any, float], metric: str, queue: str = "q", windows: tuple[str, ...] = WINDOWS
) -> dict[str, float | None]:
    return {w: series(flat, metric, queue=queue, window=w) for w in windows}


def rejected(flat: dict[Any, float], reason: str) -> float:
    return flat.get(("ccmon_events_rejected_total", (("reason", reason),)), 0.0)


# --------------------------------------------------------------------------------------
# pure window arithmetic
# --------------------------------------------------------------------------------------
def test_bucket_start() -> None:
    assert bucket_start(AT + 9.999, 10) == AT
    assert bucket_start(AT + 10, 10) == AT + 10
    assert bucket_start(AT - 0.001, 10) == AT - 10


def test_cover_is_exact_and_disjoint() -> None:
    """The fine/coarse cover of [start, end) holds exactly the fine buckets starting in it."""
    for start, end in [(AT - 3600, AT), (AT - 86400 + 123, AT + 7), (AT - 300, AT), (AT, AT), (AT - 5, AT)]:
        head, middle, tail = cover(start, end, 10, 900)
        covered: list[int] = [*head, *tail]
        for coarse_start in middle:
            covered.extend(range(coarse_start, coarse_start + 900, 10))
        assert sorted(covered) == list(range(math.ceil(start / 10) * 10, math.ceil(end / 10) * 10, 10))
        assert len(covered) == len(set(covered))


@pytest.mark.parametrize(
    ("zone", "at", "midnight"),
    [
        ("UTC", "2026-11-20T10:00:00Z", "2026-11-20T00:00:00Z"),
        ("UTC", "2026-11-20T00:00:00Z", "2026-11-20T00:00:00Z"),
        ("America/New_York", "2026-11-20T10:00:00Z", "2026-11-20T05:00:00Z"),
        ("America/New_York", "2026-11-20T04:59:00Z", "2026-11-19T05:00:00Z"),
        ("Asia/Kathmandu", "2026-11-20T18:45:00Z", "2026-11-20T18:15:00Z"),
        ("Asia/Kathmandu", "2026-11-20T18:14:00Z", "2026-11-19T18:15:00Z"),
        ("Australia/Lord_Howe", "2026-11-20T10:00:00Z", "2026-11-19T13:00:00Z"),
        # New York, spring forward (02:00 -> 03:00): a 23 h day
        ("America/New_York", "2026-03-08T16:00:00Z", "2026-03-08T05:00:00Z"),
        # New York, fall back (02:00 -> 01:00): a 25 h day
        ("America/New_York", "2026-11-01T23:00:00Z", "2026-11-01T04:00:00Z"),
        # Havana falls back at 01:00 to 00:00: the day's first midnight is the earlier one,
        # even when `at` lies in the repeated hour
        ("America/Havana", "2026-11-01T05:30:00Z", "2026-11-01T04:00:00Z"),
        # Santiago springs forward at midnight: 00:00 does not exist, the day starts at 01:00
        ("America/Santiago", "2026-09-06T12:00:00Z", "2026-09-06T04:00:00Z"),
    ],
)
def test_local_midnight(zone: str, at: str, midnight: str) -> None:
    assert local_midnight(parse_ts(at), ZoneInfo(zone)) == parse_ts(midnight)
    start, end = window_range(Window("today", 0), parse_ts(at), ZoneInfo(zone))
    assert (start, end) == (parse_ts(midnight), parse_ts(at))


def test_day_lengths_on_dst_days() -> None:
    zone = ZoneInfo("America/New_York")
    spring = parse_ts("2026-03-09T03:59:00Z")  # 23:59 EDT on the 8th
    assert spring - local_midnight(spring, zone) == 23 * 3600 - 60
    fall = parse_ts("2026-11-02T04:59:00Z")  # 23:59 EST on the 1st
    assert fall - local_midnight(fall, zone) == 25 * 3600 - 60


def test_lateness_cutoff_follows_the_local_day_through_dst_and_in_any_order() -> None:
    """The engine caches each tenant's day; its cutoff equals the uncached one at every
    instant: across both DST days of three zones (23 and 25 h days, a day starting at 01:00),
    every 7 minutes in time order, then the same instants shuffled."""
    for zone, days in (
        ("America/New_York", ("2026-03-07", "2026-10-31")),
        ("Asia/Kathmandu", ("2026-11-20",)),
        ("America/Santiago", ("2026-04-03", "2026-09-05")),
    ):
        config = zoned(zone)
        instants = [parse_ts(f"{day}T00:00:00Z") + 420 * i for day in days for i in range(0, 3 * 86400 // 420)]
        for arrival in (instants, random.Random(zone).sample(instants, len(instants))):
            engine = Engine(config, MemoryState())
            got = [engine.lateness_cutoff("default", at) for at in arrival]
            assert got == [lateness_cutoff(config, "default", at) for at in arrival], zone


# --------------------------------------------------------------------------------------
# window edges
# --------------------------------------------------------------------------------------
EDGES = [
    # (what, offsets of offers from `at`, expected offered per window 5m/15m/1h/today)
    ("one second old", [-1], (1, 1, 1, 1)),
    ("exactly at at-5m counts in 5m", [-300], (1, 1, 1, 1)),
    ("one second older than 5m", [-301], (0, 1, 1, 1)),
    ("exactly at at-15m", [-900], (0, 1, 1, 1)),
    ("just older than 15m", [-901], (0, 0, 1, 1)),
    ("exactly at at-1h", [-3600], (0, 0, 1, 1)),
    ("just older than 1h", [-3601], (0, 0, 0, 1)),
    ("exactly at local midnight", [-36000], (0, 0, 0, 1)),
    ("at `at` itself is not in any window", [0], (0, 0, 0, 0)),
    ("after `at` (within the future allowance) is not in any window", [1, 60, 299], (0, 0, 0, 0)),
    ("a mix", [-1, -300, -301, -899, -900, -3599, -3600, -3601, -36000, 0], (2, 5, 7, 9)),
    ("same second, several events", [-10, -10, -10], (3, 3, 3, 3)),
]


@pytest.mark.parametrize(("what", "offsets", "expected"), EDGES, ids=[e[0] for e in EDGES])
def test_window_edges(what: str, offsets: list[int], expected: tuple[int, ...]) -> None:
    events = [offered(AT + off, f"c{i}") for i, off in enumerate(offsets)]
    flat, engine = run_engine(Config(), [], AT)
    for i, event in enumerate(events):  # the engine sees every event, even those at/after `at`
        engine.handle(parse_event({"event_id": f"e{i}", **event}), AT)
    flat = flatten(snapshot(engine.config, engine.store, AT))
    assert per_window(flat, "ccmon_calls_offered") == dict(zip(WINDOWS, map(float, expected), strict=True))
    assert per_window(flat, "ccmon_calls_offered", queue="_all") == dict(
        zip(WINDOWS, map(float, expected), strict=True)
    )


def test_outcome_counts_in_the_window_of_its_own_ts() -> None:
    """Offered at at-20m, answered at at-6m, ended at at-1m: three different windows."""
    flat, _ = run_engine(
        Config(),
        [
            offered(AT - 1200, "c1"),
            {"type": "call.answered", "ts": AT - 360, "call_id": "c1", "agent_id": "a"},
            {"type": "call.ended", "ts": AT - 60, "call_id": "c1", "talk_seconds": 300},
        ],
        AT,
    )
    assert per_window(flat, "ccmon_calls_offered") == {"5m": 0, "15m": 0, "1h": 1, "today": 1}
    assert per_window(flat, "ccmon_calls_answered") == {"5m": 0, "15m": 1, "1h": 1, "today": 1}
    assert per_window(flat, "ccmon_calls_handled") == {"5m": 1, "15m": 1, "1h": 1, "today": 1}
    assert per_window(flat, "ccmon_average_speed_of_answer_seconds") == {
        "5m": None,
        "15m": 840,
        "1h": 840,
        "today": 840,
    }


# --------------------------------------------------------------------------------------
# today in other zones
# --------------------------------------------------------------------------------------
TODAY = [
    # (zone, at, [(ts, call)], expected offered per window 5m/15m/1h/today, rejected too_late)
    (
        "America/New_York",
        "2026-11-20T05:30:00Z",  # 00:30 EST
        ["2026-11-20T04:45:00Z", "2026-11-20T04:59:59Z", "2026-11-20T05:00:00Z", "2026-11-20T05:25:00Z"],
        (1, 1, 4, 2),
        0,
    ),
    (
        "Asia/Kathmandu",
        "2026-11-20T18:45:00Z",  # 00:30 +05:45 on the 21st
        [
            "2026-11-20T17:45:00Z",
            "2026-11-20T18:14:59Z",
            "2026-11-20T18:15:00Z",
            "2026-11-20T18:44:59Z",
            "2026-11-20T17:44:59Z",
        ],
        (1, 1, 4, 2),
        1,
    ),
    (
        "Asia/Kathmandu",
        "2026-11-20T10:00:00Z",  # 15:45 local: today is 15:45 long
        ["2026-11-19T18:15:00Z", "2026-11-19T18:14:59Z", "2026-11-20T09:59:59Z"],
        (1, 1, 1, 2),
        1,
    ),
    # New York spring-forward day: today = [05:00Z, 16:00Z), 11 h although 12:00 local
    (
        "America/New_York",
        "2026-03-08T16:00:00Z",
        [
            "2026-03-08T04:59:59Z",
            "2026-03-08T05:00:00Z",
            "2026-03-08T06:59:59Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T15:00:00Z",
        ],
        (0, 0, 1, 4),
        1,
    ),
    # New York fall-back day: today = [04:00Z, 23:00Z), 19 h although 18:00 local
    (
        "America/New_York",
        "2026-11-01T23:00:00Z",
        [
            "2026-11-01T03:59:59Z",
            "2026-11-01T04:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T22:59:00Z",
        ],
        (1, 1, 1, 4),
        1,
    ),
    # Havana: at lies in the repeated hour after falling back at 01:00 -> 00:00
    (
        "America/Havana",
        "2026-11-01T05:30:00Z",
        ["2026-11-01T03:59:59Z", "2026-11-01T04:00:00Z", "2026-11-01T04:10:00Z", "2026-11-01T05:29:00Z"],
        (1, 1, 1, 3),
        1,
    ),
    # Santiago springs forward at midnight: the day starts at 01:00 -03 (04:00Z)
    (
        "America/Santiago",
        "2026-09-06T12:00:00Z",
        ["2026-09-06T03:59:59Z", "2026-09-06T04:00:00Z", "2026-09-06T11:00:00Z"],
        (0, 0, 1, 2),
        1,
    ),
]


@pytest.mark.parametrize(("zone", "at", "stamps", "expected", "too_late"), TODAY, ids=[f"{t[0]}@{t[1]}" for t in TODAY])
def test_today_in_a_zone(zone: str, at: str, stamps: list[str], expected: tuple[int, ...], too_late: int) -> None:
    at_ts = parse_ts(at)
    events = [offered(stamp, f"c{i}") for i, stamp in enumerate(stamps)]
    flat, _ = run_engine(zoned(zone), events, at_ts)
    assert per_window(flat, "ccmon_calls_offered") == dict(zip(WINDOWS, map(float, expected), strict=True))
    assert rejected(flat, "too_late") == too_late


def test_today_follows_each_tenants_zone() -> None:
    """Two tenants, one event each at the same instant: 'today' differs by zone."""
    config = Config(
        tenants=MappingProxyType({"utc": TenantConfig(timezone="UTC"), "ktm": TenantConfig(timezone="Asia/Kathmandu")})
    )
    at = parse_ts("2026-11-20T18:45:00Z")  # 18:45 UTC; 00:30 in Kathmandu
    events = [
        offered(parse_ts("2026-11-20T18:00:00Z"), "c1", tenant="utc"),
        offered(parse_ts("2026-11-20T18:00:00Z"), "c1", tenant="ktm"),
    ]
    flat, _ = run_engine(config, events, at)
    assert series(flat, "ccmon_calls_offered", tenant="utc", window="today") == 1
    assert series(flat, "ccmon_calls_offered", tenant="ktm", window="today") == 0
    assert series(flat, "ccmon_calls_offered", tenant="ktm", window="1h") == 1


# --------------------------------------------------------------------------------------
# late events and lateness
# --------------------------------------------------------------------------------------
LATE = [
    # (what, arrival-ordered events as (offset, call, type), expected per window 5m/15m/1h/today)
    (
        "a late offer lands in its own bucket",
        [(-100, "a", "call.offered"), (-2000, "b", "call.offered")],
        "ccmon_calls_offered",
        (1, 1, 2, 2),
    ),
    (
        "an outcome before its offer",
        [(-1000, "a", "call.answered"), (-1030, "a", "call.offered")],
        "ccmon_calls_answered",
        (0, 0, 1, 1),
    ),
    (
        "a late earlier terminal replaces the outcome",
        [(-1100, "a", "call.offered"), (-200, "a", "call.answered"), (-1000, "a", "call.abandoned")],
        "ccmon_calls_abandoned",
        (0, 0, 1, 1),
    ),
    (
        "... and the answer no longer counts",
        [(-1100, "a", "call.offered"), (-200, "a", "call.answered"), (-1000, "a", "call.abandoned")],
        "ccmon_calls_answered",
        (0, 0, 0, 0),
    ),
    (
        "a late event from an hour ago, in time for today only",
        [(-60, "a", "call.offered"), (-5000, "b", "call.offered")],
        "ccmon_calls_offered",
        (1, 1, 1, 2),
    ),
]


@pytest.mark.parametrize(("what", "arrivals", "metric", "expected"), LATE, ids=[r[0] for r in LATE])
def test_late_events(what: str, arrivals: list[tuple[int, str, str]], metric: str, expected: tuple[int, ...]) -> None:
    events = []
    for off, call, kind in arrivals:
        event: dict[str, Any] = {"type": kind, "ts": AT + off, "call_id": call, "queue": "q"}
        if kind == "call.answered":
            event["agent_id"] = "a1"
        events.append(event)
    flat, _ = run_engine(Config(), events, AT)
    assert per_window(flat, metric) == dict(zip(WINDOWS, map(float, expected), strict=True))
    # the same events in time order give the same answer
    flat2, _ = run_engine(Config(), sorted(events, key=lambda e: e["ts"]), AT)
    assert per_window(flat2, metric) == per_window(flat, metric)


TOO_LATE = [
    # (what, config engine section, zone, at, event ts, accepted?)
    (
        "at 10:00Z today started at 00:00Z: 00:00:00 is in time",
        {},
        "UTC",
        "2026-11-20T10:00:00Z",
        "2026-11-20T00:00:00Z",
        True,
    ),
    ("... 23:59:59 the day before is too late", {}, "UTC", "2026-11-20T10:00:00Z", "2026-11-19T23:59:59Z", False),
    ("at 00:30Z the 1h window reaches back to 23:30", {}, "UTC", "2026-11-20T00:30:00Z", "2026-11-19T23:30:00Z", True),
    ("... 23:29:59 is too late", {}, "UTC", "2026-11-20T00:30:00Z", "2026-11-19T23:29:59Z", False),
    (
        "no 'today' window: only the longest window counts",
        {"windows": ["5m", "1h"]},
        "UTC",
        "2026-11-20T10:00:00Z",
        "2026-11-20T08:59:59Z",
        False,
    ),
    (
        "no 'today' window: at-1h is in time",
        {"windows": ["5m", "1h"]},
        "UTC",
        "2026-11-20T10:00:00Z",
        "2026-11-20T09:00:00Z",
        True,
    ),
    ("a 2h window keeps two hours", {"windows": ["2h"]}, "UTC", "2026-11-20T10:00:00Z", "2026-11-20T08:00:00Z", True),
    (
        "Kathmandu midnight 18:15Z is in time",
        {},
        "Asia/Kathmandu",
        "2026-11-20T22:00:00Z",
        "2026-11-20T18:15:00Z",
        True,
    ),
    (
        "Kathmandu: one second before its midnight is too late",
        {},
        "Asia/Kathmandu",
        "2026-11-20T22:00:00Z",
        "2026-11-20T18:14:59Z",
        False,
    ),
    (
        "New York: 04:59:59Z is yesterday there, too late at 10:00Z",
        {},
        "America/New_York",
        "2026-11-20T10:00:00Z",
        "2026-11-20T04:59:59Z",
        False,
    ),
]


@pytest.mark.parametrize(("what", "engine", "zone", "at", "ts", "accepted"), TOO_LATE, ids=[r[0] for r in TOO_LATE])
def test_too_late(what: str, engine: dict[str, Any], zone: str, at: str, ts: str, accepted: bool) -> None:
    flat, _ = run_engine(zoned(zone, **engine), [offered(parse_ts(ts), "c1")], parse_ts(at))
    assert rejected(flat, "too_late") == (0 if accepted else 1)
    total = flat.get(("ccmon_calls_offered_total", (("tenant", "default"), ("queue", "q"))))
    assert total == (1 if accepted else None)  # a rejected event leaves no trace, not even its queue


def test_too_late_changes_nothing_and_is_counted_once_per_event() -> None:
    base = [offered(AT - 60, "c1"), {"type": "call.answered", "ts": AT - 50, "call_id": "c1", "agent_id": "a"}]
    late = [
        {"type": "call.abandoned", "ts": AT - 86400, "call_id": "c1", "queue": "q"},
        offered(AT - 40000, "c2"),
        {"type": "survey.response", "ts": AT - 90000, "queue": "q", "survey": "nps", "score": 0},
    ]
    flat, _ = run_engine(Config(), base, AT)
    flat_late, _ = run_engine(Config(), base[:1] + late + base[1:], AT)
    assert rejected(flat_late, "too_late") == 3
    kpis = {k: v for k, v in flat.items() if not k[0].startswith("ccmon_events") and "last_event" not in k[0]}
    assert kpis == {k: v for k, v in flat_late.items() if k in kpis}
    assert set(kpis) == {k for k in flat_late if not k[0].startswith("ccmon_events") and "last_event" not in k[0]}


def test_from_the_future_is_rejected() -> None:
    flat, engine = run_engine(Config(), [], AT)
    for i, off in enumerate((300, 301, 3600)):
        engine.handle(parse_event({"event_id": f"f{i}", **offered(AT + off, f"c{i}")}), AT)
    flat = flatten(snapshot(engine.config, engine.store, AT))
    assert rejected(flat, "from_the_future") == 2
    assert flat[("ccmon_calls_offered_total", (("tenant", "default"), ("queue", "q")))] == 1


# --------------------------------------------------------------------------------------
# calls waiting and their expiry
# --------------------------------------------------------------------------------------
WAITING = [
    # (what, offer offsets with no outcome, expected waiting, longest wait, expired)
    ("none", [], 0, 0, 0),
    ("one fresh", [-30], 1, 30, 0),
    ("two: the oldest sets the longest wait", [-30, -600], 2, 600, 0),
    ("exactly max_call_age (4 h) still waits", [-14400], 1, 14400, 0),
    ("older than max_call_age expires", [-14401], 0, 0, 1),
    ("mixed", [-14401, -20000, -10, -14400], 2, 14400, 2),
]


@pytest.mark.parametrize(("what", "offsets", "waiting", "longest", "expired"), WAITING, ids=[r[0] for r in WAITING])
def test_calls_waiting_and_expiry(what: str, offsets: list[int], waiting: int, longest: float, expired: int) -> None:
    events = [offered(AT + off, f"c{i}") for i, off in enumerate(offsets)]
    events.append(offered(AT - 100, "answered"))
    events.append({"type": "call.answered", "ts": AT - 90, "call_id": "answered", "agent_id": "a"})
    for maintain in (False, True):
        flat, _ = run_engine(Config(), events, AT, maintain=maintain)
        assert series(flat, "ccmon_calls_waiting") == waiting
        assert series(flat, "ccmon_longest_wait_seconds") == longest
        assert series(flat, "ccmon_calls_waiting", queue="_all") == waiting
        assert series(flat, "ccmon_longest_wait_seconds", queue="_all") == longest
        if maintain:  # expiry is counted by the engine's upkeep
            assert flat[("ccmon_calls_expired_total", (("tenant", "default"), ("queue", "q")))] == expired
            assert flat[("ccmon_calls_expired_total", (("tenant", "default"), ("queue", "_all")))] == expired


def test_expiry_is_counted_once() -> None:
    flat, engine = run_engine(Config(), [offered(AT - 20000, "c1")], AT, maintain=True)
    engine.maintain(AT + 60)
    engine.maintain(AT + 120)
    flat = flatten(snapshot(engine.config, engine.store, AT + 120))
    assert flat[("ccmon_calls_expired_total", (("tenant", "default"), ("queue", "q")))] == 1
    assert series(flat, "ccmon_calls_waiting") == 0


def test_max_call_age_is_configurable() -> None:
    config = Config(max_call_age_seconds=600)
    flat, _ = run_engine(config, [offered(AT - 601, "old"), offered(AT - 599, "young")], AT, maintain=True)
    assert series(flat, "ccmon_calls_waiting") == 1
    assert series(flat, "ccmon_longest_wait_seconds") == 599
    assert flat[("ccmon_calls_expired_total", (("tenant", "default"), ("queue", "q")))] == 1


def test_outbound_calls_never_wait() -> None:
    flat, _ = run_engine(
        Config(), [offered(AT - 60, "o1", direction="outbound"), offered(AT - 60, "i1", queue="r")], AT
    )
    assert series(flat, "ccmon_calls_waiting", queue="_all") == 1
    assert series(flat, "ccmon_calls_waiting") in (None, 0)
    assert per_window(flat, "ccmon_calls_offered", queue="_all") == {w: 1.0 for w in WINDOWS}
