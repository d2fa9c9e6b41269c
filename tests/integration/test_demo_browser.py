"""``ccmon demo`` end to end, as a person sees it: the real command in a subprocess, the
wallboard in headless Chromium, its tiles checked against ``/metrics``; and, without a
browser, the demo's HTTP app (``streams.web`` over a ``DemoRunner``).

Needs no Kafka or Redis, so it carries no ``integration`` marker; the browser test is
skipped (with the reason) only where Chromium or the playwright package is missing. Chromium is Debian's
(``apt-get install -y chromium``), driven by playwright with ``executable_path`` (playwright's
own browser download is never used). The demo runs with ``--pause-after``, so its simulated
clock freezes a few seconds after start-up: the page and ``/metrics`` then show the same
instant and must agree exactly. The screenshot goes to ``test-artifacts/wallboard.png``.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from harness.browser import ARTIFACTS, chromium_page, needs_chromium
from harness.processes import free_port, stop
from harness.processes import http_get as get
from harness.web import wsgi_call as call

ROOT = Path(__file__).resolve().parents[2]
START = "2026-11-20T10:40:00Z"  # the late-morning peak: a mix of green, amber and red
SPEED = 60.0
PAUSE_AFTER = 3.0

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        labels = frozenset(_LABEL.findall(match.group(3) or ""))
        samples[(match.group(1), labels)] = float(match.group(4))
    return samples


@pytest.fixture(scope="module")
def demo() -> Any:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "streams.cli",
        "demo",
        "--port",
        str(port),
        "--seed",
        "3",
        "--queues",
        "5",
        "--start",
        START,
        "--speed",
        str(SPEED),
        "--pause-after",
        str(PAUSE_AFTER),
    ]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"ccmon demo exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            try:
                info = json.loads(get(base + "api/kpis"))["info"]
            except OSError:
                info = {}
            if info.get("paused"):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the demo did not pause in time: {info}")
        yield proc, base
    finally:
        stop(proc, signal.SIGINT)


@needs_chromium
def test_wallboard_staffing_strip(demo: Any, tmp_path: Path) -> None:
    """The board's staffing strip (estimated wait, agents staffed of required, forecast service
    level per queue) shows exactly the demo's /metrics. Runs before the test below, which
    stops the demo. Screenshot: ``test-artifacts/wallboard-staffing.png``."""
    _proc, base = demo
    at = json.loads(get(base + "api/kpis"))["at"]
    metrics = parse_metrics(get(base + "metrics").decode())
    with chromium_page(tmp_path / "profile") as (page, errors):
        page.goto(base)
        page.wait_for_function(f"Number(document.body.dataset.at) === {at!r}", timeout=20000)
        chips = page.eval_on_selector_all(
            "#staffing .sq", "els => els.map(e => ({...e.dataset, text: e.textContent, cls: e.className}))"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "wallboard-staffing.png"))
    assert errors == []

    def metric(name: str, queue: str, **extra: str) -> float | None:
        return metrics.get((name, frozenset({("tenant", "default"), ("queue", queue), *extra.items()})))

    expected = [
        q
        for q in [
            "_all",
            *sorted(
                {dict(labels)["queue"] for name, labels in metrics if name == "ccmon_estimated_wait_seconds"} - {"_all"}
            ),
        ]
        if metric("ccmon_estimated_wait_seconds", q) is not None
    ]
    assert len(expected) >= 3  # the demo's queues have calls and agents: every figure is defined
    assert [c["queue"] for c in chips] == expected
    for chip in chips:
        queue = chip["queue"]
        ewt = metric("ccmon_estimated_wait_seconds", queue)
        required = metric("ccmon_staffing_agents_required", queue)
        forecast = metric("ccmon_staffing_service_level_forecast", queue)
        target = metric("ccmon_target_service_level_ratio", queue)
        staffed = sum(
            metric("ccmon_agents", queue, state=s, reason="none") or 0.0 for s in ("available", "on_call", "acw")
        )
        assert ewt is not None and float(chip["ewt"]) == ewt
        assert required is not None and float(chip["required"]) == required
        assert forecast is not None and target is not None and float(chip["forecast"]) == forecast
        assert float(chip["staffed"]) == staffed
        assert f"agents {int(staffed)} of {int(required)} needed" in chip["text"], chip
        assert f"forecast {round(forecast * 100)}%" in chip["text"], chip
        band = "ok" if forecast >= target else "warn" if forecast >= target - 0.1 else "bad"
        assert band in chip["cls"].split(), (chip, forecast, target)


def test_agents_board_and_waiting_callers(demo: Any, tmp_path: Path) -> None:
    """``/agents`` in ``ccmon demo`` (before the wallboard test stops it): a row per agent of
    /api/agents, state counts equal to ccmon_agents, sorting by a column click, long breaks
    highlighted (on an app of its own, with one agent 50 minutes away); the wallboard's
    waiting-callers block counts the calls ccmon_calls_waiting counts."""
    from kpi_core.config import config_from_dict
    from kpi_core.engine import Engine
    from kpi_core.events import parse_event
    from kpi_core.state import MemoryState
    from streams.web import make_store_app, serve

    _proc, base = demo
    api = json.loads(get(base + "api/agents"))
    at = api["at"]
    metrics = parse_metrics(get(base + "metrics").decode())
    waiting_api = json.loads(get(base + "api/queues/_all/waiting"))
    assert waiting_api["at"] == at and api["count"] > 20
    by_state: dict[str, float] = {}
    for (name, labels), value in metrics.items():
        label_map = dict(labels)
        if name == "ccmon_agents" and label_map["queue"] == "_all":
            by_state[label_map["state"]] = by_state.get(label_map["state"], 0.0) + value
    assert {s: sum(1 for a in api["agents"] if a["state"] == s) for s in by_state} == by_state
    assert any(a["reason_label"] in ("break", "lunch", "not_ready") for a in api["agents"])  # the simulator's reasons

    config = config_from_dict({"tenants": {"default": {"pause_reasons": ["lunch"], "away_alert_seconds": 900}}})
    store = MemoryState()
    engine = Engine(config, store)
    for i, (agent, ago, state_, reason) in enumerate(
        [("ann", 3000, "away", "lunch"), ("bob", 300, "away", "lunch"), ("cyd", 60, "available", None)]
    ):
        event = {
            "event_id": f"s{i}",
            "type": "agent.state",
            "ts": DAY - ago,
            "agent_id": agent,
            "state": state_,
            "queues": ["q"],
            **({"reason": reason} if reason else {}),
        }
        engine.handle(parse_event(event), DAY)
    own = serve(make_store_app(config, store, clock=lambda: DAY), "127.0.0.1", 0)

    def rows(page: Any) -> list[dict[str, str]]:
        return page.eval_on_selector_all(
            "#agents tbody tr[data-agent]",
            "els => els.map(e => ({agent: e.dataset.agent, state: e.dataset.state, alert: e.className}))",
        )

    try:
        with chromium_page(tmp_path / "profile") as (page, errors):
            page.goto(base + "agents")
            page.wait_for_function(f"Number(document.body.dataset.at) === {at!r}", timeout=20000)
            by_name = rows(page)
            counts = page.eval_on_selector_all(
                "#summary .count", "els => els.map(e => [e.dataset.state, Number(e.querySelector('b').textContent)])"
            )
            page.click("th[data-key=time_in_state_seconds]")
            page.click("th[data-key=time_in_state_seconds]")  # again: longest first
            longest_first = rows(page)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "agents.png"), full_page=True)
            page.goto(base)
            page.wait_for_function(
                f"document.getElementById('waiting-callers').dataset.count === "
                f"'{waiting_api['count']}' && Number(document.body.dataset.at) === {at!r}",
                timeout=20000,
            )
            chips = page.eval_on_selector_all("#waiting-callers .wc", "els => els.length")
            page.goto(f"http://127.0.0.1:{own.port}/agents")
            page.wait_for_function("Number(document.body.dataset.renders) >= 1", timeout=20000)
            alerted = rows(page)
            page.screenshot(path=str(ARTIFACTS / "agents-away-alert.png"))
    finally:
        own.stop()

    assert errors == []
    assert [r["agent"] for r in by_name] == sorted(a["agent"] for a in api["agents"])
    assert {r["agent"]: r["state"] for r in by_name} == {a["agent"]: a["state"] for a in api["agents"]}
    assert dict(counts) == {s: by_state.get(s, 0) for s in ("available", "on_call", "acw", "away", "offline")}
    seconds = {a["agent"]: a["time_in_state_seconds"] for a in api["agents"]}
    assert [seconds[r["agent"]] for r in longest_first] == sorted(seconds.values(), reverse=True)
    assert {r["agent"] for r in by_name if "away-alert" in r["alert"]} == {
        a["agent"] for a in api["agents"] if a["away_alert"]
    }
    waiting = metrics[("ccmon_calls_waiting", frozenset({("tenant", "default"), ("queue", "_all")}))]
    per_queue = [
        sum(1 for c in waiting_api["calls"] if c["queue"] == q) for q in {c["queue"] for c in waiting_api["calls"]}
    ]
    assert waiting_api["count"] == waiting and chips == sum(min(6, n) for n in per_queue)  # at most 6 per queue shown
    # 50 minutes at lunch is past the 900 s limit: highlighted; five minutes is not.
    assert [(r["agent"], "away-alert" in r["alert"]) for r in alerted] == [
        ("ann", True),
        ("bob", False),
        ("cyd", False),
    ]


@needs_chromium
def test_wallboard_shows_the_metrics(demo: Any, tmp_path: Path) -> None:
    proc, base = demo
    document = json.loads(get(base + "api/kpis"))
    at = document["at"]
    live_start = calendar.timegm(time.strptime(START, "%Y-%m-%dT%H:%M:%SZ"))
    # The clock ran live (about PAUSE_AFTER * SPEED simulated seconds) before it froze.
    assert live_start + 0.5 * PAUSE_AFTER * SPEED <= at <= live_start + PAUSE_AFTER * SPEED + 1
    metrics = parse_metrics(get(base + "metrics").decode())
    assert json.loads(get(base + "api/kpis"))["at"] == at  # frozen: nothing moves any more

    with chromium_page(tmp_path / "profile") as (page, errors):
        page.goto(base)
        page.wait_for_function(
            f"document.body.dataset.paused === 'true' && Number(document.body.dataset.at) === {at!r}",
            timeout=20000,
        )
        tiles = page.eval_on_selector_all(
            ".tile",
            "els => els.map(e => ({queue: e.dataset.queue, kpi: e.dataset.kpi, value: e.dataset.value,"
            " text: e.querySelector('.v').textContent, cls: e.className}))",
        )
        status = page.text_content("#status")
        clock = page.text_content("#clock")
        sparklines = page.eval_on_selector_all(".queue svg path", "els => els.length")
        page.wait_for_function("document.body.dataset.outbound !== undefined", timeout=20000)
        outbound = page.eval_on_selector_all(
            "#outbound .otile",
            "els => els.map(e => ({queue: e.dataset.queue, value: e.dataset.value,"
            " text: e.querySelector('.v').firstChild.textContent, line: e.querySelector('.s').textContent}))",
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "wallboard.png"))

    assert errors == []
    assert status is not None and "PAUSED" in status
    assert clock == time.strftime("%H:%M:%S", time.gmtime(at))
    queues = sorted(
        dict(labels)["queue"]
        for name, labels in metrics
        if name == "ccmon_calls_waiting" and dict(labels)["tenant"] == "default"
    )
    assert queues == ["_all", "billing", "retention", "sales", "support", "tech"]
    by_tile = {(t["queue"], t["kpi"]): t for t in tiles}
    assert len(by_tile) == 7 * len(queues)
    assert sparklines >= len(queues)

    def metric(name: str, queue: str, **extra: str) -> float | None:
        return metrics.get((name, frozenset({("tenant", "default"), ("queue", queue), *extra.items()})))

    for queue in queues:
        waiting = metric("ccmon_calls_waiting", queue)
        tile = by_tile[(queue, "calls_waiting")]
        assert waiting is not None
        assert tile["text"] == str(int(waiting)), (queue, tile, waiting)
        assert float(tile["value"]) == waiting

        sl = metric("ccmon_service_level_ratio", queue, window="15m")
        target = metric("ccmon_target_service_level_ratio", queue)
        tile = by_tile[(queue, "service_level")]
        if sl is None:
            assert tile["text"] == "\u2014" and tile["value"] == ""
            continue
        assert math.isclose(float(tile["value"]), sl, rel_tol=1e-12), (queue, tile, sl)
        assert tile["text"].endswith("%") and abs(float(tile["text"][:-1]) - 100 * sl) <= 0.5 + 1e-9, (tile, sl)
        assert target is not None
        expected = "ok" if sl >= target else "warn" if sl >= target - 0.1 else "bad"
        assert expected in tile["cls"].split(), (queue, tile, sl, target)

        free = metric("ccmon_agents", queue, state="available", reason="none")
        assert by_tile[(queue, "agents_available")]["text"] == str(int(free or 0))
        pending = metric("ccmon_callbacks_pending", queue)
        assert by_tile[(queue, "callbacks")]["text"] == str(int(pending or 0))

    # The outbound block: a tile per queue that placed outbound calls in the last hour (the
    # simulator's sales campaign), with the figures /metrics serves.
    dialling = sorted(q for q in queues if (metric("ccmon_outbound_calls", q, window="1h") or 0) > 0)
    assert "sales" in dialling and "_all" in dialling
    assert sorted(t["queue"] for t in outbound) == dialling
    for tile in outbound:
        rate = metric("ccmon_outbound_calls_per_agent_hour", tile["queue"], window="1h")
        assert rate is not None and math.isclose(float(tile["value"]), rate, rel_tol=1e-12), (tile, rate)
        assert tile["text"] == f"{rate:.1f}"
        placed = metric("ccmon_outbound_calls", tile["queue"], window="1h")
        connect = metric("ccmon_outbound_connect_rate_ratio", tile["queue"], window="1h")
        assert placed is not None and connect is not None
        assert tile["line"].startswith(f"{int(placed)} placed \u00b7 connect {round(100 * connect)}%"), tile

    # The board is not all one colour at the morning peak.
    colours = {c for t in tiles for c in t["cls"].split() if c in ("ok", "warn", "bad")}
    assert len(colours) >= 2, colours

    # A clean shutdown on Ctrl-C: exit 0, no traceback.
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "wallboard on http://127.0.0.1:" in out and "stopped" in out


# -- the same app without a browser ------------------------------------------------------------
DAY = 1_795_132_800.0  # 2026-11-20T00:00:00Z


@pytest.fixture(scope="module")
def runner() -> Any:
    from streams.cli.demo import DemoRunner, demo_config
    from streams.sim import SimParams, default_queues

    queues = default_queues(["support", "sales", "vip"])
    params = SimParams(start=DAY + 8 * 3600, hours=None, queues=queues, seed=5)
    demo_runner = DemoRunner(
        params, demo_config([q.name for q in queues]), speed=60.0, warmup_seconds=3600.0, pause_after=0.0
    )
    return demo_runner


def test_demo_app_before_and_after_warm_up(runner: Any) -> None:
    from streams.web import make_wsgi_app

    app = make_wsgi_app(runner.families, runner.pending, get_info=runner.info, history=runner.history)
    if runner.view() is None:
        status, _headers, body = call(app, "/healthz")
        assert status.startswith("503") and json.loads(body) == {"status": "starting"}
        runner.warm_up()
    assert runner.paused and runner.clock == DAY + 9 * 3600
    status, headers, body = call(app, "/healthz")
    assert status == "200 OK" and json.loads(body) == {"status": "ok"}

    status, headers, page = call(app, "/")
    assert status == "200 OK" and headers["Content-Type"].startswith("text/html")
    assert b"api/kpis" in page and b"http" not in page.replace(b"http://www.w3.org/2000/svg", b"")  # no CDN

    status, headers, text = call(app, "/metrics")
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    metrics = parse_metrics(text.decode())
    assert metrics[("ccmon_target_service_level_ratio", frozenset({("tenant", "default"), ("queue", "vip")}))] == 0.9

    status, headers, body = call(app, "/api/kpis")
    document = json.loads(body)
    assert document["at"] == DAY + 9 * 3600 and document["at_iso"] == "2026-11-20T09:00:00.000Z"
    assert document["info"]["paused"] is True and document["info"]["clock"] == "simulated"
    queues = document["tenants"]["default"]["queues"]
    assert set(queues) == {"support", "sales", "vip", "_all"}
    support = queues["support"]
    assert (
        support["live"]["calls_waiting"]
        == metrics[("ccmon_calls_waiting", frozenset({("tenant", "default"), ("queue", "support")}))]
    )
    assert set(support["agents"]) == {"available", "on_call", "acw", "away", "offline"}
    assert support["targets"]["service_level_ratio"] == 0.8
    assert set(support["windows"]) == {"5m", "15m", "1h", "today"}
    assert set(support["windows"]["1h"]["wait_seconds_quantile"]) == {"0.5", "0.9"}
    history = document["tenants"]["default"]["history"]
    assert history["window"] == "15m" and len(history["series"]["support"]) == 60  # a point a minute
    assert document["pipeline"]["events_total"]["call.offered"] > 100

    status, _headers, body = call(app, "/api/callbacks/pending")
    worklist = json.loads(body)
    assert worklist["count"] == len(worklist["callbacks"])
    for item in worklist["callbacks"]:
        assert item["due"] < worklist["at"] and "customer_id" in item and item["overdue"] is False
    dues = [i["due"] for i in worklist["callbacks"]]
    assert dues == sorted(dues)
    _status, _headers, body = call(app, "/api/callbacks/pending?queue=nope&limit=5")
    assert json.loads(body)["callbacks"] == []
    status, _headers, _body = call(app, "/api/callbacks/pending?limit=-1")
    assert status.startswith("400")

    assert call(app, "/nope")[0].startswith("404")
    assert call(app, "/metrics", "POST")[0].startswith("405")
    status, headers, body = call(app, "/metrics", "HEAD")
    assert status == "200 OK" and body == b"" and int(headers["Content-Length"]) > 1000


def test_store_app_over_any_state_store() -> None:
    from kpi_core.config import Config
    from kpi_core.engine import Engine
    from kpi_core.events import parse_event
    from kpi_core.state import MemoryState
    from streams.web import make_store_app

    store = MemoryState()
    engine = Engine(Config(), store)
    events = [
        {"event_id": "1", "type": "call.offered", "ts": DAY + 100, "call_id": "c1", "queue": "q", "customer_id": "k1"},
        {"event_id": "2", "type": "call.abandoned", "ts": DAY + 130, "call_id": "c1"},
        {"event_id": "3", "type": "callback.requested", "ts": DAY + 200, "callback_id": "cb", "queue": "q"},
    ]
    for event in events:
        engine.handle(parse_event(event), DAY + 300)
    app = make_store_app(Config(), store, clock=lambda: DAY + 7300.0)
    worklist = json.loads(call(app, "/api/callbacks/pending")[2])
    assert worklist["callbacks"] == [
        {
            "tenant": "default",
            "queue": "q",
            "customer_id": "k1",
            "due": DAY + 130,
            "due_iso": "2026-11-20T00:02:10.000Z",
            "age_seconds": 7170.0,
            "overdue": True,
        },
        {
            "tenant": "default",
            "queue": "q",
            "callback_id": "cb",
            "due": DAY + 200,
            "due_iso": "2026-11-20T00:03:20.000Z",
            "age_seconds": 7100.0,
            "overdue": True,
        },
    ]
    document = json.loads(call(app, "/api/kpis")[2])
    assert document["at"] == DAY + 7300.0
    assert document["tenants"]["default"]["queues"]["q"]["live"]["callbacks_pending"] == 2


def test_sl_history_ring_buffer() -> None:
    from kpi_core.kpis import MetricFamily
    from streams.web import SlHistory

    def families(value: float) -> list[MetricFamily]:
        fam = MetricFamily("ccmon_service_level_ratio", "gauge", "")
        fam.add((("tenant", "t"), ("queue", "q"), ("window", "15m")), value)
        fam.add((("tenant", "t"), ("queue", "q"), ("window", "1h")), 0.0)
        return [fam]

    history = SlHistory(keep_seconds=120.0)
    for minute in range(5):
        history.record(DAY + 60 * minute, families(minute / 10))
    assert history.series("t") == {"q": [[DAY + 120, 0.2], [DAY + 180, 0.3], [DAY + 240, 0.4]]}
    history.record(DAY + 200, families(0.9))  # the clock went back: later points are dropped
    assert history.series("t")["q"][-1] == [DAY + 200, 0.9]
    assert history.series("other") == {}
    with pytest.raises(ValueError):
        SlHistory(keep_seconds=0)
