"""Simulated time: event timestamps (:func:`format_ts`), the ``--start`` instant (:func:`parse_start`)
and the pacing of simulated against wall-clock time (:class:`Pacer`)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

from kpi_core.errors import ConfigError, InvalidEventError
from kpi_core.events import parse_instant

_ts_cache: tuple[int, str] = (-1, "")  # the last whole second formatted (replaced atomically)


def format_ts(t: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-23T10:15:02.250Z``."""
    global _ts_cache
    sec, milli = divmod(round(t * 1000), 1000)
    cached = _ts_cache
    if cached[0] != sec:
        cached = _ts_cache = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{milli:03d}Z"


def ms(t: float) -> float:
    """``t`` (seconds) rounded to the millisecond, as events carry times and durations."""
    return round(t, 3)


#: ``now-90m``, ``now-2h``: a start that far before now.
_AGO = re.compile(r"^now-([0-9]+(?:\.[0-9]+)?)([smh])$")


def parse_start(text: str, now: float | None = None) -> float:
    """A start instant: ``now``, ``now-90m`` / ``now-2h`` / ``now-30s`` (that long before now), ``today``
    (00:00 UTC today), ``HH:MM`` (today, UTC), RFC 3339 with an offset, or epoch seconds."""
    wall = time.time() if now is None else now
    text = text.strip()
    midnight = math.floor(wall / 86400.0) * 86400.0
    if text == "now":
        return float(round(wall))
    if text == "today":
        return midnight
    ago = _AGO.match(text)
    if ago:
        seconds = float(ago.group(1)) * {"s": 1, "m": 60, "h": 3600}[ago.group(2)]
        if seconds > 7 * 86400:
            raise ConfigError("--start", f"at most a week before now (now-168h), got {text!r}")
        return float(round(wall - seconds))
    if len(text) in (4, 5) and ":" in text:
        hours, _, minutes = text.partition(":")
        if hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60:
            return midnight + int(hours) * 3600.0 + int(minutes) * 60.0
    try:
        return parse_instant(text)
    except InvalidEventError:
        raise ConfigError(
            "--start",
            f"use now, now-90m / now-2h, today, HH:MM (UTC), RFC 3339 with an offset or epoch seconds; got {text!r}",
        ) from None


class Pacer:
    """Maps wall-clock time to simulated time: ``speed`` simulated seconds per real second;
    ``speed == 0`` means as fast as possible."""

    def __init__(self, sim_start: float, speed: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not math.isfinite(speed) or speed < 0:
            raise ConfigError("--speed", f"must be >= 0, got {speed!r}")
        self.sim_start = sim_start
        self.speed = speed
        self.clock = clock
        self.wall_start = clock()

    def sim_now(self) -> float:
        if self.speed == 0:
            return math.inf
        return self.sim_start + (self.clock() - self.wall_start) * self.speed
