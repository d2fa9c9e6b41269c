"""Test modules are imported by basename (pytest's default import mode; the only package
under tests/ is the harness, ``tests/harness/``): two files of the same name anywhere under
tests/ stop the whole collection. What test modules share comes from the harness, never from
another test module, and its primitives are written once."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from harness.paths import REPO, TESTS


def test_the_unit_tests_mirror_the_packages() -> None:
    """tests/unit/<package path>/ holds the unit tests of that package (tests/unit/streams/redis/:
    streams/redis/); tests/unit/repository/ those of the repository as a whole (its layout, that
    it stands alone). No test module sits loose in tests/unit/."""
    unit = TESTS / "unit"
    assert sorted(path.name for path in unit.glob("*.py")) == []
    folders = {path.parent.relative_to(unit) for path in unit.rglob("test_*.py")}
    not_packages = [
        str(folder)
        for folder in folders
        if folder != Path("repository") and not (REPO / folder / "__init__.py").is_file()
    ]
    assert not_packages == []
    assert {Path("kpi_core"), Path("streams")} <= folders


def test_no_two_test_modules_share_a_basename() -> None:
    names = Counter(path.name for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)
    assert [name for name, count in names.items() if count > 1] == []


#: ``from test_x import ...``, ``import test_x``, ``from conftest import ...``: a test module
#: importing another test module (or a conftest) instead of ``tests/harness/``.
_TEST_MODULE_IMPORT = re.compile(
    r"^\s*(?:from\s+(?:test_\w+|conftest)\s+import\b|import\s+(?:test_\w+|conftest)\b)", re.M
)
#: The harness's primitives, each defined once, at module level (``tests/harness/``).
_SHARED_PRIMITIVES = re.compile(r"^def\s+(free_port|stop|samples_of|entity_key|delete_topics|create_topics)\s*\(", re.M)


def _sources() -> dict[str, str]:
    return {
        str(path.relative_to(TESTS)): path.read_text(encoding="utf-8")
        for path in sorted(TESTS.rglob("*.py"))
        if "__pycache__" not in path.parts and "data" not in path.parts
    }


def test_no_test_module_imports_another() -> None:
    found = [
        f"{name}: {match.group(0).strip()}"
        for name, text in _sources().items()
        for match in _TEST_MODULE_IMPORT.finditer(text)
    ]
    assert found == [], "import it from tests/harness/ instead (or make it a fixture in tests/conftest.py)"


def test_the_harness_primitives_are_defined_once() -> None:
    found = Counter(match.group(1) for text in _sources().values() for match in _SHARED_PRIMITIVES.finditer(text))
    assert {name: count for name, count in found.items() if count > 1} == {}


# -- imports between ccmon's own modules -------------------------------------------------------
PACKAGES = ("kpi_core", "streams")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ccmon modules it imports, at module level, inside functions and under
    ``if TYPE_CHECKING:`` alike (a cycle through a function-level import is still a cycle:
    neither module can be understood, or moved, without the other). ``from pkg import name``
    counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    import ast

    paths = {_module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base)
        graph[module] = {target for target in targets if target in paths and target != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_no_import_cycle_in_kpi_core_and_streams() -> None:
    graph = import_graph()
    assert len(graph) > 30 and sum(map(len, graph.values())) > 100  # the modules and their imports were read
    assert import_cycles(graph) == []


def test_kpi_core_imports_nothing_of_streams() -> None:
    found = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if module.startswith("kpi_core")
        for target in targets
        if target.split(".")[0] == "streams"
    )
    assert found == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
