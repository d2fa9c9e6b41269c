"""Customers (tenant-wide): repeat callers and callbacks (:class:`CustomersMixin`).

A customer's record holds a summary of each of its calls (given by the calls' step, calls.py)
and of its callbacks; repeat-caller and callback contributions are recomputed from that
timeline. A ``callback.*`` event without a known customer stands alone in its callback's record.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from kpi_core.engine.base import CALLBACKS, DAY, Contribution, Fold, trait
from kpi_core.events import Event
from kpi_core.native import mypyc_attr
from kpi_core.state import Record, max_field, to_ms

MISSED_KINDS = frozenset({"abandoned", "timeout", "voicemail"})


def _any_missed(calls: dict[str, list[list[Any]]]) -> bool:
    """Whether a leg of the customer's calls (``[direction, offer ts, queue, kind, kind ts]``) was missed."""
    for legs in calls.values():
        for leg in legs:
            if leg[3] in MISSED_KINDS:
                return True
    return False


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class CustomersMixin(Fold):
    """``callback.*`` and the customer's side of calls: repeat callers and callbacks."""

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
                tenant,
                record,
                self._repeat_contributions(record, lo, hi),
                key="applied_repeat",
                only=lambda c: lo <= c[1] <= hi,
            )
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
                cid: legs
                for cid, legs in record["calls"].items()
                if any((leg[4] or leg[1] or 0) >= keep_from for leg in legs)
            }
            record["offers"] = [o for o in record.get("offers", []) if o[1] in record["calls"]]
        expire_at = max(last + self.horizon + self.config.repeat_caller_seconds, self._now + 3600)
        if live:
            expire_at = max(expire_at, self._now + 30 * DAY)
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
        if not record["callbacks"] and not (on_missed and _any_missed(record["calls"])):
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
            store.put_record("callback", tenant, cb_id, record, last + 30 * DAY)

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
                desired["cb"] = [
                    queue,
                    closing[0],
                    {"cb_made": 1, "cb_delay_sum_ms": delay_ms, max_field("cb_delay", delay_ms): 1},
                ]
            else:
                live.append([CALLBACKS, queue, f"\x1fcb\x1f{cb_id}", due])
        self._reconcile(tenant, record, desired)
        self._reconcile_live(tenant, record, live)
        store.put_record("callback", tenant, cb_id, record, last + (30 * DAY if live else self.horizon))
