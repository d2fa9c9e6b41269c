"""The one progress line of the long commands (streams/progress.py): rewritten in place at most
every INTERVAL seconds unless forced, nothing when disabled, ended by a newline; shown by
default only on a terminal."""

from __future__ import annotations

import io

import pytest

from streams import progress
from streams.progress import Progress, percent, wanted


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_is_rate_limited_unless_forced_and_done_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 100.1, 100.2, 100.9, 101.0, 101.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    meter = Progress(True, stream)  # started at 100.0
    calls = []

    def line() -> str:
        calls.append(1)
        return f"step {len(calls)}"

    meter.update(line)  # 100.1: the first one shows
    meter.update(line)  # 100.2: too soon, not even formatted
    meter.update(line)  # 100.9: due
    meter.done(line)  # 101.0: forced, then the newline
    assert stream.getvalue() == "\rstep 1\rstep 2\rstep 3\n"
    assert len(calls) == 3


def test_disabled_writes_nothing() -> None:
    stream = io.StringIO()
    meter = Progress(False, stream)
    meter.update(lambda: "x", force=True)
    meter.done(lambda: "y")
    assert stream.getvalue() == ""


def test_shown_when_asked_else_on_a_terminal() -> None:
    assert wanted(True, io.StringIO()) and not wanted(False, _Tty())
    assert wanted(None, _Tty()) and not wanted(None, io.StringIO())


def test_rate_and_percent(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([10.0, 12.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    assert Progress(True, io.StringIO()).rate(500) == 250.0
    assert percent(1, 4) == " 25.0%" and percent(0, 0) == "  0.0%" and percent(30.0, 7200.0) == "  0.4%"
