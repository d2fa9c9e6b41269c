"""kpi_core.kpis.snapshot over arrays (kpi_core.columns.Columns) against the per-queue path
(``arrays=False``): the same families, samples, order and bits, on a simulated state of many
queues with channel and priority breakdowns (beyond the limits: ``other``), targets per queue
and per channel, queues configured without state (empty windows) and queues the cardinality
guard hides (their lifetime totals still count in ``_all``)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from kpi_core.catalog import count, mean, peak
from kpi_core.columns import Columns
from kpi_core.config import config_from_dict
from kpi_core.engine import Engine
from kpi_core.events import parse_event
from kpi_core.exposition import render
from kpi_core.kpis import (
    MetricFamily,
    _sum_components,
    snapshot,
    wait_fields,
    wait_quantile,
    wait_quantiles,
)
from kpi_core.state import MemoryState
from streams.sim import SimParams, Simulator, default_queues, parse_start

START = parse_start("2026-11-20T07:00:00Z")
AT = START + 3600 + 7 * 60  # ragged 5m / 15m / 1h edges
CHANNELS = (None, "voice", "chat", "email", "social", "sms")
CONFIG: dict[str, Any] = {
    "limits": {"max_channels": 3, "max_priorities": 2, "queues_per_tenant": 8},
    "engine": {"max_call_age_seconds": 6 * 3600},  # a 4.5 h wait (the +Inf bucket) still counts
    "defaults": {"targets": {"service_level": 0.8}, "channels": {"chat": {"targets": {"service_level": 0.7}}}},
    "tenants": {
        "acme": {
            "queues": {
                "idle": {"targets": {"asa_seconds": 20}},  # configured, no event: every window empty
                "q00": {"sl_formula": "offered", "channels": {"email": {"targets": {"first_response_seconds": 600}}}},
                "q01": {"sl_formula": "removed_within", "sl_threshold_seconds": 30},
                "slow": {},  # one caller, answered after 4.5 h
            }
        }
    },
}


def _random_events(rng: random.Random, tenant: str, queues: list[str], n: int) -> list[dict[str, Any]]:
    """Calls and tickets with channels and priorities, waits and times in odd milliseconds."""
    events: list[dict[str, Any]] = []
    for i in range(n):
        queue = rng.choice(queues)
        channel, priority = rng.choice(CHANNELS), rng.choice([None, *range(10)])
        ts = AT - round(rng.uniform(1, 5400), 3)
        extra = {k: v for k, v in (("channel", channel), ("priority", priority)) if v is not None}
        if rng.random() < 0.75:
            cid = f"{tenant}-c{i}"
            wait = round(rng.uniform(0, 90), 3)
            outcome = rng.choice(["answered", "answered", "abandoned", "timeout", "voicemail"])
            events.append(
                {
                    "event_id": f"{cid}-o",
                    "type": "call.offered",
                    "ts": ts,
                    "queue": queue,
                    "call_id": cid,
                    "tenant": tenant,
                    "customer_id": f"cust{rng.randrange(50)}",
                    **extra,
                }
            )
            terminal: dict[str, Any] = {
                "event_id": f"{cid}-t",
                "type": f"call.{outcome}",
                "ts": ts + wait,
                "call_id": cid,
                "tenant": tenant,
            }
            if outcome == "answered":
                terminal["agent_id"] = f"a{rng.randrange(5)}"
                events.append(
                    {
                        "event_id": f"{cid}-e",
                        "type": "call.ended",
                        "ts": ts + wait + 61.25,
                        "call_id": cid,
                        "tenant": tenant,
                        "talk_seconds": round(rng.uniform(5, 300), 3),
                        "resolved": rng.random() < 0.6,
                    }
                )
            events.append(terminal)
        else:
            tid = f"{tenant}-t{i}"
            events.append(
                {
                    "event_id": f"{tid}-c",
                    "type": "ticket.created",
                    "ts": ts,
                    "queue": queue,
                    "ticket_id": tid,
                    "tenant": tenant,
                    "channel": channel or "email",
                    **({"priority": priority} if priority is not None else {}),
                }
            )
            events.append(
                {
                    "event_id": f"{tid}-r",
                    "type": "ticket.replied",
                    "ts": ts + round(rng.uniform(1, 900), 3),
                    "ticket_id": tid,
                    "author": "agent",
                    "tenant": tenant,
                }
            )
    # One caller answered after 4.5 h: its quantiles fall in the +Inf bucket (its lower bound).
    events += [
        {
            "event_id": f"{tenant}-long-o",
            "type": "call.offered",
            "ts": AT - 5 * 3600,
            "queue": "slow",
            "call_id": f"{tenant}-long",
            "tenant": tenant,
        },
        {
            "event_id": f"{tenant}-long-t",
            "type": "call.answered",
            "ts": AT - 1800,
            "call_id": f"{tenant}-long",
            "tenant": tenant,
            "agent_id": "a1",
        },
    ]
    return events


@pytest.fixture(scope="module")
def state() -> tuple[Any, MemoryState]:
    # Written without the queue limit, read with it: the guard hides the queues beyond it.
    unguarded = config_from_dict({**CONFIG, "limits": {**CONFIG["limits"], "queues_per_tenant": 1000}})
    store = MemoryState(unguarded.bucket_seconds, unguarded.coarse_bucket_seconds)
    engine = Engine(unguarded, store)
    params = SimParams(start=START, hours=1.1, queues=default_queues(6, 3), seed=5, tenant="globex")
    for _t, record in Simulator(params).stream():
        if isinstance(record, dict):
            engine.handle(parse_event(record), AT)
    rng = random.Random(16)
    for tenant, queues in (("acme", [f"q{i:02d}" for i in range(16)]), ("globex", ["sales", "support", "x"])):
        for raw in _random_events(rng, tenant, queues, 900):
            engine.handle(parse_event(raw), AT)
    return config_from_dict(CONFIG), store


def _samples(families: list[MetricFamily]) -> list[tuple[str, str, str, list[tuple[str, Any, str, type]]]]:
    """Everything about the families, values by their repr and type (so 0.0 != -0.0, 1 != 1.0)."""
    return [(f.name, f.kind, f.help, [(s, labels, repr(v), type(v)) for s, labels, v in f.samples]) for f in families]


def test_array_path_gives_the_per_queue_paths_samples_bit_for_bit(state: tuple[Any, MemoryState]) -> None:
    config, store = state
    arrays, plain = snapshot(config, store, AT), snapshot(config, store, AT, arrays=False)
    assert _samples(arrays) == _samples(plain)
    assert render(arrays) == render(plain)
    # The state exercises what the array path folds differently: both breakdowns with
    # `other`, the `_all` of each, hidden queues, an empty queue, every window.
    series = [(f.name, dict(labels)) for f in arrays for _s, labels, _v in f.samples]
    for label, limit in (("channel", 3), ("priority", 2)):
        values = {d[label] for name, d in series if name == f"ccmon_calls_offered_by_{label}"}
        assert "other" in values and len(values) == limit + 1, values
        assert any(d["queue"] == "_all" for name, d in series if name.endswith(f"_by_{label}_ratio"))
    acme = {d["queue"] for name, d in series if name == "ccmon_calls_offered" and d["tenant"] == "acme"}
    assert "idle" in acme and "_all" in acme and len(acme) < 18  # the guard hides some of the 16 queues
    idle = {(name, d["window"]) for name, d in series if d.get("queue") == "idle" and "window" in d}
    assert ("ccmon_calls_offered", "5m") in idle and ("ccmon_service_level_ratio", "1h") not in idle
    assert {d["window"] for name, d in series if name == "ccmon_max_wait_seconds"} == {"5m", "15m", "1h", "today"}
    assert all(type(v) is float or type(v) is int for f in arrays for _s, _l, v in f.samples)
    assert any(f.name == "ccmon_wait_seconds_quantile" and v == 14400 for f in arrays for _s, _l, v in f.samples)


def test_column_sums_are_the_dicts_sequential_sums() -> None:
    """Sums of ms / 1000 floats depend on their order (numpy's pairwise ``sum`` differs);
    Columns.total adds in row order, as merge_into does, and takes maxima and absences alike."""
    rng = random.Random(7)
    rows: list[dict[str, float]] = []
    for i in range(300):
        row = {
            "asa_sum": rng.randrange(10**7) / 1000,
            "answered": float(rng.randrange(50)),
            "occ_busy": 1.0,
            "offered@c:chat": 1.0,
        }
        if i % 3:
            row["wait_sum"] = rng.randrange(10**6) / 1000
        if i % 7 == 0:
            row["max_wait"] = rng.randrange(10**5) / 1000
        rows.append(row if i % 2 else dict(reversed(row.items())))
    rows.append({})
    total = Columns(rows).total()
    assert total == _sum_components(rows)
    assert {k: repr(v) for k, v in total.items()} == {k: repr(v) for k, v in _sum_components(rows).items()}
    assert set(total) == {"asa_sum", "answered", "wait_sum", "max_wait"}
    pairwise = float(np.sum(np.array([r.get("asa_sum", 0.0) for r in rows])))
    assert pairwise != total["asa_sum"]  # the order matters: a plain numpy sum would not do
    assert Columns([{"answered": 1.0}]).total() == {"answered": 1.0} and Columns([]).total() == {}


def test_column_folds_match_the_catalogs_functions() -> None:
    rows: list[dict[str, float]] = [
        {"asa_sum": 3.5, "asa_n": 2.0, "max_wait": 4.25},
        {"asa_sum": 0.0, "asa_n": 0.0},
        {},
        {"asa_n": 3.0, "max_wait": 0.0},
    ]
    table = Columns(rows)
    for fold in (count("asa_sum"), count("missing"), peak("max_wait"), peak("max_cb_delay"), mean("asa_sum", "asa_n")):
        got = table.fold(fold).tolist()
        assert [None if v != v else v for v in got] == [fold.fn(r) for r in rows], fold.op
    with pytest.raises(ValueError, match="op must be count, peak or mean, got ''"):
        table.fold(mean("asa_sum", "asa_n").__class__(("x",), lambda c: 0.0))


def test_vectorised_wait_quantiles_are_the_per_row_ones_bit_for_bit() -> None:
    rng = random.Random(3)
    fields = wait_fields("wa")
    rows = [
        {name: float(rng.choice((0, 0, 1, 3, 7, 11, 250))) for name in fields if rng.random() < 0.4} for _ in range(400)
    ] + [{}, {fields[-1]: 2.0}, {fields[0]: 1.0}]
    counts = np.array([[row.get(name, 0.0) for name in fields] for row in rows])
    for q in (0.5, 0.9, 0.99):
        values, top = wait_quantiles(q, counts)
        got = [None if v != v else repr(int(v) if t else v) for v, t in zip(values.tolist(), top.tolist(), strict=True)]
        want = [None if (v := wait_quantile(q, row)) is None else repr(v) for row in rows]
        assert got == want, q
        assert top.any() and want[-3:] == [None, "14400", repr(q)]
