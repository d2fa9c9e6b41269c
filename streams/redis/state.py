"""The engine's :class:`~kpi_core.state.StateStore` in Redis, with the semantics of
:class:`~kpi_core.state.MemoryState`: :class:`RedisState`.

It is composed of the package's parts: :mod:`streams.redis.keys` (the key layout),
:mod:`streams.redis.write` (batches: buffered writes that leave in one all-or-nothing script
call, exactly once), :mod:`streams.redis.read` (the read side and the scrape's
:class:`~streams.redis.read.SnapshotReader`), the Lua scripts in ``streams/redis/lua/``
(:mod:`streams.redis.scripts`). This module adds what is none of those: the series
retirement (:meth:`RedisState.series_retire`, two scripts), the consumer lag and stuck
partitions a worker records for the exporter, and the connection (:meth:`RedisState.from_url`).

Expiry is by TTL (:mod:`streams.redis.write`), so :meth:`RedisState.maintain` has nothing to do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from redis.cluster import RedisCluster

from kpi_core.config import Config
from kpi_core.engine import series_retention_seconds
from kpi_core.state import KB_SCOPE_PREFIX, RETIRED_SCOPE
from streams.redis import scripts
from streams.redis.keys import (
    CONSUMER_LAG,
    LAG_TTL_SECONDS,
    STUCK_PARTITIONS,
    STUCK_TTL_SECONDS,
    encode,
    num,
    text,
    utf8,
)
from streams.redis.read import StoreReader, partition_map

#: Names per call of the retirement script (an agent: fewer, see RedisState.series_retire).
RETIRE_NAMES_PER_CALL = 20


class RedisState(StoreReader):
    """A :class:`~kpi_core.state.StateStore` in Redis: the key layout
    (:class:`~streams.redis.keys.RedisKeys`), the batch write side
    (:class:`~streams.redis.write.BatchWriter`) and the read side
    (:class:`~streams.redis.read.StoreReader`). Reads outside a batch may come from many
    threads (the exporter); a batch belongs to one thread (the worker's)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        config: Config,
        *,
        prefix: str = "ccmon",
        clock: Callable[[], float] = time.time,
        cluster: bool = False,
        customer_key: bytes | None = None,
    ) -> None:
        """``customer_key``: the secret that names customer records (HMAC-SHA256 of the id);
        every writer of one prefix must use the same, and another orphans the records written
        so far. ``None``: :data:`~streams.redis.keys.INSECURE_DEV_CUSTOMER_KEY` (development and tests only)."""
        super().__init__(prefix, cluster=cluster, customer_key=customer_key)
        self.client = client
        self.config = config
        self.clock = clock
        self.fine_seconds = config.bucket_seconds
        self.coarse_seconds = config.coarse_bucket_seconds
        # How long MemoryState keeps buckets: the engine's own figures (Engine.maintain passes them).
        self.fine_keep_seconds = config.fine_keep_seconds
        self.coarse_keep_seconds = config.coarse_keep_seconds
        # The guard's registry keeps a name until it retires (Engine.retire_series); a day
        # more before the batch script trims it, for an upkeep that was late.
        self.series_keep_seconds = max(config.horizon_seconds, series_retention_seconds(config))
        self._batch = None
        self.fail_at_write = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        config: Config,
        *,
        cluster: bool = False,
        connection: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> RedisState:
        """A store on ``url``; with ``cluster``, ``url`` is any node of a Redis Cluster.
        ``connection``: more keyword arguments for redis-py's client (TLS files, a password:
        :func:`streams.security.redis_connection_kwargs`)."""
        extra = dict(connection or {})
        if cluster:
            cluster_client = RedisCluster.from_url(url, socket_timeout=30, socket_connect_timeout=5, **extra)
            return cls(cluster_client, config, cluster=True, **kwargs)
        client = redis.Redis.from_url(
            url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30, **extra
        )
        return cls(client, config, **kwargs)

    def events_version(self) -> tuple[tuple[str, bytes], ...]:
        """What changes whenever a batch of events lands: each tenant's ``events`` counters
        (the engine counts every event it applies), as raw bytes. Two round trips, whatever
        the traffic: the exporter polls it a few times a second to push the board
        (:mod:`streams.web.push`) only when something changed."""
        tenants = sorted(text(m) for m in self.client.smembers(self._count_tenants_key))
        with self.client.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.hgetall(self._count_key(tenant, "sum:events"))
            replies = pipe.execute()
        return tuple(
            (tenant, repr(sorted(reply.items())).encode()) for tenant, reply in zip(tenants, replies, strict=True)
        )

    def series_retire(self, kind: str, tenant: str, names: Mapping[str, float | None]) -> int:
        from kpi_core.config import REASON_OTHER
        from kpi_core.engine import REASON_SEP
        from kpi_core.events import AGENT_STATES
        from kpi_core.kpis import LIVE_SETS

        if not names:
            return 0
        script = self.client.register_script(scripts.RETIRE_LUA)
        lives = [encode(n) for n in LIVE_SETS]
        into: list[Any] = [utf8(RETIRED_SCOPE), encode(RETIRED_SCOPE)]
        if kind == "tenant":
            flat: list[Any] = []
            for name, at in names.items():
                flat += [num(at if at is not None else math.nan), utf8(name)]
            gone = self.client.register_script(scripts.RETIRE_TENANTS_LUA)(
                keys=[self._series_key("tenant", ""), self._tenants_key], args=flat
            )
            for raw in gone:
                gone_tenant = text(raw)
                scopes = [utf8(encode(text(s))) for s in self.client.smembers(self._scopes_key(gone_tenant))]
                script(
                    keys=self._retire_keys("tenant", gone_tenant, self._scopes_key(gone_tenant)),
                    args=["tenant", self._tag(gone_tenant), *into, len(lives), *lives, 0, len(scopes), *scopes],
                )
                self.client.sadd(self._count_tenants_key, utf8(gone_tenant))
            return len(gone)
        scope_args: list[Any] = []
        per_call = RETIRE_NAMES_PER_CALL
        # An agent's members: its state, or away with a reason label (kpi_core.engine.agent_member).
        states = [*AGENT_STATES, *(f"away{REASON_SEP}{r}" for r in (*self.config.pause_reasons(tenant), REASON_OTHER))]
        if kind == "agent":
            scope_args = [utf8(encode(s)) for s in self.scopes().get(tenant, ())]
            per_call = max(1, 4000 // (len(scope_args) * len(states) + 1))
        keys = self._retire_keys(kind, tenant, self._series_key(kind, tenant))
        head = [kind, self._tag(tenant), *into, len(lives), *lives, len(states), *states, len(scope_args), *scope_args]
        items = list(names.items())
        retired = 0
        for i in range(0, len(items), per_call):
            args = list(head)
            for name, at in items[i : i + per_call]:
                scope = KB_SCOPE_PREFIX + name if kind == "article" else name
                args += ["" if at is None else num(at), utf8(name), utf8(scope), utf8(encode(scope))]
            retired += int(script(keys=keys, args=args))
        if retired:
            self.client.sadd(self._count_tenants_key, utf8(tenant))
        return retired

    def _retire_keys(self, kind: str, tenant: str, first: str) -> list[str]:
        return [
            first,
            self._scopes_key(tenant),
            self._count_key(tenant, "sum:series_retired"),
            self._count_names_key(tenant),
        ]

    # -- consumer lag (written by a worker, served by the exporter) ------------------------
    def put_consumer_lag(self, lag: Mapping[tuple[str, int], float]) -> None:
        """Replace the consumer group's lag, ``(topic, partition) -> messages behind``."""
        key = self._pipeline_key(CONSUMER_LAG)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if lag:
                pipe.hset(
                    key, mapping={f"{topic}\x1f{partition}": num(value) for (topic, partition), value in lag.items()}
                )
                pipe.expire(key, LAG_TTL_SECONDS)
            pipe.execute()

    def consumer_lag(self) -> dict[tuple[str, int], float]:
        return self._partition_map(CONSUMER_LAG)

    def _partition_map(self, name: str) -> dict[tuple[str, int], float]:
        """A pipeline hash of ``topic\x1fpartition -> number`` as ``(topic, partition) -> number``."""
        return partition_map(self.client.hgetall(self._pipeline_key(name)))

    def put_stuck_partitions(self, stuck: Mapping[tuple[str, int], float]) -> None:
        """Record partitions a worker's watchdog found stuck, ``(topic, partition) -> unix time``;
        the record is kept :data:`~streams.redis.keys.STUCK_TTL_SECONDS` after the latest one."""
        key = self._pipeline_key(STUCK_PARTITIONS)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={f"{topic}\x1f{partition}": num(when) for (topic, partition), when in stuck.items()})
            pipe.expire(key, STUCK_TTL_SECONDS)
            pipe.execute()

    def stuck_partitions(self) -> dict[tuple[str, int], float]:
        return self._partition_map(STUCK_PARTITIONS)

    # -- upkeep ----------------------------------------------------------------------------
    def maintain(self, now: float, fine_keep_seconds: float, coarse_keep_seconds: float) -> None:
        """Nothing to do: buckets, records and seen sets expire by TTL."""
