"""The worker's self-checks: a stuck-partition watchdog, and the ``/livez`` and ``/readyz`` pages.

Stuck partitions (docs/RELIABILITY.md, "Liveness after a rebalance"): faust-streaming can
leave a partition assigned but never fetched after a rebalance (issues #629 and #471, open
upstream; seen once here in a CI dry run). Nothing is lost (its offsets are not committed),
but its events wait until the worker restarts, and only the consumer-lag alert notices, after
10 minutes, and only with over 1,000 messages behind.

:class:`PartitionWatchdog` is plain code (a clock, no Faust). The worker feeds it the lag
probe's figures (the group's committed offset and lag per partition, every 5 s), its own
assignment, and the batches it starts and finishes. A partition of the assignment is *stuck*
when it has had lag, with its committed offset standing still, for ``stuck_seconds``
(``--stuck-partition-seconds``, default 120, 0 = off). Every clock starts again on a rebalance
(any change of the assignment, or Faust rebalancing), while the worker waits for Redis, when
the probe's figures are older than :data:`STALE_LAG_SECONDS` (Kafka unreachable: no verdict
without figures), and after a batch that took over a quarter of ``stuck_seconds`` (the worker
was busy: what it had fetched waited behind that batch). A partition's own clock starts again
while a batch holds its messages. And the watchdog never fires while a batch is in flight.
With ``--offset-reset latest`` a partition without a committed offset gives no verdict (a new
group there starts at the end and commits nothing until a message arrives). Not handled, from
Kafka's design and not tested: a producer writing the events topic in Kafka transactions leaves
a commit marker no consumer receives, so a partition would show a lag of 1 for good and the
watchdog would restart its worker every ``stuck_seconds``; ccmon's producers use none (turn the
watchdog off, 0, if yours do).

Recovery: the worker logs the partitions (ERROR), records them in Redis for the exporter
(``ccmon_stuck_partition_timestamp_seconds{topic, partition}``, kept an hour; the worker's own
``ccmon_worker_stuck_partitions`` gauge goes with its process), and exits with code
:data:`STUCK_EXIT_CODE` (75, EX_TEMPFAIL) through the ordinary SIGTERM shutdown, for its
supervisor (systemd ``Restart=on-failure``, Kubernetes) to start it again. Restarting is what
resolved the stall when it was seen; seek-and-resume inside the running consumer was not
chosen because the upstream cause is unknown (Faust's active-partition set, aiokafka's fetcher
or the coordinator), so no in-process repair can be shown to reach it. Nothing is lost or
doubled: offsets are committed only after their batch's Redis write, the restarted worker
rejoins and reads from the committed offsets, and what it reads again is recognised by event
id. If the shutdown hangs, the process ends itself :data:`EXIT_GRACE_SECONDS` later.

Health (on the worker's web server, ``--web-port``):

* ``/livez``: 200 while the event loop answers (the page is served by it).
* ``/readyz``: 200 when Redis answers a PING (and no batch is waiting for it), the worker has
  joined the group and is not rebalancing, and, when its partitions have lag, it applied a
  batch within the readiness limit (half ``stuck_seconds``, else 60 s: not ready before the
  watchdog acts). A member the group gave no partition (more workers than partitions) is
  ready and says ``"idle": true``: it takes partitions over as soon as another member leaves.
  Else 503 with ``{"ready": false, "reason": ...}``.

TEST-ONLY hook: with ``CCMON_TEST_ONLY_HOOKS=stall-a-partition`` *and*
``CCMON_TEST_ONLY_PAUSE_PARTITION=<n>`` in the environment, the worker pauses partition ``n``
of the events topic inside its consumer (Faust's ``pause_partitions``) after its first batch:
the stall the watchdog exists for, provoked on a real broker by
tests/integration/test_watchdog.py. Never set these in production; the worker logs a WARNING
when they are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import faust

    from streams.settings import Settings

log = logging.getLogger("ccmon.watchdog")

#: Exit code of a worker that stops itself for a stuck partition (EX_TEMPFAIL: try again).
STUCK_EXIT_CODE = 75
#: Seconds between two checks.
CHECK_INTERVAL_SECONDS = 1.0
#: Lag figures older than this give no verdict (the probe measures every 5 s).
STALE_LAG_SECONDS = 30.0
#: Seconds the ordinary shutdown gets before the process ends itself.
EXIT_GRACE_SECONDS = 60.0
#: Readiness limit on the age of the last batch when the watchdog is off.
READY_BATCH_AGE_SECONDS = 60.0
#: Seconds /readyz waits for Redis to answer PING.
READY_PING_TIMEOUT_SECONDS = 2.0
#: The test-only hook's gate and its partition (see the module docstring).
TEST_HOOKS_ENV = "CCMON_TEST_ONLY_HOOKS"
TEST_HOOKS_VALUE = "stall-a-partition"
TEST_PAUSE_ENV = "CCMON_TEST_ONLY_PAUSE_PARTITION"


class StuckStore(Protocol):
    """The store the watchdog records stuck partitions in and the readiness page pings
    (:class:`streams.redis.state.RedisState`)."""

    client: Any  # a redis client: ``ping()``

    def put_stuck_partitions(self, stuck: Mapping[tuple[str, int], float]) -> None: ...


class Batches(Protocol):
    """What the watchdog and the health pages read of the worker's batch processor
    (:class:`streams.worker.BatchProcessor`; the worker imports this module, not the reverse)."""

    @property
    def state(self) -> StuckStore: ...

    @property
    def redis_wait_seconds(self) -> float: ...


class PartitionWatchdog:
    """Which of the worker's partitions are stuck (see the module docstring). Fed from the
    event loop (assignment, batches, checks) and from the lag probe's thread (:meth:`observe`,
    which replaces one tuple)."""

    def __init__(
        self,
        topic: str,
        stuck_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        uncommitted_lag: bool = True,
    ) -> None:
        self.topic = topic
        self.stuck_seconds = stuck_seconds
        self.clock = clock
        #: Whether the lag of a partition without a committed offset counts: yes when a new group
        #: starts at the earliest offset; with ``--offset-reset latest`` it starts at the end and
        #: commits nothing until a message arrives, so the probe's lag (from the beginning) is
        #: not the worker's.
        self.uncommitted_lag = uncommitted_lag
        #: Partitions stuck at the last check (the worker's gauge).
        self.stuck: list[int] = []
        #: Monotonic time the last batch was applied and acknowledged, ``None`` before the first.
        self.last_batch_at: float | None = None
        #: Set when the watchdog asked the worker to exit: its exit code.
        self.exit_code: int | None = None
        self._figures: tuple[float, dict[int, float], dict[int, int | None]] | None = None
        self._assignment: frozenset[int] = frozenset()
        self._since: dict[int, float] = {}
        self._committed: dict[int, int | None] = {}
        self._in_flight: frozenset[int] | None = None
        self._in_flight_since = 0.0

    @classmethod
    def for_settings(cls, settings: Settings) -> PartitionWatchdog:
        return cls(
            settings.events_topic, settings.stuck_partition_seconds, uncommitted_lag=settings.offset_reset == "earliest"
        )

    @property
    def enabled(self) -> bool:
        return self.stuck_seconds > 0

    # -- what the worker reports --------------------------------------------------------------
    def observe(self, lag: Mapping[tuple[str, int], float], committed: Mapping[tuple[str, int], int | None]) -> None:
        """The lag probe's figures for the group: ``(topic, partition) -> messages behind`` and
        ``-> committed offset`` (``None``: nothing committed yet)."""
        mine = {p: value for (topic, p), value in committed.items() if topic == self.topic}
        self._figures = (
            self.clock(),
            {
                p: value
                for (topic, p), value in lag.items()
                if topic == self.topic and (self.uncommitted_lag or mine.get(p) is not None)
            },
            mine,
        )

    def batch_started(self, partitions: Iterable[int]) -> None:
        self._in_flight = frozenset(partitions)
        self._in_flight_since = self.clock()

    def batch_finished(self) -> None:
        """The batch in flight was applied and acknowledged (its offsets may now be committed)."""
        now = self.clock()
        partitions, self._in_flight = self._in_flight or frozenset(), None
        self.last_batch_at = now
        if now - self._in_flight_since > self.stuck_seconds / 4:
            self._since.clear()  # a long batch: what was fetched meanwhile waited behind it
            return
        for p in partitions:
            if p in self._since:
                self._since[p] = now

    # -- verdicts -----------------------------------------------------------------------------
    def lag_of(self, partitions: Iterable[int]) -> float | None:
        """Messages behind on ``partitions`` by the latest figures; ``None`` when they are stale."""
        figures = self._figures
        if figures is None or self.clock() - figures[0] > STALE_LAG_SECONDS:
            return None
        return sum(figures[1].get(p, 0.0) for p in partitions)

    def check(self, assignment: Iterable[int], rebalancing: bool, redis_wait_seconds: float) -> list[int]:
        """The partitions to act on now: stuck, and no batch in flight. Updates :attr:`stuck`."""
        now = self.clock()
        assigned = frozenset(assignment)
        figures = self._figures
        if (
            not self.enabled
            or rebalancing
            or assigned != self._assignment
            or redis_wait_seconds > 0
            or figures is None
            or now - figures[0] > STALE_LAG_SECONDS
        ):
            self._assignment = assigned
            self._since.clear()
            self._committed.clear()
            self.stuck = []
            return []
        _at, lag, committed = figures
        in_flight = self._in_flight or frozenset()
        for p in assigned:
            moved = p not in self._committed or self._committed[p] != committed.get(p)
            self._committed[p] = committed.get(p)
            if lag.get(p, 0.0) <= 0:
                self._since.pop(p, None)
            elif moved or p in in_flight:
                self._since[p] = now
            else:
                self._since.setdefault(p, now)
        self.stuck = sorted(p for p, since in self._since.items() if now - since >= self.stuck_seconds)
        return [] if self._in_flight is not None else self.stuck

    def stalled_for(self, partition: int) -> float:
        since = self._since.get(partition)
        return 0.0 if since is None else self.clock() - since

    def request_exit(self, code: int = STUCK_EXIT_CODE) -> None:
        """Stop the worker the ordinary way (SIGTERM to itself) and exit with ``code``; the
        process ends itself :data:`EXIT_GRACE_SECONDS` later if the shutdown hangs."""
        if self.exit_code is not None:
            return
        self.exit_code = code
        backstop = threading.Timer(EXIT_GRACE_SECONDS, os._exit, (code,))
        backstop.daemon = True
        backstop.start()
        os.kill(os.getpid(), signal.SIGTERM)


def readiness(
    *,
    joined: bool,
    rebalancing: bool,
    assigned: Iterable[int],
    lag: float | None,
    last_batch_age: float,
    limit: float,
    redis_error: str | None,
) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` of ``/readyz`` from what the worker knows (see the module docstring)."""
    partitions = sorted(assigned)
    body: dict[str, Any] = {"ready": False, "partitions": partitions}
    if redis_error is not None:
        return 503, {**body, "reason": f"Redis: {redis_error}"}
    if not joined:
        return 503, {**body, "reason": "not in the consumer group yet"}
    if rebalancing:
        return 503, {**body, "reason": "rebalancing"}
    if not partitions:
        return 200, {**body, "ready": True, "idle": True}
    if lag is not None and lag > 0 and last_batch_age > limit:
        return 503, {
            **body,
            "reason": f"{lag:.0f} messages behind and no batch applied for {last_batch_age:.0f} s",
            "lag": lag,
            "last_batch_age_seconds": round(last_batch_age, 1),
        }
    return 200, {**body, "ready": True, "lag": lag, "last_batch_age_seconds": round(last_batch_age, 1)}


def install(app: faust.App, processor: Batches, watchdog: PartitionWatchdog, web: bool) -> None:
    """Wire the watchdog, the health pages (when ``web``) and the test-only hook into ``app``."""
    import redis

    topic = watchdog.topic
    started = time.monotonic()
    joined: list[float] = []  # monotonic times of the assignments received

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust types the receiver too narrowly
    async def on_assigned(_app: Any, assigned: Any = None, **_kwargs: Any) -> None:
        joined.append(time.monotonic())

    def assignment() -> list[int]:
        try:
            tps = app.consumer.assignment()
        except Exception:  # faust's ConsumerNotStarted: no partitions yet (and not joined)
            return []
        return sorted(tp.partition for tp in tps if tp.topic == topic)

    def record(stuck: list[int]) -> None:
        try:
            processor.state.put_stuck_partitions({(topic, p): time.time() for p in stuck})
        except redis.RedisError as exc:
            log.warning("stuck partitions not recorded in Redis: %s", exc)

    if watchdog.enabled:

        @app.timer(interval=CHECK_INTERVAL_SECONDS)
        async def check_partitions() -> None:
            stuck = watchdog.check(assignment(), app.rebalancing, processor.redis_wait_seconds)
            if not stuck or watchdog.exit_code is not None:
                return
            figures = watchdog.lag_of(stuck) or 0.0
            log.error(
                "stuck partition(s) of %s: %s: %.0f messages behind, committed offset unmoved for %.0f s "
                "with no batch in flight (faust-streaming #629/#471); exiting with code %d for the "
                "supervisor to restart the worker (nothing is lost: uncommitted events are read again)",
                topic,
                ", ".join(f"{topic}[{p}]" for p in stuck),
                figures,
                min(watchdog.stalled_for(p) for p in stuck),
                STUCK_EXIT_CODE,
            )
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(loop.run_in_executor(None, record, stuck), timeout=5)
            except TimeoutError:
                log.warning("stuck partitions not recorded in Redis: no answer within 5 s")
            watchdog.request_exit()

    if web:
        from faust import web as faust_web

        limit = watchdog.stuck_seconds / 2 if watchdog.enabled else READY_BATCH_AGE_SECONDS

        @app.page("/livez")
        async def livez(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
            return self.json({"live": True})

        @app.page("/readyz")
        async def readyz(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
            error: str | None = None
            if processor.redis_wait_seconds > 0:
                error = f"a batch has waited {processor.redis_wait_seconds:.0f} s for Redis"
            else:
                loop = asyncio.get_running_loop()
                try:
                    await asyncio.wait_for(
                        loop.run_in_executor(None, processor.state.client.ping), READY_PING_TIMEOUT_SECONDS
                    )
                except TimeoutError:
                    error = f"no answer to PING within {READY_PING_TIMEOUT_SECONDS:.0f} s"
                except redis.RedisError as exc:
                    error = f"{type(exc).__name__}: {exc}"
            partitions = assignment()
            last = max(watchdog.last_batch_at or started, joined[-1] if joined else started)
            status, body = readiness(
                joined=bool(joined),
                rebalancing=app.rebalancing,
                assigned=partitions,
                lag=watchdog.lag_of(partitions),
                last_batch_age=time.monotonic() - last,
                limit=limit,
                redis_error=error,
            )
            return self.json(body, status=status)

    pause = _test_pause_partition()
    if pause is not None:
        log.warning(
            "TEST-ONLY hook active (%s, %s): partition %d of %s will be paused after the first batch; "
            "never use this outside tests",
            TEST_HOOKS_ENV,
            TEST_PAUSE_ENV,
            pause,
            topic,
        )

        paused: list[bool] = []

        @app.timer(interval=0.2)
        async def test_only_pause() -> None:
            if watchdog.last_batch_at is None or paused:
                return
            from faust.types import TP

            app.consumer.pause_partitions([TP(topic, pause)])
            paused.append(True)
            log.warning("TEST-ONLY hook: paused partition %s[%d] inside the consumer", topic, pause)


def _test_pause_partition() -> int | None:
    """The partition the test-only hook pauses, ``None`` unless both variables are set."""
    if os.environ.get(TEST_HOOKS_ENV) != TEST_HOOKS_VALUE:
        return None
    raw = os.environ.get(TEST_PAUSE_ENV, "")
    try:
        return int(raw)
    except ValueError:
        from kpi_core.errors import ConfigError

        raise ConfigError(TEST_PAUSE_ENV, f"must be a partition number, got {raw!r}") from None
