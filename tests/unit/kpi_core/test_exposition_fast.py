"""kpi_core.exposition.render (label pairs and values formatted once per rendering) against
render_reference (every sample formatted on its own): byte-identical on a simulated state
of many queues and on hand-made edge values and label sets."""

from __future__ import annotations

import math

import pytest

from kpi_core.config import config_from_dict
from kpi_core.engine import Engine
from kpi_core.events import parse_event
from kpi_core.exposition import render, render_reference
from kpi_core.kpis import MetricFamily, snapshot
from kpi_core.state import MemoryState
from streams.sim import SimParams, Simulator, default_queues, parse_start

START = parse_start("2026-11-20T07:00:00Z")
HOURS = 1.0


@pytest.fixture(scope="module")
def simulated() -> list[MetricFamily]:
    """One simulated hour of 40 queues (two tenants: names repeat across label sets)."""
    config = config_from_dict({})
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    at = START + HOURS * 3600
    for tenant, seed in (("acme", 3), ("globex", 4)):
        params = SimParams(start=START, hours=HOURS, queues=default_queues(20, 4), seed=seed, tenant=tenant)
        for _t, record in Simulator(params).stream():
            if isinstance(record, dict):
                engine.handle(parse_event(record), at)
    return snapshot(config, store, at)


def test_simulated_state_renders_byte_identical(simulated: list[MetricFamily]) -> None:
    samples = sum(len(f.samples) for f in simulated)
    queues = {(d["tenant"], d["queue"]) for f in simulated for d in (dict(s[1]) for s in f.samples) if "queue" in d}
    assert samples > 10_000 and len(queues) == 42  # 20 queues and _all, of 2 tenants
    assert render(simulated) == render_reference(simulated)
    # The values span whole and fractional numbers (the fast path and the repr path).
    values = {v for f in simulated for _s, _l, v in f.samples}
    assert any(v != int(v) for v in values) and 0.0 in values and any(v > 1 for v in values)


EDGE_VALUES = [
    0.0,
    -0.0,
    0,
    False,
    True,
    1,
    1.0,
    -1.0,
    -3,
    5e-324,
    -5e-324,
    1e-300,
    2.2250738585072014e-308,
    0.1,
    1 / 3,
    999_999_999_999_999.0,
    -999_999_999_999_999.0,
    1e15,
    -1e15,
    1e15 + 2,
    2.0**53,
    2**53 + 1,
    10**20,
    1e300,
    1.7976931308623157e308,
    123456.0,
    0.5,
    2.5e-7,
    math.inf,
    -math.inf,
    math.nan,
    float("nan"),
]


def test_edge_values_and_labels_render_byte_identical() -> None:
    a = MetricFamily("ccmon_edge", "gauge", "Edge values: back\\slash and\nnewline in help.")
    b = MetricFamily("ccmon_edge_hist", "histogram", "Suffixes.")
    hostile = ["plain", 'quo"te', "back\\slash", "new\nline", "", "ünï", "\\n", '"\\\n"']
    for i, value in enumerate(EDGE_VALUES):
        name = hostile[i % len(hostile)]
        labels = (("tenant", "t"), ("queue", name), ("window", "5m"))
        a.add(labels, value)
        a.add(tuple(labels), value)  # an equal label set, another object
        a.add((), value)
        b.add((("queue", name), ("le", "+Inf")), value, "_bucket")
        b.add((("queue", name),), value, "_sum")
    empty = MetricFamily("ccmon_empty", "gauge", "No samples: no HELP either.")
    families = [a, empty, b]
    assert render(families) == render_reference(families)
    # Spot checks of the reference itself: equal numbers format alike whatever their type.
    text = render(families)
    assert 'ccmon_edge{tenant="t",queue="plain",window="5m"} 0\n' in text
    assert 'ccmon_edge{tenant="t",queue="back\\\\slash",window="5m"} 0\n' in text  # -0.0 prints 0
    assert "ccmon_edge 1000000000000000.0\n" in text and "ccmon_edge 999999999999999\n" in text
    assert "ccmon_edge 5e-324\n" in text and "ccmon_edge NaN\n" in text and "ccmon_edge -Inf\n" in text


def test_render_of_nothing() -> None:
    assert render([]) == render_reference([]) == "\n"
    assert render([MetricFamily("ccmon_x", "gauge", "x")]) == "\n"
