"""The build of ccmon (everything else is in pyproject.toml): the engine's hot modules compiled
to C extensions by mypyc, next to their sources.

The engine is bound by the interpreter's bytecode (docs/BENCHMARKS.md): mypyc compiles the
same typed Python to C, with the same behaviour (tests/unit/kpi_core/test_native.py checks the
compiled engine against the interpreted one, byte for byte). Python imports a compiled
module before its ``.py``; ``kpi_core.native.compiled()`` says which one runs, and the worker
logs it at start.

``CCMON_NATIVE`` chooses: ``auto`` (default) compiles when mypyc and a C compiler are at hand
and otherwise warns and installs the pure-Python modules, which work the same, only slower;
``1`` requires the compiled build (a failure stops the install); ``0`` never compiles.
``deploy/local/install.sh`` installs the pinned mypy first (``--no-build-isolation``).
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: The modules compiled, in one group (they call each other natively; the group's shared
#: library is ``kpi_core/compiled__mypyc``, inside the package, so whatever finds kpi_core finds it). Each one must stay
#: compilable: no multiple inheritance but from ``trait`` classes (kpi_core/engine/base.py),
#: no surrogate in a string literal, nothing but definitions in a class body.
NATIVE = [
    "kpi_core/engine/__init__.py",
    "kpi_core/engine/agents.py",
    "kpi_core/engine/base.py",
    "kpi_core/engine/calls.py",
    "kpi_core/engine/customers.py",
    "kpi_core/engine/surveys.py",
    "kpi_core/engine/tickets.py",
    "kpi_core/events.py",
    "kpi_core/state.py",
    "kpi_core/windows.py",
]

MODE = os.environ.get("CCMON_NATIVE", "auto")
if MODE not in ("auto", "0", "1"):
    sys.exit(f"setup.py: CCMON_NATIVE must be auto, 0 or 1, got {MODE!r}")


def _warn(message: str) -> None:
    print(f"ccmon: {message}; the engine runs interpreted (the same results, slower)", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """``build_ext`` that, in ``auto`` mode, installs without the compiled modules when they
    cannot be built (no C compiler, no Python headers) instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            if MODE == "1":
                raise
            _warn(f"the compiled engine could not be built ({type(exc).__name__}: {exc})")


def ext_modules() -> list:
    if MODE == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if MODE == "1":
            raise
        _warn("mypyc (mypy) is not installed, so the engine is not compiled")
        return []
    try:
        return mypycify(NATIVE, opt_level="3", debug_level="0", group_name="kpi_core.compiled")
    except (Exception, SystemExit) as exc:  # mypyc reports a type error by exiting
        if MODE == "1":
            raise
        _warn(f"mypyc could not compile the engine ({type(exc).__name__}: {exc})")
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
