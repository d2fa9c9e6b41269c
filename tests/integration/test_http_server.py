"""The HTTP server (streams.web.server) on real sockets, loopback only:

* a real ``ccmon exporter`` process over the shared Redis with 100 queues of state: 500 idle
  connections held do not delay ``/livez`` or ``/healthz`` (< 1 s) nor cost a thread each;
  50 scrapers back to back for 10 s: no request fails (the p99 is bench/bench_http.py's; here
  only a generous bound);
* in process, the exporter's app over the golden state: 405 with ``Allow`` for a wrong method
  on every route, ``HEAD`` = ``GET`` without the body, gzip when accepted;
* a malformed request gets 400 and no error log (nor its bytes in any line);
* a client dribbling its headers (slowloris), or silent, is dropped after the head deadline,
  an idle keep-alive connection after the idle timeout; a client that does not read its
  response is reset after the write deadline;
* every worker busy: ``503`` with ``Retry-After`` after the bounded wait, probes still answer;
* failed basic-auth logins: one WARNING line, then ``429`` with ``Retry-After``.

Takes about 30 s (the 10 s of scraping and building the 100 queues are most of it).
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.pipeline import serve_golden
from harness.redis_servers import delete_prefix
from harness.samples import Samples, samples_of

from kpi_core.config import Config
from streams import security
from streams.web import make_wsgi_app, serve
from streams.web import server as server_module

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"
CONFIG = Config()
ROUTES = ("/metrics", "/api/samples", "/", "/api/kpis", "/api/callbacks/pending", "/livez", "/readyz", "/healthz")


@pytest.fixture(scope="module")
def bench_http() -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_http

        return bench_http
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def loaded_exporter(bench_http: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A ``ccmon exporter`` process over 100 queues of state (its ``port`` and ``pid``)."""
    import redis

    prefix = bench_http.build_state(redis_url, 100)
    try:
        with bench_http.exporter(redis_url, prefix, tmp_path_factory.mktemp("http") / "exporter.log") as process:
            yield process
    finally:
        client = redis.Redis.from_url(redis_url)
        delete_prefix(client, prefix)
        client.close()


def request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def samples(text: str) -> Samples:
    return {key: value for key, value in samples_of(text).items() if key[0] != "ccmon_exporter_scrape_seconds"}


# -- load: a real exporter process ----------------------------------------------------------------
def test_500_idle_connections_delay_no_probe_and_hold_no_thread(loaded_exporter: Any, bench_http: Any) -> None:
    result = bench_http.idle_run(loaded_exporter.port, loaded_exporter.pid, connections=500, probes=10)
    assert result["still_open"] == 500  # held, not refused: the idle timeout (30 s) is not yet up
    for path in ("/livez", "/healthz"):
        assert result[path]["failures"] == 0, result
        assert result[path]["statuses"] == [200], result
        assert result[path]["max"] < 1.0, result
    assert result["threads_held"] - result["threads_before"] < 20, result  # the old server: one thread each


def test_50_scrapers_for_10_seconds_none_fails(loaded_exporter: Any, bench_http: Any) -> None:
    result = bench_http.scrape_run(loaded_exporter.port, clients=50, seconds=10.0)
    assert result["failures"] == 0, result
    assert result["ok"] >= 100, result
    assert result["p99"] < 6.0, result  # the target is 2 s (bench_http); CI machines are shared
    # What they got was the whole page, gzipped.
    status, headers, body = request(loaded_exporter.port, "GET", "/metrics", {"Accept-Encoding": "gzip"}, timeout=30)
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    got = samples(gzip.decompress(body).decode())
    queues = {dict(labels).get("queue") for name, labels in got if name == "ccmon_calls_offered"}
    assert len(queues - {None}) == 100


# -- HTTP semantics: the exporter's app in process ------------------------------------------------
@pytest.fixture
def served(redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float) -> Iterator[int]:
    server, _state = serve_golden(redis_client, redis_prefix, golden_lines, golden_at)
    try:
        yield server.port
    finally:
        server.stop()


def test_wrong_method_is_405_with_allow_on_every_route(served: int) -> None:
    for path in ROUTES:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            status, headers, body = request(served, method, path)
            assert status == 405, (method, path)
            assert headers["Allow"] == "GET, HEAD", (method, path)
            assert method in json.loads(body)["error"], (method, path)


def test_head_is_get_without_the_body(served: int) -> None:
    for path in ROUTES:
        get_status, get_headers, get_body = request(served, "GET", path)
        status, headers, body = request(served, "HEAD", path)
        assert (status, body) == (get_status, b""), path
        assert headers["Content-Type"] == get_headers["Content-Type"], path
        if path != "/metrics":  # its scrape-time gauge may change length between two scrapes
            assert int(headers["Content-Length"]) == len(get_body), path
        else:
            assert abs(int(headers["Content-Length"]) - len(get_body)) < 30
    # On the wire: nothing after the headers (http.client would not read a body anyway).
    for path in ("/metrics", "/api/samples"):
        with socket.create_connection(("127.0.0.1", served), timeout=10) as sock:
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert rest == b"", f"HEAD {path}: {len(rest)} body bytes after the headers"
        assert head.split(b" ")[1] == b"200" and b"\r\nContent-Length: " in head, head
    # The connection stays usable after a HEAD (no stray body bytes read as the next response).
    conn = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
    try:
        conn.request("HEAD", "/metrics")
        first = conn.getresponse()
        assert first.read() == b""
        conn.request("GET", "/livez")
        assert json.loads(conn.getresponse().read()) == {"status": "alive"}
    finally:
        conn.close()


def test_gzip_when_accepted(served: int) -> None:
    for path in ("/metrics", "/api/kpis", "/api/samples"):
        _, plain_headers, plain = request(served, "GET", path)
        assert "Content-Encoding" not in plain_headers and plain_headers["Vary"] == "Accept-Encoding"
        status, headers, body = request(
            served, "GET", path, {"Accept-Encoding": "gzip, deflate"}
        )  # what Prometheus sends
        assert status == 200 and headers["Content-Encoding"] == "gzip", path
        assert int(headers["Content-Length"]) == len(body) < len(plain) / 3, path
        if path == "/metrics":
            assert samples(gzip.decompress(body).decode()) == samples(plain.decode())
        else:
            assert json.loads(gzip.decompress(body)) == json.loads(plain), path
    # Not when refused (q=0) nor for small bodies.
    _, headers, body = request(served, "GET", "/api/kpis", {"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in headers and json.loads(body)
    _, headers, body = request(served, "GET", "/livez", {"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in headers and json.loads(body) == {"status": "alive"}


def test_a_malformed_request_gets_400_and_no_error_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = serve(make_wsgi_app(lambda: [], lambda: []))
    secret = "Basic " + "c2VjcmV0" * 2000  # an oversized header must not be quoted in any log line
    try:
        for payload in (
            f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: {secret}\r\n\r\n".encode(),
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(payload)
                status_line = sock.recv(100).split(b"\r\n")[0]
                assert status_line.startswith(b"HTTP/1.") and status_line.split(b" ")[1] == b"400", status_line
        assert request(server.port, "GET", "/livez")[0] == 200
    finally:
        server.stop()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)
    assert all("c2VjcmV0" not in r.getMessage() for r in caplog.records)


def test_a_client_that_leaves_before_its_response_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """A page closed while its request is computed (a board's poll as the browser quits): the
    response meets a closing transport, which is the client's doing, not an error (it was an
    ERROR with a traceback in ``ccmon demo``'s stderr)."""
    caplog.set_level(logging.DEBUG)
    started = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            started.set()
            time.sleep(0.5)  # the client is gone by now
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    server = serve(app)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert started.wait(5)
        time.sleep(1.0)  # the server writes its response to the closed connection meanwhile
        assert request(server.port, "GET", "/other")[2] == b"done"  # and still serves
    finally:
        server.stop()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)


# -- timeouts ---------------------------------------------------------------------------------------
def closed_within(sock: socket.socket, seconds: float, dribble: bytes = b"") -> float | None:
    """Seconds until the server closed ``sock`` (sending ``dribble`` a byte every 0.1 s
    meanwhile), or None if it was still open after ``seconds``."""
    started = time.monotonic()
    sock.settimeout(0.1)
    sent = 0
    while time.monotonic() - started < seconds:
        try:
            if sent < len(dribble):
                sock.send(dribble[sent : sent + 1])
                sent += 1
            data = sock.recv(4096)
            if data == b"":
                return time.monotonic() - started
            raise AssertionError(f"the server answered an incomplete request: {data[:200]!r}")
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    return None


def test_slowloris_and_idle_connections_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    # The head deadline (1 s) is shorter than the idle timeout (3 s), which aiohttp's own
    # keep-alive timer uses: a drop before 2.5 s is the head deadline's.
    monkeypatch.setattr(server_module, "HEAD_TIMEOUT_SECONDS", 1.0, raising=False)
    monkeypatch.setattr(server_module, "IDLE_TIMEOUT_SECONDS", 3.0, raising=False)
    app = make_wsgi_app(lambda: [], lambda: [])
    server = serve(app)
    try:
        slow = socket.create_connection(("127.0.0.1", server.port))
        silent = socket.create_connection(("127.0.0.1", server.port))
        dribbled = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"a" * 200  # never ends
        try:
            # Dribbling: 1 byte per 0.1 s, the headers never complete.
            after = closed_within(slow, 8.0, dribbled)
            assert after is not None and after < 2.5, after
            after = closed_within(silent, 8.0)  # connected at the same time, never sent a byte
            assert after is not None, "a silent connection was never closed"
        finally:
            slow.close()
            silent.close()
        # A keep-alive connection is closed once idle after its response (3 s), and others are served.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/livez")
        assert conn.getresponse().read() == b'{"status":"alive"}'
        assert conn.sock is not None
        after = closed_within(conn.sock, 8.0)
        assert after is not None and 2.0 < after < 5.0, after
        conn.close()
        assert request(server.port, "GET", "/livez")[0] == 200
    finally:
        server.stop()


def test_a_client_that_does_not_read_its_response_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "WRITE_TIMEOUT_SECONDS", 1.0, raising=False)
    big = b"x" * 64_000_000

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = big if environ["PATH_INFO"] == "/big" else b"small"
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]

    server = serve(app)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            time.sleep(4.0)  # not reading: the buffers fill, the server's write deadline passes
            received, reset, started = 0, False, time.monotonic()
            try:
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            except ConnectionResetError:
                reset = True
            assert reset and received < len(big) / 2, (reset, received)
            assert time.monotonic() - started < 5
        assert request(server.port, "GET", "/other")[2] == b"small"  # the server still serves
    finally:
        server.stop()


# -- back-pressure ------------------------------------------------------------------------------------
def test_every_worker_busy_gives_503_with_retry_after_and_probes_still_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "WORKERS", 2, raising=False)
    monkeypatch.setattr(server_module, "QUEUE_TIMEOUT_SECONDS", 0.5, raising=False)
    release = threading.Event()
    inner = make_wsgi_app(lambda: [], lambda: [])

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/slow":
            release.wait(20)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"slow"]
        return inner(environ, start_response)

    server = serve(app)
    results: list[int] = []
    try:
        holders = [
            threading.Thread(target=lambda: results.append(request(server.port, "GET", "/slow", timeout=30)[0]))
            for _ in range(2)
        ]
        for thread in holders:
            thread.start()
        time.sleep(0.5)  # both workers taken
        started = time.monotonic()
        status, headers, body = request(server.port, "GET", "/api/kpis", timeout=5)
        waited = time.monotonic() - started
        assert status == 503 and headers["Retry-After"] == "1", (status, body)
        assert 0.4 < waited < 3.0, waited
        # The probes have a lane of their own.
        started = time.monotonic()
        assert request(server.port, "GET", "/livez", timeout=5)[0] == 200
        assert request(server.port, "GET", "/healthz", timeout=5)[0] == 200
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        for thread in holders:
            thread.join(30)
        server.stop()
    assert results == [200, 200]


# -- failed logins --------------------------------------------------------------------------------------
def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def test_failed_logins_are_logged_once_and_throttled(caplog: pytest.LogCaptureFixture) -> None:
    password = "s3cret-Pw-for-the-test"
    app = security.require_basic_auth(make_wsgi_app(lambda: [], lambda: []), "prometheus", password)
    server = serve(app)
    caplog.set_level(logging.WARNING, logger="ccmon.security")
    try:
        assert request(server.port, "GET", "/api/kpis", basic(f"prometheus:{password}"))[0] == 200
        statuses = [request(server.port, "GET", "/api/kpis", basic(f"prometheus:guess{i}"))[0] for i in range(12)]
        assert statuses == [401] * 9 + [429] * 3
        status, headers, _body = request(server.port, "GET", "/api/kpis", basic(f"prometheus:{password}"))
        assert status == 429 and 55 <= int(headers["Retry-After"]) <= 60  # the right password waits too
        assert request(server.port, "GET", "/livez")[0] == 200  # probes stay open
        assert request(server.port, "GET", "/readyz")[0] == 200
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "ccmon.security"]
    # Rate-limited: the first failure, then one line as the cool-down starts, for 10 failures.
    assert len(lines) == 2, lines
    assert "failed basic-auth login from 127.0.0.1 as user 'prometheus': 1 failure(s)" in lines[0]
    assert lines[1].endswith("as user 'prometheus': 9 failure(s) since the last report; refused with 429 for 60 s")
    assert all(password not in line and "guess" not in line for line in lines)
