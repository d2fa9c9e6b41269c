"""The board's publisher (streams.web.push): renders only while someone listens, again when
the version changes (within a poll) or the refresh period passes, publishes only documents
that differ, survives a failing rendering, and stops its thread when the last page leaves."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from streams.web.push import Publisher


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> float:
    """Seconds until ``predicate()`` held (fails after ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail("condition not reached in time")
        time.sleep(0.005)
    return time.monotonic() - started


class Source:
    def __init__(self) -> None:
        self.version = 0
        self.text = "a"
        self.fail: Exception | None = None
        self.renders = 0

    def render(self) -> bytes:
        self.renders += 1
        if self.fail is not None:
            raise self.fail
        return self.text.encode()


def test_renders_on_a_version_change_within_a_poll_and_only_then() -> None:
    source = Source()
    publisher = Publisher(source.render, lambda: source.version, poll_seconds=0.05, refresh_seconds=60)
    woken = threading.Event()
    assert source.renders == 0  # nobody listens: nothing is read
    publisher.subscribe(woken.set)
    try:
        wait_until(woken.is_set)
        assert publisher.latest() == (1, b"a")
        time.sleep(0.3)  # six polls, the same version: no rendering
        assert source.renders == 1
        woken.clear()
        source.text, source.version = "b", 1
        assert wait_until(woken.is_set) < 0.5
        assert publisher.latest() == (2, b"b") and source.renders == 2
        source.version = 2  # a new version, the same document: rendered, not published again
        wait_until(lambda: source.renders == 3)
        time.sleep(0.1)
        assert publisher.latest() == (2, b"b") and publisher.published == 2
    finally:
        publisher.close()


def test_without_a_version_it_renders_every_refresh() -> None:
    source = Source()
    publisher = Publisher(source.render, poll_seconds=0.02, refresh_seconds=0.2)
    publisher.subscribe(lambda: None)
    try:
        time.sleep(0.7)
        assert 3 <= source.renders <= 5, source.renders
        assert publisher.healthy
    finally:
        publisher.close()


def test_a_failing_rendering_is_logged_once_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    source = Source()
    source.fail = ConnectionError("Redis down")
    publisher = Publisher(source.render, lambda: source.version, poll_seconds=0.02, refresh_seconds=0.05)
    publisher.subscribe(lambda: None)
    try:
        with caplog.at_level(logging.INFO, logger="ccmon.http.push"):
            wait_until(lambda: source.renders >= 5)
            assert publisher.latest() is None and not publisher.healthy
            source.fail = None
            wait_until(lambda: publisher.latest() is not None)
        assert publisher.healthy
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "Redis down" in warnings[0].getMessage()
        assert any("renders again" in r.getMessage() for r in caplog.records)
    finally:
        publisher.close()


def test_the_thread_ends_with_the_last_subscriber_and_restarts_fresh() -> None:
    source = Source()
    publisher = Publisher(source.render, lambda: source.version, poll_seconds=0.02, refresh_seconds=60)

    def listener() -> None:
        pass

    publisher.subscribe(listener)
    wait_until(lambda: publisher.latest() is not None)
    publisher.unsubscribe(listener)
    wait_until(lambda: not any(t.name == "ccmon-push" for t in threading.enumerate()))
    assert publisher.latest() is None and publisher.subscribers == 0  # forgotten: the next page reads afresh
    renders = source.renders
    publisher.subscribe(listener)
    try:
        wait_until(lambda: publisher.latest() is not None)
        assert source.renders == renders + 1
    finally:
        publisher.close()
    with pytest.raises(RuntimeError):
        publisher.subscribe(listener)


def test_a_slow_rendering_takes_at_most_half_the_time() -> None:
    source = Source()

    def slow() -> bytes:
        time.sleep(0.1)
        source.version += 1  # always a change: a rendering at every opportunity
        return str(source.version).encode()

    publisher = Publisher(slow, lambda: source.version, poll_seconds=0.01, refresh_seconds=60)
    publisher.subscribe(lambda: None)
    try:
        time.sleep(1.0)
        assert 3 <= publisher.renders <= 6, publisher.renders  # 10 back to back without the pause
    finally:
        publisher.close()


@pytest.mark.parametrize("name", ["poll_seconds", "refresh_seconds"])
def test_bad_periods_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be > 0 seconds, got 0"):
        Publisher(lambda: b"", **{name: 0})  # type: ignore[arg-type]
