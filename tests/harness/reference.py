"""A deliberately naive, brute-force reference for the KPI engine.

Written from ``docs/KPIS.md`` (and the decisions ``docs/KPI_ENGINE.md`` records where
the spec is silent), not from ``kpi_core/engine/``. It keeps no buckets, no contributions
and no incremental state: for every ``(tenant, queue, window)`` it scans the whole list of
events again and recomputes each KPI from its definition. It is slow on purpose and only
meant for the small streams of the property tests.

Engine decisions mirrored here (where the spec is silent):

* ties in time are broken by ``event_id``; a call's outcome is its earliest terminal event;
* a call re-offered under the same ``call_id`` is one *leg* per offer; a terminal, ring or
  end event goes to the latest offer at or before its ``ts`` among the offers of the queue
  it names (or of any queue when it names none); when there is no such earlier offer it goes
  to the earliest candidate; with no offer at all in the queue it names it forms an offer-less
  leg in that queue (counted there; no wait unless ``wait_seconds``);
* a computed wait below zero is 0; ``transferred`` is an outcome in the maximum wait but not
  in the average wait; ``call.ended`` counts its leg's first end event;
* callbacks: one due per customer, tenant-wide; a callback's due time and queue are its
  earliest request's, its customer whichever of its requests names one; at equal ``ts``
  openers (missed, request) come before closers (answered, attempt, outbound); within those,
  by kind name then id;
* events with ``ts >= at`` are left out; events older than
  ``min(at - longest sliding window, local midnight of at)`` are ``too_late``;
* a window holds ``[at - W, at)`` (or ``[local midnight, at)`` for ``today``).

:func:`reference_kpis` returns ``{(metric, labels): value}`` in the shape of
``kpi_core.kpis.flatten`` for the metrics in :data:`COVERED`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kpi_core.config import Config, Window
from kpi_core.events import Event

ALL = "_all"
TERMINALS = {
    "call.answered": "answered",
    "call.abandoned": "abandoned",
    "call.timeout": "timeout",
    "call.voicemail": "voicemail",
    "call.transferred": "transferred",
}
MISSED = ("abandoned", "timeout", "voicemail")
BUSY = ("on_call", "acw")
STAFFED = ("available", "on_call", "acw")
STATES = ("available", "on_call", "acw", "away", "offline")

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]

#: Windowed metrics the reference computes (labels tenant, queue, window).
WINDOWED_COVERED = (
    "ccmon_calls_offered",
    "ccmon_calls_answered",
    "ccmon_calls_abandoned",
    "ccmon_calls_abandoned_short",
    "ccmon_calls_timed_out",
    "ccmon_calls_voicemail",
    "ccmon_calls_transferred_unanswered",
    "ccmon_calls_missed",
    "ccmon_calls_answered_within_threshold",
    "ccmon_service_level_numerator",
    "ccmon_service_level_denominator",
    "ccmon_service_level_ratio",
    "ccmon_average_speed_of_answer_seconds",
    "ccmon_answered_wait_time_seconds",
    "ccmon_average_wait_seconds",
    "ccmon_wait_time_seconds",
    "ccmon_waits",
    "ccmon_max_wait_seconds",
    "ccmon_abandon_rate_ratio",
    "ccmon_voicemail_share_ratio",
    "ccmon_agent_missed_rings",
    "ccmon_transfers_out",
    "ccmon_calls_handled",
    "ccmon_average_handle_time_seconds",
    "ccmon_average_talk_time_seconds",
    "ccmon_repeat_caller_ratio",
    "ccmon_outbound_conversion_ratio",
    "ccmon_callback_delay_seconds",
    "ccmon_callback_delay_max_seconds",
    "ccmon_callbacks_made",
    "ccmon_callbacks_recontacted",
    "ccmon_callbacks_due",
    "ccmon_tickets_created",
    "ccmon_ticket_first_response_seconds",
    "ccmon_ticket_response_seconds",
    "ccmon_ticket_resolution_seconds",
    "ccmon_tickets_resolved",
    "ccmon_ticket_resolution_rate_ratio",
    "ccmon_ticket_reopen_rate_ratio",
    "ccmon_csat_ratio",
    "ccmon_nps_score",
    "ccmon_ces_score",
    "ccmon_first_contact_resolution_ratio",
    "ccmon_occupancy_ratio",
)
#: Live metrics (labels tenant, queue; agents also state).
LIVE_COVERED = (
    "ccmon_calls_waiting",
    "ccmon_longest_wait_seconds",
    "ccmon_callbacks_pending",
    "ccmon_oldest_pending_callback_age_seconds",
    "ccmon_callbacks_overdue",
    "ccmon_tickets_open",
    "ccmon_open_ticket_age_seconds",
    "ccmon_agents",
)
COVERED = WINDOWED_COVERED + LIVE_COVERED


# --------------------------------------------------------------------------------------
# time
# --------------------------------------------------------------------------------------
def local_midnight(at: float, zone: Any) -> float:
    """First instant of ``at``'s local date (naively: scan forward from 00:00 local)."""
    day = datetime.fromtimestamp(at, zone).date()
    for minutes in range(0, 24 * 60, 15):
        naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
        aware = naive.replace(tzinfo=zone)
        back = datetime.fromtimestamp(aware.timestamp(), zone)
        if back.replace(tzinfo=None) == naive:
            return aware.timestamp()
    raise AssertionError("no first instant found")


def window_start(window: Window, at: float, zone: Any) -> float:
    return local_midnight(at, zone) if window.is_today else at - window.seconds


def lateness_cutoff(config: Config, tenant: str, at: float) -> float:
    cutoff = at - config.longest_sliding_seconds
    if config.has_today:
        cutoff = min(cutoff, local_midnight(at, config.timezone(tenant)))
    return cutoff


def order(e: Event) -> tuple[float, str]:
    return (e.ts, e.event_id)


# --------------------------------------------------------------------------------------
# entities
# --------------------------------------------------------------------------------------
@dataclass
class Leg:
    tenant: str
    call_id: str
    queue: str
    direction: str
    offer: Event | None
    terminals: list[Event] = field(default_factory=list)
    rings: list[Event] = field(default_factory=list)
    ended: list[Event] = field(default_factory=list)

    @property
    def offer_ts(self) -> float | None:
        return self.offer.ts if self.offer is not None else None

    @property
    def outcome(self) -> Event | None:
        return min(self.terminals, key=order) if self.terminals else None

    @property
    def kind(self) -> str | None:
        out = self.outcome
        return TERMINALS[out.type] if out is not None else None

    @property
    def wait(self) -> float | None:
        out = self.outcome
        if out is None:
            return None
        if out.wait_seconds is not None:
            return out.wait_seconds
        if self.offer is None:
            return None
        return max(0.0, out.ts - self.offer.ts)

    @property
    def first_end(self) -> Event | None:
        return min(self.ended, key=order) if self.ended else None


def build_legs(events: Sequence[Event]) -> tuple[list[Leg], dict[tuple[str, str], str]]:
    """Every leg of every call, and the customer of each call ``(tenant, call_id)``."""
    by_call: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        if e.type.startswith("call."):
            assert e.call_id is not None
            by_call[(e.tenant, e.call_id)].append(e)
    legs: list[Leg] = []
    customers: dict[tuple[str, str], str] = {}
    for (tenant, call_id), evs in by_call.items():
        offers = sorted((e for e in evs if e.type == "call.offered"), key=order)
        for e in evs:  # the customer of the first offer (in arrival order) that names one
            if e.type == "call.offered" and e.customer_id is not None:
                customers[(tenant, call_id)] = e.customer_id
                break
        call_legs = [Leg(tenant, call_id, o.queue or "", o.direction, o) for o in offers]
        offerless: dict[str, Leg] = {}
        for e in evs:
            if e.type == "call.offered":
                continue
            candidates = [leg for leg in call_legs if e.queue is None or leg.queue == e.queue]
            if candidates:
                earlier = [leg for leg in candidates if leg.offer_ts is not None and leg.offer_ts <= e.ts]
                leg = earlier[-1] if earlier else candidates[0]
            elif e.queue is None:
                continue  # nowhere to count it
            else:
                leg = offerless.setdefault(e.queue, Leg(tenant, call_id, e.queue, "inbound", None))
            if e.type in TERMINALS:
                leg.terminals.append(e)
            elif e.type == "call.ring_no_answer":
                leg.rings.append(e)
            else:
                leg.ended.append(e)
        legs.extend(call_legs)
        legs.extend(offerless[q] for q in sorted(offerless))
    return legs, customers


@dataclass
class Callback:
    """One callback: due at ``due`` in ``queue``; closed at ``close`` (or pending)."""

    tenant: str
    queue: str
    due: float
    close: float | None = None
    recontacted: bool = False
    customer: str | None = None


def build_callbacks(
    events: Sequence[Event], legs: Sequence[Leg], customers: dict[tuple[str, str], str], config: Config
) -> list[Callback]:
    requests: dict[tuple[str, str], Event] = {}
    request_customer: dict[tuple[str, str], str] = {}
    attempts: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        if e.type == "callback.requested":
            key = (e.tenant, e.callback_id or "")
            if key not in requests or order(e) < order(requests[key]):
                requests[key] = e
            if e.customer_id is not None:  # the customer is whichever request names one
                request_customer.setdefault(key, e.customer_id)
        elif e.type == "callback.attempted":
            attempts[(e.tenant, e.callback_id or "")].append(e.ts)
    result: list[Callback] = []
    # Requests without a customer stand alone: closed by their first attempt at/after due.
    for (tenant, cb_id), req in requests.items():
        if (tenant, cb_id) not in request_customer:
            cb = Callback(tenant, req.queue or "", req.ts)
            later = sorted(ts for ts in attempts[(tenant, cb_id)] if ts >= req.ts)
            if later:
                cb.close = later[0]
            result.append(cb)
    # Per customer, tenant-wide: a timeline of openers and closers.
    timelines: dict[tuple[str, str], list[tuple[float, int, str, str, str | None]]] = defaultdict(list)
    for leg in legs:
        customer = customers.get((leg.tenant, leg.call_id))
        if customer is None:
            continue
        line = timelines[(leg.tenant, customer)]
        if leg.direction == "outbound":
            if leg.offer is not None:
                line.append((leg.offer.ts, 1, "outbound", leg.call_id, leg.queue))
            continue
        out = leg.outcome
        if out is None:
            continue
        kind = TERMINALS[out.type]
        if kind in MISSED and config.callback_on_missed:
            line.append((out.ts, 0, "missed", f"m:{leg.call_id}:{out.ts}", leg.queue))
        elif kind == "answered":
            line.append((out.ts, 1, "answered", leg.call_id, leg.queue))
    for (tenant, cb_id), req in requests.items():
        if (tenant, cb_id) not in request_customer:
            continue
        line = timelines[(tenant, request_customer[(tenant, cb_id)])]
        line.append((req.ts, 0, "request", cb_id, req.queue))
        for ts in attempts[(tenant, cb_id)]:
            line.append((ts, 1, "attempt", cb_id, None))
    for (tenant, customer), line in timelines.items():
        line.sort(key=lambda item: (item[0], item[1], item[2], item[3]))
        current: Callback | None = None
        aliases: set[str] = set()
        for ts, _o, kind, ident, queue in line:
            if kind in ("missed", "request"):
                if current is None:
                    current = Callback(tenant, queue or "", ts, customer=customer)
                    aliases = {ident}
                else:
                    aliases.add(ident)
                continue
            if current is None or (kind == "attempt" and ident not in aliases):
                continue
            current.close = ts
            current.recontacted = kind == "answered"
            result.append(current)
            current = None
        if current is not None:
            result.append(current)
    return result


# --------------------------------------------------------------------------------------
# the reference
# --------------------------------------------------------------------------------------
def accepted_events(events: Iterable[Event], config: Config, at: float) -> list[Event]:
    """What the engine keeps: the first of each ``(tenant, event_id)``, ``ts < at``, not too
    late."""
    seen: set[tuple[str, str]] = set()
    kept: list[Event] = []
    for e in events:
        if e.ts >= at or e.ts < lateness_cutoff(config, e.tenant, at):
            continue
        if (e.tenant, e.event_id) in seen:
            continue
        seen.add((e.tenant, e.event_id))
        kept.append(e)
    return kept


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _sl_parts(legs: Sequence[Leg], config: Config) -> tuple[float, float]:
    """Sum of each outcome leg's contribution to the numerator and denominator of its own
    queue's service-level formula."""
    num = den = 0.0
    for leg in legs:
        qc = config.queue(leg.tenant, leg.queue)
        kind, wait = leg.kind, leg.wait
        answered = kind == "answered"
        abandoned = kind == "abandoned"
        within = answered and wait is not None and wait <= qc.sl_threshold_seconds
        short = abandoned and wait is not None and wait < qc.short_abandon_seconds
        ab_within = abandoned and wait is not None and wait <= qc.sl_threshold_seconds
        ab_after = abandoned and wait is not None and wait > qc.sl_threshold_seconds
        formula = qc.sl_formula
        if formula == "default":
            num += within
            den += answered + abandoned - short
        elif formula == "answered":
            num += within
            den += answered
        elif formula == "offered":
            num += within
            den += answered + abandoned
        elif formula == "removed_within":
            num += within + ab_within
            den += answered + abandoned
        elif formula == "abandoned_after":
            num += within
            den += answered + ab_after
        else:  # pragma: no cover
            raise AssertionError(formula)
    return num, den


def _occupancy(events: Sequence[Event], tenant: str, queue: str, start: float, end: float) -> float | None:
    """Integrate busy and staffed agent-seconds over ``[start, end)`` from each agent's
    piecewise-constant state."""
    by_agent: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if e.type == "agent.state" and e.tenant == tenant:
            by_agent[e.agent_id or ""].append(e)
    busy = staffed = 0.0
    for changes in by_agent.values():
        changes.sort(key=order)
        queues: tuple[str, ...] = ()
        spans: list[tuple[float, str, tuple[str, ...]]] = []
        for c in changes:
            if c.queues is not None:
                queues = c.queues
            spans.append((c.ts, c.state or "", queues))
        for i, (ts, state, qs) in enumerate(spans):
            if queue != ALL and queue not in qs:
                continue
            until = spans[i + 1][0] if i + 1 < len(spans) else end
            overlap = max(0.0, min(until, end) - max(ts, start))
            if state in BUSY:
                busy += overlap
            if state in STAFFED:
                staffed += overlap
    return _ratio(busy, staffed)


def reference_kpis(
    events: Iterable[Event], config: Config, at: float, scopes: dict[str, Iterable[str]] | None = None
) -> dict[Key, float]:
    """Every covered KPI for every tenant, for the queues named by the events (or ``scopes``:
    tenant -> queues), and ``_all``."""
    evs = accepted_events(events, config, at)
    legs, customers = build_legs(evs)
    callbacks = build_callbacks(evs, legs, customers, config)
    tickets = _tickets(evs)
    out: dict[Key, float] = {}

    tenants: dict[str, set[str]] = defaultdict(set)
    for e in evs:
        names = [e.queue] if e.queue else []
        if e.type == "agent.state" and e.queues:
            names = list(e.queues)
        tenants[e.tenant].update(n for n in names if n)
    for leg in legs:
        tenants[leg.tenant].add(leg.queue)
    if scopes is not None:
        for tenant, queues in scopes.items():
            tenants[tenant].update(queues)

    for tenant, queue_names in sorted(tenants.items()):
        zone = config.timezone(tenant)
        tlegs = [leg for leg in legs if leg.tenant == tenant]
        tcbs = [cb for cb in callbacks if cb.tenant == tenant]
        ttickets = [t for t in tickets if t["tenant"] == tenant]
        tevents = [e for e in evs if e.tenant == tenant]
        for queue in [*sorted(queue_names), ALL]:

            def mine(q: str | None, queue: str = queue) -> bool:
                return queue == ALL or q == queue

            qlegs = [leg for leg in tlegs if mine(leg.queue)]
            for window in config.windows:
                start = window_start(window, at, zone)

                def inw(ts: float | None, start: float = start) -> bool:
                    return ts is not None and start <= ts < at

                labels = (("tenant", tenant), ("queue", queue), ("window", window.name))
                values = _windowed(
                    config, tevents, tlegs, qlegs, tcbs, ttickets, customers, mine, inw, tenant, queue, start, at
                )
                for name, value in values.items():
                    if isinstance(name, tuple):
                        metric, extra = name
                        if value is not None:
                            out[(metric, (*labels, extra))] = value
                    elif value is not None:
                        out[(name, labels)] = value
            for name, value in _live(config, tevents, qlegs, tcbs, ttickets, mine, queue, at, queue_names).items():
                if isinstance(name, tuple):
                    metric, extra = name
                    extras = extra if isinstance(extra[0], tuple) else (extra,)
                    out[(metric, (("tenant", tenant), ("queue", queue), *extras))] = value
                elif value is not None:
                    out[(name, (("tenant", tenant), ("queue", queue)))] = value
    return out


def _windowed(
    config, tevents, tlegs, qlegs, tcbs, ttickets, customers, mine, inw, tenant, queue, start, at
) -> dict[Any, float | None]:
    v: dict[Any, float | None] = {}
    inbound = [leg for leg in qlegs if leg.direction == "inbound"]
    offered = [leg for leg in inbound if leg.offer is not None and inw(leg.offer.ts)]
    done = [leg for leg in inbound if leg.outcome is not None and inw(leg.outcome.ts)]

    def outcome(kind: str) -> list[Leg]:
        return [leg for leg in done if leg.kind == kind]

    answered, abandoned = outcome("answered"), outcome("abandoned")
    timeouts, voicemails, transferred = outcome("timeout"), outcome("voicemail"), outcome("transferred")
    short = [
        leg
        for leg in abandoned
        if leg.wait is not None and leg.wait < config.queue(leg.tenant, leg.queue).short_abandon_seconds
    ]
    within = [
        leg
        for leg in answered
        if leg.wait is not None and leg.wait <= config.queue(leg.tenant, leg.queue).sl_threshold_seconds
    ]
    v["ccmon_calls_offered"] = len(offered)
    v["ccmon_calls_answered"] = len(answered)
    v["ccmon_calls_abandoned"] = len(abandoned)
    v["ccmon_calls_abandoned_short"] = len(short)
    v["ccmon_calls_timed_out"] = len(timeouts)
    v["ccmon_calls_voicemail"] = len(voicemails)
    v["ccmon_calls_transferred_unanswered"] = len(transferred)
    missed = len(abandoned) + len(timeouts) + len(voicemails)
    v["ccmon_calls_missed"] = missed
    v["ccmon_calls_answered_within_threshold"] = len(within)
    num, den = _sl_parts(done, config)
    v["ccmon_service_level_numerator"] = num
    v["ccmon_service_level_denominator"] = den
    v["ccmon_service_level_ratio"] = _ratio(num, den)
    answered_waits = [leg.wait for leg in answered if leg.wait is not None]
    v["ccmon_average_speed_of_answer_seconds"] = _mean(answered_waits)
    v["ccmon_answered_wait_time_seconds"] = sum(answered_waits)
    waits = [leg.wait for leg in answered + abandoned + timeouts + voicemails if leg.wait is not None]
    v["ccmon_average_wait_seconds"] = _mean(waits)
    v["ccmon_wait_time_seconds"] = sum(waits)
    v["ccmon_waits"] = len(waits)
    all_waits = [leg.wait for leg in done if leg.wait is not None]
    v["ccmon_max_wait_seconds"] = max(all_waits) if all_waits else None
    v["ccmon_abandon_rate_ratio"] = _ratio(len(abandoned) - len(short), len(answered) + len(abandoned) - len(short))
    v["ccmon_voicemail_share_ratio"] = _ratio(len(voicemails), missed)
    v["ccmon_agent_missed_rings"] = sum(1 for leg in inbound for r in leg.rings if inw(r.ts))
    v["ccmon_transfers_out"] = sum(
        1
        for leg in inbound
        if any(t.type == "call.transferred" for t in leg.terminals)
        and inw(min(t.ts for t in leg.terminals if t.type == "call.transferred"))
    )
    ends = [leg.first_end for leg in inbound if leg.first_end is not None and inw(leg.first_end.ts)]
    v["ccmon_calls_handled"] = len(ends)
    v["ccmon_average_handle_time_seconds"] = _mean(
        [(e.talk_seconds or 0) + (e.hold_seconds or 0) + (e.acw_seconds or 0) for e in ends]
    )
    v["ccmon_average_talk_time_seconds"] = _mean([e.talk_seconds or 0 for e in ends])
    judged = [e for e in ends if e.resolved is not None]
    v[("ccmon_first_contact_resolution_ratio", ("channel", "voice"))] = _ratio(
        sum(1 for e in judged if e.resolved), len(judged)
    )
    # Repeat callers: inbound offers of calls with a customer; a repeat when another call of
    # the same customer (tenant-wide) was offered in [ts - look-back, ts).
    look_back = config.repeat_caller_seconds
    with_customer = [leg for leg in offered if (leg.tenant, leg.call_id) in customers]
    all_offers = [
        (leg.call_id, customers[(leg.tenant, leg.call_id)], leg.offer.ts)
        for leg in tlegs
        if leg.direction == "inbound" and leg.offer is not None and (leg.tenant, leg.call_id) in customers
    ]
    repeats = 0
    for leg in with_customer:
        customer = customers[(leg.tenant, leg.call_id)]
        ts = leg.offer.ts  # type: ignore[union-attr]
        if any(c == customer and cid != leg.call_id and ts - look_back <= t < ts for cid, c, t in all_offers):
            repeats += 1
    v["ccmon_repeat_caller_ratio"] = _ratio(repeats, len(with_customer))
    outbound_ends = [
        leg.first_end
        for leg in qlegs
        if leg.direction == "outbound" and leg.first_end is not None and inw(leg.first_end.ts)
    ]
    v["ccmon_outbound_conversion_ratio"] = _ratio(
        sum(1 for e in outbound_ends if e.outcome == "sale"), len(outbound_ends)
    )
    # Callbacks closed in the window.
    qcbs = [cb for cb in tcbs if mine(cb.queue)]
    made = [cb for cb in qcbs if cb.close is not None and not cb.recontacted and inw(cb.close)]
    delays = [cb.close - cb.due for cb in made]  # type: ignore[operator]
    v["ccmon_callback_delay_seconds"] = _mean(delays)
    v["ccmon_callback_delay_max_seconds"] = max(delays) if delays else None
    v["ccmon_callbacks_made"] = len(made)
    v["ccmon_callbacks_recontacted"] = sum(1 for cb in qcbs if cb.recontacted and inw(cb.close))
    v["ccmon_callbacks_due"] = sum(1 for cb in qcbs if inw(cb.due))
    # Tickets.
    qt = [t for t in ttickets if t["queue"] is not None and mine(t["queue"])]
    v["ccmon_tickets_created"] = sum(1 for t in qt if t["created"] is not None and inw(t["created"].ts))
    frts = [t["frt"] for t in qt if t["frt"] is not None and inw(t["frt"][0])]
    v["ccmon_ticket_first_response_seconds"] = _mean([d for _ts, d in frts])
    rts = [d for t in qt for ts, d in t["responses"] if inw(ts)]
    v["ccmon_ticket_response_seconds"] = _mean(rts)
    firsts = [t for t in qt if t["resolutions"] and inw(t["resolutions"][0].ts)]
    v["ccmon_ticket_resolution_seconds"] = _mean(
        [max(0.0, t["resolutions"][0].ts - t["created"].ts) for t in firsts if t["created"] is not None]
    )
    resolutions = [r for t in qt for r in t["resolutions"] if inw(r.ts)]
    v["ccmon_tickets_resolved"] = len(resolutions)
    solved = sum(1 for r in resolutions if r.resolution == "solved")
    unresolvable = sum(1 for r in resolutions if r.resolution == "unresolvable")
    v["ccmon_ticket_resolution_rate_ratio"] = _ratio(solved, solved + unresolvable)
    reopens = sum(1 for t in qt for r in t["reopens"] if inw(r.ts))
    v["ccmon_ticket_reopen_rate_ratio"] = _ratio(reopens, len(resolutions))
    v[("ccmon_first_contact_resolution_ratio", ("channel", "ticket"))] = _ratio(
        sum(1 for t in firsts if t["fcr"]), len(firsts)
    )
    # Surveys.
    surveys = [e for e in tevents if e.type == "survey.response" and mine(e.queue) and inw(e.ts)]
    csat = [e for e in surveys if e.survey == "csat"]
    v["ccmon_csat_ratio"] = _ratio(sum(1 for e in csat if e.score >= (e.scale_max or 5) - 1), len(csat))
    nps = [e.score for e in surveys if e.survey == "nps"]
    v["ccmon_nps_score"] = (
        100.0 * (sum(1 for s in nps if s >= 9) - sum(1 for s in nps if s <= 6)) / len(nps) if nps else None
    )
    v["ccmon_ces_score"] = _mean([e.score for e in surveys if e.survey == "ces"])
    v["ccmon_occupancy_ratio"] = _occupancy(tevents, tenant, queue, start, at)
    return v


def _tickets(evs: Sequence[Event]) -> list[dict[str, Any]]:
    by_ticket: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in evs:
        if e.type.startswith("ticket."):
            by_ticket[(e.tenant, e.ticket_id or "")].append(e)
    result = []
    for (tenant, _tid), tevs in by_ticket.items():
        created_list = sorted((e for e in tevs if e.type == "ticket.created"), key=order)
        created = created_list[0] if created_list else None
        if created is not None:
            queue = created.queue
        else:  # the first later event that names a queue (arrival order)
            queue = next((e.queue for e in tevs if e.queue), None)
        replies = sorted((e for e in tevs if e.type == "ticket.replied"), key=order)
        resolutions = sorted((e for e in tevs if e.type == "ticket.resolved"), key=order)
        reopens = sorted((e for e in tevs if e.type == "ticket.reopened"), key=order)
        frt = None
        responses: list[tuple[float, float]] = []
        if created is not None:
            agent = [r for r in replies if r.author == "agent"]
            if agent:
                frt = (agent[0].ts, max(0.0, agent[0].ts - created.ts))
            waiting_since: float | None = created.ts
            for r in replies:
                if r.author == "customer":
                    if waiting_since is None:
                        waiting_since = r.ts
                elif waiting_since is not None:
                    responses.append((r.ts, max(0.0, r.ts - waiting_since)))
                    waiting_since = None
        fcr = None
        if resolutions:
            first = resolutions[0]
            if first.first_contact is not None:
                fcr = first.first_contact
            else:
                agent_before = sum(1 for r in replies if r.author == "agent" and r.ts <= first.ts)
                fcr = agent_before <= 1 and not reopens
        is_open = created is not None and (not resolutions or (bool(reopens) and reopens[-1].ts > resolutions[-1].ts))
        result.append(
            {
                "tenant": tenant,
                "queue": queue,
                "created": created,
                "frt": frt,
                "responses": responses,
                "resolutions": resolutions,
                "reopens": reopens,
                "fcr": fcr,
                "open": is_open,
            }
        )
    return result


def _live(config, tevents, qlegs, tcbs, ttickets, mine, queue, at, queue_names) -> dict[Any, float | None]:
    v: dict[Any, float | None] = {}
    max_age = config.max_call_age_seconds
    waiting = [
        leg.offer.ts
        for leg in qlegs
        if leg.direction == "inbound"
        and leg.offer is not None
        and leg.outcome is None
        and at - max_age <= leg.offer.ts < at
    ]
    v["ccmon_calls_waiting"] = len(waiting)
    v["ccmon_longest_wait_seconds"] = at - min(waiting) if waiting else 0.0
    pending = [cb for cb in tcbs if mine(cb.queue) and cb.close is None and cb.due < at]
    v["ccmon_callbacks_pending"] = len(pending)
    v["ccmon_oldest_pending_callback_age_seconds"] = at - min(cb.due for cb in pending) if pending else 0.0
    v["ccmon_callbacks_overdue"] = sum(
        1 for cb in pending if at - cb.due > config.queue(cb.tenant, cb.queue).callback_target_seconds
    )
    open_tickets = [t for t in ttickets if t["open"] and t["queue"] is not None and mine(t["queue"])]
    v["ccmon_tickets_open"] = len(open_tickets)
    v["ccmon_open_ticket_age_seconds"] = _mean([at - t["created"].ts for t in open_tickets])
    # Agents by their latest state (counted in each of their current queues, once in _all).
    latest: dict[str, tuple[str, tuple[str, ...], str]] = {}
    by_agent: dict[str, list[Event]] = defaultdict(list)
    for e in tevents:
        if e.type == "agent.state":
            by_agent[e.agent_id or ""].append(e)
    for agent, changes in by_agent.items():
        changes.sort(key=order)
        queues: tuple[str, ...] = ()
        for c in changes:
            if c.queues is not None:
                queues = c.queues
        # The reason label counts for away only (KPIS.md, ccmon_agents).
        label = config.reason_label(changes[-1].tenant, changes[-1].reason) if changes[-1].state == "away" else "none"
        latest[agent] = (changes[-1].state or "", queues, label)
    tenant_reasons = (*config.pause_reasons(tevents[0].tenant), "other") if tevents else ("other",)
    for state in STATES:
        for reason in ("none", *(tenant_reasons if state == "away" else ())):
            v[("ccmon_agents", (("state", state), ("reason", reason)))] = float(
                sum(1 for s, qs, r in latest.values() if s == state and r == reason and (queue == ALL or queue in qs))
            )
    return v


def quantile_bounds(waits: Sequence[float], q: float, bounds: Sequence[float]) -> tuple[float, float]:
    """The histogram bucket ``(lower, upper]`` that holds the nearest-rank ``q``-quantile of
    ``waits``: a bucketed quantile must lie within it (KPIS.md: error at most one bucket)."""
    ordered = sorted(waits)
    rank = max(1, math.ceil(q * len(ordered)))
    value = ordered[rank - 1]
    for i, upper in enumerate(bounds):
        if value <= upper:
            return (bounds[i - 1] if i else 0.0), upper
    raise AssertionError("no bucket")  # pragma: no cover


# --------------------------------------------------------------------------------------
# harness shared by the timeline tests (the engine side, not the reference)
# --------------------------------------------------------------------------------------
def run_engine(
    config: Config, events: Iterable[Event | dict[str, Any]], at: float, *, maintain: bool = False
) -> tuple[dict[Key, float], Any]:
    """Events (parsed or raw dicts) with ``ts < at`` through a fresh engine at ``now=at``;
    returns ``flatten(snapshot)`` and the engine."""
    from kpi_core.engine import Engine
    from kpi_core.events import parse_event
    from kpi_core.kpis import flatten, snapshot
    from kpi_core.state import MemoryState

    store = MemoryState(config.bucket_seconds, config.coarse_bucket_seconds)
    engine = Engine(config, store)
    for i, raw in enumerate(events):
        if isinstance(raw, dict):
            raw = parse_event({"event_id": f"t{i:04d}", **raw})
        if raw.ts < at:
            engine.handle(raw, at)
    if maintain:
        engine.maintain(at)
    return flatten(snapshot(config, store, at)), engine


def series(
    flat: dict[Key, float], metric: str, tenant: str = "default", queue: str = "q", **labels: str
) -> float | None:
    """One value of ``flatten`` output by its labels (``None`` when absent)."""
    for (name, key_labels), value in flat.items():
        if name != metric:
            continue
        d = dict(key_labels)
        wanted = {"tenant": tenant, "queue": queue, **labels}
        if d == wanted:
            return value
    return None
