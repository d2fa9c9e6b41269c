"""Peer (a) of bench/bench_peers.py: the job of bench/peer_common.py in plain Faust.

A faust-streaming app with one agent on the events topic and Faust's own windowed table:
hopping windows of 900 s every ``--step`` seconds, in-memory store (``memory://``, backed
by its changelog topic as Faust always does), keyed by queue, the value the six components
of peer_common (combined with ``WindowSet.apply``). Event time: the table is made relative
to each event's ``ts`` (set before each update, so an envelope's events each land in their
own windows). The window ``[at - 900, at)`` is one of the hopping windows when ``at`` is a
multiple of the step, and Faust's window ``(s, s + 900 - 0.1)`` holds exactly the events
with ``s <= ts < s + 900``.

One event per message or JSON-array envelopes (``--mode``): the agent iterates the stream
message by message either way. When ``--expect`` events have been read it writes
``--out`` (rate, per-queue KPIs) and waits to be stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_common as pc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True, help="events in the topic")
    parser.add_argument("--at", type=float, required=True, help="end instant (a multiple of --step)")
    parser.add_argument("--step", type=int, default=60)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import faust

    app = faust.App(
        args.group,
        broker=f"kafka://{args.kafka}",
        store="memory://",
        topic_partitions=4,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    event_ts = [0.0]
    base = app.Table("queue-kpis", default=list, partitions=4, key_type=str, value_type=list)
    # Faust's table cleanup (every 30 s) drops windows older than ``expires`` *by the wall
    # clock* (tables/base.py ``_del_old_keys``: ``window.stale(ts, time.time())``), whatever
    # the event time: the bench's simulated day is days old, so a 2-day expiry dropped the
    # windows of runs longer than 30 s (the one-event-per-message run disagreed on 66 of 120
    # queue values). Nothing may expire during a bench run.
    hopping: Any = base.hopping(900, args.step, expires=timedelta(days=36500))
    table = hopping.relative_to(lambda _event: event_ts[0])
    marks: dict[str, float] = {}
    read = [0]
    done = [False]

    def finish() -> None:
        start = args.at - pc.WINDOW
        per_queue: dict[str, Any] = {}
        for (queue, window), value in list(base.data.items()):
            if window[0] == start:
                per_queue[queue] = pc.kpis(value)
        elapsed = marks["last"] - marks["first"]
        pc.write_result(
            args.out,
            events=read[0],
            seconds=elapsed,
            rate=read[0] / elapsed,
            steady=0.8 * args.expect / (marks["p90"] - marks["p10"]),
            kpis=per_queue,
        )

    @app.agent(topic)
    async def consume(stream: Any) -> None:
        async for value in stream:
            if "first" not in marks:
                marks["first"] = time.perf_counter()
            decoded = json.loads(value)
            items = decoded if isinstance(decoded, list) else [decoded]
            for event in items:
                components = pc.contribution(event)
                if components is not None:
                    event_ts[0] = pc.ts_seconds(event["ts"])
                    table[event["queue"]].apply(pc.add, components)
            read[0] += len(items)
            now = time.perf_counter()
            for name, share in (("p10", 0.1), ("p90", 0.9)):
                if name not in marks and read[0] >= share * args.expect:
                    marks[name] = now
            if read[0] >= args.expect and not done[0]:
                done[0] = True
                marks["last"] = now
                finish()

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
