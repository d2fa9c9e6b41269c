"""The board's "vs last week" figures (streams/web/week_over_week.py, /api/week-over-week):
read from Prometheus' week-over-week recording rules with a short timeout and a cache, or
absent (with the reason) when no Prometheus is configured or it does not answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from harness.web import response_validator
from harness.web import wsgi_get as call

from kpi_core.config import Config
from kpi_core.errors import ConfigError
from kpi_core.state import MemoryState
from streams import settings as settings_module
from streams.web import make_store_app
from streams.web.app import make_wsgi_app
from streams.web.openapi import openapi_document
from streams.web.week_over_week import QUERY, WeekOverWeek, parse_query_result


def answer(*samples: tuple[str, str, str, str]) -> bytes:
    """A Prometheus instant-query answer of ``(name, tenant, queue, value)`` samples."""
    result = [
        {"metric": {"__name__": n, "tenant": t, "queue": q}, "value": [1795168800.0, v]} for n, t, q, v in samples
    ]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


SAMPLES = (
    ("tenant_queue:ccmon_calls_offered:1h", "acme", "support", "250"),
    ("tenant_queue:ccmon_calls_offered:1h_offset1w", "acme", "support", "100"),
    ("tenant_queue:ccmon_calls_offered:1h_wow_ratio", "acme", "support", "2.5"),
    ("tenant_queue:ccmon_calls_offered:1h_anomaly", "acme", "support", "1"),
    ("tenant_queue:ccmon_service_level:1h_ratio", "acme", "support", "0.7"),
    ("tenant_queue:ccmon_service_level:1h_wow_delta", "acme", "support", "-0.2"),
    ("tenant_queue:ccmon_service_level:1h_ratio", "acme", "sales", "NaN"),
    ("tenant_queue:ccmon_calls_offered:1h", "acme", "sales", "12"),
    # Not one of the figures: ignored.
    ("tenant_queue:ccmon_queue_paging:max", "acme", "support", "1"),
)


def test_the_query_answer_becomes_figures_per_queue() -> None:
    assert parse_query_result(answer(*SAMPLES)) == {
        "acme": {
            "support": {
                "calls_offered": 250.0,
                "calls_offered_last_week": 100.0,
                "calls_offered_wow_ratio": 2.5,
                "calls_offered_anomaly": 1.0,
                "service_level": 0.7,
                "service_level_wow_delta": -0.2,
            },
            "sales": {"calls_offered": 12.0},  # NaN left out
        }
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"status": "error", "error": "parse error"}',
        b"<html>not prometheus</html>",
        b'{"status": "success", "data": {"resultType": "matrix", "result": []}}',
    ],
)
def test_a_bad_answer_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_query_result(body)


def test_without_prometheus_there_is_no_indicator() -> None:
    doc = WeekOverWeek(None).document()
    assert doc["source"] == "none" and doc["tenants"] == {} and "--prometheus-url" in doc["reason"]


def test_one_query_per_ttl_whatever_the_callers() -> None:
    asked: list[tuple[str, float]] = []
    now = [100.0]

    def opener(url: str, timeout: float) -> bytes:
        asked.append((url, timeout))
        return answer(*SAMPLES)

    weekly = WeekOverWeek("http://prometheus:9090/", opener=opener, clock=lambda: now[0], ttl=30.0, timeout=2.0)
    first = weekly.document()
    assert first["source"] == "prometheus" and first["tenants"]["acme"]["queues"]["support"]["calls_offered"] == 250.0
    now[0] += 29
    assert weekly.document() is first
    assert len(asked) == 1
    url, timeout = asked[0]
    assert timeout == 2.0 and url.startswith("http://prometheus:9090/api/v1/query?")
    assert parse_qs(urlsplit(url).query) == {"query": [QUERY]}
    now[0] += 2
    weekly.document()
    assert len(asked) == 2


class _Prometheus(BaseHTTPRequestHandler):
    delay = 0.0
    body = answer(*SAMPLES)

    def do_GET(self) -> None:
        time.sleep(self.delay)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left: what the slow case wants

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture()
def fake_prometheus() -> Iterator[tuple[str, type[_Prometheus]]]:
    handler = type("Handler", (_Prometheus,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_over_http_and_a_slow_prometheus_times_out(fake_prometheus: tuple[str, type[_Prometheus]]) -> None:
    url, handler = fake_prometheus
    assert WeekOverWeek(url).document()["tenants"]["acme"]["queues"]["support"]["calls_offered_wow_ratio"] == 2.5
    handler.delay = 1.0
    started = time.monotonic()
    doc = WeekOverWeek(url, timeout=0.2).document()
    assert time.monotonic() - started < 0.9
    assert doc["source"] == "unavailable" and doc["tenants"] == {} and "timed out" in doc["reason"]


def test_unreachable_prometheus_is_unavailable_and_cached() -> None:
    calls = []

    def opener(url: str, timeout: float) -> bytes:
        calls.append(url)
        raise OSError("Connection refused")

    weekly = WeekOverWeek("http://127.0.0.1:9", opener=opener)
    doc = weekly.document()
    assert doc["source"] == "unavailable" and "Connection refused" in doc["reason"]
    weekly.document()
    assert len(calls) == 1  # not asked again on every board refresh


def test_the_route_answers_with_the_documented_schema() -> None:
    validator = response_validator(openapi_document(), "/api/week-over-week")
    app = make_store_app(Config(), MemoryState(), clock=lambda: 1795168800.0)
    status, body = call(app, "/api/week-over-week")
    doc = json.loads(body)
    assert status == "200 OK" and doc["source"] == "none" and doc["at"] == 1795168800.0
    validator.validate(doc)
    weekly = WeekOverWeek("http://prometheus:9090", opener=lambda _url, _timeout: answer(*SAMPLES))
    app = make_wsgi_app(lambda: [], lambda: [], get_info=lambda: {"at": 5.0}, week_over_week=weekly)
    status, body = call(app, "/api/week-over-week")
    doc = json.loads(body)
    validator.validate(doc)
    assert doc["source"] == "prometheus" and doc["tenants"]["acme"]["queues"]["support"]["service_level"] == 0.7


def test_the_prometheus_url_setting() -> None:
    assert settings_module.from_args(None, {}).prometheus_url is None
    env = {"CCMON_PROMETHEUS_URL": "http://prometheus:9090"}
    assert settings_module.from_args(None, env).prometheus_url == "http://prometheus:9090"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("prometheus:9090", "must be an http:// or https:// URL like http://prometheus:9090, got 'prometheus:9090'"),
        (
            "http://admin:secret@prometheus:9090",
            "must not hold a user or password (ccmon queries Prometheus without credentials), "
            "got 'http://admin:***@prometheus:9090'",
        ),
        ("http://prometheus:9090/?x=1", "must not have a query or fragment, got 'http://prometheus:9090/?x=1'"),
    ],
)
def test_a_bad_prometheus_url_names_the_variable(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_module.from_args(None, {"CCMON_PROMETHEUS_URL": value})
    assert str(info.value) == f"config field 'CCMON_PROMETHEUS_URL': {message}"
