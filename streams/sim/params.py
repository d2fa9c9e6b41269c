"""The simulator's parameters: the intraday profiles, a queue (:class:`QueueSpec`), the catalogue of
realistic queues (:func:`default_queues`) and a run (:class:`SimParams`). ``docs/SIMULATOR.md`` has
the model and its parameters.

The Erlang C formulas (``kpi_core.erlang``) size the default staffing (:meth:`QueueSpec.headcount`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from kpi_core.erlang import agents_for_service_level
from kpi_core.errors import ConfigError
from kpi_core.events import ALL

# -- intraday profiles --------------------------------------------------------------------------
#: Hour of day (UTC) -> share of the peak arrival rate, interpolated linearly: a ramp from
#: 07:00, the morning peak around 10:00, a lunch dip 12:00-13:30, an afternoon shoulder, and a
#: quiet evening.
OFFICE_PROFILE: tuple[tuple[float, float], ...] = (
    (0, 0.02),
    (6, 0.05),
    (7, 0.25),
    (8, 0.6),
    (9, 0.92),
    (10, 1.0),
    (11, 0.95),
    (12, 0.72),
    (13, 0.68),
    (14, 0.85),
    (15, 0.88),
    (16, 0.75),
    (17, 0.55),
    (18, 0.38),
    (19, 0.26),
    (20, 0.15),
    (22, 0.06),
    (24, 0.02),
)
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


def hour_of_day(t: float) -> float:
    """The UTC hour of day (0..24) of epoch seconds ``t``."""
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
        for key in (
            "calls_per_hour",
            "talk_seconds",
            "hold_seconds",
            "acw_seconds",
            "ring_seconds",
            "ring_timeout_seconds",
            "overflow_after_seconds",
            "outbound_per_agent_hour",
            "tickets_per_hour",
            "first_response_seconds",
            "talk_cv",
        ):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(where + key, f"must be a number >= 0, got {value!r}")
        if self.talk_seconds <= 0:
            raise ConfigError(where + "talk_seconds", f"must be > 0, got {self.talk_seconds!r}")
        for key in (
            "hold_share",
            "rona_share",
            "voicemail_share",
            "callback_share",
            "timeout_voicemail_share",
            "transfer_share",
            "fcr_share",
            "anonymous_share",
            "redial_share",
            "survey_share",
            "outbound_connect_share",
            "sale_share",
        ):
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
            raise ConfigError(
                where + "talk_distribution", f"must be lognormal or exponential, got {self.talk_distribution!r}"
            )
        if self.profile not in PROFILES:
            raise ConfigError(where + "profile", f"must be one of {sorted(PROFILES)}, got {self.profile!r}")
        if self.open_hours is not None and not 0 <= self.open_hours[0] < self.open_hours[1] <= 24:
            raise ConfigError(where + "open_hours", f"must be (open, close) within 0..24, got {self.open_hours!r}")
        if self.ticket_channel not in ("email", "chat", "social", "sms"):
            raise ConfigError(
                where + "ticket_channel", f"must be email, chat, social or sms, got {self.ticket_channel!r}"
            )

    @property
    def aht_seconds(self) -> float:
        return self.talk_seconds + self.hold_share * self.hold_seconds + self.acw_seconds

    def is_open(self, t: float) -> bool:
        if self.open_hours is None:
            return True
        hour = hour_of_day(t)
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
    QueueSpec(
        "support",
        calls_per_hour=150,
        talk_seconds=330,
        hold_share=0.3,
        hold_seconds=60,
        acw_seconds=45,
        patience_seconds=200,
        max_wait_seconds=900,
        transfer_share=0.05,
        transfer_to=("tech", "billing", "retention"),
        fcr_share=0.76,
        tickets_per_hour=30,
        first_response_seconds=3600,
    ),
    QueueSpec(
        "sales",
        calls_per_hour=70,
        talk_seconds=260,
        acw_seconds=30,
        patience_seconds=120,
        max_wait_seconds=300,
        voicemail_share=0.25,
        callback_share=0.08,
        transfer_share=0.02,
        transfer_to=("billing",),
        fcr_share=0.85,
        outbound_per_agent_hour=40,
        tickets_per_hour=6,
        first_response_seconds=5400,
    ),
    QueueSpec(
        "billing",
        calls_per_hour=90,
        talk_seconds=210,
        acw_seconds=40,
        patience_seconds=160,
        max_wait_seconds=600,
        overflow_to="support",
        overflow_after_seconds=240,
        transfer_share=0.03,
        transfer_to=("support",),
        fcr_share=0.82,
        tickets_per_hour=15,
        first_response_seconds=7200,
    ),
    QueueSpec(
        "tech",
        calls_per_hour=55,
        talk_seconds=540,
        talk_cv=0.9,
        acw_seconds=60,
        patience_seconds=260,
        max_wait_seconds=1200,
        transfer_share=0.02,
        transfer_to=("support",),
        fcr_share=0.68,
        tickets_per_hour=25,
        ticket_channel="chat",
        first_response_seconds=300,
    ),
    QueueSpec(
        "retention",
        calls_per_hour=25,
        talk_seconds=420,
        acw_seconds=50,
        patience_seconds=240,
        max_wait_seconds=600,
        fcr_share=0.7,
        tickets_per_hour=3,
    ),
    QueueSpec(
        "vip",
        calls_per_hour=12,
        talk_seconds=300,
        acw_seconds=40,
        patience_seconds=90,
        max_wait_seconds=180,
        voicemail_share=0.3,
        fcr_share=0.9,
        tickets_per_hour=2,
        first_response_seconds=1800,
    ),
)


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
