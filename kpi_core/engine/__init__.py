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

from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any

from kpi_core.config import Config
from kpi_core.engine.agents import (
    AGENT_CALLS,
    BUSY_STATES,
    LOGGED_IN_STATES,
    REASON_SEP,
    STAFFED_STATES,
    AgentsMixin,
    agent_member,
    split_state,
)
from kpi_core.engine.base import (
    AGENTS,
    BREAKDOWN_FIELDS,
    CALLBACKS,
    CHANNEL_MARK,
    DAY,
    PRIORITY_MARK,
    TICKETS,
    WAITING,
    Contribution,
    broken_down,
)
from kpi_core.engine.calls import TERMINAL_KINDS, WAIT_BUCKETS, CallsMixin, wait_bucket
from kpi_core.engine.customers import MISSED_KINDS, CustomersMixin
from kpi_core.engine.surveys import SurveysMixin, pulse_batches
from kpi_core.engine.tickets import TICKET_MAX_AGE, TicketsMixin
from kpi_core.errors import InvalidEventError
from kpi_core.events import ALL, CALL_TYPES, Event, Rejection
from kpi_core.native import mypyc_attr
from kpi_core.state import KB_SCOPE_PREFIX, Record, StateStore, is_queue_scope, retirable
from kpi_core.windows import local_midnight

__all__ = [
    "AGENTS",
    "AGENT_CALLS",
    "ALL",
    "BREAKDOWN_FIELDS",
    "BUSY_STATES",
    "CALLBACKS",
    "CARRIED_TYPES",
    "CARRY_SECONDS",
    "CHANNEL_MARK",
    "LOGGED_IN_STATES",
    "MISSED_KINDS",
    "PRIORITY_MARK",
    "REASON_SEP",
    "RETIRE_PER_UPKEEP",
    "STAFFED_STATES",
    "TERMINAL_KINDS",
    "TICKETS",
    "WAITING",
    "WAIT_BUCKETS",
    "Contribution",
    "Engine",
    "agent_member",
    "broken_down",
    "pulse_batches",
    "record_keys",
    "series_retention_seconds",
    "split_state",
    "wait_bucket",
]

#: Event types a carrying engine (``Engine(carry_open=True)``: replay, report) applies older
#: than the lateness cutoff: they open or close something the live system holds open however
#: long (a ticket, a callback, an agent's state, a waiting call). Surveys and knowledge-base
#: views hold nothing open: older than the lateness cutoff they stay ``too_late``.
CARRIED_TYPES = CALL_TYPES | {
    "callback.requested",
    "callback.attempted",
    "agent.state",
    "ticket.created",
    "ticket.replied",
    "ticket.resolved",
    "ticket.reopened",
}
#: The ``[limits]`` field of each guarded kind of name.
_LIMIT_FIELDS = {
    "tenant": "tenants",
    "queue": "queues_per_tenant",
    "agent": "agents_per_tenant",
    "article": "articles_per_tenant",
}
#: How far back a carrying engine applies CARRIED_TYPES events: the longest the live system
#: keeps an open entity after its last event (an open ticket's record). Older stamps (a null
#: date read as 1970) stay ``too_late``.
CARRY_SECONDS = TICKET_MAX_AGE

#: Most names one upkeep retires per kind and tenant (the rest go at the next one).
RETIRE_PER_UPKEEP = 500


def series_retention_seconds(config: Config) -> float:
    """How long a guarded name stays without an event before it retires: ``[limits]
    series_retention_days``, and at least the state horizon + 1 h (no event can change a
    retired name's contributions)."""
    return max(config.limits.series_retention_days * DAY, config.horizon_seconds + 3600.0)


def record_keys(event: Event) -> Iterator[tuple[str, str]]:
    """``(kind, key)`` of the records processing ``event`` reads that the event itself names
    (the first wave of :meth:`Engine.prefetch`)."""
    if event.call_id is not None:
        yield "call", event.call_id
    if event.callback_id is not None:
        yield "callback", event.callback_id
    if event.customer_id is not None and (event.call_id is not None or event.callback_id is not None):
        yield "customer", event.customer_id
    if event.type == "agent.state" and event.agent_id is not None:
        yield "agent", event.agent_id
    if event.ticket_id is not None:
        yield "ticket", event.ticket_id
    if event.kb_session_id is not None:
        yield "kb", event.kb_session_id
    if event.session_id is not None:
        yield "kb", event.session_id


@mypyc_attr(allow_interpreted_subclasses=True)  # tests and tools extend it (kpi_core.native)
class Engine(CallsMixin, CustomersMixin, AgentsMixin, TicketsMixin, SurveysMixin):
    """Applies events to a store. One engine per store; not thread-safe. The fold is here
    (:meth:`process`, the cardinality guard, :meth:`_reconcile`, :meth:`maintain`); each
    event type's step is in its domain's mixin (calls, customers, agents, tickets, surveys)."""

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
        #: The guarded names of the events of the last :meth:`prefetch`, by ``id(event)``
        #: (``(event, names)``: the names are an event's only while it is that object).
        self._series_ahead: dict[int, tuple[Event, list[tuple[str, str, str, int]]]] = {}

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
            raise InvalidEventError("too_late", f"ts {event.ts:.0f} is older than the state kept (cutoff {cutoff:.0f})")
        if event.ts > now + self.config.max_future_seconds:
            raise InvalidEventError(
                "from_the_future",
                f"ts {event.ts:.0f} is more than {self.config.max_future_seconds:.0f} s ahead of the clock ({now:.0f})",
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

    # -- the read plan ---------------------------------------------------------------------
    def prefetch(self, events: Sequence[Event], now: float) -> None:
        """Let the store read ahead (RedisState: a round trip per wave of this plan, not per
        event or kind of read) what processing ``events`` at ``now`` will read: the seen ids, the guard's
        registry entries, the records the events name (:func:`record_keys`), then, from the
        call and callback records just read, the customers of events that do not name theirs
        and the ``agent_calls`` records of the agents the batch's calls touch."""
        store = self.store
        store.prefetch_seen((ev.tenant, ev.event_id, ev.ts) for ev in events)
        # Each event's guarded names, kept for its _admit (the event object as the key's owner).
        ahead = self._series_ahead = {id(ev): (ev, self.series_of(ev)) for ev in events}
        store.prefetch_series(
            ((kind, tenant, name) for _ev, names in ahead.values() for kind, tenant, name, _limit in names),
            now - self.horizon,
        )
        wanted: dict[tuple[str, str], set[str]] = {}
        for ev in events:
            for kind, key in record_keys(ev):
                wanted.setdefault((kind, ev.tenant), set()).add(key)
        for (kind, tenant), keys in wanted.items():
            store.prefetch_records(kind, tenant, keys)
        # Second wave: the customers of calls and callbacks whose events do not name them.
        customers: dict[str, set[str]] = {}
        for ev in events:
            if ev.customer_id is not None:
                continue
            if ev.call_id is not None:
                record = store.get_record("call", ev.tenant, ev.call_id)  # read ahead now
            elif ev.callback_id is not None:
                record = store.get_record("callback", ev.tenant, ev.callback_id)
            else:
                continue
            if record is not None and record.get("customer") is not None:
                customers.setdefault(ev.tenant, set()).add(record["customer"])
        for tenant, keys in customers.items():
            store.prefetch_records("customer", tenant, keys)
        # And the agents' day records (agents board) that the batch's call events touch.
        agents: dict[str, set[str]] = {}
        for ev in events:
            if ev.call_id is not None:
                record = store.get_record("call", ev.tenant, ev.call_id)  # read ahead now
                agents.setdefault(ev.tenant, set()).update(self.call_agents(ev, record))
        for tenant, keys in agents.items():
            if keys:
                store.prefetch_records(AGENT_CALLS, tenant, keys)

    # -- the cardinality guard ---------------------------------------------------------------
    def _admit(self, event: Event, now: float) -> list[tuple[str, str, str]]:
        """The names ``event`` brings that must be (re-)registered, or InvalidEventError
        ``too_many_series`` when one of them is new and its kind is at its limit. A name
        counts for the state horizon after it was last admitted; names the configuration
        declares are never limited. Re-admission of a known name is written at most hourly."""
        store = self.store
        since = now - self.horizon
        admit: list[tuple[str, str, str]] = []
        ahead = self._series_ahead.pop(id(event), None)
        names = ahead[1] if ahead is not None and ahead[0] is event else self.series_of(event)
        for kind, tenant, name, limit in names:
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

    def series_of(self, event: Event) -> list[tuple[str, str, str, int]]:
        """``(kind, tenant, name, limit)`` of every name ``event`` brings under the guard."""
        limits = self.config.limits
        tenant = event.tenant
        names: list[tuple[str, str, str, int]] = []
        tenant_config = self.config.tenants.get(tenant)
        if tenant_config is None:
            names.append(("tenant", "", tenant, limits.tenants))
            configured: Container[str] = ()
        else:
            configured = tenant_config.queues
        queue = event.queue
        if queue is not None and queue not in configured:
            names.append(("queue", tenant, queue, limits.queues_per_tenant))
        queue = event.to_queue
        if queue is not None and queue not in configured:
            names.append(("queue", tenant, queue, limits.queues_per_tenant))
        for queue in event.queues or ():
            if queue is not None and queue not in configured:
                names.append(("queue", tenant, queue, limits.queues_per_tenant))
        if event.agent_id is not None:
            names.append(("agent", tenant, event.agent_id, limits.agents_per_tenant))
        if event.article_id is not None:
            names.append(("article", tenant, event.article_id, limits.articles_per_tenant))
        return names

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
        store.maintain(now, self.config.fine_keep_seconds, self.config.coarse_keep_seconds)
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
            for kind, limit in (
                ("queue", limits.queues_per_tenant),
                ("agent", limits.agents_per_tenant),
                ("article", limits.articles_per_tenant),
            ):
                retire(kind, tenant, limit)
            tenant_config = self.config.tenants.get(tenant)
            configured = tenant_config.queues if tenant_config is not None else {}
            queues = [s for s in scopes if is_queue_scope(s) and s != ALL and s not in configured]
            articles = [s[len(KB_SCOPE_PREFIX) :] for s in scopes if s.startswith(KB_SCOPE_PREFIX)]
            for kind, names in (("queue", queues), ("article", articles)):
                for i in range(0, len(names), 500):
                    chunk = names[i : i + 500]
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
        applied: dict[str, Contribution] | None = record.get(key)
        kept: dict[str, Contribution] = {}
        if not applied:  # the first time (most calls' first event): nothing to compare
            for cid, new in desired.items():
                if new[1] >= cutoff:
                    kept[cid] = new
                    store.add(tenant, new[0], new[1], new[2])
            record[key] = kept
            return
        for cid, old in applied.items():
            if old[1] < cutoff:
                continue
            if only is not None and not only(old):
                kept[cid] = old
                continue
            if desired.get(cid) == old:
                continue
            # ``max_*``: a legacy contribution's maximum (before maxima were multisets), never
            # retractable; a multiset field ``mx:*`` is a count and retracted as one.
            retract = {k: -v for k, v in old[2].items() if k[:4] != "max_"}
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
