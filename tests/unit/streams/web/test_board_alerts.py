"""``GET /api/alerts`` without a browser (streams/web/alerts.py): ccmon's own breaches of the
queues' targets mirror the alert rules, Alertmanager's alerts are filtered, cached and their
failures reported as "unavailable" (a local HTTP server plays Alertmanager), the document
matches openapi.json, and the exporter and the demo take ``--alertmanager-url``.
The real Alertmanager and the page: tests/integration/test_alerts_delivery.py."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from harness.paths import REPO
from harness.web import response_validator
from harness.web import wsgi_call as call

from kpi_core.config import Config
from kpi_core.errors import ConfigError
from kpi_core.kpis import MetricFamily
from kpi_core.state import MemoryState
from streams import cli
from streams import settings as settings_module
from streams.exporter import build_app
from streams.web import make_wsgi_app
from streams.web.alerts import BREACH_RULES, AlertmanagerAlerts, alerts_document, breach_alerts
from streams.web.openapi import openapi_document

RULES = REPO / "deploy" / "prometheus" / "rules" / "ccmon-alerts.yml"
AT = 1795168800.0
T = "acme"


def families(**queues: dict[str, float]) -> list[MetricFamily]:
    """Gauges of tenant acme: ``queue={"service_level_ratio@15m": 0.5, "target_service_level_ratio": 0.8, ...}``."""
    by_name: dict[str, MetricFamily] = {}
    for queue, values in queues.items():
        for key, value in values.items():
            name, _, window = key.partition("@")
            extra: tuple[tuple[str, str], ...] = ()
            if "#" in name:  # agents#available -> ccmon_agents{state="available"}
                name, state = name.split("#")
                extra = (("state", state),)
            fam = by_name.setdefault(name, MetricFamily("ccmon_" + name, "gauge", name))
            fam.add((("tenant", T), ("queue", queue), *((("window", window),) if window else ()), *extra), value)
    return list(by_name.values())


def names(alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((a["name"], a["queue"]) for a in alerts)


# -- ccmon's own breach state -------------------------------------------------------------------
def test_breaches_against_each_queues_targets() -> None:
    snapshot = families(
        far={"service_level_ratio@15m": 0.6, "target_service_level_ratio": 0.8},  # 0.6 < 0.8 - 0.15
        near={"service_level_ratio@15m": 0.7, "target_service_level_ratio": 0.8},
        fine={
            "service_level_ratio@15m": 0.9,
            "target_service_level_ratio": 0.8,
            "abandon_rate_ratio@15m": 0.01,
            "target_abandon_rate_ratio": 0.05,
            "longest_wait_seconds": 5.0,
            "target_longest_wait_seconds": 60.0,
        },
        lost={
            "abandon_rate_ratio@15m": 0.2,
            "target_abandon_rate_ratio": 0.05,
            "abandon_rate_ratio@1h": 0.5,
        },  # the 1h window is not the rule's
        slow={"longest_wait_seconds": 95.0, "target_longest_wait_seconds": 60.0},
        untargeted={"longest_wait_seconds": 9999.0, "service_level_ratio@15m": 0.0},  # no target gauge: no alert
        closed={"service_level_ratio@15m": 0.1, "target_service_level_ratio": 0.8, "queue_open": 0.0},
        _all={"service_level_ratio@15m": 0.1, "target_service_level_ratio": 0.8},
        late={"oldest_pending_callback_age_seconds": 4000.0, "target_callback_delay_seconds": 3600.0},
        busy={
            "calls_waiting": 5.0,
            "agents#available": 1.0,
            "longest_wait_seconds": 30.0,
            "service_level_threshold_seconds": 20.0,
        },
        calm={
            "calls_waiting": 5.0,
            "agents#available": 1.0,
            "longest_wait_seconds": 10.0,
            "service_level_threshold_seconds": 20.0,
        },
        csat_day={"csat_ratio@today": 0.7, "csat_ratio@1h": 0.9, "target_csat_ratio": 0.8},  # the hour recovers
        csat_bad={"csat_ratio@today": 0.7, "csat_ratio@1h": 0.6, "target_csat_ratio": 0.8},
    )
    fcr = MetricFamily("ccmon_first_contact_resolution_ratio", "gauge", "")
    for window, voice, chat in (("today", 0.5, 0.95), ("1h", 0.6, 0.5)):  # chat: today is fine
        fcr.add((("tenant", T), ("queue", "fcr"), ("window", window), ("channel", "voice")), voice)
        fcr.add((("tenant", T), ("queue", "fcr"), ("window", window), ("channel", "chat")), chat)
    snapshot.append(fcr)
    snapshot.extend(families(fcr={"target_first_contact_resolution_ratio": 0.9}))
    alerts = breach_alerts(snapshot, AT)
    assert names(alerts) == [
        ("CcmonAbandonRateAboveTarget", "lost"),
        ("CcmonCallbacksOverdue", "late"),
        ("CcmonCallsWaitingBeyondCapacity", "busy"),
        ("CcmonCsatBelowTarget", "csat_bad"),
        ("CcmonFcrBelowTarget", "fcr"),
        ("CcmonLongestWaitAboveTarget", "slow"),
        ("CcmonServiceLevelBelowTarget", "near"),
        ("CcmonServiceLevelFarBelowTarget", "far"),  # and not also the warning: the critical one covers it
    ]
    by_queue = {a["queue"]: a for a in alerts}
    far = by_queue["far"]
    assert (far["severity"], far["family"], far["tenant"], far["value"], far["target"]) == (
        "critical",
        "service_level",
        T,
        0.6,
        0.8,
    )
    assert far["summary"] == "Service level far below target on acme/far"
    assert far["description"] == (
        "The 15-minute service level of acme/far is 60.0%, below its target of 80.0% (more than 15 points below)."
    )
    assert by_queue["slow"]["description"] == "The longest wait of acme/slow is 1m 35s, above its target of 1m 0s."
    assert (by_queue["busy"]["value"], by_queue["busy"]["target"]) == (5.0, 1.0)
    assert by_queue["fcr"]["summary"] == "First contact resolution (voice) below target on acme/fcr"
    assert by_queue["fcr"]["labels"]["channel"] == "voice" and by_queue["fcr"]["value"] == 0.5
    assert by_queue["lost"]["labels"] == {
        "alertname": "CcmonAbandonRateAboveTarget",
        "severity": "warning",
        "family": "abandon_rate",
        "tenant": T,
        "queue": "lost",
        "window": "15m",
    }


def test_breach_rules_are_the_alert_rules() -> None:
    """Every alert ccmon raises itself has the name, severity and family of a rule of
    ccmon-alerts.yml (so the board reads the same whether Alertmanager is there or not)."""
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    for rule in [*BREACH_RULES]:
        spec = rules[rule.name]
        assert (spec["labels"]["severity"], spec["labels"]["family"]) == (rule.severity, rule.family), rule.name
        assert f"ccmon_{rule.metric}" in spec["expr"] and f"ccmon_target_{rule.target}" in spec["expr"], rule.name
        assert spec["annotations"]["summary"].startswith(rule.summary.replace("{channel}", "{{ $labels.channel }}")), (
            rule.name
        )
        for window in rule.windows:
            assert window is None or f'window="{window}"' in spec["expr"], rule.name
        assert (" - 0.15" in spec["expr"]) == bool(rule.offset), rule.name
    assert rules["CcmonCallsWaitingBeyondCapacity"]["labels"]["family"] == "queue_capacity"


# -- /api/alerts ----------------------------------------------------------------------------------
def test_api_alerts_from_the_kpis_matches_the_openapi_document() -> None:
    snapshot = families(
        support={"service_level_ratio@15m": 0.5, "target_service_level_ratio": 0.8},
        sales={"service_level_ratio@15m": 0.75, "target_service_level_ratio": 0.8},
    )
    other = MetricFamily("ccmon_abandon_rate_ratio", "gauge", "")
    other.add((("tenant", "beta"), ("queue", "q"), ("window", "15m")), 0.5)
    target = MetricFamily("ccmon_target_abandon_rate_ratio", "gauge", "")
    target.add((("tenant", "beta"), ("queue", "q")), 0.05)
    app = make_wsgi_app(lambda: [*snapshot, other, target], lambda: [], get_info=lambda: {"at": AT})
    validator = response_validator(openapi_document(), "/api/alerts")
    status, headers, body = call(app, "/api/alerts")
    document = json.loads(body)
    assert status == "200 OK" and headers["Content-Type"].startswith("application/json")
    validator.validate(document)
    assert (document["source"], document["available"], document["count"], document["at"]) == ("ccmon", True, 3, AT)
    assert "error" not in document
    assert [(a["severity"], a["tenant"], a["queue"]) for a in document["alerts"]] == [
        ("critical", T, "support"),
        ("warning", T, "sales"),
        ("warning", "beta", "q"),
    ]  # critical first
    assert document["queues"] == {T: {"support": "critical", "sales": "warning"}, "beta": {"q": "warning"}}
    only = json.loads(call(app, "/api/alerts", QUERY_STRING="tenant=beta")[2])
    validator.validate(only)
    assert [a["tenant"] for a in only["alerts"]] == ["beta"] and only["queues"] == {"beta": {"q": "warning"}}

    def broken() -> list[MetricFamily]:
        raise ConnectionError("Redis down")

    down = json.loads(call(make_wsgi_app(broken, lambda: [], get_info=lambda: {"at": AT}), "/api/alerts")[2])
    validator.validate(down)
    assert (down["available"], down["error"], down["alerts"]) == (False, "KPIs unavailable: ConnectionError", [])


class FakeAlertmanager:
    """Answers ``GET /api/v2/alerts`` with ``self.body`` (or ``self.status``, or late)."""

    def __init__(self) -> None:
        self.body: Any = []
        self.status = 200
        self.delay = 0.0
        self.requests: list[tuple[str, str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append((self.path, self.headers.get("Authorization")))
                time.sleep(fake.delay)
                body = fake.body if isinstance(fake.body, bytes) else json.dumps(fake.body).encode()
                try:
                    self.send_response(fake.status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (the timeout case)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.port = self.server.server_address[1]


@pytest.fixture
def fake_am() -> Iterator[FakeAlertmanager]:
    fake = FakeAlertmanager()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def am_alert(name: str, queue: str | None, severity: str = "warning", state: str = "active") -> dict[str, Any]:
    labels = {
        "alertname": name,
        "severity": severity,
        "family": "x",
        **({"tenant": T, "queue": queue} if queue else {}),
    }
    return {
        "labels": labels,
        "annotations": {"summary": f"{name} summary", "description": f"{name} is 52%, target 80%"},
        "startsAt": "2026-11-20T10:00:00.000Z",
        "status": {"state": state, "silencedBy": [], "inhibitedBy": []},
    }


def test_alertmanager_alerts_filtered_cached_and_sent_with_basic_auth(fake_am: FakeAlertmanager) -> None:
    fake_am.body = [
        am_alert("CcmonServiceLevelFarBelowTarget", "support", "critical"),
        am_alert("CcmonWatchdog", None, "none"),
        am_alert("CcmonEventLagHigh", None),
        am_alert("CcmonNpsBelowTarget", "sales", state="suppressed"),
    ]
    now = [100.0]
    source = AlertmanagerAlerts(f"http://sup:p%40ss@127.0.0.1:{fake_am.port}/", cache_seconds=5.0, clock=lambda: now[0])
    assert source.url == f"http://127.0.0.1:{fake_am.port}"  # no password kept in what is shown
    app = make_wsgi_app(lambda: [], lambda: [], get_info=lambda: {"at": AT}, alerts=source)
    document = json.loads(call(app, "/api/alerts")[2])
    response_validator(openapi_document(), "/api/alerts").validate(document)
    assert document["source"] == "alertmanager" and document["available"] is True
    assert [(a["name"], a["queue"], a["since"]) for a in document["alerts"]] == [
        ("CcmonServiceLevelFarBelowTarget", "support", "2026-11-20T10:00:00.000Z"),
        ("CcmonEventLagHigh", None, "2026-11-20T10:00:00.000Z"),
    ]
    assert document["alerts"][0]["description"] == "CcmonServiceLevelFarBelowTarget is 52%, target 80%"
    assert document["queues"] == {T: {"support": "critical"}}
    path, auth = fake_am.requests[0]
    assert path == "/api/v2/alerts?active=true&silenced=false&inhibited=false"
    assert auth == "Basic c3VwOnBAc3M="  # sup:p@ss
    call(app, "/api/alerts")
    assert source.fetches == 1  # cached
    now[0] += 5.0
    call(app, "/api/alerts")
    assert source.fetches == 2


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        ({"status": 503}, "HTTP 503"),
        ({"body": b"<html>"}, "bad answer"),
        ({"body": {"alerts": []}}, "bad answer: expected a JSON list of alerts, got dict"),
        ({"delay": 1.0}, "timed out after 0.3 s"),
    ],
)
def test_alertmanager_failures_make_the_alerts_unavailable(
    fake_am: FakeAlertmanager, setup: dict[str, Any], error: str
) -> None:
    for key, value in setup.items():
        setattr(fake_am, key, value)
    source = AlertmanagerAlerts(f"http://u:secret@127.0.0.1:{fake_am.port}", timeout=0.3)
    started = time.monotonic()
    document = json.loads(call(make_wsgi_app(lambda: [], lambda: [], alerts=source), "/api/alerts")[2])
    assert time.monotonic() - started < 0.9
    response_validator(openapi_document(), "/api/alerts").validate(document)
    assert document["available"] is False and document["alerts"] == [] and document["count"] == 0
    assert (
        document["error"].startswith(f"Alertmanager at http://127.0.0.1:{fake_am.port}: ")
        and error in document["error"]
    )
    assert "secret" not in document["error"]


def test_alertmanager_refused_connection_is_unavailable() -> None:
    source = AlertmanagerAlerts("http://127.0.0.1:9", timeout=0.5)  # discard port: nothing listens
    alerts, error = source.fetch()
    assert alerts == [] and error is not None and error.startswith("Alertmanager at http://127.0.0.1:9: ")


# -- settings: the exporter and the demo ------------------------------------------------------------
def test_alertmanager_url_setting() -> None:
    parser = argparse.ArgumentParser()
    settings_module.add_arguments(parser, ("alertmanager_url",))
    assert settings_module.from_args(parser.parse_args([]), {}).alertmanager_url is None
    parsed = settings_module.from_args(
        parser.parse_args([]), {"CCMON_ALERTMANAGER_URL": "http://am:pw@alertmanager:9093/"}
    )
    assert parsed.alertmanager_url == "http://am:pw@alertmanager:9093"
    assert parsed.redacted()["alertmanager_url"] == "http://am:***@alertmanager:9093" and "pw@" not in repr(parsed)
    flag = settings_module.from_args(
        parser.parse_args(["--alertmanager-url", "https://am.example/prefix"]),
        {"CCMON_ALERTMANAGER_URL": "http://other:9093"},
    )
    assert flag.alertmanager_url == "https://am.example/prefix"
    for bad, where in (
        ("ftp://am:9093", "CCMON_ALERTMANAGER_URL"),
        ("http://am:99999", "CCMON_ALERTMANAGER_URL"),
        ("http://am:9093/?x=1", "CCMON_ALERTMANAGER_URL"),
    ):
        with pytest.raises(ConfigError) as info:
            settings_module.from_args(parser.parse_args([]), {"CCMON_ALERTMANAGER_URL": bad})
        assert info.value.field == where and repr(bad.rstrip("/")) in str(info.value)


def test_exporter_serves_alertmanager_alerts_when_configured() -> None:
    config = Config()
    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    own = json.loads(call(build_app(config, store, lambda: AT), "/api/alerts")[2])
    assert (own["source"], own["available"], own["alerts"]) == ("ccmon", True, [])
    remote = build_app(config, store, lambda: AT, alertmanager_url="http://127.0.0.1:9")
    document = json.loads(call(remote, "/api/alerts")[2])
    assert (document["source"], document["available"]) == ("alertmanager", False)


def test_demo_refuses_a_bad_alertmanager_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--port", "0", "--warmup", "0", "--alertmanager-url", "ftp://am:9093"]) == 2
    err = capsys.readouterr().err
    assert "--alertmanager-url" in err and "'ftp://am:9093'" in err


def test_waiting_callers_before_surveys_in_the_banner_order() -> None:
    snapshot = families(
        aaa={"nps_score@today": 10.0, "nps_score@1h": 0.0, "target_nps_score": 70.0},
        zzz={"service_level_ratio@15m": 0.7, "target_service_level_ratio": 0.8},
        mmm={"service_level_ratio@15m": 0.1, "target_service_level_ratio": 0.8},
    )
    document = alerts_document(AT, breach_alerts(snapshot, AT), source="ccmon")
    assert [(a["severity"], a["family"], a["queue"]) for a in document["alerts"]] == [
        ("critical", "service_level", "mmm"),
        ("warning", "service_level", "zzz"),
        ("warning", "nps", "aaa"),
    ]
