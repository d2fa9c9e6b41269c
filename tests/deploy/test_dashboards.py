"""Static checks of the Grafana dashboards in deploy/grafana/dashboards/.

Checked against Grafana's dashboard JSON model (schemaVersion 39, Grafana 11): top-level keys,
known panel types, grid positions, unique ids and uids, datasources that point at the
provisioned Prometheus, template variables that exist, transformations that reference real
queries, and metric names that ccmon (kpi_core/kpis.py) really exports. Each checker returns
the problems it finds and is also fed a broken dashboard to show that it can fail.

:func:`harness.dashboards.dashboard_queries` extracts EVERY PromQL expression (panel targets
and templating queries); ``tests/integration/test_prometheus_live.py`` runs them all against a
real Prometheus, and :func:`test_every_query_is_documented` keeps docs/DASHBOARDS.md complete.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from harness.dashboards import (
    BUILTIN_VARIABLES,
    Query,
    dashboard_queries,
    iter_panels,
    load_dashboards,
    metric_names_in,
    normalize,
    promql_of_variable,
    provisioned_datasource_uids,
    unknown_metrics,
    variable_query,
    variables_in,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "DASHBOARDS.md"
SCHEMA_VERSION = 39
EXPECTED_UIDS = {"ccmon-wallboard", "ccmon-supervisor", "ccmon-pipeline"}
PANEL_TYPES = {"stat", "timeseries", "gauge", "table", "row", "text", "bargauge"}
REQUIRED_KEYS = {"title", "uid", "schemaVersion", "panels", "templating", "time", "refresh"}
GRID_COLUMNS = 24

# --------------------------------------------------------------------------- checkers


def structure_problems(name: str, dashboard: Mapping[str, Any]) -> list[str]:
    problems = [f"{name}: missing key {key!r}" for key in sorted(REQUIRED_KEYS - set(dashboard))]
    if dashboard.get("schemaVersion") != SCHEMA_VERSION:
        problems.append(f"{name}: schemaVersion {dashboard.get('schemaVersion')!r}, want {SCHEMA_VERSION}")
    uid = dashboard.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
        problems.append(f"{name}: uid {uid!r} must be 1-40 letters, digits, '-' or '_'")
    templating = dashboard.get("templating")
    if not isinstance(templating, Mapping) or not isinstance(templating.get("list"), list):
        problems.append(f"{name}: templating must be {{'list': [...]}}")
    if not isinstance(dashboard.get("panels"), list) or not dashboard.get("panels"):
        problems.append(f"{name}: no panels")
    return problems


def panel_problems(name: str, dashboard: Mapping[str, Any], datasource_uids: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    ids: set[Any] = set()
    for panel in iter_panels(dashboard.get("panels", [])):
        where = f"{name}: panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("type") not in PANEL_TYPES:
            problems.append(f"{where}: unknown type {panel.get('type')!r}")
        if panel.get("id") in ids or not isinstance(panel.get("id"), int):
            problems.append(f"{where}: id missing or not unique")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            problems.append(f"{where}: gridPos needs integer h, w, x, y, got {grid!r}")
        elif grid["w"] < 1 or grid["h"] < 1 or grid["x"] < 0 or grid["y"] < 0 or grid["x"] + grid["w"] > GRID_COLUMNS:
            problems.append(f"{where}: gridPos {grid!r} outside the {GRID_COLUMNS}-column grid")
        targets = panel.get("targets") or []
        if panel.get("type") in {"row", "text"}:
            if targets:
                problems.append(f"{where}: a {panel['type']} panel has no queries")
            continue
        if not targets:
            problems.append(f"{where}: no queries")
        ds = panel.get("datasource") or {}
        problem = datasource_problem(dashboard, ds, datasource_uids)
        if problem:
            problems.append(f"{where}: {problem}")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            problems.append(f"{where}: refIds missing or repeated: {refs}")
        for target in targets:
            problem = datasource_problem(dashboard, target.get("datasource") or ds, datasource_uids)
            if problem:
                problems.append(f"{where}: target {target.get('refId')} {problem}")
            if not str(target.get("expr", "")).strip():
                problems.append(f"{where}: target {target.get('refId')} has no expr")
        for transformation in panel.get("transformations") or []:
            ref = (transformation.get("options") or {}).get("configRefId")
            if transformation.get("id") == "configFromData" and ref not in refs:
                problems.append(f"{where}: configFromData reads {ref!r}, which no query has")
    return problems


#: How every panel and query variable names its data source: the dashboard's ``datasource``
#: variable, so the dashboards import into any Grafana (``__inputs``) and follow its choice.
DATASOURCE_VARIABLE = "${datasource}"


def datasource_problem(
    dashboard: Mapping[str, Any], ds: Mapping[str, Any], datasource_uids: Mapping[str, str]
) -> str | None:
    """What is wrong with a panel's, query's or variable's data source reference, if anything:
    it must be ``${datasource}``, a variable of the dashboard listing data sources of the
    reference's type, of which one is provisioned."""
    uid, kind = str(ds.get("uid")), ds.get("type")
    if uid in (DATASOURCE_VARIABLE, "$datasource"):
        variable = next(
            (v for v in dashboard.get("templating", {}).get("list", []) if v.get("name") == "datasource"),
            None,
        )
        if variable is None or variable.get("type") != "datasource":
            return f"datasource {ds!r} names a datasource variable the dashboard does not define"
        if variable.get("query") != kind:
            return f"datasource {ds!r}: the datasource variable lists {variable.get('query')!r} data sources"
        if kind not in datasource_uids.values():
            return f"datasource {ds!r}: no provisioned datasource of type {kind!r}"
        return None
    if datasource_uids.get(uid) != kind:
        return f"datasource {ds!r} is not a provisioned datasource"
    return f"datasource {ds!r} hard-codes a uid: use {DATASOURCE_VARIABLE}"


def overlap_problems(name: str, dashboard: Mapping[str, Any]) -> list[str]:
    cells: dict[tuple[int, int], Any] = {}
    problems = []
    for panel in dashboard.get("panels", []):
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            continue
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel.get("id"))
                if other != panel.get("id"):
                    problems.append(f"{name}: panels {other} and {panel.get('id')} overlap at x={x}, y={y}")
                    break
            else:
                continue
            break
    return problems


def variable_problems(name: str, dashboard: Mapping[str, Any], datasource_uids: Mapping[str, str]) -> list[str]:
    problems = []
    variables = dashboard.get("templating", {}).get("list", [])
    defined = {v.get("name") for v in variables}
    for variable in variables:
        where = f"{name}: variable {variable.get('name')!r}"
        if variable.get("type") == "query":
            problem = datasource_problem(dashboard, variable.get("datasource") or {}, datasource_uids)
            if problem:
                problems.append(f"{where}: {problem}")
            if promql_of_variable(variable_query(variable)) is None:
                problems.append(f"{where}: query {variable_query(variable)!r} is not label_values(<PromQL>, label)")
        elif variable.get("type") == "custom" and not (variable.get("query") and variable.get("options")):
            problems.append(f"{where}: a custom variable needs a query and options")
        for used in sorted(variables_in(variable_query(variable)) - defined - BUILTIN_VARIABLES):
            problems.append(f"{where}: uses undefined variable ${used}")
    multi = {v.get("name") for v in variables if v.get("multi") or v.get("includeAll")}
    for panel in iter_panels(dashboard.get("panels", [])):
        texts = [panel.get("title", ""), panel.get("description", "")]
        for target in panel.get("targets") or []:
            texts += [target.get("expr", ""), target.get("legendFormat", "")]
        for used in sorted(set().union(*(variables_in(t) for t in texts)) - defined - BUILTIN_VARIABLES):
            problems.append(f"{name}: panel {panel.get('id')} {panel.get('title')!r} uses undefined variable ${used}")
        repeat = panel.get("repeat")
        if repeat is not None and repeat not in multi:
            problems.append(f"{name}: panel {panel.get('id')} repeats over {repeat!r}, not a multi-value variable")
    return problems


def syntax_problems(queries: list[Query]) -> list[str]:
    """Cheap bracket and quote balance; the live test runs every query through Prometheus."""
    problems = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for query in queries:
        stack: list[str] = []
        text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query.expr)
        if text.count('"') % 2:
            problems.append(f"{query.dashboard} / {query.panel}: unbalanced quotes in {query.expr!r}")
            continue
        for char in text:
            if char in "([{":
                stack.append(char)
            elif char in pairs and (not stack or stack.pop() != pairs[char]):
                stack.append("!")
                break
        if stack:
            problems.append(f"{query.dashboard} / {query.panel}: unbalanced brackets in {query.expr!r}")
    return problems


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


@pytest.fixture(scope="module")
def datasource_uids() -> dict[str, str]:
    return provisioned_datasource_uids()


def _broken(dashboards: dict[str, dict[str, Any]], uid: str) -> dict[str, Any]:
    (dashboard,) = [d for d in dashboards.values() if d["uid"] == uid]
    return copy.deepcopy(dashboard)


# --------------------------------------------------------------------------- tests


def test_the_three_dashboards_exist(dashboards: dict[str, dict[str, Any]]) -> None:
    uids = [d.get("uid") for d in dashboards.values()]
    assert len(uids) == len(set(uids)), f"uids repeat: {uids}"
    assert set(uids) >= EXPECTED_UIDS
    titles = [d.get("title") for d in dashboards.values()]
    assert len(titles) == len(set(titles)), f"titles repeat: {titles}"


def test_top_level_structure(dashboards: dict[str, dict[str, Any]]) -> None:
    assert [p for name, d in dashboards.items() for p in structure_problems(name, d)] == []


def test_structure_problems_are_detected(dashboards: dict[str, dict[str, Any]]) -> None:
    broken = _broken(dashboards, "ccmon-wallboard")
    broken["schemaVersion"] = 27
    broken["uid"] = "has spaces"
    del broken["templating"]
    assert structure_problems("x", broken) == [
        "x: missing key 'templating'",
        "x: schemaVersion 27, want 39",
        "x: uid 'has spaces' must be 1-40 letters, digits, '-' or '_'",
        "x: templating must be {'list': [...]}",
    ]


def test_panels(dashboards: dict[str, dict[str, Any]], datasource_uids: dict[str, str]) -> None:
    problems = [p for name, d in dashboards.items() for p in panel_problems(name, d, datasource_uids)]
    problems += [p for name, d in dashboards.items() for p in overlap_problems(name, d)]
    assert problems == []


def test_panel_problems_are_detected(dashboards: dict[str, dict[str, Any]], datasource_uids: dict[str, str]) -> None:
    broken = _broken(dashboards, "ccmon-supervisor")
    first, second = [p for p in broken["panels"] if p["type"] == "timeseries"][:2]
    first["type"] = "graph"  # the old, removed panel type
    second["id"] = first["id"]
    second["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    second["gridPos"]["x"] = 20
    problems = panel_problems("x", broken, datasource_uids)
    assert any("unknown type 'graph'" in p for p in problems)
    assert any("id missing or not unique" in p for p in problems)
    assert any("is not a provisioned datasource" in p for p in problems)
    assert any("outside the 24-column grid" in p for p in problems)
    wall = _broken(dashboards, "ccmon-wallboard")
    tile = next(p for p in wall["panels"] if p.get("transformations"))
    tile["targets"][1]["refId"] = "B"
    assert any("configFromData reads 'TARGET'" in p for p in panel_problems("w", wall, datasource_uids))
    wall["panels"][2]["gridPos"] = dict(wall["panels"][1]["gridPos"])
    assert overlap_problems("w", wall) != []


def _datasource_refs(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every ``"datasource": {...}`` reference anywhere in a dashboard."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, Mapping):
                yield value
            else:
                yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


def test_dashboards_import_into_any_grafana(dashboards: dict[str, dict[str, Any]]) -> None:
    """No data source uid is written in a dashboard: each has a ``datasource`` variable (its
    current value the ``DS_PROMETHEUS`` input Grafana's import asks for) that every panel,
    query and query variable uses."""
    for name, dashboard in dashboards.items():
        assert [i["name"] for i in dashboard.get("__inputs", [])] == ["DS_PROMETHEUS"], name
        assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
        (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
        assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
        assert variable["current"]["value"] == "${DS_PROMETHEUS}"
        refs = list(_datasource_refs(dashboard))
        assert refs and {r.get("uid") for r in refs} == {DATASOURCE_VARIABLE}, name


def test_hard_coded_datasource_is_detected(
    dashboards: dict[str, dict[str, Any]], datasource_uids: dict[str, str]
) -> None:
    broken = _broken(dashboards, "ccmon-wallboard")
    panel = next(p for p in broken["panels"] if p.get("targets"))
    panel["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    assert any("hard-codes a uid" in p for p in panel_problems("x", broken, datasource_uids))
    broken["templating"]["list"] = [v for v in broken["templating"]["list"] if v["name"] != "datasource"]
    assert any("does not define" in p for p in variable_problems("x", broken, datasource_uids))


def test_wallboard_tiles_link_to_the_supervisor_trends(dashboards: dict[str, dict[str, Any]]) -> None:
    """A click on a queue's tile opens the supervisor trends of that queue, with the time range,
    data source and tenant carried; every variable the link sets exists on the target."""
    (wall,) = [d for d in dashboards.values() if d["uid"] == "ccmon-wallboard"]
    (trends,) = [d for d in dashboards.values() if d["uid"] == "ccmon-supervisor"]
    target_variables = {v["name"] for v in trends["templating"]["list"]}
    tiles = [p for p in iter_panels(wall["panels"]) if p["type"] == "stat"]
    assert len(tiles) >= 16
    queue_row = next(p for p in wall["panels"] if p["type"] == "row" and "$queue" in p["title"])
    for tile in tiles:
        (link,) = tile["fieldConfig"]["defaults"]["links"]
        url = link["url"]
        assert url.startswith(f"/d/{trends['uid']}/"), url
        assert "${__url_time_range}" in url and "${datasource:queryparam}" in url
        assert "${tenant:queryparam}" in url
        assert "var-queue=${queue}" in url or "${queue:queryparam}" in url
        carried = set(re.findall(r"\$\{(\w+):queryparam\}", url)) | set(re.findall(r"var-(\w+)=", url))
        assert carried <= target_variables, carried - target_variables
        if tile["gridPos"]["y"] > queue_row["gridPos"]["y"]:  # the queue's own tile: that queue
            assert "var-queue=${queue}" in url, url


def test_supervisor_thresholds_are_the_default_targets(dashboards: dict[str, dict[str, Any]]) -> None:
    """The trends' KPI panels draw the [defaults.targets] as dashed thresholds (a queue's own
    target is its dashed "target" series); they follow kpi_core's defaults."""
    from kpi_core.config import DEFAULT_TARGETS

    (trends,) = [d for d in dashboards.values() if d["uid"] == "ccmon-supervisor"]
    by_title = {p["title"]: p for p in iter_panels(trends["panels"])}
    for title, target in {
        "Service level vs target": "service_level",
        "Abandon rate vs target": "abandon_rate",
        "Callback delay vs target": "callback_seconds",
        "First contact resolution vs target": "fcr",
        "NPS vs target": "nps",
    }.items():
        defaults = by_title[title]["fieldConfig"]["defaults"]
        steps = defaults["thresholds"]["steps"]
        assert steps[0]["value"] is None and steps[1]["value"] == DEFAULT_TARGETS[target], title
        assert defaults["custom"]["thresholdsStyle"]["mode"] == "dashed", title


def test_variables(dashboards: dict[str, dict[str, Any]], datasource_uids: dict[str, str]) -> None:
    assert [p for name, d in dashboards.items() for p in variable_problems(name, d, datasource_uids)] == []


def test_undefined_variable_is_detected(dashboards: dict[str, dict[str, Any]], datasource_uids: dict[str, str]) -> None:
    broken = _broken(dashboards, "ccmon-supervisor")
    panel = next(p for p in broken["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = 'ccmon_calls_waiting{tenant="$tenant", site="${site}"}'
    broken["templating"]["list"] = [v for v in broken["templating"]["list"] if v["name"] != "queue"]
    problems = variable_problems("x", broken, datasource_uids)
    assert any("uses undefined variable $site" in p for p in problems)
    assert any("repeats over" in p or "uses undefined variable $queue" in p for p in problems)


def test_variables_in() -> None:
    assert variables_in('a{q=~"$queue", t="${tenant}", w="${window:raw}"}[$__rate_interval] [[old]]') == {
        "queue",
        "tenant",
        "window",
        "__rate_interval",
        "old",
    }


def test_wallboard_layout(dashboards: dict[str, dict[str, Any]]) -> None:
    """Totals row (queue="_all") on top, then one row per queue repeated over $queue, each
    with the same tiles; the tenant and queue variables come from label_values()."""
    (wall,) = [d for d in dashboards.values() if d["uid"] == "ccmon-wallboard"]
    rows = [p for p in wall["panels"] if p["type"] == "row"]
    assert [r.get("repeat") for r in rows] == [None, "queue"]
    first, second = (
        [
            p
            for p in wall["panels"]
            if p["type"] != "row"
            and rows[i]["gridPos"]["y"]
            < p["gridPos"]["y"]
            < (rows[i + 1]["gridPos"]["y"] if i + 1 < len(rows) else 10**6)
        ]
        for i in range(2)
    )
    assert [p["title"] for p in first] == [p["title"] for p in second]
    assert {
        "Service level 15m",
        "Calls waiting",
        "Longest wait",
        "ASA 15m",
        "Abandon rate 15m",
        "Agents available",
        "Callbacks pending",
        "Oldest callback",
    } <= {p["title"] for p in first}
    assert all('queue="_all"' in t["expr"] for p in first for t in p["targets"] if t["refId"] == "A")
    assert all('queue=~"$queue"' in t["expr"] for p in second for t in p["targets"])
    variables = {v["name"]: v for v in wall["templating"]["list"]}
    assert variable_query(variables["tenant"]).startswith("label_values(")
    assert variable_query(variables["queue"]).startswith("label_values(")
    assert variables["queue"]["multi"] and variables["queue"]["includeAll"]
    sl = next(p for p in second if p["title"] == "Service level 15m")
    assert any("ccmon_target_service_level_ratio" in t["expr"] for t in sl["targets"])


def test_every_promql_expression_is_extracted(dashboards: dict[str, dict[str, Any]]) -> None:
    queries = dashboard_queries(dashboards)
    panels_with_queries = [
        (d["uid"], p.get("title")) for d in dashboards.values() for p in iter_panels(d["panels"]) if p.get("targets")
    ]
    assert {(q.dashboard, q.panel) for q in queries if q.kind == "panel"} == set(panels_with_queries)
    n_targets = sum(
        len(p["targets"]) for d in dashboards.values() for p in iter_panels(d["panels"]) if p.get("targets")
    )
    assert len([q for q in queries if q.kind == "panel"]) == n_targets
    query_vars = [v for d in dashboards.values() for v in d["templating"]["list"] if v.get("type") == "query"]
    assert len([q for q in queries if q.kind == "variable"]) == len(query_vars)
    assert syntax_problems(queries) == []


def test_promql_of_variable() -> None:
    assert promql_of_variable('label_values(ccmon_calls_waiting{tenant="$tenant"}, queue)') == (
        'ccmon_calls_waiting{tenant="$tenant"}',
        "queue",
    )
    assert promql_of_variable("query_result(topk(5, up))") == ("topk(5, up)", None)
    assert promql_of_variable("label_values(tenant)") is None


def test_syntax_problems_are_detected() -> None:
    bad = [
        Query("d", "p", "A", 'sum(rate(x{a="b"}[5m])', "panel"),
        Query("d", "p", "B", 'x{a="b}', "panel"),
    ]
    assert len(syntax_problems(bad)) == 2


def test_dashboards_use_only_exported_metrics(dashboards: dict[str, dict[str, Any]]) -> None:
    assert unknown_metrics([q.expr for q in dashboard_queries(dashboards)]) == []


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (queue, le) (rate(ccmon_call_wait_seconds_bucket"
        '{tenant="$tenant", outcome="answered"}[$__rate_interval]))) > on(tenant) group_left '
        "ccmon:queue_paging and time() - ccmon_last_event_timestamp_seconds > 1e3"
    )
    assert metric_names_in(expr) == {
        "ccmon_call_wait_seconds_bucket",
        "ccmon:queue_paging",
        "ccmon_last_event_timestamp_seconds",
    }
    assert unknown_metrics(["ccmon_calls_wating"]) == [
        "'ccmon_calls_wating' in 'ccmon_calls_wating' is not a known metric"
    ]


def test_every_query_is_documented(dashboards: dict[str, dict[str, Any]]) -> None:
    doc = normalize(DOC.read_text(encoding="utf-8"))
    missing = [
        f"{q.dashboard} / {q.panel} / {q.ref}: {q.expr}"
        for q in dashboard_queries(dashboards)
        if normalize(q.expr) not in doc
    ]
    assert missing == [], "add these queries to docs/DASHBOARDS.md:\n" + "\n".join(missing)
    for dashboard in dashboards.values():
        assert dashboard["title"] in doc and dashboard["uid"] in doc
