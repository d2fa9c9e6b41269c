"""The streaming worker: Kafka -> KPI engine -> Redis, as a Faust app.

Two layers:

* :class:`BatchProcessor` is plain synchronous code and knows nothing of Faust: it splits
  Kafka message values into events (:func:`split_envelope`), runs a batch of them through
  :class:`~kpi_core.engine.Engine` on :class:`~streams.redis.state.RedisState` inside one
  ``state.batch()`` (one Redis transaction), and returns the rejections for the dead-letter
  topic. It retries a batch that conflicts with another worker, waits out Redis outages, and
  isolates an event that makes the engine fail (it is dead-lettered as ``internal_error``).
* :func:`build_app` wires it into Faust: one agent takes batches of messages from the events
  topic, hands each batch to the processor in a worker thread (the event loop keeps
  heart-beating Kafka meanwhile), sends the rejections to the DLQ topic, and only then lets
  Faust commit the offsets. A timer runs the engine's upkeep every
  :data:`MAINTAIN_INTERVAL_SECONDS` on one worker at a time; another measures the consumer
  group's lag (:class:`~streams.kafka.admin.LagProbe`) for the exporter, and for the stuck-partition watchdog and
  the ``/livez`` and ``/readyz`` pages (:mod:`streams.watchdog`).

Exactly-once effect: a batch that is processed again after a crash finds its event ids (and,
for rejections, its Kafka coordinates) in Redis's ``seen`` sets, written in the same
transaction as its counters, so it changes nothing a second time. The DLQ is at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import redis

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.errors import InvalidEventError
from kpi_core.events import Event, Rejection, Source, envelope_items, event_bytes
from streams.collector import GC_PAUSE, report_slow_collections, tune_gc
from streams.decoding import loads
from streams.kafka.admin import LagProbe
from streams.logs import faust_logging_config
from streams.redis.policy import EvictionWatch, check_at_start
from streams.redis.state import RedisState
from streams.redis.write import BatchConflict, DeferredCommit
from streams.security import redis_error_hint
from streams.settings import PIPELINE_CHUNK_EVENTS, Settings
from streams.watchdog import PartitionWatchdog

if TYPE_CHECKING:
    import faust

log = logging.getLogger("ccmon.worker")

#: Seconds between two runs of the engine's upkeep (expiring calls that waited too long).
MAINTAIN_INTERVAL_SECONDS = 10.0
#: Seconds a take's last chunk may stay in flight (its script sent, its reply unread) when no
#: next take comes to confirm it (BatchProcessor.take): its offsets are committed after.
HOLD_SECONDS = 0.05
#: Seconds between two measurements of the consumer group's lag.
LAG_INTERVAL_SECONDS = 5.0
#: Attempts of a whole batch that keeps conflicting with other workers before it is split.
CONFLICT_ATTEMPTS = 8
#: Events per Redis transaction at most: a take of many envelopes is applied in chunks (each
#: atomic and idempotent on its own), so Redis is never blocked long by one script.
MAX_TRANSACTION_EVENTS = 5000
#: Longest wait between two attempts to reach Redis.
REDIS_BACKOFF_MAX_SECONDS = 5.0
#: A tenant no event can have: the seen-set namespace of rejections' Kafka coordinates.
PIPELINE_TENANT = "\x1fpipeline"
INTERNAL_ERROR = "internal_error"
#: Largest dead-letter record the worker sends (the DLQ producer's max request size; Kafka's
#: default message.max.bytes is 1,048,588). A bigger rejected event is sent cut to fit, with
#: header ``ccmon-truncated`` = its size, rather than refused by the producer (which crashed
#: the agent and left the batch's offsets uncommitted for good).
DLQ_MAX_RECORD_BYTES = 1_048_576
#: Room kept in a dead-letter record for Kafka's batch and record framing.
_DLQ_FRAMING_BYTES = 1024
#: Loggers that print message values they send at DEBUG (Faust's and aiokafka's send; the
#: connections' request dumps, which show the first bytes of a produce request's records, and
#: kafka-python's, used by the lag probe): a dead letter is an event, with customer ids and
#: free text, so they stay at INFO or above.
PAYLOAD_LOGGERS = (
    "faust.topics",
    "faust.transport.drivers.aiokafka",
    "aiokafka.producer.producer",
    "aiokafka.conn",
    "kafka.conn",
    "kafka.protocol.parser",
)


@dataclass(frozen=True, slots=True)
class Message:
    """What the processor needs of one Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: float | None = None

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected event for the DLQ topic: its raw bytes, unchanged, and why."""

    key: bytes | None
    value: bytes
    reason: str
    error: str
    source: str  # topic/partition/offset of the message it came from
    original_size: int | None = None  # the value's size when it was cut to fit (fitted)

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("ccmon-reason", self.reason.encode("utf-8", "replace")),
            ("ccmon-error", self.error.encode("utf-8", "replace")[:1000]),
            ("ccmon-source", self.source.encode("utf-8", "replace")),
        ]
        if self.original_size is not None:
            headers.append(("ccmon-truncated", str(self.original_size).encode()))
        return headers

    def fitted(self, limit: int = DLQ_MAX_RECORD_BYTES) -> DeadLetter:
        """Itself when key, value and headers fit in a Kafka record of ``limit`` bytes, else a
        copy with the value (and a huge key) cut to fit and ``ccmon-truncated`` set."""
        room = limit - _DLQ_FRAMING_BYTES - sum(len(n) + len(v) for n, v in self.headers) - 40
        key = self.key
        if len(key or b"") + len(self.value) <= room:
            return self
        if key is not None and len(key) > room // 2:
            key = key[: room // 2]
        return replace(self, key=key, value=self.value[: room - len(key or b"")], original_size=len(self.value))


# -- envelopes ---------------------------------------------------------------------------------
def split_envelope(raw: bytes) -> Iterator[tuple[bytes, Event | Rejection]]:
    """The events of a message as the worker reads them (:func:`kpi_core.events.envelope_items`
    decoding with :func:`streams.decoding.loads`), with the raw bytes of every event (an accepted
    event may still be rejected by the engine, e.g. ``too_late``, and then goes to the DLQ as
    it came)."""
    for source, parsed in envelope_items(raw, loads):
        yield event_bytes(source), parsed


@dataclass(slots=True)
class _Item:
    message: Message
    index: int
    source: Source
    parsed: Event | Rejection

    @property
    def raw(self) -> bytes:
        """The event's bytes as it came (an array element re-serialised), for the DLQ."""
        return event_bytes(self.source)


@dataclass
class BatchResult:
    dead: list[DeadLetter]
    accepted: int = 0
    duplicates: int = 0
    attempts: int = 1

    @classmethod
    def combine(cls, parts: Sequence[BatchResult], attempts: int = 0) -> BatchResult:
        return cls(
            dead=[dead for part in parts for dead in part.dead],
            accepted=sum(part.accepted for part in parts),
            duplicates=sum(part.duplicates for part in parts),
            attempts=attempts + sum(part.attempts for part in parts),
        )


def _script_failed(exc: redis.RedisError) -> bool:
    """A runtime error inside ccmon's batch script: retrying the same batch fails the same
    way, so it is treated like an engine failure (narrowed down to one event, dead-lettered
    as internal_error) instead of as Redis being down, which would stall the stream. The script
    rolls back what it wrote before failing (``ccmon apply:`` errors), so the retries of the
    isolating halves apply their events exactly once."""
    text = str(exc).rpartition("of pipeline caused error: ")[2]  # not the command's own text
    return isinstance(exc, redis.ResponseError) and any(
        mark in text for mark in ("user_script:", "Error running script", "ccmon apply:")
    )


#: A chunk computed and encoded, its script in flight: the chunk, its commit, its result.
_Flight = tuple[list[_Item], DeferredCommit, BatchResult]


@dataclass
class _Held:
    """A take whose last chunk is in flight (:meth:`BatchProcessor.take`)."""

    token: object
    flight: _Flight
    earlier: list[BatchResult]  # its chunks landed already


class Stopping(Exception):
    """The worker is stopping while a batch waits for Redis: the batch was not applied."""


class BatchProcessor:
    """Runs batches of Kafka messages through the engine on Redis. One thread at a time."""

    def __init__(self, config: Config, state: RedisState, clock: Callable[[], float]) -> None:
        self.config = config
        self.state = state
        self.engine = Engine(config, state)
        self.clock = clock
        self.stopping = threading.Event()
        #: Events per pipelined chunk (None: chunks of MAX_TRANSACTION_EVENTS, one after the other).
        self.chunk_events: int | None = None if state.cluster else PIPELINE_CHUNK_EVENTS
        self._redis_down_since: float | None = None
        self._last_down_log = 0.0
        self._held: _Held | None = None  # the take in flight (take)

    # -- batches of messages ---------------------------------------------------------------
    def process(self, messages: Sequence[Message]) -> BatchResult:
        """Apply ``messages`` exactly once; returns the rejections for the DLQ. Raises
        :class:`Stopping` when asked to stop while Redis cannot be reached.

        A take of many chunks (a backlog's) is pipelined (:meth:`_pipelined`) with the cyclic
        collector paused: its passes over the take's parsed events, acyclic records and
        contributions find nothing to free (docs/BENCHMARKS.md); it collects before each wait
        for Redis (:meth:`_redis_down`). A take of one chunk (a live worker's) keeps the
        collector on: paused, the commit delay at 5,000 events/s grew by ~15 ms."""
        size = self.chunk_events
        if size is None:
            chunks = self._chunks(messages, MAX_TRANSACTION_EVENTS)
            return BatchResult.combine([self._resilient(chunk) for chunk in chunks])
        chunks = self._chunks(messages, min(size, MAX_TRANSACTION_EVENTS))
        first = next(chunks, None)
        second = next(chunks, None) if first is not None else None
        if first is None or second is None:  # one chunk at most (a live take): nothing to overlap
            return BatchResult.combine([self._resilient(first)] if first is not None else [])
        if self._held is not None:
            raise RuntimeError("a take is in flight: flush() it before process()")
        with GC_PAUSE:
            return BatchResult.combine(self._pipelined(itertools.chain([first, second], chunks))[0])

    @staticmethod
    def _chunks(messages: Sequence[Message], size: int) -> Iterator[list[_Item]]:
        """The events of ``messages`` in order, ``size`` at a time, each parsed when its chunk
        is due: a backlog's take (tens of thousands of events) is never all parsed at once."""
        chunk: list[_Item] = []
        for message in messages:
            for index, (raw, parsed) in enumerate(envelope_items(message.value, loads)):
                chunk.append(_Item(message, index, raw, parsed))
                if len(chunk) == size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def _pipelined(
        self, chunks: Iterator[list[_Item]], flight: _Flight | None = None, *, hold: bool = False
    ) -> tuple[list[BatchResult], _Flight | None]:
        """Apply ``chunks`` in turn, each computed while Redis runs the script of the one
        before: Redis and the engine work at once, on two cores.

        The order on the wire: chunk k+1's reads, then chunk k's script, then chunk k+1 is
        computed on what Redis held before chunk k plus what chunk k writes
        (``RedisState.batch(after=...)``); chunk k's reply is read before chunk k+1's script
        leaves. Anything that goes wrong (a conflict, Redis down, an engine or script error)
        goes the unpipelined way: chunk k is applied alone, as :meth:`_resilient` applies any
        batch, and chunk k+1, dropped unsent, is computed again after it. Each chunk is atomic
        and idempotent on its own, as the chunks of a take always were.

        ``flight``: a chunk already computed (the last of the take before, :meth:`take`), the
        first to land; its result comes first. ``hold``: the last chunk is not confirmed but
        returned, still in flight (its script possibly unsent)."""
        state = self.state
        results: list[BatchResult] = []
        again: list[_Item] | None = None
        while True:
            chunk = again if again is not None else next(chunks, None)
            again = None
            if chunk is None and (flight is None or hold):
                return results, flight
            ahead: _Flight | None = None
            landed_now: BatchResult | None = None
            failed = False
            if chunk is not None:
                try:
                    result = self._apply(chunk, self.clock(), after=flight[1] if flight else None, defer=True)
                    deferred = state.deferred
                    if deferred is None:  # applied already (it could not be deferred)
                        landed_now = result
                    else:
                        ahead = (chunk, deferred, result)
                except (Stopping, KeyboardInterrupt):
                    raise
                except Exception:  # applied alone below, once the chunk in flight has landed
                    failed = True
            if flight is not None:
                try:
                    state.finish_commit(flight[1])
                    results.append(flight[2])
                except (Stopping, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    log.debug("a pipelined chunk was not applied (%s: %s): applied alone", type(exc).__name__, exc)
                    if ahead is not None:
                        state.drop_commit(ahead[1])
                    results.append(self._resilient(flight[0]))
                    flight = None
                    again = chunk  # computed again, on what Redis now holds
                    continue
                flight = None
            if failed and chunk is not None:
                results.append(self._resilient(chunk))
            elif ahead is not None:
                flight = ahead
            elif chunk is not None and landed_now is not None:
                results.append(landed_now)

    # -- takes that overlap (a live worker's) ----------------------------------------------
    def take(self, messages: Sequence[Message], token: object) -> list[tuple[object, BatchResult]]:
        """Apply ``messages`` exactly once, as :meth:`process` does, but leave the take's last
        chunk in flight: its script is sent and Redis applies it while the worker goes back
        to Kafka for the next take, which is computed on top of it (what it writes is taken
        from it, as a backlog's chunks take it from the chunk before: :meth:`_pipelined`).

        Returns the takes that landed (their scripts' replies read, or applied again alone
        after a failure), oldest first, each with its ``token``: the take held before, now
        confirmed, and this one when it could not be held. The take held lands on the next
        take, :meth:`flush` or :meth:`maintain`; acknowledge its messages then, not before."""
        landed: list[tuple[object, BatchResult]] = []
        held, self._held = self._held, None
        size = self.chunk_events
        if size is None:  # nothing is held: Redis Cluster, or --pipeline-chunk 0
            if held is not None:
                landed.append(self._land(held))
            landed.append((token, self.process(messages)))
            return landed
        chunks = self._chunks(messages, min(size, MAX_TRANSACTION_EVENTS))
        first = next(chunks, None)
        if first is None:  # no event at all (empty messages)
            if held is not None:
                landed.append(self._land(held))
            landed.append((token, BatchResult(dead=[])))
            return landed
        second = next(chunks, None)
        ordered = itertools.chain([first], [second] if second else [], chunks)
        prior = held.flight if held is not None else None
        try:
            with GC_PAUSE if second is not None else contextlib.nullcontext():  # a live take: on (process)
                results, flight = self._pipelined(ordered, prior, hold=True)
        except BaseException:
            if held is not None:
                self.state.abandon_commit(held.flight[1])  # not acknowledged: read again
            raise
        if held is not None:  # its last chunk landed first
            landed.append((held.token, BatchResult.combine([*held.earlier, results.pop(0)])))
        if flight is None:
            landed.append((token, BatchResult.combine(results)))
            return landed
        self._held = _Held(token, flight, results)
        try:
            self.state.send_commit(flight[1])  # Redis applies it now, not when the next take comes
        except (Stopping, KeyboardInterrupt):
            raise
        except Exception:  # landed (applied alone) at once
            self._held = None
            landed.append(self._land(_Held(token, flight, results)))
        return landed

    def flush(self, token: object | None = None) -> list[tuple[object, BatchResult]]:
        """Confirm the take in flight (only if it is ``token``'s, when given): what landed, to
        acknowledge (nothing, or that take)."""
        held = self._held
        if held is None or (token is not None and held.token is not token):
            return []
        self._held = None
        return [self._land(held)]

    def holds(self, token: object) -> bool:
        """Whether ``token``'s take is still in flight (it lands on the next take or :meth:`flush`)."""
        return self._held is not None and self._held.token is token

    def _land(self, held: _Held) -> tuple[object, BatchResult]:
        """Confirm ``held``'s chunk in flight, or apply it alone (:meth:`_resilient`) when its
        script failed or its reply was lost."""
        chunk, commit, result = held.flight
        try:
            self.state.finish_commit(commit)
        except (Stopping, KeyboardInterrupt):
            raise
        except Exception as exc:
            log.debug("a take in flight was not applied (%s: %s): applied alone", type(exc).__name__, exc)
            result = self._resilient(chunk)
        return held.token, BatchResult.combine([*held.earlier, result])

    def _resilient(self, items: list[_Item]) -> BatchResult:
        """Apply ``items``; a failure inside the engine (a bug, not bad data) is narrowed
        down by halving until the one event is found, which is then dead-lettered."""
        try:
            return self._with_retries(items)
        except (Stopping, KeyboardInterrupt):
            raise
        except Exception:
            if len(items) == 1:
                log.exception(
                    "the engine failed on one event (%s #%d); it goes to the DLQ as %s",
                    items[0].message.coordinates,
                    items[0].index,
                    INTERNAL_ERROR,
                )
                item = items[0]
                failed = _Item(
                    item.message,
                    item.index,
                    item.raw,
                    Rejection(item.raw, INTERNAL_ERROR, "the engine failed on this event; see the worker log"),
                )
                return self._with_retries([failed])
            middle = len(items) // 2
            return BatchResult.combine([self._resilient(items[:middle]), self._resilient(items[middle:])])

    def _with_retries(self, items: list[_Item]) -> BatchResult:
        conflicts = 0
        attempts = 0
        while True:
            attempts += 1
            try:
                result = self._apply(items, self.clock())
            except BatchConflict as exc:
                conflicts += 1
                if conflicts >= CONFLICT_ATTEMPTS and len(items) > 1:
                    log.warning(
                        "batch of %d events conflicted %d times (%s); applying it in halves", len(items), conflicts, exc
                    )
                    middle = len(items) // 2
                    halves = [self._with_retries(items[:middle]), self._with_retries(items[middle:])]
                    return BatchResult.combine(halves, attempts)
                log.debug("batch conflict (%s), retrying", exc)
                time.sleep(min(0.5, 0.005 * 2 ** min(conflicts, 7)) * (0.5 + random.random()))
                continue
            except redis.RedisError as exc:
                if _script_failed(exc):
                    raise  # not an outage: the data tripped the script; _resilient isolates it
                self._redis_down(exc)
                continue
            self._redis_up()
            result.attempts = attempts
            return result

    def _redis_down(self, exc: redis.RedisError) -> None:
        now = time.monotonic()
        if self._redis_down_since is None:
            self._redis_down_since = now
            self._last_down_log = now
            log.error(
                "Redis error: %s: %s%s; the batch waits and is retried (not dropped)",
                type(exc).__name__,
                exc,
                redis_error_hint(exc),
            )
        elif now - self._last_down_log >= 30:
            self._last_down_log = now
            log.error("Redis still failing after %.0f s: %s: %s", now - self._redis_down_since, type(exc).__name__, exc)
        if self.stopping.is_set():
            raise Stopping("stopping while Redis is unreachable") from exc
        backoff = min(REDIS_BACKOFF_MAX_SECONDS, 0.25 * 2 ** min(6, int(now - self._redis_down_since)))
        gc.collect()  # the collector may be paused (a backlog's take, process): nothing piles up in a long wait
        self.stopping.wait(backoff * (0.5 + random.random() / 2))
        if self.stopping.is_set():
            raise Stopping("stopping while Redis is unreachable") from exc

    def _redis_up(self) -> None:
        if self._redis_down_since is not None:
            log.warning("Redis is back after %.0f s", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None

    @property
    def redis_wait_seconds(self) -> float:
        """How long the batch in hand has been waiting for Redis (consumption is paused
        meanwhile); 0 when the last attempt reached it."""
        since = self._redis_down_since
        return 0.0 if since is None else time.monotonic() - since

    def _apply(
        self, items: list[_Item], now: float, *, after: DeferredCommit | None = None, defer: bool = False
    ) -> BatchResult:
        """Apply ``items`` in one batch; with ``defer``, leave it computed in
        ``state.deferred`` (pipelining: :meth:`_pipelined`), on top of ``after``."""
        state = self.state
        engine = self.engine
        result = BatchResult(dead=[])
        with state.batch(after=after, defer=defer):
            events = [item.parsed for item in items if isinstance(item.parsed, Event)]
            engine.prefetch(events, now)  # one round trip per wave of reads, not per event or kind
            state.send_reads()  # its last wave too, before the events are applied
            if after is not None:
                state.send_commit(after)  # Redis applies the chunk before while this one is computed
            for item in items:
                parsed = item.parsed
                if isinstance(parsed, Event):
                    try:
                        if engine.process(parsed, now):
                            result.accepted += 1
                        else:
                            result.duplicates += 1
                        continue
                    except InvalidEventError as exc:
                        reason, error = exc.reason, exc.message
                else:
                    reason, error = parsed.reason, parsed.message
                # A rejection has no trustworthy id: it counts once per Kafka coordinate.
                message = item.message
                ts = message.timestamp if message.timestamp is not None and message.timestamp > 0 else now
                if state.claim_event(PIPELINE_TENANT, f"{message.coordinates}/{item.index}", ts):
                    engine.reject(reason, tenant=PIPELINE_TENANT)
                result.dead.append(DeadLetter(message.key, item.raw, reason, error, message.coordinates))
        return result

    # -- upkeep ----------------------------------------------------------------------------
    def maintain(self) -> list[tuple[object, BatchResult]]:
        """The engine's upkeep (expire calls that waited longer than ``max_call_age``), then the
        retirement of idle names (Engine.retire_series). A take in flight lands first: it is
        returned, to acknowledge, as :meth:`flush` returns it."""
        landed = self.flush()
        try:
            for _attempt in range(CONFLICT_ATTEMPTS):
                try:
                    with self.state.batch():
                        self.engine.maintain(self.clock(), retire=False)
                    break
                except BatchConflict:
                    time.sleep(0.05 * (0.5 + random.random()))
            else:
                log.warning("upkeep kept conflicting with other workers; it runs again later")
            # Retirement writes at once, in small atomic steps: after the batch, never inside it.
            self.engine.retire_series(self.clock())
        except redis.RedisError as exc:
            log.warning("upkeep skipped: Redis error: %s", exc)
        return landed


# -- Kafka -------------------------------------------------------------------------------------
def wait_for_kafka(settings: Settings, stop: threading.Event | None = None, interval: float = 5.0) -> bool:
    """Block until a Kafka broker answers at ``settings.kafka_bootstrap`` (one clear log line
    per failed attempt), then create the events and DLQ topics if they are missing (a consumer
    would otherwise ignore a topic created later for minutes). ``False`` when stopped first."""
    import kafka
    from kafka.errors import KafkaError

    from streams import security

    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # its own retries are noisy
    attempt = 0
    while stop is None or not stop.is_set():
        attempt += 1
        try:
            with security.kafka_failures() as failures:
                admin = kafka.KafkaAdminClient(
                    bootstrap_servers=settings.kafka_servers,
                    request_timeout_ms=10000,
                    bootstrap_timeout_ms=int(interval * 1000),
                    client_id="ccmon-worker-probe",
                    **security.kafka_client_kwargs(settings),
                )
        except (KafkaError, OSError) as exc:
            refused = security.kafka_config_error(settings, failures)
            if refused is not None:  # a wrong password or certificate: retrying cannot help
                raise refused from None
            log.error(
                "cannot reach Kafka at %s (%s: %s%s); retrying in %.0f s",
                settings.kafka_bootstrap,
                type(exc).__name__,
                exc,
                security.last_failure(settings, failures),
                interval,
            )
            if stop is not None:
                stop.wait(interval)
            else:
                time.sleep(interval)
            continue
        if attempt > 1:
            log.warning("Kafka at %s is reachable now", settings.kafka_bootstrap)
        missing = [settings.events_topic, settings.dlq_topic]
        try:
            missing = sorted(set(missing) - set(admin.list_topics()))
            if missing:
                # Broker defaults for partitions and replication (KIP-464).
                admin.create_topics({name: {} for name in missing}, timeout_ms=10000, wait_for_metadata=True)
                log.info("created topic(s) %s", ", ".join(missing))
        except Exception as exc:  # creating them is a convenience; the broker may forbid it
            log.warning(
                "could not create topics %s (%s: %s); create them or allow auto-creation",
                ", ".join(missing),
                type(exc).__name__,
                exc,
            )
        finally:
            admin.close()
        return True
    return False


def build_app(
    settings: Settings,
    processor: BatchProcessor,
    watchdog: PartitionWatchdog | None = None,
    eviction: EvictionWatch | None = None,
) -> faust.App:
    """The Faust app: one agent on the events topic, a DLQ topic, an upkeep timer, the
    stuck-partition watchdog and the health pages (streams/watchdog.py); with ``eviction``, a
    timer re-reading Redis's eviction policy and its gauge."""
    import faust
    from prometheus_client import CollectorRegistry

    from streams import watchdog as watchdog_module
    from streams.security import faust_credentials

    if watchdog is None:
        watchdog = PartitionWatchdog.for_settings(settings)

    web: dict[str, Any] = {"web_port": settings.worker_web_port} if settings.worker_web_port else {}
    app = faust.App(
        settings.group_id,
        broker=settings.kafka_url,
        broker_credentials=faust_credentials(settings),  # SASL and/or TLS: docs/SECURITY.md
        store="memory://",
        # Tables live in memory; Faust still makes its data directory, so keep it out of the
        # working directory (it was "<group>-data" wherever the worker was started).
        datadir=os.path.join(tempfile.gettempdir(), "ccmon-faust-{conf.name}"),
        web_enabled=settings.worker_web_port != 0,
        **web,
        consumer_auto_offset_reset=settings.offset_reset,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        stream_wait_empty=False,  # do not wait for a batch that cannot finish (Redis down)
        producer_acks=-1,
        producer_max_request_size=DLQ_MAX_RECORD_BYTES,  # what DeadLetter.fitted cuts to
        key_serializer="raw",
        value_serializer="raw",
    )
    if settings.worker_web_port:
        # The worker's own metrics (messages, lag, commits) at :web_port/metrics.
        from faust.sensors.prometheus import setup_prometheus_sensors

        registry = CollectorRegistry()
        setup_prometheus_sensors(app, registry=registry, name_prefix="ccmon_worker")
        from prometheus_client import Gauge

        Gauge(
            "ccmon_worker_redis_wait_seconds",
            "Seconds the batch in hand has been waiting for Redis "
            "(consumption paused meanwhile); 0 when Redis answers.",
            registry=registry,
        ).set_function(lambda: processor.redis_wait_seconds)
        if eviction is not None:
            registry.register(eviction)  # ccmon_redis_eviction_safe, as last read (no I/O on the loop)
        Gauge(
            "ccmon_worker_stuck_partitions",
            "Partitions of this worker with lag whose committed offset has not "
            "moved for --stuck-partition-seconds (the worker then exits to be restarted).",
            registry=registry,
        ).set_function(lambda: len(watchdog.stuck))
    watchdog_module.install(app, processor, watchdog, web=settings.worker_web_port != 0)

    events_topic = app.topic(settings.events_topic, key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccmon-batch")
    stats = {"events": 0, "messages": 0, "rejected": 0, "duplicates": 0, "since": time.monotonic()}
    if eviction is not None:

        @app.timer(interval=settings.redis_policy_recheck_seconds)
        async def eviction_policy() -> None:  # in the batch thread; a change is logged, the worker goes on
            await asyncio.get_running_loop().run_in_executor(executor, eviction.refresh)

    # Takes handed to the processor and not yet landed (BatchProcessor.take: a take's last
    # chunk stays in flight until the next take), by token: the events and when they were taken.
    taken_by: dict[object, tuple[list[Any], float]] = {}

    def ack(event: Any) -> None:
        """Let ``event``'s offset be committed. When ours is the message's last reference (a take
        held in flight is acknowledged after Faust's take moved on), tell Faust's sensors, as
        its own last acknowledgement does (the worker's ``active_messages``)."""
        if event.ack():
            message = event.message
            app.sensors.on_message_out(message.tp, message.offset, message)

    async def land(landed: list[tuple[object, BatchResult]]) -> None:
        """Dead-letter what each landed take rejected, then let its offsets be committed."""
        for token, result in landed:
            batch, taken = taken_by.pop(token)
            deliveries = []
            for dead in result.dead:
                fitted = dead.fitted()
                if fitted is not dead:
                    log.warning(
                        "a rejected event from %s is %d bytes, too big for a Kafka record: "
                        "dead-lettered cut to %d bytes (header ccmon-truncated)",
                        dead.source,
                        len(dead.value),
                        len(fitted.value),
                    )
                deliveries.append(await dlq_topic.send(key=fitted.key, value=fitted.value, headers=fitted.headers))
            if deliveries:
                await asyncio.gather(*deliveries)
            for event in batch:
                ack(event)  # applied and dead-lettered: now its offset may be committed
            if log.isEnabledFor(logging.DEBUG):
                # Where a batch's time goes: Kafka's CreateTime of its oldest message -> the
                # take yielding it -> applied in Redis and dead-lettered (a take left in flight
                # is confirmed with the next take, or HOLD_SECONDS after it when none comes).
                oldest = min(event.message.timestamp for event in batch)
                log.debug(
                    "batch of %d messages (%d events): oldest waited %.3f s before the take, applied %.3f s later",
                    len(batch),
                    result.accepted,
                    taken - oldest,
                    time.time() - taken,
                )
            stats["messages"] += len(batch)
            stats["events"] += result.accepted
            stats["duplicates"] += result.duplicates
            stats["rejected"] += len(result.dead)

    async def land_when_idle(token: object) -> None:
        """Confirm ``token``'s take, still in flight after HOLD_SECONDS (no next take came)."""
        await asyncio.sleep(HOLD_SECONDS)
        if processor.holds(token):
            await land(await asyncio.get_running_loop().run_in_executor(executor, processor.flush, token))

    @app.agent(events_topic, name="ccmon-events")
    async def consume(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        tokens = itertools.count()
        idle: asyncio.Task[None] | None = None
        try:
            async for batch in stream.take_events(settings.batch_size, within=settings.batch_within):
                # take_events acks the batch when the generator moves on *or is closed* (Faust
                # closes it on stop, even mid-batch). Hold one more reference per message so
                # that ack alone cannot make an unapplied offset committable; ours comes after.
                taken = time.time()
                for event in batch:
                    event.message.incref()
                messages = [_message(event.message) for event in batch]
                token = next(tokens)
                taken_by[token] = (batch, taken)
                watchdog.batch_started({message.partition for message in messages})
                future = loop.run_in_executor(executor, processor.take, messages, token)
                try:
                    landed = await asyncio.shield(future)
                except asyncio.CancelledError:
                    # Stopping: give a batch in flight a moment to land; one that waits for
                    # Redis gives up, stays unacked, and is read again on the next start.
                    processor.stopping.set()
                    try:
                        late = await asyncio.wait_for(asyncio.shield(future), timeout=10)
                        late += await asyncio.wait_for(loop.run_in_executor(executor, processor.flush), timeout=10)
                        for late_token, result in late:
                            if not result.dead:  # else unacked: read again, its dead letters resent
                                for event in taken_by.pop(late_token)[0]:
                                    ack(event)
                    except BaseException:  # Stopping, a timeout, a second cancel
                        log.warning(
                            "stopped with a batch of %d messages not applied; it is read again on restart", len(batch)
                        )
                    raise
                await land(landed)
                watchdog.batch_finished()
                if processor.holds(token):
                    idle = asyncio.ensure_future(land_when_idle(token))
        finally:
            if idle is not None:
                idle.cancel()

    lock_key = f"{settings.redis_prefix}:{{p}}:maintain-lock"
    me = uuid.uuid4().hex
    lag_probe = LagProbe(settings)

    def measure_lag() -> None:
        try:
            lag = lag_probe.measure()
        except Exception as exc:  # Kafka hiccups: the next interval tries again
            log.debug("consumer lag not measured: %s: %s", type(exc).__name__, exc)
            lag_probe.close()
            return
        watchdog.observe(lag, lag_probe.committed)
        try:
            processor.state.put_consumer_lag(lag)
        except redis.RedisError as exc:
            log.debug("consumer lag not stored: %s", exc)

    @app.timer(interval=MAINTAIN_INTERVAL_SECONDS)
    async def upkeep() -> None:
        loop = asyncio.get_running_loop()

        def run() -> list[tuple[object, BatchResult]]:
            # One worker of the group does the upkeep per interval.
            client = processor.state.client
            try:
                if not client.set(lock_key, me, nx=True, px=int(MAINTAIN_INTERVAL_SECONDS * 900)):
                    return []
            except redis.RedisError as exc:
                log.warning("upkeep skipped: Redis error: %s", exc)
                return []
            started = time.perf_counter()
            landed = processor.maintain()  # a take in flight lands first: acknowledged below
            log.debug("upkeep took %.3f s (takes wait meanwhile)", time.perf_counter() - started)
            return landed

        await land(await loop.run_in_executor(executor, run))

    # Its own thread: a slow Kafka answer to the probe never holds up a batch.
    lag_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccmon-lag")

    @app.task
    async def lag_at_start() -> None:
        await asyncio.get_running_loop().run_in_executor(lag_executor, measure_lag)

    @app.timer(interval=LAG_INTERVAL_SECONDS)
    async def lag() -> None:
        # Every worker measures the whole group's lag (the same figures): cheap, and it
        # keeps going whichever workers are alive.
        await asyncio.get_running_loop().run_in_executor(lag_executor, measure_lag)

    @app.timer(interval=30.0)
    async def report() -> None:
        elapsed = time.monotonic() - stats["since"]
        if stats["messages"]:
            log.info(
                "last %.0f s: %d messages, %d events applied (%.0f/s), %d duplicates, %d rejected",
                elapsed,
                stats["messages"],
                stats["events"],
                stats["events"] / elapsed,
                stats["duplicates"],
                stats["rejected"],
            )
        stats.update(events=0, messages=0, rejected=0, duplicates=0, since=time.monotonic())

    return app


def _message(message: Any) -> Message:
    return Message(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value if message.value is not None else b"",
        timestamp=message.timestamp,
    )


def run_worker(settings: Settings) -> int:
    """``ccmon worker``: connect, then consume until SIGTERM/SIGINT."""
    import faust

    from kpi_core.native import compiled
    from streams.files import load_config
    from streams.security import customer_key, redis_connection_kwargs

    config = load_config(settings.config_path)
    key = customer_key(settings, "ccmon worker")  # before anything else: a missing secret is one line
    _check_port_free(settings.worker_web_port)
    log.info("starting: %s", settings.redacted())
    log.info(
        "engine: %s",
        "compiled (mypyc)" if compiled() else "interpreted (not compiled at install: slower; see setup.py)",
    )
    state = RedisState.from_url(
        settings.redis_url,
        config,
        cluster=settings.redis_cluster,
        prefix=settings.redis_prefix,
        clock=settings.make_clock(),
        connection=redis_connection_kwargs(settings),
        customer_key=key,
    )
    processor = BatchProcessor(config, state, settings.make_clock())
    if not state.cluster:
        processor.chunk_events = settings.pipeline_chunk or None
    _wait_for_redis(state)
    eviction = EvictionWatch(
        state.client,
        settings.redis_cluster,
        check_at_start(state.client, settings.redis_cluster, settings.evicting_redis_allowed),
    )
    wait_for_kafka(settings)
    watchdog = PartitionWatchdog.for_settings(settings)
    app = build_app(settings, processor, watchdog, eviction)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        logging_config=faust_logging_config(settings.log_level, settings.log_format),
    )
    for name in PAYLOAD_LOGGERS:  # privacy: no event in a log line, even at DEBUG
        logging.getLogger(name).setLevel(max(logging.INFO, getattr(logging, settings.log_level)))
    tune_gc()
    report_slow_collections(log)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return watchdog.exit_code or int(exc.code or 0)  # a stuck partition: the watchdog's code
    finally:
        processor.stopping.set()
    return watchdog.exit_code or 0


def _check_port_free(port: int) -> None:
    """Fail fast (not with a traceback from deep inside Faust) when the web port is taken."""
    import socket

    from kpi_core.errors import ConfigError

    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            raise ConfigError(
                "--web-port", f"port {port} is not free ({exc.strerror}); pick another, or 0 for no web server"
            ) from None


def _wait_for_redis(state: RedisState, interval: float = 5.0) -> None:
    first = True
    while True:
        try:
            state.client.ping()
            if not first:
                log.warning("Redis is reachable now")
            return
        except redis.RedisError as exc:
            log.error(
                "cannot reach Redis at %s (%s: %s); retrying in %.0f s",
                _redis_where(state),
                type(exc).__name__,
                exc,
                interval,
            )
            first = False
            time.sleep(interval)


def _redis_where(state: RedisState) -> str:
    pool = getattr(state.client, "connection_pool", None)
    if pool is None:  # Redis Cluster: no single pool
        return "the Redis Cluster"
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
