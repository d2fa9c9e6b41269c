"""The KPI engine: folds validated events into a :class:`~kpi_core.state.StateStore`.

How it stays exact whatever the arrival order
---------------------------------------------
Every event belongs to an *entity*: a call, a customer (repeat callers and callbacks are
per customer, tenant-wide), a callback request, a ticket, an agent, a knowledge-base
session. The entity's record holds its facts (offers, outcomes, replies...) and the
*contributions* it has already added to the buckets: ``cid -> [scope, ts, {field: value}]``.
An event updates the facts, the engine recomputes the contributions the facts imply, and
applies only the difference (retracting what changed). The result is a pure function of the
set of facts, so shuffled or duplicated arrival ends in the same buckets as ordered arrival.

Every contribution value is a whole number (``kpi_core.state``, "Exact arithmetic"):
counts, durations in milliseconds (``*_sum_ms``: a duration between two event times is the
difference of the times in whole milliseconds, :func:`~kpi_core.state.to_ms`, so it is exact;
a duration an event carries, ``wait_seconds`` or ``talk_seconds``, is rounded to the
millisecond, half away from zero), the occupancy integrals ``occ_*_t_ms`` and the CES score
in thousandths. A maximum (longest wait, longest callback delay) is one ``mx:<name>:<ms>``
multiset field per contribution, retracted like any count, so the maxima are as exact and
order-independent as the sums.

One limit, documented in docs/KPI_ENGINE.md:

* Contributions older than the lateness horizon are frozen (no event can change them, since
  such events are rejected ``too_late``); a call record is kept for ``max_call_age`` after its
  last event, so an event for a call older than that starts a new record.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kpi_core.config import REASON_NONE, Config
from kpi_core.errors import InvalidEventError
from kpi_core.events import ALL, PULSE_SURVEYS, Event, Rejection
from kpi_core.state import (
    KB_SCOPE_PREFIX,
    Record,
    StateStore,
    is_queue_scope,
    max_field,
    retirable,
    to_ms,
)
from kpi_core.windows import local_midnight

#: Upper bounds (``le``) of the wait-time histogram, seconds. The service-level thresholds in
#: common use (10, 15, 20, 30, 45, 60, 90, 120 s) are all bounds, so quantiles are exact there.
WAIT_BUCKETS: tuple[float, ...] = (
    1, 2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 45, 50, 60, 75, 90, 120, 150, 180, 240, 300,
    420, 600, 900, 1200, 1800, 2700, 3600, 7200, 14400, float("inf"),
)  # fmt: skip

TERMINAL_KINDS = {
    "call.answered": "answered",
    "call.abandoned": "abandoned",
    "call.timeout": "timeout",
    "call.voicemail": "voicemail",
    "call.transferred": "transferred",
}
MISSED_KINDS = frozenset({"abandoned", "timeout", "voicemail"})
BUSY_STATES = frozenset({"on_call", "acw"})
STAFFED_STATES = frozenset({"available", "on_call", "acw"})
#: Logged in: every state but ``offline`` (the agent-hours outbound productivity divides by).
LOGGED_IN_STATES = frozenset({"available", "on_call", "acw", "away"})

#: Live set names.
WAITING = "waiting"
CALLBACKS = "callbacks"
TICKETS = "tickets"
AGENTS = "agents"
#: In an agents-set member ``<state>[\x1e<reason>]\x1f<agent>``, what separates an ``away``
#: agent's state from its ``reason`` label (:func:`agent_member`; no reason: the state alone).
REASON_SEP = "\x1e"
#: Record kind of an agent's calls of the day (:meth:`Engine._agent_calls`).
AGENT_CALLS = "agent_calls"

#: Event types a carrying engine (``Engine(carry_open=True)``: replay, report) applies older
#: than the lateness cutoff: they open or close something the live system holds open however
#: long (a ticket, a callback, an agent's state, a waiting call). Surveys and knowledge-base
#: views hold nothing open: older than the lateness cutoff they stay ``too_late``.
CARRIED_TYPES = frozenset({
    "call.offered", "call.answered", "call.abandoned", "call.timeout", "call.voicemail",
    "call.ring_no_answer", "call.transferred", "call.ended", "callback.requested",
    "callback.attempted", "agent.state", "ticket.created", "ticket.replied", "ticket.resolved",
    "ticket.reopened",
})  # fmt: skip
#: The ``[limits]`` field of each guarded kind of name.
_LIMIT_FIELDS = {"tenant": "tenants", "queue": "queues_per_tenant", "agent": "agents_per_tenant",
                 "article": "articles_per_tenant"}
_DAY = 86400.0
#: An open ticket's record is kept this long after its last event (help-desk tickets may sit
#: untouched for months; 30 days lost the creation time of 884 of 20,769 real incidents).
_TICKET_MAX_AGE = 366 * _DAY
#: How far back a carrying engine applies CARRIED_TYPES events: the longest the live system
#: keeps an open entity after its last event (an open ticket's record). Older stamps (a null
#: date read as 1970) stay ``too_late``.
CARRY_SECONDS = _TICKET_MAX_AGE

Contribution = list[Any]  # [scope, ts, {field: value}]

#: The fields broken down by channel and priority (docs/KPIS.md, "Channel and priority"):
#: besides ``offered``, a call's or ticket's contribution carries ``offered@c:chat`` (its
#: channel) and ``offered@p:7`` (its priority), in the same scope and bucket, so the
#: breakdown is retracted, pruned and retired with the field it breaks down.
BREAKDOWN_FIELDS = frozenset({
    "offered", "answered", "abandoned", "short_abandoned", "answered_within", "abandoned_within",
    "abandoned_after", "asa_n", "asa_sum_ms", "tk_created", "frt_n", "frt_sum_ms",
})  # fmt: skip
#: Field-name suffixes of a channel's and a priority's share of a field.
CHANNEL_MARK = "@c:"
PRIORITY_MARK = "@p:"


def broken_down(fields: dict[str, float], channel: str | None, priority: int | None) -> dict[str, float]:
    """``fields`` with each non-zero BREAKDOWN_FIELDS value repeated under its channel's and
    priority's name (none for a missing channel or priority)."""
    marks = ([CHANNEL_MARK + channel] if channel is not None else []) + (
        [f"{PRIORITY_MARK}{priority}"] if priority is not None else []
    )
    if marks:
        for name, value in list(fields.items()):
            if value and name in BREAKDOWN_FIELDS:
                for mark in marks:
                    fields[name + mark] = value
    return fields


#: Most names one upkeep retires per kind and tenant (the rest go at the next one).
RETIRE_PER_UPKEEP = 500


def series_retention_seconds(config: Config) -> float:
    """How long a guarded name stays without an event before it retires: ``[limits]
    series_retention_days``, and at least the state horizon + 1 h (no event can change a
    retired name's contributions)."""
    return max(config.limits.series_retention_days * _DAY, config.horizon_seconds + 3600.0)


def _chunk_key(agent: str, seq: int) -> str:
    """The key of an agent's history chunk record ``seq``."""
    return f"{agent}\x1f{seq}"


def wait_bucket(wait: float) -> int:
    return bisect.bisect_left(WAIT_BUCKETS, wait)


def agent_member(state: str, label: str, agent: str) -> str:
    """An agent's member of the agents live sets: the state, then (``away`` only, and only with
    a reason: the ``reason`` label of ``ccmon_agents`` is ``none`` for every other state, so a
    query by state keeps one series per queue) the reason label, then the agent."""
    if state == "away" and label != REASON_NONE:
        return f"{state}{REASON_SEP}{label}\x1f{agent}"
    return f"{state}\x1f{agent}"


def split_state(key: str) -> tuple[str, str]:
    """``(state, reason label)`` of the part of an agents-set member before ``\x1f``."""
    state, _sep, label = key.partition(REASON_SEP)
    return state, label or REASON_NONE


class Engine:
    """Applies events to a store. One engine per store; not thread-safe."""

    def __init__(self, config: Config, store: StateStore, *, carry_open: bool = False) -> None:
        self.config = config
        self.store = store
        #: Offline (``ccmon replay``: one ``now`` for a file spanning days): an event of a
        #: CARRIED_TYPES type older than the lateness cutoff (up to CARRY_SECONDS before
        #: ``now``) is applied, not rejected ``too_late``. Its contributions older than the
        #: cutoff stay frozen (never applied, :meth:`_reconcile`), so windowed KPIs count only
        #: their window, while the entities it opens or closes (open tickets, pending
        #: callbacks, agents' states) are what the live system, which saw it when it happened,
        #: holds at ``now``. The live worker leaves it off (docs/KPI_ENGINE.md, "Long backlogs
        #: in replay").
        self.carry_open = carry_open
        #: How far back state is kept (config.horizon_seconds, a computed property: read once).
        self.horizon = config.horizon_seconds
        self._handlers: dict[str, Callable[[Event], None]] = {
            "call.offered": self._call,
            "call.answered": self._call,
            "call.abandoned": self._call,
            "call.timeout": self._call,
            "call.voicemail": self._call,
            "call.ring_no_answer": self._call,
            "call.transferred": self._call,
            "call.ended": self._call,
            "callback.requested": self._callback,
            "callback.attempted": self._callback,
            "agent.state": self._agent,
            "ticket.created": self._ticket,
            "ticket.replied": self._ticket,
            "ticket.resolved": self._ticket,
            "ticket.reopened": self._ticket,
            "survey.response": self._survey,
            "kb.viewed": self._kb,
        }
        self._now = 0.0
        self._cutoff = 0.0
        self._days: dict[str, tuple[float, float]] = {}  # tenant -> [midnight, next midnight)
        self._local_days: dict[str, tuple[float, float]] = {}  # the same, of the last agent change seen
        self._longest = config.longest_sliding_seconds
        self._has_today = config.has_today

    # -- entry points ----------------------------------------------------------------------
    def lateness_cutoff(self, tenant: str, now: float) -> float:
        """Events with ``ts`` before this are ``too_late`` (older than every window)."""
        cutoff = now - self._longest
        if self._has_today:
            day = self._days.get(tenant)
            if day is None or not day[0] <= now < day[1]:
                zone = self.config.timezone(tenant)
                midnight = local_midnight(now, zone)
                # A local day lasts 23 to 25 h: 26 h on is in the next one.
                day = self._days[tenant] = (midnight, local_midnight(midnight + 26 * 3600, zone))
            cutoff = min(cutoff, day[0])
        return cutoff

    def process(self, event: Event, now: float) -> bool:
        """Apply one event as of wall-clock ``now``. ``False`` for a duplicate.

        Raises InvalidEventError (``too_late``, ``from_the_future``) without changing state;
        the caller counts it with :meth:`reject`.
        """
        cutoff = self.lateness_cutoff(event.tenant, now)
        if event.ts < cutoff and not (
            self.carry_open and event.type in CARRIED_TYPES and event.ts >= now - CARRY_SECONDS
        ):
            raise InvalidEventError(
                "too_late", f"ts {event.ts:.0f} is older than the state kept (cutoff {cutoff:.0f})"
            )
        if event.ts > now + self.config.max_future_seconds:
            raise InvalidEventError(
                "from_the_future", f"ts {event.ts:.0f} is more than "
                f"{self.config.max_future_seconds:.0f} s ahead of the clock ({now:.0f})"
            )
        store = self.store
        admit = self._admit(event, now)
        if not store.claim_event(event.tenant, event.event_id, event.ts):
            store.count("duplicates", event.type, tenant=event.tenant)
            return False
        for kind, tenant, name in admit:
            store.series_touch(kind, tenant, name, now)
        self._now = now
        self._cutoff = cutoff
        self._handlers[event.type](event)
        store.count("events", event.type, tenant=event.tenant)
        store.count_max("last_event_ts", "", event.ts, tenant=event.tenant)
        return True

    # -- the cardinality guard ---------------------------------------------------------------
    def _admit(self, event: Event, now: float) -> list[tuple[str, str, str]]:
        """The names ``event`` brings that must be (re-)registered, or InvalidEventError
        ``too_many_series`` when one of them is new and its kind is at its limit. A name
        counts for the state horizon after it was last admitted; names the configuration
        declares are never limited. Re-admission of a known name is written at most hourly."""
        store = self.store
        since = now - self.horizon
        admit: list[tuple[str, str, str]] = []
        for kind, tenant, name, limit in self.series_of(event):
            seen = store.series_seen(kind, tenant, name)
            if seen is not None and seen >= since:
                if now - seen >= 3600:
                    admit.append((kind, tenant, name))
                continue
            if store.series_count(kind, tenant, since) >= limit:
                raise InvalidEventError(
                    "too_many_series",
                    f"{kind} {name!r} would be one more than limits.{_LIMIT_FIELDS[kind]} = {limit}"
                    + (f" of tenant {tenant!r}" if tenant else ""),
                )
            admit.append((kind, tenant, name))
        return admit

    def series_of(self, event: Event) -> Iterable[tuple[str, str, str, int]]:
        """``(kind, tenant, name, limit)`` of every name ``event`` brings under the guard."""
        limits = self.config.limits
        tenant = event.tenant
        tenant_config = self.config.tenants.get(tenant)
        if tenant_config is None:
            yield "tenant", "", tenant, limits.tenants
        configured = tenant_config.queues if tenant_config is not None else {}
        for queue in (event.queue, event.to_queue, *(event.queues or ())):
            if queue is not None and queue not in configured:
                yield "queue", tenant, queue, limits.queues_per_tenant
        if event.agent_id is not None:
            yield "agent", tenant, event.agent_id, limits.agents_per_tenant
        if event.article_id is not None:
            yield "article", tenant, event.article_id, limits.articles_per_tenant

    def reject(self, reason: str, tenant: str = "") -> None:
        """Count a rejection (``tenant``: where the store keeps the count; the worker keeps
        them with the Kafka coordinates it dedupes rejections by)."""
        self.store.count("rejected", reason, tenant=tenant)

    def handle(self, item: Event | Rejection, now: float) -> str:
        """Process an event or count a rejection; returns ``accepted``, ``duplicate`` or the
        rejection reason."""
        if isinstance(item, Rejection):
            self.reject(item.reason)
            return item.reason
        try:
            return "accepted" if self.process(item, now) else "duplicate"
        except InvalidEventError as exc:
            self.reject(exc.reason)
            return exc.reason

    def maintain(self, now: float, retire: bool = True) -> None:
        """Expire waiting calls older than ``max_call_age``, prune old state, and (``retire``)
        retire idle names (:meth:`retire_series`; a store writing in batches runs it after
        the batch, as it writes at once)."""
        store = self.store
        max_age = self.config.max_call_age_seconds
        for tenant, scopes in store.scopes().items():
            for scope in scopes:
                for member, score in store.live(WAITING, tenant, scope).items():
                    if score < now - max_age:
                        store.live_remove(WAITING, tenant, scope, member)
                        call_id = member.split("\x1f")[1]  # queue, call id, leg
                        record = store.get_record("call", tenant, call_id)
                        if record is not None:
                            record.setdefault("expired", []).append(member)
                            store.put_record("call", tenant, call_id, record, now + max_age)
                        store.add(tenant, scope, now, {"calls_expired": 1})
        store.maintain(
            now,
            fine_keep_seconds=self.config.longest_sliding_seconds + 3600,
            coarse_keep_seconds=self.config.horizon_seconds + 3600,
        )
        if retire:
            self.retire_series(now)

    def retire_series(self, now: float) -> dict[str, int]:
        """Retire the guarded names nobody exports any more (:func:`kpi_core.state.retirable`:
        idle past the retention, or idle past the horizon with ``limit`` newer names), and
        scopes of a queue or article with no registry entry and no bucket kept (state from
        before the registry kept names for the retention). How many, by kind."""
        store = self.store
        limits = self.config.limits
        since = now - self.horizon
        before = now - series_retention_seconds(self.config)
        retired: dict[str, int] = {}

        def retire(kind: str, tenant: str, limit: int) -> None:
            total, oldest = store.series_oldest(kind, tenant, RETIRE_PER_UPKEEP)
            due = retirable(oldest, total, limit, since, before)
            if due:
                retired[kind] = retired.get(kind, 0) + store.series_retire(kind, tenant, dict(due))

        for tenant, scopes in store.scopes().items():
            for kind, limit in (("queue", limits.queues_per_tenant), ("agent", limits.agents_per_tenant),
                                ("article", limits.articles_per_tenant)):  # fmt: skip
                retire(kind, tenant, limit)
            tenant_config = self.config.tenants.get(tenant)
            configured = tenant_config.queues if tenant_config is not None else {}
            queues = [s for s in scopes if is_queue_scope(s) and s != ALL and s not in configured]
            articles = [s[len(KB_SCOPE_PREFIX):] for s in scopes if s.startswith(KB_SCOPE_PREFIX)]
            for kind, names in (("queue", queues), ("article", articles)):
                for i in range(0, len(names), 500):
                    chunk = names[i:i + 500]
                    unregistered = store.series_live(kind, tenant, chunk, 0)  # limit 0: only those
                    if unregistered:
                        count = store.series_retire(kind, tenant, dict.fromkeys(sorted(unregistered)))
                        retired[kind] = retired.get(kind, 0) + count
        # Tenants last: a retiring tenant's own names retired (and were counted) above.
        retire("tenant", "", limits.tenants)
        return retired

    # -- contributions ---------------------------------------------------------------------
    def _reconcile(
        self,
        tenant: str,
        record: Record,
        desired: dict[str, Contribution],
        *,
        key: str = "applied",
        only: Callable[[Contribution], bool] | None = None,
    ) -> None:
        """Apply the difference between the contributions ``record[key]`` holds as applied
        and ``desired``. With ``only``, just the applied contributions it selects are compared
        (``desired`` must hold exactly the ones it would select); the rest stay as they are.
        Contributions older than the lateness cutoff are frozen: dropped, never retracted."""
        store = self.store
        cutoff = self._cutoff
        applied: dict[str, Contribution] = record.get(key, {})
        kept: dict[str, Contribution] = {}
        for cid, old in applied.items():
            if old[1] < cutoff:
                continue
            if only is not None and not only(old):
                kept[cid] = old
                continue
            new = desired.get(cid)
            if new == old:
                continue
            # ``max_*``: a legacy contribution's maximum (before maxima were multisets), never
            # retractable; a multiset field ``mx:*`` is a count and retracted as one.
            retract = {k: -v for k, v in old[2].items() if not k.startswith("max_")}
            if retract:
                store.add(tenant, old[0], old[1], retract)
        for cid, new in desired.items():
            if new[1] < cutoff:
                continue
            kept[cid] = new
            if applied.get(cid) != new:
                store.add(tenant, new[0], new[1], new[2])
        record[key] = kept

    def _reconcile_live(self, tenant: str, record: Record, desired: list[list[Any]]) -> None:
        """Make the live-set memberships of ``record`` equal ``desired``
        (``[name, scope, member, score]`` items)."""
        store = self.store
        old = record.get("live", [])
        if old == desired:
            return
        for item in old:
            if item not in desired:
                store.live_remove(item[0], tenant, item[1], item[2])
        for item in desired:
            if item not in old:
                store.live_put(item[0], tenant, item[1], item[2], item[3])
        record["live"] = desired

    # -- calls -----------------------------------------------------------------------------
    def _call(self, ev: Event) -> None:
        store = self.store
        tenant = ev.tenant
        call_id = ev.call_id
        assert call_id is not None
        record = store.get_record("call", tenant, call_id) or {}
        had_customer = "customer" in record
        fact = [ev.ts, ev.event_id, ev.queue]
        kind = TERMINAL_KINDS.get(ev.type)
        if ev.type == "call.offered":
            # [ts, event id, queue, direction, channel, priority, agent] (older records: fewer items)
            record.setdefault("offers", []).append(
                [ev.ts, ev.event_id, ev.queue, ev.direction, ev.channel, ev.priority, ev.agent_id]
            )
            if ev.customer_id is not None and "customer" not in record:
                record["customer"] = ev.customer_id
        elif kind is not None:
            record.setdefault("terminals", []).append([*fact, kind, ev.wait_seconds, ev.agent_id])
        elif ev.type == "call.ring_no_answer":
            record.setdefault("rings", []).append([*fact, ev.agent_id])
        else:  # call.ended
            record.setdefault("ended", []).append(
                [*fact, ev.talk_seconds or 0.0, ev.hold_seconds or 0.0, ev.acw_seconds or 0.0,
                 ev.resolved, ev.outcome]
            )  # fmt: skip
        before = record.get("summary")
        legs = self._call_legs(record)
        desired = self._call_contributions(tenant, legs)
        self._reconcile(tenant, record, desired)
        expired = record.get("expired", [])
        self._reconcile_live(
            tenant,
            record,
            [
                [WAITING, leg["queue"], f"{leg['queue']}\x1f{call_id}\x1f{leg['key']}", leg["offer_ts"]]
                for leg in legs
                if leg["offer_ts"] is not None
                and leg["direction"] == "inbound"
                and leg["outcome"] is None
                and f"{leg['queue']}\x1f{call_id}\x1f{leg['key']}" not in expired
            ],
        )
        summary = [
            [leg["direction"], leg["offer_ts"], leg["queue"], *(leg["outcome"] or (None, None))[:2]]
            for leg in legs
        ]
        record["summary"] = summary
        if ev.agent_id is not None or record.get("agents"):  # the agents' part, only where there is one
            self._agent_calls(tenant, call_id, record, legs)
        last_ts = max(self._fact_times(record))
        complete = bool(legs) and all(
            leg["outcome"] is not None and (leg["outcome"][0] != "answered" or leg["ended"]) for leg in legs
        )
        grace = self.config.finished_call_grace_seconds
        keep = grace if complete else max(self.config.max_call_age_seconds, grace)
        store.put_record("call", tenant, call_id, record, last_ts + keep)
        customer = record.get("customer")
        if customer is not None and not had_customer:
            before = None  # the customer's record has seen none of this call's legs yet
        if customer is not None and summary != before:
            # Repeat-caller status depends only on offers: recompute it only when the call's
            # offers changed, and only for offers that change can affect.
            old_offers = {(leg[1], leg[2]) for leg in before or () if leg[0] == "inbound" and leg[1] is not None}
            new_offers = {(leg[1], leg[2]) for leg in summary if leg[0] == "inbound" and leg[1] is not None}
            changed = [ts for ts, _queue in old_offers ^ new_offers]

            def mutate(rec: Record) -> None:
                rec["calls"][call_id] = summary
                offers = rec.setdefault("offers", [])
                for ts, queue in old_offers - new_offers:
                    item = [ts, call_id, queue]
                    if item in offers:
                        offers.remove(item)
                for ts, queue in new_offers - old_offers:
                    bisect.insort(offers, [ts, call_id, queue])

            self._customer_update(
                tenant, customer, ev.ts, mutate, (min(changed), max(changed)) if changed else None
            )

    @staticmethod
    def call_agents(event: Event, record: Record | None) -> set[str]:
        """The agents whose ``agent_calls`` record the call event may touch: the event's own
        and every agent the call's record names (offers, terminals, rings, and what it last
        gave each agent), so a store can read them ahead (the worker's prefetch)."""
        agents = {event.agent_id} if event.agent_id is not None else set()
        if record:
            agents.update(record.get("agents", ()))
            agents.update(o[6] for o in record.get("offers", ()) if len(o) > 6 and o[6] is not None)
            agents.update(t[5] for t in record.get("terminals", ()) if len(t) > 5 and t[5] is not None)
            agents.update(r[3] for r in record.get("rings", ()) if len(r) > 3 and r[3] is not None)
        return agents

    def _agent_calls(self, tenant: str, call_id: str, record: Record, legs: list[dict[str, Any]]) -> None:
        """Keep each agent's part of this call in the agent's ``agent_calls`` record, whose
        ``calls`` map ``<call id>\x1f<fact>`` to ``[kind, ts, ...]``: ``talk`` (a leg the agent
        answered, or an outbound call it made, not ended yet: its current call; ``+ [queue, call
        id]``), ``handled`` (an inbound leg it answered that ended; ts: the end) and ``missed``
        (rung, no answer). The call record keeps what it last gave each agent
        (``agents``), so an event changes only what the call's facts now imply, whatever the
        arrival order. Facts older than a day (26 h) are dropped, a ``talk`` older than
        ``max_call_age``; the record expires a day after its newest fact."""
        desired: dict[str, dict[str, list[Any]]] = {}
        for leg in legs:
            if leg["direction"] == "outbound":  # the agent's current call until it ends; not counted
                if leg.get("agent") is not None and not leg["ended"]:
                    desired.setdefault(leg["agent"], {})[f"{call_id}\x1f{leg['key']}"] = [
                        "talk", leg["offer_ts"], leg["queue"], call_id]
                continue
            outcome = leg["outcome"]
            if outcome is not None and outcome[0] == "answered":
                first = min(leg["terminals"], key=lambda t: (t[0], t[1]))
                agent = first[5] if len(first) > 5 else None
                if agent is not None:
                    if leg["ended"]:
                        end = min(leg["ended"], key=lambda e: (e[0], e[1]))
                        fact = ["handled", end[0]]
                    else:
                        fact = ["talk", outcome[1], leg["queue"], call_id]
                    desired.setdefault(agent, {})[f"{call_id}\x1f{leg['key']}"] = fact
            for ring in leg["rings"]:
                agent = ring[3] if len(ring) > 3 else None
                if agent is not None:
                    desired.setdefault(agent, {})[f"{call_id}\x1fr\x1f{ring[1]}"] = ["missed", ring[0]]
        applied: dict[str, dict[str, list[Any]]] = record.get("agents", {})
        if desired == applied:
            return
        store = self.store
        oldest = self._now - 26 * 3600.0
        oldest_talk = self._now - self.config.max_call_age_seconds
        for agent in sorted(set(applied) | set(desired)):
            old, new = applied.get(agent, {}), desired.get(agent, {})
            if old == new:
                continue
            rec = store.get_record(AGENT_CALLS, tenant, agent) or {"calls": {}}
            calls: dict[str, list[Any]] = rec["calls"]
            for key in old:
                if key not in new:
                    calls.pop(key, None)
            calls.update(new)
            for key in [k for k, f in calls.items() if f[1] < (oldest_talk if f[0] == "talk" else oldest)]:
                del calls[key]
            if calls:
                store.put_record(AGENT_CALLS, tenant, agent, rec, max(f[1] for f in calls.values()) + _DAY)
            else:
                store.delete_record(AGENT_CALLS, tenant, agent)
        if desired:
            record["agents"] = desired
        else:
            record.pop("agents", None)

    @staticmethod
    def _fact_times(record: Record) -> Iterable[float]:
        for key in ("offers", "terminals", "rings", "ended"):
            for fact in record.get(key, ()):
                yield fact[0]

    def _call_legs(self, record: Record) -> list[dict[str, Any]]:
        """Split a call into legs, one per offer (a transfer re-offers the call to another
        queue), and give each leg its terminals, rings and endings."""
        offers = sorted(record.get("offers", ()), key=lambda o: (o[0], o[1]))
        # Offers recorded before channel and priority were kept have 4 items: no breakdown;
        # before the offering agent (outbound calls) was kept, 6.
        legs: list[dict[str, Any]] = [
            {
                "offer_ts": o[0], "queue": o[2], "direction": o[3], "key": o[1],
                "channel": o[4] if len(o) > 4 else None, "priority": o[5] if len(o) > 5 else None,
                "agent": o[6] if len(o) > 6 else None,
                "terminals": [], "rings": [], "ended": [], "outcome": None,
            }
            for o in offers
        ]  # fmt: skip
        virtual: dict[str, dict[str, Any]] = {}

        def leg_for(ts: float, queue: str | None) -> dict[str, Any] | None:
            candidates = [leg for leg in legs if queue is None or leg["queue"] == queue]
            if candidates:
                earlier = [leg for leg in candidates if leg["offer_ts"] <= ts]
                return earlier[-1] if earlier else candidates[0]
            if queue is None:
                return None
            leg = virtual.get(queue)
            if leg is None:
                leg = virtual[queue] = {
                    "offer_ts": None, "queue": queue, "direction": "inbound", "key": f"q:{queue}",
                    "channel": None, "priority": None,
                    "terminals": [], "rings": [], "ended": [], "outcome": None,
                }  # fmt: skip
            return leg

        for key in ("terminals", "rings", "ended"):
            for fact in record.get(key, ()):
                leg = leg_for(fact[0], fact[2])
                if leg is not None:
                    leg[key].append(fact)
        all_legs = legs + [virtual[q] for q in sorted(virtual)]
        for leg in all_legs:
            if leg["terminals"]:
                first = min(leg["terminals"], key=lambda t: (t[0], t[1]))
                leg["outcome"] = (first[3], first[0], first[4])  # kind, ts, wait_seconds
        return all_legs

    def _call_contributions(self, tenant: str, legs: list[dict[str, Any]]) -> dict[str, Contribution]:
        desired: dict[str, Contribution] = {}
        for leg in legs:
            queue = leg["queue"]
            key = leg["key"]
            offer_ts = leg["offer_ts"]
            if leg["direction"] == "outbound":
                # Outbound legs count only in outbound productivity, never in inbound KPIs: placed
                # and connected at the offer's time, so connected <= placed in any window;
                # conversions at the end (its outcome in the queue's conversion_outcomes). A leg
                # is connected when answered, or ended (only an answered call ends: sources that
                # send no call.answered for outbound calls, as the simulator, still count).
                outcome = leg["outcome"]
                connected = 1 if (outcome is not None and outcome[0] == "answered") or leg["ended"] else 0
                desired[f"{key}:placed"] = [queue, offer_ts, {"out_placed": 1, "out_connected": connected}]
                if leg["ended"]:
                    end = min(leg["ended"], key=lambda e: (e[0], e[1]))
                    converted = end[7] in self.config.queue(tenant, queue).conversion_outcomes
                    desired[f"{key}:end"] = [queue, end[0], {"out_ended": 1, "out_sales": 1 if converted else 0}]
                continue
            channel, priority = leg["channel"], leg["priority"]
            if offer_ts is not None:
                desired[f"{key}:off"] = [queue, offer_ts, broken_down({"offered": 1}, channel, priority)]
            queue_config = self.config.queue(tenant, queue)
            outcome = leg["outcome"]
            if outcome is not None:
                kind, ts, wait = outcome
                # The wait in whole ms: the one the event carries rounded, else the difference
                # of the two times in ms (exact); the thresholds compare the wait in seconds.
                if wait is not None:
                    wait_ms = to_ms(wait)
                elif offer_ts is not None:
                    wait = max(0.0, ts - offer_ts)
                    wait_ms = max(0, to_ms(ts) - to_ms(offer_ts))
                fields: dict[str, float] = {kind: 1}
                if wait is not None:
                    fields[max_field("wait", wait_ms)] = 1
                    threshold = queue_config.sl_threshold_seconds
                    if kind != "transferred":
                        fields["wait_n"] = 1
                        fields["wait_sum_ms"] = wait_ms
                    if kind == "answered":
                        fields["asa_n"] = 1
                        fields["asa_sum_ms"] = wait_ms
                        fields["answered_within"] = 1 if wait <= threshold else 0
                        fields[f"wa{wait_bucket(wait)}"] = 1
                    elif kind == "abandoned":
                        fields["short_abandoned"] = 1 if wait < queue_config.short_abandon_seconds else 0
                        fields["abandoned_within"] = 1 if wait <= threshold else 0
                        fields["abandoned_after"] = 1 if wait > threshold else 0
                        fields["ab_wait_sum_ms"] = wait_ms
                        fields[f"wb{wait_bucket(wait)}"] = 1
                desired[f"{key}:out"] = [queue, ts, broken_down(fields, channel, priority)]
            transfers = [t for t in leg["terminals"] if t[3] == "transferred"]
            if transfers:
                desired[f"{key}:xfer"] = [queue, min(t[0] for t in transfers), {"transfers_out": 1}]
            for ring in leg["rings"]:
                desired[f"r:{ring[1]}"] = [queue, ring[0], {"rings": 1}]
            if leg["ended"]:
                end = min(leg["ended"], key=lambda e: (e[0], e[1]))
                talk, hold, acw, resolved = end[3], end[4], end[5], end[6]
                talk_ms = to_ms(talk)
                fields = {"handled": 1, "handle_sum_ms": talk_ms + to_ms(hold) + to_ms(acw), "talk_sum_ms": talk_ms}
                if resolved is not None:
                    fields["fcr_n"] = 1
                    fields["fcr_ok"] = 1 if resolved else 0
                desired[f"{key}:end"] = [queue, end[0], fields]
        return desired

    # -- customers: repeat callers and callbacks -------------------------------------------
    def _customer_update(
        self,
        tenant: str,
        customer: str,
        ts: float,
        mutate: Callable[[Record], None],
        repeat_range: tuple[float, float] | None = None,
    ) -> None:
        store = self.store
        record = store.get_record("customer", tenant, customer) or {"calls": {}, "callbacks": {}, "last": 0.0}
        mutate(record)
        if repeat_range is not None:
            lo, hi = repeat_range[0], repeat_range[1] + self.config.repeat_caller_seconds
            self._reconcile(
                tenant, record, self._repeat_contributions(record, lo, hi),
                key="applied_repeat", only=lambda c: lo <= c[1] <= hi,
            )  # fmt: skip
        desired, live, keep_from = self._callback_contributions(customer, record)
        if desired or live or record.get("applied") or record.get("live"):
            self._reconcile(tenant, record, desired)
            self._reconcile_live(tenant, record, live)
        record["last"] = last = max(record["last"], ts)
        if last - record.get("pruned", 0.0) > 3600:
            # Forget calls no contribution can depend on any more (at most hourly).
            record["pruned"] = last
            keep_from = min(keep_from, self._cutoff - self.config.repeat_caller_seconds)
            record["calls"] = {
                cid: legs for cid, legs in record["calls"].items()
                if any((leg[4] or leg[1] or 0) >= keep_from for leg in legs)
            }  # fmt: skip
            record["offers"] = [o for o in record.get("offers", []) if o[1] in record["calls"]]
        expire_at = max(last + self.horizon + self.config.repeat_caller_seconds,
                        self._now + 3600)  # fmt: skip
        if live:
            expire_at = max(expire_at, self._now + 30 * _DAY)
        store.put_record("customer", tenant, customer, record, expire_at)

    def _repeat_contributions(self, record: Record, lo: float, hi: float) -> dict[str, Contribution]:
        """Repeat-caller contributions of the customer's inbound offers with ``lo <= ts <= hi``:
        an offer is a repeat when another call of the customer was offered in the look-back
        before it."""
        offers = record.get("offers", [])  # [ts, call_id, queue], sorted
        times = [o[0] for o in offers]
        look_back = self.config.repeat_caller_seconds
        desired: dict[str, Contribution] = {}
        for i in range(bisect.bisect_left(times, lo), bisect.bisect_right(times, hi)):
            ts, cid, queue = offers[i]
            first = bisect.bisect_left(times, ts - look_back)
            repeat = any(offers[j][1] != cid and offers[j][0] < ts for j in range(first, i))
            desired[f"rep:{cid}:{ts}:{queue}"] = [queue, ts, {"repeat_n": 1, "repeat": 1 if repeat else 0}]
        return desired

    def _callback_contributions(
        self, customer: str, record: Record
    ) -> tuple[dict[str, Contribution], list[list[Any]], float]:
        desired: dict[str, Contribution] = {}
        live: list[list[Any]] = []
        keep_from = float("inf")
        on_missed = self.config.callback_on_missed
        if not record["callbacks"] and not (
            on_missed
            and any(leg[3] in MISSED_KINDS for legs in record["calls"].values() for leg in legs)
        ):
            return desired, live, keep_from
        # Callbacks: walk the customer's timeline.
        timeline: list[tuple[float, int, str, str, str | None]] = []  # ts, order, kind, id, queue
        for cid, legs in record["calls"].items():
            for leg in legs:
                direction, offer_ts, queue, kind, kind_ts = leg
                if direction == "outbound":
                    if offer_ts is not None:
                        timeline.append((offer_ts, 1, "outbound", cid, queue))
                elif kind in MISSED_KINDS and on_missed:
                    timeline.append((kind_ts, 0, "missed", f"m:{cid}:{kind_ts}", queue))
                elif kind == "answered":
                    timeline.append((kind_ts, 1, "answered", cid, queue))
        for cb_id, (req_ts, queue, attempts) in record["callbacks"].items():
            if req_ts is not None:
                timeline.append((req_ts, 0, "request", cb_id, queue))
            for ts in attempts:
                timeline.append((ts, 1, "attempt", cb_id, None))
        timeline.sort(key=lambda item: (item[0], item[1], item[2], item[3]))

        open_cb: dict[str, Any] | None = None
        for ts, _order, kind, ident, queue in timeline:
            if kind in ("missed", "request"):
                if open_cb is None:
                    open_cb = {"due": ts, "queue": queue, "id": ident, "aliases": {ident}}
                else:
                    open_cb["aliases"].add(ident)
                continue
            if open_cb is None:
                continue
            if kind == "attempt" and ident not in open_cb["aliases"]:
                continue
            if kind == "answered":
                fields = {"cb_recontacted": 1}
            else:
                delay_ms = to_ms(ts) - to_ms(open_cb["due"])
                fields = {"cb_made": 1, "cb_delay_sum_ms": delay_ms, max_field("cb_delay", delay_ms): 1}
            desired[f"cb:{open_cb['id']}"] = [open_cb["queue"], ts, fields]
            desired[f"due:{open_cb['id']}"] = [open_cb["queue"], open_cb["due"], {"cb_due": 1}]
            if ts >= self._cutoff:
                keep_from = min(keep_from, open_cb["due"])
            open_cb = None
        if open_cb is not None:
            desired[f"due:{open_cb['id']}"] = [open_cb["queue"], open_cb["due"], {"cb_due": 1}]
            live.append([CALLBACKS, open_cb["queue"], customer, open_cb["due"]])
            keep_from = min(keep_from, open_cb["due"])
        return desired, live, keep_from

    def _callback(self, ev: Event) -> None:
        store = self.store
        tenant = ev.tenant
        cb_id = ev.callback_id
        assert cb_id is not None
        record = store.get_record("callback", tenant, cb_id) or {"attempts": []}
        if ev.type == "callback.requested":
            new_request = [ev.ts, ev.event_id, ev.queue, ev.customer_id]
            if "request" not in record or new_request[:2] < record["request"][:2]:
                record["request"] = new_request
            if ev.customer_id is not None and "customer" not in record:
                record["customer"] = ev.customer_id  # whichever request names it
        else:
            record["attempts"].append(ev.ts)
        record["attempts"].sort()
        request: list[Any] | None = record.get("request")
        customer: str | None = record.get("customer")
        last = max([*record["attempts"], request[0] if request else 0.0])
        if customer is not None and request is not None:
            # Anything this callback counted on its own (before the request naming the
            # customer arrived) now belongs to the customer's timeline.
            self._reconcile(tenant, record, {})
            self._reconcile_live(tenant, record, [])
            summary = [request[0], request[2], list(record["attempts"])]
            store.put_record("callback", tenant, cb_id, record, last + 30 * _DAY)

            def mutate(rec: Record) -> None:
                rec["callbacks"][cb_id] = summary

            self._customer_update(tenant, customer, ev.ts, mutate)
            return
        # No customer id: the callback stands alone (closed only by its own attempts).
        desired: dict[str, Contribution] = {}
        live: list[list[Any]] = []
        if request is not None:
            due, queue = request[0], request[2]
            desired["due"] = [queue, due, {"cb_due": 1}]
            closing = [ts for ts in record["attempts"] if ts >= due]
            if closing:
                delay_ms = to_ms(closing[0]) - to_ms(due)
                desired["cb"] = [queue, closing[0], {"cb_made": 1, "cb_delay_sum_ms": delay_ms,
                                                     max_field("cb_delay", delay_ms): 1}]  # fmt: skip
            else:
                live.append([CALLBACKS, queue, f"\x1fcb\x1f{cb_id}", due])
        self._reconcile(tenant, record, desired)
        self._reconcile_live(tenant, record, live)
        store.put_record("callback", tenant, cb_id, record, last + (30 * _DAY if live else self.horizon))

    # -- agents ----------------------------------------------------------------------------
    #: An agent's record keeps its latest changes (between AGENT_HEAD and twice that); older
    #: ones move, AGENT_HEAD at a time, to history chunks that are read only for an event that
    #: lands before the record's first change.
    AGENT_HEAD = 16

    def _agent(self, ev: Event) -> None:
        """Occupancy is integrated from state changes: each change adds ``d`` (+1/-1 agents
        busy or staffed) and ``d * ts`` to its bucket, per queue of the agent and ``_all``;
        the KPI layer turns those and the live count at ``at`` into time-weighted shares.

        A change's contribution depends only on it and the change before it, so the records
        keep the changes (today's, for late events) and not their contributions: a new
        change recomputes the few it alters, as they were and as they are, and applies the
        difference. The work per event does not grow with the agent's day: the record read on
        every change holds the latest ones (``changes``, and ``base``: the queues in effect
        before the first of them); the day's older changes are in ``agent_h`` chunk records
        (``chunks``: ``[seq, first ts, queues in effect before it]``), written once and read
        only when an event lands before the record's first change."""
        store = self.store
        tenant = ev.tenant
        agent = ev.agent_id
        assert agent is not None
        record = store.get_record("agent", tenant, agent) or {"changes": []}
        # Records written before contributions were recomputed kept them; they equal what is
        # recomputed below, so they are dropped.
        record.pop("applied", None)
        changes: list[list[Any]] = record["changes"]  # [ts, eid, state, queues|None, reason], sorted
        new = [ev.ts, ev.event_id, ev.state, list(ev.queues) if ev.queues is not None else None, ev.reason or ""]
        index = bisect.bisect_right(changes, (ev.ts, ev.event_id), key=lambda c: (c[0], c[1]))
        if index == 0 and record.get("chunks"):
            changes = self._agent_unsplit(tenant, agent, record)
            index = bisect.bisect_right(changes, (ev.ts, ev.event_id), key=lambda c: (c[0], c[1]))
        base: list[str] = record.get("base", [])
        # The new change alters its own contribution and the next one's (which starts from
        # it), and those of the following changes that inherit its queues.
        stop = index + 1
        if new[3] is not None:
            while stop < len(changes) and changes[stop - 1][3] is None:
                stop += 1
        stop = min(stop, len(changes))
        before = self._agent_contributions(changes, index, stop, base)
        changes.insert(index, new)
        after = self._agent_contributions(changes, index, stop + 1, base)
        for cid, old in before.items():
            if after.get(cid) != old:
                store.add(tenant, old[0], old[1], {k: -v for k, v in old[2].items()})
                if old[0] == ALL:
                    self._agent_day_add(tenant, record, old[1], old[2], -1)
        for cid, contribution in after.items():
            if before.get(cid) != contribution:
                store.add(tenant, contribution[0], contribution[1], contribution[2])
                if contribution[0] == ALL:
                    self._agent_day_add(tenant, record, contribution[1], contribution[2], +1)
        last = changes[-1]
        last_ts, state = last[0], last[2]
        label = self.config.reason_label(tenant, last[4] if len(last) > 4 else "")
        qs = self._agent_queues(changes, len(changes), base)
        member = agent_member(state, label, agent)
        self._reconcile_live(tenant, record, [[AGENTS, scope, member, last_ts] for scope in [*qs, ALL]])
        expire_at = last_ts + max(self.horizon, 7 * _DAY)
        self._agent_prune(tenant, agent, record)
        self._agent_spill(tenant, agent, record, expire_at)
        store.put_record("agent", tenant, agent, record, expire_at)

    def _agent_day_add(self, tenant: str, record: Record, ts: float, fields: Mapping[str, float], sign: int) -> None:
        """Add (``sign`` -1: retract) one of the agent's own occupancy contributions (its
        ``_all`` one: the agent alone) to ``record["days"]``, the sums of the local day that
        holds ``ts`` (``{day start: {field: sum}}``, the last two days kept): the agent's
        occupancy today (:func:`kpi_core.kpis.live_agents`) integrates them as the queues' do."""
        span = self._local_days.get(tenant)
        if span is None or not span[0] <= ts < span[1]:
            zone = self.config.timezone(tenant)
            midnight = local_midnight(ts, zone)
            # A local day lasts 23 to 25 h: 26 h on is in the next one.
            span = self._local_days[tenant] = (midnight, local_midnight(midnight + 26 * 3600, zone))
        start = span[0]
        days: dict[str, dict[str, float]] = record.setdefault("days", {})
        day = days.setdefault(str(int(start)), {})
        for key, value in fields.items():
            day[key] = day.get(key, 0) + sign * value
        for key in [k for k in days if int(k) < start - 2 * _DAY]:
            del days[key]

    def _agent_prune(self, tenant: str, agent: str, record: Record) -> None:
        """Forget what no event can change any more: keep the latest change older than the
        lateness cutoff (its state and queues are where the next one starts from) and the rest;
        drop the history chunks that end before it."""
        changes: list[list[Any]] = record["changes"]
        cutoff = self._cutoff
        chunks: list[list[Any]] = record.get("chunks", [])
        if chunks:
            firsts = [c[1] for c in chunks[1:]] + [changes[0][0]]
            drop = 0
            while drop < len(chunks) and firsts[drop] < cutoff:
                drop += 1
            for seq, _first, _base in chunks[:drop]:
                self.store.delete_record("agent_h", tenant, _chunk_key(agent, seq))
            del chunks[:drop]
            if not chunks:
                record.pop("chunks")
        # A change older than the cutoff in the record means every chunk was dropped above.
        older = bisect.bisect_left(changes, cutoff, key=lambda c: c[0])
        if older > 1 or (older == 1 and "base" in record):
            changes[older - 1][3] = self._agent_queues(changes, older, record.pop("base", []))
            del changes[: older - 1]

    def _agent_spill(self, tenant: str, agent: str, record: Record, expire_at: float) -> None:
        """Move all but the latest AGENT_HEAD changes to a new history chunk once the record
        holds more than twice that (a write, no read)."""
        changes: list[list[Any]] = record["changes"]
        if len(changes) <= 2 * self.AGENT_HEAD:
            return
        cut = len(changes) - self.AGENT_HEAD
        seq = record.get("seq", 0)
        base = record.get("base", [])
        record.setdefault("chunks", []).append([seq, changes[0][0], base])
        self.store.put_record("agent_h", tenant, _chunk_key(agent, seq), {"changes": changes[:cut]}, expire_at)
        record["base"] = self._agent_queues(changes, cut, base)
        record["seq"] = seq + 1
        del changes[:cut]

    def _agent_unsplit(self, tenant: str, agent: str, record: Record) -> list[list[Any]]:
        """Bring the history chunks back into the record (for an event that lands before its
        first change): the record then holds every change kept, from the first chunk's start."""
        every: list[list[Any]] = []
        for seq, _first, _base in record["chunks"]:
            chunk = self.store.get_record("agent_h", tenant, _chunk_key(agent, seq))
            if chunk is not None:  # expired: only changes long frozen were in it
                every.extend(chunk["changes"])
            self.store.delete_record("agent_h", tenant, _chunk_key(agent, seq))
        record["base"] = record["chunks"][0][2]
        del record["chunks"]
        every.extend(record["changes"])
        record["changes"] = every
        return every

    @staticmethod
    def _agent_queues(changes: list[list[Any]], stop: int, base: list[str] | None = None) -> list[str]:
        """The queues an agent has after ``changes[:stop]`` (a change without queues keeps
        the ones before it; ``base``: the queues before ``changes[0]``)."""
        for i in range(stop - 1, -1, -1):
            if changes[i][3] is not None:
                return changes[i][3]
        return base or []

    def _agent_contributions(
        self, changes: list[list[Any]], start: int, stop: int, base: list[str] | None = None
    ) -> dict[str, Contribution]:
        """The contributions of ``changes[start:stop]``, by ``<event id>:<scope>``."""
        out: dict[str, Contribution] = {}
        previous = changes[start - 1] if start > 0 else None
        current = self._agent_queues(changes, start, base)
        for i in range(start, stop):
            ts, eid, state, qs = changes[i][:4]
            deltas: dict[str, dict[str, float]] = {}
            if previous is not None:
                for scope in [*current, ALL]:
                    self._occupancy_delta(deltas, scope, previous[2], -1)
            if qs is not None:
                current = qs
            for scope in [*current, ALL]:
                self._occupancy_delta(deltas, scope, state, +1)
            for scope, d in deltas.items():
                fields = {k: v for k, v in d.items() if v}
                if fields:
                    ts_ms = to_ms(ts)
                    fields.update({f"{k}_t_ms": v * ts_ms for k, v in list(fields.items())})
                    out[f"{eid}:{scope}"] = [scope, ts, fields]
            previous = changes[i]
        return out

    @staticmethod
    def _occupancy_delta(deltas: dict[str, dict[str, float]], scope: str, state: str, sign: int) -> None:
        d = deltas.setdefault(scope, {"occ_busy": 0, "occ_staffed": 0, "occ_logged": 0})
        if state in BUSY_STATES:
            d["occ_busy"] += sign
        if state in STAFFED_STATES:
            d["occ_staffed"] += sign
        if state in LOGGED_IN_STATES:
            d["occ_logged"] += sign

    # -- tickets ---------------------------------------------------------------------------
    def _ticket(self, ev: Event) -> None:
        store = self.store
        tenant = ev.tenant
        ticket_id = ev.ticket_id
        assert ticket_id is not None
        record = store.get_record("ticket", tenant, ticket_id) or {"replies": [], "resolutions": [], "reopens": []}
        created: list[Any] | None
        if ev.type == "ticket.created":
            created = [ev.ts, ev.event_id, ev.queue, ev.kb_session_id, ev.channel, ev.priority]
            if "created" not in record or created[:2] < record["created"][:2]:
                record["created"] = created
        elif ev.type == "ticket.replied":
            record["replies"].append([ev.ts, ev.event_id, ev.author, ev.queue])
        elif ev.type == "ticket.resolved":
            record["resolutions"].append([ev.ts, ev.event_id, ev.resolution, ev.first_contact, ev.queue])
        else:
            record["reopens"].append([ev.ts, ev.event_id, ev.queue])
        created = record.get("created")
        queue = created[2] if created else next(
            (fact[-1] for key in ("replies", "resolutions", "reopens") for fact in record[key] if fact[-1]), None
        )
        desired: dict[str, Contribution] = {}
        live: list[list[Any]] = []
        if queue is not None:
            desired, live = self._ticket_contributions(ticket_id, record, queue)
        self._reconcile(tenant, record, desired)
        self._reconcile_live(tenant, record, live)
        times = [f[0] for key in ("replies", "resolutions", "reopens") for f in record[key]]
        last = max([*times, created[0] if created else 0.0])
        keep = _TICKET_MAX_AGE if live else self.horizon
        store.put_record("ticket", tenant, ticket_id, record, last + keep)
        if ev.type == "ticket.created" and ev.kb_session_id is not None and created is not None:
            self._kb_escalation(tenant, ev.kb_session_id, ticket_id, created[0])

    def _ticket_contributions(
        self, ticket_id: str, record: Record, queue: str
    ) -> tuple[dict[str, Contribution], list[list[Any]]]:
        desired: dict[str, Contribution] = {}
        created = record.get("created")
        replies = sorted(record["replies"], key=lambda r: (r[0], r[1]))
        resolutions = sorted(record["resolutions"], key=lambda r: (r[0], r[1]))
        reopens = sorted(record["reopens"], key=lambda r: (r[0], r[1]))
        if created is not None:
            created_ts = created[0]
            # Records from before channel and priority were kept: no breakdown.
            channel, priority = (created[4], created[5]) if len(created) > 5 else (None, None)
            desired["created"] = [queue, created_ts, broken_down({"tk_created": 1}, channel, priority)]
            agent_replies = [r for r in replies if r[2] == "agent"]
            if agent_replies:
                first = agent_replies[0]
                desired["frt"] = [queue, first[0], broken_down(
                    {"frt_n": 1, "frt_sum_ms": max(0, to_ms(first[0]) - to_ms(created_ts))}, channel, priority
                )]
            pending_since: float | None = created_ts
            for ts, eid, author, _q in replies:
                if author == "customer":
                    if pending_since is None:
                        pending_since = ts
                elif pending_since is not None:
                    desired[f"rt:{eid}"] = [queue, ts, {"rt_n": 1, "rt_sum_ms": max(0, to_ms(ts) - to_ms(pending_since))}]
                    pending_since = None
        for ts, eid, resolution, _fc, _q in resolutions:
            desired[f"res:{eid}"] = [
                queue, ts,
                {"tk_resolved": 1, "tk_solved": 1 if resolution == "solved" else 0,
                 "tk_unresolvable": 1 if resolution == "unresolvable" else 0},
            ]  # fmt: skip
        if resolutions:
            ts, eid, _res, first_contact, _q = resolutions[0]
            if first_contact is None:
                replies_before = sum(1 for r in replies if r[2] == "agent" and r[0] <= ts)
                first_contact = replies_before <= 1 and not reopens
            fields = {"tfcr_n": 1, "tfcr_ok": 1 if first_contact else 0}
            if created is not None:
                fields["art_n"] = 1
                fields["art_sum_ms"] = max(0, to_ms(ts) - to_ms(created[0]))
            desired["first_res"] = [queue, ts, fields]
        for ts, eid, _q in reopens:
            desired[f"reo:{eid}"] = [queue, ts, {"tk_reopened": 1}]
        live: list[list[Any]] = []
        if created is not None:
            last_res = resolutions[-1][0] if resolutions else None
            last_reopen = reopens[-1][0] if reopens else None
            if last_res is None or (last_reopen is not None and last_reopen > last_res):
                live.append([TICKETS, queue, ticket_id, created[0]])
        return desired, live

    # -- knowledge base --------------------------------------------------------------------
    def _kb(self, ev: Event) -> None:
        assert ev.session_id is not None and ev.article_id is not None
        self._kb_update(ev.tenant, ev.session_id, lambda rec: rec["views"].append([ev.ts, ev.event_id, ev.article_id]))

    def _kb_escalation(self, tenant: str, session: str, ticket_id: str, ts: float) -> None:
        def mutate(rec: Record) -> None:
            rec["tickets"][ticket_id] = ts

        self._kb_update(tenant, session, mutate)

    def _kb_update(self, tenant: str, session: str, mutate: Callable[[Record], None]) -> None:
        store = self.store
        record = store.get_record("kb", tenant, session) or {"views": [], "tickets": {}}
        mutate(record)
        desired: dict[str, Contribution] = {}
        articles = sorted({view[2] for view in record["views"]})
        for ts, eid, article in record["views"]:
            desired[f"v:{eid}"] = [KB_SCOPE_PREFIX + article, ts, {"kb_views": 1}]
        for ticket_id, ts in record["tickets"].items():
            for article in articles:
                desired[f"e:{ticket_id}:{article}"] = [KB_SCOPE_PREFIX + article, ts, {"kb_escalations": 1}]
        self._reconcile(tenant, record, desired)
        last = max([v[0] for v in record["views"]] + list(record["tickets"].values()))
        store.put_record("kb", tenant, session, record, last + self.horizon)

    # -- surveys ---------------------------------------------------------------------------
    def _survey(self, ev: Event) -> None:
        assert ev.queue is not None and ev.score is not None
        if ev.survey in PULSE_SURVEYS:
            self._pulse(ev)
            return
        score = ev.score
        fields: Mapping[str, float]
        if ev.survey == "csat":
            scale_max = ev.scale_max or 5
            fields = {"csat_n": 1, "csat_top": 1 if score >= scale_max - 1 else 0}
        elif ev.survey == "nps":
            fields = {"nps_n": 1, "nps_pro": 1 if score >= 9 else 0, "nps_det": 1 if score <= 6 else 0}
        else:
            fields = {"ces_n": 1, "ces_sum_ms": to_ms(score)}  # thousandths of a point
        self.store.add(ev.tenant, ev.queue, ev.ts, fields)

    def _pulse(self, ev: Event) -> None:
        """The employee pulse (``esat``, ``enps``: agents answer about their own work), released
        in batches so that no agent's answer can be read off any figure ccmon exports.

        The record of a queue's local day keeps its answers in time order. Walking them, a
        batch closes at the answer that brings it to ``pulse_min_responses`` different agents;
        the batch's sums are one contribution, at that answer's time, and the answers after the
        last closed batch contribute nothing (yet). So every window, the tenant's ``_all`` and
        every difference between two of them (two scrapes, two windows, a queue and ``_all``)
        holds whole batches: answers of at least that many agents, never fewer. A late answer
        may move later answers into another batch (the batches are recomputed, retracting what
        changed, as everywhere in the engine)."""
        assert ev.queue is not None and ev.score is not None and ev.agent_id is not None
        store = self.store
        tenant = ev.tenant
        queue = ev.queue
        key = f"{queue}\x1f{local_midnight(ev.ts, self.config.timezone(tenant)):.0f}"
        record = store.get_record("pulse", tenant, key) or {"answers": []}
        answers: list[list[Any]] = record["answers"]  # [ts, event id, survey, agent, {field: value}]
        score = ev.score
        if ev.survey == "esat":
            fields = {"esat_n": 1, "esat_top": 1 if score >= (ev.scale_max or 5) - 1 else 0}
        else:
            fields = {"enps_n": 1, "enps_pro": 1 if score >= 9 else 0, "enps_det": 1 if score <= 6 else 0}
        bisect.insort(answers, [ev.ts, ev.event_id, ev.survey, ev.agent_id, fields], key=lambda a: (a[0], a[1]))
        self._reconcile(tenant, record, pulse_batches(answers, queue, self.config.pulse_minimum(tenant)))
        store.put_record("pulse", tenant, key, record, answers[-1][0] + self.horizon)


def pulse_batches(answers: list[list[Any]], scope: str, minimum: int) -> dict[str, Contribution]:
    """The contributions of a day's pulse ``answers`` (``[ts, event id, survey, agent,
    fields]``, in time order): per survey, one per batch of consecutive answers from at least
    ``minimum`` different agents, at the time of its last answer; a batch not yet complete
    contributes nothing."""
    desired: dict[str, Contribution] = {}
    for survey in sorted(PULSE_SURVEYS):
        agents: set[str] = set()
        sums: dict[str, float] = {}
        batch = 0
        for ts, _eid, kind, agent, fields in answers:
            if kind != survey:
                continue
            agents.add(agent)
            for name, value in fields.items():
                sums[name] = sums.get(name, 0) + value
            if len(agents) >= minimum:
                desired[f"{survey}:{batch}"] = [scope, ts, sums]
                agents, sums, batch = set(), {}, batch + 1
    return desired
