"""The compiled engine (setup.py, mypyc) is the interpreted one, faster: the same replay output
and the very same state, object for object (an ``int`` stays an ``int``: mypyc turns what a
``float`` variable holds into a float, which would lose exactness beyond 2^53 and change what
the store keeps; kpi_core/state.py, ``Amount``).

The interpreted side runs from a copy of ``kpi_core`` and ``streams`` without the compiled
modules, in a fresh interpreter; the compiled side from the repository. In CI the build must
have compiled the engine (deploy/local/install.sh installs mypy first), so a failed build
cannot pass unnoticed as a slower, interpreted run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness.paths import REPO

from kpi_core.native import compiled

#: Replays a file, prints its output and a digest of the whole MemoryState: every bucket,
#: live set, counter and record, each value with its type.
DIGEST = r"""
import hashlib, io, marshal, sys
from kpi_core.config import Config
from kpi_core.native import compiled
from streams.cli import replay as replay_module

engines = []
offline_engine = replay_module.offline_engine
replay_module.offline_engine = lambda config: engines.append(offline_engine(config)) or engines[-1]
result = replay_module.replay(sys.argv[1], Config(), None)

def canon(o):
    if isinstance(o, dict):
        return sorted((repr(k), canon(v)) for k, v in o.items())
    if isinstance(o, (list, tuple)):
        return [canon(x) for x in o]
    if isinstance(o, set):
        return sorted(repr(x) for x in o)
    return (type(o).__name__, repr(o))

store = engines[0].store
state = [canon(getattr(store, name)) for name in ("_fine", "_coarse", "_totals", "_live", "_counts", "_series")]
records = canon({key: marshal.loads(value[0]) for key, value in store._records.items()})
print(compiled(), result.accepted, result.duplicates, sorted(result.rejected.items()))
print(hashlib.sha256(repr((state, records)).encode()).hexdigest())
"""


def _run(root: Path, events: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", DIGEST, str(events)], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


@pytest.mark.skipif(not compiled(), reason="the engine is not compiled here (setup.py: no mypy or no C compiler)")
def test_the_compiled_engine_keeps_what_the_interpreted_one_keeps(tmp_path: Path) -> None:
    events = tmp_path / "day.jsonl"
    day = [
        "--start",
        "2026-12-01T08:00:00Z",
        "--hours",
        "6",
        "--queues",
        "4",
        "--seed",
        "7",
        "--late-share",
        "0.05",
        "--duplicate-share",
        "0.05",
    ]
    day += ["--malformed-share", "0.01", "--quiet"]
    subprocess.run(
        [sys.executable, "-m", "streams.cli", "simulate", "--out", str(events), *day],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    pure = tmp_path / "pure"
    for package in ("kpi_core", "streams"):
        shutil.copytree(REPO / package, pure / package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    native = _run(REPO, events)
    interpreted = _run(pure, events)
    assert native[0].startswith("True ") and interpreted[0].startswith("False ")
    assert int(native[0].split()[1]) > 10_000  # a real day was applied
    assert native[0].split(" ", 1)[1] == interpreted[0].split(" ", 1)[1]
    assert native[1] == interpreted[1]


def test_ci_runs_the_compiled_engine() -> None:
    """CI installs with mypy and a C compiler (deploy/local/install.sh): the engine it tests is
    the compiled one that production runs."""
    if os.environ.get("CI") != "true":
        pytest.skip("outside CI the interpreted engine is allowed (no C compiler)")
    assert compiled(), "CI=true but the engine is not compiled: see the install log for 'ccmon: ...'"
