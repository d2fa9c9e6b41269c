"""The whole benchmark suite (issue #8) in one command: ``make bench`` (or ``--quick``).

1. Picks the Python: the benchmarks need the ``bench`` extra of pyproject.toml (Quix
   Streams, whose orjson is newer than the project's pin allows to assume); when the current
   interpreter lacks it, a ``bench/.venv`` is made with ``--system-site-packages`` (it sees
   ccmon and its dependencies as installed) and the extra is installed there, so the
   project's own environment is never changed. Every script then runs on that Python.
2. Starts Kafka and Redis with ``deploy/local/services.sh up`` when they do not answer
   (idempotent; it never stops them, nor anything it did not start).
3. Runs each script ``--runs`` times (bench_engine: one call, ``--runs`` fresh processes),
   each writing JSON under ``bench/out/suite-<stamp>/``.
4. Writes ONE dated section: machine, versions, commands, the median (min-max) of the runs,
   targets met or missed. A full run becomes docs/BENCHMARKS.md's "Latest full run" and the
   run it replaces moves to the top of docs/BENCHMARKS_HISTORY.md (newest first); a quick run
   (not a measurement) goes to the top of the history file.

    python bench/run_all.py                 # full sizes, 3 runs each (long: an hour or more)
    python bench/run_all.py --quick         # small sizes, 1 run each (a few minutes)
    python bench/run_all.py --quick --runs 2 --only latency peers --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

VENV = common.BENCH / ".venv"
SCRIPTS = ("engine", "pipeline", "latency", "peers")


# -- the Python ----------------------------------------------------------------------------------
def bench_requirements() -> list[str]:
    data = tomllib.loads((common.REPO / "pyproject.toml").read_text())
    return list(data["project"]["optional-dependencies"]["bench"])


def has_extra() -> bool:
    try:
        import bytewax  # noqa: F401
        import pathway  # noqa: F401
        import psutil  # noqa: F401
        import quixstreams  # noqa: F401
    except ImportError:
        return False
    return True


def reexec_in_venv(argv: list[str]) -> None:
    """Make bench/.venv with the ``bench`` extra if needed and run this script there."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"making {VENV} (--system-site-packages) for the bench extra", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import quixstreams, bytewax, pathway, psutil"], capture_output=True)
    if check.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *bench_requirements()],
            check=True,
        )
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])


# -- versions and machine --------------------------------------------------------------------------
def versions(redis_url: str) -> dict[str, str]:
    import re

    import redis

    out: dict[str, str] = {"Python": sys.version.split()[0]}
    pom = (common.REPO / "deploy" / "local" / "kafka-pom.xml").read_text()
    match = re.search(r"<kafka.version>(.*)</kafka.version>", pom)
    out["Apache Kafka"] = (match.group(1) if match else "?") + " (KRaft, deploy/local)"
    try:
        out["Redis"] = str(redis.Redis.from_url(redis_url).info("server")["redis_version"])
    except Exception:
        out["Redis"] = "?"
    for dist in (
        "faust-streaming",
        "quixstreams",
        "bytewax",
        "pathway",
        "aiokafka",
        "kafka-python",
        "confluent-kafka",
        "redis",
        "orjson",
    ):
        label = "redis-py" if dist == "redis" else dist
        try:
            out[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[label] = "not installed"
    return out


# -- running ---------------------------------------------------------------------------------------
def run_script(name: str, args: list[str], out: Path, log: Path) -> dict[str, Any] | None:
    cmd = [sys.executable, str(common.BENCH / f"bench_{name}.py"), *args, "--json", str(out)]
    print(f"$ {' '.join(cmd[1:])}", file=sys.stderr)
    with open(log, "ab") as handle:
        done = subprocess.run(cmd, cwd=common.REPO, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not out.exists():
        print(f"  FAILED ({done.returncode}); log: {log}", file=sys.stderr)
        return None
    return dict(json.loads(out.read_text()))


def values(runs: list[dict[str, Any]], *path: str | int) -> list[float]:
    """Every run's number at ``path`` (runs lacking it skipped)."""
    found = []
    for run in runs:
        node: Any = run
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                node = None
                break
        if isinstance(node, int | float) and node == node:  # not NaN
            found.append(float(node))
    return found


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# -- the section -------------------------------------------------------------------------------------
def section(
    stamp: str,
    quick: bool,
    runs: int,
    results: dict[str, list[dict[str, Any]]],
    machine: dict[str, str],
    vers: dict[str, str],
    commands: list[str],
    failed: list[str],
) -> str:
    c = common.cell
    lines: list[str] = []
    add = lines.append
    mode = " (quick mode: small sizes, proves the scripts; not a measurement)" if quick else ""
    add(f"### Benchmark suite — {stamp}{mode}")
    add("")
    add(
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM, Linux {machine['kernel']} "
        f"(`{machine['host']}`; the cores are shared with other work, so numbers are noisy: compare ratios taken "
        "in the same run)."
    )
    add("Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + f" (Python: `{sys.executable}`).")
    add("")
    add(
        f"Command: `{'make bench' + (' BENCH_ARGS=--quick' if quick else '')}` = `python bench/run_all.py"
        f"{' --quick' if quick else ''}`, which ran:"
    )
    add("")
    add("```")
    lines.extend(commands)
    add("```")
    add("")
    add(f"Each value: median (min-max) of {runs} run{'s' if runs > 1 else ''}.")
    if failed:
        add(f"**Failed runs** (see bench/out/suite-*/): {', '.join(failed)}.")
    add("")

    pipe = results.get("pipeline", [])
    lat = results.get("latency", [])
    peers = results.get("peers", [])
    eng = results.get("engine", [])
    one = values(pipe, "one_worker", "steady")
    two = values(pipe, "two_workers", "steady")
    raw = values(pipe, "ceiling", "raw")
    ratio = [r["one_worker"]["steady"] / r["ceiling"]["raw"] for r in pipe if "one_worker" in r and "ceiling" in r]
    scaling = [
        r["two_workers"]["steady"] / r["one_worker"]["steady"] for r in pipe if "two_workers" in r and "one_worker" in r
    ]
    p99 = values(lat, "p99_ms")
    scrape = {
        q: [r["seconds"] for run in pipe for r in run.get("scrape", []) if r["queues"] == q and not r.get("day")]
        for q in (10, 100, 1000)
    }
    mem = [[d["per_queue_bytes"] for d in run["memory"]["days"]] for run in pipe if "memory" in run]
    growth = [m[-1] / m[-2] for m in mem if len(m) >= 2]

    def peer_rates(name: str) -> list[float]:
        return values(peers, "systems", name, "rate")

    ccmon_rate = peer_rates("ccmon")
    peer_names = {
        "Faust": ("faust", "faust-single"),
        "Quix Streams": ("quix", "quix-envelope"),
        "Bytewax": ("bytewax", "bytewax-envelope", "bytewax-2w"),
        "Pathway": ("pathway", "pathway-envelope", "pathway-2t"),
    }

    mismatches = sum(len(s.get("agreement", {}).get("mismatches", [])) for r in peers for s in r["systems"].values())
    compared = sum(s.get("agreement", {}).get("compared", 0) for r in peers for s in r["systems"].values())

    def verdict(value: float | None, ok: bool) -> str:
        return "n/a" if value is None else ("**met**" if ok else "missed")

    add("**Targets (issue #16, engine v2; the 20,000 events/s of issue #8 before it)**")
    add("")
    add("| target | measured | |")
    add("| --- | --- | --- |")
    m = med(one)
    add(f"| one worker >= 50,000 events/s end to end | {c(one, ',.0f')} events/s | {verdict(m, (m or 0) >= 50000)} |")
    m = med(ratio)
    add(f"| ratio to the ceiling, aim 0.5 | {c(ratio, '.4f')} | {verdict(m, (m or 0) >= 0.5)} |")
    m = med(p99)
    add(
        f"| p99 event-to-metric latency <= 250 ms at 5,000 events/s | {c(p99, ',.0f', ' ms')} | "
        f"{verdict(m, (m or 1e9) <= 250)} |"
    )
    m = med(scrape[100])
    add(
        f"| /metrics <= 25 ms at 100 queues | {c([s * 1000 for s in scrape[100]], ',.0f', ' ms')} | "
        f"{verdict(m, (m or 1e9) <= 0.025)} |"
    )
    m = med(scrape[1000])
    add(
        f"| /metrics <= 200 ms at 1,000 queues | {c([s * 1000 for s in scrape[1000]], ',.0f', ' ms')} | "
        f"{verdict(m, (m or 1e9) <= 0.2)} |"
    )
    if eng:
        e = eng[0]
        m = med(e["engine"])
        add(
            f"| engine alone >= 100,000 events/s ({e['events']:,} events) | {c(e['engine'], ',.0f')} events/s | "
            f"{verdict(m, (m or 0) >= 100_000)} |"
        )
        bounds = {300_000: 150, 1_000_000: 300}  # MiB
        sizes = [e, e["also"]] if "also" in e else [e]
        for size in sizes:
            bound = bounds.get(size["events"])
            if bound is not None:
                m = med(size["peak_mib"])
                add(
                    f"| engine peak memory <= {bound} MiB for {size['events']:,} events | "
                    f"{c(size['peak_mib'], ',.0f', ' MiB')} | {verdict(m, (m or 1e9) <= bound)} |"
                )
    m = med(growth)
    last = [x[-1] / 1024 for x in mem]
    add(
        f"| Redis memory per queue bounded (KB) | {c(last, ',.0f', ' KiB')} at steady state; last day / day before "
        f"{c(growth, '.3f')} | {verdict(m, (m or 9) <= 1.05)} |"
    )
    every_peer = tuple(n for names in peer_names.values() for n in names)
    ahead = [
        r["systems"]["ccmon"]["rate"]
        > max([x for n in every_peer if (x := r["systems"].get(n, {}).get("rate"))] or [0])
        for r in peers
        if r["systems"].get("ccmon", {}).get("rate")
    ]
    bests = []
    for peer, names in peer_names.items():
        pairs = [
            (r["systems"]["ccmon"]["rate"], max(rates))
            for r in peers
            if r["systems"].get("ccmon", {}).get("rate")
            and (rates := [x for n in names if (x := r["systems"].get(n, {}).get("rate"))])
        ]
        if pairs:
            bests.append(
                f"best {peer} {c([p for _, p in pairs], ',.0f')} (ccmon / {peer} {c([a / p for a, p in pairs], '.2f')})"
            )
    add(
        f"| ccmon ahead of every peer on events/s | ccmon {c(ccmon_rate, ',.0f')}; {'; '.join(bests)} | "
        f"{verdict(1.0 if ahead else None, bool(ahead) and all(ahead))} |"
    )
    add(
        f"| peers agree with ccmon on the values | {compared:,} values compared, {mismatches} mismatches | "
        f"{verdict(1.0 if compared else None, compared > 0 and mismatches == 0)} |"
    )
    add("")

    if eng:
        e = eng[0]
        ratios = [a / b for a, b in zip(e["engine"], e["baseline"], strict=True)]
        add(
            f"**2. Engine alone** (`bench_engine.py`: `ccmon replay` of a {e['events']:,}-event "
            "bench/gen_events.py file, "
            f"a fresh process per run{', pinned to one core' if e['pinned'] else ''}; {len(e['engine'])} "
            f"run{'s' if len(e['engine']) > 1 else ''})"
        )
        add("")
        add("| what | value |")
        add("| --- | --- |")
        add(f"| engine (parse, validate, fold, snapshot) | {c(e['engine'], ',.0f')} events/s |")
        add(f"| baseline `json.loads` per line, same file | {c(e['baseline'], ',.0f')} lines/s |")
        add(f"| engine / baseline | {c(ratios, '.3f')} |")
        add(f"| peak memory (max RSS) | {c(e['peak_mib'], ',.0f')} MiB |")
        if "also" in e:
            a = e["also"]
            add(f"| {a['events']:,} events: engine | {c(a['engine'], ',.0f')} events/s |")
            add(f"| {a['events']:,} events: peak memory (max RSS) | {c(a['peak_mib'], ',.0f')} MiB |")
        add("")
    if pipe:
        p = pipe[0]
        add(
            f"**1, 3, 5. Pipeline** (`bench_pipeline.py`: {p['events']:,} simulator events, {p['queues']} queues, "
            f"{p.get('messages', 0):,} envelopes of <= 100 on 4 partitions)"
        )
        add("")
        add("| what | value |")
        add("| --- | --- |")
        add(f"| ceiling: raw aiokafka `getmany`, no processing | {c(raw, ',.0f')} events/s |")
        add(f"| ceiling with `json.loads` per message | {c(values(pipe, 'ceiling', 'json'), ',.0f')} events/s |")
        add(f"| one worker, steady (10-90 % counted in Redis) | {c(one, ',.0f')} events/s |")
        add(f"| one worker, first to last event | {c(values(pipe, 'one_worker', 'first_to_last'), ',.0f')} events/s |")
        add(f"| one worker / ceiling | {c(ratio, '.4f')} |")
        peak = values(pipe, "one_worker", "worker_peak_mib")
        if peak:
            add(f"| one worker's peak memory (max RSS) | {c(peak, ',.0f', ' MiB')} |")
        redis_cpu = values(pipe, "one_worker", "redis", "cpu_us_per_event")
        if redis_cpu:
            add(f"| Redis CPU per event, one worker's run (`INFO cpu`) | {c(redis_cpu, ',.1f', ' us')} |")
            add(
                "| of which in scripts (`INFO commandstats`: `EVAL`, `EVALSHA`) | "
                f"{c(values(pipe, 'one_worker', 'redis', 'script_us_per_event'), ',.1f', ' us')} |"
            )
        add(f"| two workers, four partitions, steady | {c(two, ',.0f')} events/s |")
        add(f"| scaling: two / one | {c(scaling, '.2f')} |")
        add(
            "| every event shown on /metrics at the end | "
            f"{all(r['one_worker']['metrics_events'] >= r['events'] for r in pipe if 'one_worker' in r)} |"
        )
        for q in (10, 100, 1000):
            rows = [r for run in pipe for r in run.get("scrape", []) if r["queues"] == q and not r.get("day")]
            sizes = [r["bytes"] / 1024 for r in rows]
            if sizes:
                add(
                    f"| `/metrics`, {q:,} queues, all windows (median of 5 scrapes; quick 3) | "
                    f"{c([s * 1000 for s in scrape[q]], ',.0f', ' ms')}, {c(sizes, ',.0f', ' KiB')} |"
                )
        day_rows = [r for run in pipe for r in run.get("scrape", []) if r.get("day")]
        if day_rows:
            add(
                f"| `/metrics`, {day_rows[0]['queues']:,} queues, a simulated day written from midnight to 16:00 "
                "(median of 5 scrapes; quick 3) | "
                f"{c([r['seconds'] * 1000 for r in day_rows], ',.0f', ' ms')}, "
                f"{c([r['bytes'] / 1024 for r in day_rows], ',.0f', ' KiB')} |"
            )
        if "memory" in p:
            days = p["memory"]["days"]
            for i in range(len(days)):
                per_q = [run["memory"]["days"][i]["per_queue_bytes"] / 1024 for run in pipe if "memory" in run]
                all_keys = [run["memory"]["days"][i]["all_keys_bytes"] / 1024 / 1024 for run in pipe if "memory" in run]
                records = [
                    run["memory"]["days"][i]["kinds"].get("records", 0) / 1024 / 1024 for run in pipe if "memory" in run
                ]
                add(
                    f"| Redis, {p['memory']['queues']} queues, end of day {i + 1} ({days[i]['events_so_far']:,} events "
                    f"so far): per queue | {c(per_q, ',.1f', ' KiB')} (all keys "
                    f"{c(all_keys, ',.1f', ' MiB')}, of which "
                    f"records {c(records, ',.1f', ' MiB')}) |"
                )
        add("")
    if lat:
        x = lat[0]
        add(
            f"**4. Latency** (`bench_latency.py`: {x['rate_target']:,.0f} events/s for {x['seconds']:.0f} s after "
            f"{x['warmup']:.0f} s of warm-up, {x['queues']} simulated queues, 5 markers/s)"
        )
        add("")
        add("| what | value |")
        add("| --- | --- |")
        add(
            f"| rate achieved | {c(values(lat, 'rate_achieved'), ',.0f')} events/s; worker kept up: "
            f"{all(r['kept_up'] for r in lat)} |"
        )
        add(
            "| production -> /metrics (Redis commit + median scrape): p50 | "
            f"{c(values(lat, 'p50_ms'), ',.0f', ' ms')} |"
        )
        add(f"| p99 | {c(p99, ',.0f', ' ms')} |")
        add(f"| max | {c(values(lat, 'max_ms'), ',.0f', ' ms')} |")
        add(
            "| resolution (commit known within), median / max | "
            f"{c(values(lat, 'resolution_ms_median'), ',.0f', ' ms')} / "
            f"{c(values(lat, 'resolution_ms_max'), ',.0f', ' ms')} |"
        )
        add(f"| median /metrics scrape during the run | {c(values(lat, 'scrape_ms_median'), ',.0f', ' ms')} |")
        add(
            f"| cross-check, /metrics polled every {x['poll_interval']} s: p50 / p99 | "
            f"{c(values(lat, 'metrics_p50_ms'), ',.0f', ' ms')} / {c(values(lat, 'metrics_p99_ms'), ',.0f', ' ms')} |"
        )
        add(
            f"| CPU share during the run: worker / exporter | {c(values(lat, 'cpu_worker'), '.2f')} / "
            f"{c(values(lat, 'cpu_exporter'), '.2f')} of a core |"
        )
        add("")
    if peers:
        x = peers[0]
        add(
            f"**6. Peers on the same job** (`bench_peers.py`: {x['events']:,} simulator events, {x['outcomes']:,} call "
            f"outcomes, {x['queues']} queues, 00:00-15:00; SL and average wait per queue over 15 min at 15:00; "
            f"Faust hopping step {x['step']} s). Each peer reads its natural one event per message (keyed by queue, "
            "so neither needs to re-key) and the same envelopes as ccmon (Faust iterates each array; Quix splits it "
            "with `expand` and re-keys with `group_by` through its repartition topic); both keep their state's "
            "changelog topic, as by default (Faust in-memory store, Quix RocksDB). Bytewax and Pathway keep their "
            "state in memory only and commit no offsets; Bytewax reads each partition from offset 0 to its end (a "
            "replay, not a live consumer group) and its event clock closes the windows at the end of the input; "
            "Pathway's rate runs from its first commit's output to its last (autocommit every 100 ms). The peers "
            "compute these two KPIs only; ccmon computes every KPI of every event with durable state."
        )
        add("")
        add("| system | topic | events/s (first to last) | values vs ccmon |")
        add("| --- | --- | --- | --- |")
        labels = {
            "ccmon": ("ccmon worker (all KPIs)", "envelopes"),
            "ccmon-single": ("ccmon worker (all KPIs)", "one event/message"),
            "faust": ("Faust hopping table", "envelopes"),
            "faust-single": ("Faust hopping table", "one event/message"),
            "quix": ("Quix sliding window", "one event/message"),
            "quix-envelope": ("Quix sliding window (expand + group_by)", "envelopes"),
            "bytewax": ("Bytewax sliding window, 1 worker", "one event/message"),
            "bytewax-envelope": ("Bytewax sliding window, 1 worker", "envelopes"),
            "bytewax-2w": ("Bytewax sliding window, 2 workers", "one event/message"),
            "pathway": ("Pathway sliding window, 1 thread", "one event/message"),
            "pathway-envelope": ("Pathway sliding window, 1 thread", "envelopes"),
            "pathway-2t": ("Pathway sliding window, 2 threads", "one event/message"),
        }
        for name, (label, topic) in labels.items():
            if not any(name in r["systems"] for r in peers):
                continue
            errors = [r["systems"][name]["error"] for r in peers if "error" in r["systems"].get(name, {})]
            agree = [r["systems"][name].get("agreement") for r in peers if r["systems"].get(name, {}).get("agreement")]
            verdict_text = (
                "reference"
                if name == "ccmon"
                else (
                    f"{sum(a['compared'] for a in agree)} compared, "
                    f"{sum(len(a['mismatches']) for a in agree)} mismatches"
                    if agree
                    else "n/a"
                )
            )
            if errors:
                verdict_text += f"; failed: {errors[0]}"
            add(f"| {label} | {topic} | {c(peer_rates(name), ',.0f')} | {verdict_text} |")
        add("")
    add(
        "How each number is taken (details in each script's docstring): rates count events from the first "
        "one done to the last; ccmon's are counted in Redis every 0.1 s (the counters /metrics renders; a final "
        "scrape checks them). Workers join their group before the events are produced. Latency markers go to one "
        "partition; their commit is detected in Redis every 10 ms and a median scrape is added; /metrics polled "
        "every 0.5 s is the cross-check (polling it faster loads the 2-core machine). Redis memory: `MEMORY USAGE` "
        "of the prefix's keys at the end of each simulated day, written on an event-time clock, keys a live Redis "
        "would have expired by then removed by their own TTL. Peers: one process each, one after the other, same "
        "topics; they compute two KPIs from call outcome events (bench/peer_common.py), ccmon computes all."
    )
    add("")
    return "\n".join(lines) + "\n"


#: The page's heading above the suite's latest full run; the run it replaces moves to HISTORY.
LATEST = "## Latest full run"
#: A heading every section of the history file starts with (a run's own ``### `` heading).
SECTION = "### "


def section_end(lines: list[str], start: int) -> int:
    """The index of the first heading (``##`` or ``###``) after ``lines[start]``, else ``len(lines)``."""
    return next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("### ", "## "))), len(lines))


def insert_history(sections: list[str], path: Path) -> None:
    """Put ``sections`` (whole ``### `` sections, newest first) on top of the history file's runs,
    replacing a section with the same heading."""
    old = path.read_text() if path.exists() else "# Benchmark history\n\n"
    lines = old.splitlines(keepends=True)
    for text in reversed(sections):
        heading = text.splitlines()[0]
        same = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading.rstrip("\n")), None)
        if same is not None:
            del lines[same : section_end(lines, same)]
        at = next((i for i, line in enumerate(lines) if line.startswith(SECTION)), len(lines))
        block = text if text.endswith("\n\n") else text.rstrip("\n") + "\n\n"
        lines[at:at] = block.splitlines(keepends=True)
    path.write_text("".join(lines))


def write_section(text: str, path: Path | None = None, history: Path | None = None) -> Path:
    """Write a suite's section ``text`` (its first line the ``### Benchmark suite — <stamp>`` heading)
    and return the file written.

    A full run goes under :data:`LATEST` in docs/BENCHMARKS.md and the run it replaces moves, verbatim,
    to the top of docs/BENCHMARKS_HISTORY.md (newest first); the subject sections below it stay. A
    section with the same heading (``--render`` of the same suite) is replaced where it is. A quick
    run (not a measurement) goes to the top of the history file and leaves the latest full run alone."""
    path = path or common.REPO / "docs" / "BENCHMARKS.md"
    history = history or path.with_name("BENCHMARKS_HISTORY.md")
    heading = text.splitlines()[0]
    if "(quick mode" in heading:
        insert_history([text], history)
        return history
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    lines = old.splitlines(keepends=True)
    block = (text.rstrip("\n") + "\n\n").splitlines(keepends=True)
    same = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if same is not None:
        lines[same : section_end(lines, same)] = block
        path.write_text("".join(lines))
        return path
    top = next((i for i, line in enumerate(lines) if line.rstrip("\n") == LATEST), None)
    if top is None:  # a page without the heading yet: it goes above the first section, with the run
        at = next((i for i, line in enumerate(lines) if line.startswith(("## ", "### "))), len(lines))
        lines[at:at] = [LATEST + "\n", "\n", *block]
        path.write_text("".join(lines))
        return path
    start = top + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    runs = [i for i in range(start, end) if lines[i].startswith(SECTION)]
    previous = ["".join(lines[i : section_end(lines, i)]) for i in runs]
    if previous:
        insert_history(previous, history)
        lines[runs[0] : end] = block
    else:
        lines[end:end] = block if lines[end - 1].strip() == "" else ["\n", *block]
    path.write_text("".join(lines))
    return path


def render(out_dir: Path, write: bool) -> int:
    """The section again from a finished suite's JSON files (after changing this script)."""
    suite = json.loads((out_dir / "suite.json").read_text())
    results: dict[str, list[dict[str, Any]]] = {}
    for name in SCRIPTS:
        for path in sorted(out_dir.glob(f"{name}-*.json")):
            results.setdefault(name, []).append(json.loads(path.read_text()))
    text = section(
        suite["stamp"],
        suite["quick"],
        suite["runs"],
        results,
        suite["machine"],
        suite["versions"],
        suite["commands"],
        suite["failed"],
    )
    print(text)
    if write:
        print(f"written to {write_section(text).relative_to(common.REPO)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every script's --quick sizes")
    parser.add_argument("--runs", type=int, default=None, help="runs of each script (default 3; quick 1)")
    parser.add_argument("--only", nargs="*", choices=SCRIPTS, default=list(SCRIPTS))
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print the section, leave docs/BENCHMARKS.md and BENCHMARKS_HISTORY.md alone",
    )
    parser.add_argument("--no-venv", action="store_true", help="run on this Python even without the bench extra")
    parser.add_argument("--render", metavar="DIR", help="only re-render the section of bench/out/suite-* DIR")
    args = parser.parse_args(raw_argv)
    if args.render:
        return render(Path(args.render), not args.no_write)
    if not has_extra() and not args.no_venv:
        reexec_in_venv(raw_argv)
    runs = args.runs or (1 if args.quick else 3)
    started_services = common.ensure_services()
    _kafka, redis_url = common.services_env()
    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y-%m-%d %H:%M UTC")
    out_dir = common.OUT / f"suite-{now.strftime('%Y%m%dT%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    quick = ["--quick"] if args.quick else []
    results: dict[str, list[dict[str, Any]]] = {}
    commands: list[str] = []
    failed: list[str] = []
    for name in args.only:
        if name == "engine":
            script_args = [*quick, "--runs", str(runs)]
            repeat = 1
        else:
            script_args = list(quick)
            repeat = runs
        commands.append(
            f"python bench/bench_{name}.py {' '.join(script_args)}".rstrip() + (f"   # x{repeat}" if repeat > 1 else "")
        )
        for i in range(repeat):
            document = run_script(name, script_args, out_dir / f"{name}-{i + 1}.json", out_dir / f"{name}.log")
            if document is None:
                failed.append(f"{name} #{i + 1}")
            else:
                results.setdefault(name, []).append(document)
    machine, vers = common.machine(), versions(redis_url)
    suite = {
        "stamp": stamp,
        "quick": args.quick,
        "runs": runs,
        "commands": commands,
        "failed": failed,
        "machine": machine,
        "versions": vers,
    }
    (out_dir / "suite.json").write_text(json.dumps(suite, indent=1))
    text = section(stamp, args.quick, runs, results, machine, vers, commands, failed)
    print(text)
    (out_dir / "section.md").write_text(text)
    if not args.no_write:
        print(f"written to {write_section(text).relative_to(common.REPO)}", file=sys.stderr)
    if started_services:
        print(
            "(Kafka and Redis were started for this run and are left running: deploy/local/services.sh down "
            "stops them)",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
