"""The repository stands alone: a clone with nothing beside it has every file its tests,
benchmarks, deployment files and code read (the spec under docs/, golden cases under
tests/golden/, real data under tests/data/)."""

from __future__ import annotations

import re
from pathlib import Path

from harness.paths import REPO
from realdata import DATA, real_data

CHECKED = (
    "kpi_core",
    "streams",
    "tests",
    "bench",
    "deploy",
    "Makefile",
    ".ci",
    "pyproject.toml",
    "Dockerfile",
    "docker-compose.yml",
)
#: A path that leaves the repository for a sibling ``shared`` directory.
OUTSIDE = re.compile(
    r"""\.\./shared|parents?\[\d\]\s*(/\s*"\.\."\s*)?/\s*"shared"|\.parent\s*/\s*"shared"|"\.\."\s*/\s*"shared\""""
)


def _files() -> list[Path]:
    out: list[Path] = []
    for name in CHECKED:
        path = REPO / name
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out += [
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix in {".py", ".sh", ".toml", ".yml", ".yaml", ".json", ""}
                and "__pycache__" not in p.parts
                and ".unpacked" not in p.parts
            ]
    return out


def test_nothing_reads_outside_the_repository() -> None:
    offenders = []
    for path in _files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        offenders += [
            f"{path.relative_to(REPO)}:{n}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)
        ]
    assert offenders == []


def test_the_checker_finds_an_outside_path() -> None:
    up = ".." + "/"  # written apart, so that this file itself holds no outside path
    for line in (
        'DATA = REPO.parent / "shared" / "data"',
        f"cat {up}shared/spec/EVENTS.md",
        'Path(__file__).resolve().parents[2] / ".." / "shared" / "golden"',
    ):
        assert OUTSIDE.search(line), line


def test_every_data_set_named_in_the_readme_is_shipped() -> None:
    readme = (DATA / "README.md").read_text()
    shipped = sorted(
        str(p.relative_to(DATA))
        for p in DATA.rglob("*")
        if p.is_file() and p.name != "README.md" and ".unpacked" not in p.parts
    )
    assert shipped, "tests/data is empty"
    for name in shipped:
        assert Path(name).name in readme, f"{name} is not described (source, licence) in tests/data/README.md"
    for spec in ("EVENTS.md", "KPIS.md", "METRICS.md"):
        assert (REPO / "docs" / spec).is_file()


def test_real_data_unpacks_the_compressed_sets() -> None:
    path = real_data("pbxware_queue_log_2018/queue_log.csv")
    assert path.read_bytes().count(b"\n") >= 1000
    assert (
        real_data("itsm_incident_log/incident_event_log.zip") == DATA / "itsm_incident_log" / "incident_event_log.zip"
    )
