"""What the HTTP endpoints return, computed from metric families or a state store.

Pure functions (and one small thread-safe ring buffer); no HTTP here.

* :func:`kpis_document` shapes :class:`~kpi_core.kpis.MetricFamily` lists into the
  ``/api/kpis`` JSON document the wallboard reads.
* :func:`pending_callbacks` reads the callback worklist from any
  :class:`~kpi_core.state.StateStore` (memory or Redis).
* :func:`customer_ids_visible` decides whether a request may see the customer ids in it
  (authenticated, or a server listening on loopback only); :func:`mask_callbacks` hides them
  otherwise.
* :class:`SlHistory` keeps recent service-level values per queue for the sparklines (in
  memory: the demo); :class:`RedisSlHistory` the same in Redis (the exporter: shared by its
  replicas, kept across restarts).
* :func:`agents_document` and :func:`waiting_document` shape the live agents
  (:func:`kpi_core.kpis.live_agents`) and the calls waiting in a queue
  (:func:`kpi_core.kpis.waiting_calls`) for ``/api/agents`` and ``/api/queues/{queue}/waiting``.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kpi_core import catalog
from kpi_core.config import Config
from kpi_core.engine import ALL, CALLBACKS
from kpi_core.kpis import MetricFamily
from kpi_core.state import StateStore, is_queue_scope

PREFIX = "ccmon_"
#: The KPI the board's history keeps first (the sparklines').
_SERVICE_LEVEL = catalog.get("service_level_ratio").name
#: Standalone callbacks (requests without a customer id) are kept under this member prefix.
STANDALONE_CALLBACK_PREFIX = "\x1fcb\x1f"
#: The WSGI environ key :class:`streams.web.server.Server` sets to the address it listens on.
LISTEN_HOST_ENVIRON = "ccmon.listen_host"
#: The WSGI environ key the app sets to its :class:`~streams.web.push.Publisher` when it
#: answers ``/api/stream`` with 200: :class:`streams.web.server.Server` then streams it.
STREAM_ENVIRON = "ccmon.stream"
#: A masked customer id keeps its last MASK_KEEP_CHARS characters if it has at least
#: MASK_MIN_CHARS, else none (:func:`mask_customer_id`).
MASK_KEEP_CHARS = 2
MASK_MIN_CHARS = 8


def iso(ts: float) -> str:
    """RFC 3339 UTC, whole milliseconds."""
    ms = round(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _queue_entry(tenants: dict[str, Any], tenant: str, queue: str) -> dict[str, Any]:
    queues = tenants.setdefault(tenant, {"queues": {}})["queues"]
    entry = queues.get(queue)
    if entry is None:
        entry = queues[queue] = {"live": {}, "agents": {}, "targets": {}, "windows": {}}
    return entry


def kpis_document(
    families: Iterable[MetricFamily],
    *,
    at: float,
    info: Mapping[str, Any] | None = None,
    history: SlHistory | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """The ``/api/kpis`` document::

        {"at": 1795169400.0, "at_iso": "...Z", "info": {...},
         "tenants": {"default": {
            "timezone": "Europe/Berlin",
            "queues": {"support": {
                "settings": {"sl_threshold_seconds": 20.0, "short_abandon_seconds": 5.0},
                "live": {"calls_waiting": 3, "longest_wait_seconds": 41.5, ...},
                "agents": {"available": 4, "on_call": 11, ...},
                "targets": {"service_level_ratio": 0.8, ...},
                "windows": {"15m": {"service_level_ratio": 0.83, "calls_offered": 41,
                                    "wait_seconds_quantile": {"0.5": 4.1, "0.9": 33.0}, ...}}},
              "_all": {...}},
            "history": {"window": "15m", "series": {"support": [[at, 0.83], ...]}}}},
         "pipeline": {"events_total": {"call.offered": 1234, ...}, "event_lag_seconds": 0.2}}

    Names are the Prometheus names without ``ccmon_``; labels other than tenant, queue and
    window become a nested level (``quantile``, ``channel``). Counters and histograms are
    left to ``/metrics``; a KPI with no value in a window is absent, as in ``/metrics``.
    ``timezone`` (the tenant's IANA zone, for the board's clock) and each queue's ``settings``
    come from ``config``, when given.
    """
    tenants: dict[str, Any] = {}
    pipeline: dict[str, Any] = {}
    for fam in families:
        name = fam.name[len(PREFIX) :] if fam.name.startswith(PREFIX) else fam.name
        for suffix, labels, value in fam.samples:
            label_map = dict(labels)
            tenant = label_map.pop("tenant", None)
            queue = label_map.pop("queue", None)
            if tenant is None or queue is None:
                if fam.kind != "histogram" and tenant is None and not suffix:
                    if label_map:
                        pipeline.setdefault(name, {})[next(iter(label_map.values()))] = value
                    else:
                        pipeline[name] = value
                continue
            if fam.kind != "gauge":
                continue
            entry = _queue_entry(tenants, tenant, queue)
            window = label_map.pop("window", None)
            if name.startswith("target_"):
                entry["targets"][name[len("target_") :]] = value
                continue
            if name == "agents" and "state" in label_map:
                # Summed over the reason label (away: one sample per pause reason).
                state = label_map["state"]
                entry["agents"][state] = entry["agents"].get(state, 0.0) + value
                continue
            container = entry["windows"].setdefault(window, {}) if window is not None else entry["live"]
            if label_map:
                container.setdefault(name, {})[next(iter(label_map.values()))] = value
            else:
                container[name] = value
    if config is not None:
        for tenant, body in tenants.items():
            body["timezone"] = config.timezone(tenant).key
            for queue, entry in body["queues"].items():
                if queue != ALL:
                    queue_config = config.queue(tenant, queue)
                    entry["settings"] = {
                        "sl_threshold_seconds": queue_config.sl_threshold_seconds,
                        "short_abandon_seconds": queue_config.short_abandon_seconds,
                    }
    if history is not None:
        for tenant, body in tenants.items():
            body["history"] = {
                "window": history.window,
                "series": history.series(tenant, since=at - history.keep_seconds),
            }
    return {"at": at, "at_iso": iso(at), "info": dict(info or {}), "tenants": tenants, "pipeline": pipeline}


def pending_callbacks(config: Config, store: StateStore, at: float) -> list[dict[str, Any]]:
    """The callback worklist at ``at``: every callback due before ``at`` and not yet made,
    oldest first. Works with any :class:`StateStore`.

    Each item: ``tenant``, ``queue``, ``customer_id`` (or ``callback_id`` for a request
    without a customer), ``due`` (epoch seconds), ``due_iso``, ``age_seconds`` and
    ``overdue`` (older than the queue's ``callback_seconds`` target). Customer ids belong in
    this worklist (an agent needs them to call back) and never in a metric label; served over
    HTTP, only to a request :func:`customer_ids_visible` allows (else :func:`mask_callbacks`).
    """
    items: list[dict[str, Any]] = []
    for tenant, scopes in store.scopes().items():
        for scope in scopes:
            if not is_queue_scope(scope) or scope == ALL:
                continue
            target = config.queue(tenant, scope).callback_target_seconds
            for member, due in store.live(CALLBACKS, tenant, scope).items():
                if due >= at:
                    continue
                item: dict[str, Any] = {"tenant": tenant, "queue": scope}
                if member.startswith(STANDALONE_CALLBACK_PREFIX):
                    item["callback_id"] = member[len(STANDALONE_CALLBACK_PREFIX) :]
                else:
                    item["customer_id"] = member
                age = at - due
                item.update({"due": due, "due_iso": iso(due), "age_seconds": age, "overdue": age > target})
                items.append(item)
    items.sort(key=lambda i: (i["due"], i["tenant"], i["queue"], i.get("customer_id") or i.get("callback_id", "")))
    return items


def is_loopback_host(host: str) -> bool:
    """Whether listening on ``host`` accepts connections from this machine only: ``localhost``
    or a loopback address (``127.0.0.0/8``, ``::1``). Any other name counts as reachable
    from elsewhere, whatever it resolves to."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def customer_ids_visible(listen_host: str | None, authenticated: bool) -> bool:
    """Whether the callback worklist may show customer ids to this request: when the request
    is authenticated (the exporter's basic auth let it through), or the server listens on a
    loopback address only. ``listen_host`` ``None``: the app is not served by
    :func:`streams.web.serve` (a test calling it, or another WSGI server, which then answers
    for who reaches it)."""
    return authenticated or listen_host is None or is_loopback_host(listen_host)


def mask_customer_id(customer_id: str) -> str:
    """``***`` and the last :data:`MASK_KEEP_CHARS` characters of an id of at least
    :data:`MASK_MIN_CHARS` (``+4915112345678`` -> ``***78``), else ``***``: enough to tell
    rows apart at a glance, not to identify anyone, nor to learn the id's length."""
    if len(customer_id) >= MASK_MIN_CHARS:
        return "***" + customer_id[-MASK_KEEP_CHARS:]
    return "***"


def mask_callbacks(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The worklist with every ``customer_id`` masked (:func:`mask_customer_id`) and
    ``"customer_id_masked": true`` on those items; the rest of each item unchanged."""
    out: list[dict[str, Any]] = []
    for item in items:
        copy = dict(item)
        if "customer_id" in copy:
            copy["customer_id"] = mask_customer_id(str(copy["customer_id"]))
            copy["customer_id_masked"] = True
        out.append(copy)
    return out


class SlHistory:
    """A ring buffer of service-level values per ``(tenant, queue)`` for the sparklines.

    Call :meth:`record` with each new snapshot (the demo does it once a simulated minute;
    an exporter could do it on a timer). Points older than ``keep_seconds`` before the newest
    are dropped; ``max_points`` caps memory whatever the recording rate. Thread-safe.
    """

    def __init__(self, window: str = "15m", keep_seconds: float = 3600.0, max_points: int = 720) -> None:
        if keep_seconds <= 0:
            raise ValueError(f"keep_seconds must be > 0, got {keep_seconds!r}")
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points!r}")
        self.window = window
        self.keep_seconds = keep_seconds
        self.max_points = max_points
        self._points: deque[tuple[float, dict[tuple[str, str], float]]] = deque(maxlen=max_points)
        self._lock = threading.Lock()

    def record(self, at: float, families: Iterable[MetricFamily]) -> None:
        values: dict[tuple[str, str], float] = {}
        for fam in families:
            if fam.name != _SERVICE_LEVEL:
                continue
            for _suffix, labels, value in fam.samples:
                label_map = dict(labels)
                if label_map.get("window") == self.window:
                    values[(label_map["tenant"], label_map["queue"])] = value
        with self._lock:
            while self._points and self._points[-1][0] >= at:
                self._points.pop()  # a clock that went back (or the same instant twice)
            self._points.append((at, values))
            while self._points and self._points[0][0] < at - self.keep_seconds:
                self._points.popleft()

    def series(self, tenant: str, since: float = float("-inf")) -> dict[str, list[list[float | None]]]:
        """``queue -> [[at, value or None], ...]`` since ``since``, oldest first. ``None`` marks
        an instant with no value (nothing answered or abandoned in the window)."""
        with self._lock:
            points = [(at, values) for at, values in self._points if at >= since]
        queues = sorted({queue for _at, values in points for (t, queue) in values if t == tenant})
        return {queue: [[at, values.get((tenant, queue))] for at, values in points] for queue in queues}


class RedisSlHistory(SlHistory):
    """:class:`SlHistory` kept in Redis, so that a new page, another exporter replica or a
    restarted exporter shows the sparklines' last hour (the in-memory one starts empty).

    One sorted set per tenant (``P:{t:<tenant>}:history:<window>``, a
    :meth:`~streams.redis.state.RedisState.history_key`): a member per recorded instant
    (score: the instant), ``{"at": at, "q": {queue: [value or null, ...]}}`` with the values of
    :data:`KPIS` in order. Recording an instant replaces the points at and after it (two
    replicas recording the same minute: the last wins), trims the points older than
    ``keep_seconds`` and beyond ``max_points``, and sets the key to expire ``keep_seconds``
    after the latest (an idle tenant's history disappears). The queues of a point are the
    tenant's, bounded by ``[limits]``: at most ``max_points`` (60 a minute an hour) x queues x
    four numbers a tenant. Reads and writes are a few commands on one key."""

    #: The KPIs kept per queue (the first is the sparklines'), with their window (None: live).
    KPIS: tuple[tuple[str, str | None], ...] = (
        (_SERVICE_LEVEL, "15m"),
        (catalog.get("calls_waiting").name, None),
        (catalog.get("abandon_rate_ratio").name, "15m"),
        (catalog.get("average_speed_of_answer_seconds").name, "15m"),
    )

    def __init__(self, state: Any, window: str = "15m", keep_seconds: float = 3600.0, max_points: int = 720) -> None:
        super().__init__(window, keep_seconds, max_points)
        self.state = state
        self.kpis = tuple((name, window if kpi_window is not None else None) for name, kpi_window in self.KPIS)

    def record(self, at: float, families: Iterable[MetricFamily]) -> None:
        index = {name: i for i, (name, _window) in enumerate(self.kpis)}
        points: dict[str, dict[str, list[float | None]]] = {}
        for fam in families:
            i = index.get(fam.name)
            if i is None:
                continue
            wanted = self.kpis[i][1]
            for suffix, labels, value in fam.samples:
                label_map = dict(labels)
                if suffix or label_map.get("window") != wanted or "tenant" not in label_map or "queue" not in label_map:
                    continue
                row = points.setdefault(label_map["tenant"], {}).setdefault(label_map["queue"], [None] * len(self.kpis))
                row[i] = value if value == value and abs(value) != float("inf") else None
        keep_ms = max(1, round(self.keep_seconds * 1000))
        with self.state.client.pipeline(transaction=False) as pipe:
            for tenant, queues in points.items():
                key = self.state.history_key(tenant, self.window)
                member = json.dumps({"at": at, "q": queues}, separators=(",", ":"), sort_keys=True)
                pipe.zremrangebyscore(key, at, "+inf")
                pipe.zadd(key, {member: at})
                pipe.zremrangebyscore(key, "-inf", f"({at - self.keep_seconds!r}")
                pipe.zremrangebyrank(key, 0, -self.max_points - 1)
                pipe.pexpire(key, keep_ms)
            pipe.execute()

    def series(
        self, tenant: str, since: float = float("-inf"), kpi: str = _SERVICE_LEVEL
    ) -> dict[str, list[list[float | None]]]:
        """As :meth:`SlHistory.series`; ``kpi``: another of :data:`KPIS`."""
        i = next((n for n, (name, _window) in enumerate(self.kpis) if name == kpi), None)
        if i is None:
            raise ValueError(f"kpi must be one of {[name for name, _w in self.kpis]}, got {kpi!r}")
        low = "-inf" if since == float("-inf") else repr(since)
        points = []
        for raw in self.state.client.zrangebyscore(self.state.history_key(tenant, self.window), low, "+inf"):
            point = json.loads(raw)
            points.append((float(point["at"]), point["q"]))
        queues = sorted({queue for _at, values in points for queue, row in values.items() if row[i] is not None})
        return {
            queue: [[at, (values.get(queue) or [None] * len(self.kpis))[i]] for at, values in points]
            for queue in queues
        }


def select_callbacks(
    items: Sequence[Mapping[str, Any]], *, tenant: str | None = None, queue: str | None = None, limit: int | None = None
) -> list[Mapping[str, Any]]:
    """Filter the worklist by tenant and queue, and keep the ``limit`` oldest."""
    chosen = [i for i in items if (tenant is None or i["tenant"] == tenant) and (queue is None or i["queue"] == queue)]
    return chosen if limit is None else chosen[:limit]


def agents_document(rows: Sequence[Mapping[str, Any]], *, at: float) -> dict[str, Any]:
    """The ``/api/agents`` document: ``{"at", "at_iso", "count", "agents": [...]}``, each row of
    :func:`kpi_core.kpis.live_agents` with ``since_iso`` added."""
    agents = [{**row, "since_iso": iso(row["since"])} for row in rows]
    return {"at": at, "at_iso": iso(at), "count": len(agents), "agents": agents}


def waiting_document(
    rows: Sequence[Mapping[str, Any]], *, at: float, visible: bool, limit: int | None = None
) -> dict[str, Any]:
    """The ``/api/queues/{queue}/waiting`` document: ``{"at", "count", "calls": [...],
    "customer_ids"}``, the rows of :func:`kpi_core.kpis.waiting_calls` (at most ``limit`` of
    each queue, the next to be served first) with ``offered_iso``; customer ids masked as the
    callback worklist's (:func:`mask_callbacks`) unless ``visible``. A call without a
    customer id has none."""
    calls: list[dict[str, Any]] = []
    for row in rows:
        if limit is not None and row["position"] > limit:
            continue
        item = {k: v for k, v in row.items() if k != "customer_id" or v is not None}
        item["offered_iso"] = iso(row["offered_at"])
        calls.append(item)
    if not visible:
        calls = mask_callbacks(calls)
    return {"at": at, "count": len(rows), "calls": calls, "customer_ids": "shown" if visible else "masked"}
