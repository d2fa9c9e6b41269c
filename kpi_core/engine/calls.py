"""Calls and their legs: the fold step of ``call.*`` events (:class:`CallsMixin`).

A call's record keeps its facts (offers, terminals, rings, endings); :meth:`CallsMixin._call_legs`
splits them into legs, one per offer (a transfer re-offers the call to another queue), and each
leg implies its contributions, its membership of the waiting set, its customer's timeline
(customers.py) and its agents' part (agents.py).
"""

from __future__ import annotations

import bisect
from operator import itemgetter
from typing import Any

from kpi_core.engine.base import WAITING, Contribution, Fold, broken_down, trait
from kpi_core.events import Event
from kpi_core.native import mypyc_attr
from kpi_core.state import Amount, Record, max_field, to_ms

#: Upper bounds (``le``) of the wait-time histogram, seconds. The service-level thresholds in
#: common use (10, 15, 20, 30, 45, 60, 90, 120 s) are all bounds, so quantiles are exact there.
WAIT_BUCKETS: tuple[float, ...] = (
    1,
    2,
    3,
    5,
    8,
    10,
    15,
    20,
    25,
    30,
    40,
    45,
    50,
    60,
    75,
    90,
    120,
    150,
    180,
    240,
    300,
    420,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
    7200,
    14400,
    float("inf"),
)

TERMINAL_KINDS = {
    "call.answered": "answered",
    "call.abandoned": "abandoned",
    "call.timeout": "timeout",
    "call.voicemail": "voicemail",
    "call.transferred": "transferred",
}


#: The lists of a call record's facts (each fact: ``[ts, event id, queue, ...]``).
_FACT_KINDS = ("offers", "terminals", "rings", "ended")
#: A fact's order: its time, then its event id.
_TS_ID = itemgetter(0, 1)


def wait_bucket(wait: float) -> int:
    return bisect.bisect_left(WAIT_BUCKETS, wait)


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class CallsMixin(Fold):
    """``call.*``: a call's record, its legs and their contributions."""

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
                [*fact, ev.talk_seconds or 0.0, ev.hold_seconds or 0.0, ev.acw_seconds or 0.0, ev.resolved, ev.outcome]
            )
        before = record.get("summary")
        legs = self._call_legs(record)
        desired = self._call_contributions(tenant, legs)
        self._reconcile(tenant, record, desired)
        expired = record.get("expired", ())
        waiting: list[list[Any]] = []
        summary: list[list[Any]] = []
        complete = bool(legs)
        for leg in legs:
            queue, offer_ts, direction, outcome = leg["queue"], leg["offer_ts"], leg["direction"], leg["outcome"]
            if outcome is None:
                complete = False
                if offer_ts is not None and direction == "inbound":
                    member = f"{queue}\x1f{call_id}\x1f{leg['key']}"
                    if member not in expired:
                        waiting.append([WAITING, queue, member, offer_ts])
                summary.append([direction, offer_ts, queue, None, None])
            else:
                if outcome[0] == "answered" and not leg["ended"]:
                    complete = False
                summary.append([direction, offer_ts, queue, outcome[0], outcome[1]])
        self._reconcile_live(tenant, record, waiting)
        record["summary"] = summary
        if ev.agent_id is not None or record.get("agents"):  # the agents' part, only where there is one
            self._agent_calls(tenant, call_id, record, legs)
        # The call's newest fact (a fact time is its first item).
        last_ts = max([fact[0] for key in _FACT_KINDS for fact in record.get(key, ())])
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

            self._customer_update(tenant, customer, ev.ts, mutate, (min(changed), max(changed)) if changed else None)

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

    def _call_legs(self, record: Record) -> list[dict[str, Any]]:
        """Split a call into legs, one per offer (a transfer re-offers the call to another
        queue), and give each leg its terminals, rings and endings."""
        offers = record.get("offers", ())
        if len(offers) > 1:
            offers = sorted(offers, key=_TS_ID)
        # Offers recorded before channel and priority were kept have 4 items: no breakdown;
        # before the offering agent (outbound calls) was kept, 6.
        legs: list[dict[str, Any]] = [
            {
                "offer_ts": o[0],
                "queue": o[2],
                "direction": o[3],
                "key": o[1],
                "channel": o[4] if len(o) > 4 else None,
                "priority": o[5] if len(o) > 5 else None,
                "agent": o[6] if len(o) > 6 else None,
                "terminals": [],
                "rings": [],
                "ended": [],
                "outcome": None,
            }
            for o in offers
        ]
        only = legs[0] if len(legs) == 1 else None
        virtual: dict[str, dict[str, Any]] = {}

        def leg_for(ts: float, queue: str | None) -> dict[str, Any] | None:
            # The last leg of the fact's queue offered at or before it, else that queue's first.
            if only is not None and (queue is None or only["queue"] == queue):
                return only  # a call offered once (most): its one leg
            first: dict[str, Any] | None = None
            found: dict[str, Any] | None = None
            for candidate in legs:
                if queue is None or candidate["queue"] == queue:
                    if first is None:
                        first = candidate
                    if candidate["offer_ts"] <= ts:
                        found = candidate
            if first is not None:
                return found if found is not None else first
            if queue is None:
                return None
            leg = virtual.get(queue)
            if leg is None:
                leg = virtual[queue] = {
                    "offer_ts": None,
                    "queue": queue,
                    "direction": "inbound",
                    "key": f"q:{queue}",
                    "channel": None,
                    "priority": None,
                    "terminals": [],
                    "rings": [],
                    "ended": [],
                    "outcome": None,
                }
            return leg

        for key in ("terminals", "rings", "ended"):
            for fact in record.get(key, ()):
                leg = leg_for(fact[0], fact[2])
                if leg is not None:
                    leg[key].append(fact)
        all_legs = legs + [virtual[q] for q in sorted(virtual)] if virtual else legs
        for leg in all_legs:
            terminals = leg["terminals"]
            if terminals:
                first = terminals[0] if len(terminals) == 1 else min(terminals, key=_TS_ID)
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
                ended = leg["ended"]
                if ended:
                    end = ended[0] if len(ended) == 1 else min(ended, key=_TS_ID)
                    converted = end[7] in self.config.queue(tenant, queue).conversion_outcomes
                    desired[f"{key}:end"] = [queue, end[0], {"out_ended": 1, "out_sales": 1 if converted else 0}]
                continue
            channel, priority = leg["channel"], leg["priority"]
            if offer_ts is not None:
                desired[f"{key}:off"] = [queue, offer_ts, broken_down({"offered": 1}, channel, priority)]
            outcome = leg["outcome"]
            if outcome is not None:
                queue_config = self.config.queue(tenant, queue)
                kind, ts, wait = outcome
                # The wait in whole ms: the one the event carries rounded, else the difference
                # of the two times in ms (exact); the thresholds compare the wait in seconds.
                if wait is not None:
                    wait_ms = to_ms(wait)
                elif offer_ts is not None:
                    wait = max(0.0, ts - offer_ts)
                    wait_ms = max(0, to_ms(ts) - to_ms(offer_ts))
                fields: dict[str, Amount] = {kind: 1}
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
            ended = leg["ended"]
            if ended:
                end = ended[0] if len(ended) == 1 else min(ended, key=_TS_ID)
                talk, hold, acw, resolved = end[3], end[4], end[5], end[6]
                talk_ms = to_ms(talk)
                fields = {"handled": 1, "handle_sum_ms": talk_ms + to_ms(hold) + to_ms(acw), "talk_sum_ms": talk_ms}
                if resolved is not None:
                    fields["fcr_n"] = 1
                    fields["fcr_ok"] = 1 if resolved else 0
                desired[f"{key}:end"] = [queue, end[0], fields]
        return desired
