"""``ccmon alertmanager-config`` (streams/cli/alertmanager_config.py): which receivers get
which channel, Microsoft Teams by Alertmanager version, and errors that name the variable
(without echoing a webhook URL, a secret). Real delivery through a real Alertmanager:
tests/integration/test_alerts_delivery.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from kpi_core.errors import ConfigError
from streams.cli.alertmanager_config import (
    BASE,
    COMPOSE_VERSION,
    local_alertmanager_version,
    module_version,
    parse_version,
    render_config,
)

BASE_CONFIG = yaml.safe_load(BASE.read_text(encoding="utf-8"))
TEMPLATE = Path(BASE).with_name("ccmon.tmpl")
NEW, OLD = (0, 27, 0), (0, 25, 0)
SLACK = "https://hooks.slack.example/services/T0/B0/secret-token"
TEAMS = "https://example.webhook.office.com/webhookb2/secret-token"


def receivers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in config["receivers"]}


def test_nothing_set_keeps_the_base_config() -> None:
    assert render_config(BASE_CONFIG, {}, NEW) == BASE_CONFIG


def test_every_channel_on_the_chosen_receivers() -> None:
    environ = {
        "CCMON_AM_WEBHOOK_URL": "http://gateway:5001/hook",
        "CCMON_AM_SLACK_WEBHOOK_URL": SLACK,
        "CCMON_AM_TEAMS_WEBHOOK_URL": TEAMS,
        "CCMON_AM_SMTP_SMARTHOST": "smtp.example.com:587",
        "CCMON_AM_SMTP_FROM": "am@example.com",
        "CCMON_AM_EMAIL_TO": "a@example.com, b@example.com",
        "CCMON_AM_SMTP_AUTH_USERNAME": "am",
        "CCMON_AM_SMTP_AUTH_PASSWORD": "pw",
        "CCMON_AM_DEADMANSSWITCH_URL": "https://hc.example/ping/x",
        "CCMON_AM_RECEIVERS": "supervisors,supervisors-pager",
        "CCMON_AM_SEND_RESOLVED": "no",
        "CCMON_AM_GROUP_WAIT": "10s",
    }
    config = render_config(BASE_CONFIG, environ, NEW)
    got = receivers(config)
    for name in ("supervisors", "supervisors-pager"):
        r = got[name]
        assert r["webhook_configs"] == [{"url": "http://gateway:5001/hook", "send_resolved": False}]
        assert r["slack_configs"][0]["api_url"] == SLACK
        assert r["slack_configs"][0]["title"] == '{{ template "ccmon.title" . }}'
        assert r["msteams_configs"] == [
            {
                "webhook_url": TEAMS,
                "send_resolved": False,
                "title": '{{ template "ccmon.title" . }}',
                "text": '{{ template "ccmon.text" . }}',
            }
        ]
        mail = r["email_configs"][0]
        assert (mail["to"], mail["from"], mail["smarthost"], mail["require_tls"]) == (
            "a@example.com, b@example.com",
            "am@example.com",
            "smtp.example.com:587",
            True,
        )
        assert (mail["auth_username"], mail["auth_password"]) == ("am", "pw")
        assert mail["headers"]["Subject"] == '{{ template "ccmon.email.subject" . }}'
    assert got["supervisors"]["slack_configs"] is not got["supervisors-pager"]["slack_configs"]  # no YAML anchors
    assert set(got["ops"]) == {"name"} and set(got["default"]) == {"name"}
    assert got["watchdog"]["webhook_configs"] == [{"url": "https://hc.example/ping/x", "send_resolved": False}]
    assert config["route"]["group_wait"] == "10s" and config["route"]["routes"] == BASE_CONFIG["route"]["routes"]
    assert config["inhibit_rules"] == BASE_CONFIG["inhibit_rules"]
    # The templates the receivers name exist in ccmon.tmpl.
    template = TEMPLATE.read_text(encoding="utf-8")
    for name in ("ccmon.title", "ccmon.text", "ccmon.slack.color", "ccmon.email.subject", "ccmon.email.html"):
        assert f'{{{{ define "{name}" }}}}' in template, name


def test_secrets_from_files() -> None:
    environ = {
        "CCMON_AM_SLACK_WEBHOOK_URL_FILE": "/etc/alertmanager/slack_url",
        "CCMON_AM_SMTP_SMARTHOST": "smtp:25",
        "CCMON_AM_SMTP_FROM": "am@x.com",
        "CCMON_AM_EMAIL_TO": "a@x.com",
        "CCMON_AM_SMTP_AUTH_USERNAME": "am",
        "CCMON_AM_SMTP_AUTH_PASSWORD_FILE": "/etc/alertmanager/smtp_password",
        "CCMON_AM_WEBHOOK_URL_FILE": "/etc/alertmanager/hook_url",
    }
    ops = receivers(render_config(BASE_CONFIG, environ, NEW))["ops"]
    assert (
        ops["slack_configs"][0]["api_url_file"] == "/etc/alertmanager/slack_url"
        and "api_url" not in ops["slack_configs"][0]
    )
    assert ops["email_configs"][0]["auth_password_file"] == "/etc/alertmanager/smtp_password"
    assert ops["webhook_configs"] == [{"url_file": "/etc/alertmanager/hook_url", "send_resolved": True}]
    with pytest.raises(ConfigError) as info:  # Debian's 0.25 has no url_file for webhooks
        render_config(BASE_CONFIG, environ, OLD)
    assert info.value.field == "CCMON_AM_WEBHOOK_URL_FILE" and "0.26" in str(info.value)
    with pytest.raises(ConfigError) as info:
        render_config(BASE_CONFIG, {"CCMON_AM_SLACK_WEBHOOK_URL": SLACK, "CCMON_AM_SLACK_WEBHOOK_URL_FILE": "/x"}, NEW)
    assert info.value.field == "CCMON_AM_SLACK_WEBHOOK_URL_FILE" and "secret-token" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        render_config(BASE_CONFIG, {"CCMON_AM_SLACK_WEBHOOK_URL_FILE": "slack_url"}, NEW)
    assert "absolute" in str(info.value) and "'slack_url'" in str(info.value)


def test_teams_needs_alertmanager_0_26() -> None:
    with pytest.raises(ConfigError) as info:
        render_config(BASE_CONFIG, {"CCMON_AM_TEAMS_WEBHOOK_URL": TEAMS}, OLD)
    assert info.value.field == "CCMON_AM_TEAMS_WEBHOOK_URL"
    assert "0.26" in str(info.value) and "0.25.0" in str(info.value) and "secret-token" not in str(info.value)
    assert (
        "msteams_configs"
        in receivers(render_config(BASE_CONFIG, {"CCMON_AM_TEAMS_WEBHOOK_URL": TEAMS}, (0, 26, 0)))["ops"]
    )
    assert parse_version("alertmanager, version 0.25.0 (branch: debian/sid)") == OLD and parse_version("v0.27") == (
        0,
        27,
        0,
    )


#: ``--version`` of Alertmanager built with ``go install`` (deploy/local/install-alertmanager.sh):
#: no version on the first line, Go's on another.
GO_INSTALL_VERSION = """alertmanager, version  (branch: , revision: unknown)
  build user:
  build date:
  go version:       go1.26.8
  platform:         linux/amd64
  tags:             unknown
"""
DEBIAN_VERSION = """alertmanager, version 0.25.0 (branch: debian/sid, revision: 0.25.0-1+b4)
  build user:       team+pkg-go@tracker.debian.org
  go version:       go1.19.8
"""
#: ``go version -m`` of that build.
GO_VERSION_M = """{binary}: go1.26.8
\tpath\tgithub.com/prometheus/alertmanager/cmd/alertmanager
\tmod\tgithub.com/prometheus/alertmanager\tv0.28.1\th1:BK5pCoAtaKg01BYRUJhEDV1tqJMEtYBGzPw8QdvnnvA=
\tdep\tgithub.com/prometheus/common\tv0.61.0\th1:K6r7Xn3Y4eX8Ud2/3jsp4bBgr6IT5+M5i7AvP6ITS4c=
\tbuild\t-trimpath=true
"""


def test_version_of_a_go_install_build() -> None:
    # Its --version has no version: not Go's (1.26.8) taken for Alertmanager's.
    with pytest.raises(ValueError):
        parse_version(GO_INSTALL_VERSION)
    assert parse_version(DEBIAN_VERSION) == OLD
    assert module_version(GO_VERSION_M.format(binary="/x/alertmanager")) == "v0.28.1"
    assert (
        module_version("/x/alertmanager: go1.26.8\n\tpath\tgithub.com/prometheus/prometheus/cmd/prometheus\n") is None
    )


def fake_binary(path: Path, output: str) -> str:
    """An executable printing ``output`` (``{binary}``: its last argument)."""
    path.write_text("#!/bin/sh\nfor a; do last=$a; done\ncat <<EOF\n" + output.replace("{binary}", "$last") + "EOF\n")
    path.chmod(0o755)
    return str(path)


def test_local_version_from_the_go_build_information(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bin").mkdir()
    binary = fake_binary(tmp_path / "bin" / "alertmanager", GO_INSTALL_VERSION)
    # `go version -m` tells the version of the binary on PATH...
    go = fake_binary(tmp_path / "bin" / "go", GO_VERSION_M)
    assert local_alertmanager_version({"PATH": str(tmp_path / "bin")}) == ((0, 28, 1), f"go version -m {binary}")
    # ... and of the one CCMON_ALERTMANAGER_BIN names, first.
    debian = fake_binary(tmp_path / "prometheus-alertmanager", DEBIAN_VERSION)
    assert local_alertmanager_version({"PATH": str(tmp_path / "bin"), "CCMON_ALERTMANAGER_BIN": debian}) == (
        OLD,
        f"{debian} --version",
    )
    # Without go: the docker-compose version, saying why.
    os.remove(go)
    version, whence = local_alertmanager_version({"PATH": str(tmp_path / "bin")}) or ((), "")
    assert version == COMPOSE_VERSION and binary in whence and "unknown" in whence
    assert "CCMON_AM_VERSION" in capsys.readouterr().err
    assert local_alertmanager_version({"PATH": str(tmp_path / "empty")}) is None
    with pytest.raises(ConfigError) as info:
        local_alertmanager_version({"CCMON_ALERTMANAGER_BIN": str(tmp_path / "nope")})
    assert info.value.field == "CCMON_ALERTMANAGER_BIN" and repr(str(tmp_path / "nope")) in str(info.value)


@pytest.mark.parametrize(
    ("environ", "field", "echo"),
    [
        ({"CCMON_AM_SLACK_WEBHOOK_URL": "hooks.slack.example/secret-token"}, "CCMON_AM_SLACK_WEBHOOK_URL", "?://?/..."),
        ({"CCMON_AM_WEBHOOK_URL": "ftp://gw/secret-token"}, "CCMON_AM_WEBHOOK_URL", "ftp://gw/..."),
        ({"CCMON_AM_SMTP_SMARTHOST": "smtp:25", "CCMON_AM_SMTP_FROM": "am@example.com"}, "CCMON_AM_EMAIL_TO", "''"),
        (
            {"CCMON_AM_SMTP_SMARTHOST": "smtp", "CCMON_AM_SMTP_FROM": "am@x.com", "CCMON_AM_EMAIL_TO": "a@x.com"},
            "CCMON_AM_SMTP_SMARTHOST",
            "'smtp'",
        ),
        (
            {
                "CCMON_AM_SMTP_SMARTHOST": "smtp:25",
                "CCMON_AM_SMTP_FROM": "am@x.com",
                "CCMON_AM_EMAIL_TO": "a@x.com, nobody",
            },
            "CCMON_AM_EMAIL_TO",
            "'a@x.com, nobody'",
        ),
        (
            {
                "CCMON_AM_SMTP_SMARTHOST": "smtp:25",
                "CCMON_AM_SMTP_FROM": "am@x.com",
                "CCMON_AM_EMAIL_TO": "a@x.com",
                "CCMON_AM_SMTP_AUTH_PASSWORD": "pw",
            },
            "CCMON_AM_SMTP_AUTH_USERNAME",
            "''",
        ),
        ({"CCMON_AM_RECEIVERS": "supervisors,pagers"}, "CCMON_AM_RECEIVERS", "'pagers'"),
        ({"CCMON_AM_RECEIVERS": "watchdog"}, "CCMON_AM_RECEIVERS", "'watchdog'"),
        ({"CCMON_AM_GROUP_WAIT": "30 seconds"}, "CCMON_AM_GROUP_WAIT", "'30 seconds'"),
        ({"CCMON_AM_SEND_RESOLVED": "maybe"}, "CCMON_AM_SEND_RESOLVED", "'maybe'"),
    ],
)
def test_errors_name_the_variable(environ: dict[str, str], field: str, echo: str) -> None:
    with pytest.raises(ConfigError) as info:
        render_config(BASE_CONFIG, environ, NEW)
    assert info.value.field == field and echo in str(info.value)
    assert "secret-token" not in str(info.value)
