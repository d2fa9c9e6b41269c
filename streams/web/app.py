"""One WSGI application for ccmon's HTTP face, independent of where the KPIs come from.

===========================  ====================================================
path                         what
===========================  ====================================================
``/`` (``/wallboard``)       the live wallboard (static HTML, vanilla JS, no CDN)
``/board.js``                the script both boards load (``streams/static/board.js``)
``/metrics``                 Prometheus text (:func:`kpi_core.exposition.render`)
``/api/kpis``                KPIs as JSON (:func:`streams.web.api.kpis_document`)
``/api/week-over-week``      per queue, the last hour against the same hour last week and
                             the 4-week mean, from Prometheus' recording rules when the
                             exporter knows its URL (:mod:`streams.web.week_over_week`)
``/api/stream``              the same document pushed as Server-Sent Events whenever it
                             changes (:mod:`streams.web.push`; streamed by
                             :mod:`streams.web.server`, which alone can hold it open)
``/api/callbacks/pending``   the callback worklist (``?tenant=&queue=&limit=``); customer ids
                             masked unless authenticated or on loopback (below)
``/api/alerts``              the firing alerts (``?tenant=``): Alertmanager's when ``alerts`` is
                             given, else ccmon's own breach state (:mod:`streams.web.alerts`)
``/agents``                  the live agents board (static HTML: state, reason, time in state,
                             calls today, occupancy; sortable; long breaks highlighted)
``/api/agents``              the agents, live (``?tenant=&queue=``)
``/api/queues/{queue}/waiting``  the calls waiting in a queue (``_all``: every queue), next
                             served first (``?tenant=&limit=``); customer ids masked as the
                             worklist's
``/livez``                   ``200 {"status": "alive"}``: the process answers (liveness
                             probe; reads nothing)
``/readyz``                  ``200 {"status": "ready"}``, or 503 while not ready (readiness
                             probe: the exporter's Redis answers)
``/healthz``                 the readiness check under its old name and body (``200
                             {"status": "ok"}`` or 503): kept for compatibility
===========================  ====================================================

Every path answers ``GET`` and ``HEAD`` (the same headers, no body); any other method gets
``405`` with ``Allow: GET, HEAD``.

The app is built from callables, so the demo (state in memory) and the production exporter
(state in Redis) mount the same handler::

    app = make_wsgi_app(
        get_families=lambda: snapshot(config, store, clock()),
        get_pending_callbacks=lambda: pending_callbacks(config, store, clock()),
        get_info=lambda: {"at": clock()},
    )

or, for any :class:`~kpi_core.state.StateStore`, :func:`make_store_app` does exactly that
under a lock. ``get_info()`` may return ``at`` (the evaluation instant shown on the page;
default: the wall clock), ``ready`` (``False`` makes ``/readyz`` and ``/healthz`` answer 503,
with ``reason`` shown if given) and anything
else worth showing (``clock``, ``speed``, ``paused``...), which ``/api/kpis`` passes on under
``info``. Every request calls the callables afresh; cache inside them if they are costly.
This is ccmon's one HTTP router: a source with paths of its own hands them in as ``routes``
(the exporter: its ``/metrics``, rendered once for concurrent scrapes and 503 while Redis is
down, and ``/api/samples``; :func:`streams.exporter.build_app`), served with the same
methods, ``HEAD`` and headers as every other path.

The worklist shows customer ids only to a request that basic auth let through
(:func:`streams.security.require_basic_auth`) or when :func:`streams.web.serve` listens on a
loopback address (:func:`streams.web.api.customer_ids_visible`); otherwise they are masked
(``***78``, ``"customer_id_masked": true``) and the document says ``"customer_ids": "masked"``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from kpi_core.config import Config
from kpi_core.engine import ALL
from kpi_core.exposition import render
from kpi_core.kpis import MetricFamily, live_agents, snapshot, waiting_calls
from kpi_core.state import StateStore
from streams.security import AUTH_USER_ENVIRON, WSGIApp
from streams.web.alerts import AlertmanagerAlerts, alerts_document, breach_alerts
from streams.web.api import (
    LISTEN_HOST_ENVIRON,
    STREAM_ENVIRON,
    SlHistory,
    agents_document,
    customer_ids_visible,
    kpis_document,
    mask_callbacks,
    pending_callbacks,
    select_callbacks,
    waiting_document,
)
from streams.web.openapi import OPENAPI_PATH, openapi_json
from streams.web.push import Publisher
from streams.web.week_over_week import WeekOverWeek

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
#: A path's handler: the query string's values -> (status, content type, body).
Route = Callable[[dict[str, list[str]]], tuple[str, str, bytes]]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def wallboard_html() -> bytes:
    """The wallboard page, shipped as package data (``streams/static/wallboard.html``)."""
    return resources.files("streams").joinpath("static/wallboard.html").read_bytes()


def board_js() -> bytes:
    """The script both boards share (``el``, ``fetchJson``), package data (``streams/static/board.js``)."""
    return resources.files("streams").joinpath("static/board.js").read_bytes()


def agents_html() -> bytes:
    """The agents board, shipped as package data (``streams/static/agents.html``)."""
    return resources.files("streams").joinpath("static/agents.html").read_bytes()


class Unavailable(Exception):
    """What a callable raises when its store cannot answer now (the exporter's Redis is down):
    the request gets ``503`` with the message, not ``500``."""


#: The waiting callers of a queue; ``{queue}`` is the queue's name, URL-encoded.
WAITING_PATH = "/api/queues/{queue}/waiting"
_WAITING_HEAD, _WAITING_TAIL = WAITING_PATH.split("{queue}")
#: ``get_agents(tenant, queue)`` / ``get_waiting(tenant, queue)``: rows of
#: :func:`kpi_core.kpis.live_agents` / :func:`kpi_core.kpis.waiting_calls` (None: all).
LiveRows = Callable[[str | None, str | None], Sequence[Mapping[str, Any]]]


def _utf8_name(part: str) -> str | None:
    """A path segment as the name it spells: WSGI's ``PATH_INFO`` is already percent-decoded,
    its bytes as latin-1 (PEP 3333); None when they are not UTF-8."""
    try:
        return part.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None


def _limit(query: Mapping[str, list[str]]) -> int | str | None:
    """``?limit=``: a whole number >= 0, None when not given, or the error message."""
    if "limit" not in query:
        return None
    try:
        limit = int(query["limit"][0])
    except ValueError:
        limit = -1
    return limit if limit >= 0 else f"limit must be a whole number >= 0, got {query['limit'][0]!r}"


def make_wsgi_app(
    get_families: Callable[[], Sequence[MetricFamily]],
    get_pending_callbacks: Callable[[], Sequence[Mapping[str, Any]]],
    *,
    get_info: Callable[[], Mapping[str, Any]] | None = None,
    history: SlHistory | None = None,
    alerts: AlertmanagerAlerts | None = None,
    week_over_week: WeekOverWeek | None = None,
    get_agents: LiveRows | None = None,
    get_waiting: LiveRows | None = None,
    config: Config | None = None,
    version: Callable[[], Any] | None = None,
    routes: Mapping[str, Route] | None = None,
) -> WSGIApp:
    """A WSGI app serving the wallboard, ``/metrics``, the JSON API and the health checks.

    ``/api/alerts`` from ``alerts`` (an Alertmanager) if given, else from the KPIs' breaches;
    ``week_over_week``: where ``/api/week-over-week`` comes from (default: nowhere, the
    document says so and the board hides the indicator); ``get_agents``, ``get_waiting``: the
    live agents and waiting callers (none given, empty). ``config`` adds each tenant's time
    zone and queue settings to ``/api/kpis``; ``version`` (something cheap that changes when
    the KPIs do) lets ``/api/stream`` push a change within a poll (:mod:`streams.web.push`),
    else it pushes every couple of seconds. ``routes``: paths served by their own handler,
    before (and instead of) this app's: the exporter's ``/metrics`` (one rendering shared by
    concurrent scrapes, 503 while Redis is down) and ``/api/samples``. The stream's
    :class:`~streams.web.push.Publisher` is the app's ``publisher`` attribute."""
    page: list[bytes] = []
    agents_page: list[bytes] = []
    script: list[bytes] = []
    weekly = week_over_week or WeekOverWeek(None)

    def info() -> Mapping[str, Any]:
        return get_info() if get_info is not None else {}

    def json_body(document: Any) -> bytes:
        return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")

    def kpis_body() -> bytes:
        meta = info()
        at = float(meta.get("at", time.time()))
        return json_body(kpis_document(get_families(), at=at, info=meta, history=history, config=config))

    publisher = Publisher(kpis_body, version)
    own_routes = dict(routes or {})

    def route(path: str, query: dict[str, list[str]], environ: dict[str, Any]) -> tuple[str, str, bytes]:
        if path in own_routes:
            return own_routes[path](query)
        if path in ("/", "/wallboard", "/index.html"):
            if not page:
                page.append(wallboard_html())
            return "200 OK", "text/html; charset=utf-8", page[0]
        if path == "/board.js":
            if not script:
                script.append(board_js())
            return "200 OK", "text/javascript; charset=utf-8", script[0]
        if path == "/metrics":
            return "200 OK", METRICS_CONTENT_TYPE, render(get_families()).encode("utf-8")
        if path == "/api/kpis":
            return "200 OK", JSON_CONTENT_TYPE, kpis_body()
        if path == "/api/stream":
            # The server streams it (only the aiohttp server knows how; to any other WSGI
            # server this is an empty stream, which the page's EventSource gives up on).
            environ[STREAM_ENVIRON] = publisher
            return "200 OK", "text/event-stream; charset=utf-8", b""
        if path == "/api/week-over-week":
            meta = info()
            return (
                "200 OK",
                JSON_CONTENT_TYPE,
                json_body({"at": float(meta.get("at", time.time())), **weekly.document()}),
            )
        if path == "/api/callbacks/pending":
            meta = info()
            limit = _limit(query)
            if isinstance(limit, str):
                return "400 Bad Request", JSON_CONTENT_TYPE, json_body({"error": limit})
            items = select_callbacks(
                get_pending_callbacks(),
                tenant=query.get("tenant", [None])[0],
                queue=query.get("queue", [None])[0],
            )
            at = float(meta.get("at", time.time()))
            shown: Sequence[Mapping[str, Any]] = items if limit is None else items[:limit]
            visible = customer_ids_visible(environ.get(LISTEN_HOST_ENVIRON), environ.get(AUTH_USER_ENVIRON) is not None)
            if not visible:
                shown = mask_callbacks(shown)
            return (
                "200 OK",
                JSON_CONTENT_TYPE,
                json_body(
                    {
                        "at": at,
                        "count": len(items),
                        "callbacks": list(shown),
                        "customer_ids": "shown" if visible else "masked",
                    }
                ),
            )
        if path == "/api/alerts":
            at = float(info().get("at", time.time()))
            tenant = query.get("tenant", [None])[0]
            if alerts is not None:
                firing, error = alerts.fetch()
                return (
                    "200 OK",
                    JSON_CONTENT_TYPE,
                    json_body(alerts_document(at, firing, source="alertmanager", error=error, tenant=tenant)),
                )
            try:
                breaches, error = breach_alerts(get_families(), at), None
            except Exception as exc:  # the KPIs' store is down: the board says "alerts unavailable"
                log.warning("alerts unavailable: %s: %s", type(exc).__name__, exc)
                breaches, error = [], f"KPIs unavailable: {type(exc).__name__}"
            return (
                "200 OK",
                JSON_CONTENT_TYPE,
                json_body(alerts_document(at, breaches, source="ccmon", error=error, tenant=tenant)),
            )
        if path == "/agents":
            if not agents_page:
                agents_page.append(agents_html())
            return "200 OK", "text/html; charset=utf-8", agents_page[0]
        if path == "/api/agents":
            at = float(info().get("at", time.time()))
            rows = get_agents(query.get("tenant", [None])[0], query.get("queue", [None])[0]) if get_agents else []
            return "200 OK", JSON_CONTENT_TYPE, json_body(agents_document(rows, at=at))
        if (
            path.startswith(_WAITING_HEAD)
            and path.endswith(_WAITING_TAIL)
            and len(path) > len(_WAITING_HEAD) + len(_WAITING_TAIL)
        ):
            queue = _utf8_name(path[len(_WAITING_HEAD) : -len(_WAITING_TAIL)])
            if not queue or "/" in queue:
                return "404 Not Found", JSON_CONTENT_TYPE, json_body({"error": f"no such path: {path}"})
            limit = _limit(query)
            if isinstance(limit, str):
                return "400 Bad Request", JSON_CONTENT_TYPE, json_body({"error": limit})
            at = float(info().get("at", time.time()))
            rows = get_waiting(query.get("tenant", [None])[0], None if queue == ALL else queue) if get_waiting else []
            visible = customer_ids_visible(environ.get(LISTEN_HOST_ENVIRON), environ.get(AUTH_USER_ENVIRON) is not None)
            return "200 OK", JSON_CONTENT_TYPE, json_body(waiting_document(rows, at=at, visible=visible, limit=limit))
        if path == OPENAPI_PATH:
            return "200 OK", JSON_CONTENT_TYPE, openapi_json()
        if path == "/livez":
            return "200 OK", JSON_CONTENT_TYPE, json_body({"status": "alive"})
        if path in ("/readyz", "/healthz"):
            meta = info()
            ready = bool(meta.get("ready", True))
            legacy = path == "/healthz"
            health: dict[str, Any] = {
                "status": ("ok" if legacy else "ready") if ready else ("starting" if legacy else "not ready")
            }
            if not ready and meta.get("reason"):
                health["reason"] = str(meta["reason"])
            return ("200 OK" if ready else "503 Service Unavailable"), JSON_CONTENT_TYPE, json_body(health)
        return "404 Not Found", JSON_CONTENT_TYPE, json_body({"error": f"no such path: {path}"})

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        if method not in ("GET", "HEAD"):
            refusal = json_body({"error": f"method {method[:20]!r} not allowed on {path[:200]!r}: only GET and HEAD"})
            start_response(
                "405 Method Not Allowed",
                [
                    ("Content-Type", JSON_CONTENT_TYPE),
                    ("Allow", "GET, HEAD"),
                    ("Content-Length", str(len(refusal))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [refusal]
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            status, content_type, body = route(path, query, environ)
        except Unavailable as exc:
            status, content_type, body = "503 Service Unavailable", JSON_CONTENT_TYPE, json_body({"error": str(exc)})
        except Exception:
            log.exception("error serving %s", path)
            status, content_type, body = "500 Internal Server Error", JSON_CONTENT_TYPE, b'{"error":"internal error"}'
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        start_response(status, headers)
        return [] if method == "HEAD" else [body]

    app.publisher = publisher  # type: ignore[attr-defined]
    return app


def make_store_app(
    config: Config,
    store: StateStore,
    clock: Callable[[], float] = time.time,
    *,
    lock: threading.Lock | None = None,
    history: SlHistory | None = None,
    info: Mapping[str, Any] | None = None,
) -> WSGIApp:
    """:func:`make_wsgi_app` over any state store: each request evaluates the KPIs at
    ``clock()`` (under ``lock``, if the store is written by another thread)."""
    guard = lock or threading.Lock()
    extra = dict(info or {})

    def families() -> list[MetricFamily]:
        with guard:
            return snapshot(config, store, clock())

    def pending() -> list[dict[str, Any]]:
        with guard:
            return pending_callbacks(config, store, clock())

    def agents(tenant: str | None, queue: str | None) -> list[dict[str, Any]]:
        with guard:
            return live_agents(config, store, clock(), tenant, queue)

    def waiting(tenant: str | None, queue: str | None) -> list[dict[str, Any]]:
        with guard:
            return waiting_calls(config, store, clock(), tenant, queue)

    return make_wsgi_app(
        families,
        pending,
        get_info=lambda: {**extra, "at": clock()},
        history=history,
        get_agents=agents,
        get_waiting=waiting,
        config=config,
    )
