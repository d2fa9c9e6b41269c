"""Agents: states, occupancy and each agent's calls of the day (:class:`AgentsMixin`)."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from kpi_core.config import REASON_NONE
from kpi_core.engine.base import AGENTS, DAY, Contribution, Fold, trait
from kpi_core.events import ALL, Event
from kpi_core.native import mypyc_attr
from kpi_core.state import Amount, Record, to_ms
from kpi_core.windows import local_midnight

BUSY_STATES = frozenset({"on_call", "acw"})
STAFFED_STATES = frozenset({"available", "on_call", "acw"})
#: Logged in: every state but ``offline`` (the agent-hours outbound productivity divides by).
LOGGED_IN_STATES = frozenset({"available", "on_call", "acw", "away"})
#: In an agents-set member ``<state>[\x1e<reason>]\x1f<agent>``, what separates an ``away``
#: agent's state from its ``reason`` label (:func:`agent_member`; no reason: the state alone).
REASON_SEP = "\x1e"
#: A change's time, and its order (time, event id).
_TS = itemgetter(0)
_TS_ID = itemgetter(0, 1)
#: A logged-in state's occupancy, ``(busy, staffed, logged in)``, each 0 or 1 (any other state:
#: none; BUSY_STATES and STAFFED_STATES are logged in).
_OCCUPANCY = {state: (int(state in BUSY_STATES), int(state in STAFFED_STATES), 1) for state in LOGGED_IN_STATES}
_NOT_LOGGED_IN = (0, 0, 0)
#: Record kind of an agent's calls of the day (:meth:`AgentsMixin._agent_calls`).
AGENT_CALLS = "agent_calls"


def _chunk_key(agent: str, seq: int) -> str:
    """The key of an agent's history chunk record ``seq``."""
    return f"{agent}\x1f{seq}"


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


def agent_calls_today(record: Record | None, midnight: float, at: float) -> tuple[int, int, list[Any] | None]:
    """``(handled, missed, talk)`` of an agent's ``agent_calls`` record (:meth:`AgentsMixin._agent_calls`)
    read at ``at``: the ``handled`` and ``missed`` facts stamped from ``midnight`` (the local
    midnight that starts ``at``'s day) to ``at``, and the newest ``talk`` fact stamped up to
    ``at`` (ties: the greatest call id, then fact key), or None. Exact for any ``at`` from the
    record's ``upto`` on (the newest clock it was written at; before it, the day's facts up to
    ``upto`` count). A record in the format before ``counts`` (``calls``: every fact) is read
    as its facts."""
    if record is None:
        return 0, 0, None
    facts: dict[str, list[Any]] = record["facts"] if "facts" in record else record.get("calls", {})
    handled, missed = record.get("counts", {}).get(str(int(midnight)), (0, 0))
    talk: list[Any] | None = None
    best: tuple[float, str, str] | None = None
    for key, fact in facts.items():
        ts = fact[1]
        if ts > at:
            continue
        kind = fact[0]
        if kind == "talk":
            rank = (ts, str(fact[3]), key)
            if best is None or rank > best:
                best, talk = rank, fact
        elif ts >= midnight:
            if kind == "handled":
                handled += 1
            elif kind == "missed":
                missed += 1
    return handled, missed, talk


#: The latest changes an agent's record keeps by default (:attr:`AgentsMixin.AGENT_HEAD`).
AGENT_HEAD = 16


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class AgentsMixin(Fold):
    """``agent.state`` (occupancy, the agents set) and the agents' side of calls (``agent_calls``)."""

    #: An agent's record keeps its latest changes (between AGENT_HEAD and twice that); older
    #: ones move, AGENT_HEAD at a time, to history chunks that are read only for an event that
    #: lands before the record's first change. An instance's attribute (tests make it small);
    #: compiled, the class holds no value for it: :data:`AGENT_HEAD` is the default.
    AGENT_HEAD: int = AGENT_HEAD

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
        index = bisect.bisect_right(changes, (ev.ts, ev.event_id), key=_TS_ID)
        if index == 0 and record.get("chunks"):
            changes = self._agent_unsplit(tenant, agent, record)
            index = bisect.bisect_right(changes, (ev.ts, ev.event_id), key=_TS_ID)
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
        expire_at = last_ts + max(self.horizon, 7 * DAY)
        self._agent_prune(tenant, agent, record)
        self._agent_spill(tenant, agent, record, expire_at)
        store.put_record("agent", tenant, agent, record, expire_at)

    def _agent_day_add(self, tenant: str, record: Record, ts: float, fields: Mapping[str, Amount], sign: int) -> None:
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
        days: dict[str, dict[str, Amount]] = record.setdefault("days", {})
        day = days.setdefault(str(int(start)), {})
        for key, value in fields.items():
            day[key] = day.get(key, 0) + sign * value
        for key in [k for k in days if int(k) < start - 2 * DAY]:
            del days[key]

    def _agent_calls(self, tenant: str, call_id: str, record: Record, legs: list[dict[str, Any]]) -> None:
        """Keep each agent's part of this call in the agent's ``agent_calls`` record. A call
        gives an agent facts ``<call id>\x1f<fact> -> [kind, ts, ...]``: ``talk`` (a leg the
        agent answered, or an outbound call it made, not ended yet: its current call; ``+
        [queue, call id]``), ``handled`` (an inbound leg it answered that ended; ts: the end)
        and ``missed`` (rung, no answer). The call record keeps what it last gave each agent
        (``agents``), so an event changes only what the call's facts now imply, whatever the
        arrival order: the facts it no longer implies are retracted, the new ones added.

        The agent's record does not keep every fact of its day, only what
        :func:`agent_calls_today` answers from (its size and the work per event do not grow
        with the day):

        * ``counts``: ``{local day start: [handled, missed]}``, the counts of the facts stamped up
          to ``upto`` (the newest clock the record was written at) per local day of the tenant
          (the day of the fact's ts): a new fact adds 1, a retracted one takes 1 off. The
          last two days are kept: days that start before ``floor`` (26 h before the latest
          day counted, or before the clock the record was created at) are dropped, and a fact
          of such a day is neither counted nor taken off.
        * ``facts``: the ``talk`` facts (an agent has few current calls) and the ``handled`` /
          ``missed`` facts stamped after ``upto`` (from the future, up to
          ``engine.max_future_seconds``), one by one: a read at ``at`` counts those up to
          ``at`` only, as the facts' day counts hold none after ``upto``. Once ``upto`` passes
          them they move into the counts.
        * ``first_talk`` / ``first_ahead``: at most the ts of the oldest ``talk`` fact and of
          the oldest ``facts`` one after ``upto``, so ``facts`` is scanned only when something
          is due: a ``talk`` older than ``max_call_age`` to drop, a fact ``upto`` passed.
        * ``newest``: the newest ts of a fact it took (one taken back since still counts); the
          record expires a day after it.

        A record written before (``calls``: every fact of the day) is read as ``facts`` with no
        counts, and converted on its next write (its facts counted as above), so a fact it
        holds can still be retracted."""
        desired: dict[str, dict[str, list[Any]]] = {}
        for leg in legs:
            if leg["direction"] == "outbound":  # the agent's current call until it ends; not counted
                if leg.get("agent") is not None and not leg["ended"]:
                    desired.setdefault(leg["agent"], {})[f"{call_id}\x1f{leg['key']}"] = [
                        "talk",
                        leg["offer_ts"],
                        leg["queue"],
                        call_id,
                    ]
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
        oldest_talk = self._now - self.config.max_call_age_seconds
        for agent in sorted(set(applied) | set(desired)):
            old, new = applied.get(agent, {}), desired.get(agent, {})
            if old == new:
                continue
            rec = self._agent_calls_record(tenant, agent, oldest_talk)
            for key, fact in old.items():
                if new.get(key) != fact:
                    self._agent_fact(tenant, rec, key, fact, -1, oldest_talk)
            for key, fact in new.items():
                if old.get(key) != fact:
                    self._agent_fact(tenant, rec, key, fact, +1, oldest_talk)
            if rec["facts"] or rec["counts"]:
                store.put_record(AGENT_CALLS, tenant, agent, rec, rec["newest"] + DAY)
            else:
                store.delete_record(AGENT_CALLS, tenant, agent)
        if desired:
            record["agents"] = desired
        else:
            record.pop("agents", None)

    def _agent_calls_record(self, tenant: str, agent: str, oldest_talk: float) -> Record:
        """The agent's ``agent_calls`` record as of now (:meth:`_agent_calls`): ``upto`` moved
        on to now, and, only when something is due (or the record is in the format before
        ``counts``), the ``facts`` scanned: the ``talk`` ones older than ``oldest_talk`` dropped,
        the others ``upto`` passed moved into the day counts."""
        now = self._now
        rec = self.store.get_record(AGENT_CALLS, tenant, agent)
        # A new record counts no day that starts more than 26 h before now: an expired one may
        # have counted facts a late event retracts; one in the format before ``counts`` held the
        # facts of the last 26 h only.
        if rec is None:
            return {"counts": {}, "facts": {}, "upto": now, "floor": now - 26 * 3600.0, "newest": 0.0}
        calls = rec.pop("calls", None)
        if calls is not None:  # the format before counts: every fact, one by one
            rec = {"counts": {}, "facts": calls, "upto": now, "floor": now - 26 * 3600.0, "newest": 0.0}
            rec["newest"] = max((f[1] for f in calls.values()), default=0.0)
            self._agent_calls_scan(tenant, rec, oldest_talk)
            return rec
        if now > rec["upto"]:
            rec["upto"] = now
        first_talk, first_ahead = rec.get("first_talk"), rec.get("first_ahead")
        if (first_talk is not None and first_talk < oldest_talk) or (
            first_ahead is not None and first_ahead <= rec["upto"]
        ):
            self._agent_calls_scan(tenant, rec, oldest_talk)
        return rec

    def _agent_calls_scan(self, tenant: str, rec: Record, oldest_talk: float) -> None:
        """Go through ``rec["facts"]``: drop the ``talk`` facts older than ``oldest_talk``, count
        the others stamped up to ``upto`` in their day, and set ``first_talk`` / ``first_ahead``
        to the oldest of what stays."""
        upto = rec["upto"]
        facts: dict[str, list[Any]] = rec["facts"]
        first_talk = first_ahead = None
        for key, fact in list(facts.items()):
            ts = fact[1]
            if fact[0] == "talk":
                if ts < oldest_talk:
                    del facts[key]
                elif first_talk is None or ts < first_talk:
                    first_talk = ts
            elif ts <= upto:
                del facts[key]
                self._agent_count(tenant, rec, fact, +1)
            elif first_ahead is None or ts < first_ahead:
                first_ahead = ts
        for name, value in (("first_talk", first_talk), ("first_ahead", first_ahead)):
            if value is None:
                rec.pop(name, None)
            else:
                rec[name] = value

    def _agent_fact(self, tenant: str, rec: Record, key: str, fact: list[Any], sign: int, oldest_talk: float) -> None:
        """Add (``sign`` +1) or retract (-1) one of a call's facts in the agent's record."""
        facts: dict[str, list[Any]] = rec["facts"]
        ts = fact[1]
        if sign < 0:
            if fact[0] == "talk" or ts > rec["upto"]:
                facts.pop(key, None)
                if not facts:  # nothing left to be due
                    rec.pop("first_talk", None)
                    rec.pop("first_ahead", None)
            else:
                self._agent_count(tenant, rec, fact, -1)
            return
        if fact[0] == "talk":
            if ts < oldest_talk:  # dropped as it comes (a current call is at most max_call_age old)
                return
            facts[key] = fact
            if ts < rec.get("first_talk", ts + 1):
                rec["first_talk"] = ts
        elif ts > rec["upto"]:
            facts[key] = fact
            if ts < rec.get("first_ahead", ts + 1):
                rec["first_ahead"] = ts
        elif not self._agent_count(tenant, rec, fact, +1):
            return
        if ts > rec["newest"]:
            rec["newest"] = ts

    def _agent_count(self, tenant: str, rec: Record, fact: list[Any], sign: int) -> bool:
        """Count (``sign`` +1) or take off (-1) a ``handled`` / ``missed`` fact in its local day of
        ``rec["counts"]``; a fact of a day before ``rec["floor"]`` is neither (False). Counting a
        fact of a later day than any before moves the floor to 26 h before that day's start and
        drops the days that start before it."""
        day = self._agent_local_day(tenant, fact[1])
        by_day: dict[str, list[int]] = rec["counts"]
        if day < rec["floor"]:
            return False
        name = str(int(day))
        counts = by_day.get(name)
        index = 0 if fact[0] == "handled" else 1
        if sign < 0:
            if counts is not None and counts[index] > 0:
                counts[index] -= 1
                if not any(counts):
                    del by_day[name]
            return True
        if counts is None:
            counts = by_day[name] = [0, 0]
            floor = day - 26 * 3600.0
            if floor > rec["floor"]:
                rec["floor"] = floor
                for old in [k for k in by_day if int(k) < floor]:
                    del by_day[old]
        counts[index] += 1
        return True

    def _agent_local_day(self, tenant: str, ts: float) -> float:
        """The start of the tenant's local day holding ``ts`` (cached as :meth:`_agent_day_add`
        does: ``_local_days`` holds one day per tenant)."""
        span = self._local_days.get(tenant)
        if span is None or not span[0] <= ts < span[1]:
            zone = self.config.timezone(tenant)
            midnight = local_midnight(ts, zone)
            # A local day lasts 23 to 25 h: 26 h on is in the next one.
            span = self._local_days[tenant] = (midnight, local_midnight(midnight + 26 * 3600, zone))
        return span[0]

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
        older = bisect.bisect_left(changes, cutoff, key=_TS)
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
        """The contributions of ``changes[start:stop]``, by ``<event id>:<scope>``: per scope
        (each queue the agent has, counted as often as listed, and ``_all``), the occupancy of
        the change's state less that of the one before (in the previous change's queues)."""
        out: dict[str, Contribution] = {}
        previous = changes[start - 1] if start > 0 else None
        current = self._agent_queues(changes, start, base)
        for i in range(start, stop):
            ts, eid, state, qs = changes[i][:4]
            # scope -> [busy, staffed, logged in]: the scopes left first, as they were listed
            deltas: dict[str, list[int]] = {}
            if previous is not None:
                for scope in [*current, ALL]:
                    self._occupancy_delta(deltas, scope, previous[2], -1)
            if qs is not None:
                current = qs
            for scope in [*current, ALL]:
                self._occupancy_delta(deltas, scope, state, +1)
            ts_ms = None
            for scope, (busy, staffed, logged) in deltas.items():
                if busy or staffed or logged:
                    if ts_ms is None:
                        ts_ms = to_ms(ts)
                    fields: dict[str, Amount] = {}
                    if busy:
                        fields["occ_busy"] = busy
                    if staffed:
                        fields["occ_staffed"] = staffed
                    if logged:
                        fields["occ_logged"] = logged
                    if busy:
                        fields["occ_busy_t_ms"] = busy * ts_ms
                    if staffed:
                        fields["occ_staffed_t_ms"] = staffed * ts_ms
                    if logged:
                        fields["occ_logged_t_ms"] = logged * ts_ms
                    out[f"{eid}:{scope}"] = [scope, ts, fields]
            previous = changes[i]
        return out

    @staticmethod
    def _occupancy_delta(deltas: dict[str, list[int]], scope: str, state: str, sign: int) -> None:
        """Add ``sign`` times the occupancy of ``state`` (``[busy, staffed, logged in]``, each 0
        or 1) to ``deltas[scope]``."""
        occupancy = _OCCUPANCY.get(state, _NOT_LOGGED_IN)
        d = deltas.get(scope)
        if d is None:
            deltas[scope] = [sign * occupancy[0], sign * occupancy[1], sign * occupancy[2]]
        else:
            d[0] += sign * occupancy[0]
            d[1] += sign * occupancy[1]
            d[2] += sign * occupancy[2]
