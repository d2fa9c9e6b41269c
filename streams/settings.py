"""Run-time settings of the streaming side: one frozen object, built once at start-up.

Each value comes from its command-line flag, else its environment variable, else the
default. A bad value raises :class:`~kpi_core.errors.ConfigError` naming the flag or the
variable it came from (``config field 'CCMON_BATCH_SIZE': must be an integer >= 1, got 'x'``).

Secrets (a password in ``redis_url``, the Kafka, Redis and exporter passwords, the customer
key secret) are never logged: log :meth:`Settings.redacted`, and ``repr(settings)`` is
redacted too. A secret has no command-line flag (a flag shows in ``ps`` and in shell
history): it comes from its environment variable or from a file named by
``--...-file`` / ``..._FILE``, read once here. Security settings and their combinations:
docs/SECURITY.md.

The clock is ``wall`` (live) or ``fixed:<epoch seconds | RFC 3339>`` (tests, replays): it
gives the worker's lateness "now" and the exporter's evaluation instant.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kpi_core.errors import ConfigError, InvalidEventError
from kpi_core.events import parse_ts
from streams.logs import LOG_FORMATS, configure

Clock = Callable[[], float]

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_OFFSET_RESETS = ("earliest", "latest")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: The settings that hold a secret: ``***`` in :meth:`Settings.redacted`, no flag.
SECRETS = ("kafka_password", "redis_password", "exporter_auth_password", "customer_key_secret")
#: Shortest customer key secret accepted: the digests of low-entropy ids (phone numbers) are
#: only as hard to reverse as the secret is to guess.
MIN_CUSTOMER_KEY_SECRET_CHARS = 32


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:19092"
    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_cluster: bool = False
    evicting_redis_allowed: bool = False
    events_topic: str = "ccmon.events"
    dlq_topic: str = "ccmon.dlq"
    group_id: str = "ccmon"
    config_path: str | None = None
    redis_prefix: str = "ccmon"
    exporter_host: str = "127.0.0.1"
    exporter_port: int = 9108
    worker_web_port: int = 9109
    batch_size: int = 2000
    batch_within: float = 0.05
    session_timeout: float = 60.0
    stuck_partition_seconds: float = 120.0
    redis_policy_recheck_seconds: float = 30.0
    offset_reset: str = "earliest"
    clock: str = "wall"
    log_level: str = "INFO"
    log_format: str = "text"
    # -- security (docs/SECURITY.md); a password holds the secret itself, read from its
    # environment variable or its file at start-up, and is never shown.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_username: str | None = None
    kafka_password: str | None = field(default=None, repr=False)
    kafka_password_file: str | None = None
    kafka_ca_file: str | None = None
    kafka_cert_file: str | None = None
    kafka_key_file: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    redis_password_file: str | None = None
    redis_ca_file: str | None = None
    redis_cert_file: str | None = None
    redis_key_file: str | None = None
    exporter_auth_user: str | None = None
    exporter_auth_password: str | None = field(default=None, repr=False)
    exporter_auth_password_file: str | None = None
    exporter_tls_cert_file: str | None = None
    exporter_tls_key_file: str | None = None
    # -- the board's "vs last week" indicator: the Prometheus that records the week-over-week
    # rules (streams.web.week_over_week); None: no indicator.
    prometheus_url: str | None = None
    # -- customer record keys (docs/SECURITY.md): the HMAC key naming customer records in
    # Redis; the worker and ``ccmon rebuild`` need it unless ``insecure_dev``.
    customer_key_secret: str | None = field(default=None, repr=False)
    customer_key_secret_file: str | None = None
    insecure_dev: bool = False
    # -- alerts on the board (streams/web/alerts.py): Alertmanager's base URL; unset: ccmon's
    # own breach state against the queues' targets.
    alertmanager_url: str | None = None

    # -- derived ---------------------------------------------------------------------------
    @property
    def fixed_time(self) -> float | None:
        """The instant of a ``fixed:`` clock, ``None`` for the wall clock."""
        return _parse_clock(self.clock, "clock")

    def now(self) -> float:
        fixed = self.fixed_time
        return time.time() if fixed is None else fixed

    def make_clock(self) -> Clock:
        fixed = self.fixed_time
        if fixed is None:
            return time.time
        return lambda: fixed

    @property
    def kafka_url(self) -> str:
        """``kafka://host:port[;host:port]`` for Faust."""
        return "kafka://" + ";".join(self.kafka_servers)

    @property
    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in re.split(r"[,;]", self.kafka_bootstrap) if s.strip()]

    # -- secrets ---------------------------------------------------------------------------
    def redacted(self) -> dict[str, Any]:
        """Every setting, with passwords (in URLs too) replaced by ``***``: safe to log."""
        values = asdict(self)
        values["redis_url"] = redact_url(self.redis_url)
        if self.alertmanager_url is not None:
            values["alertmanager_url"] = redact_url(self.alertmanager_url)
        for name in SECRETS:
            if values[name] is not None:
                values[name] = "***"
        return values

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={value!r}" for key, value in self.redacted().items())
        return f"Settings({inner})"


def redact_url(url: str) -> str:
    """``redis://user:secret@host/0`` -> ``redis://user:***@host/0``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    userinfo = f"{parts.username}:***" if parts.username else ":***"
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{userinfo}@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- sources: (attribute, flag dest, environment variables) ----------------------------------
#: attribute -> (argparse dest, flag, environment variables in order of precedence)
SOURCES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "kafka_bootstrap": ("--kafka", ("CCMON_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP")),
    "redis_url": ("--redis", ("CCMON_REDIS_URL", "REDIS_URL")),
    "redis_cluster": ("--redis-cluster", ("CCMON_REDIS_CLUSTER",)),
    "evicting_redis_allowed": ("--allow-evicting-redis", ("CCMON_ALLOW_EVICTING_REDIS",)),
    "events_topic": ("--topic", ("CCMON_EVENTS_TOPIC",)),
    "dlq_topic": ("--dlq-topic", ("CCMON_DLQ_TOPIC",)),
    "group_id": ("--group", ("CCMON_GROUP_ID",)),
    "config_path": ("--config", ("CCMON_CONFIG",)),
    "redis_prefix": ("--redis-prefix", ("CCMON_REDIS_PREFIX",)),
    "exporter_host": ("--host", ("CCMON_EXPORTER_HOST",)),
    "exporter_port": ("--port", ("CCMON_EXPORTER_PORT",)),
    "worker_web_port": ("--web-port", ("CCMON_WORKER_WEB_PORT",)),
    "batch_size": ("--batch-size", ("CCMON_BATCH_SIZE",)),
    "batch_within": ("--batch-within", ("CCMON_BATCH_WITHIN",)),
    "session_timeout": ("--session-timeout", ("CCMON_KAFKA_SESSION_TIMEOUT",)),
    "stuck_partition_seconds": ("--stuck-partition-seconds", ("CCMON_STUCK_PARTITION_SECONDS",)),
    "redis_policy_recheck_seconds": ("--redis-policy-recheck-seconds", ("CCMON_REDIS_POLICY_RECHECK_SECONDS",)),
    "offset_reset": ("--offset-reset", ("CCMON_OFFSET_RESET",)),
    "clock": ("--clock", ("CCMON_CLOCK",)),
    "log_level": ("--log-level", ("CCMON_LOG_LEVEL",)),
    "log_format": ("--log-format", ("CCMON_LOG_FORMAT",)),
    # Security (docs/SECURITY.md). An empty flag: environment only (a secret).
    "kafka_security_protocol": ("--kafka-security-protocol", ("CCMON_KAFKA_SECURITY_PROTOCOL",)),
    "kafka_sasl_mechanism": ("--kafka-sasl-mechanism", ("CCMON_KAFKA_SASL_MECHANISM",)),
    "kafka_username": ("--kafka-username", ("CCMON_KAFKA_USERNAME",)),
    "kafka_password": ("", ("CCMON_KAFKA_PASSWORD",)),
    "kafka_password_file": ("--kafka-password-file", ("CCMON_KAFKA_PASSWORD_FILE",)),
    "kafka_ca_file": ("--kafka-ca-file", ("CCMON_KAFKA_CA_FILE",)),
    "kafka_cert_file": ("--kafka-cert-file", ("CCMON_KAFKA_CERT_FILE",)),
    "kafka_key_file": ("--kafka-key-file", ("CCMON_KAFKA_KEY_FILE",)),
    "redis_password": ("", ("CCMON_REDIS_PASSWORD",)),
    "redis_password_file": ("--redis-password-file", ("CCMON_REDIS_PASSWORD_FILE",)),
    "redis_ca_file": ("--redis-ca-file", ("CCMON_REDIS_CA_FILE",)),
    "redis_cert_file": ("--redis-cert-file", ("CCMON_REDIS_CERT_FILE",)),
    "redis_key_file": ("--redis-key-file", ("CCMON_REDIS_KEY_FILE",)),
    "exporter_auth_user": ("--basic-auth-user", ("CCMON_EXPORTER_BASIC_AUTH_USER",)),
    "exporter_auth_password": ("", ("CCMON_EXPORTER_BASIC_AUTH_PASSWORD",)),
    "exporter_auth_password_file": ("--basic-auth-password-file", ("CCMON_EXPORTER_BASIC_AUTH_PASSWORD_FILE",)),
    "exporter_tls_cert_file": ("--tls-cert-file", ("CCMON_EXPORTER_TLS_CERT_FILE",)),
    "exporter_tls_key_file": ("--tls-key-file", ("CCMON_EXPORTER_TLS_KEY_FILE",)),
    "prometheus_url": ("--prometheus-url", ("CCMON_PROMETHEUS_URL",)),
    "customer_key_secret": ("", ("CCMON_CUSTOMER_KEY_SECRET",)),
    "customer_key_secret_file": ("--customer-key-secret-file", ("CCMON_CUSTOMER_KEY_SECRET_FILE",)),
    "insecure_dev": ("--insecure-dev", ("CCMON_INSECURE_DEV",)),
    "alertmanager_url": ("--alertmanager-url", ("CCMON_ALERTMANAGER_URL",)),
}

_HELP: Mapping[str, str] = {
    "kafka_bootstrap": "Kafka bootstrap servers, host:port[,host:port]",
    "redis_url": "Redis URL, redis://[:password@]host:port/db",
    "redis_cluster": "'yes' when --redis names a node of a Redis Cluster (see docs/STREAMS.md)",
    "evicting_redis_allowed": "'yes': run on a Redis whose maxmemory-policy may evict keys (refused otherwise: an "
    "evicted seen set counts redelivered events again; see streams/redis_policy.py)",
    "events_topic": "topic the events are read from",
    "dlq_topic": "dead-letter topic for rejected events",
    "group_id": "Kafka consumer group (Faust app id); workers with the same one split the partitions",
    "config_path": "KPI config TOML (see deploy/config/ccmon.toml); without one, built-in defaults",
    "redis_prefix": "prefix of every Redis key (lets several deployments or tests share a Redis)",
    "exporter_host": "address the exporter listens on; 0.0.0.0 (all) shows customer ids in "
                     "/api/callbacks/pending only with basic auth",
    "exporter_port": "port the exporter listens on",
    "worker_web_port": "port of the worker's web server (/metrics of the worker itself); 0: none",
    "batch_size": "Kafka messages per batch (a message may hold many events)",
    "batch_within": "seconds to wait for a batch to fill",
    "session_timeout": "seconds before the group gives a silent (crashed) worker's partitions to the others",
    "stuck_partition_seconds": "seconds an assigned partition may lag with its committed offset standing still (no "
                               "batch in flight, Redis answering) before the worker exits (code 75) to be restarted; 0: off",
    "redis_policy_recheck_seconds": "seconds between two reads of Redis's maxmemory-policy while running (the "
                                    "worker's timer; the exporter at a scrape): a change is logged and exported",
    "offset_reset": "where a new consumer group starts: earliest or latest",
    "clock": "'wall', or 'fixed:<epoch seconds or RFC 3339>' for tests and replays",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "log_format": "text, or json: one JSON object per log line (ts, level, logger, message...)",
    "kafka_security_protocol": "Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    "kafka_sasl_mechanism": "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
    "kafka_username": "SASL user name",
    "kafka_password_file": "file holding the SASL password (or $CCMON_KAFKA_PASSWORD; no flag for the password itself)",
    "kafka_ca_file": "PEM CA certificate(s) the Kafka brokers' certificates must chain to; unset: the system's CAs",
    "kafka_cert_file": "PEM client certificate for Kafka (mutual TLS); may also hold the key",
    "kafka_key_file": "PEM private key of --kafka-cert-file",
    "redis_password_file": "file holding the Redis password (or $CCMON_REDIS_PASSWORD, or in the URL)",
    "redis_ca_file": "PEM CA certificate(s) the Redis server's certificate must chain to (rediss:// URLs); unset: the system's CAs",
    "redis_cert_file": "PEM client certificate for Redis (mutual TLS); may also hold the key",
    "redis_key_file": "PEM private key of --redis-cert-file",
    "exporter_auth_user": "require HTTP basic auth with this user (not for /livez, /readyz, /healthz)",
    "exporter_auth_password_file": "file holding the basic-auth password (or $CCMON_EXPORTER_BASIC_AUTH_PASSWORD)",
    "exporter_tls_cert_file": "serve HTTPS with this PEM certificate (chain); may also hold the key",
    "exporter_tls_key_file": "PEM private key of --tls-cert-file",
    "prometheus_url": "http(s) URL of the Prometheus that records ccmon's week-over-week rules, e.g. "
                      "http://prometheus:9090; feeds the board's 'vs last week' indicator (/api/week-over-week)",
    "customer_key_secret_file": "file holding the secret that keys customer record names in Redis "
                                "(or $CCMON_CUSTOMER_KEY_SECRET; at least 32 characters; worker and rebuild: the same)",
    "insecure_dev": "development only (the flag alone: yes): run the worker or rebuild without a customer key "
                    "secret; customer record names are then a digest anyone can recompute from a customer id",
    "alertmanager_url": "Alertmanager base URL (http://host:9093) whose firing alerts the wallboard shows "
                        "(/api/alerts); unset: ccmon's own breaches of the queues' targets",
}


class _RefusedSecretFlag(argparse.Action):
    """``--kafka-password VALUE``: refused without echoing the value (argparse would otherwise
    take it for an abbreviation of ``--kafka-password-file`` and name the secret as a path)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        file_flag = f"{option_string}-file"
        env = next(SOURCES[name.removesuffix("_file")][1][0] for name, (flag, _env) in SOURCES.items() if flag == file_flag)
        what = "a password" if "password" in file_flag else "a secret"
        parser.error(f"{option_string}: {what} has no flag (a flag shows in ps and in shell history); "
                     f"use ${env} or {file_flag}")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Add the flags of the settings ``names`` (every default is ``None``: unset)."""
    defaults = Settings()
    for name in names:
        flag, env = SOURCES[name]
        if not flag:  # environment only: a secret must not show in ps
            continue
        if name.removesuffix("_file") in SECRETS:
            parser.add_argument(flag.removesuffix("-file"), dest=f"_refused_{name}", nargs="?", default=None,
                                action=_RefusedSecretFlag, help=argparse.SUPPRESS)  # fmt: skip
        default = getattr(defaults, name)
        shown = f"${' or $'.join(env)}, else {default}" if default is not None else f"${env[0]}"
        # A yes/no setting: the flag alone means yes (``--insecure-dev``).
        switch: dict[str, Any] = {"nargs": "?", "const": "yes"} if isinstance(default, bool) else {}
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            metavar=name.split("_")[-1].upper(),
            help=f"{_HELP[name]} (default: {shown})",
            **switch,
        )


def from_args(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags, else environment, else defaults; validated."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for f in fields(Settings):
        flag, names = SOURCES[f.name]
        raw = getattr(args, f.name, None) if args is not None else None
        where = flag
        if raw is None:
            for var in names:
                if env.get(var, "") != "":
                    raw, where = env[var], var
                    break
        if raw is None:
            values[f.name] = getattr(defaults, f.name)
            origin[f.name] = f.name
        else:
            values[f.name] = raw
            origin[f.name] = where
    return _validate(values, origin)


_BOOLEANS = {"yes": True, "true": True, "1": True, "on": True, "no": False, "false": False, "0": False, "off": False}


def _validate(values: dict[str, Any], origin: Mapping[str, str]) -> Settings:
    def fail(name: str, message: str) -> ConfigError:
        return ConfigError(origin[name], f"{message}, got {values[name]!r}")

    def integer(name: str, low: int, high: int) -> int:
        value = values[name]
        try:
            number = int(str(value).strip())
        except ValueError:
            raise fail(name, f"must be an integer in {low}..{high}") from None
        if not low <= number <= high:
            raise fail(name, f"must be an integer in {low}..{high}")
        return number

    def seconds(name: str, ok: Callable[[float], bool], within: str, also: str = "") -> float:
        """A number of seconds ``ok`` accepts; else "must be <also>a number of seconds <within>"."""
        rule = f"must be {also}a number of seconds {within}"
        try:
            number = float(str(values[name]).strip())
        except ValueError:
            raise fail(name, rule) from None
        if not ok(number):
            raise fail(name, rule)
        return number

    out = dict(values)
    for name in ("redis_cluster", "evicting_redis_allowed", "insecure_dev"):
        flag = str(values[name]).strip().lower()
        if flag not in _BOOLEANS:
            raise fail(name, f"must be one of {', '.join(sorted(_BOOLEANS))}")
        out[name] = _BOOLEANS[flag]
    for name in ("exporter_port", "worker_web_port"):
        out[name] = integer(name, 0, 65535)
    out["batch_size"] = integer("batch_size", 1, 1_000_000)
    out["batch_within"] = seconds("batch_within", lambda x: 0 < x <= 60, "in (0, 60]")
    out["session_timeout"] = seconds("session_timeout", lambda x: 6 <= x <= 300, "in [6, 300]")
    out["stuck_partition_seconds"] = seconds("stuck_partition_seconds", lambda x: x == 0 or 5 <= x <= 3600,
                                             "in [5, 3600]", "0 (off) or ")  # fmt: skip
    out["redis_policy_recheck_seconds"] = seconds("redis_policy_recheck_seconds", lambda x: 1 <= x <= 3600,
                                                  "in [1, 3600]")  # fmt: skip

    for name in ("kafka_bootstrap", "redis_url", "events_topic", "dlq_topic", "group_id",
                 "redis_prefix", "exporter_host", "offset_reset", "clock", "log_level"):  # fmt: skip
        out[name] = str(values[name]).strip()
    bootstrap = out["kafka_bootstrap"].removeprefix("kafka://")
    servers = [s.strip() for s in re.split(r"[,;]", bootstrap) if s.strip()]
    if not servers or not all(re.fullmatch(r"\[?[A-Za-z0-9._:-]+\]?:[0-9]{1,5}", s) for s in servers):
        raise fail("kafka_bootstrap", "must be host:port[,host:port...]")
    out["kafka_bootstrap"] = ",".join(servers)
    try:
        scheme = urlsplit(out["redis_url"]).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("redis", "rediss", "unix"):
        # Echo the URL without its password.
        raise ConfigError(origin["redis_url"], f"must be a redis://, rediss:// or unix:// URL, got {redact_url(out['redis_url'])!r}")
    for name in ("events_topic", "dlq_topic", "group_id"):
        if not _TOPIC_RE.match(out[name]):
            raise fail(name, "must be 1-249 characters of letters, digits, '.', '_', '-'")
    if out["events_topic"] == out["dlq_topic"]:
        raise fail("dlq_topic", "must differ from the events topic")
    if not _PREFIX_RE.match(out["redis_prefix"]):
        raise fail("redis_prefix", "must be 1-64 characters of letters, digits, '.', '_', '-'")
    if not out["exporter_host"]:
        raise fail("exporter_host", "must not be empty")
    out["offset_reset"] = out["offset_reset"].lower()
    if out["offset_reset"] not in _OFFSET_RESETS:
        raise fail("offset_reset", f"must be one of {', '.join(_OFFSET_RESETS)}")
    out["log_level"] = out["log_level"].upper()
    if out["log_level"] not in _LOG_LEVELS:
        raise fail("log_level", f"must be one of {', '.join(_LOG_LEVELS)}")
    out["log_format"] = str(values["log_format"]).strip().lower()
    if out["log_format"] not in LOG_FORMATS:
        raise fail("log_format", f"must be one of {', '.join(LOG_FORMATS)}")
    _parse_clock(out["clock"], origin["clock"])
    if values["config_path"] is not None:
        out["config_path"] = str(values["config_path"])
    if values["alertmanager_url"] is not None:
        out["alertmanager_url"] = check_alertmanager_url(str(values["alertmanager_url"]), origin["alertmanager_url"])
    if values["prometheus_url"] is not None:
        out["prometheus_url"] = _prometheus_url(str(values["prometheus_url"]).strip(), origin["prometheus_url"])
    _validate_security(values, origin, out)
    settings = Settings(**out)
    from streams.security import check_settings  # loads every certificate and key once

    check_settings(settings, origin)
    return settings


def check_alertmanager_url(url: str, where: str) -> str:
    """An Alertmanager base URL: ``http(s)://host[:port][/prefix]``, without a query or
    fragment; raises :class:`ConfigError` naming ``where`` (the URL echoed without password)."""
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ConfigError(where, f"must be an http:// or https:// URL, got {redact_url(url)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(where, f"must be an http(s)://host[:port][/prefix] URL (Alertmanager's base URL), "
                                 f"got {redact_url(url)!r}")  # fmt: skip
    return url


def _prometheus_url(url: str, where: str) -> str | None:
    """An http(s) URL with a host and no user or password (queried without credentials), or
    None for an empty value."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(where, f"must be an http:// or https:// URL like http://prometheus:9090, got {redact_url(url)!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(where, f"must not hold a user or password (ccmon queries Prometheus without credentials), "
                                 f"got {redact_url(url)!r}")
    if parts.query or parts.fragment:
        raise ConfigError(where, f"must not have a query or fragment, got {redact_url(url)!r}")
    return url


def setting_names(name: str) -> str:
    """How a user sets ``name``: ``--kafka-username or CCMON_KAFKA_USERNAME``."""
    flag, env = SOURCES[name]
    return " or ".join([flag, *env] if flag else env)


def lookup(name: str, args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """Setting ``name`` as :func:`from_args` finds it, unvalidated: its flag's value in ``args``,
    else its first environment variable set (not empty), else its default; and where it came
    from (the flag, the variable, or ``name``). For the commands that take a setting or two
    without the whole :class:`Settings` (``simulate``, ``source``, ``replay``, ``report``, ``demo``)."""
    env = os.environ if environ is None else environ
    flag, names = SOURCES[name]
    raw = getattr(args, name, None) if args is not None else None
    if raw is not None:
        return raw, flag
    var = next((var for var in names if env.get(var, "") != ""), None)
    return (env[var], var) if var is not None else (getattr(Settings(), name), name)


def read_secret_file(path: str, where: str) -> str:
    """The secret in ``path``: its text without the trailing newline(s). Raises
    :class:`ConfigError` naming ``where`` (never the content) when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            secret = handle.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(where, f"cannot read {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(where, f"{path!r} is not UTF-8 text") from None
    if not secret:
        raise ConfigError(where, f"{path!r} is empty")
    return secret


def _validate_security(values: Mapping[str, Any], origin: Mapping[str, str], out: dict[str, Any]) -> None:
    """The security settings (docs/SECURITY.md), alone and in combination; fills ``out``."""

    def text(name: str) -> str | None:
        value = values[name]
        if value is None or str(value).strip() == "":
            return None
        return str(value).strip()

    def secret(name: str) -> str | None:
        file_name = f"{name}_file"
        direct, path = values[name], text(file_name)
        if direct is not None and path is not None:
            what = "password" if "password" in name else "secret"
            raise ConfigError(origin[file_name], f"give the {what} one way, not both this file and {origin[name]}")
        out[file_name] = path
        if path is not None:
            return read_secret_file(path, origin[file_name])
        return None if direct is None or direct == "" else str(direct)

    def tls_files(prefix: str, cert: str, key: str) -> None:
        for name in (f"{prefix}_ca_file", cert, key):
            if name in values:
                out[name] = text(name)
        if out[key] is not None and out[cert] is None:
            raise ConfigError(origin[key], f"a key needs its certificate: set {setting_names(cert)}")

    for name in ("kafka_security_protocol", "kafka_sasl_mechanism"):
        out[name] = str(values[name]).strip().upper()
    protocol = out["kafka_security_protocol"]
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(origin["kafka_security_protocol"], f"must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, got {values['kafka_security_protocol']!r}")
    if out["kafka_sasl_mechanism"] not in KAFKA_SASL_MECHANISMS:
        raise ConfigError(origin["kafka_sasl_mechanism"], f"must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, got {values['kafka_sasl_mechanism']!r}")
    out["kafka_username"] = text("kafka_username")
    out["kafka_password"] = secret("kafka_password")
    tls_files("kafka", "kafka_cert_file", "kafka_key_file")
    if protocol.startswith("SASL_"):
        if out["kafka_username"] is None:
            raise ConfigError(setting_names("kafka_username"), f"required with the security protocol {protocol}")
        if out["kafka_password"] is None:
            raise ConfigError("CCMON_KAFKA_PASSWORD or CCMON_KAFKA_PASSWORD_FILE", f"required with the security protocol {protocol}")
    else:
        for name in ("kafka_username", "kafka_password"):
            if out[name] is not None:
                where = origin["kafka_password_file"] if name == "kafka_password" and out["kafka_password_file"] else origin[name]
                raise ConfigError(where, f"only used with SASL_PLAINTEXT or SASL_SSL, but {setting_names('kafka_security_protocol')} is {protocol}")
    if not protocol.endswith("SSL"):
        for name in ("kafka_ca_file", "kafka_cert_file", "kafka_key_file"):
            if out[name] is not None:
                raise ConfigError(origin[name], f"only used with SSL or SASL_SSL, but {setting_names('kafka_security_protocol')} is {protocol}")

    out["redis_password"] = secret("redis_password")
    tls_files("redis", "redis_cert_file", "redis_key_file")
    try:
        url = urlsplit(out["redis_url"])
        scheme, url_password = url.scheme, url.password
    except ValueError:
        scheme, url_password = "", None
    if out["redis_password"] is not None and url_password is not None:
        where = origin["redis_password_file"] if out["redis_password_file"] else origin["redis_password"]
        raise ConfigError(where, f"the Redis URL ({origin['redis_url']}) holds a password already: give it one way")
    if scheme != "rediss":
        for name in ("redis_ca_file", "redis_cert_file", "redis_key_file"):
            if out[name] is not None:
                raise ConfigError(origin[name], f"only used with a rediss:// (TLS) URL, got {redact_url(out['redis_url'])!r} from {origin['redis_url']}")

    out["exporter_auth_user"] = text("exporter_auth_user")
    out["exporter_auth_password"] = secret("exporter_auth_password")
    user = out["exporter_auth_user"]
    if user is not None and ":" in user:
        raise ConfigError(origin["exporter_auth_user"], f"must not contain ':' (basic auth), got {user!r}")
    if user is not None and out["exporter_auth_password"] is None:
        raise ConfigError("CCMON_EXPORTER_BASIC_AUTH_PASSWORD or CCMON_EXPORTER_BASIC_AUTH_PASSWORD_FILE",
                          f"required with {origin['exporter_auth_user']}")
    if user is None and out["exporter_auth_password"] is not None:
        where = origin["exporter_auth_password_file"] if out["exporter_auth_password_file"] else origin["exporter_auth_password"]
        raise ConfigError(where, f"a password needs its user: set {setting_names('exporter_auth_user')}")
    tls_files("exporter_tls", "exporter_tls_cert_file", "exporter_tls_key_file")

    # Optional here (the exporter and ``ccmon replay`` need none): the worker and ``ccmon
    # rebuild`` require it through streams.security.customer_key.
    out["customer_key_secret"] = secret("customer_key_secret")
    key = out["customer_key_secret"]
    if key is not None and len(key) < MIN_CUSTOMER_KEY_SECRET_CHARS:
        where = origin["customer_key_secret_file"] if out["customer_key_secret_file"] else origin["customer_key_secret"]
        raise ConfigError(where, f"must be at least {MIN_CUSTOMER_KEY_SECRET_CHARS} characters "
                                 f"(e.g. openssl rand -hex 32), got {len(key)}")  # fmt: skip


def _parse_clock(spec: str, where: str) -> float | None:
    if spec == "wall":
        return None
    if spec.startswith("fixed:"):
        raw = spec[len("fixed:"):].strip()
        try:
            value: Any = float(raw)
        except ValueError:
            value = raw
        try:
            return parse_ts(value)
        except InvalidEventError as exc:
            raise ConfigError(where, f"fixed clock: {exc.message}") from None
    raise ConfigError(where, f"must be 'wall' or 'fixed:<epoch seconds or RFC 3339>', got {spec!r}")


def setup_logging(settings: Settings) -> None:
    """Log at ``log_level`` to stderr, as text or JSON lines (:mod:`streams.logs`)."""
    configure(settings.log_level, settings.log_format)
