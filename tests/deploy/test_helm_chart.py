"""The Helm chart deploy/helm/ccmon, rendered by a real helm.

helm is the pinned build of deploy/local/install-helm.sh (~/.cache/ccmon/helm/bin/helm, or
``$CCMON_HELM_DIR/helm``, or ``$CCMON_HELM``); without it these tests fail, naming the script that installs it
(deploy/local/install-test-tools.sh runs it for ``make test``).

* ``helm lint --strict`` and ``helm template`` with the chart's ci/ values files: the minimal one
  (only the required customer key secret) and one turning every option on;
* every rendered manifest validated against the Kubernetes OpenAPI schemas of the oldest
  Kubernetes the chart supports and of the newest one kubernetes-validate knows (strict: an
  unknown field is an error); the custom resources (ServiceMonitor, PrometheusRule,
  ScaledObject, TriggerAuthentication) have no schema there: they are validated, as strictly,
  against their CRDs' schemas (tests/deploy/crd_schemas) and checked against the rest of
  the release here (selected Services, job labels, scale target, secret references);
* the rendered PrometheusRule holds the groups of deploy/prometheus/rules verbatim, and passes
  ``promtool check rules`` and the project's ``promtool test rules`` suites run against it;
* the dashboards' ConfigMaps hold the files of deploy/grafana/dashboards byte for byte;
* values.schema.json and the templates refuse bad values with a message naming the value;
* non-root, read-only, no privilege escalation, every capability dropped;
* the pods' environment is settings ccmon knows, and the minimal release's environment, with
  its Secret and ConfigMap mounted as rendered, is accepted by streams.settings.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streams import settings as ccmon_settings
from streams.cli import exporter as exporter_command
from streams.cli import worker as worker_command
from streams.files import load_config

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "ccmon"
MINIMAL_VALUES = CHART / "ci" / "minimal-values.yaml"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = REPO / "deploy" / "prometheus" / "tests"
DASHBOARDS_DIR = REPO / "deploy" / "grafana" / "dashboards"
INSTALL_HELM = REPO / "deploy" / "local" / "install-helm.sh"
DEFAULT_HELM = Path.home() / ".cache" / "ccmon" / "helm" / "bin" / "helm"
PROMTOOL = shutil.which("promtool")
RELEASE = "ccmon"
NAMESPACE = "monitoring-test"

#: Kubernetes versions every manifest is validated against: the chart's minimum (Chart.yaml
#: kubeVersion) and the newest kubernetes-validate ships schemas for.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
#: Kinds the Kubernetes schemas do not know (CRDs): checked structurally below.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}

#: The CRDs' own schemas (tests/deploy/crd_schemas/README.md: releases and provenance).
CRD_SCHEMAS = REPO / "tests" / "deploy" / "crd_schemas"

Doc = dict[str, Any]


# --------------------------------------------------------------------------- helm


def helm_binary() -> Path:
    override, directory = os.environ.get("CCMON_HELM"), os.environ.get("CCMON_HELM_DIR")
    path = Path(override) if override else Path(directory) / "helm" if directory else DEFAULT_HELM
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"helm not found at {path}: run `bash {INSTALL_HELM.relative_to(REPO)}` (the pinned helm, "
            "built with go install; deploy/local/install-test-tools.sh runs it), or point $CCMON_HELM at a helm v4",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm's own cache, config and data directories in a temp directory (nothing in $HOME)."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def helm(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, env=dict(env), timeout=120)


def template(env: Mapping[str, str], *args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return helm(
        env, "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[0], *args
    )


def render(env: Mapping[str, str], *args: str, chart: Path = CHART) -> list[Doc]:
    done = template(env, *args, chart=chart)
    assert done.returncode == 0, f"helm template {' '.join(args)} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def refused(env: Mapping[str, str], *args: str) -> str:
    """helm template's error output; the render must fail."""
    done = template(env, *args)
    assert done.returncode != 0, f"helm template {' '.join(args)} rendered:\n{done.stdout[:2000]}"
    return done.stderr


@pytest.fixture(scope="session")
def minimal(helm_env: dict[str, str]) -> list[Doc]:
    return render(helm_env, "-f", str(MINIMAL_VALUES))


@pytest.fixture(scope="session")
def full(helm_env: dict[str, str]) -> list[Doc]:
    return render(helm_env, "-f", str(FULL_VALUES))


@pytest.fixture(scope="session", params=["minimal", "full"])
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    return request.getfixturevalue(request.param)


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered; have {kinds(docs)}"
    return found[0]


def kinds(docs: list[Doc]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] == "Deployment":
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def env_of(container: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def rule_groups_of_repo() -> list[Doc]:
    groups: list[Doc] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        groups += yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return groups


# --------------------------------------------------------------------------- the tool


def test_helm_is_the_pinned_build(helm_env: dict[str, str]) -> None:
    pinned = re.search(r"^HELM_VERSION=(v\S+)$", INSTALL_HELM.read_text(encoding="utf-8"), re.M)
    assert pinned, "install-helm.sh pins no HELM_VERSION"
    done = helm(helm_env, "version", "--template", "{{.Version}}")
    assert done.returncode == 0, done.stderr
    # A go install build reports only major.minor; its module version is in the build info.
    assert pinned.group(1).startswith(done.stdout.strip()), (done.stdout, pinned.group(1))
    go = shutil.which("go")
    if go is not None:
        info = subprocess.run([go, "version", "-m", str(helm_binary())], capture_output=True, text=True, check=True)
        assert re.search(rf"^\s*mod\s+helm\.sh/helm/v4\s+{re.escape(pinned.group(1))}\s", info.stdout, re.M), (
            info.stdout
        )


# --------------------------------------------------------------------------- lint and render


@pytest.mark.parametrize("values", [MINIMAL_VALUES, FULL_VALUES], ids=["minimal", "full"])
def test_helm_lint_strict(helm_env: dict[str, str], values: Path) -> None:
    done = helm(helm_env, "lint", "--strict", str(CHART), "-f", str(values))
    assert done.returncode == 0, f"helm lint --strict -f {values.name}:\n{done.stdout}\n{done.stderr}"
    assert "0 chart(s) failed" in done.stdout, done.stdout


def test_minimal_release_objects(minimal: list[Doc]) -> None:
    assert kinds(minimal) == sorted(
        [
            ("ServiceAccount", "ccmon"),
            ("Secret", "ccmon"),
            ("ConfigMap", "ccmon-config"),
            ("Deployment", "ccmon-worker"),
            ("Service", "ccmon-worker"),
            ("PodDisruptionBudget", "ccmon-worker"),
            ("Deployment", "ccmon-exporter"),
            ("Service", "ccmon-exporter"),
        ]
    )
    assert one(minimal, "Deployment", "ccmon-worker")["spec"]["replicas"] == 1
    secret = one(minimal, "Secret", "ccmon")
    assert set(secret["data"]) == {"customer-key-secret"}
    values = yaml.safe_load(MINIMAL_VALUES.read_text(encoding="utf-8"))
    assert base64.b64decode(secret["data"]["customer-key-secret"]).decode() == values["secrets"]["customerKeySecret"]
    # Without config.toml the repository's KPI configuration, byte for byte.
    config = one(minimal, "ConfigMap", "ccmon-config")["data"]["ccmon.toml"]
    assert config == (REPO / "deploy" / "config" / "ccmon.toml").read_text(encoding="utf-8").rstrip("\n")


def test_config_toml_value_replaces_the_packaged_config(helm_env: dict[str, str], tmp_path: Path) -> None:
    values = tmp_path / "config.yaml"
    toml = '[engine]\nwindows = ["15m", "today"]\n'
    values.write_text(yaml.safe_dump({"config": {"toml": toml}}), encoding="utf-8")
    docs = render(helm_env, "-f", str(MINIMAL_VALUES), "-f", str(values))
    assert one(docs, "ConfigMap", "ccmon-config")["data"]["ccmon.toml"] == toml.rstrip("\n")
    # A new configuration restarts the pods (the checksum of the ConfigMap changes).
    checksum = one(docs, "Deployment", "ccmon-worker")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    default = render(helm_env, "-f", str(MINIMAL_VALUES))
    assert (
        checksum
        != one(default, "Deployment", "ccmon-worker")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    )


def test_full_release_objects(full: list[Doc]) -> None:
    assert kinds(full) == sorted(
        [
            ("ServiceAccount", "ccmon"),
            ("ConfigMap", "ccmon-config"),
            ("Deployment", "ccmon-worker"),
            ("Service", "ccmon-worker"),
            ("PodDisruptionBudget", "ccmon-worker"),
            ("Deployment", "ccmon-exporter"),
            ("Service", "ccmon-exporter"),
            ("ServiceMonitor", "ccmon-exporter"),
            ("ServiceMonitor", "ccmon-worker"),
            ("PrometheusRule", "ccmon"),
            ("ConfigMap", "ccmon-dashboard-pipeline-health"),
            ("ConfigMap", "ccmon-dashboard-supervisor-trends"),
            ("ConfigMap", "ccmon-dashboard-wallboard"),
            ("ScaledObject", "ccmon-worker"),
            ("TriggerAuthentication", "ccmon-kafka"),
            ("NetworkPolicy", "ccmon-worker"),
            ("NetworkPolicy", "ccmon-exporter"),
        ]
    )
    # secrets.existingSecret: the chart creates no Secret and mounts the named one.
    worker = one(full, "Deployment", "ccmon-worker")
    volumes = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "ccmon-credentials"
    assert {i["key"] for i in volumes["secrets"]["secret"]["items"]} == {
        "customer-key-secret",
        "kafka-password",
        "redis-password",
    }
    # KEDA owns the replica count: an upgrade must not reset it.
    assert "replicas" not in worker["spec"]


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid_kubernetes(rendered: list[Doc], kube_version: str) -> None:
    problems = []
    for doc in rendered:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert problems == []


def test_kubernetes_validation_catches_a_broken_manifest(minimal: list[Doc]) -> None:
    """The validator is strict: an unknown field and a wrong type are errors."""
    worker = json.loads(json.dumps(one(minimal, "Deployment", "ccmon-worker")))
    worker["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = {"name": "web"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBE_VERSIONS[0], strict=True)
    worker = json.loads(json.dumps(one(minimal, "Deployment", "ccmon-worker")))
    worker["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBE_VERSIONS[0], strict=True)


def custom_resource_problems(doc: Doc, docs: list[Doc]) -> list[str]:
    """What is wrong with a rendered custom resource, given the release's other objects."""
    kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec") or {}
    where = f"{kind} {name}"
    problems = []
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        problems.append(f"{where}: bad name")
    if kind == "ServiceMonitor":
        services = [
            d
            for d in docs
            if d["kind"] == "Service" and spec["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
        ]
        if len(services) != 1:
            return [f"{where}: selects {len(services)} Services"]
        service = services[0]
        job = service["metadata"]["labels"].get(spec.get("jobLabel", ""))
        if job not in ("ccmon-exporter", "ccmon-worker"):
            problems.append(f"{where}: job label {job!r}, the alert rules expect ccmon-exporter / ccmon-worker")
        ports = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in spec.get("endpoints") or [{}]:
            if endpoint.get("port") not in ports:
                problems.append(f"{where}: endpoint port {endpoint.get('port')!r} not in {ports}")
            if endpoint.get("scheme") not in ("http", "https"):
                problems.append(f"{where}: scheme {endpoint.get('scheme')!r}")
            for key in ("interval", "scrapeTimeout"):
                if not re.fullmatch(r"[0-9]+(ms|s|m|h)", str(endpoint.get(key))):
                    problems.append(f"{where}: {key} {endpoint.get(key)!r}")
    elif kind == "PrometheusRule":
        groups = spec.get("groups")
        if not groups or not all(isinstance(g.get("name"), str) and g.get("rules") for g in groups):
            problems.append(f"{where}: spec.groups must be named groups of rules")
    elif kind == "ScaledObject":
        target = spec.get("scaleTargetRef") or {}
        names = {(d["kind"], d["metadata"]["name"]) for d in docs}
        if (target.get("kind", "Deployment"), target.get("name")) not in names:
            problems.append(f"{where}: scaleTargetRef {target} is not in the release")
        if not 0 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 0):
            problems.append(f"{where}: min/maxReplicaCount {spec.get('minReplicaCount')}/{spec.get('maxReplicaCount')}")
        for trigger in spec.get("triggers") or [{}]:
            metadata = trigger.get("metadata") or {}
            if trigger.get("type") != "kafka":
                problems.append(f"{where}: trigger type {trigger.get('type')!r}")
            # KEDA reads trigger metadata as a map of strings.
            bad = {k: v for k, v in metadata.items() if not isinstance(v, str)}
            if bad:
                problems.append(f"{where}: non-string trigger metadata {bad}")
            missing = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} - set(metadata)
            if missing:
                problems.append(f"{where}: trigger metadata lacks {sorted(missing)}")
            ref = (trigger.get("authenticationRef") or {}).get("name")
            if ref is not None and ("TriggerAuthentication", ref) not in names:
                problems.append(f"{where}: authenticationRef {ref!r} is not in the release")
    elif kind == "TriggerAuthentication":
        for ref in spec.get("secretTargetRef") or []:
            if set(ref) != {"parameter", "name", "key"} or not all(isinstance(v, str) and v for v in ref.values()):
                problems.append(f"{where}: secretTargetRef {ref}")
        if not spec.get("secretTargetRef"):
            problems.append(f"{where}: no secretTargetRef")
    return problems


def strict(schema: Any) -> Any:
    """The CRD schema with ``additionalProperties: false`` on every object that lists its
    properties and does not keep unknown fields: what the API server would prune is an error."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(doc: Doc) -> jsonschema.protocols.Validator:
    group, version = doc["apiVersion"].split("/")
    path = CRD_SCHEMAS / f"{group}_{doc['kind']}_{version}.json"
    assert path.is_file(), f"no CRD schema for {doc['apiVersion']} {doc['kind']} in {CRD_SCHEMAS}"
    return jsonschema.Draft4Validator(strict(json.loads(path.read_text(encoding="utf-8"))))


def crd_errors(doc: Doc) -> list[str]:
    return [
        f"{doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.absolute_path)}"
        for e in crd_validator(doc).iter_errors(doc)
    ]


def test_custom_resources_match_their_crd_schemas(full: list[Doc]) -> None:
    custom = [d for d in full if (d["apiVersion"], d["kind"]) in CUSTOM_KINDS]
    assert {(d["apiVersion"], d["kind"]) for d in custom} == CUSTOM_KINDS
    assert [e for doc in custom for e in crd_errors(doc)] == []


def test_crd_schema_validation_catches_a_broken_resource(full: list[Doc]) -> None:
    monitor = json.loads(json.dumps(one(full, "ServiceMonitor", "ccmon-exporter")))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"  # pruned silently by the API server
    assert any("intervall" in e for e in crd_errors(monitor))
    scaled = json.loads(json.dumps(one(full, "ScaledObject", "ccmon-worker")))
    del scaled["spec"]["scaleTargetRef"]
    scaled["spec"]["minReplicaCount"] = "1"
    errors = crd_errors(scaled)
    assert any("'scaleTargetRef' is a required property" in e for e in errors), errors
    assert any("'1' is not of type 'integer'" in e for e in errors), errors


def test_custom_resources_are_well_formed(full: list[Doc]) -> None:
    custom = [d for d in full if (d["apiVersion"], d["kind"]) in CUSTOM_KINDS]
    assert {(d["apiVersion"], d["kind"]) for d in custom} == CUSTOM_KINDS
    problems = [p for doc in custom for p in custom_resource_problems(doc, full)]
    assert problems == []


def test_custom_resource_checks_can_fail(full: list[Doc]) -> None:
    broken = json.loads(json.dumps(full))
    for doc in broken:
        if doc["kind"] == "ServiceMonitor":
            doc["spec"]["jobLabel"] = "app.kubernetes.io/name"
        elif doc["kind"] == "ScaledObject":
            doc["spec"]["scaleTargetRef"]["name"] = "elsewhere"
            doc["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10
    problems = [
        p
        for doc in broken
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS
        for p in custom_resource_problems(doc, broken)
    ]
    assert len([p for p in problems if "job label" in p]) == 2
    assert any("scaleTargetRef" in p for p in problems)
    assert any("non-string trigger metadata" in p for p in problems)


def test_scaled_object_on_the_consumer_group_lag(full: list[Doc]) -> None:
    values = yaml.safe_load(FULL_VALUES.read_text(encoding="utf-8"))
    scaled = one(full, "ScaledObject", "ccmon-worker")["spec"]
    assert scaled["maxReplicaCount"] <= values["worker"]["partitions"]
    metadata = scaled["triggers"][0]["metadata"]
    assert metadata["bootstrapServers"] == values["kafka"]["bootstrap"]
    assert (metadata["consumerGroup"], metadata["topic"]) == ("ccmon", "ccmon.events")
    assert (metadata["sasl"], metadata["tls"]) == ("scram_sha512", "enable")
    auth = one(full, "TriggerAuthentication", "ccmon-kafka")["spec"]["secretTargetRef"]
    assert {(r["parameter"], r["name"], r["key"]) for r in auth} == {
        ("username", "ccmon-credentials", "kafka-username"),
        ("password", "ccmon-credentials", "kafka-password"),
        ("ca", "ccmon-kafka-tls", "ca.crt"),
        ("cert", "ccmon-kafka-tls", "tls.crt"),
        ("key", "ccmon-kafka-tls", "tls.key"),
    }


# --------------------------------------------------------------------------- rules and dashboards


def test_chart_reads_rules_dashboards_and_config_through_links() -> None:
    """One source of truth: the chart's files/ are links into deploy/, not copies."""
    for name, target in (
        ("rules", RULES_DIR),
        ("dashboards", DASHBOARDS_DIR),
        ("ccmon.toml", REPO / "deploy" / "config" / "ccmon.toml"),
    ):
        link = CHART / "files" / name
        assert link.is_symlink(), f"{link} must be a symbolic link to {target}"
        assert link.resolve() == target.resolve()


def test_prometheus_rule_holds_the_rule_files_groups_verbatim(full: list[Doc]) -> None:
    rule = one(full, "PrometheusRule", "ccmon")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = rule["spec"]["groups"]
    assert groups == rule_groups_of_repo()
    # Prometheus's templates reach Prometheus unrendered.
    assert any("{{ $labels.queue }}" in str(r.get("annotations", {})) for g in groups for r in g["rules"])


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH (apt-get install prometheus)")
def test_rendered_rules_pass_promtool_check_and_the_rule_tests(full: list[Doc], tmp_path: Path) -> None:
    rendered = tmp_path / "rendered-rules.yml"
    rendered.write_text(
        yaml.safe_dump({"groups": one(full, "PrometheusRule", "ccmon")["spec"]["groups"]}), encoding="utf-8"
    )
    done = subprocess.run([PROMTOOL, "check", "rules", str(rendered)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    tests = sorted(RULE_TESTS_DIR.glob("*.yml"))
    assert tests
    copies = []
    for path in tests:
        suite = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert {str((path.parent / f).resolve()) for f in suite["rule_files"]} <= {
            str(p.resolve()) for p in RULES_DIR.glob("*.yml")
        }
        suite["rule_files"] = [str(rendered)]
        copy = tmp_path / path.name
        copy.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
        copies.append(str(copy))
    done = subprocess.run([PROMTOOL, "test", "rules", *copies], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.count("SUCCESS") == len(copies), done.stdout[-2000:]


def test_dashboards_configmaps_for_the_grafana_sidecar(full: list[Doc]) -> None:
    maps = [d for d in full if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    files = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS_DIR.glob("*.json")}
    assert files
    assert {name: text for m in maps for name, text in m["data"].items()} == files
    assert all(m["metadata"]["annotations"]["grafana_folder"] == "ccmon" for m in maps)


def test_packaged_chart_carries_the_linked_files(helm_env: dict[str, str], full: list[Doc], tmp_path: Path) -> None:
    """helm package follows the links: the archive renders the same rules and dashboards."""
    done = helm(helm_env, "package", str(CHART), "--destination", str(tmp_path))
    assert done.returncode == 0, done.stderr
    archive = next(tmp_path.glob("ccmon-*.tgz"))
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert not [n for n, m in members.items() if m.issym() or m.islnk()]
    assert "ccmon/files/rules/ccmon-alerts.yml" in members
    assert not [n for n in members if n.startswith("ccmon/ci/")]
    packaged = render(helm_env, "-f", str(FULL_VALUES), chart=archive)
    assert one(packaged, "PrometheusRule", "ccmon") == one(full, "PrometheusRule", "ccmon")
    assert [d for d in packaged if d["kind"] == "ConfigMap"] == [d for d in full if d["kind"] == "ConfigMap"]


# --------------------------------------------------------------------------- refused values


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set-string", "worker.replicas=x"], "at '/worker/replicas': got string, want integer"),
        (["--set", "worker.partitions=0"], "at '/worker/partitions'"),
        (["--set", "worker.webPort=70000"], "at '/worker/webPort'"),
        (["--set", "kafka.securityProtocol=TLS"], "at '/kafka/securityProtocol'"),
        (["--set", "redis.url=http://redis:6379"], "at '/redis/url'"),
        (["--set", "worker.replcas=2"], "replcas"),
        (["--set", "securityContext.readOnlyRootFilesystem=false"], "at '/securityContext/readOnlyRootFilesystem'"),
        (["--set", "podSecurityContext.runAsNonRoot=false"], "at '/podSecurityContext/runAsNonRoot'"),
    ],
    ids=[
        "replicas-not-integer",
        "no-partitions",
        "port",
        "protocol",
        "redis-scheme",
        "unknown-key",
        "writable-root",
        "root",
    ],
)
def test_schema_refuses_bad_values(helm_env: dict[str, str], args: list[str], message: str) -> None:
    error = refused(helm_env, "-f", str(MINIMAL_VALUES), *args)
    assert "values don't meet the specifications of the schema" in error, error
    assert message in error, error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "worker.replicas=5"],
            "worker.replicas: 5 workers for 4 partitions (worker.partitions): a worker beyond the events topic's "
            "partition count gets no partition and sits idle",
        ),
        (
            ["--set", "keda.enabled=true", "--set", "keda.maxReplicaCount=8"],
            "keda.maxReplicaCount: 8 workers for 4 partitions (worker.partitions)",
        ),
        (
            ["--set", "secrets.customerKeySecret=short"],
            "secrets.customerKeySecret: must be at least 32 characters, got 5 characters (value not shown)",
        ),
        (
            ["--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.username=ccmon"],
            "kafka.sasl.password: required with kafka.securityProtocol SASL_SSL",
        ),
        (["--set", "redis.url=redis://:hunter2hunter2@redis:6379/0"], "redis.url: holds a password (value not shown)"),
        (
            ["--set", "redis.tls.existingSecret=redis-tls"],
            'redis.tls.existingSecret: set, but redis.url "redis://redis:6379/0"',
        ),
        (
            ["--set", "secrets.existingSecret=mine", "--set", "redis.password=hunter2hunter2"],
            "redis.password: set, but secrets.existingSecret (mine) provides the credentials",
        ),
    ],
    ids=[
        "replicas-above-partitions",
        "keda-above-partitions",
        "short-secret",
        "sasl-no-password",
        "password-in-url",
        "redis-tls-without-rediss",
        "password-beside-existing-secret",
    ],
)
def test_templates_refuse_inconsistent_values(helm_env: dict[str, str], args: list[str], message: str) -> None:
    error = refused(helm_env, "-f", str(MINIMAL_VALUES), *args)
    assert message in error, error
    assert "hunter2" not in error


def test_customer_key_secret_is_required(helm_env: dict[str, str]) -> None:
    error = refused(helm_env)
    assert "secrets.customerKeySecret: required (at least 32 characters" in error, error
    # ...unless an existing Secret holds it (and then the value must not be set as well).
    assert "secrets.customerKeySecret: set, but secrets.existingSecret" in refused(
        helm_env, "-f", str(MINIMAL_VALUES), "--set", "secrets.existingSecret=mine"
    )
    docs = render(helm_env, "--set", "secrets.existingSecret=mine")
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_replicas_up_to_the_partition_count_are_fine(helm_env: dict[str, str]) -> None:
    docs = render(helm_env, "-f", str(MINIMAL_VALUES), "--set", "worker.replicas=4")
    assert one(docs, "Deployment", "ccmon-worker")["spec"]["replicas"] == 4


# --------------------------------------------------------------------------- pods


def test_pods_run_non_root_read_only_without_privileges(rendered: list[Doc]) -> None:
    uid = int(re.search(r"--uid (\d+)", (REPO / "Dockerfile").read_text(encoding="utf-8")).group(1))
    specs = dict(pod_specs(rendered))
    assert set(specs) == {"ccmon-worker", "ccmon-exporter"}
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert (pod["runAsNonRoot"], pod["runAsUser"], pod["seccompProfile"]["type"]) == (
            True,
            uid,
            "RuntimeDefault",
        ), name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
            # Read-only root: the working directory (faust's data) and /tmp are emptyDirs.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            for path in ("/var/lib/ccmon", "/tmp"):
                assert "emptyDir" in volumes[mounts[path]], (name, path)


def test_probes_on_the_health_endpoints(rendered: list[Doc], full: list[Doc]) -> None:
    specs = dict(pod_specs(rendered))
    worker = specs["ccmon-worker"]["containers"][0]
    exporter = specs["ccmon-exporter"]["containers"][0]
    worker_ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    exporter_ports = {p["name"]: p["containerPort"] for p in exporter["ports"]}
    assert worker_ports == {"web": 9109}
    assert env_of(worker)["CCMON_WORKER_WEB_PORT"] == "9109"
    assert exporter_ports == {"http": 9108}
    for container, port in ((worker, "web"), (exporter, "http")):
        for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert (get["path"], get["port"]) == (path, port), (container["name"], probe)
    # Off loopback explicitly: the exporter's default host is 127.0.0.1.
    assert exporter["command"] == ["ccmon", "exporter", "--host", "0.0.0.0", "--port", "9108"]
    assert worker["command"] == ["ccmon", "worker"]
    tls_exporter = dict(pod_specs(full))["ccmon-exporter"]["containers"][0]
    assert tls_exporter["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_environment_names_only_settings_of_the_command(rendered: list[Doc]) -> None:
    """Each pod's CCMON_* variables are settings its command reads (a typo, or a setting of
    the other command, would be ignored silently)."""
    flags = {"ccmon-worker": worker_command.FLAGS, "ccmon-exporter": exporter_command.FLAGS}
    for name, spec in pod_specs(rendered):
        known = {var for setting in flags[name] for var in ccmon_settings.SOURCES[setting][1]}
        for container in spec["containers"]:
            unknown = sorted(set(env_of(container)) - known)
            assert unknown == [], (name, unknown)


def test_secret_files_are_mounted_where_the_environment_points(rendered: list[Doc]) -> None:
    """Every CCMON_*_FILE names a file a mounted Secret or ConfigMap provides."""
    for name, spec in pod_specs(rendered):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            files = {k: v for k, v in env_of(container).items() if k.endswith("_FILE") or k == "CCMON_CONFIG"}
            assert files, name
            for var, path in files.items():
                directory, _, filename = path.rpartition("/")
                assert directory in mounts, (name, var, path)
                source = mounts[directory].get("secret") or mounts[directory].get("configMap")
                items = source.get("items")
                if items is not None:
                    assert filename in {i["path"] for i in items}, (name, var, path)
                elif "configMap" in mounts[directory]:
                    config_map = [
                        d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["name"]
                    ]
                    assert filename in config_map[0]["data"], (name, var, path)
                else:  # a TLS secret of the user's: the kubernetes.io/tls keys
                    assert filename in ("ca.crt", "tls.crt", "tls.key"), (name, var, path)
    worker = dict(pod_specs(rendered))["ccmon-worker"]["containers"][0]
    assert env_of(worker)["CCMON_CUSTOMER_KEY_SECRET_FILE"] == "/etc/ccmon/secrets/customer-key-secret"
    exporter = dict(pod_specs(rendered))["ccmon-exporter"]["containers"][0]
    assert "CCMON_CUSTOMER_KEY_SECRET_FILE" not in env_of(exporter)


def test_minimal_release_environment_is_accepted_by_ccmon(minimal: list[Doc], tmp_path: Path) -> None:
    """The worker's and the exporter's environment, with the rendered Secret and ConfigMap as
    files where the pods mount them (moved under tmp_path), pass streams.settings."""
    secret = {k: base64.b64decode(v).decode() for k, v in one(minimal, "Secret", "ccmon")["data"].items()}
    config = one(minimal, "ConfigMap", "ccmon-config")["data"]

    def place(mount_path: str, volume: Doc) -> None:
        directory = tmp_path / mount_path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            for item in volume["secret"]["items"]:
                (directory / item["path"]).write_text(secret[item["key"]], encoding="utf-8")
        elif "configMap" in volume:
            for key, text in config.items():
                (directory / key).write_text(text, encoding="utf-8")

    for name, spec in pod_specs(minimal):
        volumes = {v["name"]: v for v in spec["volumes"]}
        container = spec["containers"][0]
        for mount in container["volumeMounts"]:
            place(mount["mountPath"], volumes[mount["name"]])
        environ = {
            k: (str(tmp_path) + v if k.endswith("_FILE") or k == "CCMON_CONFIG" else v)
            for k, v in env_of(container).items()
        }
        settings = ccmon_settings.from_args(None, environ)
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.config_path == f"{tmp_path}/etc/ccmon/config/ccmon.toml"
        load_config(settings.config_path)  # the mounted KPI configuration loads as the commands load it
        if name == "ccmon-worker":
            assert settings.kafka_bootstrap == "kafka:9092"
            assert settings.customer_key_secret == secret["customer-key-secret"]
            assert settings.worker_web_port == 9109
            assert not settings.insecure_dev


def test_network_policies_allow_only_what_ccmon_talks_to(full: list[Doc]) -> None:
    worker = one(full, "NetworkPolicy", "ccmon-worker")["spec"]
    exporter = one(full, "NetworkPolicy", "ccmon-exporter")["spec"]
    assert worker["policyTypes"] == exporter["policyTypes"] == ["Ingress", "Egress"]

    def ports(rules: list[Doc]) -> set[tuple[int, str]]:
        return {(p["port"], p["protocol"]) for rule in rules for p in rule["ports"]}

    assert ports(worker["ingress"]) == {(9109, "TCP")}
    assert ports(worker["egress"]) == {(9093, "TCP"), (6380, "TCP"), (53, "UDP"), (53, "TCP")}
    assert ports(exporter["ingress"]) == {(9108, "TCP")}
    assert ports(exporter["egress"]) == {(6380, "TCP"), (53, "UDP"), (53, "TCP")}
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert worker["ingress"][0]["from"] == exporter["ingress"][0]["from"] == monitoring


def test_service_monitors_scrape_as_the_rules_expect(full: list[Doc]) -> None:
    exporter = one(full, "ServiceMonitor", "ccmon-exporter")["spec"]
    endpoint = exporter["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["serverName"] == f"ccmon-exporter.{NAMESPACE}.svc"
    assert endpoint["basicAuth"]["password"] == {"name": "ccmon-credentials", "key": "exporter-basic-auth-password"}
    jobs = {
        one(full, "Service", n)["metadata"]["labels"][exporter["jobLabel"]] for n in ("ccmon-exporter", "ccmon-worker")
    }
    assert jobs == {"ccmon-exporter", "ccmon-worker"}
    # ...and those are the jobs the rules read.
    rules_text = "".join(p.read_text(encoding="utf-8") for p in RULES_DIR.glob("*.yml"))
    assert {f'job="{job}"' for job in jobs} <= set(re.findall(r'job="[^"]+"', rules_text))
