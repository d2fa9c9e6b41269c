"""A realistic, seeded contact-center simulator that writes canonical events.

An event-driven model (a heap of future actions, one FIFO per queue, agents as servers) of
a day in a contact center: Poisson arrivals that follow an intraday profile (a morning peak,
a lunch dip, a quieter evening), agents on staggered shifts with breaks, lognormal talk
times with hold and after-call work, callers with exponential patience (abandon, leave a
voicemail or ask for a callback), queue maximum waits (timeout or voicemail), overflow and
transfers between queues, agents who miss rings, callbacks to missed callers, an outbound
sales campaign, tickets, surveys and knowledge-base sessions. ``docs/SIMULATOR.md`` has the
model and its parameters.

Everything is reproducible: the same :class:`SimParams` (seed included) give the same
events, byte for byte, whatever the chunking of :meth:`Simulator.advance` or the speed of
the caller.

Use it in process::

    sim = Simulator(SimParams(start=..., hours=8, queues=default_queues(3)))
    for emit_at, record in sim.stream():
        ...  # record: an event dict, or a str (a malformed record, when injected)

Every event the simulator makes is stamped with the simulated time at which it is emitted
(``ts == emit time``), except where ``late_share`` delays its delivery. Injected malformed
records always fail :func:`kpi_core.events.parse_event` / ``parse_line``.

The Erlang C formulas (``kpi_core.erlang``, imported here) size the default staffing and are
the reference the simulator is validated against (``tests/unit/test_erlang.py``).
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from kpi_core.erlang import (  # noqa: F401 - re-exported: the simulator's reference (tests/unit/test_erlang.py)
    agents_for_service_level,
    erlang_b,
    erlang_c,
    erlang_c_asa,
    erlang_c_service_level,
)
from kpi_core.errors import ConfigError
from kpi_core.events import ALL
from streams.kafka.produce import Record  # an event dict, or (malformed JSON) a raw string

# -- intraday profiles --------------------------------------------------------------------------
#: Hour of day (UTC) -> share of the peak arrival rate, interpolated linearly: a ramp from
#: 07:00, the morning peak around 10:00, a lunch dip 12:00-13:30, an afternoon shoulder, and a
#: quiet evening.
OFFICE_PROFILE: tuple[tuple[float, float], ...] = (
    (0, 0.02), (6, 0.05), (7, 0.25), (8, 0.6), (9, 0.92), (10, 1.0), (11, 0.95), (12, 0.72),
    (13, 0.68), (14, 0.85), (15, 0.88), (16, 0.75), (17, 0.55), (18, 0.38), (19, 0.26),
    (20, 0.15), (22, 0.06), (24, 0.02),
)  # fmt: skip
PROFILES: dict[str, tuple[tuple[float, float], ...]] = {
    "office": OFFICE_PROFILE,
    "flat": ((0, 1.0), (24, 1.0)),
}


def profile_share(profile: str, hour: float) -> float:
    """The share of the peak rate at ``hour`` (0..24) of the named profile."""
    points = PROFILES[profile]
    for (h0, v0), (h1, v1) in itertools.pairwise(points):
        if h0 <= hour <= h1:
            return v0 + (v1 - v0) * (hour - h0) / (h1 - h0) if h1 > h0 else v0
    return points[-1][1]


def _hour_of_day(t: float) -> float:
    return (t % 86400.0) / 3600.0


# -- parameters ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueSpec:
    """One queue (skill group). Rates are per hour at the profile's peak; times in seconds.

    Draws: talk time lognormal with mean ``talk_seconds`` and coefficient of variation
    ``talk_cv`` (or exponential), hold time exponential for ``hold_share`` of calls, after-call
    work lognormal (cv 0.5), patience exponential with mean ``patience_seconds`` (``None``:
    callers never hang up).
    """

    name: str
    calls_per_hour: float
    agents: int | None = None  # headcount; None: sized by Erlang C for 80/20 at the peak
    talk_seconds: float = 240.0
    talk_cv: float = 0.8
    talk_distribution: str = "lognormal"  # or "exponential"
    hold_share: float = 0.25
    hold_seconds: float = 45.0
    acw_seconds: float = 30.0
    ring_seconds: float = 4.0  # mean ring time before an agent picks up
    ring_timeout_seconds: float = 15.0  # ring-no-answer after this long
    rona_share: float = 0.02  # offers an agent misses (the agent goes away briefly)
    patience_seconds: float | None = 180.0
    max_wait_seconds: float | None = 600.0
    voicemail_share: float = 0.15  # of callers whose patience runs out: leave a voicemail
    callback_share: float = 0.10  # ... or press a key for a callback (identified callers)
    timeout_voicemail_share: float = 0.5  # of calls reaching max wait: sent to voicemail
    overflow_to: str | None = None  # unanswered calls move here after overflow_after_seconds
    overflow_after_seconds: float = 240.0
    transfer_share: float = 0.03  # answered calls transferred to another queue
    transfer_to: tuple[str, ...] = ()
    fcr_share: float = 0.8
    anonymous_share: float = 0.08  # callers without a customer id (no callback possible)
    redial_share: float = 0.3  # missed callers who call again (mean 20 min later)
    survey_share: float = 0.15
    profile: str = "office"
    open_hours: tuple[float, float] | None = (7.0, 20.0)  # UTC; None: around the clock
    outbound_per_agent_hour: float = 0.0  # sales dials per idle agent-hour (campaign)
    outbound_hours: tuple[float, float] = (10.0, 19.0)
    outbound_connect_share: float = 0.35
    sale_share: float = 0.18  # of connected outbound calls
    tickets_per_hour: float = 0.0
    ticket_channel: str = "email"
    first_response_seconds: float = 3600.0  # mean agent reply time on tickets

    def __post_init__(self) -> None:
        where = f"queues.{self.name}."
        if not self.name or self.name == ALL or len(self.name) > 64:
            raise ConfigError("queues", f"a queue name is 1..64 characters and not '_all', got {self.name!r}")
        for key in ("calls_per_hour", "talk_seconds", "hold_seconds", "acw_seconds", "ring_seconds",
                    "ring_timeout_seconds", "overflow_after_seconds", "outbound_per_agent_hour",
                    "tickets_per_hour", "first_response_seconds", "talk_cv"):  # fmt: skip
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(where + key, f"must be a number >= 0, got {value!r}")
        if self.talk_seconds <= 0:
            raise ConfigError(where + "talk_seconds", f"must be > 0, got {self.talk_seconds!r}")
        for key in ("hold_share", "rona_share", "voicemail_share", "callback_share", "timeout_voicemail_share",
                    "transfer_share", "fcr_share", "anonymous_share", "redial_share", "survey_share",
                    "outbound_connect_share", "sale_share"):  # fmt: skip
            value = getattr(self, key)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(where + key, f"must be a share within 0..1, got {value!r}")
        if self.voicemail_share + self.callback_share > 1:
            raise ConfigError(where + "callback_share", "voicemail_share + callback_share must be <= 1")
        for key in ("patience_seconds", "max_wait_seconds"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ConfigError(where + key, f"must be > 0 seconds or None, got {value!r}")
        if self.agents is not None and (not isinstance(self.agents, int) or self.agents < 0):
            raise ConfigError(where + "agents", f"must be a whole number >= 0, got {self.agents!r}")
        if self.talk_distribution not in ("lognormal", "exponential"):
            raise ConfigError(where + "talk_distribution", f"must be lognormal or exponential, got {self.talk_distribution!r}")
        if self.profile not in PROFILES:
            raise ConfigError(where + "profile", f"must be one of {sorted(PROFILES)}, got {self.profile!r}")
        if self.open_hours is not None and not 0 <= self.open_hours[0] < self.open_hours[1] <= 24:
            raise ConfigError(where + "open_hours", f"must be (open, close) within 0..24, got {self.open_hours!r}")
        if self.ticket_channel not in ("email", "chat", "social", "sms"):
            raise ConfigError(where + "ticket_channel", f"must be email, chat, social or sms, got {self.ticket_channel!r}")

    @property
    def aht_seconds(self) -> float:
        return self.talk_seconds + self.hold_share * self.hold_seconds + self.acw_seconds

    def is_open(self, t: float) -> bool:
        if self.open_hours is None:
            return True
        hour = _hour_of_day(t)
        return self.open_hours[0] <= hour < self.open_hours[1]

    def headcount(self, shifts: bool = True) -> int:
        """``agents``, or Erlang C agents for 80/20 at the peak, grossed up (with shifts) for
        the share of the headcount on shift at the peak and for breaks."""
        if self.agents is not None:
            return self.agents
        if self.calls_per_hour <= 0:
            return 0
        needed = agents_for_service_level(self.calls_per_hour / 3600.0, self.aht_seconds)
        if not shifts:
            return needed
        if self.open_hours is None:
            return 3 * needed  # three eight-hour shifts
        # At the morning peak the early and middle shifts (75 %) are on, less breaks.
        return max(2, math.ceil(needed / 0.7))


#: Realistic queues, in the order ``--queues N`` takes them.
CATALOGUE: tuple[QueueSpec, ...] = (
    QueueSpec("support", calls_per_hour=150, talk_seconds=330, hold_share=0.3, hold_seconds=60,
              acw_seconds=45, patience_seconds=200, max_wait_seconds=900, transfer_share=0.05,
              transfer_to=("tech", "billing", "retention"), fcr_share=0.76, tickets_per_hour=30,
              first_response_seconds=3600),
    QueueSpec("sales", calls_per_hour=70, talk_seconds=260, acw_seconds=30, patience_seconds=120,
              max_wait_seconds=300, voicemail_share=0.25, callback_share=0.08, transfer_share=0.02,
              transfer_to=("billing",), fcr_share=0.85, outbound_per_agent_hour=40, tickets_per_hour=6,
              first_response_seconds=5400),
    QueueSpec("billing", calls_per_hour=90, talk_seconds=210, acw_seconds=40, patience_seconds=160,
              max_wait_seconds=600, overflow_to="support", overflow_after_seconds=240, transfer_share=0.03,
              transfer_to=("support",), fcr_share=0.82, tickets_per_hour=15, first_response_seconds=7200),
    QueueSpec("tech", calls_per_hour=55, talk_seconds=540, talk_cv=0.9, acw_seconds=60, patience_seconds=260,
              max_wait_seconds=1200, transfer_share=0.02, transfer_to=("support",), fcr_share=0.68,
              tickets_per_hour=25, ticket_channel="chat", first_response_seconds=300),
    QueueSpec("retention", calls_per_hour=25, talk_seconds=420, acw_seconds=50, patience_seconds=240,
              max_wait_seconds=600, fcr_share=0.7, tickets_per_hour=3),
    QueueSpec("vip", calls_per_hour=12, talk_seconds=300, acw_seconds=40, patience_seconds=90,
              max_wait_seconds=180, voicemail_share=0.3, fcr_share=0.9, tickets_per_hour=2,
              first_response_seconds=1800),
)  # fmt: skip


def default_queues(queues: int | Sequence[str] = 4, agents: int | None = None) -> tuple[QueueSpec, ...]:
    """``queues`` queues from :data:`CATALOGUE` (then ``queue-07``...), or the named ones
    (unknown names get a generic profile); ``agents`` overrides every headcount."""
    if isinstance(queues, int):
        if not 1 <= queues <= 200:
            raise ConfigError("--queues", f"must be 1..200 queues, got {queues}")
        names = [spec.name for spec in CATALOGUE[:queues]]
        names += [f"queue-{i + 1:02d}" for i in range(len(names), queues)]
    else:
        names = list(queues)
        if not names or len(set(names)) != len(names):
            raise ConfigError("--queues", f"must name distinct queues, got {queues!r}")
    by_name = {spec.name: spec for spec in CATALOGUE}
    specs = []
    for i, name in enumerate(names):
        spec = by_name.get(name) or QueueSpec(name, calls_per_hour=40 + 10 * (i % 5), tickets_per_hour=5)
        specs.append(replace(spec, agents=agents) if agents is not None else spec)
    return tuple(specs)


@dataclass(frozen=True)
class SimParams:
    """A simulation run. ``start`` is epoch seconds (UTC); ``hours`` ``None`` runs forever."""

    start: float
    hours: float | None = 24.0
    queues: tuple[QueueSpec, ...] = field(default_factory=default_queues)
    seed: int = 1
    tenant: str = "default"
    shifts: bool = True  # staggered shifts with breaks; False: every agent on from the start
    kb_sessions_per_hour: float = 40.0
    customers: int = 20000  # size of the caller pool (repeat callers come from it)
    late_share: float = 0.0  # events delivered 1-15 minutes after their ts
    duplicate_share: float = 0.0  # events delivered twice (same event_id)
    malformed_share: float = 0.0  # extra records that must be rejected
    callback_min_delay_seconds: float = 120.0  # a missed caller is called back no sooner
    #: Share of agent shifts that answer the employee pulse (an ``esat`` or ``enps``
    #: survey.response, as the agent logs in). 0 (the default) draws nothing and emits
    #: nothing, so every other event stays exactly as it was; ``ccmon demo`` sets 0.6.
    pulse_share: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.start, int | float) or not 0 <= self.start < 4_102_444_800:
            raise ConfigError("--start", f"must be an instant between 1970 and 2100, got {self.start!r}")
        if self.hours is not None and (not isinstance(self.hours, int | float) or not 0 < self.hours <= 24 * 366):
            raise ConfigError("--hours", f"must be > 0 and at most a year, got {self.hours!r}")
        if not self.queues:
            raise ConfigError("--queues", "needs at least one queue")
        names = [q.name for q in self.queues]
        if len(set(names)) != len(names):
            raise ConfigError("--queues", f"queue names must be distinct, got {names!r}")
        if not isinstance(self.pulse_share, int | float) or not 0 <= self.pulse_share <= 1:
            raise ConfigError("pulse_share", f"must be within 0..1, got {self.pulse_share!r}")
        for key in ("late_share", "duplicate_share", "malformed_share"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not 0 <= value <= 0.5:
                raise ConfigError(f"--{key.replace('_', '-')}", f"must be within 0..0.5, got {value!r}")
        if self.customers < 1:
            raise ConfigError("customers", f"must be >= 1, got {self.customers!r}")
        if not self.tenant or self.tenant == ALL:
            raise ConfigError("--tenant", f"must be a name, got {self.tenant!r}")

    @property
    def end(self) -> float:
        return math.inf if self.hours is None else self.start + self.hours * 3600.0


# -- time formatting ----------------------------------------------------------------------------
_ts_cache: tuple[int, str] = (-1, "")  # the last whole second formatted (replaced atomically)


def format_ts(t: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-23T10:15:02.250Z``."""
    global _ts_cache
    sec, milli = divmod(round(t * 1000), 1000)
    cached = _ts_cache
    if cached[0] != sec:
        cached = _ts_cache = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{milli:03d}Z"


def _ms(t: float) -> float:
    return round(t, 3)


# -- model entities -----------------------------------------------------------------------------
class _Agent:
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
    )  # fmt: skip

    def __init__(self, agent_id: str, queues: list[str]) -> None:
        self.id = agent_id
        self.queues = queues
        self.state = "offline"
        self.idle_since = 0.0
        self.reserved: _Call | None = None  # a call ringing this agent
        self.working = False  # on a call, dialling or in after-call work
        self.on_shift = False
        self.logout_pending = False
        self.breaks_pending: list[float] = []  # durations of breaks due
        self.epoch = 0  # bumped on every idle or away spell: stale "back from away" timers are ignored
        self.dial_pending = False

    @property
    def idle(self) -> bool:
        return self.state == "available" and self.reserved is None and not self.working


class _Call:
    __slots__ = ("agent", "arrival", "customer", "id", "leg", "offer_t", "patience_token", "queue", "state", "wait")

    def __init__(self, call_id: str, customer: str | None, arrival: float) -> None:
        self.id = call_id
        self.customer = customer
        self.arrival = arrival
        self.queue = ""
        self.offer_t = arrival
        self.leg = 0
        self.state = "new"  # waiting | ringing | talking | done
        self.agent: _Agent | None = None
        self.patience_token = 0
        self.wait = 0.0  # of the answered leg


class _Queue:
    __slots__ = ("agents", "callbacks", "spec", "waiting")

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        self.waiting: dict[str, _Call] = {}  # FIFO by offer time (insertion order)
        self.agents: list[_Agent] = []
        self.callbacks: dict[str, dict[str, Any]] = {}  # customer -> worklist entry, by due time


KB_ARTICLES = ("reset-password", "update-billing-address", "invoice-explained", "router-setup",
               "cancel-subscription", "delivery-times", "refund-policy", "two-factor-login",
               "upgrade-plan", "mobile-app-sync", "data-export", "contact-hours")  # fmt: skip


class Simulator:
    """The event-driven model. Drive it with :meth:`advance` (or :meth:`stream`)."""

    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.now = float(params.start)
        seed = params.seed
        # Separate random streams: the model's draws never depend on the injection settings,
        # so adding late/duplicate/malformed records leaves the valid events unchanged.
        self._rng = random.Random(f"ccmon-sim:{seed}:model")
        # Arrivals have a stream per queue (common random numbers): changing the staffing or
        # another queue leaves a queue's callers, their times and their patience unchanged.
        self._arrival_rngs = {
            spec.name: random.Random(f"ccmon-sim:{seed}:arrivals:{spec.name}") for spec in params.queues
        }
        self._inject = random.Random(f"ccmon-sim:{seed}:inject")
        self._pulse = random.Random(f"ccmon-sim:{seed}:pulse")  # only drawn with pulse_share > 0
        self._actions: list[tuple[float, int, Callable[..., object], tuple[Any, ...]]] = []
        self._out: list[tuple[float, int, Record]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._entity_ids = itertools.count(1)
        stamp = datetime.fromtimestamp(params.start, UTC).strftime("%Y%m%d%H%M")
        self._tag = f"{seed}.{stamp}"
        self.emitted = 0  # valid events made (before injection)
        self.delivered = 0  # records handed out (including injected ones)
        self.queues = {spec.name: _Queue(spec) for spec in params.queues}
        self.agents: list[_Agent] = []
        self._callback_of: dict[str, str] = {}  # customer -> queue holding its worklist entry
        self._plan_agents()
        start = self.now
        for q in self.queues.values():
            if q.spec.calls_per_hour > 0:
                self._next_arrival(q)
            if q.spec.tickets_per_hour > 0:
                self._next_ticket(q)
        if params.kb_sessions_per_hour > 0:
            self._at(start + self._rng.expovariate(params.kb_sessions_per_hour / 3600.0), self._kb_session)
        self._at(start, self._start_agents)

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
        out: list[tuple[float, Record]] = []
        pending = self._out
        while pending and pending[0][0] <= until:
            emit_at, _seq, record = heapq.heappop(pending)
            out.append((emit_at, record))
        self.delivered += len(out)
        return out

    def finish(self) -> list[tuple[float, Record]]:
        """After the end: the records still held back (late or duplicated deliveries)."""
        out = [(emit_at, record) for emit_at, _seq, record in sorted(self._out)]
        self._out.clear()
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
        heapq.heappush(self._actions, (_ms(max(t, self.now)), next(self._seq), fn, args))

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
        self._deliver(event)
        return event

    def _emit_at(self, t: float, event_type: str, **fields: Any) -> None:
        self._at(t, lambda: self._emit(event_type, **fields))

    def _deliver(self, event: dict[str, Any]) -> None:
        params = self.params
        inject = self._inject
        emit_at = self.now
        # The same draws for every event whatever the shares, so changing one share changes
        # only its own decisions (the same events stay late when duplicates are added).
        late, late_by = inject.random(), inject.uniform(60.0, 900.0)
        dup, dup_after = inject.random(), inject.uniform(0.0, 30.0)
        bad, bad_kind = inject.random(), inject.randrange(6)
        if late < params.late_share:
            emit_at = _ms(self.now + late_by)
        heapq.heappush(self._out, (emit_at, next(self._seq), event))
        if dup < params.duplicate_share:
            heapq.heappush(self._out, (_ms(emit_at + dup_after), next(self._seq), dict(event)))
        if bad < params.malformed_share:
            heapq.heappush(self._out, (emit_at, next(self._seq), self._malformed(event, bad_kind)))

    def _malformed(self, event: dict[str, Any], kind: int) -> Record:
        """A broken copy of ``event`` that parse_event/parse_line must reject (never a valid
        event: each kind breaks something the parser always checks)."""
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

    # -- agents and shifts --------------------------------------------------------------------
    def _plan_agents(self) -> None:
        names = list(self.queues)
        for index, q in enumerate(self.queues.values()):
            headcount = q.spec.headcount(self.params.shifts)
            for i in range(headcount):
                queues = [q.spec.name]
                # About one agent in seven is blended: also serves the next queue.
                if len(names) > 1 and i % 7 == 3:
                    queues.append(names[(index + 1) % len(names)])
                agent = _Agent(f"{q.spec.name}-{i + 1:02d}", queues)
                self.agents.append(agent)
                for name in queues:
                    self.queues[name].agents.append(agent)

    def _start_agents(self) -> None:
        """Without shifts every agent logs in now. With shifts the day is planned, and agents
        not on shift now are announced offline, so dashboards know them."""
        if not self.params.shifts:
            for agent in self.agents:
                self._login(agent)
            return
        on_now = self._plan_day(math.floor(self.now / 86400.0) * 86400.0)
        for agent in self.agents:
            if agent.id not in on_now:
                self._emit("agent.state", agent_id=agent.id, state="offline", queues=agent.queues)

    #: Shift patterns for queues open 07:00-20:00: (start hour, end hour, share of agents).
    SHIFTS = ((7.0, 15.5, 0.37), (8.5, 17.0, 0.33), (11.5, 20.0, 0.3))

    def _plan_day(self, day: float) -> set[str]:
        """Schedule a day of logins, breaks and logouts, and the next day's plan. Returns the
        agents whose shift is under way now."""
        rng = self._rng
        on_now: set[str] = set()
        for q in self.queues.values():
            primary = [a for a in q.agents if a.queues[0] == q.spec.name]
            n = len(primary)
            for i, agent in enumerate(primary):
                if q.spec.open_hours is None:
                    # Around the clock: three eight-hour shifts.
                    start_h = (0.0, 8.0, 16.0)[i % 3]
                    end_h = start_h + 8.0
                else:
                    bound, pattern = 0.0, self.SHIFTS[-1]
                    for candidate in self.SHIFTS:
                        bound += candidate[2]
                        if (i + 0.5) / n <= bound:
                            pattern = candidate
                            break
                    start_h, end_h = pattern[0], pattern[1]
                    jitter = rng.choice((-0.25, 0.0, 0.0, 0.25))
                    open_h, close_h = q.spec.open_hours
                    start_h = min(max(open_h, start_h + jitter), close_h - 1)
                    end_h = max(min(close_h, end_h + jitter), start_h + 1)
                login, logout = day + start_h * 3600, day + end_h * 3600
                if logout <= self.now:
                    continue
                if login <= self.now:
                    on_now.add(agent.id)
                self._at(max(login, self.now), self._login, agent)
                length = end_h - start_h
                for offset, minutes in ((0.25, 15), (0.5, 30), (0.72, 15)):
                    when = login + (offset * length + rng.uniform(-0.33, 0.33)) * 3600
                    if when > self.now:
                        self._at(when, self._break_due, agent, minutes * 60.0 * rng.uniform(0.9, 1.2))
                self._at(logout, self._logout_due, agent)
        self._at(day + 86400.0 - 1800.0, self._plan_day, day + 86400.0)
        return on_now

    def _set_state(self, agent: _Agent, state: str, reason: str | None = None) -> None:
        if agent.state != state:
            agent.state = state
            extra = {"reason": reason} if reason is not None else {}
            self._emit("agent.state", agent_id=agent.id, state=state, queues=agent.queues, **extra)

    def _login(self, agent: _Agent) -> None:
        if agent.on_shift:
            return
        agent.on_shift = True
        agent.logout_pending = False
        agent.breaks_pending.clear()
        if self.params.pulse_share > 0:
            self._maybe_pulse(agent)
        self._become_idle(agent)

    def _break_due(self, agent: _Agent, seconds: float) -> None:
        if not agent.on_shift:
            return
        agent.breaks_pending.append(seconds)
        if agent.idle:
            self._next_activity(agent)

    def _logout_due(self, agent: _Agent) -> None:
        if not agent.on_shift:
            return
        agent.logout_pending = True
        if agent.idle or agent.state == "away":
            self._next_activity(agent)

    def _next_activity(self, agent: _Agent) -> None:
        """The agent has finished its work: log out, take a break due, or become idle."""
        agent.working = False
        if agent.logout_pending:
            agent.on_shift = False
            agent.logout_pending = False
            agent.breaks_pending.clear()
            self._set_state(agent, "offline")
            return
        if agent.breaks_pending:
            seconds = agent.breaks_pending.pop(0)
            self._set_state(agent, "away", "lunch" if seconds >= 25 * 60 else "break")

            agent.epoch += 1
            self._at(self.now + seconds, self._back_from_away, agent, agent.epoch)
            return
        self._become_idle(agent)

    def _back_from_away(self, agent: _Agent, epoch: int) -> None:
        if agent.state == "away" and agent.epoch == epoch and agent.on_shift:
            self._next_activity(agent)

    def _become_idle(self, agent: _Agent) -> None:
        agent.working = False
        agent.epoch += 1
        agent.idle_since = self.now
        self._set_state(agent, "available")
        self._pick_work(agent)

    def _pick_work(self, agent: _Agent) -> None:
        """An idle agent takes the longest-waiting call of its queues, else a callback due,
        else (in a campaign queue) considers an outbound dial. A break or logout that fell
        due meanwhile comes first."""
        if not agent.idle:
            return
        if agent.logout_pending or agent.breaks_pending:
            self._next_activity(agent)
            return
        best: _Call | None = None
        for name in agent.queues:
            waiting = self.queues[name].waiting
            if waiting:
                head = next(iter(waiting.values()))
                if best is None or head.offer_t < best.offer_t:
                    best = head
        if best is not None:
            self._ring(best, agent)
            return
        entry = self._workable_callback(agent)
        if entry is not None:
            self._make_callback(agent, entry)
            return
        if not agent.dial_pending and any(
            self.queues[n].spec.outbound_per_agent_hour > 0 for n in agent.queues
        ):
            spec = next(self.queues[n].spec for n in agent.queues if self.queues[n].spec.outbound_per_agent_hour > 0)
            agent.dial_pending = True
            self._at(self.now + self._rng.expovariate(spec.outbound_per_agent_hour / 3600.0),
                     self._maybe_dial, agent)  # fmt: skip

    def _idle_agents(self, q: _Queue) -> list[_Agent]:
        return [a for a in q.agents if a.idle]

    # -- inbound calls ------------------------------------------------------------------------
    def _next_arrival(self, q: _Queue) -> None:
        spec = q.spec
        t = self.now + self._arrival_rngs[spec.name].expovariate(spec.calls_per_hour / 3600.0)
        if not spec.is_open(t):
            t = self._next_opening(spec, t)
        self._at(t, self._arrival, q)

    @staticmethod
    def _next_opening(spec: QueueSpec, t: float) -> float:
        assert spec.open_hours is not None
        day = math.floor(t / 86400.0) * 86400.0
        opening = day + spec.open_hours[0] * 3600.0
        return opening if opening > t else opening + 86400.0

    def _arrival(self, q: _Queue) -> None:
        self._next_arrival(q)
        spec = q.spec
        if not spec.is_open(self.now):
            return
        # Thinning: candidates come at the peak rate, kept with the profile's share.
        rng = self._arrival_rngs[spec.name]
        if rng.random() >= profile_share(spec.profile, _hour_of_day(self.now)):
            return
        self._new_call(q, self._pick_customer(spec, rng), rng)

    def _pick_customer(self, spec: QueueSpec, rng: random.Random | None = None) -> str | None:
        rng = rng or self._rng
        if rng.random() < spec.anonymous_share:
            return None
        # A skewed pool: a few customers call often.
        n = int(self.params.customers * rng.random() ** 1.6)
        return f"cust-{n:06d}"

    def _new_call(self, q: _Queue, customer: str | None, rng: random.Random | None = None) -> None:
        call = _Call(self._new_id("c"), customer, self.now)
        self._arm_patience(call, q.spec.patience_seconds, rng)
        self._offer(call, q)

    def _arm_patience(self, call: _Call, mean: float | None, rng: random.Random | None = None) -> None:
        call.patience_token += 1
        if mean is not None:
            patience = (rng or self._rng).expovariate(1.0 / mean)
            self._at(self.now + patience, self._patience_over, call, call.patience_token)

    def _offer(self, call: _Call, q: _Queue) -> None:
        spec = q.spec
        call.queue = spec.name
        call.offer_t = self.now
        call.leg += 1
        call.state = "waiting"
        call.agent = None
        self._emit("call.offered", call_id=call.id, queue=spec.name, customer_id=call.customer)
        q.waiting[call.id] = call
        if spec.max_wait_seconds is not None:
            self._at(self.now + spec.max_wait_seconds, self._max_wait, call, call.leg)
        if spec.overflow_to is not None and spec.overflow_to in self.queues:
            self._at(self.now + spec.overflow_after_seconds, self._overflow, call, call.leg)
        idle = self._idle_agents(q)
        if idle:
            agent = min(idle, key=lambda a: (a.idle_since, a.id))
            self._ring(call, agent)

    def _ring(self, call: _Call, agent: _Agent) -> None:
        q = self.queues[call.queue]
        spec = q.spec
        del q.waiting[call.id]
        call.state = "ringing"
        call.agent = agent
        agent.reserved = call
        rng = self._rng
        if spec.rona_share > 0 and rng.random() < spec.rona_share:
            self._at(self.now + spec.ring_timeout_seconds, self._ring_no_answer, call, agent)
        elif spec.ring_seconds > 0:
            self._at(self.now + rng.uniform(0.4, 1.6) * spec.ring_seconds, self._answer, call, agent)
        else:
            self._answer(call, agent)

    def _ring_no_answer(self, call: _Call, agent: _Agent) -> None:
        if call.state != "ringing" or call.agent is not agent:
            return
        self._emit("call.ring_no_answer", call_id=call.id, queue=call.queue, agent_id=agent.id)
        agent.reserved = None
        # The ACD sets the agent not-ready for a while; the call goes back to the queue head.
        self._set_state(agent, "away", "not_ready")
        agent.epoch += 1
        self._at(self.now + self._rng.uniform(60.0, 180.0), self._back_from_away, agent, agent.epoch)
        q = self.queues[call.queue]
        call.state = "waiting"
        call.agent = None
        q.waiting = {call.id: call, **q.waiting}
        idle = self._idle_agents(q)
        if idle:
            self._ring(call, min(idle, key=lambda a: (a.idle_since, a.id)))

    def _answer(self, call: _Call, agent: _Agent) -> None:
        if call.state != "ringing" or call.agent is not agent:
            return
        spec = self.queues[call.queue].spec
        rng = self._rng
        agent.reserved = None
        agent.working = True
        call.state = "talking"
        call.wait = self.now - call.offer_t
        self._emit("call.answered", call_id=call.id, queue=call.queue, agent_id=agent.id,
                   wait_seconds=_ms(self.now - call.offer_t))  # fmt: skip
        self._set_state(agent, "on_call")
        if call.customer is not None:
            self._drop_callback(call.customer)  # the customer got through: no callback needed
        talk = self._talk(spec)
        hold = rng.expovariate(1.0 / spec.hold_seconds) if spec.hold_seconds > 0 and rng.random() < spec.hold_share else 0.0
        targets = [t for t in spec.transfer_to if t in self.queues and t != spec.name]
        if targets and rng.random() < spec.transfer_share:
            part = talk * rng.uniform(0.2, 0.6)
            self._at(self.now + part + hold, self._transfer, call, agent, _ms(part), _ms(hold), rng.choice(targets))
        else:
            self._at(self.now + talk + hold, self._hang_up, call, agent, _ms(talk), _ms(hold))

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
        return _ms(self._lognormal(spec.acw_seconds, 0.5))

    def _hang_up(self, call: _Call, agent: _Agent, talk: float, hold: float) -> None:
        spec = self.queues[call.queue].spec
        acw = self._acw(spec)
        resolved = self._rng.random() < spec.fcr_share
        self._emit("call.ended", call_id=call.id, queue=call.queue, agent_id=agent.id, talk_seconds=talk,
                   hold_seconds=hold, acw_seconds=acw, resolved=resolved)  # fmt: skip
        call.state = "done"
        self._maybe_survey(call, agent, resolved)
        self._after_call(agent, acw)

    def _transfer(self, call: _Call, agent: _Agent, talk: float, hold: float, target: str) -> None:
        spec = self.queues[call.queue].spec
        acw = self._acw(spec) * 0.5
        self._emit("call.transferred", call_id=call.id, queue=call.queue, to_queue=target)
        self._emit("call.ended", call_id=call.id, queue=call.queue, agent_id=agent.id, talk_seconds=talk,
                   hold_seconds=hold, acw_seconds=_ms(acw), resolved=False)  # fmt: skip
        self._after_call(agent, _ms(acw))
        target_q = self.queues[target]
        # A transferred caller is more patient than one who just called in.
        patience = target_q.spec.patience_seconds
        self._arm_patience(call, patience * 2 if patience is not None else None)
        call.arrival = self.now
        self._offer(call, target_q)

    def _after_call(self, agent: _Agent, acw: float) -> None:
        if acw > 0:
            self._set_state(agent, "acw")
            self._at(self.now + acw, self._next_activity, agent)
        else:
            self._next_activity(agent)

    def _patience_over(self, call: _Call, token: int) -> None:
        if call.patience_token != token or call.state not in ("waiting", "ringing"):
            return
        spec = self.queues[call.queue].spec
        choice = self._rng.random()
        if choice < spec.voicemail_share:
            self._missed(call, "call.voicemail")
        elif choice < spec.voicemail_share + spec.callback_share and call.customer is not None:
            # The caller pressed the callback key: the system takes the call out of the queue.
            self._missed(call, "call.timeout")
            callback_id = self._new_id("cb")
            self._emit("callback.requested", callback_id=callback_id, queue=call.queue,
                       customer_id=call.customer, call_id=call.id)  # fmt: skip
            entry = self.queues[self._callback_of[call.customer]].callbacks.get(call.customer)
            if entry is not None and entry.get("callback_id") is None:
                entry["callback_id"] = callback_id
        else:
            self._missed(call, "call.abandoned")

    def _max_wait(self, call: _Call, leg: int) -> None:
        if call.leg != leg or call.state != "waiting":
            return
        spec = self.queues[call.queue].spec
        kind = "call.voicemail" if self._rng.random() < spec.timeout_voicemail_share else "call.timeout"
        self._missed(call, kind)

    def _overflow(self, call: _Call, leg: int) -> None:
        if call.leg != leg or call.state != "waiting":
            return
        q = self.queues[call.queue]
        target = q.spec.overflow_to
        assert target is not None
        del q.waiting[call.id]
        self._emit("call.transferred", call_id=call.id, queue=call.queue, to_queue=target,
                   wait_seconds=_ms(self.now - call.offer_t))  # fmt: skip
        self._offer(call, self.queues[target])

    def _missed(self, call: _Call, event_type: str) -> None:
        q = self.queues[call.queue]
        if call.state == "ringing" and call.agent is not None:
            agent = call.agent
            agent.reserved = None
            call.agent = None
            self._pick_work(agent)
        else:
            q.waiting.pop(call.id, None)
        call.state = "done"
        self._emit(event_type, call_id=call.id, queue=call.queue, wait_seconds=_ms(self.now - call.offer_t))
        customer = call.customer
        if customer is None:
            return
        if customer not in self._callback_of:
            q.callbacks[customer] = {"customer": customer, "queue": q.spec.name, "due": self.now, "callback_id": None}
            self._callback_of[customer] = q.spec.name
            self._at(self.now + self.params.callback_min_delay_seconds, self._offer_callbacks, q)
        if self._rng.random() < q.spec.redial_share:
            self._at(self.now + self._rng.expovariate(1.0 / 1200.0), self._redial, q, customer)

    def _redial(self, q: _Queue, customer: str) -> None:
        if q.spec.is_open(self.now):
            self._new_call(q, customer)

    # -- callbacks ----------------------------------------------------------------------------
    def _drop_callback(self, customer: str) -> None:
        name = self._callback_of.pop(customer, None)
        if name is not None:
            self.queues[name].callbacks.pop(customer, None)

    def _offer_callbacks(self, q: _Queue) -> None:
        for agent in sorted(self._idle_agents(q), key=lambda a: (a.idle_since, a.id)):
            self._pick_work(agent)

    def _workable_callback(self, agent: _Agent) -> dict[str, Any] | None:
        ready_before = self.now - self.params.callback_min_delay_seconds
        best: dict[str, Any] | None = None
        for name in agent.queues:
            q = self.queues[name]
            if not q.callbacks or not q.spec.is_open(self.now):
                continue
            entry = next(iter(q.callbacks.values()))
            if entry["due"] <= ready_before and (best is None or entry["due"] < best["due"]):
                best = entry
        return best

    def _make_callback(self, agent: _Agent, entry: dict[str, Any]) -> None:
        customer = entry["customer"]
        self._drop_callback(customer)
        q = self.queues[entry["queue"]]
        rng = self._rng
        connected = rng.random() < 0.75
        agent.working = True
        self._set_state(agent, "on_call")
        if entry.get("callback_id") is not None:
            self._emit("callback.attempted", callback_id=entry["callback_id"], agent_id=agent.id,
                       connected=connected, queue=q.spec.name)  # fmt: skip
        call_id = self._new_id("o")
        self._emit("call.offered", call_id=call_id, queue=q.spec.name, customer_id=customer,
                   direction="outbound", agent_id=agent.id)  # fmt: skip
        ring = rng.uniform(8.0, 25.0)
        if connected:
            talk = _ms(self._talk(q.spec, 0.8))
            self._at(self.now + ring + talk, self._outbound_end, call_id, q, agent, talk, "callback")
        else:
            self._at(self.now + ring + 5.0, self._next_activity, agent)

    def _outbound_end(self, call_id: str, q: _Queue, agent: _Agent, talk: float, outcome: str) -> None:
        acw = self._acw(q.spec)
        self._emit("call.ended", call_id=call_id, queue=q.spec.name, agent_id=agent.id, direction="outbound",
                   talk_seconds=talk, acw_seconds=acw, outcome=outcome,
                   resolved=(self._rng.random() < q.spec.fcr_share) if outcome == "callback" else None)  # fmt: skip
        self._after_call(agent, acw)

    # -- outbound campaign --------------------------------------------------------------------
    def _maybe_dial(self, agent: _Agent) -> None:
        agent.dial_pending = False
        if not agent.idle:
            return  # the next time the agent is idle, it considers dialling again
        campaign = [self.queues[n] for n in agent.queues if self.queues[n].spec.outbound_per_agent_hour > 0]
        q = campaign[0]
        spec = q.spec
        hour = _hour_of_day(self.now)
        # Dial only in campaign hours, with nobody waiting, keeping two agents free for inbound.
        if (
            not spec.outbound_hours[0] <= hour < spec.outbound_hours[1]
            or any(self.queues[n].waiting for n in agent.queues)
            or len(self._idle_agents(q)) <= 2
        ):
            agent.dial_pending = True
            self._at(self.now + self._rng.expovariate(spec.outbound_per_agent_hour / 3600.0),
                     self._maybe_dial, agent)  # fmt: skip
            return
        rng = self._rng
        agent.working = True
        self._set_state(agent, "on_call")
        call_id = self._new_id("o")
        lead = f"lead-{rng.randrange(1_000_000):06d}"
        self._emit("call.offered", call_id=call_id, queue=spec.name, customer_id=lead, direction="outbound",
                   agent_id=agent.id)  # fmt: skip
        ring = rng.uniform(10.0, 30.0)
        if rng.random() < spec.outbound_connect_share:
            talk = _ms(self._talk(spec, 0.8))
            outcome = "sale" if rng.random() < spec.sale_share else "no_sale"
            self._at(self.now + ring + talk, self._outbound_end, call_id, q, agent, talk, outcome)
        else:
            self._at(self.now + ring, self._next_activity, agent)

    # -- surveys ------------------------------------------------------------------------------
    def _maybe_survey(self, call: _Call, agent: _Agent, resolved: bool) -> None:
        spec = self.queues[call.queue].spec
        rng = self._rng
        if rng.random() >= spec.survey_share:
            return
        # Satisfaction falls with the wait and with an unresolved issue.
        quality = 0.78 + (0.14 if resolved else -0.3) - min(0.3, call.wait / 1000.0) + rng.gauss(0.0, 0.22)
        self._survey(spec.name, agent.id, call.id, quality, self.now + rng.uniform(30.0, 900.0))

    def _survey(self, queue: str, agent_id: str | None, contact_id: str, quality: float, when: float) -> None:
        rng = self._rng
        p = min(1.0, max(0.0, quality))
        kind = rng.choices(("csat", "nps", "ces"), weights=(0.5, 0.3, 0.2))[0]
        if kind == "csat":
            score = min(5, max(1, round(1 + 4 * p + rng.gauss(0.0, 0.5))))
        elif kind == "nps":
            score = min(10, max(0, round(10 * p + rng.gauss(0.0, 1.0))))
        else:
            score = min(7, max(1, round(1 + 6 * p + rng.gauss(0.0, 0.7))))
        self._emit_at(when, "survey.response", survey=kind, score=score, queue=queue, agent_id=agent_id,
                      contact_id=contact_id)  # fmt: skip

    def _maybe_pulse(self, agent: _Agent) -> None:
        """The employee pulse (``esat`` 1-5 or ``enps`` 0-10) of an agent logging in, with
        probability ``pulse_share``, from its own random stream."""
        rng = self._pulse
        if not agent.queues or rng.random() >= self.params.pulse_share:
            return
        mood = min(1.0, max(0.0, rng.gauss(0.68, 0.2)))
        if rng.random() < 0.5:
            self._emit("survey.response", survey="esat", score=min(5, max(1, round(1 + 4 * mood))),
                       queue=agent.queues[0], agent_id=agent.id)  # fmt: skip
        else:
            self._emit("survey.response", survey="enps", score=min(10, max(0, round(10 * mood))),
                       queue=agent.queues[0], agent_id=agent.id)  # fmt: skip

    # -- tickets ------------------------------------------------------------------------------
    def _next_ticket(self, q: _Queue) -> None:
        self._at(self.now + self._rng.expovariate(q.spec.tickets_per_hour / 3600.0), self._ticket_arrival, q)

    def _ticket_arrival(self, q: _Queue) -> None:
        self._next_ticket(q)
        share = max(0.1, profile_share("office", _hour_of_day(self.now)))
        if self._rng.random() < share:
            self._new_ticket(q, self._pick_customer(q.spec), None)

    def _new_ticket(self, q: _Queue, customer: str | None, kb_session: str | None) -> None:
        """A ticket and its whole life: agent replies, customer replies, resolution, now and
        then a reopen, and sometimes a CSAT answer."""
        spec = q.spec
        rng = self._rng
        ticket_id = self._new_id("t")
        channel = spec.ticket_channel
        self._emit("ticket.created", ticket_id=ticket_id, queue=spec.name, channel=channel, customer_id=customer,
                   kb_session_id=kb_session)  # fmt: skip
        t = self.now
        frt = spec.first_response_seconds
        rounds = 0
        while True:
            t += self._lognormal(frt, 1.0)
            self._emit_at(t, "ticket.replied", ticket_id=ticket_id, author="agent", queue=spec.name, channel=channel)
            rounds += 1
            if rounds >= 4 or rng.random() >= 0.45 / rounds:
                break
            t += self._lognormal(frt * 0.8, 1.0)
            self._emit_at(t, "ticket.replied", ticket_id=ticket_id, author="customer", queue=spec.name,
                          channel=channel)  # fmt: skip
        t += self._lognormal(600.0, 1.0)
        resolution = "unresolvable" if rng.random() < 0.05 else "solved"
        self._emit_at(t, "ticket.resolved", ticket_id=ticket_id, resolution=resolution, queue=spec.name,
                      channel=channel)  # fmt: skip
        if rng.random() < 0.1:
            quality = (0.85 if resolution == "solved" else 0.3) - 0.05 * rounds + rng.gauss(0.0, 0.2)
            self._survey(spec.name, None, ticket_id, quality, t + rng.uniform(300.0, 7200.0))
        if rng.random() < 0.05:
            t += self._lognormal(4 * 3600.0, 1.0)
            self._emit_at(t, "ticket.reopened", ticket_id=ticket_id, queue=spec.name, channel=channel)
            t += self._lognormal(frt, 1.0)
            self._emit_at(t, "ticket.replied", ticket_id=ticket_id, author="agent", queue=spec.name, channel=channel)
            t += self._lognormal(600.0, 1.0)
            self._emit_at(t, "ticket.resolved", ticket_id=ticket_id, resolution="solved", queue=spec.name,
                          channel=channel)  # fmt: skip

    # -- knowledge base -----------------------------------------------------------------------
    def _kb_session(self) -> None:
        rng = self._rng
        rate = self.params.kb_sessions_per_hour / 3600.0
        self._at(self.now + rng.expovariate(rate), self._kb_session)
        if rng.random() >= max(0.1, profile_share("office", _hour_of_day(self.now))):
            return
        session = self._new_id("s")
        t = self.now
        viewed = 1 + int(rng.expovariate(1.2))
        for _ in range(min(viewed, 4)):
            # Zipf-like: the first articles are read most.
            article = KB_ARTICLES[min(len(KB_ARTICLES) - 1, int(rng.expovariate(0.35)))]
            self._emit_at(t, "kb.viewed", article_id=article, session_id=session)
            t += rng.uniform(20.0, 240.0)
        ticket_queues = [q for q in self.queues.values() if q.spec.tickets_per_hour > 0]
        if ticket_queues and rng.random() < 0.12:
            q = ticket_queues[0]
            self._at(t, self._new_ticket, q, self._pick_customer(q.spec), session)


#: ``now-90m``, ``now-2h``: a start that far before now.
_AGO = re.compile(r"^now-([0-9]+(?:\.[0-9]+)?)([smh])$")


def parse_start(text: str, now: float | None = None) -> float:
    """A start instant: ``now``, ``now-90m`` / ``now-2h`` / ``now-30s`` (that long before now), ``today``
    (00:00 UTC today), ``HH:MM`` (today, UTC), RFC 3339 with an offset, or epoch seconds."""
    from kpi_core.errors import InvalidEventError
    from kpi_core.events import parse_instant

    wall = time.time() if now is None else now
    text = text.strip()
    midnight = math.floor(wall / 86400.0) * 86400.0
    if text == "now":
        return float(round(wall))
    if text == "today":
        return midnight
    ago = _AGO.match(text)
    if ago:
        seconds = float(ago.group(1)) * {"s": 1, "m": 60, "h": 3600}[ago.group(2)]
        if seconds > 7 * 86400:
            raise ConfigError("--start", f"at most a week before now (now-168h), got {text!r}")
        return float(round(wall - seconds))
    if len(text) in (4, 5) and ":" in text:
        hours, _, minutes = text.partition(":")
        if hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60:
            return midnight + int(hours) * 3600.0 + int(minutes) * 60.0
    try:
        return parse_instant(text)
    except InvalidEventError:
        raise ConfigError(
            "--start", f"use now, now-90m / now-2h, today, HH:MM (UTC), RFC 3339 with an offset or epoch seconds; got {text!r}"
        ) from None


class Pacer:
    """Maps wall-clock time to simulated time: ``speed`` simulated seconds per real second;
    ``speed == 0`` means as fast as possible."""

    def __init__(self, sim_start: float, speed: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not math.isfinite(speed) or speed < 0:
            raise ConfigError("--speed", f"must be >= 0, got {speed!r}")
        self.sim_start = sim_start
        self.speed = speed
        self.clock = clock
        self.wall_start = clock()

    def sim_now(self) -> float:
        if self.speed == 0:
            return math.inf
        return self.sim_start + (self.clock() - self.wall_start) * self.speed
