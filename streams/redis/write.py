"""The write side of :class:`~streams.redis.state.RedisState`: batches.

Writes happen in batches (:meth:`BatchWriter.batch`). Inside one, records are read through a
per-batch cache (a round trip per wave of the engine's read plan: what it asks for is sent
together when the batch first needs one of them, the seen ids, the guard's names and every kind
of record in one write; :meth:`BatchWriter._flush`), noting each record's
version as read (:func:`~streams.redis.keys.record_version`: the SHA-1 of its value); all
writes are buffered and merged in Python (one value per key and field), and leave in one call
of one Lua script (:data:`~streams.redis.scripts.APPLY_LUA`,
``lua/apply.lua``), its arguments packed by hiredis. The script first checks that none of the
batch's event ids is already in its ``seen`` set and that every record the batch read is
still the version it read (op ``C``), then applies everything. The batch fails with
:class:`BatchConflict`, having changed nothing, when a record it read changed meanwhile or
another worker applied one of its events first: the caller recomputes the batch from
scratch. Because the ``seen`` sets are written in the same script as the counters, a batch
that is run again after a crash finds its events already seen and counts nothing twice.

Why versions and not ``WATCH``: Redis 7.0 checks each newly watched key against the list of
keys the client already watches, so a batch's ``WATCH``es cost Redis time quadratic in its
records (docs/BENCHMARKS.md); the version check is a ``GET`` and a SHA-1 per record, linear.
A digest of the whole value, not a version number kept in the record: a worker of an earlier
release (no versions, ``WATCH``) may run next to this one during a rolling upgrade, and any
change it makes is seen. The upkeep (:meth:`~kpi_core.engine.Engine.maintain`) still ``WATCH``es the
few live sets it reads (they have no version), and its batch then commits in
``MULTI``/``EXEC``.

The batch script is all-or-nothing, whatever fails inside it (Redis does not roll a script
back: what it wrote before an error stays). In three phases:

1. *Validation* of all of ARGV before anything else: every number parses and is finite,
   TTLs are whole milliseconds in ``1..MAX_TTL_MS`` (an integer Lua still prints as one),
   counts fit ARGV, every op is known, the seen-set ops come first and the ops match
   ``#KEYS``. A malformed batch gets an error ``ccmon apply: invalid batch, nothing
   written: ARGV[i] (what of op X #j) ..., got <value>``.
2. *Duplicates and changes*: the batch's event ids are looked up in their ``seen`` sets
   (``ZMSCORE``); one found returns ``{1, count}`` (a :class:`BatchConflict`), nothing
   written. Then each record the batch read is compared with its version as read (absent,
   or the SHA-1 of its value); one changed returns ``{2, count}``, nothing written.
3. *Writes*, under ``pcall``, every other op first and the ``seen`` ids last. Before each
   write, an undo log keeps what restores the state it changes: a hash's fields as text
   (one ``HMGET`` per hash, which also serves the ``max_`` comparisons), a record's value
   and expiry (``PEXPIRETIME`` then ``SET ... GET`` / ``GETDEL``; a key of another type is
   kept by ``DUMP``), a zset's members' scores (one ``ZMSCORE`` per op), a set's members
   (``SMISMEMBER``), the members a prune removes (read only when ``ZCOUNT`` finds some: an
   hour's seen ids once an hour), and an expiry as the instant it was (``PEXPIRETIME``).
   The ``seen`` ids were checked absent in phase 2, so undoing their ``ZADD NX`` is
   removing them: a big seen set is never copied. On an error, the log is played back in
   reverse (old text back with ``HSET``, so floats are exact; members and fields that were
   absent removed, so keys the batch created disappear; ``PEXPIREAT``/``PERSIST``/``SET
   PXAT``/``RESTORE ABSTTL``), and the script returns ``ccmon apply: <error> (after n
   write(s); all rolled back)``; Redis refusing writes (``OOM``, ``READONLY``...) comes back
   with its own code, so the worker waits for Redis instead of dead-lettering the batch.
   A ``ccmon apply`` error is the data's: the worker (``BatchProcessor._resilient``) narrows
   it down to the one event, dead-letters it, and applies the rest, exactly once.

The cost: one read per hash, record and zset op touched (the reads the writes need anyway
are shared), and a validation pass over ARGV (docs/BENCHMARKS.md). A test-only hook,
:attr:`BatchWriter.fail_at_write` (``ARGV[2]``, 0 in production: a counter compared once per
write), makes the script fail just before its k-th write, or after its last one (-1), to show
the rollback at every step (tests/integration/test_batch_atomicity.py).

Bucket arithmetic (``kpi_core.state``, "Exact arithmetic"): the engine's deltas are whole
numbers (durations in ms, maxima as ``mx:<name>:<ms>`` multiset counts), sent as integer text
and added by ``HINCRBY`` as they are (int64, never through a Lua double), so Redis holds the
very integers :class:`~kpi_core.state.MemoryState` does, whatever the batching and order. A
bucket's multiset fields take op ``M``: a field that reaches 0 is deleted; a busy bucket's go
to its multiset hash beside it, the bucket keeping their ``mt:<name>`` tops
(:data:`~streams.redis.keys.MULTISET_TOP`, :attr:`BatchWriter.multiset_spill`); the totals
hashes get no multiset field. A
fractional delta (the retraction of a contribution applied before the upgrade, under its
legacy float name) still takes ``HINCRBYFLOAT``, and a legacy ``max_*`` field still takes the
maximum.

Expiry is by TTL, computed from the store's clock: a bucket lives as long as
:meth:`MemoryState.maintain <kpi_core.state.MemoryState.maintain>` would keep it (the engine's
``Config.fine_keep_seconds`` / ``coarse_keep_seconds``), a record until its ``expire_at`` (at
least :data:`~streams.redis.keys.MIN_TTL_SECONDS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import hiredis
import redis
from redis.cluster import RedisCluster

from kpi_core import windows
from kpi_core.config import Config
from kpi_core.errors import CcmonError
from kpi_core.state import MAX_PREFIX, Record, add_into
from streams.redis import scripts
from streams.redis.keys import (
    MIN_TTL_SECONDS,
    RedisKeys,
    dump_record,
    load_record,
    num,
    record_version,
    seen_digest,
    utf8,
)


def _connection(pipe: Any) -> Any:
    """``pipe``'s connection, taken from its pool on first use (kept until ``pipe.reset()``)."""
    conn = pipe.connection
    if conn is None:
        conn = pipe.connection = pipe.connection_pool.get_connection()
    return conn


def _send(pipe: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` on ``pipe``'s connection in one write and read their replies (an error
    reply raises it, after the rest are read). The arguments are packed by hiredis in C: the
    batch script takes thousands of them, which redis-py would encode one by one in Python
    (docs/BENCHMARKS.md, "Engine v2, the write path"). Any other failure (the connection, a
    timeout) closes the connection, so no reply is left unread on it, and raises: the
    worker retries the whole batch (no WATCH survives a closed connection)."""
    conn = _connection(pipe)
    replies: list[Any] = []
    error: redis.ResponseError | None = None
    try:
        conn.send_packed_command([b"".join([hiredis.pack_command(command) for command in commands])])  # one write
        for _command in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                error = error or exc
                replies.append(exc)
    except BaseException:
        conn.disconnect()
        pipe.watching = False
        raise
    if error is not None:
        raise error
    return replies


def _run_script(pipe: Any, command: tuple[Any, ...], *, watching: bool) -> Any:
    """Run ``command`` (the batch script) on ``pipe``'s connection: its reply. ``watching``:
    the connection holds WATCHes, so it runs in ``MULTI``/``EXEC`` and raises
    :class:`redis.WatchError` when a watched key changed. An error reply raises: the
    command's own, or the one Redis gave when it refused to queue it (``OOM``,
    ``READONLY``...; the EXEC is then aborted), as a redis-py pipeline raises them."""
    if not watching:
        (reply,) = _send(pipe, [command])
        return reply
    try:
        _ok, _queued, replies = _send(pipe, [("MULTI",), command, ("EXEC",)])
    finally:
        pipe.watching = False  # EXEC (or its abort) ends every WATCH of the connection
    if replies is None:
        raise redis.WatchError("Watched variable changed.")
    (reply,) = replies
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply


class BatchConflict(CcmonError):
    """A batch could not be applied because another writer got there first (a record it read
    changed, or one of its events was applied). Nothing was written: recompute the
    whole batch and try again."""


def _check_reply(result: Any, where: str = "") -> None:
    """The batch script's reply: 0 when it applied the batch; ``{1, n}`` (n of its events were
    applied by another writer first) or ``{2, n}`` (n records it read were changed) raise
    :class:`BatchConflict`, nothing having been written."""
    if result != 0:
        what = "event(s) of the batch were applied" if result[0] == 1 else "record(s) it read were changed"
        raise BatchConflict(f"{result[1]} {what} by another writer first{where}")


@dataclass
class _Hash:
    """Buffered changes to one hash: summed deltas and maxima. Bucket hashes keep both in
    ``sums`` (added by :func:`~kpi_core.state.add_into`: whole deltas stay ints, a multiset
    field whose deltas cancel out is dropped, legacy ``max_*`` fields take the max)."""

    ttl_at: float | None  # engine-clock expiry, None = keep
    sums: dict[str, float] = field(default_factory=dict)
    maxes: dict[str, float] = field(default_factory=dict)
    multisets: str | None = None  # a bucket's: the key its multiset fields go to (op M)

    def split(self) -> tuple[dict[str, float], dict[str, float]]:
        legacy = [k for k in self.sums if k.startswith("max_")]  # almost always none
        if not legacy:
            return self.sums, dict(self.maxes)
        sums = {k: v for k, v in self.sums.items() if not k.startswith("max_")}
        maxes = {k: self.sums[k] for k in legacy}
        maxes.update(self.maxes)
        return sums, maxes


@dataclass
class _Batch:
    pipe: Any  # redis.client.Pipeline: its connection carries the batch (Redis Cluster: the first group's)
    pipes: dict[str, Any] = field(default_factory=dict)  # hash-slot group -> its WATCH pipeline
    records: dict[str, Record | None] = field(default_factory=dict)  # key -> cached value
    versions: dict[str, bytes] = field(default_factory=dict)  # record key -> record_version() as read
    record_keys: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (kind, tenant, key) -> its key
    watched: set[str] = field(default_factory=set)  # live sets read by the upkeep (WATCHed)
    dirty_records: dict[str, tuple[Record | None, float]] = field(default_factory=dict)
    seen_known: set[tuple[str, bytes]] = field(default_factory=set)  # (seen key, digest) in Redis
    seen_checked: set[tuple[str, bytes]] = field(default_factory=set)  # looked up this batch
    seen_new: dict[str, dict[bytes, int]] = field(default_factory=dict)  # seen key -> digest -> hour
    hashes: dict[str, _Hash] = field(default_factory=dict)
    index: dict[str, tuple[float, float, set[int]]] = field(default_factory=dict)  # key -> (expire, keep from, starts)
    index_of: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # index key -> (tenant, tier, scope)
    add_targets: dict[tuple[str, str, int], tuple[_Hash, ...]] = field(
        default_factory=dict
    )  # (tenant, scope, fine start)
    series_seen: dict[tuple[str, str, str], float | None] = field(default_factory=dict)  # committed, as read
    series_counts: dict[tuple[str, str, float], int] = field(default_factory=dict)  # committed, as read
    series_new: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # (kind, tenant) -> name -> at
    live: dict[str, dict[str, float | None]] = field(default_factory=dict)  # key -> member -> score/None
    scopes: dict[str, set[str]] = field(default_factory=dict)  # tenant -> new scopes
    counts: dict[tuple[str, str], _Hash] = field(default_factory=dict)  # (tenant, "sum:"/"max:" name) -> changes
    # Reads asked for and not sent yet (BatchWriter._flush): the read plan's waves leave in one
    # round trip each, whatever the kinds of record, the seen ids and the guard's names.
    pending: bool = False
    pending_records: dict[str, None] = field(default_factory=dict)  # record keys, in order
    pending_seen: dict[str, list[bytes]] = field(default_factory=dict)  # seen key -> digests
    pending_series: list[tuple[str, str, list[str], float]] = field(default_factory=list)  # kind, tenant, names, since
    # Pipelining (DeferredCommit): the records the batch before this one writes, as it writes
    # them (None: deleted), read from here instead of Redis, which does not hold them yet.
    prior: dict[str, tuple[bytes, Record] | None] = field(default_factory=dict)
    written: dict[str, tuple[bytes, Record] | None] = field(default_factory=dict)  # this batch's, as encoded


@dataclass
class DeferredCommit:
    """A batch computed and encoded but not yet applied (:meth:`BatchWriter.batch` with
    ``defer=True``): its script call, sent by :meth:`BatchWriter.send_commit` and confirmed
    by :meth:`BatchWriter.finish_commit`, and what the next batch needs to be computed while
    Redis runs it (:meth:`BatchWriter.batch` with ``after=``): the records it writes, its
    event ids and the guard's names it registers."""

    pipe: Any  # its connection carries the script; its reply is read by finish_commit
    command: tuple[Any, ...] | None  # None: the batch writes nothing
    records: dict[str, tuple[bytes, Record] | None]  # record key -> value written, as sent and as a record
    seen: dict[str, dict[bytes, int]]  # seen key -> digest -> hour
    series: dict[tuple[str, str], dict[str, float]]  # (kind, tenant) -> name -> admitted at
    sent: bool = False
    done: bool = False


#: Live sets summed up inside Redis, so a scrape never carries their members (a big tenant's
#: agents-by-state sets hold one member per agent and queue; open tickets pile up for days).
#: ARGV: tag, at, then queries of five: kind, name, scope (both encoded), lo, hi. Kinds:
#: ``n`` ZCARD; ``s`` members with lo <= score < hi: {count, smallest score or '', sum of
#: at - score in ascending score order}; ``a`` {part before \x1f, all, with score < at, ...}.


class BatchWriter(RedisKeys):
    """The batch write side of :class:`~streams.redis.state.RedisState` (which sets the
    attributes declared here). A batch belongs to one thread (the worker's)."""

    client: redis.Redis | RedisCluster
    config: Config
    clock: Callable[[], float]
    fine_seconds: int
    coarse_seconds: int
    fine_keep_seconds: float
    coarse_keep_seconds: float
    series_keep_seconds: float
    _batch: _Batch | None
    #: A bucket keeps its maxima's multiset fields itself while it holds at most this many
    #: fields; beyond, they move to its multiset hash and the bucket keeps their tops (op ``M``,
    #: lua/apply.lua): a key of their own costs a quiet bucket more memory than its few values,
    #: and spares a busy one's readers its hundreds (docs/BENCHMARKS.md, session 17). 128 is
    #: Redis's default ``hash-max-listpack-entries``: a bucket beyond it would leave its compact
    #: encoding anyway. Tests set 0 (always beside).
    multiset_spill: int = 128
    #: Tests only (production never sets it): the batch script fails just before its k-th
    #: write (-1: after its last one) and rolls back, as on any failure among its writes.
    fail_at_write: int = 0

    # -- batches ---------------------------------------------------------------------------
    @contextmanager
    def batch(self, *, after: DeferredCommit | None = None, defer: bool = False) -> Iterator[Self]:
        """One unit of work: every write inside leaves in one transaction at the end, or,
        on an exception (including :class:`BatchConflict`), not at all.

        Pipelining (``BatchProcessor``'s takes of many events): with ``defer``, the batch is
        encoded at the end but not applied; :attr:`deferred` holds it (``None`` when it could
        not be deferred and was applied as usual: Redis Cluster, or an upkeep that watched
        live sets). The next batch, opened with ``after=`` that commit before it is sent,
        takes what that one writes from it, not from Redis: its records as written, its event
        ids as seen, its guard's names as registered (and registers them again, which changes
        nothing). So it is computed while Redis runs the one before (:meth:`send_commit`
        after its reads). Its script checks the versions of the records it took from the one
        before, so it applies only on top of that one; when the one before fails, the next
        is dropped unsent (:meth:`drop_commit`) and computed again."""
        if self._batch is not None:
            raise RuntimeError("RedisState.batch() does not nest")
        pipe = self.client.pipeline(transaction=True)
        self._batch = b = _Batch(pipe)
        self.deferred = None
        if after is not None:
            self._overlay(b, after)
        kept = False
        try:
            yield self
            if defer and not self.cluster and not b.watched:
                self.deferred = self._defer(b)
                kept = True
            else:
                self._commit(b)
        finally:
            self._batch = None
            if not kept:
                pipe.reset()
            for other in b.pipes.values():
                if other is not pipe:
                    other.reset()

    @staticmethod
    def _overlay(b: _Batch, after: DeferredCommit) -> None:
        b.prior = after.records
        for key, digests in after.seen.items():
            for digest in digests:
                b.seen_known.add((key, digest))
                b.seen_checked.add((key, digest))
        b.series_new = {kind_tenant: dict(names) for kind_tenant, names in after.series.items()}

    def _defer(self, b: _Batch) -> DeferredCommit:
        """The batch's script call, as :meth:`_commit` makes it (one group: not on Redis
        Cluster), or none when the batch wrote nothing."""
        calls = self._script_calls(b)
        command = next(iter(calls.values()))[1] if calls else None
        return DeferredCommit(b.pipe, command, b.written, b.seen_new, b.series_new)

    @staticmethod
    def send_commit(commit: DeferredCommit) -> None:
        """Send ``commit``'s script on its connection; :meth:`finish_commit` reads its reply."""
        if commit.sent or commit.command is None:
            return
        conn = _connection(commit.pipe)
        commit.sent = True
        try:
            conn.send_packed_command([hiredis.pack_command(commit.command)])
        except BaseException:
            conn.disconnect()
            raise

    def finish_commit(self, commit: DeferredCommit) -> None:
        """Apply ``commit`` (sent now unless it was) and read its reply: returns once it is
        applied; raises as the end of a batch does (:class:`BatchConflict`, the script's
        error, a connection error) when it was not."""
        if commit.done:
            raise RuntimeError("this commit was finished or dropped already")
        pipe = commit.pipe
        if commit.command is None:
            commit.done = True
            pipe.reset()
            return
        try:
            self.send_commit(commit)
            try:
                result = pipe.connection.read_response()
            except redis.ResponseError:
                raise
            except BaseException:
                pipe.connection.disconnect()  # its reply unread: the connection is not reused
                raise
        finally:
            commit.done = True
            pipe.reset()
        _check_reply(result)

    @staticmethod
    def drop_commit(commit: DeferredCommit) -> None:
        """Forget ``commit``, never sent (the batch before it failed): nothing of it is applied."""
        if commit.sent and not commit.done:
            raise RuntimeError("a commit sent is finished (finish_commit), not dropped")
        commit.done = True
        commit.pipe.reset()

    @staticmethod
    def abandon_commit(commit: DeferredCommit) -> None:
        """Forget ``commit`` whether or not it was sent (the worker stops with it in flight: its
        events are read again and found seen if it was applied). A reply that may still come
        is never read: its connection is closed."""
        if commit.done:
            return
        if commit.sent and commit.pipe.connection is not None:
            commit.pipe.connection.disconnect()
        commit.done = True
        commit.pipe.reset()

    def _pipe(self, b: _Batch, key: str) -> Any:
        """The batch's WATCH pipeline for ``key``: the one pipeline, or on Redis Cluster one per
        hash-slot group (a transaction cannot span slots there)."""
        if not self.cluster:
            return b.pipe
        group = self._group(key)
        pipe = b.pipes.get(group)
        if pipe is None:
            pipe = b.pipes[group] = b.pipe if not b.pipes else self.client.pipeline(transaction=True)
        return pipe

    @property
    def in_batch(self) -> bool:
        return self._batch is not None

    def _autocommit(self, write: Callable[[], Any]) -> Any:
        with self.batch():
            return write()

    def prefetch_records(self, kind: str, tenant: str, keys: Iterable[str]) -> None:
        """Read many records for the batch's cache: with the other reads asked for before the
        batch next needs one (:meth:`_flush`), in one round trip."""
        b = self._batch
        if b is None:
            return
        wanted = [
            k for k in dict.fromkeys(self._batch_record_key(b, kind, tenant, key) for key in keys) if k not in b.records
        ]
        if b.prior:
            wanted = [k for k in wanted if not self._from_prior(b, k)]
        if not wanted:
            return
        if self.cluster:  # a round trip per hash-slot group, now
            self._read_records(b, wanted)
            return
        pending = b.pending_records
        for key in wanted:
            pending[key] = None
        b.pending = True

    def _flush(self, b: _Batch) -> None:
        """Send the reads asked for (:meth:`prefetch_seen`, :meth:`prefetch_series`,
        :meth:`prefetch_records`) in one round trip on the batch's connection. A batch reads
        them before it first needs one of them (or at :meth:`send_reads`); what it never needs
        is never read (nor checked at the commit: nothing the batch computed came from it)."""
        keys = list(b.pending_records)
        b.pending_records = {}
        self._read_records(b, keys)

    def send_reads(self) -> None:
        """Read what the batch asked for, now: the worker calls it after the engine's read plan,
        so that nothing is read while the events are applied."""
        b = self._batch
        if b is not None and b.pending:
            self._flush(b)

    def _read_records(self, b: _Batch, keys: list[str]) -> None:
        """Read ``keys`` into the batch's cache, noting their versions; with them, in the same
        round trip, the seen ids and the guard's names asked for (not on Redis Cluster, where
        those are read when asked for)."""
        if self.cluster:
            groups: dict[int, tuple[Any, list[str]]] = {}
            for key in keys:
                pipe = self._pipe(b, key)
                groups.setdefault(id(pipe), (pipe, []))[1].append(key)
            for _pipe, group in groups.values():
                self._cache_records(b, group, self.client.mget(group))  # one hash-slot group: one node
            return
        # No WATCH: the batch script checks each record's version as read (record_version)
        # before it writes anything.
        seen, series = b.pending_seen, b.pending_series
        b.pending_seen, b.pending_series, b.pending = {}, [], bool(b.pending_records)
        commands: list[tuple[Any, ...]] = [("ZMSCORE", key, *digests) for key, digests in seen.items()]
        for kind, tenant, names, since in series:
            key = self._series_key(kind, tenant)
            commands += [("ZMSCORE", key, *names), ("ZCOUNT", key, repr(since), "+inf")]
        if keys:
            commands.append(("MGET", *keys))
        if not commands:
            return
        replies = iter(_send(b.pipe, commands))
        for key, digests in seen.items():
            for digest, score in zip(digests, next(replies), strict=True):
                if score is not None:
                    b.seen_known.add((key, digest))
        for kind, tenant, names, since in series:
            for name, score in zip(names, next(replies), strict=True):
                b.series_seen[(kind, tenant, name)] = float(score) if score is not None else None
            b.series_counts[(kind, tenant, since)] = int(next(replies))
        if keys:
            self._cache_records(b, keys, next(replies))

    @staticmethod
    def _from_prior(b: _Batch, key: str) -> bool:
        """Take record ``key`` as the batch before writes it, if it does (see :meth:`batch`):
        the very object it wrote, as a batch's later events get what its earlier ones put (the
        batch before is encoded already, so whatever this one does to the object stays here)."""
        if key not in b.prior:
            return False
        written = b.prior[key]
        if written is None:
            b.versions[key] = record_version(None)
            b.records[key] = None
        else:
            b.versions[key] = record_version(written[0])
            b.records[key] = written[1]
        return True

    @staticmethod
    def _cache_records(b: _Batch, keys: list[str], values: list[Any]) -> None:
        for key, raw in zip(keys, values, strict=True):
            b.versions[key] = record_version(raw)
            if key not in b.records:  # else written by the batch since it was asked for
                b.records[key] = load_record(raw) if raw is not None else None

    def prefetch_seen(self, items: Iterable[tuple[str, str, float]]) -> None:
        """Look up many ``(tenant, event_id, ts)`` in the seen sets in one round trip."""
        b = self._batch
        if b is None:
            return
        by_key: dict[str, list[bytes]] = {}
        for tenant, event_id, _ts in items:
            key = self._seen_key(tenant)
            digest = seen_digest(event_id)
            if (key, digest) not in b.seen_checked:
                b.seen_checked.add((key, digest))
                by_key.setdefault(key, []).append(digest)
        if not by_key:
            return
        if not self.cluster:  # a digest per event: packed by hiredis, sent with the batch's next reads
            for key, digests in by_key.items():
                b.pending_seen.setdefault(key, []).extend(digests)
            b.pending = True
            return
        with self.client.pipeline(transaction=False) as pipe:
            for key, digests in by_key.items():
                pipe.zmscore(key, digests)  # type: ignore[arg-type]  # bytes are fine
            results = pipe.execute()
        for (key, digests), scores in zip(by_key.items(), results, strict=True):
            for digest, score in zip(digests, scores, strict=True):
                if score is not None:
                    b.seen_known.add((key, digest))

    def _script_calls(self, b: _Batch) -> dict[str, tuple[str, tuple[Any, ...]]]:
        """The batch's script calls, one per hash-slot group (one group but on Redis Cluster):
        group -> (its first key, the command). KEYS in operation order, ARGV = number of
        seen-set operations (they come first: the script checks them before writing, and
        writes them last), the test hook, then the ops."""
        seen_ops, ops = self._encode(b)
        ordered: dict[str, tuple[list[str], list[Any]]] = {}
        for key, args in seen_ops:
            keys, argv = ordered.setdefault(self._group(key), ([], [0, self.fail_at_write]))
            keys.append(key)
            argv[0] += 1
            argv.extend(args)
        for key, args in ops:
            keys, argv = ordered.setdefault(self._group(key), ([], [0, self.fail_at_write]))
            keys.append(key)
            argv.extend(args)
        # EVAL, not EVALSHA: a script missing from the server's cache cannot fail inside
        # MULTI (Redis caches it by its SHA anyway).
        return {
            group: (keys[0], ("EVAL", scripts.APPLY_LUA, len(keys), *keys, *argv))
            for group, (keys, argv) in ordered.items()
        }

    def _commit(self, b: _Batch) -> None:
        calls = self._script_calls(b)
        for group, (first_key, command) in calls.items():
            try:
                if self.cluster:
                    pipe = self._pipe(b, first_key)
                    pipe.multi()
                    pipe.execute_command(*command)
                    (result,) = pipe.execute()
                else:  # under WATCH when the upkeep read live sets
                    result = _run_script(b.pipe, command, watching=bool(b.watched))
            except redis.WatchError:
                raise BatchConflict(
                    f"{len(b.watched)} watched live set(s): one changed before the batch "
                    f"was applied{self._partly(calls, group)}"
                ) from None
            _check_reply(result, self._partly(calls, group))

    @staticmethod
    def _partly(ordered: Mapping[str, Any], failed: str) -> str:
        done = list(ordered).index(failed)
        return f" (Redis Cluster: {done} of {len(ordered)} slot groups were committed)" if done else ""

    def _ttl_ms(self, expire_at: float, now: float) -> int:
        return int(max(expire_at - now, MIN_TTL_SECONDS) * 1000)

    def _encode(self, b: _Batch) -> tuple[list[tuple[str, list[Any]]], list[tuple[str, list[Any]]]]:
        """The batch as script operations ``(key, args)``: seen-set ones, then the rest."""
        now = self.clock()
        # MemoryState forgets an hour once it ends before now - coarse_keep - coarse.
        forget_before = int((now - self.coarse_keep_seconds - self.coarse_seconds) // 3600) - 1
        seen_ops: list[tuple[str, list[Any]]] = []
        for key, digests in b.seen_new.items():
            expire_at = (max(digests.values()) + 1) * 3600 + self.coarse_keep_seconds + self.coarse_seconds
            seen_args: list[Any] = ["S", self._ttl_ms(expire_at, now), forget_before, len(digests)]
            for digest, hour in digests.items():
                seen_args += [hour, digest]
            seen_ops.append((key, seen_args))
        # The coarse buckets and totals get the sums of the fine buckets they hold (each add
        # went to its fine bucket only).
        for fine_h, coarse_h, totals_h in b.add_targets.values():
            add_into(coarse_h.sums, fine_h.sums)
            add_into(totals_h.sums, fine_h.sums, multisets=False)  # maxima are windowed only
        # The records read, as they were read: checked before anything is written.
        ops: list[tuple[str, list[Any]]] = [(key, ["C", version]) for key, version in b.versions.items()]
        for key, h in b.hashes.items():
            if h.multisets is None:
                ops.append((key, self._encode_hash(h, now)))
            else:
                ops.extend(self._encode_bucket(key, h, now))
        for key, (expire_at, keep_from, starts) in b.index.items():
            tenant, tier, scope = b.index_of[key]
            if tier == windows.COARSE:  # before the index gets these starts: W compares with its newest
                ops.append(
                    (
                        self._window_version_key(tenant, scope),
                        ["W", self._ttl_ms(expire_at, now), utf8(key), min(starts)],
                    )
                )
            elif self.fine_seconds < 60 and 60 % self.fine_seconds == 0:  # the minute folds' version (lua/windows.lua)
                first = min(starts)
                ops.append(
                    (
                        self._minute_version_key(tenant, scope),
                        ["W", self._ttl_ms(expire_at, now), utf8(key), first - first % 60 + 59],
                    )
                )
            ops.append((key, ["I", self._ttl_ms(expire_at, now), int(keep_from), len(starts), *sorted(starts)]))
        keep = self.series_keep_seconds
        for (kind, tenant), names in b.series_new.items():
            args: list[Any] = ["G", self._ttl_ms(now + keep + 86400, now), num(now - keep - 86400), len(names)]
            for name, at in names.items():
                args += [num(at), utf8(name)]
            ops.append((self._series_key(kind, tenant), args))
        count_names: dict[str, list[str]] = {}
        for (tenant, name), h in b.counts.items():
            ops.append((self._count_key(tenant, name), self._encode_hash(h, now, split=False)))
            count_names.setdefault(tenant, []).append(name)
        for tenant, counted in count_names.items():
            ops.append((self._count_names_key(tenant), ["A", len(counted), *map(utf8, counted)]))
        if count_names:
            ops.append((self._count_tenants_key, ["A", len(count_names), *map(utf8, count_names)]))
        written = b.written
        for key, (record, expire_at) in b.dirty_records.items():
            if record is None:
                ops.append((key, ["D"]))
                written[key] = None
            else:
                value = dump_record(record)
                written[key] = (value, record)
                ops.append((key, ["R", self._ttl_ms(expire_at, now), value]))
        for key, members in b.live.items():
            puts = [(m, s) for m, s in members.items() if s is not None]
            removes = [m for m, s in members.items() if s is None]
            if puts:
                args = ["Z", len(puts)]
                for member, score in puts:
                    args += [num(score), utf8(member)]
                ops.append((key, args))
            if removes:
                ops.append((key, ["X", len(removes), *map(utf8, removes)]))
        for tenant, scopes in b.scopes.items():
            ops.append((self._scopes_key(tenant), ["A", len(scopes), *map(utf8, scopes)]))
        if b.scopes:
            ops.append((self._tenants_key, ["A", len(b.scopes), *map(utf8, b.scopes)]))
        return seen_ops, ops

    def _encode_hash(self, h: _Hash, now: float, split: bool = True) -> list[Any]:
        sums, maxes = h.split() if split else (h.sums, h.maxes)
        ttl = self._ttl_ms(h.ttl_at, now) if h.ttl_at is not None else 0
        args: list[Any] = ["H", ttl, len(sums), len(maxes)]
        append = args.append
        for fld, value in sums.items():
            # ints as themselves (packed as their decimal text): the script passes whole
            # numbers to HINCRBY as text (exact)
            append(fld.encode("utf-8", "surrogatepass"))  # utf8(), inline: a call per field counts here
            append(value if type(value) is int else num(value))
        for fld, value in maxes.items():
            args += [utf8(fld), num(value)]
        return args

    def _encode_bucket(self, key: str, h: _Hash, now: float) -> list[tuple[str, list[Any]]]:
        """A bucket's ops: ``H`` of its sums, then ``M`` of its multiset fields' counts (in the
        bucket while it is small, else in its multiset hash, the bucket keeping the
        ``mt:<name>`` tops: :attr:`multiset_spill`, lua/apply.lua)."""
        sums = h.sums
        multiset = [k for k in sums if k[:3] == MAX_PREFIX]
        if not multiset:
            return [(key, self._encode_hash(h, now))]
        plain = _Hash(h.ttl_at, {k: v for k, v in sums.items() if k[:3] != MAX_PREFIX}, h.maxes)
        ttl = self._ttl_ms(h.ttl_at, now) if h.ttl_at is not None else 0
        args: list[Any] = ["M", ttl, utf8(key), self.multiset_spill, len(multiset)]
        for fld in multiset:
            args += [utf8(fld), int(sums[fld])]  # counts are whole (add_into keeps them ints)
        assert h.multisets is not None
        return [(key, self._encode_hash(plain, now)), (h.multisets, args)]

    # -- write side ------------------------------------------------------------------------
    # Outside ``batch()`` every write is a batch of its own (tests, tools); the worker always
    # writes inside one.
    def claim_event(self, tenant: str, event_id: str, ts: float) -> bool:
        b = self._batch
        if b is None:
            return bool(self._autocommit(lambda: self.claim_event(tenant, event_id, ts)))
        # Idempotent on event_id alone, whatever ts a re-sent event carries: one sorted set
        # per tenant, member = digest, score = hour of the ts it was first seen with, so ids
        # are forgotten with their hour's state (as MemoryState.maintain does).
        if b.pending:
            self._flush(b)
        key = self._seen_key(tenant)
        digest = seen_digest(event_id)
        pending = b.seen_new.get(key)
        if pending is not None and digest in pending:
            return False
        if (key, digest) not in b.seen_checked:
            b.seen_checked.add((key, digest))
            if self.client.zscore(key, digest) is not None:
                b.seen_known.add((key, digest))
        if (key, digest) in b.seen_known:
            return False
        if pending is None:
            pending = b.seen_new[key] = {}
        pending[digest] = int(ts // 3600)
        return True

    def _batch_record_key(self, b: _Batch, kind: str, tenant: str, key: str) -> str:
        """:meth:`_record_key`, once per record and batch (a customer's is an HMAC)."""
        rkey = b.record_keys.get((kind, tenant, key))
        if rkey is None:
            rkey = b.record_keys[(kind, tenant, key)] = self._record_key(kind, tenant, key)
        return rkey

    def get_record(self, kind: str, tenant: str, key: str) -> Record | None:
        b = self._batch
        if b is None:
            raw = self.client.get(self._record_key(kind, tenant, key))
            return load_record(raw) if raw is not None else None
        rkey = self._batch_record_key(b, kind, tenant, key)
        if rkey not in b.records and not (b.prior and self._from_prior(b, rkey)):
            if self.cluster:
                self._read_records(b, [rkey])
            else:  # with every read asked for so far
                b.pending_records[rkey] = None
                self._flush(b)
        return b.records[rkey]

    def put_record(self, kind: str, tenant: str, key: str, record: Record, expire_at: float) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.put_record(kind, tenant, key, record, expire_at))
        rkey = self._batch_record_key(b, kind, tenant, key)
        b.records[rkey] = record
        b.dirty_records[rkey] = (record, expire_at)

    def delete_record(self, kind: str, tenant: str, key: str) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.delete_record(kind, tenant, key))
        rkey = self._batch_record_key(b, kind, tenant, key)
        b.records[rkey] = None
        b.dirty_records[rkey] = (None, 0.0)

    def add(self, tenant: str, scope: str, ts: float, deltas: Mapping[str, float]) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.add(tenant, scope, ts, deltas))
        fine = self.fine_seconds
        fstart = int(ts // fine) * fine
        targets = b.add_targets.get((tenant, scope, fstart))
        if targets is None:
            targets = b.add_targets[(tenant, scope, fstart)] = self._add_targets(b, tenant, scope, fstart, ts)
        add_into(targets[0].sums, deltas)  # the fine bucket's: coarse and totals follow from it (_encode)

    def _add_targets(self, b: _Batch, tenant: str, scope: str, fstart: int, ts: float) -> tuple[_Hash, ...]:
        """The hashes an ``add`` at ``ts`` changes: its fine and coarse buckets and the totals."""
        self._note_scope(b, tenant, scope)
        fine, coarse = self.fine_seconds, self.coarse_seconds
        cstart = int(ts // coarse) * coarse
        hashes = b.hashes
        targets = []
        for tier, bstart, keep, size in (
            (windows.FINE, fstart, self.fine_keep_seconds, fine),
            (windows.COARSE, cstart, self.coarse_keep_seconds, coarse),
        ):
            key = self._bucket_key(tenant, tier, scope, bstart)
            h = hashes.get(key)
            if h is None:
                h = hashes[key] = _Hash(bstart + keep + size, multisets=self._multiset_key(tenant, tier, scope, bstart))
                self._index_bucket(b, tenant, tier, scope, bstart, keep + size)
            targets.append(h)
        key = self._totals_key(tenant, scope)
        h = hashes.get(key)
        if h is None:
            h = hashes[key] = _Hash(None)
        targets.append(h)
        return tuple(targets)

    def _index_bucket(self, b: _Batch, tenant: str, tier: str, scope: str, start: int, keep: float) -> None:
        """Note bucket ``start`` in its scope's bucket index, so a scrape reads the buckets
        that exist instead of probing every possible one (most are empty for a quiet queue)."""
        key = self._index_key(tenant, tier, scope)
        entry = b.index.get(key)
        if entry is None:
            entry = b.index[key] = (start + keep, start - keep, set())
            b.index_of[key] = (tenant, tier, scope)
        elif start + keep > entry[0]:
            entry = b.index[key] = (start + keep, start - keep, entry[2])
        entry[2].add(start)

    def live_put(self, name: str, tenant: str, scope: str, member: str, score: float) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.live_put(name, tenant, scope, member, score))
        self._note_scope(b, tenant, scope)
        b.live.setdefault(self._live_key(name, tenant, scope), {})[member] = float(score)

    def live_remove(self, name: str, tenant: str, scope: str, member: str) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.live_remove(name, tenant, scope, member))
        b.live.setdefault(self._live_key(name, tenant, scope), {})[member] = None

    def count(self, name: str, label: str, delta: float = 1.0, tenant: str = "") -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.count(name, label, delta, tenant))
        h = self._count_hash(b, tenant, f"sum:{name}")
        h.sums[label] = h.sums.get(label, 0.0) + delta

    def count_max(self, name: str, label: str, value: float, tenant: str = "") -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.count_max(name, label, value, tenant))
        h = self._count_hash(b, tenant, f"max:{name}")
        if value > h.maxes.get(label, -math.inf):
            h.maxes[label] = value

    @staticmethod
    def _count_hash(b: _Batch, tenant: str, name: str) -> _Hash:
        """The batch's changes to one of ``tenant``'s pipeline counters (``sum:``/``max:`` + name)."""
        h = b.counts.get((tenant, name))
        if h is None:
            h = b.counts[(tenant, name)] = _Hash(None)
        return h

    # -- the cardinality guard's registry ---------------------------------------------------
    def prefetch_series(self, items: Iterable[tuple[str, str, str]], since: float) -> None:
        """Read many names' last admission and their kinds' counts in one round trip."""
        b = self._batch
        if b is None:
            return
        by_key: dict[tuple[str, str], list[str]] = {}
        for kind, tenant, name in items:
            if (kind, tenant, name) not in b.series_seen:
                b.series_seen[(kind, tenant, name)] = None
                by_key.setdefault((kind, tenant), []).append(name)
        if not by_key:
            return
        if not self.cluster:  # sent with the batch's next reads
            b.pending_series += [(kind, tenant, names, since) for (kind, tenant), names in by_key.items()]
            b.pending = True
            return
        with self.client.pipeline(transaction=False) as pipe:
            for (kind, tenant), names in by_key.items():
                pipe.zmscore(self._series_key(kind, tenant), names)
                pipe.zcount(self._series_key(kind, tenant), since, "+inf")
            replies = iter(pipe.execute())
        for (kind, tenant), names in by_key.items():
            for name, score in zip(names, next(replies), strict=True):
                b.series_seen[(kind, tenant, name)] = float(score) if score is not None else None
            b.series_counts[(kind, tenant, since)] = int(next(replies))

    def series_seen(self, kind: str, tenant: str, name: str) -> float | None:
        b = self._batch
        if b is None:
            score = self.client.zscore(self._series_key(kind, tenant), name)
            return float(score) if score is not None else None
        if b.pending:
            self._flush(b)
        pending = b.series_new.get((kind, tenant), {}).get(name)
        if (kind, tenant, name) not in b.series_seen:
            score = self.client.zscore(self._series_key(kind, tenant), name)
            b.series_seen[(kind, tenant, name)] = float(score) if score is not None else None
        seen = b.series_seen[(kind, tenant, name)]
        if pending is not None and (seen is None or pending > seen):
            return pending
        return seen

    def series_count(self, kind: str, tenant: str, since: float) -> int:
        b = self._batch
        key = self._series_key(kind, tenant)
        if b is None:
            return int(self.client.zcount(key, since, "+inf"))
        if b.pending:
            self._flush(b)
        count = b.series_counts.get((kind, tenant, since))
        if count is None:
            count = b.series_counts[(kind, tenant, since)] = int(self.client.zcount(key, since, "+inf"))
        for name, at in b.series_new.get((kind, tenant), {}).items():
            seen = b.series_seen.get((kind, tenant, name))
            if at >= since and (seen is None or seen < since):
                count += 1  # admitted in this batch, not counted in Redis yet
        return count

    def series_touch(self, kind: str, tenant: str, name: str, at: float) -> None:
        b = self._batch
        if b is None:
            return self._autocommit(lambda: self.series_touch(kind, tenant, name, at))
        names = b.series_new.setdefault((kind, tenant), {})
        if at > names.get(name, -math.inf):
            names[name] = at

    def _note_scope(self, b: _Batch, tenant: str, scope: str) -> None:
        scopes = b.scopes.get(tenant)
        if scopes is None:
            scopes = b.scopes[tenant] = set()
        scopes.add(scope)
