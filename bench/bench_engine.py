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

    python bench/bench_engine.py --events 300000 --breakdown   # where the memory is, one run
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


BREAKDOWN = """
import json, sys
from bench.bench_engine import breakdown
print(json.dumps(breakdown(sys.argv[1])))
"""


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _deep_size(root: object, seen: set[int]) -> int:
    """``sys.getsizeof`` of ``root`` and of every container, key and value under it (once each)."""
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
    return total


def breakdown(path: str) -> dict[str, object]:
    """One replay of ``path`` in this process: RSS (MiB) after the imports, after reading the
    file, every 60,000 events and at the end, and what the MemoryState holds at the end (MiB,
    ``sys.getsizeof`` sums; a numpy array by its buffer)."""
    import resource

    import kpi_core.engine
    import kpi_core.kpis  # noqa: F401  (what a replay imports, before the first point)
    from kpi_core import state as state_module
    from kpi_core.config import Config
    from streams.cli import replay as replay_module

    points: list[tuple[str, float]] = [("imports", _rss_mib())]
    stores: list[state_module.MemoryState] = []
    read_kept = replay_module.read_kept
    maintain = state_module.MemoryState.maintain
    calls = [0]

    def reading(*args: object, **kwargs: object) -> object:
        result = read_kept(*args, **kwargs)  # type: ignore[arg-type]
        points.append(("file read", _rss_mib()))
        return result

    def upkeep(self: state_module.MemoryState, *args: float) -> None:
        if not stores:
            stores.append(self)
        calls[0] += 1
        if calls[0] % 3 == 0:  # replay's upkeep runs every 20,000 events
            points.append((f"{calls[0] * replay_module.MAINTAIN_EVERY:,} events", _rss_mib()))
        maintain(self, *args)

    replay_module.read_kept = reading  # type: ignore[assignment]
    state_module.MemoryState.maintain = upkeep  # type: ignore[method-assign,assignment]
    try:
        replay_module.replay(path, Config(), None)
    finally:
        replay_module.read_kept = read_kept
        state_module.MemoryState.maintain = maintain  # type: ignore[method-assign]
    points.append(("end", _rss_mib()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the sizing below
    store = stores[0]
    seen: set[int] = set()
    mib = 1 << 20
    holders: dict[str, float] = {}
    ids = store._seen
    arrays = sum(a.nbytes for a in (ids._keys, ids._hours) if a is not None)
    holders["seen ids"] = (arrays + _deep_size(ids._new, seen) + _deep_size(ids._held, seen)) / mib
    records = store._records
    groups = records._groups.values()
    holders["records"] = sum(_deep_size(g.blobs, seen) + _deep_size(g.written, seen) for g in groups) / mib
    for name in ("fine", "coarse", "totals", "live", "counts", "series"):
        holders[name] = _deep_size(getattr(store, "_" + name), seen) / mib
    return {
        "rss_mib": dict(points),
        "peak_mib": peak,
        "holders_mib": {name: round(value, 1) for name, value in holders.items()},
        "sizes": store.sizes(),
    }


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
    parser.add_argument(
        "--breakdown", action="store_true", help="one replay: RSS along the way and the store's holders at the end"
    )
    args = parser.parse_args(argv)
    n_events = args.events or (100_000 if args.quick else 1_000_000)
    runs = args.runs or (1 if args.quick else 3)
    also = args.also if args.also is not None else (0 if args.quick else 300_000)
    if args.breakdown:
        cmd = [sys.executable, "-c", BREAKDOWN, str(events_file(n_events, args.seed))]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "0", *cmd]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
        text = json.dumps(json.loads(done.stdout), indent=2)
        if args.json:
            Path(args.json).write_text(text + "\n")
        else:
            print(text)
        return 0

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
