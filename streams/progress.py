"""The progress line of the long commands (``ccmon replay``, ``report``, ``rebuild``,
``simulate`` and every ``ccmon source``): one line on stderr, rewritten in place (``\\r``) at
most every :data:`INTERVAL` seconds, shown when ``--progress`` asks for it or, without the
flag, when stderr is a terminal; :meth:`Progress.done` ends it with a newline.

Each command words its own line (a function returning the text, called only when the line is
due); the mechanics are here once. This module imports nothing of ccmon, so that the command
line (:mod:`streams.cli`) and the sources it runs (:mod:`streams.sources`) both use it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

#: Seconds between two rewrites of the line (unless forced).
INTERVAL = 0.5


def wanted(flag: bool | None, stream: IO[str] | None = None) -> bool:
    """Whether to show progress: ``--progress`` / ``--no-progress`` (``flag``), else whether
    ``stream`` (stderr) is a terminal."""
    if flag is not None:
        return bool(flag)
    return (stream if stream is not None else sys.stderr).isatty()


def percent(done: float, total: float) -> str:
    """``done`` of ``total`` as `` 42.0%`` (five characters and the sign; a total of 0 counts as 1)."""
    return f"{100 * done / (total if total > 0 else 1):5.1f}%"


class Progress:
    """One progress line on ``stream`` (stderr by default), when ``enabled``."""

    def __init__(self, enabled: bool, stream: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        #: When the work started (:meth:`rate`); a command may restart it for a new phase.
        self.started = time.monotonic()
        self._last = 0.0

    def rate(self, count: float) -> float:
        """``count`` per second since :attr:`started`."""
        return count / max(time.monotonic() - self.started, 1e-9)

    def update(self, line: Callable[[], str], force: bool = False) -> None:
        """Rewrite the line with ``line()``, unless it was written less than :data:`INTERVAL`
        seconds ago (``force``: write it anyway)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < INTERVAL:
            return
        self._last = now
        self.stream.write("\r" + line())
        self.stream.flush()

    def done(self, line: Callable[[], str] | None = None) -> None:
        """End the line: written a last time with ``line()`` when given, then a newline."""
        if not self.enabled:
            return
        if line is not None:
            self.update(line, force=True)
        self.stream.write("\n")
        self.stream.flush()
