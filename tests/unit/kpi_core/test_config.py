"""The TOML configuration: a valid file, and bad ones that name the exact dotted field."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
from harness.paths import REPO

from kpi_core.config import (
    ENGINE_RANGES,
    LIMIT_RANGES,
    QUEUE_RANGES,
    TARGET_METRICS,
    TARGET_RANGES,
    Config,
    Limits,
    QueueConfig,
    Window,
    config_from_dict,
    parse_window,
)
from kpi_core.errors import CcmonError, ConfigError
from streams.files import load_config

VALID = """
[engine]
windows = ["1m", "5m", "2h", "today"]
bucket_seconds = 5
coarse_bucket_seconds = 300
max_call_age_seconds = 7200
finished_call_grace_seconds = 600
callback_on_missed = false
repeat_caller_seconds = 3600
max_future_seconds = 60

[defaults]
sl_threshold_seconds = 15
sl_formula = "offered"
short_abandon_seconds = 3

[defaults.targets]
service_level = 0.75
asa_seconds = 30

[tenants.acme]
timezone = "Asia/Kathmandu"

[tenants.acme.queues.support]
sl_threshold_seconds = 30

[tenants.acme.queues.support.targets]
service_level = 0.85
nps = -20

[tenants.acme.queues.sales]
sl_formula = "abandoned_after"

[tenants.globex]
timezone = "America/New_York"

[tenants.initech]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ccmon.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.windows == (Window("1m", 60), Window("5m", 300), Window("2h", 7200), Window("today", 0))
    assert config.bucket_seconds == 5
    assert config.coarse_bucket_seconds == 300
    assert config.max_call_age_seconds == 7200
    assert config.finished_call_grace_seconds == 600
    assert config.callback_on_missed is False
    assert config.repeat_caller_seconds == 3600
    assert config.max_future_seconds == 60
    assert config.longest_sliding_seconds == 7200
    # [defaults] apply to unknown queues and unknown tenants
    for tenant, queue in (("acme", "billing"), ("nobody", "support"), ("globex", "x")):
        qc = config.queue(tenant, queue)
        assert (qc.sl_threshold_seconds, qc.sl_formula, qc.short_abandon_seconds) == (15, "offered", 3)
        assert qc.targets["service_level"] == 0.75
        assert qc.targets["asa_seconds"] == 30
        assert qc.targets["abandon_rate"] == 0.05  # built-in default target kept
    support = config.queue("acme", "support")
    assert support.sl_threshold_seconds == 30
    assert support.sl_formula == "offered"  # inherited from [defaults]
    assert support.short_abandon_seconds == 3
    assert support.targets["service_level"] == 0.85
    assert support.targets["asa_seconds"] == 30  # merged with [defaults.targets]
    assert support.targets["nps"] == -20
    sales = config.queue("acme", "sales")
    assert sales.sl_formula == "abandoned_after"
    assert sales.sl_threshold_seconds == 15
    assert config.queue("globex", "support") == config.defaults
    # time zones
    assert str(config.timezone("acme")) == "Asia/Kathmandu"
    assert str(config.timezone("globex")) == "America/New_York"
    assert str(config.timezone("initech")) == "UTC"
    assert str(config.timezone("not-configured")) == "UTC"


def test_no_file_gives_defaults() -> None:
    config = load_config(None)
    assert config == Config()
    assert [w.name for w in config.windows] == ["5m", "15m", "1h", "today"]
    assert config.defaults == QueueConfig()
    assert config.defaults.sl_threshold_seconds == 20
    assert config.defaults.short_abandon_seconds == 5
    assert config.defaults.callback_target_seconds == 3600
    assert config.defaults.targets["service_level"] == 0.8
    assert config.max_call_age_seconds == 4 * 3600
    assert config.callback_on_missed is True


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_example_config_in_the_repository_is_valid() -> None:
    example = REPO / "deploy" / "config" / "ccmon.toml"
    if not example.exists():
        pytest.skip("no example config")
    config = load_config(example)
    assert config.queue("acme", "support").sl_threshold_seconds == 30
    assert config.queue("acme", "sales").sl_formula == "answered"


BAD = [
    # (toml text, dotted field)
    ('[tenants.acme]\ntimezone = "Mars/Olympus_Mons"\n', "tenants.acme.timezone"),
    ('[tenants.acme]\ntimezone = ""\n', "tenants.acme.timezone"),
    ("[tenants.acme]\ntimezone = 5\n", "tenants.acme.timezone"),
    ('[tenants.acme]\ntimezone = "../../etc/passwd"\n', "tenants.acme.timezone"),
    ('[defaults]\nsl_formula = "mean"\n', "defaults.sl_formula"),
    ("[defaults]\nsl_threshold_seconds = -3\n", "defaults.sl_threshold_seconds"),
    ('[defaults]\nsl_threshold_seconds = "20"\n', "defaults.sl_threshold_seconds"),
    ("[defaults]\nshort_abandon_seconds = true\n", "defaults.short_abandon_seconds"),
    ("[defaults]\nsl_threshold_seconds = nan\n", "defaults.sl_threshold_seconds"),
    ("[defaults]\nsl_threshold_seconds = inf\n", "defaults.sl_threshold_seconds"),
    ("[defaults.targets]\nservice_level = 1.5\n", "defaults.targets.service_level"),
    ("[defaults.targets]\nsurvival = 1\n", "defaults.targets.survival"),
    ('[engine]\nwindows = ["5m", "7x"]\n', "engine.windows[1]"),
    ('[engine]\nwindows = ["5m", "15m", "0m"]\n', "engine.windows[2]"),
    ('[engine]\nwindows = ["25h"]\n', "engine.windows[0]"),
    ('[engine]\nwindows = ["1h", 5]\n', "engine.windows[1]"),
    ('[engine]\nwindows = ["5m", "15s"]\n', "engine.windows[1]"),  # not a multiple of 10 s
    ("[engine]\nwindows = []\n", "engine.windows"),
    ('[engine]\nwindows = "5m"\n', "engine.windows"),
    ('[engine]\nwindows = ["5m", "5m"]\n', "engine.windows"),
    ("[engine]\nbucket_seconds = 7\n", "engine.bucket_seconds"),
    ("[engine]\nbucket_seconds = 20\n", "engine.bucket_seconds"),
    ("[engine]\nbucket_seconds = 2.5\n", "engine.bucket_seconds"),
    ("[engine]\nbucket_seconds = 0\n", "engine.bucket_seconds"),
    ("[engine]\ncoarse_bucket_seconds = 600\n", "engine.coarse_bucket_seconds"),
    ("[engine]\nmax_call_age_seconds = 10\n", "engine.max_call_age_seconds"),
    ("[engine]\nfinished_call_grace_seconds = -1\n", "engine.finished_call_grace_seconds"),
    ("[engine]\nrepeat_caller_seconds = -1\n", "engine.repeat_caller_seconds"),
    ('[engine]\ncallback_on_missed = "yes"\n', "engine.callback_on_missed"),
    ("[engine]\nmax_future_seconds = -1\n", "engine.max_future_seconds"),
    ("[engine]\nbogus = 1\n", "engine.bogus"),
    ("engine = 5\n", "engine"),
    ("bogus = 1\n", "bogus"),
    ("[metrics]\nport = 9108\n", "metrics"),
    ('tenants = "acme"\n', "tenants"),
    ('[tenants]\nacme = "x"\n', "tenants.acme"),
    ("[tenants.acme]\ncolour = 1\n", "tenants.acme.colour"),
    ("[tenants.acme.queues]\nsupport = 3\n", "tenants.acme.queues.support"),
    ("[tenants.acme.queues.support]\nsla = 0.8\n", "tenants.acme.queues.support.sla"),
    ('[tenants.acme.queues.support]\nsl_formula = "Default"\n', "tenants.acme.queues.support.sl_formula"),
    (
        "[tenants.acme.queues.support.targets]\nservice_level = 80\n",
        "tenants.acme.queues.support.targets.service_level",
    ),
    ("[tenants.acme.queues.support.targets]\nnps = 101\n", "tenants.acme.queues.support.targets.nps"),
    ("[tenants.acme.queues.support.targets]\nnps = -101\n", "tenants.acme.queues.support.targets.nps"),
    ("[tenants.acme.queues.support.targets]\nasa_seconds = -1\n", "tenants.acme.queues.support.targets.asa_seconds"),
    ("[tenants.acme.queues.support.targets]\nfcr = true\n", "tenants.acme.queues.support.targets.fcr"),
    ("[tenants.acme.queues.support.targets]\nwait = 1\n", "tenants.acme.queues.support.targets.wait"),
    ("[tenants.acme.queues.support]\ntargets = 1\n", "tenants.acme.queues.support.targets"),
    ("[tenants.acme.queues._all]\nsl_threshold_seconds = 10\n", "tenants.acme.queues._all"),
    # opening hours (the paging gate's ccmon_queue_open)
    ('[defaults]\nopen_hours = "08:00-20:00"\n', "defaults.open_hours"),
    ("[defaults]\nopen_hours = []\n", "defaults.open_hours"),
    ('[defaults]\nopen_hours = ["8:00-20:00"]\n', "defaults.open_hours[0]"),
    ('[defaults]\nopen_hours = ["08:00-12:00", "13:00-25:00"]\n', "defaults.open_hours[1]"),
    ('[defaults]\nopen_hours = ["08:00-24:30"]\n', "defaults.open_hours[0]"),
    ('[defaults]\nopen_hours = ["08:60-20:00"]\n', "defaults.open_hours[0]"),
    ('[defaults]\nopen_hours = ["22:00-06:00"]\n', "defaults.open_hours[0]"),
    ('[defaults]\nopen_hours = ["08:00-08:00"]\n', "defaults.open_hours[0]"),
    ("[defaults]\nopen_hours = [800]\n", "defaults.open_hours[0]"),
    ('[defaults]\nopen_hours = ["08:00-20:00\\n"]\n', "defaults.open_hours[0]"),
    ('[defaults]\nopen_days = "mon"\n', "defaults.open_days"),
    ("[defaults]\nopen_days = []\n", "defaults.open_days"),
    ('[defaults]\nopen_days = ["mon", "Tue"]\n', "defaults.open_days[1]"),
    ('[defaults]\nopen_days = ["monday"]\n', "defaults.open_days[0]"),
    ('[defaults]\nopen_days = ["mon", "mon"]\n', "defaults.open_days"),
    ('[tenants.acme.queues.support]\nopen_hours = ["08:00 - 20:00"]\n', "tenants.acme.queues.support.open_hours[0]"),
    ("[tenants.acme.queues.support]\nopen_days = [1, 2]\n", "tenants.acme.queues.support.open_days[0]"),
]


@pytest.mark.parametrize(("text", "field"), BAD, ids=[f for _t, f in BAD])
def test_bad_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, CcmonError) and isinstance(info.value, ValueError)


def test_error_echoes_the_bad_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[tenants.acme.queues.support]\nsl_threshold_seconds = -3\n"))
    assert "-3" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[tenants.acme]\ntimezone = "Mars/Olympus_Mons"\n'))
    assert "Mars/Olympus_Mons" in info.value.message


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.field == "--config"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[engine\nwindows = 1"))
    assert info.value.field == "--config"


def test_first_error_in_file_order_wins_for_tenants() -> None:
    raw = {"tenants": {"a": {"timezone": "UTC"}, "b": {"timezone": "Nowhere/Land"}}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert info.value.field == "tenants.b.timezone"


@pytest.mark.parametrize(("name", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("24h", 86400), ("today", 0)])
def test_parse_window(name: str, seconds: int) -> None:
    window = parse_window(name)
    assert window.seconds == seconds
    assert window.is_today == (name == "today")


@pytest.mark.parametrize("name", ["", "5", "m5", "05m", "1d", "1.5h", "-5m", "Today", " 5m", None, 5])
def test_parse_window_rejects(name: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_window(name, "engine.windows[3]")
    assert info.value.field == "engine.windows[3]"


def test_horizon_covers_a_long_day_and_the_repeat_look_back() -> None:
    assert Config().horizon_seconds == 25 * 3600  # a 25 h DST day outlasts the 24 h look-back
    no_today = config_from_dict({"engine": {"windows": ["1h"], "repeat_caller_seconds": 60}})
    assert no_today.horizon_seconds == 3600
    assert not no_today.has_today
    today = config_from_dict({"engine": {"windows": ["today"], "repeat_caller_seconds": 60}})
    assert today.horizon_seconds == 25 * 3600


# --------------------------------------------------------------------------------------
# every number has a range (the issue: repeat_caller_seconds = 1e300 passed validation)
# --------------------------------------------------------------------------------------
EXAMPLE = REPO / "deploy" / "config" / "ccmon.toml"


def numeric_fields(table: dict[str, Any], where: str = "") -> Iterator[tuple[str, float]]:
    """(dotted path, value) of every number (not a bool) in a decoded TOML document."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from numeric_fields(value, f"{where}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield f"{where}{key}", value


def range_of(path: str) -> tuple[float, float]:
    """The documented range of a dotted field, from the tables in kpi_core/config.py."""
    *parents, key = path.split(".")
    if parents == ["engine"]:
        return ENGINE_RANGES[key]
    if parents == ["limits"]:
        return LIMIT_RANGES[key]
    if parents[-1] == "targets":
        return TARGET_RANGES[key]
    return QUEUE_RANGES[key]


def with_value(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy = deepcopy(document)
    *parents, key = path.split(".")
    table = copy
    for name in parents:
        table = table[name]
    table[key] = value
    return copy


def example_fields() -> list[tuple[str, float]]:
    """Every number of the example config, plus every target (the example lists some of them
    only in a comment): no field of the file can be forgotten by the tests below."""
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    fields = dict(numeric_fields(document))
    for name in TARGET_METRICS:
        fields.setdefault(f"defaults.targets.{name}", TARGET_RANGES[name][0])
    return sorted(fields.items())


EXAMPLE_FIELDS = example_fields()


def test_the_example_shows_every_engine_and_limit_number() -> None:
    """So that the table-driven tests below cover a field added to [engine] or [limits]."""
    paths = {path for path, _value in EXAMPLE_FIELDS}
    assert {f"engine.{key}" for key in ENGINE_RANGES} <= paths
    assert {f"limits.{key}" for key in LIMIT_RANGES} == {f"limits.{key}" for key in Limits.__dataclass_fields__}
    assert {f"limits.{key}" for key in LIMIT_RANGES} <= paths
    assert {f"defaults.{key}" for key in QUEUE_RANGES} <= paths
    assert set(TARGET_RANGES) == set(TARGET_METRICS)
    assert len(EXAMPLE_FIELDS) >= 25


def out_of_range(path: str) -> list[Any]:
    low, high = range_of(path)
    return [1e300, -1e300, float("nan"), float("inf"), float("-inf"), high + 1, low - 1, 10**400]


@pytest.mark.parametrize(("path", "good"), EXAMPLE_FIELDS, ids=[p for p, _v in EXAMPLE_FIELDS])
def test_every_number_is_bounded(path: str, good: float) -> None:
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    config_from_dict(with_value(document, path, good))  # the example's own value is fine
    low, high = range_of(path)
    assert math.isfinite(low) and math.isfinite(high) and low < high
    for bad in out_of_range(path):
        with pytest.raises(ConfigError) as info:
            config_from_dict(with_value(document, path, bad))
        assert info.value.field == path, bad
        assert f"[{low:g}, {high:g}]" in info.value.message or f"[{int(low)}, {int(high)}]" in info.value.message
        assert info.value.message.endswith(f"got {bad!r}"), info.value.message


@pytest.mark.parametrize(("path", "good"), EXAMPLE_FIELDS, ids=[p for p, _v in EXAMPLE_FIELDS])
def test_the_range_bounds_themselves_are_accepted_where_the_other_rules_allow(path: str, good: float) -> None:
    """Each bound is a value the field accepts (the bucket sizes also have divisibility rules:
    their bounds 1/10 and 60/900 satisfy them only against a matching partner)."""
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    document["engine"]["windows"] = ["15m", "today"]  # multiples of every allowed bucket size
    low, high = range_of(path)
    for bound in (low, high):
        value = int(bound) if path.startswith("limits.") or path.endswith("bucket_seconds") else bound
        config_from_dict(with_value(document, path, value))


def test_the_issue_example_names_the_field_the_range_and_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"engine": {"repeat_caller_seconds": 1e300}})
    assert str(info.value) == (
        "config field 'engine.repeat_caller_seconds': must be a number in [60, 2678400], got 1e+300"
    )
    with pytest.raises(ConfigError) as info:
        config_from_dict({"tenants": {"acme": {"queues": {"support": {"targets": {"ces": 9}}}}}})
    assert (
        str(info.value) == "config field 'tenants.acme.queues.support.targets.ces': must be a number in [1, 7], got 9"
    )
    with pytest.raises(ConfigError) as info:
        config_from_dict({"limits": {"agents_per_tenant": 5_000_000}})
    assert (
        str(info.value)
        == "config field 'limits.agents_per_tenant': must be a whole number in [1, 1000000], got 5000000"
    )


def test_a_fractional_coarse_bucket_is_rejected() -> None:
    """300.5 was truncated to 300 and accepted."""
    with pytest.raises(ConfigError) as info:
        config_from_dict({"engine": {"coarse_bucket_seconds": 300.5}})
    assert info.value.field == "engine.coarse_bucket_seconds"


# --------------------------------------------------------------------------------------
# sections, and files that are not TOML
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("section", ["streams", "exporter", "sources", "Engine", "tenant"])
def test_unknown_sections_are_rejected_naming_the_known_ones(tmp_path: Path, section: str) -> None:
    """[streams], [exporter] and [sources] were accepted and read by nothing."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"[{section}]\nport = 9108\n"))
    assert info.value.field == section
    assert info.value.message == "unknown section (expected one of: defaults, engine, limits, tenants)"


def test_a_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "ccmon.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "--config"
    assert str(path) in info.value.message and "not a TOML file" in info.value.message


def test_a_directory_and_an_unreadable_path_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.field == "--config"
    assert info.value.message == f"{tmp_path} is a directory, not a TOML file"
    a_file = write(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load_config(a_file / "ccmon.toml")  # a path through a file: NotADirectoryError
    assert info.value.field == "--config"
    assert info.value.message.startswith(f"cannot read {a_file / 'ccmon.toml'}: ")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\xfd", "is not a TOML file (not UTF-8 text at byte 10)"),
        (b"[engine]\nrepeat_caller_seconds = 1e300\n", "'engine.repeat_caller_seconds': must be a number in"),
        (b"[exporter]\nport = 9108\n", "'exporter': unknown section"),
        (None, "is a directory, not a TOML file"),
    ],
    ids=["binary", "1e300", "unknown-section", "directory"],
)
def test_the_cli_reports_a_bad_config_in_one_line(tmp_path: Path, content: bytes | None, expected: str) -> None:
    """Exit 2 and one line on stderr naming the file or field, no traceback."""
    events = tmp_path / "events.jsonl"
    events.write_text("")
    path = tmp_path / "config-dir"
    if content is None:
        path.mkdir()
    else:
        path = tmp_path / "ccmon.toml"
        path.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", "--config", str(path), str(events)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ccmon replay: config field ")
    assert expected in lines[0]
    if content is None or content.startswith(b"\x7f"):
        assert str(path) in lines[0]
