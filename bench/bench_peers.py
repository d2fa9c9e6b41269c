"""Peers on the same job: service level and average wait per queue over 15 minutes.

The same simulated events (``streams.sim``, ``--queues`` queues from 00:00 to 15:00
UTC of one day; the end instant ``at`` is 15:00, a busy hour) are written to two fresh
4-partition topics: JSON-array **envelopes** of <= 100 events keyed by entity (ccmon's way,
``ccmon simulate --kafka``), and **one event per message** keyed by queue (the peers'
natural mode; keyed so that neither peer needs to re-key). Then, one after the other,
each reads a topic from the start:

* **ccmon**: one ``ccmon worker`` (clock fixed at ``at``), counted in Redis as in
  bench_pipeline, then ``ccmon_service_level_ratio`` and ``ccmon_average_wait_seconds``
  ``{window="15m"}`` read from the exporter's ``/metrics``. It computes every KPI of every
  event, not only these two;
* **Faust** (bench/peer_faust.py): a windowed table, hopping 900 s every ``--step`` s,
  in-memory store, on both topics;
* **Quix Streams** (bench/peer_quix.py): a sliding window of 900 s, on both topics (the
  envelopes split with ``expand`` and re-keyed by ``group_by``);
* **Bytewax** (bench/peer_bytewax.py): ``fold_window`` over a ``SlidingWindower`` (900 s
  every ``--step`` s) on an ``EventClock``, Kafka read to its end (``tail=False``), on both
  topics, one worker (``bytewax-2w``: two worker threads, one event per message);
* **Pathway** (bench/peer_pathway.py): ``windowby`` with ``pw.temporal.sliding`` (hop
  ``--step`` s, 900 s), ``pw.io.kafka.read`` in streaming mode, on both topics, one engine
  thread (``pathway-2t``: two, one event per message).

CPU: each system's process (and Kafka's and Redis's, from deploy/local's pid files) is
sampled every 0.1 s (psutil, user + system, every thread): ``cpu_first_to_last`` over the
interval the rate counts, ``cpu_total`` from the process start.

The peers compute only the two KPIs, from the call outcome events (bench/peer_common.py says
why that is the same computation on these events and how each definition was aligned). Each
reports events/s (every event of the topic read, first message to last; and between 10 %
and 90 %), and the values at ``at`` per queue, which must agree with ccmon's (service level
exactly, average wait to 1e-9 relative: sums in a different order).

    python bench/bench_peers.py            # ~150,000 events
    python bench/bench_peers.py --quick    # ~25,000 events
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import peer_common as pc
from bench_pipeline import DAY, sim_events


class CpuSampler:
    """CPU seconds (user + system, every thread; the peer's children included) of named processes,
    sampled every ``period`` s on ``time.perf_counter`` (CLOCK_MONOTONIC, the clock the peers'
    ``written_at`` uses)."""

    def __init__(self, pids: dict[str, int], period: float = 0.1) -> None:
        import threading

        import psutil

        self.procs = {}
        for name, pid in pids.items():
            try:
                self.procs[name] = psutil.Process(pid)
            except psutil.Error:
                continue
        self.period = period
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _cpu(proc: Any, children: bool) -> float | None:
        import psutil

        try:
            total = 0.0
            for p in [proc, *(proc.children(recursive=True) if children else [])]:
                times = p.cpu_times()
                total += times.user + times.system
            return total
        except psutil.Error:
            return None

    def sample(self) -> None:
        now = time.perf_counter()
        values = {name: self._cpu(proc, name == "process") for name, proc in self.procs.items()}
        self.samples.append((now, {k: v for k, v in values.items() if v is not None}))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, when: float, name: str) -> float | None:
        """The last sample of ``name`` at or before ``when``."""
        best = None
        for t, values in self.samples:
            if t > when:
                break
            if name in values:
                best = values[name]
        return best

    def between(self, start: float, end: float) -> dict[str, float]:
        out = {}
        for name in self.procs:
            a, b = self.at(start, name), self.at(end, name)
            if b is not None:
                out[name] = round(b - (a or 0.0), 3)
        return out


def service_pids() -> dict[str, int]:
    """The pids deploy/local/services.sh recorded for Kafka and Redis."""
    import os

    services = Path(os.environ.get("CCMON_SERVICES_DIR", str(common.REPO / ".services")))
    pids = {}
    for name in ("kafka", "redis"):
        try:
            pids[name] = int((services / name / f"{name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return pids


def with_ticks(events: list[dict[str, Any]], queues: list[str], at: float) -> list[dict[str, Any]]:
    """``events`` then one tick per queue at ``at - 1 ms`` (see bench/peer_quix.py)."""
    from streams.sim import format_ts

    ticks = [
        {
            "event_id": f"bench-tick-{q}",
            "type": "survey.response",
            "ts": format_ts(at - 0.001),
            "tenant": "default",
            "queue": q,
            "survey": "csat",
            "score": 5,
            "contact_id": f"bench-tick-{q}",
            "bench_tick": True,
        }
        for q in queues
    ]
    return events + ticks


def ccmon_run(kafka: str, redis_url: str, topic: str, n: int, at: float, log_dir: Path) -> dict[str, Any]:
    prefix = common.unique("bench-peers")
    clock = f"fixed:{at}"
    worker = common.ccmon(
        common.worker_args(kafka, redis_url, topic, prefix, prefix, clock), log_dir / f"{prefix}-worker.log"
    )
    port = common.free_port()
    exporter = common.ccmon(common.exporter_args(redis_url, prefix, port, clock), log_dir / f"{prefix}-exporter.log")
    sampler = CpuSampler({"process": worker.pid, **service_pids()})
    try:
        called = time.perf_counter()
        rates = common.drain_rate(common.Counted(redis_url, prefix), n, timeout=3600, processes=[worker])
        cpu_total = sampler.at(time.perf_counter(), "process")
        cpu = sampler.between(called + rates["to_first"], called + rates["seconds"])
        common.wait_http(port)
        text = common.scrape(port).decode()
    finally:
        sampler.stop()
        common.stop([worker, exporter])
        common.clear_prefix(redis_url, prefix)
        common.delete_topics(kafka, [f"{topic}-dlq", f"{prefix}-__assignor-__leader"])
    kpis: dict[str, dict[str, float | None]] = {}
    for metric, name in (("ccmon_service_level_ratio", "sl"), ("ccmon_average_wait_seconds", "avg_wait")):
        for labels, value in common.sample_values(text, metric).items():
            label = common.labels_of(labels)
            if label.get("window") == "15m" and label.get("queue") != "_all":
                kpis.setdefault(label["queue"], {"sl": None, "avg_wait": None})[name] = value
    return {
        "rate": rates["first_to_last"],
        "steady": rates["steady"],
        "kpis": kpis,
        "seconds": rates["seconds"] - rates["to_first"],
        "cpu_first_to_last": cpu,
        "cpu_total": cpu_total,
    }


def peer_run(script: str, args: list[str], timeout: float, log: Path) -> dict[str, Any]:
    import json

    out = common.OUT / f"{common.unique(Path(script).stem)}.json"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, str(common.BENCH / script), *args, "--out", str(out)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=common.REPO,
            start_new_session=True,
        )
    sampler = CpuSampler({"process": process.pid, **service_pids()})
    try:
        deadline = time.monotonic() + timeout
        while not out.exists():
            if process.poll() is not None:
                raise RuntimeError(f"{script} exited with {process.returncode} before its result (log: {log})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{script}: no result after {timeout:.0f} s (log: {log})")
            time.sleep(0.05)
        result = dict(json.loads(out.read_text()))
        end = result.get("written_at", time.perf_counter())
        result["cpu_first_to_last"] = sampler.between(end - result["seconds"], end)
        result["cpu_total"] = sampler.at(end, "process")
        return result
    finally:
        sampler.stop()
        common.stop([process], timeout=20)
        out.unlink(missing_ok=True)


def agreement(
    reference: dict[str, dict[str, float | None]], other: dict[str, dict[str, float | None]]
) -> dict[str, Any]:
    """Queues compared, mismatches (a value on one side only, SL not equal, average wait
    beyond 1e-9 relative), largest differences."""
    mismatches: list[str] = []
    compared = 0
    worst = {"sl": 0.0, "avg_wait": 0.0}
    empty = {"sl": None, "avg_wait": None}
    for queue in sorted(set(reference) | set(other)):
        mine, theirs = reference.get(queue, empty), other.get(queue, empty)
        for name in ("sl", "avg_wait"):
            a, b = mine.get(name), theirs.get(name)
            if a is None and b is None:
                continue
            compared += 1
            if a is None or b is None:
                mismatches.append(f"{queue} {name}: {a} vs {b}")
                continue
            diff = abs(a - b)
            worst[name] = max(worst[name], diff)
            if diff > 1e-9 * max(1.0, abs(a)):
                mismatches.append(f"{queue} {name}: {a!r} vs {b!r}")
    return {
        "compared": compared,
        "mismatches": mismatches,
        "max_diff_sl": worst["sl"],
        "max_diff_avg_wait": worst["avg_wait"],
    }


def quix_available() -> bool:
    return available("quixstreams")


def available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a minute or two")
    parser.add_argument("--queues", type=int, default=None, help="simulated queues (default 60; quick 10)")
    parser.add_argument("--step", type=int, default=60, help="Faust hopping step, seconds (default 60)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=[
            "ccmon",
            "ccmon-single",
            "faust",
            "faust-single",
            "quix",
            "quix-envelope",
            "bytewax",
            "bytewax-envelope",
            "bytewax-2w",
            "pathway",
            "pathway-envelope",
            "pathway-2t",
        ],
    )
    parser.add_argument("--json", default=None, help="write the results here (default: stdout)")
    args = parser.parse_args(argv)
    queues = args.queues or (10 if args.quick else 60)
    skip = set(args.skip)
    if args.quick:
        skip.add("ccmon-single")  # ~10,000 messages/s at best: long, and not ccmon's mode
    common.ensure_services()
    kafka, redis_url = common.services_env()
    log_dir = common.OUT / "logs"
    from streams.sim import default_queues

    at = DAY + 15 * 3600.0
    names = [spec.name for spec in default_queues(queues)]
    events = with_ticks(sim_events(10**9, queues, start=DAY, hours=15), names, at)
    n = len(events)
    outcomes = sum(1 for e in events if e["type"] in pc.OUTCOMES)
    print(f"{n:,} events ({outcomes:,} call outcomes), {queues} queues, at 15:00", file=sys.stderr)
    run = common.unique("bench-peers")
    envelope_topic, single_topic = f"{run}-env", f"{run}-single"
    result: dict[str, Any] = {
        "events": n,
        "outcomes": outcomes,
        "queues": queues,
        "at": at,
        "step": args.step,
        "quick": args.quick,
        "systems": {},
    }
    groups: list[str] = []
    try:
        result["messages_envelope"] = common.produce_envelopes(kafka, envelope_topic, events)
        common.produce_single(kafka, single_topic, events, key_field="queue")
        timeout = 600 if args.quick else 3600
        plan: list[tuple[str, str, str]] = [
            ("ccmon", "ccmon", envelope_topic),
            ("faust", "faust", envelope_topic),
            ("faust-single", "faust", single_topic),
            ("quix", "quix", single_topic),
            ("quix-envelope", "quix", envelope_topic),
            ("ccmon-single", "ccmon", single_topic),
            ("bytewax", "bytewax", single_topic),
            ("bytewax-envelope", "bytewax", envelope_topic),
            ("bytewax-2w", "bytewax", single_topic),
            ("pathway", "pathway", single_topic),
            ("pathway-envelope", "pathway", envelope_topic),
            ("pathway-2t", "pathway", single_topic),
        ]
        for name, system, topic in plan:
            if name in skip:
                continue
            if system == "quix" and not quix_available():
                result["systems"][name] = {"error": "quixstreams is not installed (pip install -e '.[bench]')"}
                continue
            if system in ("bytewax", "pathway") and not available(system):
                result["systems"][name] = {"error": f"{system} is not installed"}
                continue
            started = time.monotonic()
            try:
                if system == "ccmon":
                    outcome = ccmon_run(kafka, redis_url, topic, n, at, log_dir)
                else:
                    group = common.unique(f"bench-{name}")
                    groups.append(group)
                    common_args = [
                        "--kafka",
                        kafka,
                        "--topic",
                        topic,
                        "--group",
                        group,
                        "--expect",
                        str(n),
                        "--at",
                        str(at),
                    ]
                    mode = "single" if topic == single_topic else "envelope"
                    if system == "faust":
                        outcome = peer_run(
                            "peer_faust.py", [*common_args, "--step", str(args.step)], timeout, log_dir / f"{group}.log"
                        )
                    elif system == "bytewax":
                        workers = ["--workers", "2"] if name.endswith("-2w") else []
                        outcome = peer_run(
                            "peer_bytewax.py",
                            [*common_args, "--step", str(args.step), *workers],
                            timeout,
                            log_dir / f"{group}.log",
                        )
                    elif system == "pathway":
                        threads = ["--threads", "2"] if name.endswith("-2t") else []
                        outcome = peer_run(
                            "peer_pathway.py",
                            [*common_args, "--mode", mode, "--step", str(args.step), *threads],
                            timeout,
                            log_dir / f"{group}.log",
                        )
                    else:
                        outcome = peer_run(
                            "peer_quix.py",
                            [
                                *common_args,
                                "--mode",
                                mode,
                                "--ticks",
                                str(len(names)),
                                "--windowed",
                                str(outcomes + len(names)),
                            ],
                            timeout,
                            log_dir / f"{group}.log",
                        )
            except Exception as exc:  # one system failing must not hide the others
                result["systems"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{name}: FAILED {exc}", file=sys.stderr)
                continue
            outcome["wall_seconds"] = time.monotonic() - started
            outcome["topic"] = "envelopes" if topic == envelope_topic else "single"
            result["systems"][name] = outcome
            print(f"{name}: {outcome['rate']:,.0f} events/s", file=sys.stderr)
        reference = result["systems"].get("ccmon", {}).get("kpis")
        for name, outcome in result["systems"].items():
            if reference is not None and "kpis" in outcome and name != "ccmon":
                outcome["agreement"] = agreement(reference, outcome["kpis"])
                print(
                    f"{name} vs ccmon: {outcome['agreement']['compared']} values, "
                    f"{len(outcome['agreement']['mismatches'])} mismatches",
                    file=sys.stderr,
                )
        if reference is not None:
            result["queues_with_values"] = sum(1 for v in reference.values() if v["sl"] is not None)
    finally:
        topics = [envelope_topic, single_topic, f"{envelope_topic}-dlq", f"{single_topic}-dlq"]
        try:
            import kafka as kafka_lib

            admin = kafka_lib.KafkaAdminClient(bootstrap_servers=kafka)
            topics += [t for t in admin.list_topics() if any(g in t for g in groups)]
            admin.close()
        except Exception as exc:
            print(f"could not list the peers' internal topics: {exc}", file=sys.stderr)
        common.delete_topics(kafka, topics)
    for outcome in result["systems"].values():
        if not math.isfinite(outcome.get("rate", 0.0)):
            outcome["rate"] = None
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
