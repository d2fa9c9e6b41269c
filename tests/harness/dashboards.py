"""The PromQL of the Grafana dashboards (deploy/grafana/dashboards/): every expression of
their panels and template variables (:func:`dashboard_queries`), the metric names in an
expression (:func:`metric_names_in`) and those no ccmon component exports (:func:`unknown_metrics`).
``tests/deploy/test_dashboards.py`` checks the dashboards with them,
``tests/deploy/test_alert_rules.py`` the alert rules, and
``tests/integration/test_prometheus_live.py`` runs every query against a real Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "deploy" / "grafana" / "dashboards"
DATASOURCES_FILE = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"

# Grafana's global variables (https://grafana.com/docs/grafana/latest/dashboards/variables/
# add-template-variables/#global-variables).
BUILTIN_VARIABLES = {
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__rate_interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__all",
    "__dashboard",
    "__from",
    "__to",
    "__name",
    "__org",
    "__user",
    "__timezone",
    "__field",
    "__series",
    "__value",
    "__data",
    "__cell",
    "timeFilter",
    "__timeFilter",
}

#: ccmon metrics a dashboard or rule may use before kpi_core exports them, and why.
FORTHCOMING_METRICS = {
    "ccmon_consumer_lag": "served by `ccmon exporter` (streams/, being written): {topic,partition}",
}
#: Series Prometheus itself makes.
PROMETHEUS_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}

VAR_RE = re.compile(r"\$(?:\{(\w+)(?::[^}]*)?\}|(\w+))|\[\[(\w+)(?::[^\]]*)?\]\]")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
}


# --------------------------------------------------------------------------- loading


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))}


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def provisioned_datasource_uids(path: Path = DATASOURCES_FILE) -> dict[str, str]:
    """uid -> type of the provisioned datasources."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {ds["uid"]: ds["type"] for ds in data["datasources"]}


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query", "")
    if isinstance(query, Mapping):
        query = query.get("query", "")
    return str(query)


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard.

    ``kind`` is ``panel`` (``expr`` of a panel target) or ``variable`` (a templating query:
    ``expr`` is then the PromQL inside ``label_values(...)``/``query_result(...)`` and
    ``label`` the label whose values the variable lists)."""

    dashboard: str
    panel: str
    ref: str
    expr: str
    kind: str
    instant: bool = True
    label: str | None = None


_LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(?P<sel>.*?)\s*,\s*(?P<label>\w+)\s*\)\s*$", re.S)
_QUERY_RESULT_RE = re.compile(r"^\s*query_result\(\s*(?P<expr>.*)\)\s*$", re.S)


def promql_of_variable(query: str) -> tuple[str, str | None] | None:
    """The PromQL of a Prometheus variable query and the label it lists; None when the query
    holds no PromQL (``label_values(label)``, ``label_names()``, ``metrics(regex)``)."""
    match = _LABEL_VALUES_RE.match(query)
    if match:
        return match.group("sel"), match.group("label")
    match = _QUERY_RESULT_RE.match(query)
    if match:
        return match.group("expr"), None
    return None


def dashboard_queries(dashboards: Mapping[str, Mapping[str, Any]] | None = None) -> list[Query]:
    """EVERY PromQL expression of the dashboards: panel targets and templating queries."""
    dashboards = load_dashboards() if dashboards is None else dashboards
    queries: list[Query] = []
    for dashboard in dashboards.values():
        uid = dashboard.get("uid", "?")
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            parsed = promql_of_variable(variable_query(variable))
            if parsed is not None:
                expr, label = parsed
                queries.append(
                    Query(
                        uid,
                        f"variable {variable['name']}",
                        variable["name"],
                        expr,
                        "variable",
                        True,
                        label,
                    )
                )
        for panel in iter_panels(dashboard.get("panels", [])):
            for target in panel.get("targets") or []:
                if target.get("expr"):
                    instant = bool(target.get("instant")) and not target.get("range", False)
                    queries.append(
                        Query(
                            uid,
                            panel.get("title", "?"),
                            target.get("refId", "?"),
                            target["expr"],
                            "panel",
                            instant,
                        )
                    )
    return queries


def variables_in(text: str) -> set[str]:
    return {next(g for g in match.groups() if g) for match in VAR_RE.finditer(text)}


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, keywords or labels)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:$.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        if match.group(2) is None and match.group(1).lower() not in _KEYWORDS:
            names.add(match.group(1))
    return names


def exported_metric_names() -> set[str]:
    """Every metric name kpi_core can export: the KPI catalog's (with targets and histogram
    series), and the pipeline-health families kpi_core/kpis.py names itself."""
    from kpi_core import catalog, kpis

    names = catalog.metric_names()
    source = Path(kpis.__file__).read_text(encoding="utf-8")
    for name, kind in re.findall(r'family\(\s*"(ccmon_\w+)",\s*"(\w+)"', source):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    # The exporter's and worker's own series (consumer lag, scrape time, Redis wait, eviction policy).
    for module in ("exporter.py", "worker.py", "redis/policy.py"):
        text = (REPO / "streams" / module).read_text(encoding="utf-8")
        names |= set(re.findall(r'(?:MetricFamily|Gauge)\(\s*"(ccmon_\w+)"', text))
    return names


def recording_rule_names(directory: Path = RULES_DIR) -> set[str]:
    names = set()
    for path in directory.glob("*.yml"):
        for group in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("groups", []):
            names |= {rule["record"] for rule in group.get("rules", []) if "record" in rule}
    return names


def unknown_metrics(exprs: list[str]) -> list[str]:
    """ccmon metric names that kpi_core does not export (typos, renamed metrics)."""
    known = exported_metric_names() | set(FORTHCOMING_METRICS) | PROMETHEUS_METRICS
    known |= recording_rule_names()
    problems = []
    for expr in exprs:
        for name in sorted(metric_names_in(expr) - known):
            problems.append(f"{name!r} in {expr!r} is not a known metric")
    return problems


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
