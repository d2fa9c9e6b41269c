"""Redis's eviction policy: ccmon refuses a Redis that may evict its keys.

ccmon's exactly-once effect rests on Redis keeping what it was given: the ``seen`` sets that
make a redelivered event a duplicate, the call and agent records, the buckets. Under any
``maxmemory-policy`` but ``noeviction``, a Redis that reaches ``maxmemory`` deletes keys to make
room (``allkeys-*``: any key; ``volatile-*``: keys with a TTL, and ccmon's records, buckets and
seen sets all have one), and an event delivered again after its ``seen`` entry was evicted is
counted a second time (docs/RELIABILITY.md, "Redis persistence"). With
``noeviction`` a full Redis refuses writes instead: the worker waits (and says so, alert
CcmonWorkerWaitingForRedis), nothing is counted twice.

* :func:`read_status` reads the policy of the Redis (of every primary of a Redis Cluster):
  ``CONFIG GET maxmemory-policy``, else (managed Redis often renames or forbids ``CONFIG``)
  the ``maxmemory_policy`` field of ``INFO memory``, else unknown.
* :func:`check_at_start` is what ``ccmon worker`` and ``ccmon rebuild`` do before touching any
  state: an evicting policy raises :class:`EvictingRedisError` (one line on stderr, exit status
  2), unless ``--allow-evicting-redis yes`` (``CCMON_ALLOW_EVICTING_REDIS``), which logs a
  WARNING instead; a policy that cannot be read logs one WARNING and goes on.
* :class:`EvictionWatch` re-reads it while running (the worker's timer every
  ``--redis-policy-recheck-seconds``, default 30; the exporter at scrape time at most that
  often), logs a change once, and serves the gauge
  ``ccmon_redis_eviction_safe{policy}``: 1 under ``noeviction``, 0 under an evicting policy
  (with the override too), no sample while the policy cannot be read. A change at run time
  does not stop the worker: stopping every worker would freeze every tenant's KPIs now to
  prevent a double count that only happens once Redis is full, and a restarted worker would
  refuse to start (a crash loop); the alert CcmonRedisEvictionPolicyUnsafe calls a human.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from kpi_core.errors import CcmonError
from kpi_core.kpis import MetricFamily

log = logging.getLogger("ccmon.redis_policy")

#: The only policy under which Redis never deletes a key on its own.
SAFE_POLICY = "noeviction"
#: How the check is overridden (streams/settings.py, ``evicting_redis_allowed``).
OVERRIDE = "--allow-evicting-redis yes (CCMON_ALLOW_EVICTING_REDIS=yes)"


class EvictingRedisError(CcmonError):
    """Redis may evict ccmon's keys, and the override was not given."""


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """The ``maxmemory-policy`` of each node (``host:port``, the primaries of a cluster);
    ``None`` where it could not be read, with the reason in ``errors``."""

    policies: tuple[tuple[str, str | None], ...]
    errors: tuple[tuple[str, str], ...] = ()

    @property
    def evicting(self) -> list[tuple[str, str]]:
        """``(node, policy)`` of every node whose policy is not ``noeviction``."""
        return [(node, policy) for node, policy in self.policies if policy is not None and policy != SAFE_POLICY]

    @property
    def unknown(self) -> list[str]:
        return [node for node, policy in self.policies if policy is None]

    @property
    def safe(self) -> bool | None:
        """``False`` when a node may evict, ``True`` when every node is ``noeviction``,
        ``None`` when some node's policy could not be read (and none evicts)."""
        if self.evicting:
            return False
        if self.unknown or not self.policies:
            return None
        return True

    @property
    def label(self) -> str:
        """The gauge's ``policy`` label: the evicting policies (sorted, comma-joined) when
        any, else ``noeviction`` (or ``unknown``)."""
        evicting = sorted({policy for _node, policy in self.evicting})
        if evicting:
            return ",".join(evicting)
        return SAFE_POLICY if self.safe else "unknown"

    def describe(self) -> str:
        """``Redis at HOST:PORT evicts keys (maxmemory-policy allkeys-lru)``."""
        evicting = self.evicting
        nodes = ", ".join(node for node, _policy in evicting)
        verb = "evicts" if len(evicting) == 1 else "evict"
        if len({policy for _node, policy in evicting}) == 1:
            return f"Redis at {nodes} {verb} keys (maxmemory-policy {evicting[0][1]})"
        each = ", ".join(f"{policy} on {node}" for node, policy in evicting)
        return f"Redis at {nodes} {verb} keys (maxmemory-policy {each})"

    def refusal(self) -> str:
        """The one line ``ccmon worker`` and ``ccmon rebuild`` refuse to start with."""
        return (
            f"{self.describe()}: ccmon would count redelivered events again after an eviction; "
            f"set maxmemory-policy {SAFE_POLICY}, or pass {OVERRIDE} to run anyway"
        )

    def unverified(self) -> str:
        reasons = "; ".join(f"{node}: {error}" for node, error in self.errors) or "no node answered"
        return (
            f"cannot read the maxmemory-policy of Redis at {', '.join(self.unknown) or '?'} ({reasons}): "
            f"make sure it is {SAFE_POLICY}, or ccmon counts redelivered events again after an eviction"
        )


# -- reading the policy ------------------------------------------------------------------------
def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_policy(client: Any) -> tuple[str | None, str | None]:
    """``(policy, None)`` of one node, or ``(None, why)`` when neither ``CONFIG GET`` nor
    ``INFO memory`` tells it. Raises :class:`redis.ConnectionError` / ``TimeoutError`` when the
    node cannot be reached (that is no answer about the policy)."""
    try:
        answer = client.config_get("maxmemory-policy")
        for key, value in (answer or {}).items():
            if _text(key) == "maxmemory-policy" and _text(value):
                return _text(value).strip().lower(), None
        config_error = "CONFIG GET maxmemory-policy gave no value"
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except redis.ResponseError as exc:  # renamed or disabled (unknown command), or forbidden (NOPERM)
        config_error = f"CONFIG GET refused: {exc}"
    try:
        info = client.info("memory")
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except redis.ResponseError as exc:
        return None, f"{config_error}; INFO memory refused: {exc}"
    value = (info or {}).get("maxmemory_policy")
    if value is None or not _text(value).strip():
        return None, f"{config_error}; INFO memory has no maxmemory_policy"
    return _text(value).strip().lower(), None


def node_name(client: Any) -> str:
    """``host:port`` (or the socket path) of a single-node ``redis.Redis``."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def _nodes(client: Any, cluster: bool) -> Iterator[tuple[str, Any]]:
    if not cluster:
        yield node_name(client), client
        return
    for node in client.get_primaries():  # every primary: each holds its own slots' keys
        yield node.name, client.get_redis_connection(node)


def read_status(client: Any, cluster: bool = False) -> PolicyStatus:
    """The policy of every node ccmon writes to. Raises :class:`redis.RedisError` when a node
    cannot be reached."""
    policies: list[tuple[str, str | None]] = []
    errors: list[tuple[str, str]] = []
    for name, node in _nodes(client, cluster):
        policy, error = read_policy(node)
        policies.append((name, policy))
        if error is not None:
            errors.append((name, error))
    return PolicyStatus(tuple(policies), tuple(errors))


def check_at_start(client: Any, cluster: bool, allow: bool) -> PolicyStatus:
    """Refuse an evicting Redis (:class:`EvictingRedisError`) unless ``allow``; warn when the
    policy cannot be read. Redis must be reachable (a :class:`redis.RedisError` propagates)."""
    status = read_status(client, cluster)
    if status.evicting:
        if not allow:
            raise EvictingRedisError(status.refusal())
        log.warning(
            "%s: running anyway (--allow-evicting-redis): ccmon counts redelivered events again after an "
            "eviction; set maxmemory-policy %s",
            status.describe(),
            SAFE_POLICY,
        )
    elif status.safe is None:
        log.warning("%s", status.unverified())
    else:
        log.info("Redis maxmemory-policy is %s", SAFE_POLICY)
    return status


# -- watching it while running -----------------------------------------------------------------
class EvictionWatch:
    """The policy re-read while running, its changes logged once, and the gauge.

    :meth:`refresh` does I/O (call it off the event loop); :meth:`family` and
    :meth:`collect` only read the last status, except that :meth:`family` first refreshes a
    status older than ``max_age`` seconds when ``max_age`` is given (the exporter's scrape)."""

    def __init__(
        self, client: Any, cluster: bool = False, status: PolicyStatus | None = None, max_age: float | None = None
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.max_age = max_age
        self.status = status
        self.read_at = time.monotonic() if status is not None else float("-inf")
        self._lock = threading.Lock()
        self._warned_unverified = status is not None and status.safe is None

    def refresh(self) -> PolicyStatus | None:
        """Read the policy now; log when it changed. A Redis that cannot be reached keeps the
        last status (the policy did not change because the network did)."""
        with self._lock:
            try:
                status = read_status(self.client, self.cluster)
            except redis.RedisError as exc:
                log.debug("maxmemory-policy not read: %s: %s", type(exc).__name__, exc)
                return self.status
            self.read_at = time.monotonic()
            self._changed(self.status, status)
            self.status = status
            return status

    def _changed(self, old: PolicyStatus | None, new: PolicyStatus) -> None:
        if old is not None and old.policies == new.policies:
            return
        if new.evicting:
            if old is None or old.evicting != new.evicting:
                log.error(
                    "%s: ccmon counts redelivered events again after an eviction; set maxmemory-policy %s "
                    "(ccmon_redis_eviction_safe is 0; this process goes on)",
                    new.describe(),
                    SAFE_POLICY,
                )
        elif new.safe is None:
            if not self._warned_unverified:
                self._warned_unverified = True
                log.warning("%s", new.unverified())
        elif old is not None and old.safe is not True:
            log.warning("Redis maxmemory-policy is %s again", SAFE_POLICY)

    def current(self) -> PolicyStatus | None:
        if self.max_age is not None and time.monotonic() - self.read_at >= self.max_age:
            return self.refresh()
        return self.status

    def family(self) -> MetricFamily:
        """The gauge as a :class:`~kpi_core.kpis.MetricFamily` (the exporter's /metrics)."""
        return metric_family(self.current())

    def collect(self) -> Iterable[Any]:
        """prometheus_client's collector protocol (the worker's web /metrics registry); never
        reads Redis (it runs on the worker's event loop)."""
        from prometheus_client.core import GaugeMetricFamily

        family = metric_family(self.status)
        if family.samples:
            gauge = GaugeMetricFamily(family.name, family.help, labels=["policy"])
            for _suffix, labels, value in family.samples:
                gauge.add_metric([dict(labels)["policy"]], value)
            yield gauge


def metric_family(status: PolicyStatus | None) -> MetricFamily:
    family = MetricFamily(
        "ccmon_redis_eviction_safe",
        "gauge",
        "1 when Redis's maxmemory-policy is noeviction, "
        "0 when Redis may evict ccmon's keys (label policy); no sample while it cannot be read.",
    )
    if status is not None and status.safe is not None:
        family.add((("policy", status.label),), 1.0 if status.safe else 0.0)
    return family
