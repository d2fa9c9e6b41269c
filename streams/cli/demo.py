"""A live wallboard on simulated traffic, with no outside services: the simulator feeds the
KPI engine in this process, and one HTTP server shows the wallboard (/), /metrics (the same
names as production), /api/kpis, /api/callbacks/pending and /healthz. The demo runs on a
simulated clock: it pre-simulates the morning up to --start at start-up, then runs at --speed
simulated seconds per real second. The board's alerts come from --alertmanager-url when set,
else from the demo's own breaches of the queues' targets. Ctrl-C stops it. See docs/DEMO.md."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from streams import logs
from streams import settings as settings_module
from streams.commands.simulate import add_common_arguments

log = logging.getLogger("ccmon.demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0 = any free)")
    parser.add_argument("--speed", type=float, default=30.0,
                        help="simulated seconds per real second (default: 30)")
    parser.add_argument("--start", default="08:30", metavar="WHEN",
                        help="simulated time when the page opens: HH:MM (today, UTC), now, RFC 3339 or "
                        "epoch seconds (default: 08:30)")
    parser.add_argument("--warmup", type=float, default=90.0, metavar="MINUTES",
                        help="simulated minutes before --start, simulated at once at start-up (default: 90)")
    parser.add_argument("--pause-after", type=float, default=None, metavar="SECONDS",
                        help="freeze the clock this many real seconds after start-up (for tests and "
                        "screenshots; default: never)")
    parser.add_argument("--config", default=os.environ.get("CCMON_CONFIG"),
                        help="TOML config for targets and windows (default: $CCMON_CONFIG, else demo targets)")
    add_common_arguments(parser)
    logs.add_format_argument(parser)
    settings_module.add_arguments(parser, ("alertmanager_url",))


def demo_config(queue_names: list[str]) -> Any:
    """Default targets for the demo: 80/20, ASA 30 s, abandon 5 %, callbacks within 30 min;
    the VIP queue (when simulated) 90/15."""
    from types import MappingProxyType

    from kpi_core.config import DEFAULT_TARGETS, Config, QueueConfig, TenantConfig

    base = QueueConfig(targets=MappingProxyType({**DEFAULT_TARGETS, "asa_seconds": 30.0, "callback_seconds": 1800.0}))
    queues = {}
    if "vip" in queue_names:
        queues["vip"] = QueueConfig(
            sl_threshold_seconds=15.0,
            targets=MappingProxyType({**base.targets, "service_level": 0.9, "asa_seconds": 15.0}),
        )
    # The simulator's pause reasons (streams.simulator): breaks, lunch, not ready after a missed ring.
    return Config(defaults=base, tenants={"default": TenantConfig(queues=MappingProxyType(queues),
                                                                  pause_reasons=("break", "lunch", "not_ready"))})


def run(args: argparse.Namespace) -> int:
    from kpi_core.config import load_config
    from streams.demo import DemoRunner
    from streams.simulator import SimParams, default_queues, parse_start
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
    runner = DemoRunner(params, config, speed=args.speed, warmup_seconds=warmup_seconds,
                        pause_after=args.pause_after)
    # The board's alerts: that Alertmanager's, else the demo's own breaches of its targets.
    alertmanager_url = args.alertmanager_url or os.environ.get("CCMON_ALERTMANAGER_URL") or None
    where = "--alertmanager-url" if args.alertmanager_url else "CCMON_ALERTMANAGER_URL"
    alerts = AlertmanagerAlerts(settings_module.check_alertmanager_url(alertmanager_url, where)) if alertmanager_url else None
    app = make_wsgi_app(runner.families, runner.pending, get_info=runner.info, history=runner.history, alerts=alerts,
                        get_agents=runner.agents, get_waiting=runner.waiting, config=config,
                        version=lambda: runner.views)
    try:
        server = serve(app, args.host, args.port)
    except OSError as exc:
        logs.say(log, f"ccmon demo: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", sys.stderr, logging.ERROR)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    # Explicit handlers (not KeyboardInterrupt): a clean stop wherever the threads are, and
    # Ctrl-C works even when the shell started us with SIGINT ignored (a background job).
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    names = ", ".join(q.name for q in queues)
    logs.say(log, f"ccmon demo: wallboard on {server.url}  (also {server.url}metrics, {server.url}api/kpis)")
    logs.say(log, f"ccmon demo: queues {names}; seed {args.seed}; simulated clock from {args.start} UTC at "
                  f"x{args.speed:g} after a {args.warmup:g}-minute warm-up. Ctrl-C to stop.")
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

