"""The board's document pushed to open pages: the producer side of ``GET /api/stream``
(Server-Sent Events; the connections are :mod:`streams.web.server`'s).

One :class:`Publisher` per process renders the ``/api/kpis`` document for every open page at
once, on a thread of its own that runs only while at least one page is subscribed:

* every ``poll_seconds`` (0.25 s) it asks ``version()`` -- something cheap that changes when
  the state does (the exporter: the workers' per-tenant event counters in Redis, two round
  trips; the demo: its view counter) -- and renders the document only when the answer
  changed, or when ``refresh_seconds`` (2 s) have passed since the last rendering (the
  live figures move with the clock alone: the longest wait, sliding windows);
* a rendering whose bytes differ from the last one is published: each subscriber's
  ``listener`` is called (from this thread; the server turns it into a wake-up on its event
  loop) and the subscriber then reads :meth:`Publisher.latest`. Only the latest document is
  kept: a subscriber that fell behind skips to it, so a slow page costs no memory here.

So the board sees a change at most ``poll_seconds`` plus one rendering after it lands, and
the state is read once per change whatever the number of pages (polling read it once per
page every 2.5 s). After a rendering the thread waits at least as long as the rendering
took: on a state so large that a snapshot takes longer than a poll period, pushing costs at
most half a core, and documents come as fast as that allows. A rendering that fails (Redis
unreachable) is logged (once until one
succeeds again) and nothing is published: the pages keep their last data and, receiving no
``alive`` events (:attr:`Publisher.healthy`), show themselves offline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ccmon.http.push")

#: How often ``version()`` is polled (and at most how often a document is published).
POLL_SECONDS = 0.25
#: A document is rendered at least this often while pages are open, changed or not.
REFRESH_SECONDS = 2.0

_NOTHING = object()


class Publisher:
    """The latest board document and its subscribers (see the module's docstring).

    ``render()`` returns the document's bytes (one line of JSON); ``version()`` (optional)
    something comparable that changes when the state does; without it a document is rendered
    every ``refresh_seconds`` only. Thread-safe."""

    def __init__(
        self,
        render: Callable[[], bytes],
        version: Callable[[], Any] | None = None,
        *,
        poll_seconds: float = POLL_SECONDS,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        for name, value in (("poll_seconds", poll_seconds), ("refresh_seconds", refresh_seconds)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        self._render = render
        self._version = version
        self.poll_seconds = poll_seconds
        self.refresh_seconds = refresh_seconds
        self._cond = threading.Condition()
        self._listeners: set[Callable[[], None]] = set()
        self._latest: tuple[int, bytes] | None = None
        self._seq = 0
        self._ok_at = 0.0
        self._wake = False
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Documents rendered, and published (differing from the one before): for tests and logs.
        self.renders = 0
        self.published = 0

    # -- subscribers (called from the server's loop) ------------------------------------------
    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the publisher's thread) whenever a new document is out;
        starts the thread, and a rendering at once."""
        with self._cond:
            if self._closed:
                raise RuntimeError("publisher closed")
            self._listeners.add(listener)
            self._wake = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ccmon-push", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        with self._cond:
            self._listeners.discard(listener)

    @property
    def subscribers(self) -> int:
        with self._cond:
            return len(self._listeners)

    def latest(self) -> tuple[int, bytes] | None:
        """``(sequence number, document)`` of the newest document, or None before the first."""
        with self._cond:
            return self._latest

    @property
    def healthy(self) -> bool:
        """Whether the last rendering succeeded, within the last ``2 * refresh_seconds``."""
        with self._cond:
            return time.monotonic() - self._ok_at <= 2 * self.refresh_seconds

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._listeners.clear()
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        last_version: Any = _NOTHING  # differs from any version, None included
        next_refresh = 0.0
        failing = False
        while True:
            with self._cond:
                if not self._listeners or self._closed:
                    # Nobody is watching: forget (the next page gets a fresh rendering) and
                    # end; :meth:`subscribe` starts a new thread.
                    self._latest, self._thread = None, None
                    return
                self._wake = False
            started = time.monotonic()
            rendered = False
            try:
                version = self._version() if self._version is not None else None
                if self._latest is None or started >= next_refresh or version != last_version:
                    rendered = True
                    data = self._render()
                    self.renders += 1
                    last_version, next_refresh = version, started + self.refresh_seconds
                    self._publish(data)
                if failing:
                    log.info("the board's document renders again")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning(
                        "cannot render the board's document (retrying every %g s): %s: %s",
                        self.poll_seconds,
                        type(exc).__name__,
                        exc,
                    )
                failing = True
            # The next poll a poll period after this one started, but after a rendering at least
            # as long as it took: a costly snapshot (thousands of queues) takes at most half a core.
            took = time.monotonic() - started
            pause = max(self.poll_seconds - took, took if rendered else 0.0)
            with self._cond:
                if not self._wake and not self._closed:
                    self._cond.wait(pause)

    def _publish(self, data: bytes) -> None:
        with self._cond:
            self._ok_at = time.monotonic()
            if self._latest is not None and self._latest[1] == data:
                return
            self._seq += 1
            self._latest = (self._seq, data)
            self.published += 1
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener()
            except Exception:  # a closed loop (the server stopping): its handler ends anyway
                log.debug("a subscriber's listener failed", exc_info=True)
