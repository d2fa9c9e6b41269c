"""The Prometheus alert rules (deploy/prometheus/rules/) and the Alertmanager routes.

* ``promtool check rules`` and ``promtool test rules`` on deploy/prometheus/tests/*.yml
  (skipped, with the reason, only when promtool is not installed: Debian package
  ``prometheus``);
* every alert has a promtool case where it fires and one where it stays silent, so a new rule
  without tests fails here;
* every alert has the labels and annotations Alertmanager and the runbooks rely on, queue
  alerts compare per queue against target gauges and go through the paging-hours gate, and
  only documented constants appear in them;
* every metric a rule reads is one ccmon exports (kpi_core/kpis.py);
* every alert is documented in docs/ALERTS.md with its exact expression, and its
  ``runbook_url`` points at its own section there (a GitHub-style heading anchor);
* the always-firing ``CcmonWatchdog`` and an ``absent(up{job=...})`` alert for every job
  with an ``up == 0`` alert;
* with ``amtool`` (Debian package ``prometheus-alertmanager``): every alert routes to a real
  receiver.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.dashboards import metric_names_in, normalize, unknown_metrics

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
TESTS_DIR = REPO / "deploy" / "prometheus" / "tests"
ALERTMANAGER_FILE = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_TEMPLATE = REPO / "deploy" / "alertmanager" / "ccmon.tmpl"
DOC = REPO / "docs" / "ALERTS.md"

SEVERITIES = {"warning", "critical"}
TEAMS = {"supervisors", "ops"}
ANNOTATIONS = ("summary", "description", "runbook", "runbook_url")
#: Where every runbook_url points: a section of this file, as a path in the repository
#: (resolved against "ccmon.runbook_base" of deploy/alertmanager/ccmon.tmpl).
RUNBOOK_PATH = "docs/ALERTS.md"
#: Alerts that fire all the time on purpose (severity none, no `for`, no silent case).
WATCHDOG = "CcmonWatchdog"
GATE = "and on(tenant, queue) (tenant_queue:ccmon_queue_paging:max == 1)"
GATE_GROUP = "ccmon-paging-gate"
#: level:metric:operations (https://prometheus.io/docs/practices/rules/): level and operations
#: may be empty, the metric is a ccmon_ name.
RECORDING_NAME = re.compile(r"[a-z_]*:ccmon_[a-z_]+:[a-z0-9_]*")
#: Recording rule names before that convention -> their new names. Kept one release, recorded
#: as exact copies (paging_hours_test.yml shows alias == new), then removed.
DEPRECATED_ALIASES = {
    "ccmon:paging_hours": ":ccmon_paging_hours:",
    "ccmon:queue_paging": "tenant_queue:ccmon_queue_paging:max",
}
#: The only numbers queue (team=supervisors) rules may hold; docs/ALERTS.md, "Constants".
QUEUE_RULE_CONSTANTS = {"0.15", "1", "2", "3", "5"}
#: Receiver each (team, severity) must reach.
EXPECTED_RECEIVERS = {
    ("supervisors", "critical"): "supervisors-pager",
    ("supervisors", "warning"): "supervisors",
    ("ops", "critical"): "ops",
    ("ops", "warning"): "ops",
    ("ops", "none"): "watchdog",
}

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH (apt-get install prometheus)")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool not on PATH (apt-get install prometheus-alertmanager)")


# --------------------------------------------------------------------------- loading


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def promtool_test_files() -> list[Path]:
    return sorted(TESTS_DIR.glob("*.yml"))


def load_groups(paths: list[Path] | None = None) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in rule_files() if paths is None else paths:
        groups += (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("groups", [])
    return groups


def alert_rules(groups: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [
        rule for group in (load_groups() if groups is None else groups) for rule in group["rules"] if "alert" in rule
    ]


def promtool_cases(paths: list[Path] | None = None) -> tuple[set[str], set[str]]:
    """Alert names with a firing case (non-empty exp_alerts) and with a silent case."""
    firing: set[str] = set()
    silent: set[str] = set()
    for path in promtool_test_files() if paths is None else paths:
        for test in yaml.safe_load(path.read_text(encoding="utf-8")).get("tests", []):
            for case in test.get("alert_rule_test") or []:
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    return firing, silent


def numbers_in(expr: str) -> set[str]:
    """Numeric literals of a PromQL expression (not inside names, strings or ranges)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)
    return set(re.findall(r"(?<![\w.:])(\d+(?:\.\d+)?)(?![\w.])", text))


# --------------------------------------------------------------------------- checkers


def alert_problems(rule: Mapping[str, Any]) -> list[str]:
    name = rule.get("alert", "?")
    labels = rule.get("labels") or {}
    annotations = rule.get("annotations") or {}
    problems = []
    if name == WATCHDOG:
        if labels.get("severity") != "none" or str(rule.get("expr", "")).strip() != "vector(1)" or "for" in rule:
            problems.append(f"{name}: the watchdog is `vector(1)`, severity none, no 'for'")
    elif labels.get("severity") not in SEVERITIES:
        problems.append(f"{name}: severity {labels.get('severity')!r} not in {sorted(SEVERITIES)}")
    if labels.get("team") not in TEAMS:
        problems.append(f"{name}: team {labels.get('team')!r} not in {sorted(TEAMS)}")
    if not labels.get("family"):
        problems.append(f"{name}: no family label (Alertmanager inhibits per family)")
    for key in ANNOTATIONS:
        if not str(annotations.get(key, "")).strip():
            problems.append(f"{name}: no {key} annotation")
    if not rule.get("for") and name != WATCHDOG:
        problems.append(f"{name}: no 'for' duration")
    if not re.fullmatch(r"Ccmon[A-Z][A-Za-z]+", name):
        problems.append(f"{name}: alert names are CcmonCamelCase")
    expr = normalize(str(rule.get("expr", "")))
    if labels.get("team") == "supervisors":
        if not expr.endswith(GATE):
            problems.append(f"{name}: a queue alert must end in {GATE!r} (paging hours)")
        if 'queue!="_all"' not in expr or "on(tenant, queue)" not in expr:
            problems.append(f'{name}: a queue alert compares per queue and leaves out queue="_all"')
        for key in ("summary", "description"):
            text = str(annotations.get(key, ""))
            if "$labels.tenant" not in text or "$labels.queue" not in text:
                problems.append(f"{name}: the {key} must name $labels.tenant and $labels.queue")
        extra = numbers_in(expr) - QUEUE_RULE_CONSTANTS
        if extra:
            problems.append(f"{name}: thresholds come from target gauges, not numbers: {sorted(extra)}")
    return problems


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    return load_groups()


@pytest.fixture(scope="module")
def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules = alert_rules(groups)
    assert rules, "no alert rules found"
    return rules


# --------------------------------------------------------------------------- promtool


@needs_promtool
def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", *map(str, rule_files())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", *map(str, promtool_test_files())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=TESTS_DIR,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case(alerts: list[dict[str, Any]]) -> None:
    firing, silent = promtool_cases()
    names = {rule["alert"] for rule in alerts}
    assert sorted(names - firing) == [], "alerts without a promtool case where they fire"
    assert sorted(names - silent - {WATCHDOG}) == [], "alerts without a promtool case where they stay silent"
    assert WATCHDOG not in silent, "the watchdog never stays silent"
    assert sorted((firing | silent) - names) == [], "promtool cases for alerts that do not exist"


def test_promtool_files_load_every_rule_file_and_order_the_gate_first(
    groups: list[dict[str, Any]],
) -> None:
    names = [group["name"] for group in groups]
    assert len(names) == len(set(names)), f"rule group names repeat: {names}"
    for path in promtool_test_files():
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        loaded = {(path.parent / f).resolve() for f in doc["rule_files"]}
        assert loaded == {p.resolve() for p in rule_files()}, f"{path.name}: rule_files"
        order = doc.get("group_eval_order") or []
        assert order[:1] == [GATE_GROUP] and sorted(order) == sorted(names), (
            f"{path.name}: group_eval_order must list every group, {GATE_GROUP} first"
        )


# --------------------------------------------------------------------------- rule content


def test_alerts_have_labels_annotations_and_per_queue_targets(alerts: list[dict[str, Any]]) -> None:
    assert [p for rule in alerts for p in alert_problems(rule)] == []
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)), f"alert names repeat: {names}"


def test_alert_problems_are_detected(alerts: list[dict[str, Any]]) -> None:
    rule = copy.deepcopy(next(r for r in alerts if r["alert"] == "CcmonServiceLevelBelowTarget"))
    rule["expr"] = 'ccmon_service_level_ratio{window="15m"} < 0.8'
    del rule["annotations"]["runbook"]
    rule["labels"]["severity"] = "page"
    problems = alert_problems(rule)
    assert any("severity 'page'" in p for p in problems)
    assert any("no runbook annotation" in p for p in problems)
    assert any("paging hours" in p for p in problems)
    assert any('leaves out queue="_all"' in p for p in problems)
    assert any("not numbers: ['0.8']" in p for p in problems)


def test_numbers_in() -> None:
    assert numbers_in('x{window="15m"} > 2 * rate(y[5m]) - 0.15 and ccmon:z == 1') == {
        "2",
        "0.15",
        "1",
    }


def test_queue_alerts_compare_with_target_gauges(alerts: list[dict[str, Any]]) -> None:
    """Each queue alert reads a target gauge or, where no target exists, a per-queue baseline
    (the SL threshold, the queue's own recent history)."""
    for rule in alerts:
        if rule["labels"]["team"] != "supervisors":
            continue
        expr = rule["expr"]
        assert "ccmon_target_" in expr or "ccmon_service_level_threshold_seconds" in expr or 'window="1h"' in expr, (
            rule["alert"]
        )


def test_rules_use_only_exported_metrics(groups: list[dict[str, Any]]) -> None:
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    assert unknown_metrics(exprs) == []
    used = set().union(*(metric_names_in(e) for e in exprs))
    assert "ccmon_consumer_lag" in used  # written against the exporter's forthcoming metric


def test_recording_rules_follow_the_naming_convention(groups: list[dict[str, Any]]) -> None:
    records = {
        rule["record"]: (group["name"], index, rule["expr"])
        for group in groups
        for index, rule in enumerate(group["rules"])
        if "record" in rule
    }
    for name in records:
        assert name in DEPRECATED_ALIASES or RECORDING_NAME.fullmatch(name), (
            f"{name}: recording rules are named level:metric:operations"
        )
    for old, new in DEPRECATED_ALIASES.items():
        assert old in records and new in records, f"alias {old} -> {new}"
        (old_group, old_index, old_expr), (new_group, new_index, _) = records[old], records[new]
        # A plain copy, evaluated after its source in the same cycle.
        assert old_expr.strip() == new and old_group == new_group and old_index > new_index, old


def test_rules_read_no_deprecated_alias(groups: list[dict[str, Any]]) -> None:
    for group in groups:
        for rule in group["rules"]:
            if rule.get("record") in DEPRECATED_ALIASES:
                continue
            used = metric_names_in(str(rule["expr"])) & set(DEPRECATED_ALIASES)
            assert not used, f"{rule.get('alert') or rule.get('record')} reads deprecated {sorted(used)}"


def test_every_alert_is_documented(alerts: list[dict[str, Any]]) -> None:
    doc = DOC.read_text(encoding="utf-8")
    flat = normalize(doc)
    for rule in alerts:
        assert f"#### {rule['alert']}" in doc, f"docs/ALERTS.md has no section for {rule['alert']}"
        assert normalize(rule["expr"]) in flat, f"docs/ALERTS.md shows an outdated expr of {rule['alert']}"
        assert normalize(rule["annotations"]["runbook"]) in flat, f"runbook of {rule['alert']}"


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file: lower case, punctuation
    but '-' and '_' dropped, spaces to '-', a repeated anchor suffixed -1, -2, ..."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).replace("`", "").lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def test_github_anchors() -> None:
    text = "# Alerts\n## Paging hours\n```\n# not a heading\n```\n### Group `ccmon-queues`\n## Paging hours\n"
    assert github_anchors(text) == {"alerts", "paging-hours", "group-ccmon-queues", "paging-hours-1"}


def test_every_alert_links_its_own_runbook_section(alerts: list[dict[str, Any]]) -> None:
    """runbook_url = docs/ALERTS.md#<the alert's own heading>, and that heading exists."""
    anchors = github_anchors(DOC.read_text(encoding="utf-8"))
    problems = []
    for rule in alerts:
        url = str((rule.get("annotations") or {}).get("runbook_url", ""))
        path, _, anchor = url.partition("#")
        if path != RUNBOOK_PATH or anchor != rule["alert"].lower():
            problems.append(f"{rule['alert']}: runbook_url {url!r} is not {RUNBOOK_PATH}#{rule['alert'].lower()}")
        elif anchor not in anchors:
            problems.append(f"{rule['alert']}: {RUNBOOK_PATH} has no heading with anchor #{anchor}")
    assert problems == []


def test_a_runbook_url_without_its_section_is_detected(alerts: list[dict[str, Any]]) -> None:
    anchors = github_anchors(DOC.read_text(encoding="utf-8"))
    assert "ccmonservicelevelbelowtarget" in anchors
    assert "ccmonservicelevelbelow" not in anchors


def test_watchdog_and_an_absent_alert_per_scrape_job(alerts: list[dict[str, Any]]) -> None:
    """The pipeline proves itself (an always-firing watchdog), and every job whose targets
    have an `up == 0` alert also has an alert for having no target at all."""
    by_expr = {normalize(str(rule["expr"])): rule for rule in alerts}
    assert by_expr["vector(1)"]["alert"] == WATCHDOG
    jobs = [m for expr in by_expr for m in re.findall(r'^up\{job="([\w-]+)"\} == 0$', expr)]
    assert sorted(jobs) == ["ccmon-exporter", "ccmon-worker"]
    for job in jobs:
        rule = by_expr.get(f'absent(up{{job="{job}"}})')
        assert rule is not None, f"no absent(up{{job={job!r}}}) alert"
        assert rule["labels"]["severity"] == "critical" and rule["labels"]["team"] == "ops"


# --------------------------------------------------------------------------- alertmanager


def test_alertmanager_groups_per_queue_and_inhibits_per_family() -> None:
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text(encoding="utf-8"))
    assert config["route"]["group_by"] == ["tenant", "queue"]
    (rule,) = config["inhibit_rules"]
    assert rule["source_matchers"] == ['severity="critical"']
    assert rule["target_matchers"] == ['severity="warning"']
    assert set(rule["equal"]) == {"tenant", "queue", "family"}
    receivers = {r["name"] for r in config["receivers"]}
    assert set(EXPECTED_RECEIVERS.values()) <= receivers


def test_the_watchdog_route_comes_first_and_repeats() -> None:
    """A dead man's switch needs the watchdog's notification again and again; no other route
    may take it (the first matching route wins, `continue` is false)."""
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text(encoding="utf-8"))
    first = config["route"]["routes"][0]
    assert first["matchers"] == [f'alertname="{WATCHDOG}"'] and first["receiver"] == "watchdog"
    assert not first.get("continue") and first["repeat_interval"] == "5m"


@needs_amtool
def test_the_runbook_link_template_renders_a_full_url(tmp_path: Path) -> None:
    data = {
        "receiver": "ops",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": WATCHDOG},
                "annotations": {"runbook_url": "docs/ALERTS.md#ccmonwatchdog"},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "1",
            }
        ],
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
    }
    (tmp_path / "data.json").write_text(json.dumps(data), encoding="utf-8")
    base = re.search(r'define "ccmon.runbook_base" \}\}(.*?)\{\{', ALERTMANAGER_TEMPLATE.read_text(encoding="utf-8"))
    assert base is not None and base.group(1).startswith("https://") and base.group(1).endswith("/")
    result = subprocess.run(
        [
            str(AMTOOL),
            "template",
            "render",
            f"--template.glob={ALERTMANAGER_TEMPLATE}",
            f"--template.data={tmp_path / 'data.json'}",
            '--template.text={{ range .Alerts }}{{ template "ccmon.runbook_link" . }}{{ end }}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{base.group(1)}docs/ALERTS.md#ccmonwatchdog"


@needs_amtool
def test_every_alert_routes_to_its_receiver(alerts: list[dict[str, Any]]) -> None:
    for rule in alerts:
        labels = {
            **rule["labels"],
            "alertname": rule["alert"],
            "tenant": "acme",
            "queue": "support",
        }
        result = subprocess.run(
            [
                str(AMTOOL),
                "config",
                "routes",
                "test",
                f"--config.file={ALERTMANAGER_FILE}",
                *(f"{k}={v}" for k, v in sorted(labels.items())),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        expected = EXPECTED_RECEIVERS[(rule["labels"]["team"], rule["labels"]["severity"])]
        assert result.stdout.split() == [expected], f"{rule['alert']} -> {result.stdout!r}"
