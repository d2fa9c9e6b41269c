"""Tickets: created, replied, resolved, reopened (:class:`TicketsMixin`)."""

from __future__ import annotations

from typing import Any

from kpi_core.engine.base import DAY, TICKETS, Contribution, Fold, broken_down, trait
from kpi_core.events import Event
from kpi_core.native import mypyc_attr
from kpi_core.state import Record, to_ms

#: An open ticket's record is kept this long after its last event (help-desk tickets may sit
#: untouched for months; 30 days lost the creation time of 884 of 20,769 real incidents).
TICKET_MAX_AGE = 366 * DAY


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class TicketsMixin(Fold):
    """``ticket.*``: a ticket's record, its contributions and the open-tickets set."""

    def _ticket(self, ev: Event) -> None:
        store, tenant, ticket_id = self.store, ev.tenant, ev.ticket_id
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
        queue = (
            created[2]
            if created
            else next(
                (fact[-1] for key in ("replies", "resolutions", "reopens") for fact in record[key] if fact[-1]), None
            )
        )
        desired: dict[str, Contribution] = {}
        live: list[list[Any]] = []
        if queue is not None:
            desired, live = self._ticket_contributions(ticket_id, record, queue)
        self._reconcile(tenant, record, desired)
        self._reconcile_live(tenant, record, live)
        times = [f[0] for key in ("replies", "resolutions", "reopens") for f in record[key]]
        last = max([*times, created[0] if created else 0.0])
        keep = TICKET_MAX_AGE if live else self.horizon
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
                desired["frt"] = [
                    queue,
                    first[0],
                    broken_down(
                        {"frt_n": 1, "frt_sum_ms": max(0, to_ms(first[0]) - to_ms(created_ts))}, channel, priority
                    ),
                ]
            pending_since: float | None = created_ts
            for ts, eid, author, _q in replies:
                if author == "customer":
                    if pending_since is None:
                        pending_since = ts
                elif pending_since is not None:
                    desired[f"rt:{eid}"] = [
                        queue,
                        ts,
                        {"rt_n": 1, "rt_sum_ms": max(0, to_ms(ts) - to_ms(pending_since))},
                    ]
                    pending_since = None
        for ts, eid, resolution, _fc, _q in resolutions:
            desired[f"res:{eid}"] = [
                queue,
                ts,
                {
                    "tk_resolved": 1,
                    "tk_solved": 1 if resolution == "solved" else 0,
                    "tk_unresolvable": 1 if resolution == "unresolvable" else 0,
                },
            ]
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
