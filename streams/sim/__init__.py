"""The contact-center simulator (``ccmon simulate``, ``ccmon demo``): a seeded, event-driven model
that writes canonical events. ``docs/SIMULATOR.md`` has the model and its parameters.

- :mod:`streams.sim.params`: the intraday profiles, :class:`QueueSpec`, :func:`default_queues`, :class:`SimParams`;
- :mod:`streams.sim.clock`: :func:`format_ts`, :func:`parse_start`, :class:`Pacer`;
- :mod:`streams.sim.base`: the entities and the event loop; :mod:`streams.sim.faults`: the delivery,
  with late, duplicate and malformed records injected;
- :mod:`streams.sim.model`: :class:`Simulator` (agents, shifts, calls, callbacks, outbound), over
  :mod:`streams.sim.tickets` (surveys, tickets, knowledge base).
"""

from streams.sim.clock import Pacer, format_ts, parse_start
from streams.sim.model import Simulator
from streams.sim.params import (
    CATALOGUE,
    PROFILES,
    QueueSpec,
    SimParams,
    default_queues,
    profile_share,
)

__all__ = [
    "CATALOGUE",
    "PROFILES",
    "Pacer",
    "QueueSpec",
    "SimParams",
    "Simulator",
    "default_queues",
    "format_ts",
    "parse_start",
    "profile_share",
]
