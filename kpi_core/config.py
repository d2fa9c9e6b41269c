"""ccmon's configuration: one TOML file, validated field by field.

Every error names the field, dotted, and echoes the bad value::

    config field 'tenants.acme.queues.support.sl_threshold_seconds': must be a number >= 0, got -3

A queue that is not in the file still works: it takes ``[defaults]``. A tenant that is not in
the file uses UTC. See ``deploy/config/ccmon.toml`` for a commented example.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kpi_core.errors import ConfigError

#: Service-level formulas (shared/spec/KPIS.md). ``default`` leaves short abandons out.
SL_FORMULAS = ("default", "answered", "offered", "removed_within", "abandoned_after")

#: Target name -> the KPI metric (without ``ccmon_``) it is compared with. The gauge is
#: ``ccmon_target_<metric>``, e.g. ``ccmon_target_service_level_ratio``.
TARGET_METRICS: Mapping[str, str] = MappingProxyType(
    {
        "service_level": "service_level_ratio",
        "asa_seconds": "average_speed_of_answer_seconds",
        "abandon_rate": "abandon_rate_ratio",
        "callback_seconds": "callback_delay_seconds",
        "longest_wait_seconds": "longest_wait_seconds",
        "aht_seconds": "average_handle_time_seconds",
        "fcr": "first_contact_resolution_ratio",
        "csat": "csat_ratio",
        "nps": "nps_score",
        "ces": "ces_score",
        "first_response_seconds": "ticket_first_response_seconds",
        "resolution_seconds": "ticket_resolution_seconds",
    }
)
_RATIO_TARGETS = frozenset({"service_level", "abandon_rate", "fcr", "csat"})

DEFAULT_TARGETS: Mapping[str, float] = MappingProxyType(
    {
        "service_level": 0.8,
        "abandon_rate": 0.05,
        "callback_seconds": 3600.0,
        "fcr": 0.9,
        "nps": 70.0,
    }
)

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

    @property
    def callback_target_seconds(self) -> float:
        return self.targets.get("callback_seconds", 3600.0)


@dataclass(frozen=True, slots=True)
class TenantConfig:
    timezone: str = "UTC"
    queues: Mapping[str, QueueConfig] = field(default_factory=dict)

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

    def timezone(self, tenant: str) -> ZoneInfo:
        tenant_config = self.tenants.get(tenant)
        return tenant_config.zone if tenant_config is not None else ZoneInfo("UTC")

    @property
    def longest_sliding_seconds(self) -> int:
        return max((w.seconds for w in self.windows), default=0)

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


def _number(raw: Mapping[str, Any], key: str, where: str, default: float, *, minimum: float = 0.0) -> float:
    if key not in raw:
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{where}{key}", f"must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be a table, got {value!r}")
    return value


def _reject_unknown(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in raw:
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            raise ConfigError(f"{where}{key}", f"unknown field (expected one of: {hint})")


def _targets(raw: Any, where: str, base: Mapping[str, float]) -> Mapping[str, float]:
    table = _table(raw, where.rstrip("."))
    _reject_unknown(table, set(TARGET_METRICS), where)
    merged = dict(base)
    for key in table:
        minimum = -100.0 if key == "nps" else 0.0
        value = _number(table, key, where, 0.0, minimum=minimum)
        if key in _RATIO_TARGETS and value > 1:
            raise ConfigError(f"{where}{key}", f"a ratio target is within 0..1, got {value!r}")
        if key == "nps" and value > 100:
            raise ConfigError(f"{where}{key}", f"an NPS target is within -100..100, got {value!r}")
        merged[key] = value
    return MappingProxyType(merged)


_QUEUE_FIELDS = {"sl_threshold_seconds", "sl_formula", "short_abandon_seconds", "targets"}


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
        sl_threshold_seconds=_number(table, "sl_threshold_seconds", where, base.sl_threshold_seconds),
        short_abandon_seconds=_number(table, "short_abandon_seconds", where, base.short_abandon_seconds),
        sl_formula=formula,
        targets=targets,
    )


_ENGINE_FIELDS = {
    "windows",
    "bucket_seconds",
    "coarse_bucket_seconds",
    "max_call_age_seconds",
    "finished_call_grace_seconds",
    "callback_on_missed",
    "repeat_caller_seconds",
    "max_future_seconds",
}


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a decoded TOML document."""
    _reject_unknown(raw, {"engine", "defaults", "tenants", "limits", "streams", "exporter", "sources"}, "")
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

    bucket = int(_number(engine, "bucket_seconds", "engine.", base.bucket_seconds, minimum=1))
    if engine.get("bucket_seconds", bucket) != bucket or bucket > 10 or 60 % bucket:
        raise ConfigError(
            "engine.bucket_seconds",
            f"must be a whole divisor of 60 no larger than 10, got {engine.get('bucket_seconds')!r}",
        )
    coarse = int(_number(engine, "coarse_bucket_seconds", "engine.", base.coarse_bucket_seconds, minimum=60))
    if coarse % bucket or 900 % coarse:
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
        _reject_unknown(tenant_table, {"timezone", "queues"}, where)
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
        if "_all" in queues:
            raise ConfigError(f"{where}queues._all", "the queue name '_all' is reserved for totals")
        tenants[tenant_name] = TenantConfig(timezone=zone, queues=MappingProxyType(queues))

    limits_raw = _table(raw.get("limits", {}), "limits")
    _reject_unknown(limits_raw, set(Limits.__dataclass_fields__), "limits.")
    limit_values: dict[str, int] = {}
    for name in Limits.__dataclass_fields__:
        value = limits_raw.get(name, getattr(Limits(), name))
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
            raise ConfigError(f"limits.{name}", f"must be a whole number in 1..10000000, got {value!r}")
        limit_values[name] = value
    if not 2 <= limit_values["series_retention_days"] <= 3660:
        raise ConfigError("limits.series_retention_days",
                          f"must be a whole number of days in 2..3660, got {limit_values['series_retention_days']!r}")

    return Config(
        limits=Limits(**limit_values),
        windows=windows,
        bucket_seconds=bucket,
        coarse_bucket_seconds=coarse,
        max_call_age_seconds=_number(engine, "max_call_age_seconds", "engine.", base.max_call_age_seconds, minimum=60),
        finished_call_grace_seconds=_number(
            engine, "finished_call_grace_seconds", "engine.", base.finished_call_grace_seconds
        ),
        callback_on_missed=on_missed,
        repeat_caller_seconds=_number(engine, "repeat_caller_seconds", "engine.", base.repeat_caller_seconds, minimum=60),
        max_future_seconds=_number(engine, "max_future_seconds", "engine.", base.max_future_seconds),
        defaults=defaults,
        tenants=MappingProxyType(tenants),
    )


def load_config(path: str | Path | None) -> Config:
    """Read a TOML file (``None`` gives the defaults). Raises ConfigError naming the field."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("--config", f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    return config_from_dict(raw)
