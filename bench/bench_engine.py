"""Engine alone: `ccmon replay` of a million-event day, events/s on one core and peak memory.

Each run is a fresh process (so peak RSS is the replay's own), pinned to one core where
taskset exists. The baseline in the same run is a bare `json.loads` of every line of the
same file, the floor any Python engine pays; the ratio to it is what to compare across
machines. The events are bench/gen_events.py's synthetic mix (fast to make at a million;
the simulator tops out at 200 queues a tenant). Prints a JSON document (``--json FILE``);
``bench/run_all.py`` writes docs/BENCHMARKS.md.

    python bench/bench_engine.py               # 1,000,000 events, 3 runs; then 300,000, 3 runs
    python bench/bench_engine.py --quick       # 100,000 events, 1 run

Issue #16's targets: >= 100,000 events/s; peak memory <= 150 MiB for 300,000 events and
<= 300 MiB for 1,000,000 (``--also``: the smaller file, measured the same way).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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
from streams.cli.replay import replay
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
            [
                sys.executable,
                str(REPO / "bench" / "gen_events.py"),
                "--events",
                str(n),
                "--seed",
                str(seed),
                "--out",
                str(path),
            ],
            check=True,
        )
    return path


def run(code: str, path: Path) -> list[str]:
    cmd = [sys.executable, "-c", code, str(path)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return done.stdout.split()


def measure(n_events: int, runs: int, seed: int) -> dict[str, Any]:
    """``runs`` fresh processes over an ``n_events`` file, each the baseline then the engine."""
    path = events_file(n_events, seed)
    base_rates, engine_rates, rss_mb = [], [], []
    accepted = 0
    for i in range(runs):
        n, seconds = run(BASELINE, path)
        base_rates.append(int(n) / float(seconds))
        n, seconds, maxrss_kb, accepted_s = run(ENGINE, path)
        engine_rates.append(int(n) / float(seconds))
        rss_mb.append(int(maxrss_kb) / 1024)
        accepted = int(accepted_s)
        print(
            f"{n_events:,} events, run {i + 1}: json.loads {base_rates[-1]:,.0f}/s, engine {engine_rates[-1]:,.0f}/s, "
            f"peak {rss_mb[-1]:,.0f} MiB",
            file=sys.stderr,
        )
    return {"accepted": accepted, "baseline": base_rates, "engine": engine_rates, "peak_mib": rss_mb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 events, one run")
    parser.add_argument("--events", type=int, default=None, help="events in the file (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=None, help="fresh processes (default 3; quick 1)")
    parser.add_argument(
        "--also", type=int, default=None, help="a second file's size, run after (default 300,000; quick: none; 0: none)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results here (default: stdout)")
    args = parser.parse_args(argv)
    n_events = args.events or (100_000 if args.quick else 1_000_000)
    runs = args.runs or (1 if args.quick else 3)
    also = args.also if args.also is not None else (0 if args.quick else 300_000)

    document: dict[str, Any] = {
        "events": n_events,
        **measure(n_events, runs, args.seed),
        "runs": runs,
        "pinned": shutil.which("taskset") is not None,
        "quick": args.quick,
    }
    if also:
        document["also"] = {"events": also, **measure(also, runs, args.seed)}
    text = json.dumps(document, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
