"""Alerts where supervisors look, end to end, with a real Alertmanager (Debian's
``prometheus-alertmanager``) started here on free ports in a temp dir:

* its config is what ``ccmon alertmanager-config`` renders from ``CCMON_AM_*`` variables (and
  ``amtool check-config`` accepts): the webhook, Slack and e-mail receivers all point at this
  test (an HTTP server that records the JSON posted to ``/hook`` and ``/slack``, and an SMTP sink);
* two of ccmon's queue alerts are posted to Alertmanager's API (``POST /api/v2/alerts``) with
  their real labels and annotations from deploy/prometheus/rules/ccmon-alerts.yml, the
  annotations rendered as Prometheus would (:func:`render_annotation`: the templates' subset
  the queue alerts use), and every channel must deliver messages naming tenant, queue, value
  and target;
* the board: ``/api/alerts`` of the ccmon app configured with that Alertmanager lists them, and
  headless Chromium shows the banner and the flagged rows; the same without Alertmanager from
  ccmon's own breach state; and "alerts unavailable" when Alertmanager cannot be reached,
  the tiles still drawn. Screenshots: test-artifacts/alerts-*.png.

Microsoft Teams: msteams_configs needs Alertmanager >= 0.26 and Debian's is 0.25, so the
generator refuses a Teams URL for it (asserted here). The pinned Alertmanager v0.28.1 that
deploy/local/install-alertmanager.sh builds with ``go install`` (and its amtool) runs the same
stack with a Teams receiver too: the config is rendered for the version the generator reads from
that binary's Go build information (its ``--version`` has none), and Alertmanager's MessageCard,
posted to this test's stand-in for the Teams incoming-webhook URL (``/teams``), names tenant,
queue, value and target, as do the webhook, Slack and e-mail messages of that Alertmanager. Without
the pinned build that test fails naming the script (as the helm chart tests do): ``make test``
builds it (deploy/local/install-test-tools.sh).

No Kafka or Redis, so no ``integration`` marker.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.browser import ARTIFACTS, CHROMIUM, chromium_page
from harness.monitoring import ALERTMANAGER, Service, http_json
from harness.processes import free_port, wait_for

from kpi_core.kpis import MetricFamily
from streams.web import make_wsgi_app, serve
from streams.web.alerts import AlertmanagerAlerts

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules" / "ccmon-alerts.yml"
TEMPLATE = REPO / "deploy" / "alertmanager" / "ccmon.tmpl"
AMTOOL = "amtool"
TENANT = "acme"
INSTALL_ALERTMANAGER = REPO / "deploy" / "local" / "install-alertmanager.sh"
#: The pinned Alertmanager (Teams needs >= 0.26) and the version its build information records.
PINNED_VERSION = "v0.28.1"

needs_alertmanager = pytest.mark.skipif(
    not Path(ALERTMANAGER).exists(), reason=f"{ALERTMANAGER} not installed (apt-get install prometheus-alertmanager)"
)


# -- Prometheus' rendering of the rules' annotations (the subset the queue alerts use) -----------
def humanize_percentage(value: float) -> str:
    return f"{value * 100:.4g}%"


def humanize_duration(value: float) -> str:
    """Prometheus' humanizeDuration for values >= 1 s."""
    seconds = int(value)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{value:.4g}s"


FUNCTIONS = {
    "humanizePercentage": humanize_percentage,
    "humanizeDuration": humanize_duration,
    'printf "%.0f"': lambda v: f"{v:.0f}",
    "": lambda v: f"{v:g}",
}
_QUERY = re.compile(
    r'\{\{ with printf "(\w+)\{[^}]*\}"[^}]*\| query \}\}\{\{ \. \| first \| value(?: \| ([^}]+?))? \}\}\{\{ end \}\}'
)
_VALUE = re.compile(r"\{\{ \$value(?: \| ([^}]+?))? \}\}")
_LABEL = re.compile(r"\{\{ \$labels\.(\w+) \}\}")


def render_annotation(text: str, labels: Mapping[str, str], value: float, queries: Mapping[str, float]) -> str:
    """An annotation template of ccmon-alerts.yml as Prometheus renders it: ``$labels``,
    ``$value`` (through humanizePercentage, humanizeDuration or printf), and the ``query`` of a
    target gauge (its value from ``queries``, by metric name)."""
    out = _QUERY.sub(lambda m: FUNCTIONS[(m.group(2) or "").strip()](queries[m.group(1)]), text)
    out = _VALUE.sub(lambda m: FUNCTIONS[(m.group(1) or "").strip()](value), out)
    out = _LABEL.sub(lambda m: labels[m.group(1)], out)
    assert "{{" not in out, f"a template construct this test does not render: {out}"
    return out


def rule(name: str) -> dict[str, Any]:
    for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]:
        for item in group["rules"]:
            if item.get("alert") == name:
                return dict(item)
    raise AssertionError(f"no alert {name} in {RULES}")


@dataclass(frozen=True)
class Staged:
    """One alert posted to Alertmanager, and what its messages must name."""

    name: str
    queue: str
    value: float
    target_metric: str
    target: float
    value_text: str  #: how the description states the value
    target_text: str  #: and the target

    def posted(self) -> dict[str, Any]:
        spec = rule(self.name)
        labels = {
            "alertname": self.name,
            **spec["labels"],
            "tenant": TENANT,
            "queue": self.queue,
            "window": "15m",
            "job": "ccmon-exporter",
            "instance": "exporter:9108",
        }
        annotations = {
            key: render_annotation(text, labels, self.value, {self.target_metric: self.target})
            for key, text in spec["annotations"].items()
        }
        return {
            "labels": labels,
            "annotations": annotations,
            "generatorURL": "http://prometheus:9090/graph",
            "startsAt": datetime.now(UTC).isoformat(),
        }


STAGED = (
    Staged("CcmonServiceLevelFarBelowTarget", "support", 0.52, "ccmon_target_service_level_ratio", 0.8, "52%", "80%"),
    Staged("CcmonAbandonRateAboveTarget", "billing", 0.125, "ccmon_target_abandon_rate_ratio", 0.05, "12.5%", "5%"),
)


# -- receivers -------------------------------------------------------------------------------
class Receiver:
    """An HTTP server recording every JSON body posted, by path (the webhook and Slack URLs)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def at(self, path: str) -> list[Any]:
        return [body for where, body in list(self.posts) if where == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """Just enough SMTP (RFC 5321, no TLS, no auth) to take Alertmanager's mails."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        messages = self.messages

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                def say(line: str) -> None:
                    self.wfile.write(line.encode() + b"\r\n")

                say("220 sink ESMTP")
                while line := self.rfile.readline():
                    verb = line.decode("ascii", "replace").strip().split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        say("250-sink")
                        say("250 8BITMIME")
                    elif verb == "DATA":
                        say("354 go on")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        messages.append(email.message_from_bytes(data, policy=email.policy.default))  # type: ignore[arg-type]
                        say("250 queued")
                    elif verb == "QUIT":
                        say("221 bye")
                        return
                    else:  # MAIL, RCPT, RSET, NOOP
                        say("250 ok")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def render_config(environ: Mapping[str, str], output: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CCMON_AM_") and key != "CCMON_ALERTMANAGER_BIN"
    }
    env.update(environ)
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "alertmanager-config", "-o", str(output), "--templates", str(TEMPLATE)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def pinned_alertmanager() -> tuple[Path, Path]:
    """The pinned Alertmanager and amtool of deploy/local/install-alertmanager.sh, in
    ``$CCMON_ALERTMANAGER_DIR`` (default ~/.cache/ccmon/alertmanager/bin). Missing: the test fails
    naming the script (deploy/local/install-test-tools.sh runs it for ``make test``)."""
    directory = os.environ.get("CCMON_ALERTMANAGER_DIR") or str(
        Path.home() / ".cache" / "ccmon" / "alertmanager" / "bin"
    )
    binaries = (Path(directory) / "alertmanager", Path(directory) / "amtool")
    for path in binaries:
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(
                f"{path.name} not found at {path}: run `bash {INSTALL_ALERTMANAGER.relative_to(REPO)}` (Alertmanager "
                f"{PINNED_VERSION}, built with go install; deploy/local/install-test-tools.sh runs it)",
                pytrace=False,
            )
    return binaries


@dataclass
class Stack:
    url: str
    receiver: Receiver
    smtp: SmtpSink
    config: dict[str, Any]
    header: str  #: the rendered file's first line: the Alertmanager version it is for, and whence


@contextmanager
def running_stack(
    workdir: Path, alertmanager: str, amtool: str, more: Callable[[Receiver], Mapping[str, str]] = lambda receiver: {}
) -> Iterator[Stack]:
    """``alertmanager`` on free ports with the config ``ccmon alertmanager-config`` renders for the
    webhook (``/hook``), Slack (``/slack``) and e-mail receivers of this test, and the variables
    ``more`` gives (given the HTTP receiver)."""
    receiver, smtp = Receiver(), SmtpSink()
    environ = {
        "CCMON_AM_WEBHOOK_URL": receiver.base + "/hook",
        "CCMON_AM_SLACK_WEBHOOK_URL": receiver.base + "/slack",
        "CCMON_AM_SLACK_CHANNEL": "#supervisors",
        "CCMON_AM_SMTP_SMARTHOST": smtp.address,
        "CCMON_AM_SMTP_FROM": "alertmanager@ccmon.test",
        "CCMON_AM_EMAIL_TO": "supervisors@ccmon.test",
        "CCMON_AM_SMTP_REQUIRE_TLS": "no",
        "CCMON_AM_GROUP_WAIT": "1s",
        "CCMON_AM_GROUP_INTERVAL": "1s",
        **more(receiver),
    }
    am: Service | None = None
    try:
        done = render_config(environ, workdir / "alertmanager.yml")
        assert done.returncode == 0, done.stderr
        assert (workdir / "alertmanager.yml").stat().st_mode & 0o077 == 0  # it holds the webhook URLs
        check = subprocess.run(
            [amtool, "check-config", str(workdir / "alertmanager.yml")], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        port = free_port()
        am = Service(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={workdir / 'alertmanager.yml'}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            workdir,
        )
        url = f"http://127.0.0.1:{port}"
        am.wait_ready(url + "/-/ready")
        text = (workdir / "alertmanager.yml").read_text()
        yield Stack(url, receiver, smtp, yaml.safe_load(text), text.split("\n", 1)[0])
    finally:
        if am is not None:
            am.stop()
        receiver.close()
        smtp.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Debian's Alertmanager (0.25: no Teams)."""
    if not Path(ALERTMANAGER).exists():
        pytest.skip(f"{ALERTMANAGER} not installed (apt-get install prometheus-alertmanager)")
    with running_stack(tmp_path_factory.mktemp("alertmanager"), ALERTMANAGER, AMTOOL) as running:
        yield running


@pytest.fixture(scope="module")
def pinned_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The pinned Alertmanager v0.28.1, with a Teams receiver too (the incoming-webhook URL is
    ``/teams`` of this test's HTTP server). CCMON_ALERTMANAGER_BIN tells the generator which
    Alertmanager the config is for (no CCMON_AM_VERSION)."""
    alertmanager, amtool = pinned_alertmanager()

    def teams(receiver: Receiver) -> dict[str, str]:
        return {"CCMON_AM_TEAMS_WEBHOOK_URL": receiver.base + "/teams", "CCMON_ALERTMANAGER_BIN": str(alertmanager)}

    with running_stack(
        tmp_path_factory.mktemp("alertmanager-pinned"), str(alertmanager), str(amtool), teams
    ) as running:
        yield running


def post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        url + "/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@needs_alertmanager
def test_alertmanager_delivers_to_webhook_slack_and_email(stack: Stack) -> None:
    # The rendered config: the real routes, every people receiver with the three channels.
    receivers = {r["name"]: r for r in stack.config["receivers"]}
    for name in ("default", "supervisors", "supervisors-pager", "ops"):
        assert {"webhook_configs", "slack_configs", "email_configs"} <= set(receivers[name]), receivers[name]
    assert set(receivers["watchdog"]) == {"name"}
    check_webhook_slack_and_email(stack)


def check_webhook_slack_and_email(stack: Stack) -> None:
    """STAGED posted to the stack's Alertmanager reach the webhook, Slack and e-mail, each
    message naming tenant, queue, value and target."""
    post_alerts(stack.url, [s.posted() for s in STAGED])

    def delivered() -> bool:
        hooked = {a["labels"]["alertname"] for body in stack.receiver.at("/hook") for a in body["alerts"]}
        slacked = len(stack.receiver.at("/slack")) >= len(STAGED)
        return hooked >= {s.name for s in STAGED} and slacked and len(stack.smtp.messages) >= len(STAGED)

    wait_for("the webhook, Slack and e-mail notifications", delivered, timeout=30)

    hooks = {a["labels"]["alertname"]: a for body in stack.receiver.at("/hook") for a in body["alerts"]}
    slacks = [body for body in stack.receiver.at("/slack")]
    mails = list(stack.smtp.messages)
    for staged in STAGED:
        # Webhook: Alertmanager's JSON, the labels and the rendered description.
        alert = hooks[staged.name]
        assert alert["status"] == "firing"
        assert (alert["labels"]["tenant"], alert["labels"]["queue"]) == (TENANT, staged.queue)
        description = alert["annotations"]["description"]
        assert staged.value_text in description and staged.target_text in description, description
        # Slack: one message per tenant/queue group, title and text from ccmon.tmpl.
        (slack,) = [s for s in slacks if f"queue {staged.queue}" in s["attachments"][0]["title"]]
        attachment = slack["attachments"][0]
        assert slack["channel"] == "#supervisors"
        assert attachment["title"] == f"[FIRING:1] {staged.name} · tenant {TENANT} · queue {staged.queue}"
        text = attachment["text"]
        for needle in (
            f"Tenant: {TENANT}",
            f"Queue: {staged.queue}",
            staged.value_text,
            staged.target_text,
            "Runbook: https://github.com/your-org/ccmon/blob/main/docs/ALERTS.md#" + staged.name.lower(),
        ):
            assert needle in text, (needle, text)
        severity = rule(staged.name)["labels"]["severity"]
        assert attachment["color"] == ("danger" if severity == "critical" else "warning")
        # E-mail: the subject is the title, the text and HTML bodies name it all too.
        (mail,) = [m for m in mails if f"queue {staged.queue}" in str(m["Subject"])]
        assert str(mail["Subject"]) == attachment["title"]
        assert mail["To"] == "supervisors@ccmon.test"
        plain = mail.get_body(preferencelist=("plain",))
        html = mail.get_body(preferencelist=("html",))
        assert plain is not None and html is not None
        for body in (plain.get_content(), html.get_content()):
            for needle in (TENANT, staged.queue, staged.value_text, staged.target_text):
                assert needle in body, (needle, body)


@needs_alertmanager
def test_teams_refused_for_debians_alertmanager_detected(tmp_path: Path) -> None:
    # No CCMON_AM_VERSION: the version is read from the binary named (Debian's says 0.25.0).
    done = render_config(
        {
            "CCMON_AM_TEAMS_WEBHOOK_URL": "https://example.webhook.office.com/webhookb2/x",
            "CCMON_ALERTMANAGER_BIN": ALERTMANAGER,
        },
        tmp_path / "am.yml",
    )
    assert done.returncode == 2, done.stderr
    assert "CCMON_AM_TEAMS_WEBHOOK_URL" in done.stderr and "0.26" in done.stderr and "0.25.0" in done.stderr
    assert "webhookb2" not in done.stderr
    assert not (tmp_path / "am.yml").exists()


def test_pinned_alertmanager_delivers_to_teams_webhook_slack_and_email(pinned_stack: Stack) -> None:
    stack = pinned_stack
    # Rendered for the version in the pinned build's Go build information (its --version has none).
    assert f"for Alertmanager {PINNED_VERSION[1:]} (from go version -m " in stack.header, stack.header
    receivers = {r["name"]: r for r in stack.config["receivers"]}
    for name in ("default", "supervisors", "supervisors-pager", "ops"):
        assert {"webhook_configs", "slack_configs", "msteams_configs", "email_configs"} <= set(receivers[name]), (
            receivers[name]
        )
        assert receivers[name]["msteams_configs"][0]["webhook_url"] == stack.receiver.base + "/teams"
    check_webhook_slack_and_email(stack)
    wait_for("the Teams notifications", lambda: len(stack.receiver.at("/teams")) >= len(STAGED), timeout=30)

    cards = stack.receiver.at("/teams")
    assert len(cards) == len(STAGED), cards  # one per tenant/queue group
    for staged in STAGED:
        # Alertmanager's Office 365 connector card: title and text from ccmon.tmpl, red while firing.
        (card,) = [c for c in cards if f"queue {staged.queue}" in c["title"]]
        assert (card["type"], card["@context"]) == ("MessageCard", "http://schema.org/extensions"), card
        assert card["title"] == f"[FIRING:1] {staged.name} · tenant {TENANT} · queue {staged.queue}"
        assert card["themeColor"] == "8C1A1A"
        assert staged.name in card["summary"], card["summary"]
        for needle in (
            f"Tenant: {TENANT}",
            f"Queue: {staged.queue}",
            staged.value_text,
            staged.target_text,
            "Runbook: https://github.com/your-org/ccmon/blob/main/docs/ALERTS.md#" + staged.name.lower(),
        ):
            assert needle in card["text"], (needle, card["text"])
        assert rule(staged.name)["labels"]["severity"].upper() + ": " in card["text"]


def board_families(breaches: bool) -> list[MetricFamily]:
    """A small snapshot of tenant acme: three queues; with ``breaches``, support far below its
    service-level target and billing above its abandon-rate target."""
    values = {
        "support": (0.52 if breaches else 0.85, 0.02),
        "billing": (0.82, 0.125 if breaches else 0.03),
        "sales": (0.91, 0.01),
    }
    fams = {
        name: MetricFamily(f"ccmon_{name}", "gauge", name)
        for name in (
            "service_level_ratio",
            "abandon_rate_ratio",
            "calls_offered",
            "calls_answered",
            "calls_abandoned",
            "calls_waiting",
            "longest_wait_seconds",
            "service_level_threshold_seconds",
            "agents",
            "target_service_level_ratio",
            "target_abandon_rate_ratio",
        )
    }
    for queue, (sl, abandon) in values.items():
        labels = (("tenant", TENANT), ("queue", queue))
        window = (*labels, ("window", "15m"))
        fams["service_level_ratio"].add(window, sl)
        fams["abandon_rate_ratio"].add(window, abandon)
        fams["calls_offered"].add(window, 40.0)
        fams["calls_answered"].add(window, 35.0)
        fams["calls_abandoned"].add(window, round(40 * abandon))
        fams["calls_waiting"].add(labels, 2.0)
        fams["longest_wait_seconds"].add(labels, 12.0)
        fams["service_level_threshold_seconds"].add(labels, 20.0)
        fams["agents"].add((*labels, ("state", "available")), 3.0)
        fams["target_service_level_ratio"].add(labels, 0.8)
        fams["target_abandon_rate_ratio"].add(labels, 0.05)
    return list(fams.values())


def board_app(families: list[MetricFamily], alerts: AlertmanagerAlerts | None) -> Any:
    return make_wsgi_app(
        lambda: families, lambda: [], get_info=lambda: {"at": 1795169400.0, "ready": True}, alerts=alerts
    )


@needs_alertmanager
def test_the_board_shows_the_alerts(stack: Stack, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    post_alerts(stack.url, [s.posted() for s in STAGED])  # (again: this test may run alone)
    dead = free_port()  # nothing listens there
    servers = {
        # Alertmanager's alerts over KPIs that breach nothing: the flags come from Alertmanager.
        "alertmanager": serve(board_app(board_families(False), AlertmanagerAlerts(stack.url, cache_seconds=0.5))),
        "ccmon": serve(board_app(board_families(True), None)),
        "unavailable": serve(
            board_app(board_families(True), AlertmanagerAlerts(f"http://127.0.0.1:{dead}", timeout=1.0))
        ),
    }
    try:
        documents = {name: http_json(server.url + "api/alerts") for name, server in servers.items()}
        for name in ("alertmanager", "ccmon"):
            doc = documents[name]
            assert doc["source"] == name and doc["available"] is True, doc
            assert doc["queues"] == {TENANT: {"support": "critical", "billing": "warning"}}, doc
            assert [(a["name"], a["queue"]) for a in doc["alerts"]] == [(s.name, s.queue) for s in STAGED]
        ccmon = {a["queue"]: a for a in documents["ccmon"]["alerts"]}
        assert (ccmon["support"]["value"], ccmon["support"]["target"]) == (0.52, 0.8)
        assert "52.0%" in ccmon["support"]["description"] and "80.0%" in ccmon["support"]["description"]
        unavailable = documents["unavailable"]
        assert unavailable["available"] is False and unavailable["alerts"] == [], unavailable
        assert f"127.0.0.1:{dead}" in unavailable["error"]

        with chromium_page(tmp_path / "profile") as (page, errors):
            ARTIFACTS.mkdir(exist_ok=True)
            seen: dict[str, Any] = {}
            for name, server in servers.items():
                page.goto(server.url + f"?tenant={TENANT}")
                page.wait_for_function(
                    "Number(document.body.dataset.renders) >= 1 && document.body.dataset.alerts !== undefined",
                    timeout=20000,
                )
                page.wait_for_function(
                    "document.body.dataset.alerts === 'unavailable' || "
                    "document.querySelectorAll('.queue[data-alert]').length > 0",
                    timeout=20000,
                )
                seen[name] = {
                    "alerts": page.evaluate("document.body.dataset.alerts"),
                    "banner": page.text_content("#alerts"),
                    "banner_visible": page.is_visible("#alerts"),
                    "flags": page.eval_on_selector_all(
                        ".queue", "els => Object.fromEntries(els.map(e => [e.dataset.queue, e.dataset.alert || null]))"
                    ),
                    "badges": page.eval_on_selector_all(".queue .alert-badge", "els => els.map(e => e.textContent)"),
                    "tiles": page.eval_on_selector_all(".tile", "els => els.length"),
                }
                page.screenshot(path=str(ARTIFACTS / f"alerts-{name}.png"))
    finally:
        for server in servers.values():
            server.stop()

    assert errors == []
    for name in ("alertmanager", "ccmon"):
        view = seen[name]
        assert view["alerts"] == "2" and view["banner_visible"], view
        assert "2 alerts firing" in view["banner"]
        assert ("from Alertmanager" if name == "alertmanager" else "ccmon targets") in view["banner"]
        assert "far below target" in view["banner"] and "Abandon rate above target" in view["banner"], view["banner"]
        assert view["flags"] == {"_all": None, "support": "critical", "billing": "warning", "sales": None}, view[
            "flags"
        ]
        assert sorted(view["badges"]) == ["\u26a0 CRITICAL", "\u26a0 WARNING"]
    broken = seen["unavailable"]
    assert broken["alerts"] == "unavailable" and broken["banner_visible"]
    assert "alerts unavailable" in broken["banner"].lower()
    assert broken["tiles"] == 7 * 4  # the board itself is drawn as usual
    assert set(broken["flags"].values()) == {None}


def test_teams_refused_for_an_alertmanager_without_msteams(tmp_path: Path) -> None:
    done = render_config(
        {"CCMON_AM_TEAMS_WEBHOOK_URL": "https://example.webhook.office.com/webhookb2/x", "CCMON_AM_VERSION": "0.25.0"},
        tmp_path / "am.yml",
    )
    assert done.returncode == 2
    assert "CCMON_AM_TEAMS_WEBHOOK_URL" in done.stderr and "0.26" in done.stderr and "0.25.0" in done.stderr
    assert "webhookb2" not in done.stderr  # the URL is a secret
    assert not (tmp_path / "am.yml").exists()
