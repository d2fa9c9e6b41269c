"""Peer (b) of bench/bench_peers.py: the job of bench/peer_common.py in Quix Streams.

A Quix Streams ``Application`` with a sliding window (``sliding_window(...).reduce(...)``,
its RocksDB state store and changelog topics, Quix's defaults) per message key = queue.

* ``--mode single``: one event per message, keyed by queue (no repartition needed); event
  time from the value's ``ts`` (the topic's ``timestamp_extractor``).
* ``--mode envelope``: JSON-array envelopes keyed by entity: ``apply(expand=True)`` splits
  them, ``set_timestamp`` takes each event's ``ts``, ``group_by(queue)`` re-keys through
  Quix's repartition topic (the way Quix re-keys a stream).

Quix windows are inclusive at both ends and evaluated at event times only, so the topic
carries one tick per queue at ``at - 1 ms`` (a ``survey.response`` marked ``bench_tick``;
it adds nothing here, and to ccmon only a survey answer): with a duration of 899,999 ms the
tick's window is ``[at - 900 s, at - 1 ms]``, exactly ccmon's ``[at - 900, at)`` for
millisecond timestamps. Grace is two days, so events that the repartition reorders are
not dropped as late. When ``--expect`` events have been read and every tick's window seen,
it writes ``--out`` and stops (in envelope mode only once every re-keyed outcome has been
windowed too: ``--windowed``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_common as pc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--mode", choices=["single", "envelope"], required=True)
    parser.add_argument("--expect", type=int, required=True, help="events in the topic")
    parser.add_argument("--ticks", type=int, required=True, help="tick events (one per queue)")
    parser.add_argument("--windowed", type=int, required=True, help="events that reach the window: outcomes + ticks")
    parser.add_argument("--at", type=float, required=True, help="end instant")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import logging

    from quixstreams import Application

    at_ms = round(args.at * 1000)
    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    app = Application(
        broker_address=args.kafka,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel=logging.WARNING,
    )

    def event_ms(value: Any, *_rest: Any) -> int:
        return round(pc.ts_seconds(value["ts"]) * 1000)

    marks: dict[str, float] = {}
    read = [0]
    windowed = [0]
    results: dict[str, Any] = {}
    done = [False]

    def check_done() -> None:
        if not done[0] and read[0] >= args.expect and windowed[0] >= args.windowed and len(results) >= args.ticks:
            done[0] = True
            marks["last"] = time.perf_counter()
            elapsed = marks["last"] - marks["first"]
            # Envelopes are counted as they are read, before the re-keyed events are windowed:
            # there only first message to last is meaningful.
            steady = 0.8 * args.expect / (marks["p90"] - marks["p10"]) if args.mode == "single" else None
            pc.write_result(
                args.out, events=read[0], seconds=elapsed, rate=read[0] / elapsed, steady=steady, kpis=results
            )
            app.stop()

    def count(value: Any) -> None:
        if "first" not in marks:
            marks["first"] = time.perf_counter()
        read[0] += len(value) if isinstance(value, list) else 1
        now = time.perf_counter()
        for name, share in (("p10", 0.1), ("p90", 0.9)):
            if name not in marks and read[0] >= share * args.expect:
                marks[name] = now
        check_done()

    def wanted(event: Any) -> bool:
        return event.get("type") in pc.OUTCOMES or bool(event.get("bench_tick"))

    def count_windowed(_value: Any) -> None:
        windowed[0] += 1

    def on_window(window: Any, key: Any, _timestamp: int, _headers: Any) -> None:
        # A late event (re-keyed envelopes arrive out of order) updates the tick's window
        # again: the last value emitted wins.
        if window["end"] == at_ms - 1:
            results[key.decode() if isinstance(key, bytes) else str(key)] = pc.kpis(window["value"])
            check_done()

    if args.mode == "single":
        topic = app.topic(args.topic, key_deserializer="str", value_deserializer="json", timestamp_extractor=event_ms)
        sdf = app.dataframe(topic)
        sdf = sdf.update(count)
        sdf = sdf.filter(wanted)
    else:
        topic = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
        sdf = app.dataframe(topic)
        sdf = sdf.update(count)
        sdf = sdf.apply(lambda envelope: envelope, expand=True)
        sdf = sdf.filter(wanted)
        sdf = sdf.set_timestamp(lambda value, _key, _ts, _headers: event_ms(value))
        sdf = sdf.group_by(lambda event: event["queue"], name="queue")
    sdf = sdf.update(count_windowed)
    sdf = sdf.apply(lambda event: list(pc.contribution(event) or pc.ZERO))
    sdf = (
        sdf.sliding_window(duration_ms=int(pc.WINDOW * 1000) - 1, grace_ms=2 * 86_400_000)
        .reduce(reducer=pc.add, initializer=lambda value: list(value))
        .current()
    )
    sdf = sdf.update(on_window, metadata=True)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
