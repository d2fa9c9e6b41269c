"""Time buckets and windows.

Counters live in two tiers of event-time buckets: fine buckets (``bucket_seconds``, at most
10 s) and coarse ones (``coarse_bucket_seconds``, a divisor of 15 min, so every time zone's
midnight is a coarse boundary). A window ``[start, end)`` is covered by fine buckets at its
ragged edges and coarse buckets in the middle, so reading ``today`` costs about a hundred
buckets, not eight thousand. A bucket counts in a window when its start lies in it; with
whole-second events and a whole-minute ``end`` this is exact.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from kpi_core.config import Window

FINE = "f"
COARSE = "c"


def bucket_start(ts: float, size: int) -> int:
    return int(ts // size) * size


def cover(start: float, end: float, fine: int, coarse: int) -> tuple[range, range, range]:
    """Bucket starts covering ``[start, end)``: fine edge, coarse middle, fine edge."""
    first = math.ceil(start / fine) * fine
    stop = math.ceil(end / fine) * fine  # fine buckets with start < end
    if stop <= first:
        return range(0), range(0), range(0)
    mid_first = math.ceil(first / coarse) * coarse
    mid_stop = (stop // coarse) * coarse
    if mid_stop <= mid_first:
        return range(first, stop, fine), range(0), range(0)
    return (
        range(first, mid_first, fine),
        range(mid_first, mid_stop, coarse),
        range(mid_stop, stop, fine),
    )


def local_midnight(at: float, zone: ZoneInfo) -> float:
    """Epoch seconds of the midnight that starts ``at``'s day in ``zone``."""
    local = datetime.fromtimestamp(at, zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    # A zone whose clocks skip midnight (DST at 00:00) has no such instant: take the first
    # instant of that local day instead.
    for minutes in range(0, 181, 15):
        candidate = midnight + timedelta(minutes=minutes)
        roundtrip = datetime.fromtimestamp(candidate.timestamp(), zone)
        if roundtrip.replace(tzinfo=None) == candidate.replace(tzinfo=None):
            return candidate.timestamp()
    return midnight.timestamp()  # pragma: no cover - no real zone skips three hours


def window_range(window: Window, at: float, zone: ZoneInfo) -> tuple[float, float]:
    """``[start, end)`` of ``window`` evaluated at ``at``."""
    if window.is_today:
        return local_midnight(at, zone), at
    return at - window.seconds, at
