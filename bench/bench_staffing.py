"""How good are the estimated wait and the Erlang C staffing forecast? Measured, not assumed.

Events go in time order through the real engine (``Engine`` over ``MemoryState``), and:

* **estimated wait**: at each ``call.offered``, just before the engine takes it, the estimate
  for a caller joining that queue now (:func:`kpi_core.kpis.queue_outlook`, the function
  behind ``ccmon_estimated_wait_seconds``) is set against the wait that caller then had
  (``call.answered``'s ``wait_seconds``). Abandoned calls are censored (their wait would have
  been longer) and left out; how many is printed. Figures: median and p90 of the absolute
  error, bias (mean estimate - actual), and the mean actual wait for scale. Three methods:
  ``queue_length`` ((ahead - free + 1) x AHT / staffed, what ccmon exports when it knows the
  agents' states), ``recent_asa`` (the mean wait of the calls answered in the last 15
  minutes, the delay history: what it exports without agent states, from call records
  alone), ``answer_rate`` ((ahead + 1) / answers per second over 15 minutes, the other
  call-records-only candidate) and ``erlang_c_mean`` (the Erlang C mean wait of
  every caller, C x AHT / (N - A): state-blind, for comparison).
* **staffing forecast**: at every quarter hour, per queue, the forecast service level
  (``ccmon_staffing_service_level_forecast``) against the service level the engine then
  reported for the next 15 minutes (``ccmon_service_level_ratio{window="15m"}`` a quarter
  later), over quarters with at least ``--min-calls`` calls; and whether a queue staffed at or
  above ``ccmon_staffing_agents_required`` met its target. The same for Erlang A's forecast
  (``ccmon_staffing_service_level_forecast_erlang_a``, ``erlang_a_forecast``).

Data: the simulator (``streams.sim``, default queues, a working day, agent states
included), and the Anonymous Bank's call records (``tests/data/anonymous_bank_1999`` through
``deploy/sources/anonymous_bank_1999.toml``). The bank's records have no agent states: its
"staffed" agents are a proxy, the distinct agents who answered the queue's calls in the last
15 minutes, of whom those with a call of the queue in service are busy; the ``answer_rate``
method needs no proxy.

    python bench/bench_staffing.py                       # both data sets
    python bench/bench_staffing.py --only sim --hours 8  # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from kpi_core.config import Config  # noqa: E402
from kpi_core.engine import AGENTS, WAITING, Engine  # noqa: E402
from kpi_core.erlang import erlang_c  # noqa: E402
from kpi_core.events import parse_event  # noqa: E402
from kpi_core.kpis import STAFFING_WINDOW_SECONDS, queue_outlook, service_level_parts  # noqa: E402
from kpi_core.state import MemoryState  # noqa: E402

QUARTER = STAFFING_WINDOW_SECONDS
METHODS = ("queue_length", "answer_rate", "recent_asa", "erlang_c_mean")


def estimates(
    comps: dict[str, float], states: dict[str, int], waiting: int, config: Config, queue: str, tenant: str
) -> dict[str, float | None]:
    """Each method's estimate for a caller joining ``queue`` now."""
    queue_config = config.queue(tenant, queue)
    with_agents = queue_outlook(comps, states, waiting, queue_config)
    call_records_only = queue_outlook(comps, {}, waiting, queue_config)
    free = states.get("available", 0)
    mean: float | None = None
    if waiting < free:
        mean = 0.0
    elif with_agents.aht_seconds and with_agents.staffed:
        load = with_agents.arrivals_per_second * with_agents.aht_seconds
        if load < with_agents.staffed:
            mean = erlang_c(with_agents.staffed, load) * with_agents.aht_seconds / (with_agents.staffed - load)
    answered = comps.get("answered", 0.0)
    return {
        "queue_length": with_agents.estimated_wait_seconds if with_agents.staffed else None,
        "answer_rate": (waiting + 1) * QUARTER / answered if answered else None,
        "erlang_c_mean": mean,
        "recent_asa": call_records_only.estimated_wait_seconds,
    }


class AgentProxy:
    """Staffed and busy agents per queue from call records alone (no agent states)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.in_service: dict[str, dict[str, str]] = defaultdict(dict)  # queue -> call -> agent

    def see(self, event: dict[str, Any]) -> None:
        queue, call = str(event.get("queue")), str(event.get("call_id"))
        if event["type"] == "call.answered":
            self.answers[queue].append((event["ts"], event.get("agent_id", "")))
            self.in_service[queue][call] = event.get("agent_id", "")
        elif event["type"] == "call.ended":
            self.in_service[queue].pop(call, None)

    def states(self, queue: str, at: float) -> dict[str, int]:
        recent = self.answers[queue]
        while recent and recent[0][0] < at - QUARTER:
            recent.pop(0)
        busy = set(self.in_service[queue].values())
        staffed = {agent for _ts, agent in recent} | busy
        return {"available": len(staffed - busy), "on_call": len(busy)}


def measure(
    events: Iterable[tuple[float, dict[str, Any]]], config: Config, *, proxy: bool, min_calls: int
) -> dict[str, Any]:
    store = MemoryState()
    engine = Engine(config, store)
    agents = AgentProxy() if proxy else None
    pending: dict[tuple[str, str, str], dict[str, float | None]] = {}
    errors: dict[str, list[float]] = {m: [] for m in METHODS}
    actual_waits: list[float] = []
    censored = 0
    queues: set[tuple[str, str]] = set()
    forecasts: dict[tuple[str, str], tuple[float, float | None, int | None, int, float | None]] = {}
    quarters: list[dict[str, Any]] = []
    next_quarter: float | None = None

    def states_of(tenant: str, queue: str, at: float) -> dict[str, int]:
        if agents is not None:
            return agents.states(queue, at)
        return store.live_states(AGENTS, tenant, queue, at)[1]

    def waiting_of(tenant: str, queue: str, at: float) -> int:
        return store.live_summary(WAITING, tenant, queue, at - config.max_call_age_seconds, at, at).size

    def quarter(at: float) -> None:
        for tenant, queue in sorted(queues):
            comps = store.read_window(tenant, queue, at - QUARTER, at)
            made = forecasts.pop((tenant, queue), None)
            if made is not None:
                sl_num, sl_den = service_level_parts(comps, config.queue(tenant, queue).sl_formula)
                if sl_den >= min_calls and made[1] is not None:
                    target = config.queue(tenant, queue).targets.get("service_level", 0.8)
                    quarters.append(
                        {
                            "queue": queue,
                            "at": at - QUARTER,
                            "forecast": made[1],
                            "required": made[2],
                            "staffed": made[3],
                            "actual": sl_num / sl_den,
                            "target": target,
                            "forecast_erlang_a": made[4],
                        }
                    )
            states = states_of(tenant, queue, at)
            outlook = queue_outlook(comps, states, waiting_of(tenant, queue, at), config.queue(tenant, queue))
            forecasts[(tenant, queue)] = (
                at,
                outlook.service_level_forecast,
                outlook.agents_required,
                outlook.staffed,
                outlook.service_level_forecast_erlang_a,
            )

    for at, record in events:
        if next_quarter is None:
            next_quarter = math.ceil(at / QUARTER) * QUARTER
        while at >= next_quarter:
            quarter(next_quarter)
            next_quarter += QUARTER
        kind = record["type"]
        tenant = record.get("tenant", "default")
        if kind == "call.offered":
            queue = record["queue"]
            queues.add((tenant, queue))
            comps = store.read_window(tenant, queue, at - QUARTER, at)
            guess = estimates(comps, states_of(tenant, queue, at), waiting_of(tenant, queue, at), config, queue, tenant)
            pending[(tenant, record["call_id"], queue)] = guess
        elif kind == "call.answered":
            answered_guess = pending.pop((tenant, record["call_id"], record["queue"]), None)
            if answered_guess is not None:
                wait = float(record["wait_seconds"])
                actual_waits.append(wait)
                for method, value in answered_guess.items():
                    if value is not None:
                        errors[method].append(value - wait)
        elif kind in ("call.abandoned", "call.timeout", "call.voicemail", "call.transferred"):
            key = (tenant, record["call_id"], record.get("queue", ""))
            if key in pending:
                del pending[key]
                censored += 1
        if agents is not None:
            agents.see(record)
        engine.handle(parse_event(record), at)
    return {"waits": summarize_waits(errors, actual_waits, censored), "staffing": summarize_quarters(quarters)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize_waits(errors: dict[str, list[float]], actual: list[float], censored: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "answered_calls": len(actual),
        "censored_calls": censored,
        "mean_actual_wait": round(statistics.fmean(actual), 1) if actual else None,
        "median_actual_wait": round(_quantile(actual, 0.5), 1) if actual else None,
    }
    for method, errs in errors.items():
        if not errs:
            continue
        absolute = [abs(e) for e in errs]
        out[method] = {
            "calls": len(errs),
            "median_abs_error": round(_quantile(absolute, 0.5), 1),
            "p90_abs_error": round(_quantile(absolute, 0.9), 1),
            "bias": round(statistics.fmean(errs), 1),
            "mean_abs_error": round(statistics.fmean(absolute), 1),
        }
    return out


def summarize_quarters(quarters: list[dict[str, Any]]) -> dict[str, Any]:
    if not quarters:
        return {"quarters": 0}
    diffs = [q["forecast"] - q["actual"] for q in quarters]
    enough = [q for q in quarters if q["required"] is not None and q["staffed"] >= q["required"]]
    short = [q for q in quarters if q["required"] is not None and q["staffed"] < q["required"]]

    def met(rows: list[dict[str, Any]]) -> float | None:
        return round(sum(q["actual"] >= q["target"] for q in rows) / len(rows), 3) if rows else None

    actual = [q["actual"] for q in quarters]
    forecast = [q["forecast"] for q in quarters]
    corr = statistics.correlation(forecast, actual) if len(quarters) > 2 and len(set(forecast)) > 1 else None
    erlang_a_diffs = [q["forecast_erlang_a"] - q["actual"] for q in quarters if q["forecast_erlang_a"] is not None]
    erlang_a = (
        {
            "quarters": len(erlang_a_diffs),
            "mean_abs_error": round(statistics.fmean(abs(d) for d in erlang_a_diffs), 3),
            "median_abs_error": round(_quantile([abs(d) for d in erlang_a_diffs], 0.5), 3),
            "bias": round(statistics.fmean(erlang_a_diffs), 3),
        }
        if erlang_a_diffs
        else None
    )
    return {
        "erlang_a_forecast": erlang_a,
        "quarters": len(quarters),
        "mean_abs_error": round(statistics.fmean(abs(d) for d in diffs), 3),
        "median_abs_error": round(_quantile([abs(d) for d in diffs], 0.5), 3),
        "bias": round(statistics.fmean(diffs), 3),
        "correlation": round(corr, 3) if corr is not None else None,
        "staffed_at_or_above_required": len(enough),
        "met_target_when_staffed": met(enough),
        "below_required": len(short),
        "met_target_when_short": met(short),
    }


def simulator_events(hours: float, seed: int, queues: int) -> Iterator[tuple[float, dict[str, Any]]]:
    from streams.sim import SimParams, Simulator, default_queues

    start = 1_795_132_800.0  # 2026-11-20T00:00:00Z, a Friday
    sim = Simulator(SimParams(start=start, hours=hours, queues=default_queues(queues), seed=seed))
    for at, record in sim.stream():
        if isinstance(record, dict):
            yield at, record


def bank_events(month: str) -> Iterator[tuple[float, dict[str, Any]]]:
    from realdata import real_data

    from streams.sources.cdr import load_mapping, map_file

    mapping = load_mapping(REPO / "deploy" / "sources" / "anonymous_bank_1999.toml")
    events = map_file(str(real_data(f"anonymous_bank_1999/{month}.txt")), mapping)
    # A call served without queueing is offered and answered at the same second: offer first.
    for event in sorted(events, key=lambda e: (e["ts"], e["type"] != "call.offered", e["event_id"])):
        yield event["ts"], event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("sim", "bank"), help="one data set only")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--month", default="january", choices=("january", "october"))
    parser.add_argument("--min-calls", type=int, default=10, help="quarters with fewer calls are left out")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    config = Config()
    result: dict[str, Any] = {}
    if args.only in (None, "sim"):
        result["simulator"] = measure(
            simulator_events(args.hours, args.seed, args.queues), config, proxy=False, min_calls=args.min_calls
        )
        result["simulator"]["params"] = {"hours": args.hours, "seed": args.seed, "queues": args.queues}
    if args.only in (None, "bank"):
        result["bank"] = measure(bank_events(args.month), config, proxy=True, min_calls=args.min_calls)
        result["bank"]["params"] = {"month": args.month}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
