"""The wallboard's week-over-week and employee-pulse block in headless Chromium: the "vs last
week" strip shows what /api/week-over-week serves (marking latched anomalies) and hides without
Prometheus; the pulse strip shows only queues with a released batch of answers.

Needs no Kafka or Redis (an in-memory store and a stubbed Prometheus answer), so it carries no
``integration`` marker; it is skipped without Chromium or Playwright, as test_demo_browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.browser import chromium_page, needs_chromium

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import parse_event, parse_ts
from kpi_core.kpis import snapshot
from kpi_core.state import MemoryState
from streams.web import serve
from streams.web.app import make_wsgi_app
from streams.web.week_over_week import WeekOverWeek

AT = parse_ts("2026-11-20T16:00:00Z")


def prometheus_answer() -> bytes:
    samples = [
        ("tenant_queue:ccmon_calls_offered:1h_wow_ratio", "support", "2.5"),
        ("tenant_queue:ccmon_calls_offered:1h_anomaly", "support", "1"),
        ("tenant_queue:ccmon_service_level:1h_wow_delta", "support", "-0.2"),
        ("tenant_queue:ccmon_calls_offered:1h_wow_ratio", "sales", "0.9"),
        ("tenant_queue:ccmon_calls_offered:1h_anomaly", "sales", "0"),
        # No week-before value yet: the 4-week ratio is absent too, nothing to show.
        ("tenant_queue:ccmon_calls_offered:1h", "new", "30"),
    ]
    result = [{"metric": {"__name__": n, "tenant": "default", "queue": q}, "value": [AT, v]} for n, q, v in samples]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def pulse_store() -> MemoryState:
    """support: 5 agents answered ESAT (4 in the top two points) and eNPS; sales: 3 agents only."""
    store = MemoryState()
    engine = Engine(Config(), store)
    raw = [("support", f"a{i}", "esat", s) for i, s in enumerate((5, 4, 4, 5, 2))]
    raw += [("support", f"a{i}", "enps", s) for i, s in enumerate((10, 9, 9, 7, 3))]
    raw += [("sales", f"b{i}", "esat", 5) for i in range(3)]
    raw.append(("support", "x", "csat", 5))  # a customer answer: the queue has state either way
    for i, (queue, agent, survey, score) in enumerate(raw):
        event = {
            "event_id": f"e{i}",
            "type": "survey.response",
            "ts": AT - 600 + i,
            "queue": queue,
            "survey": survey,
            "score": score,
            "agent_id": agent,
        }
        engine.process(parse_event(event), AT)
    return store


def boards(urls: list[str], tmp_path: Path) -> list[dict[str, Any]]:
    """What the block shows on each page (one browser for all)."""
    shown = []
    with chromium_page(tmp_path / "profile") as (page, errors):
        for url in urls:
            page.goto(url)
            page.wait_for_function("Number(document.body.dataset.renders) > 0", timeout=20000)
            page.wait_for_function("!document.querySelector('#pulse').hidden", timeout=20000)
            items = "els => els.map(e => ({...e.dataset, text: e.textContent, cls: e.className}))"
            shown.append(
                {
                    "errors": list(errors),
                    "wow_hidden": page.eval_on_selector("#wow", "e => e.hidden"),
                    "wow": page.eval_on_selector_all("#wow .item", items),
                    "pulse": page.eval_on_selector_all("#pulse .item", items),
                }
            )
    return shown


@needs_chromium
def test_the_board_shows_week_over_week_and_the_pulse(tmp_path: Path) -> None:
    store = pulse_store()
    weekly = WeekOverWeek("http://prometheus.invalid:9090", opener=lambda _u, _t: prometheus_answer())
    servers = [
        serve(
            make_wsgi_app(
                lambda: snapshot(Config(), store, AT), lambda: [], get_info=lambda: {"at": AT}, week_over_week=w
            )
        )
        for w in (weekly, None)
    ]
    try:
        with_prometheus, without = boards([server.url for server in servers], tmp_path)
    finally:
        for server in servers:
            server.stop()
    for shown in (with_prometheus, without):
        assert shown["errors"] == []
        pulse = {item["queue"]: item for item in shown["pulse"]}
        # sales (3 agents) shows nothing; support and the tenant's total show the one batch:
        # ESAT 4 of 5 in the top two points; eNPS 3 promoters, 1 detractor of 5.
        assert sorted(pulse) == ["_all", "support"]
        assert pulse["support"]["esat"] == "0.8" and pulse["support"]["enps"] == "40"
        assert pulse["support"]["text"] == "Support ESAT 80% (5) \u00b7 eNPS +40 (5)"
    # Without a Prometheus URL: no "vs last week" strip.
    assert without["wow_hidden"] is True and without["wow"] == []
    assert with_prometheus["wow_hidden"] is False
    wow = {item["queue"]: item for item in with_prometheus["wow"]}
    assert sorted(wow) == ["sales", "support"]
    assert wow["support"]["text"] == "Support \u25b2 +150% calls \u00b7 \u25bc -20 pts SL"
    assert "anomaly" in wow["support"]["cls"].split() and wow["support"]["anomaly"] == "true"
    assert wow["sales"]["text"] == "Sales \u25bc -10% calls" and "anomaly" not in wow["sales"]["cls"].split()
