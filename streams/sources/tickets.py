"""Help-desk ticket event logs (CSV, one row per change of a ticket, e.g. a ServiceNow
incident audit export, read straight from a .zip) -> canonical ticket events, through a
declared mapping (TOML, ``--mapping``): which column is the ticket id, its state, when the
change happened, when the ticket was opened, its queue and customer, and what each state
value means (new, open, resolved, unresolvable, ignore). The first row of a ticket creates
it; its first state other than ``new`` is the first response; entering a resolved state is a
resolution, leaving one a reopen. The mapping is in the dialect of every tabular source
(:mod:`streams.sources.mapping`); this module is its mapper, a row -> its events. Ready
example: deploy/sources/itsm_incident_log.toml. See docs/sources/tickets.md."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpi_core.events import ALL
from streams.sources.common import Report, RowProblem, RowSkipped
from streams.sources.mapping import (
    Clock,
    Columns,
    Spec,
    TableMapping,
    clock,
    load_spec,
    mapped_command,
    read,
    rfc3339,
    table_mapping,
)

#: What a state value can mean.
MEANINGS = ("new", "open", "resolved", "unresolvable", "ignore")
#: Meanings of a ticket that is done (leaving one of them is a reopen).
DONE = frozenset({"resolved", "unresolvable"})
#: Column roles: (role, required).
ROLES = (
    ("ticket_id", True),
    ("state", True),
    ("changed_at", True),
    ("created_at", False),
    ("queue", False),
    ("customer_id", False),
)
#: Longest queue name the engine accepts as a label value (kpi_core.events.MAX_NAME_LENGTH).
MAX_QUEUE_LENGTH = 128


@dataclass(frozen=True)
class TicketMapping(TableMapping):
    """A validated ticket mapping (deploy/sources/itsm_incident_log.toml shows every field)."""

    clock: Clock
    states: dict[str, str]


def mapping_from_spec(spec: Spec) -> TicketMapping:
    shared = table_mapping(
        spec, sections={"states"}, id_prefix="tk", roles=ROLES, lists={"ticket_id"}, defaults_for={"queue"}
    )
    time = clock(spec)
    columns = shared["columns"]
    states = spec.meanings("states", MEANINGS)
    if not DONE & set(states.values()):
        raise spec.error("states", "no state means resolved or unresolvable: no ticket could ever be resolved")
    default_queue = shared["defaults"].get("queue")
    if not columns["queue"] and default_queue is None:
        raise spec.error("defaults.queue", "is required when no column is the queue (columns.queue)")
    if default_queue is not None and (default_queue == ALL or len(default_queue) > MAX_QUEUE_LENGTH):
        raise spec.error("defaults.queue", f"not a usable queue name: {default_queue!r}")
    return TicketMapping(**shared, clock=time, states=states)


def load_mapping(path: str | Path) -> TicketMapping:
    """Read and validate a mapping file; a bad one stops with the field named."""
    return mapping_from_spec(load_spec(path))


def mapping_from_dict(raw: dict[str, Any], name: str = "mapping.toml") -> TicketMapping:
    return mapping_from_spec(Spec(raw, name))


@dataclass(slots=True)
class _Ticket:
    meaning: str
    responded: bool
    queue: str


@dataclass
class TicketMapper:
    """Turns rows into events. Remembers each ticket's last state (one small entry per ticket
    of the file), so a ticket's rows must come in the order they happened, as an audit log
    lists them."""

    mapping: TicketMapping
    tenant: str = "default"
    tickets: dict[str, _Ticket] = field(default_factory=dict)
    row: Columns = field(init=False)

    def __post_init__(self) -> None:
        self.row = Columns(self.mapping.spec, self.mapping.columns, self.mapping.none)

    def set_header(self, header: list[str], where: str) -> None:
        self.row.set_header(header, where)

    def map(self, values: list[str]) -> list[dict[str, Any]]:
        parts = self.row.parts(values, "ticket_id")
        if not all(parts):
            raise RowProblem(f"missing_field:ticket_id: {'+'.join(self.mapping.columns['ticket_id'])} is empty")
        ticket_id = "-".join(parts)
        state = self.row.parts(values, "state")[0]
        meaning = self.mapping.states.get(state)
        if meaning is None:
            raise RowProblem(f"invalid_field:{self.row.column('state')}: {state[:40]!r} is not declared under [states]")
        if meaning == "ignore":
            raise RowSkipped(f"state {state}")
        changed_text = self.row.value(values, "changed_at")
        if changed_text is None:
            raise RowProblem(f"missing_field:{self.row.column('changed_at')}: no time of the change")
        changed = rfc3339(self.mapping.clock.parse(changed_text, self.row.column("changed_at")))
        digest = hashlib.blake2b("\x1f".join(values).encode(), digest_size=6).hexdigest()
        prefix = self.mapping.file.id_prefix

        def event(kind: str, ts: str, queue: str, event_id: str | None = None, **fields: Any) -> dict[str, Any]:
            return {
                "event_id": event_id or f"{prefix}-{ticket_id}-{kind.split('.')[1]}-{digest}",
                "type": kind,
                "ts": ts,
                "tenant": self.tenant,
                "ticket_id": ticket_id,
                "queue": queue,
                **{k: v for k, v in fields.items() if v is not None},
            }

        events: list[dict[str, Any]] = []
        known = self.tickets.get(ticket_id)
        if known is None:
            queue = self.row.value(values, "queue") or self.mapping.defaults.get("queue")
            if queue is None:
                raise RowProblem(f"missing_field:{self.row.column('queue')}: no queue and no [defaults] queue")
            if queue == ALL or len(queue) > MAX_QUEUE_LENGTH or not queue.isprintable():
                raise RowProblem(f"invalid_field:{self.row.column('queue')}: not a usable queue name: {queue[:40]!r}")
            created_text = self.row.value(values, "created_at")
            created = changed
            if created_text is not None:
                created = rfc3339(self.mapping.clock.parse(created_text, self.row.column("created_at")))
            known = _Ticket("", False, queue)
            # One creation per ticket, whichever row is read first: its id is the ticket's.
            events.append(
                event(
                    "ticket.created",
                    created,
                    queue,
                    f"{prefix}-{ticket_id}-created",
                    customer_id=self.row.value(values, "customer_id"),
                )
            )
        if meaning != "new" and not known.responded:
            events.append(event("ticket.replied", changed, known.queue, author="agent"))
            known.responded = True
        if meaning in DONE and known.meaning not in DONE:
            events.append(
                event(
                    "ticket.resolved",
                    changed,
                    known.queue,
                    resolution="solved" if meaning == "resolved" else "unresolvable",
                )
            )
        elif meaning not in DONE and known.meaning in DONE:
            events.append(event("ticket.reopened", changed, known.queue))
        known.meaning = meaning
        self.tickets[ticket_id] = known
        return events


def map_file(
    path: str, mapping_path: str | Path, *, tenant: str = "default", report: Report | None = None
) -> list[dict[str, Any]]:
    """Every event of a whole file (for tests and tools)."""
    report = report or Report("tickets", stream=io.StringIO())
    mapper = TicketMapper(load_mapping(mapping_path), tenant)
    return [event for events in read(path, mapper.mapping.file, mapper, report) for event in events]


# -- the command -------------------------------------------------------------------------------
add_arguments, run = mapped_command(
    "ccmon source tickets",
    "ticket event log(s): CSV, or a .zip holding one (read in place)",
    "deploy/sources/itsm_incident_log.toml",
    load_mapping,
    TicketMapper,
)
