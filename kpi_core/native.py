"""The engine compiled by mypyc, and the marks its classes need.

``setup.py`` compiles the modules it lists (``NATIVE``) to C extensions when ccmon is installed
with mypy and a C compiler at hand; Python imports such an extension before its ``.py``. Both
give the same results (tests/unit/kpi_core/test_native.py); the compiled engine is faster
(docs/BENCHMARKS.md). :func:`compiled` says which runs.

A compiled class inherits from one class only, or from ``trait`` classes besides (the engine's
domain mixins, kpi_core/engine/base.py); an interpreted class may subclass it only where it is
marked ``mypyc_attr(allow_interpreted_subclasses=True)`` (the engine and MemoryState, which
tests and tools extend). Both marks come from ``mypy_extensions`` (installed with mypy); without
it they mark nothing, and nothing is compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType
from typing import Any

try:
    from mypy_extensions import mypyc_attr, trait
except ImportError:  # no mypy: the engine runs interpreted, nothing to mark

    def trait(cls: Any) -> Any:  # type: ignore[misc]
        return cls

    def mypyc_attr(*_attrs: str, **_kwattrs: object) -> Callable[[Any], Any]:  # type: ignore[misc]
        return lambda cls: cls


def compiled() -> bool:
    """True when the engine's modules are the compiled ones (all of setup.py's ``NATIVE`` are
    built together): mypyc makes a module's functions builtins, where Python makes functions."""
    from kpi_core import events

    return not isinstance(events.parse_ts, FunctionType)
