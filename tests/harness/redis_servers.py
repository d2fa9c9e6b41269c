"""Redis for a test of its own: a private ``redis-server`` (:class:`RedisServer`), a private
3-primary Redis Cluster (:func:`redis_cluster`), and the clean-up of a key prefix on the shared
Redis (:func:`delete_prefix`). The fixtures over them are in ``tests/conftest.py`` (``own_redis``,
``cluster``, ``redis_prefix``)."""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.processes import free_port


def delete_prefix(client: Any, prefix: str) -> None:
    """Delete every key under ``<prefix>:`` (SCAN, in batches of 500)."""
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


class RedisServer:
    """``redis-server`` on a free port, persisting every write to its AOF before answering
    (``appendfsync always``), so a SIGKILL loses nothing it acknowledged
    (``test_aof_always_keeps_every_acknowledged_batch_through_sigkill_mid_write``). ``options``:
    more command-line options (``--maxmemory-policy``, ``allkeys-lru``); ``fsync`` picks another
    policy, to show what the test catches."""

    def __init__(self, directory: Path, *options: str, fsync: str = "always") -> None:
        self.dir = directory
        self.options = options
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        with (self.dir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.dir),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    self.fsync,
                    "--save",
                    "",
                    *self.options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:  # not listening yet, or still loading its AOF
                pass
            assert self.process.poll() is None, (self.dir / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.1)
        client.close()

    def kill(self) -> None:
        """SIGKILL: an outage that gives Redis no chance to write anything more."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def shutdown(self) -> None:
        """SIGTERM, at the end of a test."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def free_node_port(taken: set[int]) -> int:
    """A port whose cluster bus port (+10000) is free too."""
    rng = random.Random()
    while True:
        port = rng.randrange(21000, 45000)
        if {port, port + 10000} & taken:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        taken |= {port, port + 10000}
        return port


@contextlib.contextmanager
def redis_cluster(root: Path) -> Iterator[list[int]]:
    """Three ``redis-server --cluster-enabled yes`` nodes under ``root``, joined into a
    cluster of 3 primaries (no replicas) in state ``ok``; their ports. Stopped on leaving."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.fail("redis-server and redis-cli are needed (deploy/local/services.sh installs them)")
    taken: set[int] = set()
    ports = [free_node_port(taken) for _ in range(3)]
    procs = []
    for port in ports:
        node = root / str(port)
        node.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--logfile",
                    "redis.log",
                ],
                cwd=node,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        for port in ports:
            _wait_ping(cli, port, root / str(port) / "redis.log")
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert create.returncode == 0, create.stdout + create.stderr
        deadline = time.monotonic() + 30
        while (
            b"cluster_state:ok"
            not in subprocess.run([cli, "-p", str(ports[0]), "cluster", "info"], capture_output=True).stdout
        ):
            assert time.monotonic() < deadline, "the cluster never reached cluster_state:ok"
            time.sleep(0.2)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def _wait_ping(cli: str, port: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while subprocess.run([cli, "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, (
            f"redis-server on {port} did not start: {log.read_text()[-2000:] if log.exists() else ''}"
        )
        time.sleep(0.1)
