"""``/metrics`` at 100 and 1,000 queues, before and after, in one run: HTTP and its phases.

The state is bench_http's (and bench_pipeline's scrape step's): ``--queues`` queues of
bench/gen_events.py events (60 each over the last 6 h) written through the worker's
BatchProcessor into the shared Redis under a fresh prefix, every window populated. The
clock is fixed at a whole minute that is not a quarter hour (``--at``), as bench_pipeline's
is: the 15m and 1h windows then have ragged fine-bucket edges, as a live scrape's have.

For every checkout in ``--root`` (default: this one; pass ``--root /work/main --root .`` for a
before/after) and every size:

1. **HTTP** -- a ``ccmon exporter`` from that checkout (fixed clock) per root, all running at
   once; ``--scrapes`` scrapes of ``/metrics`` each, the roots taking turns (so a noisy
   neighbour hits all of them alike); median (min-max) wall time and size. The bodies are
   compared between roots with the ``ccmon_exporter_scrape_seconds`` line left out: the
   document says whether they are byte-identical (every exporter runs with PYTHONHASHSEED=0:
   the ``*_by_channel`` families list a queue's channels in str-hash order).
2. **phases**, in a fresh process of that checkout (``PYTHONPATH=root``): the SnapshotReader's
   reads (Redis), ``kpis.snapshot`` (Python over the prefetched reads), ``exposition.render``,
   each as wall and CPU time (``*_cpu``; the read's wall time beyond its CPU time is Redis's),
   the read's window sums (``windows``: wall time of the window script's calls made alone and
   their parse, where the checkout's SnapshotReader has ``_prefetch_windows``; since the first
   call rides in the reader's last pipelined round trip, ``_call_windows``: the further ones
   only, the first is in ``read``), and the time the
   cyclic garbage collector ran in them, with the collector as that
   checkout's exporter runs it (streams.exporter.GC_PAUSE, where it exists); median of
   ``--repeat``. ``--py-spy DIR`` records a py-spy flame graph of that process
   (``DIR/<root>-<queues>.svg`` and a raw ``.txt``).

``--day``: the state is a simulated day instead (``streams.sim``: its traffic, agents and
breakdowns) from midnight to ``--at``, written on the event-time clock as a live worker
writes it, so the ``today`` window covers every bucket since midnight.

Prints a JSON document (``--json FILE`` too). Run alone (it loads both cores)::

    python bench/bench_scrape.py --root /work/main --root . --queues 100 1000
    python bench/bench_scrape.py --day --queues 20 100 --at 1795190400   # a day to 16:00
    python bench/bench_scrape.py --root /work/main --root . --queues 20 100 --busy 0.5 --skip-phases

``--busy F``: during the HTTP scrapes, another client keeps Redis running 15 ms scripts ``F`` of
the time, as a live worker's batch scripts do (~0.3-0.6 at 5,000 events/s): each round trip of
a scrape may then wait for one, as under load.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

#: 2026-11-20T10:07:00Z: a whole minute, not a quarter hour (ragged 15m / 1h edges).
AT = 1795168800.0 + 7 * 60


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _comparable(body: bytes) -> bytes:
    """The page without the one line that differs between any two scrapes (its own time)."""
    return b"\n".join(line for line in body.split(b"\n") if not line.startswith(b"ccmon_exporter_scrape_seconds "))


#: A worker's batch, as Redis sees it: one script that holds the server for ``ARGV[1]`` microseconds.
BUSY_LUA = """
local t = redis.call('TIME')
local stop = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
repeat t = redis.call('TIME') until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= stop
return 0
"""


@contextlib.contextmanager
def busy_redis(redis_url: str, share: float, batch_ms: float = 15.0) -> Any:
    """A client that keeps Redis running scripts of ``batch_ms`` for ``share`` of the time (a
    live worker's batch scripts at 5,000 events/s: ~15-20 ms each, Redis busy ~30-60 %), so
    that every round trip of a scrape may wait for one, as under load. Yields the counter of
    scripts run."""
    import threading

    import redis

    if share <= 0:
        yield [0]
        return
    client = redis.Redis.from_url(redis_url)
    script = client.register_script(BUSY_LUA)
    stop = threading.Event()
    ran = [0]
    pause = batch_ms / 1000 * (1 - share) / share

    def loop() -> None:
        while not stop.is_set():
            script(args=[int(batch_ms * 1000)])
            ran[0] += 1
            stop.wait(pause)

    thread = threading.Thread(target=loop, name="busy-redis", daemon=True)
    thread.start()
    try:
        yield ran
    finally:
        stop.set()
        thread.join()
        client.close()


def http_run(
    redis_url: str, prefix: str, roots: list[Path], at: float, scrapes: int, busy: float = 0.0
) -> dict[str, Any]:
    from bench_http import exporter

    with ExitStack() as stack:
        ports = []
        for root in roots:
            process = stack.enter_context(
                exporter(redis_url, prefix, common.OUT / f"{prefix}-{root.name}.log", root, at)
            )
            ports.append(process.port)  # type: ignore[attr-defined]
        bodies = [common.scrape(port) for port in ports]  # warm-up: imports, connections, caches
        stack.enter_context(busy_redis(redis_url, busy))
        times: list[list[float]] = [[] for _ in roots]
        for _ in range(scrapes):
            for i, port in enumerate(ports):
                started = time.perf_counter()
                bodies[i] = common.scrape(port)
                times[i].append(time.perf_counter() - started)
    digests = [hashlib.sha256(_comparable(body)).hexdigest() for body in bodies]
    if len(set(digests)) > 1 and os.environ.get("BENCH_SCRAPE_KEEP"):
        for root, body in zip(roots, bodies, strict=True):
            Path(os.environ["BENCH_SCRAPE_KEEP"], f"{root.name}-{len(body)}.txt").write_bytes(body)
    return {
        "roots": {
            str(root): {**spread(t), "bytes": len(body), "sha256": digest}
            for root, t, body, digest in zip(roots, times, bodies, digests, strict=True)
        },
        "identical": len(set(digests)) == 1,
    }


def phases(redis_url: str, prefix: str, at: float, repeat: int) -> dict[str, Any]:
    """In this process (whichever checkout PYTHONPATH names): the scrape's three phases, wall
    and CPU time (``*_cpu``: robust to a busy machine), with the garbage collector as that
    checkout's exporter runs it (paused by streams.exporter.GC_PAUSE where it exists)."""
    import redis

    import streams.exporter
    from kpi_core.config import Config
    from kpi_core.exposition import render
    from kpi_core.kpis import snapshot
    from streams.redis.state import RedisState

    pause = getattr(streams.exporter, "GC_PAUSE", None) or contextlib.nullcontext()
    config = Config()
    state = RedisState(redis.Redis.from_url(redis_url), config, prefix=prefix, clock=lambda: at)
    keys = ("read", "snapshot", "render", "total")
    out: dict[str, list[float]] = {key: [] for k in keys for key in (k, f"{k}_cpu")}
    out["gc"] = []
    out["windows"] = []
    collecting = [0.0, 0.0]  # started at, seconds in the collector this repeat
    # The window script's share of the read (wall: Redis summing buckets, and the replies'
    # parse): the calls made alone, timed where the checkout has them.
    in_windows = [0.0]
    reader_class = getattr(importlib.import_module("streams.redis.read"), "SnapshotReader", None)
    # Where the calls are made: _call_windows since the first call rides in the reader's
    # fourth round trip (its time is then in "read", not in "windows").
    timed = "_call_windows" if hasattr(reader_class, "_call_windows") else "_prefetch_windows"
    prefetch = getattr(reader_class, timed, None)
    if prefetch is not None:

        def timed_prefetch(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return prefetch(self, *args, **kwargs)
            finally:
                in_windows[0] += time.perf_counter() - started

        setattr(reader_class, timed, timed_prefetch)

    def gc_time(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            collecting[1] += time.perf_counter() - collecting[0]

    gc.callbacks.append(gc_time)
    samples = size = 0
    for i in range(repeat + 1):  # the first is a warm-up
        collecting[1] = in_windows[0] = 0.0
        with pause:
            t0, c0 = time.perf_counter(), time.process_time()
            reader = state.snapshot_reader(config, at)
            t1, c1 = time.perf_counter(), time.process_time()
            families = snapshot(config, reader, at)
            t2, c2 = time.perf_counter(), time.process_time()
            text = render(families)
            t3, c3 = time.perf_counter(), time.process_time()
            samples, size = sum(len(f.samples) for f in families), len(text)
            del reader, families, text  # freed inside the pause, as the exporter's are
        if i:
            for key, wall, cpu in (
                ("read", t1 - t0, c1 - c0),
                ("snapshot", t2 - t1, c2 - c1),
                ("render", t3 - t2, c3 - c2),
                ("total", t3 - t0, c3 - c0),
            ):
                out[key].append(wall)
                out[f"{key}_cpu"].append(cpu)
            out["gc"].append(collecting[1])
            out["windows"].append(in_windows[0])
    gc.callbacks.remove(gc_time)
    if prefetch is not None:
        setattr(reader_class, timed, prefetch)
    return {**{key: spread(values) for key, values in out.items()}, "samples": samples, "bytes": size}


def phases_run(
    redis_url: str, prefix: str, root: Path, at: float, repeat: int, py_spy: Path | None, label: str
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phases-of",
        prefix,
        "--at",
        repr(at),
        "--repeat",
        str(repeat),
    ]
    if py_spy is not None:
        py_spy.mkdir(parents=True, exist_ok=True)
        base = py_spy / label
        # raw (collapsed stacks) for reading with grep; the svg for a look
        cmd = [
            shutil.which("py-spy") or "py-spy",
            "record",
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            f"{base}.txt",
            "--",
            *cmd,
        ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, check=True)
    line = [text for text in done.stdout.splitlines() if text.startswith("{")][-1]  # py-spy prints its own lines
    result: dict[str, Any] = json.loads(line)
    return result


def day_events(queues: int, at: float) -> list[dict[str, Any]]:
    """The valid events of the simulated contact-center day (``streams.sim``, ``queues``
    queues, up to 200) that holds ``at``, from its midnight (UTC), in time order."""
    from streams.sim import SimParams, Simulator, default_queues

    params = SimParams(start=at - at % 86400, hours=24, queues=default_queues(queues), seed=7)
    return [r for _t, r in Simulator(params).stream() if isinstance(r, dict)]


def build_day_state(redis_url: str, queues: int, at: float) -> str:
    """A fresh prefix holding :func:`day_events` up to ``at``, written as a live worker
    writes them (the clock is each take's newest event time): the traffic of a real day,
    where ``today`` covers every bucket since midnight and a busy queue's buckets hold
    hundreds of fields."""
    from bench_pipeline import apply_events

    from kpi_core.events import parse_ts

    events = [e for e in day_events(queues, at) if parse_ts(e["ts"]) <= at]
    prefix = common.unique(f"bench-day{queues}")
    apply_events(redis_url, prefix, events, None)
    print(f"{queues} queues, a simulated day to {at:.0f}: {len(events):,} events written", file=sys.stderr)
    return prefix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, nargs="*", default=[100, 1000])
    parser.add_argument(
        "--root",
        type=Path,
        action="append",
        default=None,
        help="a checkout whose code is measured; repeat for a before/after (default: this one)",
    )
    parser.add_argument("--scrapes", type=int, default=7, help="HTTP scrapes per root and size (default 7)")
    parser.add_argument("--repeat", type=int, default=5, help="in-process snapshots per root and size (default 5)")
    parser.add_argument("--at", type=float, default=AT)
    parser.add_argument("--py-spy", type=Path, default=None, help="record py-spy profiles of the phases into DIR")
    parser.add_argument(
        "--day",
        action="store_true",
        help="state: a simulated day from midnight to --at (streams.sim, up to 200 queues) "
        "instead of 60 bench/gen_events.py events a queue over 6 h",
    )
    parser.add_argument(
        "--busy",
        type=float,
        default=0.0,
        help="during the HTTP scrapes, keep Redis running 15 ms scripts this share of the time "
        "(0-0.9; a live worker's batches at 5,000 events/s: ~0.3-0.6)",
    )
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-phases", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--phases-of", default=None, help=argparse.SUPPRESS)  # the child: one prefix, this checkout
    args = parser.parse_args(argv)
    _kafka, redis_url = common.services_env()
    if args.phases_of is not None:
        print(json.dumps(phases(redis_url, args.phases_of, args.at, args.repeat)))
        return 0
    from bench_http import build_state

    # The breakdown families list a queue's channels in set order, which follows str hashing:
    # two processes order them alike only with the same hash seed (every exporter started here).
    os.environ.setdefault("PYTHONHASHSEED", "0")
    roots = [root.resolve() for root in (args.root or [common.REPO])]
    if not 0 <= args.busy <= 0.9:
        parser.error(f"--busy must be in 0..0.9, got {args.busy}")
    result: dict[str, Any] = {
        "at": args.at,
        "busy": args.busy,
        "roots": [str(r) for r in roots],
        "machine": common.machine(),
        "sizes": [],
    }
    for queues in args.queues:
        prefix = build_day_state(redis_url, queues, args.at) if args.day else build_state(redis_url, queues, args.at)
        row: dict[str, Any] = {"queues": queues, "state": "day" if args.day else "gen_events"}
        try:
            if not args.skip_http:
                row["http"] = http_run(redis_url, prefix, roots, args.at, args.scrapes, args.busy)
                print(f"{queues} queues, HTTP: {json.dumps(row['http'])}", file=sys.stderr)
            row["phases"] = {}
            for n, root in enumerate([] if args.skip_phases else roots):
                label = f"{n}-{root.name}-{queues}"
                row["phases"][str(root)] = phases_run(redis_url, prefix, root, args.at, args.repeat, args.py_spy, label)
                print(f"{queues} queues, phases of {root}: {json.dumps(row['phases'][str(root)])}", file=sys.stderr)
        finally:
            common.clear_prefix(redis_url, prefix)
        result["sizes"].append(row)
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
