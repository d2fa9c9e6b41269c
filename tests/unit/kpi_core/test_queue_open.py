"""A queue's opening hours (``open_hours``, ``open_days``) and the ``ccmon_queue_open`` gauge.

The alert rules' paging gate (deploy/prometheus/rules/ccmon-recording.yml) lets a queue's SLA
alerts page only while ``ccmon_queue_open{tenant,queue}`` is 1; Prometheus has no time zones,
so ccmon computes the gauge on the tenant's wall clock at the snapshot instant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from kpi_core.config import Config, QueueConfig, config_from_dict
from kpi_core.errors import ConfigError
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState

BERLIN = ZoneInfo("Europe/Berlin")
WORKWEEK = ["mon", "tue", "wed", "thu", "fri"]


def ts(text: str) -> float:
    """``'2026-03-27 18:30'`` (UTC) -> Unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def gate_config(**queue: object) -> Config:
    """Tenant acme in Berlin; queue support with the given opening-hours fields, queue plain
    without any."""
    return config_from_dict(
        {
            "tenants": {
                "acme": {
                    "timezone": "Europe/Berlin",
                    "queues": {"support": dict(queue), "plain": {}},
                }
            }
        }
    )


def queue_open(config: Config, at: float) -> dict[tuple[str, str], float]:
    flat = flatten(snapshot(config, MemoryState(config.bucket_seconds, config.coarse_bucket_seconds), at))
    return {
        (dict(labels)["tenant"], dict(labels)["queue"]): value
        for (name, labels), value in flat.items()
        if name == "ccmon_queue_open"
    }


def test_opening_hours_are_parsed_and_inherited_from_defaults() -> None:
    config = config_from_dict(
        {
            "defaults": {"open_hours": ["08:00-12:00", "13:00-24:00"], "open_days": ["sat", "mon"]},
            "tenants": {"acme": {"queues": {"support": {}, "night": {"open_hours": ["00:00-06:00"]}}}},
        }
    )
    assert config.defaults.open_hours == ((480, 720), (780, 1440))
    assert config.defaults.open_days == frozenset({0, 5})
    assert config.queue("acme", "support").open_hours == ((480, 720), (780, 1440))
    assert config.queue("acme", "night").open_hours == ((0, 360),)
    assert config.queue("acme", "night").open_days == frozenset({0, 5})  # the default's days
    assert not Config().defaults.has_opening_hours
    assert QueueConfig(open_days=frozenset({6})).has_opening_hours


def test_a_range_over_midnight_is_refused_with_the_way_to_write_it() -> None:
    with pytest.raises(ConfigError) as info:
        gate_config(open_hours=["08:00-20:00", "22:00-06:00"])
    assert info.value.field == "tenants.acme.queues.support.open_hours[1]"
    assert "'22:00-24:00', '00:00-06:00'" in info.value.message
    assert info.value.message.endswith("got '22:00-06:00'")


def test_no_opening_hours_no_gauge() -> None:
    """Without open_hours/open_days the gauge is absent: the UTC paging hours apply."""
    assert queue_open(gate_config(), ts("2026-03-27 12:00")) == {}


def test_the_gauge_follows_local_time_across_the_spring_dst_change() -> None:
    """Europe/Berlin leaves CET (UTC+1) for CEST (UTC+2) on Sunday 2026-03-29: 08:00-20:00
    local is 07:00-19:00 UTC on the Friday before and 06:00-18:00 UTC on the Monday after."""
    config = gate_config(open_hours=["08:00-20:00"], open_days=WORKWEEK)
    expected = {
        "2026-03-27 06:59": 0.0,  # Friday 07:59 CET
        "2026-03-27 07:00": 1.0,  # 08:00 CET: the start is inside
        "2026-03-27 18:59": 1.0,  # 19:59 CET
        "2026-03-27 19:00": 0.0,  # 20:00 CET: the end is outside
        "2026-03-28 12:00": 0.0,  # Saturday
        "2026-03-29 12:00": 0.0,  # Sunday, the DST day
        "2026-03-30 05:59": 0.0,  # Monday 07:59 CEST
        "2026-03-30 06:00": 1.0,  # 08:00 CEST: an hour earlier in UTC than on Friday
        "2026-03-30 17:59": 1.0,  # 19:59 CEST
        "2026-03-30 18:00": 0.0,  # 20:00 CEST (still 1 on a UTC 07:00-19:00 gate)
    }
    for when, value in expected.items():
        assert queue_open(config, ts(when)) == {("acme", "support"): value}, when


def test_the_gauge_follows_local_time_across_the_autumn_dst_change() -> None:
    """Back to CET on Sunday 2026-10-25: 08:00 local is 06:00 UTC on Friday, 07:00 UTC on Monday."""
    config = gate_config(open_hours=["08:00-20:00"], open_days=WORKWEEK)
    assert queue_open(config, ts("2026-10-23 06:00")) == {("acme", "support"): 1.0}
    assert queue_open(config, ts("2026-10-26 06:00")) == {("acme", "support"): 0.0}
    assert queue_open(config, ts("2026-10-26 07:00")) == {("acme", "support"): 1.0}


def test_the_day_is_the_local_day() -> None:
    """Sunday 23:30 UTC is already Monday 00:30 in Berlin (winter); Friday 23:30 UTC is
    Saturday there."""
    config = gate_config(open_days=["mon"])  # open all day on Mondays
    assert queue_open(config, ts("2026-01-04 23:30")) == {("acme", "support"): 1.0}  # a Sunday in UTC
    assert queue_open(config, ts("2026-01-05 23:30")) == {("acme", "support"): 0.0}  # Tuesday 00:30 local


def test_split_hours_and_a_local_midnight_over_two_ranges() -> None:
    config = gate_config(open_hours=["00:00-02:00", "12:00-13:00", "22:00-24:00"])  # every day
    # Winter, UTC+1.
    assert queue_open(config, ts("2026-01-07 22:30")) == {("acme", "support"): 1.0}  # 23:30 local
    assert queue_open(config, ts("2026-01-07 23:30")) == {("acme", "support"): 1.0}  # 00:30 local
    assert queue_open(config, ts("2026-01-08 01:00")) == {("acme", "support"): 0.0}  # 02:00 local
    assert queue_open(config, ts("2026-01-08 11:30")) == {("acme", "support"): 1.0}  # 12:30 local
    assert queue_open(config, ts("2026-01-08 12:00")) == {("acme", "support"): 0.0}  # 13:00 local


def test_defaults_give_every_queue_the_gauge_but_not_the_tenant_total() -> None:
    """Hours in [defaults] reach every configured queue (and a tenant not in the file, in UTC);
    the tenant total queue="_all" gets none (no alert reads it)."""
    config = config_from_dict(
        {
            "defaults": {"open_hours": ["08:00-20:00"]},
            "tenants": {"acme": {"timezone": "America/New_York", "queues": {"support": {}, "sales": {}}}},
        }
    )
    # 13:00 UTC in January: 08:00 in New York.
    assert queue_open(config, ts("2026-01-07 13:00")) == {("acme", "sales"): 1.0, ("acme", "support"): 1.0}
    assert queue_open(config, ts("2026-01-07 12:59")) == {("acme", "sales"): 0.0, ("acme", "support"): 0.0}


def test_is_open_without_opening_hours_is_always_true() -> None:
    assert QueueConfig().is_open(ts("2026-03-29 01:30"), BERLIN)
