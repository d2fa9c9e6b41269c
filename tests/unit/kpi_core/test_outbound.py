"""Outbound productivity per queue (docs/KPIS.md, "Outbound"): calls placed, connected,
connect rate, conversions (the queue's ``conversion_outcomes``), logged-in agent-seconds from
agent states (any state but ``offline``) and outbound calls per logged-in agent-hour; and
outbound calls never count in, nor change, the inbound KPIs."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kpi_core.config import Config, config_from_dict
from kpi_core.engine import Engine
from kpi_core.errors import ConfigError
from kpi_core.events import parse_event, parse_ts
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState

AT = parse_ts("2026-11-20T10:00:00Z")  # window 1h: [09:00, 10:00)
MIN = 60.0
OUTBOUND_FAMILIES = ("ccmon_outbound_", "ccmon_agent_logged_in_seconds")


def ev(eid: str, kind: str, minute: float, **fields: Any) -> dict[str, Any]:
    """An event at ``minute`` minutes after 09:00."""
    return {"event_id": eid, "type": kind, "ts": AT - 3600 + minute * MIN, "tenant": "acme", **fields}


def agents() -> list[dict[str, Any]]:
    return [
        # a1 (sales): logged in before the window, away at 09:30 (still logged in), offline at 09:45: 2,700 s
        ev("s1", "agent.state", -30, agent_id="a1", state="available", queues=["sales"]),
        ev("s2", "agent.state", 30, agent_id="a1", state="away"),
        ev("s3", "agent.state", 45, agent_id="a1", state="offline"),
        # a2 (sales): offline since 08:00, logs in at 09:20: 2,400 s
        ev("s4", "agent.state", -60, agent_id="a2", state="offline", queues=["sales"]),
        ev("s5", "agent.state", 20, agent_id="a2", state="available"),
        # a3 (sales and support): logs in at 09:40, on a call from 09:50: 1,200 s in each queue
        ev("s6", "agent.state", 40, agent_id="a3", state="available", queues=["sales", "support"]),
        ev("s7", "agent.state", 50, agent_id="a3", state="on_call"),
    ]


def inbound() -> list[dict[str, Any]]:
    out = []
    for n, queue in enumerate(["sales", "support", "sales"]):
        base = {"call_id": f"i{n}", "queue": queue, "customer_id": f"in{n}"}
        out += [
            ev(f"io{n}", "call.offered", 5 + n, **base),
            ev(f"ia{n}", "call.answered", 5.5 + n, agent_id="a1", **base),
            ev(f"ie{n}", "call.ended", 9 + n, talk_seconds=200, **base),
        ]
    out += [ev("xo", "call.offered", 12, call_id="x", queue="support"), ev("xa", "call.abandoned", 13, call_id="x")]
    return out


def outbound() -> list[dict[str, Any]]:
    """Seven calls placed by sales in the window (o1..o7), four answered, three ended (a sale,
    an appointment, no interest), and o0 placed at 08:50 and ended with a sale at 09:08."""
    out = [
        ev("o0o", "call.offered", -10, call_id="o0", queue="sales", customer_id="p0", direction="outbound"),
        ev("o0a", "call.answered", 5, call_id="o0", agent_id="a1"),
        ev("o0e", "call.ended", 8, call_id="o0", talk_seconds=100, outcome="sale"),
    ]
    outcomes = {1: "sale", 2: "appointment", 3: "no_interest", 4: None}
    for n in range(1, 8):
        base = {"call_id": f"o{n}", "queue": "sales"}
        out.append(ev(f"o{n}o", "call.offered", 10 + 5 * n, customer_id=f"p{n}", direction="outbound", **base))
        if n in outcomes:
            out.append(ev(f"o{n}a", "call.answered", 10.5 + 5 * n, agent_id="a2", **base))
            if outcomes[n] is not None:
                out.append(ev(f"o{n}e", "call.ended", 13 + 5 * n, talk_seconds=120, outcome=outcomes[n], **base))
        else:
            out.append(ev(f"o{n}x", "call.abandoned", 11 + 5 * n, **base))  # nobody picked up
    return out


def run(events: list[dict[str, Any]], config: Config | None = None) -> dict[tuple[str, Any], float]:
    config = config or Config()
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    for e in events:
        assert engine.handle(parse_event(e), AT) == "accepted", e
    return flatten(snapshot(config, store, AT))


def get(flat: dict[tuple[str, Any], float], name: str, queue: str, window: str = "1h") -> float | None:
    return flat.get((name, (("tenant", "acme"), ("queue", queue), ("window", window))))


def test_outbound_productivity_per_queue() -> None:
    flat = run(agents() + inbound() + outbound())
    assert get(flat, "ccmon_outbound_calls", "sales") == 7  # o0 was placed before the window
    assert get(flat, "ccmon_outbound_calls_connected", "sales") == 4
    assert get(flat, "ccmon_outbound_connect_rate_ratio", "sales") == pytest.approx(4 / 7)
    assert get(flat, "ccmon_outbound_calls_ended", "sales") == 4  # o0, o1, o2, o3
    assert get(flat, "ccmon_outbound_conversions", "sales") == 2  # the sales: o0, o1
    assert get(flat, "ccmon_outbound_conversion_ratio", "sales") == 0.5
    assert get(flat, "ccmon_agent_logged_in_seconds", "sales") == 2700 + 2400 + 1200
    assert get(flat, "ccmon_agent_logged_in_seconds", "support") == 1200
    assert get(flat, "ccmon_agent_logged_in_seconds", "_all") == 6300  # a3 once
    assert get(flat, "ccmon_outbound_calls_per_agent_hour", "sales") == pytest.approx(7 / 1.75)
    assert get(flat, "ccmon_outbound_calls_per_agent_hour", "support") == 0
    assert get(flat, "ccmon_outbound_calls_per_agent_hour", "_all") == pytest.approx(7 / 1.75)
    assert get(flat, "ccmon_outbound_calls", "_all") == 7
    assert get(flat, "ccmon_outbound_connect_rate_ratio", "_all") == pytest.approx(4 / 7)
    # no placed call, no connect rate; the 15-minute window [09:45, 10:00): o7 only, abandoned
    assert get(flat, "ccmon_outbound_connect_rate_ratio", "support") is None
    assert get(flat, "ccmon_outbound_calls", "sales", "15m") == 1
    assert get(flat, "ccmon_outbound_connect_rate_ratio", "sales", "15m") == 0
    assert get(flat, "ccmon_agent_logged_in_seconds", "sales", "15m") == 900 + 900  # a2, a3
    assert get(flat, "ccmon_outbound_calls_per_agent_hour", "sales", "15m") == pytest.approx(1 / 0.5)


def test_an_outbound_call_ended_without_an_answer_was_connected() -> None:
    """``call.ended`` is sent only for an answered call: a source that sends no ``call.answered``
    for outbound calls (the simulator) still has its connected calls counted."""
    base = {"call_id": "d1", "queue": "sales"}
    flat = run(
        [
            ev("d1o", "call.offered", 10, customer_id="p9", direction="outbound", **base),
            ev("d1e", "call.ended", 14, talk_seconds=200, outcome="sale", **base),
            ev("d2o", "call.offered", 20, call_id="d2", queue="sales", direction="outbound"),
        ]
    )
    assert get(flat, "ccmon_outbound_calls", "sales") == 2
    assert get(flat, "ccmon_outbound_calls_connected", "sales") == 1
    assert get(flat, "ccmon_outbound_connect_rate_ratio", "sales") == 0.5
    assert get(flat, "ccmon_outbound_conversion_ratio", "sales") == 1
    assert get(flat, "ccmon_outbound_calls_per_agent_hour", "sales") is None  # nobody logged in


def test_conversion_outcomes_come_from_the_queue_config() -> None:
    sales = {"conversion_outcomes": ["sale", "appointment"]}
    config = config_from_dict({"tenants": {"acme": {"queues": {"sales": sales}}}})
    flat = run(agents() + outbound(), config)
    assert get(flat, "ccmon_outbound_conversions", "sales") == 3
    assert get(flat, "ccmon_outbound_conversion_ratio", "sales") == 0.75
    assert config.queue("acme", "other").conversion_outcomes == {"sale"}  # the default


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ("sale", "defaults.conversion_outcomes", "must be a non-empty list of call.ended outcomes, got 'sale'"),
        ([], "defaults.conversion_outcomes", "must be a non-empty list of call.ended outcomes, got []"),
        (["sale", 3], "defaults.conversion_outcomes[1]", "must be a non-empty string, got 3"),
    ],
)
def test_a_bad_conversion_outcomes_names_the_field(value: Any, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"defaults": {"conversion_outcomes": value}})
    assert str(caught.value) == f"config field {field!r}: {message}"


def test_outbound_calls_change_no_inbound_kpi() -> None:
    without = run(agents() + inbound())
    with_outbound = run(agents() + inbound() + outbound())
    assert get(with_outbound, "ccmon_calls_offered", "sales") == 2
    assert get(with_outbound, "ccmon_calls_answered", "sales") == 2
    assert get(with_outbound, "ccmon_calls_handled", "sales") == 2
    assert get(with_outbound, "ccmon_calls_abandoned", "sales") == 0
    pipeline = ("ccmon_events_", "ccmon_last_event", "ccmon_event_lag")
    inbound_kpis = {k: v for k, v in with_outbound.items() if not k[0].startswith(OUTBOUND_FAMILIES + pipeline)}
    assert inbound_kpis == {k: v for k, v in without.items() if not k[0].startswith(OUTBOUND_FAMILIES + pipeline)}


def test_any_arrival_order_gives_the_same_figures() -> None:
    events = agents() + inbound() + outbound()
    ordered = run(events)
    for seed in range(3):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        got = run(shuffled)
        for key, value in ordered.items():
            if key[0].startswith(OUTBOUND_FAMILIES):
                assert got.get(key) == pytest.approx(value), (seed, key)
