"""The simulator's output side: the records due, in delivery order, with the injected faults.

Every event the model makes is handed to :class:`Delivery` at its emit time. ``late_share`` of them
are delivered 1-15 minutes after their ``ts``, ``duplicate_share`` twice (the same ``event_id``, up to
30 s apart) and ``malformed_share`` are followed by a broken copy (:func:`malformed`) that
:func:`kpi_core.events.parse_event` / ``parse_line`` always reject. The injection draws come from
their own random stream, so the model's events are the same whatever the shares.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
from typing import Any

from kpi_core.events import ALL
from streams.kafka.produce import Record  # an event dict, or (malformed JSON) a raw string
from streams.sim.clock import ms
from streams.sim.params import SimParams


def malformed(event: dict[str, Any], kind: int) -> Record:
    """A broken copy of ``event`` that parse_event/parse_line must reject (never a valid
    event: each of the six kinds breaks something the parser always checks)."""
    bad = dict(event)
    bad["event_id"] = event["event_id"] + "x"
    if kind == 0:  # truncated JSON
        text = json.dumps(bad, separators=(",", ":"))
        return text[: max(1, len(text) // 2)]
    if kind == 1:
        del bad["event_id"]
    elif kind == 2:
        bad["ts"] = "yesterday at noon"
    elif kind == 3:
        bad["type"] = event["type"].split(".")[0] + ".exploded"
    elif kind == 4:
        bad["wait_seconds"] = -3
    else:
        bad["queue"] = ALL
    return bad


class Delivery:
    """The records not yet handed out, as a heap by delivery time (ties in emit order)."""

    def __init__(self, params: SimParams) -> None:
        self.params = params
        self._inject = random.Random(f"ccmon-sim:{params.seed}:inject")
        self._out: list[tuple[float, int, Record]] = []
        self._seq = itertools.count()

    def deliver(self, event: dict[str, Any], now: float) -> None:
        """Queue ``event``, emitted at ``now``, with the faults drawn for it."""
        params = self.params
        inject = self._inject
        emit_at = now
        # The same draws for every event whatever the shares, so changing one share changes
        # only its own decisions (the same events stay late when duplicates are added).
        late, late_by = inject.random(), inject.uniform(60.0, 900.0)
        dup, dup_after = inject.random(), inject.uniform(0.0, 30.0)
        bad, bad_kind = inject.random(), inject.randrange(6)
        if late < params.late_share:
            emit_at = ms(now + late_by)
        heapq.heappush(self._out, (emit_at, next(self._seq), event))
        if dup < params.duplicate_share:
            heapq.heappush(self._out, (ms(emit_at + dup_after), next(self._seq), dict(event)))
        if bad < params.malformed_share:
            heapq.heappush(self._out, (emit_at, next(self._seq), malformed(event, bad_kind)))

    def due(self, until: float) -> list[tuple[float, Record]]:
        """The records due by ``until`` as ``(emit_at, record)``, in delivery order."""
        out: list[tuple[float, Record]] = []
        pending = self._out
        while pending and pending[0][0] <= until:
            emit_at, _seq, record = heapq.heappop(pending)
            out.append((emit_at, record))
        return out

    def drain(self) -> list[tuple[float, Record]]:
        """Every record still held back (late or duplicated deliveries), in delivery order."""
        out = [(emit_at, record) for emit_at, _seq, record in sorted(self._out)]
        self._out.clear()
        return out
