"""The wallboard's "vs last week" figures per queue (``/api/week-over-week``).

Where they come from
--------------------
ccmon's own state cannot answer "the same hour last week": the engine keeps buckets for its
horizon (the longest window or a day, + 1 h; ``Engine.maintain``), about 25 hours, and
``[limits] series_retention_days`` only keeps a *name* registered that long, not its buckets.
Prometheus keeps the history: the recording rules of group ``ccmon-anomalies-recording``
(deploy/prometheus/rules/ccmon-recording.yml; docs/ALERTS.md, "Week-over-week anomalies")
compute, per queue, the last hour against the same hour one week and four weeks back.

So with ``--prometheus-url`` / ``CCMON_PROMETHEUS_URL`` set, :class:`WeekOverWeek` asks that
Prometheus for those rules in one instant query (``{__name__=~"tenant_queue:ccmon_...:1h.*"}``),
with a short timeout, and keeps the answer for ``ttl`` seconds (one request per ``ttl``
however many boards poll; callers arriving meanwhile get the cached document). Without it, or
when Prometheus does not answer, the document says why and has no queues: the board hides
the indicator. Nothing here raises into the request.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: The instant query: every week-over-week recording rule, of every queue.
QUERY = '{__name__=~"tenant_queue:ccmon_(calls_offered|service_level):1h.*"}'
#: Recording rule -> key in a queue's entry.
FIELDS = {
    "tenant_queue:ccmon_calls_offered:1h": "calls_offered",
    "tenant_queue:ccmon_calls_offered:1h_offset1w": "calls_offered_last_week",
    "tenant_queue:ccmon_calls_offered:1h_wow_ratio": "calls_offered_wow_ratio",
    "tenant_queue:ccmon_calls_offered:1h_4w_mean": "calls_offered_4w_mean",
    "tenant_queue:ccmon_calls_offered:1h_4w_ratio": "calls_offered_4w_ratio",
    "tenant_queue:ccmon_calls_offered:1h_anomaly": "calls_offered_anomaly",
    "tenant_queue:ccmon_service_level:1h_ratio": "service_level",
    "tenant_queue:ccmon_service_level:1h_offset1w": "service_level_last_week",
    "tenant_queue:ccmon_service_level:1h_wow_delta": "service_level_wow_delta",
    "tenant_queue:ccmon_service_level:1h_4w_mean": "service_level_4w_mean",
    "tenant_queue:ccmon_service_level:1h_4w_delta": "service_level_4w_delta",
    "tenant_queue:ccmon_service_level:1h_anomaly": "service_level_anomaly",
}
NO_PROMETHEUS = (
    "no Prometheus configured (--prometheus-url / CCMON_PROMETHEUS_URL); ccmon's own state keeps about "
    "a day, not a week"
)
#: A Prometheus answer larger than this is refused (a wrong URL serving something huge).
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

Opener = Callable[[str, float], bytes]


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read(MAX_RESPONSE_BYTES + 1)
    if len(body) > MAX_RESPONSE_BYTES:
        raise ValueError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
    return body


def parse_query_result(body: bytes) -> dict[str, dict[str, dict[str, float]]]:
    """``tenant -> queue -> {field: value}`` from a Prometheus instant-query answer (a vector
    of the rules in :data:`FIELDS`); NaN and infinite values are left out. Raises ValueError
    on an answer that is not a successful vector."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise ValueError(f"query failed: {str(error or doc)[:200]}")
    data = doc.get("data") or {}
    if data.get("resultType") != "vector":
        raise ValueError(f"expected a vector, got {data.get('resultType')!r}")
    queues: dict[str, dict[str, dict[str, float]]] = {}
    for item in data.get("result") or []:
        metric = item.get("metric") or {}
        key = FIELDS.get(metric.get("__name__", ""))
        tenant, queue = metric.get("tenant"), metric.get("queue")
        if key is None or not isinstance(tenant, str) or not isinstance(queue, str):
            continue
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            queues.setdefault(tenant, {}).setdefault(queue, {})[key] = value
    return queues


class WeekOverWeek:
    """The ``/api/week-over-week`` document, from Prometheus (cached ``ttl`` seconds) or, with
    no ``base_url``, a document saying there is none. Thread-safe."""

    def __init__(
        self,
        base_url: str | None,
        *,
        timeout: float = 2.0,
        ttl: float = 30.0,
        opener: Opener = _fetch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout
        self.ttl = ttl
        self._opener = opener
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    @property
    def url(self) -> str | None:
        """The instant-query URL asked."""
        if self.base_url is None:
            return None
        return f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": QUERY})

    def document(self) -> dict[str, Any]:
        """``{"source": "prometheus"|"none"|"unavailable", "reason"?, "fetched_at"?,
        "tenants": {tenant: {"queues": {queue: {field: value}}}}}``."""
        url = self.url
        if url is None:
            return {"source": "none", "reason": NO_PROMETHEUS, "tenants": {}}
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self.ttl:
                return self._cached[1]
            try:
                queues = parse_query_result(self._opener(url, self.timeout))
                document: dict[str, Any] = {
                    "source": "prometheus",
                    "fetched_at": time.time(),
                    "tenants": {t: {"queues": qs} for t, qs in sorted(queues.items())},
                }
            except (OSError, urllib.error.URLError, ValueError) as exc:  # timeouts are OSErrors
                reason = f"Prometheus did not answer the week-over-week query: {type(exc).__name__}: {str(exc)[:200]}"
                log.warning("%s", reason)
                document = {"source": "unavailable", "reason": reason, "tenants": {}}
            self._cached = (now, document)
            return document
