"""Security settings (streams/settings.py) and what streams/security.py makes of them, without
any server: combinations, files, errors that name the flag or variable, secrets that never
show, client keyword arguments, the basic-auth WSGI wrapper. The real servers are in
tests/integration/test_security_*.py."""

from __future__ import annotations

import argparse
import base64
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from harness.settings import error, parse
from harness.web import wsgi_call

from streams import security
from streams import settings as s


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("fi1e-Secret\n")
    return path


SASL = {
    "CCMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "CCMON_KAFKA_USERNAME": "ccmon",
    "CCMON_KAFKA_PASSWORD": "k-Secret",
}


# -- defaults and the plain case -----------------------------------------------------------------
def test_defaults_are_plaintext_without_credentials() -> None:
    settings = parse([])
    assert settings.kafka_security_protocol == "PLAINTEXT" and settings.kafka_sasl_mechanism == "PLAIN"
    assert security.kafka_client_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
    assert security.faust_credentials(settings) is None
    assert security.redis_connection_kwargs(settings) == {}
    assert security.exporter_ssl_context(settings) is None


@pytest.mark.parametrize(
    ("flag", "hint"),
    [
        ("--kafka-password", "$CCMON_KAFKA_PASSWORD or --kafka-password-file"),
        ("--redis-password", "$CCMON_REDIS_PASSWORD or --redis-password-file"),
        ("--basic-auth-password", "$CCMON_EXPORTER_BASIC_AUTH_PASSWORD or --basic-auth-password-file"),
    ],
)
def test_passwords_have_no_flag(flag: str, hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    for name in s.SECRETS:
        assert s.SOURCES[name][0] == ""
    parser = argparse.ArgumentParser()
    s.add_arguments(parser, tuple(s.SOURCES))
    assert not re.search(rf"{flag}(?![-\w])", parser.format_help())  # hidden from --help
    # Refused, without echoing the value (argparse alone would take it for an abbreviation of
    # the -file flag and show the password as a path in its error).
    for argv in ([flag, "hunter2"], [f"{flag}=hunter2"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"{flag}: a password has no flag" in err and hint in err
        assert "hunter2" not in err


# -- Kafka ---------------------------------------------------------------------------------------
def test_sasl_ssl() -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    settings = parse(
        ["--kafka-security-protocol", "sasl_ssl", "--kafka-sasl-mechanism", "scram-sha-512"],
        {k: v for k, v in SASL.items() if k != "CCMON_KAFKA_SECURITY_PROTOCOL"},
    )
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    kwargs = security.kafka_client_kwargs(settings)
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ccmon",
        "sasl_plain_password": "k-Secret",
    }
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    credentials = security.faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)  # what Faust hands aiokafka
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_password"] == "k-Secret" and isinstance(auth["ssl_context"], ssl.SSLContext)
    assert "k-Secret" not in repr(credentials)


def test_sasl_plaintext_and_ssl() -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    plain = parse([], SASL | {"CCMON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    assert "ssl_context" not in security.kafka_client_kwargs(plain)
    assert credentials_to_aiokafka_auth(security.faust_credentials(plain))["security_protocol"] == "SASL_PLAINTEXT"
    tls = parse(["--kafka-security-protocol", "SSL"])
    assert set(security.kafka_client_kwargs(tls)) == {"security_protocol", "ssl_context"}
    assert isinstance(security.faust_credentials(tls), faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(security.faust_credentials(tls))["security_protocol"] == "SSL"


def test_the_password_from_a_file(secret_file: Path) -> None:
    env = {k: v for k, v in SASL.items() if k != "CCMON_KAFKA_PASSWORD"}
    assert parse(["--kafka-password-file", str(secret_file)], env).kafka_password == "fi1e-Secret"  # newline dropped
    secret_file.write_text("crlf-Secret\r\n")
    assert parse([], env | {"CCMON_KAFKA_PASSWORD_FILE": str(secret_file)}).kafka_password == "crlf-Secret"
    secret_file.write_text("  spaces kept  \n")
    assert parse([], env | {"CCMON_KAFKA_PASSWORD_FILE": str(secret_file)}).kafka_password == "  spaces kept  "


@pytest.mark.parametrize(
    ("argv", "env", "field", "says"),
    [
        (["--kafka-security-protocol", "TLS"], {}, "--kafka-security-protocol", "must be one of PLAINTEXT, SSL"),
        ([], {"CCMON_KAFKA_SASL_MECHANISM": "GSSAPI"}, "CCMON_KAFKA_SASL_MECHANISM", "must be one of PLAIN,"),
        (
            [],
            {k: v for k, v in SASL.items() if k != "CCMON_KAFKA_USERNAME"},
            "--kafka-username or CCMON_KAFKA_USERNAME",
            "required with the security protocol SASL_SSL",
        ),
        (
            [],
            {k: v for k, v in SASL.items() if k != "CCMON_KAFKA_PASSWORD"},
            "CCMON_KAFKA_PASSWORD or CCMON_KAFKA_PASSWORD_FILE",
            "required",
        ),
        (["--kafka-username", "ccmon"], {}, "--kafka-username", "only used with SASL_PLAINTEXT or SASL_SSL"),
        ([], {"CCMON_KAFKA_PASSWORD": "x"}, "CCMON_KAFKA_PASSWORD", "only used with SASL"),
        (
            ["--kafka-ca-file", "{file}"],
            {
                "CCMON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                **{k: v for k, v in SASL.items() if "PROTOCOL" not in k},
            },
            "--kafka-ca-file",
            "only used with SSL or SASL_SSL",
        ),
        (["--kafka-key-file", "{file}"], SASL, "--kafka-key-file", "a key needs its certificate"),
        (
            ["--kafka-password-file", "{file}"],
            SASL,
            "--kafka-password-file",
            "not both this file and CCMON_KAFKA_PASSWORD",
        ),
        (
            ["--kafka-password-file", "{missing}"],
            {k: v for k, v in SASL.items() if k != "CCMON_KAFKA_PASSWORD"},
            "--kafka-password-file",
            "No such file or directory",
        ),
        (["--kafka-ca-file", "{missing}"], SASL, "--kafka-ca-file", "cannot read"),
        (["--kafka-ca-file", "{file}"], SASL, "--kafka-ca-file", "holds no usable PEM CA certificate"),
        (["--kafka-cert-file", "{file}"], SASL, "--kafka-cert-file", "cannot load the certificate"),
    ],
)
def test_kafka_errors_name_the_setting(
    argv: list[str], env: dict[str, str], field: str, says: str, secret_file: Path, tmp_path: Path
) -> None:
    argv = [a.format(file=secret_file, missing=tmp_path / "missing") for a in argv]
    exc = error(argv, env)
    assert exc.field == field
    assert says in exc.message
    for secret in ("k-Secret", "fi1e-Secret"):
        assert secret not in str(exc)


def test_an_empty_password_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    exc = error(
        [], {k: v for k, v in SASL.items() if k != "CCMON_KAFKA_PASSWORD"} | {"CCMON_KAFKA_PASSWORD_FILE": str(empty)}
    )
    assert exc.field == "CCMON_KAFKA_PASSWORD_FILE" and "is empty" in exc.message


# -- Redis ---------------------------------------------------------------------------------------
def test_redis_tls_and_password(secret_file: Path, tmp_path: Path) -> None:
    settings = parse(["--redis", "rediss://redis.example:6380/0", "--redis-password-file", str(secret_file)])
    assert security.redis_connection_kwargs(settings) == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "password": "fi1e-Secret",
    }
    plain = parse([], {"CCMON_REDIS_PASSWORD": "r-Secret"})
    assert security.redis_connection_kwargs(plain) == {"password": "r-Secret"}


@pytest.mark.parametrize(
    ("argv", "env", "field", "says"),
    [
        (["--redis-ca-file", "{file}"], {}, "--redis-ca-file", "only used with a rediss:// (TLS) URL"),
        (
            ["--redis", "redis://:u-Secret@h:1/0"],
            {"CCMON_REDIS_PASSWORD": "r-Secret"},
            "CCMON_REDIS_PASSWORD",
            "holds a password already",
        ),
        (
            ["--redis-password-file", "{file}"],
            {"CCMON_REDIS_PASSWORD": "r-Secret"},
            "--redis-password-file",
            "not both",
        ),
        (
            ["--redis", "rediss://h:1/0", "--redis-ca-file", "{file}"],
            {},
            "--redis-ca-file",
            "no usable PEM CA certificate",
        ),
        (
            ["--redis", "rediss://h:1/0"],
            {"CCMON_REDIS_KEY_FILE": "{file}"},
            "CCMON_REDIS_KEY_FILE",
            "a key needs its certificate",
        ),
    ],
)
def test_redis_errors_name_the_setting(
    argv: list[str], env: dict[str, str], field: str, says: str, secret_file: Path
) -> None:
    exc = error([a.format(file=secret_file) for a in argv], {k: v.format(file=secret_file) for k, v in env.items()})
    assert exc.field == field
    assert says in exc.message
    for secret in ("u-Secret", "r-Secret", "fi1e-Secret"):
        assert secret not in str(exc)


# -- the exporter --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "env", "field", "says"),
    [
        (
            ["--basic-auth-user", "prometheus"],
            {},
            "CCMON_EXPORTER_BASIC_AUTH_PASSWORD or CCMON_EXPORTER_BASIC_AUTH_PASSWORD_FILE",
            "required with --basic-auth-user",
        ),
        (
            [],
            {"CCMON_EXPORTER_BASIC_AUTH_PASSWORD": "e-Secret"},
            "CCMON_EXPORTER_BASIC_AUTH_PASSWORD",
            "needs its user",
        ),
        (["--basic-auth-password-file", "{file}"], {}, "--basic-auth-password-file", "needs its user"),
        (
            ["--basic-auth-user", "a:b"],
            {"CCMON_EXPORTER_BASIC_AUTH_PASSWORD": "e-Secret"},
            "--basic-auth-user",
            "must not contain ':'",
        ),
        (["--tls-key-file", "{file}"], {}, "--tls-key-file", "a key needs its certificate"),
        (["--tls-cert-file", "{file}"], {}, "--tls-cert-file", "cannot load the certificate"),
        ([], {"CCMON_EXPORTER_TLS_CERT_FILE": "/nonexistent/cert.pem"}, "CCMON_EXPORTER_TLS_CERT_FILE", "cannot read"),
    ],
)
def test_exporter_errors_name_the_setting(
    argv: list[str], env: dict[str, str], field: str, says: str, secret_file: Path
) -> None:
    exc = error([a.format(file=secret_file) for a in argv], env)
    assert exc.field == field
    assert says in exc.message
    assert "e-Secret" not in str(exc) and "fi1e-Secret" not in str(exc)


def test_secrets_are_redacted(secret_file: Path) -> None:
    settings = parse(
        [
            "--redis",
            "rediss://h:1/0",
            "--basic-auth-user",
            "prometheus",
            "--basic-auth-password-file",
            str(secret_file),
        ],
        SASL | {"CCMON_REDIS_PASSWORD": "r-Secret"},
    )
    assert (settings.kafka_password, settings.redis_password, settings.exporter_auth_password) == (
        "k-Secret",
        "r-Secret",
        "fi1e-Secret",
    )
    shown = repr(settings) + str(settings) + repr(settings.redacted())
    for secret in ("k-Secret", "r-Secret", "fi1e-Secret"):
        assert secret not in shown
    redacted = settings.redacted()
    assert redacted["kafka_password"] == redacted["redis_password"] == redacted["exporter_auth_password"] == "***"
    assert redacted["exporter_auth_password_file"] == str(secret_file)  # where it is may be shown
    assert parse([]).redacted()["kafka_password"] is None  # unset stays visibly unset
    assert security.scrub("user ccmon password k-Secret and r-Secret", settings) == "user ccmon password *** and ***"


# -- basic auth ----------------------------------------------------------------------------------
def call(app: Any, path: str, authorization: str | None = None) -> tuple[str, dict[str, str], bytes]:
    return wsgi_call(app, path, **({} if authorization is None else {"HTTP_AUTHORIZATION": authorization}))


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def test_basic_auth_wrapper() -> None:
    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"secret numbers"]

    app = security.require_basic_auth(inner, "prometheus", "pässwörd:with colon")
    for header in (
        None,
        basic("prometheus:wrong"),
        basic("prometheus:pässwörd:with colo"),
        basic("Prometheus:pässwörd:with colon"),
        basic("prometheus"),
        "Basic ***",
        "Bearer x",
        basic("prometheus:pässwörd:with colon") + "=extra",
    ):
        status, headers, body = call(app, "/metrics", header)
        assert status == "401 Unauthorized", header
        assert headers["WWW-Authenticate"] == 'Basic realm="ccmon", charset="UTF-8"'
        assert b"secret" not in body
    assert call(app, "/metrics", basic("prometheus:pässwörd:with colon"))[0] == "200 OK"  # UTF-8, ':' in the password
    assert (
        call(app, "/metrics", "basic " + basic("prometheus:pässwörd:with colon")[6:])[0] == "200 OK"
    )  # scheme: any case
    assert call(app, "/healthz")[0] == "200 OK"  # exempt
    assert call(app, "/healthz/")[0] == "401 Unauthorized"  # only that exact path


# -- telling a refusal from a broker that is not up yet ------------------------------------------
def test_kafka_config_error_classification(monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka import errors as kafka_errors

    sasl = parse([], SASL)
    monkeypatch.setattr(
        security, "_sasl_refusal", lambda _settings: None
    )  # the network probe, tested for real elsewhere
    refused = security.kafka_config_error(sasl, [kafka_errors.SaslAuthenticationFailedError("bad k-Secret")])
    assert (
        refused is not None
        and refused.field
        == "--kafka-username or CCMON_KAFKA_USERNAME, CCMON_KAFKA_PASSWORD or CCMON_KAFKA_PASSWORD_FILE"
    )
    assert "k-Secret" not in str(refused)  # scrubbed, should a client ever echo it
    untrusted = security.kafka_config_error(
        sasl,
        [
            kafka_errors.KafkaConnectionError(
                "Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
            )
        ],
    )
    assert untrusted is not None and untrusted.field == "--kafka-ca-file or CCMON_KAFKA_CA_FILE"
    no_cert = security.kafka_config_error(
        sasl, [kafka_errors.KafkaConnectionError("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] x")]
    )
    assert no_cert is not None and no_cert.field == "--kafka-cert-file or CCMON_KAFKA_CERT_FILE"
    mechanism = security.kafka_config_error(sasl, [kafka_errors.UnsupportedSaslMechanismError("no")])
    assert mechanism is not None and mechanism.field == "--kafka-sasl-mechanism or CCMON_KAFKA_SASL_MECHANISM"
    down = [
        kafka_errors.KafkaConnectionError("111 ECONNREFUSED"),
        kafka_errors.KafkaTimeoutError("Unable to bootstrap"),
    ]
    assert security.kafka_config_error(sasl, down) is None  # not up yet: keep waiting
    assert (
        security.last_failure(sasl, down)
        == "; last error: KafkaConnectionError: KafkaConnectionError: 111 ECONNREFUSED"
    )

    monkeypatch.setattr(
        security, "_sasl_refusal", lambda _settings: kafka_errors.SaslAuthenticationFailedError("refused")
    )
    assert security.kafka_config_error(sasl, down) is not None  # the login probe settles what kafka-python lost
    assert security.kafka_config_error(parse([]), down) is None  # no SASL: no login to probe


def test_redis_error_hint() -> None:
    assert "check --redis-ca-file or CCMON_REDIS_CA_FILE" in security.redis_error_hint(
        OSError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    )
    assert "--redis-cert-file" in security.redis_error_hint(OSError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED]"))
    assert security.redis_error_hint(OSError("Connection refused")) == ""
