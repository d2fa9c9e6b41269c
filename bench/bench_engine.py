"""Engine alone: `ccmon replay` of a million-event day, events/s on one core and peak memory.

Each run is a fresh process (so peak RSS is the replay's own), pinned to one core where
taskset exists. The baseline in the same run is a bare `json.loads` of every line of the
same file, the floor any Python engine pays; the ratio to it is what to compare across
machines. Results are appended as a dated section to docs/BENCHMARKS.md.

    python bench/bench_engine.py --events 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"

BASELINE = """
import json, sys, time
t = time.perf_counter()
n = 0
with open(sys.argv[1], 'rb') as f:
    for line in f:
        json.loads(line)
        n += 1
print(n, time.perf_counter() - t)
"""

ENGINE = """
import resource, sys, time
from kpi_core.config import Config
from streams.replay import replay
t = time.perf_counter()
result = replay(sys.argv[1], Config(), None)
elapsed = time.perf_counter() - t
n = result.accepted + result.duplicates + sum(result.rejected.values()) + result.left_out
print(n, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, result.accepted)
"""


def events_file(n: int, seed: int) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"events-{n}-{seed}.jsonl"
    if not path.exists():
        print(f"generating {n:,} events -> {path}", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(REPO / "bench" / "gen_events.py"), "--events", str(n), "--seed", str(seed),
             "--out", str(path)],
            check=True,
        )  # fmt: skip
    return path


def run(code: str, path: Path) -> list[str]:
    cmd = [sys.executable, "-c", code, str(path)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return done.stdout.split()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only, do not touch docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    path = events_file(args.events, args.seed)

    base_rates, engine_rates, rss_mb = [], [], []
    accepted = 0
    for i in range(args.runs):
        n, seconds = run(BASELINE, path)
        base_rates.append(int(n) / float(seconds))
        n, seconds, maxrss_kb, accepted_s = run(ENGINE, path)
        engine_rates.append(int(n) / float(seconds))
        rss_mb.append(int(maxrss_kb) / 1024)
        accepted = int(accepted_s)
        print(f"run {i + 1}: json.loads {base_rates[-1]:,.0f}/s, engine {engine_rates[-1]:,.0f}/s, "
              f"peak {rss_mb[-1]:,.0f} MiB", file=sys.stderr)  # fmt: skip

    def cell(values: list[float], fmt: str) -> str:
        return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"

    ratios = [e / b for e, b in zip(engine_rates, base_rates, strict=True)]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join(
        [
            f"### Engine alone — {stamp}",
            "",
            f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}. Command: `python bench/bench_engine.py --events {args.events} "
            f"--runs {args.runs}` (each run a fresh process pinned to one core; median (min-max) of {args.runs}).",
            "",
            "| what | value |",
            "| --- | --- |",
            f"| events in file | {args.events:,} ({accepted:,} accepted; the rest duplicates/too late by design of the generator) |",
            f"| baseline: `json.loads` per line | {cell(base_rates, ',.0f')} lines/s |",
            f"| engine: `ccmon replay` (parse, validate, fold, snapshot) | {cell(engine_rates, ',.0f')} events/s |",
            f"| engine / baseline | {cell(ratios, '.3f')} |",
            f"| peak memory (max RSS) | {cell(rss_mb, ',.0f')} MiB |",
            "",
        ]
    )
    print(section)
    if not args.no_write:
        bench_md = REPO / "docs" / "BENCHMARKS.md"
        if not bench_md.exists():
            bench_md.write_text("# Benchmarks\n\nWritten by the scripts in `bench/`; newest first within each "
                                "section. Speed targets are met here, not in timed tests.\n\n")  # fmt: skip
        bench_md.write_text(bench_md.read_text() + "\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
