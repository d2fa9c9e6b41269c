"""The HTTP server of the exporter and the demo: aiohttp's low-level server on an event loop of
its own thread, the WSGI app (the one router, :mod:`streams.web.app`) run in a bounded pool.

Why this shape: the WSGI app stays the single router the demo, the exporter and the basic-auth
wrapper share (and the unit tests call without sockets), while the connections live on an
event loop, where an idle one costs a few kilobytes instead of a thread. aiohttp comes with
Faust already and speaks TLS; waitress has no TLS, and granian would be a new compiled
dependency for the same result.

* **Connections** -- any number, handled by the loop. Listen backlog :data:`BACKLOG` (the
  kernel caps it at ``net.core.somaxconn``).
* **Timeouts** -- a connection must deliver its first complete request head within
  ``head_timeout`` (10 s), and each next one within ``idle_timeout`` (30 s) of the previous
  response, else it is closed: a client dribbling its headers (*slowloris*) or never saying
  anything is dropped, and so is an idle keep-alive connection. Our own timer
  (:class:`_Connection`): aiohttp's keep-alive timer covers a connection's first request only
  in its latest releases. A TLS handshake must finish within
  :data:`TLS_HANDSHAKE_TIMEOUT_SECONDS`. Request lines and header fields are capped at 8 KiB,
  at most 128 fields. A response must be sent within ``write_timeout`` (a client that stops
  reading is dropped, and the response's memory freed).
* **Bounded concurrency, back-pressure** -- at most ``workers`` requests run the app at once
  (a thread pool). A request finding them all busy waits up to ``queue_timeout`` seconds for
  one, and at most ``max_waiting`` requests wait; beyond either it gets ``503`` with
  ``Retry-After`` at once, costing the loop nothing. Health paths (``priority_paths``) have
  a small lane of their own, so probes are not queued behind slow scrapes.
* **HTTP semantics** -- ``HEAD`` gets the ``GET`` headers (``Content-Length`` included) and no
  body, whatever the app returns; bodies of text and JSON of 1 KiB or more are gzipped when the
  request accepts gzip (Prometheus does), once per distinct body object (an app handing the
  same ``bytes`` object to concurrent requests, like the exporter's coalesced ``/metrics``,
  has it compressed once). Wrong methods get ``405`` with ``Allow`` from the app.
* **Pushed updates** (``GET /api/stream``, Server-Sent Events) -- the WSGI app answers the
  request like any other (so basic auth, ``405`` and ``404`` stay its business) and, when it
  serves a stream, hands its :class:`~streams.web.push.Publisher` over in the environ
  (:data:`~streams.web.api.STREAM_ENVIRON`); the server then keeps the response open on the
  loop and writes each new document as an ``event: kpis`` (one line of JSON: the whole
  ``/api/kpis`` document, so ``Last-Event-ID`` is not needed), an ``event: alive`` every
  ``heartbeat_seconds`` (5 s) without one while the publisher renders fine, else a comment
  line (keeps proxies from closing an idle stream). A stream holds no worker thread: at most
  ``max_streams`` (256) are open at once, the next gets ``503`` with ``Retry-After`` (the page
  then polls). A client that does not take a write within ``stream_write_timeout`` (10 s) is
  dropped; it delays no one else (each stream has its own task and only the latest document
  is kept for it, so a slow one skips documents rather than queueing them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import logging
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from streams.security import WSGIApp
from streams.web.api import LISTEN_HOST_ENVIRON, STREAM_ENVIRON
from streams.web.push import Publisher

log = logging.getLogger("ccmon.http")


class _ClientErrorsQuiet(logging.Filter):
    """aiohttp logs a malformed request (a line or header too long, TLS on the plain port...)
    as an ERROR with a traceback: a client's mistake, and a log flood for whoever sends many.
    One DEBUG line instead; anything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            # Not its message: it quotes the request (an oversized Authorization header...).
            log.debug("bad request (%d): %s", exc.code, type(exc).__name__)
            return False
        return True


_protocol_log = logging.getLogger("ccmon.http.protocol")
_protocol_log.addFilter(_ClientErrorsQuiet())

#: How long a TLS client may take to complete its handshake.
TLS_HANDSHAKE_TIMEOUT_SECONDS = 30.0
#: Seconds a new connection may take to send its first request head.
HEAD_TIMEOUT_SECONDS = 10.0
#: Seconds a connection may stay idle after a response (and take to send the next head).
IDLE_TIMEOUT_SECONDS = 30.0
#: Seconds a response may take to be sent (a client that does not read it is then dropped).
WRITE_TIMEOUT_SECONDS = 60.0
#: Requests running the app at once (threads); most of a scrape's time is Redis I/O or a
#: wait for a coalesced render, so this is well above the number of cores.
WORKERS = 64
#: Seconds a request waits for a free worker before ``503``; and how many may wait.
QUEUE_TIMEOUT_SECONDS = 10.0
MAX_WAITING = 1024
#: Paths served by a lane of their own (liveness and readiness probes).
PRIORITY_PATHS = ("/livez", "/readyz", "/healthz")
PRIORITY_WORKERS = 4
BACKLOG = 1024
#: Gzip bodies of at least this many bytes, of these content types.
GZIP_MIN_BYTES = 1024
#: Level 1: on a 1,000-queue /metrics page it costs less than half the CPU of level 6 for a
#: body about a fifth larger (bench/bench_scrape.py; figures in docs/BENCHMARKS.md).
GZIP_LEVEL = 1
_COMPRESSIBLE = ("text/", "application/json")
SERVER_HEADER = "ccmon"
#: Server-Sent Events streams open at once; an ``alive`` event (or a comment) after this many
#: seconds without a document; seconds a stream's client may take to accept a write.
MAX_STREAMS = 256
STREAM_HEARTBEAT_SECONDS = 5.0
STREAM_WRITE_TIMEOUT_SECONDS = 10.0
#: The page's EventSource reconnects after this many milliseconds when a stream ends.
STREAM_RETRY_MS = 2000


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (``gzip`` or ``*``, without ``q=0``)."""
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


class _Gzip:
    """gzip of a body, remembering the last few compressed (by identity): one body served to
    many concurrent requests is compressed once, by the first of them, while the others wait
    for it (different bodies are compressed in parallel)."""

    def __init__(self, level: int = GZIP_LEVEL, remember: int = 4) -> None:
        self.level = level
        self.remember = remember
        self._lock = threading.Lock()
        self._recent: list[_Compressed] = []

    def __call__(self, body: bytes) -> bytes:
        with self._lock:
            entry = next((e for e in self._recent if e.body is body), None)
            if entry is None:
                entry = _Compressed(body)
                self._recent = [entry, *self._recent[: self.remember - 1]]
        with entry.lock:
            if entry.compressed is None:
                entry.compressed = gzip.compress(body, self.level, mtime=0)
            return entry.compressed


class _Compressed:
    __slots__ = ("body", "compressed", "lock")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.compressed: bytes | None = None
        self.lock = threading.Lock()


class Busy(Exception):
    """No worker became free in time."""


class _Connection(web.RequestHandler):
    """aiohttp's connection handler with a deadline for request heads: the first within
    ``head_timeout`` of the connection, each next one within ``idle_timeout`` of the previous
    response; else the connection is closed. (aiohttp's own keep-alive timer only started
    covering a connection's first request in its latest releases.)"""

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        head_timeout: float,
        idle_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, keepalive_timeout=idle_timeout, **kwargs)
        self._head_loop = loop
        self._head_timeout, self._idle_timeout = head_timeout, idle_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_transport = transport
        self.await_head(self._head_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.head_received()
        self._head_transport = None
        super().connection_lost(exc)

    def await_head(self, seconds: float) -> None:
        """Close the connection unless a request head is complete within ``seconds``."""
        self.head_received()
        self._head_timer = self._head_loop.call_later(seconds, self._head_overdue)

    def head_received(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def after_response(self) -> None:
        self.await_head(self._idle_timeout)

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._head_transport is not None and not self._head_transport.is_closing():
            log.debug("closed a connection that sent no complete request head in time")
            self._head_transport.close()


class Server:
    """A running server: ``url``, ``port``, and :meth:`stop`.

    The socket is bound in the constructor (an ``OSError`` if it cannot be); :meth:`start`
    starts the loop's thread."""

    def __init__(
        self,
        app: WSGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        *,
        workers: int | None = None,
        queue_timeout: float | None = None,
        max_waiting: int | None = None,
        idle_timeout: float | None = None,
        head_timeout: float | None = None,
        write_timeout: float | None = None,
        priority_paths: Sequence[str] = PRIORITY_PATHS,
        priority_workers: int | None = None,
        max_streams: int | None = None,
        heartbeat_seconds: float | None = None,
        stream_write_timeout: float | None = None,
    ) -> None:
        # None: the module's constant at this call (so they can be tuned before a server starts).
        workers = WORKERS if workers is None else workers
        queue_timeout = QUEUE_TIMEOUT_SECONDS if queue_timeout is None else queue_timeout
        max_waiting = MAX_WAITING if max_waiting is None else max_waiting
        idle_timeout = IDLE_TIMEOUT_SECONDS if idle_timeout is None else idle_timeout
        head_timeout = HEAD_TIMEOUT_SECONDS if head_timeout is None else head_timeout
        write_timeout = WRITE_TIMEOUT_SECONDS if write_timeout is None else write_timeout
        priority_workers = PRIORITY_WORKERS if priority_workers is None else priority_workers
        max_streams = MAX_STREAMS if max_streams is None else max_streams
        heartbeat_seconds = STREAM_HEARTBEAT_SECONDS if heartbeat_seconds is None else heartbeat_seconds
        stream_write_timeout = STREAM_WRITE_TIMEOUT_SECONDS if stream_write_timeout is None else stream_write_timeout
        for name, value in (
            ("workers", workers),
            ("priority_workers", priority_workers),
            ("max_waiting", max_waiting),
            ("max_streams", max_streams),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        for name, number in (
            ("queue_timeout", queue_timeout),
            ("idle_timeout", idle_timeout),
            ("head_timeout", head_timeout),
            ("write_timeout", write_timeout),
            ("heartbeat_seconds", heartbeat_seconds),
            ("stream_write_timeout", stream_write_timeout),
        ):
            if not number > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {number!r}")
        self.app = app
        self.scheme = "https" if ssl_context is not None else "http"
        self.host = host
        self.queue_timeout = queue_timeout
        self.write_timeout = write_timeout
        self.max_waiting = max_waiting
        self.priority_paths = frozenset(priority_paths)
        self.max_streams = max_streams
        self.heartbeat_seconds = heartbeat_seconds
        self.stream_write_timeout = stream_write_timeout
        #: The open streams' wake-up events (on the loop); set when the server stops.
        self._streams: set[asyncio.Event] = set()
        self._stopping = False
        #: Streams refused (``max_streams``) and dropped (a client not reading): tests, logs.
        self.streams_refused = 0
        self.streams_dropped = 0
        self._gzip = _Gzip()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ccmon-http")
        self._priority_pool = ThreadPoolExecutor(priority_workers, thread_name_prefix="ccmon-http-probe")
        self._loop = asyncio.new_event_loop()
        self._waiting = 0
        #: Requests answered 503 because every worker stayed busy (for tests and logs).
        self.rejected = 0
        try:
            self._loop.run_until_complete(
                self._listen(host, port, ssl_context, workers, priority_workers, idle_timeout, head_timeout)
            )
        except BaseException:
            self._loop.close()
            self._pool.shutdown(wait=False)
            self._priority_pool.shutdown(wait=False)
            raise
        self._thread = threading.Thread(target=self._loop.run_forever, name="ccmon-http", daemon=True)

    async def _listen(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        workers: int,
        priority_workers: int,
        idle_timeout: float,
        head_timeout: float,
    ) -> None:
        self._slots = asyncio.Semaphore(workers)
        self._priority_slots = asyncio.Semaphore(priority_workers)
        self._http = web.Server(self._handle, loop=self._loop)
        options = {
            "access_log": None,
            "logger": _protocol_log,
            "max_line_size": 8190,
            "max_field_size": 8190,
            "max_headers": 128,
        }

        def connection() -> _Connection:
            return _Connection(
                self._http, loop=self._loop, head_timeout=head_timeout, idle_timeout=idle_timeout, **options
            )

        handshake = TLS_HANDSHAKE_TIMEOUT_SECONDS if ssl_context is not None else None
        if ":" in host:
            # An IPv6 address: our own socket, so that "::" also takes IPv4 clients (the
            # system's default, as before; asyncio would make it IPv6-only).
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
            self._listener = await self._loop.create_server(
                connection, sock=sock, ssl=ssl_context, backlog=BACKLOG, ssl_handshake_timeout=handshake
            )
        else:
            self._listener = await self._loop.create_server(
                connection,
                host or "0.0.0.0",
                port,
                ssl=ssl_context,
                backlog=BACKLOG,
                reuse_address=True,
                ssl_handshake_timeout=handshake,
            )
        self.port: int = self._listener.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        shown = self.host
        if shown in ("0.0.0.0", "::", ""):
            shown = "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        return f"{self.scheme}://{shown}:{self.port}/"

    @property
    def open_streams(self) -> int:
        """Server-Sent Events streams open now."""
        return len(self._streams)

    def start(self) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, close every connection (waiting up to 5 s for requests in flight)."""
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            try:
                future.result(timeout=10)
            except Exception as exc:  # a stuck request: stop anyway
                log.warning("HTTP server stopped with requests unfinished: %s", type(exc).__name__)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        else:
            self._loop.run_until_complete(self._close())
        if not self._thread.is_alive():
            self._loop.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._priority_pool.shutdown(wait=False, cancel_futures=True)

    async def _close(self) -> None:
        self._stopping = True
        for wake in self._streams:
            wake.set()
        self._listener.close()
        await self._http.shutdown(5.0)
        await self._listener.wait_closed()

    # -- one request -------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        connection = request.protocol if isinstance(request.protocol, _Connection) else None
        if connection is not None:
            connection.head_received()
        try:
            return await self._respond(request)
        finally:
            if connection is not None:
                connection.after_response()

    async def _respond(self, request: web.BaseRequest) -> web.StreamResponse:
        priority = request.path in self.priority_paths
        slots, pool = (self._priority_slots, self._priority_pool) if priority else (self._slots, self._pool)
        try:
            await self._acquire(slots)
        except Busy:
            self.rejected += 1
            return web.Response(
                status=503,
                body=b'{"error":"server busy, retry later"}\n',
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Retry-After": "1",
                    "Cache-Control": "no-store",
                    "Server": SERVER_HEADER,
                },
            )
        try:
            environ = self._environ(request)
            status, headers, body = await self._loop.run_in_executor(pool, self._call, environ)
        finally:
            slots.release()
        publisher = environ.get(STREAM_ENVIRON)
        if publisher is not None and status.startswith("200") and request.method == "GET":
            return await self._stream(request, publisher)
        code, _, reason = status.partition(" ")
        response = web.Response(status=int(code), reason=reason or None, headers=headers, body=body or None)
        try:
            # Sent here, under a deadline: a client that does not read would otherwise pin
            # the response in memory for as long as it keeps the connection.
            async with asyncio.timeout(self.write_timeout):
                await response.prepare(request)
                await response.write_eof()
        except TimeoutError:
            log.debug("dropped a client that did not read its response in %g s", self.write_timeout)
            transport = request.transport
            if transport is not None:
                raw = transport.get_extra_info("socket")
                if raw is not None:  # a reset: the kernel drops the unsent bytes too
                    with contextlib.suppress(OSError):
                        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError: the client left first
            log.debug("the client left before its response was written")
        return response

    async def _stream(self, request: web.BaseRequest, publisher: Publisher) -> web.StreamResponse:
        """``/api/stream``: the publisher's documents as Server-Sent Events until the client
        leaves, stops reading, or the server stops."""
        if len(self._streams) >= self.max_streams or self._stopping:
            self.streams_refused += 1
            return web.Response(
                status=503,
                body=b'{"error":"too many open streams, poll /api/kpis"}\n',
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Retry-After": "10",
                    "Cache-Control": "no-store",
                    "Server": SERVER_HEADER,
                },
            )
        wake = asyncio.Event()
        loop = self._loop

        def listener() -> None:
            loop.call_soon_threadsafe(wake.set)

        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "X-Accel-Buffering": "no",
                "Server": SERVER_HEADER,
            },
        )
        self._streams.add(wake)
        publisher.subscribe(listener)
        sent = 0
        try:
            async with asyncio.timeout(self.stream_write_timeout):
                await response.prepare(request)
                await response.write(f"retry: {STREAM_RETRY_MS}\n\n".encode())
            while not self._stopping:
                quiet = False
                try:
                    await asyncio.wait_for(wake.wait(), self.heartbeat_seconds)
                except TimeoutError:
                    quiet = True
                wake.clear()
                if self._stopping or request.transport is None or request.transport.is_closing():
                    break
                latest = publisher.latest()
                if latest is not None and latest[0] != sent:
                    sent = latest[0]
                    chunk = b"id: %d\nevent: kpis\ndata: %s\n\n" % latest
                elif not quiet:
                    continue
                else:  # a heartbeat: "alive" tells the page its data is current, a comment only keeps the line open
                    chunk = (
                        b"event: alive\ndata: %d\n\n" % sent
                        if publisher.healthy and latest is not None
                        else b": ping\n\n"
                    )
                async with asyncio.timeout(self.stream_write_timeout):
                    await response.write(chunk)
        except TimeoutError:
            self.streams_dropped += 1
            log.debug("dropped a stream whose client did not read for %g s", self.stream_write_timeout)
            transport = request.transport
            if transport is not None:
                transport.abort()
        except (ConnectionError, RuntimeError):  # the client left (aiohttp: ClientConnectionResetError)
            pass
        finally:
            publisher.unsubscribe(listener)
            self._streams.discard(wake)
        return response

    async def _acquire(self, slots: asyncio.Semaphore) -> None:
        if not slots.locked():
            await slots.acquire()
            return
        if self._waiting >= self.max_waiting:
            raise Busy
        self._waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), self.queue_timeout)
        except TimeoutError:
            raise Busy from None
        finally:
            self._waiting -= 1

    def _environ(self, request: web.BaseRequest) -> dict[str, Any]:
        raw_path, _, query = request.raw_path.partition("?")
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(raw_path, "latin-1") or "/",
            "QUERY_STRING": query,
            "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
            "SERVER_NAME": self.host or "0.0.0.0",
            "SERVER_PORT": str(sockname[1] if sockname else self.port),
            "REMOTE_ADDR": request.remote or "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": io.BytesIO(b""),  # GET and HEAD only: request bodies are not read
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            # The address listened on: off loopback the callback worklist masks customer ids
            # unless basic auth let the request in (streams.web.api.customer_ids_visible). The
            # environ is built here from the request alone, so nothing else (a header, the
            # process environment) can set the basic-auth marker.
            LISTEN_HOST_ENVIRON: self.host,
        }
        for name, value in request.headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
            else:
                key = "HTTP_" + key
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _call(self, environ: dict[str, Any]) -> tuple[str, CIMultiDict[str], bytes]:
        """Run the app (in a worker thread): its status, headers and body, gzipped if due."""
        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started["status"], started["headers"] = status, headers
            return lambda data: None

        try:
            result: Iterable[bytes] = self.app(environ, start_response)
            try:
                body = b"".join(result) if not isinstance(result, list) or len(result) != 1 else result[0]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            log.exception("error serving %s", environ["PATH_INFO"])
            started = {"status": "500 Internal Server Error", "headers": [("Content-Type", "application/json")]}
            body = b'{"error":"internal error"}'
        headers = CIMultiDict(started["headers"])
        headers.setdefault("Server", SERVER_HEADER)  # not aiohttp's, which names its version
        compressible = "Content-Encoding" not in headers and headers.get("Content-Type", "").startswith(_COMPRESSIBLE)
        if compressible:
            headers["Vary"] = "Accept-Encoding"
        if environ["REQUEST_METHOD"] == "HEAD":
            # The GET headers (the app's Content-Length: of the identity body), no body.
            return started["status"], headers, b""
        if compressible and len(body) >= GZIP_MIN_BYTES and accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", "")):
            body = self._gzip(body)
            headers["Content-Encoding"] = "gzip"
        headers["Content-Length"] = str(len(body))
        return started["status"], headers, body


def serve(
    app: WSGIApp, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None, **options: Any
) -> Server:
    """Start serving ``app`` on a background thread (``port`` 0 picks a free port); HTTPS with
    ``ssl_context``; ``options``: :class:`Server`'s limits."""
    return Server(app, host, port, ssl_context, **options).start()
