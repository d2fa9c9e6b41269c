"""The exporter's HTTP server under load: idle connections, and 50 scrapers at once.

A real ``ccmon exporter`` process (fixed clock) over the shared Redis, with ``--queues``
queues of state written through the worker's BatchProcessor (every window populated: the
state of ``bench_pipeline``'s scrape measurement), then:

1. **idle connections** -- ``--idle`` TCP connections opened and held without a byte sent,
   then ``/livez`` and ``/healthz`` asked ``--probes`` times each on fresh connections: the
   probes' latency, failures, and the exporter's thread count before and with them;
2. **scrapers** -- ``--clients`` threads scraping ``/metrics`` back to back for
   ``--seconds`` on keep-alive connections with ``Accept-Encoding: gzip`` (as Prometheus
   does): requests, failures (an error, a timeout or a status other than 200), p50/p99/max.

``--root DIR`` runs the exporter from another checkout (e.g. the old server:
``git archive <commit> | tar -x -C DIR``) for a before/after; the load side is this one.
Prints a JSON document (``--json FILE`` too). Used by tests/integration/test_http_server.py
with smaller numbers. Run alone (it loads both cores)::

    python bench/bench_http.py                      # 100 queues, 500 idle, 50 clients x 10 s
    python bench/bench_http.py --root /tmp/old      # the same against an older checkout
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

AT = 1795168800.0  # 2026-11-20T10:00:00Z, the exporter's fixed clock


def build_state(redis_url: str, queues: int, at: float = AT) -> str:
    """A fresh prefix holding ``queues`` queues of state (60 events each over the last 6 h)."""
    from bench_pipeline import apply_events
    from gen_events import generate

    prefix = common.unique(f"bench-http{queues}")
    apply_events(redis_url, prefix, list(generate(queues * 60, queues, seed=3, start=int(at) - 6 * 3600)), at)
    return prefix


@contextmanager
def exporter(
    redis_url: str, prefix: str, log: Path, root: Path = common.REPO, at: float = AT
) -> Iterator[subprocess.Popen[bytes]]:
    """``ccmon exporter`` from checkout ``root`` on a free port (``process.port``), stopped after."""
    port = common.free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root)}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *common.exporter_args(redis_url, prefix, port, f"fixed:{at}")],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,
        )
    process.port = port  # type: ignore[attr-defined]
    try:
        common.wait_http(port)
        yield process
    finally:
        common.stop([process])


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise ValueError(f"no Threads: line for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def _get(port: int, path: str, timeout: float) -> tuple[int, float]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        conn.close()


def idle_run(
    port: int,
    pid: int | None = None,
    connections: int = 500,
    probes: int = 20,
    paths: tuple[str, ...] = ("/livez", "/healthz"),
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Hold ``connections`` idle connections and probe ``paths``: latencies and failures."""
    out: dict[str, Any] = {"connections": connections}
    before = threads_of(pid) if pid is not None else None
    held: list[socket.socket] = []
    started = time.perf_counter()
    try:
        for _ in range(connections):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        out["open_seconds"] = time.perf_counter() - started
        time.sleep(0.5)  # let the server accept them all
        if pid is not None:
            out["threads_before"], out["threads_held"] = before, threads_of(pid)
        for path in paths:
            times, failures, statuses = [], 0, set()
            for _ in range(probes):
                try:
                    status, seconds = _get(port, path, timeout)
                    statuses.add(status)
                    times.append(seconds)
                except OSError:
                    failures += 1
            out[path] = {
                "probes": probes,
                "failures": failures,
                "statuses": sorted(statuses),
                "p50": percentile(times, 0.5),
                "max": max(times) if times else float("nan"),
            }
        out["still_open"] = sum(1 for sock in held if _open(sock))
    finally:
        for sock in held:
            sock.close()
    return out


def _open(sock: socket.socket) -> bool:
    """Whether the server has not closed ``sock`` (nothing to read, no EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def scrape_run(
    port: int,
    clients: int = 50,
    seconds: float = 10.0,
    path: str = "/metrics",
    gzip: bool = True,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """``clients`` threads requesting ``path`` back to back for ``seconds``."""
    latencies: list[float] = []
    failures: list[str] = []
    sizes: list[int] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    headers = {"Accept-Encoding": "gzip"} if gzip else {}

    def client() -> None:
        conn: http.client.HTTPConnection | None = None
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                ok, body = False, b""
                failure = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                    conn = None
            else:
                failure = f"HTTP {response.status}"
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                    sizes.append(len(body))
                else:
                    failures.append(failure)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, name=f"scraper-{i}", daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + timeout + 10)
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "seconds": seconds,
        "gzip": gzip,
        "requests": len(latencies) + len(failures),
        "ok": len(latencies),
        "failures": len(failures),
        "failure_kinds": sorted(set(failures))[:5],
        "per_second": len(latencies) / wall,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies) if latencies else float("nan"),
        "bytes": statistics.median(sizes) if sizes else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--idle", type=int, default=500, help="idle connections held (default 500)")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-gzip", action="store_true", help="scrapers do not send Accept-Encoding: gzip")
    parser.add_argument(
        "--root", type=Path, default=common.REPO, help="the checkout whose exporter runs (default: this one)"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    _kafka, redis_url = common.services_env()
    prefix = build_state(redis_url, args.queues)
    result: dict[str, Any] = {"queues": args.queues, "root": str(args.root), "machine": common.machine()}
    try:
        with exporter(redis_url, prefix, common.OUT / f"{prefix}-exporter.log", root=args.root) as process:
            port = process.port  # type: ignore[attr-defined]
            result["idle"] = idle_run(port, process.pid, args.idle, args.probes)
            print(f"idle: {result['idle']}", file=sys.stderr)
            result["scrape"] = scrape_run(port, args.clients, args.seconds, gzip=not args.no_gzip)
            print(f"scrape: {result['scrape']}", file=sys.stderr)
    finally:
        common.clear_prefix(redis_url, prefix)
    common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
