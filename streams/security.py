"""Security: what each client and server needs, made from the settings (:class:`SecuritySettings`:
what this module reads of :class:`streams.settings.Settings`, which it does not import).

* Kafka -- :func:`faust_credentials` (the worker's Faust app: ``faust.SASLCredentials`` or
  ``faust.SSLCredentials``, with an :class:`ssl.SSLContext`) and :func:`kafka_client_kwargs`
  (kafka-python: the worker's topic probe and lag probe, ``ccmon simulate --kafka``, ``ccmon
  source ... --kafka``). Both use the same context from :func:`kafka_ssl_context`: the broker's
  certificate must chain to ``--kafka-ca-file`` (else the system's CAs) and name the host
  dialled; an optional client certificate for mutual TLS.
* Redis -- :func:`redis_connection_kwargs`: redis-py's TLS options for a ``rediss://`` URL
  (verification and host-name check always on) and the password from
  ``CCMON_REDIS_PASSWORD(_FILE)``.
* The exporter -- :func:`exporter_ssl_context` (HTTPS) and :func:`require_basic_auth`, a WSGI
  wrapper (of any WSGI app: this module imports nothing of :mod:`streams.web`) comparing
  credentials in constant time (``/livez``, ``/readyz`` and ``/healthz``
  stay open: see docs/SECURITY.md), with failed logins logged (at most one line per address
  a minute) and throttled (``429`` for a cool-down) by :class:`LoginThrottle`.
* Customer data -- :func:`customer_key`: the HMAC key naming customer records in Redis
  (required by the worker and ``ccmon rebuild``); the exporter's basic auth marks each request
  it lets through (:data:`AUTH_USER_ENVIRON`), which decides whether the callback worklist
  shows customer ids (:func:`streams.web.api.customer_ids_visible`).
* Start-up -- :func:`check_settings` loads every certificate and key once, so a bad file stops
  start-up with the flag or variable named; :func:`kafka_failures` and
  :func:`kafka_config_error` tell a refused password or an untrusted certificate (a setting
  to fix: stop) from a broker that is not up yet (wait).

Secrets never reach a log line: settings are logged through ``Settings.redacted()``, error
texts from the clients go through :func:`scrub`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from kpi_core.errors import ConfigError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

log = logging.getLogger("ccmon.security")

#: Paths served without credentials when basic auth is on (liveness and readiness probes;
#: they say only whether the process, and Redis, answer).
AUTH_EXEMPT_PATHS = ("/livez", "/readyz", "/healthz")

#: Failed basic-auth logins: after ``LOGIN_MAX_FAILURES`` failures from one address within
#: ``LOGIN_WINDOW_SECONDS``, that address gets ``429`` for ``LOGIN_COOLDOWN_SECONDS``; at most
#: one WARNING line per address per ``LOGIN_LOG_INTERVAL_SECONDS`` (and one as its cool-down
#: starts); ``LOGIN_MAX_ADDRESSES`` addresses remembered (the least recently failing are
#: forgotten first).
LOGIN_MAX_FAILURES = 10
LOGIN_WINDOW_SECONDS = 60.0
LOGIN_COOLDOWN_SECONDS = 60.0
LOGIN_LOG_INTERVAL_SECONDS = 60.0
LOGIN_MAX_ADDRESSES = 4096
#: The WSGI environ key :func:`require_basic_auth` sets to the user on a request it let
#: through (the server builds each environ from the request alone: nothing else sets it).
AUTH_USER_ENVIRON = "ccmon.auth_user"

#: A WSGI application (PEP 3333).
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class SecuritySettings(Protocol):
    """What this module reads of :class:`streams.settings.Settings`, which subclasses this
    protocol (settings imports this module for its start-up check, :func:`check_settings`; this
    module imports nothing of settings). ``setting_names(name)`` says how a user sets ``name``
    (``--kafka-username or CCMON_KAFKA_USERNAME``), for the error messages."""

    __slots__ = ()
    # Kafka: its clients' TLS and SASL, and what a refused login names.
    kafka_bootstrap: str
    kafka_security_protocol: str
    kafka_sasl_mechanism: str
    kafka_username: str | None
    kafka_password: str | None
    kafka_ca_file: str | None
    kafka_cert_file: str | None
    kafka_key_file: str | None
    # Redis: TLS for a rediss:// URL, the password.
    redis_url: str
    redis_password: str | None
    redis_ca_file: str | None
    redis_cert_file: str | None
    redis_key_file: str | None
    # The exporter's HTTPS and basic auth; the customer key.
    exporter_tls_cert_file: str | None
    exporter_tls_key_file: str | None
    exporter_auth_password: str | None
    customer_key_secret: str | None
    insecure_dev: bool

    @property
    def kafka_servers(self) -> list[str]: ...

    def setting_names(self, name: str) -> str: ...


#: What a file error names: where each setting came from (setting -> flag or variable, at
#: start-up), or the settings themselves (then: how a user sets it).
Origin = Mapping[str, str] | SecuritySettings


# -- start-up checks ---------------------------------------------------------------------------
def check_settings(settings: SecuritySettings, origin: Mapping[str, str]) -> None:
    """Load every certificate and key the settings name (then drop them): a missing, unreadable
    or malformed file raises :class:`ConfigError` naming its flag or variable (``origin``:
    setting -> where its value came from)."""
    if settings.kafka_security_protocol.endswith("SSL"):
        _client_context(settings, "kafka", origin)
    if _redis_tls(settings):
        _client_context(settings, "redis", origin)
    exporter_ssl_context(settings, origin)


def _where(name: str, origin: Origin) -> str:
    """Where the setting ``name`` came from (``origin``'s), else how a user sets it."""
    if isinstance(origin, Mapping):
        return origin[name]
    return origin.setting_names(name)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _readable(path: str, name: str, origin: Origin) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(_where(name, origin), f"cannot read {path!r}: {_reason(exc)}") from None


def _load_chain(
    context: ssl.SSLContext, cert: str, key: str | None, cert_name: str, key_name: str, origin: Origin
) -> None:
    _readable(cert, cert_name, origin)
    if key is not None:
        _readable(key, key_name, origin)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        what = f"the certificate {cert!r}" + (
            f" with the key {key!r} ({_where(key_name, origin)})"
            if key
            else " (no key file given: it must hold the key too)"
        )
        raise ConfigError(_where(cert_name, origin), f"cannot load {what}: {_reason(exc)}") from None


def _client_context(settings: SecuritySettings, kind: str, origin: Origin | None = None) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and host name (TLS >= 1.2)."""
    ca: str | None = getattr(settings, f"{kind}_ca_file")
    cert: str | None = getattr(settings, f"{kind}_cert_file")
    key: str | None = getattr(settings, f"{kind}_key_file")
    origin = settings if origin is None else origin
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        _readable(ca, f"{kind}_ca_file", origin)
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                _where(f"{kind}_ca_file", origin), f"{ca!r} holds no usable PEM CA certificate: {_reason(exc)}"
            ) from None
    if cert is not None:
        _load_chain(context, cert, key, f"{kind}_cert_file", f"{kind}_key_file", origin)
    return context


# -- Kafka ---------------------------------------------------------------------------------------
def kafka_ssl_context(settings: SecuritySettings) -> ssl.SSLContext | None:
    """The TLS context of every Kafka connection; ``None`` without TLS."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return _client_context(settings, "kafka")


def faust_credentials(settings: SecuritySettings) -> CredentialsT | None:
    """``broker_credentials=`` for ``faust.App``: SASL (over TLS for SASL_SSL), TLS alone, or
    ``None`` for PLAINTEXT."""
    import faust

    protocol = settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol.startswith("SASL_"):
        # With a context Faust says SASL_SSL, without one SASL_PLAINTEXT.
        return faust.SASLCredentials(
            username=settings.kafka_username,
            password=settings.kafka_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


def kafka_client_kwargs(settings: SecuritySettings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's ``KafkaProducer``, ``KafkaConsumer`` and
    ``KafkaAdminClient``."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol.startswith("SASL_"):
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_username,
            sasl_plain_password=settings.kafka_password,
        )
    return kwargs


@contextmanager
def kafka_failures() -> Iterator[list[BaseException]]:
    """Collect the errors kafka-python only *logs* while it connects (its bootstrap retries
    swallow them and finally raise a bare timeout), keeping its own log lines out of ours."""
    logger = logging.getLogger("kafka")
    caught: list[BaseException] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            args = record.args if isinstance(record.args, tuple) else ()
            caught.extend(arg for arg in args if isinstance(arg, BaseException))

    handler = _Collect(logging.WARNING)
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield caught
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def kafka_config_error(settings: SecuritySettings, failures: Iterable[BaseException]) -> ConfigError | None:
    """A :class:`ConfigError` when the broker answered and refused us for a reason only a
    setting can fix (the password, the mechanism, a certificate); ``None`` when it may just
    not be up yet. ``failures``: what :func:`kafka_failures` collected during a failed
    kafka-python connection; when they do not settle it and SASL is on, one direct login
    with aiokafka (:func:`_sasl_refusal`) does."""
    from kafka import errors as kafka_errors

    setting_names = settings.setting_names
    where = settings.kafka_bootstrap
    user = settings.kafka_username
    collected = list(failures)
    if settings.kafka_security_protocol.startswith("SASL_") and not any(
        isinstance(exc, kafka_errors.SaslAuthenticationFailedError) for exc in collected
    ):
        refusal = _sasl_refusal(settings)
        if refusal is not None:
            collected.append(refusal)
    for exc in reversed(collected):
        text = scrub(str(exc), settings)
        if type(exc).__name__ in (
            "SaslAuthenticationFailedError",
            "SaslAuthenticationFailed",
        ):  # kafka-python, aiokafka
            return ConfigError(
                f"{setting_names('kafka_username')}, CCMON_KAFKA_PASSWORD or CCMON_KAFKA_PASSWORD_FILE",
                f"Kafka at {where} refused the credentials of user {user!r} ({settings.kafka_sasl_mechanism}): {text}",
            )
        if type(exc).__name__ == "UnsupportedSaslMechanismError":
            return ConfigError(
                setting_names("kafka_sasl_mechanism"),
                f"Kafka at {where} does not offer {settings.kafka_sasl_mechanism}: {text}",
            )
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return ConfigError(
                setting_names("kafka_ca_file"), f"the certificate of Kafka at {where} is not trusted: {text}"
            )
        if "ALERT_BAD_CERTIFICATE" in text or "ALERT_CERTIFICATE_REQUIRED" in text:
            return ConfigError(
                setting_names("kafka_cert_file"), f"Kafka at {where} refused our client certificate: {text}"
            )
    return None


def _sasl_refusal(settings: SecuritySettings, timeout: float = 10.0) -> BaseException | None:
    """Log in once to each bootstrap server with aiokafka (Faust's client) and return the
    broker's refusal (a failed SASL authentication, a mechanism it does not offer), if any.

    kafka-python alone cannot tell: when the broker's error answer and its closing of the
    connection arrive in the same read, it drops the answer and reports only "socket
    disconnected" (kafka-python 3.0, ``net/transport.py``)."""
    import asyncio

    from aiokafka import errors as aio_errors
    from aiokafka.conn import create_conn

    refused = (aio_errors.SaslAuthenticationFailed, aio_errors.UnsupportedSaslMechanismError)

    async def attempt(host: str, port: int) -> BaseException | None:
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id="ccmon-login-probe",
                    request_timeout_ms=int(timeout * 1000),
                    **kafka_client_kwargs(settings),
                ),
                timeout,
            )
        except refused as exc:
            return exc
        except Exception:  # not up, not reachable: not a verdict on the settings
            return None
        conn.close()
        return None

    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, _context: None)  # a dropped connection's late errors
    try:
        for server in settings.kafka_servers:
            host, _, port = server.rpartition(":")
            found = loop.run_until_complete(attempt(host.strip("[]"), int(port)))
            if found is not None:
                return found
    finally:
        loop.close()
    return None


def last_failure(settings: SecuritySettings, failures: Iterable[BaseException]) -> str:
    """``; last error: <type>: <text>`` of the latest collected error, or ``""``."""
    errors = [exc for exc in failures if "Unable to bootstrap" not in str(exc)]
    if not errors:
        return ""
    return f"; last error: {type(errors[-1]).__name__}: {scrub(str(errors[-1]), settings)}"


def scrub(text: str, settings: SecuritySettings) -> str:
    """``text`` with every secret of ``settings`` replaced by ``***``."""
    for secret in (
        settings.kafka_password,
        settings.redis_password,
        settings.exporter_auth_password,
        settings.customer_key_secret,
    ):
        if secret:
            text = text.replace(secret, "***")
    return text


# -- Redis ---------------------------------------------------------------------------------------
def _redis_tls(settings: SecuritySettings) -> bool:
    return settings.redis_url.lower().startswith("rediss://")


def redis_connection_kwargs(settings: SecuritySettings) -> dict[str, Any]:
    """Extra keyword arguments for ``redis.Redis.from_url`` / ``RedisCluster.from_url``: TLS
    options for a ``rediss://`` URL (certificate and host name always verified), the password
    when it does not come in the URL."""
    kwargs: dict[str, Any] = {}
    if _redis_tls(settings):
        kwargs.update(ssl_cert_reqs="required", ssl_check_hostname=True)
        if settings.redis_ca_file is not None:
            kwargs["ssl_ca_certs"] = settings.redis_ca_file
        if settings.redis_cert_file is not None:
            kwargs["ssl_certfile"] = settings.redis_cert_file
            kwargs["ssl_keyfile"] = settings.redis_key_file
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password
    return kwargs


def redis_error_hint(exc: BaseException) -> str:
    """What to check when a TLS connection to Redis fails (``""`` for other errors)."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "; the server's certificate is not trusted: check --redis-ca-file or CCMON_REDIS_CA_FILE"
    if "ALERT_CERTIFICATE_REQUIRED" in text or "ALERT_BAD_CERTIFICATE" in text:
        return "; the server refused our client certificate: check --redis-cert-file or CCMON_REDIS_CERT_FILE"
    return ""


# -- the exporter --------------------------------------------------------------------------------
def exporter_ssl_context(settings: SecuritySettings, origin: Origin | None = None) -> ssl.SSLContext | None:
    """The exporter's HTTPS context (TLS >= 1.2), ``None`` for plain HTTP."""
    cert = settings.exporter_tls_cert_file
    if cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(
        context,
        cert,
        settings.exporter_tls_key_file,
        "exporter_tls_cert_file",
        "exporter_tls_key_file",
        settings if origin is None else origin,
    )
    return context


class LoginThrottle:
    """Failed logins per source address: rate-limited WARNING lines, and a cool-down.

    :meth:`failed` counts a failure (and logs a line when the address has had none for
    ``log_interval`` seconds, or when its cool-down starts: the failures since its previous
    line, the user name tried, truncated and escaped; never the password); :meth:`blocked`
    says for how many more seconds an address that failed ``max_failures`` times within
    ``window`` seconds is refused; :meth:`succeeded` forgets an address's failures. Memory is
    bounded (``max_addresses``). Thread-safe. Behind a reverse proxy every client has the
    proxy's address: one client's failures then throttle them all."""

    def __init__(
        self,
        *,
        max_failures: int = LOGIN_MAX_FAILURES,
        window: float = LOGIN_WINDOW_SECONDS,
        cooldown: float = LOGIN_COOLDOWN_SECONDS,
        log_interval: float = LOGIN_LOG_INTERVAL_SECONDS,
        max_addresses: int = LOGIN_MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1, got {max_failures!r}")
        self.max_failures, self.window, self.cooldown = max_failures, window, cooldown
        self.log_interval, self.max_addresses, self.clock = log_interval, max_addresses, clock
        self._lock = threading.Lock()
        self._addresses: OrderedDict[str, _Failures] = OrderedDict()

    def blocked(self, address: str) -> float:
        """Seconds ``address`` is still refused (0: it is not)."""
        with self._lock:
            entry = self._addresses.get(address)
            return max(0.0, entry.blocked_until - self.clock()) if entry is not None else 0.0

    def succeeded(self, address: str) -> None:
        with self._lock:
            entry = self._addresses.get(address)
            if entry is not None and entry.blocked_until <= self.clock():
                del self._addresses[address]

    def failed(self, address: str, user: str | None) -> float:
        """Count a failed login from ``address`` trying ``user`` (``None``: no user name could be
        read); returns the seconds it is now refused (0: not)."""
        now = self.clock()
        with self._lock:
            entry = self._addresses.pop(address, None)
            if entry is None:
                entry = _Failures()
            self._addresses[address] = entry  # the most recent last
            while len(self._addresses) > self.max_addresses:
                self._addresses.popitem(last=False)
            entry.times = [t for t in entry.times if t > now - self.window]
            entry.times.append(now)
            entry.unreported += 1
            throttled = len(entry.times) >= self.max_failures
            if throttled:
                entry.blocked_until = now + self.cooldown
                entry.times.clear()
            # One line per address per log_interval, and one when its cool-down starts.
            report = throttled or entry.last_logged is None or now - entry.last_logged >= self.log_interval
            if report:
                count, entry.unreported, entry.last_logged = entry.unreported, 0, now
            remaining = max(0.0, entry.blocked_until - now)
        if report:
            shown = "(unreadable credentials)" if user is None else repr(user[:32]) + ("..." if len(user) > 32 else "")
            log.warning(
                "failed basic-auth login from %s as user %s: %d failure(s) since the last report%s",
                address or "(unknown address)",
                shown,
                count,
                f"; refused with 429 for {remaining:.0f} s" if remaining else "",
            )
        return remaining


class _Failures:
    __slots__ = ("blocked_until", "last_logged", "times", "unreported")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.unreported = 0
        self.last_logged: float | None = None
        self.blocked_until = 0.0


def require_basic_auth(
    app: WSGIApp,
    user: str,
    password: str,
    *,
    realm: str = "ccmon",
    exempt: Iterable[str] = AUTH_EXEMPT_PATHS,
    throttle: LoginThrottle | None = None,
) -> WSGIApp:
    """``app`` behind HTTP basic auth (RFC 7617, UTF-8): 401 with a ``WWW-Authenticate``
    challenge unless the request carries ``user`` and ``password``. Both are compared at once,
    as SHA-256 digests, with :func:`hmac.compare_digest`: the time taken says nothing about
    how much of either was right, nor how long they are. ``exempt`` paths pass freely. A
    request let in by its credentials carries the user in ``environ[AUTH_USER_ENVIRON]``.

    Requests that carry wrong credentials are failed logins for ``throttle`` (by default a
    :class:`LoginThrottle` of its own): logged at most once a minute per address (and when it
    is throttled), and an
    address failing too often gets ``429`` with ``Retry-After`` (credentials unchecked) until
    its cool-down ends. A request without credentials (a browser's first) is no failure."""
    expected = hashlib.sha256(f"{user}:{password}".encode()).digest()
    open_paths = frozenset(exempt)
    challenge = f'Basic realm="{realm}", charset="UTF-8"'
    body = b"401 Unauthorized: this ccmon exporter requires HTTP basic auth\n"
    too_many = b"429 Too Many Requests: too many failed logins from this address, retry later\n"
    logins = throttle if throttle is not None else LoginThrottle()

    def check(header: str) -> tuple[bool, str | None]:
        """Whether ``header`` carries the credentials, and the user name it tried."""
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False, None
        if hmac.compare_digest(hashlib.sha256(given).digest(), expected):
            return True, None
        tried = given.partition(b":")[0].decode("utf-8", "replace")
        return False, tried.replace(password, "***") if password else tried  # a password typed as the user

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") in open_paths:
            return app(environ, start_response)
        address = environ.get("REMOTE_ADDR", "")
        wait = logins.blocked(address)
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not wait:
            if not header:
                return refuse(start_response)
            ok, tried = check(header)
            if ok:
                logins.succeeded(address)
                environ[AUTH_USER_ENVIRON] = user  # may see customer ids (streams.web.api)
                return app(environ, start_response)
            wait = logins.failed(address, tried)
            if not wait:
                return refuse(start_response)
        start_response(
            "429 Too Many Requests",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(too_many))),
                ("Retry-After", str(max(1, math.ceil(wait)))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [too_many]

    def refuse(start_response: Callable[..., Any]) -> list[bytes]:
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", challenge),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

    return guarded


# -- customer record keys ------------------------------------------------------------------------
def customer_key(settings: SecuritySettings, command: str) -> bytes | None:
    """The HMAC key that names customer records in Redis (:class:`~streams.redis.state.RedisState`)
    for ``command`` (``ccmon worker``, ``ccmon rebuild``: they write them, and must agree): the
    secret's UTF-8 bytes. Without a secret: :class:`ConfigError` naming the setting, unless
    ``--insecure-dev``; then ``None`` (the store's public development key) and a warning."""
    if settings.customer_key_secret is not None:
        return settings.customer_key_secret.encode("utf-8")
    if settings.insecure_dev:
        log.warning(
            "%s: --insecure-dev: no customer key secret; customer records in Redis are named by a digest "
            "anyone can recompute from a customer id (development only)",
            command,
        )
        return None
    raise ConfigError(
        "CCMON_CUSTOMER_KEY_SECRET or CCMON_CUSTOMER_KEY_SECRET_FILE",
        f"required by {command}: it keys the names of customer records in Redis (the same secret "
        "for every worker and ccmon rebuild; docs/SECURITY.md); development only: --insecure-dev",
    )
