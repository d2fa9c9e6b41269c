"""Agents, live, and waiting callers over the real Redis: a worker's batch processor writes the
state (streams.worker.BatchProcessor over RedisState), the exporter serves ``/api/agents``,
``/api/queues/{queue}/waiting`` and ``ccmon_agents{state,reason}`` from it, equal to the same
events through MemoryState; an idle agent away with a reason retires from Redis."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from kpi_core.config import config_from_dict
from kpi_core.engine import Engine
from kpi_core.events import parse_event, parse_ts
from kpi_core.kpis import flatten, live_agents, snapshot, waiting_calls
from kpi_core.state import MemoryState
from streams.exporter import build_app
from streams.redis.state import RedisState
from streams.web import serve
from streams.worker import BatchProcessor, Message

pytestmark = pytest.mark.integration

AT = parse_ts("2026-11-20T10:00:00Z")
CONFIG = config_from_dict({"tenants": {"acme": {"pause_reasons": ["lunch"], "away_alert_seconds": 600}}})


def ev(kind: str, ago: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "ts": AT - ago, "tenant": "acme", **fields}


EVENTS = [
    ev("agent.state", 7200, agent_id="a1", state="available", queues=["q"]),
    ev("call.offered", 1250, call_id="c4", queue="q"),
    ev("call.ring_no_answer", 1200, call_id="c4", agent_id="a1", queue="q"),
    ev("call.answered", 1100, call_id="c4", agent_id="a1", queue="q"),
    ev("agent.state", 1100, agent_id="a1", state="on_call"),
    ev("call.ended", 900, call_id="c4", talk_seconds=200, queue="q"),
    ev("call.offered", 610, call_id="c3", queue="q"),
    ev("call.answered", 600, call_id="c3", agent_id="a1", queue="q"),
    ev("agent.state", 2400, agent_id="a2", state="away", queues=["q"], reason="lunch"),
    ev("agent.state", 300, agent_id="a3", state="away", queues=["q"], reason="smoke"),
    ev("call.offered", 300, call_id="w1", queue="q", customer_id="+4915112345678"),
    ev("call.offered", 200, call_id="w2", queue="q", priority=5, channel="chat"),
]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_exporter_serves_agents_and_waiting_from_a_workers_state(redis_client: Any, redis_prefix: str) -> None:
    raw = [{"event_id": f"e{i}", **e} for i, e in enumerate(EVENTS)]
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT)
    result = BatchProcessor(CONFIG, state, lambda: AT).process(
        [Message("events", 0, 0, None, json.dumps(raw).encode(), AT)]
    )
    assert not result.dead and result.accepted == len(raw)
    memory = MemoryState()
    engine = Engine(CONFIG, memory)
    for item in raw:
        assert engine.handle(parse_event(item), AT) == "accepted"

    server = serve(build_app(CONFIG, state, lambda: AT, redis_client.ping))  # listens on loopback: ids shown
    try:
        base = f"http://127.0.0.1:{server.port}"
        agents = get_json(base + "/api/agents?tenant=acme")
        waiting = get_json(base + "/api/queues/q/waiting?tenant=acme")
        page = urllib.request.urlopen(base + "/agents", timeout=10).read()
    finally:
        server.stop()
    want_agents = live_agents(CONFIG, memory, AT, "acme")
    assert [{k: v for k, v in a.items() if k != "since_iso"} for a in agents["agents"]] == want_agents
    a1 = {a["agent"]: a for a in agents["agents"]}["a1"]
    assert (a1["current_call"], a1["handled_today"], a1["missed_today"]) == ("c3", 1, 1)
    assert a1["occupancy_today"] == pytest.approx(1100 / 7200)
    assert {a["agent"]: (a["reason_label"], a["away_alert"]) for a in agents["agents"] if a["state"] == "away"} == {
        "a2": ("lunch", True),
        "a3": ("other", False),
    }
    assert [{k: v for k, v in c.items() if k != "offered_iso"} for c in waiting["calls"]] == [
        {k: v for k, v in row.items() if v is not None or k != "customer_id"}
        for row in waiting_calls(CONFIG, memory, AT, "acme", "q")
    ]
    assert [(c["position"], c["call_id"], c["priority"], c["channel"]) for c in waiting["calls"]] == [
        (1, "w2", 5, "chat"),
        (2, "w1", None, "voice"),
    ]
    assert waiting["customer_ids"] == "shown" and waiting["calls"][1]["customer_id"] == "+4915112345678"
    assert b"api/agents" in page

    # ccmon_agents{state,reason}: Redis sums the members up in Lua as MemoryState does.
    def agent_samples(store: Any) -> dict[Any, float]:
        return {k: v for k, v in flatten(snapshot(CONFIG, store, AT)).items() if k[0] == "ccmon_agents"}

    redis_agents = agent_samples(state.snapshot_reader(CONFIG, AT))
    assert redis_agents == agent_samples(memory)
    assert (
        redis_agents[("ccmon_agents", (("tenant", "acme"), ("queue", "q"), ("state", "away"), ("reason", "lunch")))]
        == 1
    )

    # A month idle: the agents retire, their away-with-reason members leave Redis's live sets.
    later = AT + 30 * 86400
    retired = Engine(CONFIG, RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: later)).retire_series(
        later
    )
    assert retired.get("agent") == 3
    assert live_agents(CONFIG, state, later, "acme") == []
    assert not any(v for v in agent_samples(state).values())
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{redis_prefix}:*live:agents*")]
    assert all(redis_client.zcard(k) == 0 for k in keys)


def test_redis_down_answers_503() -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from streams.web.openapi import openapi_document

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    server = serve(build_app(CONFIG, RedisState(dead, CONFIG, prefix="x", clock=lambda: AT), lambda: AT, dead.ping))
    try:
        for path in ("/api/agents", "/api/queues/q/waiting"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10)
            except urllib.error.HTTPError as exc:
                assert exc.code == 503, path
                assert json.loads(exc.read())["error"] == "Redis unavailable: ConnectionError"
                assert "503" in openapi_document()["paths"][path.replace("/q/", "/{queue}/")]["get"]["responses"]
            else:
                pytest.fail(f"{path} answered with Redis down")
    finally:
        server.stop()
