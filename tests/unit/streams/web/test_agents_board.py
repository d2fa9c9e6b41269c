"""Agents, live, and the waiting callers (issue 17, items 1 and 2): ``agent.state`` ``reason``
and ``call.offered`` ``priority``, ``ccmon_agents{state,reason}``, :func:`kpi_core.kpis.live_agents`
and :func:`kpi_core.kpis.waiting_calls` over MemoryState, and ``/api/agents`` and
``/api/queues/{queue}/waiting`` of the shared web app."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from harness.web import response_validator

from kpi_core.config import Config, config_from_dict
from kpi_core.engine import Engine
from kpi_core.errors import ConfigError, InvalidEventError
from kpi_core.events import Event, parse_event, parse_ts
from kpi_core.kpis import flatten, live_agents, snapshot, waiting_calls
from kpi_core.state import MemoryState
from streams.web import make_store_app
from streams.web.api import LISTEN_HOST_ENVIRON, kpis_document
from streams.web.openapi import openapi_document

AT = parse_ts("2026-11-20T10:00:00Z")  # local midnight (UTC) is AT - 10 h
CONFIG = config_from_dict({"tenants": {"acme": {"pause_reasons": ["lunch", "training"], "away_alert_seconds": 600}}})


def state(
    agent: str, ago: float, st: str, queues: list[str] | None = None, reason: str | None = None
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "agent.state", "agent_id": agent, "state": st, "ts": AT - ago}
    if queues is not None:
        event["queues"] = queues
    if reason is not None:
        event["reason"] = reason
    return event


def call(kind: str, call_id: str, ago: float, **fields: Any) -> dict[str, Any]:
    return {"type": f"call.{kind}", "call_id": call_id, "ts": AT - ago, **fields}


EVENTS = [
    # a1: available at 07:00, a call 09:00-09:10 (then acw to 09:15), another since 09:50.
    state("a1", 10800, "available", ["q"]),
    call("offered", "c1", 3605, queue="q"),
    call("answered", "c1", 3600, agent_id="a1", queue="q"),
    state("a1", 3600, "on_call"),
    state("a1", 3000, "acw"),
    call("ended", "c1", 2700, talk_seconds=600, acw_seconds=300, queue="q"),
    state("a1", 2700, "available"),
    call("offered", "c4", 1250, queue="q"),
    call("ring_no_answer", "c4", 1200, agent_id="a1", queue="q"),
    call("answered", "c4", 1100, agent_id="a2", queue="q"),
    call("ended", "c4", 1000, talk_seconds=100, queue="q"),
    call("offered", "c3", 610, queue="q"),
    call("answered", "c3", 600, agent_id="a1", queue="q"),
    state("a1", 600, "on_call"),
    # a2: lunch for 40 min (the second event repeats the state: the time in it goes on).
    state("a2", 2400, "away", ["q"], reason="lunch"),
    state("a2", 1800, "away", reason="lunch"),
    # a3: a reason acme does not list; a4: away with none; a5: a reason on a state other than away.
    state("a3", 300, "away", ["q", "r"], reason="smoke"),
    state("a4", 120, "away", ["r"]),
    state("a5", 60, "available", ["q"], reason="lunch"),
    # Waiting: w2 and w3 have priority 5 (served first, by offer time), w1 none (0); w4 left.
    call("offered", "w1", 300, queue="q", customer_id="+4915112345678"),
    call("offered", "w2", 200, queue="q", priority=5, channel="chat", customer_id="c-2"),
    call("offered", "w3", 100, queue="q", priority=5),
    call("offered", "w4", 400, queue="q", customer_id="+4915100000004"),
    call("abandoned", "w4", 350, queue="q"),
    call("offered", "w5", 50, queue="r", priority=0, channel="sms"),
]
#: Yesterday (before local midnight): neither handled nor missed today.
YESTERDAY = [
    call("offered", "c2", 39700, queue="q"),
    call("answered", "c2", 39600, agent_id="a1", queue="q"),
    call("ring_no_answer", "c2", 39650, agent_id="a1", queue="q"),
    call("ended", "c2", 39000, talk_seconds=600, queue="q"),
]


def parsed(events: list[dict[str, Any]], tenant: str = "acme") -> list[Event]:
    return [parse_event({"event_id": f"e{i:03d}-{e['ts']}", "tenant": tenant, **e}) for i, e in enumerate(events)]


def run(events: list[Event], config: Config = CONFIG, live: bool = True) -> MemoryState:
    """Each event at its own time (``live``: as a stream delivers them) or all at AT."""
    store = MemoryState()
    engine = Engine(config, store)
    for event in events:
        assert engine.handle(event, event.ts + 1 if live else AT) == "accepted"
    return store


def by_agent(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["agent"]: row for row in rows}


# -- events and configuration --------------------------------------------------------------
def test_reason_and_priority_are_parsed() -> None:
    event = parse_event(
        {"event_id": "e", "type": "agent.state", "ts": AT, "agent_id": "a", "state": "away", "reason": "lunch"}
    )
    assert event.reason == "lunch"
    offered = {"event_id": "e", "type": "call.offered", "ts": AT, "call_id": "c", "queue": "q"}
    assert parse_event(offered).priority is None
    assert parse_event({**offered, "priority": 9}).priority == 9
    assert parse_event({**offered, "priority": 3.0}).priority == 3
    assert parse_event({**offered, "priority": 0}).priority == 0


@pytest.mark.parametrize("bad", [True, 10, -1, 2.5, "3", [1]])
def test_a_bad_priority_rejects_the_event(bad: Any) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event({"event_id": "e", "type": "call.offered", "ts": AT, "call_id": "c", "queue": "q", "priority": bad})
    assert caught.value.reason == "invalid_field:priority"
    assert repr(bad)[:3] in caught.value.message or str(bad) in caught.value.message


def test_a_bad_reason_rejects_the_event() -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event({"event_id": "e", "type": "agent.state", "ts": AT, "agent_id": "a", "state": "away", "reason": 7})
    assert caught.value.reason == "invalid_field:reason"


def test_pause_reasons_config() -> None:
    assert CONFIG.reason_label("acme", "lunch") == "lunch"
    assert CONFIG.reason_label("acme", "smoke") == "other"
    assert CONFIG.reason_label("acme", None) == "none"
    assert CONFIG.reason_label("other-tenant", "lunch") == "other"
    assert CONFIG.away_alert_seconds("acme") == 600 and CONFIG.away_alert_seconds("x") == 900
    with pytest.raises(ConfigError, match=r"tenants\.t\.pause_reasons\[1\].*'other' is reserved"):
        config_from_dict({"tenants": {"t": {"pause_reasons": ["lunch", "other"]}}})
    with pytest.raises(ConfigError, match=r"tenants\.t\.pause_reasons.*duplicates"):
        config_from_dict({"tenants": {"t": {"pause_reasons": ["lunch", "lunch"]}}})
    with pytest.raises(ConfigError, match=r"tenants\.t\.pause_reasons\[0\].*got 3"):
        config_from_dict({"tenants": {"t": {"pause_reasons": [3]}}})
    with pytest.raises(
        ConfigError, match=r"tenants\.t\.pause_reasons.*3 reasons, more than limits\.pause_reasons_per_tenant = 2"
    ):
        config_from_dict(
            {"limits": {"pause_reasons_per_tenant": 2}, "tenants": {"t": {"pause_reasons": ["a", "b", "c"]}}}
        )
    with pytest.raises(ConfigError, match=r"tenants\.t\.away_alert_seconds.*got -1"):
        config_from_dict({"tenants": {"t": {"away_alert_seconds": -1}}})


# -- ccmon_agents{state,reason} ------------------------------------------------------------
def test_agents_by_state_and_reason() -> None:
    flat = flatten(snapshot(CONFIG, run(parsed(EVENTS)), AT))

    def agents(queue: str) -> dict[tuple[str, str], float]:
        return {
            (d["state"], d["reason"]): v
            for (name, labels), v in flat.items()
            if name == "ccmon_agents"
            for d in [dict(labels)]
            if d["queue"] == queue and d["tenant"] == "acme"
        }

    zeros = {(s, "none"): 0.0 for s in ("available", "on_call", "acw", "away", "offline")}
    zeros.update({("away", r): 0.0 for r in ("lunch", "training", "other")})
    assert agents("q") == {
        **zeros,
        ("available", "none"): 1,
        ("on_call", "none"): 1,
        ("away", "lunch"): 1,
        ("away", "other"): 1,
    }
    assert agents("r") == {**zeros, ("away", "other"): 1, ("away", "none"): 1}
    assert agents("_all") == {
        **zeros,
        ("available", "none"): 1,
        ("on_call", "none"): 1,
        ("away", "lunch"): 1,
        ("away", "other"): 1,
        ("away", "none"): 1,
    }
    # Queries by state keep one series per queue and state but away; a sum by state counts each agent once.
    all_away = sum(v for (s, _r), v in agents("_all").items() if s == "away")
    assert all_away == 3
    document = kpis_document(snapshot(CONFIG, run(parsed(EVENTS)), AT), at=AT)
    assert document["tenants"]["acme"]["queues"]["_all"]["agents"]["away"] == 3
    assert document["tenants"]["acme"]["queues"]["q"]["agents"] == {
        "available": 1,
        "on_call": 1,
        "acw": 0,
        "away": 2,
        "offline": 0,
    }


def test_a_reason_ends_with_the_next_state_and_occupancy_ignores_it() -> None:
    events = parsed([state("b", 900, "away", ["q"], reason="lunch"), state("b", 300, "available")])
    flat = flatten(snapshot(CONFIG, run(events), AT))
    labels = (("tenant", "acme"), ("queue", "q"))
    assert flat[("ccmon_agents", (*labels, ("state", "away"), ("reason", "lunch")))] == 0
    assert flat[("ccmon_agents", (*labels, ("state", "available"), ("reason", "none")))] == 1
    # Occupancy counts the available time only (an away-with-reason member is still "away").
    assert flat[("ccmon_occupancy_ratio", (*labels, ("window", "15m")))] == 0


def test_per_agent_series_are_off_by_default_and_bounded_when_on() -> None:
    store = run(parsed(EVENTS))
    off = flatten(snapshot(CONFIG, store, AT))
    assert not [k for k in off if k[0] == "ccmon_agent_state"]
    config = config_from_dict(
        {"limits": {"agent_series_per_tenant": 3}, "tenants": {"acme": {"pause_reasons": ["lunch", "training"]}}}
    )
    on = flatten(snapshot(config, store, AT))
    series = {
        dict(labels)["agent"]: (dict(labels)["state"], dict(labels)["reason"], value)
        for (name, labels), value in on.items()
        if name == "ccmon_agent_state"
    }
    # Everything else as without them (the queues' targets included).
    assert {k: v for k, v in on.items() if k[0] != "ccmon_agent_state"} == off
    assert off[("ccmon_target_service_level_ratio", (("tenant", "acme"), ("queue", "q")))] == 0.8
    # The 3 most recently changed of the 5 agents: a5 (1 min ago), a4 (2 min), a3 (5 min).
    assert series == {"a5": ("available", "none", 1.0), "a4": ("away", "none", 1.0), "a3": ("away", "other", 1.0)}


# -- live_agents ---------------------------------------------------------------------------
def test_live_agents() -> None:
    store = run(parsed(YESTERDAY + EVENTS))
    rows = live_agents(CONFIG, store, AT)
    assert [r["agent"] for r in rows] == ["a1", "a2", "a3", "a4", "a5"]
    agents = by_agent(rows)
    a1 = agents["a1"]
    assert (a1["state"], a1["reason"], a1["reason_label"]) == ("on_call", None, "none")
    assert a1["since"] == AT - 600 and a1["time_in_state_seconds"] == 600
    assert a1["queues"] == ["q"]
    assert (a1["current_call"], a1["current_queue"]) == ("c3", "q")
    assert a1["handled_today"] == 1  # c1; c2 ended yesterday, c3 goes on
    assert a1["missed_today"] == 1  # c4; yesterday's ring on c2 not
    # Busy 09:00-09:15 and since 09:50 (1500 s) of 3 h staffed since 07:00.
    assert a1["occupancy_today"] == pytest.approx(1500 / 10800)
    assert a1["away_alert"] is False
    a2 = agents["a2"]
    assert (a2["state"], a2["reason"], a2["reason_label"]) == ("away", "lunch", "lunch")
    assert a2["time_in_state_seconds"] == 2400  # from the first of the two away events
    assert a2["away_alert"] is True  # 40 min > acme's 600 s
    assert a2["handled_today"] == 1 and a2["current_call"] is None
    assert a2["occupancy_today"] is None  # never staffed today
    assert (agents["a3"]["reason"], agents["a3"]["reason_label"], agents["a3"]["away_alert"]) == (
        "smoke",
        "other",
        False,
    )
    assert agents["a3"]["queues"] == ["q", "r"]
    assert (agents["a4"]["reason"], agents["a4"]["reason_label"]) == (None, "none")
    assert (agents["a5"]["state"], agents["a5"]["reason"], agents["a5"]["reason_label"]) == (
        "available",
        "lunch",
        "none",
    )
    assert [r["agent"] for r in live_agents(CONFIG, store, AT, "acme", "r")] == ["a3", "a4"]
    assert live_agents(CONFIG, store, AT, "nobody") == []


def test_live_agents_do_not_depend_on_arrival_order() -> None:
    events = parsed(EVENTS)
    want = live_agents(CONFIG, run(events, live=False), AT)
    want_flat = flatten(snapshot(CONFIG, run(events, live=False), AT))
    for seed in range(5):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        store = run(shuffled, live=False)
        assert live_agents(CONFIG, store, AT) == want, seed
        assert waiting_calls(CONFIG, store, AT) == waiting_calls(CONFIG, run(events, live=False), AT)
        assert flatten(snapshot(CONFIG, store, AT)) == pytest.approx(want_flat)
    assert by_agent(want)["a1"]["handled_today"] == 1 and by_agent(want)["a1"]["current_call"] == "c3"


def test_an_ended_call_is_no_longer_current_and_a_late_earlier_outcome_takes_it_back() -> None:
    base = [
        state("a", 700, "available", ["q"]),
        call("offered", "x", 650, queue="q"),
        call("answered", "x", 600, agent_id="a", queue="q"),
        state("a", 600, "on_call"),
    ]
    assert by_agent(live_agents(CONFIG, run(parsed(base)), AT))["a"]["current_call"] == "x"
    # The caller had hung up before (a late abandon is the outcome): not the agent's call.
    late = run(parsed([*base, call("abandoned", "x", 620, queue="q")]), live=False)
    row = by_agent(live_agents(CONFIG, late, AT))["a"]
    assert (row["current_call"], row["handled_today"]) == (None, 0)
    ended = run(parsed([*base, call("ended", "x", 100, talk_seconds=500, queue="q"), state("a", 100, "available")]))
    row = by_agent(live_agents(CONFIG, ended, AT))["a"]
    assert (row["current_call"], row["handled_today"]) == (None, 1)


def test_an_outbound_call_is_the_agents_current_call_until_it_ends() -> None:
    dial = [
        state("o", 400, "available", ["q"]),
        state("o", 300, "on_call"),
        call("offered", "out1", 300, queue="q", direction="outbound", agent_id="o", customer_id="+4915100000009"),
    ]
    row = by_agent(live_agents(CONFIG, run(parsed(dial)), AT))["o"]
    assert (row["current_call"], row["current_queue"], row["handled_today"]) == ("out1", "q", 0)
    assert waiting_calls(CONFIG, run(parsed(dial)), AT) == []  # an outbound call never waits
    done = run(parsed([*dial, call("ended", "out1", 100, talk_seconds=200, queue="q", direction="outbound")]))
    row = by_agent(live_agents(CONFIG, done, AT))["o"]
    assert (row["current_call"], row["handled_today"]) == (
        None,
        0,
    )  # handled counts inbound calls, as ccmon_calls_handled


def test_retiring_an_agent_removes_its_reason_member() -> None:
    store = run(parsed([state("z", 300, "away", ["q"], reason="lunch")]))
    engine = Engine(CONFIG, store)
    retired = engine.retire_series(AT + 30 * 86400)
    assert retired.get("agent") == 1
    assert live_agents(CONFIG, store, AT) == []


# -- waiting_calls -------------------------------------------------------------------------
def test_waiting_calls_in_the_order_they_are_served() -> None:
    store = run(parsed(EVENTS))
    rows = waiting_calls(CONFIG, store, AT)
    assert [(r["queue"], r["position"], r["call_id"], r["priority"], r["channel"]) for r in rows] == [
        ("q", 1, "w2", 5, "chat"),
        ("q", 2, "w3", 5, "voice"),
        ("q", 3, "w1", None, "voice"),
        ("r", 1, "w5", 0, "sms"),
    ]
    assert [r["wait_seconds"] for r in rows] == [200, 100, 300, 50]
    assert [r["customer_id"] for r in rows] == ["c-2", None, "+4915112345678", None]
    assert [r["call_id"] for r in waiting_calls(CONFIG, store, AT, "acme", "r")] == ["w5"]
    # The same calls ccmon_calls_waiting counts.
    flat = flatten(snapshot(CONFIG, store, AT))
    assert flat[("ccmon_calls_waiting", (("tenant", "acme"), ("queue", "q")))] == 3
    # Answered: gone, and the others move up.
    store = run(parsed([*EVENTS, call("answered", "w2", 10, agent_id="a5", queue="q")]))
    assert [(r["position"], r["call_id"]) for r in waiting_calls(CONFIG, store, AT, "acme", "q")] == [
        (1, "w3"),
        (2, "w1"),
    ]


# -- the HTTP API --------------------------------------------------------------------------
def get(app: Any, path: str, query: str = "", **environ: Any) -> tuple[str, Any]:
    status: list[str] = []
    body = b"".join(
        app(
            {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, **environ},
            lambda s, _headers: status.append(s),
        )
    )
    return status[0], json.loads(body)


def test_api_agents_and_waiting() -> None:
    app = make_store_app(CONFIG, run(parsed(EVENTS)), clock=lambda: AT)
    document = openapi_document()
    status, agents = get(app, "/api/agents", "tenant=acme&queue=q")
    assert status == "200 OK"
    response_validator(document, "/api/agents").validate(agents)
    assert [a["agent"] for a in agents["agents"]] == ["a1", "a2", "a3", "a5"]
    assert agents["count"] == 4 and agents["at"] == AT
    assert by_agent(agents["agents"])["a2"]["since_iso"] == "2026-11-20T09:20:00.000Z"

    waiting = response_validator(document, "/api/queues/{queue}/waiting")
    status, shown = get(app, "/api/queues/q/waiting", "tenant=acme", **{LISTEN_HOST_ENVIRON: "127.0.0.1"})
    assert status == "200 OK"
    waiting.validate(shown)
    assert shown["customer_ids"] == "shown" and shown["count"] == 3
    assert [(c["call_id"], c.get("customer_id")) for c in shown["calls"]] == [
        ("w2", "c-2"),
        ("w3", None),
        ("w1", "+4915112345678"),
    ]
    # Reachable from elsewhere without authentication: masked as the callback worklist.
    status, masked = get(app, "/api/queues/q/waiting", "tenant=acme", **{LISTEN_HOST_ENVIRON: "0.0.0.0"})
    waiting.validate(masked)
    assert masked["customer_ids"] == "masked"
    assert [c.get("customer_id") for c in masked["calls"]] == ["***", None, "***78"]
    assert "+4915112345678" not in json.dumps(masked)
    status, authed = get(app, "/api/queues/q/waiting", "", **{LISTEN_HOST_ENVIRON: "0.0.0.0", "ccmon.auth_user": "sup"})
    assert authed["customer_ids"] == "shown"
    # _all: every queue; limit: the first of each.
    status, every = get(app, "/api/queues/_all/waiting", "limit=1")
    waiting.validate(every)
    assert [(c["queue"], c["call_id"]) for c in every["calls"]] == [("q", "w2"), ("r", "w5")] and every["count"] == 4
    status, error = get(app, "/api/queues/q/waiting", "limit=-2")
    assert status == "400 Bad Request" and "-2" in error["error"]
    assert get(app, "/api/queues/nope/waiting")[1]["calls"] == []


def test_waiting_path_takes_a_utf8_queue_name() -> None:
    store = run(parsed([call("offered", "u1", 30, queue="Kundenservice-Ü")]))
    app = make_store_app(CONFIG, store, clock=lambda: AT)
    # PATH_INFO as a WSGI server gives it: percent-decoded, the bytes as latin-1 (PEP 3333).
    path = "/api/queues/" + "Kundenservice-Ü".encode().decode("latin-1") + "/waiting"
    status, body = get(app, path)
    assert status == "200 OK" and [c["call_id"] for c in body["calls"]] == ["u1"]


def test_agents_page_is_served() -> None:
    app = make_store_app(Config(), MemoryState(), clock=lambda: AT)
    status: list[str] = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/agents"}, lambda s, _h: status.append(s)))
    assert status == ["200 OK"] and b"api/agents" in body and b"away-alert" in body
