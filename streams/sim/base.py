"""The simulator's core: its entities (agents, calls, queues) and :class:`SimBase`, the event
loop (a heap of future actions run in time order), the emission of events and the draws the
whole model shares. The model itself (:class:`streams.sim.model.Simulator`) builds on it.

Everything is reproducible: the same :class:`~streams.sim.params.SimParams` (seed included) give
the same events, byte for byte, whatever the chunking of :meth:`SimBase.advance` or the speed of
the caller.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from streams.kafka.produce import Record  # an event dict, or (malformed JSON) a raw string
from streams.sim.clock import format_ts, ms
from streams.sim.faults import Delivery
from streams.sim.params import QueueSpec, SimParams


class Agent:
    """An agent: a server of its queues (the first is its home queue), on shift or not."""

    __slots__ = (
        "breaks_pending",
        "dial_pending",
        "epoch",
        "id",
        "idle_since",
        "logout_pending",
        "on_shift",
        "queues",
        "reserved",
        "state",
        "working",
    )

    def __init__(self, agent_id: str, queues: list[str]) -> None:
        self.id = agent_id
        self.queues = queues
        self.state = "offline"
        self.idle_since = 0.0
        self.reserved: Call | None = None  # a call ringing this agent
        self.working = False  # on a call, dialling or in after-call work
        self.on_shift = False
        self.logout_pending = False
        self.breaks_pending: list[float] = []  # durations of breaks due
        self.epoch = 0  # bumped on every idle or away spell: stale "back from away" timers are ignored
        self.dial_pending = False

    @property
    def idle(self) -> bool:
        return self.state == "available" and self.reserved is None and not self.working


class Call:
    """A call through its legs (one per queue it is offered to: overflow, transfer)."""

    __slots__ = ("agent", "arrival", "customer", "id", "leg", "offer_t", "patience_token", "queue", "state", "wait")

    def __init__(self, call_id: str, customer: str | None, arrival: float) -> None:
        self.id = call_id
        self.customer = customer
        self.arrival = arrival
        self.queue = ""
        self.offer_t = arrival
        self.leg = 0
        self.state = "new"  # waiting | ringing | talking | done
        self.agent: Agent | None = None
        self.patience_token = 0
        self.wait = 0.0  # of the answered leg


class Queue:
    """A queue: its callers waiting (FIFO), its agents and its callback worklist."""

    __slots__ = ("agents", "callbacks", "spec", "waiting")

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        self.waiting: dict[str, Call] = {}  # FIFO by offer time (insertion order)
        self.agents: list[Agent] = []
        self.callbacks: dict[str, dict[str, Any]] = {}  # customer -> worklist entry, by due time


class SimBase:
    """The event loop, the state and the shared draws. Drive it with :meth:`advance` (or
    :meth:`stream`)."""

    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.now = float(params.start)
        seed = params.seed
        # Separate random streams: the model's draws never depend on the injection settings
        # (streams.sim.faults draws those), so adding late/duplicate/malformed records leaves
        # the valid events unchanged.
        self._rng = random.Random(f"ccmon-sim:{seed}:model")
        # Arrivals have a stream per queue (common random numbers): changing the staffing or
        # another queue leaves a queue's callers, their times and their patience unchanged.
        self._arrival_rngs = {
            spec.name: random.Random(f"ccmon-sim:{seed}:arrivals:{spec.name}") for spec in params.queues
        }
        self._pulse = random.Random(f"ccmon-sim:{seed}:pulse")  # only drawn with pulse_share > 0
        self._delivery = Delivery(params)
        self._actions: list[tuple[float, int, Callable[..., object], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._entity_ids = itertools.count(1)
        stamp = datetime.fromtimestamp(params.start, UTC).strftime("%Y%m%d%H%M")
        self._tag = f"{seed}.{stamp}"
        self.emitted = 0  # valid events made (before injection)
        self.delivered = 0  # records handed out (including injected ones)
        self.queues = {spec.name: Queue(spec) for spec in params.queues}
        self.agents: list[Agent] = []
        self._callback_of: dict[str, str] = {}  # customer -> queue holding its worklist entry

    # -- driving ------------------------------------------------------------------------------
    def advance(self, until: float) -> list[tuple[float, Record]]:
        """Run the model up to simulated time ``until`` (inclusive; never past the end) and
        return the records due by then as ``(emit_at, record)``, in delivery order."""
        actions = self._actions
        stop = min(until, self.params.end)
        while actions and actions[0][0] <= stop and actions[0][0] < self.params.end:
            t, _seq, fn, args = heapq.heappop(actions)
            self.now = t
            fn(*args)
        if stop > self.now:
            self.now = stop
        out = self._delivery.due(until)
        self.delivered += len(out)
        return out

    def finish(self) -> list[tuple[float, Record]]:
        """After the end: the records still held back (late or duplicated deliveries)."""
        out = self._delivery.drain()
        self.delivered += len(out)
        return out

    def stream(self, step_seconds: float = 3600.0) -> Iterator[tuple[float, Record]]:
        """Every record of a finite run, in delivery order."""
        if self.params.hours is None:
            raise ValueError("stream() needs a finite run (hours is None)")
        end = self.params.end
        t = self.now
        while t < end:
            t = min(t + step_seconds, end)
            yield from self.advance(t)
        yield from self.finish()

    # -- plumbing -----------------------------------------------------------------------------
    def _at(self, t: float, fn: Callable[..., object], *args: Any) -> None:
        heapq.heappush(self._actions, (ms(max(t, self.now)), next(self._seq), fn, args))

    def _new_id(self, kind: str) -> str:
        return f"{kind}{self._tag}.{next(self._entity_ids)}"

    def _emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": f"e{self._tag}.{next(self._ids):010d}",
            "type": event_type,
            "ts": format_ts(self.now),
            "tenant": self.params.tenant,
        }
        for key, value in fields.items():
            if value is not None:
                event[key] = value
        self.emitted += 1
        self._delivery.deliver(event, self.now)
        return event

    def _emit_at(self, t: float, event_type: str, **fields: Any) -> None:
        self._at(t, lambda: self._emit(event_type, **fields))

    # -- shared draws -------------------------------------------------------------------------
    def _pick_customer(self, spec: QueueSpec, rng: random.Random | None = None) -> str | None:
        rng = rng or self._rng
        if rng.random() < spec.anonymous_share:
            return None
        # A skewed pool: a few customers call often.
        n = int(self.params.customers * rng.random() ** 1.6)
        return f"cust-{n:06d}"

    def _talk(self, spec: QueueSpec, scale: float = 1.0) -> float:
        mean = spec.talk_seconds * scale
        if spec.talk_distribution == "exponential":
            return self._rng.expovariate(1.0 / mean)
        return self._lognormal(mean, spec.talk_cv)

    def _lognormal(self, mean: float, cv: float) -> float:
        if mean <= 0:
            return 0.0
        sigma2 = math.log(1 + cv * cv)
        return self._rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))

    def _acw(self, spec: QueueSpec) -> float:
        return ms(self._lognormal(spec.acw_seconds, 0.5))

    def _idle_agents(self, q: Queue) -> list[Agent]:
        return [a for a in q.agents if a.idle]
