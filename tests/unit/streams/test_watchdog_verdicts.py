"""The stuck-partition watchdog's rules and /readyz's verdicts (streams/watchdog.py), on a fake
clock: when a partition counts as stuck, and every case where it must not."""

from __future__ import annotations

import pytest

from streams.watchdog import STALE_LAG_SECONDS, PartitionWatchdog, readiness

TOPIC = "events"
LIMIT = 120.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def figures(dog: PartitionWatchdog, lag: dict[int, float], committed: dict[int, int | None]) -> None:
    dog.observe(
        {(TOPIC, p): v for p, v in lag.items()} | {("other", 0): 99.0}, {(TOPIC, p): v for p, v in committed.items()}
    )


def run(
    dog: PartitionWatchdog,
    clock: Clock,
    seconds: float,
    assignment: tuple[int, ...] = (0, 1),
    lag: dict[int, float] | None = None,
    committed: dict[int, int | None] | None = None,
    rebalancing: bool = False,
    redis_wait: float = 0.0,
) -> list[int]:
    """Checks every second for ``seconds`` (fresh figures every 5 s, as the probe gives them);
    every partition any of them fired for."""
    fired: set[int] = set()
    for tick in range(int(seconds)):
        clock.now += 1
        if lag is not None and tick % 5 == 0:
            figures(dog, lag, committed or {})
        fired.update(dog.check(assignment, rebalancing, redis_wait))
    return sorted(fired)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dog(clock: Clock) -> PartitionWatchdog:
    dog = PartitionWatchdog(TOPIC, LIMIT, clock)
    dog.check((0, 1), False, 0.0)  # the assignment
    return dog


def test_a_lagging_partition_whose_committed_offset_stands_still_is_stuck_after_the_limit(
    dog: PartitionWatchdog, clock: Clock
) -> None:
    still = {0: 50, 1: 70}
    assert run(dog, clock, LIMIT - 1, lag={0: 0.0, 1: 5.0}, committed=still) == []
    assert run(dog, clock, 2, lag={0: 0.0, 1: 5.0}, committed=still) == [1]  # LIMIT s after the first look
    assert dog.stuck == [1]
    assert dog.stalled_for(1) >= LIMIT and dog.lag_of([1]) == 5.0


def test_a_partition_whose_committed_offset_moves_is_not_stuck(dog: PartitionWatchdog, clock: Clock) -> None:
    for offset in range(40):  # behind all along, but committing every 5 s
        assert run(dog, clock, 5, lag={0: 10.0, 1: 0.0}, committed={0: offset, 1: 0}) == []
    assert dog.stuck == []


def test_never_while_a_batch_is_in_flight_and_its_partitions_clocks_restart(
    dog: PartitionWatchdog, clock: Clock
) -> None:
    lag, still = {0: 10.0, 1: 10.0}, {0: 5, 1: 5}
    run(dog, clock, LIMIT - 10, lag=lag, committed=still)
    dog.batch_started([0])
    assert run(dog, clock, 20, lag=lag, committed=still) == []  # 1 is stuck, but a batch is in flight
    assert dog.stuck == [1]
    dog.batch_finished()
    assert dog.check((0, 1), False, 0.0) == [1]  # 0's clock restarted with its batch
    assert run(dog, clock, LIMIT - 1, lag=lag, committed=still) == [1]
    assert run(dog, clock, 1, lag=lag, committed=still) == [0, 1]


def test_a_long_batch_restarts_every_clock(dog: PartitionWatchdog, clock: Clock) -> None:
    lag, still = {0: 10.0, 1: 10.0}, {0: 5, 1: 5}
    run(dog, clock, LIMIT - 40, lag=lag, committed=still)
    dog.batch_started([0])
    run(dog, clock, LIMIT / 4 + 1, lag=lag, committed=still)
    dog.batch_finished()  # what was fetched for partition 1 waited behind it
    assert run(dog, clock, LIMIT - 1, lag=lag, committed=still) == []
    assert run(dog, clock, 2, lag=lag, committed=still) == [0, 1]


@pytest.mark.parametrize("pause", ["rebalancing", "assignment", "redis", "stale figures"])
def test_rebalances_redis_waits_and_stale_figures_restart_every_clock(
    dog: PartitionWatchdog, clock: Clock, pause: str
) -> None:
    lag, still = {0: 10.0, 1: 10.0}, {0: 5, 1: 5}
    run(dog, clock, LIMIT - 40, lag=lag, committed=still)
    if pause == "rebalancing":
        assert run(dog, clock, 30, lag=lag, committed=still, rebalancing=True) == []
    elif pause == "assignment":
        assert run(dog, clock, 1, assignment=(0, 1, 2), lag=lag, committed=still) == []
    elif pause == "redis":
        assert run(dog, clock, 30, lag=lag, committed=still, redis_wait=12.0) == []
    else:
        assert run(dog, clock, STALE_LAG_SECONDS + 1) == []  # the probe fails: no figures
    assert dog.stuck == []
    assignment = (0, 1, 2) if pause == "assignment" else (0, 1)
    assert run(dog, clock, LIMIT - 1, assignment, lag=lag, committed=still) == []
    assert run(dog, clock, 2, assignment, lag=lag, committed=still) == [0, 1]


def test_the_clock_starts_when_the_lag_appears_not_at_the_last_commit(dog: PartitionWatchdog, clock: Clock) -> None:
    still = {0: 5, 1: 5}
    run(dog, clock, 3600, lag={0: 0.0, 1: 0.0}, committed=still)  # idle for an hour
    assert run(dog, clock, LIMIT - 5, lag={0: 3.0, 1: 0.0}, committed=still) == []
    assert run(dog, clock, 10, lag={0: 3.0, 1: 0.0}, committed=still) == [0]


def test_off_and_partitions_of_other_workers(clock: Clock) -> None:
    off = PartitionWatchdog(TOPIC, 0.0, clock)
    assert not off.enabled
    assert run(off, clock, 1000, lag={0: 9.0}, committed={0: 1}) == []
    mine = PartitionWatchdog(TOPIC, LIMIT, clock)
    assert run(mine, clock, 1000, assignment=(1,), lag={0: 9.0, 1: 0.0}, committed={0: 1, 1: 1}) == []


def test_readiness() -> None:
    ok = {
        "joined": True,
        "rebalancing": False,
        "assigned": [1, 0],
        "lag": 0.0,
        "last_batch_age": 500.0,
        "limit": 60.0,
        "redis_error": None,
    }
    assert readiness(**ok) == (200, {"ready": True, "partitions": [0, 1], "lag": 0.0, "last_batch_age_seconds": 500.0})
    assert readiness(**(ok | {"lag": None}))[0] == 200  # no figures: no verdict on lag
    assert readiness(**(ok | {"lag": 3.0, "last_batch_age": 10.0}))[0] == 200
    status, body = readiness(**(ok | {"lag": 3.0}))
    assert (status, body["reason"]) == (503, "3 messages behind and no batch applied for 500 s")
    assert (
        readiness(**(ok | {"redis_error": "ConnectionError: refused"}))[1]["reason"]
        == "Redis: ConnectionError: refused"
    )
    assert readiness(**(ok | {"joined": False}))[1]["reason"] == "not in the consumer group yet"
    assert readiness(**(ok | {"rebalancing": True}))[1]["reason"] == "rebalancing"
    assert readiness(**(ok | {"assigned": []})) == (200, {"ready": True, "partitions": [], "idle": True})


def test_the_setting_is_bounded_and_named_in_errors() -> None:
    from kpi_core.errors import ConfigError
    from streams.settings import from_args

    assert from_args(environ={}).stuck_partition_seconds == 120.0
    assert from_args(environ={"CCMON_STUCK_PARTITION_SECONDS": "0"}).stuck_partition_seconds == 0.0  # off
    assert from_args(environ={"CCMON_STUCK_PARTITION_SECONDS": "5"}).stuck_partition_seconds == 5.0
    for bad in ("2", "3601", "-1", "nan", "soon"):
        with pytest.raises(ConfigError) as caught:
            from_args(environ={"CCMON_STUCK_PARTITION_SECONDS": bad})
        assert "CCMON_STUCK_PARTITION_SECONDS" in str(caught.value) and repr(bad) in str(caught.value)


def test_with_offset_reset_latest_an_uncommitted_partition_is_not_judged(clock: Clock) -> None:
    """A new group reading from the latest offset commits nothing until a message arrives: the
    probe's lag (end - beginning) is not the worker's; the worker must not restart forever."""
    dog = PartitionWatchdog(TOPIC, LIMIT, clock, uncommitted_lag=False)
    assert run(dog, clock, 1000, lag={0: 500.0, 1: 9.0}, committed={0: None, 1: 3}) == [1]
    assert dog.lag_of([0, 1]) == 9.0
    earliest = PartitionWatchdog(TOPIC, LIMIT, clock)
    assert run(earliest, clock, 1000, lag={0: 500.0, 1: 0.0}, committed={0: None, 1: 3}) == [0]
