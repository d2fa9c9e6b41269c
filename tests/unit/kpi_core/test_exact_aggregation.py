"""Exact aggregation (kpi_core.state, "Exact arithmetic"): whole-number contributions, so a
retraction leaves no float noise, and maxima kept as multisets, so they are retracted too
and do not depend on the arrival order. Also: state written in the old layout (float sums,
``max_*`` fields) keeps working next to the new fields.
"""

from __future__ import annotations

import marshal
import random
from typing import Any

import pytest
from harness.exact import AT, parsed, retraction_stream, transferred_then_answered
from harness.reference import series

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import Event, parse_event, parse_ts
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState, add_into, present, to_ms
from streams.sim import SimParams, Simulator, default_queues


def feed(events: list[Event], at: float = AT, store: MemoryState | None = None) -> tuple[dict[Any, float], MemoryState]:
    config = Config()
    store = store or MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    for event in events:
        engine.handle(event, at)
    return flatten(snapshot(config, store, at)), store


# -- the two bugs ------------------------------------------------------------------------
@pytest.mark.parametrize("order", [(0, 1, 2), (0, 2, 1), (2, 1, 0), (2, 0, 1)])
def test_a_transfer_arriving_before_the_answer_leaves_no_stale_maximum(order: tuple[int, ...]) -> None:
    events = transferred_then_answered()
    flat, _ = feed([events[i] for i in order])
    for window in ("5m", "15m", "1h", "today"):
        assert series(flat, "ccmon_max_wait_seconds", window=window) == (5.0 if window != "5m" else None), window
    assert series(flat, "ccmon_max_wait_seconds", queue="_all", window="15m") == 5.0
    assert series(flat, "ccmon_calls_answered", window="15m") == 1


def test_a_retracted_fractional_wait_leaves_no_float_noise() -> None:
    """(6.063 + 437.682) - 437.682 is 6.062999999999988 in floats; in whole ms it is 6063."""
    flat, _ = feed(retraction_stream())
    for window in ("5m", "15m", "1h", "today"):
        assert series(flat, "ccmon_average_speed_of_answer_seconds", window=window) == 6.063, window
        assert series(flat, "ccmon_answered_wait_time_seconds", window=window) == 6.063, window
        assert series(flat, "ccmon_max_wait_seconds", window=window) == 10.0, window  # the abandonment's
    in_order, _ = feed(sorted(retraction_stream(), key=lambda e: e.ts))
    assert in_order == flat


def test_a_wait_between_two_times_is_their_difference_in_whole_milliseconds() -> None:
    """Offered at .877, answered at .940 seven seconds later: the wait is 7.063 s, not the
    difference of two floats near 1.8e9 (7.06299996...)."""
    events = parsed(
        [
            {"type": "call.offered", "ts": AT - 100.123, "call_id": "c", "queue": "q"},
            {"type": "call.answered", "ts": AT - 93.06, "call_id": "c", "queue": "q", "agent_id": "a1"},
        ]
    )
    flat, _ = feed(events)
    assert series(flat, "ccmon_average_speed_of_answer_seconds", window="5m") == 7.063
    assert series(flat, "ccmon_max_wait_seconds", window="5m") == 7.063


def test_to_ms_rounds_half_away_from_zero() -> None:
    assert [to_ms(x) for x in (0.0, 0.0005, 0.0015, -0.0005, -0.0015, 6.063, 437.682, 1795168800.123)] == [
        0,
        1,
        2,
        -1,
        -2,
        6063,
        437682,
        1795168800123,
    ]


def test_a_multiset_field_is_deleted_at_zero_and_totals_keep_none() -> None:
    store = MemoryState()
    store.add("t", "q", AT, {"n": 1, "mx:wait:5000": 1, "mx:wait:180000": 1})
    store.add("t", "q", AT, {"mx:wait:180000": -1})
    assert store._fine[("t", "q")][int(AT) // 10 * 10] == {"n": 1, "mx:wait:5000": 1}
    assert store._totals[("t", "q")] == {"n": 1}
    assert store.read_window("t", "q", AT - 60, AT + 60) == {"n": 1.0, "max_wait": 5.0}
    assert store.totals("t", "q") == {"n": 1.0}


def test_present_merges_the_legacy_fields() -> None:
    fields = {
        "wait_sum": 6.063,
        "wait_sum_ms": 437682,
        "asa_sum_ms@c:chat": 1500,
        "max_wait": 180.0,
        "mx:wait:5000": 2,
        "mx:wait:900000": 0,
        "mx:cb_delay:2500": 1,
        "occ_busy_t_ms": -1795168800123,
        "answered": 3,
    }
    assert present(fields) == {
        "wait_sum": 6.063 + 437.682,
        "asa_sum@c:chat": 1.5,
        "max_wait": 180.0,
        "max_cb_delay": 2.5,
        "occ_busy_t": -1795168800.123,
        "answered": 3.0,
    }
    assert present({"max_wait": 4.0, "mx:wait:5000": 1}) == {"max_wait": 5.0}


# -- order independence of a simulated day -----------------------------------------------
def test_a_shuffled_simulated_day_gives_the_same_series_maxima_included() -> None:
    """~4,500 events of four queues over two hours (times in ms, transfers, callbacks),
    delivered in a random order: every series of the snapshot, maxima included, has the
    bits of the in-order feed."""
    start = parse_ts("2026-11-20T08:00:00Z")
    records = [
        r for _emit, r in Simulator(SimParams(start=start, hours=2.0, queues=default_queues(4), seed=11)).stream()
    ]
    events = [parse_event(r) for r in records if isinstance(r, dict)]
    assert 3000 < len(events) < 6000
    at = start + 2 * 3600 + 60
    ordered, _ = feed(events, at)
    shuffled = list(events)
    random.Random(5).shuffle(shuffled)
    got, _ = feed(shuffled, at)
    assert got == ordered
    names = {name for name, _labels in got}
    assert {"ccmon_max_wait_seconds", "ccmon_callback_delay_max_seconds", "ccmon_occupancy_ratio"} <= names
    assert any(v for (name, _l), v in got.items() if name == "ccmon_callback_delay_max_seconds")


# -- state written in the old layout -----------------------------------------------------
def legacy_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """What the code before exact aggregation wrote for ``fields``: sums in float seconds
    under the legacy name, maxima as ``max_*`` fields."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name.startswith("mx:"):
            kind, _sep, ms = name[3:].rpartition(":")
            if value > 0:
                out["max_" + kind] = max(out.get("max_" + kind, float("-inf")), int(ms) / 1000)
        elif "_ms" in name.partition("@")[0]:
            base, at, mark = name.partition("@")
            out[base[:-3] + at + mark] = out.get(base[:-3] + at + mark, 0.0) + value / 1000
        else:
            out[name] = value
    return out


def legacify(store: MemoryState) -> None:
    """Rewrite a store in the old layout: its buckets, totals and the contributions and day
    sums its records hold."""
    for tier in (store._fine, store._coarse):
        for buckets in tier.values():
            for start in buckets:
                buckets[start] = legacy_fields(buckets[start])
    for key in store._totals:
        store._totals[key] = legacy_fields(store._totals[key])
    for rkey, (raw, expire_at) in list(store._records.items()):
        record = marshal.loads(raw)
        for name in ("applied", "applied_repeat"):
            for contribution in record.get(name, {}).values():
                contribution[2] = legacy_fields(contribution[2])
        for day, sums in record.get("days", {}).items():
            record["days"][day] = legacy_fields(sums)
        store._records[rkey] = (marshal.dumps(record), expire_at)


def test_state_in_the_old_layout_reads_as_a_fresh_store_fed_every_event() -> None:
    """A simulated hour written in the old layout (float seconds, ``max_*``), then an hour
    of new events (some late for calls of the first hour, which retract their legacy
    contributions under the legacy names): the snapshot is a fresh store's fed both, up to
    float rounding of the legacy sums."""
    start = parse_ts("2026-11-20T08:00:00Z")
    records = [
        r for _emit, r in Simulator(SimParams(start=start, hours=2.0, queues=default_queues(2), seed=3)).stream()
    ]
    events = [parse_event(r) for r in records if isinstance(r, dict)]
    at = start + 2 * 3600 + 60
    cut = start + 3600
    # the first hour, but for some terminal and end events that come late, after the upgrade
    late = {e.event_id for e in events[::7] if e.ts < cut and e.type in ("call.answered", "call.ended", "agent.state")}
    before = [e for e in events if e.ts < cut and e.event_id not in late]
    after = [e for e in events if e.ts >= cut or e.event_id in late]
    assert len(late) > 20
    _, old = feed(before, at)
    legacify(old)
    assert any(k.startswith("max_") for b in old._coarse.values() for f in b.values() for k in f)
    got, _ = feed(after, at, store=old)
    want, _ = feed(events, at)
    assert set(got) == set(want)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-6)


def test_add_into_keeps_legacy_maxima_as_maxima() -> None:
    bucket: dict[str, Any] = {"max_wait": 3.5, "wait_sum": 1.25}
    add_into(bucket, {"max_wait": 2.0, "wait_sum": -1.25, "wait_sum_ms": 500, "mx:wait:500": 1})
    assert bucket == {"max_wait": 3.5, "wait_sum": 0.0, "wait_sum_ms": 500, "mx:wait:500": 1}
    assert present(bucket) == {"max_wait": 3.5, "wait_sum": 0.5}


def test_memory_state_adds_to_each_tier_as_add_into_does() -> None:
    """MemoryState.add adds a contribution to its fine and coarse bucket and the totals in one
    pass: each ends as add_into leaves it, in the same field order (sums, a sum whose name
    starts with ``m``, multiset fields deleted at 0 and left out of the totals, legacy maxima)."""
    store = MemoryState(10, 900)
    fine: dict[str, Any] = {}
    coarse: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    contributions = [
        (AT + 1, {"answered": 1, "mx:wait:500": 1, "missed": 1, "wait_sum_ms": 500}),
        (AT + 2, {"max_wait": 2.5, "answered": 1, "mx:wait:700": 1}),
        (AT + 3, {"answered": -1, "mx:wait:500": -1, "missed": -1, "wait_sum_ms": -500}),
        (AT + 4, {"max_wait": 1.0, "mx:wait:700": 1, "occ_busy": 2}),
    ]
    for ts, deltas in contributions:
        store.add("t", "q", ts, deltas)
        add_into(fine, deltas)
        add_into(coarse, deltas)
        add_into(totals, deltas, multisets=False)
    fstart, cstart = int(AT // 10) * 10, int(AT // 900) * 900
    assert list(store._fine[("t", "q")][fstart].items()) == list(fine.items())
    assert list(store._coarse[("t", "q")][cstart].items()) == list(coarse.items())
    assert list(store._totals[("t", "q")].items()) == list(totals.items())
    assert fine == {"answered": 1, "missed": 0, "wait_sum_ms": 0, "max_wait": 2.5, "mx:wait:700": 2, "occ_busy": 2}
    assert "mx:wait:700" not in totals


def test_agent_occupancy_contributions_are_whole_numbers_per_listed_queue() -> None:
    """An agent change's occupancy contribution: per scope, its state's ``occ_*`` less the
    previous state's (in the queues the agent had then), and ``occ_*_t_ms`` = that times its time
    in ms; a queue listed twice counts twice, a state that is not logged in counts nothing, a
    scope whose difference is 0 contributes nothing; scopes left come first."""
    engine = Engine(Config(), MemoryState())
    changes = [
        [100.0, "e0", "available", ["q", "q"], ""],
        [200.0, "e1", "on_call", None, ""],
        [300.0, "e2", "offline", ["r"], ""],
    ]
    expected = [
        (
            "e0:q",
            ["q", 100.0, {"occ_staffed": 2, "occ_logged": 2, "occ_staffed_t_ms": 200000, "occ_logged_t_ms": 200000}],
        ),
        (
            "e0:_all",
            ["_all", 100.0, {"occ_staffed": 1, "occ_logged": 1, "occ_staffed_t_ms": 100000, "occ_logged_t_ms": 100000}],
        ),
        ("e1:q", ["q", 200.0, {"occ_busy": 2, "occ_busy_t_ms": 400000}]),
        ("e1:_all", ["_all", 200.0, {"occ_busy": 1, "occ_busy_t_ms": 200000}]),
        (
            "e2:q",
            [
                "q",
                300.0,
                {
                    "occ_busy": -2,
                    "occ_staffed": -2,
                    "occ_logged": -2,
                    "occ_busy_t_ms": -600000,
                    "occ_staffed_t_ms": -600000,
                    "occ_logged_t_ms": -600000,
                },
            ],
        ),
        (
            "e2:_all",
            [
                "_all",
                300.0,
                {
                    "occ_busy": -1,
                    "occ_staffed": -1,
                    "occ_logged": -1,
                    "occ_busy_t_ms": -300000,
                    "occ_staffed_t_ms": -300000,
                    "occ_logged_t_ms": -300000,
                },
            ],
        ),
    ]
    out = engine._agent_contributions(changes, 0, 3, [])
    # the same contributions, in the same order, their fields in the same order, all ints
    assert [(cid, c[0], c[1], list(c[2].items())) for cid, c in out.items()] == [
        (cid, c[0], c[1], list(c[2].items())) for cid, c in expected
    ]
    assert all(type(value) is int for c in out.values() for value in c[2].values())
