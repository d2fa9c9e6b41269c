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
