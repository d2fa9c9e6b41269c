"""Generate realistic contact-center traffic as canonical events: several queues over a day
(Poisson arrivals with a morning peak and a lunch dip, agents on shifts, patience,
abandonment, voicemail, callbacks, transfers, outbound sales, tickets, surveys). Seeded and
reproducible: the same arguments give byte-identical output. Writes JSONL (a file or
stdout) or JSON-array envelopes to Kafka. See docs/SIMULATOR.md."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any

from streams.progress import Progress, percent, wanted
from streams.sources.common import add_destination_arguments

if TYPE_CHECKING:
    from streams.kafka.produce import Record
    from streams.sim import SimParams, Simulator


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number within 0..0.5, got {text!r}") from None
    if not 0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be within 0..0.5, got {text!r}")
    return value


def queues_arg(text: str) -> int | list[str]:
    """``--queues``: a count (``4``) or names (``support,sales``)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"give a number of queues or comma-separated names, got {text!r}")
    return names


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``simulate`` and ``demo``."""
    parser.add_argument(
        "--queues",
        type=queues_arg,
        default=4,
        metavar="N|NAMES",
        help="how many queues (from support, sales, billing, tech, retention, vip, then "
        "generic ones), or comma-separated names (default: 4)",
    )
    parser.add_argument(
        "--agents",
        type=int,
        default=None,
        metavar="N",
        help="agents per queue (default: sized by Erlang C for 80/20 at the peak)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--tenant", default="default", help="tenant of every event (default: default)")
    parser.add_argument(
        "--late-share",
        type=_share,
        default=0.0,
        metavar="F",
        help="share of events delivered 1-15 simulated minutes late (default: 0)",
    )
    parser.add_argument(
        "--duplicate-share",
        type=_share,
        default=0.0,
        metavar="F",
        help="share of events delivered twice, same event_id (default: 0)",
    )
    parser.add_argument(
        "--malformed-share",
        type=_share,
        default=0.0,
        metavar="F",
        help="rate of extra malformed records, which must be rejected (default: 0)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_destination_arguments(parser)
    parser.add_argument(
        "--start",
        default="today",
        metavar="WHEN",
        help="simulated start: now, now-90m / now-2h (that long before now), today (00:00 UTC), HH:MM "
        "(today, UTC), RFC 3339 or epoch seconds (default: today)",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="never ahead of the wall clock (a worker rejects events from the future): the "
        "simulation catches up to now at --speed (0: at once), then follows real time",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=24.0,
        help="simulated hours (default: 24); 0 runs until interrupted (needs --speed)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="simulated seconds per real second, e.g. 60 = a minute per second; 0 = as fast as possible (default: 0)",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument("--quiet", action="store_true", help="no summary on stderr")


def run(args: argparse.Namespace) -> int:
    from streams.sim import SimParams, default_queues, parse_start

    if args.hours < 0 or (args.hours == 0 and args.speed <= 0 and not args.live):
        print("ccmon simulate: --hours 0 (endless) needs --speed > 0 or --live", file=sys.stderr)
        return 2
    params = SimParams(
        start=parse_start(args.start),
        hours=args.hours or None,
        queues=default_queues(args.queues, args.agents),
        seed=args.seed,
        tenant=args.tenant,
        late_share=args.late_share,
        duplicate_share=args.duplicate_share,
        malformed_share=args.malformed_share,
    )
    return run_simulation(params, args, progress=wanted(args.progress))


class _Progress:
    """Simulate's progress line: the simulated time, how far of --hours, records and rate
    (:mod:`streams.progress`)."""

    def __init__(self, sim: Simulator, enabled: bool, stream: IO[str] | None = None) -> None:
        self.sim = sim
        self.line = Progress(enabled, stream)

    def update(self, force: bool = False) -> None:
        self.line.update(self._text, force)

    def done(self) -> None:
        self.line.done(self._text)

    def _text(self) -> str:
        from streams.sim import format_ts

        params = self.sim.params
        done = ""
        if params.hours is not None:
            done = " " + percent(self.sim.now - params.start, params.hours * 3600)
        return (
            f"simulating {format_ts(self.sim.now)[:19]}Z{done}  "
            f"{self.sim.delivered:,} records  {self.line.rate(self.sim.delivered):,.0f}/s "
        )


def _jsonl_writer(handle: IO[str]) -> Callable[[Iterable[tuple[float, Record]]], None]:
    from streams.kafka.produce import dumps

    def write(records: Iterable[tuple[float, Record]]) -> None:
        handle.write("".join(dumps(record) + "\n" for _emit_at, record in records))

    return write


def drive(
    sim: Simulator,
    write: Callable[[Iterable[tuple[float, Record]]], None],
    speed: float,
    *,
    flush: Callable[[], None] = lambda: None,
    progress: _Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    ceiling: Callable[[], float] | None = None,
) -> None:
    """Run ``sim`` to its end (forever when it has none), handing records to ``write``:
    as fast as possible (``speed`` 0, in simulated-hour steps) or paced, ``speed`` simulated
    seconds per real second. With ``ceiling`` (``--live``: the wall clock), simulated time never
    passes ``ceiling()``: the run catches up to it, then follows it."""
    from streams.sim import Pacer

    params = sim.params
    end = params.end
    if ceiling is not None:
        pacer = Pacer(sim.now, speed, clock) if speed > 0 else None
        t = sim.now
        while t < end:
            goal = min(end, ceiling(), pacer.sim_now() if pacer is not None else math.inf)
            while t < goal:  # a long catch-up leaves in simulated 10-minute steps
                t = min(t + 600.0, goal)
                write(sim.advance(t))
                flush()
                if progress is not None:
                    progress.update()
            if t < end:
                sleep(0.1)
    elif speed <= 0:
        t = sim.now
        while t < end:
            t = min(t + 600.0, end)
            write(sim.advance(t))
            if progress is not None:
                progress.update()
    else:
        pacer = Pacer(sim.now, speed, clock)
        while True:
            target = min(pacer.sim_now(), end)
            write(sim.advance(target))
            flush()
            if progress is not None:
                progress.update()
            if target >= end:
                break
            sleep(0.1)
    write(sim.finish())
    flush()


def run_simulation(params: SimParams, args: argparse.Namespace, *, progress: bool) -> int:
    from streams.sim import Simulator, format_ts

    sim = Simulator(params)
    meter = _Progress(sim, progress)
    started = time.monotonic()
    target = args.kafka or ("stdout" if args.out == "-" else args.out)
    live = time.time if getattr(args, "live", False) else None
    try:
        if args.kafka:
            sink = _kafka_sink(args)
            if sink is None:
                return 1
            try:
                drive(
                    sim,
                    lambda records: sink.write(r for _t, r in records),
                    args.speed,
                    flush=sink.flush,
                    progress=meter,
                    ceiling=live,
                )
            finally:
                sink.flush()
                sink.producer.close()
            target = f"{args.kafka} topic {args.topic} ({sink.messages:,} messages)"
        elif args.out == "-":
            drive(sim, _jsonl_writer(sys.stdout), args.speed, flush=sys.stdout.flush, progress=meter, ceiling=live)
        else:
            try:
                with open(args.out, "w", encoding="utf-8", newline="\n") as handle:
                    drive(sim, _jsonl_writer(handle), args.speed, flush=handle.flush, progress=meter, ceiling=live)
            except OSError as exc:
                print(f"ccmon simulate: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
                return 1
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        meter.done()
        print(f"ccmon simulate: interrupted at {format_ts(sim.now)}", file=sys.stderr)
        return 130
    meter.done()
    if not args.quiet:
        elapsed = time.monotonic() - started
        injected = sim.delivered - sim.emitted
        print(
            f"simulated {format_ts(params.start)[:16]}Z + {(sim.now - params.start) / 3600:g} h: "
            f"{sim.emitted:,} events (+{injected:,} injected) in {elapsed:.1f} s -> {target}",
            file=sys.stderr,
        )
    return 0


def _kafka_sink(args: argparse.Namespace) -> Any:
    from streams.kafka.produce import KafkaSink

    try:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError
    except ImportError:
        print("ccmon simulate: --kafka needs kafka-python (pip install kafka-python)", file=sys.stderr)
        return None
    from streams.settings import kafka_client_kwargs_from_env

    security = kafka_client_kwargs_from_env()  # CCMON_KAFKA_SECURITY_PROTOCOL...: docs/SECURITY.md
    try:
        producer = KafkaProducer(
            bootstrap_servers=args.kafka,
            client_id="ccmon-simulate",
            linger_ms=20,
            acks=1,
            max_block_ms=15000,
            **security,
        )
        return KafkaSink(producer, args.topic, args.batch)
    except KafkaError as exc:
        print(f"ccmon simulate: cannot reach Kafka at {args.kafka}: {exc}", file=sys.stderr)
        return None
