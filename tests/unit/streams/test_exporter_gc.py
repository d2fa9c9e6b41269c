"""The exporter reads and renders a scrape with the cyclic garbage collector paused
(streams.collector.GcPause): on while nobody scrapes, off inside, back on after, whatever
the nesting, the threads or an error."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from kpi_core.config import Config
from kpi_core.state import MemoryState
from streams.collector import GcPause
from streams.exporter import build_app

AT = 1_795_168_800.0


@contextmanager
def gc_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if not was:
            gc.disable()


class Watched(MemoryState):
    """A store noting whether the collector was on at each read of the snapshot."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def scopes(self) -> Mapping[str, Iterable[str]]:
        self.seen.append(gc.isenabled())
        return super().scopes()


def scrape(app: Any, path: str) -> bytes:
    statuses: list[str] = []
    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda status, _headers: statuses.append(status)))
    assert statuses == ["200 OK"]
    return body


@pytest.mark.parametrize("path", ["/metrics", "/api/samples"])
def test_a_scrape_reads_with_the_collector_paused(path: str) -> None:
    store = Watched()
    app = build_app(Config(), store, lambda: AT)
    with gc_on():
        scrape(app, path)
        assert store.seen and not any(store.seen)
        assert gc.isenabled()


def test_pauses_nest_and_end_with_the_last_one() -> None:
    pause = GcPause()
    with gc_on():
        with pause:
            assert not gc.isenabled()
            with pause:
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled()
        with pytest.raises(RuntimeError, match="boom"), pause:
            raise RuntimeError("boom")
        assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    pause = GcPause()
    was = gc.isenabled()
    gc.disable()
    try:
        with pause:
            pass
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()


def test_concurrent_pauses_end_when_the_last_thread_leaves() -> None:
    pause = GcPause()
    entered, release = threading.Barrier(3), threading.Event()
    states: list[bool] = []

    def hold() -> None:
        with pause:
            entered.wait(5)
            release.wait(5)
        states.append(gc.isenabled())

    with gc_on():
        first = threading.Thread(target=hold)
        first.start()
        with pause:
            second = threading.Thread(target=hold)
            second.start()
            entered.wait(5)  # both threads are inside
        assert not gc.isenabled()  # this thread left, theirs have not
        release.set()
        first.join(5)
        second.join(5)
        assert gc.isenabled()


def test_a_slow_collection_is_logged_at_debug_and_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from streams.collector import report_slow_collections

    log = logging.getLogger("ccmon.test-collector")
    callback = report_slow_collections(log, threshold=0.0)
    try:
        cycles = []
        for _ in range(1000):
            a: list[Any] = []
            a.append(a)  # a cycle: only the collector frees it
            cycles.append(a)
        del cycles, a
        with caplog.at_level(logging.INFO, logger=log.name):
            gc.collect()
        assert not caplog.records
        with caplog.at_level(logging.DEBUG, logger=log.name):
            gc.collect()
            cycles = [[]]
            cycles[0].append(cycles)
            del cycles
            gc.collect()
        lines = [r.getMessage() for r in caplog.records]
        assert any(line.startswith("the garbage collector took") and "generation 2" in line for line in lines), lines
        assert any("2 collected" in line for line in lines), lines
    finally:
        gc.callbacks.remove(callback)
