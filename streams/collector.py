"""Python's cyclic garbage collector in ccmon's processes: the worker's thresholds
(:func:`tune_gc`) and pauses for bursts that allocate many objects the collector's passes
cannot free (:class:`GcPause`: a scrape in the exporter, the computation of a batch in the
worker). Reference counting still frees everything acyclic at once; the cycles left are
collected when a pause ends (docs/BENCHMARKS.md)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

#: Allocations between young GC collections (Python's default: 700); see tune_gc().
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Python's cyclic GC, tuned for a process whose batches allocate millions of short-lived
    containers (parsed events, records, contributions) next to hundreds of thousands of
    long-lived objects (Faust, aiokafka, fetched messages): with the default thresholds the
    worker spent a large share of its time collecting, each full collection traversing every
    long-lived object while holding the GIL (docs/BENCHMARKS.md, "Profiles and fixes"). What is alive at
    start is frozen (never traversed again), and a young collection runs every
    ``GC_YOUNG_THRESHOLD`` allocations instead of 700. Cycles are still collected; the
    worker's own data (JSON records) has none."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


#: A collection at least this long is logged at DEBUG (report_slow_collections).
SLOW_COLLECTION_SECONDS = 0.02


def report_slow_collections(
    log: logging.Logger, threshold: float = SLOW_COLLECTION_SECONDS
) -> Callable[[str, dict[str, Any]], None]:
    """Log at DEBUG (when ``log`` is at DEBUG) each collection that holds the GIL ``threshold``
    seconds or more (its generation, time and objects collected): where a batch's stall came
    from. Returns the callback (in ``gc.callbacks``)."""
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took >= threshold and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "the garbage collector took %.3f s (generation %d, %d collected)",
                took,
                info["generation"],
                info["collected"],
            )

    gc.callbacks.append(callback)
    return callback


class GcPause:
    """A context manager that keeps Python's cyclic garbage collector off while any thread is
    inside one (nested and concurrent uses count), and turns it back on when the last one
    leaves, if it was on when the first one entered. For short bursts that allocate many
    objects the collector would traverse in vain (a scrape: they survive until the page is
    rendered; a worker's batch: JSON records, acyclic, freed when the batch ends)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._inside += 1

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._was_enabled:
                gc.enable()


#: The process's one pause, shared by every scrape (the exporter) or batch (the worker).
GC_PAUSE = GcPause()
