"""Run-time settings of the streaming side: one frozen object, built once at start-up.

Every setting is one row of :class:`Settings` (``name: type = setting(default, flag, check,
help)``): its flag and ``--help`` line (:func:`add_arguments`, for the settings a command
names), its environment variable (``CCMON_<NAME>`` unless the row says otherwise) and its
check all come from that row. Each value comes from its command-line flag, else its
environment variable, else the default; :func:`from_args` checks each row, then the
combinations. A bad value raises :class:`~kpi_core.errors.ConfigError` naming the flag or the
variable it came from (``config field 'CCMON_BATCH_SIZE': must be an integer in
1..1000000, got 'x'``).

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
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kpi_core.errors import ConfigError, InvalidEventError
from kpi_core.events import parse_ts
from streams.logs import LOG_FORMATS, configure
from streams.security import SecuritySettings, check_settings, kafka_client_kwargs

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
#: The worker applies a batch in chunks of this many events, each computed while Redis
#: applies the one before (streams.worker.BatchProcessor._pipelined); at most
#: streams.worker.MAX_TRANSACTION_EVENTS.
PIPELINE_CHUNK_EVENTS = 5000


class Invalid(ValueError):
    """A setting's check refused its value; the message is the whole reason, with the value
    echoed (``must be an integer in 0..65535, got 'x'``). :func:`from_args` names the flag or
    variable the value came from."""


Check = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a setting comes from and how it is checked: its flag (``""``: environment only, a
    secret), its environment variables in order of precedence, its ``--help`` text, and
    ``check``, which turns a given value (text, or the default) into the setting's value or
    raises :class:`Invalid`. ``None`` (unset, the default of an optional setting) is never checked."""

    flag: str
    check: Check
    help: str
    env: tuple[str, ...]


def setting(default: Any, flag: str, check: Check, help: str, env: str | tuple[str, ...] = ()) -> Any:
    """One setting's row of :class:`Settings`: its default and its :class:`Source`. ``env``:
    its environment variables, by default ``CCMON_`` and its name in capitals."""
    return field(
        default=default, metadata={"source": Source(flag, check, help, (env,) if isinstance(env, str) else env)}
    )


def secret(env: str = "") -> Any:
    """A secret's row: no flag (a flag shows in ``ps`` and in shell history), no help; its value
    comes from ``env`` (by default ``CCMON_`` and its name in capitals) or from the file its
    ``<name>_file`` setting names, and is never shown (:data:`SECRETS`)."""
    return field(default=None, repr=False, metadata={"source": Source("", str, "", (env,) if env else ())})


def _bad(rule: str, raw: Any) -> Invalid:
    return Invalid(f"{rule}, got {raw!r}")


_BOOLEANS = {"yes": True, "true": True, "1": True, "on": True, "no": False, "false": False, "0": False, "off": False}


def _boolean(raw: Any) -> bool:
    flag = str(raw).strip().lower()
    if flag not in _BOOLEANS:
        raise _bad(f"must be one of {', '.join(sorted(_BOOLEANS))}", raw)
    return _BOOLEANS[flag]


def _integer(low: int, high: int) -> Check:
    def check(raw: Any) -> int:
        try:
            number = int(str(raw).strip())
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise _bad(f"must be an integer in {low}..{high}", raw)
        return number

    return check


def _seconds(ok: Callable[[float], bool], within: str, also: str = "") -> Check:
    """A number of seconds ``ok`` accepts; else "must be <also>a number of seconds <within>"."""

    def check(raw: Any) -> float:
        try:
            number = float(str(raw).strip())
        except ValueError:
            raise _bad(f"must be {also}a number of seconds {within}", raw) from None
        if not ok(number):
            raise _bad(f"must be {also}a number of seconds {within}", raw)
        return number

    return check


def _choice(choices: tuple[str, ...], normal: Callable[[str], str]) -> Check:
    """One of ``choices``, compared after stripping and ``normal`` (str.lower, str.upper)."""

    def check(raw: Any) -> str:
        value = normal(str(raw).strip())
        if value not in choices:
            raise _bad(f"must be one of {', '.join(choices)}", raw)
        return value

    return check


def _name(pattern: re.Pattern[str], rule: str) -> Check:
    def check(raw: Any) -> str:
        value = str(raw).strip()
        if not pattern.match(value):
            raise _bad(rule, raw)
        return value

    return check


def _bootstrap(raw: Any) -> str:
    servers = [s.strip() for s in re.split(r"[,;]", str(raw).strip().removeprefix("kafka://")) if s.strip()]
    if not servers or not all(re.fullmatch(r"\[?[A-Za-z0-9._:-]+\]?:[0-9]{1,5}", s) for s in servers):
        raise _bad("must be host:port[,host:port...]", raw)
    return ",".join(servers)


def _redis_url(raw: Any) -> str:
    url = str(raw).strip()
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("redis", "rediss", "unix"):  # echoed without its password
        raise Invalid(f"must be a redis://, rediss:// or unix:// URL, got {redact_url(url)!r}")
    return url


def _host(raw: Any) -> str:
    if not str(raw).strip():
        raise _bad("must not be empty", raw)
    return str(raw).strip()


def _clock(raw: Any) -> str:
    _parse_clock(str(raw).strip())
    return str(raw).strip()


def _text(raw: Any) -> str | None:
    """Stripped text; empty: unset."""
    return str(raw).strip() or None


def _user(raw: Any) -> str | None:
    user = _text(raw)
    if user is not None and ":" in user:
        raise Invalid(f"must not contain ':' (basic auth), got {user!r}")
    return user


def _alertmanager_url(raw: Any) -> str:
    """An Alertmanager base URL: ``http(s)://host[:port][/prefix]``, without a query or
    fragment (the URL echoed without password)."""
    url = str(raw).strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise Invalid(f"must be an http:// or https:// URL, got {redact_url(url)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise Invalid(
            f"must be an http(s)://host[:port][/prefix] URL (Alertmanager's base URL), got {redact_url(url)!r}"
        )
    return url


def _prometheus_url(raw: Any) -> str | None:
    """An http(s) URL with a host and no user or password (queried without credentials), or
    None for an empty value."""
    url = str(raw).strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise Invalid(f"must be an http:// or https:// URL like http://prometheus:9090, got {redact_url(url)!r}")
    if parts.username is not None or parts.password is not None:
        raise Invalid(
            f"must not hold a user or password (ccmon queries Prometheus without credentials), got {redact_url(url)!r}"
        )
    if parts.query or parts.fragment:
        raise Invalid(f"must not have a query or fragment, got {redact_url(url)!r}")
    return url


_TOPIC = _name(_TOPIC_RE, "must be 1-249 characters of letters, digits, '.', '_', '-'")


@dataclass(frozen=True, slots=True)
class Settings(SecuritySettings):
    """Every setting, one row each: ``name: type = setting(default, flag, check, help)``, from
    which its flag, its ``--help`` line, its environment variable (``CCMON_`` and the name in
    capitals, unless ``env=`` names others) and its check come; a secret is ``secret()``.
    Commands name the settings they take (``streams/cli/*.py``: ``FLAGS``)."""

    kafka_bootstrap: str = setting(
        "127.0.0.1:19092",
        "--kafka",
        _bootstrap,
        "Kafka bootstrap servers, host:port[,host:port]",
        env=("CCMON_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP"),
    )
    redis_url: str = setting(
        "redis://127.0.0.1:16379/0",
        "--redis",
        _redis_url,
        "Redis URL, redis://[:password@]host:port/db",
        env=("CCMON_REDIS_URL", "REDIS_URL"),
    )
    redis_cluster: bool = setting(
        False, "--redis-cluster", _boolean, "'yes' when --redis names a node of a Redis Cluster (see docs/STREAMS.md)"
    )
    evicting_redis_allowed: bool = setting(
        False,
        "--allow-evicting-redis",
        _boolean,
        "'yes': run on a Redis whose maxmemory-policy may evict keys (refused otherwise: an evicted seen set "
        "counts redelivered events again; see streams/redis/policy.py)",
        env="CCMON_ALLOW_EVICTING_REDIS",
    )
    events_topic: str = setting("ccmon.events", "--topic", _TOPIC, "topic the events are read from")
    dlq_topic: str = setting("ccmon.dlq", "--dlq-topic", _TOPIC, "dead-letter topic for rejected events")
    group_id: str = setting(
        "ccmon",
        "--group",
        _TOPIC,
        "Kafka consumer group (Faust app id); workers with the same one split the partitions",
    )
    config_path: str | None = setting(
        None,
        "--config",
        str,
        "KPI config TOML (see deploy/config/ccmon.toml); without one, built-in defaults",
        env="CCMON_CONFIG",
    )
    redis_prefix: str = setting(
        "ccmon",
        "--redis-prefix",
        _name(_PREFIX_RE, "must be 1-64 characters of letters, digits, '.', '_', '-'"),
        "prefix of every Redis key (lets several deployments or tests share a Redis)",
    )
    exporter_host: str = setting(
        "127.0.0.1",
        "--host",
        _host,
        "address the exporter listens on; 0.0.0.0 (all) shows customer ids in /api/callbacks/pending only "
        "with basic auth",
    )
    exporter_port: int = setting(9108, "--port", _integer(0, 65535), "port the exporter listens on")
    worker_web_port: int = setting(
        9109,
        "--web-port",
        _integer(0, 65535),
        "port of the worker's web server (/metrics of the worker itself); 0: none",
    )
    batch_size: int = setting(
        2000, "--batch-size", _integer(1, 1_000_000), "Kafka messages per batch (a message may hold many events)"
    )
    batch_within: float = setting(
        0.01, "--batch-within", _seconds(lambda x: 0 < x <= 60, "in (0, 60]"), "seconds to wait for a batch to fill"
    )
    pipeline_chunk: int = setting(
        PIPELINE_CHUNK_EVENTS,
        "--pipeline-chunk",
        _integer(0, PIPELINE_CHUNK_EVENTS),  # the default is the most: a batch script's 5,000 events
        "events per chunk of a batch, each chunk (and each take) computed while Redis applies the one before; "
        "0: chunks of 5000 applied one after the other, never at once",
    )
    session_timeout: float = setting(
        60.0,
        "--session-timeout",
        _seconds(lambda x: 6 <= x <= 300, "in [6, 300]"),
        "seconds before the group gives a silent (crashed) worker's partitions to the others",
        env="CCMON_KAFKA_SESSION_TIMEOUT",
    )
    stuck_partition_seconds: float = setting(
        120.0,
        "--stuck-partition-seconds",
        _seconds(lambda x: x == 0 or 5 <= x <= 3600, "in [5, 3600]", "0 (off) or "),
        "seconds an assigned partition may lag with its committed offset standing still (no batch in flight, "
        "Redis answering) before the worker exits (code 75) to be restarted; 0: off",
    )
    redis_policy_recheck_seconds: float = setting(
        30.0,
        "--redis-policy-recheck-seconds",
        _seconds(lambda x: 1 <= x <= 3600, "in [1, 3600]"),
        "seconds between two reads of Redis's maxmemory-policy while running (the worker's timer; the "
        "exporter at a scrape): a change is logged and exported",
    )
    offset_reset: str = setting(
        "earliest",
        "--offset-reset",
        _choice(_OFFSET_RESETS, str.lower),
        "where a new consumer group starts: earliest or latest",
    )
    clock: str = setting(
        "wall", "--clock", _clock, "'wall', or 'fixed:<epoch seconds or RFC 3339>' for tests and replays"
    )
    log_level: str = setting("INFO", "--log-level", _choice(_LOG_LEVELS, str.upper), "DEBUG, INFO, WARNING or ERROR")
    log_format: str = setting(
        "text",
        "--log-format",
        _choice(LOG_FORMATS, str.lower),
        "text, or json: one JSON object per log line (ts, level, logger, message...)",
    )
    # -- security (docs/SECURITY.md); a password holds the secret itself, read from its
    # environment variable or its file at start-up, and is never shown. No flag: environment only.
    kafka_security_protocol: str = setting(
        "PLAINTEXT",
        "--kafka-security-protocol",
        _choice(KAFKA_SECURITY_PROTOCOLS, str.upper),
        "Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    )
    kafka_sasl_mechanism: str = setting(
        "PLAIN",
        "--kafka-sasl-mechanism",
        _choice(KAFKA_SASL_MECHANISMS, str.upper),
        "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
    )
    kafka_username: str | None = setting(None, "--kafka-username", _text, "SASL user name")
    kafka_password: str | None = secret()
    kafka_password_file: str | None = setting(
        None,
        "--kafka-password-file",
        _text,
        "file holding the SASL password (or $CCMON_KAFKA_PASSWORD; no flag for the password itself)",
    )
    kafka_ca_file: str | None = setting(
        None,
        "--kafka-ca-file",
        _text,
        "PEM CA certificate(s) the Kafka brokers' certificates must chain to; unset: the system's CAs",
    )
    kafka_cert_file: str | None = setting(
        None, "--kafka-cert-file", _text, "PEM client certificate for Kafka (mutual TLS); may also hold the key"
    )
    kafka_key_file: str | None = setting(None, "--kafka-key-file", _text, "PEM private key of --kafka-cert-file")
    redis_password: str | None = secret()
    redis_password_file: str | None = setting(
        None,
        "--redis-password-file",
        _text,
        "file holding the Redis password (or $CCMON_REDIS_PASSWORD, or in the URL)",
    )
    redis_ca_file: str | None = setting(
        None,
        "--redis-ca-file",
        _text,
        "PEM CA certificate(s) the Redis server's certificate must chain to (rediss:// URLs); unset: the system's CAs",
    )
    redis_cert_file: str | None = setting(
        None, "--redis-cert-file", _text, "PEM client certificate for Redis (mutual TLS); may also hold the key"
    )
    redis_key_file: str | None = setting(None, "--redis-key-file", _text, "PEM private key of --redis-cert-file")
    exporter_auth_user: str | None = setting(
        None,
        "--basic-auth-user",
        _user,
        "require HTTP basic auth with this user (not for /livez, /readyz, /healthz)",
        env="CCMON_EXPORTER_BASIC_AUTH_USER",
    )
    exporter_auth_password: str | None = secret("CCMON_EXPORTER_BASIC_AUTH_PASSWORD")
    exporter_auth_password_file: str | None = setting(
        None,
        "--basic-auth-password-file",
        _text,
        "file holding the basic-auth password (or $CCMON_EXPORTER_BASIC_AUTH_PASSWORD)",
        env="CCMON_EXPORTER_BASIC_AUTH_PASSWORD_FILE",
    )
    exporter_tls_cert_file: str | None = setting(
        None, "--tls-cert-file", _text, "serve HTTPS with this PEM certificate (chain); may also hold the key"
    )
    exporter_tls_key_file: str | None = setting(None, "--tls-key-file", _text, "PEM private key of --tls-cert-file")
    # -- the board's "vs last week" indicator: the Prometheus that records the week-over-week
    # rules (streams.web.week_over_week); None: no indicator.
    prometheus_url: str | None = setting(
        None,
        "--prometheus-url",
        _prometheus_url,
        "http(s) URL of the Prometheus that records ccmon's week-over-week rules, e.g. "
        "http://prometheus:9090; feeds the board's 'vs last week' indicator (/api/week-over-week)",
    )
    # -- customer record keys (docs/SECURITY.md): the HMAC key naming customer records in
    # Redis; the worker and ``ccmon rebuild`` need it unless ``insecure_dev``.
    customer_key_secret: str | None = secret()
    customer_key_secret_file: str | None = setting(
        None,
        "--customer-key-secret-file",
        _text,
        "file holding the secret that keys customer record names in Redis (or $CCMON_CUSTOMER_KEY_SECRET; at "
        "least 32 characters; worker and rebuild: the same)",
    )
    insecure_dev: bool = setting(
        False,
        "--insecure-dev",
        _boolean,
        "development only (the flag alone: yes): run the worker or rebuild without a customer key secret; "
        "customer record names are then a digest anyone can recompute from a customer id",
    )
    # -- alerts on the board (streams/web/alerts.py): Alertmanager's base URL; unset: ccmon's
    # own breach state against the queues' targets.
    alertmanager_url: str | None = setting(
        None,
        "--alertmanager-url",
        _alertmanager_url,
        "Alertmanager base URL (http://host:9093) whose firing alerts the wallboard shows (/api/alerts); "
        "unset: ccmon's own breaches of the queues' targets",
    )

    # -- derived ---------------------------------------------------------------------------
    @property
    def fixed_time(self) -> float | None:
        """The instant of a ``fixed:`` clock, ``None`` for the wall clock."""
        try:
            return _parse_clock(self.clock)
        except Invalid as exc:
            raise ConfigError("clock", str(exc)) from None

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

    @staticmethod
    def setting_names(name: str) -> str:
        """How a user sets ``name`` (:func:`setting_names`), for :mod:`streams.security`."""
        return setting_names(name)

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


# -- sources ---------------------------------------------------------------------------------
#: setting -> its row's :class:`Source`, with its environment variables filled in.
ROWS: Mapping[str, Source] = {
    f.name: replace(f.metadata["source"], env=f.metadata["source"].env or (f"CCMON_{f.name.upper()}",))
    for f in fields(Settings)
}
#: attribute -> (flag, environment variables in order of precedence); an empty flag:
#: environment only (a secret).
SOURCES: Mapping[str, tuple[str, tuple[str, ...]]] = {name: (row.flag, row.env) for name, row in ROWS.items()}


class _RefusedSecretFlag(argparse.Action):
    """``--kafka-password VALUE``: refused without echoing the value (argparse would otherwise
    take it for an abbreviation of ``--kafka-password-file`` and name the secret as a path)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        file_flag = f"{option_string}-file"
        env = next(ROWS[name.removesuffix("_file")].env[0] for name, row in ROWS.items() if row.flag == file_flag)
        what = "a password" if "password" in file_flag else "a secret"
        parser.error(
            f"{option_string}: {what} has no flag (a flag shows in ps and in shell history); use ${env} or {file_flag}"
        )


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Add the flags of the settings ``names`` (every default is ``None``: unset)."""
    defaults = Settings()
    for name in names:
        row = ROWS[name]
        if not row.flag:  # environment only: a secret must not show in ps
            continue
        if name.removesuffix("_file") in SECRETS:
            parser.add_argument(
                row.flag.removesuffix("-file"),
                dest=f"_refused_{name}",
                nargs="?",
                default=None,
                action=_RefusedSecretFlag,
                help=argparse.SUPPRESS,
            )
        default = getattr(defaults, name)
        shown = f"${' or $'.join(row.env)}, else {default}" if default is not None else f"${row.env[0]}"
        # A yes/no setting: the flag alone means yes (``--insecure-dev``).
        switch: dict[str, Any] = {"nargs": "?", "const": "yes"} if isinstance(default, bool) else {}
        parser.add_argument(
            row.flag,
            dest=name,
            default=None,
            metavar=name.split("_")[-1].upper(),
            help=f"{row.help} (default: {shown})",
            **switch,
        )


def from_args(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags, else environment, else defaults; each checked by its row, then in combination."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    raw: dict[str, Any] = {}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, row in ROWS.items():
        given = getattr(args, name, None) if args is not None else None
        where = row.flag
        if given is None:
            where, given = next(((var, env[var]) for var in row.env if env.get(var, "") != ""), (name, None))
        raw[name] = getattr(defaults, name) if given is None else given
        origin[name] = where
        try:
            values[name] = None if raw[name] is None else row.check(raw[name])
        except Invalid as exc:
            raise ConfigError(where, str(exc)) from None
    _check_combined(raw, values, origin)
    settings = Settings(**values)
    # Every certificate and key loaded once; the errors name the flag or variable.
    check_settings(settings, {name: where if where != name else setting_names(name) for name, where in origin.items()})
    return settings


def check_alertmanager_url(url: str, where: str) -> str:
    """:func:`_alertmanager_url`'s check for a command outside :class:`Settings` (``ccmon demo``);
    raises :class:`ConfigError` naming ``where``."""
    try:
        return _alertmanager_url(url)
    except Invalid as exc:
        raise ConfigError(where, str(exc)) from None


def setting_names(name: str) -> str:
    """How a user sets ``name``: ``--kafka-username or CCMON_KAFKA_USERNAME``."""
    row = ROWS[name]
    return " or ".join([row.flag, *row.env] if row.flag else row.env)


def lookup(
    name: str, args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Any, str]:
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


def _check_combined(raw: Mapping[str, Any], out: dict[str, Any], origin: Mapping[str, str]) -> None:
    """What no single row can check: the settings in combination (the security ones:
    docs/SECURITY.md). Reads each secret from its file into ``out``."""
    if out["events_topic"] == out["dlq_topic"]:
        raise ConfigError(origin["dlq_topic"], f"must differ from the events topic, got {raw['dlq_topic']!r}")

    def secret(name: str) -> str | None:
        file_name = f"{name}_file"
        if raw[name] is not None and out[file_name] is not None:
            what = "password" if "password" in name else "secret"
            raise ConfigError(origin[file_name], f"give the {what} one way, not both this file and {origin[name]}")
        return read_secret_file(out[file_name], origin[file_name]) if out[file_name] is not None else out[name]

    def where_secret(name: str) -> str:
        return origin[f"{name}_file"] if out[f"{name}_file"] else origin[name]

    def key_needs_cert(cert: str, key: str) -> None:
        if out[key] is not None and out[cert] is None:
            raise ConfigError(origin[key], f"a key needs its certificate: set {setting_names(cert)}")

    def only_with(names: tuple[str, ...], message: str) -> None:
        for name in names:
            if out[name] is not None:
                raise ConfigError(where_secret(name) if name in SECRETS else origin[name], message)

    protocol = out["kafka_security_protocol"]
    out["kafka_password"] = secret("kafka_password")
    key_needs_cert("kafka_cert_file", "kafka_key_file")
    if protocol.startswith("SASL_"):
        if out["kafka_username"] is None:
            raise ConfigError(setting_names("kafka_username"), f"required with the security protocol {protocol}")
        if out["kafka_password"] is None:
            raise ConfigError(
                "CCMON_KAFKA_PASSWORD or CCMON_KAFKA_PASSWORD_FILE", f"required with the security protocol {protocol}"
            )
    else:
        only_with(
            ("kafka_username", "kafka_password"),
            f"only used with SASL_PLAINTEXT or SASL_SSL, but {setting_names('kafka_security_protocol')} is {protocol}",
        )
    if not protocol.endswith("SSL"):
        only_with(
            ("kafka_ca_file", "kafka_cert_file", "kafka_key_file"),
            f"only used with SSL or SASL_SSL, but {setting_names('kafka_security_protocol')} is {protocol}",
        )

    out["redis_password"] = secret("redis_password")
    key_needs_cert("redis_cert_file", "redis_key_file")
    try:
        url = urlsplit(out["redis_url"])
        scheme, url_password = url.scheme, url.password
    except ValueError:
        scheme, url_password = "", None
    if out["redis_password"] is not None and url_password is not None:
        raise ConfigError(
            where_secret("redis_password"),
            f"the Redis URL ({origin['redis_url']}) holds a password already: give it one way",
        )
    if scheme != "rediss":
        only_with(
            ("redis_ca_file", "redis_cert_file", "redis_key_file"),
            f"only used with a rediss:// (TLS) URL, got {redact_url(out['redis_url'])!r} from {origin['redis_url']}",
        )

    out["exporter_auth_password"] = secret("exporter_auth_password")
    user = out["exporter_auth_user"]
    if user is not None and out["exporter_auth_password"] is None:
        raise ConfigError(
            "CCMON_EXPORTER_BASIC_AUTH_PASSWORD or CCMON_EXPORTER_BASIC_AUTH_PASSWORD_FILE",
            f"required with {origin['exporter_auth_user']}",
        )
    if user is None and out["exporter_auth_password"] is not None:
        raise ConfigError(
            where_secret("exporter_auth_password"),
            f"a password needs its user: set {setting_names('exporter_auth_user')}",
        )
    key_needs_cert("exporter_tls_cert_file", "exporter_tls_key_file")

    # Optional here (the exporter and ``ccmon replay`` need none): the worker and ``ccmon
    # rebuild`` require it through streams.security.customer_key.
    out["customer_key_secret"] = key = secret("customer_key_secret")
    if key is not None and len(key) < MIN_CUSTOMER_KEY_SECRET_CHARS:
        raise ConfigError(
            where_secret("customer_key_secret"),
            f"must be at least {MIN_CUSTOMER_KEY_SECRET_CHARS} characters (e.g. openssl rand -hex 32), got {len(key)}",
        )


def _parse_clock(spec: str) -> float | None:
    if spec == "wall":
        return None
    if spec.startswith("fixed:"):
        raw = spec[len("fixed:") :].strip()
        try:
            value: Any = float(raw)
        except ValueError:
            value = raw
        try:
            return parse_ts(value)
        except InvalidEventError as exc:
            raise Invalid(f"fixed clock: {exc.message}") from None
    raise Invalid(f"must be 'wall' or 'fixed:<epoch seconds or RFC 3339>', got {spec!r}")


def kafka_client_kwargs_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """:func:`streams.security.kafka_client_kwargs` of the ``CCMON_*`` environment (for the
    producers of ``ccmon simulate`` and ``ccmon source``, which take no security flags)."""
    return kafka_client_kwargs(from_args(None, environ))


def setup_logging(settings: Settings) -> None:
    """Log at ``log_level`` to stderr, as text or JSON lines (:mod:`streams.logs`)."""
    configure(settings.log_level, settings.log_format)
