"""streams/redis/ without a Redis: the Lua scripts are package files (sent as they are, shipped
in the wheel), and the figures the Redis side shares with kpi_core come from kpi_core (bucket
retention, the scrape's live-set queries), not from a second copy."""

from __future__ import annotations

import fnmatch
import math
import tomllib
from importlib import resources

import redis
from harness.paths import REPO

from kpi_core.config import Config, QueueConfig, TenantConfig, Window
from kpi_core.engine import CALLBACKS, TICKETS, WAITING, Engine
from kpi_core.kpis import live_bounds
from kpi_core.state import MemoryState
from streams.redis import scripts
from streams.redis.state import RedisState

ROOT = REPO
SCRIPTS = {
    "apply": "APPLY_LUA",
    "windows": "WINDOWS_LUA",
    "live": "LIVE_LUA",
    "retire": "RETIRE_LUA",
    "retire_tenants": "RETIRE_TENANTS_LUA",
}


def test_each_script_is_its_file_as_it_is() -> None:
    lua_dir = resources.files("streams.redis").joinpath("lua")
    assert sorted(p.name for p in lua_dir.iterdir()) == sorted(f"{name}.lua" for name in SCRIPTS)
    for name, constant in SCRIPTS.items():
        text = lua_dir.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        assert getattr(scripts, constant) == text, name
        assert text.startswith("-- "), f"{name}.lua: its header says its KEYS, ARGV and reply"


def test_the_scripts_are_package_data() -> None:
    """A wheel (the Dockerfile's ``pip install .``) carries every ``.lua`` file: each matches
    a ``[tool.setuptools.package-data]`` pattern of its package."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    files = sorted((ROOT / "streams" / "redis" / "lua").glob("*.lua"))
    assert len(files) == len(SCRIPTS)
    for path in files:
        shipped = False
        for package, patterns in package_data.items():
            base = ROOT / package.replace(".", "/")
            if base in path.parents:
                relative = path.relative_to(base).as_posix()
                shipped = shipped or any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)
        assert shipped, f"{path.relative_to(ROOT)} is not in [tool.setuptools.package-data]: {package_data}"


CONFIG = Config(
    windows=(Window("5m", 300), Window("2h", 7200)),
    repeat_caller_seconds=3 * 86400.0,
    defaults=QueueConfig(targets={"callback_seconds": 900.0}),
    tenants={"t": TenantConfig(queues={"q": QueueConfig(targets={"callback_seconds": 60.0})})},
)


def test_bucket_retention_has_one_definition() -> None:
    """The engine's upkeep (MemoryState.maintain) and the Redis TTLs keep buckets equally
    long: both read Config.fine_keep_seconds / coarse_keep_seconds."""
    assert (CONFIG.fine_keep_seconds, CONFIG.coarse_keep_seconds) == (7200 + 3600.0, 3 * 86400 + 3600.0)
    kept: list[tuple[float, float]] = []

    class Spy(MemoryState):
        def maintain(self, now: float, fine_keep_seconds: float, coarse_keep_seconds: float) -> None:
            kept.append((fine_keep_seconds, coarse_keep_seconds))
            super().maintain(now, fine_keep_seconds, coarse_keep_seconds)

    Engine(CONFIG, Spy(CONFIG.bucket_seconds, CONFIG.coarse_bucket_seconds)).maintain(1.7e9, retire=False)
    assert kept == [(CONFIG.fine_keep_seconds, CONFIG.coarse_keep_seconds)]
    # No connection is made: the client connects on its first command.
    store = RedisState(redis.Redis(host="127.0.0.1", port=1), CONFIG, prefix="layout")
    assert (store.fine_keep_seconds, store.coarse_keep_seconds) == kept[0]


def test_the_scrape_live_queries_are_kpi_cores() -> None:
    """kpi_core.kpis.live_bounds: the live-set summaries a snapshot reads of a queue, the
    ones streams.redis.read.SnapshotReader prefetches (each queue's own callback target)."""
    at = 1.7e9
    assert live_bounds(CONFIG, "t", "q", at) == (
        (WAITING, at - CONFIG.max_call_age_seconds, at),
        (CALLBACKS, -math.inf, at),
        (CALLBACKS, -math.inf, at - 60.0),
        (TICKETS, -math.inf, at),
    )
    assert live_bounds(CONFIG, "t", "other", at)[2] == (CALLBACKS, -math.inf, at - 900.0)


def test_a_record_version_is_the_sha1_of_its_stored_value() -> None:
    """What the batch script compares (``redis.sha1hex`` of the stored value) to tell that a
    record a batch read is unchanged; empty for a record that was absent."""
    import hashlib

    from streams.redis.keys import dump_record, record_version

    raw = dump_record({"offers": [[1.5, "e1", "q"]], "id": "\ud800"})
    assert record_version(raw) == hashlib.sha1(raw).hexdigest().encode()
    assert record_version(raw.decode("utf-8", "surrogatepass")) == record_version(raw)
    assert record_version(None) == b""
