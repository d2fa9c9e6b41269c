"""Shared fixtures.

Integration tests (marked ``integration``) use the real Apache Kafka and Redis: from
``KAFKA_BOOTSTRAP`` / ``REDIS_URL`` when both are set (``make test`` sets them), else started
once per session with ``deploy/local/services.sh up`` and left running (``services.sh down``,
or CI's own teardown, stops them). Unit tests never touch these fixtures.

The machinery the tests share (ports, processes, topics, private Redis servers, the pipeline,
the browser...) is the ``harness`` package (``tests/harness/``); the fixtures built on it that
several test modules use are here (``own_redis``, ``cluster``). A module-scoped fixture stays per
test module (``make test`` runs a module in one pytest-xdist process, ``--dist loadfile``), so a
module that uses ``cluster`` gets a cluster of its own.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.redis_servers import RedisServer, delete_prefix, redis_cluster

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
GOLDEN_EVENTS = GOLDEN / "basic.jsonl"
GOLDEN_EXPECTED = GOLDEN / "basic.expected.json"
SERVICES = REPO / "deploy" / "local" / "services.sh"

Labels = tuple[tuple[str, str], ...]

#: The customer key secret of every ccmon process the tests start (``ccmon worker`` and ``ccmon
#: rebuild`` require one, and must share it): their environments start from this process's.
TEST_CUSTOMER_KEY_SECRET = "tests-only-customer-key-" + "5eed" * 8
os.environ.setdefault("CCMON_CUSTOMER_KEY_SECRET", TEST_CUSTOMER_KEY_SECRET)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once when the compiled engine (setup.py, mypyc) is older than its sources:
    Python would import the compiled module and test the code as it was at the last install."""
    # A module's compiled code is in the group's library (kpi_core/compiled__mypyc*.so); its own
    # .so is a stub that a rebuild leaves as it was when the stub did not change.
    library = max((so.stat().st_mtime for so in (REPO / "kpi_core").glob("compiled__mypyc*.so")), default=0.0)
    stale = [
        str(source.relative_to(REPO))
        for source in sorted((REPO / "kpi_core").rglob("*.py"))
        for compiled in source.parent.glob(f"{source.stem}.cpython-*.so")
        if source.stat().st_mtime > max(compiled.stat().st_mtime, library)
    ]
    if stale:
        pytest.exit(
            f"the compiled engine is older than {', '.join(stale)}: run `make install` (or "
            "`python setup.py build_ext --inplace`), or delete the *.so files to test interpreted",
            returncode=4,
        )


def _parse_env(text: str) -> dict[str, str]:
    """``KEY=value`` lines (optionally ``export``-ed and shell-quoted)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if sep:
            parts = shlex.split(value) if value else [""]
            values[key.strip()] = parts[0] if parts else ""
    return values


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """``KAFKA_BOOTSTRAP`` and ``REDIS_URL`` of running services (started if need be)."""
    if os.environ.get("KAFKA_BOOTSTRAP") and os.environ.get("REDIS_URL"):
        return {"KAFKA_BOOTSTRAP": os.environ["KAFKA_BOOTSTRAP"], "REDIS_URL": os.environ["REDIS_URL"]}
    if not SERVICES.exists():
        pytest.fail(f"set KAFKA_BOOTSTRAP and REDIS_URL, or provide {SERVICES.relative_to(REPO)}")
    up = subprocess.run(["bash", str(SERVICES), "up"], cwd=REPO, capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        pytest.fail(f"services.sh up failed ({up.returncode}):\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
    env = subprocess.run(["bash", str(SERVICES), "env"], cwd=REPO, capture_output=True, text=True, timeout=60)
    values = _parse_env(env.stdout)
    missing = [k for k in ("KAFKA_BOOTSTRAP", "REDIS_URL") if not values.get(k)]
    if env.returncode != 0 or missing:
        pytest.fail(f"services.sh env gave no {', '.join(missing)}:\n{env.stdout}\n{env.stderr}")
    return {"KAFKA_BOOTSTRAP": values["KAFKA_BOOTSTRAP"], "REDIS_URL": values["REDIS_URL"]}


@pytest.fixture(scope="session")
def kafka_bootstrap(services: dict[str, str]) -> str:
    return services["KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def redis_url(services: dict[str, str]) -> str:
    return services["REDIS_URL"]


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A client of the session's Redis. Pair it with ``redis_prefix`` for a clean namespace."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {redis_url} does not answer: {exc}")
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: Any) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefix(redis_client, prefix)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private ``redis-server`` (AOF, ``appendfsync always``) the test may kill and restart."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """A private Redis Cluster of 3 primaries (no replicas): its nodes' ports."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as ports:
        yield ports


# -- the golden data set ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def golden_lines() -> list[bytes]:
    return [line for line in GOLDEN_EVENTS.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def golden_at() -> float:
    from kpi_core.events import parse_ts

    return parse_ts(json.loads(GOLDEN_EXPECTED.read_text())["at"])


@pytest.fixture(scope="session")
def golden_expected() -> dict[tuple[str, Labels], float]:
    """basic.expected.json as ``(metric, labels) -> value`` for tenant ``default``."""
    return expected_samples(json.loads(GOLDEN_EXPECTED.read_text()))


def expected_samples(doc: dict[str, Any], tenant: str = "default") -> dict[tuple[str, Labels], float]:
    """Keys are ``metric|window`` or ``metric|window|channel`` (``metric|`` for live ones)."""
    out: dict[tuple[str, Labels], float] = {}
    for queue, kpis in doc["kpis"].items():
        for key, value in kpis.items():
            name, window, *rest = key.split("|")
            labels: list[tuple[str, str]] = [("tenant", tenant), ("queue", queue)]
            if window:
                labels.append(("window", window))
            if rest:
                labels.append(("channel", rest[0]))
            out[(name, tuple(labels))] = float(value)
    return out
