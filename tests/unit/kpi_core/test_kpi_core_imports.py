"""kpi_core is pure domain logic: it imports nothing but the standard library and numpy (no
faust, redis, kafka or prometheus_client), so the same code runs everywhere."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
from harness.paths import REPO

KPI_CORE = REPO / "kpi_core"
ALLOWED_THIRD_PARTY = {"numpy"}
#: The one module that may import mypyc's class marks, optionally (kpi_core/native.py: without
#: ``mypy_extensions`` they mark nothing). The compiled engine's shared library is inside the
#: package (``kpi_core.compiled__mypyc``, setup.py).
OPTIONAL = {"native.py": {"mypy_extensions"}}
FILES = sorted(KPI_CORE.rglob("*.py"))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, including imports inside
    functions and ``if TYPE_CHECKING`` blocks. Relative imports resolve to kpi_core."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x
                found.append((node.lineno, "kpi_core"))
            elif node.module is not None:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            found.append((node.lineno, "<dynamic import>"))
    return found


def test_kpi_core_has_modules() -> None:
    assert {p.relative_to(KPI_CORE).as_posix() for p in FILES} >= {
        "events.py",
        "config.py",
        "windows.py",
        "state.py",
        "engine/__init__.py",
        "kpis.py",
    }


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(KPI_CORE).as_posix() for p in FILES])
def test_imports_only_stdlib_numpy_and_itself(path: Path) -> None:
    bad = []
    for lineno, module in imported_modules(path):
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or top == "kpi_core":
            continue
        if path.parent == KPI_CORE and top in OPTIONAL.get(path.name, set()):
            continue
        bad.append(f"{path.name}:{lineno}: import {module}")
    assert not bad, "kpi_core must import only the standard library and numpy:\n" + "\n".join(bad)


def test_the_checker_catches_a_bad_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import json\nfrom . import x\nimport numpy as np\n"
        "def f():\n    import redis\n    from prometheus_client import Gauge\n"
    )
    tops = [m.split(".")[0] for _line, m in imported_modules(sample)]
    assert tops == ["json", "kpi_core", "numpy", "redis", "prometheus_client"]
    assert [t for t in tops if t not in sys.stdlib_module_names and t not in {"numpy", "kpi_core"}] == [
        "redis",
        "prometheus_client",
    ]


def test_importing_kpi_core_loads_no_third_party_module() -> None:
    """At run time too: a fresh interpreter importing every kpi_core module loads nothing
    outside the standard library, numpy and kpi_core."""
    modules = ", ".join(
        ".".join(p.relative_to(KPI_CORE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in FILES
        if p.parent != KPI_CORE or p.stem != "__init__"
    )
    code = (
        "import sys\n"
        f"import {modules}\n"
        "extra = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)"
        f" - {{'kpi_core', 'numpy', '__main__', *{sorted(OPTIONAL['native.py'])!r}}})\n"
        "extra = [m for m in extra if not m.startswith('_sysconfigdata')]  # stdlib internals\n"
        "print(','.join(extra))\n"
    )
    proc = subprocess.run(
        # -S: no site hooks; numpy's own directory on the path (kpi_core imports it), nothing else.
        [
            sys.executable,
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(KPI_CORE.parent)!r})\n"
            f"sys.path.append({str(Path(numpy.__file__).parents[1])!r})\n{code}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


#: Calls that read or write files or the environment: kpi_core takes text and bytes, and the
#: callers in streams/ do the reading (streams/files.py for the configuration and mappings).
_IO_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "getenv", "listdir", "scandir"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(KPI_CORE)))
def test_kpi_core_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = [
        (node.lineno, name)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (name := getattr(node.func, "attr", getattr(node.func, "id", ""))) in _IO_CALLS
    ]
    environ = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "environ"]
    assert (calls, environ) == ([], [])


def test_the_configuration_is_parsed_from_bytes() -> None:
    from kpi_core.config import config_from_toml
    from kpi_core.errors import ConfigError

    config = config_from_toml(b'[tenants.acme]\ntimezone = "Europe/Berlin"\n', "acme.toml")
    assert str(config.timezone("acme")) == "Europe/Berlin"
    with pytest.raises(ConfigError, match=r"acme\.toml is not valid TOML"):
        config_from_toml(b"[tenants\n", "acme.toml")
    with pytest.raises(ConfigError, match=r"acme\.toml is not a TOML file \(not UTF-8 text at byte 0\)"):
        config_from_toml(b"\xff\xfe", "acme.toml")
