"""The engine's state, behind one small interface.

The engine (``kpi_core.engine``) never holds state itself. Everything it remembers goes
through a :class:`StateStore`, in four shapes:

``records``
    One JSON-serialisable dict per entity (a call, a customer, a callback, a ticket, an agent,
    a knowledge-base session), read and rewritten whole, with an expiry time. Records are
    what make the engine order-independent: each holds the entity's facts and the
    contributions already applied for it, so a late event recomputes and applies the
    difference.
``buckets``
    Counters and sums per ``(tenant, scope, bucket)``, in a fine and a coarse tier
    (``kpi_core.windows``), plus lifetime totals of every field but the maxima' multisets.
    Every value the engine adds is a whole number (see "Exact arithmetic" below), so a sum is
    exact whatever the order of its additions and retractions.
``live sets``
    ``member -> score`` per ``(name, tenant, scope)``: calls waiting (score = offer time),
    callbacks pending (due time), open tickets (creation time), agents (``state\\x1fagent``).
``pipeline counts``
    ``name -> label -> value`` (events by type, rejections by reason, duplicates...).

A scope is a queue name, ``_all`` for tenant-wide agent series, or an internal name starting
with ``\\x1f`` (knowledge-base articles), which never collides with a queue because event
names cannot hold control characters.

Exact arithmetic
----------------
The engine adds only integers to buckets: counts, and quantities in thousandths in fields
whose name ends in ``_ms`` (before a channel or priority mark: ``asa_sum_ms@c:chat``):
durations in milliseconds (``wait_sum_ms``, ``handle_sum_ms``, ``frt_sum_ms``...; a duration
between two event times is the difference of the times in whole milliseconds, :func:`to_ms`,
so it is exact), the occupancy integrals ``occ_*_t_ms`` (``d * ts`` in ms) and the CES score
sum in thousandths of a point. Floats drifted: ``(6.063 + 437.682) - 437.682`` is
``6.062999999999988``, so a retraction left noise that depended on arrival order.

A maximum is a multiset, so it can be retracted like a sum: a contribution adds
``mx:<name>:<ms>`` = 1 (:func:`max_field`; ``mx:wait:5000`` for a 5 s wait) and its retraction
adds -1; a field that reaches 0 is deleted. The maximum is the largest ``<ms>`` with a count
above 0. A bucket's multiset holds at most one field per distinct value contributed to it
(at most one per outcome in it), and goes with the bucket; the lifetime totals keep no
multiset (maxima are windowed KPIs only), so nothing grows with time.

The read side (:meth:`StateStore.read_window`, :meth:`StateStore.totals`) presents the
legacy shape through :func:`present`, the one translation both stores use: ``wait_sum`` in
seconds, ``max_wait`` in seconds... State written before (a store upgraded in place) holds
float ``wait_sum`` and ``max_wait`` fields, and records whose applied contributions name
them; :func:`present` adds the legacy sum to the new one and takes the larger of the legacy
maximum and the multiset's. A legacy contribution is retracted under its own names, as
before, except its ``max_*`` part, which was never retractable and stays until its bucket
goes (docs/KPI_ENGINE.md, Limits).

Memory is bounded by the number of buckets (which :meth:`StateStore.maintain` prunes), the
live sets, and records, which expire. :class:`MemoryState` is the in-process store used by
``ccmon replay`` and ``ccmon demo``; ``streams.redis.state`` keeps the same shapes in Redis.
"""

from __future__ import annotations

import marshal
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from kpi_core import windows
from kpi_core.native import mypyc_attr

if TYPE_CHECKING:
    import numpy as np

    from kpi_core.config import Config

Record = dict[str, Any]
#: A contribution's value: a whole number (counts, ms, multiset counts), or a float in state
#: written before exact aggregation. Typed ``int | float``, not ``float``: compiled by mypyc
#: (kpi_core.native), a value held in a ``float`` variable becomes a float, and a sum of floats
#: is no longer exact beyond 2^53 nor the same objects the interpreted engine keeps.
Amount = int | float
KB_SCOPE_PREFIX = "\x1fkb\x1f"
#: The scope holding the lifetime totals of a tenant's retired queues (series_retire), so
#: the tenant's own counters never go down.
RETIRED_SCOPE = "\x1fretired"


def is_queue_scope(scope: str) -> bool:
    return not scope.startswith("\x1f")


class LiveSummary(NamedTuple):
    """Members of a live set with ``lo <= score < hi``: how many, the smallest score (None
    when there are none), and the sum of ``at - score`` added in ascending score order (so
    that every store gets the same bits)."""

    size: int
    oldest: float | None
    age_sum: float


def summarize_live(members: Mapping[str, float], lo: float, hi: float, at: float) -> LiveSummary:
    """:class:`LiveSummary` of ``members`` (the reference for every store)."""
    scores = sorted(s for s in members.values() if lo <= s < hi)
    age_sum = 0.0
    for score in scores:
        age_sum += at - score
    return LiveSummary(len(scores), scores[0] if scores else None, age_sum)


def count_states(members: Mapping[str, float], at: float) -> tuple[dict[str, int], dict[str, int]]:
    """Members by the part of their name before ``\\x1f`` (an agent's state): all of them,
    and those with ``score < at``."""
    every: dict[str, int] = {}
    before: dict[str, int] = {}
    for member, since in members.items():
        state = member.partition("\x1f")[0]
        every[state] = every.get(state, 0) + 1
        if since < at:
            before[state] = before.get(state, 0) + 1
    return every, before


class StateStore(Protocol):
    """What the engine, the worker and the exporter need from a store. All times are UTC
    epoch seconds."""

    fine_seconds: int
    coarse_seconds: int

    # -- batches and reads ahead (the worker; :meth:`kpi_core.engine.Engine.prefetch`) -----
    def batch(self) -> AbstractContextManager[Any]:
        """One unit of work: the writes inside land together at its end, or not at all."""

    def prefetch_seen(self, items: Iterable[tuple[str, str, float]]) -> None:
        """Read ahead (in a batch) whether each ``(tenant, event_id, ts)`` was seen."""

    def prefetch_series(self, items: Iterable[tuple[str, str, str]], since: float) -> None:
        """Read ahead (in a batch) the guard's registry entries of ``(kind, tenant, name)``."""

    def prefetch_records(self, kind: str, tenant: str, keys: Iterable[str]) -> None:
        """Read ahead (in a batch) the records ``keys`` of ``kind``."""

    # -- write side ------------------------------------------------------------------------
    def claim_event(self, tenant: str, event_id: str, ts: float) -> bool:
        """Remember ``event_id``; ``False`` when it was seen before (a duplicate)."""

    def get_record(self, kind: str, tenant: str, key: str) -> Record | None:
        """A copy the caller may change; changes persist only through :meth:`put_record`."""

    def put_record(self, kind: str, tenant: str, key: str, record: Record, expire_at: float) -> None: ...

    def delete_record(self, kind: str, tenant: str, key: str) -> None: ...

    def add(self, tenant: str, scope: str, ts: float, deltas: Mapping[str, Amount]) -> None:
        """Add ``deltas`` to the buckets holding ``ts`` and to the lifetime totals."""

    def live_put(self, name: str, tenant: str, scope: str, member: str, score: float) -> None: ...

    def live_remove(self, name: str, tenant: str, scope: str, member: str) -> None: ...

    def count(self, name: str, label: str, delta: float = 1.0, tenant: str = "") -> None:
        """Add to pipeline counter ``name{label}`` (``tenant``: whose event it counts)."""

    def count_max(self, name: str, label: str, value: float, tenant: str = "") -> None: ...

    # -- the cardinality guard's registry: name -> when it was last admitted ---------------
    def series_seen(self, kind: str, tenant: str, name: str) -> float | None:
        """When ``name`` (a tenant, queue, agent or article) was last admitted, or None."""

    def series_count(self, kind: str, tenant: str, since: float) -> int:
        """How many names of ``kind`` were last admitted at or after ``since``."""

    def series_touch(self, kind: str, tenant: str, name: str, at: float) -> None:
        """Admit ``name`` (again) at ``at``; the later time wins."""

    def series_oldest(self, kind: str, tenant: str, n: int) -> tuple[int, list[tuple[str, float]]]:
        """How many names of ``kind`` are registered, and the ``n`` least recently admitted
        ``(name, at)``, oldest first (ties: by the name's UTF-8 bytes, as Redis orders them)."""

    def series_live(self, kind: str, tenant: str, names: Iterable[str], limit: int) -> set[str]:
        """Which of ``names`` are exported: not registered (not guarded), or among the ``limit``
        most recently admitted names of ``kind`` (see :func:`newest_first`)."""

    def series_retire(self, kind: str, tenant: str, names: Mapping[str, float | None]) -> int:
        """Retire each name still admitted at exactly the given time (None: a scope with no
        registry entry, retired only while it has none and no bucket is kept): its registry
        entry and its state (a queue's or article's scope, an agent's live members, a tenant's
        everything) go. Counts ``series_retired{kind}``; returns how many were retired.
        Idempotent: a name admitted again meanwhile, or already retired, is left alone."""

    # -- read side -------------------------------------------------------------------------
    def scopes(self) -> Mapping[str, Iterable[str]]:
        """tenant -> scopes that have any state."""

    def read_window(self, tenant: str, scope: str, start: float, end: float) -> dict[str, float]:
        """The sum of the buckets covering ``[start, end)``, as :func:`present` shows it."""

    def totals(self, tenant: str, scope: str) -> dict[str, float]:
        """The lifetime totals, as :func:`present` shows them (no maxima: windowed only)."""

    def live(self, name: str, tenant: str, scope: str) -> dict[str, float]: ...

    def live_size(self, name: str, tenant: str, scope: str) -> int:
        """How many members a live set has."""

    def live_summary(self, name: str, tenant: str, scope: str, lo: float, hi: float, at: float) -> LiveSummary:
        """:func:`summarize_live` of a live set, without handing over its members."""

    def live_states(self, name: str, tenant: str, scope: str, at: float) -> tuple[dict[str, int], dict[str, int]]:
        """:func:`count_states` of a live set, without handing over its members."""

    def counts(self) -> dict[str, dict[str, float]]: ...

    def snapshot_reader(self, config: Config, at: float) -> StateStore:
        """The read side for one snapshot at ``at`` (the exporter's scrape): reads it may
        prepare ahead; the store itself where it prepares none."""

    def events_version(self) -> Any:
        """Something cheap to read that changes whenever events land (the board's push polls
        it); always None for a store with no such thing (the board then refreshes on its timer)."""

    # -- pipeline figures: written by the workers of a shared store, served by the exporter --
    def consumer_lag(self) -> dict[tuple[str, int], float] | None:
        """The consumer group's lag, ``(topic, partition) -> messages behind``; None for a
        store no worker writes to (no ``ccmon_consumer_lag`` family at all)."""

    def stuck_partitions(self) -> dict[tuple[str, int], float] | None:
        """Partitions a worker's watchdog found stuck, ``(topic, partition) -> unix time``;
        None for a store no worker writes to."""

    # -- upkeep ----------------------------------------------------------------------------
    def maintain(self, now: float, fine_keep_seconds: float, coarse_keep_seconds: float) -> None:
        """Drop buckets, records and remembered event ids that can no longer matter."""


def _name_order(item: tuple[str, float]) -> tuple[float, bytes]:
    return item[1], item[0].encode("utf-8", "surrogatepass")


def newest_first(registry: Mapping[str, float]) -> list[tuple[str, float]]:
    """A registry's ``(name, at)``, most recently admitted first; equal times by the name's
    UTF-8 bytes, greatest first (Redis's ZREVRANGE order)."""
    return sorted(registry.items(), key=_name_order, reverse=True)


def retirable(
    oldest: Iterable[tuple[str, float]], total: int, limit: int, since: float, before: float
) -> list[tuple[str, float]]:
    """The names to retire among a registry's oldest entries (``(name, at)``, oldest first, of
    ``total``): those admitted before ``before`` (idle past the retention), and those admitted
    before ``since`` (idle past the state horizon: the guard no longer counts them) that are
    not among the ``limit`` newest (a newer name took their place, so they are not exported).
    Both are prefixes of the oldest-first order, so the answer is one too."""
    result = []
    for i, (name, at) in enumerate(oldest):
        if not (at < before or (i < total - limit and at < since)):
            break
        result.append((name, at))
    return result


#: A maximum's multiset fields: ``mx:<name>:<thousandths>`` -> count (:func:`max_field`).
MAX_PREFIX = "mx:"
#: The suffix of a field in thousandths (milliseconds), before any ``@`` breakdown mark.
MS_SUFFIX = "_ms"


def to_ms(value: float) -> int:
    """``value`` (seconds, or points) in whole thousandths, rounded half away from zero."""
    scaled = value * 1000.0
    return int(scaled + 0.5) if scaled >= 0 else -int(-scaled + 0.5)


def max_field(name: str, value_ms: int) -> str:
    """The multiset field of one value of maximum ``name`` (presented as ``max_<name>``)."""
    return f"{MAX_PREFIX}{name}:{value_ms}"


def add_into(target: dict[str, Any], deltas: Mapping[str, Amount], multisets: bool = True) -> None:
    """Add ``deltas`` to a stored bucket ``target``: sums (whole numbers stay ints), a
    multiset field that reaches 0 deleted, legacy ``max_*`` fields as maxima. Without
    ``multisets`` (lifetime totals), multiset fields are left out."""
    get = target.get
    for field, value in deltas.items():
        if field[:1] != "m":  # the common case: a sum (both kinds of maxima start with "m")
            target[field] = get(field, 0) + value
        elif field.startswith(MAX_PREFIX):
            if multisets:
                count = get(field, 0) + value
                if count:
                    target[field] = count
                else:
                    target.pop(field, None)
        elif field.startswith("max_"):  # written before maxima were multisets
            if value > get(field, float("-inf")):
                target[field] = value
        else:
            target[field] = get(field, 0) + value


def present(fields: Mapping[str, Amount]) -> dict[str, float]:
    """Stored fields (a bucket, a sum of buckets, totals) in the shape the KPI layer reads,
    all floats: a ``<name>_ms`` field as ``<name>`` in seconds (``asa_sum_ms@c:chat`` as
    ``asa_sum@c:chat``), added to a legacy ``<name>`` field if there is one; the multiset
    ``mx:<name>:<ms>`` fields with a count above 0 as ``max_<name>`` in seconds, the larger
    of their largest value and a legacy ``max_<name>``. Everything else as it is. The one
    translation both stores use, so they present the same bits."""
    out: dict[str, float] = {}
    scaled: dict[str, Amount] = {}
    maxima: dict[str, int] = {}
    for field, value in fields.items():
        if field.startswith(MAX_PREFIX):
            if value > 0:
                name, _sep, ms = field[3:].rpartition(":")
                n = int(ms)
                if n > maxima.get(name, -(1 << 62)):
                    maxima[name] = n
        elif MS_SUFFIX in field:
            base, at, mark = field.partition("@")
            if base.endswith(MS_SUFFIX):
                scaled[base[:-3] + at + mark] = value
            else:
                out[field] = float(value)
        else:
            out[field] = float(value)
    for field, value in scaled.items():
        out[field] = out.get(field, 0.0) + value / 1000
    for name, n in maxima.items():
        # float() first: compiled code divides an int as a double, and both must give the
        # same bits beyond 2^53 ms too (Python's int / int would round once, exactly).
        seconds = float(n) / 1000
        legacy = out.get("max_" + name)
        if legacy is None or seconds > legacy:
            out["max_" + name] = seconds
    return out


def merge_into(target: dict[str, float], deltas: Mapping[str, float]) -> None:
    """Sum presented components ``deltas`` into ``target``; ``max_*`` fields take the maximum."""
    for field, value in deltas.items():
        if field.startswith("max_"):
            if value > target.get(field, float("-inf")):
                target[field] = value
        else:
            target[field] = target.get(field, 0.0) + value


#: Ids a :class:`_SeenIds` holds in a dict before merging them into its sorted arrays.
SEEN_MERGE_EVERY = 1 << 15


class _SeenIds:
    """The event ids a :class:`MemoryState` has seen, as a 64-bit hash of ``(tenant, event_id)``
    with the hour of the ts each was first seen with (:meth:`MemoryState.claim_event`).

    The newest (up to ``merge_every``) are in a dict, hash -> hour; the rest in two numpy
    arrays, the hashes sorted and their hours alongside (16 bytes an id, where a dict of Python
    ints takes ~100: 100 MiB at a million ids). A lookup tries the dict, then a binary search
    of the array; a full dict is merged into the arrays in one pass. Forgetting an hour drops
    its ids from both."""

    def __init__(self, merge_every: int = SEEN_MERGE_EVERY) -> None:
        self._merge_every = merge_every
        self._new: dict[int, int] = {}
        self._keys: np.ndarray | None = None  # int64, sorted
        self._hours: np.ndarray | None = None  # int64, the hour of each of _keys
        self._count = 0  # len(_keys)
        self._held: set[int] = set()  # every hour some id has
        #: hash -> whether it is in the arrays, for the ids of the last :meth:`prefetch` (until
        #: the arrays change).
        self._ahead: dict[int, bool] = {}

    def __len__(self) -> int:
        return len(self._new) + self._count

    def claim(self, tenant: str, event_id: str, ts: float) -> bool:
        # A 64-bit hash instead of the id itself keeps a day of ids small; a false duplicate
        # needs a collision among ~2^32 ids. hash() is salted per process, which is fine for a
        # store that lives in one process.
        # Idempotence on event_id alone (EVENTS.md): a re-sent event is a duplicate whatever
        # ts it carries. The id is remembered by the hour of its first ts, and forgotten with
        # that hour's state (MemoryState.maintain), when no event of that time is accepted any more.
        key = hash((tenant, event_id))
        if key in self._new:
            return False
        found = self._ahead.get(key)
        if found is None:
            keys = self._keys
            if keys is not None:
                at = keys.searchsorted(key)
                if at < self._count and keys.item(at) == key:
                    return False
        elif found:
            return False
        hour = int(ts // 3600)
        self._new[key] = hour
        self._held.add(hour)
        if len(self._new) >= self._merge_every:
            self._merge()
        return True

    def prefetch(self, items: Iterable[tuple[str, str, float]]) -> None:
        """Search the arrays for the ids of ``(tenant, event_id, ts)`` at once (one binary
        search of all, where :meth:`claim` would make one each)."""
        keys = self._keys
        if keys is None:
            return
        import numpy as np

        probe = np.fromiter((hash((tenant, event_id)) for tenant, event_id, _ts in items), np.int64)
        if len(probe):
            found = keys[np.minimum(keys.searchsorted(probe), self._count - 1)] == probe
            self._ahead = dict(zip(probe.tolist(), found.tolist(), strict=True))

    def _merge(self) -> None:
        import numpy as np

        new = self._new
        keys = np.fromiter(new.keys(), np.int64, len(new))
        hours = np.fromiter(new.values(), np.int64, len(new))
        order = keys.argsort()
        keys, hours = keys[order], hours[order]
        if self._keys is not None and self._hours is not None:
            at = self._keys.searchsorted(keys)
            keys = np.insert(self._keys, at, keys)
            hours = np.insert(self._hours, at, hours)
        self._keys, self._hours, self._count = keys, hours, len(keys)
        self._new = {}
        self._ahead = {}

    def forget(self, drop: Callable[[int], bool]) -> None:
        """Forget the ids of every hour for which ``drop(hour)`` holds."""
        gone = {hour for hour in self._held if drop(hour)}
        if not gone:
            return
        self._held -= gone
        self._ahead = {}
        self._new = {key: hour for key, hour in self._new.items() if hour not in gone}
        if self._keys is not None and self._hours is not None:
            import numpy as np

            keep = ~np.isin(self._hours, np.fromiter(gone, np.int64, len(gone)))
            self._keys, self._hours = self._keys[keep], self._hours[keep]
            self._count = len(self._keys)
            if not self._count:
                self._keys = self._hours = None


#: A stored record's expiry, after its marshal dump (:class:`_Records`).
_EXPIRY = struct.Struct("<d")
#: Fewest records not written for an upkeep interval that :meth:`_Records.compact` samples
#: its compression dictionary from (fewer: they stay as they are until there are more).
COMPACT_SAMPLE_MIN = 64
#: The compression dictionary's size (the deflate window, ``wbits`` 12: 4 KiB).
_ZDICT_BYTES = 4096


class _Group:
    """The records of one ``(kind, tenant)``: ``key -> bytes``, and the keys written since the
    last two upkeeps."""

    __slots__ = ("blobs", "previous", "written")

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.written: set[str] = set()
        self.previous: set[str] = set()


class _Records:
    """Records (``MemoryState.get_record``...) by ``(kind, tenant)`` and key, each as one bytes
    object: its marshal dump followed by its expiry (8 bytes, a double; ``marshal.loads``
    ignores what follows a dump), ~0.6 KB for a finished call instead of ~3 KB of live lists
    and dicts. A record not written during a whole upkeep interval (:meth:`compact`: most of a
    day's calls are finished, kept for late events only) is deflated with a dictionary sampled
    from the store's first such records (a third of its size) and marked by a leading zero
    byte, which no marshal dump has. Reading one inflates it; writing it stores it plain again.
    Only what :meth:`expire` drops ever leaves: the bytes are the record, compressed or not."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], _Group] = {}
        #: No record expires before this (the smallest expiry since the last sweep, or lower).
        self._floor = float("inf")
        self._deflate: Any = None  # zlib compress object primed with the dictionary (copied per record)
        self._inflate: Any = None

    def __len__(self) -> int:
        return sum(len(group.blobs) for group in self._groups.values())

    # -- a mapping view, ``(kind, tenant, key) -> (marshal dump, expiry)`` (tests, benchmarks) --
    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        for (kind, tenant), group in list(self._groups.items()):
            for key in list(group.blobs):
                yield kind, tenant, key

    def __getitem__(self, rkey: tuple[str, str, str]) -> tuple[bytes, float]:
        kind, tenant, key = rkey
        group = self._groups.get((kind, tenant))
        blob = group.blobs.get(key) if group is not None else None
        if blob is None:
            raise KeyError(rkey)
        dump = blob[:-8] if blob[0] else self._inflate.copy().decompress(memoryview(blob)[1:])
        return dump, _EXPIRY.unpack_from(blob, len(blob) - 8)[0]

    def __setitem__(self, rkey: tuple[str, str, str], value: tuple[bytes, float]) -> None:
        kind, tenant, key = rkey
        self.put(kind, tenant, key, marshal.loads(value[0]), value[1])

    def items(self) -> Iterator[tuple[tuple[str, str, str], tuple[bytes, float]]]:
        for rkey in self:
            yield rkey, self[rkey]

    @property
    def cold(self) -> int:
        """How many records are kept compressed."""
        return sum(1 for group in self._groups.values() for blob in group.blobs.values() if not blob[0])

    def get(self, kind: str, tenant: str, key: str) -> Record | None:
        group = self._groups.get((kind, tenant))
        if group is None:
            return None
        blob = group.blobs.get(key)
        if blob is None:
            return None
        if blob[0]:
            return marshal.loads(blob)
        return marshal.loads(self._inflate.copy().decompress(memoryview(blob)[1:]))

    def put(self, kind: str, tenant: str, key: str, record: Record, expire_at: float) -> None:
        group = self._groups.get((kind, tenant))
        if group is None:
            group = self._groups[(kind, tenant)] = _Group()
        group.blobs[key] = marshal.dumps(record) + _EXPIRY.pack(expire_at)
        group.written.add(key)
        if expire_at < self._floor:
            self._floor = expire_at

    def delete(self, kind: str, tenant: str, key: str) -> None:
        group = self._groups.get((kind, tenant))
        if group is not None:
            group.blobs.pop(key, None)

    def expire(self, now: float) -> None:
        """Drop the records whose expiry is before ``now``."""
        if self._floor >= now:
            return  # nothing expires yet: no sweep
        floor = float("inf")
        unpack = _EXPIRY.unpack_from
        for group in self._groups.values():
            blobs = group.blobs
            gone = []
            for key, blob in blobs.items():
                expire_at = unpack(blob, len(blob) - 8)[0]
                if expire_at < now:
                    gone.append(key)
                elif expire_at < floor:
                    floor = expire_at
            for key in gone:
                del blobs[key]
        self._floor = floor

    def compact(self) -> None:
        """Compress the records not written since the previous call (an upkeep interval)."""
        stale = [(group, group.previous - group.written) for group in self._groups.values()]
        for group, _keys in stale:
            group.previous, group.written = group.written, set()
        if self._deflate is None and not self._prime([blob for g, keys in stale for blob in _blobs(g, keys)]):
            for group, keys in stale:
                group.previous |= keys  # still plain: considered again at the next call
            return
        deflate = self._deflate
        for group, keys in stale:
            blobs = group.blobs
            for key in keys:
                blob = blobs.get(key)
                if blob is not None and blob[0]:
                    packer = deflate.copy()
                    blobs[key] = b"\0" + packer.compress(memoryview(blob)[:-8]) + packer.flush() + blob[-8:]

    def _prime(self, sample: list[bytes]) -> bool:
        """Make the compressor, its dictionary sampled from ``sample`` (plain records); False
        when there are too few to sample from."""
        if len(sample) < COMPACT_SAMPLE_MIN:
            return False
        # Every n-th record's dump, so that every kind of record is in it by its share;
        # deflate matches nearer strings more cheaply, and the newest are nearest.
        step = max(1, len(sample) * 600 // _ZDICT_BYTES)
        zdict = b"".join(blob[:-8] for blob in sample[::step])[-_ZDICT_BYTES:]
        self._deflate = zlib.compressobj(1, zlib.DEFLATED, -12, 4, zlib.Z_DEFAULT_STRATEGY, zdict)
        self._inflate = zlib.decompressobj(-12, zdict)
        return True


def _blobs(group: _Group, keys: Iterable[str]) -> Iterator[bytes]:
    for key in keys:
        blob = group.blobs.get(key)
        if blob is not None and blob[0]:
            yield blob


@mypyc_attr(allow_interpreted_subclasses=True)  # tests and tools extend it (kpi_core.native)
class MemoryState:
    """In-process :class:`StateStore`: dicts, pruned by :meth:`maintain`."""

    def __init__(self, fine_seconds: int = 10, coarse_seconds: int = 900) -> None:
        self.fine_seconds = fine_seconds
        self.coarse_seconds = coarse_seconds
        self._seen = _SeenIds()
        self._records = _Records()
        self._fine: dict[tuple[str, str], dict[int, dict[str, Amount]]] = {}
        self._coarse: dict[tuple[str, str], dict[int, dict[str, Amount]]] = {}
        self._totals: dict[tuple[str, str], dict[str, Amount]] = {}
        self._live: dict[tuple[str, str, str], dict[str, float]] = {}
        self._counts: dict[str, dict[str, float]] = {}
        self._scopes: dict[str, set[str]] = {}
        self._series: dict[tuple[str, str], dict[str, float]] = {}

    # -- batches and reads ahead: every write lands at once, every read is local -----------
    @contextmanager
    def batch(self) -> Iterator[MemoryState]:
        yield self

    def prefetch_seen(self, items: Iterable[tuple[str, str, float]]) -> None:
        self._seen.prefetch(items)

    def prefetch_series(self, items: Iterable[tuple[str, str, str]], since: float) -> None:
        pass

    def prefetch_records(self, kind: str, tenant: str, keys: Iterable[str]) -> None:
        pass

    # -- write side ------------------------------------------------------------------------
    def claim_event(self, tenant: str, event_id: str, ts: float) -> bool:
        return self._seen.claim(tenant, event_id, ts)

    def get_record(self, kind: str, tenant: str, key: str) -> Record | None:
        return self._records.get(kind, tenant, key)

    def put_record(self, kind: str, tenant: str, key: str, record: Record, expire_at: float) -> None:
        self._records.put(kind, tenant, key, record, expire_at)

    def delete_record(self, kind: str, tenant: str, key: str) -> None:
        self._records.delete(kind, tenant, key)

    def add(self, tenant: str, scope: str, ts: float, deltas: Mapping[str, Amount]) -> None:
        key = (tenant, scope)
        fine = self._fine.get(key)
        if fine is None:
            fine = self._fine[key] = {}
            self._coarse[key] = {}
            self._totals[key] = {}
            self._scopes.setdefault(tenant, set()).add(scope)
        fstart = int(ts // self.fine_seconds) * self.fine_seconds
        cstart = int(ts // self.coarse_seconds) * self.coarse_seconds
        bucket = fine.get(fstart)
        if bucket is None:
            bucket = fine[fstart] = {}
        coarse = self._coarse[key]
        cbucket = coarse.get(cstart)
        if cbucket is None:
            cbucket = coarse[cstart] = {}
        totals = self._totals[key]
        # add_into of the three at once, field by field: a sum (the common case) inline, a
        # maximum's field through add_into.
        for field, value in deltas.items():
            if field[:1] != "m":
                bucket[field] = bucket.get(field, 0) + value
                cbucket[field] = cbucket.get(field, 0) + value
                totals[field] = totals.get(field, 0) + value
            else:
                one = {field: value}
                add_into(bucket, one)
                add_into(cbucket, one)
                add_into(totals, one, multisets=False)

    def live_put(self, name: str, tenant: str, scope: str, member: str, score: float) -> None:
        key = (name, tenant, scope)
        members = self._live.get(key)
        if members is None:
            members = self._live[key] = {}
            self._scopes.setdefault(tenant, set()).add(scope)
        members[member] = score

    def live_remove(self, name: str, tenant: str, scope: str, member: str) -> None:
        members = self._live.get((name, tenant, scope))
        if members is not None:
            members.pop(member, None)

    def count(self, name: str, label: str, delta: float = 1.0, tenant: str = "") -> None:
        labels = self._counts.setdefault(name, {})
        labels[label] = labels.get(label, 0.0) + delta

    def count_max(self, name: str, label: str, value: float, tenant: str = "") -> None:
        labels = self._counts.setdefault(name, {})
        if value > labels.get(label, float("-inf")):
            labels[label] = value

    def series_seen(self, kind: str, tenant: str, name: str) -> float | None:
        return self._series.get((kind, tenant), {}).get(name)

    def series_count(self, kind: str, tenant: str, since: float) -> int:
        return sum(1 for at in self._series.get((kind, tenant), {}).values() if at >= since)

    def series_touch(self, kind: str, tenant: str, name: str, at: float) -> None:
        names = self._series.setdefault((kind, tenant), {})
        if at > names.get(name, float("-inf")):
            names[name] = at

    def series_oldest(self, kind: str, tenant: str, n: int) -> tuple[int, list[tuple[str, float]]]:
        names = self._series.get((kind, tenant), {})
        return len(names), sorted(names.items(), key=_name_order)[:n]

    def series_live(self, kind: str, tenant: str, names: Iterable[str], limit: int) -> set[str]:
        registry = self._series.get((kind, tenant), {})
        newest = {name for name, _at in newest_first(registry)[:limit]}
        return {name for name in names if name not in registry or name in newest}

    def series_retire(self, kind: str, tenant: str, names: Mapping[str, float | None]) -> int:
        registry = self._series.get((kind, tenant), {})
        retired = 0
        for name, at in names.items():
            if at is None:  # a scope with no registry entry (kind queue or article)
                scope = KB_SCOPE_PREFIX + name if kind == "article" else name
                if name in registry or self._coarse.get((tenant, scope)) or scope not in self._scopes.get(tenant, ()):
                    continue
                if kind == "queue":
                    self._retire_totals(tenant, scope)
                self._drop_scope(tenant, scope)
            elif registry.get(name) != at:
                continue
            else:
                del registry[name]
                if kind == "queue":
                    self._retire_totals(tenant, name)
                    self._drop_scope(tenant, name)
                elif kind == "article":
                    self._drop_scope(tenant, KB_SCOPE_PREFIX + name)
                elif kind == "agent":
                    for (_live, live_tenant, _scope), members in self._live.items():
                        if live_tenant == tenant:
                            for member in [m for m in members if m.partition("\x1f")[2] == name]:
                                del members[member]
                elif kind == "tenant":
                    for scope in list(self._scopes.get(name, ())):
                        self._drop_scope(name, scope)
                    self._scopes.pop(name, None)
                    for key in [k for k in self._series if k[1] == name]:
                        del self._series[key]
            retired += 1
        if retired:
            self.count("series_retired", kind, retired, tenant)
        return retired

    def _retire_totals(self, tenant: str, queue: str) -> None:
        """Add a retiring queue's lifetime totals to the tenant's :data:`RETIRED_SCOPE`."""
        totals = self._totals.get((tenant, queue))
        if totals:
            add_into(self._totals.setdefault((tenant, RETIRED_SCOPE), {}), totals, multisets=False)
            self._scopes.setdefault(tenant, set()).add(RETIRED_SCOPE)

    def _drop_scope(self, tenant: str, scope: str) -> bool:
        """Forget everything of one scope; False when it had nothing listed."""
        key = (tenant, scope)
        for tier in (self._fine, self._coarse, self._totals):
            tier.pop(key, None)
        for live_key in [k for k in self._live if k[1] == tenant and k[2] == scope]:
            del self._live[live_key]
        scopes = self._scopes.get(tenant)
        if scopes is None or scope not in scopes:
            return False
        scopes.discard(scope)
        return True

    # -- read side -------------------------------------------------------------------------
    def scopes(self) -> Mapping[str, Iterable[str]]:
        return {tenant: sorted(scopes) for tenant, scopes in self._scopes.items()}

    def read_window(self, tenant: str, scope: str, start: float, end: float) -> dict[str, float]:
        key = (tenant, scope)
        result: dict[str, Any] = {}
        fine = self._fine.get(key)
        if fine is None:
            return result
        coarse = self._coarse[key]
        head, middle, tail = windows.cover(start, end, self.fine_seconds, self.coarse_seconds)
        for starts, tier in ((head, fine), (middle, coarse), (tail, fine)):
            if len(starts) > len(tier):
                for bstart, bucket in tier.items():
                    if bstart in starts:
                        add_into(result, bucket)
            else:
                for bstart in starts:
                    found = tier.get(bstart)
                    if found is not None:
                        add_into(result, found)
        return present(result)

    def totals(self, tenant: str, scope: str) -> dict[str, float]:
        return present(self._totals.get((tenant, scope), {}))

    def live(self, name: str, tenant: str, scope: str) -> dict[str, float]:
        return dict(self._live.get((name, tenant, scope), {}))

    def live_size(self, name: str, tenant: str, scope: str) -> int:
        return len(self._live.get((name, tenant, scope), ()))

    def live_summary(self, name: str, tenant: str, scope: str, lo: float, hi: float, at: float) -> LiveSummary:
        return summarize_live(self._live.get((name, tenant, scope), {}), lo, hi, at)

    def live_states(self, name: str, tenant: str, scope: str, at: float) -> tuple[dict[str, int], dict[str, int]]:
        return count_states(self._live.get((name, tenant, scope), {}), at)

    def counts(self) -> dict[str, dict[str, float]]:
        return {name: dict(labels) for name, labels in self._counts.items()}

    def snapshot_reader(self, config: Config, at: float) -> MemoryState:
        return self

    def events_version(self) -> None:
        return None

    # -- pipeline figures: an in-process store has no workers ------------------------------
    def consumer_lag(self) -> None:
        return None

    def stuck_partitions(self) -> None:
        return None

    # -- upkeep ----------------------------------------------------------------------------
    def maintain(self, now: float, fine_keep_seconds: float, coarse_keep_seconds: float) -> None:
        fine_cutoff = now - fine_keep_seconds - self.fine_seconds
        coarse_cutoff = now - coarse_keep_seconds - self.coarse_seconds
        for tiers, cutoff in ((self._fine, fine_cutoff), (self._coarse, coarse_cutoff)):
            for buckets in tiers.values():
                for bstart in [b for b in buckets if b < cutoff]:
                    del buckets[bstart]
        self._seen.forget(lambda hour: (hour + 1) * 3600 < coarse_cutoff)
        self._records.expire(now)
        self._records.compact()
        # The guard's registry is not pruned here: a name leaves it when it retires, with its
        # state (Engine.maintain, series_retire), so the registry and the export always agree.

    # -- introspection (tests, benchmarks) -------------------------------------------------
    def sizes(self) -> dict[str, int]:
        return {
            "event_ids": len(self._seen),
            "records": len(self._records),
            "cold_records": self._records.cold,
            "fine_buckets": sum(len(b) for b in self._fine.values()),
            "coarse_buckets": sum(len(b) for b in self._coarse.values()),
            "live_members": sum(len(m) for m in self._live.values()),
        }
