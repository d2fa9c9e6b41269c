"""The key layout of ccmon's state in Redis: every key name is built here, and the value
encodings the other modules share.

Key layout (``P`` is the prefix, ``ccmon`` by default; ``<x>`` is a name encoded by
:func:`encode`, so no key part ever holds ``:``, ``{`` or ``}``)::

    P:{t:<tenant>}:scopes                   set   scope names (raw), for listing
    P:{t:<tenant>}:b:f:<scope>:<start>      hash  fine bucket: field -> number (TTL)
    P:{t:<tenant>}:b:c:<scope>:<start>      hash  coarse bucket (TTL); a busy bucket's maxima are
                                                  not in it but ``mt:<name>`` -> the largest ms
                                                  of its multiset (``mt:!`` = 1: a count fell
                                                  below 0)
    P:{t:<tenant>}:bx:<f|c>:<scope>:<start> hash  a busy bucket's maxima's multisets:
                                                  ``mx:<name>:<ms>`` -> count (TTL: the bucket's)
    P:{t:<tenant>}:bi:<f|c>:<scope>         zset  bucket index: the starts of the buckets kept
    P:{t:<tenant>}:wv:<scope>               string window version: moves on when a coarse bucket
                                                  below the newest is written (TTL: the index's)
    P:{t:<tenant>}:wc:<scope>               string window cache: a window's sums over closed coarse
                                                  buckets, at a window version (lua/windows.lua)
    P:{t:<tenant>}:wv:f:<scope>             string minute version: moves on when a fine bucket in a
                                                  minute below the newest's is written (TTL: the index's)
    P:{t:<tenant>}:mc:<scope>               string minute folds: each closed minute's fine buckets
                                                  summed, at a minute version (lua/windows.lua)
    P:{t:<tenant>}:tot:<scope>              hash  lifetime totals (no TTL)
    P:{t:<tenant>}:live:<name>:<scope>      zset  member -> score
    P:{t:<tenant>}:rec:<kind>:<key>         string JSON record (TTL = its expiry)
    P:{t:<tenant>}:rec:customer:#<digest>   string a customer's record, named by a keyed digest
    P:{t:<tenant>}:seen                     zset  digests of the event ids seen -> hour of first ts
    P:{t:<tenant>}:series:<kind>            zset  the cardinality guard's registry: name -> admitted at
    P:{t:<tenant>}:counts                   set   the tenant's pipeline count names
    P:{t:<tenant>}:count:<name>             hash  label -> number
    P:{t:<tenant>}:history:<name>           zset  the board's history (streams.web.api)
    P:{p}:tenants                           set   tenant names (raw)
    P:{p}:count-tenants                     set   tenants with pipeline counts
    P:{p}:series:tenant                     zset  the tenants' registry
    P:{p}:consumer-lag                      hash  topic\\x1fpartition -> messages behind (TTL)
    P:{p}:stuck-partitions                  hash  topic\\x1fpartition -> unix time (TTL)

``{t:<tenant>}`` is a Redis Cluster hash tag: all of a tenant's keys share one slot.

How long keys live: buckets as long as the engine keeps them
(:attr:`kpi_core.config.Config.fine_keep_seconds` and ``coarse_keep_seconds``, the one
definition), records until their ``expire_at``, each at least :data:`MIN_TTL_SECONDS`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from kpi_core.state import Record

#: A key (record, bucket, seen set) that by the engine's clock is already due to expire
#: still lives this long, so a record is never dropped while its batch is being written.
MIN_TTL_SECONDS = 3600.0
#: Bytes of blake2b digest kept per event id (a false duplicate needs ~2^64 ids).
SEEN_DIGEST_BYTES = 16
#: The consumer group's lag figures older than this are dropped: no figure rather than a stale one.
LAG_TTL_SECONDS = 60
#: The pipeline's own hashes (``P:{p}:<name>``) of the workers' figures the exporter serves.
CONSUMER_LAG = "consumer-lag"
STUCK_PARTITIONS = "stuck-partitions"
#: How long a partition the worker's watchdog found stuck stays on record (streams/watchdog.py).
STUCK_TTL_SECONDS = 3600
#: The customer key of a store given none (tests, ``--insecure-dev``): public, so its record
#: names can be recomputed from a customer id. Production passes a secret
#: (:func:`streams.security.customer_key`).
INSECURE_DEV_CUSTOMER_KEY = b"ccmon-insecure-dev-customer-key"

#: A busy bucket's maxima (``mx:<name>:<ms>`` -> count, :data:`kpi_core.state.MAX_PREFIX`) are
#: kept beside it, in its multiset hash (:meth:`RedisKeys._multiset_key`; a quiet bucket keeps
#: its few itself: ``BatchWriter.multiset_spill``); the bucket then holds, per name,
#: ``mt:<name>`` -> the largest ms whose count is above 0 (the batch script keeps it), and
#: :data:`MULTISET_ODD` once a count there fell below 0. A scrape then reads one field per
#: maximum instead of one per distinct value (lua/windows.lua; docs/BENCHMARKS.md).
MULTISET_TOP = "mt:"
#: Set in a bucket whose multiset hash held a count below 0: its readers sum the multisets
#: field by field (the general rule) instead of taking the tops.
MULTISET_ODD = "mt:!"

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@functools.lru_cache(maxsize=65536)
def encode(name: str) -> str:
    """A key part for ``name``: itself when it is plain (letters, digits, ``_.-``), else
    ``~`` + urlsafe base64 of its UTF-8. Injective; never contains ``:``, ``{`` or ``}``."""
    if _SAFE_NAME.fullmatch(name):
        return name
    data = name.encode("utf-8", "surrogatepass")
    return "~" + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode(part: str) -> str:
    if not part.startswith("~"):
        return part
    body = part[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8", "surrogatepass")


class RedisKeys:
    """The names of one store's keys (``prefix``). On Redis Cluster (``cluster``), keys are
    grouped by their hash tag: a transaction cannot span slots there."""

    def __init__(self, prefix: str, *, cluster: bool = False, customer_key: bytes | None = None) -> None:
        """``customer_key``: the secret that names customer records (HMAC-SHA256 of the id);
        every writer of one prefix must use the same, and another orphans the records written
        so far. ``None``: :data:`INSECURE_DEV_CUSTOMER_KEY` (development and tests only)."""
        if not prefix or any(ch in prefix for ch in "{}:"):
            raise ValueError(f"redis prefix must be non-empty without '{{', '}}' or ':', got {prefix!r}")
        if customer_key is not None and not customer_key:
            raise ValueError("customer_key must not be empty")
        self.prefix = prefix
        #: Redis Cluster: a batch commits one transaction per hash-slot group (tenant) instead
        #: of one for all; see docs/STREAMS.md.
        self.cluster = cluster
        self._pipeline_tag = f"{prefix}:{{p}}"
        self._tenant_tags: dict[str, str] = {}
        self._customer_mac = hmac.new(customer_key or INSECURE_DEV_CUSTOMER_KEY, b"ccmon-customer\x00", hashlib.sha256)

    def _tag(self, tenant: str) -> str:
        tag = self._tenant_tags.get(tenant)
        if tag is None:
            tag = self._tenant_tags[tenant] = f"{self.prefix}:{{t:{encode(tenant)}}}"
        return tag

    def _scopes_key(self, tenant: str) -> str:
        return f"{self._tag(tenant)}:scopes"

    def _bucket_key(self, tenant: str, tier: str, scope: str, start: int) -> str:
        return f"{self._tag(tenant)}:b:{tier}:{encode(scope)}:{start}"

    def _multiset_key(self, tenant: str, tier: str, scope: str, start: int) -> str:
        """The hash of bucket ``start``'s maxima's multisets (:data:`MULTISET_TOP`)."""
        return f"{self._tag(tenant)}:bx:{tier}:{encode(scope)}:{start}"

    def _series_key(self, kind: str, tenant: str) -> str:
        tag = self._pipeline_tag if kind == "tenant" else self._tag(tenant)
        return f"{tag}:series:{encode(kind)}"

    def _index_key(self, tenant: str, tier: str, scope: str) -> str:
        return f"{self._tag(tenant)}:bi:{tier}:{encode(scope)}"

    def _window_version_key(self, tenant: str, scope: str) -> str:
        return f"{self._tag(tenant)}:wv:{encode(scope)}"

    def _minute_version_key(self, tenant: str, scope: str) -> str:
        return f"{self._tag(tenant)}:wv:f:{encode(scope)}"

    def _totals_key(self, tenant: str, scope: str) -> str:
        return f"{self._tag(tenant)}:tot:{encode(scope)}"

    def _live_key(self, name: str, tenant: str, scope: str) -> str:
        return f"{self._tag(tenant)}:live:{encode(name)}:{encode(scope)}"

    def _record_key(self, kind: str, tenant: str, key: str) -> str:
        if kind == "customer":
            # Key names are listed by SCAN, KEYS and monitoring tools: a customer's record is
            # named by a keyed digest of the id (HMAC-SHA256 with the deployment's secret, 128
            # bits kept), never the id (a phone number, an e-mail) itself, nor a plain hash
            # (phone numbers are few enough to hash them all and look the digest up).
            mac = self._customer_mac.copy()
            mac.update(key.encode("utf-8", "surrogatepass"))
            return f"{self._tag(tenant)}:rec:customer:#{mac.hexdigest()[:32]}"
        return f"{self._tag(tenant)}:rec:{encode(kind)}:{encode(key)}"

    def _seen_key(self, tenant: str) -> str:
        return f"{self._tag(tenant)}:seen"

    @property
    def _tenants_key(self) -> str:
        return f"{self._pipeline_tag}:tenants"

    @property
    def _count_tenants_key(self) -> str:
        return f"{self._pipeline_tag}:count-tenants"

    def _count_names_key(self, tenant: str) -> str:
        return f"{self._tag(tenant)}:counts"

    def _count_key(self, tenant: str, name: str) -> str:
        """Pipeline counters live with the tenant whose events they count (rejections with
        the pipeline's own namespace), so each tenant's part of a batch is self-contained."""
        return f"{self._tag(tenant)}:count:{encode(name)}"

    def _pipeline_key(self, name: str) -> str:
        """A key of the pipeline's own (``consumer-lag``, ``stuck-partitions``)."""
        return f"{self._pipeline_tag}:{name}"

    def history_key(self, tenant: str, name: str) -> str:
        """The key of a tenant's board history (:class:`streams.web.api.RedisSlHistory`)."""
        return f"{self._tag(tenant)}:history:{encode(name)}"

    def _group(self, key: str) -> str:
        """The hash-slot group of ``key`` (its hash tag) on Redis Cluster; one group otherwise."""
        if not self.cluster:
            return ""
        start = key.index("{")
        return key[start : key.index("}", start) + 1]


# -- values as Redis holds them ----------------------------------------------------------------
def num(value: float) -> str:
    """A float as text that Redis and Lua read back exactly."""
    return repr(float(value))


def score_arg(x: float) -> str:
    """A score bound for ZRANGEBYSCORE that round-trips the double."""
    return "-inf" if x == -math.inf else "+inf" if x == math.inf else repr(x)


def utf8(name: str) -> bytes:
    # Names may hold lone surrogates (JSON "\\ud800"): keep them, as Python's own str does.
    return name.encode("utf-8", "surrogatepass")


def text(value: Any) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else str(value)


def floats(raw: Mapping[Any, Any]) -> dict[str, float]:
    return {text(k): float(v) for k, v in raw.items()}


def seen_digest(event_id: str) -> bytes:
    """The member of a seen set for ``event_id``."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=SEEN_DIGEST_BYTES).digest()


def dump_record(record: Record) -> bytes:
    """A record as compact JSON: orjson for what it can take, else json, which also writes
    lone surrogates (ids may hold them) as escapes. NaN never reaches a record (events are
    validated finite), but json's refusal of it is kept as the check."""
    try:
        return orjson.dumps(record)
    except TypeError:  # a str orjson will not encode (lone surrogate), or a non-str key
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("ascii")


def load_record(raw: bytes | str) -> Record:
    try:
        record: Record = orjson.loads(raw)
    except orjson.JSONDecodeError:  # lone surrogates written by json (see dump_record)
        record = json.loads(raw)
    return record


def record_version(raw: bytes | str | None) -> bytes:
    """What the batch script compares (``redis.sha1hex`` of the stored value) to tell that the
    record stored as ``raw`` is unchanged: the SHA-1 (hex) of the value, empty when absent.
    A digest of the whole value, so any writer's change is seen (one of an earlier release
    during a rolling upgrade too), with nothing added to the record."""
    if raw is None:
        return b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest().encode("ascii")
