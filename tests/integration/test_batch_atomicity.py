"""A batch is all-or-nothing whatever fails inside the batch script (streams/redis/lua/apply.lua,
streams.redis.scripts.APPLY_LUA): a malformed ARGV is refused before the first write, a failure among the writes is
rolled back from the undo log, the ``seen`` ids are written last, and the batch run again
afterwards applies its events exactly once. On the real Redis, each test under its own prefix.

The failures among the writes are injected with the script's test hook
(:attr:`RedisState.fail_at_write`): before the k-th write, for every k of a realistic batch
(two simulated tenants, the golden events, a rejection), each op type of the script included.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
import redis

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.engine.agents import AGENT_HEAD
from kpi_core.errors import InvalidEventError
from kpi_core.events import Event, parse_event
from streams.redis import write
from streams.redis.scripts import APPLY_LUA
from streams.redis.state import RedisState
from streams.sim import SimParams, Simulator, default_queues
from streams.worker import INTERNAL_ERROR, PIPELINE_TENANT, BatchProcessor, Message

pytestmark = pytest.mark.integration

CONFIG = Config()
OPS = set("SHMRDZXAIGW")

Dump = dict[bytes, tuple[bytes, Any, Any]]
ZRANGE_RAW = "return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')"


# -- helpers ------------------------------------------------------------------------------------
def dump(client: Any, prefix: str, exact_ttl: bool = True) -> Dump:
    """Every key under ``prefix`` (the prefix cut off): type, whole value as raw bytes (hash
    fields, zset members with their score text, set members, string), and its absolute expiry
    in ms (``exact_ttl``) or only whether it has one."""
    return dump_keys(client, list(client.scan_iter(match=f"{prefix}:*", count=1000)), len(prefix), exact_ttl)


def dump_keys(client: Any, keys: list[Any], cut: int = 0, exact_ttl: bool = True) -> Dump:
    """:func:`dump` of ``keys`` (names cut by ``cut`` characters; missing keys left out)."""
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        types = pipe.execute()
    keys = [key for key, kind in zip(keys, types, strict=True) if kind != b"none"]
    types = [kind for kind in types if kind != b"none"]
    with client.pipeline(transaction=False) as pipe:
        for key, kind in zip(keys, types, strict=True):
            if kind == b"hash":
                pipe.execute_command("HGETALL", key)
            elif kind == b"zset":
                pipe.eval(ZRANGE_RAW, 1, key)  # scores as Redis's own text (redis-py would make floats)
            elif kind == b"set":
                pipe.execute_command("SMEMBERS", key)
            elif kind == b"string":
                pipe.execute_command("GET", key)
            elif kind == b"list":
                pipe.execute_command("LRANGE", key, 0, -1)
            else:
                raise AssertionError(f"unexpected type {kind!r} of {key!r}")
            pipe.execute_command("PEXPIRETIME", key)
        replies = iter(pipe.execute())
    out: Dump = {}
    for key, kind in zip(keys, types, strict=True):
        value = next(replies)
        expire = next(replies)
        if kind == b"hash" and isinstance(value, dict):
            value = sorted(value.items())
        elif kind == b"hash" or kind == b"zset":
            value = sorted(zip(value[::2], value[1::2], strict=True))
        elif kind == b"set":
            value = sorted(value)
        out[key[cut:]] = (kind, value, expire if exact_ttl else expire > 0)
    return out


def versions_as_tokens(d: Dump) -> Dump:
    """``d`` with each window version's value (``wv``: a token from Redis's clock that tells a
    scrape its cache is stale) left out: two runs of the same batches make the same ones,
    with other values."""
    return {
        key: (kind, b"<version>", expire) if b":wv:" in key else (kind, value, expire)
        for key, (kind, value, expire) in d.items()
    }


def loose(d: Dump) -> Dump:
    """``d`` with its expiries reduced to "has one"."""
    return {
        key: (kind, value, expire if isinstance(expire, bool) else expire > 0)
        for key, (kind, value, expire) in d.items()
    }


def snapshot_keys(client: Any, prefix: str) -> list[tuple[bytes, bytes, int]]:
    """DUMP of every key under ``prefix`` with its absolute expiry, for :func:`restore`."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.dump(key)
            pipe.execute_command("PEXPIRETIME", key)
        replies = pipe.execute()
    return [(key, replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(keys)]


def restore(client: Any, prefix: str, saved: list[tuple[bytes, bytes, int]]) -> None:
    """Put the keys under ``prefix`` back as :func:`snapshot_keys` saw them."""
    from tests.conftest import delete_prefix

    delete_prefix(client, prefix)
    with client.pipeline(transaction=False) as pipe:
        for key, payload, expire in saved:
            absolute = ["ABSTTL"] if expire > 0 else []
            pipe.execute_command("RESTORE", key, max(expire, 0), payload, "REPLACE", *absolute)
        pipe.execute()


def run(state: RedisState, items: Iterable[Event | tuple[str, float]], now: float) -> int:
    """``items`` in one batch, as the worker runs them: events through the engine, rejections
    counted once per id (a ``(id, ts)`` pair). Returns the events applied (not duplicates)."""
    engine = Engine(CONFIG, state)
    applied = 0
    with state.batch():
        for item in items:
            if isinstance(item, Event):
                try:
                    applied += engine.process(item, now)
                    continue
                except InvalidEventError as exc:
                    reason, ident, ts = exc.reason, f"events/0/{item.event_id}", now
            else:
                reason, (ident, ts) = "invalid_json", item
            if state.claim_event(PIPELINE_TENANT, ident, ts):
                engine.reject(reason, tenant=PIPELINE_TENANT)
    return applied


def scenario(golden_lines: list[bytes], at: float) -> tuple[list[Any], list[Any]]:
    """(base, batch): the state a batch finds, and a batch that uses every op of the script.
    Tenant ``acme`` (3 queues) has 45 min of history, ``zeta`` (2 queues) is new in the batch
    (new tenant, scopes, series), ``default`` has the first half of the golden events; the
    batch has acme's last 90 s (calls answered and ended: records replaced and deleted, live
    sets added to and removed from), its callbacks, zeta's first 90 s, the rest of the golden
    events (surveys, tickets), one event from too long ago and one invalid record."""
    golden = [parse_event(json.loads(line)) for line in golden_lines]
    acme = [
        parse_event(r)
        for _t, r in Simulator(
            SimParams(start=at - 2700, hours=0.75, queues=default_queues(3), seed=5, tenant="acme")
        ).stream()
        if isinstance(r, dict)
    ]
    zeta = [
        parse_event(r)
        for _t, r in Simulator(
            SimParams(start=at - 90, hours=0.025, queues=default_queues(2), seed=4, tenant="zeta")
        ).stream()
        if isinstance(r, dict)
    ]
    cut = at - 90
    callbacks = [e for e in acme if e.type.startswith("callback.")]
    base = [e for e in acme if e.ts < cut and e not in callbacks] + golden[:24]
    # An agent's state change from before the first one kept: its history chunks (it has
    # 2 x AGENT_HEAD more changes, short breaks) are read back into its record and deleted
    # (the D op).
    busiest = Counter(e.agent_id for e in base if e.type == "agent.state").most_common(1)[0][0]
    first = min((e for e in base if e.agent_id == busiest and e.type == "agent.state"), key=lambda e: e.ts)
    breaks = [
        parse_event(
            {
                "event_id": f"break-{i}",
                "type": "agent.state",
                "ts": first.ts + 1 + i,
                "tenant": "acme",
                "agent_id": busiest,
                "state": "away" if i % 2 == 0 else first.state,
                "queues": list(first.queues or ()),
            }
        )
        for i in range(2 * AGENT_HEAD)
    ]
    base = sorted([*base, *breaks], key=lambda e: e.ts)
    back = parse_event(
        {
            "event_id": "back-1",
            "type": "agent.state",
            "ts": first.ts - 60,
            "tenant": "acme",
            "agent_id": busiest,
            "state": "offline",
            "queues": list(first.queues or ()),
        }
    )
    too_late = parse_event(
        {"event_id": "late-1", "type": "call.offered", "ts": at - 40 * 86400, "queue": "support", "call_id": "late"}
    )
    batch = [
        *callbacks,
        *(e for e in acme if e.ts >= cut and e not in callbacks),
        *zeta,
        *golden[24:],
        back,
        too_late,
        ("events/9/0", at),
    ]
    return base, batch


def age_out_markers(client: Any, prefix: str) -> None:
    """Members the batch's pruning removes (an hour of seen ids, a bucket start, a series name
    that ended long ago), so the rollback of a ZREMRANGEBYSCORE is exercised too."""
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        if key.endswith(b":seen") or b":bi:" in key or key.endswith(b":series:tenant"):
            client.zadd(key, {b"aged-out": 1})


def fail_with_hook(state: RedisState, batch: list[Any], now: float, k: int) -> str:
    state.fail_at_write = k
    try:
        with pytest.raises(redis.ResponseError) as info:
            run(state, batch, now)
    finally:
        state.fail_at_write = 0
    return str(info.value)


# -- the tests ----------------------------------------------------------------------------------
def test_a_failure_at_any_write_of_the_batch_script_is_rolled_back(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For every write k of the batch's script: a failure just before it leaves the store as it
    was. Every k is checked on the keys the script may touch (its KEYS) by replaying the
    batch's script call; a sample of k (at least 50: the first and last write, the first and
    last of each op type, every 17th) through RedisState.batch on the whole prefix, followed
    by the batch without the hook (the store the same as after one clean application) and the
    batch once more (every event a duplicate)."""
    from tests.conftest import delete_prefix

    now = golden_at
    base, batch = scenario(golden_lines, now)
    events = sum(isinstance(e, Event) for e in batch)
    ref_prefix = f"{redis_prefix}-ref"
    try:
        # The reference: the batch applied once, cleanly.
        ref = RedisState(redis_client, CONFIG, prefix=ref_prefix, clock=lambda: now)
        assert run(ref, base, now) == len(base)
        age_out_markers(redis_client, ref_prefix)
        assert run(ref, batch, now) == events - 1  # all but the one too late
        want = versions_as_tokens(dump(redis_client, ref_prefix, exact_ttl=False))

        state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: now)
        assert run(state, base, now) == len(base)
        age_out_markers(redis_client, redis_prefix)
        before = dump(redis_client, redis_prefix)
        saved = snapshot_keys(redis_client, redis_prefix)
        assert loose(before) != want

        # A failure after the last write: everything is undone. The script call is kept.
        calls: list[tuple[Any, ...]] = []
        run_script = write._run_script

        def spy(pipe: Any, command: tuple[Any, ...], **options: Any) -> Any:
            if command[:2] == ("EVAL", APPLY_LUA):
                calls.append(command[2:])
            return run_script(pipe, command, **options)

        with monkeypatch.context() as patch:
            patch.setattr(write, "_run_script", spy)
            message = fail_with_hook(state, batch, now, -1)
        match = re.search(r"injected failure after the last write \((\d+) writes\)", message)
        assert match, message
        assert "all rolled back" in message
        writes = int(match.group(1))
        assert writes > 200
        assert dump(redis_client, redis_prefix) == before
        (call,) = calls
        nkeys = call[0]
        keys, argv = list(call[1 : 1 + nkeys]), list(call[1 + nkeys :])
        assert argv[1] == -1  # the hook

        # Before each write in turn: the keys the script may change are unchanged, to the
        # byte and the millisecond of their expiry.
        touched = sorted({key.encode() for key in keys})
        untouched = dump_keys(redis_client, touched)
        assert untouched.keys() < {redis_prefix.encode() + k for k in before}
        op_of_step: list[str] = []
        for k in range(1, writes + 1):
            argv[1] = k
            with pytest.raises(redis.ResponseError) as info:
                redis_client.eval(APPLY_LUA, nkeys, *keys, *argv)
            found = re.search(rf"failure before write {k} \(test hook; op (\w) on KEYS\[\d+\]\)", str(info.value))
            assert found, str(info.value)
            op_of_step.append(found.group(1))
            assert dump_keys(redis_client, touched) == untouched, f"write {k} of {writes} (op {found.group(1)})"
        assert set(op_of_step) == OPS, f"op types written: {sorted(set(op_of_step))}"
        # The seen ids are the last writes.
        first_seen = op_of_step.index("S")
        assert set(op_of_step[first_seen:]) == {"S"}, op_of_step
        assert dump(redis_client, redis_prefix) == before

        # A sample through RedisState.batch, then the batch without the hook, then once more.
        sample = {1, writes}
        for op in OPS:
            sample.add(op_of_step.index(op) + 1)
            sample.add(len(op_of_step) - op_of_step[::-1].index(op))
        sample.update(range(1, writes + 1, 17))
        assert len(sample) >= 50
        for k in sorted(sample):
            message = fail_with_hook(state, batch, now, k)
            assert f"injected failure before write {k} " in message
            assert dump(redis_client, redis_prefix) == before, f"write {k}"
            assert run(state, batch, now) == events - 1, f"after a failure before write {k}"
            again = versions_as_tokens(dump(redis_client, redis_prefix, exact_ttl=False))
            assert again == want, f"after a failure before write {k}"
            assert run(state, batch, now) == 0
            restore(redis_client, redis_prefix, saved)
        assert dump(redis_client, redis_prefix) == before
    finally:
        delete_prefix(redis_client, ref_prefix)


def _eval(client: Any, keys: list[str], argv: list[Any]) -> Any:
    return client.eval(APPLY_LUA, len(keys), *keys, *argv)


@pytest.mark.parametrize(
    ("ops", "error"),
    [
        # The hostile review's case: a TTL that overflows (repeat_caller_seconds = 1e300).
        (
            [("rec", ["R", "1e+303", b"{}"])],
            r"ARGV\[\d+\] \(ttl_ms of op R #3\) must be an integer in 1\.\.99999999999999, got 1e\+303",
        ),
        ([("h", ["H", 0, 1, 0, b"f", "nan"])], r"\(value of op H #3\) must be a finite number, got nan"),
        ([("h", ["H", 0, 1, 0, b"f", "inf"])], r"\(value of op H #3\) must be a finite number, got inf"),
        ([("z", ["Z", 1, "abc", b"m"])], r"\(score of op Z #3\) must be a finite number, got abc"),
        ([("z", ["Z", 2, "1", b"m"])], r"\(count of op Z #3\) needs ARGV up to \d+ but there are \d+"),
        ([("z", ["Z", -1])], r"\(count of op Z #3\) must be an integer in 0\.\.\d+, got -1"),
        ([("z", ["I", 0, 5, 1, 7])], r"\(ttl_ms of op I #3\) must be an integer in 1\.\.\d+, got 0"),
        ([("z", ["G", 1000, "x", 1, 5, b"n"])], r"\(below of op G #3\) must be a finite number, got x"),
        ([("s", ["Q", 1])], r"\(op #3\) must be one of S H M R D Z X A I G C W, got Q"),
        ([("rec", ["C"])], r"\(sha1 of op C #3\) is required, got \(missing\)"),
        ([("wv", ["W", 1000, b"idx", "soon"])], r"\(start of op W #3\) must be a finite number, got soon"),
        ([("wv", ["W", 0, b"idx", 5])], r"\(ttl_ms of op W #3\) must be an integer in 1\.\.\d+, got 0"),
        ([("s", ["S", 1000, 1, 1, 5, b"id"])], r"\(op #3\) must be S for exactly the first 1 ops, got S"),
        (
            [("bx", ["M", 1000, b"b", 64, 1, b"wait:5", 1])],
            r"\(field of op M #3\) must be mx:<name>:<ms>.*, got wait:5",
        ),
        ([("bx", ["M", 1000, b"b", 64, 1, b"mx:wait:1234567890123456", 1])], r"\(field of op M #3\) must be mx:<name>"),
        ([("bx", ["M", 1000, b"b", 64, 1, b"mx:wait:5", "0.5"])], r"\(count of op M #3\) must be an integer"),
        (
            [("bx", ["M", 0, b"b", 64, 1, b"mx:wait:5", 1])],
            r"\(ttl_ms of op M #3\) must be an integer in 1\.\.\d+, got 0",
        ),
        (
            [("bx", ["M", 1000, b"b", -1, 1, b"mx:wait:5", 1])],
            r"\(spill of op M #3\) must be an integer in 0\.\.\d+, got -1",
        ),
        ([("h", ["H", 0, 0, 0]), ("extra", [])], r"4 KEYS but 3 operations in ARGV"),
    ],
)
def test_a_malformed_batch_is_refused_before_the_first_write(
    redis_client: Any, redis_prefix: str, ops: list[tuple[str, list[Any]]], error: str
) -> None:
    """The script validates all of its ARGV first: valid operations come before the bad one
    (a seen id, a hash sum and max, a record), and none of them is written."""
    p = f"{redis_prefix}:{{t:x}}"
    redis_client.hset(f"{p}:h", mapping={"f": "1.5", "max_g": "3"})
    redis_client.set(f"{p}:rec", b'{"old":1}', px=600_000)
    redis_client.zadd(f"{p}:seen", {b"old-id": 7})
    before = dump(redis_client, redis_prefix)
    keys = [f"{p}:seen", f"{p}:h", *(f"{p}:{name}" for name, _args in ops)]
    argv: list[Any] = [1, 0, "S", 3_600_000, 1, 1, 7, b"new-id", "H", 3_600_000, 1, 1, b"f", "2", b"max_g", "9"]
    for _name, args in ops:
        argv += args
    with pytest.raises(redis.ResponseError, match=r"ccmon apply: invalid batch, nothing written: .*" + error):
        _eval(redis_client, keys, argv)
    assert dump(redis_client, redis_prefix) == before
    # The same batch without the bad op applies.
    assert _eval(redis_client, keys[:2], argv[:16]) == 0
    assert redis_client.hgetall(f"{p}:h") == {b"f": b"3.5", b"max_g": b"9"}
    assert redis_client.zscore(f"{p}:seen", b"new-id") == 7


def test_the_seen_ids_are_written_last(redis_client: Any, redis_prefix: str) -> None:
    """The seen-set ops come first in ARGV (they are checked first) but are written after
    every other op: a failure anywhere before them leaves no id seen, so the batch run again
    is not taken for a duplicate."""
    p = f"{redis_prefix}:{{t:x}}"
    keys = [f"{p}:seen", f"{p}:h", f"{p}:rec", f"{p}:z", f"{p}:set"]
    argv: list[Any] = [
        1,
        0,
        "S",
        3_600_000,
        0,
        2,
        5,
        b"id1",
        5,
        b"id2",
        "H",
        3_600_000,
        1,
        0,
        b"f",
        "1",
        "R",
        60_000,
        b"{}",
        "Z",
        1,
        "2",
        b"m",
        "A",
        1,
        b"s",
    ]
    with pytest.raises(redis.ResponseError, match=r"after the last write \((\d+) writes\)") as info:
        _eval(redis_client, keys, [argv[0], -1, *argv[2:]])
    match = re.search(r"\((\d+) writes\)", str(info.value))
    assert match
    writes = int(match.group(1))
    ops = []
    for k in range(1, writes + 1):
        with pytest.raises(redis.ResponseError) as info:
            _eval(redis_client, keys, [argv[0], k, *argv[2:]])
        found = re.search(rf"before write {k} \(test hook; op (\w) on KEYS\[(\d+)\]\)", str(info.value))
        assert found, str(info.value)
        ops.append((found.group(1), int(found.group(2))))
        assert dump(redis_client, redis_prefix) == {}
    # H: HINCRBY, PEXPIRE; R: SET; Z: ZADD; A: SADD; then S: ZADD NX, PEXPIRE.
    assert ops == [("H", 2), ("H", 2), ("R", 3), ("Z", 4), ("A", 5), ("S", 1), ("S", 1)]
    assert _eval(redis_client, keys, argv) == 0
    assert redis_client.zrange(f"{p}:seen", 0, -1) == [b"id1", b"id2"]
    assert _eval(redis_client, keys, argv) == [1, 2]  # both ids seen now: nothing written again


def test_hash_sums_are_exact_in_the_script_and_through_hincrby(redis_client: Any, redis_prefix: str) -> None:
    """Whole deltas are added by HINCRBY (int64 in Redis, never through a Lua double: beyond
    2^53 too), fractions by HINCRBYFLOAT: every sum is exact, a multiset field at 0 is deleted,
    another field keeps 0. (Summing in the script, with one HSET per hash, was measured: no
    faster; it would need this guard for long numbers.)"""
    p = f"{redis_prefix}:{{t:x}}"
    big = str(2**53 + 1)  # 9007199254740993: a double would read it as ...992
    redis_client.hset(
        f"{p}:h",
        mapping={"short": "-999999999999999", "big": big, "frac": "0.5", "mx:w:5": "1", "zero": "2", "keep": "7"},
    )
    deltas = {
        "short": "999999999999998",
        "big": "2",  # 2^53 + 3: not a double
        "long": "-1000000000000000",
        "frac": "1",  # a fraction in the field: HINCRBYFLOAT
        "mx:w:5": "-1",  # a multiset count at 0: deleted
        "mx:w:9": "0",  # absent and 0: not written
        "zero": "-2",  # not a multiset: stays, at 0
    }
    argv: list[Any] = [0, 0, "H", 0, len(deltas), 0]
    for name, delta in deltas.items():
        argv += [name.encode(), delta]
    assert _eval(redis_client, [f"{p}:h"], argv) == 0
    assert redis_client.hgetall(f"{p}:h") == {
        b"short": b"-1",
        b"big": str(2**53 + 3).encode(),
        b"long": b"-1000000000000000",
        b"frac": b"1.5",
        b"zero": b"0",
        b"keep": b"7",
    }


def test_a_record_ttl_that_overflows_writes_nothing_and_the_retry_applies_once(
    redis_client: Any, redis_prefix: str
) -> None:
    """RedisState's side of the review's case: a record due at 1e300 (so its TTL in ms has
    304 digits) in a batch with counts and a new event id. The batch fails having written
    nothing; without the bad record it applies, once."""
    state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: 1795168000.0)

    def batch(expire_at: float) -> bool:
        with state.batch():
            claimed = state.claim_event("t", "e1", 1795168000.0)
            if claimed:
                state.add("t", "q", 1795168000.0, {"offered": 1, "talk_seconds": 12.25})
                state.live_put("waiting", "t", "q", "c1", 1795168000.0)
                state.put_record("call", "t", "c1", {"queue": "q"}, expire_at)
        return claimed

    overflow = (
        r"ccmon apply: invalid batch, nothing written: ARGV\[\d+\] \(ttl_ms of op R #\d+\) must be an "
        r"integer in 1\.\.\d+, got 1000000000000000000\d{21}\.\.\."
    )  # 1e303 ms, cut to 40 digits
    with pytest.raises(redis.ResponseError, match=overflow):
        batch(1e300)
    assert dump(redis_client, redis_prefix) == {}
    assert batch(1795168000.0 + 600)
    assert state.totals("t", "q") == {"offered": 1.0, "talk_seconds": 12.25}
    assert state.get_record("call", "t", "c1") == {"queue": "q"}
    assert not batch(1795168000.0 + 600)  # a duplicate now
    assert state.totals("t", "q") == {"offered": 1.0, "talk_seconds": 12.25}


def test_the_rollback_restores_the_old_text_of_fields_records_and_scores(redis_client: Any, redis_prefix: str) -> None:
    """Floats come back as their old text (no negative delta is applied), a record with its
    value and expiry, a key of another type where a record goes from its DUMP, removed zset
    members with their score, TTLs as they were; keys the batch created are gone."""
    p = f"{redis_prefix}:{{t:x}}"
    redis_client.hset(f"{p}:h", mapping={"f": "0.1", "n": "7", "max_m": "2.5"})
    redis_client.set(f"{p}:rec", b'{"a":1}', px=900_000)
    redis_client.rpush(f"{p}:odd", b"x", b"y")  # corrupt: a list where a record is deleted
    redis_client.pexpire(f"{p}:odd", 800_000)
    redis_client.zadd(f"{p}:z", {b"a": 0.30000000000000004, b"b": 2})
    redis_client.zadd(f"{p}:i", {b"100": 100, b"200": 200})
    redis_client.sadd(f"{p}:set", b"one")
    before = dump(redis_client, redis_prefix)
    keys = [f"{p}:seen", f"{p}:h", f"{p}:rec", f"{p}:odd", f"{p}:z", f"{p}:z", f"{p}:i", f"{p}:set", f"{p}:new"]
    argv: list[Any] = [
        1,
        0,
        "S",
        3_600_000,
        0,
        2,
        5,
        b"id1",
        5,
        b"id2",
        "H",
        7_200_000,
        2,
        1,
        b"f",
        "0.2",
        b"n",
        "3",
        b"max_m",
        "9.75",
        "R",
        60_000,
        b'{"a":2}',
        "D",
        "Z",
        2,
        "1e-7",
        b"a",
        "3",
        b"c",
        "X",
        1,
        b"b",
        "I",
        3_600_000,
        150,
        1,
        300,
        "A",
        2,
        b"one",
        b"two",
        "H",
        0,
        1,
        0,
        b"x",
        "1",
    ]
    with pytest.raises(redis.ResponseError, match=r"injected failure after the last write \(\d+ writes\)"):
        _eval(redis_client, keys, [*argv[:1], -1, *argv[2:]])
    assert dump(redis_client, redis_prefix) == before
    assert redis_client.hget(f"{p}:h", "f") == b"0.1"
    assert _eval(redis_client, keys, argv) == 0
    assert redis_client.hgetall(f"{p}:h") == {b"f": b"0.3", b"n": b"10", b"max_m": b"9.75"}
    assert not redis_client.exists(f"{p}:odd")
    assert redis_client.zrange(f"{p}:i", 0, -1) == [b"200", b"300"]


def test_the_worker_isolates_an_event_whose_writes_fail_and_applies_the_rest_once(
    redis_client: Any, redis_prefix: str, golden_lines: list[bytes], golden_at: float
) -> None:
    """An event whose writes fail in the middle of the script (here: a count field that holds
    text) fails its whole batch, rolled back. The worker narrows the failure down by halves:
    the event is dead-lettered as internal_error and every other one is applied exactly once
    (the same store as without that event), and a replay changes nothing."""
    from tests.conftest import delete_prefix

    clock = lambda: golden_at  # noqa: E731
    poison = json.dumps(
        {
            "event_id": "p1",
            "type": "call.offered",
            "ts": golden_at - 60,
            "queue": "support",
            "call_id": "pc",
            "tenant": "poisoned",
        }
    ).encode()
    messages = [Message("events", 0, i, b"k", line, golden_at) for i, line in enumerate(golden_lines)]
    messages.insert(len(messages) // 2, Message("events", 1, 0, b"k", poison, golden_at))
    ref_prefix = f"{redis_prefix}-ref"
    try:
        ref = RedisState(redis_client, CONFIG, prefix=ref_prefix, clock=clock)
        clean = [m for m in messages if m.partition == 0]
        assert BatchProcessor(CONFIG, ref, clock).process(clean).accepted == len(golden_lines)

        state = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=clock)
        redis_client.hset(state._count_key("poisoned", "sum:events"), "call.offered", "not a number")
        result = BatchProcessor(CONFIG, state, clock).process(messages)
        assert [(d.reason, json.loads(d.value)["event_id"]) for d in result.dead] == [(INTERNAL_ERROR, "p1")]
        assert result.accepted == len(golden_lines)

        def tenants_but_poisoned_and_pipeline(d: Dump) -> Dump:
            # Window versions (wv) move on with each batch that writes below a scope's newest
            # coarse bucket, from Redis's clock: they tell a scrape its cache is stale, and
            # differ with the batching by design (one batch here, halves there); not state.
            return {
                k: v
                for k, v in d.items()
                if b"{t:poisoned}" not in k
                and b"{t:~" not in k
                and not k.endswith(b"count-tenants")
                and b":wv:" not in k
            }

        got = tenants_but_poisoned_and_pipeline(dump(redis_client, redis_prefix, exact_ttl=False))
        assert got == tenants_but_poisoned_and_pipeline(dump(redis_client, ref_prefix, exact_ttl=False))
        assert redis_client.hgetall(state._count_key("poisoned", "sum:events")) == {b"call.offered": b"not a number"}
        rejected = redis_client.hgetall(state._count_key(PIPELINE_TENANT, "sum:rejected"))
        assert rejected == {INTERNAL_ERROR.encode(): b"1"}

        again = BatchProcessor(CONFIG, state, clock).process(messages)
        assert again.accepted == 0 and again.duplicates == len(golden_lines)
        # Only the duplicates are counted (a new count hash and its name).
        after = tenants_but_poisoned_and_pipeline(dump(redis_client, redis_prefix, exact_ttl=False))
        dup_key = state._count_key("default", "sum:duplicates")[len(redis_prefix) :].encode()
        names_key = state._count_names_key("default")[len(redis_prefix) :].encode()
        assert sum(float(n) for _type, n in after.pop(dup_key)[1]) == len(golden_lines)
        assert {k: v for k, v in after.items() if k != names_key} == {k: v for k, v in got.items() if k != names_key}
    finally:
        delete_prefix(redis_client, ref_prefix)
