"""Decoding alone: Kafka message values split into validated events, events/s, as the worker does it.

A simulated day (``streams.sim``, RFC 3339 times, the live mix) in JSON-array envelopes of
100 events per partition (``bench/common.py`` ``envelopes``, as ``ccmon simulate --kafka`` writes
them), run through the worker's splitter: ``kpi_core.events.envelope_items`` with
``streams.decoding.loads`` where they exist, else the older ``streams.worker._split``, so one run
measures two checkouts::

    PYTHONPATH=. python bench/bench_decode.py --events 100000 --other /work/main

Each code base runs in fresh processes (``PYTHONPATH`` set to it) on the same message file, the
code bases taking turns (``--rounds``, so a busy spell of a shared machine hits them alike); the
best pass counts. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MEASURE = """
import pickle, sys, time
try:
    from kpi_core.events import envelope_items
    from streams.decoding import loads

    def split(raw):
        return envelope_items(raw, loads)
except ImportError:
    from streams.worker import _split as split
from kpi_core.events import Event
with open(sys.argv[1], 'rb') as handle:
    messages = pickle.load(handle)
best = None
for _run in range(int(sys.argv[2])):
    started = time.process_time()
    accepted = 0
    for raw in messages:
        for _raw, parsed in split(raw):
            accepted += isinstance(parsed, Event)
    elapsed = time.process_time() - started
    best = elapsed if best is None else min(best, elapsed)
print(accepted, best)
"""


def make_messages(n: int, queues: int) -> list[bytes]:
    sys.path.insert(0, str(REPO / "bench"))
    import common
    from bench_pipeline import sim_events

    return [value for _part, _key, value, _n in common.envelopes(sim_events(n, queues), 4)]


def measure(code_base: Path, messages_file: str, runs: int) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(code_base)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, messages_file, str(runs)],
        env=env,
        cwd=code_base,
        capture_output=True,
        text=True,
        check=True,
    )
    accepted, elapsed = done.stdout.split()
    return int(accepted), float(elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="simulated events (default 100,000)")
    parser.add_argument("--queues", type=int, default=40, help="simulated queues (default 40)")
    parser.add_argument("--rounds", type=int, default=5, help="turns per code base (default 5)")
    parser.add_argument("--runs", type=int, default=2, help="passes per turn; the best of all counts (default 2)")
    parser.add_argument("--other", action="append", default=[], help="another checkout to measure too")
    args = parser.parse_args(argv)
    import pickle

    messages = make_messages(args.events, args.queues)
    results: dict[str, dict[str, float]] = {}
    with tempfile.NamedTemporaryFile(suffix=".pickle") as handle:
        pickle.dump(messages, handle)
        handle.flush()
        for _round in range(args.rounds):
            for code_base in [REPO, *map(Path, args.other)]:
                accepted, elapsed = measure(code_base, handle.name, args.runs)
                best = results.get(str(code_base))
                if best is None or elapsed < best["seconds"]:
                    results[str(code_base)] = {
                        "events": accepted,
                        "seconds": round(elapsed, 4),
                        "events_per_second": round(accepted / elapsed),
                    }
    print(json.dumps({"messages": len(messages), "bytes": sum(map(len, messages)), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
