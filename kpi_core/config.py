"""ccmon's configuration: one TOML file, validated field by field.

Every error names the field, dotted, and echoes the bad value::

    config field 'tenants.acme.queues.support.sl_threshold_seconds': must be a number in [0, 86400], got -3

Every number has a range (the ``*_RANGES`` tables below): finite, and no larger than anything
sane, so a typo like ``1e300`` stops start-up instead of overflowing arithmetic later (in the
engine or in Redis's scripts). Waits, thresholds, a call's age and clock skew are at most a day;
the finished-call grace and the callback target a week; the repeat-caller look-back (which the
state horizon follows) 31 days; ticket targets a year. Ratios are within 0..1, NPS -100..100,
CES 1..7, limits 1..1,000,000 (``series_retention_days`` 2..3660).
The top-level sections are ``[engine]``, ``[limits]``, ``[defaults]`` and ``[tenants]``; any other
is an error (a misspelt section would otherwise be ignored silently).

A queue that is not in the file still works: it takes ``[defaults]``. A tenant that is not in
the file uses UTC. See ``deploy/config/ccmon.toml`` for a commented example.

The employee pulse (``esat``/``enps`` surveys answered by agents) is exported only in batches of
answers from at least ``pulse_min_responses`` different agents (default 5, 3..10,000; in
``[engine]`` for every tenant, or per tenant under ``[tenants.*]``): no single agent's answer can
be read off (kpi_core.engine.surveys, ``_pulse``; docs/KPI_ENGINE.md).

A queue's opening hours (``open_hours``, ``open_days``; optional) are local times of the tenant's
zone: ``"HH:MM-HH:MM"`` from 00:00 to 24:00, start before end (a range over midnight is written
as two), on the days named (``mon`` .. ``sun``). With either set the exporter serves
``ccmon_queue_open{tenant,queue}``, and the SLA alerts of that queue page only while it is 1.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kpi_core.catalog import CHANNEL_TARGET_METRICS, TARGET_METRICS, TARGET_RANGES
from kpi_core.errors import ConfigError
from kpi_core.events import ALL, CHANNELS

#: Service-level formulas (docs/KPIS.md). ``default`` leaves short abandons out.
SL_FORMULAS = ("default", "answered", "offered", "removed_within", "abandoned_after")

#: The target tables come from the KPI catalog (each KPI declares its target key and range):
#: TARGET_METRICS (target name -> the KPI metric without ``ccmon_``; the gauge is
#: ``ccmon_target_<metric>``), CHANNEL_TARGET_METRICS (the targets a queue may set per channel,
#: ``[tenants.X.queues.Y.channels.chat.targets]``, each compared with a ``*_by_channel``
#: family) and TARGET_RANGES (ratios within 0..1, NPS within -100..100, CES on its 1..7 scale,
#: waits and handling times within a day, callbacks within a week, tickets within a year).
DEFAULT_TARGETS: Mapping[str, float] = MappingProxyType(
    {
        "service_level": 0.8,
        "abandon_rate": 0.05,
        "callback_seconds": 3600.0,
        "fcr": 0.9,
        "nps": 70.0,
    }
)

_DAY = 86400
_WEEK = 7 * _DAY
_YEAR = 365 * _DAY

#: [min, max] of each number of ``[engine]``. Windows are at most 24 h (see parse_window).
ENGINE_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "bucket_seconds": (1, 10),  # and a whole divisor of 60
        "coarse_bucket_seconds": (60, 900),  # and a divisor of 900, a multiple of bucket_seconds
        "max_call_age_seconds": (60, _DAY),
        "finished_call_grace_seconds": (0, _WEEK),
        "repeat_caller_seconds": (60, 31 * _DAY),  # the state horizon follows it: a month at most
        "max_future_seconds": (0, _DAY),
        # A whole number: with 2, each of the two agents could read the other's pulse answer.
        "pulse_min_responses": (3, 10_000),
    }
)
#: [min, max] of each number of a queue (``[defaults]``, ``[tenants.*.queues.*]``).
QUEUE_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "sl_threshold_seconds": (0, _DAY),
        "short_abandon_seconds": (0, _DAY),
    }
)
#: [min, max] of each whole number of ``[limits]``.
LIMIT_RANGES: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "tenants": (1, 1_000_000),
        "queues_per_tenant": (1, 1_000_000),
        "agents_per_tenant": (1, 1_000_000),
        "articles_per_tenant": (1, 1_000_000),
        "series_retention_days": (2, 3660),  # a name idle this long retires (at least the horizon)
        # Label values of the *_by_channel / *_by_priority families (0: no such breakdown).
        "max_channels": (0, len(CHANNELS)),
        "max_priorities": (0, 10),
        "pause_reasons_per_tenant": (1, 1000),
        "agent_series_per_tenant": (0, 100_000),
    }
)

#: Day names of ``open_days``, Monday first (``datetime.weekday()`` order).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: An ``open_hours`` range, local time: ``HH:MM-HH:MM``, 00:00 to 24:00.
_OPEN_RANGE_RE = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")
_MINUTES_PER_DAY = 24 * 60

_WINDOW_RE = re.compile(r"^([1-9][0-9]*)([smh])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
TODAY = "today"


@dataclass(frozen=True, slots=True)
class Window:
    """A window name (``5m``, ``today``) and its length; ``seconds`` is 0 for ``today``."""

    name: str
    seconds: int

    @property
    def is_today(self) -> bool:
        return self.seconds == 0


def parse_window(name: Any, field_name: str = "engine.windows") -> Window:
    if name == TODAY:
        return Window(TODAY, 0)
    if not isinstance(name, str) or not (match := _WINDOW_RE.match(name)):
        raise ConfigError(field_name, f"a window is like '5m', '1h', '30s' or 'today', got {name!r}")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > 86400:
        raise ConfigError(field_name, f"a sliding window is at most 24h, got {name!r}")
    return Window(name, seconds)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    sl_threshold_seconds: float = 20.0
    sl_formula: str = "default"
    short_abandon_seconds: float = 5.0
    targets: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TARGETS)
    #: Opening hours, local time: ``[start, end)`` minutes of the day. None (and open_days
    #: None): the queue has no opening hours, ccmon exports no ``ccmon_queue_open`` for it.
    open_hours: tuple[tuple[int, int], ...] | None = None
    #: Open weekdays, 0 = Monday; None with open_hours set means every day.
    open_days: frozenset[int] | None = None
    #: Targets per channel (``channels.<channel>.targets``): channel -> target name -> value,
    #: only the names of CHANNEL_TARGET_METRICS, only as configured (none inherited).
    channels: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: ``call.ended`` outcomes of an outbound call that count as a conversion.
    conversion_outcomes: frozenset[str] = frozenset({"sale"})

    @property
    def callback_target_seconds(self) -> float:
        return self.targets.get("callback_seconds", 3600.0)

    @property
    def has_opening_hours(self) -> bool:
        return self.open_hours is not None or self.open_days is not None

    def is_open(self, at: float, zone: ZoneInfo) -> bool:
        """Whether instant ``at`` (Unix seconds) falls in the opening hours, read on the wall
        clock of ``zone`` (so a daylight-saving change moves the UTC hours, not the local
        ones). A queue without opening hours is always open."""
        local = datetime.fromtimestamp(at, zone)
        if self.open_days is not None and local.weekday() not in self.open_days:
            return False
        if self.open_hours is None:
            return True
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.open_hours)


#: The ``reason`` label of an agent with no pause reason, and of one whose reason is not in its
#: tenant's ``pause_reasons``: both reserved (a configured reason may not take them).
REASON_NONE = "none"
REASON_OTHER = "other"
#: How long an agent may stay ``away`` before the board highlights it, by default (15 min).
AWAY_ALERT_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class TenantConfig:
    timezone: str = "UTC"
    queues: Mapping[str, QueueConfig] = field(default_factory=dict)
    #: The tenant's own pulse minimum (None: the ``[engine]`` one).
    pulse_min_responses: int | None = None
    #: The pause/aux codes of ``agent.state`` ``reason`` that keep their own ``reason`` label;
    #: any other counts as ``other`` (at most ``limits.pause_reasons_per_tenant``).
    pause_reasons: tuple[str, ...] = ()
    #: An agent ``away`` longer than this is highlighted on the board (``/agents``).
    away_alert_seconds: float = AWAY_ALERT_SECONDS

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Limits:
    """The cardinality guard: at most this many names of each kind, counted over the state
    horizon (a name unseen for longer stops counting), not counting names the configuration
    declares. An event that would add one more is rejected as ``too_many_series``."""

    tenants: int = 100
    queues_per_tenant: int = 2000
    agents_per_tenant: int = 10000
    articles_per_tenant: int = 5000
    #: A guarded name without an event for this many days retires: its state leaves Redis and
    #: /metrics (at least the state horizon + 1 h; docs/RELIABILITY.md, cardinality).
    series_retention_days: int = 8
    #: Channels with their own label in the ``*_by_channel`` families; more fold into
    #: ``other`` (kpi_core.kpis.kept_values: voice, chat, email, social, sms, in that order).
    max_channels: int = 5
    #: Priorities with their own label in the ``*_by_priority`` families, the most urgent
    #: first; the lower ones fold into ``other``.
    max_priorities: int = 10
    #: Most ``pause_reasons`` a tenant may configure (each is a ``reason`` label value of
    #: ``ccmon_agents`` on every queue).
    pause_reasons_per_tenant: int = 20
    #: Per-agent series (``ccmon_agent_state{tenant,agent,state,reason}``) of at most this many
    #: agents per tenant, the most recently changed; 0 (the default): none.
    agent_series_per_tenant: int = 0


@dataclass(frozen=True, slots=True)
class Config:
    windows: tuple[Window, ...] = (
        Window("5m", 300),
        Window("15m", 900),
        Window("1h", 3600),
        Window(TODAY, 0),
    )
    bucket_seconds: int = 10
    coarse_bucket_seconds: int = 900
    max_call_age_seconds: float = 4 * 3600.0
    #: A finished call's record (every leg has an outcome, answered legs have ended) is kept
    #: this long after its last event for late events, then dropped to bound memory.
    finished_call_grace_seconds: float = 4 * 3600.0
    callback_on_missed: bool = True
    repeat_caller_seconds: float = 86400.0
    max_future_seconds: float = 300.0
    #: Employee pulse answers are exported in batches from at least this many agents.
    pulse_min_responses: int = 5
    defaults: QueueConfig = field(default_factory=QueueConfig)
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)

    def queue(self, tenant: str, queue: str) -> QueueConfig:
        tenant_config = self.tenants.get(tenant)
        if tenant_config is not None:
            queue_config = tenant_config.queues.get(queue)
            if queue_config is not None:
                return queue_config
        return self.defaults

    def pulse_minimum(self, tenant: str) -> int:
        """The fewest different agents whose pulse answers are exported together."""
        tenant_config = self.tenants.get(tenant)
        if tenant_config is not None and tenant_config.pulse_min_responses is not None:
            return tenant_config.pulse_min_responses
        return self.pulse_min_responses

    def timezone(self, tenant: str) -> ZoneInfo:
        tenant_config = self.tenants.get(tenant)
        return tenant_config.zone if tenant_config is not None else ZoneInfo("UTC")

    def pause_reasons(self, tenant: str) -> tuple[str, ...]:
        tenant_config = self.tenants.get(tenant)
        return tenant_config.pause_reasons if tenant_config is not None else ()

    def reason_label(self, tenant: str, reason: str | None) -> str:
        """The ``reason`` label of a pause reason: itself when the tenant configures it,
        ``none`` when there is none, else ``other`` (so the label values stay bounded)."""
        if not reason:
            return REASON_NONE
        return reason if reason in self.pause_reasons(tenant) else REASON_OTHER

    def away_alert_seconds(self, tenant: str) -> float:
        tenant_config = self.tenants.get(tenant)
        return tenant_config.away_alert_seconds if tenant_config is not None else AWAY_ALERT_SECONDS

    @property
    def longest_sliding_seconds(self) -> int:
        return max((w.seconds for w in self.windows), default=0)

    @property
    def fine_keep_seconds(self) -> float:
        """How long a fine bucket is kept after it ends: the longest sliding window and an
        hour more (every store: MemoryState.maintain, the TTLs in Redis)."""
        return self.longest_sliding_seconds + 3600.0

    @property
    def coarse_keep_seconds(self) -> float:
        """How long a coarse bucket (and a seen event id's hour) is kept after it ends: the
        state horizon and an hour more."""
        return self.horizon_seconds + 3600.0

    @property
    def has_today(self) -> bool:
        return any(w.is_today for w in self.windows)

    @property
    def horizon_seconds(self) -> float:
        """How far back the engine keeps state: the longest window (a 'today' may be 25 h
        long on a daylight-saving day), and the repeat-caller look-back."""
        longest = float(self.longest_sliding_seconds)
        if self.has_today:
            longest = max(longest, 25 * 3600.0)
        return max(longest, self.repeat_caller_seconds)


def _bound(value: float) -> str:
    """A range bound as written in an error: ``31536000``, ``0.5``, ``-100``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _number(raw: Mapping[str, Any], key: str, where: str, default: float, bounds: tuple[float, float]) -> float:
    """``raw[key]`` (``default`` when absent): an int or float, finite, within ``bounds``."""
    if key not in raw:
        return default
    value = raw[key]
    low, high = bounds
    # Finite bounds also reject NaN (no comparison holds), infinities and huge integers.
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{where}{key}", f"must be a number in [{_bound(low)}, {_bound(high)}], got {value!r}")
    return float(value)


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be a table, got {value!r}")
    return value


def _reject_unknown(raw: Mapping[str, Any], allowed: Collection[str], where: str, kind: str = "field") -> None:
    for key in raw:
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            raise ConfigError(f"{where}{key}", f"unknown {kind} (expected one of: {hint})")


def _targets(
    raw: Any, where: str, base: Mapping[str, float], allowed: Collection[str] = TARGET_METRICS
) -> Mapping[str, float]:
    table = _table(raw, where.rstrip("."))
    _reject_unknown(table, set(allowed), where)
    merged = dict(base)
    for key in table:
        merged[key] = _number(table, key, where, 0.0, TARGET_RANGES[key])
    return MappingProxyType(merged)


def _open_hours(value: Any, where: str) -> tuple[tuple[int, int], ...]:
    """``["08:00-12:00", "13:00-20:00"]`` -> ``((480, 720), (780, 1200))``."""
    name = f"{where}open_hours"
    if not isinstance(value, list) or not value:
        raise ConfigError(name, f"must be a non-empty list of 'HH:MM-HH:MM' ranges, got {value!r}")
    ranges = []
    for i, text in enumerate(value):
        match = _OPEN_RANGE_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(
                f"{name}[{i}]", f"must be a local time range 'HH:MM-HH:MM' like '08:00-20:00', got {text!r}"
            )
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
        start, end = start_h * 60 + start_m, end_h * 60 + end_m
        if start > _MINUTES_PER_DAY or end > _MINUTES_PER_DAY:
            raise ConfigError(f"{name}[{i}]", f"times run from 00:00 to 24:00, got {text!r}")
        if start >= end:
            raise ConfigError(
                f"{name}[{i}]",
                f"must end after it starts (write a range over midnight as two, e.g. "
                f"'22:00-24:00', '00:00-06:00'), got {text!r}",
            )
        ranges.append((start, end))
    return tuple(ranges)


def _open_days(value: Any, where: str) -> frozenset[int]:
    name = f"{where}open_days"
    if not isinstance(value, list) or not value:
        raise ConfigError(name, f"must be a non-empty list of day names ({', '.join(WEEKDAYS)}), got {value!r}")
    days = set()
    for i, day in enumerate(value):
        if day not in WEEKDAYS:
            raise ConfigError(f"{name}[{i}]", f"must be one of {', '.join(WEEKDAYS)}, got {day!r}")
        if WEEKDAYS.index(day) in days:
            raise ConfigError(name, f"has duplicates: {value!r}")
        days.add(WEEKDAYS.index(day))
    return frozenset(days)


_QUEUE_FIELDS = {
    "sl_threshold_seconds",
    "sl_formula",
    "short_abandon_seconds",
    "targets",
    "open_hours",
    "open_days",
    "channels",
    "conversion_outcomes",
}


def _channels(raw: Any, where: str, base: Mapping[str, Mapping[str, float]]) -> Mapping[str, Mapping[str, float]]:
    """``channels.<channel>.targets`` tables: targets per channel, each over the same
    channel's targets in ``base`` (the queue's defaults), checked like the queue's own."""
    table = _table(raw, where.rstrip("."))
    _reject_unknown(table, CHANNELS, where, "channel")
    merged = dict(base)
    for channel, channel_raw in table.items():
        channel_where = f"{where}{channel}."
        channel_table = _table(channel_raw, channel_where.rstrip("."))
        _reject_unknown(channel_table, {"targets"}, channel_where)
        merged[channel] = _targets(
            channel_table.get("targets", {}), f"{channel_where}targets.", base.get(channel, {}), CHANNEL_TARGET_METRICS
        )
    return MappingProxyType(merged)


def _conversion_outcomes(value: Any, where: str) -> frozenset[str]:
    name = f"{where}conversion_outcomes"
    if not isinstance(value, list) or not value:
        raise ConfigError(name, f"must be a non-empty list of call.ended outcomes, got {value!r}")
    for i, outcome in enumerate(value):
        if not isinstance(outcome, str) or not outcome:
            raise ConfigError(f"{name}[{i}]", f"must be a non-empty string, got {outcome!r}")
    return frozenset(value)


def _queue(raw: Any, where: str, base: QueueConfig) -> QueueConfig:
    table = _table(raw, where.rstrip("."))
    _reject_unknown(table, _QUEUE_FIELDS, where)
    formula = table.get("sl_formula", base.sl_formula)
    if formula not in SL_FORMULAS:
        raise ConfigError(f"{where}sl_formula", f"must be one of {', '.join(SL_FORMULAS)}, got {formula!r}")
    targets = base.targets
    if "targets" in table:
        targets = _targets(table["targets"], f"{where}targets.", base.targets)
    return replace(
        base,
        sl_threshold_seconds=_number(
            table, "sl_threshold_seconds", where, base.sl_threshold_seconds, QUEUE_RANGES["sl_threshold_seconds"]
        ),
        short_abandon_seconds=_number(
            table, "short_abandon_seconds", where, base.short_abandon_seconds, QUEUE_RANGES["short_abandon_seconds"]
        ),
        sl_formula=formula,
        targets=targets,
        open_hours=_open_hours(table["open_hours"], where) if "open_hours" in table else base.open_hours,
        open_days=_open_days(table["open_days"], where) if "open_days" in table else base.open_days,
        channels=_channels(table["channels"], f"{where}channels.", base.channels)
        if "channels" in table
        else base.channels,
        conversion_outcomes=(
            _conversion_outcomes(table["conversion_outcomes"], where)
            if "conversion_outcomes" in table
            else base.conversion_outcomes
        ),
    )


def _pause_reasons(table: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """A tenant's ``pause_reasons``: distinct non-empty names of at most 128 printable
    characters, neither ``none`` nor ``other`` (the labels ccmon gives itself)."""
    raw = table.get("pause_reasons", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{where}pause_reasons", f"must be a list of names, got {raw!r}")
    for i, name in enumerate(raw):
        if not isinstance(name, str) or not name or len(name) > 128 or not name.isprintable():
            raise ConfigError(
                f"{where}pause_reasons[{i}]", f"must be a name of 1 to 128 printable characters, got {name!r}"
            )
        if name in (REASON_NONE, REASON_OTHER):
            raise ConfigError(
                f"{where}pause_reasons[{i}]", f"{name!r} is reserved (the label of no reason / another one)"
            )
    if len(set(raw)) != len(raw):
        raise ConfigError(f"{where}pause_reasons", f"has duplicates: {raw!r}")
    return tuple(raw)


_ENGINE_FIELDS = {"windows", "callback_on_missed", *ENGINE_RANGES}


def _pulse_min_responses(table: Mapping[str, Any], where: str, default: int | None) -> int | None:
    """``table["pulse_min_responses"]``: a whole number in its ENGINE_RANGES range."""
    if "pulse_min_responses" not in table:
        return default
    value = table["pulse_min_responses"]
    low, high = (int(bound) for bound in ENGINE_RANGES["pulse_min_responses"])
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}pulse_min_responses", f"must be a whole number in [{low}, {high}], got {value!r}")
    return value


#: The top-level sections of the file.
SECTIONS = ("engine", "limits", "defaults", "tenants")


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a decoded TOML document."""
    _reject_unknown(raw, SECTIONS, "", "section")
    engine = _table(raw.get("engine", {}), "engine")
    _reject_unknown(engine, _ENGINE_FIELDS, "engine.")
    base = Config()

    windows = base.windows
    if "windows" in engine:
        names = engine["windows"]
        if not isinstance(names, list) or not names:
            raise ConfigError("engine.windows", f"must be a non-empty list, got {names!r}")
        windows = tuple(parse_window(name, f"engine.windows[{i}]") for i, name in enumerate(names))
        if len({w.name for w in windows}) != len(windows):
            raise ConfigError("engine.windows", f"has duplicates: {names!r}")

    def engine_number(key: str) -> float:
        return _number(engine, key, "engine.", getattr(base, key), ENGINE_RANGES[key])

    bucket = int(engine_number("bucket_seconds"))
    if engine.get("bucket_seconds", bucket) != bucket or bucket > 10 or 60 % bucket:
        raise ConfigError(
            "engine.bucket_seconds",
            f"must be a whole divisor of 60 no larger than 10, got {engine.get('bucket_seconds')!r}",
        )
    coarse = int(engine_number("coarse_bucket_seconds"))
    if engine.get("coarse_bucket_seconds", coarse) != coarse or coarse % bucket or 900 % coarse:
        raise ConfigError(
            "engine.coarse_bucket_seconds",
            f"must divide 900 (every time zone's midnight falls on a quarter hour) and be a "
            f"multiple of bucket_seconds, got {engine.get('coarse_bucket_seconds')!r}",
        )
    for i, window in enumerate(windows):
        if window.seconds % bucket:
            raise ConfigError(
                f"engine.windows[{i}]", f"must be a multiple of bucket_seconds ({bucket}), got {window.name!r}"
            )
    on_missed = engine.get("callback_on_missed", base.callback_on_missed)
    if not isinstance(on_missed, bool):
        raise ConfigError("engine.callback_on_missed", f"must be true or false, got {on_missed!r}")

    defaults = _queue(raw.get("defaults", {}), "defaults.", QueueConfig())

    tenants: dict[str, TenantConfig] = {}
    for tenant_name, tenant_raw in _table(raw.get("tenants", {}), "tenants").items():
        where = f"tenants.{tenant_name}."
        tenant_table = _table(tenant_raw, where.rstrip("."))
        _reject_unknown(
            tenant_table, {"timezone", "queues", "pulse_min_responses", "pause_reasons", "away_alert_seconds"}, where
        )
        zone = tenant_table.get("timezone", "UTC")
        try:
            if not isinstance(zone, str):
                raise ZoneInfoNotFoundError(zone)
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{where}timezone", f"unknown IANA time zone {zone!r}") from None
        queues = {
            name: _queue(queue_raw, f"{where}queues.{name}.", defaults)
            for name, queue_raw in _table(tenant_table.get("queues", {}), f"{where}queues").items()
        }
        if ALL in queues:
            raise ConfigError(f"{where}queues.{ALL}", f"the queue name {ALL!r} is reserved for totals")
        away = _number(tenant_table, "away_alert_seconds", where, AWAY_ALERT_SECONDS, (1, _DAY))
        tenants[tenant_name] = TenantConfig(
            timezone=zone,
            queues=MappingProxyType(queues),
            pulse_min_responses=_pulse_min_responses(tenant_table, where, None),
            pause_reasons=_pause_reasons(tenant_table, where),
            away_alert_seconds=away,
        )

    limits_raw = _table(raw.get("limits", {}), "limits")
    _reject_unknown(limits_raw, set(Limits.__dataclass_fields__), "limits.")
    limit_values: dict[str, int] = {}
    for name in Limits.__dataclass_fields__:
        value = limits_raw.get(name, getattr(Limits(), name))
        low, high = LIMIT_RANGES.get(name, (1, 1_000_000))
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"limits.{name}", f"must be a whole number in [{low}, {high}], got {value!r}")
        limit_values[name] = value
    most = limit_values["pause_reasons_per_tenant"]
    for tenant_name, tenant_config in tenants.items():
        if len(tenant_config.pause_reasons) > most:
            raise ConfigError(
                f"tenants.{tenant_name}.pause_reasons",
                f"has {len(tenant_config.pause_reasons)} reasons, more than limits.pause_reasons_per_tenant = {most}",
            )

    return Config(
        limits=Limits(**limit_values),
        windows=windows,
        bucket_seconds=bucket,
        coarse_bucket_seconds=coarse,
        max_call_age_seconds=engine_number("max_call_age_seconds"),
        finished_call_grace_seconds=engine_number("finished_call_grace_seconds"),
        callback_on_missed=on_missed,
        repeat_caller_seconds=engine_number("repeat_caller_seconds"),
        max_future_seconds=engine_number("max_future_seconds"),
        pulse_min_responses=_pulse_min_responses(engine, "engine.", base.pulse_min_responses)
        or base.pulse_min_responses,
        defaults=defaults,
        tenants=MappingProxyType(tenants),
    )


def config_from_toml(data: bytes, name: str = "the configuration") -> Config:
    """The configuration in ``data``, the bytes of a TOML document (``name``: where they came
    from, for the errors; reading the file is :func:`streams.files.load_config`'s). Raises
    ConfigError naming the field, or field ``--config`` when ``data`` is not UTF-8 TOML."""
    return config_from_dict(parse_toml(data, "--config", name))


def parse_toml(data: bytes, field: str, name: str, what: str = "a TOML file") -> dict[str, Any]:
    """The TOML document in ``data`` (the configuration, a source's mapping; ``name``: where
    the bytes came from). Raises ConfigError naming ``field`` when ``data`` is not UTF-8 TOML
    (``what``: the kind of file)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # a binary file
        raise ConfigError(field, f"{name} is not {what} (not UTF-8 text at byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(field, f"{name} is not valid TOML: {exc}") from None
