"""The exporter's board in headless Chromium, over the real Redis (no worker: the test writes
its batches with the engine, as a worker does):

* updates are pushed: a batch landing in Redis reaches the open page over ``/api/stream``
  within a second, and the page never polls ``/api/kpis`` while the stream works; a page
  whose stream is refused (every slot taken) falls back to polling;
* what a new user reads (issue 17, item 7), kept as screenshots in test-artifacts/
  (``board-exporter-default.png``, ``board-exporter-acme.png``): the Abandoned tile's rate
  over a count that includes the short abandons it leaves out, said on the tile; the clock in
  the tenant's time zone; sparklines drawn from the history kept in Redis; a tenant picker
  (two tenants); "answered" above "offered" explained on the row.

Chromium helpers are test_demo_browser's.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from harness.browser import ARTIFACTS, chromium_page, needs_chromium

from kpi_core.config import Config, TenantConfig
from kpi_core.engine import Engine
from kpi_core.events import parse_event
from kpi_core.kpis import MetricFamily
from streams.exporter import build_app
from streams.redis.state import RedisState
from streams.web import RedisSlHistory, serve

pytestmark = [pytest.mark.integration, needs_chromium]

CONFIG = Config(tenants=MappingProxyType({"acme": TenantConfig(timezone="Europe/Berlin")}))


class Feed:
    """Batches of events into the store, stamped relative to the wall clock."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.engine = Engine(CONFIG, state)

    def apply(self, *events: dict[str, Any]) -> None:
        now = time.time()
        with self.state.batch():
            for event in events:
                event = {**event, "event_id": uuid.uuid4().hex, "ts": now + event["ts"]}
                self.engine.handle(parse_event(event), now)


def call(
    call_id: str, queue: str, offered: float, outcome: str, at: float, tenant: str = "default"
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "call.offered", "ts": offered, "call_id": call_id, "queue": queue, "tenant": tenant}
    ]
    if outcome == "answered":
        events.append(
            {"type": "call.answered", "ts": at, "call_id": call_id, "agent_id": "a-" + call_id, "tenant": tenant}
        )
    elif outcome == "abandoned":
        events.append({"type": "call.abandoned", "ts": at, "call_id": call_id, "tenant": tenant})
    return events


@pytest.fixture
def exporter(redis_client: Any, redis_prefix: str) -> Iterator[tuple[str, Feed, RedisState]]:
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix)
    feed = Feed(state)
    events: list[dict[str, Any]] = []
    # support: one answered call offered 20 minutes ago (before the 15m window), one answered
    # in the window, one short abandon (2 s) and one long (40 s): offered 3 in 15m, answered 2.
    events += call("s1", "support", -1200, "answered", -120)
    events += call("s2", "support", -300, "answered", -290)
    events += call("s3", "support", -200, "abandoned", -198)
    events += call("s4", "support", -100, "abandoned", -60)
    events += call("b1", "billing", -400, "answered", -395)
    # retention: two calls offered before the window answered in it, one offered in it.
    events += call("r1", "retention", -1500, "answered", -800)
    events += call("r2", "retention", -1000, "answered", -700)
    events += call("r3", "retention", -50, "waiting", 0)
    events += call("k1", "sales", -500, "answered", -480, tenant="acme")
    events += call("k2", "sales", -30, "waiting", 0, tenant="acme")
    feed.apply(*events)
    # An hour of sparkline history in Redis, as the exporter's recorder leaves it.
    history = RedisSlHistory(state)
    now = time.time()
    for minute in range(60, 0, -1):
        ratio = MetricFamily("ccmon_service_level_ratio", "gauge", "")
        for tenant, queue in (
            ("default", "support"),
            ("default", "billing"),
            ("default", "retention"),
            ("default", "_all"),
            ("acme", "sales"),
            ("acme", "_all"),
        ):
            ratio.add(
                (("tenant", tenant), ("queue", queue), ("window", "15m")), 0.6 + 0.35 * abs(((minute % 20) - 10) / 10)
            )
        history.record(now - 60 * minute, [ratio])
    app = build_app(CONFIG, state, time.time, redis_client.ping, history=history)
    # No periodic re-rendering during the test: a change can only reach the page because the
    # workers' event counters moved (RedisState.events_version, polled every 0.25 s).
    app.publisher.refresh_seconds = 60.0
    server = serve(app, max_streams=2)
    try:
        yield f"http://127.0.0.1:{server.port}/", feed, state
    finally:
        server.stop()


def test_the_exporters_board_is_pushed_and_reads_clearly(
    exporter: tuple[str, Feed, RedisState], tmp_path: Path
) -> None:
    base, feed, _state = exporter
    with chromium_page(tmp_path / "profile") as (page, errors):
        polled: list[str] = []
        page.on("request", lambda request: polled.append(request.url) if "api/kpis" in request.url else None)
        page.goto(base)
        page.wait_for_function(
            "document.body.dataset.transport === 'sse' && Number(document.body.dataset.renders) > 0", timeout=15000
        )

        def tile(queue: str, kpi: str) -> dict[str, str]:
            return dict(
                page.eval_on_selector(
                    f".tile[data-queue='{queue}'][data-kpi='{kpi}']",
                    "e => ({v: e.querySelector('.v').textContent, s: e.querySelector('.s').textContent,"
                    " value: e.dataset.value})",
                )
            )

        # The Abandoned tile: the rate (1 of 3 counted: the 2 s abandon is left out) over
        # a count that includes both abandons, and the tile says how many it left out.
        abandoned = tile("support", "abandon_rate")
        assert abandoned["v"] == "33%", abandoned
        assert abandoned["s"] == "2 of 3 hung up\nrate excl. 1 under 5s", abandoned
        assert "leaves out short abandons" in page.get_attribute(
            ".tile[data-queue='support'][data-kpi='abandon_rate']", "title"
        )
        # Answered above offered (calls offered before the window): said on that row only.
        rows = page.eval_on_selector_all(
            ".queue",
            "els => els.map(e => ({q: e.dataset.queue,"
            " meta: [...e.querySelectorAll('.meta')].map(m => m.textContent)}))",
        )
        by_queue = {row["q"]: row["meta"] for row in rows}
        assert by_queue["support"] == ["3 offered \u00b7 2 answered in 15m"], by_queue
        assert by_queue["retention"] == [
            "1 offered \u00b7 2 answered in 15m",
            "answered incl. calls offered earlier",
        ], by_queue
        # Sparklines from the history in Redis: a line on every row.
        assert page.eval_on_selector_all(".queue svg path[stroke]", "els => els.length") == 4
        # Two tenants: the picker shows, the default tenant first; the clock is UTC for it.
        assert page.is_visible("#tenant") and page.eval_on_selector_all(
            "#tenant option", "els => els.map(e => e.value)"
        ) == ["acme", "default"]
        at = float(page.evaluate("document.body.dataset.at"))
        assert page.text_content("#clock") == datetime.fromtimestamp(at, ZoneInfo("UTC")).strftime("%H:%M:%S")

        # A batch lands in Redis: on the page within a second, pushed (no /api/kpis poll).
        before = tile("support", "calls_waiting")["value"]
        assert before == "0"
        landed = time.monotonic()
        feed.apply(*call("s5", "support", -1, "waiting", 0), *call("s6", "support", -1, "waiting", 0))
        page.wait_for_function(
            "document.querySelector(\".tile[data-queue='support'][data-kpi='calls_waiting']\").dataset.value === '2'",
            timeout=5000,
            polling=20,
        )
        delay = time.monotonic() - landed
        assert delay < 2.0, delay  # a poll (0.25 s), a snapshot, the page's render: well under a second when idle
        assert polled == [] and errors == []
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "board-exporter-default.png"))

        # The other tenant, picked: its queues, its name in the title, its clock in Berlin time.
        page.select_option("#tenant", "acme")
        page.wait_for_function("document.querySelector('#clock').dataset.zone === 'Europe/Berlin'", timeout=5000)
        assert "tenant=acme" in page.url
        assert [
            row["q"] for row in page.eval_on_selector_all(".queue", "els => els.map(e => ({q: e.dataset.queue}))")
        ] == ["_all", "sales"]
        assert page.eval_on_selector_all(".queue svg path[stroke]", "els => els.length") == 2
        assert page.text_content("#title") == "live wallboard \u00b7 acme"
        at = float(page.evaluate("document.body.dataset.at"))
        clock = page.text_content("#clock")
        berlin = datetime.fromtimestamp(at, ZoneInfo("Europe/Berlin"))
        assert clock == berlin.strftime("%H:%M:%S"), clock
        assert (page.text_content("#clock-sub") or "").startswith("Europe/Berlin (GMT+"), page.text_content(
            "#clock-sub"
        )
        assert tile("sales", "calls_waiting")["value"] == "1"
        page.screenshot(path=str(ARTIFACTS / "board-exporter-acme.png"))
        assert polled == [] and errors == []

        # Every stream slot taken (max_streams=2: this page's and a raw client's): a new
        # page is refused the stream and polls instead.
        with socket.create_connection(
            (base.split("//")[1].split(":")[0], int(base.rsplit(":", 1)[1].strip("/")))
        ) as hog:
            hog.sendall(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.3)
            second = page.context.new_page()
            second.goto(base)
            second.wait_for_function(
                "document.body.dataset.transport === 'poll' && Number(document.body.dataset.renders) > 0", timeout=15000
            )
            assert json.loads(second.evaluate("JSON.stringify(document.body.dataset.status)")) == "live"
            second.close()
