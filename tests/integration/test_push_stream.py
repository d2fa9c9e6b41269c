"""``GET /api/stream`` (Server-Sent Events) on the real HTTP server (streams.web.server):

* a change reaches an open stream within a poll (the whole /api/kpis document), an unchanged
  board gets ``alive`` heartbeats, ``HEAD`` does not stream;
* at most ``max_streams`` are open (503 with ``Retry-After`` beyond); a client that stops
  reading is dropped after the write deadline while another keeps receiving every document;
* basic auth guards the stream like any path; stopping the server ends the open streams;
* over the real Redis: the workers' event counters (``events_version``) move with each batch,
  the sparklines' history kept in Redis (``RedisSlHistory``) survives a new exporter app.

No Kafka; the Redis tests use the shared Redis under a prefix of their own.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import parse_event
from kpi_core.kpis import MetricFamily
from streams import security
from streams.web import Server, make_wsgi_app, serve


class Board:
    """A board whose KPIs the test sets: one queue's ``calls_waiting``, a version, and an
    optional padding in ``info`` (to make documents big)."""

    def __init__(self) -> None:
        self.waiting = 0.0
        self.version = 0
        self.padding = ""
        self.lock = threading.Lock()

    def families(self) -> list[MetricFamily]:
        family = MetricFamily("ccmon_calls_waiting", "gauge", "")
        family.add((("tenant", "default"), ("queue", "support")), self.waiting)
        return [family]

    def info(self) -> dict[str, Any]:
        return {"at": 1_795_132_800.0 + self.version, "pad": self.padding}

    def set(self, waiting: float, padding: str | None = None) -> None:
        with self.lock:
            self.waiting = waiting
            if padding is not None:
                self.padding = padding
            self.version += 1

    def app(self) -> Any:
        return make_wsgi_app(self.families, lambda: [], get_info=self.info, version=lambda: self.version)


class Events:
    """An SSE client: :meth:`next` returns the next ``(event, data)``, comments are kept."""

    def __init__(self, port: int, headers: dict[str, str] | None = None, timeout: float = 5.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", "/api/stream", headers=headers or {})
        self.response = self.conn.getresponse()
        self.comments: list[str] = []

    def next(self) -> tuple[str, str]:
        event, data = "message", []
        while True:
            raw = self.response.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n")
            if not line:
                if data:
                    return event, "\n".join(data)
                event = "message"
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)

    def next_document(self) -> dict[str, Any]:
        while True:
            event, data = self.next()
            if event == "kpis":
                return dict(json.loads(data))

    def close(self) -> None:
        self.conn.close()


def waiting_in(document: dict[str, Any]) -> float:
    return float(document["tenants"]["default"]["queues"]["support"]["live"]["calls_waiting"])


@pytest.fixture
def board() -> Iterator[tuple[Board, Server]]:
    source = Board()
    server = serve(source.app(), heartbeat_seconds=0.5, stream_write_timeout=1.0, max_streams=2)
    try:
        yield source, server
    finally:
        server.stop()


def test_a_change_reaches_an_open_stream_within_a_poll(board: tuple[Board, Server]) -> None:
    source, server = board
    stream = Events(server.port)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        assert stream.response.getheader("Content-Encoding") is None
        first = stream.next_document()
        assert waiting_in(first) == 0 and set(first) == {"at", "at_iso", "info", "tenants", "pipeline"}
        delays = []
        for waiting in (3.0, 7.0, 1.0):
            changed = time.monotonic()
            source.set(waiting)
            document = stream.next_document()
            delays.append(time.monotonic() - changed)
            assert waiting_in(document) == waiting
        assert max(delays) < 1.0, delays  # a poll is 0.25 s
        # Nothing changes (a frozen clock): "alive" every heartbeat, no document.
        started = time.monotonic()
        assert stream.next() == ("alive", str(4))  # the id of the last document sent
        assert 0.3 < time.monotonic() - started < 2.0
    finally:
        stream.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("HEAD", "/api/stream")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b"" and head.getheader("Content-Type").startswith("text/event-stream")
    conn.close()


def test_streams_are_bounded_and_a_client_that_stops_reading_is_dropped(board: tuple[Board, Server]) -> None:
    source, server = board
    reader = Events(server.port)
    reader.next_document()
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never reads again
    try:
        deadline = time.monotonic() + 5
        while server.open_streams < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        third = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        third.request("GET", "/api/stream")
        refused = third.getresponse()
        assert refused.status == 503 and refused.getheader("Retry-After") == "10"
        assert "poll /api/kpis" in json.loads(refused.read())["error"]
        third.close()
        # Big documents (2 MB): the stuck client's buffers fill; the reader gets every one.
        started = time.monotonic()
        for n in range(1, 9):
            source.set(float(n), padding=f"{n}" * 2_000_000)
            assert waiting_in(reader.next_document()) == n
        while server.streams_dropped == 0 and time.monotonic() - started < 10:
            time.sleep(0.05)
        assert server.streams_dropped == 1
        assert time.monotonic() - started < 8
        source.set(42.0, padding="")
        assert waiting_in(reader.next_document()) == 42
        again = Events(server.port)  # its slot is free again
        assert again.response.status == 200 and waiting_in(again.next_document()) == 42
        again.close()
    finally:
        stuck.close()
        reader.close()


def test_basic_auth_guards_the_stream() -> None:
    source = Board()
    app = security.require_basic_auth(source.app(), "sup", "s3cret-pass")
    server = serve(app)
    try:
        denied = Events(server.port)
        assert denied.response.status == 401
        denied.close()
        token = base64.b64encode(b"sup:s3cret-pass").decode()
        allowed = Events(server.port, {"Authorization": f"Basic {token}"})
        assert allowed.response.status == 200 and waiting_in(allowed.next_document()) == 0
        allowed.close()
    finally:
        server.stop()


def test_stopping_the_server_ends_open_streams() -> None:
    source = Board()
    server = serve(source.app(), heartbeat_seconds=30)
    stream = Events(server.port)
    stream.next_document()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    with pytest.raises((EOFError, OSError, http.client.HTTPException)):
        while True:
            stream.next()
    stream.close()


def test_a_wsgi_app_without_the_server_answers_an_empty_stream() -> None:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/stream", "QUERY_STRING": ""}
    body = b"".join(Board().app()(environ, start_response))
    assert (
        seen["status"] == "200 OK" and body == b"" and seen["headers"]["Content-Type"].startswith("text/event-stream")
    )


# -- over the real Redis -----------------------------------------------------------------------------
@pytest.mark.integration
def test_events_version_moves_with_each_batch(redis_client: Any, redis_prefix: str) -> None:
    from streams.redis.state import RedisState

    config = Config()
    state = RedisState(redis_client, config, prefix=redis_prefix, clock=lambda: 1_795_132_800.0)
    engine = Engine(config, state)
    before = state.events_version()
    assert before == ()
    with state.batch():
        engine.handle(
            parse_event(
                {"event_id": "e1", "type": "call.offered", "ts": 1_795_132_700.0, "call_id": "c1", "queue": "support"}
            ),
            1_795_132_800.0,
        )
    first = state.events_version()
    assert [tenant for tenant, _ in first] == ["default"]
    assert state.events_version() == first  # nothing landed: the same
    with state.batch():
        engine.handle(
            parse_event({"event_id": "e2", "type": "call.abandoned", "ts": 1_795_132_710.0, "call_id": "c1"}),
            1_795_132_800.0,
        )
    assert state.events_version() != first


@pytest.mark.integration
def test_sparkline_history_kept_in_redis_survives_a_new_exporter(redis_client: Any, redis_prefix: str) -> None:
    from streams.exporter import HistoryRecorder, KpiCollector, build_app
    from streams.redis.state import RedisState
    from streams.web import RedisSlHistory

    day = 1_795_132_800.0
    config = Config()
    state = RedisState(redis_client, config, prefix=redis_prefix, clock=lambda: day)

    def families(sl: float, waiting: float) -> list[MetricFamily]:
        ratio = MetricFamily("ccmon_service_level_ratio", "gauge", "")
        ratio.add((("tenant", "acme"), ("queue", "support"), ("window", "15m")), sl)
        ratio.add((("tenant", "acme"), ("queue", "support"), ("window", "1h")), 0.0)
        count = MetricFamily("ccmon_calls_waiting", "gauge", "")
        count.add((("tenant", "acme"), ("queue", "support")), waiting)
        count.add((("tenant", "acme"), ("queue", "sales")), 1.0)
        return [ratio, count]

    history = RedisSlHistory(state, keep_seconds=300.0, max_points=4)
    for minute in range(8):
        history.record(day + 60 * minute, families(minute / 10, float(minute)))
    key = state.history_key("acme", "15m")
    assert redis_client.zcard(key) == 4  # max_points
    assert 0 < redis_client.pttl(key) <= 300_000
    # A new store object, as a restarted exporter has: the same history.
    fresh = RedisSlHistory(RedisState(redis_client, config, prefix=redis_prefix), keep_seconds=300.0, max_points=4)
    assert fresh.series("acme") == {"support": [[day + 60 * m, m / 10] for m in range(4, 8)]}
    assert fresh.series("acme", since=day + 390)["support"] == [[day + 420, 0.7]]
    assert fresh.series("acme", kpi="ccmon_calls_waiting") == {
        "sales": [[day + 60 * m, 1.0] for m in range(4, 8)],
        "support": [[day + 60 * m, float(m)] for m in range(4, 8)],
    }
    assert fresh.series("other") == {}
    with pytest.raises(ValueError, match=r"kpi must be one of .* got 'ccmon_nope'"):
        fresh.series("acme", kpi="ccmon_nope")
    history.record(day + 300, families(0.95, 0.0))  # the same instant again, or earlier: replaces what follows
    assert fresh.series("acme")["support"][-1] == [day + 300, 0.95]

    # The exporter's recorder writes whole minutes of its clock; a new app's /api/kpis serves them.
    at = day + 3600 + 59.5
    engine = Engine(config, state)
    with state.batch():
        engine.handle(
            parse_event(
                {"event_id": "h1", "type": "call.offered", "ts": at - 300, "call_id": "h1", "queue": "support"}
            ),
            at,
        )
        engine.handle(
            parse_event({"event_id": "h2", "type": "call.answered", "ts": at - 290, "call_id": "h1", "agent_id": "a1"}),
            at,
        )
    HistoryRecorder(KpiCollector(config, state, lambda: at), RedisSlHistory(state)).record()
    served = serve(
        build_app(
            config,
            RedisState(redis_client, config, prefix=redis_prefix),
            lambda: at,
            history=RedisSlHistory(RedisState(redis_client, config, prefix=redis_prefix)),
        )
    )
    try:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
        conn.request("GET", "/api/kpis")
        document = json.loads(conn.getresponse().read())
        conn.close()
    finally:
        served.stop()
    assert document["tenants"]["default"]["history"] == {
        "window": "15m",
        "series": {"_all": [[day + 3600, 1.0]], "support": [[day + 3600, 1.0]]},
    }
    assert document["tenants"]["default"]["timezone"] == "UTC"
