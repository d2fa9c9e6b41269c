"""The dashboards and alert rules against a real Prometheus and Alertmanager.

A real ``prometheus`` (Debian package ``prometheus``) scrapes ccmon's metrics every second
and evaluates the rule files every second; a real ``prometheus-alertmanager`` (package
``prometheus-alertmanager``) routes the alerts to a webhook served by this test. Then:

1. every PromQL expression of every dashboard (panel targets and templating queries, see
   ``tests/harness/dashboards.py:dashboard_queries``) runs through ``/api/v1/query`` (and
   ``/api/v1/query_range`` for time-series panels) with the template variables substituted;
   a query error or an empty result fails the test;
2. a service-level breach is staged on acme/support: the SL alerts must go ``pending``, then
   ``firing`` (``/api/v1/alerts``), and the webhook must receive the critical one with its
   tenant and queue, the warning being inhibited by Alertmanager.

Where the metrics come from is the ``metrics_target`` fixture, with two variants:

* ``replay``: ``ccmon replay --at <at>`` of the events loaded so far, served by a tiny HTTP
  server. Needs no services.
* ``exporter``: the real pipeline. Events go to a Kafka topic of their own, ``ccmon worker``
  folds them into Redis and ``ccmon exporter`` serves ``/metrics``; both run with
  ``--clock fixed:<at>``, so the KPIs are the replay's. Uses the session's Kafka and Redis
  (``kafka_bootstrap``/``redis_url`` from tests/conftest.py).

Both are real Prometheus evaluating every dashboard query and every rule. The rules are a
rewritten copy of deploy/prometheus/rules/: every ``for:`` becomes ``2s`` (so pending ->
firing takes seconds) and ``:ccmon_paging_hours:`` becomes ``vector(1)`` (so the test does not
depend on the time of day); the expressions are otherwise the real ones. The Alertmanager
config is the real one with every receiver pointed at the test's webhook and 1 s grouping
timers; the Prometheus config is the real ``ccmon-exporter`` job pointed at the target.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import pytest
import yaml
from harness.dashboards import FORTHCOMING_METRICS, VAR_RE, dashboard_queries, metric_names_in
from harness.kafka_topics import delete_topics
from harness.monitoring import ALERTMANAGER, PROMETHEUS, Service, http_json
from harness.pipeline import cli_args
from harness.processes import free_port, stop, wait_for

from kpi_core.config import WEEKDAYS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
PROMETHEUS_FILE = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_FILE = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
EXPORTER_JOB = "ccmon-exporter"

BREACH_TENANT, BREACH_QUEUE = "acme", "support"
#: Values the template variables take (tenant "default" and queue "q000" come from the
#: generated traffic; "1m" is four scrape intervals, as Grafana's $__rate_interval would be).
VARIABLES = {
    "tenant": "default",
    "queue": "q000",
    "window": "1h",
    "survey_window": "today",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}
#: Expressions with rate()/increase()/deriv()/histogram_quantile() need two scrapes in their
#: range; no query runs before MIN_SCRAPES scrapes, so instant queries of them return data.
NEEDS_HISTORY = re.compile(r"\b(?:rate|irate|increase|delta|deriv|histogram_quantile)\(")
MIN_SCRAPES = 4

#: The targets: lenient defaults that the generated traffic meets, so only the staged breach
#: alerts; every optional target is set so that every target series of the dashboards exists.
#: The time zone of tenant "default" is chosen so that its "today" is at least 2 h old.
CONFIG = """
[tenants.default]
timezone = "{timezone}"

[defaults.targets]
service_level = 0.2
abandon_rate = 0.9
callback_seconds = 86400
fcr = 0.1
nps = -100
csat = 0.05
ces = 7
asa_seconds = 600
longest_wait_seconds = 3600
aht_seconds = 3600
first_response_seconds = 86400
resolution_seconds = 86400

[defaults.channels.voice.targets]
service_level = 0.2

[tenants.acme.queues.support]
open_hours = ["00:00-24:00"]

[tenants.acme.queues.support.targets]
service_level = 0.8

[tenants.acme.queues.closed]
open_days = {closed_days}
"""

#: ccmon_consumer_lag{topic,partition} is served by the exporter (streams/, being written);
#: the replay target emulates it so the Pipeline-health queries that read it are checked too.
EMULATED_CONSUMER_LAG = """\
# HELP ccmon_consumer_lag Kafka messages not yet consumed (emulated by test_prometheus_live.py).
# TYPE ccmon_consumer_lag gauge
ccmon_consumer_lag{topic="ccmon.events",partition="0"} 0
ccmon_consumer_lag{topic="ccmon.events",partition="1"} 3
"""


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in VARIABLES:
            pytest.fail(f"no test value for ${name} in {expr!r}: add it to VARIABLES")
        return VARIABLES[name]

    return VAR_RE.sub(value, expr)


# --------------------------------------------------------------------------- test data


@dataclass
class Staged:
    """The JSONL lines of the baseline traffic and of the breach, evaluated at ``at``."""

    at: int
    config: Path
    baseline: list[str]
    breach: list[str]


def _calls(at: int, prefix: str, count: int, wait: int, start: int) -> list[dict[str, Any]]:
    """``count`` calls to acme/support, one every 10 s from ``at - start``, answered after
    ``wait`` seconds."""
    events: list[dict[str, Any]] = []
    for i in range(count):
        offered = at - start + 10 * i
        common = {"tenant": BREACH_TENANT, "queue": BREACH_QUEUE, "call_id": f"{prefix}{i}"}
        events.append(
            {
                **common,
                "type": "call.offered",
                "ts": offered,
                "event_id": f"{prefix}{i}-o",
                "customer_id": f"{prefix}-cust{i}",
            }
        )
        events.append(
            {
                **common,
                "type": "call.answered",
                "agent_id": "acme-agent1",
                "ts": offered + wait,
                "event_id": f"{prefix}{i}-a",
            }
        )
    return events


def stage(workdir: Path) -> Staged:
    """The last 65 minutes of bench/gen_events.py traffic (tenant "default", queues q000..q002)
    shifted to end just before ``at``, plus a few rejected and duplicate lines, plus acme/support
    answering 20 calls in 5 s (SL 100 %). The breach: 20 more calls answered after 90 s, all
    within 15 minutes: SL 50 %, under the 80 % target and under target - 0.15."""
    gen = _load("ccmon_gen_events", REPO / "bench" / "gen_events.py")
    at = int(time.time()) // 60 * 60
    events = list(gen.generate(12000, 3, 7))
    shift = at - 5 - max(int(e["ts"]) for e in events)
    traffic = [{**e, "ts": int(e["ts"]) + shift} for e in events if int(e["ts"]) + shift >= at - 65 * 60]
    traffic.append(
        {
            "type": "agent.state",
            "tenant": BREACH_TENANT,
            "agent_id": "acme-agent1",
            "state": "available",
            "queues": [BREACH_QUEUE],
            "ts": at - 3000,
            "event_id": "acme-agent1-s",
        }
    )
    traffic += _calls(at, "acme-fast-", 20, 5, 14 * 60)
    # A ticket per queue created, answered and resolved within the hour (the generated tickets
    # take hours to resolve: their creation may lie before the 65 minutes kept). On chat, for the
    # per-channel first response.
    for queue in ("q000", "q001", "q002"):
        ticket = {"ticket_id": f"live-{queue}", "queue": queue}
        traffic += [
            {**ticket, "type": "ticket.created", "ts": at - 3000, "event_id": f"live-{queue}-c", "channel": "chat"},
            {
                **ticket,
                "type": "ticket.replied",
                "author": "agent",
                "ts": at - 2400,
                "event_id": f"live-{queue}-r",
            },
            {**ticket, "type": "ticket.resolved", "ts": at - 1800, "event_id": f"live-{queue}-s"},
        ]
    # Employee pulse answers on q000 from five agents: one batch, so the pulse panels have data.
    for i in range(5):
        for survey, score in (("esat", 4), ("enps", 9)):
            traffic.append(
                {
                    "type": "survey.response",
                    "survey": survey,
                    "score": score,
                    "queue": "q000",
                    "agent_id": f"pulse-agent{i}",
                    "ts": at - 1200 + i,
                    "event_id": f"pulse-{survey}-{i}",
                }
            )
    baseline = [json.dumps(e, separators=(",", ":")) for e in traffic]
    baseline += [
        '{"type": "call.offered", "event_id": "broken-1"',  # invalid_json
        json.dumps({"type": "call.teleported", "event_id": "bad-2", "ts": at - 60, "queue": "q000"}),
        baseline[0],  # a duplicate
    ]
    breach = [json.dumps(e, separators=(",", ":")) for e in _calls(at, "acme-slow-", 20, 90, 10 * 60)]
    config = workdir / "ccmon.toml"
    # UTC+12 ("Etc/GMT-12") when UTC's day is under 2 h old.
    timezone = "UTC" if time.gmtime(at).tm_hour >= 2 else "Etc/GMT-12"
    # acme (UTC) has support open all day every day, and a queue closed on the day of ``at``.
    closed_days = [d for i, d in enumerate(WEEKDAYS) if i != time.gmtime(at).tm_wday]
    config.write_text(CONFIG.format(timezone=timezone, closed_days=json.dumps(closed_days)), encoding="utf-8")
    return Staged(at, config, baseline, breach)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    return stage(tmp_path_factory.mktemp("staged"))


# --------------------------------------------------------------------------- metrics targets


class MetricsTarget(Protocol):
    """What Prometheus scrapes: ``address`` (host:port serving /metrics) and ``load(lines)``
    to add JSONL events to what it serves (returning once they are served)."""

    address: str

    def load(self, lines: list[str]) -> None: ...

    def metrics_text(self) -> str: ...

    def close(self) -> None: ...


class _TextHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.text.encode()  # type: ignore[attr-defined]
        self.send_response(200 if self.path.startswith("/metrics") else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ReplayTarget:
    """``ccmon replay --at <at>`` of every line loaded so far, on a tiny HTTP server."""

    def __init__(self, staged: Staged, workdir: Path) -> None:
        self.staged = staged
        self.events_file = workdir / "events.jsonl"
        self.lines: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _TextHandler)
        self.server.text = ""  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def load(self, lines: list[str]) -> None:
        self.lines += lines
        self.events_file.write_text("\n".join(self.lines) + "\n", encoding="utf-8")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "replay",
                str(self.events_file),
                "--config",
                str(self.staged.config),
                "--at",
                str(self.staged.at),
                "--quiet",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "ccmon_service_level_ratio" in result.stdout
        self.server.text = result.stdout + EMULATED_CONSUMER_LAG  # type: ignore[attr-defined]

    def metrics_text(self) -> str:
        return str(self.server.text)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ExporterTarget:
    """The real pipeline: Kafka topic -> ``ccmon worker`` -> Redis -> ``ccmon exporter``,
    with a topic, dead-letter topic, consumer group and Redis key prefix of its own, and
    ``--clock fixed:<at>`` on both processes."""

    SETTLE_TIMEOUT = 60.0

    def __init__(self, staged: Staged, workdir: Path, kafka_bootstrap: str, redis_url: str) -> None:
        import kafka

        run = uuid.uuid4().hex[:10]
        self.kafka_bootstrap, self.redis_url = kafka_bootstrap, redis_url
        self.topic, self.dlq = f"ccmon-live-{run}", f"ccmon-live-{run}-dlq"
        self.prefix = f"live-{run}"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.workdir = workdir
        self.sent = 0
        self.processes: list[subprocess.Popen[bytes]] = []
        admin = kafka.KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        admin.create_topics([kafka.admin.NewTopic(self.topic, 4, 1), kafka.admin.NewTopic(self.dlq, 1, 1)])
        admin.close()
        self.producer = kafka.KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        common = {"redis": redis_url, "redis_prefix": self.prefix, "config": staged.config}
        worker = {"kafka": kafka_bootstrap, "topic": self.topic, "dlq_topic": self.dlq, "group": f"ccmon-live-{run}"}
        self._start(*cli_args("worker", **worker, web_port=free_port(), batch_within="0.1", at=staged.at, **common))
        self._start(*cli_args("exporter", host="127.0.0.1", port=self.port, at=staged.at, **common))

    def _start(self, command: str, *args: str) -> None:
        with (self.workdir / f"{command}.log").open("wb") as out:
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", command, *args],
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.workdir.glob("*.log"))

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def _counted(self) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        for process in self.processes:
            assert process.poll() is None, f"{process.args!r} exited:\n{self.logs()}"
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            if family.name in {"ccmon_events", "ccmon_events_rejected", "ccmon_events_duplicate"}:
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
        return total

    def load(self, lines: list[str]) -> None:
        for i, line in enumerate(lines):
            self.producer.send(self.topic, key=str(i).encode(), value=line.encode())
        self.producer.flush(30)
        self.sent += len(lines)
        deadline = time.monotonic() + self.SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self._counted() >= self.sent:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"the worker did not take {self.sent} events within {self.SETTLE_TIMEOUT:.0f} s:\n{self.logs()}")

    def close(self) -> None:
        import redis

        self.producer.close()
        for process in self.processes:
            stop(process)
        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        delete_topics(self.kafka_bootstrap, self.topic, self.dlq)


def exporter_unavailable() -> str | None:
    """Why the exporter-backed variant cannot run, or None."""
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "exporter", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0 or "--port" not in result.stdout:
        return "`ccmon exporter` is not implemented yet"
    worker = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if worker.returncode != 0 or "--topic" not in worker.stdout:
        return "`ccmon worker` is not implemented yet"
    return None


@pytest.fixture(scope="module", params=["replay", "exporter"])
def metrics_target(
    request: pytest.FixtureRequest, staged: Staged, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetricsTarget]:
    """Where Prometheus scrapes ccmon's metrics (``address``), loaded with the baseline."""
    workdir = tmp_path_factory.mktemp(f"target-{request.param}")
    target: MetricsTarget
    if request.param == "replay":
        target = ReplayTarget(staged, workdir)
    else:
        reason = exporter_unavailable()
        if reason:
            pytest.skip(reason)
        target = ExporterTarget(
            staged,
            workdir,
            request.getfixturevalue("kafka_bootstrap"),
            request.getfixturevalue("redis_url"),
        )
    try:
        target.load(staged.baseline)
        yield target
    finally:
        target.close()


# --------------------------------------------------------------------------- Prometheus + Alertmanager


class Webhook:
    """Records the JSON bodies Alertmanager posts."""

    def __init__(self) -> None:
        payloads: list[dict[str, Any]] = []
        self.payloads = payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payloads.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def alerts(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(payload, alert) for every alert of every notification so far."""
        return [(payload, alert) for payload in list(self.payloads) for alert in payload["alerts"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fast_rules(directory: Path) -> None:
    """The rule files with every ``for:`` at 2s and the paging-hours gate always open."""
    directory.mkdir()
    gate_found = False
    for path in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "2s"
                if rule.get("record") == ":ccmon_paging_hours:":
                    rule["expr"] = "vector(1)"
                    gate_found = True
        (directory / path.name).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    assert gate_found, ":ccmon_paging_hours: not found: the test would depend on the time of day"


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The real routes and inhibition; every receiver posts to the webhook; 1 s timers."""
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": False}]

    def fast(route: dict[str, Any], top: bool) -> None:
        for key in ("group_wait", "group_interval"):
            if top or key in route:
                route[key] = "1s"
        for child in route.get("routes") or []:
            fast(child, False)

    fast(config["route"], True)
    return config


def prometheus_config(target: str, alertmanager: str, rules: Path) -> dict[str, Any]:
    """The real ccmon-exporter scrape job pointed at ``target``; 1 s intervals."""
    config = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == EXPORTER_JOB]
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(rules / "*.yml")]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


@dataclass
class Stack:
    prometheus: str
    alertmanager: str
    webhook: Webhook
    target: MetricsTarget
    services: list[Service] = field(default_factory=list)

    def query(self, expr: str) -> dict[str, Any]:
        return http_json(f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))

    def query_range(self, expr: str, seconds: int = 20) -> dict[str, Any]:
        end = time.time()
        params = {"query": expr, "start": end - seconds, "end": end, "step": 1}
        return http_json(f"{self.prometheus}/api/v1/query_range?" + urllib.parse.urlencode(params))

    def value(self, expr: str) -> float | None:
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def alerts(self, name: str) -> list[dict[str, Any]]:
        data = http_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [a for a in data if a["labels"].get("alertname") == name]


@pytest.fixture(scope="module")
def stack(metrics_target: MetricsTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for binary, package in ((PROMETHEUS, "prometheus"), (ALERTMANAGER, "prometheus-alertmanager")):
        if not Path(binary).exists():
            pytest.skip(f"{binary} not installed (apt-get install {package})")
    workdir = tmp_path_factory.mktemp("stack")
    webhook = Webhook()
    am_port, prom_port = free_port(), free_port()
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(webhook.url)), encoding="utf-8")
    fast_rules(workdir / "rules")
    prom_config = prometheus_config(metrics_target.address, f"127.0.0.1:{am_port}", workdir / "rules")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(prom_config), encoding="utf-8")
    services: list[Service] = []
    try:
        am = Service(
            "alertmanager",
            [
                ALERTMANAGER,
                f"--config.file={workdir / 'alertmanager.yml'}",
                f"--storage.path={workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            workdir,
        )
        services.append(am)
        prom = Service(
            "prometheus",
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                # Firing alerts go to Alertmanager again every 5 s, not every minute: an alert
                # that fired before Alertmanager was ready arrives within seconds.
                "--rules.alert.resend-delay=5s",
            ],
            workdir,
        )
        services.append(prom)
        am.wait_ready(f"http://127.0.0.1:{am_port}/-/ready")
        prom.wait_ready(f"http://127.0.0.1:{prom_port}/-/ready")
        stack = Stack(
            f"http://127.0.0.1:{prom_port}",
            f"http://127.0.0.1:{am_port}",
            webhook,
            metrics_target,
            services,
        )
        # Enough scrapes for every rate() and increase(), and the rules evaluated on them.
        wait_for(
            f"{MIN_SCRAPES} successful scrapes of {metrics_target.address}",
            lambda: (
                stack.value(
                    f'min_over_time(up{{job="{EXPORTER_JOB}"}}[1m]) == 1 and '
                    f'count_over_time(up{{job="{EXPORTER_JOB}"}}[1m]) >= {MIN_SCRAPES}'
                )
                is not None
            ),
            timeout=30,
        )
        yield stack
    finally:
        for service in reversed(services):
            service.stop()
        webhook.close()


# --------------------------------------------------------------------------- tests


def test_every_dashboard_query_runs_and_returns_data(stack: Stack) -> None:
    queries = dashboard_queries()
    assert len(queries) > 50
    served = set(re.findall(r"^# TYPE (\S+)", stack.target.metrics_text(), re.M))
    failures: list[str] = []
    not_served: list[str] = []
    for q in queries:
        expr = substitute(q.expr)
        where = f"{q.dashboard} / {q.panel} / {q.ref}: {expr}"
        answers = [stack.query(expr)] + ([] if q.instant else [stack.query_range(expr)])
        for answer in answers:
            if answer.get("status") != "success":
                failures.append(f"{where}\n    error: {answer.get('errorType')}: {answer.get('error')}")
                break
            result = answer["data"]["result"]
            if result:
                continue
            # Legitimately empty: a forthcoming metric this target does not serve yet.
            missing = {m for m in metric_names_in(q.expr) & set(FORTHCOMING_METRICS) if m not in served}
            if missing:
                not_served.append(f"{where} (not served yet: {', '.join(sorted(missing))})")
            else:
                history = " (needs rate() history)" if NEEDS_HISTORY.search(expr) else ""
                failures.append(f"{where}\n    no series{history}")
            break
        else:
            if q.kind == "variable" and q.label:
                values = {series["metric"].get(q.label) for series in answers[0]["data"]["result"]}
                if VARIABLES.get(q.ref) not in values:
                    failures.append(f"{where}\n    lists {sorted(map(str, values))}, not {VARIABLES.get(q.ref)!r}")
    if not_served:
        warnings.warn(
            "dashboard queries of metrics the target does not serve yet:\n" + "\n".join(not_served),
            stacklevel=1,
        )
    assert failures == [], f"{len(failures)} of {len(queries)} dashboard queries failed:\n" + "\n".join(failures)


def _sl_alert(stack: Stack, name: str) -> dict[str, Any] | None:
    for alert in stack.alerts(name):
        if alert["labels"].get("tenant") == BREACH_TENANT and alert["labels"].get("queue") == BREACH_QUEUE:
            return alert
    return None


def test_sla_breach_goes_pending_then_firing_and_reaches_the_webhook(stack: Stack, staged: Staged) -> None:
    selector = f'tenant="{BREACH_TENANT}", queue="{BREACH_QUEUE}"'
    # Before: SL 100 % on acme/support, its queue gate open, no SL alert.
    assert stack.value(f'ccmon_service_level_ratio{{{selector}, window="15m"}}') == 1.0
    wait_for(
        "the paging gate of acme/support",
        lambda: stack.value(f"tenant_queue:ccmon_queue_paging:max{{{selector}}}") == 1,
        10,
    )
    # The gate comes from ccmon's own opening hours (config open_hours/open_days): support is
    # open, acme/closed is closed today.
    assert stack.value(f"ccmon_queue_open{{{selector}}}") == 1
    assert stack.value('ccmon_queue_open{tenant="acme", queue="closed"}') == 0
    assert stack.value('tenant_queue:ccmon_queue_paging:max{tenant="acme", queue="closed"}') == 0
    assert _sl_alert(stack, "CcmonServiceLevelBelowTarget") is None

    stack.target.load(staged.breach)

    states: list[str] = []

    def firing() -> bool:
        alert = _sl_alert(stack, "CcmonServiceLevelBelowTarget")
        if alert is not None and (not states or states[-1] != alert["state"]):
            states.append(alert["state"])
        return bool(states) and states[-1] == "firing"

    wait_for("CcmonServiceLevelBelowTarget to fire", firing, timeout=30, every=0.1)
    assert states == ["pending", "firing"]
    assert stack.value(f'ccmon_service_level_ratio{{{selector}, window="15m"}}') == 0.5
    warning = _sl_alert(stack, "CcmonServiceLevelBelowTarget")
    assert warning is not None
    labels = {k: v for k, v in warning["labels"].items() if k != "instance"}
    assert labels == {
        "alertname": "CcmonServiceLevelBelowTarget",
        "severity": "warning",
        "team": "supervisors",
        "family": "service_level",
        "tenant": BREACH_TENANT,
        "queue": BREACH_QUEUE,
        "window": "15m",
        "job": EXPORTER_JOB,
    }
    assert warning["annotations"]["description"] == (
        "The 15-minute service level of acme/support is 50%, below its target of 80%, for 5 minutes."
    )
    assert warning["annotations"]["runbook"]

    # Alertmanager: the critical alert reaches the pager receiver, grouped by tenant and queue.
    def delivered() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [
            (payload, alert)
            for payload, alert in stack.webhook.alerts()
            if alert["labels"].get("alertname") == "CcmonServiceLevelFarBelowTarget"
            and alert["labels"].get("tenant") == BREACH_TENANT
            and alert["labels"].get("queue") == BREACH_QUEUE
        ]

    payload, alert = wait_for("the webhook to receive CcmonServiceLevelFarBelowTarget", delivered, timeout=30)[0]
    assert payload["receiver"] == "supervisors-pager"
    assert payload["groupLabels"] == {"tenant": BREACH_TENANT, "queue": BREACH_QUEUE}
    assert alert["status"] == "firing"
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == "Service level far below target on acme/support"
    assert alert["annotations"]["runbook"]

    # ... and inhibits the warning of the same family: suppressed in Alertmanager, never sent.
    def inhibited() -> bool:
        url = f"{stack.alertmanager}/api/v2/alerts?" + urllib.parse.urlencode(
            [
                ("filter", 'alertname="CcmonServiceLevelBelowTarget"'),
                ("filter", f'queue="{BREACH_QUEUE}"'),
            ]
        )
        return any(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in http_json(url))

    wait_for("Alertmanager to inhibit the warning", inhibited, timeout=15)
    sent = {a["labels"]["alertname"] for _p, a in stack.webhook.alerts() if a["labels"].get("queue") == BREACH_QUEUE}
    assert "CcmonServiceLevelBelowTarget" not in sent, stack.webhook.payloads


def test_the_watchdog_reaches_its_own_receiver(stack: Stack) -> None:
    """CcmonWatchdog fires from the start and Alertmanager routes it to the watchdog receiver
    (the dead man's switch) with its runbook_url, through no other receiver. It fires at
    Prometheus' first evaluation, possibly before Alertmanager is ready; the test's Prometheus
    re-sends firing alerts every 5 s (--rules.alert.resend-delay; 1 min by default)."""
    payload, alert = wait_for(
        "the webhook to receive CcmonWatchdog",
        lambda: [(p, a) for p, a in stack.webhook.alerts() if a["labels"].get("alertname") == "CcmonWatchdog"],
        timeout=90,
    )[0]
    assert payload["receiver"] == "watchdog"
    assert alert["labels"]["severity"] == "none"
    assert alert["annotations"]["runbook_url"] == "docs/ALERTS.md#ccmonwatchdog"
    receivers = {p["receiver"] for p, a in stack.webhook.alerts() if a["labels"].get("alertname") == "CcmonWatchdog"}
    assert receivers == {"watchdog"}


def test_week_over_week_reads_the_recording_rules(stack: Stack) -> None:
    """The board's "vs last week" source (streams/web/week_over_week.py) against the real
    Prometheus evaluating the real recording rules: this hour's figures, no comparison yet
    (a fresh Prometheus has no week of history), the anomaly latches at 0."""
    from streams.web.week_over_week import WeekOverWeek

    doc: dict[str, Any] = {}

    def recorded() -> bool:
        nonlocal doc
        doc = WeekOverWeek(stack.prometheus, ttl=0).document()
        queues = doc.get("tenants", {}).get("default", {}).get("queues", {})
        return "service_level_anomaly" in queues.get("q000", {})

    wait_for("the week-over-week rules", recorded, 30)
    assert doc["source"] == "prometheus"
    q000 = doc["tenants"]["default"]["queues"]["q000"]
    assert q000["calls_offered"] > 0 and 0 <= q000["service_level"] <= 1
    assert q000["calls_offered_anomaly"] == 0 and q000["service_level_anomaly"] == 0
    assert "calls_offered_last_week" not in q000 and "calls_offered_4w_mean" not in q000
