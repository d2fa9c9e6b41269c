"""Static checks of the compose stack: docker-compose.yml and the files it mounts.

No Docker daemon is needed. The checks are small helper functions that return the
problems they find (an empty list when all is well); each helper is also fed a
deliberately broken input to show that it can fail. The compose file is validated against
the Compose Specification's own JSON schema (vendored in ``compose_spec/``, Apache-2.0, with
its source), the schema that ``docker compose config`` applies, so no Docker is needed for
that either. When ``promtool`` and ``amtool`` are on PATH (``make test`` installs them), the
Prometheus/Alertmanager configs are also checked by the real tools.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "compose_spec" / "compose-spec.json"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_FILE = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_FILE = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
GRAFANA_PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"

APP_SERVICES = ("worker", "exporter")
APP_ENV_KEYS = ("CCMON_KAFKA_BOOTSTRAP", "CCMON_REDIS_URL", "CCMON_CONFIG")
LOCALHOST = {"localhost", "127.0.0.1", "::1"}

Services = Mapping[str, Mapping[str, Any]]


# --------------------------------------------------------------------------- helpers


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def compose_schema_problems(compose: Any, schema_file: Path = COMPOSE_SCHEMA) -> list[str]:
    """Where ``compose`` breaks the Compose Specification's JSON schema (draft-07): one
    "path: message" line per error, sorted by path. Of a ``oneOf``/``anyOf`` error, the
    deepest sub-error is named when it lies below the failing value (e.g. a bad condition)."""
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    problems = []
    for error in validator.iter_errors(compose):
        deepest = max(error.context or [error], key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) <= len(error.absolute_path):
            deepest = error
        problems.append(f"{'/'.join(str(p) for p in deepest.absolute_path) or '(top)'}: {deepest.message}")
    return sorted(problems)


def services_of(compose: Mapping[str, Any]) -> Services:
    services = compose.get("services") or {}
    assert isinstance(services, Mapping), "compose 'services' must be a mapping"
    return services


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def command_args(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(arg) for arg in command]


def env_of(service: Mapping[str, Any]) -> dict[str, str]:
    """``environment`` as a dict, whether written as a mapping or a KEY=VALUE list."""
    env = service.get("environment") or {}
    if isinstance(env, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    result: dict[str, str] = {}
    for item in env:
        key, _, value = str(item).partition("=")
        result[key] = value
    return result


@dataclass(frozen=True)
class PortMapping:
    host_ip: str
    host_port: int | None  # None: not published on a fixed host port
    container_port: int
    protocol: str


def _port_range(text: str) -> list[int]:
    start, _, end = text.partition("-")
    return list(range(int(start), int(end or start) + 1))


def parse_port(entry: Any) -> list[PortMapping]:
    """One ``ports:`` entry (short or long syntax, ranges allowed) -> its mappings."""
    if isinstance(entry, Mapping):
        published = entry.get("published")
        long_targets = _port_range(str(entry["target"]))
        long_hosts: list[int | None] = (
            list(_port_range(str(published))) if published not in (None, "") else [None] * len(long_targets)
        )
        assert len(long_hosts) == len(long_targets), f"port range sizes differ in {entry!r}"
        return [
            PortMapping(str(entry.get("host_ip", "")), h, t, str(entry.get("protocol", "tcp")))
            for h, t in zip(long_hosts, long_targets, strict=True)
        ]
    text = str(entry)
    text, _, protocol = text.partition("/")
    # IPv6 host addresses are written in brackets: "[::1]:8080:80".
    host_ip = ""
    match = re.match(r"^\[([^\]]+)\]:(.*)$", text)
    if match:
        host_ip, text = match.group(1), match.group(2)
    parts = text.split(":")
    if len(parts) == 3:
        host_ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    elif len(parts) == 1:
        host, container = "", parts[0]
    else:
        raise AssertionError(f"cannot parse port entry {entry!r}")
    targets = _port_range(container)
    hosts: list[int | None] = list(_port_range(host)) if host else [None] * len(targets)
    assert len(hosts) == len(targets), f"port range sizes differ in {entry!r}"
    return [PortMapping(host_ip, h, t, protocol or "tcp") for h, t in zip(hosts, targets, strict=True)]


def published_ports(service: Mapping[str, Any]) -> list[PortMapping]:
    return [m for entry in as_list(service.get("ports")) for m in parse_port(entry)]


def find_port_clashes(services: Services) -> list[str]:
    """Host ports (per protocol) published by more than one service, or twice by one."""
    owners: dict[tuple[int, str], list[str]] = {}
    for name, service in services.items():
        for mapping in published_ports(service):
            if mapping.host_port is not None:
                owners.setdefault((mapping.host_port, mapping.protocol), []).append(name)
    return [
        f"host port {port}/{proto} published by {', '.join(names)}"
        for (port, proto), names in sorted(owners.items())
        if len(names) > 1
    ]


def dependencies_of(service: Mapping[str, Any]) -> dict[str, str | None]:
    """``depends_on`` -> {service: condition} (condition None for the short list syntax)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, Mapping):
        return {str(k): (v or {}).get("condition") for k, v in deps.items()}
    return {str(d): None for d in deps}


def missing_dependencies(services: Services) -> list[str]:
    return [
        f"{name} depends on unknown service {dep!r}"
        for name, service in services.items()
        for dep in dependencies_of(service)
        if dep not in services
    ]


def unhealthy_dependencies(services: Services) -> list[str]:
    """``condition: service_healthy`` on a service that has no healthcheck."""
    problems = []
    for name, service in services.items():
        for dep, condition in dependencies_of(service).items():
            if condition != "service_healthy" or dep not in services:
                continue
            check = services[dep].get("healthcheck") or {}
            if not check.get("test") or check.get("disable"):
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
    return problems


@dataclass(frozen=True)
class Mount:
    kind: str  # "bind" or "volume"
    source: str
    target: str
    read_only: bool


def parse_volume(entry: Any) -> Mount:
    if isinstance(entry, Mapping):
        return Mount(
            str(entry.get("type", "volume")),
            str(entry.get("source", "")),
            str(entry["target"]),
            bool(entry.get("read_only", False)),
        )
    parts = str(entry).split(":")
    if len(parts) == 1:  # anonymous volume
        return Mount("volume", "", parts[0], False)
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) > 2 else []
    kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    return Mount(kind, source, target, "ro" in options)


def mounts_of(service: Mapping[str, Any]) -> list[Mount]:
    return [parse_volume(entry) for entry in as_list(service.get("volumes"))]


def undeclared_volumes(compose: Mapping[str, Any]) -> list[str]:
    declared = set((compose.get("volumes") or {}).keys())
    return [
        f"{name} uses undeclared named volume {mount.source!r}"
        for name, service in services_of(compose).items()
        for mount in mounts_of(service)
        if mount.kind == "volume" and mount.source and mount.source not in declared
    ]


def undeclared_networks(compose: Mapping[str, Any]) -> list[str]:
    declared = set((compose.get("networks") or {}).keys()) | {"default"}
    problems = []
    for name, service in services_of(compose).items():
        networks = service.get("networks") or []
        for network in networks.keys() if isinstance(networks, Mapping) else networks:
            if network not in declared:
                problems.append(f"{name} uses undeclared network {network!r}")
    return problems


def missing_bind_sources(compose: Mapping[str, Any], base_dir: Path) -> list[str]:
    problems = []
    for name, service in services_of(compose).items():
        for mount in mounts_of(service):
            if mount.kind != "bind":
                continue
            if not mount.source.startswith("."):
                problems.append(f"{name} bind-mounts {mount.source!r}: use a repo-relative path")
            elif not (base_dir / mount.source).exists():
                problems.append(f"{name} bind-mounts {mount.source!r}, which is not in the repo")
    return problems


def host_path(service: Mapping[str, Any], container_path: str, base_dir: Path) -> Path | None:
    """The repo path that a bind mount of ``service`` puts at ``container_path``, if any."""
    wanted = PurePosixPath(container_path)
    best: tuple[int, Path] | None = None
    for mount in mounts_of(service):
        if mount.kind != "bind":
            continue
        target = PurePosixPath(mount.target)
        if wanted == target or target in wanted.parents:
            rest = wanted.relative_to(target)
            depth = len(target.parts)
            if best is None or depth > best[0]:
                best = (depth, (base_dir / mount.source / rest).resolve())
    return best[1] if best else None


def listening_ports(service: Mapping[str, Any]) -> set[int]:
    """Container ports the service is known to listen on: ``ports`` targets, ``expose``,
    and a ``--port N`` / ``--web.listen-address=:N`` in its command."""
    ports = {m.container_port for m in published_ports(service)}
    for entry in as_list(service.get("expose")):
        ports.update(_port_range(str(entry).partition("/")[0]))
    args = command_args(service)
    for i, arg in enumerate(args):
        if arg == "--port" and i + 1 < len(args):
            ports.add(int(args[i + 1]))
        elif arg.startswith("--port="):
            ports.add(int(arg.split("=", 1)[1]))
        elif arg.startswith("--web.listen-address="):
            ports.add(int(arg.rsplit(":", 1)[1]))
    return ports


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def prometheus_targets(prom: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(what, "host:port") for every static scrape and Alertmanager target."""
    for job in prom.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                yield f"scrape job {job['job_name']!r}", str(target)
    for am in (prom.get("alerting") or {}).get("alertmanagers") or []:
        for static in am.get("static_configs") or []:
            for target in static.get("targets") or []:
                yield "alertmanager", str(target)


def find_service_by_image(services: Services, image_prefix: str) -> str | None:
    for name, service in services.items():
        if str(service.get("image", "")).startswith(image_prefix):
            return name
    return None


def bad_targets(targets: list[tuple[str, str]], services: Services, self_service: str | None) -> list[str]:
    """Targets that do not name a compose service listening on that port.

    ``localhost`` targets are resolved to ``self_service`` (the container doing the scraping).
    """
    problems = []
    for what, target in targets:
        host, port = split_host_port(target)
        name = self_service if host in LOCALHOST else host
        if name is None or name not in services:
            problems.append(f"{what}: target {target!r} is not a compose service")
        elif port not in listening_ports(services[name]):
            problems.append(
                f"{what}: target {target!r}, but {name} listens on {sorted(listening_ports(services[name]))}"
            )
    return problems


def parse_listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    result = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, address = item.partition("://")
        host, port = split_host_port(address)
        result[name] = (host, port)
    return result


def kafka_listener_problems(service: Mapping[str, Any]) -> list[str]:
    """Every port kafka publishes must be a listener advertised to the host on that host port,
    and every advertised listener must be one kafka listens on."""
    env = env_of(service)
    listeners = parse_listeners(env.get("KAFKA_LISTENERS", ""))
    advertised = parse_listeners(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
    problems = []
    for name in advertised:
        if name not in listeners:
            problems.append(f"advertised listener {name} is not in KAFKA_LISTENERS")
    for mapping in published_ports(service):
        by_port = [n for n, (_, p) in listeners.items() if p == mapping.container_port]
        if not by_port:
            problems.append(f"published container port {mapping.container_port} is not a listener")
            continue
        name = by_port[0]
        if name not in advertised:
            problems.append(f"listener {name} on published port {mapping.container_port} is not advertised")
            continue
        host, port = advertised[name]
        if mapping.host_port != port or host not in LOCALHOST:
            problems.append(
                f"listener {name} is advertised as {host}:{port}, but compose publishes "
                f"host port {mapping.host_port} for container port {mapping.container_port}"
            )
    return problems


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> Services:
    return services_of(compose)


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_FILE)


# --------------------------------------------------------------------------- compose file


def test_expected_services_and_top_level_keys(compose: dict[str, Any], services: Services) -> None:
    assert compose.get("name") == "ccmon"
    assert "version" not in compose, "the top-level 'version' key is obsolete"
    expected = {"kafka", "redis", "worker", "exporter", "prometheus", "alertmanager", "grafana"}
    assert expected <= set(services), f"missing services: {sorted(expected - set(services))}"


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert compose_schema_problems(compose) == []


def test_compose_specification_violations_are_detected(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["imgae"] = "redis:7.2"  # a misspelt key
    broken["services"]["grafana"]["depends_on"] = {"prometheus": {"condition": "service_healty"}}
    broken["services"]["exporter"]["ports"] = "127.0.0.1:9108:9108"  # a string, not a list
    broken["volumes"]["redis-data"] = "local"
    assert compose_schema_problems(broken) == [
        "services/exporter/ports: '127.0.0.1:9108:9108' is not of type 'array'",
        "services/grafana/depends_on/prometheus/condition: 'service_healty' is not one of "
        "['service_started', 'service_healthy', 'service_completed_successfully']",
        "services/redis: 'imgae' does not match any of the regexes: '^x-'",
        "volumes/redis-data: 'local' is not of type 'object', 'null'",
    ]


def test_depends_on_names_existing_services(services: Services) -> None:
    assert missing_dependencies(services) == []


def test_missing_dependency_is_detected(services: Services) -> None:
    broken: dict[str, Any] = copy.deepcopy(dict(services))
    broken["worker"]["depends_on"] = {"kafak": {"condition": "service_healthy"}}
    assert missing_dependencies(broken) == ["worker depends on unknown service 'kafak'"]


def test_healthy_conditions_have_healthchecks(services: Services) -> None:
    assert unhealthy_dependencies(services) == []
    for app in APP_SERVICES:
        deps = dependencies_of(services[app])
        assert deps.get("kafka") == "service_healthy"
        assert deps.get("redis") == "service_healthy"


def test_healthy_condition_without_healthcheck_is_detected(services: Services) -> None:
    broken: dict[str, Any] = copy.deepcopy(dict(services))
    del broken["redis"]["healthcheck"]
    assert any("redis has no healthcheck" in p for p in unhealthy_dependencies(broken))


def test_named_volumes_and_networks_are_declared(compose: dict[str, Any]) -> None:
    assert undeclared_volumes(compose) == []
    assert undeclared_networks(compose) == []


def test_undeclared_volume_is_detected(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["volumes"] = ["redis-dta:/data"]
    assert undeclared_volumes(broken) == ["redis uses undeclared named volume 'redis-dta'"]


def test_no_host_port_is_published_twice(services: Services) -> None:
    assert find_port_clashes(services) == []


def test_port_clash_is_detected() -> None:
    broken: dict[str, Any] = {
        "kafka": {"ports": ["9092", "127.0.0.1:9093:9093"]},  # 9092: ephemeral host port
        "alertmanager": {"ports": [{"target": 9093, "published": "9093", "protocol": "tcp"}]},
        "other": {"ports": ["9092"]},
        "dns": {"ports": ["5353:53/udp"]},
        "web": {"ports": ["5353:80"]},  # same number, other protocol: no clash
    }
    assert find_port_clashes(broken) == ["host port 9093/tcp published by kafka, alertmanager"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("8080:80", [PortMapping("", 8080, 80, "tcp")]),
        ("127.0.0.1:8080:80/udp", [PortMapping("127.0.0.1", 8080, 80, "udp")]),
        ("[::1]:8080:80", [PortMapping("::1", 8080, 80, "tcp")]),
        ("80", [PortMapping("", None, 80, "tcp")]),
        (9000, [PortMapping("", None, 9000, "tcp")]),
        ("9000-9001:90-91", [PortMapping("", 9000, 90, "tcp"), PortMapping("", 9001, 91, "tcp")]),
        ({"target": 80, "published": 8080}, [PortMapping("", 8080, 80, "tcp")]),
    ],
)
def test_parse_port(entry: Any, expected: list[PortMapping]) -> None:
    assert parse_port(entry) == expected


def test_bind_mount_sources_exist(compose: dict[str, Any]) -> None:
    assert missing_bind_sources(compose, COMPOSE_FILE.parent) == []


def test_missing_bind_source_is_detected(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["grafana"]["volumes"] = ["./deploy/grafana/no-such-dir:/x:ro"]
    assert missing_bind_sources(broken, COMPOSE_FILE.parent) == [
        "grafana bind-mounts './deploy/grafana/no-such-dir', which is not in the repo"
    ]


def test_config_mounts_are_read_only(services: Services) -> None:
    for name, service in services.items():
        for mount in mounts_of(service):
            if mount.kind == "bind":
                assert mount.read_only, f"{name}: bind mount {mount.source} should be :ro"


def test_build_context_and_dockerfile_exist(services: Services) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = COMPOSE_FILE.parent / build.get("context", ".")
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert (context / build.get("dockerfile", "Dockerfile")).is_file()


# --------------------------------------------------------------------------- app services


def test_worker_and_exporter_share_image_and_env(services: Services) -> None:
    worker, exporter = (services[name] for name in APP_SERVICES)
    assert worker.get("build") is not None
    assert worker.get("build") == exporter.get("build")
    assert worker.get("image") == exporter.get("image")
    worker_env, exporter_env = env_of(worker), env_of(exporter)
    for key in APP_ENV_KEYS:
        assert worker_env.get(key), f"worker: {key} not set"
        assert worker_env.get(key) == exporter_env.get(key), f"{key} differs"
    assert mounts_of(worker) == mounts_of(exporter)


def test_app_env_points_at_compose_services(services: Services) -> None:
    env = env_of(services["worker"])
    kafka_env = env_of(services["kafka"])
    advertised = parse_listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"]).values()
    for address in env["CCMON_KAFKA_BOOTSTRAP"].split(","):
        host, port = split_host_port(address)
        assert (host, port) in advertised, f"{address} is not an advertised Kafka listener"

    redis = urlsplit(env["CCMON_REDIS_URL"])
    assert redis.scheme == "redis"
    assert redis.hostname is not None and redis.hostname in services
    assert (redis.port or 6379) in listening_ports(services[redis.hostname])

    config = host_path(services["worker"], env["CCMON_CONFIG"], COMPOSE_FILE.parent)
    assert config is not None, "CCMON_CONFIG is not inside a bind mount"
    assert config.is_file(), f"CCMON_CONFIG maps to {config}, which does not exist"


def test_app_commands_match_the_dockerfile(services: Services) -> None:
    """No ENTRYPOINT in the image, so every compose command starts with ``ccmon``."""
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    final_stage = re.split(r"(?im)^\s*FROM\s", dockerfile)[-1]
    assert not re.search(r"(?im)^\s*ENTRYPOINT\s", final_stage), "unexpected ENTRYPOINT"
    assert re.search(r"(?im)^\s*USER\s+(?!root\b|0\b)\S+", final_stage), "image must not run as root"
    assert command_args(services["worker"]) == ["ccmon", "worker"]
    assert command_args(services["exporter"])[:2] == ["ccmon", "exporter"]


def test_exporter_port_is_published_and_health_checked(services: Services) -> None:
    exporter = services["exporter"]
    args = command_args(exporter)
    port = int(args[args.index("--port") + 1])
    assert port in {m.container_port for m in published_ports(exporter)}
    health = " ".join(as_list(exporter["healthcheck"]["test"]))
    assert f"http://localhost:{port}/metrics" in health


def test_the_exporter_listens_on_all_addresses_explicitly(services: Services) -> None:
    """ccmon's exporter listens on 127.0.0.1 by default, which Prometheus's container cannot
    reach: compose says 0.0.0.0 (and the image, for any other container), and publishes it on
    the host's loopback only."""
    args = command_args(services["exporter"])
    assert "--host" in args and args[args.index("--host") + 1] == "0.0.0.0"
    assert {m.host_ip for m in published_ports(services["exporter"])} <= LOCALHOST
    final_stage = re.split(r"(?im)^\s*FROM\s", DOCKERFILE.read_text(encoding="utf-8"))[-1]
    assert re.search(r"(?m)^\s*ENV\s+CCMON_EXPORTER_HOST=0\.0\.0\.0\s*$", final_stage)


def test_the_customer_key_secret_is_required_and_not_written_down(services: Services) -> None:
    """The worker (and ``ccmon rebuild``, run in either container) need the secret: compose
    takes it from the environment or .env and refuses to start without one (``:?``)."""
    for app in APP_SERVICES:
        value = env_of(services[app]).get("CCMON_CUSTOMER_KEY_SECRET", "")
        assert re.fullmatch(r"\$\{CCMON_CUSTOMER_KEY_SECRET:\?[^}]+\}", value), f"{app}: {value!r}"
    assert not re.search(
        r"(?im)^\s*(ENV|ARG)\s+CCMON_CUSTOMER_KEY", DOCKERFILE.read_text(encoding="utf-8")
    )  # not baked in


# --------------------------------------------------------------------------- kafka


def test_kafka_advertises_the_published_port(services: Services) -> None:
    kafka = services["kafka"]
    assert published_ports(kafka), "kafka publishes no port"
    assert kafka_listener_problems(kafka) == []
    env = env_of(kafka)
    controller = parse_listeners(env["KAFKA_LISTENERS"])["CONTROLLER"][1]
    assert controller not in {m.container_port for m in published_ports(kafka)}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:{controller}"


def test_kafka_advertising_the_wrong_port_is_detected(services: Services) -> None:
    broken = copy.deepcopy(dict(services["kafka"]))
    broken["ports"] = ["127.0.0.1:29092:19092"]  # published on 29092, advertised as 19092
    problems = kafka_listener_problems(broken)
    assert len(problems) == 1 and "host port 29092" in problems[0]

    broken["ports"] = ["9093:9093"]  # the controller port: listened on, never advertised
    assert kafka_listener_problems(broken) == ["listener CONTROLLER on published port 9093 is not advertised"]


# --------------------------------------------------------------------------- prometheus / grafana


def test_scrape_targets_are_compose_services(services: Services, prometheus_config: dict[str, Any]) -> None:
    targets = list(prometheus_targets(prometheus_config))
    jobs = {job["job_name"] for job in prometheus_config["scrape_configs"]}
    assert {"ccmon-exporter", "ccmon-worker", "prometheus"} <= jobs
    assert ("alertmanager", "alertmanager:9093") in targets
    self_service = find_service_by_image(services, "prom/prometheus")
    assert bad_targets(targets, services, self_service) == []


def test_bad_scrape_targets_are_detected(services: Services) -> None:
    targets = [("scrape job 'x'", "exporter:9999"), ("scrape job 'y'", "nosuch:9108")]
    assert bad_targets(targets, services, "prometheus") == [
        "scrape job 'x': target 'exporter:9999', but exporter listens on [9108]",
        "scrape job 'y': target 'nosuch:9108' is not a compose service",
    ]


def test_prometheus_and_alertmanager_config_paths_are_mounted(
    services: Services, prometheus_config: dict[str, Any]
) -> None:
    base = COMPOSE_FILE.parent
    for name, flag, expected in [
        ("prometheus", "--config.file=", PROMETHEUS_FILE),
        ("alertmanager", "--config.file=", ALERTMANAGER_FILE),
    ]:
        (path,) = [a.split("=", 1)[1] for a in command_args(services[name]) if a.startswith(flag)]
        assert host_path(services[name], path, base) == expected.resolve()
    assert "--web.enable-lifecycle" in command_args(services["prometheus"])
    for pattern in prometheus_config.get("rule_files") or []:
        mapped = host_path(services["prometheus"], pattern, base)
        assert mapped is not None, f"rule files {pattern} are not inside a bind mount"
        assert PROMETHEUS_DIR.resolve() in mapped.parents


def test_grafana_provisioning_matches_mounts(services: Services) -> None:
    grafana = services["grafana"]
    base = COMPOSE_FILE.parent
    assert host_path(grafana, "/etc/grafana/provisioning", base) == GRAFANA_PROVISIONING.resolve()

    datasources = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")
    targets = []
    for ds in datasources["datasources"]:
        url = urlsplit(ds["url"])
        targets.append((f"datasource {ds['name']!r}", f"{url.hostname}:{url.port}"))
    assert bad_targets(targets, services, None) == []

    providers = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "ccmon.yml")
    for provider in providers["providers"]:
        path = provider["options"]["path"]
        mapped = host_path(grafana, path, base)
        assert mapped is not None and mapped.is_dir(), f"dashboards path {path} is not mounted"


# --------------------------------------------------------------------------- real tools


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH")
def test_promtool_check_config(tmp_path: Path) -> None:
    # The config names container paths (/etc/prometheus/...); check a copy of the
    # mounted directory with those paths pointed at the copy, so rule files are checked too.
    copy_dir = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy_dir)
    config = copy_dir / "prometheus.yml"
    config.write_text(
        PROMETHEUS_FILE.read_text(encoding="utf-8").replace("/etc/prometheus/", f"{copy_dir}/"),
        encoding="utf-8",
    )
    result = subprocess.run(
        ["promtool", "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool not on PATH")
def test_amtool_check_config() -> None:
    result = subprocess.run(
        ["amtool", "check-config", str(ALERTMANAGER_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
