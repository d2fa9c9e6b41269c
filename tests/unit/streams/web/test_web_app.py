"""The HTTP face without sockets: the WSGI apps' health split, methods and HEAD, the exporter's
coalesced /metrics, the server's Accept-Encoding parsing, and the failed-login throttle on a
fake clock."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis
from harness.web import wsgi_call as call

from kpi_core.config import Config
from kpi_core.state import MemoryState
from streams import security
from streams.exporter import SingleFlight, build_app
from streams.web import make_wsgi_app
from streams.web.server import accepts_gzip

AT = 1795168800.0


# -- /livez, /readyz, /healthz ------------------------------------------------------------------
def test_livez_reads_nothing_readyz_and_healthz_follow_readiness() -> None:
    asked: list[int] = []

    def info() -> dict[str, Any]:
        asked.append(1)
        return {"ready": False, "reason": "Redis unreachable: ConnectionError"}

    app = make_wsgi_app(lambda: [], lambda: [], get_info=info)
    status, _headers, body = call(app, "/livez")
    assert (status, json.loads(body)) == ("200 OK", {"status": "alive"}) and asked == []
    status, _headers, body = call(app, "/readyz")
    assert status == "503 Service Unavailable"
    assert json.loads(body) == {"status": "not ready", "reason": "Redis unreachable: ConnectionError"}
    status, _headers, body = call(app, "/healthz")  # the old name, the old body
    assert status == "503 Service Unavailable" and json.loads(body)["status"] == "starting"

    ready = make_wsgi_app(lambda: [], lambda: [], get_info=lambda: {"ready": True})
    assert json.loads(call(ready, "/readyz")[2]) == {"status": "ready"}
    assert json.loads(call(ready, "/healthz")[2]) == {"status": "ok"}


def test_exporter_stays_alive_while_redis_is_down() -> None:
    def ping() -> None:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    app = build_app(Config(), MemoryState(), lambda: AT, ping)
    assert call(app, "/livez")[0] == "200 OK"  # a liveness probe restarts nothing
    status, _headers, body = call(app, "/readyz")
    assert status == "503 Service Unavailable" and json.loads(body)["reason"] == "Redis unreachable: ConnectionError"
    assert call(app, "/healthz")[0] == "503 Service Unavailable"


def test_health_paths_stay_open_behind_basic_auth() -> None:
    app = security.require_basic_auth(make_wsgi_app(lambda: [], lambda: []), "prometheus", "pw")
    for path in ("/livez", "/readyz", "/healthz"):
        assert call(app, path)[0] == "200 OK", path
    assert call(app, "/livez/")[0] == "401 Unauthorized"


# -- methods and HEAD -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/metrics", "/api/samples", "/api/kpis", "/livez", "/"])
def test_exporter_refuses_other_methods_with_405(path: str) -> None:
    app = build_app(Config(), MemoryState(), lambda: AT)
    for method in ("POST", "PUT", "DELETE"):
        status, headers, body = call(app, path, method)
        assert status == "405 Method Not Allowed", (path, method)
        assert headers["Allow"] == "GET, HEAD" and int(headers["Content-Length"]) == len(body)
        assert json.loads(body)["error"] == f"method {method!r} not allowed on {path!r}: only GET and HEAD"


def test_exporter_head_has_the_get_headers_and_no_body() -> None:
    app = build_app(Config(), MemoryState(), lambda: AT)
    for path in ("/metrics", "/api/samples", "/api/kpis"):
        status, headers, body = call(app, path, "HEAD")
        get_status, get_headers, get_body = call(app, path)
        assert (status, body) == (get_status, b""), path
        assert headers["Content-Type"] == get_headers["Content-Type"], path
        if path != "/metrics":  # its scrape-time gauge changes length between two scrapes
            assert int(headers["Content-Length"]) == len(get_body), path


# -- one router ---------------------------------------------------------------------------------------
def test_routes_are_served_by_the_one_router_before_its_own_paths() -> None:
    served: list[dict[str, list[str]]] = []

    def metrics(query: dict[str, list[str]]) -> tuple[str, str, bytes]:
        served.append(query)
        return "200 OK", "text/plain; version=0.0.4; charset=utf-8", b"x 1\n"

    app = make_wsgi_app(lambda: [], lambda: [], routes={"/metrics": metrics})
    status, headers, body = call(app, "/metrics?a=1")
    assert (status, body, served) == ("200 OK", b"x 1\n", [{"a": ["1"]}])
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert (call(app, "/metrics", "HEAD")[2], call(app, "/metrics", "POST")[0]) == (b"", "405 Method Not Allowed")
    assert call(app, "/livez")[0] == "200 OK"  # the app's own paths still answer


def test_the_exporter_serves_metrics_and_samples_through_the_web_router() -> None:
    app = build_app(Config(), MemoryState(), lambda: AT)
    for path in ("/metrics", "/metrics/", "/api/samples"):
        status, headers, _body = call(app, path)
        assert status == "200 OK" and headers["X-Content-Type-Options"] == "nosniff", path  # the router's headers


# -- coalesced rendering ------------------------------------------------------------------------------
def test_both_boards_load_the_one_shared_script() -> None:
    app = make_wsgi_app(lambda: [], lambda: [])
    status, headers, script = call(app, "/board.js")
    assert status == "200 OK" and dict(headers)["Content-Type"].startswith("text/javascript")
    assert b"function el(" in script and b"async function fetchJson(" in script
    for path in ("/", "/agents"):
        _status, _headers, page = call(app, path)
        assert b'<script src="board.js"></script>' in page, path
        assert b"function el(" not in page and b"fetch(" not in page, path  # the page uses board.js's


def test_single_flight_shares_one_call_among_concurrent_callers() -> None:
    calls: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def slow() -> object:
        calls.append(1)
        entered.set()
        release.wait(10)
        return object()

    shared = SingleFlight(slow)
    results: list[object] = []
    leader = threading.Thread(target=lambda: results.append(shared()))
    leader.start()
    assert entered.wait(10)
    waiting = threading.Semaphore(0)

    class Counted(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.release()
            return super().wait(timeout)

    assert shared._flight is not None
    shared._flight.done = Counted()
    followers = [threading.Thread(target=lambda: results.append(shared())) for _ in range(7)]
    for thread in followers:
        thread.start()
    for _ in followers:
        assert waiting.acquire(timeout=10)  # each follower waits for the leader's call
    release.set()
    for thread in (leader, *followers):
        thread.join(10)
    assert len(calls) == 1 and len(results) == 8 and all(r is results[0] for r in results)
    assert shared() is not results[0] and len(calls) == 2  # a later caller gets a fresh call


def test_single_flight_passes_the_error_to_every_waiting_caller() -> None:
    entered, release = threading.Event(), threading.Event()

    def failing() -> None:
        entered.set()
        release.wait(10)
        raise redis.ConnectionError("down")

    shared = SingleFlight(failing)
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            shared()
        except redis.ConnectionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(3)]
    threads[0].start()
    assert entered.wait(10)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 3


# -- Accept-Encoding --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, GZIP;q=0.5", True),
        ("*", True),
        ("x-gzip", True),
        ("", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip; q=0.0, identity", False),
        ("br", False),
        ("gzip;q=bogus", False),
    ],
)
def test_accepts_gzip(header: str, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


# -- failed logins ------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def guarded(clock: Clock, **limits: Any) -> Callable[..., tuple[str, dict[str, str], bytes]]:
    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"numbers"]

    app = security.require_basic_auth(
        inner, "prometheus", "the-Password", throttle=security.LoginThrottle(clock=clock, **limits)
    )

    def get(
        credentials: str | None, address: str = "192.0.2.7", path: str = "/metrics"
    ) -> tuple[str, dict[str, str], bytes]:
        extra = {"REMOTE_ADDR": address}
        if credentials is not None:
            extra["HTTP_AUTHORIZATION"] = basic(credentials)
        return call(app, path, **extra)

    return get


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ccmon.security" and r.levelno == logging.WARNING]


def test_failed_logins_log_one_line_a_minute_per_address_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ccmon.security")
    clock = Clock()
    get = guarded(clock, max_failures=1000)
    for _ in range(5):
        assert get("prometheus:wrong")[0] == "401 Unauthorized"
        clock.now += 1
    assert get(None)[0] == "401 Unauthorized"  # no credentials (a browser's first request): no failure
    assert get("admin:x", address="198.51.100.1")[0] == "401 Unauthorized"  # another address: its own line
    assert messages(caplog) == [
        "failed basic-auth login from 192.0.2.7 as user 'prometheus': 1 failure(s) since the last report",
        "failed basic-auth login from 198.51.100.1 as user 'admin': 1 failure(s) since the last report",
    ]
    clock.now += 60
    get("prometheus:wrong")
    assert (
        messages(caplog)[-1]
        == "failed basic-auth login from 192.0.2.7 as user 'prometheus': 5 failure(s) since the last report"
    )
    assert len(messages(caplog)) == 3


def test_the_logged_user_name_is_truncated_and_escaped_and_the_password_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ccmon.security")
    clock = Clock()
    get = guarded(clock, max_failures=1000, log_interval=0.0)
    get("x" * 100 + ":pw")
    get("evil\r\nFAKE LOG LINE\x1b[31m:pw")
    get("the-Password:prometheus")  # credentials typed the wrong way round
    get(None)
    call_header = security.require_basic_auth(
        lambda e, s: [], "u", "p", throttle=security.LoginThrottle(clock=clock, log_interval=0.0)
    )
    call(call_header, "/metrics", HTTP_AUTHORIZATION="Basic !!!", REMOTE_ADDR="192.0.2.9")
    lines = messages(caplog)
    assert lines[0].endswith("as user '" + "x" * 32 + "'...: 1 failure(s) since the last report")
    assert "as user 'evil\\r\\nFAKE LOG LINE\\x1b[31m'" in lines[1] and "\n" not in lines[1]
    assert "as user '***'" in lines[2] and all("the-Password" not in line for line in lines)
    assert (
        lines[3]
        == "failed basic-auth login from 192.0.2.9 as user (unreadable credentials): 1 failure(s) since the last report"
    )
    assert len(lines) == 4


def test_too_many_failures_get_429_until_the_cool_down_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ccmon.security")
    clock = Clock()
    get = guarded(clock, max_failures=5, window=60.0, cooldown=30.0)
    assert [get("prometheus:wrong")[0][:3] for _ in range(6)] == ["401"] * 4 + ["429"] * 2
    status, headers, body = get("prometheus:the-Password")  # even the right password waits
    assert status == "429 Too Many Requests" and headers["Retry-After"] == "30" and b"numbers" not in body
    assert get("prometheus:the-Password", address="192.0.2.8")[0] == "200 OK"  # other addresses are not affected
    assert get(None, path="/livez")[0] == "200 OK"
    assert messages(caplog)[-1].endswith("4 failure(s) since the last report; refused with 429 for 30 s")
    clock.now += 20
    assert get("prometheus:the-Password")[1]["Retry-After"] == "10"
    clock.now += 10
    assert get("prometheus:the-Password")[0] == "200 OK"
    # The success forgot the failures: a fresh window.
    assert [get("prometheus:wrong")[0][:3] for _ in range(5)] == ["401"] * 4 + ["429"]


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    get = guarded(clock, max_failures=3, window=10.0)
    for _ in range(10):
        assert get("prometheus:wrong")[0] == "401 Unauthorized"
        clock.now += 6  # never 3 within 10 s


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    clock = Clock()
    throttle = security.LoginThrottle(clock=clock, max_failures=2, max_addresses=100, log_interval=1e9)
    throttle.failed("192.0.2.1", "a")
    assert throttle.failed("192.0.2.1", "a") == 60.0
    for i in range(500):
        throttle.failed(f"10.0.{i // 256}.{i % 256}", "a")
    assert len(throttle._addresses) == 100
    assert throttle.blocked("192.0.2.1") == 0.0  # the least recently failing was forgotten first
    with pytest.raises(ValueError, match="max_failures must be >= 1, got 0"):
        security.LoginThrottle(max_failures=0)


def test_one_body_served_concurrently_is_gzipped_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip as gzip_module

    from streams.web import server as server_module

    compressed: list[int] = []
    real = gzip_module.compress

    def counting(data: bytes, *args: Any, **kwargs: Any) -> bytes:
        compressed.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(server_module.gzip, "compress", counting)
    squeeze = server_module._Gzip()
    body, other = b"x" * 2_000_000, b"y" * 1000
    barrier = threading.Barrier(16)
    results: list[bytes] = []

    def request() -> None:
        barrier.wait()
        results.append(squeeze(body))

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 16 and all(r is results[0] for r in results)
    assert gzip_module.decompress(results[0]) == body
    assert compressed == [len(body)]  # 16 concurrent requests, one compression
    assert gzip_module.decompress(squeeze(other)) == other and squeeze(body) is results[0]  # remembered
    assert compressed == [len(body), len(other)]
