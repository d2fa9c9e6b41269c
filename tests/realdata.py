"""The real data sets the tests read, shipped compressed under ``tests/data/`` (sources and
licences: ``tests/data/README.md``).

:func:`real_data` gives a plain file's path: a ``.gz`` file is unpacked once into
``tests/data/.unpacked/`` (ignored by git) and unpacked again only when the archive changes, so
tests and the commands they run read ordinary files.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
UNPACKED = DATA / ".unpacked"


def real_data(name: str) -> Path:
    """``tests/data/<name>``: the file itself, or its unpacked copy when only
    ``<name>.gz`` is shipped."""
    plain = DATA / name
    if plain.exists():
        return plain
    packed = DATA / f"{name}.gz"
    if not packed.exists():
        raise FileNotFoundError(f"no real data set {name!r}: neither {plain} nor {packed} exists")
    target = UNPACKED / name
    if not target.exists() or target.stat().st_mtime < packed.stat().st_mtime:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        with gzip.open(packed, "rb") as source, partial.open("wb") as sink:
            shutil.copyfileobj(source, sink)
        partial.replace(target)  # atomic: a concurrent reader sees the old file or the whole new one
    return target
