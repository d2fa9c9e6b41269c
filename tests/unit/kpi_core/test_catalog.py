"""The KPI catalog (kpi_core/catalog.py): its components against what the engine really
stores, its checks at import, the families a snapshot exports against it, and
docs/METRICS.md generated from it."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from harness.reference import COVERED, WINDOWED_COVERED

from kpi_core import catalog, engine
from kpi_core.catalog import COMPONENTS, INDEXED, UPKEEP, CatalogError, Component, Kpi, fold, mean
from kpi_core.columns import Columns
from kpi_core.config import config_from_dict
from kpi_core.events import parse_event
from kpi_core.kpis import snapshot
from kpi_core.state import MemoryState, present
from streams.cli import docs as metrics_doc
from streams.sim import SimParams, Simulator, default_queues, parse_start

#: engine.BREAKDOWN_FIELDS as the read side names them (``asa_sum_ms`` is read as ``asa_sum``).
BROKEN_DOWN = {name for field in engine.BREAKDOWN_FIELDS for name in present({field: 1})}
START = parse_start("2026-11-20T07:00:00Z")
HOURS = 1.0
AT = START + HOURS * 3600
TENANT = "acme"


def _extra_events() -> list[dict[str, Any]]:
    """What a simulated hour may not hold: an unanswered transfer, priorities, a callback
    requested and attempted, one closed by the customer's answered call, a timeout, a voicemail,
    a missed ring, a reopened ticket, and a call left waiting past max_call_age (expired by the
    upkeep)."""
    events: list[dict[str, Any]] = [
        {
            "type": "call.offered",
            "ts": AT - 600,
            "queue": "sales",
            "call_id": "x1",
            "priority": 3,
            "channel": "chat",
            "customer_id": "xc1",
        },
        {"type": "call.ring_no_answer", "ts": AT - 595, "queue": "sales", "call_id": "x1", "agent_id": "xa"},
        {"type": "call.transferred", "ts": AT - 590, "queue": "sales", "call_id": "x1"},
        {
            "type": "call.offered",
            "ts": AT - 580,
            "queue": "sales",
            "call_id": "x2",
            "priority": 7,
            "customer_id": "xc2",
        },
        {"type": "call.abandoned", "ts": AT - 550, "queue": "sales", "call_id": "x2"},
        {"type": "call.offered", "ts": AT - 540, "queue": "sales", "call_id": "x3"},
        {"type": "call.timeout", "ts": AT - 500, "queue": "sales", "call_id": "x3"},
        {"type": "call.offered", "ts": AT - 530, "queue": "sales", "call_id": "x4"},
        {"type": "call.voicemail", "ts": AT - 490, "queue": "sales", "call_id": "x4"},
        {"type": "callback.requested", "ts": AT - 480, "queue": "sales", "callback_id": "xb1", "customer_id": "xc3"},
        {"type": "callback.attempted", "ts": AT - 300, "callback_id": "xb1", "agent_id": "xa"},
        {"type": "callback.requested", "ts": AT - 470, "queue": "sales", "callback_id": "xb2", "customer_id": "xc4"},
        {"type": "call.offered", "ts": AT - 400, "queue": "sales", "call_id": "x5", "customer_id": "xc4"},
        {"type": "call.answered", "ts": AT - 390, "queue": "sales", "call_id": "x5", "agent_id": "xa"},
        {"type": "call.offered", "ts": AT - 5 * 3600, "queue": "sales", "call_id": "xold"},
        {
            "type": "ticket.created",
            "ts": AT - 900,
            "queue": "sales",
            "ticket_id": "xt1",
            "channel": "email",
            "priority": 2,
        },
        {"type": "ticket.replied", "ts": AT - 800, "ticket_id": "xt1", "author": "agent"},
        {"type": "ticket.resolved", "ts": AT - 700, "ticket_id": "xt1"},
        {"type": "ticket.reopened", "ts": AT - 600, "ticket_id": "xt1"},
    ]
    return [{"event_id": f"x{i}", "tenant": TENANT, **event} for i, event in enumerate(events)]


class _Day:
    def __init__(self) -> None:
        self.fields: dict[str, set[str]] = defaultdict(set)  # stored field -> event types that changed it
        self.config = config_from_dict(
            {"engine": {"pulse_min_responses": 3}, "tenants": {TENANT: {"queues": {"sales": {}}}}}
        )
        self.store = MemoryState(self.config.bucket_seconds, self.config.coarse_bucket_seconds)
        self.engine = engine.Engine(self.config, self.store, carry_open=True)
        self.seen: dict[tuple[str, str], dict[str, float]] = {}

    def note(self, producer: str) -> None:
        """Attribute every stored total that changed since the last call to ``producer``."""
        for tenant, scopes in self.store.scopes().items():
            for scope in scopes:
                totals = self.store.totals(tenant, scope)
                # Maxima are windowed only (the totals keep none): read them from the buckets.
                window = self.store.read_window(tenant, scope, AT - 6 * 3600, AT + 3600)
                totals.update((name, value) for name, value in window.items() if name.startswith("max_"))
                before = self.seen.get((tenant, scope), {})
                for name, value in totals.items():
                    if before.get(name) != value:
                        self.fields[name].add(producer)
                self.seen[(tenant, scope)] = totals


@pytest.fixture(scope="module")
def day() -> _Day:
    """A simulated hour with every event type (and the employee pulse), then the extra events,
    fed one by one through the engine; the upkeep at the end."""
    params = SimParams(start=START, hours=HOURS, queues=default_queues(3, None), seed=3, tenant=TENANT, pulse_share=0.6)
    result = _Day()
    records = [r if isinstance(r, dict) else json.loads(r) for _t, r in Simulator(params).stream()]
    for record in [*records, *_extra_events()]:
        event = parse_event(record)
        if event.ts < AT:
            result.engine.process(event, now=AT)
            result.note(event.type)
    result.engine.maintain(AT)
    result.note(UPKEEP)
    return result


def test_every_field_the_store_holds_is_a_declared_component(day: _Day) -> None:
    assert len(day.fields) > 60
    undeclared = sorted(name for name in day.fields if catalog.component_of(name) is None)
    assert not undeclared, f"fields the engine stores that kpi_core.catalog.COMPONENTS does not declare: {undeclared}"
    assert not [name for name in day.fields if (c := catalog.component_of(name)) is not None and c.derived]
    # Histogram fields index engine.WAIT_BUCKETS; breakdown fields carry the engine's marks.
    for name in day.fields:
        base, at_sign, mark = name.partition("@")
        if at_sign:
            assert ("@" + mark[:2]) in (engine.CHANNEL_MARK, engine.PRIORITY_MARK), name
            assert COMPONENTS[base].broken_down, name
        elif base[:2] in ("wa", "wb") and base[2:].isdigit():
            assert int(base[2:]) < len(engine.WAIT_BUCKETS), name


def test_every_declared_component_is_written_by_one_of_its_event_types(day: _Day) -> None:
    produced: dict[str, set[str]] = defaultdict(set)
    for name, producers in day.fields.items():
        component = catalog.component_of(name)
        if component is not None:
            produced[component.name] |= producers
    assert {e.type for e in map(parse_event, _extra_events())} <= {p for ps in produced.values() for p in ps}
    for component in COMPONENTS.values():
        if component.derived:
            assert component.name not in produced, f"{component.name} is derived but stored"
            assert component.inputs, component.name
            continue
        assert produced[component.name], f"no event of the simulated day wrote {component.name!r}"
        assert produced[component.name] <= set(component.events), (
            f"{component.name!r} was written by {sorted(produced[component.name])}, "
            f"not only by its declared events {component.events} (kpi_core.catalog.COMPONENTS)"
        )
    # Each breakdown component is one the engine breaks down, and every field it breaks down is declared so.
    assert {c.name for c in COMPONENTS.values() if c.broken_down} == BROKEN_DOWN


def test_breakdown_families_read_only_broken_down_components() -> None:
    for kpi in catalog.CATALOG:
        if kpi.by is None:
            continue
        stored = set()
        for name in kpi.components:
            component = COMPONENTS[name]
            stored |= set(component.inputs) if component.derived else {name}
        assert stored <= BROKEN_DOWN, (kpi.name, stored - BROKEN_DOWN)


def test_snapshot_exports_the_catalog_families_with_their_help_and_kind(day: _Day) -> None:
    families = snapshot(day.config, day.store, AT)
    by_name = {kpi.name: kpi for kpi in catalog.CATALOG}
    by_name.update({kpi.target_name: catalog.target_gauge(kpi) for kpi in catalog.CATALOG if kpi.target})
    pipeline = {
        "ccmon_events_total",
        "ccmon_events_rejected_total",
        "ccmon_events_duplicate_total",
        "ccmon_series_retired_total",
        "ccmon_last_event_timestamp_seconds",
        "ccmon_event_lag_seconds",
    }
    exported = set()
    for fam in families:
        if fam.name in pipeline:
            continue
        kpi = by_name[fam.name]
        assert (fam.kind, fam.help) == (kpi.kind, kpi.help), fam.name
        exported.add(fam.name)
        for _suffix, labels, _value in fam.samples:
            names = tuple(name for name, _v in labels)
            assert names == kpi.labels or (kpi.kind == "histogram" and names == kpi.labels[:-1]), (fam.name, labels)
    # The default config exports every catalog family but the opt-in ones and the channel targets.
    optional = {"ccmon_queue_open", "ccmon_agent_state"}
    assert {k.name for k in catalog.CATALOG} - optional <= exported


class _Reads(dict[str, float]):
    """Components that remember the names read from them (into ``names``)."""

    def __init__(self, values: dict[str, float], names: set[str]) -> None:
        super().__init__(values)
        self.names = names

    def get(self, key: str, default: Any = None) -> Any:
        self.names.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> float:
        self.names.add(key)
        return super().__getitem__(key)


def test_the_snapshot_reads_only_declared_components(day: _Day, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also the families folded by name in kpi_core.kpis (fcr, occupancy, staffing, the
    histogram, the derived service level): no field name there can be misspelt either."""
    names: set[str] = set()
    store = day.store

    class Spied:  # the store, its two bucket reads recorded (the compiled MemoryState's methods are read-only)
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def read_window(self, *args: Any) -> _Reads:
            return _Reads(store.read_window(*args), names)

        def totals(self, *args: Any) -> _Reads:
            return _Reads(store.totals(*args), names)

    column = Columns.column  # the array path reads a tenant's components by column

    def recorded(self: Columns, name: str) -> Any:
        names.add(name)
        return column(self, name)

    monkeypatch.setattr(Columns, "column", recorded)
    snapshot(day.config, Spied(), AT)  # type: ignore[arg-type]
    assert sorted(name for name in names if catalog.component_of(name) is None) == []
    assert {"fcr_ok", "kb_views", "occ_busy_t", "handle_sum", "wa3", "ab_wait_sum", "csat_n"} <= names


def test_the_reference_covers_catalog_kpis() -> None:
    """The brute-force reference (tests/harness/reference.py) recomputes catalog KPIs only."""
    names = {kpi.name: kpi for kpi in catalog.CATALOG}
    assert set(COVERED) <= set(names)
    assert all(names[name].span == catalog.WINDOW for name in WINDOWED_COVERED)


def test_a_misspelt_component_fails_at_import_naming_the_kpi_and_the_field() -> None:
    bad = Kpi("ccmon_calls_offerd", "x.", catalog.COUNT, value=catalog.count("offerd"))
    with pytest.raises(CatalogError, match=r"'ccmon_calls_offerd', components: 'offerd' is not a field"):
        catalog.validate([bad])
    special = Kpi("ccmon_special_ratio", "x.", catalog.RATIO, reads=("wa" + INDEXED, "occ_bussy"))
    with pytest.raises(CatalogError, match="'occ_bussy' is not a field"):
        catalog.validate([special])
    # A custom value reading a field it does not declare, or declaring one it never reads.
    sneaky = Kpi(
        "ccmon_sneaky_ratio",
        "x.",
        catalog.RATIO,
        value=fold(lambda c: c.get("answered", 0.0) / max(1.0, c.get("ofered", 0.0)), "answered"),
    )
    with pytest.raises(CatalogError, match=r"'ccmon_sneaky_ratio', value: reads \['answered', 'ofered'\]"):
        catalog.validate([sneaky])
    lazy = Kpi("ccmon_lazy_ratio", "x.", catalog.RATIO, value=fold(lambda c: c.get("answered"), "answered", "offered"))
    with pytest.raises(CatalogError, match="declares"):
        catalog.validate([lazy])
    with pytest.raises(CatalogError, match="'nope' is not a stored component"):
        catalog.validate([], {**COMPONENTS, "x": Component("x", "x.", derived=True, inputs=("nope",))})


@pytest.mark.parametrize(
    ("kpi", "match"),
    [
        (Kpi("ccmon_a_ratio", "x.", catalog.SECONDS, value=mean("asa_sum", "asa_n")), "suffix says ratio"),
        (Kpi("ccmon_a_seconds", "x.", catalog.COUNT, value=mean("asa_sum", "asa_n")), "suffix says seconds"),
        (Kpi("ccmon_a", "x.", catalog.COUNT, kind="summary"), "kind: must be one of"),
        (Kpi("ccmon_a", "x.", catalog.COUNT, span=catalog.LIVE, breakdowns=(catalog.CHANNEL,)), "breakdowns"),
        (Kpi("ccmon_a", "x.", catalog.COUNT, value=catalog.count("offered"), breakdowns=("region",)), "'region'"),
        (Kpi("calls", "x.", catalog.COUNT), "must be ccmon_"),
    ],
)
def test_inconsistent_entries_are_refused(kpi: Kpi, match: str) -> None:
    with pytest.raises(CatalogError, match=match):
        catalog.validate([kpi])


def test_duplicate_names_and_targets_are_refused() -> None:
    first = catalog.get("service_level_ratio")
    with pytest.raises(CatalogError, match="declared twice"):
        catalog.validate([first, first])
    other = Kpi("ccmon_other_ratio", "x.", catalog.RATIO, value=mean("sl_num", "sl_den"), target=first.target)
    with pytest.raises(CatalogError, match="target key 'service_level' is declared twice"):
        catalog.validate([first, other])


def test_get_names_a_missing_kpi() -> None:
    assert catalog.get("calls_offered").name == "ccmon_calls_offered"
    with pytest.raises(KeyError, match="ccmon_calls_offerd"):
        catalog.get("calls_offerd")


def test_config_target_tables_come_from_the_catalog() -> None:
    from kpi_core import config

    assert config.TARGET_METRICS["service_level"] == "service_level_ratio"
    assert config.CHANNEL_TARGET_METRICS["first_response_seconds"] == "ticket_first_response_by_channel_seconds"
    assert config.TARGET_RANGES["nps"] == (-100, 100)
    assert set(config.DEFAULT_TARGETS) <= set(config.TARGET_METRICS)


def test_metrics_doc_is_generated_from_the_catalog() -> None:
    text = metrics_doc.DOC.read_text(encoding="utf-8")
    assert metrics_doc.regenerated(text) == text, f"docs/METRICS.md is stale: run {metrics_doc.FIX}"
    for kpi in catalog.CATALOG:
        assert f"| `{kpi.name}` |" in text, kpi.name


def test_metrics_doc_check_names_the_fix(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stale = metrics_doc.DOC.read_text(encoding="utf-8").replace("| `ccmon_calls_offered` |", "| `ccmon_old` |")
    path = tmp_path / "METRICS.md"
    path.write_text(stale, encoding="utf-8")
    assert metrics_doc.main(["--check", "--path", str(path)]) == 1
    assert "make docs" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == stale
    assert metrics_doc.main(["--path", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == metrics_doc.DOC.read_text(encoding="utf-8")
    path.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="marker"):
        metrics_doc.main(["--check", "--path", str(path)])
