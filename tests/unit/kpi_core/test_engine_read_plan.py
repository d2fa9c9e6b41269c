"""The engine owns its read plan (``Engine.prefetch``: what a batch of events will read, for the
store to read ahead; the worker only calls it), and ``StateStore`` declares everything the worker
and the exporter use from a store, so they call it directly (``MemoryState`` implements it all)."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Any

from harness.exact import AT, parsed
from harness.paths import REPO

from kpi_core.config import Config
from kpi_core.engine import AGENT_CALLS, Engine, record_keys
from kpi_core.events import Event
from kpi_core.state import MemoryState
from streams.exporter import KpiCollector


class RecordingState(MemoryState):
    """A MemoryState that notes every read ahead asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[Any, ...]] = []

    def prefetch_seen(self, items: Iterable[tuple[str, str, float]]) -> None:
        self.asked.append(("seen", sorted(event_id for _tenant, event_id, _ts in items)))

    def prefetch_series(self, items: Iterable[tuple[str, str, str]], since: float) -> None:
        self.asked.append(("series", sorted(items), since))

    def prefetch_records(self, kind: str, tenant: str, keys: Iterable[str]) -> None:
        self.asked.append(("records", kind, tenant, sorted(keys)))


def test_prefetch_reads_what_the_events_name_then_what_their_records_name() -> None:
    store = RecordingState()
    engine = Engine(Config(), store)
    # Call k1 of customer c1, rung at agent a1; callback b1 of customer c2.
    for event in parsed(
        [
            {"type": "call.offered", "ts": AT - 300, "call_id": "k1", "queue": "q", "customer_id": "c1"},
            {"type": "call.ring_no_answer", "ts": AT - 290, "call_id": "k1", "queue": "q", "agent_id": "a1"},
            {"type": "callback.requested", "ts": AT - 280, "callback_id": "b1", "queue": "q", "customer_id": "c2"},
        ]
    ):
        assert engine.process(event, AT)
    batch = parsed(
        [
            {"event_id": "b0", "type": "call.answered", "ts": AT - 60, "call_id": "k1", "queue": "q", "agent_id": "a2"},
            {"event_id": "b1", "type": "callback.attempted", "ts": AT - 50, "callback_id": "b1", "agent_id": "a4"},
            {
                "event_id": "b2",
                "type": "agent.state",
                "ts": AT - 40,
                "agent_id": "a3",
                "state": "available",
                "queues": ["q"],
            },
            {
                "event_id": "b3",
                "type": "ticket.created",
                "ts": AT - 30,
                "ticket_id": "t1",
                "queue": "q",
                "kb_session_id": "s1",
            },
            {"event_id": "b4", "type": "kb.viewed", "ts": AT - 20, "article_id": "art", "session_id": "s2"},
            {
                "event_id": "b5",
                "type": "call.offered",
                "ts": AT - 10,
                "call_id": "k2",
                "queue": "q",
                "customer_id": "c3",
            },
        ]
    )
    store.asked.clear()
    engine.prefetch(batch, AT)
    assert store.asked[0] == ("seen", ["b0", "b1", "b2", "b3", "b4", "b5"])
    assert store.asked[1][0] == "series" and store.asked[1][2] == AT - engine.horizon
    assert ("agent", "default", "a2") in store.asked[1][1] and ("queue", "default", "q") in store.asked[1][1]
    first_wave = [
        ("records", "call", "default", ["k1", "k2"]),
        ("records", "callback", "default", ["b1"]),
        ("records", "customer", "default", ["c3"]),
        ("records", "agent", "default", ["a3"]),
        ("records", "ticket", "default", ["t1"]),
        ("records", "kb", "default", ["s1", "s2"]),
    ]
    assert sorted(store.asked[2:8]) == sorted(first_wave)
    # The second wave, from the records just read: the customers of the call and the callback
    # whose events do not name them (c1, c2), and the day records of every agent call k1 names.
    assert store.asked[8:] == [
        ("records", "customer", "default", ["c1", "c2"]),
        ("records", AGENT_CALLS, "default", ["a1", "a2"]),
    ]
    assert [kind for event in batch for kind, _key in record_keys(event)] == [
        "call",
        "callback",
        "agent",
        "ticket",
        "kb",
        "kb",
        "call",
        "customer",
    ]


class CountingEngine(Engine):
    """An engine that notes whose guarded names it works out."""

    def __init__(self, config: Config, store: MemoryState) -> None:
        super().__init__(config, store)
        self.named: list[str] = []

    def series_of(self, event: Event) -> list[tuple[str, str, str, int]]:
        self.named.append(event.event_id)
        return super().series_of(event)


def test_the_read_plan_works_out_each_events_guarded_names_once() -> None:
    """The names an event brings under the guard are worked out once in a batch: the read plan
    reads their registry entries ahead and the guard (``_admit``) reuses them. An event the
    plan did not see (a batch of one, replay) works them out itself, and so does an equal event
    that is another object (the plan keys them by the object)."""
    engine = CountingEngine(Config(), RecordingState())  # reads the names it is asked ahead for
    batch = parsed(
        [
            {"event_id": "n0", "type": "call.offered", "ts": AT - 60, "call_id": "k1", "queue": "q1"},
            {"event_id": "n1", "type": "agent.state", "ts": AT - 50, "agent_id": "a1", "state": "available"},
            {
                "event_id": "n2",
                "type": "call.transferred",
                "ts": AT - 40,
                "call_id": "k1",
                "queue": "q1",
                "to_queue": "q2",
            },
        ]
    )
    engine.prefetch(batch, AT)
    assert engine.named == ["n0", "n1", "n2"]
    assert [engine.process(event, AT) for event in batch] == [True, True, True]
    assert engine.named == ["n0", "n1", "n2"]  # none worked out again
    assert engine.store.series_seen("queue", "default", "q2") == AT  # and the guard admitted them
    assert engine.store.series_seen("agent", "default", "a1") == AT
    (late,) = parsed(
        [{"event_id": "n3", "type": "call.ended", "ts": AT - 30, "call_id": "k1", "queue": "q2", "talk_seconds": 5}]
    )
    assert engine.process(late, AT)
    (again,) = parsed([{"event_id": "n4", "type": "call.abandoned", "ts": AT - 20, "call_id": "k2", "queue": "q3"}])
    engine.prefetch([again], AT)
    (twin,) = parsed([{"event_id": "n4", "type": "call.abandoned", "ts": AT - 20, "call_id": "k2", "queue": "q3"}])
    assert engine.process(twin, AT)
    assert engine.named == ["n0", "n1", "n2", "n3", "n4", "n4"]
    assert engine.store.series_seen("queue", "default", "q3") == AT


def test_memory_state_has_the_worker_and_exporter_side_of_a_store() -> None:
    store = MemoryState()
    config = Config()
    with store.batch() as batch:
        assert batch is store
    store.prefetch_seen([("default", "e1", AT)])
    store.prefetch_series([("queue", "default", "q")], AT)
    store.prefetch_records("call", "default", ["k1"])
    assert store.claim_event("default", "e1", AT)  # reading ahead claimed nothing
    assert store.snapshot_reader(config, AT) is store
    assert store.consumer_lag() is None
    assert store.stuck_partitions() is None
    assert store.events_version() is None
    # No workers, so no pipeline families in a scrape; a store with them shows them.
    names = {family.name for family in KpiCollector(config, store, lambda: AT).families()}
    assert "ccmon_consumer_lag" not in names and "ccmon_stuck_partition_timestamp_seconds" not in names

    class WithWorkers(MemoryState):
        def consumer_lag(self) -> dict[tuple[str, int], float]:  # type: ignore[override]
            return {("events", 0): 7.0}

        def stuck_partitions(self) -> dict[tuple[str, int], float]:  # type: ignore[override]
            return {}

    families = {family.name: family for family in KpiCollector(config, WithWorkers(), lambda: AT).families()}
    assert families["ccmon_consumer_lag"].samples == [("", (("topic", "events"), ("partition", "0")), 7.0)]
    assert families["ccmon_stuck_partition_timestamp_seconds"].samples == []


def test_the_worker_and_exporter_use_the_store_without_side_doors() -> None:
    """No ``getattr(store, ...)`` in the exporter, and no record kind or read ahead of its own
    in the worker's batch (the read plan is the engine's)."""
    exporter = (REPO / "streams" / "exporter.py").read_text()
    assert "getattr(self.store" not in exporter and "getattr(store" not in exporter
    worker = ast.parse((REPO / "streams" / "worker.py").read_text())
    called = {
        node.func.attr
        for node in ast.walk(worker)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert "prefetch" in called
    assert not {"prefetch_records", "prefetch_seen", "prefetch_series", "call_agents"} & called
    strings = {node.value for node in ast.walk(worker) if isinstance(node, ast.Constant)}
    assert not {"call", "callback", "customer", "agent_calls", "ticket", "kb"} & strings
