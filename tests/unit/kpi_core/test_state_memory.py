"""MemoryState's memory (issue #16: ``ccmon replay`` of 300,000 events within 150 MiB): the seen
event ids as sorted numpy arrays behind a dict of the newest, the records as marshal dumps with
their expiry appended, deflated once an upkeep interval passes without a write. The semantics
stay the store's: a duplicate is one whatever ts it carries, until its first hour is forgotten;
a record reads back as written, compressed or not, and expires at its time."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy  # noqa: F401  (loaded before measuring: the store imports it at its first merge)

import kpi_core.state as state_module
from kpi_core.state import MemoryState

HOUR = 3600.0
T0 = 1795143600.0  # an hour's start


def held_per_item(fill: Callable[[], object], n: int) -> float:
    """Bytes still allocated per item after ``fill()`` (what it returns is kept alive)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return (after - before) / n


# -- seen event ids -------------------------------------------------------------------------
def test_duplicates_are_found_in_the_dict_and_in_the_merged_arrays_whatever_their_ts() -> None:
    store = MemoryState()
    store._seen = state_module._SeenIds(merge_every=5)
    ids = [f"e{i}" for i in range(23)]  # four merges, three ids left in the dict
    assert all(store.claim_event("t", event_id, T0 + i) for i, event_id in enumerate(ids))
    assert store._seen._count == 20 and len(store._seen._new) == 3
    for i, event_id in enumerate(ids):
        assert not store.claim_event("t", event_id, T0 + 5 * HOUR + i)  # another ts: still a duplicate
    assert store.claim_event("other tenant", "e1", T0)  # an id is a tenant's own
    assert store.claim_event("t", "e23", T0)
    assert len(store._seen) == 25


def test_an_id_is_forgotten_with_the_hour_of_its_first_ts() -> None:
    store = MemoryState(10, 900)
    store._seen = state_module._SeenIds(merge_every=4)
    for i in range(10):  # hour 0: merged into the arrays, and in the dict
        store.claim_event("t", f"old{i}", T0 + i)
    for i in range(10):  # hour 2
        store.claim_event("t", f"new{i}", T0 + 2 * HOUR + i)
    assert not store.claim_event("t", "old3", T0 + 2 * HOUR)  # re-sent later: a duplicate still
    # The coarse cutoff passes the end of hour 0 (now - 0 s kept - 900 s > T0 + 1 h), not hour 2.
    store.maintain(T0 + 2 * HOUR + 901, 0, 0)
    assert all(store.claim_event("t", f"old{i}", T0 + 2 * HOUR) for i in range(10))  # forgotten: new again
    assert not any(store.claim_event("t", f"new{i}", T0) for i in range(10))  # kept
    assert len(store._seen) == 20


def test_ids_looked_up_ahead_are_claimed_as_without() -> None:
    """prefetch_seen (ccmon replay's batches) searches the arrays once for a batch; a merge or an
    hour forgotten in between makes claim_event search again."""
    store = MemoryState(10, 900)
    store._seen = state_module._SeenIds(merge_every=4)
    for i in range(8):  # hour 0, all merged into the arrays
        store.claim_event("t", f"old{i}", T0 + i)
    batch = [("t", f"d{i}", T0 + 2 * HOUR) for i in range(4)] + [("t", "d0", T0 + 2 * HOUR), ("t", "old3", T0)]
    store.prefetch_seen(batch)
    # d0..d3 fill the dict and are merged at d3: d0 is a duplicate in the arrays by then.
    assert [store.claim_event(*item) for item in batch] == [True] * 4 + [False, False]
    store.prefetch_seen(batch)
    store.maintain(T0 + 2 * HOUR + 901, 0, 0)  # forgets hour 0 after the look-ahead
    assert [store.claim_event(*item) for item in batch] == [False] * 5 + [True]
    assert store.claim_event("t", "old4", T0 + 2 * HOUR)


def test_a_seen_id_takes_a_fraction_of_a_dict_entry() -> None:
    n = 140_000  # four merges into the arrays, and 8,928 ids in the dict

    def fill() -> MemoryState:
        store = MemoryState()
        for i in range(n):
            store.claim_event("default", f"e{i}", T0 + i / 10)
        return store

    # A dict of Python ints with per-hour lists held ~130 bytes an id; the arrays hold 16, and
    # the dict of the newest ids (fewer than SEEN_MERGE_EVERY) adds its share (~18 in all).
    assert held_per_item(fill, n) < 40


# -- records ---------------------------------------------------------------------------------
def call_record(i: int) -> dict[str, object]:
    """A finished call's record as the engine writes one (the shape matters for the size only)."""
    ts = T0 + i
    return {
        "offers": [[ts, f"e{i}", "q007", "inbound", "voice", None, None]],
        "terminals": [[ts + 12, f"e{i}b", None, "answered", None, f"a{i % 50}"]],
        "ended": [[ts + 200, f"e{i}c", None, 180.0, 0.0, 20.0, True, None]],
        "customer": f"cust{i % 3000}",
        "applied": {
            f"e{i}:off": ["q007", ts, {"offered": 1, "offered@c:voice": 1}],
            f"e{i}:out": [
                "q007",
                ts + 12,
                {"answered": 1, "asa_n": 1, "asa_sum_ms": 12000, "mx:wait:12000": 1, "wait_n": 1, "wait_sum_ms": 12000},
            ],
            f"e{i}:end": ["q007", ts + 200, {"fcr_n": 1, "fcr_ok": 1, "handle_sum_ms": 200000, "handled": 1}],
        },
        "live": [],
        "summary": [["inbound", ts, "q007", "answered", ts + 12]],
    }


def test_records_read_back_as_written_plain_compressed_and_rewritten() -> None:
    store = MemoryState()
    n = 300
    for i in range(n):
        store.put_record("call", "t", f"c{i}", call_record(i), T0 + 10 * HOUR)
    store.maintain(T0, 0, 0)  # the first upkeep: everything was written since the last
    assert store.sizes()["cold_records"] == 0
    store.put_record("call", "t", "c0", {**call_record(0), "customer": "changed"}, T0 + 10 * HOUR)
    store.maintain(T0, 0, 0)  # not written for an interval: compressed
    assert store.sizes()["cold_records"] == n - 1
    assert store.get_record("call", "t", "c0") == {**call_record(0), "customer": "changed"}  # plain still
    for i in range(1, n):
        assert store.get_record("call", "t", f"c{i}") == call_record(i)
    record = store.get_record("call", "t", "c7")
    assert record is not None
    record["customer"] = "a caller's change"  # a copy: the store's is unchanged until put
    assert store.get_record("call", "t", "c7") == call_record(7)
    store.put_record("call", "t", "c7", record, T0 + 10 * HOUR)
    assert store.get_record("call", "t", "c7") == record
    assert store.sizes()["cold_records"] == n - 2
    store.delete_record("call", "t", "c8")
    assert store.get_record("call", "t", "c8") is None
    assert store.get_record("call", "other", "c9") is None and store.get_record("ticket", "t", "c9") is None
    assert store.sizes()["records"] == n - 1


def test_records_expire_at_their_time_compressed_or_not() -> None:
    store = MemoryState()
    for i in range(100):
        store.put_record("call", "t", f"c{i}", call_record(i), T0 + HOUR + i)
    store.maintain(T0, 0, 0)
    store.maintain(T0, 0, 0)
    assert store.sizes()["cold_records"] == 100
    store.put_record("call", "t", "c99", call_record(99), T0 + 10)  # rewritten with an earlier expiry
    store.put_record("call", "t", "late", call_record(5), T0 + 50 * HOUR)
    store.maintain(T0 + 10, 0, 0)  # nothing before its time
    assert store.sizes()["records"] == 101
    store.maintain(T0 + 11, 0, 0)
    assert store.get_record("call", "t", "c99") is None and store.sizes()["records"] == 100
    store.maintain(T0 + HOUR + 50, 0, 0)  # c0..c49 expired, c50.. not yet
    assert [store.get_record("call", "t", f"c{i}") is None for i in (0, 49, 50, 98)] == [True, True, False, False]
    assert store.get_record("call", "t", "c50") == call_record(50)
    store.maintain(T0 + 40 * HOUR, 0, 0)
    assert store.sizes()["records"] == 1 and store.get_record("call", "t", "late") == call_record(5)


def test_a_finished_call_not_written_for_an_upkeep_interval_takes_a_third_of_its_dump() -> None:
    n = 10_000
    records = [call_record(i) for i in range(n)]

    def fill() -> MemoryState:
        store = MemoryState()
        for i, record in enumerate(records):
            store.put_record("call", "default", f"c{i}", record, T0 + 25 * HOUR)
        store.maintain(T0, 0, 0)
        store.maintain(T0, 0, 0)
        return store

    # The marshal dump alone is ~520 bytes; a dict of (kind, tenant, key) -> (dump, expiry)
    # held ~810 a record with its key, tuples and float; deflated, ~200.
    assert held_per_item(fill, n) < 400
