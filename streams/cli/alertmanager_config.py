"""Render an alertmanager.yml with ready-to-use receivers from environment variables: a generic
webhook, Slack, Microsoft Teams and e-mail, each message naming the tenant, the queue, the
value and the target (templates: deploy/alertmanager/ccmon.tmpl). The routes, grouping and
inhibition are those of deploy/alertmanager/alertmanager.yml (or --base). Check the result
with `amtool check-config`. The file holds the webhook URLs and the SMTP password (unless
given as files, the ..._FILE variables): it is written readable by its owner only. Variables:
docs/ALERTS.md, "Notifications".

Microsoft Teams (msteams_configs) needs Alertmanager >= 0.26, so the config is rendered for a
version: CCMON_AM_VERSION, else that of the local binary (CCMON_ALERTMANAGER_BIN, else
``alertmanager`` / ``prometheus-alertmanager`` on PATH), else docker-compose.yml's. A binary
built with ``go install`` (deploy/local/install-alertmanager.sh) prints an empty version
(``alertmanager, version  (branch: , ...)``): its version is then the module's in its Go build
information (``go version -m``)."""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kpi_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
#: The receivers of the base config that notifications go to by default (``watchdog`` has its
#: own variable: it must reach a dead man's switch, not people).
PEOPLE_RECEIVERS = ("default", "supervisors", "supervisors-pager", "ops")
#: The Alertmanager docker-compose.yml runs: assumed when no local binary tells its version.
COMPOSE_VERSION = (0, 27, 0)
#: The Go module a ``go install`` build of Alertmanager records in its build information.
ALERTMANAGER_MODULE = "github.com/prometheus/alertmanager"
#: msteams_configs, and the webhook's url_file, came with Alertmanager 0.26.0.
TEAMS_MIN_VERSION = (0, 26, 0)
WEBHOOK_URL_FILE_MIN_VERSION = (0, 26, 0)
DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
EMAIL = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+$")

#: Every variable read, with what it does (``--help`` lists them).
VARIABLES: Mapping[str, str] = {
    "CCMON_AM_WEBHOOK_URL": (
        "generic webhook: Alertmanager's JSON (labels tenant, queue; the description names value and target)"
    ),
    "CCMON_AM_WEBHOOK_URL_FILE": "or: the file holding it, as Alertmanager sees it (url_file; Alertmanager >= 0.26)",
    "CCMON_AM_SLACK_WEBHOOK_URL": "Slack incoming-webhook URL",
    "CCMON_AM_SLACK_WEBHOOK_URL_FILE": "or: the file holding it, as Alertmanager sees it (api_url_file)",
    "CCMON_AM_SLACK_CHANNEL": "Slack channel (optional; the webhook's own by default)",
    "CCMON_AM_TEAMS_WEBHOOK_URL": "Microsoft Teams incoming-webhook URL (Alertmanager >= 0.26)",
    "CCMON_AM_SMTP_SMARTHOST": "SMTP server host:port for e-mail",
    "CCMON_AM_SMTP_FROM": "sender address",
    "CCMON_AM_EMAIL_TO": "recipients, comma-separated",
    "CCMON_AM_SMTP_AUTH_USERNAME": "SMTP user (optional)",
    "CCMON_AM_SMTP_AUTH_PASSWORD": "SMTP password (optional)",
    "CCMON_AM_SMTP_AUTH_PASSWORD_FILE": "or: the file holding it, as Alertmanager sees it (auth_password_file)",
    "CCMON_AM_SMTP_REQUIRE_TLS": "yes (default) or no: STARTTLS required",
    "CCMON_AM_DEADMANSSWITCH_URL": "URL the always-firing CcmonWatchdog is sent to (a dead man's switch)",
    "CCMON_AM_RECEIVERS": "receivers the channels above notify, comma-separated (default: "
    + ",".join(PEOPLE_RECEIVERS)
    + ")",
    "CCMON_AM_SEND_RESOLVED": "yes (default) or no: also notify when an alert resolves",
    "CCMON_AM_GROUP_WAIT": "route group_wait (default: the base config's, 30s)",
    "CCMON_AM_GROUP_INTERVAL": "route group_interval (default: the base config's, 5m)",
    "CCMON_AM_REPEAT_INTERVAL": "route repeat_interval (default: the base config's, 4h)",
    "CCMON_AM_VERSION": "version of the Alertmanager the config is for (default: the local binary's, else "
    + ".".join(map(str, COMPOSE_VERSION))
    + ", docker-compose.yml's)",
    "CCMON_ALERTMANAGER_BIN": "the local Alertmanager binary whose version is the default (default: alertmanager, "
    "else prometheus-alertmanager, on PATH)",
}

_YES = {"yes": True, "true": True, "1": True, "on": True, "no": False, "false": False, "0": False, "off": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "environment variables:\n" + "\n".join(f"  {name:<30} {text}" for name, text in VARIABLES.items())
    parser.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")
    parser.add_argument(
        "--base",
        default=str(BASE),
        help="the alertmanager.yml whose routes and inhibitions are kept "
        "(default: deploy/alertmanager/alertmanager.yml)",
    )
    parser.add_argument(
        "--templates",
        default=None,
        metavar="GLOB",
        help="where Alertmanager finds ccmon.tmpl (default: the base config's '*.tmpl', beside the file)",
    )


def parse_version(text: str) -> tuple[int, int, int]:
    """``0.25.0``, ``v0.27.0`` or ``alertmanager, version 0.25.0 (branch...)`` -> (0, 25, 0).

    Only the first line counts: the rest of ``--version`` names Go's version (``go1.26.8``), not
    Alertmanager's, and a ``go install`` build's first line has no version at all (ValueError)."""
    line = text.strip().split("\n", 1)[0]
    number = r"v?(\d+)\.(\d+)(?:\.(\d+))?"
    match = re.search(r"\bversion\s+" + number if re.search(r"\bversion\b", line) else number, line)
    if match is None:
        raise ValueError(text)
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def module_version(go_version_m: str, module: str = ALERTMANAGER_MODULE) -> str | None:
    """The version of ``module`` in ``go version -m BINARY``'s output (``mod <module> v0.28.1 h1:...``)."""
    for line in go_version_m.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "mod" and fields[1] == module:
            return fields[2]
    return None


def binary_version(binary: str, environ: Mapping[str, str]) -> tuple[tuple[int, int, int], str] | None:
    """``binary``'s version and how it was read: its ``--version``, else (a ``go install`` build)
    the Alertmanager module's version in its Go build information; None if neither tells."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return parse_version(out.stdout + out.stderr), f"{binary} --version"
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    go = shutil.which("go", path=environ.get("PATH"))
    if go is None:
        return None
    try:
        out = subprocess.run([go, "version", "-m", binary], capture_output=True, text=True, timeout=30)
        found = module_version(out.stdout)
        return (parse_version(found), f"go version -m {binary}") if found else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def local_alertmanager_version(environ: Mapping[str, str] | None = None) -> tuple[tuple[int, int, int], str] | None:
    """The version of the Alertmanager installed here (and where it was read), if there is one:
    CCMON_ALERTMANAGER_BIN, else the first of ``alertmanager``, ``prometheus-alertmanager`` on
    PATH that tells its version. A binary that does not tell: COMPOSE_VERSION, saying so."""
    environ = os.environ if environ is None else environ
    chosen = environ.get("CCMON_ALERTMANAGER_BIN", "").strip()
    if chosen:
        if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
            raise ConfigError("CCMON_ALERTMANAGER_BIN", f"must be an executable Alertmanager binary, got {chosen!r}")
        binaries = [chosen]
    else:
        binaries = [
            b
            for b in (shutil.which(n, path=environ.get("PATH")) for n in ("alertmanager", "prometheus-alertmanager"))
            if b
        ]
    for binary in binaries:
        found = binary_version(binary, environ)
        if found is not None:
            return found
    if binaries:
        shown = ".".join(map(str, COMPOSE_VERSION))
        print(
            f"ccmon alertmanager-config: {', '.join(binaries)} did not say its version (neither --version nor "
            f"go version -m): assuming Alertmanager {shown}, docker-compose.yml's; set CCMON_AM_VERSION",
            file=sys.stderr,
        )
        return COMPOSE_VERSION, f"docker-compose.yml, the version of {', '.join(binaries)} being unknown"
    return None


def _url(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # A webhook URL is a secret (whoever has it can post): echo its scheme and host only.
        raise ConfigError(
            name, f"must be an http:// or https:// URL, got {parts.scheme or '?'}://{parts.hostname or '?'}/..."
        )
    return value


def _secret(environ: Mapping[str, str], name: str, key: str, file_key: str, *, url: bool = True) -> dict[str, str]:
    """``{key: value}`` from ``name``, or ``{file_key: path}`` from ``name_FILE`` (the secret stays
    out of the rendered file), or ``{}``; both set is an error."""
    value = _url(environ, name) if url else (environ.get(name, "") or None)
    path = environ.get(name + "_FILE", "").strip()
    if value and path:
        raise ConfigError(name + "_FILE", f"set either {name} or {name}_FILE, not both, got {path!r}")
    if path:
        if not path.startswith("/"):
            raise ConfigError(name + "_FILE", f"must be an absolute path (as Alertmanager sees it), got {path!r}")
        return {file_key: path}
    return {key: value} if value else {}


def _yes(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _YES:
        raise ConfigError(name, f"must be yes or no, got {environ[name]!r}")
    return _YES[value]


def render_config(
    base: Mapping[str, Any], environ: Mapping[str, str], version: tuple[int, int, int], templates: str | None = None
) -> dict[str, Any]:
    """The base config with the receivers the environment asks for (module docstring)."""
    config: dict[str, Any] = {key: value for key, value in base.items()}
    receivers = {r["name"]: dict(r) for r in config.get("receivers") or []}
    send_resolved = _yes(environ, "CCMON_AM_SEND_RESOLVED", True)
    chosen_text = environ.get("CCMON_AM_RECEIVERS", "").strip()
    chosen = [n.strip() for n in chosen_text.split(",") if n.strip()] if chosen_text else list(PEOPLE_RECEIVERS)
    for name in chosen:
        if name not in receivers or name == "watchdog":
            known = ", ".join(sorted(n for n in receivers if n != "watchdog"))
            raise ConfigError(
                "CCMON_AM_RECEIVERS", f"unknown receiver {name!r} (the base config has {known}), got {chosen_text!r}"
            )
    configs: dict[str, list[dict[str, Any]]] = {}

    webhook = _secret(environ, "CCMON_AM_WEBHOOK_URL", "url", "url_file")
    if "url_file" in webhook and version < WEBHOOK_URL_FILE_MIN_VERSION:
        raise ConfigError(
            "CCMON_AM_WEBHOOK_URL_FILE",
            "the webhook's url_file needs Alertmanager >= 0.26, the config is for "
            f"Alertmanager {'.'.join(map(str, version))}: set CCMON_AM_WEBHOOK_URL instead",
        )
    if webhook:
        configs["webhook_configs"] = [{**webhook, "send_resolved": send_resolved}]
    slack = _secret(environ, "CCMON_AM_SLACK_WEBHOOK_URL", "api_url", "api_url_file")
    if slack:
        entry: dict[str, Any] = {
            **slack,
            "send_resolved": send_resolved,
            "title": '{{ template "ccmon.title" . }}',
            "text": '{{ template "ccmon.text" . }}',
            "color": '{{ template "ccmon.slack.color" . }}',
        }
        channel = environ.get("CCMON_AM_SLACK_CHANNEL", "").strip()
        if channel:
            entry["channel"] = channel
        configs["slack_configs"] = [entry]
    teams = _url(environ, "CCMON_AM_TEAMS_WEBHOOK_URL")
    if teams:
        if version < TEAMS_MIN_VERSION:
            shown = ".".join(map(str, version))
            raise ConfigError(
                "CCMON_AM_TEAMS_WEBHOOK_URL",
                "Microsoft Teams needs Alertmanager >= 0.26 (msteams_configs), the "
                f"config is for Alertmanager {shown}: upgrade it (docker-compose.yml runs "
                f"{'.'.join(map(str, COMPOSE_VERSION))}), set CCMON_AM_VERSION if the config is for another "
                "Alertmanager, or relay CCMON_AM_WEBHOOK_URL to Teams",
            )
        configs["msteams_configs"] = [
            {
                "webhook_url": teams,
                "send_resolved": send_resolved,
                "title": '{{ template "ccmon.title" . }}',
                "text": '{{ template "ccmon.text" . }}',
            }
        ]
    email = _email(environ, send_resolved)
    if email:
        configs["email_configs"] = [email]

    for name in chosen:
        receivers[name].update(copy.deepcopy(configs))  # no YAML anchors shared between receivers
    deadman = _url(environ, "CCMON_AM_DEADMANSSWITCH_URL")
    if deadman and "watchdog" in receivers:
        receivers["watchdog"]["webhook_configs"] = [{"url": deadman, "send_resolved": False}]
    config["receivers"] = list(receivers.values())

    route = dict(config.get("route") or {})
    for key in ("group_wait", "group_interval", "repeat_interval"):
        variable = f"CCMON_AM_{key.upper()}"
        value = environ.get(variable, "").strip()
        if value:
            if not DURATION.match(value):
                raise ConfigError(variable, f"must be a duration such as 30s, 5m or 1h, got {value!r}")
            route[key] = value
    config["route"] = route
    if templates:
        config["templates"] = [templates]
    return config


def _email(environ: Mapping[str, str], send_resolved: bool) -> dict[str, Any] | None:
    smarthost = environ.get("CCMON_AM_SMTP_SMARTHOST", "").strip()
    sender = environ.get("CCMON_AM_SMTP_FROM", "").strip()
    to = environ.get("CCMON_AM_EMAIL_TO", "").strip()
    if not (smarthost or sender or to):
        return None
    for name, value in (
        ("CCMON_AM_SMTP_SMARTHOST", smarthost),
        ("CCMON_AM_SMTP_FROM", sender),
        ("CCMON_AM_EMAIL_TO", to),
    ):
        if not value:
            raise ConfigError(
                name,
                "required for e-mail (with CCMON_AM_SMTP_SMARTHOST, CCMON_AM_SMTP_FROM and CCMON_AM_EMAIL_TO), got ''",
            )
    if not re.fullmatch(r"\[?[A-Za-z0-9._:-]+\]?:\d{1,5}", smarthost):
        raise ConfigError("CCMON_AM_SMTP_SMARTHOST", f"must be host:port, got {smarthost!r}")
    if not EMAIL.match(sender):
        raise ConfigError("CCMON_AM_SMTP_FROM", f"must be an e-mail address, got {sender!r}")
    recipients = [r.strip() for r in to.split(",") if r.strip()]
    bad = [r for r in recipients if not EMAIL.match(r)]
    if bad or not recipients:
        raise ConfigError("CCMON_AM_EMAIL_TO", f"must be e-mail addresses, comma-separated, got {to!r}")
    entry: dict[str, Any] = {
        "to": ", ".join(recipients),
        "from": sender,
        "smarthost": smarthost,
        "require_tls": _yes(environ, "CCMON_AM_SMTP_REQUIRE_TLS", True),
        "send_resolved": send_resolved,
        "headers": {"Subject": '{{ template "ccmon.email.subject" . }}'},
        "html": '{{ template "ccmon.email.html" . }}',
        "text": '{{ template "ccmon.text" . }}',
    }
    user = environ.get("CCMON_AM_SMTP_AUTH_USERNAME", "").strip()
    password = _secret(environ, "CCMON_AM_SMTP_AUTH_PASSWORD", "auth_password", "auth_password_file", url=False)
    if password and not user:
        raise ConfigError("CCMON_AM_SMTP_AUTH_USERNAME", "required with CCMON_AM_SMTP_AUTH_PASSWORD(_FILE), got ''")
    if user:
        entry["auth_username"] = user
        entry.update(password)
    return entry


def run(args: argparse.Namespace) -> int:
    import yaml

    base_path = Path(args.base)
    try:
        base = yaml.safe_load(base_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--base", f"cannot read {str(base_path)!r}: {exc.strerror or exc}") from None
    if not isinstance(base, dict) or "route" not in base or "receivers" not in base:
        raise ConfigError("--base", f"{str(base_path)!r} is not an Alertmanager config with a route and receivers")
    environ = os.environ
    if environ.get("CCMON_AM_VERSION", "").strip():
        try:
            version = parse_version(environ["CCMON_AM_VERSION"])
        except ValueError:
            raise ConfigError(
                "CCMON_AM_VERSION", f"must be a version such as 0.27.0, got {environ['CCMON_AM_VERSION']!r}"
            ) from None
        version_from = "CCMON_AM_VERSION"
    else:
        found = local_alertmanager_version(environ)
        version, version_from = found if found is not None else (COMPOSE_VERSION, "docker-compose.yml")
    config = render_config(base, environ, version, args.templates)
    channels = sorted({key for r in config["receivers"] for key in r if key.endswith("_configs")})
    header = (
        f"# Rendered by `ccmon alertmanager-config` from {base_path.name} and CCMON_AM_* variables, for Alertmanager "
        f"{'.'.join(map(str, version))} (from {version_from}).\n# Channels: {', '.join(channels) or 'none'}. "
        "Holds webhook URLs and passwords: keep it private. Check: amtool check-config <this file>\n"
    )
    text = header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.output)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(out, 0o600)
        print(f"ccmon alertmanager-config: wrote {out} ({', '.join(channels) or 'no channels'})", file=sys.stderr)
    return 0
