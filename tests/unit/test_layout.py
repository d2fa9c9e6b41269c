"""Test modules are imported by basename (pytest's default import mode; the only package
under tests/ is the harness, ``tests/harness/``): two files of the same name anywhere under
tests/ stop the whole collection. What test modules share comes from the harness, never from
another test module, and its primitives are written once."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename() -> None:
    names = Counter(path.name for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)
    assert [name for name, count in names.items() if count > 1] == []


#: ``from test_x import ...``, ``import test_x``, ``from conftest import ...``: a test module
#: importing another test module (or a conftest) instead of ``tests/harness/``.
_TEST_MODULE_IMPORT = re.compile(r"^\s*(?:from\s+(?:test_\w+|conftest)\s+import\b|import\s+(?:test_\w+|conftest)\b)", re.M)
#: The harness's primitives, each defined once, at module level (``tests/harness/``).
_SHARED_PRIMITIVES = re.compile(r"^def\s+(free_port|stop|samples_of|entity_key|delete_topics|create_topics)\s*\(", re.M)


def _sources() -> dict[str, str]:
    return {str(path.relative_to(TESTS)): path.read_text(encoding="utf-8")
            for path in sorted(TESTS.rglob("*.py")) if "__pycache__" not in path.parts and "data" not in path.parts}  # fmt: skip


def test_no_test_module_imports_another() -> None:
    found = [f"{name}: {match.group(0).strip()}" for name, text in _sources().items()
             for match in _TEST_MODULE_IMPORT.finditer(text)]  # fmt: skip
    assert found == [], "import it from tests/harness/ instead (or make it a fixture in tests/conftest.py)"


def test_the_harness_primitives_are_defined_once() -> None:
    found = Counter(match.group(1) for text in _sources().values() for match in _SHARED_PRIMITIVES.finditer(text))
    assert {name: count for name, count in found.items() if count > 1} == {}
