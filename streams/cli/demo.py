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

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kpi_core.config import Config
from kpi_core.errors import InvalidEventError
from kpi_core.events import parse_event, parse_line
from streams import logs
from streams import settings as settings_module
from streams.cli.simulate import add_common_arguments

if TYPE_CHECKING:  # the engine, simulator and web server are imported when the demo runs: ccmon --help starts fast
    from kpi_core.kpis import MetricFamily
    from streams.kafka.produce import Record
    from streams.sim import SimParams

#: ``ccmon demo --help``'s description.
DESCRIPTION = """A live wallboard on simulated traffic, with no outside services: the simulator feeds the
KPI engine in this process, and one HTTP server shows the wallboard (/), /metrics (the same
names as production), /api/kpis, /api/callbacks/pending and /healthz. The demo runs on a
simulated clock: it pre-simulates the morning up to --start at start-up, then runs at --speed
simulated seconds per real second. The board's alerts come from --alertmanager-url when set,
else from the demo's own breaches of the queues' targets. Ctrl-C stops it. See docs/DEMO.md."""


log = logging.getLogger("ccmon.demo")

#: Upkeep (expire stale waiting calls, prune old buckets) every this much simulated time.
MAINTAIN_EVERY_SECONDS = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0 = any free)")
    parser.add_argument("--speed", type=float, default=30.0, help="simulated seconds per real second (default: 30)")
    parser.add_argument(
        "--start",
        default="08:30",
        metavar="WHEN",
        help="simulated time when the page opens: HH:MM (today, UTC), now, RFC 3339 or epoch seconds (default: 08:30)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=90.0,
        metavar="MINUTES",
        help="simulated minutes before --start, simulated at once at start-up (default: 90)",
    )
    parser.add_argument(
        "--pause-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="freeze the clock this many real seconds after start-up (for tests and screenshots; default: never)",
    )
    parser.add_argument(
        "--config",
        default=settings_module.lookup("config_path")[0],
        help="TOML config for targets and windows (default: $CCMON_CONFIG, else demo targets)",
    )
    add_common_arguments(parser)
    logs.add_format_argument(parser)
    settings_module.add_arguments(parser, ("alertmanager_url",))


def demo_config(queue_names: list[str]) -> Any:
    """Default targets for the demo: 80/20, ASA 30 s, abandon 5 %, callbacks within 30 min;
    the VIP queue (when simulated) 90/15."""
    from types import MappingProxyType

    from kpi_core.config import DEFAULT_TARGETS, QueueConfig, TenantConfig

    base = QueueConfig(targets=MappingProxyType({**DEFAULT_TARGETS, "asa_seconds": 30.0, "callback_seconds": 1800.0}))
    queues = {}
    if "vip" in queue_names:
        queues["vip"] = QueueConfig(
            sl_threshold_seconds=15.0,
            targets=MappingProxyType({**base.targets, "service_level": 0.9, "asa_seconds": 15.0}),
        )
    # The simulator's pause reasons (streams.sim.model): breaks, lunch, not ready after a missed ring.
    return Config(
        defaults=base,
        tenants={
            "default": TenantConfig(queues=MappingProxyType(queues), pause_reasons=("break", "lunch", "not_ready"))
        },
    )


def run(args: argparse.Namespace) -> int:
    from streams.files import load_config
    from streams.sim import SimParams, default_queues, parse_start
    from streams.web import make_wsgi_app, serve
    from streams.web.alerts import AlertmanagerAlerts

    log_format = logs.format_from(args)
    # json: the demo's own lines are logged too (INFO); text: only warnings, as print() says the rest.
    logs.configure("INFO" if log_format == "json" else "WARNING", log_format)
    if args.speed <= 0:
        logs.say(log, "ccmon demo: --speed must be > 0", sys.stderr, logging.ERROR)
        return 2
    if args.warmup < 0:
        logs.say(log, "ccmon demo: --warmup must be >= 0 minutes", sys.stderr, logging.ERROR)
        return 2
    queues = default_queues(args.queues, args.agents)
    live_start = parse_start(args.start)
    warmup_seconds = args.warmup * 60.0
    params = SimParams(
        start=live_start - warmup_seconds,
        hours=None,
        queues=queues,
        seed=args.seed,
        tenant=args.tenant,
        late_share=args.late_share,
        duplicate_share=args.duplicate_share,
        malformed_share=args.malformed_share,
        pulse_share=0.6,  # the board's employee pulse strip has answers to show
    )
    if args.config:
        config = load_config(args.config)
    elif args.tenant == "default":
        config = demo_config([q.name for q in queues])
    else:
        config = load_config(None)
    runner = DemoRunner(params, config, speed=args.speed, warmup_seconds=warmup_seconds, pause_after=args.pause_after)
    # The board's alerts: that Alertmanager's, else the demo's own breaches of its targets.
    alertmanager_url, where = settings_module.lookup("alertmanager_url", args)
    alerts = (
        AlertmanagerAlerts(settings_module.check_alertmanager_url(alertmanager_url, where))
        if alertmanager_url
        else None
    )
    app = make_wsgi_app(
        runner.families,
        runner.pending,
        get_info=runner.info,
        history=runner.history,
        alerts=alerts,
        get_agents=runner.agents,
        get_waiting=runner.waiting,
        config=config,
        version=lambda: runner.views,
    )
    try:
        server = serve(app, args.host, args.port)
    except OSError as exc:
        logs.say(
            log,
            f"ccmon demo: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            sys.stderr,
            logging.ERROR,
        )
        return 1

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    # Explicit handlers (not KeyboardInterrupt): a clean stop wherever the threads are, and
    # Ctrl-C works even when the shell started us with SIGINT ignored (a background job).
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    names = ", ".join(q.name for q in queues)
    logs.say(log, f"ccmon demo: wallboard on {server.url}  (also {server.url}metrics, {server.url}api/kpis)")
    logs.say(
        log,
        f"ccmon demo: queues {names}; seed {args.seed}; simulated clock from {args.start} UTC at "
        f"x{args.speed:g} after a {args.warmup:g}-minute warm-up. Ctrl-C to stop.",
    )
    worker = threading.Thread(target=_run_quietly, args=(runner, stop), name="ccmon-demo-sim", daemon=True)
    worker.start()
    try:
        while not stop.wait(0.5):
            if not worker.is_alive():
                logs.say(log, "ccmon demo: the simulation stopped unexpectedly", sys.stderr, logging.ERROR)
                return 1
    except KeyboardInterrupt:
        stop.set()
    finally:
        stop.set()
        server.stop()
        worker.join(timeout=10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logs.say(log, "ccmon demo: stopped")
    return 0


def _run_quietly(runner: Any, stop: threading.Event) -> None:
    try:
        runner.run(stop)
    except Exception:  # pragma: no cover - shown once, the main thread then exits 1
        log.exception("ccmon demo: the simulation failed")


def _timing_problem(speed: float, warmup_seconds: float) -> str | None:
    """What is wrong with a runner's ``speed`` or warm-up (None: nothing)."""
    if not math.isfinite(speed) or speed <= 0:
        return f"speed must be > 0 simulated seconds per second, got {speed!r}"
    if warmup_seconds < 0:
        return f"warmup must be >= 0 seconds, got {warmup_seconds!r}"
    return None


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
        from kpi_core.engine import Engine
        from kpi_core.state import MemoryState
        from streams.sim import Simulator
        from streams.web.api import SlHistory

        problem = _timing_problem(speed, warmup_seconds)
        if problem is not None:
            raise ValueError(problem)
        self.params = params
        self.sim = Simulator(params)
        self.config = config
        self.store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
        self.engine = Engine(config, self.store)
        # The clocks: simulated seconds per real second, the warm-up, the freeze, the refresh.
        self.speed = speed
        self.warmup_seconds = warmup_seconds
        self.pause_after = pause_after
        self.refresh_seconds = refresh_seconds
        self.wall_clock = wall_clock
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
        from kpi_core.kpis import live_agents, snapshot, waiting_calls
        from streams.web.api import pending_callbacks

        families = snapshot(self.config, self.store, at)
        if record_history:
            self.history.record(at, families)
        view = View(
            at,
            families,
            pending_callbacks(self.config, self.store, at),
            self.status(at),
            live_agents(self.config, self.store, at),
            waiting_calls(self.config, self.store, at),
        )
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
        return [
            r for r in rows if (tenant is None or r["tenant"] == tenant) and (queue is None or queue in r["queues"])
        ]

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
