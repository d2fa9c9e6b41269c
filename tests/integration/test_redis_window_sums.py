"""The window script (streams/redis/lua/windows.lua) against the store's own bucket reads.

The script visits only the buckets a scope's index lists (binary search in the index's
starts) and parses each bucket once however many windows hold it; the reference,
``RedisState.read_window``, reads every slot of a window's cover. Both must give the same
sums to the bit, for many scopes at instants with ragged and whole edges, with edge values
(0, -0, tiny and huge doubles, whole numbers below and beyond 2^53: the script hands whole
sums back as integers, others as text), legacy ``max_*`` maxima, multiset counts), a
listed bucket that no longer exists, a listed start off the bucket grid (no window holds it),
and a scope written before indexes existed (no index: every slot probed).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from kpi_core import windows
from kpi_core.config import Config
from streams.redis.state import RedisState

pytestmark = pytest.mark.integration

CONFIG = Config()
#: 2026-11-20T10:07:00Z, a whole minute inside a quarter hour.
AT = 1795168800.0 + 7 * 60
VALUES = [
    0,
    -0.0,
    1,
    2,
    7,
    -5,
    1e-300,
    0.1,
    2.5,
    2.0**52,
    2.0**53 - 1,
    2.0**53,
    2.0**60,
    -(2.0**61),
    1e300,
    123456789.0,
]


def populate(client: Any, state: RedisState, rng: random.Random, scopes: list[str], legacy: str) -> None:
    fine, coarse = CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds
    with client.pipeline(transaction=False) as pipe:
        for scope in scopes:
            for tier, size, first, last in (
                (windows.FINE, fine, AT - 2 * 3600, AT + 60),
                (windows.COARSE, coarse, AT - 26 * 3600, AT + 900),
            ):
                starts = sorted(rng.sample(range(int(first) // size, int(last) // size), rng.randint(0, 40)))
                listed = []
                for slot in starts:
                    start = slot * size
                    listed.append(start)
                    if rng.random() < 0.1:
                        continue  # listed in the index, the bucket itself gone (expired)
                    fields: dict[str, Any] = {}
                    for name in rng.sample(["offered", "answered", "wait_ms", "talk_ms", "nps_n"], rng.randint(1, 5)):
                        fields[name] = repr(rng.choice(VALUES))
                    if rng.random() < 0.3:
                        fields["max_wait"] = repr(rng.choice(VALUES))
                    if rng.random() < 0.3:
                        fields[f"mx:wait:{rng.randint(0, 5) * 1000}"] = rng.randint(1, 3)
                    if rng.random() < 0.3:
                        # Many values of two maxima (the script keeps each bucket's largest),
                        # rarely a count the writer never leaves (0, below 0) or an ms beyond
                        # 15 digits: a window holding one sums every field instead.
                        for _ in range(rng.randint(1, 30)):
                            name = rng.choice(["wait", "callback_delay"])
                            ms = rng.choice([rng.randint(-5, 10**7), 12345678901234567, 9007199254740993])
                            count = rng.choice([1, 1, 2, 3] * 10 + [0, -1])
                            fields[f"mx:{name}:{ms}"] = count
                    pipe.hset(state._bucket_key("t", tier, scope, start), mapping=fields)
                if scope != legacy and starts and rng.random() < 0.3:
                    # A listed start off the tier's grid (no writer makes one): no window holds it.
                    odd = starts[0] * size + size // 2
                    listed.append(odd)
                    pipe.hset(state._bucket_key("t", tier, scope, odd), mapping={"offered": "1000"})
                if scope != legacy and listed:
                    pipe.zadd(state._index_key("t", tier, scope), {str(s): s for s in listed})
        pipe.execute()


def test_window_script_equals_every_bucket_read(redis_client: Any, redis_prefix: str) -> None:
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT)
    rng = random.Random(16)
    scopes = [f"q{i}" for i in range(60)] + ["_all", "q:ü/é"]
    populate(redis_client, state, rng, scopes, legacy="q7")
    compared = nonempty = 0
    for at in (AT, AT - 7 * 60, AT + 13.5, AT - 3600 - 10, AT - 10 * 3600 + 1):
        reader = state.snapshot_reader(CONFIG, at)
        ranges = [windows.window_range(w, at, CONFIG.timezone("t")) for w in CONFIG.windows]
        reader._prefetch_windows("t", scopes, ranges)
        for scope in scopes:
            for start, end in ranges:
                assert (("t", scope, start, end)) in reader._windows
                want = state.read_window("t", scope, start, end)
                got = reader.read_window("t", scope, start, end)
                assert got == want, (scope, start, end)
                assert [repr(v) for v in got.values()] == [repr(v) for v in want.values()]
                compared += 1
                nonempty += bool(want)
    assert compared == 5 * len(scopes) * len(CONFIG.windows) and nonempty > compared // 2


def test_live_reads_of_many_queues_equal_the_store_reads(redis_client: Any, redis_prefix: str) -> None:
    """The live script asked of many queues at once (a call asks each question once of up to
    LIVE_QUERIES_PER_CALL // questions scopes; here several calls) answers every queue as the
    store's own reads do: sizes, summaries in each bound, agents by state."""
    from kpi_core.engine import AGENTS, ALL, CALLBACKS, TICKETS, WAITING
    from kpi_core.engine.agents import agent_member
    from kpi_core.kpis import LIVE_SETS, live_bounds
    from streams.redis.read import LIVE_QUERIES_PER_CALL

    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT)
    rng = random.Random(7)
    queues = [f"q{i:03d}" for i in range(3 * LIVE_QUERIES_PER_CALL // 9 + 5)]
    with redis_client.pipeline(transaction=False) as pipe:
        pipe.sadd(state._tenants_key, "t")
        pipe.sadd(state._scopes_key("t"), *queues, ALL)
        for scope in [*queues, ALL]:
            for name in (WAITING, CALLBACKS, TICKETS):
                members = {
                    f"m{j}": AT - rng.choice([0, 1, 30, 3599.5, 4 * 3600 + 1, 86400]) for j in range(rng.randint(0, 4))
                }
                if members:
                    pipe.zadd(state._live_key(name, "t", scope), members)
            agents = {
                agent_member(rng.choice(["available", "busy", "away"]), "none", f"a{j}"): AT + rng.choice([-60, 0, 5])
                for j in range(rng.randint(0, 5))
            }
            if agents:
                pipe.zadd(state._live_key(AGENTS, "t", scope), agents)
        pipe.execute()
    reader = state.snapshot_reader(CONFIG, AT)
    for scope in [*queues, ALL]:
        for name in LIVE_SETS:
            assert (name, "t", scope) in reader._live_sizes
            assert reader.live_size(name, "t", scope) == state.live_size(name, "t", scope)
        assert (AGENTS, "t", scope) in reader._live_states
        assert reader.live_states(AGENTS, "t", scope, AT) == state.live_states(AGENTS, "t", scope, AT)
        if scope != ALL:
            for name, lo, hi in live_bounds(CONFIG, "t", scope, AT):
                assert (name, "t", scope, lo, hi) in reader._live_summaries
                assert reader.live_summary(name, "t", scope, lo, hi, AT) == state.live_summary(
                    name, "t", scope, lo, hi, AT
                )


def random_writes(
    state: RedisState,
    rng: random.Random,
    scopes: list[str],
    applied: list[tuple[str, float, dict[str, int]]],
    n: int,
    lo: float,
    hi: float,
    retract: bool = True,
) -> None:
    """One batch of ``n`` adds through the writer at times in [lo, hi): a random count or sum,
    half of them with a multiset field; or (15 %, with ``retract``) the retraction of an earlier
    one from ``applied``, as the engine makes them."""
    with state.batch():
        for _ in range(n):
            if retract and applied and rng.random() < 0.15:  # a retraction, as the engine makes them
                scope, ts, deltas = applied.pop(rng.randrange(len(applied)))
                state.add("t", scope, ts, {k: -v for k, v in deltas.items()})
                continue
            scope, ts = rng.choice(scopes), rng.uniform(lo, hi)
            deltas = {rng.choice(["offered", "answered", "wait_sum_ms", "rings"]): rng.randint(1, 9)}
            if rng.random() < 0.5:
                deltas[f"mx:{rng.choice(['wait', 'callback_delay'])}:{rng.randint(0, 10**6)}"] = 1
            state.add("t", scope, ts, deltas)
            applied.append((scope, ts, deltas))


def scripted_equals_store(state: RedisState, scopes: list[str], at: float) -> int:
    """Every (scope, window) the window script sums at ``at`` equals the store's every-bucket
    read, to the bit; returns how many are not empty."""
    reader = state.snapshot_reader(CONFIG, at)
    ranges = [windows.window_range(w, at, CONFIG.timezone("t")) for w in CONFIG.windows]
    reader._prefetch_windows("t", scopes, ranges)
    nonempty = 0
    for scope in scopes:
        for start, end in ranges:
            want = state.read_window("t", scope, start, end)
            got = reader.read_window("t", scope, start, end)
            assert got == want, (scope, start, end, at)
            assert [repr(v) for v in got.values()] == [repr(v) for v in want.values()]
            nonempty += bool(want)
    return nonempty


def test_the_window_cache_follows_every_write(redis_client: Any, redis_prefix: str) -> None:
    """The window script keeps, per scope, its fold of the longest window's closed coarse
    buckets (``wc``) at the scope's window version (``wv``), which the batch script moves on
    when a batch writes a coarse bucket below the index's newest, or makes a new index.
    Through the writer's own path, scrape after scrape with writes between them (late ones
    into cached buckets, retractions, multisets, the clock moving on, the prefix's keys but
    the caches deleted and written again), every (scope, window) the script sums equals the
    store's every-bucket read; and the cache is what the script reads (a cached bucket
    changed behind the writer's back does not show until a write moves the version on)."""
    now = [AT]
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: now[0])
    rng = random.Random(11)
    scopes = [f"q{i}" for i in range(6)] + ["_all"]
    midnight = AT - AT % 86400
    applied: list[tuple[str, float, dict[str, int]]] = []

    def write(n: int, lo: float, hi: float, retract: bool = True) -> None:
        random_writes(state, rng, scopes, applied, n, lo, hi, retract)

    def check(at: float) -> int:
        return scripted_equals_store(state, scopes, at)

    write(400, midnight, AT)
    assert check(AT) > 0
    caches = sorted(k for k in redis_client.scan_iter(match=f"{redis_prefix}:*:wc:*"))
    assert len(caches) == len(scopes)
    steps = {"late": 0, "current": 0, "advance": 0, "again": 0}
    for _ in range(40):
        step = rng.choice(list(steps))
        steps[step] += 1
        if step == "late":  # into buckets the caches hold
            write(rng.randint(1, 15), midnight, now[0] - 1800)
        elif step == "current":
            write(rng.randint(1, 15), now[0] - 60, now[0])
        elif step == "advance":
            now[0] += rng.choice([10, 300, 900, 1000])
            write(rng.randint(1, 15), now[0] - 120, now[0])
        check(now[0])  # "again": a scrape with nothing written since the last
    assert min(steps.values()) >= 5

    # The cache is read: a cached bucket changed behind the writer's back (no version move)
    # does not show; the next write below the newest bucket moves the version on, and it does.
    window = windows.window_range(CONFIG.windows[-1], now[0], CONFIG.timezone("t"))
    scope = "q1"
    before = state.read_window("t", scope, *window)
    first = min(int(m) for m in redis_client.zrange(state._index_key("t", windows.COARSE, scope), 0, -1))
    redis_client.hincrby(state._bucket_key("t", windows.COARSE, scope, first), "offered", 1000)
    reader = state.snapshot_reader(CONFIG, now[0])
    assert reader.read_window("t", scope, *window) == before
    with state.batch():
        state.add("t", scope, first + 1, {"rings": 1})
    reader = state.snapshot_reader(CONFIG, now[0])
    assert reader.read_window("t", scope, *window) == state.read_window("t", scope, *window)
    assert reader.read_window("t", scope, *window)["offered"] == before["offered"] + 1000

    # A day written in time order (no write below a newest bucket: only the new indexes move
    # the versions) and cached; then every key but the caches deleted (a `rebuild --clear`
    # racing a scrape) and another day written the same way: the new indexes move the versions
    # on again, to values they never had, so the caches of the first are not read.
    def clear(keep: bytes) -> None:
        for key in redis_client.scan_iter(match=f"{redis_prefix}:*"):
            if keep not in key:
                redis_client.delete(key)

    for kept in (b"\0", b":wc:"):
        clear(kept)
        applied.clear()
        for hour in range(int(midnight), int(now[0]) - 3600, 3600):
            write(20, hour, hour + 3600, retract=False)
        check(now[0])


def test_the_minute_folds_follow_every_write(redis_client: Any, redis_prefix: str) -> None:
    """The window script folds each closed minute of fine buckets once (``mc``) at the scope's
    minute version (``wv:f``), which the batch script moves on when a batch writes a fine
    bucket in a minute below the index's newest one's, or makes a new index. Scrape after
    scrape, with writes between them (late ones into folded minutes, retractions, multisets,
    the current minute, the clock moving on by less and more than a minute), every (scope,
    window) equals the store's every-bucket read, to the bit; a fraction in a bucket (a
    legacy float) or sums that would round differently regrouped (near 2^52 and 2^53) make
    their windows fold bucket by bucket; the folds are what the script
    reads (a folded bucket changed behind the writer's back does not show until a write
    moves the version on); and folds left by keys deleted and written again are not read."""
    now = [AT + 23.0]  # ragged edges: the fine parts hold whole minutes and loose buckets
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: now[0])
    rng = random.Random(5)
    scopes = [f"q{i}" for i in range(5)] + ["_all"]
    applied: list[tuple[str, float, dict[str, int]]] = []

    def write(n: int, lo: float, hi: float, retract: bool = True) -> None:
        random_writes(state, rng, scopes, applied, n, lo, hi, retract)

    def check(at: float) -> None:
        scripted_equals_store(state, scopes, at)

    def folds() -> dict[bytes, bytes]:
        return {k: redis_client.get(k) for k in redis_client.scan_iter(match=f"{redis_prefix}:*:mc:*")}

    write(600, now[0] - 3700, now[0])
    check(now[0])
    assert len(folds()) == len(scopes)
    steps = {"late": 0, "current": 0, "advance": 0, "again": 0}
    for _ in range(40):
        step = rng.choice(list(steps))
        steps[step] += 1
        if step == "late":  # into minutes already folded
            write(rng.randint(1, 10), now[0] - 3000, now[0] - 120)
        elif step == "current":
            write(rng.randint(1, 10), now[0] - 15, now[0])
        elif step == "advance":
            now[0] += rng.choice([10, 30, 60, 70, 300])
            write(rng.randint(1, 10), now[0] - 40, now[0])
        check(now[0])
    assert min(steps.values()) >= 5

    # The folds are read: a bucket of a folded minute changed behind the writer's back does
    # not show; a write into an earlier minute moves the version on, and then it does.
    scope = "q2"
    five = windows.window_range(CONFIG.windows[0], now[0], CONFIG.timezone("t"))
    fine = CONFIG.bucket_seconds
    starts = [int(m) for m in redis_client.zrange(state._index_key("t", windows.FINE, scope), 0, -1)]
    newest_minute = max(starts) - max(starts) % 60
    folded = [t for t in starts if five[0] <= t - t % 60 and t - t % 60 + 60 <= min(five[1], newest_minute)]
    assert folded, "no folded minute in the 5m window"
    before = state.read_window("t", scope, *five)
    redis_client.hincrby(state._bucket_key("t", windows.FINE, scope, folded[0]), "offered", 1000)
    assert state.snapshot_reader(CONFIG, now[0]).read_window("t", scope, *five) == before
    with state.batch():
        state.add("t", scope, folded[0] - folded[0] % 60 + fine / 2, {"rings": 1})
    got = state.snapshot_reader(CONFIG, now[0]).read_window("t", scope, *five)
    assert got == state.read_window("t", scope, *five)
    assert got["offered"] == before.get("offered", 0) + 1000

    # Where grouping would change the bits: 2^52 - 0.5 in one minute's bucket, then 1 and 1 in
    # two buckets of the next minute. In order: 2^52 + 0.5 rounds to 2^52, then 2^52 + 1; the
    # next minute's fold (2) added at once would give 2^52 + 1.5, rounded to 2^52 + 2. And
    # whole numbers whose sum passes 2^53 (2^53, then 1 and 1) round alike only in order.
    for field, head, where in (("legacy_sum", "4503599627370495.5", "q2"), ("huge_sum_ms", "9007199254740992", "q3")):
        listed = [int(m) for m in redis_client.zrange(state._index_key("t", windows.FINE, where), 0, -1)]
        closed = max(listed) - max(listed) % 60
        first, second = list(range(int(five[0]) - int(five[0]) % 60 + 60, closed, 60))[:2]
        redis_client.hset(state._bucket_key("t", windows.FINE, where, first), field, head)
        with state.batch():
            for start in (second, second + fine):
                state.add("t", where, start + fine / 2, {field: 1})
            state.add("t", where, first + fine / 2, {"rings": 1})  # a write below the newest minute
        check(now[0])
    # A fraction (a legacy float) in one folded bucket: its windows are summed bucket by bucket.
    redis_client.hset(state._bucket_key("t", windows.FINE, scope, folded[-1]), "wait_sum", "0.1")
    with state.batch():  # moves the version on, so the minute is folded again (and refused)
        state.add("t", scope, folded[-1] - folded[-1] % 60 + fine / 2, {"rings": 1})
    check(now[0])

    # Every key but the folds deleted (a `rebuild --clear` racing a scrape), then other data
    # written in time order: the new indexes move the versions on, the old folds are not read.
    for kept in (b"\0", b":mc:"):
        for key in redis_client.scan_iter(match=f"{redis_prefix}:*"):
            if kept not in key:
                redis_client.delete(key)
        applied.clear()
        for minute in range(int(now[0]) - 3600, int(now[0]) - 60, 600):
            write(15, minute, minute + 600, retract=False)
        check(now[0])
