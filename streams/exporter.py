"""The exporter: KPIs read from Redis at request time, served over HTTP by :mod:`streams.web`
(the one router, the same app ``ccmon demo`` serves, here over Redis; the exporter supplies
its ``/metrics``, ``/api/samples``, readiness and the eviction gauge: :func:`build_app`).

* ``/metrics`` -- Prometheus text (format 0.0.4) of :class:`KpiCollector`'s families:
  :func:`kpi_core.kpis.snapshot` over a :class:`~streams.redis.read.SnapshotReader` (the
  scrape's reads prefetched, window sums computed inside Redis), plus the worker group's
  ``ccmon_consumer_lag``, the partitions a worker's watchdog found stuck
  (``ccmon_stuck_partition_timestamp_seconds``, streams/watchdog.py),
  ``ccmon_exporter_scrape_seconds`` and Redis's ``ccmon_redis_eviction_safe``
  (:mod:`streams.redis.policy`), rendered by :func:`kpi_core.exposition.render` (not
  prometheus_client, whose per-sample objects cost too much at 1,000 queues:
  docs/BENCHMARKS.md). So ``/metrics`` says exactly what ``ccmon replay`` would print for the
  same events.
* ``/api/samples`` -- every KPI sample as JSON ``{"at", "samples": [{name, labels, value}]}``,
  filtered by ``?tenant=`` and ``?queue=``.
* Everything else -- the wallboard (``/``), ``/api/kpis``, ``/api/stream``,
  ``/api/callbacks/pending`` and ``/healthz`` -- is :mod:`streams.web`'s. ``/api/stream`` pushes
  the board's document soon after a worker's batch lands: the workers' per-tenant event
  counters are polled (:meth:`~streams.redis.state.RedisState.events_version`) while a page is
  open, and the KPIs are read again only when they moved (:mod:`streams.web.push`). The
  sparklines' history is kept in Redis (:class:`~streams.web.api.RedisSlHistory`), recorded by
  :class:`HistoryRecorder` once a minute, so a new page or a restarted exporter shows the last
  hour.

A scrape while Redis is unreachable answers 503 (Prometheus marks the target down) rather
than an empty page that would look like every KPI vanished.

Health: ``/livez`` says the process answers (a liveness probe: it reads nothing, so a Redis
outage restarts no exporter), ``/readyz`` that Redis answers a PING (a readiness probe);
``/healthz`` is the readiness check under its old name.

A scrape reads and renders with Python's cyclic garbage collector paused (:class:`~streams.collector.GcPause`):
it builds many objects that all survive until the page is rendered, and the collector's full
passes over them find nothing to free. Reference counting still frees everything acyclic at
once; the cycles left are collected when the pause ends (bench/bench_scrape.py, figures in
docs/BENCHMARKS.md).

Concurrent scrapes share one rendering (:class:`SingleFlight`): a ``/metrics`` request
arriving while one is being rendered gets that rendering (evaluated at most one rendering's
time before it arrived) instead of starting another, so many scrapers at once cost about what
one does. The page is served by :mod:`streams.web.server` (bounded workers, timeouts, gzip;
docs there).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from kpi_core.config import Config
from kpi_core.exposition import render
from kpi_core.kpis import MetricFamily, live_agents, snapshot, waiting_calls
from kpi_core.state import StateStore
from streams import web
from streams.collector import GC_PAUSE
from streams.redis.policy import EvictionWatch
from streams.security import WSGIApp, redis_error_hint
from streams.settings import Settings
from streams.web.alerts import AlertmanagerAlerts
from streams.web.week_over_week import WeekOverWeek

log = logging.getLogger("ccmon.exporter")

Clock = Callable[[], float]


#: A snapshot: its instant, the KPI families, the consumer lag and the stuck partitions.
_Snapshot = tuple[float, list[MetricFamily], dict[tuple[str, int], float] | None, dict[tuple[str, int], float] | None]


class KpiCollector:
    """Builds every KPI from the store at each scrape. Concurrent callers (scrapes, the JSON
    API, the board's push and its history) share one snapshot in flight instead of each
    reading and holding its own (SingleFlight)."""

    def __init__(self, config: Config, store: StateStore, clock: Clock, eviction: EvictionWatch | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.eviction = eviction
        self._snapshot = SingleFlight(self._read)

    def _read(self) -> _Snapshot:
        at = self.clock()
        with GC_PAUSE:  # RedisState's reader: prefetched reads
            reader = self.store.snapshot_reader(self.config, at)
            families = snapshot(self.config, reader, at)
        # The workers' figures, read with the KPIs (RedisState's reader: in its first round trip).
        return at, families, reader.consumer_lag(), reader.stuck_partitions()

    def snapshot(self) -> tuple[float, list[MetricFamily]]:
        at, families, _lag, _stuck = self._snapshot()
        return at, list(families)  # the caller's own list: families() appends to it

    def families(self) -> list[MetricFamily]:
        """Every family of a scrape: the KPIs, the consumer lag the worker measured, and the
        time this scrape took to read and compute them."""
        started = time.perf_counter()
        _at, shared, lag, stuck = self._snapshot()
        families = list(shared)  # this page's own list
        # RedisState's figures from the workers: their group's lag, partitions their watchdog found stuck.
        for family, values in (
            (
                MetricFamily(
                    "ccmon_consumer_lag",
                    "gauge",
                    "Kafka messages of the events topic not yet processed by the worker group (measured every 5 s).",
                ),
                lag,
            ),
            (
                MetricFamily(
                    "ccmon_stuck_partition_timestamp_seconds",
                    "gauge",
                    "Unix time a worker's watchdog last "
                    "found this partition stuck and restarted the worker (kept 1 h).",
                ),
                stuck,
            ),
        ):
            if values is not None:
                for (topic, partition), value in sorted(values.items()):
                    family.add((("topic", topic), ("partition", str(partition))), value)
                families.append(family)
        if self.eviction is not None:  # Redis's maxmemory-policy, re-read every 30 s at most
            families.append(self.eviction.family())
        scrape = MetricFamily("ccmon_exporter_scrape_seconds", "gauge", "Time to read the KPIs from Redis.")
        scrape.add((), time.perf_counter() - started)
        families.append(scrape)
        return families


def samples_document(
    at: float, families: Iterable[MetricFamily], tenant: str | None, queue: str | None
) -> dict[str, Any]:
    """``{"at", "samples": [{"name", "labels", "value"}]}``, filtered by tenant and queue."""
    samples = []
    for family in families:
        for suffix, labels, value in family.samples:
            label_map = dict(labels)
            if tenant is not None and label_map.get("tenant") != tenant:
                continue
            if queue is not None and label_map.get("queue") != queue:
                continue
            samples.append(
                {"name": family.name + suffix, "labels": label_map, "value": value if math.isfinite(value) else None}
            )
    return {"at": at, "samples": samples}


class SingleFlight:
    """``fn()`` for concurrent callers at the price of one call: a caller arriving while a call
    is in flight waits for that call's result (or its exception) instead of starting another;
    a caller arriving after it returned starts a new one. Thread-safe."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._flight: _Flight | None = None

    def __call__(self) -> Any:
        with self._lock:
            flight, leader = self._flight, self._flight is None
            if flight is None:
                flight = self._flight = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = self._fn()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flight = None
            flight.done.set()
        return flight.value


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


def _redis_guard(fn: web.app.LiveRows) -> web.app.LiveRows:
    """``fn`` with a Redis error turned into :class:`streams.web.app.Unavailable` (a 503)."""

    def call(tenant: str | None, queue: str | None) -> Any:
        try:
            return fn(tenant, queue)
        except redis.RedisError as exc:
            log.error("live rows: Redis error: %s: %s%s", type(exc).__name__, exc, redis_error_hint(exc))
            raise web.app.Unavailable(f"Redis unavailable: {type(exc).__name__}") from exc

    return call


class HistoryRecorder:
    """Records the KPIs into ``history`` every ``every_seconds`` (on the clock's whole
    multiples of it, and once at start) on a thread of its own, for the board's sparklines.
    Several exporters may record the same instants (the last write wins)."""

    def __init__(self, collector: KpiCollector, history: web.SlHistory, every_seconds: float = 60.0) -> None:
        if not every_seconds > 0:
            raise ValueError(f"every_seconds must be > 0, got {every_seconds!r}")
        self.collector = collector
        self.history = history
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ccmon-history", daemon=True)

    def start(self) -> HistoryRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def record(self) -> None:
        at, families = self.collector.snapshot()
        self.history.record(math.floor(at / self.every_seconds) * self.every_seconds, families)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.record()
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("cannot record the board's history: Redis error: %s", type(exc).__name__)
                failing = True
            now = self.collector.clock()
            self._stop.wait(max(0.05, (math.floor(now / self.every_seconds) + 1) * self.every_seconds - now))


def build_app(
    config: Config,
    store: StateStore,
    clock: Clock,
    ping: Callable[[], Any] | None = None,
    eviction: EvictionWatch | None = None,
    alertmanager_url: str | None = None,
    prometheus_url: str | None = None,
    history: web.SlHistory | None = None,
) -> WSGIApp:
    """The exporter's WSGI app over ``store``; ``ping`` (Redis's) decides ``/readyz`` (and
    ``/healthz``); ``eviction`` adds the ``ccmon_redis_eviction_safe`` gauge to /metrics;
    ``alertmanager_url``: ``/api/alerts`` shows that Alertmanager's alerts (else ccmon's breaches);
    ``prometheus_url`` feeds ``/api/week-over-week`` (streams.web.week_over_week); ``history``
    feeds the board's sparklines. ``/api/stream`` pushes when the store's ``events_version()``
    (a :class:`~streams.redis.state.RedisState`'s) changes. The routing is :mod:`streams.web`'s;
    the exporter adds its own ``/metrics`` (and ``/metrics/``) and ``/api/samples``, which
    answer 503 while Redis is down."""
    collector = KpiCollector(config, store, clock, eviction)

    def page() -> bytes:
        with GC_PAUSE:
            return render(collector.families()).encode("utf-8")

    metrics_page = SingleFlight(page)

    def from_redis(path: str, read: Callable[[dict[str, list[str]]], tuple[str, bytes]]) -> web.app.Route:
        """``read(query)`` -> (content type, body) served at ``path``; a Redis error: 503."""

        def serve(query: dict[str, list[str]]) -> tuple[str, str, bytes]:
            try:
                content_type, body = read(query)
            except redis.RedisError as exc:
                log.error("%s: Redis error: %s: %s%s", path, type(exc).__name__, exc, redis_error_hint(exc))
                body = f"Redis unavailable: {type(exc).__name__}\n".encode()
                return "503 Service Unavailable", "text/plain; charset=utf-8", body
            return "200 OK", content_type, body

        return serve

    def metrics(_query: dict[str, list[str]]) -> tuple[str, bytes]:
        return web.app.METRICS_CONTENT_TYPE, metrics_page()

    def samples(query: dict[str, list[str]]) -> tuple[str, bytes]:
        at, families = collector.snapshot()
        document = samples_document(at, families, query.get("tenant", [None])[0], query.get("queue", [None])[0])
        return web.app.JSON_CONTENT_TYPE, json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")

    def info() -> dict[str, Any]:
        ready, reason = True, None
        if ping is not None:
            try:
                ping()
            except redis.RedisError as exc:
                ready, reason = False, f"Redis unreachable: {type(exc).__name__}"
        return {"at": clock(), "ready": ready, "source": "redis", **({"reason": reason} if reason else {})}

    app = web.make_wsgi_app(
        lambda: collector.snapshot()[1],
        lambda: web.pending_callbacks(config, store, clock()),
        get_info=info,
        alerts=AlertmanagerAlerts(alertmanager_url) if alertmanager_url else None,
        week_over_week=WeekOverWeek(prometheus_url),
        get_agents=_redis_guard(lambda tenant, queue: live_agents(config, store, clock(), tenant, queue)),
        get_waiting=_redis_guard(lambda tenant, queue: waiting_calls(config, store, clock(), tenant, queue)),
        history=history,
        config=config,
        version=store.events_version,
        routes={
            "/metrics": from_redis("/metrics", metrics),
            "/metrics/": from_redis("/metrics/", metrics),
            "/api/samples": from_redis("/api/samples", samples),
        },
    )
    app.collector = collector  # type: ignore[attr-defined]  # shared with the board's history recorder
    return app


def serve(settings: Settings) -> int:
    """``ccmon exporter``: serve until SIGTERM/SIGINT."""
    from streams import security
    from streams.files import load_config
    from streams.redis.state import RedisState

    config = load_config(settings.config_path)
    state = RedisState.from_url(
        settings.redis_url,
        config,
        cluster=settings.redis_cluster,
        prefix=settings.redis_prefix,
        clock=settings.make_clock(),
        connection=security.redis_connection_kwargs(settings),
    )
    eviction = EvictionWatch(state.client, settings.redis_cluster, max_age=settings.redis_policy_recheck_seconds)
    history = web.RedisSlHistory(state)
    app = build_app(
        config,
        state,
        settings.make_clock(),
        ping=state.client.ping,
        eviction=eviction,
        alertmanager_url=settings.alertmanager_url,
        prometheus_url=settings.prometheus_url,
        history=history,
    )
    recorder = HistoryRecorder(app.collector, history)  # type: ignore[attr-defined]
    tls = security.exporter_ssl_context(settings)
    if settings.exporter_auth_user is not None and settings.exporter_auth_password is not None:
        # /livez, /readyz and /healthz stay open (load balancers, probes): docs/SECURITY.md.
        app = security.require_basic_auth(app, settings.exporter_auth_user, settings.exporter_auth_password)
        if tls is None and settings.exporter_host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "basic auth over plain HTTP: the password crosses the network in clear; "
                "serve HTTPS (--tls-cert-file, --tls-key-file)"
            )
    elif not web.api.is_loopback_host(settings.exporter_host):
        log.info(
            "listening on %s without basic auth: /api/callbacks/pending masks customer ids (docs/SECURITY.md)",
            settings.exporter_host,
        )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.set())  # a stop during the ping below too
    try:
        server = web.serve(app, settings.exporter_host, settings.exporter_port, ssl_context=tls)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.exporter_host, settings.exporter_port, exc.strerror or exc)
        return 1
    try:
        state.client.ping()
    except redis.RedisError as exc:
        log.error(
            "Redis at %s is not reachable yet (%s%s); /metrics answers 503 until it is",
            settings.redacted()["redis_url"],
            exc,
            security.redis_error_hint(exc),
        )
    recorder.start()
    log.info(
        "serving %smetrics from %s (prefix %s)%s",
        server.url,
        settings.redacted()["redis_url"],
        settings.redis_prefix,
        f", basic auth as {settings.exporter_auth_user!r}" if settings.exporter_auth_user else "",
    )
    try:
        while not stopped.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        recorder.stop()
    log.info("stopped")
    return 0
