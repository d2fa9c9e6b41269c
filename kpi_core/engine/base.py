"""What the engine's domain modules share: the shape of a contribution, the live sets' names,
the channel and priority breakdown, and :class:`Fold`, the engine as a domain step sees it.

A domain module (``calls``, ``customers``, ``agents``, ``tickets``, ``surveys``) holds a mixin
of :class:`~kpi_core.engine.Engine`: the step that folds one kind of event into its entity's
record and the contributions the record implies. It reaches the store, the reconciliation and
the steps of other domains only through :class:`Fold` (what the engine provides), never by
importing another domain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kpi_core.config import Config
from kpi_core.native import mypyc_attr, trait
from kpi_core.state import Amount, Record, StateStore

Contribution = list[Any]  # [scope, ts, {field: value}]

DAY = 86400.0

#: Live set names.
WAITING = "waiting"
CALLBACKS = "callbacks"
TICKETS = "tickets"
AGENTS = "agents"

#: The fields broken down by channel and priority (docs/KPIS.md, "Channel and priority"):
#: besides ``offered``, a call's or ticket's contribution carries ``offered@c:chat`` (its
#: channel) and ``offered@p:7`` (its priority), in the same scope and bucket, so the
#: breakdown is retracted, pruned and retired with the field it breaks down.
BREAKDOWN_FIELDS = frozenset(
    {
        "offered",
        "answered",
        "abandoned",
        "short_abandoned",
        "answered_within",
        "abandoned_within",
        "abandoned_after",
        "asa_n",
        "asa_sum_ms",
        "tk_created",
        "frt_n",
        "frt_sum_ms",
    }
)
#: Field-name suffixes of a channel's and a priority's share of a field.
CHANNEL_MARK = "@c:"
PRIORITY_MARK = "@p:"


def broken_down(fields: dict[str, Amount], channel: str | None, priority: int | None) -> dict[str, Amount]:
    """``fields`` with each non-zero BREAKDOWN_FIELDS value repeated under its channel's and
    priority's name (none for a missing channel or priority)."""
    if channel is None:
        if priority is None:
            return fields
        marks: tuple[str, ...] = (f"{PRIORITY_MARK}{priority}",)
    elif priority is None:
        marks = (CHANNEL_MARK + channel,)
    else:
        marks = (CHANNEL_MARK + channel, f"{PRIORITY_MARK}{priority}")
    for name, value in list(fields.items()):
        if value and name in BREAKDOWN_FIELDS:
            for mark in marks:
                fields[name + mark] = value
    return fields


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class Fold:
    """The engine as a domain step sees it: its configuration and store, the time and lateness
    cutoff of the event being applied (set by :meth:`~kpi_core.engine.Engine.process`), the
    reconciliation, and the steps one domain hands on to another (a call's customer and
    agents, a ticket's knowledge-base session). :class:`~kpi_core.engine.Engine` implements
    them all."""

    config: Config
    store: StateStore
    horizon: float
    _now: float
    _cutoff: float
    _local_days: dict[str, tuple[float, float]]

    # What the engine (__init__.py) and the other domains provide (Engine's MRO puts its own and
    # the domains' methods first). Plain methods, not an `if TYPE_CHECKING:` block: mypyc compiles
    # no statement but definitions in a class body.

    def _reconcile(
        self,
        tenant: str,
        record: Record,
        desired: dict[str, Contribution],
        *,
        key: str = "applied",
        only: Callable[[Contribution], bool] | None = None,
    ) -> None:
        raise NotImplementedError

    def _reconcile_live(self, tenant: str, record: Record, desired: list[list[Any]]) -> None:
        raise NotImplementedError

    # customers.py: a call's offers and outcomes on its customer's timeline
    def _customer_update(
        self,
        tenant: str,
        customer: str,
        ts: float,
        mutate: Callable[[Record], None],
        repeat_range: tuple[float, float] | None = None,
    ) -> None:
        raise NotImplementedError

    # agents.py: a call's part in its agents' day
    def _agent_calls(self, tenant: str, call_id: str, record: Record, legs: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    # surveys.py: a ticket opened from a knowledge-base session
    def _kb_escalation(self, tenant: str, session: str, ticket_id: str, ts: float) -> None:
        raise NotImplementedError
