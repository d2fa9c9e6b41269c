"""The read side of :class:`~streams.redis.state.RedisState`, and :class:`SnapshotReader`,
what a scrape reads through.

Outside a batch the reads go to Redis. Inside one, records and live sets include the batch's
own pending changes (and are watched); bucket, total and count reads show what is committed.
The read side returns what :func:`~kpi_core.state.present` makes of the raw sums (the legacy
field names, in seconds); the window script (``lua/windows.lua``) sums multiset counts like
any field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from kpi_core import windows
from kpi_core.config import Config
from kpi_core.state import (
    MAX_PREFIX,
    MS_SUFFIX,
    LiveSummary,
    add_into,
    count_states,
    is_queue_scope,
    present,
    summarize_live,
)
from streams.redis import scripts
from streams.redis.keys import CONSUMER_LAG, MULTISET_TOP, STUCK_PARTITIONS, encode, floats, score_arg, text, utf8
from streams.redis.write import BatchWriter

#: Scopes per call of the window script: bounds the time Redis spends in one script.
WINDOW_SCOPES_PER_CALL = 50
#: Live-set queries per LIVE_LUA call in a scrape (each call runs alone in Redis, so a scrape
#: never holds up the workers' transactions long): ~22 queues a call, ~0.5 ms of Redis at the
#: bench's state, well under a window call of WINDOW_SCOPES_PER_CALL scopes (~7 ms); 40 made
#: ten times as many calls, each sending its questions again (~10 % of the read's CPU).
LIVE_QUERIES_PER_CALL = 200


#: Questions to the live script (``lua/live.lua``) asked of a scope: ``(kind, name, lo, hi)``.
_LiveQuestions = tuple[tuple[str, str, float, float], ...]


def _live_questions_args(questions: _LiveQuestions) -> list[Any]:
    """The live script's arguments for ``questions``: their number, then each as four."""
    args: list[Any] = [len(questions)]
    for kind, name, lo, hi in questions:
        args += [kind, utf8(encode(name)), score_arg(lo), score_arg(hi)]
    return args


def _live_reply(kind: str, reply: Any) -> Any:
    if kind == "n":
        return int(reply)
    if kind == "s":
        size, oldest, age_sum = reply
        return LiveSummary(int(size), float(oldest) if oldest not in (b"", "") else None, float(age_sum))
    every: dict[str, int] = {}
    before: dict[str, int] = {}
    for i in range(0, len(reply), 3):
        state = text(reply[i])
        every[state], before[state] = int(reply[i + 1]), int(reply[i + 2])
    return every, {state: n for state, n in before.items() if n}


def count_pairs(tenants: list[str], names: Sequence[Any]) -> list[tuple[str, str]]:
    """``(tenant, counter name)`` of every counter, from each tenant's names set as read."""
    return [(tenant, text(name)) for tenant, members in zip(tenants, names, strict=True) for name in sorted(members)]


def sum_counts(pairs: list[tuple[str, str]], values: Sequence[Any]) -> dict[str, dict[str, float]]:
    """The counters of ``pairs`` (their hashes as read), summed over the tenants (``max:`` ones:
    the maximum)."""
    result: dict[str, dict[str, float]] = {}
    for (_tenant, name), raw in zip(pairs, values, strict=True):
        kind, _sep, bare = name.partition(":")
        labels = result.setdefault(bare, {})
        for label, value in floats(raw).items():
            if kind == "max":
                labels[label] = max(labels.get(label, -math.inf), value)
            else:
                labels[label] = labels.get(label, 0.0) + value
    return result


def partition_map(raw: Mapping[Any, Any]) -> dict[tuple[str, int], float]:
    """A pipeline hash of ``topic\x1fpartition -> number`` (as read) as ``(topic, partition) -> number``."""
    result: dict[tuple[str, int], float] = {}
    for fld, value in floats(raw).items():
        topic, _sep, partition = fld.rpartition("\x1f")
        result[(topic, int(partition))] = value
    return result


class StoreReader(BatchWriter):
    """The read side of :class:`~streams.redis.state.RedisState`. Reads outside a batch may
    come from many threads (the exporter)."""

    def series_oldest(self, kind: str, tenant: str, n: int) -> tuple[int, list[tuple[str, float]]]:
        key = self._series_key(kind, tenant)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zrange(key, 0, n - 1, withscores=True)
            total, pairs = pipe.execute()
        return int(total), [(text(name), float(at)) for name, at in pairs]

    def series_live(self, kind: str, tenant: str, names: Iterable[str], limit: int) -> set[str]:
        return self.series_live_many([(kind, tenant, list(names), limit)])[0]

    def series_live_many(self, queries: Sequence[tuple[str, str, list[str], int]]) -> list[set[str]]:
        """:meth:`series_live` of many ``(kind, tenant, names, limit)`` in one round trip."""
        asked = [q for q in queries if q[2]]
        if not asked:
            return [set() for _q in queries]
        with self.client.pipeline(transaction=False) as pipe:
            for kind, tenant, names, limit in asked:
                pipe.zmscore(self._series_key(kind, tenant), [utf8(n) for n in names])  # type: ignore[misc]
                # The limit-th newest name: a registered name is exported if it is not older.
                pipe.zrevrange(self._series_key(kind, tenant), max(limit - 1, 0), max(limit - 1, 0), withscores=True)
            replies = iter(pipe.execute())
        answers: dict[int, set[str]] = {}
        for query in asked:
            _kind, _tenant, names, limit = query
            scores, last = next(replies), next(replies)
            threshold = (float(last[0][1]), utf8(text(last[0][0]))) if last and limit > 0 else None
            answers[id(query)] = {
                name
                for name, score in zip(names, scores, strict=True)
                if score is None or (limit > 0 and (threshold is None or (float(score), utf8(name)) >= threshold))
            }
        return [answers.get(id(q), set()) for q in queries]

    def scopes(self) -> Mapping[str, Iterable[str]]:
        tenants = sorted(text(m) for m in self.client.smembers(self._tenants_key))
        replies: list[Any] = []
        if tenants:
            with self.client.pipeline(transaction=False) as pipe:
                for tenant in tenants:
                    pipe.smembers(self._scopes_key(tenant))
                replies = pipe.execute()
        return self._scopes_of(tenants, replies)

    def _scopes_of(self, tenants: list[str], replies: Sequence[Any]) -> dict[str, list[str]]:
        """:meth:`scopes` from the ``tenants`` and each one's scopes set as read."""
        result: dict[str, set[str]] = {
            tenant: {text(m) for m in members} for tenant, members in zip(tenants, replies, strict=True)
        }
        if self._batch is not None:
            for tenant, scopes in self._batch.scopes.items():
                result.setdefault(tenant, set()).update(scopes)
        return {tenant: sorted(scopes) for tenant, scopes in sorted(result.items()) if scopes}

    def read_window(self, tenant: str, scope: str, start: float, end: float) -> dict[str, float]:
        """The window's buckets summed field by field (the general rule): each bucket's own
        fields but its multisets' tops, and its multiset hash's counts."""
        head, middle, tail = windows.cover(start, end, self.fine_seconds, self.coarse_seconds)
        buckets = [(windows.FINE, s) for s in head] + [(windows.COARSE, s) for s in middle]
        buckets += [(windows.FINE, s) for s in tail]
        result: dict[str, float] = {}
        if not buckets:
            return result
        with self.client.pipeline(transaction=False) as pipe:
            for tier, s in buckets:
                pipe.hgetall(self._bucket_key(tenant, tier, scope, s))
                pipe.hgetall(self._multiset_key(tenant, tier, scope, s))
            replies = pipe.execute()
        for bucket, counts in zip(replies[0::2], replies[1::2], strict=True):
            if bucket:
                add_into(result, {k: v for k, v in floats(bucket).items() if not k.startswith(MULTISET_TOP)})
            if counts:
                add_into(result, floats(counts))
        return present(result)

    def totals(self, tenant: str, scope: str) -> dict[str, float]:
        return present(floats(self.client.hgetall(self._totals_key(tenant, scope))))

    def live(self, name: str, tenant: str, scope: str) -> dict[str, float]:
        key = self._live_key(name, tenant, scope)
        b = self._batch
        if b is None:
            pairs: list[Any] = self.client.zrange(key, 0, -1, withscores=True)
            return {text(member): float(score) for member, score in pairs}
        # Inside a batch (the upkeep), watch the set: two workers must not both expire a call.
        pipe = self._pipe(b, key)
        pipe.watch(key)
        b.watched.add(key)
        result = {text(member): float(score) for member, score in pipe.zrange(key, 0, -1, withscores=True)}
        for member, score in b.live.get(key, {}).items():
            if score is None:
                result.pop(member, None)
            else:
                result[member] = score
        return result

    def live_size(self, name: str, tenant: str, scope: str) -> int:
        if self._batch is not None:
            return len(self.live(name, tenant, scope))
        return int(self.client.zcard(self._live_key(name, tenant, scope)))

    def live_summary(self, name: str, tenant: str, scope: str, lo: float, hi: float, at: float) -> LiveSummary:
        if self._batch is not None:
            return summarize_live(self.live(name, tenant, scope), lo, hi, at)
        result: LiveSummary = self._live_query(tenant, at, [("s", name, scope, lo, hi)])[0]
        return result

    def live_states(self, name: str, tenant: str, scope: str, at: float) -> tuple[dict[str, int], dict[str, int]]:
        if self._batch is not None:
            return count_states(self.live(name, tenant, scope), at)
        result: tuple[dict[str, int], dict[str, int]] = self._live_query(tenant, at, [("a", name, scope, 0.0, 0.0)])[0]
        return result

    def _live_query(self, tenant: str, at: float, queries: Sequence[tuple[str, str, str, float, float]]) -> list[Any]:
        """:data:`~streams.redis.scripts.LIVE_LUA` for ``queries`` of one tenant: ``(kind, name, scope, lo, hi)``."""
        script = self.client.register_script(scripts.LIVE_LUA)
        results = []
        for kind, name, scope, lo, hi in queries:
            args = [self._tag(tenant), repr(at), *_live_questions_args(((kind, name, lo, hi),)), utf8(encode(scope))]
            (reply,) = script(keys=[self._scopes_key(tenant)], args=args)
            results.append(_live_reply(kind, reply))
        return results

    def counts(self) -> dict[str, dict[str, float]]:
        """The pipeline counters, summed (``max:`` ones: maximum) over every tenant."""
        tenants = sorted(text(m) for m in self.client.smembers(self._count_tenants_key))
        if not tenants:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.smembers(self._count_names_key(tenant))
            pairs = count_pairs(tenants, pipe.execute())
        with self.client.pipeline(transaction=False) as pipe:
            for tenant, name in pairs:
                pipe.hgetall(self._count_key(tenant, name))
            return sum_counts(pairs, pipe.execute())

    def snapshot_reader(self, config: Config, at: float) -> SnapshotReader:
        """This store's read side for one snapshot at ``at``, prefetched (see SnapshotReader)."""
        return SnapshotReader(self, config, at)


class SnapshotReader:
    """The read side of a :class:`~streams.redis.state.RedisState` for one scrape, prefetched
    in four round trips, whatever the number of tenants and scopes:

    1. the tenants (those with KPI scopes, those with pipeline counters) and the workers'
       hashes (consumer lag, stuck partitions);
    2. each tenant's scopes and counter names;
    3. the guard's registry of the names those scopes bring (what is exported);
    4. every exported scope's totals and live sets (``lua/live.lua``), the counters, and the
       first call of the window script (``lua/windows.lua``: the window sums of every
       (scope, window) the snapshot will ask for); each further call, for more than
       :data:`WINDOW_SCOPES_PER_CALL` scopes, is a round trip of its own, so that a worker's
       batch runs between them.

    Under load a round trip waits for the batch Redis is running (a worker's, ~15-20 ms at
    5,000 events/s), so the number of round trips, not their size, is what a scrape waits
    for. Scripts go by EVALSHA without redis-py's SCRIPT EXISTS round trip first; a Redis
    without them (restarted, flushed) has them loaded and the round trip made again (reads
    only). Reads it was not prepared for fall through to the store, so results never differ
    from the store's own.
    """

    def __init__(self, state: StoreReader, config: Config, at: float) -> None:
        from kpi_core.engine import AGENTS, ALL
        from kpi_core.kpis import LIVE_SETS, guarded_names, live_bounds, split_scopes

        self.state = state
        self.fine_seconds = state.fine_seconds
        self.coarse_seconds = state.coarse_seconds
        self.at = at
        client = state.client
        cluster = isinstance(client, RedisCluster)  # a cluster refuses scripts in a pipeline
        # 1. The tenants, and the workers' hashes.
        with client.pipeline(transaction=False) as pipe:
            pipe.smembers(state._tenants_key)
            pipe.smembers(state._count_tenants_key)
            pipe.hgetall(state._pipeline_key(CONSUMER_LAG))
            pipe.hgetall(state._pipeline_key(STUCK_PARTITIONS))
            tenants_raw, count_tenants_raw, lag, stuck = pipe.execute()
        self._consumer_lag, self._stuck_partitions = partition_map(lag), partition_map(stuck)
        tenants = sorted(text(m) for m in tenants_raw)
        count_tenants = sorted(text(m) for m in count_tenants_raw)
        # 2. Each tenant's scopes and counter names.
        replies: list[Any] = []
        if tenants or count_tenants:
            with client.pipeline(transaction=False) as pipe:
                for tenant in tenants:
                    pipe.smembers(state._scopes_key(tenant))
                for tenant in count_tenants:
                    pipe.smembers(state._count_names_key(tenant))
                replies = pipe.execute()
        self._scopes = state._scopes_of(tenants, replies[: len(tenants)])
        counters = count_pairs(count_tenants, replies[len(tenants) :])
        # 3. The scopes exported (kpi_core.kpis.exported_scopes): the guard's registry of their
        # names; series_live answers from it.
        questions = guarded_names(config, self._scopes)
        self._series_live = {
            (kind, tenant, limit): (set(names), live)
            for (kind, tenant, names, limit), live in zip(questions, state.series_live_many(questions), strict=True)
        }
        # What the snapshot reads, prefetched below; of the scopes it leaves out, queues' totals
        # (still summed into their tenant's _all until they retire).
        exported, hidden = split_scopes(config, self)
        self._windows: dict[tuple[str, str, float, float], dict[str, float]] = {}
        self._totals: dict[tuple[str, str], dict[str, float]] = {}
        # Live sets summed up in Redis (lua/live.lua) for exactly the queries kpi_core.kpis makes
        # (its LIVE_SETS and live_bounds).
        self._live_sizes: dict[tuple[str, str, str], int] = {}
        self._live_summaries: dict[tuple[str, str, str, float, float], LiveSummary] = {}
        self._live_states: dict[tuple[str, str, str], tuple[dict[str, int], dict[str, int]]] = {}
        pairs = [(tenant, scope) for tenant, scopes in exported.items() for scope in scopes]
        pairs += [(tenant, scope) for tenant, scopes in hidden.items() for scope in scopes if is_queue_scope(scope)]
        # Every scope is asked its questions (kind, name, lo, hi); scopes asked the same ones
        # (a tenant's queues, mostly) share calls, each question sent once a call.
        calls: list[tuple[str, _LiveQuestions, list[str]]] = []
        every_scope: _LiveQuestions = (*(("n", name, 0.0, 0.0) for name in LIVE_SETS), ("a", AGENTS, 0.0, 0.0))
        for tenant, scopes in exported.items():
            asked: dict[_LiveQuestions, list[str]] = {}
            for scope in scopes:
                wanted = every_scope
                if is_queue_scope(scope) and scope != ALL:
                    wanted += tuple(("s", name, lo, hi) for name, lo, hi in live_bounds(config, tenant, scope, at))
                asked.setdefault(wanted, []).append(scope)
            for wanted, asked_of in asked.items():
                step = max(1, LIVE_QUERIES_PER_CALL // len(wanted))
                calls += [(tenant, wanted, asked_of[i : i + step]) for i in range(0, len(asked_of), step)]
        # Each name, bound and set of questions encoded once per scrape, handed over as bytes.
        names_bytes: dict[str, bytes] = {}
        questions_args: dict[_LiveQuestions, list[Any]] = {}

        def name_bytes(name: str) -> bytes:
            found = names_bytes.get(name)
            if found is None:
                found = names_bytes[name] = utf8(encode(name))
            return found

        def live_args(tenant: str, wanted: _LiveQuestions, scopes: list[str]) -> list[Any]:
            head = questions_args.get(wanted)
            if head is None:
                head = questions_args[wanted] = _live_questions_args(wanted)
            return [state._tag(tenant), repr(at), *head, *map(name_bytes, scopes)]

        window_calls = [
            call
            for tenant, scopes in exported.items()
            for call in self._window_calls(
                tenant,
                list(scopes),
                [windows.window_range(window, at, config.timezone(tenant)) for window in config.windows],
                name_bytes,
            )
        ]
        # 4. Totals, live sets, counters and the first window call in one round trip.
        live_script = client.register_script(scripts.LIVE_LUA)
        windows_script = client.register_script(scripts.WINDOWS_LUA)
        first_windows = window_calls[:1] if not cluster else []

        def build(pipe: Any) -> None:
            for tenant, scope in pairs:
                pipe.hgetall(state._totals_key(tenant, scope))
            for tenant, name in counters:
                pipe.hgetall(state._count_key(tenant, name))
            if not cluster:
                for tenant, wanted, asked_of in calls:
                    pipe.evalsha(live_script.sha, 1, state._scopes_key(tenant), *live_args(tenant, wanted, asked_of))
                for tenant, _scopes, _ranges, args in first_windows:
                    pipe.evalsha(windows_script.sha, 1, state._scopes_key(tenant), *args)

        results = iter(self._round_trip(build, (live_script, windows_script)))
        fields = self._fields = _FieldNames()
        for tenant, scope in pairs:
            self._totals[(tenant, scope)] = fields.presented(next(results))
        self._counts = sum_counts(counters, [next(results) for _pair in counters])
        if cluster:
            results = iter([live_script(keys=[state._scopes_key(t)], args=live_args(t, q, s)) for t, q, s in calls])
        sizes, summaries, agent_states = self._live_sizes, self._live_summaries, self._live_states
        for tenant, wanted, asked_of in calls:
            replies_ = next(results)
            if len(replies_) != len(wanted) * len(asked_of):
                raise ValueError(
                    f"live script: {len(replies_)} replies for {len(wanted)} questions of {len(asked_of)} scopes"
                )
            it = iter(replies_)
            for scope in asked_of:
                for kind, name, lo, hi in wanted:
                    reply = next(it)
                    if kind == "n":
                        sizes[(name, tenant, scope)] = int(reply)
                    elif kind == "s":
                        summaries[(name, tenant, scope, lo, hi)] = _live_reply(kind, reply)
                    else:
                        agent_states[(name, tenant, scope)] = _live_reply(kind, reply)
        for call in first_windows:
            self._take_windows(call, next(results))
        self._call_windows(window_calls[len(first_windows) :])

    def _round_trip(self, build: Callable[[Any], None], scripts_used: Sequence[Any]) -> list[Any]:
        """The replies of the commands ``build`` puts in a pipeline, in one round trip. Its
        scripts go by EVALSHA alone; when Redis does not have them (NOSCRIPT: restarted,
        flushed), they are loaded and the round trip made again (reads: safe to repeat)."""
        client = self.state.client
        for attempt in (1, 2):
            with client.pipeline(transaction=False) as pipe:
                build(pipe)
                try:
                    return list(pipe.execute())
                except NoScriptError:
                    if attempt == 2:
                        raise
            for script in scripts_used:
                client.script_load(script.script)
        raise AssertionError("unreachable")

    def _window_calls(
        self, tenant: str, scopes: list[str], ranges: list[tuple[float, float]], name_bytes: Callable[[str], bytes]
    ) -> list[tuple[str, list[str], list[tuple[float, float]], list[Any]]]:
        """The window script's calls for ``scopes`` of ``tenant`` over ``ranges``: ``(tenant,
        scopes, ranges, ARGV)``, :data:`WINDOW_SCOPES_PER_CALL` scopes a call."""
        covers = [windows.cover(start, end, self.fine_seconds, self.coarse_seconds) for start, end in ranges]
        head: list[Any] = [self.state._tag(tenant), self.fine_seconds, self.coarse_seconds, len(ranges)]
        for fine_head, middle, tail in covers:
            for part in (fine_head, middle, tail):
                head += [part.start, part.stop] if len(part) else [0, 0]
        return [
            (tenant, chunk, ranges, [*head, *map(name_bytes, chunk)])
            for i in range(0, len(scopes), WINDOW_SCOPES_PER_CALL)
            for chunk in (scopes[i : i + WINDOW_SCOPES_PER_CALL],)
        ]

    def _take_windows(self, call: tuple[str, list[str], list[tuple[float, float]], list[Any]], replies: Any) -> None:
        """Keep the window sums of one call's reply."""
        tenant, scopes, ranges, _args = call
        it = iter(replies)
        presented = self._fields.presented_flat
        for scope in scopes:
            for start, end in ranges:
                self._windows[(tenant, scope, start, end)] = presented(next(it))

    def _call_windows(self, calls: list[tuple[str, list[str], list[tuple[float, float]], list[Any]]]) -> None:
        """The window script's ``calls``, a round trip each."""
        state = self.state
        script = state.client.register_script(scripts.WINDOWS_LUA)
        for call in calls:
            self._take_windows(call, script(keys=[state._scopes_key(call[0])], args=call[3]))

    def _prefetch_windows(self, tenant: str, scopes: list[str], ranges: list[tuple[float, float]]) -> None:
        """The window sums of ``scopes`` of ``tenant`` over ``ranges``, a round trip per call."""
        self._call_windows(self._window_calls(tenant, scopes, ranges, lambda name: utf8(encode(name))))

    def scopes(self) -> Mapping[str, Iterable[str]]:
        return self._scopes

    def read_window(self, tenant: str, scope: str, start: float, end: float) -> dict[str, float]:
        found = self._windows.get((tenant, scope, start, end))  # presented: a copy is the caller's
        return dict(found) if found is not None else self.state.read_window(tenant, scope, start, end)

    def totals(self, tenant: str, scope: str) -> dict[str, float]:
        found = self._totals.get((tenant, scope))
        return dict(found) if found is not None else self.state.totals(tenant, scope)

    def live(self, name: str, tenant: str, scope: str) -> dict[str, float]:
        return self.state.live(name, tenant, scope)

    def live_size(self, name: str, tenant: str, scope: str) -> int:
        found = self._live_sizes.get((name, tenant, scope))
        return found if found is not None else self.state.live_size(name, tenant, scope)

    def live_summary(self, name: str, tenant: str, scope: str, lo: float, hi: float, at: float) -> LiveSummary:
        found = self._live_summaries.get((name, tenant, scope, lo, hi)) if at == self.at else None
        return found if found is not None else self.state.live_summary(name, tenant, scope, lo, hi, at)

    def live_states(self, name: str, tenant: str, scope: str, at: float) -> tuple[dict[str, int], dict[str, int]]:
        found = self._live_states.get((name, tenant, scope)) if at == self.at else None
        return found if found is not None else self.state.live_states(name, tenant, scope, at)

    def counts(self) -> dict[str, dict[str, float]]:
        return {name: dict(labels) for name, labels in self._counts.items()}

    def consumer_lag(self) -> dict[tuple[str, int], float]:
        return dict(self._consumer_lag)

    def stuck_partitions(self) -> dict[tuple[str, int], float]:
        return dict(self._stuck_partitions)

    def series_live(self, kind: str, tenant: str, names: Iterable[str], limit: int) -> set[str]:
        wanted = set(names)
        found = self._series_live.get((kind, tenant, limit))
        if found is not None and wanted <= found[0]:
            return wanted & found[1]
        return self.state.series_live(kind, tenant, wanted, limit)

    def __getattr__(self, name: str) -> Any:  # consumer_lag and the like: the store's own
        return getattr(self.state, name)


class _FieldNames:
    """Replies of field names and numbers as ``{name: float}``, each distinct name decoded
    once: a scrape parses many more fields than there are distinct names.

    :meth:`presented` and :meth:`presented_flat` parse a reply straight into what
    :func:`~kpi_core.state.present` makes of it (same keys, order and bits: the unit tests
    compare them), with each distinct name classified once (plain, a ``*_ms`` sum scaled to
    seconds, a multiset's ``mx:<name>:<ms>``) instead of once per field."""

    def __init__(self) -> None:
        self._text: dict[Any, str] = {}
        # raw name -> (kind, name, ms): kind 0 plain (name: the field), 1 a ``*_ms`` sum
        # (name: its presented field), 2 a multiset count (name: ``max_<name>``; its value ms),
        # 3 a multiset field whose value is not a whole number (an error if its count is > 0).
        self._kinds: dict[Any, tuple[int, str, int]] = {}

    def _learn(self, names: Iterable[Any]) -> None:
        known = self._text
        for name in names:
            if name not in known:
                known[name] = text(name)

    def floats(self, raw: Mapping[Any, Any]) -> dict[str, float]:
        """A hash (``HGETALL``): :func:`~streams.redis.keys.floats`."""
        try:
            return dict(zip(map(self._text.__getitem__, raw), map(float, raw.values()), strict=True))
        except KeyError:
            self._learn(raw)
            return dict(zip(map(self._text.__getitem__, raw), map(float, raw.values()), strict=True))

    def flat(self, flat: Sequence[Any]) -> dict[str, float]:
        """A flat ``[name, value, ...]`` list."""
        try:
            return dict(zip(map(self._text.__getitem__, flat[0::2]), map(float, flat[1::2]), strict=True))
        except KeyError:
            self._learn(flat[0::2])
            return dict(zip(map(self._text.__getitem__, flat[0::2]), map(float, flat[1::2]), strict=True))

    def _kind(self, raw: Any) -> tuple[int, str, int]:
        found = self._kinds.get(raw)
        if found is None:
            field = text(raw)
            if field.startswith(MAX_PREFIX):
                name, _sep, ms = field[3:].rpartition(":")
                try:
                    found = (2, "max_" + name, int(ms))
                except ValueError:  # present raises it for a count above 0 (below)
                    found = (3, field, 0)
            else:
                base, at, mark = field.partition("@")
                if MS_SUFFIX in field and base.endswith(MS_SUFFIX):
                    found = (1, base[:-3] + at + mark, 0)
                else:
                    found = (0, field, 0)
            self._kinds[raw] = found
        return found

    def presented(self, raw: Mapping[Any, Any]) -> dict[str, float]:
        """``present(self.floats(raw))``, in one pass."""
        return self._present(raw.items())

    def presented_flat(self, flat: Sequence[Any]) -> dict[str, float]:
        """``present(self.flat(flat))``, in one pass."""
        return self._present(zip(flat[0::2], flat[1::2], strict=True))  # an odd length: ValueError

    def _present(self, pairs: Iterable[tuple[Any, Any]]) -> dict[str, float]:
        # kpi_core.state.present, step for step: plain fields in order, then the scaled sums
        # (added to a legacy field of the same name), then the multisets' maxima.
        out: dict[str, float] = {}
        scaled: dict[str, float] | None = None
        maxima: dict[str, int] | None = None
        kinds, kind_of = self._kinds, self._kind
        for raw, number in pairs:
            kind, name, ms = kinds.get(raw) or kind_of(raw)
            value = float(number)
            if kind == 0:
                out[name] = value
            elif kind == 1:
                if scaled is None:
                    scaled = {}
                scaled[name] = value
            elif value > 0:
                if kind == 3:
                    int(name.rpartition(":")[2])  # raises present's ValueError
                if maxima is None:
                    maxima = {}
                if ms > maxima.get(name, -(1 << 62)):
                    maxima[name] = ms
        if scaled is not None:
            for name, value in scaled.items():
                out[name] = out.get(name, 0.0) + value / 1000
        if maxima is not None:
            for name, ms in maxima.items():
                seconds = float(ms) / 1000  # as present() does (the same bits, compiled or not)
                legacy = out.get(name)
                if legacy is None or seconds > legacy:
                    out[name] = seconds
        return out
