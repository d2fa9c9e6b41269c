"""The firing alerts the wallboard shows (``GET /api/alerts``): from Alertmanager when one is
configured, else from ccmon's own breach state.

Two sources, one document (:func:`alerts_document`):

* :class:`AlertmanagerAlerts` -- the active alerts of Alertmanager's API v2
  (``GET <url>/api/v2/alerts?active=true&silenced=false&inhibited=false``), fetched by the
  server (the page never talks to Alertmanager) with a short timeout (:data:`FETCH_TIMEOUT_SECONDS`)
  and kept :data:`CACHE_SECONDS` (one fetch serves every board refreshing in that time;
  concurrent requests share one fetch). An error (refused, timed out, not JSON, HTTP 5xx) is
  cached too, and the document then says ``"available": false`` with the reason: the board
  shows "alerts unavailable" and the rest of the page works as before. Silenced and inhibited
  alerts are left out (what Alertmanager would not notify), and so are the always-firing
  ``CcmonWatchdog`` and any alert of severity ``none``.
* :func:`breach_alerts` -- without Alertmanager (``ccmon demo``, an exporter without
  ``--alertmanager-url``): each queue's KPIs in the snapshot against its ``ccmon_target_*``
  gauges, with the comparisons of deploy/prometheus/rules/ccmon-alerts.yml (:data:`BREACH_RULES`:
  the same alert names, severities, families and constants, e.g. "far below" = target - 0.15).
  It is the breach *now*: there is no ``for:`` (a snapshot has no history), no paging-hours gate
  other than ``ccmon_queue_open == 0`` (a closed queue does not alert), and no inhibition except
  that a critical alert hides the warning of the same family on the same queue.

The document::

    {"at": 1795169400.0, "at_iso": "...Z", "source": "alertmanager" | "ccmon",
     "available": true, "error": "...",            # error only when available is false
     "count": 2,
     "alerts": [{"name": "CcmonServiceLevelFarBelowTarget", "severity": "critical",
                 "family": "service_level", "tenant": "default", "queue": "support",
                 "summary": "...", "description": "...",
                 "value": 0.52, "target": 0.8,      # ccmon's own only (null from Alertmanager)
                 "since": "...Z" | null, "labels": {...}}, ...],
     "queues": {"default": {"support": "critical"}}}   # worst severity per flagged queue

Alerts are sorted critical first, then by KPI family (:data:`FAMILY_ORDER`: the waiting callers
before the day's surveys), tenant, queue and name; ``?tenant=`` keeps one tenant's (and the
alerts without a tenant: the pipeline's). The banner shows the first few.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kpi_core.engine import ALL
from kpi_core.kpis import MetricFamily
from streams.web.api import iso

log = logging.getLogger(__name__)

#: Seconds the server waits for Alertmanager's answer; the page must never hang on it.
FETCH_TIMEOUT_SECONDS = 2.0
#: Seconds an answer (or an error) of Alertmanager is reused.
CACHE_SECONDS = 5.0
#: The largest answer read from Alertmanager (a runaway alert storm must not eat the memory).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: Alerts never shown on the board: they fire all the time on purpose.
HIDDEN_ALERTS = frozenset({"CcmonWatchdog"})
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
#: How far below its target a KPI is "far below" (docs/ALERTS.md, "Constants").
FAR_BELOW = 0.15


@dataclass(frozen=True)
class BreachRule:
    """One comparison of :func:`breach_alerts`, mirroring an alert of ccmon-alerts.yml."""

    name: str
    metric: str  #: KPI name without ``ccmon_``
    windows: tuple[str | None, ...]  #: the KPI must breach in each (None: no window label)
    target: str  #: target gauge name without ``ccmon_target_``
    below: bool  #: True: breach when the KPI < target (- offset); False: when > target
    severity: str
    family: str
    summary: str  #: the rule's summary, before " on tenant/queue" (``{label}``: a label's value)
    what: str  #: how the description names the KPI
    unit: str  #: ratio | seconds | score
    offset: float = 0.0


BREACH_RULES: tuple[BreachRule, ...] = (
    BreachRule(
        "CcmonServiceLevelFarBelowTarget",
        "service_level_ratio",
        ("15m",),
        "service_level_ratio",
        True,
        "critical",
        "service_level",
        "Service level far below target",
        "15-minute service level",
        "ratio",
        FAR_BELOW,
    ),
    BreachRule(
        "CcmonServiceLevelBelowTarget",
        "service_level_ratio",
        ("15m",),
        "service_level_ratio",
        True,
        "warning",
        "service_level",
        "Service level below target",
        "15-minute service level",
        "ratio",
    ),
    BreachRule(
        "CcmonLongestWaitAboveTarget",
        "longest_wait_seconds",
        (None,),
        "longest_wait_seconds",
        False,
        "warning",
        "longest_wait",
        "A caller has waited too long",
        "longest wait",
        "seconds",
    ),
    BreachRule(
        "CcmonAbandonRateAboveTarget",
        "abandon_rate_ratio",
        ("15m",),
        "abandon_rate_ratio",
        False,
        "warning",
        "abandon_rate",
        "Abandon rate above target",
        "15-minute abandon rate",
        "ratio",
    ),
    BreachRule(
        "CcmonCallbacksOverdue",
        "oldest_pending_callback_age_seconds",
        (None,),
        "callback_delay_seconds",
        False,
        "warning",
        "callbacks",
        "Callbacks overdue",
        "oldest pending callback",
        "seconds",
    ),
    BreachRule(
        "CcmonCsatBelowTarget",
        "csat_ratio",
        ("today", "1h"),
        "csat_ratio",
        True,
        "warning",
        "csat",
        "CSAT below target",
        "CSAT today",
        "ratio",
    ),
    BreachRule(
        "CcmonNpsBelowTarget",
        "nps_score",
        ("today", "1h"),
        "nps_score",
        True,
        "warning",
        "nps",
        "NPS below target",
        "NPS today",
        "score",
    ),
    BreachRule(
        "CcmonFcrBelowTarget",
        "first_contact_resolution_ratio",
        ("today", "1h"),
        "first_contact_resolution_ratio",
        True,
        "warning",
        "fcr",
        "First contact resolution ({channel}) below target",
        "first contact resolution today",
        "ratio",
    ),
)


#: The order of alerts of one severity: what a supervisor acts on now (waiting callers) before
#: the day's survey KPIs; other families (Alertmanager's, the pipeline's) after these.
FAMILY_ORDER = {
    family: rank
    for rank, family in enumerate(
        (
            "service_level",
            "longest_wait",
            "queue_capacity",
            "abandon_rate",
            "callbacks",
            "missed_calls",
            "csat",
            "nps",
            "fcr",
        )
    )
}


def format_value(value: float, unit: str) -> str:
    """``0.523`` -> ``52.3%`` (ratio), ``95`` -> ``1m 35s`` (seconds), ``42`` -> ``42`` (score)."""
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "seconds":
        seconds = max(0, round(value))
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        if hours:
            return f"{hours}h {minutes}m"
        return f"{minutes}m {secs}s" if minutes else f"{secs}s"
    return f"{value:.0f}"


#: The gauges :func:`breach_alerts` reads (without ``ccmon_``).
_READ = frozenset(
    {r.metric for r in BREACH_RULES}
    | {"target_" + r.target for r in BREACH_RULES}
    | {"queue_open", "calls_waiting", "agents", "longest_wait_seconds", "service_level_threshold_seconds"}
)


def breach_alerts(families: Iterable[MetricFamily], at: float) -> list[dict[str, Any]]:
    """ccmon's own firing alerts at ``at``: every queue KPI of the snapshot on the wrong side
    of the queue's target (:data:`BREACH_RULES`), plus ``CcmonCallsWaitingBeyondCapacity``
    (more calls waiting than agents available, the oldest past the service-level threshold).
    The tenant total ``_all`` and closed queues (``ccmon_queue_open`` 0) never alert."""
    values: dict[tuple[str, str, str, str | None, tuple[tuple[str, str], ...]], float] = {}
    for fam in families:
        name = fam.name[len("ccmon_") :]
        if fam.kind != "gauge" or not fam.name.startswith("ccmon_") or name not in _READ:
            continue
        for _suffix, labels, value in fam.samples:
            label_map = dict(labels)
            tenant, queue = label_map.pop("tenant", None), label_map.pop("queue", None)
            if tenant is None or queue is None or queue == ALL or not math.isfinite(value):
                continue
            window = label_map.pop("window", None)
            values[(name, tenant, queue, window, tuple(sorted(label_map.items())))] = value
    # Each rule reads its own metric's series only (a snapshot of 200 queues has ~50,000).
    by_metric: dict[str, list[tuple[tuple[str, str, str, str | None, tuple[tuple[str, str], ...]], float]]] = {}
    for key, value in values.items():
        by_metric.setdefault(key[0], []).append((key, value))
    for series in by_metric.values():
        series.sort(key=lambda kv: (kv[0][1], kv[0][2], kv[0][3] or "", kv[0][4]))
    closed = {(t, q) for (_name, t, q, _w, _x), v in by_metric.get("queue_open", []) if v == 0}
    alerts: list[dict[str, Any]] = []
    firing: set[tuple[str, str, str, tuple[tuple[str, str], ...]]] = set()
    for rule in BREACH_RULES:
        for (_name, tenant, queue, window, extra), value in by_metric.get(rule.metric, []):
            if window != rule.windows[0] or (tenant, queue) in closed:
                continue
            target = values.get(("target_" + rule.target, tenant, queue, None, ()))
            if target is None:
                continue
            limit = target - rule.offset if rule.below else target + rule.offset
            breached = all(
                (v := values.get((rule.metric, tenant, queue, w, extra))) is not None
                and (v < limit if rule.below else v > limit)
                for w in rule.windows
            )
            if not breached or (rule.family, tenant, queue, extra) in firing:
                continue  # a critical alert already covers this family (it comes first)
            firing.add((rule.family, tenant, queue, extra))
            alert_labels = {
                "alertname": rule.name,
                "severity": rule.severity,
                "family": rule.family,
                "tenant": tenant,
                "queue": queue,
                **dict(extra),
                **({"window": window} if window else {}),
            }
            side = "below" if rule.below else "above"
            far = f" (more than {rule.offset * 100:.0f} points below)" if rule.offset else ""
            detail = f" of {dict(extra)['channel']} contacts" if "channel" in dict(extra) else ""
            alerts.append(
                _alert(
                    alert_labels,
                    value,
                    target,
                    summary=f"{rule.summary.format_map(dict(extra))} on {tenant}/{queue}",
                    description=f"The {rule.what}{detail} of {tenant}/{queue} is {format_value(value, rule.unit)}, "
                    f"{side} its target of {format_value(target, rule.unit)}{far}.",
                )
            )
    for (_name, tenant, queue, window, extra), waiting in by_metric.get("calls_waiting", []):
        if window is not None or extra or (tenant, queue) in closed:
            continue
        available = values.get(("agents", tenant, queue, None, (("state", "available"),)), 0.0)
        longest = values.get(("longest_wait_seconds", tenant, queue, None, ()))
        threshold = values.get(("service_level_threshold_seconds", tenant, queue, None, ()))
        if waiting > available and longest is not None and threshold is not None and longest > threshold:
            alert_labels = {
                "alertname": "CcmonCallsWaitingBeyondCapacity",
                "severity": "warning",
                "family": "queue_capacity",
                "tenant": tenant,
                "queue": queue,
            }
            alerts.append(
                _alert(
                    alert_labels,
                    waiting,
                    available,
                    summary=f"More calls waiting than agents available on {tenant}/{queue}",
                    description=f"{waiting:.0f} calls are waiting on {tenant}/{queue}, more than the "
                    f"{available:.0f} available agents can take; the oldest has waited "
                    f"{format_value(longest, 'seconds')}, past the service-level threshold of "
                    f"{format_value(threshold, 'seconds')}.",
                )
            )
    return alerts


def _alert(
    labels: Mapping[str, str],
    value: float | None,
    target: float | None,
    *,
    summary: str,
    description: str,
    since: str | None = None,
) -> dict[str, Any]:
    return {
        "name": labels.get("alertname", ""),
        "severity": labels.get("severity", ""),
        "family": labels.get("family"),
        "tenant": labels.get("tenant"),
        "queue": labels.get("queue"),
        "summary": summary,
        "description": description,
        "value": value,
        "target": target,
        "since": since,
        "labels": dict(labels),
    }


def from_alertmanager(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Alertmanager API v2 alerts (``GettableAlert``) as board alerts: firing ones only, without
    the hidden ones (:data:`HIDDEN_ALERTS`, severity ``none``)."""
    alerts = []
    for item in items:
        labels = item.get("labels") or {}
        annotations = item.get("annotations") or {}
        state = (item.get("status") or {}).get("state", "active")
        if not isinstance(labels, Mapping) or state != "active":
            continue
        if labels.get("alertname") in HIDDEN_ALERTS or labels.get("severity") == "none":
            continue
        alerts.append(
            _alert(
                {str(k): str(v) for k, v in labels.items()},
                None,
                None,
                summary=str(annotations.get("summary") or labels.get("alertname", "")),
                description=str(annotations.get("description") or ""),
                since=item.get("startsAt"),
            )
        )
    return alerts


def redact(url: str) -> str:
    """The URL without its user information (``http://user:pw@am:9093`` -> ``http://am:9093``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class AlertmanagerAlerts:
    """The active alerts of the Alertmanager at ``url`` (its base URL, as Prometheus names it:
    ``http://alertmanager:9093``, or with a path prefix), cached ``cache_seconds``. User
    information in the URL (``http://user:password@host:9093``) is sent as basic auth.

    :meth:`fetch` returns ``(alerts, None)`` or ``([], error)``; it never raises for what
    Alertmanager does. Thread-safe: requests arriving during a fetch wait for it."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = FETCH_TIMEOUT_SECONDS,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the Alertmanager URL must be http(s)://host[:port][/prefix], got {redact(url)!r}")
        self.url = redact(url).rstrip("/")
        self._auth: str | None = None
        if parts.username is not None:
            from urllib.parse import unquote

            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._auth = "Basic " + base64.b64encode(token).decode("ascii")
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict[str, Any]], str | None] | None = None
        #: Fetches made (for tests and logs).
        self.fetches = 0

    @property
    def endpoint(self) -> str:
        return self.url + "/api/v2/alerts?active=true&silenced=false&inhibited=false"

    def fetch(self) -> tuple[list[dict[str, Any]], str | None]:
        with self._lock:
            now = self.clock()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1], self._cached[2]
            alerts, error = self._fetch()
            self._cached = (self.clock(), alerts, error)
            return alerts, error

    def _fetch(self) -> tuple[list[dict[str, Any]], str | None]:
        self.fetches += 1
        request = urllib.request.Request(self.endpoint, headers={"Accept": "application/json"})
        if self._auth is not None:
            request.add_header("Authorization", self._auth)
        where = f"Alertmanager at {self.url}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read(MAX_RESPONSE_BYTES + 1)
            if len(body) > MAX_RESPONSE_BYTES:
                raise ValueError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
            items = json.loads(body)
            if not isinstance(items, list):
                raise ValueError(f"expected a JSON list of alerts, got {type(items).__name__}")
            return from_alertmanager(items), None
        except urllib.error.HTTPError as exc:
            error = f"{where}: HTTP {exc.code}"
        except (TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            error = (
                f"{where}: timed out after {self.timeout:g} s"
                if isinstance(reason, TimeoutError)
                else f"{where}: {getattr(reason, 'strerror', None) or reason}"
            )
        except ValueError as exc:
            error = f"{where}: bad answer: {exc}"
        log.warning("alerts unavailable: %s", error)
        return [], error


def alerts_document(
    at: float, alerts: Iterable[Mapping[str, Any]], *, source: str, error: str | None = None, tenant: str | None = None
) -> dict[str, Any]:
    """The ``/api/alerts`` document (module docstring) from board alerts."""
    chosen = [dict(a) for a in alerts if tenant is None or a.get("tenant") in (None, tenant)]
    chosen.sort(
        key=lambda a: (
            SEVERITY_ORDER.get(a["severity"], 9),
            FAMILY_ORDER.get(a.get("family") or "", len(FAMILY_ORDER)),
            a.get("tenant") or "",
            a.get("queue") or "",
            a["name"],
        )
    )
    queues: dict[str, dict[str, str]] = {}
    for alert in chosen:
        if alert.get("tenant") is None or alert.get("queue") is None:
            continue
        flagged = queues.setdefault(alert["tenant"], {})
        current = flagged.get(alert["queue"])
        if current is None or SEVERITY_ORDER.get(alert["severity"], 9) < SEVERITY_ORDER.get(current, 9):
            flagged[alert["queue"]] = alert["severity"]
    document: dict[str, Any] = {"at": at, "at_iso": iso(at), "source": source, "available": error is None}
    if error is not None:
        document["error"] = error
    document.update({"count": len(chosen), "alerts": chosen, "queues": queues})
    return document
