"""``ccmon demo``: the simulator feeding the KPI engine in one process, served over HTTP.

The clock
---------
The demo runs on a **simulated clock**, used consistently as the engine's ``now`` (lateness)
and as the evaluation instant ``at`` of every snapshot: the simulated day starts at
``start - warmup`` (by default 07:00 UTC today, when the first shift logs in), the warm-up is
simulated as fast as possible at start-up (so the page has an hour and a half of data and a
full sparkline within seconds), then the clock runs at ``speed`` simulated seconds per real
second. Windows (5m, 15m, 1h, today) are simulated time: at ``--speed 30`` a 15-minute
window spans 30 real seconds. The page shows the simulated time.

``pause_after`` (tests) stops the clock that many real seconds after the warm-up: the last
view stays published, so ``/metrics`` and the page show the same numbers.

Threads
-------
One thread advances the simulator and the engine (the only writer) and, once a simulated
minute and at least every ``refresh_seconds`` of real time, publishes a :class:`View`: the
snapshot, the callback worklist and the status, replaced atomically. HTTP threads only read
the latest view, so ``/metrics``, ``/api/kpis`` and ``/api/callbacks/pending`` fetched close
together agree with each other.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.errors import InvalidEventError
from kpi_core.events import parse_event, parse_line
from kpi_core.kpis import MetricFamily, live_agents, snapshot, waiting_calls
from kpi_core.state import MemoryState
from streams.kafka.produce import Record
from streams.sim import SimParams, Simulator
from streams.web.api import SlHistory, pending_callbacks

log = logging.getLogger(__name__)

#: Upkeep (expire stale waiting calls, prune old buckets) every this much simulated time.
MAINTAIN_EVERY_SECONDS = 300.0


@dataclass(frozen=True)
class View:
    """Everything the HTTP side serves, as of one simulated instant."""

    at: float
    families: list[MetricFamily]
    pending: list[dict[str, Any]]
    info: Mapping[str, Any] = field(default_factory=dict)
    #: Every tenant's agents and waiting calls (kpi_core.kpis.live_agents, waiting_calls).
    agents: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)


class DemoRunner:
    """Drives a :class:`Simulator` into an :class:`Engine` over :class:`MemoryState` on a
    simulated clock, and publishes views. ``params.start`` is where the simulation begins
    (the warm-up starts there); live time begins at ``params.start + warmup_seconds``."""

    def __init__(
        self,
        params: SimParams,
        config: Config,
        *,
        speed: float = 30.0,
        warmup_seconds: float = 5400.0,
        pause_after: float | None = None,
        refresh_seconds: float = 1.0,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not math.isfinite(speed) or speed <= 0:
            raise ValueError(f"speed must be > 0 simulated seconds per second, got {speed!r}")
        if warmup_seconds < 0:
            raise ValueError(f"warmup must be >= 0 seconds, got {warmup_seconds!r}")
        self.params = params
        self.config = config
        self.speed = speed
        self.warmup_seconds = warmup_seconds
        self.pause_after = pause_after
        self.refresh_seconds = refresh_seconds
        self.wall_clock = wall_clock
        self.sim = Simulator(params)
        self.store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
        self.engine = Engine(config, self.store)
        self.history = SlHistory(window="15m", keep_seconds=3600.0)
        self.live_start = params.start + warmup_seconds
        self.clock = params.start  # simulated time the engine has reached
        self.paused = False
        self.events = 0
        self.outcomes: dict[str, int] = {}
        self._next_maintain = params.start + MAINTAIN_EVERY_SECONDS
        self._view: View | None = None
        #: Views published so far: what the board's stream polls to push each new one.
        self.views = 0
        self._wall_live_start: float | None = None
        self._frozen_at: float | None = None
        self._stop: threading.Event | None = None

    # -- the clock ------------------------------------------------------------------------
    def sim_now(self) -> float:
        """The simulated time the clock shows now (frozen once paused)."""
        if self._frozen_at is not None:
            return self._frozen_at
        if self._wall_live_start is None:
            return self.clock
        return self.live_start + (self.wall_clock() - self._wall_live_start) * self.speed

    # -- feeding --------------------------------------------------------------------------
    def _feed(self, records: list[tuple[float, Record]]) -> None:
        engine = self.engine
        for emit_at, record in records:
            try:
                event = parse_event(record) if isinstance(record, dict) else parse_line(record)
            except InvalidEventError as exc:
                engine.reject(exc.reason)
                outcome = exc.reason
            else:
                outcome = engine.handle(event, emit_at)
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.events += 1

    def advance_to(self, target: float) -> None:
        """Run the simulation and the engine up to simulated ``target``, publishing a view at
        every whole simulated minute on the way (the sparkline history)."""
        while self.clock < target:
            if self._stop is not None and self._stop.is_set():
                return
            next_minute = (math.floor(self.clock / 60.0) + 1) * 60.0
            step = min(target, next_minute)
            self._feed(self.sim.advance(step))
            self.clock = step
            if self.clock >= self._next_maintain:
                self.engine.maintain(self.clock)
                self._next_maintain = self.clock + MAINTAIN_EVERY_SECONDS
            if step == next_minute:
                self.publish(record_history=True)

    def publish(self, record_history: bool = False) -> View:
        at = self.clock
        families = snapshot(self.config, self.store, at)
        if record_history:
            self.history.record(at, families)
        view = View(at, families, pending_callbacks(self.config, self.store, at), self.status(at),
                    live_agents(self.config, self.store, at), waiting_calls(self.config, self.store, at))
        self._view = view
        self.views += 1
        return view

    def status(self, at: float) -> dict[str, Any]:
        return {
            "at": at,
            "source": "ccmon demo",
            "clock": "simulated",
            "speed": self.speed,
            "paused": self.paused,
            "ready": True,
            "seed": self.params.seed,
            "events": self.events,
            "queues": [spec.name for spec in self.params.queues],
        }

    # -- running --------------------------------------------------------------------------
    def warm_up(self) -> View:
        """Simulate the warm-up as fast as possible and publish the first view."""
        self.advance_to(self.live_start)
        self._wall_live_start = self.wall_clock()
        if self.pause_after is not None and self.pause_after <= 0:
            self._freeze()
        return self.publish()

    def _freeze(self) -> None:
        self.paused = True
        self._frozen_at = self.clock
        self.publish()

    def run(self, stop: threading.Event) -> None:
        """Warm up (unless done already), then the live loop, until ``stop`` is set."""
        self._stop = stop
        if self._wall_live_start is None:
            self.warm_up()
        if self._wall_live_start is None or stop.is_set():
            return
        last_publish = self.wall_clock()
        while not stop.is_set():
            if self.paused:
                stop.wait(0.25)
                continue
            wall = self.wall_clock()
            if self.pause_after is not None and wall - self._wall_live_start >= self.pause_after:
                target = self.live_start + self.pause_after * self.speed
                self.advance_to(target)
                self._freeze()
                continue
            self.advance_to(self.sim_now())
            if wall - last_publish >= self.refresh_seconds:
                self.publish()
                last_publish = wall
            stop.wait(0.1)

    # -- what the HTTP side reads ------------------------------------------------------------
    def view(self) -> View | None:
        return self._view

    def families(self) -> list[MetricFamily]:
        view = self._view
        return view.families if view is not None else []

    def pending(self) -> list[dict[str, Any]]:
        view = self._view
        return view.pending if view is not None else []

    def agents(self, tenant: str | None = None, queue: str | None = None) -> list[dict[str, Any]]:
        """The published view's agents (of ``tenant``, serving ``queue``)."""
        view = self._view
        rows = view.agents if view is not None else []
        return [r for r in rows if (tenant is None or r["tenant"] == tenant) and (queue is None or queue in r["queues"])]

    def waiting(self, tenant: str | None = None, queue: str | None = None) -> list[dict[str, Any]]:
        """The published view's waiting calls (of ``tenant``, in ``queue``)."""
        view = self._view
        rows = view.waiting if view is not None else []
        return [r for r in rows if (tenant is None or r["tenant"] == tenant) and (queue is None or r["queue"] == queue)]

    def info(self) -> Mapping[str, Any]:
        view = self._view
        if view is None:
            return {"ready": False, "at": self.clock, "source": "ccmon demo", "clock": "simulated"}
        return view.info
